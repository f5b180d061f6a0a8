"""What every page shares: the config, access, the cached reader, the week and goal pickers, cards and charts."""
from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import altair as alt
import pandas as pd
import sqlalchemy as sa
import streamlit as st

from monitor import formatting
from monitor.conventions import STATUS_TEXT, TRAJECTORY_TEXT
from monitor.config import Config, ConfigError, Goal, load_config

from . import data

log = logging.getLogger("monitor.app")
TTL = 60  # seconds a read of the results store is reused; "Refresh" clears it
STATUS_COLOUR = {"met": "green", "missed": "red", "insufficient_data": "orange", "no_data": "gray"}
TRAJECTORY_COLOUR = {"on_track": "green", "at_risk": "orange", "off_track": "red", "unknown": "gray"}
NO_RESULTS = ("No results yet. Compute some first:\n\n"
              "* `monitor demo` makes a demo world and computes it, then `monitor app --config monitor-demo/monitor.yaml`;\n"
              "* or, with your own config, `monitor run-once --config FILE` (or `monitor serve`) and reload this page.")


# --- reading, cached ---

@st.cache_data(ttl=TTL, show_spinner=False, max_entries=4000)
def _read(url: str, method: str, *args):
    return getattr(data.Reader(url), method)(*args)


class CachedReader(data.Reader):
    """The reader whose answers are cached for TTL seconds across sessions."""

    def weeks(self):
        return _read(self.url, "weeks")

    def goal_series(self, goal, size):
        return _read(self.url, "goal_series", goal, size)

    def trajectories(self, goal):
        return _read(self.url, "trajectories", goal)

    def segments(self, goal, size, starts):
        return _read(self.url, "segments", goal, size, tuple(starts))

    def model_series(self, model):
        return _read(self.url, "model_series", model)

    def goal_estimate(self, goal, size, start):
        return _read(self.url, "goal_estimate", goal, size, start)

    def model_metrics(self, model, kinds, overall_only=True):
        return _read(self.url, "model_metrics", model, tuple(kinds), overall_only)

    def drift_weeks(self, model):
        return _read(self.url, "drift_weeks", model)

    def last_run(self, job):
        return _read(self.url, "last_run", job)

    def volume_ratio(self, model, window_seconds):
        return _read(self.url, "volume_ratio", model, window_seconds)


@st.cache_resource(show_spinner=False, max_entries=8)
def _config(path: str, mtime: float) -> Config:
    return load_config(path)


# --- boot: access, config, database ---

@dataclass
class Context:
    cfg: Config
    reader: CachedReader
    author: str | None
    slot: object = None  # the top of the sidebar, where the week picker goes


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def check_access() -> str | None:
    """Stop the page unless the visitor may see it; returns the logged-in user's name, if any."""
    if _oidc_configured():
        if not st.user.is_logged_in:
            st.title("Goal review")
            st.write("Log in to see the goals and write the review.")
            st.button("Log in", on_click=st.login, type="primary")
            st.stop()
        return st.user.get("name") or st.user.get("email") or st.user.get("sub")
    password = os.environ.get("MONITOR_APP_PASSWORD")
    if password and not st.session_state.get("_access_ok"):
        st.title("Goal review")
        with st.form("access"):
            given = st.text_input("Password", type="password")
            if st.form_submit_button("Enter", type="primary"):
                if hmac.compare_digest(given.encode(), password.encode()):
                    st.session_state["_access_ok"] = True
                    st.rerun()
                st.error("Wrong password.")
        st.stop()
    return None


def load() -> Config:
    """The config from MONITOR_CONFIG, or a clear message and a stopped page."""
    path = os.environ.get("MONITOR_CONFIG")
    if not path:
        st.error("No config: start the app with `monitor app --config FILE` (or set MONITOR_CONFIG).")
        st.stop()
    try:
        return _config(str(Path(path).resolve()), Path(path).stat().st_mtime)
    except FileNotFoundError:
        st.error(f"The config file {path} does not exist.")
    except ConfigError as e:
        st.error(f"The config cannot be used:\n\n```\n{e}\n```")
    st.stop()


