"""`monitor build`: alerts/ and dashboards/ written from the config; `--check` fails when they are stale."""
from __future__ import annotations

import sys
from pathlib import Path

from .config import Config, load_config


def demo_config_path(root: Path) -> Path:
    """The config the committed files are built from: the demo's, made on the fly."""
    return root / "examples" / "monitor.yaml"


def render_all(cfg: Config) -> dict[str, str]:
    """Every generated file: relative path -> text."""
    from . import alerts, dashboards

    files = {}
    files.update(alerts.render(cfg))
    files.update(dashboards.render(cfg))
    return files


def build(config: str | None, root: Path, check: bool = False, out: Path | None = None) -> int:
    """Write (or, with check, compare) every generated file under `out` (default: `root`); 0 when up to date."""
    cfg = load_config(config or demo_config_path(root))
    root = out or root
    files = render_all(cfg)
    stale = []
    for rel, text in sorted(files.items()):
        path = root / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if check:
        for rel in stale:
            print(f"stale: {rel}", file=sys.stderr)
        if stale:
            print("Generated files are out of date: run `monitor build` and commit the result.", file=sys.stderr)
            return 1
        print(f"ok: {len(files)} generated files are up to date")
        return 0
    print(f"wrote {len(stale)} of {len(files)} generated files" if stale else f"{len(files)} generated files already up to date")
    return 0
