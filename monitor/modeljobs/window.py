"""One model window from start to end (`compute`).

A window is read in one transaction of the source (one snapshot where the engine has them) and
written in one transaction of the store: every reference summary, learned threshold or floor it
builds is kept in `Summaries` and comes back in `ModelWindow.references`, saved with the window
(`Store.save_model_window`), so that a window that fails leaves nothing behind.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
from .passes import moments, sample_cut, scan
from .planning import reference_range
from .quality import (quality_breach, _chunk_quality, quality_floor, _integer_ids, _label_ids, _labels_unique, _score_p95, quality_binary,
                      quality_multiclass, quality_regression)
from .references import Summaries, _as_reference, _learned, _reference, _unseen_from, _window_key
from .source import model_bounds, connect, _export_snapshot, _on_snapshot, _setup, model_where
from .specs import _empty_spec, _fingerprint, model_hash


class _Quality:
    """The window's quality query. On engines with snapshots it runs on a second connection that
    sees the first one's rows, beside the window's pass; with integer ids it starts once that pass
    has found the window's id range (`started`), and reads only the labels in it."""

    def __init__(self, source_engine, conn, model: Model, window: Window, mature: bool):
        self.source_engine, self.model, self.window = source_engine, model, window
        self.snapshot = _export_snapshot(conn) if mature else None
        self.unique = mature and _labels_unique(conn, model)  # each scored row labelled at most once
        self.narrow = mature and _integer_ids(conn, model)
        self.ids: tuple | None = None  # (smallest, largest) id of the window, once its first pass is in
        self.scores: int | None = None  # and its number of scores (for the p95 of `quality_binary`)
        self.edges: list[float] | None = None  # the reference's score quantiles, once the spec is in
        self.pool = ThreadPoolExecutor(1) if self.snapshot else None
        self.future: Future | None = None
        if self.snapshot and not self.narrow:
            self._submit()

    def __enter__(self) -> _Quality:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def _submit(self) -> None:
        self.future = self.pool.submit(_on_snapshot, self.source_engine, self.snapshot, self.query)

    def started(self, n: int, ids: tuple | None, scores: int) -> None:
        """The window's first pass is in (`scan`'s `on_pass`)."""
        self.ids, self.scores = ids, scores
        if self.snapshot and n:
            self._submit()

    def query(self, conn) -> dict:
        m, w, binary = self.model, self.window, self.model.task == "binary_classification"
        if binary:
            q = quality_binary(conn, m, w, self.scores, self.ids, repeats=not self.unique, edges=self.edges)
        elif MC.is_multiclass(m):
            q = quality_multiclass(conn, m, w, self.ids)
        else:
            q = quality_regression(conn, m, w, self.ids, scores=self.scores)
        # no prediction labelled twice: as many labelled predictions as rows
        if "_ids" not in q:
            once = self.unique or q.pop("_repeats", None) == 0
            q["_ids"] = (q["labelled"], 0) if once else _label_ids(conn, m, w, self.ids)
        return q

    def result(self, conn, scores: int) -> dict:
        if self.future:
            return self.future.result()
        self.scores = scores
        return self.query(conn)


@dataclass
class _Read:
    """What a window's reads found: the spec, the reference and window summaries, and the side drifts."""

    spec: dict | None
    ref: dict | None  # None: no drift (the `reference` check says why)
    cur: dict
    rows: int
    read: int  # source rows read
    checks: list[dict]
    learned: dict
    classes: D.ColumnDrift | None = None
    multivariate: dict | None = None
    known: set[str] = field(default_factory=set)  # the classes a multiclass model predicts, here or in its reference

    @property
    def all(self) -> dict:
        return self.cur["all"]


def compute(source_engine, store: Store, model: Model, window: Window, now: datetime) -> tuple[ModelWindow, int]:
    """Drift, online signals and (once labels mature) quality of one window: (result, rows read)."""
    D.validate_method(model.drift.method)
    mature = model.labels is not None and window.end + model.labels.max_delay <= now
    summaries = Summaries(store, model.name)
    with connect(source_engine) as conn:
        _setup(conn)
        problems = _schema_problems(conn, model)
        if problems:
            return _unusable(conn, model, window, problems, now)
        with _Quality(source_engine, conn, model, window, mature) as q:
            r = _read(conn, summaries, model, window, now, q)
            quality, found = _split(q.result(conn, int(r.all["score"]["n"])) if mature and r.rows else None)
        checks = [*r.checks, *_source_checks(conn, model, r.all, r.cur["newest"], now), *_label_checks(model, found, r.known)]
        p95 = _p95(conn, model, window, r.all, found)
        status, coverage = _status(model, mature, r.rows, found, checks)
        if quality:
            r.read += quality["labelled"]
        if status == "invalid":
            quality = None  # never computed from invalid inputs as if fine
        estimated = E.metrics(conn, summaries, model, window, now, quality) if r.rows and _valid(status, checks) else []
        # the floors and ceilings the window is held to, some maybe learned from the reference's windows
        bands = (B.bands(summaries, model, reference_range(model, window), now, model_hash(model),
                         lambda w: _chunk_quality(conn, model, w, now, q.edges)) if quality and model.quality else None)
        conn.rollback()
    drift, share, dataset = _drift_rows(model, r)
    metrics = [*checks, *drift, *([r.multivariate] if r.multivariate is not None else []), *_online_rows(r, p95),
               *_quality_rows(model, quality, found.get("_rows", []), bands), *estimated]
    result = ModelWindow(model=model.name, window_start=window.start, window_end=window.end, rows=r.rows,
                         drift_share=share, dataset_drift=dataset, quality_status=status,
                         label_coverage=coverage, metrics=metrics, references=summaries.built())
    return result, r.read


