"""Multiclass models: quality from one GROUP BY over the labelled predictions, and the drift of the
predicted class distribution.

Quality. The window's labelled predictions are grouped by (true class, predicted class): one row
per cell of the confusion matrix, with its count and, where the model logs a score per class
(`source.class_scores`), per class k the count of scores p_k and the sum of ``ln p_k`` over the
cell's rows, clipped to [eps, 1 - eps] as scikit-learn's log_loss clips them (it does not
renormalize). Every row of a cell has the
same true class, so the cell's log loss is the sum for that class: the whole matrix, and from it
accuracy, macro and weighted precision, recall and F1 and per-class precision, recall, F1 and
support (labels of the class), all as
scikit-learn computes them (classes: those seen as truth or prediction; zero_division 0), come
from at most K^2 rows whatever the window's size.

Prediction drift. The predicted class is counted like a categorical feature (one ``GROUP BY``
over the window) and compared with the reference's counts by the configured drift method. A
fixed reference's counts are counted once and stored; a rolling reference is the sum of the stored
counts of the windows before, each window's counts being stored when it is computed.
"""
from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa

from . import drift as D
from .config import Model
from .conventions import CLASS_SEGMENT, CONFUSION_KIND, OTHER, confusion_cell, segment
from . import engines
from .db import quote, quote_table
from .windows import Window, windows_between

TASK = "multiclass_classification"
CAT_MAX = 50  # reference classes compared one by one; the rest are pooled with unseen ones


def is_multiclass(model: Model) -> bool:
    return model.task == TASK


def class_name(value) -> str | None:
    """A class as the results spell it: integer codes without a decimal point, others as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (float, Decimal)) and value == int(value):
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- quality


def _score_classes(model: Model) -> list[tuple[str, str]]:
    """(class name, score column) pairs, in the config's order."""
    return [(class_name(k), c) for k, c in (model.source.class_scores or {}).items()]


def quality_sql(conn, model: Model, joined) -> str:
    """The confusion-matrix query over `joined(cols)`, the window's labelled predictions (binds
    :eps and :one_eps, the clipping of scores)."""
    s, lab = model.source, model.labels
    cols = [f"l.{quote(conn, lab.label)} AS y", f"s.{quote(conn, s.prediction)} AS pr"]
    scores = _score_classes(model)
    for i, (_, col) in enumerate(scores):
        cols.append(f"CAST(s.{quote(conn, col)} AS {engines.of(conn).double}) AS p{i}")
    aggs = ["y", "pr", "COUNT(*)"]
    if scores:
        clip = [f"(CASE WHEN p{i} < :eps THEN :eps WHEN p{i} > :one_eps THEN :one_eps ELSE p{i} END)"
                for i in range(len(scores))]
        for i, c in enumerate(clip):  # the rows with a score for class i, and their sum of ln p_i
            aggs += [f"COUNT(p{i})", f"SUM(LN({c}))"]
    return f"SELECT {', '.join(aggs)} FROM ({joined(', '.join(cols))}) j GROUP BY y, pr"


def quality(conn, model: Model, rows) -> dict:
    """Quality from the rows of `quality_sql`: {metric: value, "labelled": n, "_rows": [stored rows]}."""
    scores = _score_classes(model)
    names = [c for c, _ in scores]
    cells: dict[tuple[str, str], int] = {}
    labelled = scored = 0
    ll = 0.0
    unscorable = False  # a labelled row whose true class has no score column
    true: dict[str, int] = {}  # labelled rows by true class, for the `label_values` check
    for r in rows:
        y, pr, count = class_name(r[0]), class_name(r[1]), int(r[2])
        labelled += count
        if y is not None:
            true[y] = true.get(y, 0) + count
        if scores and y is not None:
            if y in names:
                i = names.index(y)
                scored += int(r[3 + 2 * i] or 0)
                ll += float(r[4 + 2 * i] or 0.0)
            else:
                unscorable = True
        if y is None or pr is None:
            continue
        cells[(y, pr)] = cells.get((y, pr), 0) + count
    out: dict = {"labelled": labelled, "_true": true}
    extra: list[dict] = []
    out["_predicted"] = sorted({pr for _, pr in cells})
    n = sum(cells.values())
    if n:
        out.update(_from_confusion(cells))
        kept, confusion = capped_confusion(cells, model.max_segments)
        for metric, per in _per_class(cells).items():
            extra += [{"kind": "quality", "name": metric, "segment": segment(CLASS_SEGMENT, k), "value": per[k]} for k in kept]
        extra += [{"kind": CONFUSION_KIND, "name": k, "segment": "", "value": float(v)} for k, v in sorted(confusion.items())]
    if scored and not unscorable:
        out["log_loss"] = -ll / scored
    out["_rows"] = extra
    return out


def capped_confusion(cells: dict[tuple, float], max_segments: int) -> tuple[list, dict[str, float]]:
    """The `max_segments` classes with the most true rows (classes only predicted have none; ties by
    name), and the confusion cells {cell name: count} with every other class pooled as `other`."""
    support: dict = {}
    for (y, pr), c in cells.items():
        support[y] = support.get(y, 0) + c
        support.setdefault(pr, 0)
    kept = sorted(support, key=lambda k: (-support[k], k))[:max_segments]
    keep = set(kept)
    confusion: dict[str, float] = {}
    for (y, pr), c in cells.items():
        key = confusion_cell(y if y in keep else OTHER, pr if pr in keep else OTHER)
        confusion[key] = confusion.get(key, 0) + c
    return kept, confusion


