"""`monitor serve`: the scheduler, `/metrics` and `/healthz` in one process."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime, timedelta
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

import sqlalchemy as sa

from .config import Config
from .conventions import PORT
from .db import describe_error
from .durations import utcnow
from .jobs import Lease, new_holder, run_cycle
from .store import Store, StoreError
from .windows import window_at

log = logging.getLogger("monitor.serve")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        doc.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(doc, default=str)


class Exposition:
    """The exposition of the stored results, read at most once per `ttl` however many scrape at once.

    While one scrape reads the store, the others get the previous reading; when the store cannot
    be read, the last reading is served.
    """

    def __init__(self, cfg: Config, store: Store, ttl: float = 5.0):
        from .exporter import registry

        self.registry = registry(cfg, store)
        self.ttl = ttl
        self.lock = threading.Lock()
        self.body: bytes | None = None
        self.read_at = 0.0

    def invalidate(self) -> None:
        self.read_at = 0.0

    def get(self) -> bytes:
        fresh = self.body is not None and time.monotonic() - self.read_at <= self.ttl
        if fresh:
            return self.body
        if self.body is not None and not self.lock.acquire(blocking=False):
            return self.body  # another scrape is reading the store right now: serve what we have
        if self.body is None:
            self.lock.acquire()
        try:
            if self.body is None or time.monotonic() - self.read_at > self.ttl:
                self._read()
            return self.body
        finally:
            self.lock.release()

    def _read(self) -> None:
        from prometheus_client.exposition import generate_latest

        try:
            self.body = generate_latest(self.registry)
        except Exception:
            if self.body is None:
                raise
            log.warning("results store unreadable: serving the last results read")
        self.read_at = time.monotonic()


class Probe:
    """Whether the results store answers, probed by a thread of its own every `every` seconds, so that
    /healthz never waits on the database: a probe still in flight after `timeout` is a failure."""

    def __init__(self, store: Store, every: float = 2.0, timeout: float = 3.0):
        self.store, self.every, self.timeout = store, every, timeout
        self.result: tuple[bool, str] | None = None
        self.in_flight_since: float | None = None
        self.thread = threading.Thread(target=self._run, name="store-probe", daemon=True)

    def start(self) -> "Probe":
        self.thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.in_flight_since = time.monotonic()
            try:
                with self.store.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                self.result = (True, "reachable")
            except Exception as e:
                self.result = (False, f"unreachable: {describe_error(e)}")
            self.in_flight_since = None
            time.sleep(self.every)

    def state(self) -> tuple[bool, str]:
        since = self.in_flight_since
        if since is not None and time.monotonic() - since > self.timeout:
            return False, f"not answering for {time.monotonic() - since:.0f} s"
        return self.result or (False, "not probed yet")


class Service:
    """Runs each goal's and model's job at its window cadence, and answers /metrics and /healthz."""

    def __init__(self, cfg: Config, holder: str | None = None, clock=None):
        self.cfg = cfg
        self.clock = clock or utcnow  # the windows' clock: `serve --now` starts it in the past
        self.store = Store(cfg.store_url, statement_timeout=cfg.statement_timeout)
        self.holder = holder or new_holder()
        self.lease = Lease(self.holder, ttl_seconds=cfg.lease_ttl.total_seconds(), tail_once=True)
        self.exposition = Exposition(cfg, self.store)
        self.probe = Probe(self.store)
        self.scheduler = None
        self.stopping = threading.Event()
        self.started = utcnow()
        self.startup_error: str | None = "starting"  # until the results store is migrated
        self.last_cycle: dict[str, datetime] = {}
        self.last_beat: dict[str, datetime] = {}  # the last window a running cycle finished
        self.last_error: dict[str, str] = {}
        self.lock = threading.Lock()

    def subjects(self) -> list[tuple[str, timedelta]]:
        return [(g.name, g.window) for g in self.cfg.goals] + [(m.name, m.window) for m in self.cfg.models]

    def run_subject(self, name: str) -> None:
        """One cycle for one goal or model; failures are recorded by the cycle itself."""
        if self.stopping.is_set():
            return
        try:
            report = run_cycle(self.cfg, self.clock(), store=self.store, only={name}, lease=self.lease,
                               clock=utcnow, stop=self.stopping.is_set, beat=lambda _job: self._beat(name))
            self._notify()
            self.exposition.invalidate()
            with self.lock:
                self.last_cycle[name] = utcnow()
                self.last_error.pop(name, None)
                for _job, window, err in report.failed:
                    self.last_error[name] = f"{window}: {err}"
            if report.failed or report.skipped:
                # another replica holds the job, or it failed: look again soon rather than next window
                self._retry(name)
            # a cycle with failed jobs is a warning: logs filtered at warning must still show it
            log.log(logging.WARNING if report.failed else logging.INFO, "cycle",
                    extra={"subject": name, "ran": report.ran, "failed": len(report.failed), "skipped": report.skipped,
                           **({"errors": [f"{j} {w}: {e}" for j, w, e in report.failed]} if report.failed else {})})
        except Exception as e:  # the store itself is down: keep serving, retry next time
            with self.lock:
                self.last_cycle[name] = utcnow()
                self.last_error[name] = describe_error(e)
            log.error("cycle failed", extra={"subject": name, "error": describe_error(e)})
            self._retry(name)

    def _beat(self, name: str) -> None:
        with self.lock:
            self.last_beat[name] = utcnow()

    def _retry(self, name: str) -> None:
        if self.scheduler is not None and not self.stopping.is_set():
            self.scheduler.add_job(self.run_subject, args=[name], id=f"{name}:retry", replace_existing=True,
                                   next_run_time=utcnow() + self.cfg.retry_after)

    def _notify(self) -> None:
        if self.cfg.notify:
            from .notify import notify_cycle
            notify_cycle(self.cfg, self.store, self.clock())  # logs its own failures; never raises

    def health(self) -> tuple[bool, dict]:
        """Whether the service is healthy, and why; answers at once (it never queries the database).

        Unhealthy: the results store does not answer (or is not migrated yet), a job's last cycle
        failed, or a job stalled: no cycle ended and no window was computed for more than its
        window plus `grace` (plus `retry_after`, the wait before a retry).
        """
        doc: dict = {"holder": self.holder}
        reachable, detail = self.probe.state()
        ok = reachable
        doc["results_store"] = detail
        if self.startup_error:
            ok = False
            doc["startup"] = self.startup_error
        now = utcnow()
        jobs = {}
        with self.lock:
            for name, size in self.subjects():
                last = self.last_cycle.get(name)
                alive = max([t for t in (last, self.last_beat.get(name)) if t] or [self.started])
                quiet = (now - alive).total_seconds()
                stalled = quiet > (size + self.cfg.grace + self.cfg.retry_after).total_seconds()
                err = self.last_error.get(name)
                status = "failed" if err else "stalled" if stalled else "ok" if last else "waiting"
                jobs[name] = {"last_cycle_age_seconds": (now - last).total_seconds() if last else None,
                              "status": status, **({"error": err} if err else {}),
                              **({"stalled_seconds": round(quiet)} if stalled else {})}
                if err or stalled:
                    ok = False
        doc["jobs"] = jobs
        doc["status"] = "ok" if ok else "degraded"
        return ok, doc

    def wsgi(self):
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "/")
            if path == "/metrics":
                try:
                    body = self.exposition.get()
                    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
                    return [body]
                except Exception as e:
                    body = f"# results store unreachable: {describe_error(e)}\n".encode()
                    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                    return [body]
            if path == "/healthz":
                ok, doc = self.health()
                start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
                return [json.dumps(doc).encode()]
            start_response("200 OK", [("Content-Type", "text/html")])
            return [b'<a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a>']
        return app

    def schedule(self):
        """An APScheduler job per subject, at each window end plus the grace."""
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        sched = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                                  "misfire_grace_time": None})
        now = utcnow()
        for name, size in self.subjects():
            first = window_at(now, size).end + self.cfg.grace
            sched.add_job(self.run_subject, IntervalTrigger(seconds=size.total_seconds(), start_date=first),
                          args=[name], id=name, name=name)
            # catch up every missed window at start
            sched.add_job(self.run_subject, args=[name], id=f"{name}:startup", next_run_time=now)
        self.scheduler = sched
        return sched


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: many scrapers at once are queued, not refused


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def serve(cfg: Config, host: str = "127.0.0.1", port: int = PORT, now: datetime | None = None) -> int:
    """Run until SIGTERM or SIGINT; the job in flight finishes its window or stops between windows.

    A results store down at start is waited for (/healthz says so); a busy port, an unknown schema
    or foreign tables end the process at once with one line and exit code 2 (a store that cannot
    be written: exit code 1).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("monitor.jobs").setLevel(logging.NOTSET)  # the CLI quiets it; serve logs every failure
    offset = (now - utcnow()) if now is not None else None
    svc = Service(cfg, clock=(lambda: utcnow() + offset) if offset is not None else None)
    try:
        httpd = make_server(host, port, svc.wsgi(), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 2
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    svc.probe.start()

    def stop(signum, _frame):
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        svc.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = 1.0
    while not svc.stopping.is_set():
        try:
            svc.store.migrate()
            svc.startup_error = None
            break
        except sa.exc.OperationalError as e:  # down: it may come back; answer /healthz (503) and retry
            svc.startup_error = f"cannot reach the results store {svc.store.where()}: {describe_error(e)}"
            log.error("results store unreachable at start: retrying",
                      extra={"error": svc.startup_error, "retry_in_seconds": delay})
            svc.stopping.wait(delay)
            delay = min(delay * 2, 30.0)
        except (StoreError, sa.exc.SQLAlchemyError) as e:  # a schema or permissions problem: no retry mends it
            httpd.shutdown()
            msg = str(e) if isinstance(e, StoreError) else f"the results store {svc.store.where()} cannot be used: {describe_error(e)}"
            print(f"error: {msg}", file=sys.stderr)
            return 2 if isinstance(e, StoreError) else 1
    sched = svc.schedule()
    sched.start()
    log.info("serving", extra={"port": port, "holder": svc.holder, "jobs": [n for n, _ in svc.subjects()]})
    while not svc.stopping.is_set():
        time.sleep(0.2)
    sched.shutdown(wait=True)
    httpd.shutdown()
    log.info("stopped")
    return 0
