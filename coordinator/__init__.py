"""The coordinator: the public gRPC API over the orchestration loop, with remote
draft/target endpoints, plus the one-command local stack (stack.py) and the CLI.

    python -m coordinator --preset tiny --draft 127.0.0.1:50061 --target 127.0.0.1:50071
"""