# --------------------------------------------------------------------------- reading


def _read(conn, store: Summaries, model: Model, window: Window, now: datetime, q: _Quality) -> _Read:
    """The reference summary, the window's pass (with the quality query started beside it) and the
    drift queries of its own that a model may need."""
    rolling = model.reference.rolling is not None
    spec, ref, read = _reference(conn, store, model, window, now)
    q.edges = spec["score"]["edges"] if spec else None
    ref_rows = int(ref["all"]["rows"]) if ref else 0
    unjudged = (not rolling and model.reference.start > now) or ref_rows < REFERENCE_MIN_ROWS
    checks = [_check("schema", None, False), _check("reference", ref_rows, unjudged)]
    if unjudged:  # no reference rows, too few or in the future: no drift, and the check says so
        ref = None
    fuse = MV.centers(model, spec) if MV.enabled(model) and spec is not None else None  # the pass may take MV's moments
    cur = scan(conn, model, spec or _empty_spec(model), window, moments=rolling,
               on_pass=q.started if q.narrow else None, unseen_from=_unseen_from(model, window, ref), mv=fuse,
               newest=True)
    if spec is not None and rolling:  # a part of the later windows' references
        store.save_reference(model.name, _window_key(model, spec, window), _as_reference(cur), now)
    rows = int(cur["all"]["rows"])
    r = _Read(spec, ref, cur, rows, read + rows, checks, learned={})
    if ref is not None and rows:
        r.learned = _learned(conn, store, model, spec, ref, window, now)
        _exact_ks(conn, model, spec, ref["all"], r.all, window, r.learned)
    if rows:
        _side_drifts(conn, store, model, window, now, r)
    return r


def _side_drifts(conn, store: Summaries, model: Model, window: Window, now: datetime, r: _Read) -> None:
    """Queries of their own over the same rows (counted once, by the pass): the predicted class
    distribution of a multiclass model, and the numeric features' moments (multivariate drift)."""
    rng, rolling = reference_range(model, window), model.reference.rolling is not None
    where, bounds = model_where(conn, model), (lambda w: model_bounds(conn, model, w))
    if MC.is_multiclass(model):
        r.classes, r.known = MC.prediction_drift(conn, store, model, window, rng, rolling, model_hash(model), now,
                                                 where, bounds)
    if MV.enabled(model) and r.spec is not None:
        centers = MV.centers(model, r.spec)

        def read(w: Window, keep: int | None = None) -> dict:
            return moments(conn, model, r.spec, centers, w, keep)

        cur = r.cur.get("moments") or read(window, sample_cut(model, r.spec, r.all))  # over the distances' sample
        r.multivariate = MV.window_drift(store, model, window, rng, rolling, f"{model_hash(model)}:{_fingerprint(r.spec)}",
                                         now, cur, read)


# --------------------------------------------------------------------------- judging


def _split(quality: dict | None) -> tuple[dict | None, dict]:
    """The quality query's metrics (and `labelled`), and what it found besides (`_ids`, `_p95`, ...)."""
    if quality is None:
        return None, {}
    return ({k: v for k, v in quality.items() if not k.startswith("_")},
            {k: v for k, v in quality.items() if k.startswith("_")})


def _label_checks(model: Model, found: dict, known: set[str]) -> list[dict]:
    """The checks the quality query counts: `label_values` (binary and multiclass models) and `label_duplicates`."""
    if "_ids" not in found:
        return []
    invalid = MC.unknown_labels(model, found, known) if MC.is_multiclass(model) else found.get("_invalid_labels")
    duplicated = found["_ids"][1]
    checks = [_check("label_values", invalid, invalid > 0)] if invalid is not None else []
    return [*checks, _check("label_duplicates", duplicated, duplicated > 0)]


