"""The SQL passes over a window's rows: numeric aggregates, category counts, distances (`scan`)."""
from __future__ import annotations

import math

import sqlalchemy as sa

from .. import drift as D
from .. import engines
from ..config import Model
from ..db import finite, newest_of, non_finite, quote, quote_table
from ..windows import Window
from .source import model_bounds, _jsonable, _num, _ts, model_where

SAMPLE_ROWS = 100_000  # Wasserstein sums of larger windows: over a hashed sample of about this many rows
SAMPLE_BUCKETS = 65536  # ... one in m of these hash buckets
CLASS_SUM_TOLERANCE = 0.05  # class scores summing further from 1 fail score_range (2-decimal rounding of 10 classes stays within)
JOINT_MAX = 50_000  # categorical columns are counted in one GROUP BY while their combinations are this few
OTHER = "other"  # the segment of the rows outside a segment column's values


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
    of every window when the reference is rolling. `mv`: the centres of the numeric features'
    multivariate moments (`moments`), taken in the distances' query, over its sample.
    """

    def __init__(self, conn, model: Model, spec: dict, segment: str | None, moments: bool, ids: bool = False,
                 clean: bool = False, mv: list[float] | None = None, newest: bool = False):
        self.conn, self.model, self.spec, self.segment, self.moments = conn, model, spec, segment, moments
        self.mv = mv
        self.newest = newest  # also the newest timestamp, as epoch seconds (the freshness row)
        self.clean = clean  # NaN and +-infinity read as NULL (`_num`)
        self.ids = ids  # also MIN(id) and MAX(id): the range of the labels' ids to read (`_integer_ids`)
        self.params: dict = {}
        self.aggs: list[str] = ["COUNT(*)"]
        self.slots: list[tuple] = [("rows",)]
        # engines with a hashed sample: the Wasserstein sums go in a second query that may read it (`_distances`)
        self.bucket = engines.of(conn).sample_bucket(quote(conn, model.source.id), SAMPLE_BUCKETS)
        self.split = self.bucket is not None
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
        cols.append(f"{_num(conn, quote(conn, s.score), self.clean) if s.score else 'CAST(NULL AS ' + engines.of(conn).double + ')'} AS sc")
        self._numeric(("score",), "sc", self.spec["score"])
        # data checks: rows with a non-finite score, class score or numeric feature (read as NULL above) ...
        class_scores = list((s.class_scores or {}).values())
        raw = [f"CAST({quote(conn, c)} AS {engines.of(conn).double})" for c in [*s.features.numeric, s.score, *class_scores] if c]
        cols.append(f"CASE WHEN {' OR '.join(non_finite(conn, r) for r in raw) or '1 = 0'} THEN 1 ELSE 0 END AS nf")
        self.aggs.append("SUM(nf)")
        self.slots.append(("checks", "non_finite"))
        if m.task == "binary_classification":  # ... and classifier scores outside [0, 1]
            self.aggs.append("SUM(CASE WHEN sc < 0 OR sc > 1 THEN 1 ELSE 0 END)")
            self.slots.append(("checks", "score_range"))
        elif class_scores:  # ... or class scores outside [0, 1], or whose sum is not 1
            ps = [_num(conn, quote(conn, c), self.clean) for c in class_scores]
            bad = [*(f"{p} < 0 OR {p} > 1" for p in ps), f"ABS({' + '.join(ps)} - 1) > {CLASS_SUM_TOLERANCE!r}"]
            cols.append(f"CASE WHEN {' OR '.join(bad)} THEN 1 ELSE 0 END AS sr")
            self.aggs.append("SUM(sr)")
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
        if self.newest:
            cols.append(f"{quote(conn, s.timestamp)} AS t")
            self.aggs.append(newest_of(conn, "t", _ts(conn, m)))
            self.slots.append(("newest", "t"))
        if self.mv is not None and not self.abs_aggs:
            self.mv = None  # no distances' query to take them in: `moments` does
        over = self._moments(cols) if self.mv is not None else ""
        group = ""
        g = _segment_expr(conn, self.spec, self.segment, self.params)
        if g is not None:
            cols.append(f"{g} AS g")
            group = " GROUP BY g"
            self.aggs.insert(0, "g")
            if self.abs_aggs:
                self.abs_aggs.insert(0, "g")
        # one row in `sample` of SAMPLE_BUCKETS, picked by a hash of the id: the same rows every time
        sampled = f" AND {self.bucket} < :sample"
        rows = f"(SELECT {', '.join(cols)} FROM {quote_table(conn, s.table)} WHERE {model_where(conn, m)}{{}}) q"
        sql = f"SELECT {', '.join(self.aggs)} FROM {rows.format('')}{group}"
        # the distances' query, over every row (False) or over a sample (True); the moments'
        # differences computed once per row, in a projection of their own
        fence = engines.of(conn).fence
        frm = f"FROM (SELECT q.*, {over} FROM {rows}{fence}) q{group}" if over else f"FROM {rows}{group}"
        self.abs_sql = {x: f"SELECT {', '.join(self.abs_aggs)} {frm.format(sampled if x else '')}"
                        for x in (False, True)} if self.abs_aggs else None
        return sql, {**self.params, **model_bounds(conn, m, window)}

    def _moments(self, cols: list[str]) -> str:
        """`moments` in the distances' query: over the rows where every numeric feature is finite,
        d_i = x_i - c_i, exactly as that query takes them. `mvz` is 0 on those rows and NULL on the
        others (x * 0 is NaN for NaN and infinities, which `finite` reads as NULL), so that
        ``d_i + mvz`` is d_i itself or NULL: COUNT(mvz), SUM(d_i), SUM(d_i d_j) need no filter."""
        conn, numeric = self.conn, self.model.source.features.numeric
        double = engines.of(conn).double
        zero = " + ".join(f"CAST({quote(conn, c)} AS {double}) * 0" for c in numeric)
        cols.append(f"{finite(conn, f'({zero})')} AS mvz")
        d = len(numeric)
        over = ", ".join(f"(n{i} - {self._p(float(c))}) + mvz AS m{i}" for i, c in enumerate(self.mv))
        self.abs_aggs.append("COUNT(mvz)")
        self.abs_slots.append(("mv", "n"))
        self.abs_aggs += [f"SUM(m{i})" for i in range(d)]
        self.abs_slots += [("mv", "s", i) for i in range(d)]
        self.abs_aggs += [f"SUM(m{i} * m{j})" for i in range(d) for j in range(i, d)]
        self.abs_slots += [("mv", "p", k) for k in range(d * (d + 1) // 2)]
        return over

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
        if self.newest:
            out["newest"] = {"t": None}
        if self.mv is not None:
            d = len(self.mv)
            out["mv"] = {"n": 0, "s": [0.0] * d, "p": [0.0] * (d * (d + 1) // 2)}
        return out

    def decode(self, row, out: dict | None = None, slots: list[tuple] | None = None) -> dict:
        """Fill a blank summary (or `out`) with a row of the pass (of `slots`)."""
        out = self.blank() if out is None else out
        for slot, value in zip(self.slots if slots is None else slots, row):
            if slot[0] in ("ids", "newest"):  # kept as they are (NULL when no rows)
                out[slot[0]][slot[1]] = value if value is None or slot[0] == "ids" else float(value)
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
    lookups = {c: {_jsonable(v): j for j, v in enumerate(spec["cat"][c]["categories"])} for c in cats}
    joint = (not any(spec["cat"][c].get("pooled") or c in unseen_from for c in cats)
             and math.prod(len(lookups[c]) + 1 for c in cats) * (len(segments) + 1) <= JOINT_MAX)
    if joint and _count_jointly(conn, model, window, segment, segments, lookups, parts):
        return
    for col in cats:
        _count_column(conn, model, spec, window, segment, col, lookups[col], parts, unseen_from.get(col))


def _count_jointly(conn, model: Model, window: Window, segment: str | None, segments: list, lookups: dict,
                   parts: dict[int, dict]) -> bool:
    """Every categorical column (and the segment) in one plain GROUP BY; False, counting nothing,
    when the window holds more than JOINT_MAX combinations."""
    cats = list(lookups)
    keys = [quote(conn, c) for c in cats] + ([quote(conn, segment)] if segment else [])
    rows = conn.execute(sa.text(f"SELECT {', '.join(keys)}, COUNT(*) FROM {quote_table(conn, model.source.table)} "
                                f"WHERE {model_where(conn, model)} GROUP BY {', '.join(keys)} LIMIT {JOINT_MAX + 1}"),
                        model_bounds(conn, model, window)).all()
    if len(rows) > JOINT_MAX:
        return False
    seg_index = {_jsonable(v): i for i, v in enumerate(segments)}
    for r in rows:
        part = parts[seg_index.get(_jsonable(r[-2]), -1)] if segment else parts[-1]
        for i, col in enumerate(cats):
            if r[i] is None:
                continue
            c, count = part["cat"][col], int(r[-1])
            c["n"] += count
            j = lookups[col].get(_jsonable(r[i]))
            if j is not None:
                c["counts"][j] += count
    return True


def _count_column(conn, model: Model, spec: dict, window: Window, segment: str | None, col: str, lookup: dict,
                  parts: dict[int, dict], unseen_from: Window | None) -> None:
    """One column mapped to its reference categories in SQL and counted on its own; with
    `unseen_from` (its reference range), the other values told apart into the reference's tail and
    the values it never saw."""
    t, where = quote_table(conn, model.source.table), model_where(conn, model)
    params = model_bounds(conn, model, window)
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
    if unseen_from is not None:  # values outside the categories that the reference never holds
        cols.append(f"{x} AS v")
        params.update(model_bounds(conn, model, unseen_from, p="r"))
        ref_where = model_where(conn, model, "r.", p="r")
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
            c["counts"][lookup[_jsonable(r[0])]] += int(r[-1])
        elif unseen_from is not None and r[-2]:
            c["unseen"] = c.get("unseen", 0) + int(r[-1])


def _distances(conn, p: _Pass, params: dict, parts: dict[int, dict], sample: bool) -> None:
    """On engines with a sample: the Wasserstein sums ``SUM(ABS(x - e))``, in a query of their own
    (with the multivariate moments, `_Pass._moments`, of a window without segments).

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
    keep = _keep(least) if sample else SAMPLE_BUCKETS
    while True:
        rows = conn.execute(sa.text(p.abs_sql[keep < SAMPLE_BUCKETS]), {**params, "sample": keep}).all()
        got = {-1: rows[0]} if p.segment is None else {int(r[0]): r[1:] for r in rows}
        for g, part in parts.items():
            p.decode(got.get(g, [0] * len(p.abs_slots)), part, p.abs_slots)
        if keep == SAMPLE_BUCKETS or (
                all(node(part, key)["abs_n"] >= SAMPLE_ROWS / 4 for part in parts.values() for key in cols if node(part, key)["n"])
                and (p.mv is None or sum(part["mv"]["n"] for part in parts.values()) >= SAMPLE_ROWS / 4)):
            return
        keep = SAMPLE_BUCKETS


