"""Models page: drift per feature over the weeks, prediction drift, online signals, quality, the Evidently report."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app_streamlit import data, ui
from monitor import formatting
from monitor.config import Learned
from monitor.conventions import DATA_CHECK_TEXT
from monitor.durations import format_duration

ctx = st.session_state["_ctx"]
week = ui.week_picker(ctx)
st.title("Models")
names = [m.name for m in ctx.cfg.models]
if not names:
    st.info("The config watches no models.")
    st.stop()
model = ctx.cfg.model(ui.synced_select(st, "Model", names, key="model", param="model"))

ref = model.reference
ref_text = f"{ref.start:%Y-%m-%d} to {ref.end:%Y-%m-%d}" if ref.start else f"the {format_duration(ref.rolling)} before each window"
st.caption(f"{model.task.replace('_', ' ')} · owner {model.owner or '–'} · {format_duration(model.window)} windows · "
           f"reference {ref_text} · labels " + (f"judged {format_duration(model.labels.max_delay)} after a window ends"
                                                 if model.labels else "not configured"))

if week:
    cards, alerts, _, _ = ui.week_view(ctx, week)
    for a in alerts:
        if a["model"] == model.name:
            st.warning(f"Goal **{a['goal']}** missed its target in this week while this model drifted "
                       f"({', '.join(a['features']) or 'its score'}). Linked: {a['reason']}.", icon=":material/warning:")
    goals = [link for link in data.links(ctx.cfg) if link.model == model.name]
    if goals:
        st.caption("Goals behind this model: " + "; ".join(f"`{link.goal}` ({link.reason})" for link in goals))

series = ctx.reader.model_series(model.name)
if not series:
    run = ctx.reader.last_run(f"model:{model.name}")
    st.info(f"No window of {model.name} is stored yet.")
    if run and run["status"] == "failed":
        st.error(f"Its last run failed ({formatting.fmt_time(run['started_at'])}): `{run['error']}`")
    st.stop()

# --- inputs: are the numbers below computed from sound data? ---
st.header("Inputs")
health = data.input_health(model, ctx.reader)
latest = health["latest"]
c1, c2, c3 = st.columns(3)
newest = health["newest_row"]
c1.metric("Newest source row", formatting.fmt_time(newest) if newest else "–",
          help=f"The newest row of {model.source.table} over the stored windows; its alert fires when it is older "
               f"than two windows.")
ratio = health["volume_ratio"]
c2.metric("Rows in the latest window", f"{latest['rows']:,}", delta=f"{ratio:.0%} of usual" if ratio is not None else None,
          delta_color="off",
          help="Against the median of the same time of day on the 7 days before (windows under a day), else of the "
               "7 windows before; alerts below 50 % and above 200 %.")
failing_now = [c for c in health["checks"] if c["detected"]]
c3.metric("Data checks of the latest window", f"{len(failing_now)} failing" if health["checks"] else "–",
          help="Timestamps, score range and nulls, label values and duplicates, the reference, the schema.")
when = formatting.fmt_time(latest["window_start"])
if failing_now:
    what = "; ".join(f"**{c['name']}** ({DATA_CHECK_TEXT.get(c['name'], 'invalid inputs')}"
                     + (f", {c['value']:,.0f} rows" if c["value"] else "") + ")" for c in failing_now)
    st.warning(f"Failing in the latest window ({when}): {what}. Quality from such inputs is withheld.",
               icon=":material/report:")
elif health["checks"]:
    st.success(f"All {len(health['checks'])} data checks pass in the latest window ({when}).")
else:
    st.caption("No data checks are stored for this model's windows yet.")
if not latest["rows"]:
    st.warning(f"The latest window ({when}) has no rows at all: the source stopped filling, or the monitor reads "
               "the wrong table.", icon=":material/report:")
earlier = [(ws, cs) for ws, cs in sorted(health["failing"].items(), reverse=True) if ws != latest["window_start"]]
if earlier:
    st.caption("Earlier windows with failing checks: " + "; ".join(
        f"{formatting.fmt_time(ws)} ({', '.join(c['name'] for c in cs)})" for ws, cs in earlier[:10])
        + (f"; and {len(earlier) - 10} more" if len(earlier) > 10 else ""))

# --- the model version: the registry's (MLflow), the log's version column ---
changes = data.version_changes(model, ctx.reader)
if model.mlflow:
    reg = data.registered(model, ctx.reader)
    if reg:
        val = ", ".join(f"{k} {v:.4g}" for k, v in reg["validation"].items()) or "no metrics logged"
        st.markdown(f"**Version {reg['version']}** of `{model.mlflow.name}` is `@{model.mlflow.alias}` "
                    f"(run `{reg['run_id']}`, read with the window of {reg['window_start']:%Y-%m-%d %H:%M}); "
                    f"validation: {val}.")
    else:
        st.caption(f"MLflow: no version of `{model.mlflow.name}@{model.mlflow.alias}` recorded yet "
                   f"(read from {model.mlflow.tracking_uri} with the latest window).")
if len(changes) > 1:
    st.caption("Version changes (marked on the charts): " + "; ".join(
        f"v{c['version']} from {c['window_start']:%Y-%m-%d}" for c in changes[1:]))
if model.source.version:
    split = data.by_version(model, ctx.reader)
    mixed = sorted({r["window_start"] for r in split if sum(x["window_start"] == r["window_start"] for x in split) > 1})
    if split:
        st.subheader("By version")
        shown = [r for r in split if r["window_start"] in mixed[-8:]] or split[-1:]
        st.dataframe(pd.DataFrame([{"window": r["window_start"].strftime("%Y-%m-%d %H:%M"), **{k: v for k, v in r.items()
                                    if k != "window_start"}} for r in reversed(shown)]), hide_index=True)
        st.caption("Windows where more than one version scored, side by side (else the latest); "
                   f"column `{model.source.version}` of the log, the top {model.max_segments} versions, the rest as `other`.")
marks = changes[1:] or None

# --- drift per feature over the weeks ---
st.header("Drift")
shared = [w for w in series if w["rows"] and w["drift_share"] is not None]
if shared:
    last = shared[-1]
    in_week = [w for w in shared if week and week <= w["window_start"] < week + data.WEEK]
    c1, c2 = st.columns(2)
    c1.metric(f"Dataset drift, latest window ({formatting.fmt_time(last['window_start'])})",
              "drifted" if last["dataset_drift"] else "no drift", delta=f"{last['drift_share']:.0%} of features drifted",
              delta_color="inverse" if last["dataset_drift"] else "off", delta_arrow="off",
              help=f"The dataset drifts when the share of drifted features reaches drift.dataset_share "
                   f"({model.drift.dataset_share:.0%}).")
    if in_week:
        n = sum(bool(w["dataset_drift"]) for w in in_week)
        c2.metric(f"Dataset drift in {data.week_label(week)}", f"{n} of {len(in_week)} windows",
                  delta=f"up to {max(w['drift_share'] for w in in_week):.0%} of features", delta_color="off", delta_arrow="off")
heat = data.drift_heatmap(ctx.reader, model.name)
if heat:
    st.altair_chart(ui.heatmap(heat), width="stretch")
    st.caption("Each cell: the share of the week's windows in which the feature drifted against the reference; "
               "white: it never drifted that week.")
    if week:
        drifted = data.drifted_this_week(heat, week)
        st.subheader(f"Features drifted in {data.week_label(week)}")
        if drifted:
            st.dataframe(pd.DataFrame([{"feature": c["feature"], "windows drifted": f"{c['drifted']} of {c['windows']}",
                                        "largest score": c["max_score"], "threshold": c["threshold"], "method": c["method"]}
                                       for c in drifted]), hide_index=True)
        else:
            st.success("No feature drifted this week.")
else:
    st.info("No feature drift is stored for this model.")

pred = ctx.reader.model_metrics(model.name, ("prediction_drift",))
if model.task == "multiclass_classification":  # its prediction drift is the predicted class distribution's
    pred = [p for p in pred if p["name"] == "class"]
st.subheader("Prediction drift")
if pred:
    thr = next((p["threshold"] for p in reversed(pred) if p["threshold"] is not None), None)
    st.altair_chart(ui.line([{**p, "detected": "drift" if p["detected"] else "no drift"} for p in pred], "value",
                            rule=thr, title=f"{'predicted class' if model.task == 'multiclass_classification' else 'score'} drift "
                                            f"({pred[-1]['method'] or 'auto'})"), width="stretch")
else:
    st.caption("No prediction drift stored.")

mv = ctx.reader.model_metrics(model.name, ("multivariate_drift",))
if mv:
    st.subheader("Multivariate drift")
    thr = next((p["threshold"] for p in reversed(mv) if p["threshold"] is not None), None)
    st.altair_chart(ui.line([{**p, "detected": "drift" if p["detected"] else "no drift"} for p in mv], "value",
                            rule=thr, title="PCA reconstruction error"), width="stretch")
    st.caption("Mean reconstruction error of the numeric features, standardised by the reference: it rises when "
               "their joint distribution moves (a correlation), even if no feature drifts on its own. The dashed "
               "line is the latest threshold (by default the reference windows' mean plus 3 standard deviations).")

# --- online signals ---
st.header("Online signals")
online = ctx.reader.model_metrics(model.name, ("online",))
if online:
    signals = sorted({o["name"] for o in online})
    cols = st.columns(min(4, len(signals)))
    for i, name in enumerate(signals):
        with cols[i % len(cols)]:
            st.altair_chart(ui.line([o for o in online if o["name"] == name], "value", title=name, height=160,
                                    percent=name in ("positive_rate", "null_share"), versions=marks),
                            width="stretch")
else:
    st.caption("No online signals stored.")
nulls = ctx.reader.model_metrics(model.name, ("null_share",))
if nulls and any(n["value"] for n in nulls):
    st.altair_chart(ui.line([{**n, "feature": n["name"]} for n in nulls], "value", color="feature", title="null share",
                            percent=True),
                    width="stretch")

# --- quality ---
st.header("Offline quality")
q = data.quality_windows(model, ctx.reader)
if model.labels is None:
    st.info("This model has no labels configured: offline quality is not computed. Add `labels:` to its config.")
else:
    metric_names = sorted({k for row in q for k in row} - {"window_start", "window_end", "rows", "quality_status",
                                                           "label_coverage", "judged_from", "past_floor"})
    judged = [row for row in q if row["quality_status"] == "ok"]
    pending = [row for row in q if row["quality_status"] == "pending"]
    st.caption(f"{len(judged)} windows judged, {len(pending)} pending: a window is judged once its end is "
               f"{format_duration(model.labels.max_delay)} old, never from partial labels.")
    floors = dict(model.quality)
    stored = data.quality_bounds(model, ctx.reader)  # fixed, learned from the reference, or relative to validation

    def number(b):  # a fixed bound; learned and relative ones are in the stored threshold
        return b if isinstance(b, (int, float)) else None

    def limit(metric: str, bound: str):
        f = floors.get(metric)
        fixed = number(getattr(f, bound)) if f is not None else None
        return fixed if fixed is not None else stored.get(metric, {}).get(bound)

    def below(metric: str, v, row: dict | None = None) -> bool:
        if row is not None and metric in row["past_floor"]:
            return True
        lo, hi = (number(floors[metric].min), number(floors[metric].max)) if metric in floors else (None, None)
        return v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi))

    if judged and metric_names:
        long = [{"window_start": row["window_start"], "metric": k, "value": row[k],
                 "floor": "breached" if below(k, row[k], row) else "ok"} for row in judged for k in metric_names if row.get(k) is not None]
        if long:
            st.altair_chart(ui.quality_chart(long, {k: (limit(k, "min") if limit(k, "min") is not None else limit(k, "max"))
                                                    for k in floors}), width="stretch")
    est = data.estimated_quality(model, ctx.reader)
    if est:
        st.subheader("Estimated before the labels, realized after")
        names_ = sorted({c["metric"] for c in est})
        default = next((k for k in floors if k in names_), names_[0])
        pick = st.selectbox("metric", names_, index=names_.index(default), key="estimate_metric")
        cells = [c for c in est if c["metric"] == pick]
        st.altair_chart(ui.estimate_chart(cells, versions=marks), width="stretch")
        errors = [abs(c["estimate"] - c["realized"]) for c in cells if c["realized"] is not None][-8:]
        latest = cells[-1]
        st.caption(f"Blue: estimated from the scores (band: 95 % interval; calibration `{latest['method']}`), "
                   "labelled as an estimate until the window's labels mature; green: realized. "
                   + ("Dotted: where a new model version starts. " if marks else "")
                   + (f"Mean absolute error of the last {len(errors)} matured estimates: {sum(errors) / len(errors):.4f}."
                      if errors else "No estimate has matured yet."))

    def cell(k, v, row) -> str:
        if v is None:
            return "–"
        if not below(k, v, row):
            return f"{v:.4f}"
        lo = limit(k, "min") if k in floors else None
        return f"{v:.4f}" + (" ▼ below floor" if lo is not None and v < lo else " ▲ above floor")

    rows = [{
        "window": row["window_start"].strftime("%Y-%m-%d %H:%M"),
        "status": {"pending": f"pending until {row['judged_from']:%Y-%m-%d %H:%M}" if row["judged_from"] else "pending",
                   "invalid": "withheld: " + ", ".join(c["name"] for c in health["failing"].get(row["window_start"], []))}
        .get(row["quality_status"], row["quality_status"]),
        "label coverage": f"{row['label_coverage']:.1%}" if row["label_coverage"] is not None else "–",
        "rows": f"{row['rows']:,}" if row["rows"] is not None else "–",
        **{k: cell(k, row.get(k), row) for k in metric_names}} for row in reversed(q)]
    table = pd.DataFrame(rows)
    styled = table.style.map(lambda v: "background-color: #ffebe9; color: #cf222e; font-weight: 600"
                             if isinstance(v, str) and "floor" in v else "", subset=[k for k in metric_names if k in table])
    st.dataframe(styled, hide_index=True, width="stretch",
                 column_config={"status": st.column_config.TextColumn("status", width="large")})
    if floors:
        def bound(b, sign):
            if b is None:
                return ""
            if isinstance(b, (int, float)):
                return f"{sign} {b:g}"
            if isinstance(b, Learned):
                return f"{sign} reference mean {'−' if sign == '≥' else '+'} {b.sd:g} sd"
            return f"{sign} validation {'−' if b.below_validation is not None else '+'} {b.offset if b.offset > 0 else -b.offset:g}"
        def now(k):
            got = {b: v for b, v in stored.get(k, {}).items() if not isinstance(getattr(floors[k], b), (int, float))}
            return f" (now {', '.join(f'{v:.4g}' for v in got.values())})" if got else ""
        st.caption("Floors that alert: " + ", ".join(f"{k} {bound(v.min, '≥')}{bound(v.max, '≤')}{now(k)}"
                                                     for k, v in floors.items())
                   + "; a window past its floor is marked in red in the chart and the table.")

if model.task == "multiclass_classification" and model.labels is not None:
    per = data.class_quality(model, ctx.reader)
    st.subheader("Per class")
    if per and per["confusion"]:
        st.caption(f"The latest judged window, from {per['window_start']:%Y-%m-%d %H:%M}: per-class precision, recall "
                   f"and F1 (the {model.max_segments} classes with the most labels), and the confusion matrix "
                   "(the other classes pooled as `other`).")
        if per["classes"]:
            st.dataframe(pd.DataFrame(per["classes"]), hide_index=True)
        st.altair_chart(ui.confusion(per["confusion"]), width="stretch")
    else:
        st.caption("No window of this model is judged yet.")
elif model.task == "binary_classification" and model.labels is not None:
    per = data.class_quality(model, ctx.reader)
    if per and per["confusion"]:
        st.subheader("Confusion matrix")
        st.caption(f"The latest judged window, from {per['window_start']:%Y-%m-%d %H:%M}: labelled predictions by "
                   "true class (1 positive) and decision; accuracy and specificity above follow from it.")
        st.altair_chart(ui.confusion(per["confusion"]), width="stretch")

# --- Evidently ---
st.header("Evidently report")
options = [row["window_start"] for row in series]
default = max((i for i, w in enumerate(options) if week and week <= w < week + data.WEEK), default=len(options) - 1)
chosen = st.selectbox("Window", options, index=default, format_func=lambda w: w.strftime("%Y-%m-%d %H:%M"), key="ev_window")
if st.button("Show the Evidently report of this window", key="ev_go"):
    st.session_state["ev_shown"] = (model.name, chosen)
if st.session_state.get("ev_shown") == (model.name, chosen):
    end = next(row["window_end"] for row in series if row["window_start"] == chosen)
    path = ctx.cfg.path or Path(".")
    html, why = ui.evidently_html((str(path), model.name), model.name, chosen, end, ctx.cfg)
    if html:
        st.iframe(html, width="stretch", height=1200)
        st.download_button("Download the report (HTML)", html, file_name=f"evidently-{model.name}-{chosen:%Y%m%dT%H%M}.html",
                           mime="text/html", on_click="ignore", key="ev_download")
    else:
        st.info(f"The Evidently report is not available: {why}")
else:
    st.caption("Built on demand from a bounded sample of the window's rows in the source database.")
