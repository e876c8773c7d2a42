"""What the request loop talks to: the endpoint interfaces (`endpoints`) and their
in-process implementations (`local`, over `sessions`), which the workers serve over gRPC
and the embedded engine calls directly."""
