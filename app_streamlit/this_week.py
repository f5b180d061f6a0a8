"""This week: one card per goal, the week's value against its target."""
import streamlit as st

from app_streamlit import data, ui

ctx = st.session_state["_ctx"]
week = ui.week_picker(ctx)
st.title("This week")
if week is None:
    st.info(ui.NO_RESULTS)
    st.stop()
cards, alerts, closed, changes = ui.week_view(ctx, week)
st.caption(f"{data.week_label(week)} · ISO week, Monday to Sunday, UTC · "
           f"{sum(c['status'] == 'missed' for c in cards)} of {len(cards)} goals missed")
ui.closed_banner(closed, changes, {c["goal"]: c["title"] for c in cards})
if not cards:
    st.info("The config has no goals.")
ui.cards_grid(cards, alerts)
if any(c["provisional"] for c in cards):
    st.caption("*provisional*: the window is younger than the goal's `maturity` (cohorts not yet mature, labels still "
               "arriving); its value can still change.")
