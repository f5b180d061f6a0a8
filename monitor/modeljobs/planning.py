"""Which windows of a model to compute now, and the reference range each is compared with."""
from __future__ import annotations

from datetime import datetime

from .. import drift as D
from ..config import Model
from ..durations import Months
from ..store import Store
from ..windows import Window, due_windows, plan, shift, window_at


def plan_windows(store: Store, model: Model, now: datetime) -> list[Window]:
    """Windows of the model to compute now.

    Every due window not yet stored; the last `recompute` due ones (late predictions); each stored
    window still `pending` whose labels have matured since; and the last `recompute` windows whose
    labels have matured (labels that keep arriving after `max_delay`).
    """
    D.validate_method(model.drift.method)
    done = store.model_windows_done(model.name)
    unsettled: set[datetime] = set()
    if model.labels is not None:
        delay = model.labels.max_delay
        unsettled = {s for s, status in done.items()
                     if status == "pending" and window_at(s, model.window).end + delay <= now}
        if model.recompute > 0:
            matured = [w for w in due_windows(model.start, now, model.window) if w.end + delay <= now]
            unsettled |= {w.start for w in matured[-model.recompute:]}
    return plan(model.start, now, model.window, set(done), model.recompute, unsettled)


def reference_range(model: Model, window: Window) -> Window:
    """The rows a window is compared with: the fixed range, or the rolling windows just before it."""
    ref = model.reference
    if ref.rolling is None:
        return Window(ref.start, ref.end)
    n = _rolling_windows(model)
    return Window(shift(window.start, model.window, -n), window.start)


def _rolling_windows(model: Model) -> int:
    roll, size = model.reference.rolling, model.window
    if isinstance(roll, Months) and isinstance(size, Months):
        return max(1, round(roll.months / size.months))
    return max(1, round(roll / size))
