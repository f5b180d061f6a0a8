"""The exported view of the stored results: the monitor's metric families, read at scrape time; nothing is computed here.

The exporter serves them (`monitor.exporter`), batch mode pushes them, and the built-in notifier
evaluates the alerts' conditions over their samples.

Besides the stored values, a scrape only sums stored rows: the error budget of a rate goal (kind
`rate` or `segmented`: its SQL returns `numerator` and `denominator`). Its period runs from the baseline date (else the
goal's `start`) to the deadline (open-ended without one). Bad events are the numerator of an
at-most goal (denominator - numerator of an at-least goal); the target allows
`target * denominator` of them (`(1 - target) * denominator`). Budget spent is bad over allowed
since the period began; a burn rate is the same ratio over the windows of the last day or week
(the config's `defaults.fast_burn_window` and `slow_burn_window`) before the latest window's end (1 spends exactly the budget).

Pipeline health of a model: its data checks of the latest stored window (an empty window too:
an outage is when they matter), the newest source row over its stored windows, and the volume
ratio: rows of the latest window against the median of the 7 comparable windows before it (the
same time of day on the 7 days before for windows shorter than a day, else the 7 windows
before), exported once at least 3 of them are stored and their median is above zero.
"""
from __future__ import annotations

from datetime import datetime

from typing import Callable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)

from . import conventions as n
from . import spec
from .config import Config, Defaults, Goal
from .durations import format_duration
from .store import Store

Totals = Callable[[datetime | None, datetime | None], tuple[float, float]]


def error_budget(goal: Goal, totals: Totals, latest_end: datetime,
                 defaults: Defaults | None = None) -> tuple[float | None, dict[str, float]]:
    """Share of the period's budget spent, and burn rates by look-back.

    `totals(start, end)` sums numerators and denominators of the stored windows inside [start, end)
    (None: unbounded); the store does it in SQL, so a scrape reads sums, not series.
    """
    allowed = spec.allowed_share(goal)
    if allowed <= 0:
        return None, {}

    def ratio(num: float, den: float) -> float | None:
        bad = num if goal.direction == "at_most" else den - num
        return bad / (allowed * den) if den > 0 else None

    start, end = spec.budget_period(goal)
    spent = ratio(*totals(start, end))
    burn = {}
    for label, span in spec.burn_windows(goal, defaults).items():
        b = ratio(*totals(latest_end - span, None))
        if b is not None:
            burn[label] = b
    return spent, burn


def _ts(dt) -> float:
    return dt.timestamp()


def _num(x) -> float:
    return float("nan") if x is None else float(x)