def _keep(least: int) -> int:
    """The sample's cut, of SAMPLE_BUCKETS, for about SAMPLE_ROWS of `least` values (all above)."""
    return math.ceil(SAMPLE_BUCKETS * SAMPLE_ROWS / least) if least > SAMPLE_ROWS else SAMPLE_BUCKETS


def _sampled_columns(model: Model, spec: dict) -> list[str]:
    """The columns whose Wasserstein sums a window takes over its sample (whose emptiest sets its size)."""
    return [*(c for c in model.source.features.numeric if spec["num"][c].get("abs")),
            *([model.source.score] if spec["score"].get("abs") and model.source.score else [])]


def sample_cut(model: Model, spec: dict, summary: dict) -> int:
    """The cut of a range's hashed sample from its summary (the whole range's, segments summed):
    about SAMPLE_ROWS values in the emptiest sampled column, or rows when there is none."""
    nodes = [summary["num"][c] for c in model.source.features.numeric if spec["num"][c].get("abs")]
    nodes += [summary["score"]] if model.source.score and spec["score"].get("abs") else []
    return _cut([int(d["n"]) for d in nodes], int(summary["rows"]))


def _cut(counts: list[int], rows: int) -> int:
    """`_keep` of the emptiest non-empty of the sampled columns' `counts`, else of the `rows`."""
    return _keep(min((n for n in counts if n), default=rows))