def _p95(conn, model: Model, window: Window, allc: dict, found: dict) -> float | None:
    """The window's score_p95: the quality query's when each scored row is labelled once (the same
    scores: as many, none twice), else a query of its own."""
    n_scores = int(allc["score"]["n"])
    folded = found.get("_p95")
    if folded and folded[0] == n_scores and found["_ids"][1] == 0:
        return folded[1]
    return _score_p95(conn, model, window, n_scores, clean=bool(allc["checks"]["non_finite"])) if n_scores else None


def _status(model: Model, mature: bool, rows: int, found: dict, checks: list[dict]) -> tuple[str, float | None]:
    """(quality status, label coverage)."""
    if model.labels is None:
        return ("empty" if rows == 0 else "no_labels"), None
    if not mature:
        return "pending", None
    if rows == 0:
        return "empty", None
    coverage = min(1.0, found["_ids"][0] / rows)  # distinct labelled predictions: duplicate labels never push it above 1
    return ("ok" if _valid("ok", checks) else "invalid"), coverage


def _valid(status: str, checks: list[dict]) -> bool:
    return status != "invalid" and not any(c["detected"] for c in checks if c["name"] in QUALITY_CHECKS)


# --------------------------------------------------------------------------- the rows stored


def _drift_rows(model: Model, r: _Read) -> tuple[list[dict], float | None, bool | None]:
    """Drift of the features, the dataset and the score, per segment too: (rows, drift share, dataset drift)."""
    if r.ref is None or r.rows == 0:
        return _null_shares(model, r.all), None, None
    cols, score = _compare(r.spec, r.ref["all"], r.all, model, r.learned)
    rows = _compared(r.spec, r.ref["all"], r.all, model)
    for name, c in cols.items():
        if c.method is not None or c.null_detected is not None:
            rows.append(_drift_metric("feature_drift", name, c))
        rows.append({"kind": "null_share", "name": name, "segment": "", "method": c.null_method, "value": c.null_cur,
                     "threshold": None, "detected": c.null_detected})
    flags = [c.detected for c in cols.values() if c.detected is not None]
    share = sum(flags) / len(flags) if flags else None
    for name, c in (("score", score), ("class", r.classes)):
        if c is not None and c.method is not None:
            rows.append(_drift_metric("prediction_drift", name, c))
    rows += _segment_rows(model, r)
    return rows, share, (share >= model.drift.dataset_share if share is not None else None)


def _segment_rows(model: Model, r: _Read) -> list[dict]:
    rows = []
    for seg, parts in r.cur["segments"].items():
        for label, part in parts.items():
            ref_part = r.ref.get("segments", {}).get(seg, {}).get(label)
            if ref_part is None or part["rows"] == 0:
                continue
            cols, score = _compare(r.spec, ref_part, part, model, r.learned)
            rows += [_drift_metric("feature_drift", name, c, label) for name, c in cols.items() if c.method is not None]
            if score.method is not None:
                rows.append(_drift_metric("prediction_drift", "score", score, label))
    return rows


def _null_shares(model: Model, allc: dict) -> list[dict]:
    """Without drift (no reference, or no rows): each feature's NULL share, unjudged."""
    rows = []
    for name in [*model.source.features.numeric, *model.source.features.categorical]:
        part = allc["num"].get(name) or allc["cat"].get(name)
        rows.append({"kind": "null_share", "name": name, "segment": "", "method": None,
                     "value": (part["rows"] - part["n"]) / part["rows"] if part["rows"] else None,
                     "threshold": None, "detected": None})
    return rows


def _online_rows(r: _Read, p95: float | None) -> list[dict]:
    """Predictions, score mean and p95, positive rate: signals without labels."""
    online = {"predictions": r.rows}
    score, o = r.all["score"], r.all.get("online")
    if r.rows:
        if score["n"]:
            online["score_mean"] = score["s"] / score["n"]
        if p95 is not None:
            online["score_p95"] = p95
        if o and o["pos_n"]:
            online["positive_rate"] = o["pos"] / o["pos_n"]
    return [{"kind": "online", "name": k, "segment": "", "value": float(v)} for k, v in online.items()]


def _quality_rows(model: Model, quality: dict | None, extra: list[dict], bands: dict | None) -> list[dict]:
    """The quality metrics with the floor or ceiling each is held to, the bands, and `extra` (multiclass:
    the per-class quality and the confusion matrix)."""
    if not quality:
        return []
    rows = [{"kind": "quality", "name": k, "segment": "", "value": v,
             "threshold": quality_floor(model, k, bands), "detected": quality_breach(model, k, v, bands)}
            for k, v in quality.items() if k != "labelled"]
    return [*rows, *B.rows(model, bands or {}), *[{"method": None, "threshold": None, "detected": None, **x} for x in extra]]
