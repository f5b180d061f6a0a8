"""`monitor dashboards push` against an HTTP server that answers like Grafana's documented HTTP API.

The fake holds the request and response shapes of Grafana's Health, Folder, Search and Dashboard
APIs (`GET /api/health`, `GET|POST /api/folders`, `GET /api/folders/:uid`, `GET /api/search`,
`GET /api/dashboards/uid/:uid`, `POST /api/dashboards/db`), including their error bodies:
401 for a bad credential, 404 for a missing dashboard, 412 `version-mismatch` and `name-exists`.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from monitor import grafana_push
from monitor.cli import main

TOKEN = "glsa_good_token"
USER, PASSWORD = "admin", "s3cret"


class FakeGrafana:
    """Grafana's folder, search and dashboard endpoints over in-memory state."""

    def __init__(self):
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}  # uid -> {"dashboard": ..., "folderUid": ..., "version": ...}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.next_id = 1
        self.on_get_dashboard = None  # a hook: someone else saves between our read and our write
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def saves(self) -> list[dict]:
        return [body for method, path, body in self.requests if method == "POST" and path == "/api/dashboards/db"]

    def authorized(self, headers) -> bool:
        auth = headers.get("Authorization", "")
        if auth == f"Bearer {TOKEN}":
            return True
        if auth.startswith("Basic "):
            return base64.b64decode(auth[6:]).decode() == f"{USER}:{PASSWORD}"
        return False

    def handle(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, object]:
        if path == "/api/health" and method == "GET":
            return 200, {"commit": "abc1234", "database": "ok", "version": "11.6.0"}
        if not path.startswith("/api/"):
            return 404, "<html>not found</html>"
        if not self._auth_ok:
            return 401, {"extra": None, "message": "Invalid API key", "messageId": "api-key.invalid",
                         "statusCode": 401, "traceID": ""}
        if path == "/api/folders" and method == "GET":
            return 200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in self.folders.values()]
        if path == "/api/folders" and method == "POST":
            uid = body.get("uid") or f"f{self.next_id}"
            if uid in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            if any(f["title"] == body["title"] for f in self.folders.values()):
                return 409, {"message": "a folder with that name already exists"}
            f = {"id": self.next_id, "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}/",
                 "hasAcl": False, "canSave": True, "canEdit": True, "canAdmin": True, "createdBy": "admin",
                 "created": "2026-10-01T00:00:00Z", "updatedBy": "admin", "updated": "2026-10-01T00:00:00Z",
                 "version": 1}
            self.next_id += 1
            self.folders[uid] = f
            return 200, f
        if path.startswith("/api/folders/") and method == "GET":
            f = self.folders.get(path.rsplit("/", 1)[1])
            return (200, f) if f else (404, {"message": "folder not found", "status": "not-found"})
        if path == "/api/search" and method == "GET":
            folders = query.get("folderUIDs", [])
            hits = [{"id": d["dashboard"]["id"], "uid": uid, "title": d["dashboard"]["title"], "uri": f"db/{uid}",
                     "url": f"/d/{uid}/x", "type": "dash-db", "tags": d["dashboard"].get("tags", []),
                     "isStarred": False, "folderUid": d["folderUid"],
                     "folderTitle": self.folders[d["folderUid"]]["title"]}
                    for uid, d in self.dashboards.items() if not folders or d["folderUid"] in folders]
            return 200, hits
        if path.startswith("/api/dashboards/uid/") and method == "GET":
            uid = path.rsplit("/", 1)[1]
            d = self.dashboards.get(uid)
            if d is None:
                return 404, {"message": "Dashboard not found"}
            if self.on_get_dashboard:
                self.on_get_dashboard(uid)
                d = self.dashboards[uid]
                reply = json.loads(json.dumps(d["dashboard"]))
                reply["version"] -= 1  # we answered before the other save landed
                return 200, {"dashboard": reply, "meta": self._meta(uid, reply["version"])}
            return 200, {"dashboard": d["dashboard"], "meta": self._meta(uid, d["dashboard"]["version"])}
        if path == "/api/dashboards/db" and method == "POST":
            return self._save(body)
        return 404, {"message": "Not found"}

    def _meta(self, uid: str, version: int) -> dict:
        d = self.dashboards[uid]
        return {"type": "db", "canSave": True, "canEdit": True, "slug": uid, "url": f"/d/{uid}/x",
                "version": version, "folderUid": d["folderUid"], "folderTitle": self.folders[d["folderUid"]]["title"],
                "provisioned": d.get("provisioned", False)}

    def _save(self, body: dict) -> tuple[int, object]:
        dash, folder = dict(body["dashboard"]), body.get("folderUid", "")
        uid, overwrite = dash.get("uid"), body.get("overwrite", False)
        same_title = [u for u, d in self.dashboards.items()
                      if d["dashboard"]["title"] == dash["title"] and d["folderUid"] == folder and u != uid]
        if same_title and not overwrite:
            return 412, {"message": "A dashboard with the same name in the folder already exists", "status": "name-exists"}
        held = self.dashboards.get(uid)
        if held is not None and not overwrite and dash.get("version") != held["dashboard"]["version"]:
            return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
        if held is None and dash.get("id") not in (None, 0):
            return 404, {"message": "Dashboard not found"}
        version = held["dashboard"]["version"] + 1 if held else 1
        dash.update(id=held["dashboard"]["id"] if held else self.next_id, version=version)
        self.next_id += held is None
        self.dashboards[uid] = {"dashboard": dash, "folderUid": folder}
        return 200, {"id": dash["id"], "uid": uid, "url": f"/d/{uid}/x", "status": "success",
                     "version": version, "slug": uid}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _serve(self, method):
                u = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((method, u.path, body))
                fake._auth_ok = fake.authorized(self.headers)
                status, reply = fake.handle(method, u.path, parse_qs(u.query), body)
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(reply, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        return Handler


@pytest.fixture
def grafana():
    g = FakeGrafana()
    yield g
    g.close()


@pytest.fixture
def root(tmp_path) -> Path:
    """A project folder holding three built dashboards."""
    (tmp_path / "dashboards").mkdir()
    for stem, title in (("goals", "Monitor: goals"), ("model-health", "Monitor: model health"), ("monitor", "Monitor: jobs")):
        d = {"uid": f"monitor-{stem}", "title": title, "tags": ["monitor"], "panels": [], "schemaVersion": 41,
             "description": "DO NOT EDIT: generated by `monitor build`."}
        (tmp_path / "dashboards" / f"{stem}.json").write_text(json.dumps(d))
    return tmp_path


def run(url, root, env, folder="Monitor"):
    out, err = io.StringIO(), io.StringIO()
    code = grafana_push.push(url, root, folder=folder, env=env, timeout=3, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


TOKEN_ENV = {"GRAFANA_TOKEN": TOKEN}


def test_first_push_creates_the_folder_and_every_dashboard_in_it(grafana, root):
    code, out, err = run(grafana.url, root, TOKEN_ENV)
    assert code == 0, err
    assert [f["title"] for f in grafana.folders.values()] == ["Monitor"]
    folder_uid = next(iter(grafana.folders))
    assert {u: d["folderUid"] for u, d in grafana.dashboards.items()} == {
        "monitor-goals": folder_uid, "monitor-model-health": folder_uid, "monitor-monitor": folder_uid}
    for body in grafana.saves():
        assert body["overwrite"] is False and body["folderUid"] == folder_uid and body["dashboard"]["id"] is None
    assert "3 created, 0 updated, 0 unchanged" in out


def test_a_second_push_changes_nothing(grafana, root):
    assert run(grafana.url, root, TOKEN_ENV)[0] == 0
    versions = {u: d["dashboard"]["version"] for u, d in grafana.dashboards.items()}
    saves = len(grafana.saves())
    code, out, err = run(grafana.url, root, TOKEN_ENV)
    assert code == 0, err
    assert len(grafana.saves()) == saves
    assert {u: d["dashboard"]["version"] for u, d in grafana.dashboards.items()} == versions
    assert len(grafana.folders) == 1
    assert "0 created, 0 updated, 3 unchanged" in out


def test_a_changed_dashboard_is_updated_with_the_version_it_replaces(grafana, root):
    assert run(grafana.url, root, TOKEN_ENV)[0] == 0
    f = root / "dashboards" / "goals.json"
    d = json.loads(f.read_text())
    d["panels"] = [{"id": 1, "type": "stat", "title": "new"}]
    f.write_text(json.dumps(d))
    code, out, err = run(grafana.url, root, TOKEN_ENV)
    assert code == 0, err
    last = grafana.saves()[-1]
    assert last["dashboard"]["uid"] == "monitor-goals" and last["dashboard"]["version"] == 1
    assert grafana.dashboards["monitor-goals"]["dashboard"]["version"] == 2
    assert grafana.dashboards["monitor-goals"]["dashboard"]["panels"][0]["title"] == "new"
    assert "0 created, 1 updated, 2 unchanged" in out


def test_an_existing_folder_of_that_title_is_reused(grafana, root):
    grafana.folders["abc"] = {"id": 99, "uid": "abc", "title": "Team KPIs"}
    code, _, err = run(grafana.url, root, TOKEN_ENV, folder="Team KPIs")
    assert code == 0, err
    assert list(grafana.folders) == ["abc"]
    assert {d["folderUid"] for d in grafana.dashboards.values()} == {"abc"}


def test_basic_auth_from_the_environment_works(grafana, root):
    code, _, err = run(grafana.url, root, {"GRAFANA_USER": USER, "GRAFANA_PASSWORD": PASSWORD})
    assert code == 0, err
    assert len(grafana.dashboards) == 3


@pytest.mark.parametrize("env, blamed", [
    ({"GRAFANA_TOKEN": "glsa_wrong"}, "GRAFANA_TOKEN"),
    ({"GRAFANA_USER": USER, "GRAFANA_PASSWORD": "nope"}, "GRAFANA_USER/GRAFANA_PASSWORD"),
    ({}, "no credentials"),
])
def test_a_rejected_credential_is_named_and_nothing_is_written(grafana, root, env, blamed):
    code, _, err = run(grafana.url, root, env)
    assert code == 1
    assert "rejected" in err and blamed in err and "401" in err
    assert not grafana.dashboards and not grafana.folders


def test_a_url_where_nothing_listens_says_grafana_cannot_be_reached(root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(f"http://127.0.0.1:{port}", root, TOKEN_ENV)
    assert code == 1
    assert f"cannot reach Grafana at http://127.0.0.1:{port}" in err and "--grafana-url" in err


def test_a_url_that_is_not_grafana_is_called_out(grafana, root):
    code, _, err = run(grafana.url + "/not-grafana", root, TOKEN_ENV)
    assert code == 1
    assert "does not look like Grafana" in err


def test_a_malformed_url_is_a_usage_error(root):
    code, _, err = run("localhost:3000", root, TOKEN_ENV)
    assert code == 2 and "--grafana-url" in err


def test_a_dashboard_saved_by_someone_else_meanwhile_is_a_version_conflict(grafana, root):
    assert run(grafana.url, root, TOKEN_ENV)[0] == 0
    d = json.loads((root / "dashboards" / "goals.json").read_text())
    d["title"] = "Monitor: goals v2"
    (root / "dashboards" / "goals.json").write_text(json.dumps(d))

    def someone_saves(uid):
        if uid == "monitor-goals" and grafana.dashboards[uid]["dashboard"]["version"] == 1:
            grafana.dashboards[uid]["dashboard"]["version"] = 2

    grafana.on_get_dashboard = someone_saves
    code, _, err = run(grafana.url, root, TOKEN_ENV)
    assert code == 1
    assert "version conflict" in err and "monitor-goals" in err and "again" in err
    assert grafana.dashboards["monitor-goals"]["dashboard"]["title"] == "Monitor: goals"


def test_a_foreign_dashboard_with_the_same_title_is_reported(grafana, root):
    assert run(grafana.url, root, TOKEN_ENV)[0] == 0
    folder = next(iter(grafana.folders))
    grafana.dashboards["someone-else"] = {"dashboard": {"id": 50, "uid": "someone-else", "title": "Monitor: goals v2",
                                                        "version": 1}, "folderUid": folder}
    d = json.loads((root / "dashboards" / "goals.json").read_text())
    d["title"] = "Monitor: goals v2"
    (root / "dashboards" / "goals.json").write_text(json.dumps(d))
    code, _, err = run(grafana.url, root, TOKEN_ENV)
    assert code == 1
    assert "already exists in folder 'Monitor'" in err and "Monitor: goals v2" in err


def test_dashboards_left_in_the_folder_by_an_older_build_are_pointed_out(grafana, root):
    assert run(grafana.url, root, TOKEN_ENV)[0] == 0
    (root / "dashboards" / "monitor.json").unlink()
    code, out, _ = run(grafana.url, root, TOKEN_ENV)
    assert code == 0
    assert "monitor-monitor" in out and "no longer generated" in out


def test_without_built_dashboards_the_push_asks_for_monitor_build(tmp_path):
    code, _, err = run("http://127.0.0.1:1", tmp_path, TOKEN_ENV)
    assert code == 2 and "monitor build" in err


def test_the_command_line_pushes_the_committed_dashboards(grafana, monkeypatch, capsys):
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    root = Path(__file__).resolve().parent.parent
    assert main(["dashboards", "push", "--grafana-url", grafana.url, "--folder", "ML monitor", "--root", str(root)]) == 0
    built = sorted(p.stem for p in (root / "dashboards").glob("*.json"))
    assert len(grafana.dashboards) == len(built) >= 3
    assert [f["title"] for f in grafana.folders.values()] == ["ML monitor"]
    assert "created" in capsys.readouterr().out
