"""Offline quality of a window's labelled predictions (binary, multiclass, regression), its score_p95,
and the floors and ceilings quality is held to."""
from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import sqlalchemy as sa

from .. import bands as B
from .. import confusion, engines
from .. import multiclass as MC
from ..config import Model
from ..db import non_finite, quote, quote_table
from ..windows import Window
from .source import model_bounds, _is_boolean, _num, model_where

LOG_EPS = float(np.finfo(np.float64).eps)  # scikit-learn's clipping of probabilities in log_loss


def _p95_plan(n: int) -> tuple[int, int, float]:
    """numpy's linear 95th percentile of n values: (descending 1-based position of the higher order
    statistic, how many to take from there (2, or 1 at the top), interpolation weight)."""
    h = 0.95 * (n - 1)
    lo = math.floor(h)
    take = 2 if lo + 1 <= n - 1 else 1
    return n - lo - take + 1, take, h - lo


def _p95_value(vals: list[float], take: int, t: float) -> float | None:
    if take == 1 or len(vals) < 2:
        return vals[0] if vals else None
    b, a = vals[0], vals[1]  # descending: the higher order statistic first
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def _score_p95(conn, model: Model, window: Window, n: int, clean: bool = True) -> float | None:
    """numpy's default (linear) 95th percentile of the window's scores, from two order statistics."""
    if n <= 0:
        return None
    first, take, t = _p95_plan(n)
    s = model.source
    sc = _num(conn, quote(conn, s.score), clean)
    rows = conn.execute(sa.text(
        f"SELECT v FROM (SELECT {sc} AS v FROM {quote_table(conn, s.table)} WHERE {model_where(conn, model)} "
        f"AND {sc} IS NOT NULL) q ORDER BY v DESC LIMIT {take} OFFSET {first - 1}"),
        model_bounds(conn, model, window)).all()
    return _p95_value([float(r[0]) for r in rows], take, t)


def _labels_unique(conn, model: Model) -> bool:
    """Whether a unique index (or primary key) of the labels table is its id alone, so that the
    join gives each prediction at most one label."""
    return engines.of(conn).unique_column(conn, model.labels.table, model.labels.id)


def _label_ids(conn, model: Model, window: Window, ids: tuple | None = None) -> tuple[int, int]:
    """(labelled prediction ids, ids with more than one label) of the window."""
    s, lab = model.source, model.labels
    lid = f"l.{quote(conn, lab.id)}"
    narrow = f" AND {lid} BETWEEN :id_lo AND :id_hi" if ids else ""
    row = conn.execute(sa.text(
        f"SELECT COUNT(*), SUM(CASE WHEN c > 1 THEN 1 ELSE 0 END) FROM (SELECT COUNT(*) AS c "
        f"FROM {quote_table(conn, lab.table)} l WHERE l.{quote(conn, lab.label)} IS NOT NULL{narrow} AND {lid} IN "
        f"(SELECT s.{quote(conn, s.id)} FROM {quote_table(conn, s.table)} s WHERE {model_where(conn, model, 's.')}) "
        f"GROUP BY {lid}) d"), {**model_bounds(conn, model, window), **_id_params(ids)}).one()
    return int(row[0] or 0), int(row[1] or 0)


def joined(conn, model: Model, cols: str, ids: tuple | None = None, version: bool = False, where: str = "") -> str:
    """The window's labelled predictions. `ids` (the window's smallest and largest id) narrows the
    labels read to that range: with ids that grow with time, the labels of one window instead of
    the whole history (and :id_lo, :id_hi must then be bound). `version`: only the rows of the
    model version bound as :version. `where`: a condition on the predictions (`s.`) too."""
    s, lab = model.source, model.labels
    lid = quote(conn, lab.id)
    labels = quote_table(conn, lab.table)
    narrow = f" AND l.{lid} BETWEEN :id_lo AND :id_hi" if ids else ""
    present = f"l.{quote(conn, lab.label)} IS NOT NULL{narrow}"
    version_ = f" AND s.{quote(conn, s.version)} = :version" if version else ""
    return (f"SELECT {cols} FROM {quote_table(conn, s.table)} s JOIN {labels} l "
            f"ON l.{lid} = s.{quote(conn, s.id)} "
            f"WHERE {model_where(conn, model, 's.')} AND {present}{version_}{f' AND {where}' if where else ''}")