def unknown_labels(model: Model, quality: dict, known: set[str]) -> int:
    """Labelled rows whose class is none the model knows (the `label_values` check): not a class
    of `source.class_scores`, nor in `known` (the classes predicted in the window and its
    reference), nor predicted for a labelled row. Takes the inputs it reads out of `quality`."""
    known = known | {c for c, _ in _score_classes(model)} | set(quality.pop("_predicted", ()))
    return sum(c for k, c in quality.pop("_true", {}).items() if k not in known)


def _per_class(cells: dict[tuple[str, str], int]) -> dict[str, dict[str, float]]:
    classes = sorted({k for cell in cells for k in cell})
    tp = {k: cells.get((k, k), 0) for k in classes}
    true = {k: sum(c for (y, _), c in cells.items() if y == k) for k in classes}
    pred = {k: sum(c for (_, p), c in cells.items() if p == k) for k in classes}
    prec = {k: tp[k] / pred[k] if pred[k] else 0.0 for k in classes}  # zero_division: 0.0, as scikit-learn
    rec = {k: tp[k] / true[k] if true[k] else 0.0 for k in classes}
    f1 = {k: 2 * tp[k] / (true[k] + pred[k]) if true[k] + pred[k] else 0.0 for k in classes}
    return {"precision": prec, "recall": rec, "f1": f1, "support": {k: float(v) for k, v in true.items()}}


def _from_confusion(cells: dict[tuple[str, str], int]) -> dict:
    """Accuracy and the macro and weighted averages of precision, recall and F1, as scikit-learn."""
    per = _per_class(cells)
    support = per.pop("support")
    n = sum(cells.values())
    classes = sorted(support)
    out = {"accuracy": sum(c for (y, p), c in cells.items() if y == p) / n}
    for metric, values in per.items():
        out[f"{metric}_macro"] = math.fsum(values[k] for k in classes) / len(classes)
        out[f"{metric}_weighted"] = math.fsum(values[k] * support[k] for k in classes) / n
    return out


# --------------------------------------------------------------------------- prediction drift


def count_classes(conn, model: Model, window: Window, where: str, params: dict) -> dict:
    """The window's predicted classes: {"rows": n, "n": non-null, "counts": {class: count}}."""
    t, x = quote_table(conn, model.source.table), quote(conn, model.source.prediction)
    counts: dict[str, int] = {}
    rows = nulls = 0
    for v, c in conn.execute(sa.text(f"SELECT {x}, COUNT(*) FROM {t} WHERE {where} GROUP BY {x}"), params):
        rows += int(c)
        name = class_name(v)
        if name is None:
            nulls += int(c)
        else:
            counts[name] = counts.get(name, 0) + int(c)
    return {"rows": rows, "n": rows - nulls, "counts": counts}


def _summary(counts: dict, categories: list[str]) -> D.CategoricalSummary:
    return D.CategoricalSummary(rows=int(counts["rows"]), n=int(counts["n"]),
                                counts=[float(counts["counts"].get(k, 0)) for k in categories])


def compare(model: Model, ref: dict, cur: dict) -> D.ColumnDrift:
    """Drift of the predicted class distribution: the reference's classes (top CAT_MAX), the rest pooled."""
    categories = sorted(ref["counts"], key=lambda k: (-ref["counts"][k], k))[:CAT_MAX]
    spec = {"categories": categories, "pooled": len(ref["counts"]) > CAT_MAX}
    return D.compare_categorical(spec, _summary(ref, categories), _summary(cur, categories),
                                 model.drift.method,
                                 model.drift.threshold if isinstance(model.drift.threshold, (int, float)) else None)


def reference_counts(count, store, model: Model, ref: Window, rolling: bool, key: str, now: datetime) -> dict | None:
    """The reference's class counts (None when it has no rows); `count(w)` counts a range."""
    if not rolling:
        got = store.load_reference(model.name, f"classes:fixed:{key}")
        if got is not None:
            return got
        counts = count(ref)
        if now >= ref.end and counts["rows"]:
            store.save_reference(model.name, f"classes:fixed:{key}", counts, now)
        return counts if counts["rows"] else None
    total = None
    for w in windows_between(ref.start, ref.end, model.window):
        part = store.load_reference(model.name, window_key(key, w))
        if part is None:
            part = count(w)
            store.save_reference(model.name, window_key(key, w), part, now)
        total = D.add_summaries(total, part)
    return total if total and total["rows"] else None


def window_key(key: str, w: Window) -> str:
    return f"classes:win:{key}:{w.start.strftime('%Y%m%dT%H%M%S')}"


def prediction_drift(conn, store, model: Model, window: Window, ref: Window, rolling: bool, key: str, now: datetime,
                     where: str, bounds) -> tuple[D.ColumnDrift | None, set[str]]:
    """Drift of the window's predicted classes against the reference's (None without a reference),
    and the classes predicted in either (for the `label_values` check).

    `bounds(w)` gives the bind parameters of `where` for a range. With a rolling reference the
    window's own counts are stored, for the windows after it."""
    def count(w: Window) -> dict:
        return count_classes(conn, model, w, where, bounds(w))

    base = reference_counts(count, store, model, ref, rolling, key, now)
    cur = count(window)
    if rolling:
        store.save_reference(model.name, window_key(key, window), cur, now)
    known = set(cur["counts"]) | set(base["counts"] if base else ())
    if base is None or cur["rows"] == 0:
        return None, known
    return compare(model, base, cur), known
