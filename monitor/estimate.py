"""Quality estimated before the labels arrive, and its error once they do.

**Binary classifiers** (confidence-based, the idea behind NannyML's CBPE): when scores are
calibrated probabilities, a row scored p is a positive with probability p, so the expected
confusion matrix and ROC curve of a window follow from its scores alone. The window gives, in one
``GROUP BY``, per fine score bin (BINS equal-width bins of [0, 1]) and decision (prediction column,
or score >= 0.5): the rows, the sum of scores and of squared scores. Python gets at most 2 x BINS
rows, whatever the window's size.

- Calibration is fitted on the reference's labelled rows (counts and label sums per bin, one
  query): when the raw scores pass a calibration test on them (Hosmer-Lemeshow over 10 groups of
  equal size, p >= 0.05), they are used as they are (a calibrator fitted on a calibrated model
  only adds noise); otherwise by isotonic regression (pool-adjacent-violators over the bins,
  weighted by their counts): monotone, so it never reorders scores, and free of a parametric form
  that a badly calibrated model would not follow. Without enough labelled reference rows
  (MIN_LABELLED, both classes) the scores are trusted as they are (method ``none``): the estimation
  error, once labels mature, then says how far that trust went.
- Expected positives per group: the sum of calibrated probabilities; its variance, for independent
  outcomes, the Poisson-binomial ``sum p (1 - p)``. ROC AUC from expected positives and negatives
  per bin (pairs within a bin count one half); precision, recall, F1 and accuracy from the expected
  confusion matrix at the decision. 95 % intervals: the window's label noise by the delta method,
  plus the isotonic map's own error, the estimate's mean square deviation over BOOT refits of the
  map on the reference's labels redrawn (`bootstrap_maps`).

**Regression models**: the reference's labelled rows, cut into REG_BINS equal-mass bins of the
score, give the mean absolute and squared error per bin; a window's estimate weighs them by its
own rows per bin. It assumes the error given the score is what it was in the reference; it fails
when the error depends on features whose mix moves while the score does not, when the relation
between inputs and target changes (concept drift), and for scores beyond the reference's range.

Once a window's labels are mature the realized value is stored beside the estimate made from the
same rows, and their absolute difference as ``estimation_error`` (``detected``: the realized value
fell outside the interval).
"""
from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import sqlalchemy as sa

from . import conventions as names
from .config import Model
from . import engines
from .db import finite, quote, quote_table
from .modeljobs.quality import join_slices, joined, quality_breach, quality_floor
from .modeljobs.source import model_bounds, model_where
from .modeljobs.specs import model_hash, quantiles_sql
from .windows import Window

BINS = 1000  # equal-width score bins of a binary classifier
REG_BINS = 20  # equal-mass score bins of a regression model's reference
MIN_LABELLED = 200  # labelled reference rows (of each class, for binary) a calibration needs
HL_GROUPS = 10
HL_ALPHA = 0.05
Z95 = 1.959963984540054  # the normal's 97.5 % quantile
BINARY_METRICS = names.ESTIMATED_METRICS["binary_classification"]
REGRESSION_METRICS = names.ESTIMATED_METRICS["regression"]
MULTICLASS_METRICS = names.ESTIMATED_METRICS["multiclass_classification"]
CALIBRATION_VERSION = 2  # 2: the reference's rows per bin are kept, for the calibration's bootstrap
BOOT = 200  # refits of the isotonic map on the reference's labels redrawn: the calibration's own error


# --------------------------------------------------------------------------- SQL


def _bin_expr(conn, x: str) -> str:
    """The score's bin, 0 .. BINS - 1 (scores outside [0, 1] in the end bins)."""
    scaled = f"{x} * {BINS}"
    fl = f"CAST({scaled} AS INTEGER)" if conn.dialect.name == "sqlite" else f"CAST(FLOOR({scaled}) AS INTEGER)"
    return f"CASE WHEN {x} <= 0 THEN 0 WHEN {x} >= 1 THEN {BINS - 1} ELSE {fl} END"


def _pred_expr(conn, model: Model, prefix: str = "") -> str:
    s = model.source
    if s.prediction:
        return f"CAST({prefix}{quote(conn, s.prediction)} AS INTEGER)"
    sc = f"{prefix}{quote(conn, s.score)}"
    return f"CASE WHEN {sc} >= 0.5 THEN 1 WHEN {sc} IS NOT NULL THEN 0 END"


