"""Watching the batching runners merge: which merged forwards held a GSD tree call."""

from __future__ import annotations


class TreeMerges:
    """Wraps specdec.runtime.batching.batched_forward (through pytest's monkeypatch) and
    counts, per model, the merged forwards that held a tree call (a GSD draft level or tree
    verification: a call with its own visibility) beside other sessions' calls."""

    def __init__(self, monkeypatch):
        from specdec.runtime import batching

        self.counts: dict[int, int] = {}
        inner = batching.batched_forward

        def spy(model, items):
            if len(items) > 1 and any(i.visible is not None for i in items):
                self.counts[id(model)] = self.counts.get(id(model), 0) + 1
            return inner(model, items)

        monkeypatch.setattr(batching, "batched_forward", spy)

    def of(self, model) -> int:
        return self.counts.get(id(model), 0)

    def total(self) -> int:
        return sum(self.counts.values())
