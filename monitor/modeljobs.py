"""A model's window: drift, online signals and offline quality, pushed down to the database.

How a window is computed (`compute`):

1. The **reference summary**. A *spec* fixes, per column, what is counted: cut points at the
   reference's quantiles (or its values, when a numeric column has at most 20), the reference
   categories (top 50), the segment values (top `max_segments`). The reference's statistics are
   then one pass of aggregates over its rows. A fixed `{start, end}` reference is computed once
   and stored (once its range has ended); a `{rolling: N}` reference is the *sum of the stored
   summaries* of the windows just before, each window's summary being stored when that window is
   computed: every row is scanned once, whatever N.
2. **One pass over the window's rows** computes every numeric column's statistics as plain
   aggregates, portable to PostgreSQL and SQLite: ``COUNT(x)``, ``SUM(x)``,
   ``SUM(CASE WHEN x < e THEN 1 ELSE 0 END)`` (histograms, KS), ``SUM(ABS(x - e))`` (Wasserstein),
   and ``SUM((x - c)^2)`` for references. On PostgreSQL the Wasserstein sums, most of the
   aggregates, take a query of their own that reads, in windows of more than SAMPLE_ROWS values,
   a fixed sample of about SAMPLE_ROWS rows picked by a hash of the id (`_distances`); the rest is
   exact. The categorical columns are counted by one
   ``GROUP BY`` over all of them (a hash per row, where a CASE per category would cost a comparison
   each), with a LIMIT that keeps it bounded, else one mapped ``GROUP BY`` per column. With segments
   both group by the segment too (a bounded CASE), and the whole window is the sum of its segments.
   Python receives one row per segment (per category combination): memory does not grow with rows.
3. **Offline quality** (labels mature): one query joins the window's predictions to their labels
   and sorts them once by score; ``RANK()``, ``COUNT(*)`` and ``SUM(label)`` over that order give
   every positive its mid-rank and the precision at its score, so ROC AUC (Mann-Whitney, in
   integers), average precision, log loss and Brier are exact; precision/recall/F1 come from the
   prediction column (or score >= 0.5). The result is one row. On PostgreSQL it runs on a second
   connection that imports the first one's snapshot (``pg_export_snapshot`` / ``SET TRANSACTION
   SNAPSHOT``), alongside the pass of step 2: both see the same rows. With integer ids it starts
   once the pass has found the window's smallest and largest id, and reads only the labels in
   that range: with ids that grow with time, one window's labels, not the whole history's.
4. **score_p95**: from the quality query (``percentile_cont`` over the rows it has sorted) when
   every scored row is labelled exactly once (PostgreSQL, labels keyed by a unique id), else
   ``ORDER BY score DESC LIMIT 2 OFFSET k`` (a top-N sort in the database). Exact either way.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from . import bands as B
from . import confusion
from . import conventions as names
from . import drift as D
from . import driftsettings as S
from . import estimate as E
from . import exactks as KS
from . import multiclass as MC
from . import multivariate as MV
from .config import Model
from .db import (
    Timestamps,
    finite,
    invalid_time,
    newest_of,
    non_finite,
    quote,
    quote_table,
    timestamps,
    window_params,
    window_where,
)
from .store import ModelWindow, Store
from .durations import Months
from .windows import Window, due_windows, plan, shift, window_at, windows_between

log = logging.getLogger("monitor.modeljobs")

SPEC_VERSION = 3
# Cut points, as reference quantile levels. The Wasserstein estimate is exact where the two CDFs do
# not cross between cut points; crossings from sampling noise happen mostly in the wide tail bins,
# so its levels are denser in the tails (9 such levels beat 16 equal-mass ones on a corpus of
# shifted, rescaled, skewed, bimodal and discrete columns: see tests/test_drift.py).
W_LEVELS = (0.01, 0.05, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95, 0.99)
BIN_EDGES = 19  # PSI / Jensen-Shannon on numeric columns: 20 equal-mass bins
KS_EDGES = 64  # the KS test (used by `auto` only for references of <= 1000 values)
SAMPLE_ROWS = 100_000  # Wasserstein sums of larger windows: over a hashed sample of about this many rows
SAMPLE_BUCKETS = 65536  # ... one in m of these hash buckets
JOINT_MAX = 50_000  # categorical columns are counted in one GROUP BY while their combinations are this few
DISCRETE_MAX = 20  # a numeric column with at most this many reference values is cut at each value
CAT_MAX = 50  # reference categories counted one by one; the rest are pooled with unseen ones
ROLLING_LT_MAX = 5000  # rolling `auto` references: KS counts kept while the first reference is this small
ROLLING_ABS_MIN = 200  # ... and Wasserstein sums once it is this large
SCORE_NULL_TOLERANCE = 0.05  # score_nulls fails when more of the window's scores than this are NULL or not finite
REFERENCE_MIN_ROWS = 30  # a reference of fewer rows is too few to judge drift by (the `reference` check)
QUALITY_CHECKS = ("score_range", "score_nulls", "label_values", "label_duplicates")  # failing: quality withheld
LOG_EPS = float(np.finfo(np.float64).eps)  # scikit-learn's clipping of probabilities in log_loss
OTHER = "other"


# --------------------------------------------------------------------------- planning


def plan_windows(store: Store, model: Model, now: datetime) -> list[Window]:
    """Windows of the model to compute now.

    Every due window not yet stored; the last `recompute` due ones (late predictions); each stored
    window still `pending` whose labels have matured since; and the last `recompute` windows whose
    labels have matured (labels that keep arriving after `max_delay`).
    """
    D.validate_method(model.drift.method)
    done = store.model_windows_done(model.name)
    unsettled: set[datetime] = set()
    if model.labels is not None:
        delay = model.labels.max_delay
        unsettled = {s for s, status in done.items()
                     if status == "pending" and window_at(s, model.window).end + delay <= now}
        if model.recompute > 0:
            matured = [w for w in due_windows(model.start, now, model.window) if w.end + delay <= now]
            unsettled |= {w.start for w in matured[-model.recompute:]}
    return plan(model.start, now, model.window, set(done), model.recompute, unsettled)


def reference_range(model: Model, window: Window) -> Window:
    """The rows a window is compared with: the fixed range, or the rolling windows just before it."""
    ref = model.reference
    if ref.rolling is None:
        return Window(ref.start, ref.end)
    n = _rolling_windows(model)
    return Window(shift(window.start, model.window, -n), window.start)


def _rolling_windows(model: Model) -> int:
    roll, size = model.reference.rolling, model.window
    if isinstance(roll, Months) and isinstance(size, Months):
        return max(1, round(roll.months / size.months))
    return max(1, round(roll / size))


# --------------------------------------------------------------------------- specs


def _model_hash(model: Model) -> str:
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


def _ts(conn, model: Model) -> Timestamps:
    """How the source's timestamp column is read (detected once per process): see `monitor.db`."""
    s = model.source
    return timestamps(conn, s.table, s.timestamp, s.timestamp_format)


def _where(conn, model: Model, prefix: str = "", p: str = "") -> str:
    """The rows of the window bound by `_bounds` (exact in UTC whatever the column holds); `p`
    prefixes the parameters' names, for a second window in one statement."""
    return window_where(conn, prefix + quote(conn, model.source.timestamp), _ts(conn, model), p)


def _bounds(conn, model: Model, w: Window, p: str = "") -> dict:
    return window_params(conn, _ts(conn, model), w.start, w.end, p)


def _num(conn, column: str, clean: bool = True) -> str:
    """A quoted numeric column as DOUBLE PRECISION, NaN and +-infinity read as NULL.

    `clean=False`: the plain cast. The queries that read every row of a window run that way first,
    with a count of the non-finite values they met, and again clean only when that count is not
    zero: the clean expression is repeated wherever the column is used (the database inlines it)
    and costs a window's pass half as much again.
    """
    cast = f"CAST({column} AS DOUBLE PRECISION)"
    return finite(conn, cast) if clean else cast