def where(url: str) -> str:
    """The database's address without its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def database_down(url: str, err: Exception) -> None:
    from monitor.db import describe_error

    st.error(f"The results database is not reachable ({where(url)}):\n\n`{describe_error(err)}`\n\n"
             "Check that it is running and that `results_url` (or `database_url`) in the config points to it, "
             "then reload this page.", icon=":material/cloud_off:")


def boot() -> Context:
    """Access, config and the results store's state; stops the page with a message when any is missing."""
    user = check_access()
    cfg = load()
    reader = CachedReader(cfg.store_url)
    try:
        state = reader.state()
    except sa.exc.SQLAlchemyError as e:
        database_down(cfg.store_url, e)
        st.stop()
    if state != "ok":
        st.title("Goal review")
        st.info(NO_RESULTS, icon=":material/hourglass_empty:")
        st.caption(f"Results store: {where(cfg.store_url)} ({'no monitor tables yet' if state == 'no_tables' else 'no results yet'}).")
        st.stop()
    return Context(cfg, reader, user)


# --- pickers (sidebar) ---

def synced_select(where, label: str, options: list[str], *, key: str, param: str, parse=lambda x: x,
                  format_func=str, help: str | None = None) -> str:
    """A selectbox whose choice lives in the session across pages and in the URL as `?param=`.

    A link or a typed URL with a new `?param=` wins once; after that the session's choice does
    (widget state is dropped when the page changes, so the choice is kept under `_key` too).
    """
    keep, seen = f"_{key}", f"_{key}_url"
    if st.session_state.get(key) in options:
        st.session_state[keep] = st.session_state[key]
    raw = st.query_params.get(param)
    wanted = parse(raw) if raw else None
    if raw and wanted not in options and st.session_state.get(seen) != raw:
        not_found(label, param, raw, options, format_func)
    if wanted in options and st.session_state.get(seen) != raw:
        st.session_state[keep] = wanted
    if st.session_state.get(keep) not in options:
        st.session_state[keep] = options[0]
    st.session_state[key] = st.session_state[keep]
    pick = where.selectbox(label, options, key=key, format_func=format_func, help=help)
    if st.query_params.get(param) != pick:
        st.query_params[param] = pick
    st.session_state[seen] = pick
    return pick


def not_found(label: str, param: str, raw: str, options: list[str], format_func=str) -> None:
    """A deep link to something that does not exist: say so, with links to what does, and stop the page."""
    from urllib.parse import quote as q

    from monitor.suggest import closest

    hint = closest(raw, options)
    listed = options if len(options) <= 12 else [*options[:6], *options[-6:]]
    links = ", ".join(f"[{format_func(o)}](?{param}={q(o)})" for o in listed)
    st.error(f"{label} `{raw}` not found" + (f" (did you mean [{format_func(hint)}](?{param}={q(hint)})?)" if hint else "")
             + f". Open one of: {links}", icon=":material/search_off:")
    st.stop()


def week_picker(ctx: Context) -> datetime | None:
    """The reviewed week: `?week=2026-10-05` (or 2026-W41), else the session's choice, else the newest."""
    weeks = ctx.reader.weeks()
    if not weeks:
        return None
    options = [w.date().isoformat() for w in weeks]
    closed = _closed(ctx)

    def parse(raw):
        w = data.parse_week(raw)
        return w.date().isoformat() if w else None

    label = {o: data.week_label(w) + (" · closed" if w in closed else "") for o, w in zip(options, weeks)}
    pick = synced_select(ctx.slot or st.sidebar, "Week", options, key="week", param="week", parse=parse, format_func=label.get,
                         help="ISO weeks, Monday to Sunday, UTC. *closed*: the review of that week is closed.")
    return datetime.fromisoformat(pick).replace(tzinfo=timezone.utc)


def goal_picker(ctx: Context) -> Goal | None:
    names = [g.name for g in ctx.cfg.goals]
    if not names:
        return None
    titles = {g.name: g.title or g.name for g in ctx.cfg.goals}
    return ctx.cfg.goal(synced_select(st, "Goal", names, key="goal", param="goal", format_func=titles.get))


def _closed(ctx: Context) -> dict:
    try:
        return ctx.reader.store.closed_weeks()
    except sa.exc.SQLAlchemyError:
        return {}


def sidebar(ctx: Context) -> None:
    with st.sidebar:
        if ctx.author:
            st.caption(f"Logged in as **{ctx.author}**")
            if _oidc_configured():
                st.button("Log out", on_click=st.logout)
        else:
            st.text_input("Your name", key="author_name", help="Written as the author of your notes.")
        if st.button("Refresh", help="Read the results store again (reads are reused for a minute)."):
            _read.clear()
        st.caption(f"Results: {where(ctx.cfg.store_url)}")


