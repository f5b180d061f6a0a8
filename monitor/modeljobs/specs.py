"""The reference spec: what a window's pass counts, per column, read from the reference rows.

Cut points at the reference's quantiles (or its values, when a numeric column has at most
DISCRETE_MAX), the reference categories (top CAT_MAX), the segment values (top `max_segments`)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import sqlalchemy as sa

from .. import drift as D
from .. import driftsettings as S
from .. import engines
from ..engines.base import disc_rank
from ..config import Model
from ..db import quote, quote_table
from ..windows import Window
from .source import model_bounds, _jsonable, _num, model_where

SPEC_VERSION = 3
# Cut points, as reference quantile levels. The Wasserstein estimate is exact where the two CDFs do
# not cross between cut points; crossings from sampling noise happen mostly in the wide tail bins,
# so its levels are denser in the tails (9 such levels beat 16 equal-mass ones on a corpus of
# shifted, rescaled, skewed, bimodal and discrete columns: see tests/test_drift.py).
W_LEVELS = (0.01, 0.05, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95, 0.99)
BIN_EDGES = 19  # PSI / Jensen-Shannon on numeric columns: 20 equal-mass bins
KS_EDGES = 64  # the KS test (used by `auto` only for references of <= 1000 values)


DISCRETE_MAX = 20  # a numeric column with at most this many reference values is cut at each value
CAT_MAX = 50  # reference categories counted one by one; the rest are pooled with unseen ones
ROLLING_LT_MAX = 5000  # rolling `auto` references: KS counts kept while the first reference is this small
ROLLING_ABS_MIN = 200  # ... and Wasserstein sums once it is this large


def model_hash(model: Model) -> str:
    """Identifies everything a summary depends on: a config change starts new summaries."""
    s = model.source
    key = {
        "v": SPEC_VERSION, "table": s.table, "ts": s.timestamp, "score": s.score, "pred": s.prediction,
        "num": s.features.numeric, "cat": s.features.categorical, "seg": model.segments,
        "max_seg": model.max_segments, "method": model.drift.method, "window": model.window.total_seconds(),
        **({"features": {k: v.model_dump(mode="json") for k, v in model.drift.features.items()}}
           if model.drift.features else {}),
        **({"compare": model.drift.compare} if model.drift.compare else {}),
        "ref": [str(model.reference.start), str(model.reference.end), str(model.reference.rolling)],
        "task": model.task,
    }
    if s.timestamp_format != "auto":
        key["tsf"] = s.timestamp_format
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _fingerprint(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _reference_sizes(n_ref: int, rolling: bool) -> tuple[int, ...]:
    """The reference sizes a column's methods may meet: its own, or, for a rolling reference (whose
    size changes as windows come and go), the small side while the first reference is at most
    ROLLING_LT_MAX values and the large side once it is above ROLLING_ABS_MIN."""
    if not rolling:
        return (n_ref,)
    small, large = D.AUTO_SMALL_REFERENCE, D.AUTO_SMALL_REFERENCE + 1
    return (*([small] if n_ref <= ROLLING_LT_MAX else []), *([large] if n_ref > ROLLING_ABS_MIN else []))


def _levels(needs: frozenset[str]) -> list[float]:
    if needs & {D.BINS, D.CDF}:
        k = KS_EDGES if D.CDF in needs else BIN_EDGES
        return [i / (k + 1) for i in range(1, k + 1)]
    return list(W_LEVELS)


# every level a spec may cut at, and a fine grid that tells continuous columns from discrete ones
ALL_LEVELS = sorted({*W_LEVELS, 0.5, *(i / (BIN_EDGES + 1) for i in range(1, BIN_EDGES + 1)),
                     *(i / (KS_EDGES + 1) for i in range(1, KS_EDGES + 1)), *(i / 100 for i in range(101))})


def _discrete_values(conn, model: Model, column: str, ref: Window) -> list[tuple[float, int]] | None:
    """The column's (value, count) pairs when the reference has at most DISCRETE_MAX values, else None."""
    t, x = quote_table(conn, model.source.table), quote(conn, column)
    v = _num(conn, x)
    rows = conn.execute(sa.text(
        f"SELECT {v} AS v, COUNT(*) AS c FROM {t} WHERE {model_where(conn, model)} AND {v} IS NOT NULL "
        f"GROUP BY {v} LIMIT {DISCRETE_MAX + 1}"), model_bounds(conn, model, ref)).all()
    return sorted((float(r[0]), int(r[1])) for r in rows) if len(rows) <= DISCRETE_MAX else None


