"""`monitor app`: the Streamlit review app, run by `streamlit run` on the installed `app_streamlit` package.

Access, from the environment:
- `MONITOR_APP_PASSWORD`: one shared password.
- OIDC through Streamlit's login: `MONITOR_OIDC_SERVER_METADATA_URL`, `MONITOR_OIDC_CLIENT_ID`,
  `MONITOR_OIDC_CLIENT_SECRET`, optionally `MONITOR_OIDC_REDIRECT_URI` (default
  `http://HOST:PORT/oauth2callback`) and `MONITOR_OIDC_COOKIE_SECRET` (default: a new random one
  each start, which logs everyone out on restart). They are written to a private secrets file
  that only this process's Streamlit reads, and removed when it stops.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

OIDC_ENV = {"server_metadata_url": "MONITOR_OIDC_SERVER_METADATA_URL", "client_id": "MONITOR_OIDC_CLIENT_ID",
            "client_secret": "MONITOR_OIDC_CLIENT_SECRET"}


def entry_point() -> Path:
    """The app's main script, inside the installed package."""
    import app_streamlit

    return Path(app_streamlit.__file__).resolve().parent / "Home.py"


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def oidc_secrets(host: str, port: int, env=None) -> str | None:
    """The `[auth]` section of a Streamlit secrets file from MONITOR_OIDC_*, or None when OIDC is not configured."""
    env = os.environ if env is None else env
    given = {k: env.get(v, "") for k, v in OIDC_ENV.items()}
    if not any(given.values()):
        return None
    missing = [OIDC_ENV[k] for k, v in given.items() if not v]
    if missing:
        from .config import ConfigError

        raise ConfigError(f"OIDC login is half configured: set {', '.join(missing)} too (or unset every MONITOR_OIDC_*)")
    shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    auth = {"redirect_uri": env.get("MONITOR_OIDC_REDIRECT_URI") or f"http://{shown}:{port}/oauth2callback",
            "cookie_secret": env.get("MONITOR_OIDC_COOKIE_SECRET") or secrets.token_urlsafe(32), **given}
    return "[auth]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in auth.items())


def command(config_path: Path, host: str, port: int, secrets_file: Path | None = None) -> list[str]:
    """The `streamlit run` command line: headless, no usage statistics, no file watching."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(entry_point()),
           "--server.headless=true", "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
           "--server.runOnSave=false", f"--server.address={host}", f"--server.port={port}",
           "--client.toolbarMode=viewer", "--client.showErrorDetails=none", "--global.developmentMode=false"]
    if secrets_file:
        cmd.append(f"--secrets.files={secrets_file}")
    return cmd


def port_free(host: str, port: int) -> str | None:
    """None when `host:port` can be listened on, else why not (one line)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def launch(config_path: str | Path | None, host: str = "127.0.0.1", port: int = 8501, now=None) -> int:
    """Validate the config, then serve the app until stopped; returns Streamlit's exit code."""
    from .config import ConfigError, load_config

    cfg = load_config(config_path)  # a bad config fails here with exit code 2, not in the browser
    section = oidc_secrets(host, port)
    if section:
        try:
            import authlib  # noqa: F401
        except ImportError:
            raise ConfigError("OIDC login needs Authlib: pip install 'streamlit[auth]'") from None
    busy = port_free(host, port)
    if busy:
        print(f"error: cannot listen on {host}:{port}: {busy} (another app running? pass --port)", file=sys.stderr)
        return 1
    env = {**os.environ, "MONITOR_CONFIG": str(cfg.path), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    if now is not None:  # a pinned clock for a world pinned in the past
        env["MONITOR_NOW"] = now.isoformat()
    with tempfile.TemporaryDirectory(prefix="monitor-app-") as tmp:
        secrets_file = None
        if section:
            secrets_file = Path(tmp) / "secrets.toml"
            secrets_file.touch(mode=0o600)
            secrets_file.write_text(section)
        print(f"Serving the review app on http://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}:{port} "
              f"for {cfg.path} (Ctrl-C stops it)", flush=True)
        proc = subprocess.Popen(command(cfg.path, host, port, secrets_file), env=env)

        def forward(signum, _frame):
            proc.send_signal(signum)

        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
