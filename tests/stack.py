"""Real Prometheus, Alertmanager and Pushgateway on free loopback ports, data under a temp folder.

Each is a class with `.url`, `.stop()` and a readiness wait, usable as a context manager:

    with Pushgateway(tmp_path) as pg, Prometheus(tmp_path, scrape_targets=[pg.target(honor_labels=True)]) as prom:
        query(prom.url, "up")

A missing binary raises `MissingBinary` (a failure, never a skip).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


class MissingBinary(RuntimeError):
    """A binary of the stack is not installed (`make deb` installs it)."""


class NotReady(RuntimeError):
    """A process did not become ready in time; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(*names: str) -> str:
    """The first of `names` found on PATH (or in /usr/bin); MissingBinary otherwise."""
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if found:
            return found
    raise MissingBinary(f"none of {', '.join(names)} is installed: install the Debian packages "
                        "prometheus, prometheus-alertmanager, prometheus-pushgateway (`make deb`)")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post(url: str, data: bytes = b"", content_type: str = "application/json", timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Call `predicate` until it returns something truthy; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = predicate()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


class _Server:
    """A child process listening on 127.0.0.1:port, with its log and data under `root`."""

    name = "server"
    binaries: tuple[str, ...] = ()
    ready_path = "/-/ready"

    def __init__(self, tmp_path: Path | str, start: bool = True, ready_timeout: float = 30.0):
        self.exe = binary(*self.binaries)
        self.port = free_port()
        self.root = Path(tmp_path) / f"{self.name}-{self.port}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._log = None
        if start:
            self.start()

    @property
    def address(self) -> str:
        """`127.0.0.1:port`, as a scrape target or a listen address."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "log.txt"

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> _Server:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it until stop()
        self.proc = subprocess.Popen([self.exe, *self.args()], stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.root, start_new_session=True)
        self.wait_ready()
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise NotReady(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = http_get(self.url + self.ready_path, timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise NotReady(f"{self.name} not ready after {self.ready_timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def target(self, job: str | None = None, honor_labels: bool = False, path: str = "/metrics") -> dict:
        """This server as a scrape target for `Prometheus(scrape_targets=[...])`."""
        return {"job": job or self.name, "address": self.address, "path": path, "honor_labels": honor_labels}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):  # a forgotten server must not outlive the test run
        try:
            self.stop()
        except Exception:  # noqa: BLE001, S110 - nothing to do at interpreter exit
            pass


def _target(t: Any, i: int) -> dict:
    """A scrape target: `host:port`, a URL, or a dict with job, address, path, honor_labels."""
    if isinstance(t, dict):
        return {"job": t.get("job", f"target{i}"), "address": t["address"], "path": t.get("path", "/metrics"),
                "honor_labels": bool(t.get("honor_labels", False))}
    s = str(t)
    if "://" in s:
        u = urllib.parse.urlsplit(s)
        return {"job": f"target{i}", "address": u.netloc, "path": u.path or "/metrics", "honor_labels": False}
    return {"job": f"target{i}", "address": s, "path": "/metrics", "honor_labels": False}


class Prometheus(_Server):
    """A Prometheus scraping `scrape_targets`, evaluating `rule_files`, alerting to `alertmanager_url`."""

    name = "prometheus"
    binaries = ("prometheus",)

    def __init__(self, tmp_path, scrape_targets: Iterable[Any] = (), rule_files: Iterable[Path | str] = (),
                 alertmanager_url: str | None = None, scrape_interval: str = "1s", evaluation_interval: str = "1s",
                 **kw):
        self.scrape_targets = [_target(t, i) for i, t in enumerate(scrape_targets)]
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.alertmanager_url = alertmanager_url
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        super().__init__(tmp_path, **kw)

    def config(self) -> dict:
        cfg: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval,
                       "evaluation_interval": self.evaluation_interval},
            "rule_files": self.rule_files,
            "scrape_configs": [
                {"job_name": t["job"], "metrics_path": t["path"], "honor_labels": t["honor_labels"],
                 "static_configs": [{"targets": [t["address"]]}]}
                for t in self.scrape_targets
            ],
        }
        if self.alertmanager_url:
            am = urllib.parse.urlsplit(self.alertmanager_url)
            cfg["alerting"] = {"alertmanagers": [{"scheme": am.scheme or "http", "path_prefix": am.path or "/",
                                                  "static_configs": [{"targets": [am.netloc]}]}]}
        return cfg

    def args(self) -> list[str]:
        conf = self.root / "prometheus.yml"
        conf.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return [f"--config.file={conf}", f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address={self.address}", "--web.enable-lifecycle",
                "--rules.alert.resend-delay=1s", "--log.level=warn"]

    def reload(self) -> None:
        """Rewrite the config and ask Prometheus to reload it."""
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        status, body = http_post(self.url + "/-/reload")
        if status != 200:
            raise RuntimeError(f"prometheus reload failed: {status} {body!r}")

    def alerts(self) -> list[dict]:
        """Active alerts (pending and firing) as Prometheus reports them."""
        return api(self.url, "/api/v1/alerts")["alerts"]


class Alertmanager(_Server):
    """An Alertmanager with `config_text` as its config, `files` (relative path -> text) beside it; clustering off."""

    name = "alertmanager"
    binaries = ("prometheus-alertmanager", "alertmanager")

    def __init__(self, tmp_path, config_text: str, files: dict[str, str] | None = None, **kw):
        self.config_text = config_text
        self.files = files or {}
        super().__init__(tmp_path, **kw)

    def args(self) -> list[str]:
        conf = self.root / "alertmanager.yml"
        conf.write_text(self.config_text)
        for rel, text in self.files.items():  # e.g. templates/*.tmpl, resolved next to the config
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(text)
        return [f"--config.file={conf}", f"--storage.path={self.root / 'data'}",
                f"--web.listen-address={self.address}", f"--web.external-url={self.url}",
                "--cluster.listen-address=", "--log.level=warn"]

    def alerts(self) -> list[dict]:
        """Alerts Alertmanager currently holds (API v2)."""
        status, body = http_get(self.url + "/api/v2/alerts")
        if status != 200:
            raise RuntimeError(f"alertmanager /api/v2/alerts: {status} {body!r}")
        return json.loads(body)


class Pushgateway(_Server):
    """A Pushgateway; scrape it with `target(honor_labels=True)` so pushed job/instance labels survive."""

    name = "pushgateway"
    binaries = ("prometheus-pushgateway", "pushgateway")

    def args(self) -> list[str]:
        # Debian's default persistence file is under /var/lib: keep the test's state in its own folder.
        return [f"--web.listen-address={self.address}", f"--persistence.file={self.root / 'pushgateway.data'}",
                "--web.enable-admin-api", "--log.level=warn"]

    def metrics_text(self) -> str:
        status, body = http_get(self.url + "/metrics")
        if status != 200:
            raise RuntimeError(f"pushgateway /metrics: {status}")
        return body.decode()


def api(url: str, path: str, params: dict | None = None) -> Any:
    """GET a Prometheus HTTP API path; the `data` of a success, RuntimeError otherwise."""
    q = ("?" + urllib.parse.urlencode(params)) if params else ""
    status, body = http_get(url.rstrip("/") + path + q)
    doc = json.loads(body or b"{}")
    if status != 200 or doc.get("status") != "success":
        raise RuntimeError(f"{path}: {status} {doc.get('error', body[:200])}")
    return doc["data"]


def query(url: str, promql: str) -> list[dict]:
    """An instant query; a list of `{"metric": {...}, "value": float}`."""
    data = api(url, "/api/v1/query", {"query": promql})
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": float(data["result"][1])}]
    return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]


def query_value(url: str, promql: str) -> float | None:
    """The single value of an instant query, or None when it returns nothing."""
    rows = query(url, promql)
    if not rows:
        return None
    if len(rows) > 1:
        raise RuntimeError(f"{promql!r} returned {len(rows)} series")
    return rows[0]["value"]


def wait_target_up(url: str, job: str, timeout: float = 20.0) -> None:
    """Until Prometheus has scraped `job` successfully."""
    wait_until(lambda: query_value(url, f'up{{job="{job}"}}') == 1.0, timeout=timeout, what=f"target {job} up")


class WebhookReceiver:
    """A real HTTP server on loopback recording every POST body (JSON); `fail = N` answers 500 N times.

    Answers like Telegram's sendMessage, so it also stands in for the Telegram Bot API.
    """

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, Any]] = []
        self.fail = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    failing = receiver.fail > 0
                    if failing:
                        receiver.fail -= 1
                    else:
                        try:
                            receiver.requests.append((self.path, json.loads(body or b"null")))
                        except ValueError:
                            receiver.requests.append((self.path, body.decode(errors="replace")))
                # Telegram's answer to sendMessage (Alertmanager 0.25 dereferences `result`).
                out = b'{"ok": true, "result": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "group"}}}'
                self.send_response(500 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def on(self, path: str) -> list[Any]:
        """Bodies POSTed to `path`."""
        with self._lock:
            return [body for p, body in self.requests if p == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class SMTPSink:
    """A real SMTP server on loopback, just enough of it to take messages (no TLS, no AUTH)."""

    def __init__(self):
        import socketserver
        import threading

        self.messages: list[str] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 sink\r\n")
                data, in_data = [], False
                for raw in self.rfile:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    if in_data:
                        if line == ".":
                            in_data = False
                            sink.messages.append("\n".join(data))
                            self.wfile.write(b"250 queued\r\n")
                        else:
                            data.append(line)
                        continue
                    verb = line[:4].upper()
                    if verb == "DATA":
                        in_data = True
                        self.wfile.write(b"354 go on\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def stop(self) -> None:
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
