"""`monitor dashboards push`: upsert the generated dashboards into a Grafana folder with grafana-client.

Idempotent: a dashboard that Grafana already holds unchanged is not saved again, so its version
does not grow. Updates carry the version read just before, so a dashboard saved by someone else in
between is reported as a version conflict instead of being overwritten silently.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from . import conventions as n

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Fields Grafana sets or bumps on save; they do not make two dashboards different.
VOLATILE = ("id", "version", "iteration")


class PushError(Exception):
    """A push that cannot go on; the message says why and what to do."""


def load_dashboards(root: Path) -> list[dict]:
    """The dashboards `monitor build` wrote into root/dashboards/, ordered by file name."""
    folder = Path(root) / "dashboards"
    files = sorted(folder.glob("*.json"))
    if not files:
        raise PushError(f"no dashboards in {folder}: run `monitor build` first (or pass --root)")
    out = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except ValueError as e:
            raise PushError(f"{f}: not valid JSON ({e}): run `monitor build` to regenerate it") from None
        if not d.get("uid") or not d.get("title"):
            raise PushError(f"{f}: a dashboard needs a uid and a title")
        out.append(d)
    return out


def credential_from_env(env=None):
    """A token from GRAFANA_TOKEN, else (user, password) from GRAFANA_USER/GRAFANA_PASSWORD, else None."""
    env = os.environ if env is None else env
    if env.get("GRAFANA_TOKEN"):
        return env["GRAFANA_TOKEN"]
    if env.get("GRAFANA_USER"):
        return (env["GRAFANA_USER"], env.get("GRAFANA_PASSWORD", ""))
    return None


def _client(url: str, credential, timeout: float):
    from grafana_client import GrafanaApi

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--grafana-url must look like http://host:3000, got {url!r}")
    # grafana-client glues the path prefix straight onto "api": it needs its trailing slash.
    path = parts.path.strip("/")
    return GrafanaApi(credential, host=parts.hostname, port=parts.port, protocol=parts.scheme,
                      url_path_prefix=f"{path}/" if path else "", timeout=timeout)


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in VOLATILE}


class Pusher:
    """One push: checks Grafana, finds or makes the folder, upserts each dashboard."""

    def __init__(self, url: str, credential, timeout: float = 10.0, out=None):
        self.url = url.rstrip("/")
        self.credential = credential
        self.api = _client(url, credential, timeout)
        self.out = out or sys.stdout

    def call(self, what: str, fn, *args, **kw):
        """Run one API call; turn transport and auth failures into a PushError that says what to do."""
        from grafana_client.client import (
            GrafanaClientError,
            GrafanaException,
            GrafanaTimeoutError,
        )
        from niquests.exceptions import RequestException

        try:
            return fn(*args, **kw)
        except GrafanaTimeoutError as e:
            raise PushError(f"cannot reach Grafana at {self.url}: {what} timed out ({e})") from None
        except RequestException as e:
            raise PushError(f"cannot reach Grafana at {self.url}: {e.__class__.__name__}: {e}. "
                            "Check --grafana-url (scheme, host and port).") from None
        except GrafanaClientError as e:
            if e.status_code == 401:
                how = ("the token in GRAFANA_TOKEN" if isinstance(self.credential, str) else
                       "the user and password in GRAFANA_USER/GRAFANA_PASSWORD" if self.credential else
                       "no credentials (set GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD)")
                raise PushError(f"Grafana at {self.url} rejected {how} while trying to {what} "
                                f"(401: {_message(e)})") from None
            if e.status_code == 403:
                raise PushError(f"Grafana at {self.url} accepted the credentials but refused to {what} "
                                f"(403: {_message(e)}): the token or user needs the Editor role on the folder") from None
            raise
        except GrafanaException as e:
            if e.status_code == 0:
                raise PushError(f"cannot reach Grafana at {self.url}: {e}") from None
            raise

    def check(self) -> str:
        """Grafana's version; a PushError when the URL is not a Grafana."""
        from grafana_client.client import GrafanaClientError

        try:
            health = self.call("read /api/health", self.api.client.GET, "/health")
        except GrafanaClientError as e:
            raise PushError(f"{self.url} does not look like Grafana: GET /api/health answered "
                            f"{e.status_code}. Check --grafana-url (and its path, if Grafana is served under one).") from None
        if not isinstance(health, dict) or "database" not in health:
            raise PushError(f"{self.url} does not look like Grafana: GET /api/health did not answer Grafana's JSON. "
                            "Check --grafana-url.")
        return str(health.get("version", "unknown"))

    def folder(self, title: str) -> dict:
        """The folder with this title, created (with a uid from the title) when missing."""
        from grafana_client.client import GrafanaClientError

        for f in self.call("list folders", self.api.folder.get_all_folders) or []:
            if f.get("title") == title:
                return f
        uid = n.uid("monitor", "folder", title)
        try:
            made = self.call(f"create folder {title!r}", self.api.folder.create_folder, title, uid=uid)
        except GrafanaClientError as e:
            if e.status_code in (409, 412):  # a folder with this uid exists under another title
                return self.call(f"read folder {uid}", self.api.folder.get_folder, uid)
            raise PushError(f"cannot create folder {title!r} in Grafana ({e.status_code}: {_message(e)})") from None
        print(f"created folder {title!r}", file=self.out)
        return made

    def existing(self, uid: str) -> dict | None:
        from grafana_client.client import GrafanaClientError

        try:
            return self.call(f"read dashboard {uid}", self.api.dashboard.get_dashboard, uid)
        except GrafanaClientError as e:
            if e.status_code == 404:
                return None
            raise PushError(f"cannot read dashboard {uid} ({e.status_code}: {_message(e)})") from None

    def upsert(self, dashboard: dict, folder: dict) -> str:
        """Create or update one dashboard in the folder: 'created', 'updated' or 'unchanged'."""
        from grafana_client.client import GrafanaClientError

        uid, title = dashboard["uid"], dashboard["title"]
        current = self.existing(uid)
        body = _strip(dashboard)
        if current is not None:
            meta = current.get("meta") or {}
            held = current.get("dashboard") or {}
            if meta.get("provisioned"):
                raise PushError(f"dashboard {title!r} ({uid}) is provisioned from files in that Grafana "
                                "(dashboards/provisioning): it cannot be saved through the API; update the files instead")
            if _strip(held) == body and meta.get("folderUid") == folder["uid"]:
                return "unchanged"
            body.update(id=held.get("id"), version=held.get("version", meta.get("version")))
        else:
            body["id"] = None
        payload = {"dashboard": body, "folderUid": folder["uid"], "overwrite": False,
                   "message": "monitor dashboards push (generated by `monitor build`)"}
        try:
            self.call(f"save dashboard {title!r}", self.api.dashboard.update_dashboard, payload)
        except GrafanaClientError as e:
            status = e.response.get("status") if isinstance(e.response, dict) else None
            if e.status_code == 412 and status == "version-mismatch":
                raise PushError(f"version conflict on dashboard {title!r} ({uid}): someone saved it in Grafana "
                                "while this push ran. Run the push again to replace it with the generated one.") from None
            if e.status_code == 412 and status == "name-exists":
                raise PushError(f"another dashboard titled {title!r} already exists in folder {folder.get('title')!r} "
                                f"with a different uid than {uid}: delete or rename it in Grafana, then push again.") from None
            if e.status_code == 412:
                raise PushError(f"Grafana refused dashboard {title!r} ({status or 'precondition failed'}: {_message(e)})") from None
            raise PushError(f"Grafana refused dashboard {title!r} ({e.status_code}: {_message(e)})") from None
        return "created" if current is None else "updated"

    def strays(self, folder: dict, uids: set[str]) -> list[str]:
        """Titles of dashboards in the folder that the build no longer makes."""
        found = self.call("search the folder", self.api.search.search_dashboards, type_="dash-db",
                          folder_uids=[folder["uid"]]) or []
        return [f"{d.get('title')} ({d.get('uid')})" for d in found
                if d.get("uid") not in uids and "monitor" in (d.get("tags") or [])]


