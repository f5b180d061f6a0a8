"""One model window from start to end (`compute`)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime

from .. import bands as B
from .. import drift as D
from .. import estimate as E
from .. import multiclass as MC
from .. import multivariate as MV
from ..config import Model
from ..store import ModelWindow, Store
from ..windows import Window
from .checks import QUALITY_CHECKS, REFERENCE_MIN_ROWS, _check, _schema_problems, _source_checks, _unusable
from .compare import _compare, _compared, _drift_metric, _exact_ks
from .passes import scan
from .planning import reference_range
from .quality import (
    _breach,
    _chunk_quality,
    _floor,
    _integer_ids,
    _label_ids,
    _labels_unique,
    _score_p95,
    quality_binary,
    quality_multiclass,
    quality_regression,
)
from .references import _as_reference, _learned, _reference, _unseen_from, _window_key
from .source import _bounds, _connect, _export_snapshot, _on_snapshot, _setup, _where
from .specs import _empty_spec, _fingerprint, _model_hash


def _mean(summary: dict) -> float | None:
    return summary["s"] / summary["n"] if summary["n"] else None


def compute(source_engine, store: Store, model: Model, window: Window, now: datetime) -> tuple[ModelWindow, int]:
    """Drift, online signals and (once labels mature) quality of one window: (result, rows read)."""
    D.validate_method(model.drift.method)
    metrics: list[dict] = []
    binary = model.task == "binary_classification"
    mature = model.labels is not None and window.end + model.labels.max_delay <= now
    with _connect(source_engine) as conn:
        _setup(conn)
        problems = _schema_problems(conn, model)
        if problems:
            return _unusable(conn, model, window, problems, now)
        snapshot = _export_snapshot(conn) if mature else None
        unique = mature and _labels_unique(conn, model)
        fold_p95 = binary and unique
        window_ids = None  # (smallest, largest) id of the window, once its first pass is in

        def job(c):
            if binary:
                q = quality_binary(c, model, window, fold_p95, window_ids, distinct=not unique)
            elif MC.is_multiclass(model):
                q = quality_multiclass(c, model, window, window_ids)
            else:
                q = quality_regression(c, model, window, window_ids)
            # each labelled row its own label id: no id labelled twice, and as many ids as rows
            once = unique or q.pop("_distinct", None) == q["labelled"]
            q["_ids"] = (q["labelled"], 0) if once else _label_ids(c, model, window, window_ids)
            return q

        narrow = mature and _integer_ids(conn, model)
        with ThreadPoolExecutor(1) if snapshot else nullcontext() as pool:
            side = pool.submit(_on_snapshot, source_engine, snapshot, job) if snapshot and not narrow else None

            def start(n: int, ids: tuple | None) -> None:
                """The first pass is in: the quality query, narrowed to the window's ids, starts beside the rest."""
                nonlocal side, window_ids
                window_ids = ids
                if snapshot and n:
                    side = pool.submit(_on_snapshot, source_engine, snapshot, job)

            spec, ref, read = _reference(conn, store, model, window, now)
            ref_rows = int(ref["all"]["rows"]) if ref else 0
            future = model.reference.rolling is None and model.reference.start > now
            unjudged = future or ref_rows < REFERENCE_MIN_ROWS
            checks = [_check("schema", None, False), _check("reference", ref_rows, unjudged)]
            if unjudged:  # no reference rows, too few or in the future: no drift, and the check says so
                ref = None
            fuse = MV.centers(model, spec) if MV.enabled(model) and spec is not None else None
            cur = scan(conn, model, spec or _empty_spec(model), window, moments=model.reference.rolling is not None,
                       on_pass=start if narrow else None, unseen_from=_unseen_from(model, window, ref), mv=fuse)
            if spec is not None and model.reference.rolling is not None:
                store.save_reference(model.name, _window_key(model, spec, window), _as_reference(cur), now)
            allc = cur["all"]
            rows = int(allc["rows"])
            read += rows
            learned = _learned(conn, store, model, spec, ref, window, now) if ref is not None and rows else {}
            if ref is not None and rows:
                _exact_ks(conn, model, spec, ref["all"], allc, window, learned)
            # Side queries over the same rows (counted once, by the pass above): the predicted class
            # distribution of a multiclass model, and the numeric features' moments (multivariate drift).
            classes = multivariate = None
            known: set[str] = set()  # the classes a multiclass model predicts, here or in its reference
            if MC.is_multiclass(model) and rows:
                classes, known = MC.prediction_drift(
                    conn, store, model, window, reference_range(model, window), model.reference.rolling is not None,
                    _model_hash(model), now, _where(conn, model), lambda w: _bounds(conn, model, w))
            if MV.enabled(model) and spec is not None and rows:
                multivariate = MV.window_drift(
                    conn, store, model, window, reference_range(model, window), model.reference.rolling is not None,
                    f"{_model_hash(model)}:{_fingerprint(spec)}", spec, now, _where(conn, model),
                    lambda w: _bounds(conn, model, w), cur.get("moments"))
            quality = (side.result() if side else job(conn)) if mature and rows else None
        n_scores = int(allc["score"]["n"])
        checks += _source_checks(conn, model, window, allc, now)
        if quality:
            distinct, duplicated = quality.pop("_ids")
            invalid = MC.unknown_labels(model, quality, known) if MC.is_multiclass(model) else quality.pop("_invalid_labels", None)
            quality.pop("_non_finite", None)
            if invalid is not None:
                checks.append(_check("label_values", invalid, invalid > 0))
            checks.append(_check("label_duplicates", duplicated, duplicated > 0))
        p95 = None
        folded = quality.pop("_p95", None) if quality else None
        if folded and folded[0] == n_scores:  # each scored row labelled once: the same scores
            p95 = folded[1]
        elif n_scores:
            p95 = _score_p95(conn, model, window, n_scores, clean=bool(allc["checks"]["non_finite"]))
        status, coverage = "no_labels", None
        if model.labels is not None:
            if not mature:
                status = "pending"
            elif rows == 0:
                status = "empty"
            else:
                read += quality["labelled"]
                # distinct labelled predictions: duplicate labels never push it above 1
                status, coverage = "ok", min(1.0, distinct / rows)
                if any(c["detected"] for c in checks if c["name"] in QUALITY_CHECKS):
                    status, quality = "invalid", None  # never computed from invalid inputs as if fine
        elif rows == 0:
            status = "empty"
        # quality estimated from the scores (and, once labels are mature, the estimate's error)
        valid = status != "invalid" and not any(c["detected"] for c in checks if c["name"] in QUALITY_CHECKS)
        estimated = E.metrics(conn, store, model, window, now, quality) if rows and valid else []
        # the floors and ceilings the window is held to, some maybe learned from the reference's windows
        bands = (B.bands(store, model, reference_range(model, window), now, _model_hash(model),
                         lambda w: _chunk_quality(conn, model, w, now)) if quality and model.quality else None)
        conn.rollback()
    metrics += checks

    # drift: features, dataset share, score; per segment
    drift_share = dataset_drift = None
    if ref is not None and rows > 0:
        cols, score = _compare(spec, ref["all"], allc, model, learned)
        metrics += _compared(spec, ref["all"], allc, model)
        flags = []
        for name, r in cols.items():
            if r.method is not None or r.null_detected is not None:
                metrics.append(_drift_metric("feature_drift", name, r))
            if r.detected is not None:
                flags.append(r.detected)
            metrics.append({"kind": "null_share", "name": name, "segment": "", "method": r.null_method, "value": r.null_cur,
                            "threshold": None, "detected": r.null_detected})
        if flags:
            drift_share = sum(flags) / len(flags)
            dataset_drift = drift_share >= model.drift.dataset_share
        if score.method is not None:
            metrics.append(_drift_metric("prediction_drift", "score", score))
        if classes is not None and classes.method is not None:
            metrics.append(_drift_metric("prediction_drift", "class", classes))
        for seg, parts in cur["segments"].items():
            for label, part in parts.items():
                ref_part = ref.get("segments", {}).get(seg, {}).get(label)
                if ref_part is None or part["rows"] == 0:
                    continue
                seg_cols, seg_score = _compare(spec, ref_part, part, model, learned)
                for name, r in seg_cols.items():
                    if r.method is not None:
                        metrics.append(_drift_metric("feature_drift", name, r, label))
                if seg_score.method is not None:
                    metrics.append(_drift_metric("prediction_drift", "score", seg_score, label))
    else:
        for name in [*model.source.features.numeric, *model.source.features.categorical]:
            part = allc["num"].get(name) or allc["cat"].get(name)
            metrics.append({"kind": "null_share", "name": name, "segment": "", "method": None,
                            "value": (part["rows"] - part["n"]) / part["rows"] if part["rows"] else None,
                            "threshold": None, "detected": None})

    if multivariate is not None:
        metrics.append(multivariate)

    # online signals
    online = {"predictions": rows}
    if rows:
        mean = _mean(allc["score"])
        if mean is not None:
            online["score_mean"] = mean
        if p95 is not None:
            online["score_p95"] = p95
        o = allc.get("online")
        if o and o["pos_n"]:
            online["positive_rate"] = o["pos"] / o["pos_n"]
    metrics += [{"kind": "online", "name": k, "segment": "", "value": float(v)} for k, v in online.items()]

    if quality:
        extra = quality.pop("_rows", [])  # multiclass: per-class quality and the confusion matrix
        metrics += [{"kind": "quality", "name": k, "segment": "", "value": v,
                     "threshold": _floor(model, k, bands), "detected": _breach(model, k, v, bands)}
                    for k, v in quality.items() if k != "labelled"]
        metrics += B.rows(model, bands or {})
        metrics += [{"method": None, "threshold": None, "detected": None, **r} for r in extra]
    metrics += estimated
    result = ModelWindow(model=model.name, window_start=window.start, window_end=window.end, rows=rows,
                         drift_share=drift_share, dataset_drift=dataset_drift, quality_status=status,
                         label_coverage=coverage, metrics=metrics)
    return result, read
