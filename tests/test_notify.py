"""The built-in notifier, against real local HTTP and SMTP servers."""
from __future__ import annotations

import logging
import sqlite3
import re
from datetime import timedelta
from pathlib import Path

import pytest
from fixtures.alerting_world import World, config
from stack import SMTPSink, WebhookReceiver

from monitor import alertdefs
from monitor.jobs import run_cycle
from monitor.notify import notify_cycle
from monitor.spec import Samples
from monitor.store import Store

FAST = {"attempts": 3, "backoff": 0.01, "timeout": 2.0}


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def breached(tmp_path):
    """Ten good days, then a day with 10 % bad sessions (target at most 2 %), computed."""
    w = World(tmp_path, days=11)
    w.set_day(10, bad=100)
    return w


def _cfg(tmp_path, channels):
    return config(tmp_path, models=False, notify=channels)


def _cycle(cfg, world, **kw):
    now = world.end + timedelta(hours=1)
    run_cycle(cfg, now)
    return notify_cycle(cfg, Store(cfg.store_url), now, **{**FAST, **kw})


def test_a_breach_is_notified_once_on_every_channel_and_a_restart_sends_nothing_twice(tmp_path, breached, receiver):
    smtp = SMTPSink()
    try:
        cfg = _cfg(tmp_path, [{"kind": "webhook", "url": receiver.url + "/hook"},
                              {"kind": "slack", "url": receiver.url + "/slack"},
                              {"kind": "telegram", "url": receiver.url, "token": "T0K", "chat_id": "42"},
                              {"kind": "smtp", "host": "127.0.0.1", "port": smtp.port, "sender": "m@x", "to": ["t@x"]}])
        sent = _cycle(cfg, breached)
        assert [e.alert for e in sent if e.alert == "BadSessionShareBreached"] == ["BadSessionShareBreached"] * 4
        hooks = [b for b in receiver.on("/hook") if b["alert"] == "BadSessionShareBreached"]
        assert len(hooks) == 1
        hook = hooks[0]
        assert hook["status"] == "firing"
        assert hook["labels"]["goal"] == "bad_session_share" and hook["labels"]["severity"] == "page"
        assert hook["value"] == pytest.approx(0.1)
        assert hook["annotations"]["value"] == "10%" and hook["annotations"]["target"] == "at most 2%"
        assert hook["annotations"]["window"] == "1d ending 2026-09-12 00:00:00 +0000 UTC"
        assert "Share of sessions that went bad: 10%" in hook["annotations"]["summary"]
        slack = [b["text"] for b in receiver.on("/slack") if "BadSessionShareBreached" in b["text"]]
        assert len(slack) == 1 and "http://review.example:8501/?goal=bad_session_share" in slack[0]
        tg = [b for b in receiver.on("/botT0K/sendMessage") if "BadSessionShareBreached" in b["text"]]
        assert len(tg) == 1 and tg[0]["chat_id"] == "42"
        assert any("BadSessionShareBreached" in m for m in smtp.messages)

        before = len(receiver.requests), len(smtp.messages)
        # a restart: a new process, the same results store
        assert notify_cycle(cfg, Store(cfg.store_url), breached.end + timedelta(hours=2), **FAST) == []
        assert (len(receiver.requests), len(smtp.messages)) == before
    finally:
        smtp.close()


@pytest.mark.slow
def test_fixing_the_data_sends_one_recovery(tmp_path, breached, receiver):
    cfg = _cfg(tmp_path, [{"kind": "webhook", "url": receiver.url + "/hook"}])
    _cycle(cfg, breached)
    breached.set_day(10, bad=5)
    sent = _cycle(cfg, breached)
    assert [(e.alert, e.status) for e in sent] == [("BadSessionShareBreached", "resolved")]
    resolved = receiver.on("/hook")[-1]
    assert resolved["status"] == "resolved" and resolved["labels"]["goal"] == "bad_session_share"
    assert resolved["annotations"]["value"] == "10%"  # the last firing value, as Alertmanager shows it
    assert _cycle(cfg, breached) == []


@pytest.mark.slow
def test_a_channel_that_is_down_is_retried_logged_and_never_fails_the_cycle(tmp_path, breached, receiver, caplog):
    cfg = _cfg(tmp_path, [{"kind": "webhook", "url": receiver.url + "/hook"},
                          {"kind": "webhook", "url": "http://127.0.0.1:9/closed"}])
    receiver.fail = 3  # the first channel fails all three attempts of its first notification
    with caplog.at_level(logging.WARNING, logger="monitor.notify"):
        sent = _cycle(cfg, breached)
    assert receiver.fail == 0  # it was tried three times
    assert not any(e.alert == "BadSessionShareBreached" for e in sent)
    assert "not delivered" in caplog.text and "attempt 3 of 3" in caplog.text
    # next cycle the first channel is back: it catches up, once
    sent = _cycle(cfg, breached)
    assert [e.alert for e in sent if e.alert == "BadSessionShareBreached"] == ["BadSessionShareBreached"]
    assert len([b for b in receiver.on("/hook") if b["alert"] == "BadSessionShareBreached"]) == 1


def test_backoff_doubles_between_attempts(tmp_path, breached, receiver):
    cfg = _cfg(tmp_path, [{"kind": "webhook", "url": "http://127.0.0.1:9/closed"}])
    waits: list[float] = []
    run_cycle(cfg, breached.end + timedelta(hours=1))
    notify_cycle(cfg, Store(cfg.store_url), breached.end + timedelta(hours=1), attempts=3, backoff=0.5,
                 timeout=1.0, sleep=waits.append)
    assert waits[:2] == [0.5, 1.0]


