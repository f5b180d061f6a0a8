"""Drift methods: plain functions on summaries, and the registry that chooses and runs them.

Nothing here reads rows. Every method works on what one pass of SQL aggregates can produce
(see `monitor.modeljobs`):

- category counts (categorical columns, and numeric columns with at most 5 distinct values);
- cumulative counts below shared cut points ``lt[k] = #(x < edges[k])`` (histograms, KS);
- sums of distances to the cut points ``abs[k] = sum |x - edges[k]|`` plus ``n`` and ``sum x``
  (the normed Wasserstein distance; see `wasserstein`), or, on large windows, the same over a
  fixed sample of the rows with the sample's own count and sum (``abs_n``, ``abs_s``).

Summaries are additive (counts and sums), so a rolling reference is the sum of stored per-window
summaries. NULLs never enter a method: like Evidently, a method compares the non-null values, and
the NULL share is compared on its own (`null_shift`); a feature is flagged when either drifts.

`auto` follows Evidently's default choice (``get_stattest``), keyed on the number of non-null
reference values and of distinct values:

==================  ===================================  ================================
reference values    numeric column                       categorical column
==================  ===================================  ================================
more than 1000      wasserstein (normed) >= 0.1;         jensenshannon >= 0.1
                    jensenshannon >= 0.1 if <= 5 values
1000 or fewer       ks p-value <= 0.05; chisquare        chisquare p < 0.05;
                    (z if <= 2 values) if <= 5 values    z p < 0.05 if <= 2 values
==================  ===================================  ================================

Above 1000 rows it picks effect sizes, not p-values: with a million rows every trivial shift
has a p-value of zero, while a distance measured in reference standard deviations (or a
Jensen-Shannon distance between distributions) stays put when the shift is trivial.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

AUTO_SMALL_REFERENCE = 1000  # Evidently: at most this many reference values -> p-value tests
FEW_VALUES = 5  # Evidently: at most this many distinct values -> compared value by value
NUMERIC, CATEGORICAL = "numeric", "categorical"


# --------------------------------------------------------------------------- plain functions


def _as_counts(x: Sequence[float]) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _union(ref: Sequence[float], cur: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the keys seen in either sample (a key absent from both does not exist)."""
    r, c = _as_counts(ref), _as_counts(cur)
    keep = (r > 0) | (c > 0)
    return r[keep], c[keep]


def _fill_zeroes(p: np.ndarray) -> np.ndarray:
    """Evidently's zero filling before PSI: empty bins get a tiny share."""
    p = p.copy()
    nonzero = p[p != 0]
    if nonzero.size and (p == 0).any():
        low = nonzero.min()
        p[p == 0] = low / 10**6 if low <= 0.0001 else 0.0001
    return p


def psi(ref_counts: Sequence[float], cur_counts: Sequence[float]) -> float | None:
    """Population stability index of two histograms over the same bins (or categories).

    Empty bins take Evidently's tiny share; bins empty in both samples are dropped.
    """
    r, c = _union(ref_counts, cur_counts)
    if r.sum() == 0 or c.sum() == 0:
        return None
    r, c = _fill_zeroes(r / r.sum()), _fill_zeroes(c / c.sum())
    return float(np.sum((r - c) * np.log(r / c)))


def jensenshannon(ref_counts: Sequence[float], cur_counts: Sequence[float]) -> float | None:
    """Jensen-Shannon distance (natural log, as SciPy and Evidently) of two histograms.

    The arithmetic of `scipy.spatial.distance.jensenshannon`, without its per-call overhead.
    """
    from scipy.special import rel_entr

    r, c = _union(ref_counts, cur_counts)
    if r.sum() == 0 or c.sum() == 0:
        return None
    p, q = r / r.sum(), c / c.sum()
    m = (p + q) / 2.0
    js = np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m))
    return float(np.sqrt(js / 2.0))


def chisquare(ref_counts: Sequence[float], cur_counts: Sequence[float]) -> float | None:
    """p-value of Pearson's chi-square test of the current counts against the reference shares.

    As Evidently: expected = reference counts scaled to the current total. A category the
    reference never saw has an expected count of 0, an infinite statistic and a p-value of 0.
    `scipy.stats.chisquare`'s arithmetic, without importing scipy.stats (60 MB of the monitor's process).
    """
    from scipy.special import chdtrc  # what scipy.stats.chi2.sf evaluates

    r, c = _union(ref_counts, cur_counts)
    if r.sum() == 0 or c.sum() == 0:
        return None
    expected = r * (c.sum() / r.sum())
    if ((expected == 0) & (c > 0)).any():
        return 0.0
    if len(r) < 2:
        return 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = float(np.sum((c - expected) ** 2 / expected))
    return float(chdtrc(len(r) - 1, stat))


