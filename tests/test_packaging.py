"""The dependency set imports together, and the command line stays light."""
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow


def test_evidently_imports_with_the_pinned_pandas():
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""\
        import pandas, evidently
        from evidently import Report
        from evidently.presets import DataDriftPreset
        print(pandas.__version__)
        """)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split(".")[0]) < 3


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True)
    return set(out.stdout.split())


def test_help_imports_no_heavy_library():
    mods = _modules_after("import contextlib, io\nfrom monitor.cli import main\n"
                          "with contextlib.redirect_stdout(io.StringIO()):\n    main([])")
    assert "monitor.cli" in mods
    assert not mods & {"evidently", "pandas", "sqlalchemy", "streamlit", "scipy", "numpy"}


def test_metrics_does_not_import_evidently_pandas_or_streamlit(tmp_path):
    (tmp_path / "g.sql").write_text("SELECT 1 AS value")
    (tmp_path / "m.yaml").write_text(f"database_url: sqlite:///{tmp_path}/x.db\ngoals: []\n")
    mods = _modules_after(f"from monitor.cli import main\nmain(['metrics', '--config', '{tmp_path}/m.yaml'])")
    assert "prometheus_client" in mods
    assert not mods & {"evidently", "pandas", "streamlit"}


def test_the_code_passes_the_linter():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "monitor", "app_streamlit", "tests", "benchmarks", "tools"],
                         cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
