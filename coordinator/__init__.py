"""The coordinator: the public gRPC API over the request loop (specdec.loop), with remote
draft/target endpoints and worker discovery. `server.start(config)` starts it; the
launchers (`specdec serve|up`, the stacks) live in specdec.launch.

    python -m coordinator --preset tiny --draft 127.0.0.1:50061 --target 127.0.0.1:50071
"""