def z_test(ref_counts: Sequence[float], cur_counts: Sequence[float]) -> float | None:
    """Two-sided p-value of the two-proportion z-test (Evidently's `z`, for two categories).

    The counts are of the two categories in sorted order; the tested proportion is the second's.
    """
    from scipy.special import ndtr  # what scipy.stats.norm.cdf evaluates

    r, c = _as_counts(ref_counts), _as_counts(cur_counts)
    n1, n2 = r.sum(), c.sum()
    if n1 == 0 or n2 == 0:
        return None
    present = (r > 0) | (c > 0)
    if present.sum() <= 1:
        return 1.0
    p1, p2 = r[1:].sum() / n1, c[1:].sum() / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - ndtr(abs(z))))


def ks_statistic(ref_lt: Sequence[float], cur_lt: Sequence[float], n_ref: float, n_cur: float) -> float:
    """Largest gap between the two empirical CDFs seen at the cut points (a lower bound of the exact one)."""
    r, c = _as_counts(ref_lt) / n_ref, _as_counts(cur_lt) / n_cur
    return float(np.max(np.abs(r - c))) if r.size else 0.0


def ks_statistic_bound(ref_lt: Sequence[float], cur_lt: Sequence[float], n_ref: float, n_cur: float) -> float:
    """An upper bound of the exact KS statistic from the same counts.

    Between two cut points each CDF rises by the mass of that bin, so the gap there is at most
    the gap at one end plus the larger rise: the binned statistic is exact to the largest bin mass.
    """
    r = np.concatenate([[0.0], _as_counts(ref_lt) / n_ref, [1.0]])
    c = np.concatenate([[0.0], _as_counts(cur_lt) / n_cur, [1.0]])
    hi = np.maximum(np.abs(r[1:] - c[:-1]), np.abs(c[1:] - r[:-1]))
    return float(min(1.0, hi.max()))


def ks_pvalue(d: float, n_ref: int, n_cur: int) -> float:
    """Two-sided p-value of the two-sample KS statistic `d`, computed as `scipy.stats.ks_2samp` does."""
    from scipy.stats import distributions

    n1, n2 = int(n_ref), int(n_cur)
    if max(n1, n2) <= 10000:  # ks_2samp's MAX_AUTO_N: exact distribution
        try:
            from scipy.stats._stats_py import _attempt_exact_2kssamp

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ok, _d, prob = _attempt_exact_2kssamp(n1, n2, math.gcd(n1, n2), d, "two-sided")
            if ok and np.isfinite(prob):
                return float(np.clip(prob, 0, 1))
        except (ImportError, TypeError, ValueError, ArithmeticError):  # a private SciPy helper
            pass  # fall back to the asymptotic formula, as ks_2samp itself does
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(distributions.kstwo.sf(d, np.round(en)), 0, 1))


def ks(ref_lt: Sequence[float], cur_lt: Sequence[float], n_ref: float, n_cur: float) -> float | None:
    """p-value of the two-sample Kolmogorov-Smirnov test from cumulative counts at shared cut points."""
    if n_ref <= 0 or n_cur <= 0:
        return None
    return ks_pvalue(ks_statistic(ref_lt, cur_lt, n_ref, n_cur), int(n_ref), int(n_cur))


def wasserstein(edges: Sequence[float], ref_abs: Sequence[float], ref_n: float, ref_mean: float, ref_std: float,
                cur_abs: Sequence[float], cur_n: float, cur_mean: float) -> float | None:
    """Wasserstein-1 distance divided by the reference standard deviation (Evidently's normed one).

    W1 = integral of |F_ref - F_cur|. With H(e) = E[(e - X)+] = (E|X - e| + e - E[X]) / 2, the
    integral of F up to a cut point e is H(e), known exactly from ``sum |x - e|``, ``n`` and
    ``sum x``. So D(e) = integral up to e of (F_ref - F_cur) is exact at every cut point, at -inf
    (0) and at +inf (mean_cur - mean_ref), and

        W1 >= sum over consecutive cut points of |D(e_k+1) - D(e_k)|,

    with equality whenever F_ref - F_cur keeps its sign between consecutive cut points: a pure
    shift is exact with no cut point at all. Where the CDFs cross inside a bin the estimate is
    low by at most the bin's width times its larger mass (ref or cur), which the reference
    quantile cut points keep small. The normalisation is max(std_ref, 0.001) as in Evidently.
    """
    if ref_n <= 0 or cur_n <= 0:
        return None
    e = np.asarray(edges, dtype=float)
    h_ref = (np.asarray(ref_abs, dtype=float) / ref_n + e - ref_mean) / 2
    h_cur = (np.asarray(cur_abs, dtype=float) / cur_n + e - cur_mean) / 2
    d = np.concatenate([[0.0], h_ref - h_cur, [cur_mean - ref_mean]])
    return float(np.abs(np.diff(d)).sum() / max(ref_std, 0.001))