def _id_params(ids: tuple | None) -> dict:
    return {"id_lo": ids[0], "id_hi": ids[1]} if ids else {}


def _integer_ids(conn, model: Model) -> bool:
    """Whether the predictions' and the labels' ids are both integer columns (as the engine's
    catalog says), so that the window's id range (from its numeric pass) can narrow the labels the
    quality query reads."""
    if model.labels is None:
        return False
    return engines.of(conn).integer_columns(conn, [(model.source.table, model.source.id),
                                                   (model.labels.table, model.labels.id)])


def _ensure_ln(conn) -> None:
    engines.of(conn).ensure_functions(conn)


def quality_binary(conn, model: Model, window: Window, p95: int | None = None, ids: tuple | None = None,
                   clean: bool | None = None, version=None, repeats: bool = False,
                   edges: list[float] | None = None) -> dict:
    """Exact classification quality of the window's labelled predictions, in one query.

    The labelled rows, sorted once by descending score, carry two window functions over the
    default frame (every row with a score at least as high, ties included): ``COUNT(*)`` and
    ``SUM(y)``, the rows and the positives scored at least as high. With P positives and N
    negatives, A = the sum over negatives of the positives scored at least as high and B = the
    sum over positives of the negatives scored at least as high count every tied pair in both and
    every other pair once: A + B = P N + ties, and the Mann-Whitney 2 U = 2 (A - ties) + ties
    = A - B + P N, so ROC AUC = (A - B + P N) / (2 P N) (ties count one half, as scikit-learn),
    in integers. Average precision is the sum over positives of the precision at their score
    (positives / rows scored at least as high), over P, as scikit-learn's step sum; log loss and
    Brier are sums over rows. Precision, recall and F1 count the prediction column (or score >=
    0.5 without one). No GROUP BY of a million distinct scores and no second sort: a third faster
    than grouping then accumulating, and a ``rank()`` fewer than mid-ranks need.

    `p95` (the window's number of scores): also the labelled scores' 95th percentile, numpy's
    linear one, as if there were that many, from the rows already in order: the score at descending
    position k is the largest whose count of rows scored at least as high reaches k. It is the
    window's score_p95 when every scored row of the window is labelled once (`_p95`). `repeats`: also
    the rows whose label id is that of the row before them in the order (score, label id)
    (`_repeats`): a prediction labelled twice gives two rows alike in both, so when there are none
    no prediction is labelled twice and the separate count of `_label_ids` is not needed. This
    order shares the score's sort: at 10 M rows a COUNT(DISTINCT) of the ids cost 1.5 s of a 4 s
    query on DuckDB, and on Spark grouping the labels by id before the join took as long.
    Memory is the database's; Python gets one row. NaN and infinite scores are NULL (`clean`
    None: read plainly first, and again clean if there were any).

    `edges` (the reference's score quantiles), on engines that run a window function ordered over
    every row in one task (`split_order`): the rows are ordered within buckets of score cut at
    the edges, each bucket in a task of its own, and each row's counts add those of the buckets
    above it (one small GROUP BY of the buckets). Ties share a bucket, so the counts are the same.
    With more scores than the engine sorts in one statement (`Engine.sort_rows`: DuckDB under a
    `memory_limit`), the same query runs once per slice of score (`score_slices`), highest first,
    each slice's counts starting from the rows and positives above it.
    """
    most = engines.of(conn).sort_rows(conn) if p95 and clean is None else None
    cells = score_slices(conn, model, window, version, most) if most and p95 > most else None
    if cells:
        clean = True  # a slice is a range of finite scores: NaN and infinities are NULL there
    if clean is None:
        out = quality_binary(conn, model, window, p95, ids, clean=False, version=version, repeats=repeats, edges=edges)
        return out if not out["_non_finite"] else quality_binary(conn, model, window, p95, ids, clean=True,
                                                                 version=version, repeats=repeats, edges=edges)
    s, lab = model.source, model.labels
    _ensure_ln(conn)
    raw = f"CAST(s.{quote(conn, s.score)} AS {engines.of(conn).double})"
    sc = _num(conn, f"s.{quote(conn, s.score)}", clean)
    # a row whose score is NULL or not finite is not scored: no metric counts it
    pred = (f"CASE WHEN {sc} IS NOT NULL THEN CAST(s.{quote(conn, s.prediction)} AS INTEGER) END" if s.prediction else
            f"CASE WHEN {sc} >= 0.5 THEN 1 WHEN {sc} IS NOT NULL THEN 0 END")
    y = f"l.{quote(conn, lab.label)}"
    # labels other than 0 and 1 are NULL here, and counted (the `label_values` check)
    y = f"CAST({y} AS INTEGER)" if _is_boolean(conn, lab.table, lab.label) else f"CASE WHEN {y} = 1 THEN 1 WHEN {y} = 0 THEN 0 END"
    tail = f", l.{quote(conn, lab.id)} AS lid" if repeats else ""
    # a slice's condition on the predictions themselves: the join then holds that slice's alone
    j = joined(conn, model, f"{sc} AS sc, {y} AS y, {pred} AS pr, "
                             f"CASE WHEN {non_finite(conn, raw)} THEN 1 ELSE 0 END AS nf" + tail, ids,
               version is not None, cells["where"].replace("{sc}", sc) if cells else "")
    pos = "FILTER (WHERE sc IS NOT NULL AND y = 1)"
    neg = "FILTER (WHERE sc IS NOT NULL AND (y IS NULL OR y <> 1))"  # N counts them: n - P
    clip = "(CASE WHEN sc < :eps THEN :eps WHEN sc > :one_eps THEN :one_eps ELSE sc END)"
    # NULL scores sort last, so that they never rank above a score
    order = engines.of(conn).desc_nulls_last("sc")
    params = {**model_bounds(conn, model, window), **_id_params(ids), "eps": LOG_EPS, "one_eps": 1 - LOG_EPS,
              **({"version": version} if version is not None else {})}
    extra = ""
    if p95:
        first, take, t = _p95_plan(p95)  # the order statistics' descending positions
        params.update(p95_a=first, p95_b=first + 1)
        extra = ", MAX(sc) FILTER (WHERE cnt >= :p95_a)" + (", MAX(sc) FILTER (WHERE cnt >= :p95_b)" if take == 2 else "")
    if repeats:
        extra += ", SUM(CASE WHEN plid = lid THEN 1 ELSE 0 END)"
    head, rows, part, above_n, above_p = "", f"({j}) j", "", "", ""
    if cells:
        above_n, above_p = " + :above_n", " + :above_p"
    elif edges and engines.of(conn).split_order:
        params.update({f"qb{i}": float(e) for i, e in enumerate(edges)})
        bucket = " ".join(f"WHEN sc >= :qb{i} THEN {i + 1}" for i in reversed(range(len(edges))))
        before = "OVER (ORDER BY b DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
        head = (f"WITH r AS (SELECT j.*, CASE WHEN sc IS NULL THEN -1 {bucket} ELSE 0 END AS b FROM ({j}) j), "
                f"o AS (SELECT b, SUM(bn) {before} AS bn, SUM(bp) {before} AS bp "
                "FROM (SELECT b, COUNT(*) AS bn, SUM(y) AS bp FROM r GROUP BY b) t)")
        rows, part = "r JOIN o ON o.b = r.b", "PARTITION BY r.b "
        above_n, above_p = " + COALESCE(o.bn, 0)", " + COALESCE(o.bp, 0)"
    # FILTER, not CASE: this aggregate runs in one process over every row, and a FILTER costs less
    sql = f"""{head}
    SELECT COUNT(*), COUNT(*) {pos}, COUNT(sc), SUM(ctp) {neg}, SUM(cnt - ctp) {pos},
           SUM(CAST(ctp AS {engines.of(conn).double}) / cnt) {pos},
           SUM(LN(CASE WHEN y = 1 THEN {clip} ELSE 1 - {clip} END)), SUM((y - sc) * (y - sc)),
           SUM(pr * y), SUM(pr), SUM(y) FILTER (WHERE pr IS NOT NULL), COUNT(pr), COUNT(y), SUM(nf){extra}
    FROM (SELECT sc, y, pr, nf{', lid' if repeats else ''}, COUNT(*) OVER w{above_n} AS cnt,
                 COALESCE(SUM(y) OVER w, 0){above_p} AS ctp{f', LAG(lid) OVER ({part}ORDER BY {order}, lid) AS plid' if repeats else ''}
          FROM {rows} WINDOW w AS ({part}ORDER BY {order})) x"""
    row = (conn.execute(sa.text(sql), params).one() if not cells else
           _in_slices(conn, sa.text(sql), {**params, **cells["params"]}, cells["slices"], 14, 14 + (take if p95 else 0)))
    labelled, P, n, above_neg, above_pos = (0 if v is None else int(v) for v in row[:5])
    ap, ll, brier, tpp, pp, ppos, pn = (0.0 if v is None else float(v) for v in row[5:12])
    N = n - P
    out: dict = {"labelled": labelled, "_invalid_labels": labelled - int(row[12] or 0), "_non_finite": int(row[13] or 0)}
    if P > 0 and N > 0:
        out["roc_auc"] = (above_neg - above_pos + P * N) / (2 * P * N)  # 2 U / (2 P N), exact in integers
    if P > 0:
        out["pr_auc"] = ap / P
    if n > 0:
        out["log_loss"] = -ll / n
        out["brier"] = brier / n
    if pn > 0:  # scikit-learn's zero_division: 0.0
        fp_, fn_ = pp - tpp, ppos - tpp
        out["precision"] = tpp / pp if pp else 0.0
        out["recall"] = tpp / ppos if ppos else 0.0
        out["f1"] = 2 * tpp / (2 * tpp + fp_ + fn_) if (2 * tpp + fp_ + fn_) else 0.0
        out.update(confusion.binary(model, tpp, fp_, fn_, pn - pp - ppos + tpp))  # accuracy, specificity, ...
    if p95:
        vals = [float(v) for v in row[14:14 + take] if v is not None]
        out["_p95"] = (n, _p95_value(vals, take, t) if len(vals) == take else None)
    if repeats:
        out["_repeats"] = int(row[-1] or 0)
    return out


