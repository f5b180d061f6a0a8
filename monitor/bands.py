"""Quality floors and ceilings learned from the reference: `quality: {roc_auc: {min: {sd: 3}}}`.

The reference range is cut into windows of the model's size; each chunk whose labels are mature
has its quality computed once (the same query as a window's) and stored beside the reference
summary, or, for a rolling reference, is the stored quality of that earlier window. A learned
floor is the chunks' mean minus N standard deviations, a learned ceiling the mean plus N (both
sides: a band, as NannyML's default). Fixed numbers are used as they are. Every bound a window is
held to is stored as a row (`kind = "quality_threshold"`, `name` the metric, `segment` the bound,
min or max) and exported as `monitor_model_quality_threshold{model, metric, bound}`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from .config import Learned, Model
from .windows import Window, windows_between

KIND = "quality_threshold"


def learns(model: Model) -> bool:
    return any(isinstance(f.min, Learned) or isinstance(f.max, Learned) for f in model.quality.values())


def bands(store, model: Model, ref: Window, now: datetime, key: str, quality: Callable[[Window], dict | None]
          ) -> dict[str, dict[str, float]]:
    """{metric: {"min": floor, "max": ceiling}} of the metrics with a floor or ceiling (fixed or learned).

    `quality(w)` is the quality of a reference chunk (None while its labels are not mature)."""
    chunks: list[dict] = []
    if learns(model):
        rolling = model.reference.rolling is not None
        for w in windows_between(ref.start, ref.end, model.window):
            if rolling:
                got = {r["name"]: r["value"] for r in store.model_metrics(model.name, w.start, kinds=("quality",))
                       if not r["segment"] and r["value"] is not None}
            else:
                k = f"quality:{key}:{w.start:%Y%m%dT%H%M%S}"
                got = store.load_reference(model.name, k)
                if got is None:
                    got = quality(w)
                    if got is not None:
                        store.save_reference(model.name, k, got, now)
            if got:
                chunks.append(got)
    out: dict[str, dict[str, float]] = {}
    for metric, floor in model.quality.items():
        limits = {}
        for bound, setting in (("min", floor.min), ("max", floor.max)):
            if isinstance(setting, Learned):
                values = [c[metric] for c in chunks if c.get(metric) is not None and math.isfinite(c[metric])]
                if len(values) < 2:
                    continue  # not learnable yet: no judgement on this bound
                mean = math.fsum(values) / len(values)
                sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
                limits[bound] = mean - setting.sd * sd if bound == "min" else mean + setting.sd * sd
            elif isinstance(setting, (int, float)):  # relative to the validation metric: `versions`
                limits[bound] = float(setting)
        if limits:
            out[metric] = limits
    return out


def rows(model: Model, bands_: dict[str, dict[str, float]]) -> list[dict]:
    """The stored rows of the bounds a window was held to."""
    out = []
    for metric, limits in bands_.items():
        floor = model.quality[metric]
        for bound, value in limits.items():
            learned = isinstance(floor.min if bound == "min" else floor.max, Learned)
            out.append({"kind": KIND, "name": metric, "segment": bound, "method": "learned" if learned else "fixed",
                        "value": value, "threshold": None, "detected": None})
    return out


def breach(limits: dict[str, float] | None, value: float) -> bool | None:
    if not limits:
        return None
    return bool(("min" in limits and value < limits["min"]) or ("max" in limits and value > limits["max"]))


def threshold(limits: dict[str, float] | None) -> float | None:
    """The one bound a stored quality row shows: the floor, else the ceiling."""
    if not limits:
        return None
    return limits.get("min", limits.get("max"))
