"""The weekly goal review app: `monitor app --config FILE` runs `streamlit run` on this file."""
import logging
import sys
from pathlib import Path

try:
    import app_streamlit  # noqa: F401  (installed, or run from the repository with the package on the path)
except ImportError:  # `streamlit run app_streamlit/Home.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
import streamlit as st

from app_streamlit import ui

# the icon ships with the app: an emoji or :material/...: icon is fetched from an outside host
st.set_page_config(page_title="Goal review", page_icon=str(Path(__file__).with_name("favicon.png")), layout="wide")
ctx = ui.boot()
ctx.slot = st.sidebar.container()
st.session_state["_ctx"] = ctx
pages = [
    st.Page("this_week.py", title="This week", icon=":material/calendar_view_week:", default=True),
    st.Page("goal.py", title="Goal", icon=":material/flag:", url_path="goal"),
    st.Page("models.py", title="Models", icon=":material/model_training:", url_path="models"),
    st.Page("review.py", title="Review", icon=":material/edit_note:", url_path="review"),
    st.Page("runbook.py", title="Runbook", icon=":material/menu_book:", url_path="runbook"),
]
page = st.navigation(pages)
if page.url_path == "" and st.query_params.get("goal"):  # dashboards and alerts link to /?goal=NAME
    st.switch_page("goal.py", query_params=dict(st.query_params))
if page.url_path == "" and st.query_params.get("model"):  # model alerts link to /?model=NAME
    st.switch_page("models.py", query_params=dict(st.query_params))
ui.sidebar(ctx)
try:
    page.run()
except sa.exc.SQLAlchemyError as e:
    ui.database_down(ctx.cfg.store_url, e)
except Exception as e:  # never a traceback on the page; the server log keeps it
    logging.getLogger("monitor.app").exception("page failed")
    st.error(f"This page failed: {type(e).__name__}: {e}")