def author(ctx: Context) -> str | None:
    return ctx.author or (st.session_state.get("author_name") or "").strip() or None


# --- the week's cards, shared by This week and Review ---

def week_view(ctx: Context, week: datetime) -> tuple[list[dict], list[dict], dict | None, list[dict]]:
    """(cards, alerts, closed record, changes since closing): a closed week shows its snapshot."""
    live = data.week_cards(ctx.cfg, ctx.reader, week)
    closed = ctx.reader.store.closed_week(week)
    if closed:
        snap = closed["snapshot"]
        return snap["cards"], snap.get("alerts", []), closed, data.changes_since(snap["cards"], live)
    return live, data.drift_alerts(ctx.cfg, ctx.reader, week, live), None, []


def closed_banner(closed: dict | None, changes: list[dict], names: dict[str, str]) -> None:
    if not closed:
        return
    st.info(f"The review of this week was closed by {closed['closed_by'] or 'someone'} at "
            f"{formatting.fmt_time(closed['closed_at'])}. The values shown are the snapshot taken then.")
    if changes:
        with st.expander(f"{len(changes)} value(s) changed since the review was closed", expanded=True):
            st.table(pd.DataFrame([{"goal": names.get(c["goal"], c["goal"]), "what": c["field"], "at closing": c["then"],
                                    "now": c["now"]} for c in changes]).set_index("goal"))
    else:
        st.caption("Nothing has changed in the stored values since.")


def card(c: dict, alerts: list[dict], link: bool = True) -> None:
    """One goal's card: the week's value against the target, change, status, trajectory, trend."""
    with st.container(border=True, key=f"card-{c['goal']}"):
        st.markdown(f"**{c['title']}**  \n`{c['goal']}` · {c['owner'] or 'no owner'}")
        target = formatting.fmt_target(c["direction"], c["target"], c["unit"])
        if not c["weekly"]:
            st.warning("No weekly values: set `review: 1w` on this goal to review it weekly.")
            return
        still = c["change"] == 0
        st.metric(f"Week value (target {target})", formatting.fmt_value(c["value"], c["unit"]),
                  delta=formatting.fmt_delta(c["change"], c["unit"]),
                  delta_color="off" if still else "inverse" if c["direction"] == "at_most" else "normal",
                  delta_arrow="off" if still else "auto",
                  delta_description="vs last week" if c["change"] is not None else None,
                  chart_data=c["trend"] or None, chart_type="line",
                  help="The goal's SQL run on the ISO week (Monday to Sunday, UTC). The line: the last weekly values.")
        badges = st.container(horizontal=True, gap="small")
        with badges:
            st.badge(STATUS_TEXT.get(c["status"], c["status"]), color=STATUS_COLOUR.get(c["status"], "gray"))
            if c["provisional"]:
                st.badge("provisional", color="violet", icon=":material/hourglass_top:",
                         help="The window is younger than the goal's maturity: late data can still change it.")
        if c.get("estimate"):
            e = c["estimate"]
            band = (f" (95 %: {formatting.fmt_value(e['ci_low'], c['unit'])} – {formatting.fmt_value(e['ci_high'], c['unit'])})"
                    if e["ci_low"] is not None else "")
            st.caption(f"Expected from the model's scores: **{formatting.fmt_value(e['value'], c['unit'])}**{band}, "
                       f"{STATUS_TEXT.get(e['status'], e['status'].replace('_', ' '))}. An estimate until the "
                       "week matures; then the realized value replaces it.")
        if c["status"] == "insufficient_data" and c.get("needed"):
            st.caption(f"Too few to tell: the 95 % interval holds the target. It would need n ≥ {c['needed']:,} "
                       f"(this week n = {c['denominator'] or 0:,.0f}).")
        elif c["status"] == "no_data":
            st.caption("No data in this week.")
        t = c.get("trajectory") or {}
        status = t.get("status", "unknown")
        deadline = f" at the deadline {c['deadline']}" if c.get("deadline") else ""
        projected = f"projected {formatting.fmt_value(t.get('projected'), c['unit'])}{deadline}" if t.get("projected") is not None else "no projection yet"
        st.markdown(f":{TRAJECTORY_COLOUR.get(status, 'gray')}-badge[{TRAJECTORY_TEXT.get(status, status)}] {projected}")
        for a in alerts:
            if a["goal"] == c["goal"]:
                st.warning(f"Missed while **{a['model']}** drifted this week "
                           f"({', '.join(a['features']) or 'score'}{' and its score' if a['prediction'] and a['features'] else ''}). "
                           f"Linked: {a['reason']}.", icon=":material/warning:")
        if link:
            st.page_link("goal.py", label="Open the goal", icon=":material/open_in_new:", query_params={"goal": c["goal"]})


