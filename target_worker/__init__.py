"""The target worker: a gRPC TargetWorker service over specdec.backend.local.LocalTarget.

    python -m target_worker --preset tiny --port 50071
"""