CELLS = 1024  # cells of equal width between the window's smallest and largest score


def _scored(conn, model: Model, window: Window, version) -> tuple[str, str, dict]:
    """(table, condition, parameters) of the window's predictions (of `version`, unless None)."""
    s = model.source
    where = model_where(conn, model) + (f" AND {quote(conn, s.version)} = :version" if version is not None else "")
    return (quote_table(conn, s.table), where,
            {**model_bounds(conn, model, window), **({"version": version} if version is not None else {})})


def score_slices(conn, model: Model, window: Window, version, most: int) -> dict | None:
    """Slices of the window's scores, highest first, of at most `most` predictions each where
    cells allow, for an engine that sorts only so many rows in one statement (`Engine.sort_rows`).

    The scores are cut in `CELLS` cells of equal width between the window's smallest and largest
    finite score (one `GROUP BY` of the cell); consecutive cells join a slice while it stays within
    `most` rows. A cell is a range of scores, so tied scores share one and the slices are in
    score order; the unscored rows (NULL, NaN, infinite) are a last slice. None where all the
    scores are one value, or there are none. `slices` are the bound parameters of each statement
    (with `params`), `where` the condition on the clean score (`{sc}` stands for its expression)."""
    sc = _num(conn, quote(conn, model.source.score), True)
    t, where, params = _scored(conn, model, window, version)
    lo, hi = conn.execute(sa.text(f"SELECT MIN({sc}), MAX({sc}) FROM {t} WHERE {where}"), params).one()
    if lo is None or not hi > lo:
        return None
    cell = f"WHEN {{sc}} >= :cell_hi THEN {CELLS - 1} ELSE CAST(FLOOR(({{sc}} - :cell_lo) / :cell_w) AS INTEGER) END"
    bound = {"cell_lo": float(lo), "cell_hi": float(hi), "cell_w": (float(hi) - float(lo)) / CELLS}
    counts = dict(conn.execute(sa.text(
        f"SELECT c, COUNT(*) FROM (SELECT CASE {cell.replace('{sc}', 'sc')} AS c FROM (SELECT {sc} AS sc FROM {t} "
        f"WHERE {where}) q WHERE sc IS NOT NULL) q GROUP BY c"), {**params, **bound}).all())
    slices, top, size = [], CELLS - 1, 0
    for c in range(CELLS - 1, -1, -1):
        k = int(counts.get(c, 0))
        if size and size + k > most:
            slices.append({"slice_hi": top, "slice_lo": c + 1})
            top, size = c, 0
        size += k
    slices.append({"slice_hi": top, "slice_lo": 0})
    slices.append({"slice_hi": -1, "slice_lo": -1})  # the unscored rows
    return {"where": f"(CASE WHEN {{sc}} IS NULL THEN -1 {cell}) BETWEEN :slice_lo AND :slice_hi",
            "params": bound, "slices": slices}


