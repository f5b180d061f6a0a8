"""The generated outputs of fixed configs (rules, promtool tests, runbook, Alertmanager config,
dashboards, the exporter's exposition of a fixed store) are byte-identical to tests/golden/out-*/."""
from __future__ import annotations

import difflib
import subprocess

import pytest
from stack import binary

import golden

CASES = sorted(golden.cases())


def _diff(case: str, rel: str, want: str, got: str) -> str:
    lines = difflib.unified_diff(want.splitlines(), got.splitlines(), f"golden out-{case}/{rel}", "generated", lineterm="", n=1)
    return "\n".join(list(lines)[:40])


@pytest.mark.parametrize("case", CASES)
def test_generated_outputs_match_golden_files(case):
    want = golden.stored(case)
    got = golden.render(case)
    hint = (f"the outputs of golden case {case!r} changed. If the change is intended, regenerate them with "
            f"`{golden.UPDATE}` and say why in the commit.")
    assert sorted(got) == sorted(want), f"{hint}\nfiles generated: {sorted(got)}\ngolden files: {sorted(want)}"
    for rel in sorted(want):
        assert got[rel] == want[rel], f"{hint}\n{_diff(case, rel, want[rel], got[rel])}"


def test_golden_cases_cover_every_kind_of_goal_and_model():
    """The fixtures hold a rate, a value and a segmented goal, and each task of model."""
    cfgs = [golden.load(c) for c in CASES]
    tasks = {m.task for c in cfgs for m in c.models}
    assert tasks == {"binary_classification", "regression", "multiclass_classification"}
    assert {g.kind for c in cfgs for g in c.goals} == {"rate", "value", "segmented"}
    assert any(g.kind_declared for c in cfgs for g in c.goals) and not all(g.kind_declared for c in cfgs for g in c.goals)


def test_exposition_of_the_fixed_store_is_deterministic():
    cfg = golden.load("segments")
    assert golden.exposition(cfg) == golden.exposition(cfg)


@pytest.mark.stack
@pytest.mark.parametrize("case", CASES)
def test_the_golden_rules_pass_promtool_and_their_generated_cases(case):
    folder = golden.out_dir(case) / "alerts"
    promtool = binary("promtool")
    for args in (["check", "rules", str(folder / "monitor.rules.yml")],
                 ["test", "rules", str(folder / "tests" / "monitor.rules.test.yml")]):
        run = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
