"""The compose deployment: valid against the Compose specification, and its commands run as plain processes."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose

from pg import free_port
from test_serve import get, wait_for

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
BIN = Path(sys.executable).parent


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_compose_file_follows_the_compose_specification():
    PyCompose.from_yaml(COMPOSE.read_text()).validate()
    doc = compose()
    assert set(doc["services"]) >= {"postgres", "monitor", "app", "prometheus", "alertmanager", "pushgateway", "grafana"}


def test_every_dependency_mount_and_volume_exists():
    doc = compose()
    services = doc["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for mount in svc.get("volumes", []):
            src = mount.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name} mounts {src}, which does not exist"
            else:
                assert src in doc["volumes"], f"{name} uses undeclared volume {src}"
        if name not in ("seed",):
            assert "healthcheck" in svc or name in ("seed",), f"{name} has no healthcheck"


def test_secrets_come_from_the_env_file_and_the_app_login_is_on():
    text = COMPOSE.read_text()
    assert not re.search(r"^\s*\w*PASSWORD:\s+(?!\$\{)\S", text, re.M), "no literal password"
    env_keys = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line and not line.startswith("#")}
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert used <= env_keys, f"not in .env.example: {used - env_keys}"
    assert "MONITOR_APP_PASSWORD" in compose()["services"]["app"]["environment"]


def test_the_dockerfile_copies_only_what_exists():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


@pytest.mark.stack
def test_prometheus_config_of_the_deployment_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is part of the Debian prometheus package (make test installs it)"
    text = (ROOT / "deploy" / "prometheus.yml").read_text().replace("/etc/prometheus/alerts", str(ROOT / "alerts"))
    (tmp_path / "prometheus.yml").write_text(text)
    out = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rule files found" in out.stdout and " 0 rule files found" not in out.stdout


def _command(service: str, env: dict) -> list[str]:
    cmd = compose()["services"][service]["command"]
    # compose interpolates ${VAR} from its environment and turns $$ into a literal $ for the shell
    return [re.sub(r"\$\{(\w+)[^}]*\}", lambda m: env.get(m.group(1), ""), c.replace("$$", "\0")).replace("\0", "$") for c in cmd]


@pytest.mark.postgres
def test_the_containers_commands_run_as_plain_processes(tmp_path, pg_cluster):
    db = f"compose_{os.getpid()}"
    url = pg_cluster.create_db(db)
    env = {**os.environ, "MONITOR_DATABASE_URL": url, "MONITOR_APP_PASSWORD": "pw", "PATH": f"{BIN}:{os.environ['PATH']}"}
    config = str(ROOT / "examples" / "monitor.yaml")
    seed = [c.replace("/app/examples/monitor.yaml", config).replace("/tmp/demo", str(tmp_path / "demo")) for c in _command("seed", env)]
    out = subprocess.run(seed, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Planted episodes" in out.stdout
    again = subprocess.run(seed, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Planted episodes" not in again.stdout, "the seed runs once"
    port = free_port()
    serve = [c.replace("/app/examples/monitor.yaml", config).replace("9108", str(port)) for c in _command("monitor", env)]
    proc = subprocess.Popen(serve + ["--host", "127.0.0.1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=180)
        except AssertionError:
            raise AssertionError(get(f"http://127.0.0.1:{port}/healthz")) from None
        assert 'monitor_goal_value{goal="spam_exposure_rate"}' in get(f"http://127.0.0.1:{port}/metrics")[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
