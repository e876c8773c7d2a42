"""The draft worker: a gRPC DraftWorker service over specdec.backend.local.LocalDraft.

    python -m draft_worker --preset tiny --port 50061
"""
