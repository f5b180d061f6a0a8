from datetime import datetime, timedelta, timezone

from hypothesis import given, strategies as st

from monitor.windows import Window, due_windows, floor, is_mature, plan, window_at

UTC = timezone.utc
sizes = st.sampled_from([timedelta(hours=1), timedelta(hours=6), timedelta(days=1), timedelta(weeks=1), timedelta(minutes=15)])
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(moments, sizes)
def test_the_window_holding_a_moment_is_aligned_and_half_open(ts, size):
    w = window_at(ts, size)
    assert w.start <= ts < w.end
    assert w.size == size
    assert floor(w.start, size) == w.start


@given(moments, sizes)
def test_consecutive_windows_tile_time_without_gaps_or_overlaps(ts, size):
    a = window_at(ts, size)
    b = window_at(a.end, size)
    assert b.start == a.end


@given(moments)
def test_weekly_windows_start_on_monday_at_midnight(ts):
    w = window_at(ts, timedelta(weeks=1))
    assert w.start.weekday() == 0 and w.start.hour == 0 and w.start.minute == 0


@given(moments)
def test_daily_windows_start_at_midnight_utc(ts):
    w = window_at(ts, timedelta(days=1))
    assert (w.start.hour, w.start.minute, w.start.second, w.start.microsecond) == (0, 0, 0, 0)


@given(moments, st.integers(0, 400), sizes)
def test_a_window_is_due_exactly_when_its_end_has_passed(start, n_hours, size):
    now = start + timedelta(hours=n_hours)
    due = due_windows(start, now, size)
    assert all(w.end <= now for w in due)
    nxt = due[-1].end if due else floor(start, size)
    assert nxt + size > now  # the next window is not due yet


@given(moments, st.integers(0, 200), st.integers(0, 10), st.sets(st.integers(0, 250)))
def test_plan_catches_up_everything_missing_and_recomputes_the_tail(start, n, recompute, done_idx):
    size = timedelta(hours=1)
    first = floor(start, size)
    now = first + n * size
    due = due_windows(start, now, size)
    done = {first + i * size for i in done_idx}
    todo = plan(start, now, size, done, recompute)
    missing = {w.start for w in due if w.start not in done}
    tail = {w.start for w in due[max(len(due) - recompute, 0):]}  # the last `recompute` due windows, none when 0
    assert [w.start for w in todo] == sorted(missing | tail)  # exactly these, in order, nothing else
    assert all(w in due for w in todo)


def test_unsettled_windows_are_recomputed_until_they_mature():
    size = timedelta(days=1)
    start = datetime(2026, 9, 1, tzinfo=UTC)
    now = datetime(2026, 9, 10, tzinfo=UTC)
    done = {start + i * size for i in range(9)}
    todo = plan(start, now, size, done, recompute=0, unsettled={start + 2 * size})
    assert [w.start for w in todo] == [start + 2 * size]
    w = Window(start, start + size)
    assert not is_mature(w, start + timedelta(days=2), timedelta(days=3))
    assert is_mature(w, start + timedelta(days=4), timedelta(days=3))


def test_a_window_prints_as_a_half_open_range():
    w = window_at(datetime(2026, 9, 3, 5, tzinfo=UTC), timedelta(days=1))
    assert str(w) == "[2026-09-03, 2026-09-04)"
