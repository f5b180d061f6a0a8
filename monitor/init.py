"""`monitor init`: a first, commented config drafted from the tables of a database.

Guesses, from column names, types and a sample of the values: which tables are prediction logs
(a score column and a timestamp), their id, timestamp (and how it is spelled), score, decision and
label columns, the label tables that join to them, and which other columns are numeric or
categorical features. Columns left out say why. Nothing is written over without `force`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from .db import describe_error, make_engine, quote, quote_table

SAMPLE_ROWS = 100_000       # column statistics are taken over this many rows of each table
MAX_CATEGORIES = 100        # a text column with more distinct values is not a categorical feature
MIN_NUMERIC_VALUES = 6      # a number column with fewer distinct values is categorical

_ID = re.compile(r"(^id$|_id$|^id_|_uuid$|^uuid$|_key$|_hash$)", re.I)
_TIME_NAME = re.compile(r"(_at$|^ts$|_ts$|time|date|^created|^updated)", re.I)
_SCORE = re.compile(r"(score|prob|proba|probability|^pd$|_pd$|^pd_|predicted_|^prediction_value|^yhat|^y_pred)", re.I)
_DECISION = re.compile(r"(^pred$|^prediction$|predicted_(label|class|default|fraud|spam|churn)|_pred$|^pred_|decision|blocked|flagged|^is_)", re.I)
_LABEL = re.compile(r"(^label$|_label$|^is_|^actual|^target$|^outcome|^y$|^y_true$|truth|^has_)", re.I)
_LABEL_TABLE = re.compile(r"(label|actual|outcome|truth|feedback|target)", re.I)
_VERSION = re.compile(r"(^model_version$|^version$|_version$)", re.I)
_PREDICTED_AT = re.compile(r"(predict|scor|infer)", re.I)


class InitError(Exception):
    """Bad input to `monitor init` (exit code 2)."""


@dataclass
class Column:
    name: str
    kind: str                      # number, integer, text, time, bool, other
    primary_key: bool = False
    rows: int = 0                  # rows sampled
    non_null: int = 0
    distinct: int = 0
    low: object = None
    high: object = None
    time_format: str | None = None   # for time columns: timestamp, iso, epoch_s, epoch_ms


@dataclass
class Table:
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    rows: int = 0


def _kind(sqltype) -> str:
    try:
        py = sqltype.python_type
    except (NotImplementedError, AttributeError):
        return "other"
    if py is bool:
        return "bool"
    if py is int:
        return "integer"
    if py is float or py.__name__ == "Decimal":
        return "number"
    if py is str:
        return "text"
    if py in (datetime,) or py.__name__ in ("date", "datetime"):
        return "time"
    return "other"


def _detect_format(conn, table: str, col: Column) -> str | None:
    """How a time column is spelled: the database's own detection where there is one."""
    from . import db

    detect = getattr(db, "detect_timestamp_format", None)
    if detect is not None:
        try:
            return detect(conn, table, col.name)[0]
        except Exception:  # not a time column
            conn.rollback()
            return None
    if col.kind == "time":
        return "timestamp"
    if col.kind == "text" and isinstance(col.low, str) and re.match(r"^\d{4}-\d\d-\d\d", col.low):
        return "iso"
    if col.kind in ("integer", "number") and isinstance(col.low, (int, float)):
        if 1e9 <= col.low < 1e10:
            return "epoch_s"
        if 1e12 <= col.low < 1e13:
            return "epoch_ms"
    return None


def read_table(conn, name: str) -> Table:
    """The table's columns with statistics over a sample of its rows."""
    insp = sa.inspect(conn)
    schema, _, bare = name.rpartition(".")
    cols = insp.get_columns(bare, schema=schema or None)
    pk = set(insp.get_pk_constraint(bare, schema=schema or None).get("constrained_columns") or [])
    t = Table(name)
    for c in cols:
        t.columns[c["name"]] = Column(c["name"], _kind(c["type"]), primary_key=c["name"] in pk)
    if not t.columns:
        return t
    qt = quote_table(conn, name)
    parts = ["COUNT(*)"]
    for c in t.columns.values():
        q = quote(conn, c.name)
        parts += [f"COUNT({q})", f"COUNT(DISTINCT {q})", f"MIN({q})", f"MAX({q})"]
    row = conn.execute(sa.text(f"SELECT {', '.join(parts)} FROM (SELECT * FROM {qt} LIMIT {SAMPLE_ROWS}) sample")).one()
    for i, c in enumerate(t.columns.values()):
        c.rows, (c.non_null, c.distinct, c.low, c.high) = row[0], row[1 + 4 * i: 5 + 4 * i]
    t.rows = row[0] if row[0] < SAMPLE_ROWS else conn.execute(sa.text(f"SELECT COUNT(*) FROM {qt}")).scalar()
    for c in t.columns.values():
        if c.kind == "time" or _TIME_NAME.search(c.name):
            c.time_format = _detect_format(conn, name, c)
    return t


