"""The declared spec: what the config means for every output, read by the exporter, the alerts, the
dashboards and the app (which never read each other), and by the notifier, which evaluates the
alerts' conditions over the exporter's samples.

- Subjects: each goal with its kind (rate, value, segmented), the models behind it, its error
  budget's period and burn thresholds; each model with its staleness and starvation spans. The
  thresholds come from the config's `defaults` (one place, as a monitoring mixin's `_config`).
- Conditions as data: an alert's condition is a small tree (`Sel`, `Age`, `Sub`, `Cmp`, `And`,
  `Or`, `Unless`) over exported series. The same tree renders the PromQL of the rule
  (`promql()`) and evaluates in the built-in notifier over the exported samples (`value()`):
  the value the rule would carry when it fires, else None.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import conventions as n
from .config import GOAL_KIND_COLUMNS, Config, Defaults, Goal, Model, infer_kind, models_behind
from .durations import format_duration

BURN_DAYS_WITHOUT_DEADLINE = 28.0  # burn thresholds of a budget period without an end assume 28 days


# --- goals ---------------------------------------------------------------------------------------

def goal_kind(g: Goal) -> str:
    """The goal's kind: declared, or read from the SQL when the config was loaded."""
    return g.kind or infer_kind(g.sql_text)


def allowed_share(g: Goal) -> float:
    """The share of events the target allows to be bad: `target` of an at-most goal, `1 - target` of an at-least one."""
    return g.target if g.direction == "at_most" else 1 - g.target


def has_budget(g: Goal) -> bool:
    """A rate goal (or a segmented one: a rate by segment) whose target leaves an error budget."""
    return goal_kind(g) in ("rate", "segmented") and 0 < allowed_share(g) <= 1


def has_segments(g: Goal) -> bool:
    return goal_kind(g) == "segmented"


def budget_period(g: Goal) -> tuple[datetime, datetime | None]:
    """The error budget's period: from the baseline date (else the goal's start) to the deadline."""
    return (g.baseline.at if g.baseline else g.start), g.deadline


@dataclass(frozen=True)
class Burn:
    """A look-back of the burn rate: its `window` label, its span, and the share of the period's budget
    that, spent within it, alerts."""

    label: str
    span: timedelta
    budget: float

    @property
    def words(self) -> tuple[str, str]:
        """How texts name the span: (`day`, `a day`), (`week`, `a week`), else (`6h`, `6h`)."""
        word = {timedelta(days=1): "day", timedelta(weeks=1): "week"}.get(self.span)
        return (word, f"a {word}") if word else (self.label, self.label)


def burns(defaults: Defaults) -> tuple[Burn, Burn]:
    """The fast and the slow burn, from the config's defaults."""
    d = defaults
    return (Burn(format_duration(d.fast_burn_window), d.fast_burn_window, d.fast_burn_budget),
            Burn(format_duration(d.slow_burn_window), d.slow_burn_window, d.slow_burn_budget))


def burn_windows(g: Goal, defaults: Defaults | None = None) -> dict[str, timedelta]:
    """The look-backs a goal's burn rate is exported for (label -> span): those at least one window long."""
    return {b.label: b.span for b in burns(defaults or Defaults()) if g.window <= b.span}


def burn_thresholds(cfg: Config, g: Goal) -> dict[str, float]:
    """Burn rates that alert, by look-back label: a share of the period's budget spent in that look-back."""
    start, end = budget_period(g)
    days = ((end - start).total_seconds() / 86400) if end else BURN_DAYS_WITHOUT_DEADLINE
    return {b.label: round(max(cfg.defaults.min_burn, b.budget * days / (b.span.total_seconds() / 86400)), 2)
            for b in burns(cfg.defaults)}


def stale_after(cfg: Config, g: Goal) -> timedelta:
    return cfg.defaults.stale_factor * g.window


def goal_models(cfg: Config, g: Goal) -> dict[str, str]:
    """The models behind a goal, each with why (declared in `models`, or found when the config was loaded)."""
    if g.models is None:  # a Goal built without load_config
        return models_behind(cfg, g, cfg.goals.index(g) if g in cfg.goals else 0, g.sql_text, cfg.path)["model_reasons"]
    return {m: g.model_reasons.get(m, "listed in the goal's `models`") for m in g.models}


def kind_mismatch(g: Goal, columns: list[str]) -> str | None:
    """What is wrong when the goal's SQL returns columns that do not fit its kind, naming the column; else None.

    The kind asserts what the SQL returns at least: a `value` goal whose SQL also returns a numerator and a
    denominator is a value goal (no error budget); a `segment` column makes many rows, which only a segmented
    goal can store.
    """
    cols = {c.lower() for c in columns}
    kind = goal_kind(g)
    how = "declared" if g.kind_declared else "read from its SQL text (declare `kind` to say otherwise)"
    missing = [c for c in GOAL_KIND_COLUMNS[kind] if c not in cols]
    if missing:
        return (f"goal {g.name}: its kind is {kind} ({how}), but its SQL returns no "
                f"{' and no '.join(f'`{c}` column' for c in missing)}")
    if kind != "segmented" and "segment" in cols:
        return f"goal {g.name}: its kind is {kind} ({how}), but its SQL returns a `segment` column (kind segmented)"
    return None


