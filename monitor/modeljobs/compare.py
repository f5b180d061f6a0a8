"""A window's drift: each column compared with its reference by its own method (`driftsettings`)."""
from __future__ import annotations

from .. import drift as D
from .. import driftsettings as S
from .. import exactks as KS
from ..config import Model
from ..windows import Window
from .planning import reference_range
from .source import model_bounds, model_where


def _compare_column(spec: dict, column: str | None, method: str, threshold: float | None, ref: dict, cur: dict,
                    model: Model) -> D.ColumnDrift:
    """One column's drift (None: the score) by `method`."""
    if column is None:
        return D.compare_numeric(spec["score"], D.NumericSummary.from_dict(ref["score"]),
                                 D.NumericSummary.from_dict(cur["score"]), method, threshold)
    if column in spec["num"]:
        return D.compare_numeric(spec["num"][column], D.NumericSummary.from_dict(ref["num"][column]),
                                 D.NumericSummary.from_dict(cur["num"][column]), method, threshold)
    return D.compare_categorical(spec["cat"][column], D.CategoricalSummary.from_dict(ref["cat"][column]),
                                 D.CategoricalSummary.from_dict(cur["cat"][column]), method, threshold)


def _compare(spec: dict, ref: dict, cur: dict, model: Model, learned: dict | None = None) -> tuple[dict, dict | None]:
    """Column drifts of the features, and of the score: ({feature: ColumnDrift}, score drift), each by
    its own method and threshold (`driftsettings`; `learned`: thresholds learned from the reference)."""
    learned = learned or {}
    out = {}
    for col in [*model.source.features.numeric, *model.source.features.categorical, None]:
        method = S.setting(model, col)[0]
        out[col] = _compare_column(spec, col, method, S.threshold(model, col, learned), ref, cur, model)
    score = out.pop(None)
    return out, score


def _compared(spec: dict, ref: dict, cur: dict, model: Model) -> list[dict]:
    """`drift.compare`: the other methods' scores of every feature, stored beside the deciding one."""
    rows = []
    for col in [*model.source.features.numeric, *model.source.features.categorical]:
        for method in S.methods(model, col)[1:]:
            r = _compare_column(spec, col, method, None, ref, cur, model)
            if r.method == method:  # the summaries carry what it needs
                rows.append({**_drift_metric("feature_drift_compare", col, r), "segment": f"method={method}"})
    return rows


def _exact_ks(conn, model: Model, spec: dict, ref: dict, cur: dict, window: Window, learned: dict) -> None:
    """KS columns whose decision the cut points leave open get their exact statistic (`exactks`), in
    `cur` (after any summary of it was stored: it belongs to this comparison only)."""
    for col in model.source.features.numeric:
        method = S.setting(model, col)[0]
        thr = S.threshold(model, col, learned)
        r = _compare_column(spec, col, method, thr, ref, cur, model)
        if r.method != "ks":
            continue
        d = KS.refine(conn, model, col, spec["num"][col], D.NumericSummary.from_dict(ref["num"][col]),
                      D.NumericSummary.from_dict(cur["num"][col]), thr, reference_range(model, window), window,
                      model_where(conn, model), lambda w: model_bounds(conn, model, w))
        if d is not None:
            cur["num"][col]["ks_d"] = d


def _drift_metric(kind: str, name: str, r: D.ColumnDrift, segment: str = "") -> dict:
    return {"kind": kind, "name": name, "segment": segment, "method": r.method, "value": r.value,
            "threshold": r.threshold, "detected": r.detected}