def cards_grid(cards: list[dict], alerts: list[dict], columns: int = 3) -> None:
    for i in range(0, len(cards), columns):
        cols = st.columns(columns)
        for col, c in zip(cols, cards[i:i + columns]):
            with col:
                card(c, alerts)


# --- charts ---

def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in ("window_start", "window_end", "week", "t"):
        if col in df:
            df[col] = pd.to_datetime(df[col], utc=True).dt.tz_localize(None)
    return df


def value_format(unit: str) -> str:
    """The d3 format of a goal's values, as the cards write them: ratios as percentages."""
    return ".2%" if unit == "ratio" else ",.1f" if unit == "minutes" else ",.4~g"


def axis_title(unit: str) -> str:
    return "%" if unit == "ratio" else unit


def series_chart(goal: Goal, rows: list[dict], *, traj: dict | None = None, week: datetime | None = None,
                 to_deadline: bool = False) -> alt.LayerChart | None:
    """Values with their Wilson band, the target, the planned path and (towards the deadline) the projection.
    The x-axis spans the data (plus a week): the projection heads off the right edge towards the deadline."""
    rows = [r for r in rows if r["value"] is not None]
    if not rows:
        return None
    df = _frame([{k: r[k] for k in ("window_start", "window_end", "value", "ci_low", "ci_high", "status", "provisional")} for r in rows])
    df["provisional"] = df["provisional"].map({True: "provisional", False: "final"})
    lo, hi = df["window_start"].min(), df["window_end"].max() + pd.Timedelta(days=7 if to_deadline else 0)
    xs = alt.Scale(domain=[lo.isoformat(), hi.isoformat()])
    fmt = value_format(goal.unit)
    x = alt.X("window_start:T", title=None, scale=xs)
    y = alt.Y("value:Q", title=axis_title(goal.unit), axis=alt.Axis(format=fmt.replace(".2%", ".1%")))
    layers = []
    if df["ci_low"].notna().any():
        layers.append(alt.Chart(df).mark_area(opacity=0.18, color="#4c78a8", clip=True).encode(
            x=x, y=alt.Y("ci_low:Q", title=axis_title(goal.unit)), y2="ci_high:Q",
            tooltip=[alt.Tooltip("ci_low:Q", format=fmt), alt.Tooltip("ci_high:Q", format=fmt)]))
    layers.append(alt.Chart(df).mark_line(point=True, color="#4c78a8", clip=True).encode(
        x=x, y=y, shape=alt.Shape("provisional:N", legend=alt.Legend(title=None, orient="bottom")),
        tooltip=[alt.Tooltip("window_start:T", title="window"), alt.Tooltip("value:Q", format=fmt), "status:N", "provisional:N"]))
    layers.append(alt.Chart(pd.DataFrame({"target": [goal.target]})).mark_rule(color="#cf222e", strokeDash=[5, 4]).encode(
        y="target:Q", tooltip=[alt.Tooltip("target:Q", title="target", format=fmt)]))
    path = data.planned_path(goal)
    if path:
        pdf = _frame(path)
        pdf = pdf[(pdf["t"] >= lo) & (pdf["t"] <= hi)]
        if len(pdf):
            layers.append(alt.Chart(pdf).mark_line(color="#8c959f", strokeDash=[2, 3], clip=True).encode(
                x=alt.X("t:T", scale=xs), y="planned:Q", tooltip=[alt.Tooltip("planned:Q", title="planned", format=fmt)]))
    if to_deadline and traj and traj.get("projected") is not None and goal.deadline:
        upto = [r for r in rows if week is None or r["window_end"] <= week + data.WEEK] or rows
        start = {"t": upto[-1]["window_end"], "projection": traj["current"] if traj.get("current") is not None else upto[-1]["value"]}
        proj = _frame([start, {"t": goal.deadline, "projection": traj["projected"]}])
        layers.append(alt.Chart(proj).mark_line(color="#bf8700", strokeDash=[6, 3], point=True, clip=True).encode(
            x=alt.X("t:T", scale=xs), y="projection:Q",
            tooltip=[alt.Tooltip("t:T", title="at"), alt.Tooltip("projection:Q", format=fmt)]))
    if week is not None:
        wk = _frame([{"t": week, "end": week + data.WEEK}])
        wk["end"] = pd.to_datetime(wk["end"], utc=True).dt.tz_localize(None)
        layers.insert(0, alt.Chart(wk).mark_rect(color="#fff8c5", opacity=0.6, clip=True).encode(x=alt.X("t:T", scale=xs), x2="end:T"))
    return alt.layer(*layers).properties(height=260)


