"""Runbook: what each alert means and what to do, as `monitor build` writes it; alerts link to /runbook#<alert>."""
import streamlit as st

from monitor import alerts

ctx = st.session_state["_ctx"]
text = alerts.runbook(ctx.cfg)
st.markdown("\n".join(line for line in text.splitlines() if not line.startswith("<!--")))
