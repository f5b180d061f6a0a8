"""The one place where names are built: metric names, job names, alert names, dashboard uids."""
from __future__ import annotations

import hashlib
import re

PREFIX = "monitor"

GOAL_VALUE = f"{PREFIX}_goal_value"
GOAL_TARGET = f"{PREFIX}_goal_target"
GOAL_MET = f"{PREFIX}_goal_met"
GOAL_WINDOW_END = f"{PREFIX}_goal_window_end_timestamp_seconds"
GOAL_INFO = f"{PREFIX}_goal"  # exposed as monitor_goal_info by prometheus_client
GOAL_CI_LOW = f"{PREFIX}_goal_ci_low"
GOAL_CI_HIGH = f"{PREFIX}_goal_ci_high"
GOAL_STATUS = f"{PREFIX}_goal_status"
GOAL_PROVISIONAL = f"{PREFIX}_goal_provisional"
GOAL_REVIEW_VALUE = f"{PREFIX}_goal_review_value"
GOAL_PLANNED = f"{PREFIX}_goal_planned_value"
GOAL_PROJECTED = f"{PREFIX}_goal_projected_value"
GOAL_TRAJECTORY = f"{PREFIX}_goal_trajectory"
GOAL_SEGMENT_VALUE = f"{PREFIX}_goal_segment_value"
GOAL_BUDGET_SPENT = f"{PREFIX}_goal_error_budget_spent_ratio"
GOAL_BURN_RATE = f"{PREFIX}_goal_burn_rate"

FEATURE_DRIFT_SCORE = f"{PREFIX}_feature_drift_score"
FEATURE_DRIFT_DETECTED = f"{PREFIX}_feature_drift_detected"
FEATURE_DRIFT_THRESHOLD = f"{PREFIX}_feature_drift_threshold"
DATASET_DRIFT_SHARE = f"{PREFIX}_dataset_drift_share"
DATASET_DRIFT_THRESHOLD = f"{PREFIX}_dataset_drift_share_threshold"
PREDICTION_DRIFT_SCORE = f"{PREFIX}_prediction_drift_score"
PREDICTION_DRIFT_DETECTED = f"{PREFIX}_prediction_drift_detected"
MODEL_QUALITY = f"{PREFIX}_model_quality"
MODEL_ONLINE = f"{PREFIX}_model_online"
MODEL_LABEL_COVERAGE = f"{PREFIX}_model_label_coverage_ratio"
MODEL_QUALITY_PENDING = f"{PREFIX}_model_quality_pending_windows"
MODEL_WINDOW_END = f"{PREFIX}_model_window_end_timestamp_seconds"
MODEL_QUALITY_WINDOW_END = f"{PREFIX}_model_quality_window_end_timestamp_seconds"
MODEL_LABEL_COVERAGE_SO_FAR = f"{PREFIX}_model_label_coverage_so_far_ratio"  # of the latest pending window
MODEL_ESTIMATED_WINDOW_END = f"{PREFIX}_model_estimated_window_end_timestamp_seconds"  # the estimate's window
MODEL_INFO = f"{PREFIX}_model"
MODEL_NEWEST_ROW = f"{PREFIX}_model_newest_row_timestamp_seconds"
MODEL_VOLUME_RATIO = f"{PREFIX}_model_volume_ratio"
MODEL_DATA_CHECK_FAILED = f"{PREFIX}_model_data_check_failed"
MODEL_QUALITY_ESTIMATED = f"{PREFIX}_model_quality_estimated"
MODEL_QUALITY_ESTIMATED_CI_LOW = f"{PREFIX}_model_quality_estimated_ci_low"
MODEL_QUALITY_ESTIMATED_CI_HIGH = f"{PREFIX}_model_quality_estimated_ci_high"
MODEL_ESTIMATION_ERROR = f"{PREFIX}_model_estimation_error"
MODEL_CLASS_QUALITY = f"{PREFIX}_model_class_quality"
MODEL_CONFUSION = f"{PREFIX}_model_confusion"  # {model, actual, predicted}: rows in a cell of the confusion matrix
MODEL_CONFUSION_ESTIMATED = f"{PREFIX}_model_confusion_estimated"  # the same cells, expected, labels pending
MODEL_QUALITY_THRESHOLD = f"{PREFIX}_model_quality_threshold"
MULTIVARIATE_DRIFT_SCORE = f"{PREFIX}_multivariate_drift_score"
MULTIVARIATE_DRIFT_DETECTED = f"{PREFIX}_multivariate_drift_detected"
MULTIVARIATE_DRIFT_THRESHOLD = f"{PREFIX}_multivariate_drift_threshold"
MODEL_VERSION_INFO = f"{PREFIX}_model_version"  # exposed as monitor_model_version_info by prometheus_client
MODEL_VALIDATION = f"{PREFIX}_model_validation"  # metrics the registered version's run logged
GOAL_ESTIMATED_VALUE = f"{PREFIX}_goal_estimated_value"
GOAL_ESTIMATED_CI_LOW = f"{PREFIX}_goal_estimated_ci_low"
GOAL_ESTIMATED_CI_HIGH = f"{PREFIX}_goal_estimated_ci_high"
GOAL_ESTIMATED_STATUS = f"{PREFIX}_goal_estimated_status"
GOAL_ESTIMATION_ERROR = f"{PREFIX}_goal_estimation_error"

JOB_LAST_SUCCESS = f"{PREFIX}_job_last_success_timestamp_seconds"
JOB_DURATION = f"{PREFIX}_job_duration_seconds"
JOB_FAILURES = f"{PREFIX}_job_failures"  # a counter: exposed as monitor_job_failures_total
JOB_ROWS_READ = f"{PREFIX}_job_rows_read"
JOB_LAST_STATUS = f"{PREFIX}_job_last_run_ok"

