"""A binary model's confusion matrix, and what follows from it: accuracy, specificity and the
business value of a cost matrix (`business_value: {tp, fp, fn, tn}`: the value of each outcome).

The counts come from the quality query's sums over the labelled predictions with a decision
(`modeljobs.quality_binary`); nothing here reads rows.
"""
from __future__ import annotations

from .config import Model
from .conventions import CONFUSION_KIND, confusion_cell


def binary(model: Model, tp: float, fp: float, fn: float, tn: float) -> dict:
    """{metric: value, "_rows": [confusion rows]} of one window, as scikit-learn (zero_division 0)."""
    n = tp + fp + fn + tn
    out: dict = {}
    if n <= 0:
        return out
    out["accuracy"] = (tp + tn) / n
    out["specificity"] = tn / (tn + fp) if tn + fp else 0.0
    bv = model.business_value
    if bv is not None:
        out["business_value"] = bv.tp * tp + bv.fp * fp + bv.fn * fn + bv.tn * tn
    # stored as the multiclass matrix is
    out["_rows"] = [{"kind": CONFUSION_KIND, "name": confusion_cell(y, p), "segment": "", "value": float(c)}
                    for (y, p), c in (((1, 1), tp), ((1, 0), fn), ((0, 1), fp), ((0, 0), tn))]
    return out
