"""The model runtime: a model plus a KV cache per session (`session`), batched forwards
across sessions (`batching`), cost shaping to a declared device profile (`cost`), and one
round's chain drafting (`drafting`) and verification (`verifying`) on a session; the model
runtime option, eager or each decoder layer compiled (`compiled`)."""
