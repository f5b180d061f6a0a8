"""The weekly review: notes, decisions and action items per week and goal, closed weeks with their
snapshot, and the review exported as Markdown or HTML.

Items live in the results database (`monitor_review_items`), a closed week in
`monitor_review_weeks`; the review app is their only writer.
"""
from __future__ import annotations

import html
import json
from datetime import date, datetime, timedelta

from .conventions import STATUS_TEXT, TRAJECTORY_TEXT
from .formatting import fmt_date, fmt_delta, fmt_target, fmt_time, fmt_value
from .store import REOPENED, ReviewError, Store

KINDS = ("note", "decision", "action")
WEEK = timedelta(weeks=1)
GENERAL = ""  # the goal of an item that is about no one goal


def _who(name: str | None) -> str | None:
    return (name or "").strip() or None


def add_item(store: Store, *, week_start: datetime, goal: str, kind: str, text: str, author: str | None,
             now: datetime, owner: str | None = None, due: date | None = None) -> int:
    """Store a note, decision or action item of a week's review; returns its id."""
    text = (text or "").strip()
    if kind not in KINDS:
        raise ReviewError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not text:
        raise ReviewError("write something first: the text is empty")
    return store.add_review_item(week_start=week_start, goal=goal, kind=kind, text=text, author=_who(author),
                                 owner=_who(owner) if kind == "action" else None, due=due if kind == "action" else None,
                                 done=False, created_at=now, updated_at=None)


def set_done(store: Store, item_id: int, done: bool, now: datetime) -> None:
    """Mark an action item done (or open again)."""
    store.set_review_done(item_id, done, now)


def update_item(store: Store, item_id: int, *, text: str, owner: str | None = None, due: date | None = None) -> None:
    """Change an item's text (and an action item's owner and due date) while its week is open."""
    text = (text or "").strip()
    if not text:
        raise ReviewError("write something first: the text is empty (to remove the item, delete it)")

    def values(item: dict) -> dict:
        action = item["kind"] == "action"
        # `updated_at` is left alone: it says when an action was ticked, which carries it or not
        return dict(text=text, owner=_who(owner) if action else None, due=due if action else None)
    store.change_review_item(item_id, values)


def delete_item(store: Store, item_id: int) -> None:
    """Remove an item while its week is open."""
    store.change_review_item(item_id, None)


def week_items(store: Store, week_start: datetime) -> list[dict]:
    """The week's notes, decisions and action items (not its reopening records)."""
    return store.review_items(week_start, KINDS)


def carried_actions(store: Store, week_start: datetime) -> list[dict]:
    """Action items of earlier weeks that were still open when this week began (open now, or done since)."""
    return store.carried_actions(week_start)


def close_week(store: Store, week_start: datetime, snapshot: dict, by: str | None, now: datetime) -> dict:
    """Freeze a week: store its snapshot; a week is closed once (a second close raises ReviewError)."""
    store.close_week(week_start, snapshot, _who(by), now)
    return store.closed_week(week_start)


def reopen_week(store: Store, week_start: datetime, by: str | None, now: datetime) -> dict:
    """Open a closed week again: its notes can be edited and it can be closed anew. The reopening is
    recorded (who, when) with the closed record and its frozen snapshot, which stay readable."""
    return store.reopen_week(week_start, _who(by), now)


def reopenings(store: Store, week_start: datetime) -> list[dict]:
    """Every reopening of the week, oldest first: who reopened it, when, and the closed record it undid."""
    return [{"reopened_by": r["author"], "reopened_at": r["created_at"], **json.loads(r["text"])}
            for r in store.review_items(week_start, (REOPENED,))]


def is_overdue(it: dict, today: date) -> bool:
    """An open action item whose due date has passed."""
    due = it.get("due")
    if isinstance(due, str):
        due = date.fromisoformat(due[:10])
    return it.get("kind") == "action" and not it.get("done") and due is not None and due < today


_MD_SPECIAL = "\\`*_[]|~!"  # inline Markdown: emphasis, code, links and images, table cells


