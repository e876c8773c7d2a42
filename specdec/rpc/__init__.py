"""The gRPC edge shared by the services and the SDK: core types <-> protobuf (`convert`),
request checks (`checks`), server plumbing with health and reflection (`serving`), the
worker serve loop (`worker`), TLS and tokens (`security`), session binding
(`session_binding`), tracing/metrics interceptors (`telemetry`) and the RESOURCE_EXHAUSTED
retry hint (`retry_after`).

`security`, `params` and `retry_after` are torch-free (the client SDK uses them); the rest is
for the services.
"""
