"""Virtual environments for the integrations (Airflow, MLflow), made once and kept in a cache.

Each holds its tool and, where the tool runs our code, this project (`pip install -e`), so its
own dependency set never meets the test environment's. The folder is named by a hash of what
it holds: a change of pins (or of the project's dependencies) makes a new one; the same pins
reuse it, so only the first run pays the install.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MONITOR_TEST_CACHE", Path.home() / ".cache" / "monitor-tests"))


def _project_key() -> str:
    return repr(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def cached_venv(name: str, requirements: list[str], with_project: bool = False) -> Path:
    """The venv `CACHE/<name>-<hash>` with `requirements` installed (and this project, editable)."""
    key = repr((sys.version_info[:2], requirements, with_project and _project_key()))
    path = CACHE / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{path.name}.lock", "w") as lock:  # two test workers build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / ".complete").exists():
            if with_project:
                _link_project(path)
            return path
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        args = list(requirements) + (["-e", str(ROOT)] if with_project else [])
        out = subprocess.run(pip + args, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"cannot build the {name} venv at {path}: pip install {' '.join(args)}\n{out.stderr[-3000:]}")
        (path / ".complete").write_text(" ".join(args) + "\n")
        if with_project:
            (path / ".project").write_text(str(ROOT))
        return path


def _link_project(path: Path) -> None:
    """An editable install points at one checkout: a venv made from another one is pointed here."""
    mark = path / ".project"
    if mark.exists() and mark.read_text() == str(ROOT):
        return
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", "-e", str(ROOT)], check=True, capture_output=True)
    mark.write_text(str(ROOT))
