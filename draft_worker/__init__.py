"""The draft worker: a gRPC DraftWorker service over specdec.endpoints.LocalDraft.

    python -m draft_worker --preset tiny --port 50061
"""
