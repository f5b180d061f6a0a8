"""Review: notes, decisions and action items per goal, carried actions, closing the week, export."""
import pandas as pd
import streamlit as st

from app_streamlit import data, ui
from monitor import formatting, review

ctx = st.session_state["_ctx"]
store = ctx.reader.store
week = ui.week_picker(ctx)
if week is None:
    st.title("Review")
    st.info(ui.NO_RESULTS)
    st.stop()
st.title(f"Review — {data.week_label(week)}")
cards, alerts, closed, changes = ui.week_view(ctx, week)
names = {c["goal"]: c["title"] for c in cards}
ui.closed_banner(closed, changes, names)
if closed:
    snap = closed["snapshot"]
    items, carried = snap.get("items", []), snap.get("carried", [])
else:
    items, carried = review.week_items(store, week), review.carried_actions(store, week)

st.dataframe(pd.DataFrame([{
    "goal": c["title"], "value": formatting.fmt_value(c["value"], c["unit"]),
    "target": formatting.fmt_target(c["direction"], c["target"], c["unit"]),
    "change": formatting.fmt_delta(c["change"], c["unit"]) or "–", "status": review.status_text(c),
    "trajectory": review.trajectory_text(c.get("trajectory")),
    "projected": formatting.fmt_value((c.get("trajectory") or {}).get("projected"), c["unit"])} for c in cards]), hide_index=True)
for a in alerts:
    st.warning(a["text"], icon=":material/warning:")


def _toggle(item_id: int, key: str) -> None:
    review.set_done(store, item_id, st.session_state[key], ui.now())


def _edit(it: dict) -> None:
    """Edit or delete one item of this (open) week."""
    i = it["id"]
    with st.popover("Edit", icon=":material/edit:", key=f"edit-{i}"):
        with st.form(key=f"edit-form-{i}", border=False):
            text = st.text_area("Text", value=it["text"], key=f"edit-text-{i}", height=80)
            owner, due = None, None
            if it["kind"] == "action":
                c1, c2 = st.columns(2)
                owner = c1.text_input("Owner", value=it.get("owner") or "", key=f"edit-owner-{i}")
                due = c2.date_input("Due", value=it.get("due"), key=f"edit-due-{i}")
            save, delete = st.columns(2)
            if save.form_submit_button("Save", type="primary", key=f"save-{i}"):
                _change(review.update_item, store, i, text=text, owner=owner, due=due)
            if delete.form_submit_button("Delete", key=f"delete-{i}"):
                _change(review.delete_item, store, i)


def _change(fn, *args, **kwargs) -> None:
    """Make a review change: a refused one is said on the page, a made one reruns it."""
    try:
        fn(*args, **kwargs)
    except review.ReviewError as e:
        st.error(str(e))
    else:
        st.rerun()


def show_items(rows: list[dict], editable: bool, where: str, edit: bool = False) -> None:
    m, today = review.md_escape, ui.now().date()
    for it in rows:
        meta = " · ".join(x for x in (m(it.get("author") or "anonymous"), formatting.fmt_time(it.get("created_at"))) if x)
        if it["kind"] == "action":
            extra = ", ".join(x for x in (f"owner **{m(it['owner'])}**" if it.get("owner") else "",
                                          f"due {formatting.fmt_date(it['due'])}" if it.get("due") else "") if x)
            late = " :red[**overdue**]" if review.is_overdue(it, today) else ""
            key = f"done-{where}-{it['id']}"
            st.checkbox(f"{m(it['text'])}" + (f" ({extra})" if extra else "") + late, value=bool(it["done"]), key=key,
                        disabled=not editable, on_change=_toggle, args=(it["id"], key))
        else:
            icon = ":material/edit_note:" if it["kind"] == "note" else ":material/gavel:"
            st.markdown(f"{icon} **{it['kind'].capitalize()}:** {m(it['text'])}")
        if edit and editable:
            c1, c2 = st.columns([4, 1], vertical_alignment="center")
            c1.caption(meta)
            with c2:
                _edit(it)
        else:
            st.caption(meta)


st.subheader("Open action items from earlier weeks")
if carried:
    show_items([{**it, "author": f"{it.get('author') or 'anonymous'} · week of {formatting.fmt_date(it['week_start'])}"
                 + (f" · {names.get(it['goal'], it['goal'])}" if it.get("goal") else "")} for it in carried],
               editable=not closed, where="carried")
else:
    st.caption("None: every earlier action item was done.")

