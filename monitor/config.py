"""The config file: YAML, `${VAR}` interpolation, validated by pydantic models.

Every field carries a description; errors name the file, the key path and what was expected.
"""
from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .durations import parse_duration, parse_timestamp
from .sqltext import strip_comments


class ConfigError(Exception):
    """A config that cannot be used; the message names the file and the key."""


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _positive(td: timedelta) -> timedelta:
    if td <= timedelta(0):
        raise ValueError("expected a window size above zero, such as 1h or 1d")
    return td


WindowSize = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ident(value: str) -> str:
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ValueError(f"expected a SQL identifier (letters, digits, underscore), got {value!r}")
    return value


Ident = Annotated[str, BeforeValidator(_ident)]
Name = Ident  # goal and model names are identifiers too: they become metric labels and job names


def _qualified(value: str) -> str:
    """A table name, optionally qualified: `schema.table`, or `catalog.schema.table` (Spark's
    catalogs, Databricks' Unity Catalog)."""
    parts = str(value).split(".")
    if len(parts) > 3:
        raise ValueError(f"expected a table name, schema.table or catalog.schema.table, got {value!r}")
    for p in parts:
        _ident(p)
    return value


TableName = Annotated[str, BeforeValidator(_qualified)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Features(Strict):
    numeric: list[Ident] = Field(default_factory=list, description="Numeric feature columns.")
    categorical: list[Ident] = Field(default_factory=list, description="Categorical feature columns.")


def _class_key(value) -> str:
    """A class of `class_scores`: a name, or an integer code (YAML `0:`), kept as text."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected a class name or an integer code, got {value!r}")
    return str(value)


class Source(Strict):
    table: TableName = Field(description="Table (or schema.table) of the prediction log.")
    id: Ident = Field(description="Column that identifies a prediction; joins to the labels.")
    timestamp: Ident = Field(description="Column with the prediction time (UTC).")
    timestamp_format: Literal["auto", "timestamp", "iso", "epoch_s", "epoch_ms"] = Field(
        default="auto", description="How the timestamp column holds times: auto (detected from its type and values), "
                                    "timestamp (native), iso (ISO 8601 text), epoch_s or epoch_ms (numbers).")
    score: Ident | None = Field(default=None, description="Probability of the positive class, or the regression output; "
                                                          "optional for multiclass models.")
    prediction: Ident | None = Field(default=None, description="The decision (0/1), or the predicted class of a multiclass "
                                                               "model; optional for regression.")
    class_scores: dict[Annotated[str, BeforeValidator(_class_key)], Ident] | None = Field(
        default=None, description="Multiclass: the score column of each class, by class (name or code as the labels spell it).")
    features: Features = Field(default_factory=Features, description="Feature columns watched for drift.")
    version: Ident | None = Field(default=None, description="Column with the model version that scored each row; results are broken down by it.")


class Labels(Strict):
    table: TableName = Field(description="Table that holds the labels as they arrive.")
    id: Ident = Field(description="Column that joins to source.id.")
    label: Ident = Field(description="The true outcome: 0/1, or the regression target.")
    max_delay: Duration = Field(default=timedelta(0), description="A window is judged once its end is this old.")


class Reference(Strict):
    start: Timestamp | None = Field(default=None, description="Start of a fixed reference range.")
    end: Timestamp | None = Field(default=None, description="End (exclusive) of a fixed reference range.")
    rolling: Duration | None = Field(default=None, description="Or: the span of windows just before each window.")

    @model_validator(mode="after")
    def _one_kind(self) -> "Reference":
        fixed = self.start is not None or self.end is not None
        if fixed == (self.rolling is not None):
            raise ValueError("give either start and end, or rolling")
        if fixed and (self.start is None or self.end is None or self.end <= self.start):
            raise ValueError("a fixed reference needs start < end")
        return self


class Learned(Strict):
    sd: float = Field(gt=0, description="Standard deviations from the mean of the reference's windows.")


class Multivariate(Strict):
    enabled: bool = Field(default=True, description="Watch the numeric features as a whole (at least two of them).")
    threshold: float | Learned = Field(default_factory=lambda: Learned(sd=3), description=(
        "Mean reconstruction error above which the window drifts, or {sd: N}: learned from the reference's windows."))
    variance: float = Field(default=0.65, gt=0, lt=1, description="Share of the variance the kept components explain.")


def _method(name: str) -> str:
    from .drift import validate_method  # the registry of methods (`monitor.drift.REGISTRY`)

    validate_method(name)
    return name


Method = Annotated[str, AfterValidator(_method)]


class FeatureDrift(Strict):
    method: Method | None = Field(default=None, description="This feature's drift method; null: the model's drift.method.")
    threshold: float | Learned | None = Field(default=None, description=(
        "This feature's threshold, or {sd: N} learned from the reference's windows; null: the model's drift.threshold."))


class Drift(Strict):
    method: Method = Field(default="auto", description="Drift method name, or auto (by column type and size).")
    multivariate: Multivariate = Field(default_factory=Multivariate, description="Drift of the numeric features as a whole.")
    threshold: float | Learned | None = Field(default=None, description=(
        "Score threshold; null takes the method's default; {sd: N}: learned per feature from the reference's windows "
        "(their mean score plus N standard deviations; minus, for p-values)."))
    features: dict[str, FeatureDrift] = Field(default_factory=dict, description="Per-feature method and threshold.")
    compare: list[Method] = Field(default_factory=list, description=(
        "More methods computed for every feature in the same pass, exported beside the deciding one (for comparison)."))
    dataset_share: float = Field(default=0.5, ge=0, le=1, description="Share of drifted features that makes dataset drift.")
    alert_features: list[Ident] = Field(default_factory=list, description="Critical features whose own drift alerts.")


class RelativeBound(Strict):
    below_validation: float | None = Field(default=None, ge=0, description="The floor is the version's validation metric minus this.")
    above_validation: float | None = Field(default=None, ge=0, description="The ceiling is the version's validation metric plus this.")

    @model_validator(mode="after")
    def _one(self) -> "RelativeBound":
        if (self.below_validation is None) == (self.above_validation is None):
            raise ValueError("give one of below_validation or above_validation")
        return self

    @property
    def offset(self) -> float:
        return -self.below_validation if self.below_validation is not None else self.above_validation


class Floor(Strict):
    min: float | Learned | RelativeBound | None = Field(default=None, description=(
        "Alert when the metric falls below this, or {sd: N}: the reference windows' mean minus N standard deviations, "
        "or {below_validation: D}: the registered version's validation metric minus D (needs mlflow)."))
    max: float | Learned | RelativeBound | None = Field(default=None, description=(
        "Alert when the metric rises above this, or {sd: N}: the reference windows' mean plus N standard deviations, "
        "or {above_validation: D}: the registered version's validation metric plus D (needs mlflow)."))

    @property
    def fixed_min(self) -> float | Learned | None:
        """The floor unless it is relative to the validation metric (those are set by `versions`)."""
        return None if isinstance(self.min, RelativeBound) else self.min

    @property
    def fixed_max(self) -> float | Learned | None:
        return None if isinstance(self.max, RelativeBound) else self.max

    @property
    def relative(self) -> bool:
        return isinstance(self.min, RelativeBound) or isinstance(self.max, RelativeBound)


class CostMatrix(Strict):
    tp: float = Field(default=0.0, description="Value of a true positive.")
    fp: float = Field(default=0.0, description="Value of a false positive (a cost: negative).")
    fn: float = Field(default=0.0, description="Value of a false negative (a cost: negative).")
    tn: float = Field(default=0.0, description="Value of a true negative.")


class MLflow(Strict):
    tracking_uri: str = Field(description="The MLflow tracking server, such as http://mlflow:5000.")
    name: str = Field(description="The registered model's name in the MLflow model registry.")
    alias: str = Field(default="champion", description="The alias whose version serves the predictions.")
    timeout: Duration = Field(default=timedelta(seconds=10), description="Each request to the tracking server is cut after this.")


class Model(Strict):
    name: Name = Field(description="Model name, used in metric labels.")
    task: Literal["binary_classification", "multiclass_classification", "regression"] = Field(
        description="binary_classification, multiclass_classification or regression.")
    window: WindowSize = Field(default=timedelta(days=1), description="Window size: 1h, 1d, 1w ..., or 1mo (calendar months, UTC).")
    start: Timestamp = Field(description="First window to compute.")
    source: Source = Field(description="Where the predictions are.")
    labels: Labels | None = Field(default=None, description="Where the labels are; offline quality needs them.")
    reference: Reference = Field(default_factory=lambda: Reference(rolling=timedelta(days=7)), description="Rows drift is measured against.")
    drift: Drift = Field(default_factory=Drift, description="Drift method and thresholds.")
    quality: dict[str, Floor] = Field(default_factory=dict, description="Quality floors that alert, by metric.")
    segments: list[Ident] = Field(default_factory=list, description="Categorical columns to break results down by.")
    max_segments: int = Field(default=20, ge=1, description="Segments beyond the top N are summed as `other`.")
    recompute: int = Field(default=1, ge=0, description="Windows recomputed each cycle, for late data.")
    owner: str = Field(default="", description="Team that owns the model; alerts route to it.")
    business_value: CostMatrix | None = Field(default=None, description=(
        "Binary models: the value of each outcome; the window's sum is the quality metric business_value."))
    mlflow: MLflow | None = Field(default=None, description="The model's registered model and alias in MLflow.")

    @model_validator(mode="after")
    def _relative_floors_need_mlflow(self) -> "Model":
        relative = [k for k, f in self.quality.items() if f.relative]
        if relative and self.mlflow is None:
            raise ValueError(f"quality floors of {', '.join(relative)} are relative to the validation metric: give mlflow")
        return self

    @model_validator(mode="after")
    def _columns_for_task(self) -> "Model":
        s = self.source
        if self.task == "multiclass_classification":
            if s.prediction is None:
                raise ValueError("source.prediction: missing required key (a multiclass model's predicted class)")
            if s.class_scores is not None and len(s.class_scores) < 2:
                raise ValueError("source.class_scores: expected a score column for each of at least two classes")
        else:
            if s.score is None:
                raise ValueError(f"source.score: missing required key (the {self.task} model's score)")
            if s.class_scores is not None:
                raise ValueError("source.class_scores: only a multiclass_classification model has class scores")
        features = {*s.features.numeric, *s.features.categorical}
        for name in self.drift.features:
            if name not in features:
                raise ValueError(f"drift.features.{name}: not a feature of this model (source.features)")
        if self.business_value is not None and self.task != "binary_classification":
            raise ValueError("business_value: only a binary_classification model has a cost matrix")
        return self

    @model_validator(mode="after")
    def _alert_features_are_features(self) -> "Model":
        features = set(self.source.features.numeric) | set(self.source.features.categorical)
        unknown = [f for f in self.drift.alert_features if f not in features]
        if unknown:
            raise ValueError(f"drift.alert_features: {', '.join(unknown)} not among the model's source.features "
                             f"({', '.join(sorted(features)) or 'none'})")
        return self


class Baseline(Strict):
    value: float = Field(description="Value when the goal was set.")
    at: Timestamp = Field(description="When it had that value.")


class GoalEstimate(Strict):
    sql: Path = Field(description=("SQL file: the KPI computed from model scores for windows whose outcomes have not "
                                   "matured; returns `value` and, for rates, `numerator`, `denominator` and optionally "
                                   "`variance` (of the numerator; for independent outcomes, the sum of p (1 - p))."))

    @property
    def sql_text(self) -> str:
        return self.sql.read_text()


GOAL_KINDS = ("rate", "value", "segmented")


class Goal(Strict):
    name: Name = Field(description="Goal name, used in metric labels.")
    title: str = Field(default="", description="Human title of the goal.")
    sql: Path = Field(description="SQL file: one SELECT with :window_start and :window_end.")
    kind: Literal["rate", "value", "segmented"] | None = Field(default=None, description=(
        "What the SQL returns: rate (value, numerator, denominator), value (value only) or segmented (one row per "
        "`segment`, with numerator and denominator); absent: read from the SQL text when the config is loaded."))
    models: list[Name] | None = Field(default=None, description=(
        "The models behind the goal (names of `models`); absent: the models whose prediction or label table the "
        "goal's SQL reads, or that have the same owner."))
    unit: str = Field(default="ratio", description="ratio, minutes, rub, count ...")
    direction: Literal["at_most", "at_least"] = Field(description="at_most or at_least the target.")
    target: float = Field(description="The value to reach.")
    baseline: Baseline | None = Field(default=None, description="Where the goal started.")
    deadline: Timestamp | None = Field(default=None, description="When the target must be met.")
    window: WindowSize = Field(default=timedelta(days=1), description="Window size: 1h, 1d, 1w ..., or 1mo (calendar months, UTC).")
    start: Timestamp = Field(description="First window to compute.")
    owner: str = Field(default="", description="Team that owns the goal; alerts route to it.")
    why: str = Field(default="", description="Why the goal matters.")
    recompute: int = Field(default=1, ge=0, description="Windows recomputed each cycle, for late data.")
    maturity: Duration = Field(default=timedelta(0), description="A window younger than this is provisional.")
    review: WindowSize | None = Field(default=timedelta(weeks=1), description="Also computed on windows of this size for the review.")
    severity: Literal["page", "ticket"] = Field(default="ticket", description="Severity of its breach alert.")
    max_segments: int = Field(default=20, ge=1, description="Segments beyond the top N are summed as `other`.")
    estimate: GoalEstimate | None = Field(default=None, description="The KPI estimated from model scores before outcomes mature.")
    kind_declared: bool = Field(default=False, exclude=True, description="Whether `kind` was written in the config.")
    model_reasons: dict[str, str] = Field(default_factory=dict, exclude=True, description=(
        "Why each model of `models` is behind the goal (declared, or how it was found)."))

    @model_validator(mode="after")
    def _settings_make_sense(self) -> "Goal":
        """Settings that are plainly wrong; suspicious ones are warnings of `monitor check`."""
        if self.unit.lower() == "ratio" and not 0 <= self.target <= 1:
            raise ValueError(f"target: {self.target:g} is outside [0, 1], but the unit is ratio "
                             "(write 0.05 for 5 %, or set unit)")
        if self.baseline and self.unit.lower() == "ratio" and not 0 <= self.baseline.value <= 1:
            raise ValueError(f"baseline.value: {self.baseline.value:g} is outside [0, 1], but the unit is ratio")
        if self.deadline and self.deadline <= self.start:
            raise ValueError(f"deadline: {self.deadline.date()} is not after start {self.start.date()}")
        if self.deadline and self.baseline and self.baseline.at >= self.deadline:
            raise ValueError(f"baseline.at: {self.baseline.at.date()} is not before the deadline {self.deadline.date()}")
        return self

    @property
    def sql_text(self) -> str:
        return self.sql.read_text()


class Notify(Strict):
    kind: Literal["webhook", "slack", "telegram", "smtp"] = Field(description="webhook, slack, telegram or smtp.")
    url: str | None = Field(default=None, description="Webhook URL (webhook, slack).")
    token: str | None = Field(default=None, description="Telegram bot token.")
    chat_id: str | None = Field(default=None, description="Telegram chat id.")
    host: str | None = Field(default=None, description="SMTP host.")
    port: int = Field(default=25, description="SMTP port.")
    sender: str | None = Field(default=None, description="SMTP From address.")
    to: list[str] = Field(default_factory=list, description="SMTP recipients.")
    username: str | None = Field(default=None, description="SMTP user.")
    password: str | None = Field(default=None, description="SMTP password.")


class Urls(Strict):
    app: str | None = Field(default=None, description="Base URL of the review app, as people open it (e.g. https://review.example.com).")
    runbook: str | None = Field(default=None, description="URL of the published runbook; default: the app's /runbook page.")


class Defaults(Strict):
    """Thresholds of the alerts, in one place: the rules, the notifier and the dashboards read them from here."""

    stale_factor: float = Field(default=2, gt=0, description="A goal is stale when its latest window ended more than this many windows ago.")
    stale_for: Duration = Field(default=timedelta(minutes=15), description="... for this long before its Stale alert fires.")
    fast_burn_budget: float = Field(default=0.05, gt=0, le=1, description="Fast burn: the last fast_burn_window spent this share of the whole period's error budget.")
    slow_burn_budget: float = Field(default=0.10, gt=0, le=1, description="Slow burn: the last slow_burn_window spent this share of the period's error budget.")
    fast_burn_window: WindowSize = Field(default=timedelta(days=1), description="The look-back of the fast burn rate (its `window` label).")
    slow_burn_window: WindowSize = Field(default=timedelta(weeks=1), description="The look-back of the slow burn rate, longer than the fast one.")
    min_burn: float = Field(default=1.0, ge=0, description="A burn rate at or below this never alerts (1: within the budget).")
    label_starvation_windows: int = Field(default=3, ge=1, description="Labels starve when no window has mature labels for max_delay plus this many windows.")
    label_coverage_min: float = Field(default=0.01, ge=0, le=1, description="... or the latest judged window has labels for under this share of its predictions.")
    source_stale_factor: float = Field(default=2, gt=0, description="A model's source is stale when its newest row is more than this many windows old.")
    volume_drop: float = Field(default=0.5, gt=0, description="A window with under this share of the rows of comparable windows is a volume drop.")
    volume_surge: float = Field(default=2.0, gt=0, description="... and over this share a volume surge.")
    job_failing_for: Duration = Field(default=timedelta(minutes=30), description="A job failing this long alerts.")
    exporter_down_for: Duration = Field(default=timedelta(minutes=5), description="Prometheus unable to scrape the monitor this long alerts.")

    @model_validator(mode="after")
    def _slow_is_longer(self) -> "Defaults":
        if self.slow_burn_window <= self.fast_burn_window:
            raise ValueError("slow_burn_window: must be longer than fast_burn_window")
        return self


CONFIG_VERSIONS = (1,)


class Config(Strict):
    version: int = Field(default=1, description="The config format's version (1).")
    database_url: str = Field(default="sqlite:///monitor.db", description="SQLAlchemy URL of the source tables.")
    results_url: str = Field(default="", description="SQLAlchemy URL of the results store (PostgreSQL or SQLite); empty: the source database.")
    parquet: dict[Ident, str] = Field(default_factory=dict, description=(
        "Tables read from Parquet files, for a DuckDB or Spark database_url: {table: file, glob or folder}; "
        "relative paths are relative to the config file."))
    models: list[Model] = Field(default_factory=list, description="Models to watch.")
    goals: list[Goal] = Field(default_factory=list, description="Business goals to track.")
    notify: list[Notify] = Field(default_factory=list, description="Built-in notification channels.")
    statement_timeout: Duration = Field(default=timedelta(seconds=300), description="Any one SQL statement is cut after this.")
    app_url: str = Field(default="http://localhost:8501", description="Address of the review app, for links in alerts (urls.app wins).")
    urls: Urls = Field(default_factory=Urls, description="Base URLs for links in alerts and dashboards: app, runbook.")
    grace: Duration = Field(default=timedelta(minutes=5), description="Wait this long after a window ends before computing it.")
    retry_after: Duration = Field(default=timedelta(minutes=5), description="`serve` retries a failed or blocked job after this.")
    lease_ttl: Duration = Field(default=timedelta(minutes=10), description="A replica that stops renewing its job lease loses it after this.")
    defaults: Defaults = Field(default_factory=Defaults, description="Alert thresholds shared by the rules, the notifier and the dashboards.")
    path: Path | None = Field(default=None, exclude=True, description="The file this config was read from.")

    @field_validator("version", mode="before")
    @classmethod
    def _known_version(cls, v):
        if isinstance(v, bool) or not isinstance(v, int) or v not in CONFIG_VERSIONS:
            raise ValueError(f"{v!r} is not a config version this monitor reads (it reads version "
                             f"{', '.join(map(str, CONFIG_VERSIONS))})")
        return v

    @field_validator("models", "goals")
    @classmethod
    def _unique_names(cls, items: list) -> list:
        seen = set()
        for it in items:
            if it.name in seen:
                raise ValueError(f"duplicate name {it.name!r}")
            seen.add(it.name)
        return items

    @property
    def app_base(self) -> str:
        """The review app's base URL, without a trailing slash: `urls.app`, else `app_url`."""
        return (self.urls.app or self.app_url).rstrip("/")

    @property
    def runbook_base(self) -> str:
        """The runbook's URL: `urls.runbook`, else the review app's runbook page."""
        return self.urls.runbook or f"{self.app_base}/runbook"

    @property
    def store_url(self) -> str:
        return self.results_url or self.database_url

    def goal(self, name: str) -> Goal:
        return next(g for g in self.goals if g.name == name)

    def model(self, name: str) -> Model:
        return next(m for m in self.models if m.name == name)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(text: str, env: dict[str, str] | None = None, where: str = "") -> str:
    """Replace `${VAR}` and `${VAR:-default}` with values from the environment."""
    env = os.environ if env is None else env

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set (write ${{{name}:-default}} for a default)")

    return _VAR.sub(sub, text)


def _interpolate_tree(node: Any, where: str) -> Any:
    if isinstance(node, str):
        return interpolate(node, where=where)
    if isinstance(node, list):
        return [_interpolate_tree(x, f"{where}[{i}]") for i, x in enumerate(node)]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
    return node


def _key_path(loc: tuple, data: Any) -> str:
    """`goals[0].targt` style path; list items also show their name."""
    parts, node = [], data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) else None
            parts.append(f"[{item}]" + (f"({name})" if name else ""))
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through lists, dicts, unions and Annotated)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _keys_at(loc: tuple) -> set[str]:
    """The keys allowed in the mapping at `loc` (a pydantic error location), for "did you mean"."""
    models: list[type[BaseModel]] = [Config]
    for item in loc:
        if isinstance(item, int):
            continue
        fields = [m.model_fields[item] for m in models if item in m.model_fields]
        if fields:
            models = [m for f in fields for m in _models_in(f.annotation)]
        # else: a dict key (a metric name) or a union tag: the same models hold below it
    return {name for m in models for name in m.model_fields if name != "path"}