def _quantiles_aggregated(conn, model: Model, columns: list[str], counts: list[int], ref: Window) -> list[dict[float, float]]:
    """Every column's quantiles at ALL_LEVELS in as few statements as the engine's
    `quantile_values` allows (one sort per column), on engines with such an aggregate
    (`Engine.quantiles`). `counts`: each column's non-null values in the reference."""
    e, t = engines.of(conn), quote_table(conn, model.source.table)
    batches: list[list[int]] = [[]]
    held = 0
    for i, n in enumerate(counts):
        if batches[-1] and e.quantile_values is not None and held + n > e.quantile_values:
            batches.append([])
            held = 0
        batches[-1].append(i)
        held += n
    out: list[dict[float, float]] = [{} for _ in columns]
    for batch in batches:
        aggs = e.quantiles([(_num(conn, quote(conn, columns[i])), counts[i]) for i in batch], ALL_LEVELS)
        row = conn.execute(sa.text(f"SELECT {', '.join(aggs)} FROM {t} WHERE {model_where(conn, model)}"),
                           model_bounds(conn, model, ref)).one()
        for i, vals in zip(batch, row):
            out[i] = dict(zip(ALL_LEVELS, map(float, vals))) if vals else {}
    return out


def quantiles_sql(conn, model: Model, column: str, ref: Window, n: int, levels: list[float]) -> dict[float, float]:
    """Portable: the order statistics at the levels' ranks, with ROW_NUMBER (one sort)."""
    t, x = quote_table(conn, model.source.table), quote(conn, column)
    v = _num(conn, x)
    ranks = sorted({disc_rank(q, n) for q in levels})
    marks = ", ".join(f":r{i}" for i in range(len(ranks)))
    params = {**model_bounds(conn, model, ref), **{f"r{i}": r for i, r in enumerate(ranks)}}
    got = dict(conn.execute(sa.text(
        f"SELECT rn, v FROM (SELECT {v} AS v, ROW_NUMBER() OVER (ORDER BY {v}) AS rn FROM {t} "
        f"WHERE {model_where(conn, model)} AND {v} IS NOT NULL) q WHERE rn IN ({marks})"), params).all())
    return {q: float(got[disc_rank(q, n)]) for q in levels if disc_rank(q, n) in got}