def _window_groups(conn, model: Model, window: Window) -> list[tuple]:
    """(bin, decision, rows, sum of scores, sum of squared scores) of the window's scored rows."""

    s = model.source
    sc = finite(conn, f"CAST({quote(conn, s.score)} AS {engines.of(conn).double})")  # NaN, +-inf: NULL
    sql = (f"SELECT b, pr, COUNT(*), SUM(sc), SUM(sc * sc) FROM (SELECT {_bin_expr(conn, sc)} AS b, "
           f"{_pred_expr(conn, model)} AS pr, {sc} AS sc FROM {quote_table(conn, s.table)} "
           f"WHERE {model_where(conn, model)} AND {sc} IS NOT NULL) q GROUP BY b, pr")
    return [(int(r[0]), None if r[1] is None else int(r[1]), int(r[2]), float(r[3]), float(r[4]))
            for r in conn.execute(sa.text(sql), model_bounds(conn, model, window))]


def _reference_bins(conn, model: Model, ref: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin of the reference's labelled rows: rows, label sum, score sum."""

    s, lab = model.source, model.labels
    sc = finite(conn, f"CAST(s.{quote(conn, s.score)} AS {engines.of(conn).double})")  # NaN, +-inf: NULL
    params = model_bounds(conn, model, ref)
    c, y, p = np.zeros(BINS), np.zeros(BINS), np.zeros(BINS)
    for where, bound in join_slices(conn, model, ref, scored=True):
        j = joined(conn, model, f"{_bin_expr(conn, sc)} AS b, CAST(l.{quote(conn, lab.label)} AS {engines.of(conn).double}) AS y, "
                                f"{sc} AS sc", where=where.replace("{sc}", sc))
        for b, n, ys, ss in conn.execute(sa.text(f"SELECT b, COUNT(*), SUM(y), SUM(sc) FROM ({j}) j "
                                                 f"WHERE b IS NOT NULL GROUP BY b"), {**params, **bound}):
            c[int(b)] += int(n)
            y[int(b)] += float(ys)
            p[int(b)] += float(ss)
    return c, y, p


# --------------------------------------------------------------------------- calibration


def isotonic(counts: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool-adjacent-violators over bins: (probability per bin, block id per bin, rows per block).

    Bins without rows take the value of the nearest filled bins (linear in between)."""
    idx = np.nonzero(counts > 0)[0]
    blocks: list[list[float]] = []  # [rows, positives, first position, last position]
    for k, i in enumerate(idx):
        blocks.append([counts[i], positives[i], k, k])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] >= blocks[-1][1] / blocks[-1][0]:
            n, p, _, last = blocks.pop()
            blocks[-1][0] += n
            blocks[-1][1] += p
            blocks[-1][3] = last
    fitted = np.empty(len(idx))
    block_of = np.empty(len(idx), dtype=int)
    sizes = np.empty(len(blocks))
    for b, (n, p, first, last) in enumerate(blocks):
        fitted[first:last + 1] = p / n
        block_of[first:last + 1] = b
        sizes[b] = n
    probs = _spread(idx, fitted)
    # an empty bin belongs to the block of the nearest filled bin
    nearest = np.clip(np.searchsorted(idx, np.arange(BINS)), 0, len(idx) - 1)
    left = np.clip(nearest - 1, 0, len(idx) - 1)
    closer_left = np.abs(idx[left] - np.arange(BINS)) < np.abs(idx[nearest] - np.arange(BINS))
    block = block_of[np.where(closer_left, left, nearest)]
    return probs, block, sizes


def _spread(idx: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Values at the filled bins `idx` to every bin (linear in between, flat beyond the ends)."""
    centers = (np.arange(BINS) + 0.5) / BINS
    return np.interp(centers, centers[idx], fitted)


def bootstrap_maps(cal: dict, draws: int = BOOT) -> np.ndarray:
    """(draws, BINS) isotonic maps refitted on the reference's labels redrawn, each bin's positives
    ~ Binomial(rows, fitted probability) (not the bin's own share: a bin of one row has share 0 or
    1, and would never vary): the spread of a window's estimate over these maps is the calibration's
    sampling error, blocks chosen by the data included (a per-block binomial term, blocks taken as
    fixed, misses that part and undercovers on small references). Seeded: the same calibration
    gives the same intervals."""
    c = np.asarray(cal["ref_counts"], dtype=float)
    idx = np.nonzero(c > 0)[0]
    rng = np.random.default_rng(20261201)
    fitted = np.asarray(cal["map"], dtype=float)[idx]  # not the raw shares: a bin of one row has share 0 or 1
    redrawn = rng.binomial(c[idx].astype(np.int64), np.clip(fitted, 0, 1), size=(draws, idx.size))
    return np.array([_spread(idx, _pav(r / c[idx], c[idx])) for r in redrawn])


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic regression of `y` in its order (scikit-learn's compiled pool-adjacent-violators)."""
    try:
        from sklearn._isotonic import _inplace_contiguous_isotonic_regression as inplace
    except ImportError:  # a private name: the public function is 300 times slower but the same
        from sklearn.isotonic import isotonic_regression
        return isotonic_regression(y, sample_weight=w)
    out = np.ascontiguousarray(y, dtype=np.float64).copy()
    inplace(out, np.ascontiguousarray(w, dtype=np.float64).copy())
    return out


def hosmer_lemeshow(counts: np.ndarray, positives: np.ndarray, scores: np.ndarray, groups: int = HL_GROUPS) -> float:
    """p-value of the raw scores being calibrated: chi-square over groups of consecutive bins of
    about equal rows (degrees of freedom = groups: the model was not fitted on these rows)."""
    from scipy.special import chdtrc  # what scipy.stats.chi2.sf evaluates, without importing scipy.stats

    cum = np.cumsum(counts)
    total = cum[-1]
    cut = np.minimum((cum * groups / total).astype(int), groups - 1) if total else np.zeros(BINS, int)
    chi2, df = 0.0, 0
    for g in range(groups):
        sel = cut == g
        n, o, e = counts[sel].sum(), positives[sel].sum(), scores[sel].sum()
        if n == 0:
            continue
        var = e * (1 - e / n)
        if var <= 0:
            if abs(o - e) > 1e-9:
                return 0.0
            continue
        chi2 += (o - e) ** 2 / var
        df += 1
    return float(chdtrc(df, chi2)) if df else 1.0


def fit_calibration(counts: np.ndarray, positives: np.ndarray, scores: np.ndarray) -> dict:
    """The calibration of a binary model from its reference's labelled bins (JSON-serialisable)."""
    n, p = float(counts.sum()), float(positives.sum())
    out = {"version": CALIBRATION_VERSION, "labelled": int(n), "positives": int(p), "hl_p": None,
           "method": "none", "map": None}
    if min(p, n - p) < MIN_LABELLED:
        out["reason"] = f"fewer than {MIN_LABELLED} labelled reference rows of each class"
        return out
    out["hl_p"] = hosmer_lemeshow(counts, positives, scores)
    if out["hl_p"] >= HL_ALPHA:
        out["reason"] = "the reference's scores pass the calibration test"
        return out
    probs, _, _ = isotonic(counts, positives)
    out.update(method="isotonic", map=probs.round(8).tolist(), ref_counts=counts.astype(int).tolist(),
               reason="the reference's scores fail the calibration test")
    return out


def _calibration_range(model: Model, now: datetime) -> Window | None:
    """The labelled rows calibration is fitted on: the fixed reference, or for a rolling one the span
    of that length ending where labels last matured."""
    ref, lab = model.reference, model.labels
    if ref.rolling is None:
        return Window(ref.start, ref.end)
    from .windows import floor

    end = floor(now - lab.max_delay, model.window)  # the last window boundary whose labels are mature
    if end <= model.start - ref.rolling:
        return None
    return Window(end - ref.rolling, end)


def calibration(conn, store, model: Model, now: datetime) -> dict:
    """The model's calibration, stored with its reference summaries once its labels are mature."""

    rng = _calibration_range(model, now)
    if rng is None:
        return fit_calibration(np.zeros(BINS), np.zeros(BINS), np.zeros(BINS)) | {"reason": "no labelled reference yet"}
    key = f"calib:{model_hash(model)}:{CALIBRATION_VERSION}:{rng.start:%Y%m%dT%H%M%S}:{rng.end:%Y%m%dT%H%M%S}"
    got = store.load_reference(model.name, key)
    if got is not None:
        return got
    cal = fit_calibration(*_reference_bins(conn, model, rng))
    if rng.end + model.labels.max_delay <= now:  # labels of the range are mature: frozen from now on
        store.save_reference(model.name, key, cal, now)
    return cal


# --------------------------------------------------------------------------- binary estimates


def _groups_arrays(groups: list[tuple], cal: dict):
    b = np.array([g[0] for g in groups], dtype=int)
    pr = np.array([-1 if g[1] is None else g[1] for g in groups], dtype=int)
    c = np.array([g[2] for g in groups], dtype=float)
    if cal.get("map") is not None:
        m = np.asarray(cal["map"])[b]
        e, v = c * m, c * m * (1 - m)
    else:
        s1 = np.array([g[3] for g in groups])
        s2 = np.array([g[4] for g in groups])
        s1 = np.clip(s1, 0, c)
        e, v = s1, np.maximum(s1 - np.minimum(s2, s1), 0.0)
    return b, pr, c, e, v


def _binary_values(b: np.ndarray, pr: np.ndarray, c: np.ndarray, e: np.ndarray, gradients: bool = True) -> dict:
    """{metric: (value, gradient over groups)} from the expected positives `e` of each group."""
    out: dict[str, tuple[float, np.ndarray | None]] = {}
    # ROC AUC over bins
    cb = np.bincount(b, weights=c, minlength=BINS)
    yb = np.bincount(b, weights=e, minlength=BINS)
    nb = cb - yb
    P, N = yb.sum(), nb.sum()
    if P > 1e-9 and N > 1e-9:
        below = np.cumsum(nb) - nb  # expected negatives in lower bins
        U = float(np.sum(yb * (below + 0.5 * nb)))
        PN = P * N
        grad = None
        if gradients:
            above = yb.sum() - np.cumsum(yb)  # expected positives in higher bins
            dU = below + 0.5 * nb - 0.5 * yb - above
            grad = ((dU * PN - U * (N - P)) / PN ** 2)[b]
        out["roc_auc"] = (U / PN, grad)
    one, zero = pr == 1, pr == 0
    PP, PNeg = c[one].sum(), c[zero].sum()
    TP, FN = e[one].sum(), e[zero].sum()
    rows = PP + PNeg
    if rows > 0:
        g = np.zeros(len(c)) if gradients else None
        out["precision"] = (TP / PP, np.where(one, 1 / PP, 0.0) if gradients else None) if PP > 0 else (0.0, g)
        pos = TP + FN
        if pos > 1e-12:
            out["recall"] = (TP / pos, np.where(one, FN / pos ** 2, np.where(zero, -TP / pos ** 2, 0.0))
                             if gradients else None)
        D = PP + TP + FN
        if D > 1e-12:
            out["f1"] = (2 * TP / D, np.where(one, 2 * (PP + FN) / D ** 2, np.where(zero, -2 * TP / D ** 2, 0.0))
                         if gradients else None)
        out["accuracy"] = ((TP + PNeg - FN) / rows, np.where(one, 1 / rows, np.where(zero, -1 / rows, 0.0))
                           if gradients else None)
    return out


def estimate_binary(groups: list[tuple], cal: dict) -> dict[str, tuple[float, float]]:
    """{metric: (estimate, standard error)} from a window's groups and the model's calibration.

    The variance is the window's label noise (delta method over the Poisson-binomial variance of
    each group's positives) plus, for an isotonic calibration, the mean square of the estimate over
    the calibration's bootstrap maps (`bootstrap_maps`) about the estimate itself."""
    if not groups:
        return {}
    b, pr, c, e, v = _groups_arrays(groups, cal)
    out = _binary_values(b, pr, c, e)
    var = {k: float(np.sum(grad ** 2 * v)) for k, (_, grad) in out.items()}
    if cal.get("map") is not None and cal.get("ref_counts") is not None:
        boot = [_binary_values(b, pr, c, c * m[b], gradients=False) for m in bootstrap_maps(cal)]
        for k in var:
            got = np.array([x[k][0] for x in boot if k in x])
            if got.size > 1:
                # their mean square about the estimate, not their variance: pool-adjacent-violators
                # overshoots at the ends on small references, and that offset is error too
                var[k] += float(np.mean((got - out[k][0]) ** 2))
    return {k: (float(out[k][0]), math.sqrt(max(var[k], 0.0))) for k in out}


# --------------------------------------------------------------------------- multiclass estimates


def _multiclass_groups(conn, model: Model, window: Window) -> tuple[list[str], list[tuple]]:
    """(score classes, [(predicted class, rows, sums of p_k [K], sums of p_j p_k [K x K])]) of the
    window's rows with a prediction and every class score: one GROUP BY over the predicted class."""
    from .multiclass import _score_classes, class_name

    s = model.source
    classes = _score_classes(model)
    p = [finite(conn, f"CAST({quote(conn, col)} AS {engines.of(conn).double})") for _, col in classes]
    k = len(p)
    pairs = [(i, j) for i in range(k) for j in range(i, k)]
    aggs = [f"SUM(p{i})" for i in range(k)] + [f"SUM(p{i} * p{j})" for i, j in pairs]
    inner = ", ".join(f"{e} AS p{i}" for i, e in enumerate(p))
    sql = (f"SELECT pr, COUNT(*), {', '.join(aggs)} FROM (SELECT {quote(conn, s.prediction)} AS pr, {inner} "
           f"FROM {quote_table(conn, s.table)} WHERE {model_where(conn, model)}) q "
           f"WHERE pr IS NOT NULL AND {' AND '.join(f'p{i} IS NOT NULL' for i in range(k))} GROUP BY pr")
    out: dict[str, list] = {}
    for r in conn.execute(sa.text(sql), model_bounds(conn, model, window)):
        name = class_name(r[0])
        s1 = np.array([float(x) for x in r[2:2 + k]])
        s2 = np.zeros((k, k))
        for (i, j), v in zip(pairs, r[2 + k:]):
            s2[i, j] = s2[j, i] = float(v)
        got = out.setdefault(name, [0, np.zeros(k), np.zeros((k, k))])  # codes 1 and 1.0 are one class
        got[0] += int(r[1])
        got[1] += s1
        got[2] += s2
    return [c for c, _ in classes], [(c, n, s1, s2) for c, (n, s1, s2) in sorted(out.items())]


def estimate_multiclass(classes: list[str], groups: list[tuple]) -> dict[str, tuple[float, float]]:
    """{metric: (estimate, standard error)}: accuracy and macro precision, recall and F1 (over the
    classes with a score and the predicted ones, scikit-learn's zero_division 0) of a window.

    With calibrated class scores, a row predicted p is of true class a with probability p_a: the
    expected confusion matrix is, per predicted class, the sums of the scores; its covariance, rows
    being independent multinomial draws, diag(sum p) - sum p p^T. Intervals by the delta method."""
    if not groups:
        return {}
    preds = [g[0] for g in groups]
    labels = list(dict.fromkeys([*classes, *preds]))  # every class the metrics average over
    K, P = len(classes), len(groups)
    n_pred = {c: 0.0 for c in labels}
    for c, n, _, _ in groups:
        n_pred[c] += n
    C = np.column_stack([g[2] for g in groups])  # expected rows of true class a (row) predicted p (column)
    cov = [np.diag(g[2]) - g[3] for g in groups]
    rows = float(sum(g[1] for g in groups))
    col = {c: j for j, c in enumerate(preds)}
    out: dict[str, tuple[float, np.ndarray]] = {}
    diag = np.zeros((K, P))
    for a, c in enumerate(classes):
        if c in col:
            diag[a, col[c]] = 1.0
    out["accuracy"] = (float((C * diag).sum()) / rows, diag / rows)
    per = {m: [] for m in ("precision", "recall", "f1")}
    for c in labels:
        a, j = (classes.index(c) if c in classes else None), col.get(c)
        tp = C[a, j] if a is not None and j is not None else 0.0
        true = C[a].sum() if a is not None else 0.0
        pred = n_pred[c]
        g_tp = np.zeros((K, P))
        if a is not None and j is not None:
            g_tp[a, j] = 1.0
        g_true = np.zeros((K, P))
        if a is not None:
            g_true[a, :] = 1.0
        per["precision"].append((tp / pred, g_tp / pred) if pred else (0.0, np.zeros((K, P))))
        per["recall"].append((tp / true, g_tp / true - tp * g_true / true ** 2) if true > 1e-12 else (0.0, np.zeros((K, P))))
        d = true + pred
        per["f1"].append((2 * tp / d, 2 * g_tp / d - 2 * tp * g_true / d ** 2) if d > 1e-12 else (0.0, np.zeros((K, P))))
    for m, vals in per.items():
        out[f"{m}_macro"] = (float(np.mean([v for v, _ in vals])), sum(g for _, g in vals) / len(vals))
    result = {}
    for k, (val, grad) in out.items():
        var = sum(float(grad[:, j] @ cov[j] @ grad[:, j]) for j in range(P))
        result[k] = (val, math.sqrt(max(var, 0.0)))
    return result


# --------------------------------------------------------------------------- regression estimates


def _reg_edges(conn, model: Model, ref: Window) -> list[float]:

    s = model.source
    n = conn.execute(sa.text(f"SELECT COUNT({quote(conn, s.score)}) FROM {quote_table(conn, s.table)} "
                             f"WHERE {model_where(conn, model)}"), model_bounds(conn, model, ref)).scalar() or 0
    if not n:
        return []
    q = quantiles_sql(conn, model, s.score, ref, int(n), [i / REG_BINS for i in range(1, REG_BINS)])
    return sorted(set(q.values()))


def _reg_bin(edges: list[float], x: str) -> str:
    if not edges:
        return "0"
    return "CASE " + " ".join(f"WHEN {x} < {float(e)!r} THEN {i}" for i, e in enumerate(edges)) + f" ELSE {len(edges)} END"


def regression_reference(conn, store, model: Model, now: datetime) -> dict:
    """Error moments per score bin of the reference's labelled rows, stored once labels are mature."""

    rng = _calibration_range(model, now)
    if rng is None:
        return {"edges": [], "bins": [], "labelled": 0}
    key = f"regerr:{model_hash(model)}:{CALIBRATION_VERSION}:{rng.start:%Y%m%dT%H%M%S}:{rng.end:%Y%m%dT%H%M%S}"
    got = store.load_reference(model.name, key)
    if got is not None:
        return got
    edges = _reg_edges(conn, model, rng)
    s, lab = model.source, model.labels
    sc = finite(conn, f"CAST(s.{quote(conn, s.score)} AS {engines.of(conn).double})")  # NaN, +-inf: NULL
    j = joined(conn, model, f"{_reg_bin(edges, sc)} AS b, {sc} - CAST(l.{quote(conn, lab.label)} AS {engines.of(conn).double}) AS e")
    bins = [[0, 0.0, 0.0, 0.0, 0.0] for _ in range(len(edges) + 1)]
    for b, n, a, e2, a3, e4 in conn.execute(sa.text(
            f"SELECT b, COUNT(e), SUM(ABS(e)), SUM(e * e), SUM(ABS(e) * e * e), SUM(e * e * e * e) FROM ({j}) j "
            f"WHERE e IS NOT NULL GROUP BY b"), model_bounds(conn, model, rng)):
        bins[int(b)] = [int(n), float(a), float(e2), float(a3), float(e4)]
    out = {"edges": edges, "bins": bins, "labelled": sum(x[0] for x in bins)}
    if rng.end + lab.max_delay <= now:
        store.save_reference(model.name, key, out, now)
    return out


def estimate_regression(counts: list[int], ref: dict) -> dict[str, tuple[float, float, float, float]]:
    """{metric: (estimate, standard error, ci low, ci high)} from a window's rows per reference bin."""
    bins = np.array(ref["bins"], dtype=float).reshape(-1, 5)
    c = np.asarray(counts, dtype=float)
    n = c.sum()
    if n == 0 or ref["labelled"] < MIN_LABELLED:
        return {}
    nr = bins[:, 0]
    pooled = bins.sum(axis=0) / max(bins[:, 0].sum(), 1)
    filled = nr > 0
    mean = np.where(filled[:, None], bins[:, 1:] / np.maximum(nr, 1)[:, None], pooled[1:])
    nr_eff = np.where(filled, nr, bins[:, 0].sum())
    a, e2, e4 = mean[:, 0], mean[:, 1], mean[:, 3]
    out = {}
    for name, m1, m2 in (("mae", a, e2), ("mse", e2, e4)):
        val = float(np.sum(c * m1) / n)
        var_row = np.maximum(m2 - m1 ** 2, 0.0)
        var = float(np.sum(c * var_row) / n ** 2 + np.sum(c ** 2 * var_row / nr_eff) / n ** 2)
        out[name] = (val, math.sqrt(var))
    mae, sd = out["mae"]
    mse, sd2 = out["mse"]
    rmse = math.sqrt(mse)
    return {"mae": (mae, sd, max(0.0, mae - Z95 * sd), mae + Z95 * sd),
            "rmse": (rmse, sd2 / (2 * rmse) if rmse else 0.0, math.sqrt(max(0.0, mse - Z95 * sd2)),
                     math.sqrt(mse + Z95 * sd2))}


def _window_reg_counts(conn, model: Model, window: Window, edges: list[float]) -> list[int]:

    s = model.source
    sc = finite(conn, f"CAST({quote(conn, s.score)} AS {engines.of(conn).double})")  # NaN, +-inf: NULL
    counts = [0] * (len(edges) + 1)
    for b, n in conn.execute(sa.text(
            f"SELECT b, COUNT(*) FROM (SELECT {_reg_bin(edges, sc)} AS b FROM {quote_table(conn, s.table)} "
            f"WHERE {model_where(conn, model)} AND {sc} IS NOT NULL) q GROUP BY b"),
            model_bounds(conn, model, window)):
        counts[int(b)] = int(n)
    return counts


# --------------------------------------------------------------------------- the window's rows


CONFUSION = "_confusion"  # in `estimates`: the expected confusion matrix, {"<actual>|<predicted>": rows}


def binary_confusion(groups: list[tuple], cal: dict) -> dict[str, float]:
    """A binary window's expected confusion matrix (cells named as the realized one's)."""
    _, pr, c, e, _ = _groups_arrays(groups, cal)
    tp, fn = float(e[pr == 1].sum()), float(e[pr == 0].sum())
    cell = names.confusion_cell
    return {cell(1, 1): tp, cell(1, 0): fn, cell(0, 1): float(c[pr == 1].sum()) - tp, cell(0, 0): float(c[pr == 0].sum()) - fn}


def estimates(conn, store, model: Model, window: Window, now: datetime) -> tuple[dict, str]:
    """{metric: (value, ci low, ci high)} of the window (and under CONFUSION, of a classifier, its
    expected confusion matrix), and the method (the calibration used)."""
    if model.labels is None:
        return {}, ""
    if model.task == "binary_classification":
        cal = calibration(conn, store, model, now)
        groups = _window_groups(conn, model, window)
        got = estimate_binary(groups, cal)
        out = {k: (v, max(0.0, v - Z95 * sd), min(1.0, v + Z95 * sd)) for k, (v, sd) in got.items()}
        return out | ({CONFUSION: binary_confusion(groups, cal)} if groups else {}), cal["method"]
    if model.task == "multiclass_classification":
        from .multiclass import capped_confusion

        if not model.source.class_scores or not model.source.prediction:
            return {}, ""
        classes, groups = _multiclass_groups(conn, model, window)
        got = estimate_multiclass(classes, groups)
        # class scores are taken as they are (`score_range` checks them): a calibration per class would no longer sum to one
        out = {k: (v, max(0.0, v - Z95 * sd), min(1.0, v + Z95 * sd)) for k, (v, sd) in got.items()}
        # the expected matrix, capped as the realized one is: the max_segments classes with the most (expected) truth
        _, cells = capped_confusion({(a, g[0]): float(g[2][i]) for g in groups for i, a in enumerate(classes)},
                                    model.max_segments)
        return out | ({CONFUSION: cells} if groups else {}), "none"
    if model.task == "regression":
        ref = regression_reference(conn, store, model, now)
        got = estimate_regression(_window_reg_counts(conn, model, window, ref["edges"]), ref)
        return {k: (v, lo, hi) for k, (v, _, lo, hi) in got.items()}, "score_bins"
    return {}, ""


ESTIMATE_KINDS = (names.ESTIMATE_KIND, names.ESTIMATE_CI_LOW_KIND, names.ESTIMATE_CI_HIGH_KIND)


def kept_rows(store, model: Model, window: Window) -> list[dict]:
    """The estimate rows stored for the window (made while its labels were pending), if any."""
    return [{k: r[k] for k in ("kind", "name", "segment", "method", "value", "threshold", "detected")}
            for r in store.model_metrics(model.name, window.start, kinds=ESTIMATE_KINDS)]


def metrics(conn, store, model: Model, window: Window, now: datetime, quality: dict | None) -> list[dict]:
    """The window's estimate rows, and once its labels are mature (`quality`), the estimate's error.

    A mature window keeps the estimate made while its labels were pending (the one users saw, and
    the one whose error tells how far to trust the next); it is computed now only for a window
    that was never estimated before (a backfill)."""
    kept = kept_rows(store, model, window) if quality is not None else []
    so_far = [] if quality is not None or model.labels is None else labels_so_far(conn, model, window)
    if kept:
        rows = kept
    else:
        est, method = estimates(conn, store, model, window, now)
        cells = est.pop(CONFUSION, {})
        cells = cells if quality is None else {}  # a mature window has the realized matrix

        def row(kind: str, name: str, value, threshold=None, detected=None) -> dict:
            # every key, as kept_rows reads them back: a kept estimate is the same row as a fresh one
            return {"kind": kind, "name": name, "segment": "", "method": method, "value": value,
                    "threshold": threshold, "detected": detected}

        rows = [row(names.CONFUSION_ESTIMATED_KIND, k, v) for k, v in sorted(cells.items())]
        for k, (v, lo, hi) in est.items():
            rows += [row(names.ESTIMATE_KIND, k, v, quality_floor(model, k), quality_breach(model, k, v)),
                     row(names.ESTIMATE_CI_LOW_KIND, k, lo), row(names.ESTIMATE_CI_HIGH_KIND, k, hi)]
    return rows + errors(rows, quality or {}) + so_far


def labels_so_far(conn, model: Model, window: Window) -> list[dict]:
    """A pending window's label coverage so far: its predictions with a label already, over its rows
    (the labels still to come may change it; the judged coverage is the mature window's)."""

    s = model.source
    params = model_bounds(conn, model, window)
    rows = conn.execute(sa.text(f"SELECT COUNT(*) FROM {quote_table(conn, s.table)} WHERE {model_where(conn, model)}"),
                        params).scalar() or 0
    if not rows:
        return []
    got = conn.execute(sa.text(f"SELECT COUNT(DISTINCT i) FROM ({joined(conn, model, f's.{quote(conn, s.id)} AS i')}) j"),
                       params).scalar() or 0
    return [{"kind": names.LABELS_SO_FAR_KIND, "name": "label_coverage", "segment": "", "method": None,
             "value": min(1.0, got / rows)}]


def errors(rows: list[dict], quality: dict) -> list[dict]:
    """|estimate - realized| per estimated metric with a realized value (`detected`: outside the interval)."""
    by = {(r["kind"], r["name"], r.get("segment", "")): r for r in rows}
    out = []
    for (kind, k, seg), r in by.items():
        real = quality.get(k) if not seg else None
        lo, hi = by.get((names.ESTIMATE_CI_LOW_KIND, k, seg)), by.get((names.ESTIMATE_CI_HIGH_KIND, k, seg))
        if kind != names.ESTIMATE_KIND or real is None or r["value"] is None:
            continue
        inside = (lo is None or lo["value"] is None or lo["value"] <= real) and (hi is None or hi["value"] is None or real <= hi["value"])
        out.append({"kind": names.ESTIMATION_ERROR_KIND, "name": k, "segment": seg, "method": r["method"],
                    "value": abs(r["value"] - real), "detected": not inside})
    return out


# --------------------------------------------------------------------------- goals


def _goal_number(goal, column: str, raw) -> float | None:
    from decimal import Decimal

    from .goals import GoalDataError

    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, Decimal)) or not math.isfinite(float(raw)):
        raise GoalDataError(f"goal {goal.name} ({goal.estimate.sql}): column {column!r} is {raw!r}, expected a finite number or NULL")
    return float(raw)


def count_interval(mean: float, var: float) -> tuple[float, float]:
    """The 2.5 % and 97.5 % quantiles of a sum of independent 0/1 outcomes with this mean and
    variance (at most the mean): those of the binomial with the same two moments (n p = mean,
    n p (1 - p) = var), the Poisson's when p is nil. Exact when every outcome has the same
    probability; discrete, so it holds the count at least 95 % of the time."""
    from scipy import stats

    if var <= 0 or mean <= 0:
        return mean, mean
    p = 1 - var / mean
    if p < 1e-9:
        dist = stats.poisson(mean)
    else:
        n = max(1, round(mean / p))
        dist = stats.binom(n, min(1.0, mean / n))
    lo, hi = dist.interval(0.95)
    return float(lo), float(hi)


def goal_interval(goal, value: float | None, numerator: float | None, denominator: float | None,
                  variance: float | None) -> tuple[float | None, float | None, float | None, str]:
    """(value, ci low, ci high, expected status) of a goal's estimate.

    A rate's `variance` is that of its numerator (for independent outcomes, the sum of p (1 - p));
    without one, the binomial numerator (1 - numerator / denominator), its upper bound. A rate's
    interval is where the realized count falls 95 % of the time (`count_interval`), over the
    denominator: unlike the normal's, it is right for the few expected events of a rare outcome.
    A plain value's `variance` is the value's own (a normal interval); without one there is no
    interval and the expected status is the value's against the target.
    """
    if value is None and numerator is not None and denominator:
        value = numerator / denominator
    if value is None:
        return None, None, None, "no_data"
    if numerator is not None and denominator:
        var = variance if variance is not None else numerator * max(0.0, 1 - numerator / denominator)
        if 0 <= numerator and var <= numerator:  # a count of independent outcomes
            lo, hi = (x / denominator for x in count_interval(numerator, var))
        else:  # more spread than any such count (weighted outcomes): the normal's
            sd = math.sqrt(max(var, 0.0)) / denominator
            lo, hi = value - Z95 * sd, value + Z95 * sd
    elif variance is not None:
        sd = math.sqrt(max(variance, 0.0))
        lo, hi = value - Z95 * sd, value + Z95 * sd
    else:
        ok = value <= goal.target if goal.direction == "at_most" else value >= goal.target
        return value, None, None, "expected_met" if ok else "expected_missed"
    if goal.unit.lower() == "ratio":
        lo, hi = max(0.0, lo), min(1.0, hi)
    good, bad = (hi <= goal.target, lo > goal.target) if goal.direction == "at_most" else (lo >= goal.target, hi < goal.target)
    return value, lo, hi, "expected_met" if good else "expected_missed" if bad else "insufficient_data"


def goal_estimate(conn, goal, window: Window, realized: float | None, kept: dict | None = None) -> dict:
    """The goal's `estimate` SQL on one window: value, interval, expected status; with `realized`
    (a mature window), the estimate's absolute error. `kept`: the window's stored estimate; a
    mature window keeps the one made while it was provisional rather than rerun the SQL on
    scores that may have been rewritten since."""
    from .goals import GoalDataError, run_sql

    if realized is not None and kept is not None and kept.get("value") is not None:
        got = {k: kept.get(k) for k in ("value", "numerator", "denominator", "variance", "ci_low", "ci_high", "status")}
        return got | {"realized": realized, "error": abs(got["value"] - realized)}

    columns, rows = run_sql(conn, goal, window, goal.estimate.sql_text)
    cols = [c.lower() for c in columns]
    if "value" not in cols and not {"numerator", "denominator"} <= set(cols):
        raise GoalDataError(f"goal {goal.name} ({goal.estimate.sql}): the estimate query returns no `value` column "
                            f"(it returns {', '.join(columns) or 'nothing'})")
    if len(rows) > 1:
        raise GoalDataError(f"goal {goal.name} ({goal.estimate.sql}): the estimate query returns {len(rows)} rows; expected one")
    got = {c: _goal_number(goal, c, rows[0][cols.index(c)]) if rows and c in cols else None
           for c in ("value", "numerator", "denominator", "variance")}
    value, lo, hi, status = goal_interval(goal, got["value"], got["numerator"], got["denominator"], got["variance"])
    return {"value": value, "numerator": got["numerator"], "denominator": got["denominator"],
            "variance": got["variance"], "ci_low": lo, "ci_high": hi, "status": status, "realized": realized,
            "error": abs(value - realized) if value is not None and realized is not None else None}