for goal, title in [*names.items(), (review.GENERAL, "General")]:
    mine = [it for it in items if it["goal"] == goal]
    with st.container(border=True, key=f"review-{goal or 'general'}"):
        st.markdown(f"#### {title}")
        show_items([it for kind in review.KINDS for it in mine if it["kind"] == kind], editable=not closed, where=goal,
                   edit=True)
        if not mine:
            st.caption("Nothing recorded yet.")
        if closed:
            continue
        with st.expander("Add a note, decision or action item"), \
                st.form(key=f"add-{goal or 'general'}", clear_on_submit=True, border=False):
            kind = st.radio("Kind", review.KINDS, horizontal=True, key=f"kind-{goal}")
            text = st.text_area("Text", key=f"text-{goal}", height=80, placeholder="What was noticed, decided or is to be done")
            c1, c2 = st.columns(2)
            owner = c1.text_input("Owner (action items)", key=f"owner-{goal}")
            due = c2.date_input("Due (action items)", value=None, key=f"due-{goal}")
            if st.form_submit_button("Add", type="primary", key=f"add-btn-{goal}"):
                _change(review.add_item, store, week_start=week, goal=goal, kind=kind, text=text, author=ui.author(ctx),
                        now=ui.now(), owner=owner, due=due)

doc = {"week_label": data.week_label(week), "closed": closed, "cards": cards, "items": items, "carried": carried,
       "changes": changes, "alerts": alerts, "today": ui.now().date()}
st.subheader("Export")
iso = week.isocalendar()
stem = f"review-{iso.year}-W{iso.week:02d}"
c1, c2, _ = st.columns([1, 1, 3])
c1.download_button("Markdown", review.to_markdown(doc), file_name=f"{stem}.md", mime="text/markdown", on_click="ignore")
c2.download_button("HTML (for e-mail)", review.to_html(doc), file_name=f"{stem}.html", mime="text/html", on_click="ignore")

def _confirm(key: str, question: str, yes: str, action) -> None:
    """A two-step button: the first click asks, the second does it (or Cancel)."""
    if st.session_state.get(key) != week:
        return
    st.warning(question, icon=":material/help:")
    c1, c2, _ = st.columns([1, 1, 3])
    if c1.button(yes, type="primary", key=f"{key}-yes"):
        st.session_state.pop(key, None)
        _change(action)
    if c2.button("Cancel", key=f"{key}-cancel"):
        st.session_state.pop(key, None)
        st.rerun()


def _close() -> None:
    review.close_week(store, week, data.snapshot(cards, items, carried, alerts), ui.author(ctx), ui.now())


def _reopen() -> None:
    review.reopen_week(store, week, ui.author(ctx), ui.now())
    ui._read.clear()


history = review.reopenings(store, week)
if history:
    with st.expander(f"Reopened {len(history)} time(s): the snapshots taken at each closing are kept"):
        for h in history:
            st.markdown(f"- reopened by **{review.md_escape(h['reopened_by'] or 'someone')}** at {formatting.fmt_time(h['reopened_at'])}; "
                        f"it had been closed by {review.md_escape(h['closed_by'] or 'someone')} at {formatting.fmt_time(h['closed_at'])}")
            cards_then = (h.get("snapshot") or {}).get("cards") or []
            if cards_then:
                st.dataframe(pd.DataFrame([{"goal": c.get("title") or c.get("goal"), "value": formatting.fmt_value(c.get("value"), c.get("unit", "")),
                                            "status": c.get("status")} for c in cards_then]), hide_index=True)

if not closed:
    st.subheader("Close the review")
    st.caption("Closing freezes the week: its values are kept as shown now, even if late data changes them later, "
               "and the notes can no longer be edited. Open action items are carried into the next week. "
               "A closed week can be reopened.")
    if st.button("Close the review of this week", type="primary", key="close-week"):
        st.session_state["confirm-close"] = week
    _confirm("confirm-close", f"Close the review of {data.week_label(week)}? Its values are frozen as shown now.",
             "Yes, close the review", _close)
else:
    st.subheader("Reopen the review")
    st.caption("Reopening lets the week's notes be edited again and the week be closed anew; who reopened it and when "
               "is recorded, and the snapshot taken at closing is kept.")
    if st.button("Reopen this week", key="reopen-week"):
        st.session_state["confirm-reopen"] = week
    _confirm("confirm-reopen", f"Reopen the review of {data.week_label(week)}? It was closed by "
             f"{closed['closed_by'] or 'someone'} at {formatting.fmt_time(closed['closed_at'])}.", "Yes, reopen it", _reopen)
