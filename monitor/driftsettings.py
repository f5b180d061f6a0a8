"""Which drift method and threshold each column takes, and thresholds learned from the reference.

A column's method is its own (`drift.features: {amount: {method: ks, threshold: 0.01}}`), else
the model's `drift.method`; `drift.compare` adds methods computed for every feature in the same
pass (the pass counts what any of the column's methods needs: see `drift.needs`), exported
beside the deciding one and never deciding anything.

A threshold `{sd: N}` is learned from the reference (NannyML's default): the reference range is
cut into windows of the model's size, each chunk is compared by the column's method with the rest
of the reference (the summaries subtract: two disjoint samples, as a window and its reference are;
a chunk against a whole that holds it would look closer than any window does), and the threshold is the chunks' mean score plus N standard deviations (minus,
for p-values, floored at 0), so that the reference itself rarely drifts. A fixed reference's
chunks are scanned once and the thresholds stored beside its summary; a rolling reference's
chunks are the stored summaries of the windows before, read from the store, not the source.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from . import drift as D
from .config import Learned, Model

SCORE = "@score"  # the score column's key among learned thresholds (no feature can be named so)


def setting(model: Model, column: str | None) -> tuple[str, float | Learned | None]:
    """(method, threshold setting) of a feature (None: the score column)."""
    own = model.drift.features.get(column) if column else None
    method = own.method if own is not None and own.method else model.drift.method
    threshold = own.threshold if own is not None and own.threshold is not None else model.drift.threshold
    return method, threshold


def methods(model: Model, column: str | None) -> list[str]:
    """The deciding method, then the compared ones."""
    first = setting(model, column)[0]
    return [first, *[m for m in model.drift.compare if m != first]] if column else [first]


def threshold(model: Model, column: str | None, learned: dict) -> float | None:
    """The number a column's score is held to: fixed, learned (None until learnable: the method's default)."""
    t = setting(model, column)[1]
    if isinstance(t, Learned):
        return learned.get(column or SCORE)
    return t


def learns(model: Model) -> bool:
    return isinstance(model.drift.threshold, Learned) or any(
        isinstance(f.threshold, Learned) for f in model.drift.features.values())


def _minus(a, b):
    """The summary of `a`'s rows that are not `b`'s (summaries are sums: they subtract)."""
    if isinstance(a, dict):
        return {k: _minus(a[k], b.get(k)) if k in b else a[k] for k in a}
    if isinstance(a, list):
        return [_minus(x, y) for x, y in zip(a, b)]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a - b
    return a


def learn(model: Model, ref: dict, chunks: list[dict], compare: Callable[[str | None, str, dict, dict], D.ColumnDrift]
          ) -> dict[str, float]:
    """Learned thresholds by column key, from each chunk's score against the rest of the reference `ref`.

    `compare(column, method, ref, chunk)` compares one column (None: the score)."""
    out = {}
    s = model.source
    for column in [*s.features.numeric, *s.features.categorical, None]:
        method, t = setting(model, column)
        if not isinstance(t, Learned):
            continue
        got = [compare(column, method, _minus(ref, c), c) for c in chunks]
        values = [r.value for r in got if r.value is not None and math.isfinite(r.value)]
        used = {r.method for r in got if r.method is not None}
        if len(values) < 2 or len(used) != 1:
            continue  # not learnable (one chunk, or methods that differ): the method's default holds
        mean = math.fsum(values) / len(values)
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        higher = D.REGISTRY[used.pop()].higher_is_drift
        out[column or SCORE] = mean + t.sd * sd if higher else max(0.0, mean - t.sd * sd)
    return out
