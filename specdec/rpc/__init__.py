"""The gRPC edge shared by the services and the SDK: core types <-> protobuf (`convert`),
request checks (`checks`), server plumbing with health and reflection (`serving`), the
worker serve loop (`worker`), TLS and tokens (`security`), session binding
(`session_binding`) and tracing/metrics interceptors (`telemetry`).

`security` is torch-free (the client SDK uses it); the rest is for the services.
"""