def moments(conn, model: Model, spec: dict, centers: list[float], window: Window, keep: int | None = None) -> dict:
    """The multivariate moments of a range's complete rows (every numeric feature finite), in one
    query: {"n": count, "s": [sum(x_i - c_i)], "p": [sum((x_i - c_i)(x_j - c_j)) for i <= j]}.

    Over the range's hashed sample (`keep`, its cut, from `sample_cut`; None: counted here the
    same way), so that a window reads the 210 products of 20 features over about SAMPLE_ROWS
    rows, not all of them; over every row on engines without a sample, in ranges of at most
    SAMPLE_ROWS values, and when the sample comes out below a quarter of that. The sample is the
    engine's (its hash): sums stored by one engine are another sample of the same rows to another."""
    cols, e = model.source.features.numeric, engines.of(conn)
    t, where, params = quote_table(conn, model.source.table), model_where(conn, model), model_bounds(conn, model, window)
    bucket = e.sample_bucket(quote(conn, model.source.id), SAMPLE_BUCKETS)
    if bucket is None:
        keep = SAMPLE_BUCKETS
    elif keep is None:
        counted = _sampled_columns(model, spec)
        counts = conn.execute(sa.text(f"SELECT COUNT(*){''.join(f', COUNT({_num(conn, quote(conn, c))})' for c in counted)} "
                                      f"FROM {t} WHERE {where}"), params).one()
        keep = _cut([int(v or 0) for v in counts[1:]], int(counts[0] or 0))  # as `sample_cut`
    d = len(cols)
    binds = {f"mc{i}": float(c) for i, c in enumerate(centers)}
    inner = ", ".join(f"CAST({quote(conn, c)} AS {e.double}) - :mc{i} AS d{i}" for i, c in enumerate(cols))
    # complete rows: NaN and +-infinity count as missing, as everywhere
    present = " AND ".join(f"{finite(conn, f'CAST({quote(conn, c)} AS {e.double})')} IS NOT NULL" for c in cols)
    aggs = ["COUNT(*)", *(f"SUM(d{i})" for i in range(d)), *(f"SUM(d{i} * d{j})" for i in range(d) for j in range(i, d))]
    while True:
        sampled = f" AND {bucket} < :sample" if keep < SAMPLE_BUCKETS else ""
        row = conn.execute(sa.text(f"SELECT {', '.join(aggs)} FROM (SELECT {inner} FROM {t} "
                                   f"WHERE {where}{sampled} AND {present}) q"), {**params, **binds, "sample": keep}).one()
        vals = [0.0 if v is None else float(v) for v in row]
        if keep == SAMPLE_BUCKETS or vals[0] >= SAMPLE_ROWS / 4:
            return {"n": int(vals[0]), "s": vals[1:1 + d], "p": vals[1 + d:]}
        keep = SAMPLE_BUCKETS


