"""The built-in notifier, for teams with no Alertmanager.

Each cycle it evaluates the alerts' conditions on the exported view of the stored results: the
same condition objects (`monitor.spec`) that render the rules' PromQL, evaluated over the
exported samples, so a rule and the notifier cannot disagree and notifies on state change only: a breach
when a condition starts firing (after its `for`), a recovery when it stops. State lives in the
results store (`monitor_notify_state`): one row per condition (ok, pending, firing and since
when) and one per channel and condition (what that channel was last told), so a restart sends
nothing twice and a channel that was down catches up next cycle. A channel is retried with
backoff and its failure logged; nothing here fails the cycle.
"""
from __future__ import annotations

import hashlib
import json
import logging
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from . import alertdefs as al
from .config import Config, Notify
from .series import ResultsCollector
from .spec import Samples
from .store import Store

log = logging.getLogger("monitor.notify")

OK, PENDING, FIRING = "ok", "pending", "firing"
TELEGRAM_API = "https://api.telegram.org"


@dataclass
class Event:
    """One notification: a condition that started (firing) or stopped (resolved)."""

    status: str           # firing or resolved
    alert: str
    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    at: datetime

    def payload(self) -> dict:
        return {"source": "monitor", "status": self.status, "alert": self.alert, "labels": self.labels,
                "annotations": self.annotations, "value": self.value, "at": self.at.isoformat()}

    def text(self) -> str:
        a = self.annotations
        head = "FIRING" if self.status == "firing" else "RESOLVED"
        lines = [f"[{head}] {self.alert}: {a.get('summary', '')}"]
        facts = [f"value {a['value']}" if a.get("value") else "", f"target {a['target']}" if a.get("target") else "",
                 f"window {a['window']}" if a.get("window") else ""]
        if any(facts):
            lines.append(" · ".join(f for f in facts if f))
        lines.append(f"owner {self.labels.get('owner', '')}, severity {self.labels.get('severity', '')}")
        for k in ("review_url", "runbook_url"):
            if a.get(k):
                lines.append(f"{k.split('_')[0]}: {a[k]}")
        return "\n".join(lines)


def samples(cfg: Config, store: Store) -> Samples:
    """The exported view of the stored results, as the alerts' conditions read it."""
    rows = []
    for fam in ResultsCollector(cfg, store).collect():
        for s in fam.samples:
            rows.append((s.name, dict(s.labels), s.value))
    return Samples(rows)


def condition_key(a: al.Alert) -> str:
    return a.alert + "|" + ",".join(f"{k}={v}" for k, v in a.subject.items())


def channel_id(ch: Notify, index: int) -> str:
    """A stable id of a channel that holds no secret."""
    ident = json.dumps([ch.kind, ch.url, ch.chat_id, ch.host, ch.port, ch.to], default=str)
    return f"{ch.kind}:{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


# --- state ------------------------------------------------------------------------------------

def load_state(store: Store) -> dict[str, dict]:
    return store.notify_state()


def save_state(store: Store, key: str, state: str, at: datetime, detail: str | None = None) -> None:
    store.save_notify_state(key, state, at, detail)


def evaluate(cfg: Config, store: Store, now: datetime, state: dict[str, dict]) -> list[tuple[al.Alert, str, float | None, Samples]]:
    """Each alert's new condition state (ok, pending, firing) and value, saving the changes."""
    smp = samples(cfg, store)
    ts = now.timestamp()
    out = []
    for a in al.all_alerts(cfg):
        if a.kind == "exporter_down":  # only Prometheus can see that
            continue
        key = "cond|" + condition_key(a)
        value = a.value(smp, ts)
        prev = state.get(key)
        prev_state = prev["state"] if prev else OK
        if value is None:
            new = OK
        elif prev_state == FIRING or prev_state == PENDING and now - prev["changed_at"] >= a.for_:
            new = FIRING
        elif prev_state == PENDING:
            new = PENDING
        else:
            new = FIRING if not a.for_ else PENDING
        # A resolved condition keeps its last firing value, for the recovery's text.
        last = value if value is not None else (json.loads(prev["detail"]) if prev and prev.get("detail") else None)
        if new != prev_state or prev is None or (value is not None and prev.get("detail") != json.dumps(value)):
            since = now if new != prev_state or prev is None else prev["changed_at"]
            detail = None if last is None else json.dumps(last)
            save_state(store, key, new, since, detail)
            state[key] = {"state": new, "changed_at": since, "detail": detail}
        out.append((a, new, last, smp))
    return out