def _numeric_spec(conn, model: Model, column: str, ref: Window, n: int, rolling: bool,
                  quantiles: dict[float, float] | None = None) -> dict:
    """Cut points of one numeric column. `quantiles` (PostgreSQL) spares the per-column queries."""
    if n == 0:
        return {"edges": [], "center": 0.0, "values": None, "distinct": 0, "n_ref": 0,
                "lt": False, "abs": False, "eq": False}
    maybe_discrete = quantiles is None or len(set(quantiles.values())) <= DISCRETE_MAX
    pairs = _discrete_values(conn, model, column, ref) if maybe_discrete else None
    distinct = len(pairs) if pairs is not None else None
    # what any of the column's methods needs (`drift.features`, `drift.compare`)
    sizes = _reference_sizes(n, rolling)
    needs = frozenset().union(*(D.needs(m, sizes, distinct) for m in S.methods(model, column if column != model.source.score else None)))
    lt, abs_, eq = bool(needs & {D.BINS, D.CDF}), D.DISTANCES in needs, D.VALUES in needs
    if pairs is not None:
        values = [p[0] for p in pairs]
        half, acc, center = (n + 1) // 2, 0, values[0]
        for val, c in pairs:
            acc += c
            if acc >= half:
                center = val
                break
        # cut at every value, and just above the last: counts below them are the exact CDF
        edges = [*values, float(np.nextafter(values[-1], np.inf))]
        return {"edges": edges, "center": center, "values": values if eq else None,
                "distinct": distinct, "n_ref": n, "lt": lt, "abs": abs_, "eq": eq}
    levels = _levels(needs)
    if quantiles is None:
        quantiles = quantiles_sql(conn, model, column, ref, n, [*levels, 0.5])
    edges = sorted({quantiles[q] for q in levels if q in quantiles})
    return {"edges": edges, "center": quantiles.get(0.5, edges[len(edges) // 2] if edges else 0.0),
            "values": None, "distinct": None, "n_ref": n, "lt": lt, "abs": abs_, "eq": False}


def _top_values(conn, model: Model, column: str, ref: Window, limit: int) -> tuple[list, int]:
    t, x = quote_table(conn, model.source.table), quote(conn, column)
    rows = conn.execute(sa.text(
        f"SELECT {x} AS v, COUNT(*) AS c FROM {t} WHERE {model_where(conn, model)} AND {x} IS NOT NULL "
        f"GROUP BY {x} ORDER BY COUNT(*) DESC, {x} LIMIT {limit + 1}"), model_bounds(conn, model, ref)).all()
    return [_jsonable(r[0]) for r in rows[:limit]], len(rows)


def build_spec(conn, model: Model, ref: Window, rolling: bool = False) -> dict | None:
    """What to count for this model, read from the reference rows; None when the range has no rows."""
    s = model.source
    t = quote_table(conn, s.table)
    numeric = list(s.features.numeric)
    # a multiclass model may have no score column: its score summary is then empty (COUNT(NULL) = 0)
    counts = ", ".join(f"COUNT({_num(conn, quote(conn, c)) if c else 'NULL'})" for c in [*numeric, s.score])
    row = conn.execute(sa.text(f"SELECT COUNT(*), {counts} FROM {t} WHERE {model_where(conn, model)}"),
                       model_bounds(conn, model, ref)).one()
    rows = int(row[0] or 0)
    if rows == 0:
        return None
    spec = {"version": SPEC_VERSION, "rows": rows, "num": {}, "cat": {}, "score": None, "segments": {}}
    quantiles = [None] * (len(numeric) + 1)
    cut = [*numeric, *([s.score] if s.score else [])]
    if engines.of(conn).quantiles([], ALL_LEVELS) is not None and cut:
        counts = [int(n or 0) for n in row[1:1 + len(cut)]]
        quantiles = [*_quantiles_aggregated(conn, model, cut, counts, ref), None][:len(numeric) + 1]
    for col, n, q in zip(numeric, row[1:], quantiles):
        spec["num"][col] = _numeric_spec(conn, model, col, ref, int(n or 0), rolling, q)
    spec["score"] = _numeric_spec(conn, model, s.score, ref, int(row[-1] or 0), rolling, quantiles[-1])
    for col in s.features.categorical:
        cats, seen = _top_values(conn, model, col, ref, CAT_MAX)
        spec["cat"][col] = {"categories": cats, "pooled": seen > CAT_MAX}
    for col in model.segments:
        spec["segments"][col] = _top_values(conn, model, col, ref, model.max_segments)[0]
    return spec


def _empty_spec(model: Model) -> dict:
    """A spec that counts rows and NULLs only (no reference yet)."""
    blank = {"edges": [], "center": 0.0, "values": None, "distinct": 0, "n_ref": 0, "lt": False, "abs": False, "eq": False}
    return {"version": SPEC_VERSION, "rows": 0, "num": {c: dict(blank) for c in model.source.features.numeric},
            "cat": {c: {"categories": [], "pooled": False} for c in model.source.features.categorical},
            "score": dict(blank), "segments": {}}