def _resolve_sqlite(url: str, base: Path) -> str:
    """A relative SQLite (or DuckDB) path is relative to the config file's folder."""
    for prefix in ("sqlite:///", "duckdb:///"):
        rest = url[len(prefix):]
        if url.startswith(prefix) and not rest.startswith("/") and rest.split("?")[0] not in ("", ":memory:"):
            return prefix + str((base / rest).resolve())
    return url


def _resolve_path(p: str, base: Path) -> str:
    """A relative local path (or glob) is relative to the config file's folder; URLs stay as they
    are (`s3://...`, and `dbfs:/...` with one slash)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", p) or Path(p).is_absolute():
        return p
    return str(base / p)


def _check_engines(cfg: Config, path: Path) -> None:
    """Sources that cannot hold the monitor's tables need a results_url; Parquet tables need an engine that reads them."""
    from . import engines

    src = engines.for_url(cfg.database_url)
    if not cfg.results_url and not src.can_store:
        raise ConfigError(f"{path}: results_url: required when database_url is {engines.scheme(cfg.database_url)}:// "
                          f"({src.name} cannot hold the monitor's own tables): set results_url to a PostgreSQL or SQLite URL")
    if cfg.results_url and not engines.for_url(cfg.results_url).can_store:
        raise ConfigError(f"{path}: results_url: {engines.scheme(cfg.results_url)}:// cannot hold the monitor's own tables: "
                          "use a PostgreSQL or SQLite URL")
    if cfg.parquet and src.name not in ("duckdb", "spark"):
        raise ConfigError(f"{path}: parquet: tables read from Parquet files need a DuckDB (duckdb:///...) or Spark "
                          f"(sc://HOST:PORT) database_url, not {engines.scheme(cfg.database_url)}://")


