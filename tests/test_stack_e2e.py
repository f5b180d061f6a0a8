"""On loopback, the real stack: a planted breach travels from the data to a webhook, and back.

A real Prometheus scrapes the monitor's /metrics (served here from `monitor.exporter.registry`)
and a real Pushgateway fed by `monitor.batch.publish`, evaluates the generated rules and sends
to a real Alertmanager running the generated config, which calls a webhook written here.
"""
from __future__ import annotations

import email
import email.policy
from datetime import timedelta

import pytest
from fixtures.alerting_world import World, config
from prometheus_client import start_http_server
from stack import (
    Alertmanager,
    Prometheus,
    Pushgateway,
    SMTPSink,
    WebhookReceiver,
    free_port,
    query,
    wait_until,
)

from monitor import alerts
from monitor import conventions as n
from monitor.batch import PublishError, publish
from monitor.durations import utcnow
from monitor.exporter import registry
from monitor.jobs import run_cycle
from monitor.store import Store
from monitor.windows import floor

pytestmark = pytest.mark.stack

ALERT = "BadSessionShareBreached"
BATCH = "batch-e2e"


def _am_alerts(hook: WebhookReceiver, status: str) -> list[dict]:
    """Alerts of ALERT in Alertmanager's webhook payloads with this status."""
    return [a for body in hook.on("/am") for a in body["alerts"]
            if a["labels"]["alertname"] == ALERT and a["status"] == status]


def _by_instance(found: list[dict]) -> dict[str, dict]:
    return {a["labels"]["instance"]: a for a in found}


def test_a_planted_breach_fires_and_resolves_through_scrape_and_pushgateway(tmp_path):
    today = floor(utcnow(), timedelta(days=1))
    start = today - timedelta(days=8)
    world = World(tmp_path, start=start, days=8)
    world.set_day(7, bad=100)  # yesterday: 10 % bad sessions, the target is at most 2 %
    cfg = config(tmp_path, models=False, start=start)
    store = Store(cfg.store_url)
    now = today + timedelta(minutes=10)
    assert run_cycle(cfg, now, store=store).ok

    files = alerts.render(cfg)
    rules = tmp_path / "repo" / alerts.RULES_FILE
    rules.parent.mkdir(parents=True)
    rules.write_text(files[alerts.RULES_FILE])
    hook, smtp = WebhookReceiver(), SMTPSink()
    am_config = alerts.alertmanager_config(cfg, alerts.Endpoints(
        webhook_url=hook.url + "/am", telegram_api_url=hook.url, smtp_smarthost=f"127.0.0.1:{smtp.port}",
        smtp_require_tls=False,
        group_wait="1s", group_interval="1s", repeat_interval="1h"))
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry(cfg, store))
    exporter = f"127.0.0.1:{port}"
    try:
        with Pushgateway(tmp_path) as pg, Alertmanager(tmp_path, am_config, files={
                "templates/monitor.tmpl": files[alerts.TEMPLATE_FILE]}) as am, Prometheus(
                tmp_path, rule_files=[rules], alertmanager_url=am.url,
                scrape_targets=[{"job": n.SCRAPE_JOB, "address": exporter, "honor_labels": True},
                                pg.target(job="pushgateway", honor_labels=True)]) as prom:
            publish(cfg, store, push=pg.url, instance=BATCH)

            # firing, on both paths: the scraped exporter and the pushed batch
            fired = wait_until(lambda: (f := _by_instance(_am_alerts(hook, "firing"))).keys() >= {exporter, BATCH} and f,
                               timeout=40, what=f"{ALERT} firing at the webhook for both instances")
            for a in fired.values():
                assert a["labels"]["goal"] == "bad_session_share"
                assert a["labels"]["job"] == n.SCRAPE_JOB and a["labels"]["severity"] == "page"
                assert a["annotations"]["value"] == "10%"
                assert a["annotations"]["target"] == "at most 2%"
                assert a["annotations"]["title"] == "Share of sessions that went bad"
                assert a["annotations"]["window"] == f"1d ending {today:%Y-%m-%d} 00:00:00 +0000 UTC"
                assert a["annotations"]["review_url"] == "http://review.example:8501/?goal=bad_session_share"
            # The owner's page receiver also sent it to Telegram, with the template's text.
            # (the error-budget burn alerts fire too, each with messages of its own)
            telegram = wait_until(lambda: [m for m in hook.on("/botREPLACE-WITH-BOT-TOKEN/sendMessage") if ALERT in m["text"]],
                                  timeout=10, what=f"a Telegram message of {ALERT}")
            assert "Share of sessions that went bad" in telegram[0]["text"] and "10%" in telegram[0]["text"]
            # and an email, whose text part comes from the template
            mails = lambda: [m for m in (email.message_from_string(raw, policy=email.policy.default) for raw in smtp.messages)
                             if ALERT in m["Subject"]]
            mail = wait_until(mails, timeout=10, what=f"an email of {ALERT}")[0]
            assert ALERT in mail["Subject"] and "bad_session_share" in mail["Subject"]
            text = next(p.get_content() for p in mail.walk() if p.get_content_type() == "text/plain")
            assert "value: 10%   target: at most 2%" in text
            # The job series keep their own `job` label on both paths.
            jobs = query(prom.url, f'{n.JOB_LAST_STATUS}{{job="goal:bad_session_share"}}')
            assert {r["metric"]["instance"] for r in jobs} == {exporter, BATCH}

            # fixing the data resolves it
            world.set_day(7, bad=5)
            assert run_cycle(cfg, now, store=store).ok
            publish(cfg, store, push=pg.url, instance=BATCH)
            resolved = wait_until(lambda: (f := _by_instance(_am_alerts(hook, "resolved"))).keys() >= {exporter, BATCH} and f,
                                  timeout=30, what=f"{ALERT} resolved at the webhook for both instances")
            assert all(a["labels"]["goal"] == "bad_session_share" for a in resolved.values())
            assert query(prom.url, f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}') == []
    finally:
        server.shutdown()
        server.server_close()
        hook.stop()
        smtp.stop()


def test_a_push_replaces_the_instance_groups_and_nothing_piles_up(tmp_path):
    world = World(tmp_path, days=3)
    cfg = config(tmp_path, models=False)
    store = Store(cfg.store_url)
    run_cycle(cfg, world.end + timedelta(hours=1), store=store)
    with Pushgateway(tmp_path) as pg:
        publish(cfg, store, push=pg.url, instance="a")
        publish(cfg, store, push=pg.url, instance="a")
        text = pg.metrics_text()
        assert text.count('monitor_goal_value{goal="minutes_per_user",instance="a",job="monitor"}') == 1
        assert 'monitor_job_last_run_ok{instance="a",job="goal:minutes_per_user"} 1' in text

        smaller = config(tmp_path, models=False, drop_goals=("minutes_per_user",))
        publish(smaller, store, push=pg.url, instance="a")
        text = pg.metrics_text()
        assert "minutes_per_user" not in text  # its series and its job's group are gone
        assert 'monitor_goal_value{goal="bad_session_share",instance="a",job="monitor"}' in text
        assert 'job="goal:bad_session_share"' in text

        publish(smaller, store, push=pg.url, instance="b")  # another instance has its own groups
        assert 'monitor_goal_value{goal="bad_session_share",instance="b",job="monitor"}' in pg.metrics_text()
        assert 'instance="a"' in pg.metrics_text()
        url = pg.url
    with pytest.raises(PublishError, match="Pushgateway"):
        publish(cfg, store, push=url, instance="a")
