"""A window's reference summary (fixed, or the sum of the stored windows before it) and learned thresholds."""
from __future__ import annotations

import json
from datetime import datetime

from .. import drift as D
from .. import driftsettings as S
from ..config import Model
from ..store import Store
from ..windows import Window, window_at, windows_between
from .compare import _compare_column
from .passes import scan
from .planning import reference_range
from .specs import _fingerprint, model_hash, build_spec


class Summaries:
    """The store as one window's computation sees it: reference summaries are read from the store,
    and those the window builds are kept here (as the JSON the store would hold) until they are
    saved with the window, in its transaction (`ModelWindow.references`). The rest is the store's."""

    def __init__(self, store: Store, model: str):
        self.store, self.model = store, model
        self.new: dict[str, str] = {}  # ref_key -> JSON

    def load_reference(self, model: str, ref_key: str) -> dict | None:
        if model == self.model and ref_key in self.new:
            return json.loads(self.new[ref_key])
        return self.store.load_reference(model, ref_key)

    def save_reference(self, model: str, ref_key: str, summary: dict, now: datetime) -> None:
        assert model == self.model, model  # a window builds its own model's summaries only
        self.new[ref_key] = json.dumps(summary)

    def built(self) -> dict[str, dict]:
        """The summaries built, by key."""
        return {k: json.loads(v) for k, v in self.new.items()}

    def __getattr__(self, name):
        return getattr(self.store, name)


def _reference(conn, store: Store, model: Model, window: Window, now: datetime) -> tuple[dict | None, dict | None, int]:
    """(spec, reference summary, rows read to build it now): fixed, or rolling."""
    if model.reference.rolling is None:
        return _fixed_reference(conn, store, model, now)
    return _rolling_reference(conn, store, model, window, now)


def _fixed_reference(conn, store: Store, model: Model, now: datetime) -> tuple[dict | None, dict | None, int]:
    """A `{start, end}` reference: summarised once, exactly, and kept once its range has ended."""
    key = f"fixed:{model_hash(model)}"
    got = store.load_reference(model.name, key)
    if got is not None:
        return got["spec"], got["summary"], 0
    rng = Window(model.reference.start, model.reference.end)
    spec = build_spec(conn, model, rng)
    if spec is None:
        return None, None, 0
    summary = scan(conn, model, spec, rng, moments=True, sample=False)
    if now >= rng.end:  # a range still filling is recomputed next time, never frozen half full
        store.save_reference(model.name, key, {"spec": spec, "summary": summary}, now)
    return spec, summary, summary["all"]["rows"]


def _rolling_reference(conn, store: Store, model: Model, window: Window, now: datetime
                       ) -> tuple[dict | None, dict | None, int]:
    """A `{rolling: N}` reference: the sum of the summaries of the windows before, each scanned
    once (normally when it was computed itself); the spec is cut once, on the first reference."""
    spec_key = f"spec:{model_hash(model)}"
    spec = store.load_reference(model.name, spec_key)
    if spec is None:
        first = reference_range(model, window_at(model.start, model.window))
        spec = build_spec(conn, model, first, rolling=True)
        if spec is None:  # nothing before the first window: cut where the data starts
            spec = build_spec(conn, model, Window(model.start, model.start + model.reference.rolling), rolling=True)
        if spec is None:
            return None, None, 0
        store.save_reference(model.name, spec_key, spec, now)
    total, read = None, 0
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
    return f"win:{model_hash(model)}:{_fingerprint(spec)}:{w.start.strftime('%Y%m%dT%H%M%S')}"


def _learned(conn, store: Store, model: Model, spec: dict, ref: dict, window: Window, now: datetime) -> dict:
    """Thresholds learned from the reference's chunks (windows of the model's size): see `driftsettings`."""
    if not S.learns(model):
        return {}
    rolling = model.reference.rolling is not None
    key = f"thresholds:{model_hash(model)}:{_fingerprint(spec)}"
    if not rolling:
        got = store.load_reference(model.name, key)
        if got is not None:
            return got
    rng = reference_range(model, window)
    chunks = []
    for w in windows_between(rng.start, rng.end, model.window):
        k = _window_key(model, spec, w) if rolling else f"chunk:{model_hash(model)}:{_fingerprint(spec)}:{w.start:%Y%m%dT%H%M%S}"
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