def _message(e) -> str:
    r = getattr(e, "response", None)
    if isinstance(r, dict) and r.get("message"):
        return str(r["message"])
    return str(r or e)


def push(url: str, root: Path, folder: str = "Monitor", *, env=None, timeout: float = 10.0, out=None, err=None) -> int:
    """Upsert every dashboard of root/dashboards/ into the Grafana folder; an exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        dashboards = load_dashboards(root)
    except PushError as e:
        print(f"error: {e}", file=err)
        return EXIT_USAGE
    try:
        p = Pusher(url, credential_from_env(env), timeout=timeout, out=out)
    except ValueError as e:
        print(f"error: {e}", file=err)
        return EXIT_USAGE
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    try:
        version = p.check()
        target = p.folder(folder)
        for d in dashboards:
            what = p.upsert(d, target)
            counts[what] += 1
            print(f"{what}: {d['title']} -> {p.url}/d/{d['uid']}", file=out)
        strays = p.strays(target, {d["uid"] for d in dashboards})
    except PushError as e:
        print(f"error: {e}", file=err)
        return EXIT_FAILED
    for s in strays:
        print(f"note: {s} in folder {folder!r} is no longer generated; delete it in Grafana if it is not needed",
              file=out)
    print(f"Grafana {version}, folder {folder!r}: {counts['created']} created, {counts['updated']} updated, "
          f"{counts['unchanged']} unchanged", file=out)
    return EXIT_OK