# --------------------------------------------------------------------------- registry


# What a method reads from a numeric column's summaries (the pass counts it: `monitor.modeljobs.specs`).
VALUES = "values"  # the counts of each of a few-valued column's values (`eq`)
BINS = "bins"  # counts below 19 cut points at equal-mass reference quantiles: 20 bins (`lt`)
CDF = "cdf"  # counts below 64 such cut points: the empirical CDFs, finely (`lt`)
DISTANCES = "distances"  # sums of distances to the cut points, with the count and sum (`abs`)


@dataclass(frozen=True)
class Method:
    """A drift method: what it is called, when `auto` picks it, what it reads and how it scores.

    A method scores either two count vectors (`counts`: histograms, categories, a few values) or two
    numeric summaries (`numeric`); `needs` says which aggregates the pass must count for it, and
    `fallback` which methods stand in when a summary lacks them (a rolling reference that grew
    past the size its cut points were chosen for). A new method is one entry in `REGISTRY`.
    """

    name: str
    title: str
    default_threshold: float
    column_types: frozenset[str]  # the columns it may be configured for (others take `auto`)
    higher_is_drift: bool  # distances: a score at or above the threshold is drift; p-values: below it
    strict: bool = False  # p-values: drift when p < threshold (True) or p <= threshold (False, as KS)
    counts: Callable[[Sequence[float], Sequence[float]], float | None] | None = None
    numeric: Callable[[dict, NumericSummary, NumericSummary], float | None] | None = None
    reads: frozenset[str] = frozenset()  # numeric methods: the aggregates `numeric` reads
    bins: bool = True  # count methods: also on a continuous column's bins (else only on a few values)
    fallback: tuple[str, ...] = ()
    # `auto` (Evidently's default): picked for (column type, reference above 1000 values, distinct values)
    auto: Callable[[str, bool, int], bool] | None = None

    def detected(self, value: float | None, threshold: float) -> bool | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.higher_is_drift:
            return bool(value >= threshold)
        return bool(value < threshold) if self.strict else bool(value <= threshold)

    def needs(self, few: bool) -> frozenset[str]:
        """The aggregates it scores a numeric column from; `few`: the column has at most FEW_VALUES values."""
        if self.counts is None:
            return self.reads
        return frozenset({VALUES if few or not self.bins else BINS})


def _many(kind: str, n_values: int) -> bool:
    """A numeric column of more than FEW_VALUES values: Evidently's continuous column."""
    return kind == NUMERIC and n_values > FEW_VALUES


REGISTRY: dict[str, Method] = {m.name: m for m in [
    Method("wasserstein", "Wasserstein distance (normed)", 0.1, frozenset({NUMERIC}), True,
           numeric=lambda spec, r, c: _wasserstein_score(spec, r, c), reads=frozenset({DISTANCES}), fallback=("ks",),
           auto=lambda kind, large, n: large and _many(kind, n)),
    Method("ks", "Kolmogorov-Smirnov p-value", 0.05, frozenset({NUMERIC}), False, strict=False,
           numeric=lambda spec, r, c: _ks_score(spec, r, c), reads=frozenset({CDF}), fallback=("wasserstein",),
           auto=lambda kind, large, n: not large and _many(kind, n)),
    Method("psi", "Population stability index", 0.1, frozenset({NUMERIC, CATEGORICAL}), True,
           counts=psi, fallback=("wasserstein",)),
    Method("jensenshannon", "Jensen-Shannon distance", 0.1, frozenset({NUMERIC, CATEGORICAL}), True,
           counts=jensenshannon, fallback=("wasserstein",), auto=lambda kind, large, n: large and not _many(kind, n)),
    Method("chisquare", "Chi-square p-value", 0.05, frozenset({CATEGORICAL}), False, strict=True,
           counts=chisquare, bins=False, fallback=("ks", "wasserstein"),
           auto=lambda kind, large, n: not large and not _many(kind, n) and n > 2),
    Method("z", "Z-test p-value (two categories)", 0.05, frozenset({CATEGORICAL}), False, strict=True,
           counts=z_test, bins=False, fallback=("ks", "wasserstein"),
           auto=lambda kind, large, n: not large and not _many(kind, n) and n <= 2),
]}


