"""Hand-written promtool cases (tests/fixtures/promtool/*.yaml) against the rules `monitor build`
makes for the alerting fixture's config: an oracle written from the runbook's meaning of each
alert, not generated from the data the rules come from."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fixtures.alerting_world import config
from stack import binary

from monitor import alerts

pytestmark = pytest.mark.stack

CASES = sorted((Path(__file__).parent / "fixtures" / "promtool").glob("*.yaml"))


def rules_without_annotations(tmp_path: Path) -> dict:
    """The fixture's generated rules; annotations dropped, for the cases check when and with which labels alerts fire."""
    doc = yaml.safe_load(alerts.render(config(tmp_path))["alerts/monitor.rules.yml"])
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return doc


def test_there_are_cases_for_the_burn_and_starvation_alerts():
    named = {t["alertname"] for case in CASES for test in yaml.safe_load(case.read_text())["tests"]
             for t in test["alert_rule_test"]}
    assert {"BadSessionShareErrorBudgetFastBurn", "BadSessionShareErrorBudgetSlowBurn", "ScorerLabelStarvation"} <= named


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_hand_written_cases_hold_on_the_generated_rules(case, tmp_path):
    doc = rules_without_annotations(tmp_path)
    generated = {r["alert"] for g in doc["groups"] for r in g["rules"]}
    # promtool passes `exp_alerts: []` for an alert that does not exist: each one named must be a rule
    named = {t["alertname"] for test in yaml.safe_load(case.read_text())["tests"] for t in test["alert_rule_test"]}
    assert named <= generated | {"MinutesPerUserErrorBudgetFastBurn"}, named - generated
    assert "MinutesPerUserErrorBudgetFastBurn" not in generated  # a goal that is not a rate has no budget
    (tmp_path / "monitor.rules.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(case, tmp_path / case.name)
    r = subprocess.run([binary("promtool"), "test", "rules", case.name], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
