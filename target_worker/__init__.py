"""The target worker: a gRPC TargetWorker service over specdec.endpoints.LocalTarget.

    python -m target_worker --preset tiny --port 50071
"""
