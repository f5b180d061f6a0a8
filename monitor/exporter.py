"""The Prometheus exporter: a registry holding the results collector (`monitor.series`), and its text exposition."""
from __future__ import annotations

from prometheus_client.registry import CollectorRegistry

from .config import Config
from .series import ResultsCollector
from .store import Store


def registry(cfg: Config, store: Store) -> CollectorRegistry:
    """A fresh registry holding only the results collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ResultsCollector(cfg, store))
    return reg


def exposition(cfg: Config, store: Store) -> bytes:
    """The text exposition of the latest results."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(registry(cfg, store))