def _jsonable(v):
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, Decimal):
        return int(v) if v == int(v) else float(v)
    return str(v)


def _needs(method: str, n_ref: int, distinct: int | None, rolling: bool) -> dict:
    """Which statistics a numeric column's summaries carry, given the method and the reference size."""
    few = distinct is not None and distinct <= D.FEW_VALUES
    if method in ("auto", "chisquare", "z"):  # categorical-only methods: numeric columns go `auto`
        if rolling:
            small, big = n_ref <= ROLLING_LT_MAX, n_ref > ROLLING_ABS_MIN
        else:
            small, big = n_ref <= D.AUTO_SMALL_REFERENCE, n_ref > D.AUTO_SMALL_REFERENCE
        return {"eq": few, "lt": small, "abs": big, "ks": small and not few}
    if method == "ks":
        return {"eq": False, "lt": True, "abs": False, "ks": True}
    if method == "wasserstein":
        return {"eq": False, "lt": False, "abs": True, "ks": False}
    return {"eq": few, "lt": not few, "abs": False, "ks": False}  # psi, jensenshannon


def _levels(needs: dict) -> list[float]:
    if needs["lt"]:
        k = KS_EDGES if needs["ks"] else BIN_EDGES
        return [i / (k + 1) for i in range(1, k + 1)]
    return list(W_LEVELS)


def _rank(q: float, n: int) -> int:
    """1-based position of the q-quantile as percentile_disc takes it: the first with position/n >= q."""
    return min(n, max(1, math.ceil(q * n)))


# every level a spec may cut at, and a fine grid that tells continuous columns from discrete ones
ALL_LEVELS = sorted({*W_LEVELS, 0.5, *(i / (BIN_EDGES + 1) for i in range(1, BIN_EDGES + 1)),
                     *(i / (KS_EDGES + 1) for i in range(1, KS_EDGES + 1)), *(i / 100 for i in range(101))})


def _discrete_values(conn, model: Model, column: str, ref: Window) -> list[tuple[float, int]] | None:
    """The column's (value, count) pairs when the reference has at most DISCRETE_MAX values, else None."""
    t, x = quote_table(conn, model.source.table), quote(conn, column)
    v = _num(conn, x)
    rows = conn.execute(sa.text(
        f"SELECT {v} AS v, COUNT(*) AS c FROM {t} WHERE {_where(conn, model)} AND {v} IS NOT NULL "
        f"GROUP BY {v} LIMIT {DISCRETE_MAX + 1}"), _bounds(conn, model, ref)).all()
    return sorted((float(r[0]), int(r[1])) for r in rows) if len(rows) <= DISCRETE_MAX else None


def _quantiles_pg(conn, model: Model, columns: list[str], ref: Window) -> list[dict[float, float]]:
    """PostgreSQL: every column's quantiles at ALL_LEVELS in one statement (one sort per column)."""
    t = quote_table(conn, model.source.table)
    arr = "ARRAY[" + ", ".join(repr(q) for q in ALL_LEVELS) + "]::double precision[]"
    aggs = [f"percentile_disc({arr}) WITHIN GROUP (ORDER BY {_num(conn, quote(conn, c))})" for c in columns]
    row = conn.execute(sa.text(f"SELECT {', '.join(aggs)} FROM {t} WHERE {_where(conn, model)}"),
                       _bounds(conn, model, ref)).one()
    return [dict(zip(ALL_LEVELS, map(float, vals))) if vals else {} for vals in row]


def _quantiles_sql(conn, model: Model, column: str, ref: Window, n: int, levels: list[float]) -> dict[float, float]:
    """Portable: the order statistics at the levels' ranks, with ROW_NUMBER (one sort)."""
    t, x = quote_table(conn, model.source.table), quote(conn, column)
    v = _num(conn, x)
    ranks = sorted({_rank(q, n) for q in levels})
    marks = ", ".join(f":r{i}" for i in range(len(ranks)))
    params = {**_bounds(conn, model, ref), **{f"r{i}": r for i, r in enumerate(ranks)}}
    got = dict(conn.execute(sa.text(
        f"SELECT rn, v FROM (SELECT {v} AS v, ROW_NUMBER() OVER (ORDER BY {v}) AS rn FROM {t} "
        f"WHERE {_where(conn, model)} AND {v} IS NOT NULL) q WHERE rn IN ({marks})"), params).all())
    return {q: float(got[_rank(q, n)]) for q in levels if _rank(q, n) in got}