def join_slices(conn, model: Model, window: Window, version=None, scored: bool = False,
                scores: int | None = None) -> list[tuple[str, dict]]:
    """(condition on the clean score, its parameters) of each statement that sums a join of the
    window's predictions to their labels: one, or one per slice of score where the engine joins
    only so many rows at once (`score_slices`). `scored`: without the unscored rows' slice.
    `scores`: the window's number of scores where known (else counted)."""
    most = engines.of(conn).sort_rows(conn)
    if most:
        if scores is None:
            t, where, params = _scored(conn, model, window, version)
            scores = conn.execute(sa.text(f"SELECT COUNT({quote(conn, model.source.score)}) FROM {t} WHERE {where}"),
                                  params).scalar()
        cells = score_slices(conn, model, window, version, most) if (scores or 0) > most else None
        if cells:
            return [(cells["where"], {**cells["params"], **sl}) for sl in cells["slices"] if not scored or sl["slice_hi"] >= 0]
    return [("", {})]


def _in_slices(conn, sql, params: dict, slices: list[dict], maxes: int, end: int) -> list:
    """The quality query's row summed over its slices, highest scores first: each slice's counts
    start from the rows and positives of the slices above it (`:above_n`, `:above_p`); columns
    [maxes, end) are maxima (the p95's order statistics), the others sums."""
    out: list = []
    above_n = above_p = 0
    for sl in slices:
        row = conn.execute(sql, {**params, **sl, "above_n": above_n, "above_p": above_p}).one()
        above_n, above_p = above_n + int(row[2] or 0), above_p + int(row[1] or 0)
        if not out:
            out = list(row)
            continue
        for i, v in enumerate(row):
            if v is None:
                continue
            out[i] = v if out[i] is None else (max(out[i], v) if maxes <= i < end else out[i] + v)
    return out