def method_names() -> tuple[str, ...]:
    """What `drift.method` may say: `auto`, or a method of the registry."""
    return ("auto", *REGISTRY)


def validate_method(name: str) -> None:
    """Raise ValueError naming the known methods when `name` is not one of them."""
    if name not in method_names():
        raise ValueError(f"unknown drift method {name!r}; expected one of {', '.join(method_names())}")


def auto_method(kind: str, n_ref: int, n_values: int) -> str:
    """Evidently's default method for a column of `kind` with `n_ref` reference values and `n_values` distinct ones."""
    large = n_ref > AUTO_SMALL_REFERENCE
    return next(m.name for m in REGISTRY.values() if m.auto is not None and m.auto(kind, large, n_values))


def resolve(configured: str, kind: str, n_ref: int, n_values: int) -> str:
    """The method used for one column: the configured one when it fits the column type, else `auto`'s."""
    validate_method(configured)
    if configured != "auto" and kind in REGISTRY[configured].column_types:
        return configured
    return auto_method(kind, n_ref, n_values)


def needs(configured: str, ref_sizes: Sequence[int], distinct: int | None) -> frozenset[str]:
    """What a numeric column's summaries must carry for the method configured (`auto` included)
    to score it against a reference of any of `ref_sizes` values; `distinct`: its number of
    reference values, when that is few enough to count (else None)."""
    few = distinct is not None and distinct <= FEW_VALUES
    # a window may bring values the reference never saw: one more distinct value than it has
    n_values = {FEW_VALUES + 1, *([distinct] if few else [])}
    used = {resolve(configured, NUMERIC, n, v) for n in ref_sizes for v in n_values}
    return frozenset().union(*(REGISTRY[m].needs(few) for m in used))


def _carried(ref: NumericSummary, cur: NumericSummary) -> set[str]:
    """The aggregates both summaries carry."""
    out = set()
    if ref.eq is not None and cur.eq is not None:
        out.add(VALUES)
    if ref.lt is not None and cur.lt is not None:
        out |= {BINS, CDF}
    if ref.abs is not None and cur.abs is not None:
        out.add(DISTANCES)
    return out


def _available(method: str, ref: NumericSummary, cur: NumericSummary) -> str | None:
    """The method if the summaries carry what it needs, else the first of its fallbacks they do carry."""
    few, carried = ref.eq is not None and cur.eq is not None, _carried(ref, cur)
    for name in (method, *REGISTRY[method].fallback):
        if REGISTRY[name].needs(few) <= carried:
            return name
    return None


# --------------------------------------------------------------------------- column summaries


@dataclass
class NumericSummary:
    """What one pass knows about a numeric column: see the module docstring."""

    rows: int  # rows, NULLs included
    n: int  # non-null values
    s: float  # sum of x
    s2: float | None = None  # sum of (x - center)^2: references only (their standard deviation)
    lt: list[float] | None = None  # counts below each cut point
    abs: list[float] | None = None  # sums of |x - cut point|
    eq: list[float] | None = None  # counts of each of the (few) reference values
    abs_n: int | None = None  # count and sum of the values `abs` was taken over, when a sample
    abs_s: float | None = None  # of them (else n and s)
    ks_d: float | None = None  # the exact KS statistic against this window's reference, when refined (`exactks`)

    @classmethod
    def from_dict(cls, d: dict) -> NumericSummary:
        return cls(rows=d["rows"], n=d["n"], s=d["s"], s2=d.get("s2"), lt=d.get("lt"), abs=d.get("abs"), eq=d.get("eq"),
                   abs_n=d.get("abs_n"), abs_s=d.get("abs_s"), ks_d=d.get("ks_d"))

    @property
    def abs_base(self) -> tuple[float, float]:
        """(count, mean) of the values the distances `abs` were summed over."""
        n, s = (self.n, self.s) if self.abs_n is None else (self.abs_n, self.abs_s)
        return n, (s / n if n else 0.0)


