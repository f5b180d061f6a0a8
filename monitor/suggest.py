""""Did you mean ...?" for a misspelled key, table or column."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to `word` (case-insensitive), or None when none is near enough."""
    by_lower = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean X?)`, or "" when nothing is close."""
    hit = closest(word, choices)
    return f" (did you mean {hit}?)" if hit and hit != word else ""
