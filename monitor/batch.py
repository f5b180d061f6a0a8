"""Batch mode: push the latest results to a Pushgateway, or write them as a node_exporter textfile.

The Pushgateway holds one group per monitor instance for the goal and model series
(`job="monitor"`), and, since a group's `job` label overrides the series' own, one group per
monitor job for the job series (`job="goal:<name>"`): Prometheus, scraping the Pushgateway with
`honor_labels: true`, sees the same series as when it scrapes `monitor serve`. Every push replaces
its group (HTTP PUT), and groups of jobs no longer in the config are deleted, so nothing piles up.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path

from prometheus_client.exposition import (
    delete_from_gateway,
    generate_latest,
    push_to_gateway,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from .conventions import SCRAPE_JOB
from .config import Config
from .series import ResultsCollector
from .store import Store

log = logging.getLogger("monitor.batch")


class PublishError(RuntimeError):
    """The Pushgateway refused the push or could not be reached; the message names it."""


class _Fixed:
    """A collector that yields metric families read once."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self):
        return iter(self.families)


def _registry(families: list[Metric]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Fixed(families))
    return reg


def instance_name() -> str:
    """This monitor instance's grouping key: $MONITOR_INSTANCE, else the host name."""
    return os.environ.get("MONITOR_INSTANCE") or socket.gethostname()


def split_by_job(families: list[Metric]) -> tuple[list[Metric], dict[str, list[Metric]]]:
    """Families without a `job` label, and, per value of `job`, the families with it (the label dropped)."""
    main: list[Metric] = []
    per_job: dict[str, dict[str, Metric]] = {}
    for fam in families:
        plain = [s for s in fam.samples if "job" not in s.labels]
        if plain or not fam.samples:
            m = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            m.samples = plain
            main.append(m)
        for s in fam.samples:
            if "job" not in s.labels:
                continue
            job = s.labels["job"]
            group = per_job.setdefault(job, {})
            if fam.name not in group:
                group[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            group[fam.name].samples.append(s._replace(labels={k: v for k, v in s.labels.items() if k != "job"}))
    return main, {job: list(g.values()) for job, g in per_job.items()}


def _is_monitor_job(job: str) -> bool:
    return job.startswith(("goal:", "model:"))


def push_families(url: str, families: list[Metric], instance: str, timeout: float = 10.0) -> None:
    """Replace this instance's groups on the Pushgateway at `url`; delete groups of jobs gone from the config."""
    main, per_job = split_by_job(families)
    key = {"instance": instance}
    try:
        push_to_gateway(url, job=SCRAPE_JOB, registry=_registry(main), grouping_key=key, timeout=timeout)
        for job, fams in sorted(per_job.items()):
            push_to_gateway(url, job=job, registry=_registry(fams), grouping_key=key, timeout=timeout)
        for job in sorted(_groups(url, instance, timeout) - set(per_job)):
            if _is_monitor_job(job):
                delete_from_gateway(url, job=job, grouping_key=key, timeout=timeout)
    except OSError as e:  # URLError and HTTPError are OSErrors
        raise PublishError(f"cannot push to the Pushgateway at {url}: {e}") from e


def _groups(url: str, instance: str, timeout: float) -> set[str]:
    """Jobs of this instance's groups on the Pushgateway."""
    import json
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/api/v1/metrics", timeout=timeout) as r:
        data = json.load(r).get("data") or []
    return {g["labels"].get("job", "") for g in data if g.get("labels", {}).get("instance") == instance}


def write_textfile(path: str | Path, families: list[Metric]) -> None:
    """Write the exposition atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    data = generate_latest(_registry(families))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def publish(cfg: Config, store: Store, push: str | None = None, textfile: str | Path | None = None,
            instance: str | None = None) -> None:
    """Read the latest results once; push them to a Pushgateway and/or write them as a textfile."""
    families = list(ResultsCollector(cfg, store).collect())
    if textfile:
        write_textfile(textfile, families)
    if push:
        push_families(push, families, instance or instance_name())