def _numeric_spec(conn, model: Model, column: str, ref: Window, n: int, rolling: bool,
                  quantiles: dict[float, float] | None = None) -> dict:
    """Cut points of one numeric column. `quantiles` (PostgreSQL) spares the per-column queries."""
    if n == 0:
        return {"edges": [], "center": 0.0, "values": None, "distinct": 0, "n_ref": 0,
                "lt": False, "abs": False, "eq": False}
    maybe_discrete = quantiles is None or len(set(quantiles.values())) <= DISCRETE_MAX
    pairs = _discrete_values(conn, model, column, ref) if maybe_discrete else None
    distinct = len(pairs) if pairs is not None else None
    needs = {}  # what any of the column's methods needs (`drift.features`, `drift.compare`)
    for method in S.methods(model, column if column != model.source.score else None):
        for k, v in _needs(method, n, distinct, rolling).items():
            needs[k] = needs.get(k, False) or v
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
        return {"edges": edges, "center": center, "values": values if needs["eq"] else None,
                "distinct": distinct, "n_ref": n, "lt": needs["lt"], "abs": needs["abs"], "eq": needs["eq"]}
    levels = _levels(needs)
    if quantiles is None:
        quantiles = _quantiles_sql(conn, model, column, ref, n, [*levels, 0.5])
    edges = sorted({quantiles[q] for q in levels if q in quantiles})
    return {"edges": edges, "center": quantiles.get(0.5, edges[len(edges) // 2] if edges else 0.0),
            "values": None, "distinct": None, "n_ref": n, "lt": needs["lt"], "abs": needs["abs"], "eq": False}


def _top_values(conn, model: Model, column: str, ref: Window, limit: int) -> tuple[list, int]:
    t, x = quote_table(conn, model.source.table), quote(conn, column)
    rows = conn.execute(sa.text(
        f"SELECT {x} AS v, COUNT(*) AS c FROM {t} WHERE {_where(conn, model)} AND {x} IS NOT NULL "
        f"GROUP BY {x} ORDER BY COUNT(*) DESC, {x} LIMIT {limit + 1}"), _bounds(conn, model, ref)).all()
    return [_jsonable(r[0]) for r in rows[:limit]], len(rows)


def build_spec(conn, model: Model, ref: Window, rolling: bool = False) -> dict | None:
    """What to count for this model, read from the reference rows; None when the range has no rows."""
    s = model.source
    t = quote_table(conn, s.table)
    numeric = list(s.features.numeric)
    # a multiclass model may have no score column: its score summary is then empty (COUNT(NULL) = 0)
    counts = ", ".join(f"COUNT({_num(conn, quote(conn, c)) if c else 'NULL'})" for c in [*numeric, s.score])
    row = conn.execute(sa.text(f"SELECT COUNT(*), {counts} FROM {t} WHERE {_where(conn, model)}"),
                       _bounds(conn, model, ref)).one()
    rows = int(row[0] or 0)
    if rows == 0:
        return None
    spec = {"version": SPEC_VERSION, "rows": rows, "num": {}, "cat": {}, "score": None, "segments": {}}
    quantiles = [None] * (len(numeric) + 1)
    cut = [*numeric, *([s.score] if s.score else [])]
    if conn.dialect.name == "postgresql" and cut:
        quantiles = [*_quantiles_pg(conn, model, cut, ref), None][:len(numeric) + 1]
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


# --------------------------------------------------------------------------- the one pass


def _segment_expr(conn, spec: dict, segment: str | None, params: dict) -> str | None:
    """An integer per row: the index of its segment value, or -1 (`other`, NULL included)."""
    if not segment:
        return None
    values = spec["segments"].get(segment, [])
    if not values:
        return "-1"
    g = quote(conn, segment)
    whens = []
    for i, v in enumerate(values):
        params[f"g{i}"] = v
        whens.append(f"WHEN {g} = :g{i} THEN {i}")
    return f"CASE {' '.join(whens)} ELSE -1 END"


class _Pass:
    """The numeric pass: builds its aggregates and decodes its rows into summaries.

    `moments`: also ``SUM((x - center)^2)``, needed of references (their standard deviation) and so
    of every window when the reference is rolling.
    """

    def __init__(self, conn, model: Model, spec: dict, segment: str | None, moments: bool, ids: bool = False,
                 clean: bool = False):
        self.conn, self.model, self.spec, self.segment, self.moments = conn, model, spec, segment, moments
        self.clean = clean  # NaN and +-infinity read as NULL (`_num`)
        self.ids = ids  # also MIN(id) and MAX(id): the range of the labels' ids to read (`_integer_ids`)
        self.params: dict = {}
        self.aggs: list[str] = ["COUNT(*)"]
        self.slots: list[tuple] = [("rows",)]
        # PostgreSQL: the Wasserstein sums go in a second query that may read a sample (`_distances`)
        self.split = conn.dialect.name == "postgresql"
        self.abs_aggs: list[str] = []
        self.abs_slots: list[tuple] = []

    def _p(self, value) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def _numeric(self, key: tuple, alias: str, ns: dict) -> None:
        self.aggs += [f"COUNT({alias})", f"SUM({alias})"]
        self.slots += [(*key, "n"), (*key, "s")]
        if self.moments:
            c = self._p(float(ns["center"]))
            self.aggs.append(f"SUM(({alias} - {c}) * ({alias} - {c}))")
            self.slots.append((*key, "s2"))
        if ns.get("lt"):
            for i, e in enumerate(ns["edges"]):
                self.aggs.append(f"SUM(CASE WHEN {alias} < {self._p(float(e))} THEN 1 ELSE 0 END)")
                self.slots.append((*key, "lt", i))
        if ns.get("abs"):
            aggs, slots = (self.abs_aggs, self.abs_slots) if self.split else (self.aggs, self.slots)
            if self.split:  # the count and sum of the rows the distances are taken over (`_distances`)
                aggs += [f"COUNT({alias})", f"SUM({alias})"]
                slots += [(*key, "abs_n"), (*key, "abs_s")]
            for i, e in enumerate(ns["edges"]):
                aggs.append(f"SUM(ABS({alias} - {self._p(float(e))}))")
                slots.append((*key, "abs", i))
        if ns.get("eq") and ns.get("values") is not None:
            for i, v in enumerate(ns["values"]):
                self.aggs.append(f"SUM(CASE WHEN {alias} = {self._p(float(v))} THEN 1 ELSE 0 END)")
                self.slots.append((*key, "eq", i))

    def sql(self, window: Window) -> tuple[str, dict]:
        conn, m, s = self.conn, self.model, self.model.source
        cols = []
        for i, col in enumerate(s.features.numeric):
            cols.append(f"{_num(conn, quote(conn, col), self.clean)} AS n{i}")
            self._numeric(("num", col), f"n{i}", self.spec["num"][col])
        cols.append(f"{_num(conn, quote(conn, s.score), self.clean) if s.score else 'CAST(NULL AS DOUBLE PRECISION)'} AS sc")
        self._numeric(("score",), "sc", self.spec["score"])
        # data checks: rows with a non-finite score or numeric feature (read as NULL above) ...
        raw = [f"CAST({quote(conn, c)} AS DOUBLE PRECISION)" for c in [*s.features.numeric, s.score] if c]
        cols.append(f"CASE WHEN {' OR '.join(non_finite(conn, r) for r in raw) or '1 = 0'} THEN 1 ELSE 0 END AS nf")
        self.aggs.append("SUM(nf)")
        self.slots.append(("checks", "non_finite"))
        if m.task == "binary_classification":  # ... and classifier scores outside [0, 1]
            self.aggs.append("SUM(CASE WHEN sc < 0 OR sc > 1 THEN 1 ELSE 0 END)")
            self.slots.append(("checks", "score_range"))
        if m.task == "binary_classification":
            if s.prediction:
                cols.append(f"CAST({quote(conn, s.prediction)} AS INTEGER) AS pr")
                self.aggs += ["SUM(pr)", "COUNT(pr)"]
            else:
                self.aggs += ["SUM(CASE WHEN sc >= 0.5 THEN 1 ELSE 0 END)", "COUNT(sc)"]
            self.slots += [("online", "pos"), ("online", "pos_n")]
        if self.ids:
            cols.append(f"{quote(conn, s.id)} AS i")
            self.aggs += ["MIN(i)", "MAX(i)"]
            self.slots += [("ids", "lo"), ("ids", "hi")]
        group = ""
        g = _segment_expr(conn, self.spec, self.segment, self.params)
        if g is not None:
            cols.append(f"{g} AS g")
            group = " GROUP BY g"
            self.aggs.insert(0, "g")
            if self.abs_aggs:
                self.abs_aggs.insert(0, "g")
        # one row in `sample` of SAMPLE_BUCKETS, picked by a hash of the id: the same rows every time
        sampled = f" AND (hashtext(CAST({quote(conn, s.id)} AS TEXT)) & {SAMPLE_BUCKETS - 1}) < :sample"
        frm = f"FROM (SELECT {', '.join(cols)} FROM {quote_table(conn, s.table)} WHERE {_where(conn, m)}{{}}) q{group}"
        sql = f"SELECT {', '.join(self.aggs)} {frm.format('')}"
        # the distances' query, over every row (False) or over a sample (True)
        self.abs_sql = {x: f"SELECT {', '.join(self.abs_aggs)} {frm.format(sampled if x else '')}"
                        for x in (False, True)} if self.abs_aggs else None
        return sql, {**self.params, **_bounds(conn, m, window)}

    def blank(self) -> dict:
        def num(ns):
            d = {"rows": 0, "n": 0, "s": 0.0}
            if self.moments:
                d["s2"] = 0.0
            if ns.get("lt"):
                d["lt"] = [0] * len(ns["edges"])
            if ns.get("abs"):
                d["abs"] = [0.0] * len(ns["edges"])
            if ns.get("eq") and ns.get("values") is not None:
                d["eq"] = [0] * len(ns["values"])
            return d
        out = {"rows": 0, "num": {c: num(ns) for c, ns in self.spec["num"].items()},
               "score": num(self.spec["score"]), "checks": {"non_finite": 0, "score_range": 0},
               "cat": {c: {"rows": 0, "n": 0, "counts": [0] * len(cs["categories"])} for c, cs in self.spec["cat"].items()}}
        if self.model.task == "binary_classification":
            out["online"] = {"pos": 0, "pos_n": 0}
        if self.ids:
            out["ids"] = {"lo": None, "hi": None}
        return out

    def decode(self, row, out: dict | None = None, slots: list[tuple] | None = None) -> dict:
        """Fill a blank summary (or `out`) with a row of the pass (of `slots`)."""
        out = self.blank() if out is None else out
        for slot, value in zip(self.slots if slots is None else slots, row):
            if slot[0] == "ids":  # integers, kept as they are (NULL when no rows)
                out["ids"][slot[1]] = value
                continue
            value = 0 if value is None else (value if isinstance(value, (int, float)) else float(value))
            node = out
            for k in slot[:-1]:
                node = node[k]
            node[slot[-1]] = value
        for d in [*out["num"].values(), out["score"], *out["cat"].values()]:
            d["rows"] = out["rows"]
        return out


def _count_categories(conn, model: Model, spec: dict, window: Window, segment: str | None,
                      parts: dict[int, dict], unseen_from: dict[str, Window] | None = None) -> None:
    """Category counts by GROUP BY: one hash per row, where a CASE per category costs a comparison each.

    While the reference saw few enough combinations, all categorical columns (and the segment) go
    in one plain GROUP BY, fetched with a LIMIT that keeps it bounded; categories the reference
    never saw are pooled in Python. Past that limit, each column is mapped to its reference
    categories in SQL (``CASE WHEN c IN (...) THEN c END``) and counted on its own: the groups are
    then bounded by the categories, never by the rows.

    `unseen_from` ({column: reference range}): columns whose reference holds values beyond the
    spec's categories. Their other values are told apart, in SQL, into the reference's tail and
    values the reference never saw (``unseen``), by a join against the reference's distinct values.
    """
    unseen_from = unseen_from or {}
    cats = list(model.source.features.categorical)
    if not cats:
        return
    segments = spec["segments"].get(segment, []) if segment else []
    seg_index = {_jsonable(v): i for i, v in enumerate(segments)}
    lookups = {c: {_jsonable(v): j for j, v in enumerate(spec["cat"][c]["categories"])} for c in cats}
    raw_ok = (not any(spec["cat"][c].get("pooled") or c in unseen_from for c in cats)
              and math.prod(len(lookups[c]) + 1 for c in cats) * (len(segments) + 1) <= JOINT_MAX)

    def add(part: dict, col: str, value, count: int) -> None:
        if value is None:
            return
        c = part["cat"][col]
        c["n"] += count
        j = lookups[col].get(_jsonable(value))
        if j is not None:
            c["counts"][j] += count

    t, where = quote_table(conn, model.source.table), _where(conn, model)
    if raw_ok:
        keys = [quote(conn, c) for c in cats] + ([quote(conn, segment)] if segment else [])
        rows = conn.execute(sa.text(f"SELECT {', '.join(keys)}, COUNT(*) FROM {t} WHERE {where} "
                                    f"GROUP BY {', '.join(keys)} LIMIT {JOINT_MAX + 1}"), _bounds(conn, model, window)).all()
        if len(rows) <= JOINT_MAX:
            for r in rows:
                part = parts[seg_index.get(_jsonable(r[-2]), -1)] if segment else parts[-1]
                for i, col in enumerate(cats):
                    add(part, col, r[i], int(r[-1]))
            return
    for col in cats:
        params = _bounds(conn, model, window)
        x = quote(conn, col)
        marks = []
        for j, v in enumerate(spec["cat"][col]["categories"]):
            params[f"c{j}"] = v
            marks.append(f":c{j}")
        mapped = f"CASE WHEN {x} IN ({', '.join(marks)}) THEN {x} END" if marks else "NULL"
        cols = [f"{mapped} AS m", f"CASE WHEN {x} IS NULL THEN 1 ELSE 0 END AS z"]
        keys = ["m", "z"]
        g = _segment_expr(conn, spec, segment, params)
        if g is not None:
            cols.append(f"{g} AS g")
            keys.append("g")
        join = ""
        if col in unseen_from:  # values outside the categories that the reference never holds
            cols.append(f"{x} AS v")
            params.update(_bounds(conn, model, unseen_from[col], p="r"))
            ref_where = _where(conn, model, "r.", p="r")
            for part in parts.values():
                part["cat"][col].setdefault("unseen", 0)
            join = (f" LEFT JOIN (SELECT DISTINCT r.{x} AS v FROM {t} r WHERE r.{x} IS NOT NULL AND {ref_where}) r "
                    "ON r.v = q.v AND q.m IS NULL")
            keys.append("CASE WHEN q.m IS NULL AND q.z = 0 AND r.v IS NULL THEN 1 ELSE 0 END")
        sql = (f"SELECT {', '.join(keys)}, COUNT(*) FROM (SELECT {', '.join(cols)} FROM {t} WHERE {where}) q{join} "
               f"GROUP BY {', '.join(keys)}")
        for r in conn.execute(sa.text(sql), params):
            part = parts[int(r[2])] if segment else parts[-1]
            if r[1]:  # NULL
                continue
            c = part["cat"][col]
            c["n"] += int(r[-1])
            if r[0] is not None:
                c["counts"][lookups[col][_jsonable(r[0])]] += int(r[-1])
            elif col in unseen_from and r[-2]:
                c["unseen"] = c.get("unseen", 0) + int(r[-1])


def _distances(conn, p: _Pass, params: dict, parts: dict[int, dict], sample: bool) -> None:
    """PostgreSQL: the Wasserstein sums ``SUM(ABS(x - e))``, in a query of their own.

    They are most of the pass's aggregates, and each costs about as much per row as a whole scan
    of one column: so above SAMPLE_ROWS non-null values (in the emptiest column and segment) they
    are taken over a fixed subset of the rows, one in m by a hash of the id (the same rows on every
    run), of at least SAMPLE_ROWS values. The sample's own count and sum go with them (``abs_n``,
    ``abs_s``): the distance is then exactly the estimate on the sample (`drift.wasserstein`),
    while counts, sums, NULL shares, histograms and quality stay exact. Should a sample come out
    far smaller than planned (ids that repeat), the query runs again over every row.
    """
    cols = [slot[:-1] for slot in p.abs_slots if slot[-1] == "abs_n"]

    def node(part, key):
        return part[key[0]] if key[0] == "score" else part[key[0]][key[1]]

    least = min((node(part, key)["n"] for part in parts.values() for key in cols if node(part, key)["n"]), default=0)
    keep = math.ceil(SAMPLE_BUCKETS * SAMPLE_ROWS / least) if sample and least > SAMPLE_ROWS else SAMPLE_BUCKETS
    while True:
        rows = conn.execute(sa.text(p.abs_sql[keep < SAMPLE_BUCKETS]), {**params, "sample": keep}).all()
        got = {-1: rows[0]} if p.segment is None else {int(r[0]): r[1:] for r in rows}
        for g, part in parts.items():
            p.decode(got.get(g, [0] * len(p.abs_slots)), part, p.abs_slots)
        if keep == SAMPLE_BUCKETS or all(node(part, key)["abs_n"] >= SAMPLE_ROWS / 4
                                         for part in parts.values() for key in cols if node(part, key)["n"]):
            return
        keep = SAMPLE_BUCKETS


def scan(conn, model: Model, spec: dict, window: Window, moments: bool = False, sample: bool = True,
         on_pass=None, unseen_from: dict[str, Window] | None = None) -> dict:
    """A window's (or reference's) summary: {"all": summary, "segments": {column: {label: summary}}}.

    One numeric pass and one categorical GROUP BY per segment column (one of each without
    segments); with segments, the whole is the sum of the first column's segments. On PostgreSQL
    the Wasserstein sums take a query of their own, over a sample of large windows (`sample`:
    see `_distances`). `on_pass(rows, (min id, max id))` is called once the first numeric pass is
    in, so that the quality query can start beside the rest; it also makes the pass read the ids.
    `unseen_from`: see `_count_categories`.
    """
    segs = [c for c in model.segments if c in spec.get("segments", {})]
    result = {"all": None, "segments": {}}
    for i, seg in enumerate(segs or [None]):
        for clean in (False, True):  # plain first; again reading NaN and infinities as NULL if it met any
            p = _Pass(conn, model, spec, seg, moments, ids=on_pass is not None and i == 0, clean=clean)
            sql, params = p.sql(window)
            rows = conn.execute(sa.text(sql), params).all()
            if seg is None:
                parts = {-1: p.decode(rows[0])}
            else:
                parts = {int(r[0]): p.decode(r[1:]) for r in rows}
                values = spec["segments"][seg]
                for g in [*range(len(values)), -1]:
                    parts.setdefault(g, p.blank())
            if not any(part["checks"]["non_finite"] for part in parts.values()):
                break
        if p.ids:  # the id range is the caller's, never part of a stored summary
            ranges = [part.pop("ids") for part in parts.values()]
            los = [r["lo"] for r in ranges if r["lo"] is not None]
            his = [r["hi"] for r in ranges if r["hi"] is not None]
            on_pass(sum(part["rows"] for part in parts.values()), (min(los), max(his)) if los else None)
        if p.abs_sql:
            _distances(conn, p, params, parts, sample)
        _count_categories(conn, model, spec, window, seg, parts, unseen_from)
        if seg is None:
            result["all"] = parts[-1]
            break
        values = spec["segments"][seg]
        result["segments"][seg] = {f"{seg}={values[g] if g >= 0 else OTHER}": part
                                   for g, part in parts.items() if part["rows"] > 0}
        if i == 0:
            total = None
            for part in parts.values():
                total = D.add_summaries(total, part)
            result["all"] = total
    return result


# --------------------------------------------------------------------------- references


def _reference(conn, store: Store, model: Model, window: Window, now: datetime) -> tuple[dict | None, dict | None, int]:
    """(spec, reference summary, rows read to build it now)."""
    h = _model_hash(model)
    ref = model.reference
    if ref.rolling is None:
        key = f"fixed:{h}"
        got = store.load_reference(model.name, key)
        if got is not None:
            return got["spec"], got["summary"], 0
        rng = Window(ref.start, ref.end)
        spec = build_spec(conn, model, rng)
        if spec is None:
            return None, None, 0
        summary = scan(conn, model, spec, rng, moments=True, sample=False)  # once: exact
        if now >= rng.end:  # a range still filling is recomputed next time, never frozen half full
            store.save_reference(model.name, key, {"spec": spec, "summary": summary}, now)
        return spec, summary, summary["all"]["rows"]
    spec_key = f"spec:{h}"
    spec = store.load_reference(model.name, spec_key)
    read = 0
    if spec is None:
        first = reference_range(model, window_at(model.start, model.window))
        spec = build_spec(conn, model, first, rolling=True)
        if spec is None:  # nothing before the first window: cut where the data starts
            spec = build_spec(conn, model, Window(model.start, model.start + model.reference.rolling), rolling=True)
        if spec is None:
            return None, None, 0
        store.save_reference(model.name, spec_key, spec, now)
    total = None
    rng = reference_range(model, window)
    for w in windows_between(rng.start, rng.end, model.window):
        part = store.load_reference(model.name, _window_key(model, spec, w))
        if part is None:
            part = scan(conn, model, spec, w, moments=True)
            read += part["all"]["rows"]
            store.save_reference(model.name, _window_key(model, spec, w), part, now)
        total = D.add_summaries(total, part)
    return spec, total, read


def _as_reference(summary: dict) -> dict:
    """A window's summary as a part of later references: without its `unseen` counts (what its
    own reference never saw), which mean nothing to a reference (a reference sees all its values)."""
    def strip(part: dict) -> dict:
        return {**part, "cat": {c: {k: v for k, v in d.items() if k != "unseen"} for c, d in part["cat"].items()}}
    return {"all": strip(summary["all"]),
            "segments": {seg: {label: strip(p) for label, p in parts.items()} for seg, parts in summary["segments"].items()}}


def _unseen_from(model: Model, window: Window, ref: dict | None) -> dict[str, Window]:
    """Categorical columns whose reference holds values beyond the spec's categories (its tail), and
    the reference range: their window values are told apart into the tail and the never seen."""
    if ref is None:
        return {}
    rng = reference_range(model, window)
    return {c: rng for c in model.source.features.categorical
            if ref["all"]["cat"][c]["n"] - sum(ref["all"]["cat"][c]["counts"]) > 0}


def _window_key(model: Model, spec: dict, w: Window) -> str:
    return f"win:{_model_hash(model)}:{_fingerprint(spec)}:{w.start.strftime('%Y%m%dT%H%M%S')}"


# --------------------------------------------------------------------------- quality


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
        f"SELECT v FROM (SELECT {sc} AS v FROM {quote_table(conn, s.table)} WHERE {_where(conn, model)} "
        f"AND {sc} IS NOT NULL) q ORDER BY v DESC LIMIT {take} OFFSET {first - 1}"),
        _bounds(conn, model, window)).all()
    return _p95_value([float(r[0]) for r in rows], take, t)