TRAJECTORY_CODES = {"on_track": 0, "at_risk": 1, "off_track": 2, "unknown": -1}
STATUS_CODES = {"met": 0, "missed": 1, "insufficient_data": 2, "no_data": 3}
# How a goal's status and trajectory read in words: the app, the review export and the dashboards.
STATUS_TEXT = {"met": "met", "missed": "missed", "insufficient_data": "insufficient data", "no_data": "no data"}
TRAJECTORY_TEXT = {"on_track": "on track", "at_risk": "at risk", "off_track": "off track", "unknown": "unknown"}
# Validity checks of a model window: stored as monitor_model_metrics rows of kind DATA_CHECK_KIND.
DATA_CHECK_KIND = "data_check"
DATA_CHECKS = ("timestamp", "score_range", "score_nulls", "label_values", "label_duplicates", "reference", "schema",
               "non_finite")
# The confusion matrix of a classifier's window: monitor_model_metrics rows (kind CONFUSION_KIND,
# name confusion_cell(actual, predicted), segment ""), value = labelled predictions in that cell.
CONFUSION_KIND = "confusion"
CONFUSION_ESTIMATED_KIND = "confusion_estimated"  # a pending window's expected matrix, from the scores


def confusion_cell(actual, predicted) -> str:
    """A confusion cell's stored name, "<actual>|<predicted>"; a "%" or "|" in a class is escaped
    (%25, %7C) so any class name reads back as it was."""
    def esc(v) -> str:
        return str(v).replace("%", "%25").replace("|", "%7C")
    return f"{esc(actual)}|{esc(predicted)}"


def confusion_labels(name: str) -> tuple[str, str]:
    """(actual, predicted) of a name written by confusion_cell."""
    def unesc(v: str) -> str:
        return v.replace("%7C", "|").replace("%25", "%")
    actual, _, predicted = name.partition("|")
    return unesc(actual), unesc(predicted)


# Per-class and per-version results: monitor_model_metrics rows with segment "<key>=<value>".
CLASS_SEGMENT = "class"
VERSION_SEGMENT = "version"
OTHER = "other"  # the rows of the classes or versions beyond the kept ones


def segment(key: str, value) -> str:
    """The segment of the rows of one class (CLASS_SEGMENT) or version (VERSION_SEGMENT)."""
    return f"{key}={value}"


def segment_value(seg: str, key: str) -> str | None:
    """The class or version a segment written by segment(key, ...) names; None for another segment."""
    prefix = f"{key}="
    return seg[len(prefix):] if seg.startswith(prefix) else None
# What each data check finds, for alert texts and the app.
DATA_CHECK_TEXT = {
    "timestamp": "rows with a NULL or unparseable timestamp",
    "score_range": "classifier scores outside [0, 1], or class scores not summing to 1",
    "score_nulls": "rows with a NULL score",
    "label_values": "labels of no class the model knows (outside {0, 1} for a binary model)",
    "label_duplicates": "predictions with more than one label",
    "reference": "the reference has no rows, or too few to judge drift",
    "schema": "a configured column is missing or of an unusable type",
    "non_finite": "NaN or infinite values",
}
# Freshness of a model window: a monitor_model_metrics row (kind, name), value = epoch seconds of its newest row.
FRESHNESS_KIND = "source"
FRESHNESS_NAME = "newest_row_timestamp"
# Quality estimated before the labels arrive: monitor_model_metrics rows of these kinds.
ESTIMATE_KIND = "quality_estimated"
ESTIMATE_CI_LOW_KIND = "quality_estimated_ci_low"
ESTIMATE_CI_HIGH_KIND = "quality_estimated_ci_high"
ESTIMATION_ERROR_KIND = "estimation_error"
LABELS_SO_FAR_KIND = "labels_so_far"  # a pending window's label coverage so far (name "label_coverage")
ESTIMATED_METRICS = {"binary_classification": ("roc_auc", "precision", "recall", "f1", "accuracy"),
                     "regression": ("mae", "rmse"),
                     "multiclass_classification": ("accuracy", "precision_macro", "recall_macro", "f1_macro")}
ESTIMATED_STATUSES = ("expected_met", "expected_missed", "insufficient_data", "no_data")
ESTIMATION_ERROR_WINDOWS = 8  # monitor_model_estimation_error: mean over this many recent mature windows


# How Prometheus reaches the monitor: the scrape job's name (also the Pushgateway group of
# `run-once --push`), the port `monitor serve` listens on, and its address in docker-compose.
SCRAPE_JOB = "monitor"
PORT = 9108
SCRAPE_TARGET = f"monitor:{PORT}"


def sel(metric: str, /, **labels: str) -> str:
    """A PromQL selector, `metric{a="x",b="y"}`; a value starting with `~` is a regex match, with `!` a negative one."""
    parts = []
    for k, v in labels.items():
        op = "="
        if v.startswith("~"):
            op, v = "=~", v[1:]
        elif v.startswith("!"):
            op, v = "!=", v[1:]
        parts.append(f'{k}{op}"{v}"')
    return metric + ("{" + ",".join(parts) + "}" if parts else "")


def goal_job(name: str) -> str:
    return f"goal:{name}"


def model_job(name: str) -> str:
    return f"model:{name}"


def camel(name: str) -> str:
    """`spam_exposure_rate` -> `SpamExposureRate`, for alert names."""
    return "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", name) if p)


def uid(*parts: str) -> str:
    """A stable Grafana uid (at most 40 characters) derived from names."""
    raw = "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts)
    if len(raw) <= 40:
        return raw
    return raw[:31] + "-" + hashlib.sha1(raw.encode()).hexdigest()[:8]
