"""Goal page: daily and weekly series, segments, the SMART card."""
import pandas as pd
import streamlit as st

from app_streamlit import data, ui
from monitor import formatting
from monitor.durations import format_duration

ctx = st.session_state["_ctx"]
week = ui.week_picker(ctx)
goal = ui.goal_picker(ctx)
if goal is None:
    st.info("The config has no goals.")
    st.stop()
st.title(goal.title or goal.name)
unit = goal.unit
own = int(goal.window.total_seconds())
size = data.weekly_size(goal)
daily = ctx.reader.goal_series(goal.name, own)
weekly = ctx.reader.goal_series(goal.name, size) if size else []
c = None
if week:
    cards, alerts, closed, _ = ui.week_view(ctx, week)
    c = next((x for x in cards if x["goal"] == goal.name), None) or data.goal_card(ctx.cfg, ctx.reader, goal, week)
    ui.card(c, alerts, link=False)

left, right = st.columns([3, 2])
with left:
    st.subheader("Weekly")
    chart = ui.series_chart(goal, weekly, traj=c["trajectory"] if c else None, week=week, to_deadline=True) if weekly else None
    if chart is not None:
        st.altair_chart(chart, width="stretch")
        projected = (c or {}).get("trajectory", {}).get("projected")
        st.caption("Blue: the weekly value (its SQL run on the week) with its 95 % Wilson band for rates; red: the target; "
                   "grey: the planned path from the baseline to the target at the deadline; amber: the projection, heading "
                   "to the deadline" + (f" ({formatting.fmt_value(projected, unit)} on {goal.deadline:%Y-%m-%d})"
                                        if projected is not None and goal.deadline else "") + ".")
    else:
        st.info("No weekly values stored for this goal." if not size else "No weekly value has data yet.")
    if size != own:  # a weekly goal has one series only
        st.subheader(f"Every {format_duration(goal.window)} window")
        chart = ui.series_chart(goal, daily, week=week)
        if chart is not None:
            st.altair_chart(chart, width="stretch")
        else:
            st.info("No window of this goal has data yet.")
with right:
    st.subheader("SMART card")
    sign = "at most" if goal.direction == "at_most" else "at least"
    facts = [
        ("Specific", goal.title or goal.name),
        ("Why", goal.why or "–"),
        ("Owner", goal.owner or "–"),
        ("Measurable", f"{goal.unit}, computed on {format_duration(goal.window)} windows"
                   + (f" and reviewed on {format_duration(goal.review)} windows" if goal.review else "")),
        ("Baseline", f"{formatting.fmt_value(goal.baseline.value, unit)} on {goal.baseline.at:%Y-%m-%d}" if goal.baseline else "–"),
        ("Target", f"{sign} {formatting.fmt_value(goal.target, unit)}"),
        ("Time-bound", f"by {goal.deadline:%Y-%m-%d}" if goal.deadline else "no deadline"),
        ("Alert", f"{goal.severity}; a window is provisional for {format_duration(goal.maturity)} after it ends"),
    ]
    st.markdown("\n".join(f"- **{k}**: {v}" for k, v in facts))
    behind = [link for link in data.links(ctx.cfg) if link.goal == goal.name]
    if behind:
        st.markdown("**Models behind it**: " + "; ".join(f"`{link.model}` ({link.reason})" for link in behind))
    else:
        st.caption("No model is linked to this goal (no shared table in its SQL, no shared owner).")
    with st.expander("SQL", expanded=True):
        try:
            st.code(goal.sql_text, language="sql")
        except OSError as e:
            st.warning(f"Cannot read {goal.sql}: {e.strerror}")
        st.caption(str(goal.sql))

if week:
    st.subheader(f"Segments, {data.week_label(week)} against the week before")
    movers, scope = data.segment_movers(ctx.reader, goal, week)
    if movers:
        df = pd.DataFrame([{"segment": m["segment"], "value": formatting.fmt_value(m["value"], unit),
                            "last week": formatting.fmt_value(m["previous"], unit),
                            "change": formatting.fmt_delta(m["change"], unit) or "–",
                            "contribution to the change": formatting.fmt_delta(m["contribution"], "ratio" if unit == "ratio" else "") or "–",
                            "share of the denominator": f"{m['share']:.1%}" if m["share"] is not None else "–"} for m in movers])
        st.dataframe(df, hide_index=True)
        st.caption(f"Biggest movers first, from {scope}. A segment's contribution is its numerator over this week's total "
                   "denominator minus the same a week before: the contributions add up to the overall change.")
    else:
        st.caption("This goal's SQL returns no `segment` column, or no segment has data in these weeks.")

with st.expander("Every window"):
    sizes = {own: "weekly" if own == 604800 else "daily" if own == 86400 else format_duration(goal.window)}
    if size and size != own:
        sizes[size] = "weekly (review)"
    series = sorted(daily + (weekly if size != own else []), key=lambda r: (r["window_start"], -r["size_seconds"]), reverse=True)
    rows = [{"window": r["window_start"].strftime("%Y-%m-%d %H:%M"), "size": sizes.get(r["size_seconds"], str(r["size_seconds"])),
             "value": formatting.fmt_value(r["value"], unit),
             "numerator": "–" if r["numerator"] is None else f"{r['numerator']:,.0f}",
             "denominator": "–" if r["denominator"] is None else f"{r['denominator']:,.0f}", "status": r["status"],
             "needed n": "–" if not r["needed"] else f"{r['needed']:,}", "provisional": "yes" if r["provisional"] else ""}
            for r in series]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption("*size*: each goal is computed on its own windows"
               + (f" ({sizes[own]}) and on weekly windows for the review (its SQL run on the whole week)" if size and size != own else "") + ".")