def _labels_unique(conn, model: Model) -> bool:
    """PostgreSQL: whether a unique index (or primary key) of the labels table is its id alone, so
    that the join gives each prediction at most one label."""
    if conn.dialect.name != "postgresql":
        return False
    lab = model.labels
    try:
        with conn.begin_nested():
            return bool(conn.execute(sa.text(
                "SELECT COUNT(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(:t) AND i.indisunique "
                "AND i.indnatts = 1 AND i.indpred IS NULL AND a.attname = :c"),
                {"t": quote_table(conn, lab.table), "c": lab.id}).scalar())
    except sa.exc.DBAPIError:  # no catalog access: take the separate query
        return False


def _label_ids(conn, model: Model, window: Window, ids: tuple | None = None) -> tuple[int, int]:
    """(labelled prediction ids, ids with more than one label) of the window."""
    s, lab = model.source, model.labels
    lid = f"l.{quote(conn, lab.id)}"
    narrow = f" AND {lid} BETWEEN :id_lo AND :id_hi" if ids else ""
    row = conn.execute(sa.text(
        f"SELECT COUNT(*), SUM(CASE WHEN c > 1 THEN 1 ELSE 0 END) FROM (SELECT COUNT(*) AS c "
        f"FROM {quote_table(conn, lab.table)} l WHERE l.{quote(conn, lab.label)} IS NOT NULL{narrow} AND {lid} IN "
        f"(SELECT s.{quote(conn, s.id)} FROM {quote_table(conn, s.table)} s WHERE {_where(conn, model, 's.')}) "
        f"GROUP BY {lid}) d"), {**_bounds(conn, model, window), **_id_params(ids)}).one()
    return int(row[0] or 0), int(row[1] or 0)