def scan(conn, model: Model, spec: dict, window: Window, moments: bool = False, sample: bool = True,
         on_pass=None, unseen_from: dict[str, Window] | None = None, mv: list[float] | None = None,
         newest: bool = False) -> dict:
    """A window's (or reference's) summary: {"all": summary, "segments": {column: {label: summary}}}.

    One numeric pass and one categorical GROUP BY per segment column (one of each without
    segments); with segments, the whole is the sum of the first column's segments. On engines with
    a hashed sample the Wasserstein sums take a query of their own, over a sample of large windows
    (`sample`: see `_distances`). `on_pass(rows, (min id, max id), scores)` is called once the first numeric pass is
    in, so that the quality query can start beside the rest; it also makes the pass read the ids.
    `unseen_from`: see `_count_categories`. `mv` (centres): the multivariate moments too, as
    "moments" of the result, taken in the distances' query of a window without segments (whose
    sample is then the whole window's, as `sample_cut` gives it) on engines with a sample.
    `newest`: also the newest timestamp of the rows, as epoch seconds (None without rows), as
    "newest" of the result, from the first pass (no read of its own).
    """
    segs = [c for c in model.segments if c in spec.get("segments", {})]
    mv = mv if mv is not None and not segs else None
    result = {"all": None, "segments": {}}
    for i, seg in enumerate(segs or [None]):
        for clean in (False, True):  # plain first; again reading NaN and infinities as NULL if it met any
            p = _Pass(conn, model, spec, seg, moments, ids=on_pass is not None and i == 0, clean=clean, mv=mv,
                      newest=newest and i == 0)
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
        if p.newest:  # like the id range, the caller's
            times = [part.pop("newest")["t"] for part in parts.values()]
            result["newest"] = max((t for t in times if t is not None), default=None)
        if p.ids:  # the id range is the caller's, never part of a stored summary
            ranges = [part.pop("ids") for part in parts.values()]
            los = [r["lo"] for r in ranges if r["lo"] is not None]
            his = [r["hi"] for r in ranges if r["hi"] is not None]
            on_pass(sum(part["rows"] for part in parts.values()), (min(los), max(his)) if los else None,
                    sum(part["score"]["n"] for part in parts.values()))
        if p.abs_sql:
            _distances(conn, p, params, parts, sample)
        if p.mv is not None:
            got = None
            for part in parts.values():
                got = D.add_summaries(got, part.pop("mv"))
            result["moments"] = {"n": int(got["n"]), "s": [float(v) for v in got["s"]], "p": [float(v) for v in got["p"]]}
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