# --- models --------------------------------------------------------------------------------------

def starvation_after(cfg: Config, m: Model) -> timedelta:
    delay = m.labels.max_delay if m.labels else timedelta(0)
    return delay + cfg.defaults.label_starvation_windows * m.window


def source_stale_after(cfg: Config, m: Model) -> timedelta:
    return cfg.defaults.source_stale_factor * m.window


# --- links ---------------------------------------------------------------------------------------

def review_url(cfg: Config, goal: str | None = None, model: str | None = None) -> str:
    """The review app's page of a goal or a model (its home page without either)."""
    base = cfg.app_base
    if goal:
        return f"{base}/?goal={goal}"
    return f"{base}/?model={model}" if model else base


# --- conditions as data --------------------------------------------------------------------------

class Samples:
    """Exported samples by name and labels, for evaluating conditions (labels not asked for are ignored)."""

    def __init__(self, rows: list[tuple[str, dict[str, str], float]]):
        self.rows = rows

    def get(self, metric: str, /, **labels: str) -> float | None:
        for name, lab, value in self.rows:
            if name == metric and all(lab.get(k) == v for k, v in labels.items()):
                return value
        return None

    def timestamp(self, selector: str) -> float | None:
        """The value of a `sel()` selector."""
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$", selector)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")) if m else {}
        return self.get(m.group(1), **labels) if m else None


def _num(x: float) -> str:
    """A constant as the rules spell it: integers as such, other numbers exactly (as the notifier compares them)."""
    if isinstance(x, int):
        return str(x)
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


class Expr:
    """A vector expression: its PromQL and its value over samples (None: no such series, or not holding)."""

    def promql(self) -> str:
        raise NotImplementedError

    def value(self, s: Samples, now: float) -> float | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Sel(Expr):
    """One exported series: `metric{label="value",...}`."""

    metric: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, metric: str, /, **labels: str) -> Sel:
        return cls(metric, tuple(labels.items()))

    def promql(self) -> str:
        return n.sel(self.metric, **dict(self.labels))

    def value(self, s: Samples, now: float) -> float | None:
        return s.get(self.metric, **dict(self.labels))


@dataclass(frozen=True)
class Age(Expr):
    """`time() - x`: how long ago a timestamp series was."""

    x: Expr

    def promql(self) -> str:
        return f"time() - {self.x.promql()}"

    def value(self, s: Samples, now: float) -> float | None:
        v = self.x.value(s, now)
        return None if v is None else now - v


@dataclass(frozen=True)
class Sub(Expr):
    """`x - c`: a series less a constant."""

    x: Expr
    c: float

    def promql(self) -> str:
        return f"{self.x.promql()} - {_num(self.c)}"

    def value(self, s: Samples, now: float) -> float | None:
        v = self.x.value(s, now)
        return None if v is None else v - self.c


_OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__, "==": float.__eq__}


@dataclass(frozen=True)
class Cmp(Expr):
    """`x op limit` (a constant), or `x op on(labels) limit` (another series): x's value where it holds."""

    x: Expr
    op: str
    limit: float | Expr
    on: tuple[str, ...] = ()
    paren: bool = False  # `(x op limit)`, as the left side of an `unless`

    def promql(self) -> str:
        rhs = self.limit.promql() if isinstance(self.limit, Expr) else _num(self.limit)
        on = f"on({', '.join(self.on)}) " if self.on else ""
        text = f"{self.x.promql()} {self.op} {on}{rhs}"
        return f"({text})" if self.paren else text

    def value(self, s: Samples, now: float) -> float | None:
        v = self.x.value(s, now)
        t = self.limit.value(s, now) if isinstance(self.limit, Expr) else self.limit
        return v if v is not None and t is not None and _OPS[self.op](float(v), float(t)) else None


@dataclass(frozen=True)
class _Binary(Expr):
    """`a <word> on(labels) b`: a's value where `b` allows it (`holds`)."""

    a: Expr
    b: Expr
    on: tuple[str, ...]
    word = ""

    def promql(self) -> str:
        return f"{self.a.promql()}\n  {self.word} on({', '.join(self.on)})\n{self.b.promql()}"

    def holds(self, b: float | None) -> bool:
        raise NotImplementedError

    def value(self, s: Samples, now: float) -> float | None:
        return self.a.value(s, now) if self.holds(self.b.value(s, now)) else None


class And(_Binary):
    """`a and on(labels) b`: a's value where b holds too."""

    word = "and"

    def holds(self, b: float | None) -> bool:
        return b is not None


@dataclass(frozen=True)
class Or(Expr):
    """`a or b or ...`: the first that holds (each condition is about one series)."""

    parts: tuple[Expr, ...]

    def promql(self) -> str:
        return "\n  or\n".join(p.promql() for p in self.parts)

    def value(self, s: Samples, now: float) -> float | None:
        for p in self.parts:
            v = p.value(s, now)
            if v is not None:
                return v
        return None


class Unless(_Binary):
    """`a unless on(labels) b`: a's value where b has no series."""

    word = "unless"

    def holds(self, b: float | None) -> bool:
        return b is None
