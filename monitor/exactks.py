"""The exact two-sample KS statistic where the cut points leave the decision open.

One pass counts each numeric column below the reference's cut points, which brackets the KS
statistic D: the largest gap seen at the cut points is a lower bound (D_low), and since each CDF
rises within a bin by that bin's mass, the gap inside bin k is at most
``hi_k = max(|F_ref(e_k) - F_cur(e_k-1)|, |F_cur(e_k) - F_ref(e_k-1)|)``, so D <= max hi_k
(`drift.ks_statistic_bound`). When the p-values at both ends of that bracket fall on the same side
of the threshold, the decision is already exact. Otherwise the bins that could hold a larger gap
(hi_k > D_low) are read again, as distinct values and their counts in the reference and in the
window (``GROUP BY`` over those bins only), and the empirical CDFs are walked through them from the
counts known at the bin's left edge: D is then exact, so is the p-value (SciPy's formula), and so
the decision. A bin holds about 1/65 of the reference; should the candidate bins hold more than
`CAP` rows on either side, the bracket is kept: the stored p-value is then the one at D_low, at most
`p(D_low) - p(D_high)` above the exact one.
"""
from __future__ import annotations

import sqlalchemy as sa

from . import drift as D
from .config import Model
from .db import quote, quote_table
from .windows import Window

CAP = 200_000  # rows of the candidate bins read at most, per side


def _bins(edges: list[float], ref_lt, cur_lt, n_r: float, n_c: float) -> list[tuple[int, float]]:
    """(bin index, upper bound of the gap inside it); bin 0 is below the first cut point."""
    r = [0.0, *(x / n_r for x in ref_lt), 1.0]
    c = [0.0, *(x / n_c for x in cur_lt), 1.0]
    return [(k, max(abs(r[k + 1] - c[k]), abs(c[k + 1] - r[k]))) for k in range(len(edges) + 1)]


def _values(conn, model: Model, column: str, where: str, params: dict, ranges: list[tuple]) -> dict[float, int]:
    t, x = quote_table(conn, model.source.table), quote(conn, column)
    conds, binds = [], dict(params)
    for i, (lo, hi) in enumerate(ranges):
        parts = []
        if lo is not None:
            binds[f"klo{i}"] = lo
            parts.append(f"v >= :klo{i}")
        if hi is not None:
            binds[f"khi{i}"] = hi
            parts.append(f"v < :khi{i}")
        conds.append("(" + " AND ".join(parts or ["1 = 1"]) + ")")
    sql = (f"SELECT v, COUNT(*) FROM (SELECT CAST({x} AS DOUBLE PRECISION) AS v FROM {t} WHERE {where} "
           f"AND {x} IS NOT NULL) q WHERE {' OR '.join(conds)} GROUP BY v")
    return {float(v): int(c) for v, c in conn.execute(sa.text(sql), binds)}


def refine(conn, model: Model, column: str, spec: dict, ref: D.NumericSummary, cur: D.NumericSummary,
           threshold: float | None, ref_range: Window, window: Window, where: str, bounds) -> float | None:
    """The exact KS statistic of a column when the cut points leave the decision open, else None."""
    edges = spec.get("edges") or []
    if not edges or ref.lt is None or cur.lt is None or ref.n <= 0 or cur.n <= 0:
        return None
    method = D.REGISTRY["ks"]
    thr = method.default_threshold if threshold is None else threshold
    n_r, n_c = ref.n, cur.n
    d_low = D.ks_statistic(ref.lt, cur.lt, n_r, n_c)
    d_high = D.ks_statistic_bound(ref.lt, cur.lt, n_r, n_c)
    if method.detected(D.ks_pvalue(d_low, n_r, n_c), thr) == method.detected(D.ks_pvalue(d_high, n_r, n_c), thr):
        return None  # the decision is the same anywhere in the bracket
    candidates = [k for k, hi in _bins(edges, ref.lt, cur.lt, n_r, n_c) if hi > d_low]
    lt_r, lt_c = [0, *ref.lt, n_r], [0, *cur.lt, n_c]
    if (sum(lt_r[k + 1] - lt_r[k] for k in candidates) > CAP or sum(lt_c[k + 1] - lt_c[k] for k in candidates) > CAP):
        return None
    ranges = [(edges[k - 1] if k > 0 else None, edges[k] if k < len(edges) else None) for k in candidates]
    rv = _values(conn, model, column, where, bounds(ref_range), ranges)
    cv = _values(conn, model, column, where, bounds(window), ranges)
    best = d_low
    for k, (lo, hi) in zip(candidates, ranges):
        below_r, below_c = lt_r[k], lt_c[k]  # counts below the bin's left edge, known from the pass
        for v in sorted({x for x in (*rv, *cv) if (lo is None or x >= lo) and (hi is None or x < hi)}):
            below_r += rv.get(v, 0)
            below_c += cv.get(v, 0)
            best = max(best, abs(below_r / n_r - below_c / n_c))
    return best
