"""The alerts, defined once as data: what each alert means, when it fires, its texts and its tests.

Every alert is a plain record (`alert`, `expr`, `for`, `labels`, `annotations`) built by one
function per kind; the runbook link is added in one place (`_with_runbook`). An alert's
condition is data (`cond`, a `monitor.spec` expression): it renders the rule's PromQL and is what
the built-in notifier (`monitor.notify`) evaluates, so the two cannot disagree. Each alert also
carries a `Case`: input series that make it fire and then resolve, from which the promtool unit
tests are written, and a runbook entry (`what_to_do`). Thresholds come from the config's `defaults`.
The file generators (`monitor.alerts`), the notifier and the runbook read this module.

The monitor's series are read as Prometheus stores them when it scrapes the monitor under the job
`monitor` with `honor_labels: true` (the monitor's own `job` label, `goal:<name>`, is kept), or a
Pushgateway fed by `monitor run-once --push` (the same series, see `monitor.batch`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


from . import conventions as n
from . import spec
from .config import Config, Goal, Model, RelativeBound
from .conventions import SCRAPE_JOB, SCRAPE_TARGET, sel
from .durations import format_duration
from .formatting import fmt_number, go_duration, go_g, go_percent, go_raw, go_timestamp, in_words
from .spec import Age, And, Cmp, Expr, Or, Samples, Sel, Sub, Unless, review_url

RUNBOOK_FILE = "alerts/RUNBOOK.md"  # the runbook link when `urls.runbook` is not set


class Fmt:
    """Renders the parts of an annotation that depend on the data: Go templates, or concrete values.

    Concrete values come from a test case (promtool's expected annotations) or from the notifier.
    """

    def __init__(self, value: float | None = None, timestamps=None, concrete: bool = False):
        self.concrete = concrete
        self.v = value
        self.timestamps = timestamps if timestamps is not None else {}

    @classmethod
    def of(cls, value: float | None, timestamps) -> Fmt:
        """Concrete values: the alert's value and a mapping selector -> timestamp."""
        return cls(value, timestamps, concrete=True)

    def value(self, how: str, unit: str = "") -> str:
        """The alert's value: `number` (%.4g and a unit), `percent`, `duration` or `raw`."""
        if not self.concrete:
            return {"percent": "{{ $value | humanizePercentage }}",
                    "duration": "{{ $value | humanizeDuration }}",
                    "starvation": ("{{ if lt $value 1.0 }}{{ $value | humanizePercentage }} of the predictions labelled"
                                   "{{ else }}no labelled window for {{ $value | humanizeDuration }}{{ end }}"),
                    "raw": "{{ $value }}"}.get(how) or ("{{ printf \"%.4g\" $value }}" + (f" {unit}" if unit else ""))
        v = self.v
        if v is None:
            return ""
        if how == "percent":
            return go_percent(v)
        if how == "duration":
            return go_duration(v)
        if how == "starvation":
            return f"{go_percent(v)} of the predictions labelled" if v < 1 else f"no labelled window for {go_duration(v)}"
        if how == "raw":
            return go_raw(v)
        return f"{go_g(v)} {unit}".rstrip()

    def timestamp(self, selector: str) -> str:
        """The value of a timestamp series, humanized; empty when there is none."""
        if not self.concrete:
            q = selector.replace('"', "'")
            return '{{ with query "' + q + '" }}{{ . | first | value | humanizeTimestamp }}{{ end }}'
        ts = self.timestamps.get(selector)
        return "" if ts is None else go_timestamp(ts)


# --- alerts as records --------------------------------------------------------------------------

@dataclass
class Case:
    """Input series for a promtool test: good, then bad (the alert fires), then good again (it resolves)."""

    series: dict[str, str]              # series selector -> promtool values notation
    interval: str = "1m"
    quiet: str = "5m"                   # an eval time where the alert is not firing
    firing: str = "15m"                 # an eval time where it fires, with `value`
    resolved: str = "25m"               # an eval time after it resolved
    value: float = 0.0                  # the alert's value at `firing`
    labels: dict[str, str] = field(default_factory=dict)      # labels the expression keeps
    timestamps: dict[str, float] = field(default_factory=dict)  # selector -> value at `firing`


@dataclass
class Alert:
    """One alerting rule, the notifier's view of it, and its test case."""

    alert: str
    cond: Expr                          # the condition: it renders the rule's PromQL and evaluates in the notifier
    for_: timedelta
    labels: dict[str, str]
    annotations: Callable[[Fmt], dict[str, str]]
    case: Case
    group: str
    kind: str
    subject: dict[str, str] = field(default_factory=dict)  # goal or model
    extra_cases: list[Case] = field(default_factory=list)
    runbook: str = ""  # the runbook's absolute URL (set by all_alerts from the config)

    @property
    def expr(self) -> str:
        return self.cond.promql()

    def value(self, samples: Samples, now: float) -> float | None:
        """The alert's value over exported samples at `now` when its condition holds, else None."""
        return self.cond.value(samples, now)

    def record(self, fmt: Fmt | None = None) -> dict:
        """The plain rule record, as it goes into the rules file."""
        return _with_runbook(self.runbook, {
            "alert": self.alert,
            "expr": self.expr,
            "for": format_duration(self.for_) if self.for_ else "0s",
            "labels": dict(self.labels),
            "annotations": self.annotations(fmt or Fmt()),
        })


def anchor(alert: str) -> str:
    """The runbook anchor of an alert (GitHub's heading slug)."""
    return alert.lower()


def _with_runbook(base: str, record: dict) -> dict:
    """The one place the runbook link is added: `urls.runbook` (else the app's runbook page) and the alert's anchor."""
    record["annotations"]["runbook_url"] = f"{base or RUNBOOK_FILE}#{anchor(record['alert'])}"
    return record


class _Timestamps:
    def __init__(self, samples: Samples):
        self.samples = samples

    def get(self, selector: str):
        return self.samples.timestamp(selector)


def notifier_fmt(samples: Samples, value: float | None) -> Fmt:
    """Concrete annotations for the notifier, timestamps read from the samples."""
    return Fmt.of(value, _Timestamps(samples))


def _secs(td: timedelta) -> int:
    return int(td.total_seconds())


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def _goal_base(cfg: Config, g: Goal, kind: str, severity: str) -> dict[str, str]:
    return {"severity": severity, "goal": g.name, "owner": g.owner or "unowned", "kind": kind}


def _model_base(m: Model, kind: str, severity: str = "ticket") -> dict[str, str]:
    return {"severity": severity, "model": m.name, "owner": m.owner or "unowned", "kind": kind}


def direction(g: Goal) -> str:
    return "at most" if g.direction == "at_most" else "at least"


def _bad(g: Goal, scale: float = 3.0) -> float:
    """A value that misses the goal's target clearly (for the tests)."""
    t = g.target
    if g.direction == "at_most":
        return round(t * scale, 6) if t > 0 else 1.0
    return round(t / scale, 6) if t > 0 else -1.0


def _good(g: Goal) -> float:
    t = g.target
    if g.direction == "at_most":
        return round(t / 2, 6) if t > 0 else t - 1
    return round(t * 1.5, 6) if t > 0 else t + 1


WINDOW_END_AT_FIRING = 1_788_220_800.0  # 2026-09-01, the window end the tests' series carry


def goal_alerts(cfg: Config, g: Goal) -> list[Alert]:
    """Breach, fast and slow burn (rate goals), at risk, stale."""
    C = n.camel(g.name)
    title = g.title or g.name
    target = f"{direction(g)} {fmt_number(g.target, g.unit)}"
    win = format_duration(g.window)
    end_sel = sel(n.GOAL_WINDOW_END, goal=g.name)
    url = review_url(cfg, goal=g.name)
    ts = {end_sel: WINDOW_END_AT_FIRING}
    end_series = {end_sel: f"{WINDOW_END_AT_FIRING:.0f}x30"}

    def common(f: Fmt, value: str) -> dict[str, str]:
        return {"title": title, "value": value, "target": target,
                "window": f"{win} ending {f.timestamp(end_sel)}", "review_url": url}

    def burn_ann(b: spec.Burn, speed: str, threshold: float, how: str):
        """A burn alert's annotations: `how` says what the rate did over `b`'s look-back."""
        def annotations(f: Fmt):
            v = f.value("number")
            return {"summary": (f"{title} {how.format(v=v, last=b.words[0])} ({speed}-burn threshold "
                                f"{go_g(threshold)}x: {go_percent(b.budget)} of the period's budget in {b.words[1]})."),
                    "description": f"Target {target}. Owner: {g.owner or 'unowned'}.", **common(f, v)}
        return annotations

    out = []
    bad, good = _bad(g), _good(g)
    value_how = "percent" if g.unit.lower() == "ratio" else "number"

    def breach(f: Fmt):
        v = f.value(value_how, g.unit if value_how == "number" else "")
        return {"summary": f"{title}: {v} in the {win} window ending {f.timestamp(end_sel)}, target {target}.",
                "description": (g.why + " " if g.why else "") + f"Owner: {g.owner or 'unowned'}.",
                **common(f, v)}

    out.append(Alert(
        alert=f"{C}Breached", kind="breach", group="monitor-goals", subject={"goal": g.name},
        cond=And(Sel.of(n.GOAL_VALUE, goal=g.name), Cmp(Sel.of(n.GOAL_STATUS, goal=g.name, status="missed"), "==", 1),
                 on=("goal",)),
        for_=timedelta(0), labels=_goal_base(cfg, g, "breach", g.severity), annotations=breach,
        case=Case(series={sel(n.GOAL_VALUE, goal=g.name): f"{good}x9 {bad}x9 {good}x9",
                          sel(n.GOAL_STATUS, goal=g.name, status="missed"): "0x9 1x9 0x9", **end_series},
                  value=bad, labels={"goal": g.name}, timestamps=ts)))

    if spec.has_budget(g):
        thr = spec.burn_thresholds(cfg, g)
        fb, sb = spec.burns(cfg.defaults)
        if g.window <= fb.span:
            fast = thr[fb.label]
            fast_ann = burn_ann(fb, "fast", fast, "is burning its error budget {v}x as fast as the target allows over the last {last}")

            s = sel(n.GOAL_BURN_RATE, goal=g.name, window=fb.label)
            out.append(Alert(
                alert=f"{C}ErrorBudgetFastBurn", kind="fast_burn", group="monitor-goals", subject={"goal": g.name},
                cond=Cmp(Sel.of(n.GOAL_BURN_RATE, goal=g.name, window=fb.label), ">", fast), for_=timedelta(0),
                labels=_goal_base(cfg, g, "fast_burn", g.severity), annotations=fast_ann,
                case=Case(series={s: f"0.5x9 {fast * 2:g}x9 0.5x9", **end_series}, value=fast * 2,
                          labels={"goal": g.name, "window": fb.label}, timestamps=ts)))
        if g.window <= sb.span:
            slow = thr[sb.label]
            slow_ann = burn_ann(sb, "slow", slow, ("has burnt its error budget {v}x as fast as the target allows over the "
                                           "last {last}, and still does"))

            # the slow look-back over the threshold, and the fast one still over it (it has not stopped)
            s_slow = sel(n.GOAL_BURN_RATE, goal=g.name, window=sb.label)
            s_fast = sel(n.GOAL_BURN_RATE, goal=g.name, window=fb.label)
            out.append(Alert(
                alert=f"{C}ErrorBudgetSlowBurn", kind="slow_burn", group="monitor-goals", subject={"goal": g.name},
                cond=And(Cmp(Sel.of(n.GOAL_BURN_RATE, goal=g.name, window=sb.label), ">", slow),
                         Cmp(Sel.of(n.GOAL_BURN_RATE, goal=g.name, window=fb.label), ">", slow), on=("goal",)),
                for_=timedelta(0), labels=_goal_base(cfg, g, "slow_burn", "ticket"), annotations=slow_ann,
                case=Case(series={s_slow: f"0.5x9 {slow * 2:g}x9 {slow * 2:g}x9",
                                  s_fast: f"0.5x9 {slow * 2:g}x9 0.5x9", **end_series},
                          value=slow * 2, labels={"goal": g.name, "window": sb.label}, timestamps=ts)))

    if g.deadline:
        deadline = g.deadline.date().isoformat()

        def risk(f: Fmt):
            v = f.value(value_how, g.unit if value_how == "number" else "")
            return {"summary": f"{title} is projected at {v} by its deadline {deadline}, missing its target {target}.",
                    "description": "The trend of its recent windows misses the target at the deadline. "
                                   f"Owner: {g.owner or 'unowned'}.", **common(f, v)}

        out.append(Alert(
            alert=f"{C}AtRisk", kind="at_risk", group="monitor-goals", subject={"goal": g.name},
            cond=And(Sel.of(n.GOAL_PROJECTED, goal=g.name),
                     Cmp(Sel.of(n.GOAL_TRAJECTORY, goal=g.name, trajectory="off_track"), "==", 1), on=("goal",)),
            for_=timedelta(0), labels=_goal_base(cfg, g, "at_risk", "ticket"), annotations=risk,
            case=Case(series={sel(n.GOAL_PROJECTED, goal=g.name): f"{good}x9 {bad}x9 {good}x9",
                              sel(n.GOAL_TRAJECTORY, goal=g.name, trajectory="off_track"): "0x9 1x9 0x9", **end_series},
                      value=bad, labels={"goal": g.name}, timestamps=ts)))

    def no_data(f: Fmt):
        return {"summary": f"{title}: the {win} window ending {f.timestamp(end_sel)} has no rows at all.",
                "description": "The source tables behind the goal stopped filling (an outage upstream), or the goal's SQL "
                               f"no longer matches them. Owner: {g.owner or 'unowned'}.", **common(f, "no data")}

    nd = sel(n.GOAL_STATUS, goal=g.name, status="no_data")
    out.append(Alert(
        alert=f"{C}NoData", kind="no_data", group="monitor-goals", subject={"goal": g.name},
        cond=Cmp(Sel.of(n.GOAL_STATUS, goal=g.name, status="no_data"), "==", 1), for_=timedelta(0),
        labels=_goal_base(cfg, g, "no_data", g.severity), annotations=no_data,
        case=Case(series={nd: "0x9 1x9 0x9", **end_series}, value=1.0,
                  labels={"goal": g.name, "status": "no_data"}, timestamps=ts)))

    after = spec.stale_after(cfg, g)

    def stale(f: Fmt):
        v = f.value("duration")
        return {"summary": f"{title} has no new {win} window: the latest ended {v} ago (expected within {format_duration(after)}).",
                "description": "Its job is failing, the monitor is not running, or the source table stopped filling.",
                **common(f, "")} | {"value": v}

    # The window end jumps into the past (stale) and then keeps up with the clock again.
    old = -(_secs(after) + 3600)
    case_stale = Case(series={end_sel: f"0x9 {old}x29 2400+60x20"}, quiet="5m", firing="35m", resolved="45m",
                      value=35 * 60 - old, labels={"goal": g.name}, timestamps={end_sel: float(old)})
    out.append(Alert(
        alert=f"{C}Stale", kind="stale", group="monitor-goals", subject={"goal": g.name},
        cond=Cmp(Age(Sel.of(n.GOAL_WINDOW_END, goal=g.name)), ">", _secs(after)), for_=cfg.defaults.stale_for,
        labels=_goal_base(cfg, g, "stale", "ticket"), annotations=stale, case=case_stale))
    return out


def _quality_annotations(m: Model, metric: str, lim_text: str, end_sel: str, url: str, win: str, *,
                         estimated: bool = False, tail: str = "", why: str = ""):
    """The annotations of every quality floor or ceiling: realized or estimated; fixed, learned or relative.
    `tail` ends the summary (by default `should be <lim_text>`), `why` opens the description."""
    tail = tail or f"should be {lim_text}"
    trust = (f"An estimate from the scores, before the labels arrive (see {n.MODEL_ESTIMATION_ERROR} for how far "
             "to trust it). " if estimated else "")

    def annotations(f: Fmt):
        v = f.value("number")
        what = (f"estimated {metric} is {v} in the latest window still waiting for its labels" if estimated else
                f"{metric} is {v} in the latest window with mature labels")
        return {"summary": f"{m.name}: {what} (ending {f.timestamp(end_sel)}), {tail}.",
                "description": f"{trust}{why}Owner: {m.owner or 'unowned'}.",
                **_model_common(m, url, f"{v} (estimated)" if estimated else v, lim_text, f"{win} ending {f.timestamp(end_sel)}")}
    return annotations


def _relative_quality_alerts(m: Model, metric: str, floor, win: str, qend_sel: str, url: str) -> list[Alert]:
    """A floor relative to the registered version's validation metric: the threshold is exported
    beside the metric (it moves with each promoted version), and the rule compares the two."""
    out = []
    for bound, rel in (("min", floor.min), ("max", floor.max)):
        if not isinstance(rel, RelativeBound):
            continue
        word, opq = ("BelowFloor", "<") if bound == "min" else ("AboveCeiling", ">")
        gap = rel.below_validation if bound == "min" else rel.above_validation
        lim_text = f"{'at least' if bound == 'min' else 'at most'} the validation {metric} {'-' if bound == 'min' else '+'} {go_g(gap)}"

        quality = _quality_annotations(m, metric, lim_text, qend_sel, url, win,
                                       why=("Offline quality crossed the floor set from the registered version's "
                                            f"validation metric (MLflow {m.mlflow.name}@{m.mlflow.alias}). "))

        sq = sel(n.MODEL_QUALITY, model=m.name, metric=metric)
        st = sel(n.MODEL_QUALITY_THRESHOLD, model=m.name, metric=metric, bound=bound)
        bad, good = (0.7, 0.9) if bound == "min" else (0.9, 0.7)
        out.append(Alert(
            alert=f"{n.camel(m.name)}{n.camel(metric)}{word}", kind="quality", group="monitor-models",
            subject={"model": m.name, "metric": metric},
            cond=Cmp(Sel.of(n.MODEL_QUALITY, model=m.name, metric=metric), opq,
                     Sel.of(n.MODEL_QUALITY_THRESHOLD, model=m.name, metric=metric, bound=bound), on=("model", "metric")),
            for_=timedelta(0), labels=_model_base(m, "quality"), annotations=quality,
            case=Case(series={sq: f"{good:g}x9 {bad:g}x9 {good:g}x9", st: "0.8x30", qend_sel: f"{WINDOW_END_AT_FIRING:.0f}x30"},
                      value=bad, labels={"model": m.name, "metric": metric}, timestamps={qend_sel: WINDOW_END_AT_FIRING})))
    return out


def model_alerts(cfg: Config, m: Model) -> list[Alert]:
    """Drift, quality floors, label starvation."""
    C = n.camel(m.name)
    end_sel = sel(n.MODEL_WINDOW_END, model=m.name)
    qend_sel = sel(n.MODEL_QUALITY_WINDOW_END, model=m.name)
    url = review_url(cfg, model=m.name)
    win = format_duration(m.window)
    out = []
    thr = m.drift.dataset_share
    op = ">=" if thr > 0 else ">"

    def drift(f: Fmt):
        v = f.value("percent")
        return {"summary": (f"{m.name}: {v} of its features drifted in the {win} window ending "
                            f"{f.timestamp(end_sel)} (dataset drift from {go_percent(thr)})."),
                "description": f"Owner: {m.owner or 'unowned'}. See which features in the Model health dashboard.",
                **_model_common(m, url, v, f"below {go_percent(thr)}", f"{win} ending {f.timestamp(end_sel)}")}

    s = sel(n.DATASET_DRIFT_SHARE, model=m.name)
    hi = min(1.0, max(thr, 0.01) * 1.5) if thr < 1 else 1.0
    out.append(Alert(
        alert=f"{C}DataDrift", kind="drift", group="monitor-models", subject={"model": m.name},
        cond=Cmp(Sel.of(n.DATASET_DRIFT_SHARE, model=m.name), op, thr), for_=timedelta(0),
        labels=_model_base(m, "drift"), annotations=drift,
        case=Case(series={s: f"0x9 {hi:g}x9 0x9", end_sel: f"{WINDOW_END_AT_FIRING:.0f}x30"}, value=hi,
                  labels={"model": m.name}, timestamps={end_sel: WINDOW_END_AT_FIRING})))

    out += drift_alerts(cfg, m) + pipeline_alerts(cfg, m)
    if m.drift.multivariate.enabled and len(m.source.features.numeric) >= 2:
        out.append(_multivariate_alert(m, C, end_sel, url, win))

    for metric, floor in m.quality.items():
        for bound, limit in (("min", floor.fixed_min), ("max", floor.fixed_max)):
            if limit is None:
                continue
            if not isinstance(limit, (int, float)):  # {sd: N}: the bound is learned, and exported
                out.append(_learned_quality_alert(m, C, metric, bound, limit.sd, qend_sel, url, win))
                if m.labels is not None and metric in n.ESTIMATED_METRICS.get(m.task, ()):
                    out.append(_learned_quality_alert(m, C, metric, bound, limit.sd, end_sel, url, win, estimated=True))
                continue
            word = "BelowFloor" if bound == "min" else "AboveCeiling"
            opq, bad = ("<", limit * 0.8 if limit else -1.0) if bound == "min" else (">", limit * 1.25 if limit else 1.0)
            good = limit * 1.05 if bound == "min" else limit * 0.8
            bad, good = round(bad, 6), round(good, 6)
            lim_text = f"{'at least' if bound == 'min' else 'at most'} {go_g(limit)}"

            quality = _quality_annotations(m, metric, lim_text, qend_sel, url, win,
                                           why="Offline quality below its floor in the config. ")

            def floor_alert(name: str, kind: str, series: str, end: str, annotations, metric=metric, limit=limit,
                            bound=bound, opq=opq, good=good, bad=bad) -> Alert:
                """A quality metric (realized or estimated) past its fixed floor or ceiling."""
                sq = sel(series, model=m.name, metric=metric)
                return Alert(
                    alert=name, kind=kind, group="monitor-models", subject={"model": m.name, "metric": metric},
                    cond=Cmp(Sel.of(series, model=m.name, metric=metric), opq, float(limit)), for_=timedelta(0),
                    labels=_model_base(m, kind), annotations=annotations,
                    case=Case(series={sq: f"{good:g}x9 {bad:g}x9 {good:g}x9", end: f"{WINDOW_END_AT_FIRING:.0f}x30"},
                              value=bad, labels={"model": m.name, "metric": metric},
                              timestamps={end: WINDOW_END_AT_FIRING}))

            out.append(floor_alert(f"{C}{n.camel(metric)}{word}", "quality", n.MODEL_QUALITY, qend_sel, quality))

            if m.labels is None or metric not in n.ESTIMATED_METRICS.get(m.task, ()):
                continue
            if m.task == "multiclass_classification" and not m.source.class_scores:
                continue  # estimated from the class scores only

            estimated = _quality_annotations(m, metric, lim_text, end_sel, url, win, estimated=True)

            out.append(floor_alert(f"{C}{n.camel(metric)}Estimated{word}", "quality_estimated",
                                   n.MODEL_QUALITY_ESTIMATED, end_sel, estimated))

    for metric, floor in m.quality.items():
        out += _relative_quality_alerts(m, metric, floor, win, qend_sel, url)

    if m.labels is not None:
        after = _secs(spec.starvation_after(cfg, m))
        start = int(_ts(m.start))

        def starving(f: Fmt):
            v = f.value("starvation")
            return {"summary": (f"{m.name} is starved of labels: {v} (expected: a window with mature labels within "
                                f"{format_duration(spec.starvation_after(cfg, m))}, labels for at least "
                                f"{go_percent(cfg.defaults.label_coverage_min)} of its predictions)."),
                    "description": (f"Labels from {m.labels.table} stopped arriving, or arrive later than "
                                    f"max_delay {format_duration(m.labels.max_delay)}. Quality is not being judged."),
                    **_model_common(m, url, v, f"labels within {format_duration(m.labels.max_delay)}", win)}

        # The latest judged window has (almost) no labels; or it is too old; or there is none for too long.
        cov_sel = sel(n.MODEL_LABEL_COVERAGE, model=m.name)
        qend = Sel.of(n.MODEL_QUALITY_WINDOW_END, model=m.name)
        cond = Or((Cmp(Sel.of(n.MODEL_LABEL_COVERAGE, model=m.name), "<", cfg.defaults.label_coverage_min),
                   Cmp(Age(qend), ">", after),
                   Unless(Cmp(Sub(Sel.of(n.MODEL_WINDOW_END, model=m.name), start), ">", after, paren=True), qend,
                          on=("model",))))
        old = -(after + 3600)
        out.append(Alert(
            alert=f"{C}LabelStarvation", kind="label_starvation", group="monitor-models", subject={"model": m.name},
            cond=cond, for_=timedelta(0), labels=_model_base(m, "label_starvation"), annotations=starving,
            case=Case(series={qend_sel: f"0x9 {old}x9 1200+60x20"}, value=15 * 60 - old,
                      labels={"model": m.name}),
            extra_cases=[Case(series={cov_sel: "0.9x9 0x9 0.9x9", qend_sel: "0+60x30"}, value=0.0,
                              labels={"model": m.name})]))
    return out


def _learned_quality_alert(m: Model, C: str, metric: str, bound: str, sd: float, qend_sel: str, url: str,
                           win: str, estimated: bool = False) -> Alert:
    """A floor or ceiling learned from the reference's windows: compared with its exported value.
    `estimated`: the estimate of the latest window still waiting for labels (`qend_sel` its end)."""
    word = ("Estimated" if estimated else "") + ("BelowFloor" if bound == "min" else "AboveCeiling")
    series = n.MODEL_QUALITY_ESTIMATED if estimated else n.MODEL_QUALITY
    sq = sel(series, model=m.name, metric=metric)
    st = sel(n.MODEL_QUALITY_THRESHOLD, model=m.name, metric=metric, bound=bound)
    op = "<" if bound == "min" else ">"
    side = "below" if bound == "min" else "above"
    lim_text = (f"{'at least' if bound == 'min' else 'at most'} the reference windows' mean "
                f"{'minus' if bound == 'min' else 'plus'} {sd:g} standard deviations")

    annotations = _quality_annotations(m, metric, lim_text, qend_sel, url, win, estimated=estimated,
                                       tail=f"{side} its band learned from the reference",
                                       why=f"Should be {lim_text} (`{n.MODEL_QUALITY_THRESHOLD}`). ")

    good, bad = (0.9, 0.5) if bound == "min" else (0.5, 0.9)
    kind = "quality_estimated" if estimated else "quality"
    return Alert(
        alert=f"{C}{n.camel(metric)}{word}", kind=kind, group="monitor-models",
        subject={"model": m.name, "metric": metric},
        cond=Cmp(Sel.of(series, model=m.name, metric=metric), op,
                 Sel.of(n.MODEL_QUALITY_THRESHOLD, model=m.name, metric=metric, bound=bound), on=("model", "metric")),
        for_=timedelta(0), labels=_model_base(m, kind), annotations=annotations,
        case=Case(series={sq: f"{good:g}x9 {bad:g}x9 {good:g}x9", st: "0.7x30", qend_sel: f"{WINDOW_END_AT_FIRING:.0f}x30"},
                  value=bad, labels={"model": m.name, "metric": metric}, timestamps={qend_sel: WINDOW_END_AT_FIRING}))


def _multivariate_alert(m: Model, C: str, end_sel: str, url: str, win: str) -> Alert:
    """The numeric features as a whole drifted: the reconstruction error crossed its threshold."""
    score = sel(n.MULTIVARIATE_DRIFT_SCORE, model=m.name)
    thr = sel(n.MULTIVARIATE_DRIFT_THRESHOLD, model=m.name)

    def annotations(f: Fmt):
        v = f.value("number")
        return {"summary": (f"{m.name}: its numeric features drifted as a whole in the {win} window ending "
                            f"{f.timestamp(end_sel)} (PCA reconstruction error {v}, above its threshold)."),
                "description": (f"Owner: {m.owner or 'unowned'}. The features' joint distribution moved (for example "
                                "a correlation), even where no feature drifted on its own."),
                **_model_common(m, url, v, "below the threshold learned from the reference",
                                f"{win} ending {f.timestamp(end_sel)}")}

    return Alert(
        alert=f"{C}MultivariateDrift", kind="multivariate_drift", group="monitor-models", subject={"model": m.name},
        cond=Cmp(Sel.of(n.MULTIVARIATE_DRIFT_SCORE, model=m.name), ">", Sel.of(n.MULTIVARIATE_DRIFT_THRESHOLD, model=m.name),
                 on=("model",)),
        for_=timedelta(0), labels=_model_base(m, "multivariate_drift"), annotations=annotations,
        case=Case(series={score: "1.5x9 4.5x9 1.5x9", thr: "2.5x30", end_sel: f"{WINDOW_END_AT_FIRING:.0f}x30"},
                  value=4.5, labels={"model": m.name}, timestamps={end_sel: WINDOW_END_AT_FIRING}))


def _model_common(m: Model, url: str, value: str, target: str, window: str) -> dict[str, str]:
    """The annotations every model alert carries besides its summary and description."""
    return {"title": m.name, "value": value, "target": target, "window": window, "review_url": url}


def drift_alerts(cfg: Config, m: Model) -> list[Alert]:
    """Drift of the score (prediction drift), and of each feature listed in `drift.alert_features`."""
    C = n.camel(m.name)
    url = review_url(cfg, model=m.name)
    end_sel = sel(n.MODEL_WINDOW_END, model=m.name)
    win = format_duration(m.window)
    end_series = {end_sel: f"{WINDOW_END_AT_FIRING:.0f}x30"}
    out = []

    def pred(f: Fmt):
        v = f.value("number")
        return {"summary": (f"{m.name}: its scores drifted in the {win} window ending {f.timestamp(end_sel)} "
                            f"(drift score {v} against the reference, beyond its threshold)."),
                "description": ("The model's output moved: its inputs changed, or the population it scores did. "
                                f"Owner: {m.owner or 'unowned'}. See the Model health dashboard."),
                **_model_common(m, url, v, "no drift", f"{win} ending {f.timestamp(end_sel)}")}

    pd_ = sel(n.PREDICTION_DRIFT_DETECTED, model=m.name)
    out.append(Alert(
        alert=f"{C}PredictionDrift", kind="prediction_drift", group="monitor-models", subject={"model": m.name},
        cond=And(Sel.of(n.PREDICTION_DRIFT_SCORE, model=m.name), Cmp(Sel.of(n.PREDICTION_DRIFT_DETECTED, model=m.name), "==", 1),
                 on=("model",)),
        for_=timedelta(0), labels=_model_base(m, "prediction_drift"), annotations=pred,
        case=Case(series={sel(n.PREDICTION_DRIFT_SCORE, model=m.name, method="psi"): "0.01x9 0.4x9 0.01x9",
                          pd_: "0x9 1x9 0x9", **end_series},
                  value=0.4, labels={"model": m.name, "method": "psi"}, timestamps={end_sel: WINDOW_END_AT_FIRING})))

    for feature in m.drift.alert_features:
        def feat(f: Fmt, feature=feature):
            v = f.value("number")
            return {"summary": (f"{m.name}: its critical feature {feature} drifted in the {win} window ending "
                                f"{f.timestamp(end_sel)} (drift score {v}, beyond its threshold)."),
                    "description": (f"{feature} is listed in drift.alert_features: its drift alone matters. "
                                    f"Owner: {m.owner or 'unowned'}. Check the pipeline that fills it."),
                    **_model_common(m, url, v, "no drift", f"{win} ending {f.timestamp(end_sel)}")}

        fd = sel(n.FEATURE_DRIFT_DETECTED, model=m.name, feature=feature)
        out.append(Alert(
            alert=f"{C}FeatureDrift", kind="feature_drift", group="monitor-models",
            subject={"model": m.name, "feature": feature},
            cond=And(Sel.of(n.FEATURE_DRIFT_SCORE, model=m.name, feature=feature),
                     Cmp(Sel.of(n.FEATURE_DRIFT_DETECTED, model=m.name, feature=feature), "==", 1), on=("model", "feature")),
            for_=timedelta(0), labels=_model_base(m, "feature_drift"), annotations=feat,
            case=Case(series={sel(n.FEATURE_DRIFT_SCORE, model=m.name, feature=feature, method="wasserstein"): "0.02x9 0.7x9 0.02x9",
                              fd: "0x9 1x9 0x9", **end_series},
                      value=0.7, labels={"model": m.name, "feature": feature, "method": "wasserstein"},
                      timestamps={end_sel: WINDOW_END_AT_FIRING})))
    return out


def pipeline_alerts(cfg: Config, m: Model) -> list[Alert]:
    """A broken pipeline: the source stopped (stale), its volume dropped or surged, a data check fails."""
    C = n.camel(m.name)
    url = review_url(cfg, model=m.name)
    win = format_duration(m.window)
    end_sel = sel(n.MODEL_WINDOW_END, model=m.name)
    newest_sel = sel(n.MODEL_NEWEST_ROW, model=m.name)
    out = []
    after = _secs(spec.source_stale_after(cfg, m))

    def stale(f: Fmt):
        v = f.value("duration")
        return {"summary": (f"{m.name}: the newest row of {m.source.table} is {v} old "
                            f"(expected within {format_duration(spec.source_stale_after(cfg, m))})."),
                "description": (f"The prediction log {m.source.table} stopped filling, or the monitor stopped "
                                "computing its windows (see MonitorJobFailing)."),
                **_model_common(m, url, v, f"a row within {format_duration(spec.source_stale_after(cfg, m))}", win)}

    old = -(after + 3600)
    out.append(Alert(
        alert=f"{C}SourceStale", kind="source_stale", group="monitor-models", subject={"model": m.name},
        cond=Cmp(Age(Sel.of(n.MODEL_NEWEST_ROW, model=m.name)), ">", after), for_=cfg.defaults.stale_for,
        labels=_model_base(m, "source_stale"), annotations=stale,
        case=Case(series={newest_sel: f"0x9 {old}x29 2400+60x20"}, quiet="5m", firing="35m", resolved="45m",
                  value=35 * 60 - old, labels={"model": m.name})))

    vs = sel(n.MODEL_VOLUME_RATIO, model=m.name)
    drop, surge = cfg.defaults.volume_drop, cfg.defaults.volume_surge
    for word, op, limit, bad in (("Drop", "<", drop, 0.1), ("Surge", ">", surge, 5.0)):
        def volume(f: Fmt, word=word, op=op, limit=limit):
            v = f.value("percent")
            return {"summary": (f"{m.name}: its {win} window ending {f.timestamp(end_sel)} has {v} of the rows of "
                                f"comparable windows (a {word.lower()}: {op} {go_percent(limit)})."),
                    "description": ("Compared with the median of the same time of day on the 7 days before "
                                    "(windows under a day) or of the 7 windows before. A drop: an outage upstream or "
                                    "a filter gone wrong; a surge: duplicated rows or a replay."),
                    **_model_common(m, url, v, f"between {go_percent(drop)} and {go_percent(surge)}",
                                    f"{win} ending {f.timestamp(end_sel)}")}

        out.append(Alert(
            alert=f"{C}Volume{word}", kind=f"volume_{word.lower()}", group="monitor-models", subject={"model": m.name},
            cond=Cmp(Sel.of(n.MODEL_VOLUME_RATIO, model=m.name), op, limit), for_=timedelta(0),
            labels=_model_base(m, f"volume_{word.lower()}"), annotations=volume,
            case=Case(series={vs: f"1x9 {bad:g}x9 1x9", end_sel: f"{WINDOW_END_AT_FIRING:.0f}x30"}, value=bad,
                      labels={"model": m.name}, timestamps={end_sel: WINDOW_END_AT_FIRING})))

    for check in n.DATA_CHECKS:
        def failing(f: Fmt, check=check):
            return {"summary": (f"{m.name}: the {check} check fails in the {win} window ending {f.timestamp(end_sel)}: "
                                f"{n.DATA_CHECK_TEXT.get(check, 'invalid inputs')}."),
                    "description": ("Results computed from invalid inputs are withheld (quality_status invalid) or "
                                    "computed without the offending rows; see the model's page in the review app."),
                    **_model_common(m, url, "failing", "passing", f"{win} ending {f.timestamp(end_sel)}")}

        cs = sel(n.MODEL_DATA_CHECK_FAILED, model=m.name, check=check)
        out.append(Alert(
            alert=f"{C}DataCheckFailed", kind="data_check", group="monitor-models", subject={"model": m.name, "check": check},
            cond=Cmp(Sel.of(n.MODEL_DATA_CHECK_FAILED, model=m.name, check=check), "==", 1), for_=timedelta(0),
            labels=_model_base(m, "data_check"), annotations=failing,
            case=Case(series={cs: "0x9 1x9 0x9", end_sel: f"{WINDOW_END_AT_FIRING:.0f}x30"}, value=1.0,
                      labels={"model": m.name, "check": check}, timestamps={end_sel: WINDOW_END_AT_FIRING})))
    return out


def monitor_alerts(cfg: Config) -> list[Alert]:
    """The monitor's own: a job failing (one rule per goal and model, so each carries its owner), the exporter down."""
    out = []
    subjects = [(n.goal_job(g.name), {"goal": g.name}, g.owner) for g in cfg.goals] + \
               [(n.model_job(m.name), {"model": m.name}, m.owner) for m in cfg.models]
    for job, subject, owner in subjects:
        s = sel(n.JOB_LAST_STATUS, job=job)

        def failing(f: Fmt, job=job, subject=subject):
            what = ", ".join(f"{k} {v}" for k, v in subject.items())
            return {"summary": f"The monitor's job {job} ({what}) failed its last run; its windows are retried each cycle.",
                    "description": "Bad SQL, a source database down, or a timeout: the error is in monitor_job_runs and the logs.",
                    "title": job, "value": "failed", "target": "ok", "window": "", "review_url": review_url(cfg, **subject)}

        k = _secs(cfg.defaults.job_failing_for) // 60
        out.append(Alert(
            alert="MonitorJobFailing", kind="job_failing", group="monitor-self", subject=subject,
            cond=Cmp(Sel.of(n.JOB_LAST_STATUS, job=job), "==", 0), for_=cfg.defaults.job_failing_for,
            labels={"severity": "ticket", **subject, "owner": owner or "unowned", "kind": "job_failing"},
            annotations=failing,
            case=Case(series={s: f"1x9 0x{k + 19} 1x20"}, quiet="5m", firing=f"{10 + k + 5}m",
                      resolved=f"{10 + k + 25}m", value=0.0, labels={"job": job})))

    def down(f: Fmt):
        return {"summary": "Prometheus cannot scrape the monitor's /metrics: no goal or model alert can fire.",
                "description": "`monitor serve` is down, or its port is unreachable from Prometheus.",
                "title": "monitor exporter", "value": "down", "target": "up", "window": "",
                "review_url": review_url(cfg)}

    k = _secs(cfg.defaults.exporter_down_for) // 60
    out.append(Alert(
        alert="MonitorExporterDown", kind="exporter_down", group="monitor-self", subject={},
        cond=Cmp(Sel.of("up", job=SCRAPE_JOB), "==", 0), for_=cfg.defaults.exporter_down_for,
        labels={"severity": "page", "owner": "unowned", "kind": "exporter_down"}, annotations=down,
        case=Case(series={sel("up", job=SCRAPE_JOB, instance=SCRAPE_TARGET): f"1x9 0x{k + 14} 1x20"},
                  quiet="5m", firing=f"{10 + k + 5}m", resolved=f"{10 + k + 20}m", value=0.0,
                  labels={"job": SCRAPE_JOB, "instance": SCRAPE_TARGET})))
    return out


def all_alerts(cfg: Config) -> list[Alert]:
    """Every alert the config yields, in a stable order."""
    out = []
    for g in cfg.goals:
        out += goal_alerts(cfg, g)
    for m in cfg.models:
        out += model_alerts(cfg, m)
    out += monitor_alerts(cfg)
    for a in out:
        a.runbook = cfg.runbook_base
    return out



def _times(x: float) -> str:
    """2 -> `twice`, 3 -> `3 times`."""
    return "twice" if x == 2 else f"{x:g} times"


def _share(x: float) -> str:
    """0.5 -> `half`, 0.25 -> `25% of`."""
    return "half" if x == 0.5 else f"{go_percent(x)} of"


def what_to_do(cfg: Config) -> dict[str, tuple[str, list[str]]]:
    """What each kind of alert means and what to do, with the config's thresholds."""
    d = cfg.defaults
    fb, sb = spec.burns(d)
    one = "one " + fb.words[0] if fb.words[0] != fb.label else fb.label
    return {
        "breach": ("The latest window missed the target, beyond the 95 % interval of a rate.",
                   ["Open the review link: which segments moved, and since when?",
                    "Check the models behind the goal (drift, quality) in the Model health dashboard.",
                    "A provisional window (labels still arriving) may still change: see `monitor_goal_provisional`."]),
        "fast_burn": (f"Over the last {fb.words[0]} the goal spent its error budget fast: {go_percent(fb.budget)} of the whole "
                      f"period's budget in {one}.",
                      [f"Treat as an incident: find what changed in the last {fb.words[0]} (deploys, data, traffic).",
                       f"Compare the burn rate over {fb.label} and {sb.label} in the Goals dashboard."]),
        "slow_burn": (f"Over the last {sb.words[0]} the goal spent {go_percent(sb.budget)} of the period's budget, and the last "
                      f"{fb.words[0]} still burns above that pace.",
                      ["Plan work at the next weekly review; check the trajectory and the segments."]),
        "at_risk": ("The trend of the recent windows, projected to the deadline, misses the target.",
                    ["Bring it to the weekly review: is the plan still realistic, or must the target or deadline change?"]),
        "stale": (f"No new window has been stored for {_times(d.stale_factor)} the window size.",
                  ["Is `monitor serve` (or the cron of `monitor run-once`) running? See MonitorJobFailing and MonitorExporterDown.",
                   "Does the source table still receive rows? Run `monitor check --config FILE`."]),
        "drift": ("The share of drifted features in the latest window crossed the model's dataset drift threshold.",
                  ["See which features drifted in the Model health dashboard.",
                   "Check upstream data (schemas, pipelines, traffic mix) before retraining."]),
        "multivariate_drift": (("The numeric features drifted as a whole: the latest window's mean PCA reconstruction "
                                "error (standardised by the reference) is above its threshold, by default the reference "
                                "windows' mean plus 3 standard deviations."),
                               ["Compare the features' correlations in the window and the reference: a joint change "
                                "(a correlation that flipped, a mix of sources) moves no single feature.",
                                "Check upstream joins and pipelines that combine the features before retraining."]),
        "quality": ("Offline quality of the latest window with mature labels crossed its floor from the config.",
                    ["Check label coverage and drift of the same window; consider retraining or a rollback."]),
        "quality_estimated": (("Quality estimated from the scores, for the latest window whose labels have not matured, "
                               "crossed its floor from the config. It is an estimate: it assumes the scores are calibrated "
                               "as on the reference (or calibrated there), and it is replaced by the realized value once "
                               "the labels arrive."),
                              ["Check the estimate's interval (`monitor_model_quality_estimated_ci_low` / `_ci_high`) and "
                               "`monitor_model_estimation_error`: how far past estimates were from the truth.",
                               "Check drift of the same window: a moved score mix lowers the estimate; a changed relation "
                               "between inputs and outcomes is invisible to it.",
                               "Act early if the whole interval is below the floor; otherwise wait for the labels."]),
        "label_starvation": ((f"Labels stopped arriving: the latest window with mature labels has labels for under "
                              f"{go_percent(d.label_coverage_min)} of its predictions, or there has been no such window for "
                              f"max_delay plus {in_words(d.label_starvation_windows)} windows."),
                             ["Check the labels table and the pipeline that fills it.",
                              "If labels legitimately arrive later, raise labels.max_delay in the config."]),
        "job_failing": ("A job of the monitor failed its last run. Its windows are retried each cycle, in order.",
                        ["Read the error: `SELECT * FROM monitor_job_runs WHERE status = 'failed' ORDER BY id DESC`.",
                         "Run `monitor check --config FILE` to test every SQL file against the database."]),
        "no_data": ("The goal's latest window has no rows at all: the SQL returned no row, or no value over a zero denominator.",
                    ["Do the source tables behind the goal still receive rows? Check the models' SourceStale and VolumeDrop alerts.",
                     "Run `monitor check --config FILE`: it runs the goal's SQL on its latest due window."]),
        "prediction_drift": ("The model's scores in the latest window drifted from the reference beyond the method's threshold.",
                             ["See the score distribution and which features drifted in the Model health dashboard.",
                              "A shift in traffic mix moves scores too: compare segments before retraining."]),
        "feature_drift": ("A feature listed in `drift.alert_features` drifted in the latest window beyond its threshold.",
                          ["Check the pipeline that fills the feature (a unit change, a default value, a new category).",
                           "See its drift over the weeks in the Model health dashboard."]),
        "source_stale": (f"The newest row of the model's prediction log is older than {_times(d.source_stale_factor)} the "
                         "window size.",
                         ["Does the service still write its predictions? Query the newest row of the source table.",
                          "Is the monitor running (MonitorJobFailing, MonitorExporterDown)?"]),
        "volume_drop": ((f"The latest window has under {_share(d.volume_drop)} the rows of comparable windows (the median of the same time of "
                         "day on the 7 days before for windows under a day, else of the 7 windows before)."),
                        ["An outage or a partial load upstream: check the pipeline that writes the prediction log.",
                         "A planned change (traffic moved elsewhere)? Then expect it to clear within 7 windows."]),
        "volume_surge": (f"The latest window has over {_times(d.volume_surge)} the rows of comparable windows.",
                         ["Duplicated rows or a replay: look for repeated ids in the window.",
                          "A real surge (a campaign, a bot): check the data checks and the drift of the same window."]),
        "data_check": ("A validity check of the model's inputs fails in its latest window (the `check` label says which).",
                       ["Open the model's page in the review app: it names the check and the offending rows' count.",
                        "Quality computed from invalid inputs is withheld until the inputs are fixed and the window recomputed."]),
        "exporter_down": (f"Prometheus cannot scrape the monitor (scrape job `{SCRAPE_JOB}`): no other alert can fire.",
                          [f"Is `monitor serve` running and listening? `curl http://HOST:{n.PORT}/healthz`.",
                           f"Check the scrape config: job_name `{SCRAPE_JOB}`, `honor_labels: true`."]),
    }
