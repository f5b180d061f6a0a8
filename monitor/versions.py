"""Model versions: results by the log's version column, and the registry's version (MLflow).

With `source.version`, each window's online signals (predictions, score_mean, positive_rate)
and, once labels mature, its quality are also stored per version (`segment = "version=<v>"`,
the `max_segments` most frequent versions of the window, the rest summed as `other` without
quality): a rollout window shows the old and the new version side by side.

With `mlflow:`, the alias's version, its run and validation metrics are

Read over MLflow's REST API with urllib (no MLflow client to install) by the model's job, once a
cycle, and stored with the model's latest window as `monitor_model_metrics` rows:
  kind "version",    name "version", value = the version number, method = its run id;
  kind "validation", name = a metric the run logged, value = its latest value.
A window recomputed later keeps the rows it had: the registry only knows the present.
Quality floors relative to the validation metric (`{min: {below_validation: 0.05}}`) become
the quality rows' threshold and `detected`, and `quality_threshold` rows (as `bands` stores the
fixed and learned ones), exported as `monitor_model_quality_threshold{model, metric, bound}`.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from .bands import KIND as BAND_KIND
from .config import MLflow, Model, RelativeBound
from .conventions import VERSION_SEGMENT, segment
from . import engines
from .db import quote, quote_table
from .modeljobs import OTHER, quality_binary, quality_regression
from .modeljobs.source import connect, model_bounds, model_where
from .store import Store
from .windows import Window

VERSION_KIND, VALIDATION_KIND = "version", "validation"


class RegistryError(Exception):
    """The tracking server cannot say which version the alias names."""


@dataclass
class Registered:
    name: str
    alias: str
    version: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)


def version_text(value: float | None) -> str:
    """A stored version number as the registry spells it."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _get(ml: MLflow, path: str, missing: str = "", **params) -> dict:
    url = f"{ml.tracking_uri.rstrip('/')}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=ml.timeout.total_seconds()) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("message", "")
        except ValueError:
            detail = ""
        if e.code == 404 and missing:
            raise RegistryError(f"MLflow at {ml.tracking_uri}: {missing} ({detail or 'not found'})") from None
        raise RegistryError(f"MLflow at {ml.tracking_uri}: GET {path} answered {e.code}{': ' + detail if detail else ''}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RegistryError(f"MLflow at {ml.tracking_uri} cannot be read: {getattr(e, 'reason', e)}") from None


def registered_version(ml: MLflow) -> Registered:
    """The version that `ml.alias` names now, its run id and the run's metrics."""
    missing = f"no version of {ml.name!r} has the alias {ml.alias!r}"
    mv = _get(ml, "registered-models/alias", missing, name=ml.name, alias=ml.alias).get("model_version") or {}
    if "version" not in mv:
        raise RegistryError(f"MLflow at {ml.tracking_uri}: no version of {ml.name!r} has the alias {ml.alias!r}")
    run_id = mv.get("run_id") or ""
    metrics: dict[str, float] = {}
    if run_id:
        run = _get(ml, "runs/get", f"the run {run_id} of version {mv['version']} is gone", run_id=run_id).get("run", {})
        for m in run.get("data", {}).get("metrics", []):  # the latest value of each key
            metrics[m["key"]] = float(m["value"])
    return Registered(ml.name, ml.alias, str(mv["version"]), run_id, metrics)


def validation_value(metrics: dict[str, float], metric: str) -> float | None:
    """The run's metric for a quality metric: logged as `roc_auc`, `val_roc_auc` or `validation_roc_auc`."""
    for key in (metric, f"val_{metric}", f"validation_{metric}"):
        if key in metrics:
            return metrics[key]
    return None


def _rows(reg: Registered) -> list[dict]:
    version = float(reg.version) if reg.version.isdigit() else None
    return ([{"kind": VERSION_KIND, "name": "version", "segment": "", "method": reg.run_id[:50], "value": version}]
            + [{"kind": VALIDATION_KIND, "name": k[:200], "segment": "", "value": v} for k, v in sorted(reg.metrics.items())])


class Registry:
    """The model's registry, read at most once a cycle (by the cycle's latest window)."""

    def __init__(self, model: Model):
        self.model = model
        self._got: Registered | None = None

    def current(self) -> Registered:
        if self._got is None:
            self._got = registered_version(self.model.mlflow)
        return self._got


def attach(store: Store, model: Model, window: Window, now: datetime, result, registry: Registry) -> None:
    """Add the version rows to a computed window, and the thresholds of floors relative to validation."""
    latest = window.end + model.window > now  # the last due window: the registry speaks of it
    if latest:
        rows = _rows(registry.current())
    else:
        rows = [{k: r[k] for k in ("kind", "name", "segment", "method", "value")}
                for r in store.model_metrics(model.name, window.start, kinds=(VERSION_KIND, VALIDATION_KIND))]
    metrics = {r["name"]: r["value"] for r in rows if r["kind"] == VALIDATION_KIND}
    for r in list(result.metrics):
        f = model.quality.get(r["name"]) if r["kind"] == "quality" and not r.get("segment") else None
        if f is None or not f.relative:
            continue
        base = validation_value(metrics, r["name"])
        limits = {}
        for bound, setting in (("min", f.min), ("max", f.max)):
            if isinstance(setting, RelativeBound):
                if base is not None:
                    limits[bound] = base + setting.offset
                    rows.append({"kind": BAND_KIND, "name": r["name"], "segment": bound, "method": "validation",
                                 "value": limits[bound]})
            elif isinstance(setting, (int, float)):
                limits[bound] = float(setting)
        r["threshold"] = limits.get("min", limits.get("max"))
        r["detected"] = bool(("min" in limits and r["value"] < limits["min"]) or
                             ("max" in limits and r["value"] > limits["max"])) if limits else None
    result.metrics += rows


def by_version(source_engine, model: Model, window: Window, now: datetime) -> list[dict]:
    """Online signals and (labels mature) quality of each version of the window."""

    s = model.source
    binary = model.task == "binary_classification"
    with connect(source_engine) as conn:
        v, sc = quote(conn, s.version), f"CAST({quote(conn, s.score)} AS {engines.of(conn).double})"
        if not binary:
            pos = "NULL, NULL"
        elif s.prediction:
            pos = f"SUM(CAST({quote(conn, s.prediction)} AS INTEGER)), COUNT({quote(conn, s.prediction)})"
        else:
            pos = f"SUM(CASE WHEN {sc} >= 0.5 THEN 1 ELSE 0 END), COUNT({sc})"
        rows = conn.execute(sa.text(
            f"SELECT {v}, COUNT(*), COUNT({sc}), SUM({sc}), {pos} FROM {quote_table(conn, s.table)} "
            f"WHERE {model_where(conn, model)} GROUP BY {v} ORDER BY COUNT(*) DESC, {v}"), model_bounds(conn, model, window)).all()
        kept, rest = rows[:model.max_segments], rows[model.max_segments:]
        if rest or any(r[0] is None for r in kept):  # NULL versions and the tail are summed as `other`
            rest = [r for r in rows if r[0] is None or r not in kept]
            kept = [r for r in kept if r[0] is not None]
        groups = [(segment(VERSION_SEGMENT, r[0]), r[0], r[1:]) for r in kept]
        if rest:
            groups.append((segment(VERSION_SEGMENT, OTHER), None, [sum(x[i] or 0 for x in rest) for i in range(1, len(rows[0]))]))
        mature = model.labels is not None and window.end + model.labels.max_delay <= now
        out = []
        for label, value, (n, n_sc, sum_sc, p, p_n) in groups:
            online = {"predictions": n}
            if n_sc:
                online["score_mean"] = float(sum_sc) / n_sc
            if p_n:
                online["positive_rate"] = float(p) / p_n
            out += [{"kind": "online", "name": k, "segment": label, "value": float(x)} for k, x in online.items()]
            if mature and value is not None:
                q = (quality_binary if binary else quality_regression)(conn, model, window, version=value)
                out += [{"kind": "quality", "name": k, "segment": label, "value": x} for k, x in q.items()
                        if k != "labelled" and not k.startswith("_")]  # `_` keys are the window's checks' inputs
                out.append({"kind": "label_coverage", "name": "labelled", "segment": label, "value": q["labelled"] / n if n else None})
        conn.rollback()
    return out


def extend(source_engine, store: Store, model: Model, window: Window, now: datetime, result, registry: Registry | None) -> None:
    """The version hooks of a computed window: its per-version rows, then the registry's."""
    if model.source.version:
        result.metrics += by_version(source_engine, model, window, now)
    if registry is not None:
        attach(store, model, window, now, result, registry)