# --- channels ---------------------------------------------------------------------------------

def _post_json(url: str, body: dict, timeout: float) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "monitor-notifier"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        if r.status >= 300:
            raise OSError(f"HTTP {r.status}")
        return r.read()


def send(ch: Notify, ev: Event, timeout: float = 10.0) -> None:
    """Deliver one event on one channel; raises on failure."""
    if ch.kind == "webhook":
        _post_json(_need(ch, "url"), ev.payload(), timeout)
    elif ch.kind == "slack":
        _post_json(_need(ch, "url"), {"text": ev.text()}, timeout)
    elif ch.kind == "telegram":
        base = (ch.url or TELEGRAM_API).rstrip("/")
        body = _post_json(f"{base}/bot{_need(ch, 'token')}/sendMessage",
                          {"chat_id": _need(ch, "chat_id"), "text": ev.text(), "disable_web_page_preview": True}, timeout)
        if not json.loads(body or b"{}").get("ok", False):
            raise OSError(f"Telegram refused the message: {body[:200]!r}")
    elif ch.kind == "smtp":
        msg = EmailMessage()
        msg["Subject"] = ev.text().splitlines()[0]
        msg["From"] = ch.sender or "monitor@localhost"
        msg["To"] = ", ".join(ch.to)
        msg.set_content(ev.text())
        if not ch.to:
            raise ValueError("smtp channel without recipients (`to`)")
        cls = smtplib.SMTP_SSL if ch.port == 465 else smtplib.SMTP
        with cls(_need(ch, "host"), ch.port, timeout=timeout) as s:
            if ch.port == 587:
                s.starttls()
            if ch.username:
                s.login(ch.username, ch.password or "")
            s.send_message(msg)
    else:  # pragma: no cover - the config allows no other kind
        raise ValueError(f"unknown channel kind {ch.kind}")


def _need(ch: Notify, field: str) -> str:
    value = getattr(ch, field)
    if not value:
        raise ValueError(f"{ch.kind} channel without `{field}`")
    return value


def deliver(ch: Notify, ev: Event, attempts: int, backoff: float, timeout: float,
            sleep: Callable[[float], None]) -> str | None:
    """Send with retries and exponential backoff; None on success, else the last error."""
    error = None
    for i in range(attempts):
        try:
            send(ch, ev, timeout)
            return None
        except (OSError, smtplib.SMTPException, ValueError, urllib.error.URLError) as e:
            error = f"{type(e).__name__}: {e}"
            log.warning("notification to %s failed (attempt %d of %d): %s", ch.kind, i + 1, attempts, error)
            if isinstance(e, ValueError):
                break  # a misconfigured channel does not heal by waiting
            if i + 1 < attempts:
                sleep(backoff * 2 ** i)
    return error


# --- the cycle --------------------------------------------------------------------------------

def notify_cycle(cfg: Config, store: Store, now: datetime, *, attempts: int = 3, backoff: float = 1.0,
                 timeout: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> list[Event]:
    """Evaluate every condition and notify each channel of changes; never raises. Returns the events sent."""
    sent: list[Event] = []
    if not cfg.notify:
        return sent
    try:
        state = load_state(store)
        results = evaluate(cfg, store, now, state)
        for i, ch in enumerate(cfg.notify):
            cid = channel_id(ch, i)
            for a, cond, value, smp in results:
                key = f"sent|{cid}|{condition_key(a)}"
                told = state.get(key, {}).get("state", OK)
                want = FIRING if cond == FIRING else OK
                if want == told:
                    continue
                ev = Event(status="firing" if want == FIRING else "resolved", alert=a.alert, key=condition_key(a),
                           labels={"alertname": a.alert, **a.labels},
                           annotations=a.record(al.notifier_fmt(smp, value))["annotations"], value=value, at=now)
                error = deliver(ch, ev, attempts, backoff, timeout, sleep)
                if error is None:
                    save_state(store, key, want, now, ev.status)
                    state[key] = {"state": want, "changed_at": now}
                    sent.append(ev)
                else:
                    log.error("notification %s %s to %s not delivered; retried next cycle: %s",
                              ev.status, ev.key, ch.kind, error)
    except Exception:  # the notifier must never fail the cycle
        log.exception("the notifier failed; it will try again next cycle")
    return sent
