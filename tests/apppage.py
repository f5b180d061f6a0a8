"""The review app's Models page opened on a config file, as `monitor app` would (no password)."""
from __future__ import annotations

from pathlib import Path

HOME = Path(__file__).resolve().parent.parent / "app_streamlit" / "Home.py"


def models_page(config: str | Path, monkeypatch):
    """The AppTest of the Models page (its first model), run without an exception."""
    from streamlit.testing.v1 import AppTest

    from app_streamlit import ui

    monkeypatch.setenv("MONITOR_CONFIG", str(config))
    monkeypatch.delenv("MONITOR_APP_PASSWORD", raising=False)
    ui._read.clear()
    at = AppTest.from_file(str(HOME), default_timeout=30).run().switch_page("models.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at