def md_escape(text: str) -> str:
    """User text shown as itself in Markdown: HTML escaped, Markdown punctuation backslashed, one line."""
    text = html.escape(str(text), quote=False)
    text = "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)
    return " ".join(text.split())


def status_text(card: dict) -> str:
    """`missed`, or `insufficient data (needs n ≥ 7,680)`, with `provisional` when it is."""
    text = STATUS_TEXT.get(card["status"], card["status"])
    if card["status"] == "insufficient_data" and card.get("needed"):
        text += f" (needs n ≥ {card['needed']:,})"
    if card.get("provisional"):
        text += ", provisional"
    return text


def trajectory_text(t: dict | None) -> str:
    """`on track`, `off track` ... of a card's trajectory."""
    status = (t or {}).get("status", "unknown")
    return TRAJECTORY_TEXT.get(status, status.replace("_", " "))


# --- export ---

def _item_line(it: dict, names: dict[str, str], today: date | None = None) -> str:
    m = md_escape
    meta = [x for x in (m(it["author"]) if it.get("author") else "", fmt_time(it.get("created_at"))) if x]
    if it["kind"] == "action":
        box = "[x]" if it.get("done") else "[ ]"
        extra = [f"owner {m(it['owner'])}" if it.get("owner") else "", f"due {fmt_date(it['due'])}" if it.get("due") else "",
                 "**overdue**" if today and is_overdue(it, today) else ""]
        extra = ", ".join(e for e in extra if e)
        return f"- {box} {m(it['text'])}" + (f" ({extra})" if extra else "") + (f" — {', '.join(meta)}" if meta else "")
    return f"- **{it['kind']}**: {m(it['text'])}" + (f" — {', '.join(meta)}" if meta else "")