def quality_multiclass(conn, model: Model, window: Window, ids: tuple | None = None) -> dict:
    """Multiclass quality from one GROUP BY (true class, predicted class) over the join: see `multiclass`."""
    _ensure_ln(conn)
    sql = MC.quality_sql(conn, model, lambda cols: joined(conn, model, cols, ids))
    rows = conn.execute(sa.text(sql), {**model_bounds(conn, model, window), **_id_params(ids),
                                       "eps": LOG_EPS, "one_eps": 1 - LOG_EPS}).all()
    return MC.quality(conn, model, rows)


def quality_regression(conn, model: Model, window: Window, ids: tuple | None = None,
                       clean: bool | None = None, version=None, scores: int | None = None) -> dict:
    """MAE, MSE, RMSE and MAPE of the window's labelled predictions, as SQL sums (NaN and
    infinities: see `quality_binary`; slices of score under a capped engine: `join_slices`, with
    the window's number of `scores` where known).

    MAPE is scikit-learn's: the mean of |prediction - truth| / max(|truth|, eps), a share (not %)."""
    slices = join_slices(conn, model, window, version, scores=scores)  # the same for a clean read
    if clean is None:
        out = _regression(conn, model, window, ids, False, version, slices)
        return out if not out["_non_finite"] else _regression(conn, model, window, ids, True, version, slices)
    return _regression(conn, model, window, ids, clean, version, slices)