def test_a_failing_job_is_notified_only_after_its_for(tmp_path, breached, receiver):
    broken = tmp_path / "broken.sql"
    broken.write_text("SELECT value FROM no_such_table WHERE :window_start < :window_end")
    cfg = _cfg(tmp_path, [{"kind": "webhook", "url": receiver.url + "/hook"}])
    cfg = cfg.model_copy(update={"goals": [cfg.goals[0].model_copy(update={"sql": broken})]})
    now = breached.end + timedelta(hours=1)
    run_cycle(cfg, now)
    store = Store(cfg.store_url)
    assert [e.alert for e in notify_cycle(cfg, store, now, **FAST)] == []  # pending
    assert [e.alert for e in notify_cycle(cfg, store, now + timedelta(minutes=10), **FAST)] == []
    late = notify_cycle(cfg, store, now + timedelta(minutes=31), **FAST)
    assert [(e.alert, e.labels["goal"]) for e in late] == [("MonitorJobFailing", "bad_session_share")]


def test_no_channels_means_nothing_is_read_or_sent(tmp_path, breached):
    cfg = _cfg(tmp_path, [])
    assert notify_cycle(cfg, Store(cfg.store_url), breached.end) == []


def test_a_broken_store_never_fails_the_cycle(tmp_path, receiver, caplog):
    cfg = config(tmp_path, models=False, notify=[{"kind": "webhook", "url": receiver.url}],
                 results_url=f"sqlite:///{tmp_path}/missing/dir/results.db")
    with caplog.at_level(logging.ERROR, logger="monitor.notify"):
        assert notify_cycle(cfg, Store(cfg.store_url), __import__("datetime").datetime.now(), **FAST) == []
    assert "notifier failed" in caplog.text


def _expand(values: str) -> list[float]:
    """promtool's values notation: `a x n` and `a+b x n` (n + 1 samples)."""
    out: list[float] = []
    for part in values.split():
        m = re.fullmatch(r"(-?[\d.e+]+?)(?:([+-])([\d.e]+))?x(\d+)", part)
        a, sign, b, k = m.groups()
        step = float(b or 0) * (-1 if sign == "-" else 1)
        out += [float(a) + i * step for i in range(int(k) + 1)]
    return out


def _minutes(t: str) -> int:
    return int(t[:-1]) * (60 if t.endswith("h") else 1)


@pytest.mark.parametrize("alert", [a for a in alertdefs.all_alerts(config(Path("/tmp"))) if a.kind != "exporter_down"],
                         ids=lambda a: f"{a.alert}-{'-'.join(a.subject.values())}")
def test_the_notifier_evaluates_each_rule_condition_as_promtool_does(alert):
    """Each rule's promtool case, fed to the condition's evaluator: quiet, firing with the same value, resolved."""
    for case in [alert.case, *alert.extra_cases]:
        series = {s: _expand(v) for s, v in case.series.items()}
        for when, fires in ((case.quiet, False), (case.firing, True), (case.resolved, False)):
            step = _minutes(when)
            rows = []
            for selector, vals in series.items():
                name, labels = re.match(r"^(\w+)\{(.*)\}$", selector).groups()
                if step < len(vals):
                    rows.append((name, dict(re.findall(r'(\w+)="([^"]*)"', labels)), vals[step]))
            got = alert.value(Samples(rows), step * 60.0)
            if fires:
                assert got == pytest.approx(case.value), (alert.alert, when)
            else:
                assert got is None, (alert.alert, when, got)


@pytest.mark.slow
def test_a_goal_window_without_rows_is_notified_as_no_data_and_not_as_a_breach(tmp_path, receiver):
    w = World(tmp_path, days=11)
    t0 = w.day(10)
    with sqlite3.connect(w.path) as db:  # the last day's sessions never arrived
        db.execute("DELETE FROM sessions WHERE started_at >= ?", (t0.strftime("%Y-%m-%d %H:%M:%S"),))
    cfg = _cfg(tmp_path, [{"kind": "webhook", "url": receiver.url + "/hook"}])
    sent = _cycle(cfg, w)
    alerts_sent = {e.alert for e in sent}
    assert {"BadSessionShareNoData", "MinutesPerUserNoData"} <= alerts_sent
    assert "BadSessionShareBreached" not in alerts_sent
    hook = next(b for b in receiver.on("/hook") if b["alert"] == "BadSessionShareNoData")
    assert hook["status"] == "firing" and hook["labels"]["kind"] == "no_data"
    assert "has no rows at all" in hook["annotations"]["summary"] and "ending 2026-09-12 00:00:00" in hook["annotations"]["summary"]


def test_long_state_keys_with_the_same_start_keep_their_own_state(db_url):
    from datetime import datetime, timezone
    store = Store(db_url)
    store.migrate()
    at = datetime(2026, 1, 5, tzinfo=timezone.utc)
    one, two = "sent|webhook|" + "x" * 400 + "|one", "sent|webhook|" + "x" * 400 + "|two"
    store.save_notify_state(one, "firing", at, "one")
    store.save_notify_state(two, "ok", at, "two")
    store.save_notify_state("short", "pending", at)
    state = store.notify_state()
    assert len(state) == 3
    assert (state[one]["state"], state[one]["detail"]) == ("firing", "one")
    assert state.get(two)["state"] == "ok" and two in state and state["short"]["state"] == "pending"
    store.save_notify_state(one, "ok", at, "again")  # rewritten in place, not beside
    assert store.notify_state()[one]["detail"] == "again" and len(store.notify_state()) == 3