class ResultsCollector:
    """Yields the monitor's metric families from the results store, for the subjects in the config."""

    def __init__(self, cfg: Config, store: Store):
        self.cfg = cfg
        self.store = store
        self.rate_goals = {g.name for g in cfg.goals if spec.has_budget(g)}

    def collect(self):
        yield from self.collect_goals()
        yield from self.collect_models()
        yield from self.collect_jobs()

    def collect_goals(self):
        goals = {g.name: g for g in self.cfg.goals}
        value = GaugeMetricFamily(n.GOAL_VALUE, "The goal's value in its latest window.", labels=["goal"])
        target = GaugeMetricFamily(n.GOAL_TARGET, "The goal's target.", labels=["goal", "direction"])
        met = GaugeMetricFamily(n.GOAL_MET, "1 when the latest value meets the target, else 0.", labels=["goal"])
        end = GaugeMetricFamily(n.GOAL_WINDOW_END, "End of the goal's latest window.", labels=["goal"])
        lo = GaugeMetricFamily(n.GOAL_CI_LOW, "Lower bound of the 95 % Wilson interval of the latest rate.", labels=["goal"])
        hi = GaugeMetricFamily(n.GOAL_CI_HIGH, "Upper bound of the 95 % Wilson interval of the latest rate.", labels=["goal"])
        status = GaugeMetricFamily(n.GOAL_STATUS, "1 for the latest window's status (met, missed, insufficient_data, no_data).", labels=["goal", "status"])
        prov = GaugeMetricFamily(n.GOAL_PROVISIONAL, "1 when the latest window is not yet mature.", labels=["goal"])
        review = GaugeMetricFamily(n.GOAL_REVIEW_VALUE, "The goal's value in its latest review (weekly) window.", labels=["goal", "window"])
        info = InfoMetricFamily(n.GOAL_INFO, "The goal's definition.", labels=["goal"])
        est = GaugeMetricFamily(n.GOAL_ESTIMATED_VALUE, "The latest window's value estimated from model scores "
                                "(by the goal's estimate SQL), while the window is provisional.", labels=["goal"])
        est_lo = GaugeMetricFamily(n.GOAL_ESTIMATED_CI_LOW, "Lower bound of the estimate's 95 % interval.", labels=["goal"])
        est_hi = GaugeMetricFamily(n.GOAL_ESTIMATED_CI_HIGH, "Upper bound of the estimate's 95 % interval.", labels=["goal"])
        est_status = GaugeMetricFamily(n.GOAL_ESTIMATED_STATUS, "1 for the estimate's expected status (expected_met, "
                                       "expected_missed, insufficient_data).", labels=["goal", "status"])
        est_err = GaugeMetricFamily(n.GOAL_ESTIMATION_ERROR, "Mean absolute error of the goal's estimates over its "
                                    f"latest {n.ESTIMATION_ERROR_WINDOWS} matured windows.", labels=["goal"])
        for g in self.cfg.goals:
            if g.estimate is not None:
                err = self.store.goal_estimation_error(g.name, int(g.window.total_seconds()), n.ESTIMATION_ERROR_WINDOWS)
                if err is not None:
                    est_err.add_metric([g.name], err)
        for g in self.cfg.goals:
            target.add_metric([g.name, g.direction], g.target)
            info.add_metric([g.name], {"title": g.title, "owner": g.owner, "unit": g.unit,
                                       "deadline": g.deadline.date().isoformat() if g.deadline else ""})
        latest_end = {}
        for r in self.store.latest_goal_results():
            latest_end[(r["goal"], r["size_seconds"])] = r["window_end"]
            g = goals.get(r["goal"])
            if g is None:
                continue
            if r["size_seconds"] == int(g.window.total_seconds()):
                value.add_metric([g.name], _num(r["value"]))
                met.add_metric([g.name], 1.0 if r["met"] else 0.0)
                end.add_metric([g.name], _ts(r["window_end"]))
                prov.add_metric([g.name], 1.0 if r["provisional"] else 0.0)
                for s in n.STATUS_CODES:
                    status.add_metric([g.name, s], 1.0 if r["status"] == s else 0.0)
                if r["ci_low"] is not None:
                    lo.add_metric([g.name], r["ci_low"])
                    hi.add_metric([g.name], r["ci_high"])
                e = self.store.goal_estimate(g.name, r["size_seconds"], r["window_start"]) if (
                    g.estimate is not None and r["provisional"]) else None
                if e is not None and e["value"] is not None:
                    est.add_metric([g.name], e["value"])
                    if e["ci_low"] is not None:
                        est_lo.add_metric([g.name], e["ci_low"])
                        est_hi.add_metric([g.name], e["ci_high"])
                    for s in n.ESTIMATED_STATUSES:
                        est_status.add_metric([g.name, s], 1.0 if e["status"] == s else 0.0)
            elif g.review and r["size_seconds"] == int(g.review.total_seconds()):
                review.add_metric([g.name, format_duration(g.review)], _num(r["value"]))
        planned = GaugeMetricFamily(n.GOAL_PLANNED, "Where the planned path from baseline to target stands now.", labels=["goal"])
        projected = GaugeMetricFamily(n.GOAL_PROJECTED, "The trend's projected value at the deadline.", labels=["goal"])
        traj = GaugeMetricFamily(n.GOAL_TRAJECTORY, "1 for the goal's trajectory (on_track, at_risk, off_track, unknown).", labels=["goal", "trajectory"])
        for t in self.store.latest_trajectories():
            if t["goal"] not in goals:
                continue
            if t["planned"] is not None:
                planned.add_metric([t["goal"]], t["planned"])
            if t["projected"] is not None:
                projected.add_metric([t["goal"]], t["projected"])
            for s in n.TRAJECTORY_CODES:
                traj.add_metric([t["goal"], s], 1.0 if t["status"] == s else 0.0)
        spent = GaugeMetricFamily(n.GOAL_BUDGET_SPENT, "Share of the period's error budget spent since the period began (rate goals).", labels=["goal"])
        burn = GaugeMetricFamily(n.GOAL_BURN_RATE, "Bad events over those the target allows, in the last day or week of windows (1 spends exactly the budget).", labels=["goal", "window"])
        for g in self.cfg.goals:
            if g.name not in self.rate_goals:
                continue
            size = int(g.window.total_seconds())
            latest = latest_end.get((g.name, size))
            if latest is None:
                continue
            share, rates = error_budget(g, lambda a, b, g=g, size=size: self.store.goal_totals(g.name, size, a, b), latest,
                                         self.cfg.defaults)
            if share is not None:
                spent.add_metric([g.name], share)
            for label, rate in rates.items():
                burn.add_metric([g.name, label], rate)
        yield from (value, target, met, end, lo, hi, status, prov, review, info, planned, projected, traj, spent, burn,
                    est, est_lo, est_hi, est_status, est_err)

    def collect_models(self):
        score = GaugeMetricFamily(n.FEATURE_DRIFT_SCORE, "Drift of one feature in the latest window against the reference.", labels=["model", "feature", "method"])
        detected = GaugeMetricFamily(n.FEATURE_DRIFT_DETECTED, "1 when the feature's drift score crosses its threshold.", labels=["model", "feature"])
        feature_thr = GaugeMetricFamily(n.FEATURE_DRIFT_THRESHOLD, "The threshold the feature's drift score is held to "
                                        "(fixed, the method's default, or learned from the reference).",
                                        labels=["model", "feature", "method"])
        share = GaugeMetricFamily(n.DATASET_DRIFT_SHARE, "Share of features drifted in the latest window.", labels=["model"])
        share_thr = GaugeMetricFamily(n.DATASET_DRIFT_THRESHOLD, "Share of drifted features that makes dataset drift.", labels=["model"])
        pred = GaugeMetricFamily(n.PREDICTION_DRIFT_SCORE, "Drift of the score column.", labels=["model", "method"])
        pred_detected = GaugeMetricFamily(n.PREDICTION_DRIFT_DETECTED, "1 when the score's drift crosses its threshold.",
                                          labels=["model"])
        online = GaugeMetricFamily(n.MODEL_ONLINE, "Label-free signals of the latest window.", labels=["model", "metric", "feature"])
        quality = GaugeMetricFamily(n.MODEL_QUALITY, "Offline quality of the latest window whose labels are mature.", labels=["model", "metric"])
        coverage = GaugeMetricFamily(n.MODEL_LABEL_COVERAGE, "Share of the quality window's predictions that got a label.", labels=["model"])
        pending = GaugeMetricFamily(n.MODEL_QUALITY_PENDING, "Windows whose labels have not matured yet.", labels=["model"])
        end = GaugeMetricFamily(n.MODEL_WINDOW_END, "End of the model's latest window with predictions.", labels=["model"])
        qend = GaugeMetricFamily(n.MODEL_QUALITY_WINDOW_END, "End of the model's latest window with mature labels.", labels=["model"])
        cm_est = GaugeMetricFamily(n.MODEL_CONFUSION_ESTIMATED, "Expected rows per cell of the confusion matrix of the "
                                   "latest window whose labels are not mature, from its scores; classes beyond max_segments pooled as other.",
                                   labels=["model", "actual", "predicted"])
        so_far = GaugeMetricFamily(n.MODEL_LABEL_COVERAGE_SO_FAR, "Share of the latest pending window's predictions "
                                   "labelled so far (its labels are not mature).", labels=["model"])
        est_end = GaugeMetricFamily(n.MODEL_ESTIMATED_WINDOW_END, "End of the window whose quality is exported as "
                                    "estimated (the latest whose labels are not mature).", labels=["model"])
        quality_thr = GaugeMetricFamily(n.MODEL_QUALITY_THRESHOLD, "The floor (bound=min) or ceiling (bound=max) the "
                                        "latest judged window's quality is held to, fixed or learned from the reference.",
                                        labels=["model", "metric", "bound"])
        klass = GaugeMetricFamily(n.MODEL_CLASS_QUALITY, "Per-class quality of a multiclass model in the latest window "
                                  "whose labels are mature (classes beyond max_segments are left out).",
                                  labels=["model", "class", "metric"])
        cm = GaugeMetricFamily(n.MODEL_CONFUSION, "Labelled predictions of the latest window whose labels are mature, "
                               "by true (actual) and predicted class; classes beyond max_segments pooled as other.",
                               labels=["model", "actual", "predicted"])
        mv_score = GaugeMetricFamily(n.MULTIVARIATE_DRIFT_SCORE, "Mean PCA reconstruction error of the numeric features "
                                     "in the latest window (standardised by the reference).", labels=["model"])
        mv_detected = GaugeMetricFamily(n.MULTIVARIATE_DRIFT_DETECTED, "1 when the reconstruction error crosses its threshold.",
                                        labels=["model"])
        mv_thr = GaugeMetricFamily(n.MULTIVARIATE_DRIFT_THRESHOLD, "The reconstruction error's threshold (fixed, or learned "
                                   "from the reference's windows).", labels=["model"])
        info = InfoMetricFamily(n.MODEL_INFO, "The model's definition.", labels=["model"])
        version = InfoMetricFamily(n.MODEL_VERSION_INFO, "The registered version behind the model (MLflow alias).", labels=["model"])
        validation = GaugeMetricFamily(n.MODEL_VALIDATION, "A metric the registered version's run logged.", labels=["model", "metric"])
        checks = GaugeMetricFamily(n.MODEL_DATA_CHECK_FAILED, "1 when a validity check fails in the latest window, 0 when it passes.",
                                   labels=["model", "check"])
        newest = GaugeMetricFamily(n.MODEL_NEWEST_ROW, "The newest row of the model's source over its stored windows.", labels=["model"])
        volume = GaugeMetricFamily(n.MODEL_VOLUME_RATIO, "Rows in the latest window against the median of the 7 comparable windows before it.",
                                   labels=["model"])
        newest_rows = self.store.newest_rows()
        est = GaugeMetricFamily(n.MODEL_QUALITY_ESTIMATED, "Quality estimated from the scores (no labels) for the latest "
                                "window whose labels are not mature.", labels=["model", "metric"])
        est_lo = GaugeMetricFamily(n.MODEL_QUALITY_ESTIMATED_CI_LOW, "Lower bound of the estimate's 95 % interval.",
                                   labels=["model", "metric"])
        est_hi = GaugeMetricFamily(n.MODEL_QUALITY_ESTIMATED_CI_HIGH, "Upper bound of the estimate's 95 % interval.",
                                   labels=["model", "metric"])
        est_err = GaugeMetricFamily(n.MODEL_ESTIMATION_ERROR, "Mean absolute error of the estimates over the "
                                    f"latest {n.ESTIMATION_ERROR_WINDOWS} windows whose labels matured.",
                                    labels=["model", "metric"])
        estimates = {n.ESTIMATE_KIND: est, n.ESTIMATE_CI_LOW_KIND: est_lo, n.ESTIMATE_CI_HIGH_KIND: est_hi}
        for m in self.cfg.models:
            if m.mlflow:
                self._version(m, version, validation)
            info.add_metric([m.name], {"task": m.task, "owner": m.owner})
            share_thr.add_metric([m.name], m.drift.dataset_share)
            if m.name in newest_rows:
                newest.add_metric([m.name], newest_rows[m.name])
            vol = self.store.volume_ratio(m.name, m.window)
            if vol is not None:
                last, ratio = vol
                if ratio is not None:
                    volume.add_metric([m.name], ratio)
                for r in self.store.model_metrics(m.name, last["window_start"], kinds=(n.DATA_CHECK_KIND,)):
                    if not r["segment"] and r["detected"] is not None:
                        checks.add_metric([m.name, r["name"]], 1.0 if r["detected"] else 0.0)
            # the latest window with predictions: an empty window (the log stopped) has nothing to show
            latest = self.store.latest_model_window(m.name, with_rows=True)
            if latest is None:
                continue
            end.add_metric([m.name], _ts(latest["window_end"]))
            pending.add_metric([m.name], float(self.store.count_model_windows(m.name, "pending")))
            if latest["drift_share"] is not None:
                share.add_metric([m.name], latest["drift_share"])
            for r in self.store.model_metrics(m.name, latest["window_start"]):
                if r["kind"] == "feature_drift_compare":  # drift.compare: the other methods, beside the deciding one
                    score.add_metric([m.name, r["name"], r["method"] or ""], _num(r["value"]))
                    continue
                if r["segment"]:
                    continue
                if r["kind"] == "feature_drift":
                    score.add_metric([m.name, r["name"], r["method"] or ""], _num(r["value"]))
                    detected.add_metric([m.name, r["name"]], 1.0 if r["detected"] else 0.0)
                    if r["threshold"] is not None:
                        feature_thr.add_metric([m.name, r["name"], r["method"] or ""], r["threshold"])
                elif r["kind"] == "prediction_drift":
                    # a multiclass model's prediction drift is its predicted class distribution's
                    if m.task != "multiclass_classification" or r["name"] == "class":
                        pred.add_metric([m.name, r["method"] or ""], _num(r["value"]))
                        pred_detected.add_metric([m.name], 1.0 if r["detected"] else 0.0)
                elif r["kind"] == "online":
                    online.add_metric([m.name, r["name"], ""], _num(r["value"]))
                elif r["kind"] == "multivariate_drift":
                    mv_score.add_metric([m.name], _num(r["value"]))
                    if r["threshold"] is not None:
                        mv_thr.add_metric([m.name], r["threshold"])
                        mv_detected.add_metric([m.name], 1.0 if r["detected"] else 0.0)
                elif r["kind"] == "null_share":
                    online.add_metric([m.name, "null_share", r["name"]], _num(r["value"]))
            judged = self.store.latest_model_window(m.name, quality_ok=True)
            if judged:
                qend.add_metric([m.name], _ts(judged["window_end"]))
                if judged["label_coverage"] is not None:
                    coverage.add_metric([m.name], judged["label_coverage"])
                for r in self.store.model_metrics(m.name, judged["window_start"], kinds=("quality", "quality_threshold", n.CONFUSION_KIND)):
                    if r["kind"] == n.CONFUSION_KIND:
                        actual, predicted = n.confusion_labels(r["name"])
                        cm.add_metric([m.name, actual, predicted], _num(r["value"]))
                    elif r["kind"] == "quality_threshold":  # the floor (min) or ceiling (max), fixed or learned
                        quality_thr.add_metric([m.name, r["name"], r["segment"]], _num(r["value"]))
                    elif not r["segment"]:
                        quality.add_metric([m.name, r["name"]], _num(r["value"]))
                    elif n.segment_value(r["segment"], n.CLASS_SEGMENT) is not None:
                        klass.add_metric([m.name, n.segment_value(r["segment"], n.CLASS_SEGMENT), r["name"]], _num(r["value"]))
            # estimates: of the latest window still waiting for its labels (a mature one shows realized values)
            waiting = self.store.latest_model_window(m.name, with_rows=True, status="pending")
            if waiting and (judged is None or waiting["window_start"] > judged["window_start"]):
                for r in self.store.model_metrics(m.name, waiting["window_start"], kinds=(*estimates, n.LABELS_SO_FAR_KIND, n.CONFUSION_ESTIMATED_KIND)):
                    if r["segment"]:
                        continue
                    if r["kind"] == n.LABELS_SO_FAR_KIND:
                        so_far.add_metric([m.name], _num(r["value"]))
                    elif r["kind"] == n.CONFUSION_ESTIMATED_KIND:
                        actual, predicted = n.confusion_labels(r["name"])
                        cm_est.add_metric([m.name, actual, predicted], _num(r["value"]))
                    else:
                        estimates[r["kind"]].add_metric([m.name, r["name"]], _num(r["value"]))
                        if r["kind"] == n.ESTIMATE_KIND and not any(s.labels["model"] == m.name for s in est_end.samples):
                            est_end.add_metric([m.name], _ts(waiting["window_end"]))
            for metric, err in self.store.estimation_errors(m.name, n.ESTIMATION_ERROR_WINDOWS).items():
                est_err.add_metric([m.name, metric], err)
        yield from (score, detected, feature_thr, share, share_thr, pred, pred_detected, online, quality, quality_thr,
                    klass, cm, cm_est, mv_score, mv_detected, mv_thr, coverage, so_far, pending, end, qend, est_end, info,
                    est, est_lo, est_hi, est_err, checks, newest, volume, version, validation)

    def _version(self, m, version, validation):
        """The registry's version as last read (with the latest window that recorded it)."""
        from .versions import VALIDATION_KIND, VERSION_KIND, version_text

        rows = self.store.model_metrics(m.name, kinds=(VERSION_KIND,))
        if not rows:
            return
        last = rows[-1]
        version.add_metric([m.name], {"version": version_text(last["value"]),
                                      "run_id": last["method"] or ""})
        for r in self.store.model_metrics(m.name, last["window_start"], kinds=(VALIDATION_KIND,)):
            validation.add_metric([m.name, r["name"]], _num(r["value"]))

    def collect_jobs(self):
        jobs = {n.goal_job(g.name) for g in self.cfg.goals} | {n.model_job(m.name) for m in self.cfg.models}
        last = GaugeMetricFamily(n.JOB_LAST_SUCCESS, "When a job last succeeded.", labels=["job"])
        dur = GaugeMetricFamily(n.JOB_DURATION, "How long the job's last run took.", labels=["job"])
        fails = CounterMetricFamily(n.JOB_FAILURES, "Failed runs of the job.", labels=["job"])
        rows = GaugeMetricFamily(n.JOB_ROWS_READ, "Rows the job's last successful run read.", labels=["job"])
        ok = GaugeMetricFamily(n.JOB_LAST_STATUS, "1 when the job's last run succeeded.", labels=["job"])
        for s in self.store.job_stats():
            if s["job"] not in jobs:
                continue
            if s["last_success"] is not None:
                last.add_metric([s["job"]], _ts(s["last_success"]))
            if s["last_duration"] is not None:
                dur.add_metric([s["job"]], s["last_duration"])
            fails.add_metric([s["job"]], float(s["failures"] or 0))
            if s["last_rows"] is not None:
                rows.add_metric([s["job"]], float(s["last_rows"]))
            ok.add_metric([s["job"]], 1.0 if s["last_status"] == "ok" else 0.0)
        yield from (last, dur, fails, rows, ok)