_table_columns: dict[tuple, dict] = {}


def _columns(conn, table: str) -> dict | None:
    """The table's columns and their SQLAlchemy types (read once per process), or None when no such table."""
    key = (str(conn.engine.url), table)
    if key not in _table_columns:
        schema, _, name = table.rpartition(".")
        try:
            cols = sa.inspect(conn).get_columns(name, schema=schema or None)
        except sa.exc.NoSuchTableError:
            return None
        _table_columns[key] = {c["name"]: c["type"] for c in cols}
    return _table_columns[key]


def _is_boolean(conn, table: str, column: str) -> bool:
    return isinstance((_columns(conn, table) or {}).get(column), sa.Boolean)


def _schema_problems(conn, model: Model) -> list[str]:
    """Configured columns missing, or (PostgreSQL) of a type that cannot be read as a number.

    The timestamp column is `monitor.db.timestamps`' to judge; without it there is no window at
    all, so a missing one is an error (the job fails) rather than a check.
    """
    s, lab = model.source, model.labels
    number = (sa.Integer, sa.Numeric, sa.Float)
    binary = model.task == "binary_classification"
    classes = MC.is_multiclass(model)  # class names or codes: any type, the same for predictions and labels
    wanted = [(s.table, "source.id", s.id, None),
              *([(s.table, "source.score", s.score, number)] if s.score else []),
              *[(s.table, f"source.class_scores.{k}", c, number) for k, c in (s.class_scores or {}).items()],
              *[(s.table, "source.features.numeric", c, number) for c in s.features.numeric],
              *[(s.table, "source.features.categorical", c, None) for c in s.features.categorical],
              *[(s.table, "segments", c, None) for c in model.segments]]
    if s.prediction:
        wanted.append((s.table, "source.prediction", s.prediction, None if classes else (*number, sa.Boolean)))
    if lab is not None:
        wanted += [(lab.table, "labels.id", lab.id, None),
                   (lab.table, "labels.label", lab.label,
                    None if classes else (*number, sa.Boolean) if binary else number)]
    problems = []
    for table, key, col, types in wanted:
        have = _columns(conn, table)
        if have is None:
            problems.append(f"{key}: table {table} does not exist")
        elif col not in have:
            problems.append(f"{key}: column {col} not in table {table}")
        elif types and conn.dialect.name == "postgresql" and not isinstance(have[col], types):
            problems.append(f"{key}: column {col} of table {table} is of type {have[col]}, not a number")
    if problems:  # read the tables again next time: the fix may be on its way
        for table in {s.table, *([lab.table] if lab else [])}:
            _table_columns.pop((str(conn.engine.url), table), None)
    if any(p.startswith("source.") and "table" in p and "does not exist" in p for p in problems):
        raise ValueError(f"model {model.name}: {problems[0]}")
    return problems