def to_markdown(doc: dict) -> str:
    """The week's review as Markdown, for e-mail or a wiki."""
    names = {c["goal"]: md_escape(c["title"] or c["goal"]) for c in doc["cards"]}
    today = doc.get("today")
    out = [f"# Goal review — {doc['week_label']}", ""]
    closed = doc.get("closed")
    if closed:
        out.append(f"Closed by {md_escape(closed.get('closed_by') or 'someone')} at {fmt_time(closed['closed_at'])}; "
                   "the values are the snapshot taken then.")
    else:
        out.append("Open: the values can still change as late data arrives.")
    out += ["", "| goal | value | target | change vs last week | status | trajectory | projected at deadline |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in doc["cards"]:
        t = c.get("trajectory") or {}
        out.append(f"| {names[c['goal']]} | {fmt_value(c['value'], c['unit'])} | {fmt_target(c['direction'], c['target'], c['unit'])} "
                   f"| {fmt_delta(c.get('change'), c['unit']) or '–'} | {status_text(c)} | {trajectory_text(t)} "
                   f"| {fmt_value(t.get('projected'), c['unit'])} |")
    if doc.get("alerts"):
        out += ["", "## Goals missed while the model behind them drifted", ""]
        out += [f"- {md_escape(a['text'])}" for a in doc["alerts"]]
    if doc.get("changes"):
        out += ["", "## Changed since the review was closed", ""]
        out += [f"- {names.get(ch['goal'], md_escape(ch['goal']))}: {ch['field']} {md_escape(ch['then'])} → {md_escape(ch['now'])}"
                for ch in doc["changes"]]
    if doc.get("carried"):
        out += ["", "## Open action items from earlier weeks", ""]
        out += [_item_line(it, names, today) + (f" \\[{names.get(it['goal'], 'general')}\\]" if it.get("goal") else "")
                for it in doc["carried"]]
    by_goal: dict[str, list[dict]] = {}
    for it in doc["items"]:
        by_goal.setdefault(it["goal"], []).append(it)
    for goal in [c["goal"] for c in doc["cards"]] + [GENERAL]:
        items = by_goal.get(goal)
        if not items:
            continue
        out += ["", f"## {names.get(goal, 'General') if goal else 'General'}", ""]
        for kind in KINDS:
            out += [_item_line(it, names, today) for it in items if it["kind"] == kind]
    if not doc["items"]:
        out += ["", "_No notes, decisions or action items were recorded this week._"]
    return "\n".join(out) + "\n"


def to_html(doc: dict) -> str:
    """The week's review as a self-contained HTML page (tables and lists, inline style) for e-mail."""
    e = html.escape
    names = {c["goal"]: c["title"] or c["goal"] for c in doc["cards"]}
    colour = {"met": "#1a7f37", "missed": "#cf222e", "insufficient_data": "#9a6700", "no_data": "#57606a"}
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>Goal review — {e(doc['week_label'])}</title></head>"
              "<body style='font-family:sans-serif;max-width:60em'>"),
             f"<h1>Goal review — {e(doc['week_label'])}</h1>"]
    closed = doc.get("closed")
    parts.append(f"<p>Closed by {e(closed.get('closed_by') or 'someone')} at {e(fmt_time(closed['closed_at']))}; "
                 "the values are the snapshot taken then.</p>" if closed else
                 "<p>Open: the values can still change as late data arrives.</p>")
    parts.append("<table border='1' cellpadding='4' cellspacing='0' style='border-collapse:collapse'><tr><th>goal</th><th>value</th>"
                 "<th>target</th><th>change vs last week</th><th>status</th><th>trajectory</th><th>projected at deadline</th></tr>")
    for c in doc["cards"]:
        t = c.get("trajectory") or {}
        parts.append(f"<tr><td>{e(names[c['goal']])}</td><td>{e(fmt_value(c['value'], c['unit']))}</td>"
                     f"<td>{e(fmt_target(c['direction'], c['target'], c['unit']))}</td><td>{e(fmt_delta(c.get('change'), c['unit']) or '–')}</td>"
                     f"<td style='color:{colour.get(c['status'], '#57606a')}'>{e(status_text(c))}</td>"
                     f"<td>{e(trajectory_text(t))}</td><td>{e(fmt_value(t.get('projected'), c['unit']))}</td></tr>")
    parts.append("</table>")

    def items_html(items):
        li = []
        for it in items:
            meta = ", ".join(m for m in (it.get("author"), fmt_time(it.get("created_at"))) if m)
            if it["kind"] == "action":
                extra = ", ".join(x for x in (f"owner {it['owner']}" if it.get("owner") else "",
                                              f"due {fmt_date(it['due'])}" if it.get("due") else "") if x)
                late = " <b style='color:#cf222e'>overdue</b>" if doc.get("today") and is_overdue(it, doc["today"]) else ""
                li.append(f"<li>{'☑' if it.get('done') else '☐'} {e(it['text'])}{' (' + e(extra) + ')' if extra else ''}{late}"
                          f"{' — ' + e(meta) if meta else ''}</li>")
            else:
                li.append(f"<li><b>{e(it['kind'])}</b>: {e(it['text'])}{' — ' + e(meta) if meta else ''}</li>")
        return "<ul>" + "".join(li) + "</ul>"

    if doc.get("alerts"):
        parts.append("<h2>Goals missed while the model behind them drifted</h2><ul>"
                     + "".join(f"<li>{e(a['text'])}</li>" for a in doc["alerts"]) + "</ul>")
    if doc.get("changes"):
        parts.append("<h2>Changed since the review was closed</h2><ul>" + "".join(
            f"<li>{e(names.get(ch['goal'], ch['goal']))}: {e(ch['field'])} {e(str(ch['then']))} → {e(str(ch['now']))}</li>"
            for ch in doc["changes"]) + "</ul>")
    if doc.get("carried"):
        parts.append("<h2>Open action items from earlier weeks</h2>" + items_html(doc["carried"]))
    by_goal: dict[str, list[dict]] = {}
    for it in doc["items"]:
        by_goal.setdefault(it["goal"], []).append(it)
    for goal in [c["goal"] for c in doc["cards"]] + [GENERAL]:
        items = by_goal.get(goal)
        if items:
            ordered = [it for kind in KINDS for it in items if it["kind"] == kind]
            parts.append(f"<h2>{e(names.get(goal, 'General') if goal else 'General')}</h2>" + items_html(ordered))
    if not doc["items"]:
        parts.append("<p><i>No notes, decisions or action items were recorded this week.</i></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