def _code(sql: str) -> str:
    return strip_comments(sql).lower()


def infer_kind(sql: str) -> str:
    """A goal's kind when the config does not say: read once, from the SQL's code (not its comments), at load time."""
    code = _code(sql)
    if re.search(r"\bsegment\b", code):
        return "segmented"
    return "rate" if re.search(r"\bnumerator\b", code) else "value"


def _goal_models(cfg: Config, g: Goal, i: int, sql: str, path: Path) -> dict:
    """The goal's `models` (checked against the config's models) and why each is behind it.

    Undeclared, they are found once here: the models whose prediction or label table the goal's SQL
    reads, or that have the same owner (`feed` and `feed-ml` count as one team).
    """
    names = [m.name for m in cfg.models]
    if g.models is not None:
        unknown = [x for x in g.models if x not in names]
        if unknown:
            raise ConfigError(f"{path}: goals[{i}]({g.name}).models: {', '.join(map(repr, unknown))} not among the "
                              f"config's models ({', '.join(names) or 'none'})")
        return {"models": list(g.models), "model_reasons": {x: "listed in the goal's `models`" for x in g.models}}
    code = _code(sql)
    reasons = {}
    for m in cfg.models:
        tables = [(m.source.table, "prediction")] + ([(m.labels.table, "label")] if m.labels else [])
        read = [(t, what) for t, what in tables if re.search(rf"(?<![\w.]){re.escape(t.lower())}(?!\w)", code)]
        if read:
            t, what = read[0]
            reasons[m.name] = f"the goal's SQL reads `{t}`, the model's {what} table"
        elif _owners_match(g.owner, m.owner):
            reasons[m.name] = (f"same owner `{g.owner}`" if g.owner == m.owner else
                               f"owners `{g.owner}` and `{m.owner}` are the same team")
    return {"models": list(reasons), "model_reasons": reasons}