def _joined(conn, model: Model, cols: str, ids: tuple | None = None, version: bool = False) -> str:
    """The window's labelled predictions. `ids` (the window's smallest and largest id) narrows the
    labels read to that range: with ids that grow with time, the labels of one window instead of
    the whole history (and :id_lo, :id_hi must then be bound). `version`: only the rows of the
    model version bound as :version."""
    s, lab = model.source, model.labels
    narrow = f" AND l.{quote(conn, lab.id)} BETWEEN :id_lo AND :id_hi" if ids else ""
    narrow += f" AND s.{quote(conn, s.version)} = :version" if version else ""
    return (f"SELECT {cols} FROM {quote_table(conn, s.table)} s JOIN {quote_table(conn, lab.table)} l "
            f"ON l.{quote(conn, lab.id)} = s.{quote(conn, s.id)} "
            f"WHERE {_where(conn, model, 's.')} AND l.{quote(conn, lab.label)} IS NOT NULL{narrow}")


def _id_params(ids: tuple | None) -> dict:
    return {"id_lo": ids[0], "id_hi": ids[1]} if ids else {}


def _integer_ids(conn, model: Model) -> bool:
    """PostgreSQL: whether the predictions' and the labels' ids are both integer columns, so that
    the window's id range (from its numeric pass) can narrow the labels the quality query reads."""
    if conn.dialect.name != "postgresql" or model.labels is None:
        return False
    sql = ("SELECT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
           "WHERE a.attrelid = to_regclass(:t) AND a.attname = :c AND NOT a.attisdropped")
    try:
        with conn.begin_nested():
            types = [conn.execute(sa.text(sql), {"t": quote_table(conn, table), "c": col}).scalar()
                     for table, col in ((model.source.table, model.source.id), (model.labels.table, model.labels.id))]
    except sa.exc.DBAPIError:  # no catalog access: read the labels whole
        return False
    return all(t in ("int2", "int4", "int8") for t in types)


def _ensure_ln(conn) -> None:
    """SQLite builds without math functions get `ln` from Python."""
    if conn.dialect.name != "sqlite":
        return
    try:
        conn.execute(sa.text("SELECT ln(1.0)")).scalar()
    except sa.exc.OperationalError:  # no such function: ln
        raw = conn.connection.driver_connection
        raw.create_function("ln", 1, lambda x: math.log(x) if x is not None and x > 0 else None, deterministic=True)


def quality_binary(conn, model: Model, window: Window, p95: bool = False, ids: tuple | None = None,
                   clean: bool | None = None, version=None) -> dict:
    """Exact classification quality of the window's labelled predictions, in one query.

    The labelled rows, sorted once by descending score, carry three window functions over the
    default frame (every row with a score at least as high, ties included): ``rank()`` (1 + the
    rows scored higher), ``COUNT(*)`` and ``SUM(y)``. Hence, with n labelled scores of which P are
    positive, a positive's mid-rank among the ascending scores is n + 1 - (rank + count) / 2, and
    the Mann-Whitney U = sum of the positives' mid-ranks - P (P + 1) / 2: ROC AUC = U / (P N)
    (ties count one half, as scikit-learn), computed in integers. Average precision is the sum
    over positives of the precision at their score (positives / rows scored at least as high),
    over P, as scikit-learn's step sum; log loss and Brier are sums over rows. Precision, recall
    and F1 count the prediction column (or score >= 0.5 without one). No GROUP BY of a million
    distinct scores and no second sort: a third faster than grouping then accumulating.

    `p95` (PostgreSQL): also the labelled scores' 95th percentile, numpy's linear one
    (``percentile_cont``, taken as the 5th from the top over rows that arrive sorted that way):
    the window's score_p95 when every scored row of the window is labelled once.
    Memory is the database's; Python gets one row. NaN and infinite scores are NULL (`clean`
    None: read plainly first, and again clean if there were any).
    """
    if clean is None:
        out = quality_binary(conn, model, window, p95, ids, clean=False, version=version)
        return out if not out["_non_finite"] else quality_binary(conn, model, window, p95, ids, clean=True, version=version)
    s, lab = model.source, model.labels
    _ensure_ln(conn)
    raw = f"CAST(s.{quote(conn, s.score)} AS DOUBLE PRECISION)"
    sc = _num(conn, f"s.{quote(conn, s.score)}", clean)
    # a row whose score is NULL or not finite is not scored: no metric counts it
    pred = (f"CASE WHEN {sc} IS NOT NULL THEN CAST(s.{quote(conn, s.prediction)} AS INTEGER) END" if s.prediction else
            f"CASE WHEN {sc} >= 0.5 THEN 1 WHEN {sc} IS NOT NULL THEN 0 END")
    y = f"l.{quote(conn, lab.label)}"
    # labels other than 0 and 1 are NULL here, and counted (the `label_values` check)
    y = f"CAST({y} AS INTEGER)" if _is_boolean(conn, lab.table, lab.label) else f"CASE WHEN {y} = 1 THEN 1 WHEN {y} = 0 THEN 0 END"
    j = _joined(conn, model, f"{sc} AS sc, {y} AS y, {pred} AS pr, "
                             f"CASE WHEN {non_finite(conn, raw)} THEN 1 ELSE 0 END AS nf", ids, version is not None)
    pos = "FILTER (WHERE sc IS NOT NULL AND y = 1)"
    clip = "(CASE WHEN sc < :eps THEN :eps WHEN sc > :one_eps THEN :one_eps ELSE sc END)"
    # NULL scores sort last (SQLite's default for DESC), so that they never rank above a score
    order = "sc DESC NULLS LAST" if conn.dialect.name == "postgresql" else "sc DESC"
    params = {**_bounds(conn, model, window), **_id_params(ids), "eps": LOG_EPS, "one_eps": 1 - LOG_EPS,
              **({"version": version} if version is not None else {})}
    extra = ", percentile_cont(0.05) WITHIN GROUP (ORDER BY sc DESC)" if p95 else ""
    # FILTER, not CASE: this aggregate runs in one process over every row, and a FILTER costs less
    sql = f"""
    SELECT COUNT(*), COUNT(*) {pos}, COUNT(sc), SUM(rk + cnt) {pos},
           SUM(CAST(ctp AS DOUBLE PRECISION) / cnt) {pos},
           SUM(LN(CASE WHEN y = 1 THEN {clip} ELSE 1 - {clip} END)), SUM((y - sc) * (y - sc)),
           SUM(pr * y), SUM(pr), SUM(y) FILTER (WHERE pr IS NOT NULL), COUNT(pr), COUNT(y), SUM(nf){extra}
    FROM (SELECT sc, y, pr, nf, RANK() OVER w AS rk, COUNT(*) OVER w AS cnt, SUM(y) OVER w AS ctp
          FROM ({j}) j WINDOW w AS (ORDER BY {order})) x"""
    row = conn.execute(sa.text(sql), params).one()
    labelled, P, n, ranks = (0 if v is None else int(v) for v in row[:4])
    ap, ll, brier, tpp, pp, ppos, pn = (0.0 if v is None else float(v) for v in row[4:11])
    N = n - P
    out: dict = {"labelled": labelled, "_invalid_labels": labelled - int(row[11] or 0), "_non_finite": int(row[12] or 0)}
    if P > 0 and N > 0:
        # 2 U = 2 P (n + 1) - sum(rank + count) - P (P + 1), exact in integers
        out["roc_auc"] = (2 * P * (n + 1) - ranks - P * (P + 1)) / (2 * P * N)
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
        out["_p95"] = (n, None if row[13] is None else float(row[13]))
    return out