def _is_id(c: Column) -> bool:
    return bool(_ID.search(c.name)) or c.primary_key or (
        c.kind in ("integer", "text") and c.rows > 20 and c.distinct == c.rows)


def _is_unit_interval(c: Column) -> bool:
    try:
        return c.low is not None and 0 <= float(c.low) and float(c.high) <= 1
    except (TypeError, ValueError):
        return False


def _binary(c: Column) -> bool:
    return c.kind in ("integer", "bool", "number") and c.distinct == 2 and _is_unit_interval(c)


def _pick(cols, *tests):
    """The first column passing the earliest test that any column passes."""
    for test in tests:
        hit = [c for c in cols if test(c)]
        if hit:
            return hit[0]
    return None


@dataclass
class Draft:
    """The guesses for one prediction table."""
    table: Table
    id: Column
    timestamp: Column
    score: Column
    task: str
    prediction: Column | None = None
    label_table: Table | None = None
    label_id: Column | None = None
    label: Column | None = None
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)   # (column, why)
    first: datetime | None = None
    last: datetime | None = None


def _as_time(value, fmt: str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if fmt in ("epoch_s", "epoch_ms"):
        return datetime.fromtimestamp(float(value) / (1000 if fmt == "epoch_ms" else 1), tz=timezone.utc)
    from .durations import parse_timestamp
    try:
        return parse_timestamp(str(value).replace(" ", "T", 1) if len(str(value)) > 10 else str(value))
    except ValueError:
        return None


def draft_table(conn, t: Table, others: list[Table]) -> Draft | str:
    """The guesses for a prediction table, or why the table is not one."""
    cols = list(t.columns.values())
    times = [c for c in cols if c.time_format]
    scores = [c for c in cols if c.kind == "number" and _SCORE.search(c.name) and not _is_id(c)]
    if not scores:
        return "no score column (a number column named like score, probability or predicted_...)"
    if not times:
        return "no timestamp column"
    score = _pick(scores, _is_unit_interval, lambda c: True)
    ts = _pick(times, lambda c: bool(_PREDICTED_AT.search(c.name)) and c.kind != "other",
               lambda c: c.time_format == "timestamp" and c.name.endswith("_at"), lambda c: c.time_format is not None)
    ident = _pick(cols, lambda c: c.primary_key, lambda c: bool(_ID.search(c.name)) and c.distinct == c.non_null == c.rows,
                  lambda c: c.kind in ("integer", "text") and c.distinct == c.rows > 0)
    if ident is None:
        return "no id column (a column with one value per row, such as prediction_id)"
    task = "binary_classification" if _is_unit_interval(score) else "regression"
    d = Draft(t, ident, ts, score, task)
    used = {ident.name, ts.name, score.name}
    if task == "binary_classification":
        d.prediction = _pick([c for c in cols if c.name not in used and _binary(c)],
                             lambda c: bool(_DECISION.search(c.name)))
        if d.prediction:
            used.add(d.prediction.name)
    # labels: in a table that joins on the id, or in the log itself
    for other in [o for o in others if o.name != t.name]:
        oid = other.columns.get(ident.name)
        if oid is None:
            continue
        label = _label_column(other, {ident.name}, task)
        if label is not None and (_LABEL_TABLE.search(other.name) or _LABEL.search(label.name)):
            d.label_table, d.label_id, d.label = other, oid, label
            break
    if d.label is None:
        own = _label_column(t, used, task, strict=True)
        if own is not None:
            d.label_table, d.label_id, d.label = t, ident, own
            used.add(own.name)
    for c in cols:
        if c.name in used:
            continue
        why = _left_out(c, t)
        if why:
            d.left_out.append((c.name, why))
        elif c.kind in ("integer", "number") and c.distinct >= MIN_NUMERIC_VALUES:
            d.numeric.append(c.name)
        else:
            d.categorical.append(c.name)
    qt, q = quote_table(conn, t.name), quote(conn, ts.name)
    low, high = conn.execute(sa.text(f"SELECT MIN({q}), MAX({q}) FROM {qt}")).one()
    d.first, d.last = _as_time(low, ts.time_format), _as_time(high, ts.time_format)
    return d


def _label_column(t: Table, skip: set[str], task: str, strict: bool = False) -> Column | None:
    cands = [c for c in t.columns.values() if c.name not in skip and not c.time_format and not _is_id(c)
             and c.kind in ("integer", "number", "bool")]
    named = [c for c in cands if _LABEL.search(c.name) and (not strict or not c.name.startswith("is_"))]
    if task == "binary_classification":  # an empty label table (labels not in yet) tells nothing: take the name
        named = [c for c in named if _binary(c) or c.distinct <= 1]
    return named[0] if named else None


def _left_out(c: Column, t: Table) -> str | None:
    if c.rows and c.non_null == 0:
        return "always NULL"
    if c.distinct <= 1 and c.rows > 1:
        return f"constant: always {c.low!r}"
    if c.time_format or c.kind == "time":
        return "a time column, not a feature"
    if _VERSION.search(c.name):
        return "the model's version, not a feature"
    if c.kind == "text" and _DECISION.search(c.name):
        return "a decision of the model, not an input"
    if _is_id(c):
        return "id-like" + (f": {c.distinct:,} distinct values in {c.rows:,} rows" if c.rows else "")
    if c.kind == "text" and c.distinct > MAX_CATEGORIES:
        return f"text with {c.distinct:,} distinct values: too many for a category"
    if c.kind == "other":
        return "a type the monitor cannot compare"
    return None


def _day(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d")


def _window(d: Draft) -> str:
    span = (d.last - d.first) if d.first and d.last else timedelta(0)
    return "1d" if span >= timedelta(days=7) else "1h"


def _reference(d: Draft) -> tuple[str, str] | None:
    """The first two weeks of the data (or the first half of a shorter log), whole days."""
    if not d.first or not d.last:
        return None
    start = d.first.replace(hour=0, minute=0, second=0, microsecond=0)
    span = d.last - start
    length = timedelta(days=14) if span >= timedelta(days=28) else max(timedelta(days=1), timedelta(days=span.days // 2))
    return _day(start), _day(start + length)


def _url_for(url: str, config_dir: Path) -> str:
    """The database URL as the config should hold it: no password, relative SQLite paths from the config's folder."""
    u = sa.engine.make_url(url)
    if u.password:
        return "${MONITOR_DATABASE_URL}"
    if u.drivername.startswith("sqlite") and u.database and u.database != ":memory:":
        path = Path(u.database)
        if not path.is_absolute():
            path = path.resolve()
        rel = os.path.relpath(path, config_dir.resolve())
        return f"${{MONITOR_DATABASE_URL:-sqlite:///{rel}}}"
    return f"${{MONITOR_DATABASE_URL:-{url}}}"


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def render(drafts: list[Draft], skipped: list[tuple[str, str]], url: str, config_dir: Path,
           goal_sql: tuple[str, str, Draft] | None, has_format: bool) -> str:
    """The config's YAML text, with comments."""
    out = [
        "# Drafted by `monitor init` from the tables it found: check every guess, then run",
        "#   monitor check --config THIS_FILE",
        "# Relative paths are relative to this file's folder; ${VAR:-default} comes from the environment.",
        "version: 1                              # the config format's version",
        f"database_url: {_url_for(url, config_dir)}",
        "# results_url: postgresql://monitor@host/monitor   # where results go; empty: the same database",
        "",
        "# urls: {app: http://localhost:8501, runbook: https://wiki.example.com/monitor}   # for links in alerts",
        "",
    ]
    if skipped:
        out.append("# Tables that are not prediction logs:")
        out += [f"#   {name}: {why}" for name, why in skipped]
        out.append("")
    out.append("models:" if drafts else "models: []   # no prediction log found: see the tables above")
    for d in drafts:
        t = d.table
        out.append(f"  - name: {_model_name(t.name)}")
        out.append(f"    task: {d.task:<30}# score {d.score.name} in [{_num(d.score.low)}, {_num(d.score.high)}]")
        out.append(f"    window: {_window(d):<28}# 1h, 1d, 1w: half-open windows, aligned in UTC")
        out.append(f"    start: {_day(d.first) if d.first else '2026-01-01':<29}# the first row is at {d.first.isoformat() if d.first else '?'}")
        out.append("    source:")
        sampled = f" (column statistics from the first {SAMPLE_ROWS:,})" if t.rows > SAMPLE_ROWS else ""
        out.append(f"      table: {t.name:<27}# {t.rows:,} rows{sampled}")
        out.append(f"      id: {d.id.name}")
        out.append(f"      timestamp: {d.timestamp.name:<23}# spelled as {d.timestamp.time_format}, e.g. {d.timestamp.low}")
        if has_format and d.timestamp.time_format:
            out.append(f"      timestamp_format: {d.timestamp.time_format}")
        out.append(f"      score: {d.score.name}")
        if d.prediction is not None:
            out.append(f"      prediction: {d.prediction.name:<22}# the decision (0/1)")
        elif d.task == "binary_classification":
            out.append("      # prediction: COLUMN                # the decision (0/1): none found")
        out.append("      features:")
        out.append(f"        numeric: {_flow(d.numeric)}")
        out.append(f"        categorical: {_flow(d.categorical)}")
        for name, why in d.left_out:
            out.append(f"        # left out: {name} ({why})")
        if d.label is not None:
            out.append("    labels:")
            out.append(f"      table: {d.label_table.name}")
            out.append(f"      id: {d.label_id.name}")
            out.append(f"      label: {d.label.name}")
            out.append("      max_delay: 1d                      # how long labels take to arrive: set it")
        else:
            out.append("    # labels: {table: TABLE, id: COLUMN, label: COLUMN, max_delay: 2d}   # no label column found")
        ref = _reference(d)
        if ref:
            out.append(f"    reference: {{start: {ref[0]}, end: {ref[1]}}}   # the first days of the data; or {{rolling: 7d}}")
        else:
            out.append("    reference: {rolling: 7d}           # the table is empty: the windows just before")
        out.append("    drift: {method: auto, threshold: null, dataset_share: 0.5}")
        floor = "{roc_auc: {min: 0.80}}" if d.task == "binary_classification" else "{mae: {max: 10}}"
        out.append(f"    # quality: {floor}           # floors that alert")
        if d.categorical:
            out.append(f"    # segments: [{d.categorical[0]}]              # break results down by a categorical column")
        out.append("    owner: ''                            # the team that owns it: alerts route to it")
        out.append("")
    if goal_sql:
        name, rel, d, today = goal_sql
        unit = "ratio" if d.task == "binary_classification" else "count"
        target = f"{today:.4g}" if today is not None else "0.5"
        out += [
            "goals:   # a skeleton: replace its SQL with the business outcome the model serves",
            f"  - name: {name}",
            f"    title: {'Share of positive decisions' if unit == 'ratio' else 'Average prediction'} in {d.table.name}",
            f"    sql: {rel}",
            f"    kind: {'rate' if d.task == 'binary_classification' else 'value':<29}# what its SQL returns: rate, value or segmented",
            f"    models: [{_model_name(d.table.name)}]",
            f"    unit: {unit}",
            "    direction: at_most                  # or at_least",
            f"    target: {target:<28}# the value over the whole log so far: set the value to reach",
            f"    # baseline: {{value: {target}, at: " + (_day(d.first) if d.first else "2026-01-01") + "}",
            "    # deadline: 2027-03-31",
            "    window: 1d",
            f"    start: {_day(d.first) if d.first else '2026-01-01'}",
            "    owner: ''",
            "    why: ''",
            "",
        ]
    else:
        out.append("goals: []")
    return "\n".join(out) + "\n"


def _num(v) -> str:
    try:
        return f"{float(v):g}"
    except (TypeError, ValueError):
        return str(v)


def _model_name(table: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", table.split(".")[-1])
    return name if re.match(r"^[A-Za-z_]", name) else f"m_{name}"


def goal_sql_text(conn, d: Draft) -> str:
    """A goal's SQL over the log: the share of positive decisions, or the average prediction."""
    qt, ts = quote_table(conn, d.table.name), quote(conn, d.timestamp.name)
    if d.timestamp.time_format in ("epoch_s", "epoch_ms"):
        k = " * 1000" if d.timestamp.time_format == "epoch_ms" else ""
        where = f"{ts} >= :window_start_epoch{k} AND {ts} < :window_end_epoch{k}"
    elif d.timestamp.kind == "text":  # timestamps spelled as text: compare as text ('T' sorts after ' ')
        where = f"{ts} >= CAST(:window_start AS TEXT) AND {ts} < CAST(:window_end AS TEXT)"
    else:
        where = f"{ts} >= :window_start AND {ts} < :window_end"
    head = ("-- A goal skeleton drafted by `monitor init`: replace it with the business outcome the model\n"
            "-- serves. One SELECT over [:window_start, :window_end) returning `value` (NULL when there\n"
            "-- are no rows) and, for rates, `numerator` and `denominator`.\n")
    if d.task == "binary_classification":
        pos = (f"{quote(conn, d.prediction.name)} = 1" if d.prediction is not None
               else f"{quote(conn, d.score.name)} >= 0.5")
        return (head + f"SELECT SUM(CASE WHEN {pos} THEN 1 ELSE 0 END) AS numerator,\n"
                f"       COUNT(*) AS denominator,\n"
                f"       1.0 * SUM(CASE WHEN {pos} THEN 1 ELSE 0 END) / NULLIF(COUNT(*), 0) AS value\n"
                f"FROM {qt}\nWHERE {where}\n")
    return head + f"SELECT AVG({quote(conn, d.score.name)}) AS value\nFROM {qt}\nWHERE {where}\n"


def _value_so_far(conn, sql: str, d: Draft) -> float | None:
    """The skeleton goal's value over the whole log, as a first target to edit."""
    from .db import bind_time
    from .sqltext import strip_comments

    if not d.first or not d.last:
        return None
    start, end = d.first.replace(hour=0, minute=0, second=0, microsecond=0), d.last + timedelta(days=1)
    params = {"window_start": bind_time(conn, start), "window_end": bind_time(conn, end),
              "window_start_epoch": int(start.timestamp()), "window_end_epoch": int(end.timestamp())}
    try:
        row = conn.execute(sa.text(strip_comments(sql)), params).mappings().first()
    except Exception:
        conn.rollback()
        return None
    value = row and row.get("value")
    return float(value) if value is not None else None


def init(database_url: str, tables: list[str] | None = None, out: Path = Path("monitor.yaml"),
         force: bool = False) -> tuple[str, list[Path]]:
    """Draft the config (and the goal's SQL file); returns the summary line and the files written."""
    from .config import Source
    from .suggest import did_you_mean

    try:
        engine = make_engine(database_url)
    except (sa.exc.ArgumentError, ImportError) as e:
        raise InitError(f"--database-url: {e}") from None
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            names = sorted(insp.get_table_names())
            if tables:
                unknown = []
                for t in tables:
                    schema, _, bare = t.rpartition(".")
                    if not insp.has_table(bare, schema=schema or None):
                        unknown.append(f"table {t} not found{did_you_mean(t, names)}")
                if unknown:
                    raise InitError("--table: " + "; ".join(unknown))
                wanted = list(tables)
            else:
                wanted = [n for n in names if not n.startswith("monitor_")]
            if not wanted:
                raise InitError(f"{_safe(database_url)}: no tables found")
            read = {n: read_table(conn, n) for n in wanted}
            # label tables may lie outside --table
            others = list(read.values()) + [read_table(conn, n) for n in names
                                            if n not in read and not n.startswith("monitor_") and _LABEL_TABLE.search(n)]
            drafts, skipped = [], []
            for n in wanted:
                d = draft_table(conn, read[n], others)
                if isinstance(d, str):
                    skipped.append((n, d))
                else:
                    drafts.append(d)
            # a table used as another's labels is not "not a prediction log" for want of a score
            label_tables = {d.label_table.name for d in drafts if d.label_table is not None}
            skipped = [(n, f"labels of {next(d.table.name for d in drafts if d.label_table and d.label_table.name == n)}"
                        if n in label_tables else why) for n, why in skipped]
            goal = None
            sql_text = None
            if drafts:
                d = sorted(drafts, key=lambda d: d.task != "binary_classification")[0]
                gname = _model_name(d.table.name) + ("_positive_rate" if d.task == "binary_classification" else "_mean_prediction")
                sql_text = goal_sql_text(conn, d)
                goal = (gname, f"metrics_sql/{gname}.sql", d, _value_so_far(conn, sql_text, d))
    except sa.exc.OperationalError as e:
        raise InitError(f"--database-url: cannot connect: {describe_error(e)}") from None
    out = Path(out)
    files = {out: render(drafts, skipped, database_url, out.parent, goal, "timestamp_format" in Source.model_fields)}
    if goal:
        files[out.parent / goal[1]] = sql_text
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise InitError(f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}: "
                        "pass --force to overwrite, or --out another file")
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    summary = (f"wrote {out}: {len(drafts)} model{'s' if len(drafts) != 1 else ''} from "
               f"{', '.join(d.table.name for d in drafts) or 'no table'}"
               + (f", a goal skeleton in {files and list(files)[1]}" if goal else "")
               + f"; {len(skipped)} other table{'s' if len(skipped) != 1 else ''} listed in its comments.")
    return summary, list(files)


def _safe(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "database"