def _owners_match(a: str, b: str) -> bool:
    a, b = a.strip().lower(), b.strip().lower()
    if not a or not b:
        return False
    short, long_ = sorted((a, b), key=len)
    return a == b or (long_.startswith(short) and long_[len(short)] in "-_ /.")


def parse_config(data: Any, path: Path | str = "<config>") -> Config:
    """Validate a parsed YAML tree; relative paths resolve against the file's folder."""
    path = Path(path)
    base = path.parent.resolve() if path.name != "<config>" else Path.cwd()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = _interpolate_tree(data, "")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = _key_path(err["loc"], data) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                from .suggest import did_you_mean
                msg = "unknown key" + (did_you_mean(err["loc"][-1], _keys_at(err["loc"][:-1])) or " (check its spelling)")
            elif err["type"] == "missing":
                msg = "missing required key"
            elif err["type"] == "value_error" and err.get("ctx", {}).get("error") is not None:
                msg = str(err["ctx"]["error"])
            lines.append(f"{path}: {key}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    goals = []
    for i, g in enumerate(cfg.goals):
        sql = g.sql if g.sql.is_absolute() else (base / g.sql).resolve()
        if not sql.is_file():
            raise ConfigError(f"{path}: goals[{i}]({g.name}).sql: SQL file {sql} does not exist")
        update = {"sql": sql}
        if g.estimate is not None:
            est = g.estimate.sql if g.estimate.sql.is_absolute() else (base / g.estimate.sql).resolve()
            if not est.is_file():
                raise ConfigError(f"{path}: goals[{i}]({g.name}).estimate.sql: SQL file {est} does not exist")
            update["estimate"] = g.estimate.model_copy(update={"sql": est})
        text = sql.read_text()
        update.update(kind=g.kind or infer_kind(text), kind_declared=g.kind is not None)
        update.update(_goal_models(cfg, g, i, text, path))
        goals.append(g.model_copy(update=update))
    _check_engines(cfg, path)
    return cfg.model_copy(update={
        "goals": goals,
        "parquet": {k: _resolve_path(v, base) for k, v in cfg.parquet.items()},
        "database_url": _resolve_sqlite(cfg.database_url, base),
        "results_url": _resolve_sqlite(cfg.results_url, base) if cfg.results_url else "",
        "path": path.resolve() if path.name != "<config>" else None,
    })


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate the config file (`--config` or `MONITOR_CONFIG`)."""
    path = path or os.environ.get("MONITOR_CONFIG")
    if not path:
        raise ConfigError("no config file: pass --config FILE or set MONITOR_CONFIG")
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_config(data if data is not None else {}, path)