@dataclass
class CategoricalSummary:
    """Counts of a categorical column's values: each of the spec's (the reference's top) categories,
    then the rest, split into values the reference holds (its tail) and values it never saw."""

    rows: int
    n: int
    counts: list[float]  # per reference category, in the spec's order; the rest is n - sum(counts)
    unseen: float | None = None  # of the rest, values absent from the reference; None: all of the rest

    @classmethod
    def from_dict(cls, d: dict) -> CategoricalSummary:
        return cls(rows=d["rows"], n=d["n"], counts=list(d["counts"]), unseen=d.get("unseen"))


def category_vectors(ref: CategoricalSummary, cur: CategoricalSummary) -> tuple[list[float], list[float]]:
    """(reference, current) counts over the spec's categories, the reference's tail and the unseen values.

    Every value of the reference is seen by it: its own rest is all tail. The mass that moves to
    values the reference never saw is its own bucket, so that a shift into new values is measured
    whatever the column's cardinality (pooled with the tail, it would hide among the tail's values).
    """
    rest = cur.n - sum(cur.counts)
    unseen = rest if cur.unseen is None else min(cur.unseen, rest)
    return [*ref.counts, ref.n - sum(ref.counts), 0.0], [*cur.counts, rest - unseen, unseen]


@dataclass
class ColumnDrift:
    """A column's drift: the method's score on non-null values, and the NULL share compared on its own."""

    method: str | None
    value: float | None
    threshold: float | None
    value_detected: bool | None
    null_ref: float | None
    null_cur: float | None
    null_method: str | None
    null_value: float | None
    null_threshold: float | None
    null_detected: bool | None

    @property
    def detected(self) -> bool | None:
        flags = [f for f in (self.value_detected, self.null_detected) if f is not None]
        return any(flags) if flags else None


def null_shift(ref_rows: int, ref_nulls: int, cur_rows: int, cur_nulls: int, p_value: bool,
               threshold: float | None = None) -> tuple[str, float | None, float]:
    """Compare NULL shares: (method, score, threshold).

    With effect sizes (references above 1000 rows), the Jensen-Shannon distance between the two
    Bernoulli NULL/non-NULL distributions against 0.1 (or the feature's distance threshold).
    With p-value tests, the two-proportion z-test at 0.05. Equal shares never drift.
    """
    if ref_rows <= 0 or cur_rows <= 0:
        return ("z" if p_value else "jensenshannon"), None, (threshold or (0.05 if p_value else 0.1))
    if p_value:
        if ref_nulls == 0 and cur_nulls == 0:
            return "z", 1.0, threshold or 0.05
        return "z", z_test([ref_rows - ref_nulls, ref_nulls], [cur_rows - cur_nulls, cur_nulls]), threshold or 0.05
    score = jensenshannon([ref_rows - ref_nulls, ref_nulls], [cur_rows - cur_nulls, cur_nulls])
    return "jensenshannon", score, threshold or 0.1


def _mean_std(x: NumericSummary, center: float) -> tuple[float, float | None]:
    """Mean, and the population standard deviation when the summary carries the second moment."""
    mean = x.s / x.n
    if x.s2 is None:
        return mean, None
    shift = mean - center
    return mean, math.sqrt(max(x.s2 / x.n - shift * shift, 0.0))


def _numeric_bins(spec: dict, x: NumericSummary) -> list[float] | None:
    """Histogram counts from the cumulative counts: below the first cut point, between, above the last."""
    if x.lt is None:
        return None
    lt = list(x.lt)
    return [lt[0], *(b - a for a, b in itertools.pairwise(lt)), x.n - lt[-1]] if lt else [x.n]


def _value_counts(x: NumericSummary) -> list[float] | None:
    return None if x.eq is None else [*x.eq, x.n - sum(x.eq)]


def numeric_n_values(spec: dict, ref: NumericSummary, cur: NumericSummary) -> int:
    """Distinct values in reference and current together, as far as the summaries tell."""
    values = spec.get("values")
    if values is None or ref.eq is None or cur.eq is None:
        return FEW_VALUES + 1 if spec.get("distinct") is None else max(spec["distinct"], FEW_VALUES + 1)
    seen = sum(1 for a, b in zip(ref.eq, cur.eq) if a > 0 or b > 0)
    unseen = (cur.n - sum(cur.eq) > 0) or (ref.n - sum(ref.eq) > 0)
    return seen + (1 if unseen else 0)


