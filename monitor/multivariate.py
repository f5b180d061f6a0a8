"""Multivariate drift of the numeric features as a whole: PCA reconstruction error, from moments.

Univariate drift compares each feature's distribution on its own, so it cannot see a change in
how features move together (two features whose correlation flips while each keeps its marginal).
Here the reference's rows are standardised (its mean and population standard deviation) and
its principal components kept until they explain more than `variance` of the variance (as
scikit-learn's ``PCA(n_components=0.65)``, NannyML's default); a row's reconstruction error is
the squared distance between its standardised values and their projection on those components,
``z' P z`` with ``P = I - V V'``. A window's score is the mean error of its rows.

All of it comes from one query of sums per range (`modeljobs.passes.moments`), never from rows
in Python: the count, the sums ``S_i = sum(x_i - c_i)`` and the sums of products
``S_ij = sum((x_i - c_i)(x_j - c_j))`` over the rows where every numeric feature is present (``c``
is the reference median from the spec, so the sums of a rolling reference add up and large values
keep their precision). The reference's covariance, hence its components, is
``S_ij / n - m_i m_j``; a range's mean error is exactly ``trace(P E[z z'])``, E[z z'] being its
own second moments standardised by the reference, with no second read of a row. In ranges of
more than SAMPLE_ROWS values the sums are those of the fixed hashed sample of about SAMPLE_ROWS
rows that the Wasserstein sums use (the same rows every run): d (d + 1) / 2 products per row
(210 for 20 features) cost many scans of the range, and the mean error of 100,000 rows is within
a fraction of a per cent of the range's. The window and the reference chunks are sampled alike,
so the learned threshold carries the sample's own noise.

The threshold is learned from the reference (NannyML's default): its range is cut into windows
of the model's size, each chunk's mean error is taken under the reference's components, and the
window drifts when its error exceeds the chunks' mean + `sd` standard deviations (or a fixed
`threshold`). A fixed reference's chunks are summed once and stored; a rolling reference's
chunks are the stored sums of the windows before.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

import numpy as np

from . import drift as D
from .config import Model
from .windows import Window, windows_between

METHOD = "pca_reconstruction"
NAME = "reconstruction_error"
KIND = "multivariate_drift"


def enabled(model: Model) -> bool:
    mv = model.drift.multivariate
    return mv.enabled and len(model.source.features.numeric) >= 2


def _pairs(d: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(d) for j in range(i, d)]


class Fit:
    """The reference's standardisation and components, and the error of any range's moments."""

    def __init__(self, ref: dict, d: int, variance: float):
        n = ref["n"]
        self.d = d
        self.mean = np.asarray(ref["s"]) / n
        second = np.zeros((d, d))
        for (i, j), v in zip(_pairs(d), ref["p"]):
            second[i, j] = second[j, i] = v / n
        cov = second - np.outer(self.mean, self.mean)
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        self.keep = np.flatnonzero(std > 1e-12 * (1.0 + np.abs(self.mean)))  # a constant column carries nothing
        self.std = std
        k = self.keep
        corr = cov[np.ix_(k, k)] / np.outer(std[k], std[k])
        values, vectors = np.linalg.eigh(corr)
        order = np.argsort(values)[::-1]
        values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
        ratio = np.cumsum(values) / values.sum()
        self.components = int(min(len(k), np.searchsorted(ratio, variance, side="right") + 1))
        v = vectors[:, :self.components]
        self.residual = np.eye(len(k)) - v @ v.T

    @property
    def usable(self) -> bool:
        return len(self.keep) >= 2

    def error(self, m: dict) -> float | None:
        """Mean squared reconstruction error of the rows summed in `m` (about the same centres)."""
        n = m["n"]
        if not n:
            return None
        e = np.asarray(m["s"]) / n
        second = np.zeros((self.d, self.d))
        for (i, j), v in zip(_pairs(self.d), m["p"]):
            second[i, j] = second[j, i] = v / n
        # E[(x - mu)(x - mu)'] with x - mu = (x - c) - mean
        centred = second - np.outer(e, self.mean) - np.outer(self.mean, e) + np.outer(self.mean, self.mean)
        k = self.keep
        zz = centred[np.ix_(k, k)] / np.outer(self.std[k], self.std[k])
        return float(max(np.sum(self.residual * zz), 0.0))


def _key(kind: str, key: str, w: Window) -> str:
    # "sampled": sums over a hashed sample of large ranges, never added to the exact ones of before
    return f"mv:sampled:{kind}:{key}:{w.start.strftime('%Y%m%dT%H%M%S')}"


def centers(model: Model, spec: dict) -> list[float]:
    """The centres the sums are taken about: the reference medians of the spec."""
    return [float(spec["num"][c].get("center") or 0.0) for c in model.source.features.numeric]


def window_drift(store, model: Model, window: Window, ref: Window, rolling: bool, key: str, now: datetime,
                 cur: dict, read: Callable[[Window], dict]) -> dict | None:
    """The window's multivariate drift as a stored metric row (None without a usable reference).

    `cur`: the window's moments (read afresh: late rows count); `read(w)`: a reference chunk's,
    summed once and stored."""
    cols = model.source.features.numeric

    def summed(w: Window, kind: str, save: bool) -> dict:
        got = store.load_reference(model.name, _key(kind, key, w))
        if got is not None:
            return got
        m = read(w)
        if save:
            store.save_reference(model.name, _key(kind, key, w), m, now)
        return m

    kind = "win" if rolling else "fixed"
    chunks = [summed(w, kind, now >= w.end) for w in windows_between(ref.start, ref.end, model.window)]
    if rolling:  # the windows after this one sum it into their reference
        store.save_reference(model.name, _key("win", key, window), cur, now)
    total = None
    for c in chunks:
        total = D.add_summaries(total, c)
    if total is None or total["n"] < len(cols) + 1 or cur["n"] == 0:
        return None
    fit = Fit(total, len(cols), model.drift.multivariate.variance)
    if not fit.usable:
        return None
    score = fit.error(cur)
    threshold = learned_threshold(fit, chunks, model)
    return {"kind": KIND, "name": NAME, "segment": "", "method": METHOD, "value": score, "threshold": threshold,
            "detected": None if threshold is None else bool(score > threshold)}


def learned_threshold(fit: Fit, chunks: list[dict], model: Model) -> float | None:
    """The fixed threshold, or the reference chunks' mean error + sd standard deviations (two chunks at least)."""
    mv = model.drift.multivariate
    if isinstance(mv.threshold, (int, float)):
        return float(mv.threshold)
    errors = [e for e in (fit.error(c) for c in chunks) if e is not None]
    if len(errors) < 2:
        return None
    mean = math.fsum(errors) / len(errors)
    sd = math.sqrt(math.fsum((e - mean) ** 2 for e in errors) / len(errors))
    return mean + mv.threshold.sd * sd