def heatmap(cells: list[dict]) -> alt.Chart:
    df = _frame(cells)
    df["week_label"] = df["week"].dt.strftime("%G-W%V")
    # a week where the feature never drifted stays white: colour means drift
    return alt.Chart(df).mark_rect(stroke="#d0d7de", strokeWidth=0.5).encode(
        x=alt.X("week_label:O", title="ISO week", axis=alt.Axis(labelAngle=0, labelExpr="slice(datum.label, 5)")), y=alt.Y("feature:N", title=None),
        color=alt.condition("datum.share_drifted > 0",
                            alt.Color("share_drifted:Q", title="share of windows drifted",
                                      scale=alt.Scale(domain=[0, 1], scheme="orangered"), legend=alt.Legend(format=".0%")),
                            alt.value("#ffffff")),
        tooltip=["feature:N", "week_label:N", "drifted:Q", "windows:Q", alt.Tooltip("max_score:Q", format=".4f"),
                 alt.Tooltip("threshold:Q", format=".4f"), "method:N"],
    ).properties(height=26 * df["feature"].nunique() + 50)


def confusion(cells: list[dict]) -> alt.LayerChart:
    """A confusion matrix: true class down, predicted class across, counts in the cells."""
    df = pd.DataFrame(cells)
    base = alt.Chart(df).encode(x=alt.X("predicted:N", title="predicted"), y=alt.Y("true:N", title="true"))
    return alt.layer(
        base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), title="rows"),
                                tooltip=["true:N", "predicted:N", "count:Q"]),
        base.mark_text().encode(text="count:Q"),
    ).properties(height=40 * df["true"].nunique() + 60)


def line(rows: list[dict], y: str, *, color: str | None = None, rule: float | None = None, title: str | None = None,
         height: int = 200, percent: bool = False, versions: list[dict] | None = None) -> alt.LayerChart:
    """A series over windows; `versions` ({window_start, version}) marks where a new model version starts."""
    df = _frame(rows)
    fmt = ".2%" if percent else ".4g"
    enc = dict(x=alt.X("window_start:T", title=None),
               y=alt.Y(f"{y}:Q", title=title or y, axis=alt.Axis(format=".1%") if percent else alt.Undefined),
               tooltip=[alt.Tooltip("window_start:T", title="window"), alt.Tooltip(f"{y}:Q", format=fmt)]
               + ([f"{color}:N"] if color else []))
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=None)
    layers = [alt.Chart(df).mark_line(point=len(df) < 60).encode(**enc)]
    if rule is not None:
        layers.append(alt.Chart(pd.DataFrame({"r": [rule]})).mark_rule(color="#cf222e", strokeDash=[5, 4]).encode(y="r:Q"))
    return alt.layer(*layers, *version_marks(versions)).properties(height=height)


def version_marks(versions: list[dict] | None) -> list[alt.Chart]:
    """Layers that mark where a new model version starts ({window_start, version, label}): a dotted rule and its label."""
    if not versions:
        return []
    marks = _frame(versions)
    return [alt.Chart(marks).mark_rule(color="#bc4c00", strokeDash=[2, 2]).encode(
                x="window_start:T", tooltip=[alt.Tooltip("window_start:T", title="from"), alt.Tooltip("version:N", title="version")]),
            alt.Chart(marks).mark_text(align="left", dx=3, dy=-4, color="#bc4c00", fontSize=10).encode(
                x="window_start:T", y=alt.value(0), text="label:N")]