def compare_numeric(spec: dict, ref: NumericSummary, cur: NumericSummary, configured: str = "auto",
                    threshold: float | None = None) -> ColumnDrift:
    """Drift of one numeric column between two summaries built on the same `spec` (cut points)."""
    method = None
    value = None
    if ref.n > 0 and cur.n > 0:
        method = _available(resolve(configured, NUMERIC, ref.n, numeric_n_values(spec, ref, cur)), ref, cur)
        value = _numeric_score(REGISTRY[method], spec, ref, cur) if method else None
    return _finish(method, value, configured, threshold, ref, cur)


def _numeric_score(m: Method, spec: dict, ref: NumericSummary, cur: NumericSummary) -> float | None:
    if m.numeric is not None:
        return m.numeric(spec, ref, cur)
    few = ref.eq is not None and cur.eq is not None
    r, c = (_value_counts(ref), _value_counts(cur)) if few else (_numeric_bins(spec, ref), _numeric_bins(spec, cur))
    return m.counts(r, c)


def _wasserstein_score(spec: dict, ref: NumericSummary, cur: NumericSummary) -> float | None:
    _, ref_std = _mean_std(ref, spec.get("center", 0.0))
    (ref_n, ref_mean), (cur_n, cur_mean) = ref.abs_base, cur.abs_base
    return wasserstein(spec["edges"], ref.abs, ref_n, ref_mean, ref_std, cur.abs, cur_n, cur_mean)


def _ks_score(spec: dict, ref: NumericSummary, cur: NumericSummary) -> float | None:
    if cur.ks_d is not None:  # refined: the exact statistic (`monitor.exactks`)
        return ks_pvalue(cur.ks_d, int(ref.n), int(cur.n))
    return ks(ref.lt, cur.lt, ref.n, cur.n)


def categorical_n_values(ref: CategoricalSummary, cur: CategoricalSummary) -> int:
    r, c = category_vectors(ref, cur)
    return sum(1 for a, b in zip(r, c) if a > 0 or b > 0)


def compare_categorical(spec: dict, ref: CategoricalSummary, cur: CategoricalSummary, configured: str = "auto",
                        threshold: float | None = None) -> ColumnDrift:
    """Drift of one categorical column between two summaries over the same categories."""
    method = value = None
    if ref.n > 0 and cur.n > 0:
        method = resolve(configured, CATEGORICAL, ref.n, categorical_n_values(ref, cur))
        value = REGISTRY[method].counts(*category_vectors(ref, cur))
    return _finish(method, value, configured, threshold, ref, cur)


def _finish(method, value, configured, threshold, ref, cur) -> ColumnDrift:
    m = REGISTRY.get(method) if method else None
    thr = None
    if m is not None:
        thr = threshold if (threshold is not None and configured in ("auto", method)) else m.default_threshold
    if m is not None:
        # A p-value test on the NULL share only on small references: on large ones (a KS or chi-square
        # configured on millions of rows) it fires on any trivial difference, even between two days
        # of the reference itself, so the NULL share is compared by its effect size, as `auto` does.
        p_mode = not m.higher_is_drift and ref.rows <= AUTO_SMALL_REFERENCE
        null_thr = None if (method == "psi" or p_mode != (not m.higher_is_drift)) else thr  # PSI's scale is not a distance's
    else:  # no score (a side without values): the NULL share is still compared
        p_mode, null_thr = 0 < ref.rows <= AUTO_SMALL_REFERENCE, None
    nm, nv, nt = null_shift(ref.rows, ref.rows - ref.n, cur.rows, cur.rows - cur.n, p_mode, null_thr)
    nm_desc = REGISTRY[nm]
    return ColumnDrift(
        method=method, value=value, threshold=thr,
        value_detected=m.detected(value, thr) if m is not None else None,
        null_ref=(ref.rows - ref.n) / ref.rows if ref.rows else None,
        null_cur=(cur.rows - cur.n) / cur.rows if cur.rows else None,
        null_method=nm, null_value=nv, null_threshold=nt, null_detected=nm_desc.detected(nv, nt),
    )


def add_summaries(a, b):
    """Element-wise sum of two JSON summaries with the same shape (None + x = x)."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict):
        return {k: add_summaries(a.get(k), b.get(k)) for k in {*a, *b}}
    if isinstance(a, list):
        if len(a) != len(b):
            raise ValueError("summaries built on different cut points cannot be added")
        return [add_summaries(x, y) for x, y in zip(a, b)]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    return a