def quality_multiclass(conn, model: Model, window: Window, ids: tuple | None = None) -> dict:
    """Multiclass quality from one GROUP BY (true class, predicted class) over the join: see `multiclass`."""
    _ensure_ln(conn)
    sql = MC.quality_sql(conn, model, lambda cols: _joined(conn, model, cols, ids))
    rows = conn.execute(sa.text(sql), {**_bounds(conn, model, window), **_id_params(ids),
                                       "eps": LOG_EPS, "one_eps": 1 - LOG_EPS}).all()
    return MC.quality(conn, model, rows)


def quality_regression(conn, model: Model, window: Window, ids: tuple | None = None,
                       clean: bool | None = None, version=None) -> dict:
    """MAE, MSE, RMSE and MAPE of the window's labelled predictions, as SQL sums (NaN and
    infinities: see `quality_binary`).

    MAPE is scikit-learn's: the mean of |prediction - truth| / max(|truth|, eps), a share (not %)."""
    if clean is None:
        out = quality_regression(conn, model, window, ids, clean=False, version=version)
        return out if not out["_non_finite"] else quality_regression(conn, model, window, ids, clean=True, version=version)
    s, lab = model.source, model.labels
    sc, y = f"s.{quote(conn, s.score)}", f"l.{quote(conn, lab.label)}"
    nf = (f"CASE WHEN {non_finite(conn, _num(conn, sc, False))} OR {non_finite(conn, _num(conn, y, False))} "
          "THEN 1 ELSE 0 END")
    j = _joined(conn, model, f"{_num(conn, sc, clean)} AS sc, {_num(conn, y, clean)} AS y, {nf} AS nf", ids, version is not None)
    r = conn.execute(sa.text(f"SELECT COUNT(*), COUNT(sc - y), SUM(ABS(sc - y)), SUM((sc - y) * (sc - y)), "
                             f"SUM(ABS(sc - y) / (CASE WHEN ABS(y) > :eps THEN ABS(y) ELSE :eps END)), SUM(nf) FROM ({j}) j"),
                     {**_bounds(conn, model, window), **_id_params(ids), "eps": LOG_EPS,
                      **({"version": version} if version is not None else {})}).one()
    labelled, n = int(r[0] or 0), int(r[1] or 0)
    out: dict = {"labelled": labelled, "_non_finite": int(r[5] or 0)}
    if n:
        out["mae"] = float(r[2]) / n
        out["mse"] = float(r[3]) / n
        out["rmse"] = math.sqrt(float(r[3]) / n)
        out["mape"] = float(r[4]) / n
    return out


# --------------------------------------------------------------------------- the window


def _connect(engine):
    """A connection whose queries all see one snapshot (PostgreSQL: REPEATABLE READ, read only)."""
    conn = engine.connect()
    if conn.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return conn


def _setup(conn) -> None:
    if conn.dialect.name == "postgresql" and (conn.dialect.server_version_info or (0,)) >= (11,):
        # JIT compiling a query of hundreds of aggregates costs seconds and saves nothing here.
        conn.execute(sa.text("SET LOCAL jit = off"))


def _export_snapshot(conn) -> str | None:
    """PostgreSQL: the transaction's snapshot, for a second connection to see exactly the same rows
    (``SET TRANSACTION SNAPSHOT``); None elsewhere, or when the server refuses (then one connection
    does everything, in turn)."""
    if conn.dialect.name != "postgresql":
        return None
    try:
        sid = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar()
    except sa.exc.DBAPIError:  # e.g. a hot standby: the transaction is aborted, start it again
        conn.rollback()
        _setup(conn)
        return None
    return sid if isinstance(sid, str) and re.fullmatch(r"[0-9A-Fa-f-]+", sid) else None


def _on_snapshot(engine, snapshot: str, job):
    """Run `job(conn)` on a connection of its own that sees the exporting transaction's snapshot."""
    with engine.connect() as c:
        c = c.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        try:
            c.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
            _setup(c)
            return job(c)
        finally:
            c.rollback()


def _mean(summary: dict) -> float | None:
    return summary["s"] / summary["n"] if summary["n"] else None


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
                      _where(conn, model), lambda w: _bounds(conn, model, w))
        if d is not None:
            cur["num"][col]["ks_d"] = d


def _learned(conn, store: Store, model: Model, spec: dict, ref: dict, window: Window, now: datetime) -> dict:
    """Thresholds learned from the reference's chunks (windows of the model's size): see `driftsettings`."""
    if not S.learns(model):
        return {}
    rolling = model.reference.rolling is not None
    key = f"thresholds:{_model_hash(model)}:{_fingerprint(spec)}"
    if not rolling:
        got = store.load_reference(model.name, key)
        if got is not None:
            return got
    rng = reference_range(model, window)
    chunks = []
    for w in windows_between(rng.start, rng.end, model.window):
        k = _window_key(model, spec, w) if rolling else f"chunk:{_model_hash(model)}:{_fingerprint(spec)}:{w.start:%Y%m%dT%H%M%S}"
        part = store.load_reference(model.name, k)
        if part is None:
            part = scan(conn, model, spec, w, moments=True, sample=False)
            store.save_reference(model.name, k, part, now)
        chunks.append(part["all"])
    out = S.learn(model, ref["all"], [c for c in chunks if c["rows"]],
                  lambda col, method, r, c: _compare_column(spec, col, method, None, r, c, model))
    if not rolling and now >= rng.end:
        store.save_reference(model.name, key, out, now)
    return out


def _drift_metric(kind: str, name: str, r: D.ColumnDrift, segment: str = "") -> dict:
    return {"kind": kind, "name": name, "segment": segment, "method": r.method, "value": r.value,
            "threshold": r.threshold, "detected": r.detected}


def _check(name: str, value: float | None, detected: bool) -> dict:
    """A data check's row: `value` the offending rows (None: not a count), `detected` True when failing."""
    assert name in names.DATA_CHECKS, name
    return {"kind": names.DATA_CHECK_KIND, "name": name, "segment": "", "method": None,
            "value": None if value is None else float(value), "threshold": None, "detected": bool(detected)}


_bad_ts: dict[tuple, int] = {}


def _bad_timestamps(conn, model: Model, now: datetime) -> int:
    """Rows of the whole source whose timestamp is NULL or unreadable: counted once per cycle (per
    `now`), since it is one count for every window a cycle computes."""
    s = model.source
    key = (str(conn.engine.url), s.table, s.timestamp, now)
    if key not in _bad_ts:
        for old in [k for k in _bad_ts if k[3] != now]:
            del _bad_ts[old]
        x = quote(conn, s.timestamp)
        _bad_ts[key] = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {quote_table(conn, s.table)} "
                                                f"WHERE {invalid_time(conn, x, _ts(conn, model))}")).scalar() or 0)
    return _bad_ts[key]


def _source_checks(conn, model: Model, window: Window, allc: dict, now: datetime) -> list[dict]:
    """The checks read from the window's pass, the source-wide `timestamp` check and the freshness row."""
    s = model.source
    t, x, ts = quote_table(conn, s.table), quote(conn, s.timestamp), _ts(conn, model)
    rows = int(allc["rows"])
    found = allc.get("checks", {})
    nulls = rows - int(allc["score"]["n"])  # NULL, NaN and +-infinity
    bad_ts = _bad_timestamps(conn, model, now)
    checks = [_check("timestamp", bad_ts, bad_ts > 0),
              *([_check("score_nulls", nulls, nulls > SCORE_NULL_TOLERANCE * rows)] if s.score else []),
              _check("non_finite", found.get("non_finite", 0), found.get("non_finite", 0) > 0)]
    if model.task == "binary_classification":
        checks.append(_check("score_range", found.get("score_range", 0), found.get("score_range", 0) > 0))
    newest = conn.execute(sa.text(f"SELECT {newest_of(conn, x, ts)} FROM {t} WHERE {_where(conn, model)}"),
                          _bounds(conn, model, window)).scalar() if rows else None
    checks.append({"kind": names.FRESHNESS_KIND, "name": names.FRESHNESS_NAME, "segment": "", "method": None,
                   "value": None if newest is None else float(newest), "threshold": None, "detected": None})
    return checks