def _regression(conn, model: Model, window: Window, ids: tuple | None, clean: bool, version,
                slices: list[tuple[str, dict]]) -> dict:
    s, lab = model.source, model.labels
    sc, y = f"s.{quote(conn, s.score)}", f"l.{quote(conn, lab.label)}"
    nf = (f"CASE WHEN {non_finite(conn, _num(conn, sc, False))} OR {non_finite(conn, _num(conn, y, False))} "
          "THEN 1 ELSE 0 END")
    params = {**model_bounds(conn, model, window), **_id_params(ids), "eps": LOG_EPS,
              **({"version": version} if version is not None else {})}
    r = [0, 0, 0.0, 0.0, 0.0, 0]
    for where, bound in slices:
        j = joined(conn, model, f"{_num(conn, sc, clean)} AS sc, {_num(conn, y, clean)} AS y, {nf} AS nf", ids,
                   version is not None, where.replace("{sc}", _num(conn, sc, True)))
        got = conn.execute(sa.text(f"SELECT COUNT(*), COUNT(sc - y), SUM(ABS(sc - y)), SUM((sc - y) * (sc - y)), "
                                   f"SUM(ABS(sc - y) / (CASE WHEN ABS(y) > :eps THEN ABS(y) ELSE :eps END)), SUM(nf) "
                                   f"FROM ({j}) j"), {**params, **bound}).one()
        r = [a + (b or 0) for a, b in zip(r, got)]
    labelled, n = int(r[0] or 0), int(r[1] or 0)
    out: dict = {"labelled": labelled, "_non_finite": int(r[5] or 0)}
    if n:
        out["mae"] = float(r[2]) / n
        out["mse"] = float(r[3]) / n
        out["rmse"] = math.sqrt(float(r[3]) / n)
        out["mape"] = float(r[4]) / n
    return out


def quality_floor(model: Model, metric: str, bands: dict | None = None) -> float | None:
    """The bound a quality row shows: of `bands` (`monitor.bands`), else the config's fixed numbers."""
    return B.threshold((bands if bands is not None else _fixed_bands(model)).get(metric))


def quality_breach(model: Model, metric: str, value: float, bands: dict | None = None) -> bool | None:
    return B.breach((bands if bands is not None else _fixed_bands(model)).get(metric), value)


def _fixed_bands(model: Model) -> dict:
    """The config's fixed floors and ceilings (learned ones need the reference: `monitor.bands`)."""
    out = {}
    for metric, f in model.quality.items():
        limits = {b: float(v) for b, v in (("min", f.min), ("max", f.max)) if isinstance(v, (int, float))}
        if limits:
            out[metric] = limits
    return out


def _chunk_quality(conn, model: Model, w: Window, now: datetime, edges: list[float] | None = None) -> dict | None:
    """Quality of a reference chunk, once its labels are mature (for learned floors); `edges` as
    for `quality_binary`."""
    if model.labels is None or w.end + model.labels.max_delay > now:
        return None
    if model.task == "binary_classification":
        q = quality_binary(conn, model, w, edges=edges)
    elif MC.is_multiclass(model):
        q = quality_multiclass(conn, model, w)
    else:
        q = quality_regression(conn, model, w)
    if not q.get("labelled"):
        return None
    return {k: v for k, v in q.items() if not k.startswith("_") and k != "labelled"}
