"""The request loop: one request's rounds against a draft and a target endpoint
(`generate`), PEARL's overlapped pipeline (`pearl`), and the embedded `Engine`
(in-process endpoints, the same loop)."""