def _unusable(conn, model: Model, window: Window, problems: list[str], now: datetime) -> tuple[ModelWindow, int]:
    """A window whose configured columns are missing or unusable: recorded with its rows, its
    freshness and a failing `schema` check, and nothing computed from the columns."""
    s = model.source
    log.warning("model %s: %s", model.name, "; ".join(problems), extra={"model": model.name})
    t, x, ts = quote_table(conn, s.table), quote(conn, s.timestamp), _ts(conn, model)
    row = conn.execute(sa.text(f"SELECT COUNT(*), {newest_of(conn, x, ts)} FROM {t} WHERE {_where(conn, model)}"),
                       _bounds(conn, model, window)).one()
    bad_ts = _bad_timestamps(conn, model, now)
    conn.rollback()
    rows = int(row[0] or 0)
    metrics = [_check("schema", None, True), _check("timestamp", bad_ts, bad_ts > 0),
               {"kind": names.FRESHNESS_KIND, "name": names.FRESHNESS_NAME, "segment": "", "method": None,
                "value": None if row[1] is None else float(row[1]), "threshold": None, "detected": None},
               {"kind": "online", "name": "predictions", "segment": "", "value": float(rows)}]
    return ModelWindow(model=model.name, window_start=window.start, window_end=window.end, rows=rows,
                       drift_share=None, dataset_drift=None, quality_status="invalid", label_coverage=None,
                       metrics=metrics), rows


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
                q = quality_binary(c, model, window, fold_p95, window_ids)
            elif MC.is_multiclass(model):
                q = quality_multiclass(c, model, window, window_ids)
            else:
                q = quality_regression(c, model, window, window_ids)
            q["_ids"] = (q["labelled"], 0) if unique else _label_ids(c, model, window, window_ids)
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
            cur = scan(conn, model, spec or _empty_spec(model), window, moments=model.reference.rolling is not None,
                       on_pass=start if narrow else None, unseen_from=_unseen_from(model, window, ref))
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
            if MC.is_multiclass(model) and rows:
                classes = MC.prediction_drift(
                    conn, store, model, window, reference_range(model, window), model.reference.rolling is not None,
                    _model_hash(model), now, _where(conn, model), lambda w: _bounds(conn, model, w))
            if MV.enabled(model) and spec is not None and rows:
                multivariate = MV.window_drift(
                    conn, store, model, window, reference_range(model, window), model.reference.rolling is not None,
                    f"{_model_hash(model)}:{_fingerprint(spec)}", spec, now, _where(conn, model),
                    lambda w: _bounds(conn, model, w))
            quality = (side.result() if side else job(conn)) if mature and rows else None
        n_scores = int(allc["score"]["n"])
        checks += _source_checks(conn, model, window, allc, now)
        if quality:
            distinct, duplicated = quality.pop("_ids")
            invalid = quality.pop("_invalid_labels", None)
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


def _floor(model: Model, metric: str, bands: dict | None = None) -> float | None:
    """The bound a quality row shows: of `bands` (`monitor.bands`), else the config's fixed numbers."""
    return B.threshold((bands if bands is not None else _fixed_bands(model)).get(metric))


def _breach(model: Model, metric: str, value: float, bands: dict | None = None) -> bool | None:
    return B.breach((bands if bands is not None else _fixed_bands(model)).get(metric), value)


def _fixed_bands(model: Model) -> dict:
    """The config's fixed floors and ceilings (learned ones need the reference: `monitor.bands`)."""
    out = {}
    for metric, f in model.quality.items():
        limits = {b: float(v) for b, v in (("min", f.min), ("max", f.max)) if isinstance(v, (int, float))}
        if limits:
            out[metric] = limits
    return out


def _chunk_quality(conn, model: Model, w: Window, now: datetime) -> dict | None:
    """Quality of a reference chunk, once its labels are mature (for learned floors)."""
    if model.labels is None or w.end + model.labels.max_delay > now:
        return None
    if model.task == "binary_classification":
        q = quality_binary(conn, model, w)
    elif MC.is_multiclass(model):
        q = quality_multiclass(conn, model, w)
    else:
        q = quality_regression(conn, model, w)
    if not q.get("labelled"):
        return None
    return {k: v for k, v in q.items() if not k.startswith("_") and k != "labelled"}


# --------------------------------------------------------------------------- Evidently report


def _sample_frame(conn, model: Model, window: Window, sample: int, with_labels: bool):
    import pandas as pd

    s = model.source
    cols = [*s.features.numeric, *s.features.categorical, s.score] + ([s.prediction] if s.prediction else [])
    sel = ", ".join(f"s.{quote(conn, c)} AS {quote(conn, c)}" for c in dict.fromkeys(cols))
    t = f"{quote_table(conn, s.table)} s"
    if with_labels:
        lab = model.labels
        sel += f", l.{quote(conn, lab.label)} AS {quote(conn, '__label__')}"
        t += (f" LEFT JOIN {quote_table(conn, lab.table)} l ON l.{quote(conn, lab.id)} = s.{quote(conn, s.id)}")
    sql = f"SELECT {sel} FROM {t} WHERE {_where(conn, model, 's.')} ORDER BY RANDOM() LIMIT {int(sample)}"
    result = conn.execute(sa.text(sql), _bounds(conn, model, window))
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def evidently_report(source_engine, model: Model, window: Window, reference: Window | None = None,
                     sample: int = 20000, path: str | Path | None = None) -> str | Path:
    """Evidently's HTML report of one window against its reference, on at most `sample` random rows of each.

    Writes `path` and returns it; without a path returns the HTML. Evidently is imported here:
    importing it takes seconds, and nothing else needs it.
    """
    import pandas as pd
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        Regression,
        Report,
    )
    from evidently.presets import (
        ClassificationPreset,
        DataDriftPreset,
        RegressionPreset,
    )

    reference = reference or reference_range(model, window)
    s = model.source
    with_labels = model.labels is not None
    with source_engine.connect() as conn:
        cur = _sample_frame(conn, model, window, sample, with_labels)
        ref = _sample_frame(conn, model, reference, sample, with_labels)
        conn.rollback()
    numeric = [*s.features.numeric, s.score]
    for df in (cur, ref):
        for c in numeric:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    metrics = [DataDriftPreset(columns=[*s.features.numeric, *s.features.categorical, s.score],
                               method=None if model.drift.method == "auto" else model.drift.method,
                               threshold=model.drift.threshold if isinstance(model.drift.threshold, float) else None,
                               drift_share=model.drift.dataset_share)]
    definition = {"numerical_columns": numeric, "categorical_columns": list(s.features.categorical)}
    labelled = with_labels and cur["__label__"].notna().any() and ref["__label__"].notna().any()
    if labelled:
        cur, ref = cur[cur["__label__"].notna()], ref[ref["__label__"].notna()]
        if model.task == "binary_classification":
            for df in (cur, ref):
                df["__label__"] = df["__label__"].astype(int)
                df["__pred__"] = (df[s.prediction].astype(int) if s.prediction else (df[s.score] >= 0.5).astype(int))
            definition["classification"] = [BinaryClassification(target="__label__", prediction_labels="__pred__",
                                                                 prediction_probas=s.score)]
            metrics.append(ClassificationPreset())
        else:
            definition["regression"] = [Regression(target="__label__", prediction=s.score)]
            metrics.append(RegressionPreset())
    dd = DataDefinition(**definition)
    snapshot = Report(metrics).run(Dataset.from_pandas(cur, data_definition=dd),
                                   Dataset.from_pandas(ref, data_definition=dd))
    if path is None:
        return snapshot.get_html_str(as_iframe=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path