def quality_chart(long: list[dict], floors: dict[str, float | None]) -> alt.LayerChart:
    """Quality per window and metric, each floor a dashed rule, the windows past their floor as red points."""
    df = _frame(long)
    base = alt.Chart(df).encode(x=alt.X("window_start:T", title=None), y=alt.Y("value:Q", title="quality"),
                                color=alt.Color("metric:N", title=None),
                                tooltip=[alt.Tooltip("window_start:T", title="window"), "metric:N",
                                         alt.Tooltip("value:Q", format=".4f"), "floor:N"])
    layers = [base.mark_line(point=len(df) < 120)]
    bad = df[df["floor"] == "breached"]
    if len(bad):
        layers.append(alt.Chart(bad).mark_point(color="#cf222e", size=90, filled=True, shape="diamond").encode(
            x="window_start:T", y="value:Q", tooltip=[alt.Tooltip("window_start:T", title="window"), "metric:N",
                                                      alt.Tooltip("value:Q", format=".4f"), "floor:N"]))
    rules = pd.DataFrame([{"metric": k, "floor": v} for k, v in floors.items() if v is not None and k in set(df["metric"])])
    if len(rules):
        layers.append(alt.Chart(rules).mark_rule(strokeDash=[5, 4]).encode(y="floor:Q", color=alt.Color("metric:N", title=None),
                                                                           tooltip=["metric:N", alt.Tooltip("floor:Q", title="floor")]))
    return alt.layer(*layers).properties(height=220)


def estimate_chart(cells: list[dict], versions: list[dict] | None = None) -> alt.LayerChart:
    """One metric over the windows: the estimate from the scores as a band (its 95 % interval) and a
    dashed line, the realized value (once the labels matured) as a solid line; `versions` as in `line`."""
    df = _frame(cells)
    tip = [alt.Tooltip("window_start:T", title="window"), alt.Tooltip("estimate:Q", format=".4f"),
           alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f"),
           alt.Tooltip("realized:Q", format=".4f"), "method:N"]
    x = alt.X("window_start:T", title=None)
    band = alt.Chart(df).mark_area(opacity=0.25, color="#0969da").encode(x=x, y=alt.Y("low:Q", title=df["metric"].iloc[0]),
                                                                        y2="high:Q", tooltip=tip)
    est = alt.Chart(df).mark_line(strokeDash=[5, 4], color="#0969da", point=len(df) < 120).encode(x=x, y="estimate:Q", tooltip=tip)
    layers = [band, est]
    real = df[df["realized"].notna()]
    if len(real):
        layers.append(alt.Chart(real).mark_line(color="#1a7f37", point=len(real) < 120).encode(x=x, y="realized:Q", tooltip=tip))
    first, last = cells[0]["window_start"], cells[-1]["window_start"]  # a version older than the estimates stretches no axis
    return alt.layer(*layers, *version_marks([v for v in versions or () if first <= v["window_start"] <= last])).properties(height=220)


def now() -> datetime:
    """The app's clock: `monitor app --now TS` pins it (MONITOR_NOW) for a world pinned in the past."""
    import os

    pinned = os.environ.get("MONITOR_NOW")
    if pinned:
        from monitor.durations import parse_timestamp
        return parse_timestamp(pinned)
    return datetime.now(timezone.utc)


# --- the Evidently report of one model window ---

def _html_of(report) -> str:
    if isinstance(report, bytes):
        return report.decode()
    if isinstance(report, Path):
        return report.read_text()
    if isinstance(report, str):
        return Path(report).read_text() if len(report) < 4096 and report.endswith(".html") and Path(report).is_file() else report
    for attr in ("get_html_str", "get_html"):
        if hasattr(report, attr):
            fn = getattr(report, attr)
            try:
                return fn(as_iframe=False)
            except TypeError:
                return fn()
    raise TypeError(f"evidently_report returned {type(report).__name__}, not HTML")


@st.cache_data(ttl=3600, show_spinner="Building the Evidently report on a sample of the window ...", max_entries=16)
def evidently_html(cfg_key: tuple, model: str, window_start: datetime, window_end: datetime, _cfg: Config) -> tuple[str | None, str | None]:
    """(html, None), or (None, why it is not available)."""
    from monitor.db import describe_error, make_engine

    from .drift_report import evidently_report
    from monitor.windows import Window

    try:
        source = make_engine(_cfg.database_url, _cfg.statement_timeout, _cfg.parquet)
        return _html_of(evidently_report(source, _cfg.model(model), Window(window_start, window_end))), None
    except Exception as e:  # the source database may be down, or the window empty
        log.exception("evidently report failed")
        return None, f"building it failed: {describe_error(e)}"
