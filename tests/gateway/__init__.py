"""The OpenAI-compatible HTTP gateway (gateway/): the official openai client against a real gateway on 127.0.0.1."""
