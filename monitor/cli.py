"""The `monitor` command. Heavy libraries are imported inside the commands, so `--help` is instant."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from . import conventions as n

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Watches ML models and the business goals they serve. Scheduled jobs read prediction logs and
business events from SQL, compute drift, model quality and SMART goals, keep their history,
and export them to Prometheus.

Start with `monitor demo`, then run any other command with --config monitor-demo/monitor.yaml.
Exit codes: 0 all good, 1 a job failed (the others still ran), 2 bad config or usage."""


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


class StoreUnusable(Exception):
    """The results store cannot be reached, created or written (down, missing permissions): exit code 2, as nothing ran."""


@contextmanager
def _results_store(cfg):
    """Turns a database error of the results store into one line naming the key and the database."""
    import sqlalchemy as sa

    try:
        yield
    except sa.exc.SQLAlchemyError as e:
        from .db import describe_error

        key = "results_url" if cfg.results_url else "database_url (results_url is empty, so results go there)"
        where = sa.engine.make_url(cfg.store_url).render_as_string(hide_password=True)
        raise StoreUnusable(f"{key}: the results store {where} cannot be used: {describe_error(e)}") from None


def _timestamp(text: str):
    from .durations import parse_timestamp

    try:
        return parse_timestamp(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _date(text: str):
    return _timestamp(text).date()


def _config_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", metavar="FILE", required=False,
                   help="the config file (default: $MONITOR_CONFIG)" + ("" if required else "; default: the demo config"))


def _verbosity_args(p: argparse.ArgumentParser, default=argparse.SUPPRESS) -> None:
    """-v/-q, accepted before and after the command (the command's own copy never resets the other)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--verbose", "-v", action="store_true", default=default,
                   help="log more: every job and window (never the migrations' own chatter)")
    g.add_argument("--quiet", "-q", action="store_true", default=default, help="log errors only")


def _host_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)")


class _Parser(argparse.ArgumentParser):
    """Subcommands get -v/-q too, so `monitor run-once -v` works like `monitor -v run-once`."""

    def add_subparsers(self, **kw):
        action = super().add_subparsers(**kw)
        add = action.add_parser

        def add_parser(name, **kw2):
            p = add(name, **kw2)
            _verbosity_args(p)
            return p
        action.add_parser = add_parser
        return action


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="monitor", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _verbosity_args(ap, default=False)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="make the demo world (SQLite) and compute every window",
                       description="Makes the demo world in DIR: a SQLite file, monitor.yaml and episodes.json; "
                                   "computes every window and prints each goal's status and what was detected.")
    p.add_argument("--dir", default="monitor-demo", help="where to put it (default: ./monitor-demo)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the world (default 7)")
    p.add_argument("--days", type=int, default=56, help="days of history (default 56)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies row counts (default 1.0)")
    p.add_argument("--database-url", help="put the source tables here instead (e.g. postgresql://...)")
    p.add_argument("--end", type=_date, metavar="DATE",
                   help="the day the world ends (default: today, so serve, app and run-once show current data)")
    p.add_argument("--force", action="store_true", help="start afresh: drop the review notes and closed weeks of an earlier demo")

    p = sub.add_parser("init", help="draft a commented config from the tables of a database",
                       description="Reads the database and drafts a config: for each prediction log its id, timestamp "
                                   "(and how it is spelled), score, decision and label columns, numeric and categorical "
                                   "features, a reference range, and a goal skeleton with its SQL file. Columns left out "
                                   "say why. Check every guess, then run `monitor check --config FILE`.")
    p.add_argument("--database-url", required=True, metavar="URL", help="SQLAlchemy URL of the tables (e.g. postgresql://user@host/db)")
    p.add_argument("--table", action="append", metavar="T", help="only this table (repeat for more; default: every table)")
    p.add_argument("--out", default="monitor.yaml", metavar="FILE", help="the config to write (default: ./monitor.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite the config and the goal's SQL file when they exist")

    p = sub.add_parser("run-once", help="compute every due window once, then exit",
                       description="One cycle: computes every window that is due and not yet computed "
                                   "(catching up after downtime) plus the last `recompute` ones.")
    _config_arg(p)
    p.add_argument("--now", type=_timestamp, help="pin the clock (ISO 8601; a bare date is midnight UTC)")
    p.add_argument("--json", action="store_true", help="print the goal table as JSON")
    p.add_argument("--push", metavar="URL", help="push the results to this Pushgateway")
    p.add_argument("--textfile", metavar="PATH", help="write the exposition to PATH atomically (node_exporter textfile)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")

    p = sub.add_parser("backfill", help="compute every window in a date range, with a progress bar")
    _config_arg(p)
    p.add_argument("--from", dest="start", type=_timestamp, required=True, help="first day (ISO 8601)")
    p.add_argument("--to", dest="end", type=_timestamp, required=True, help="compute windows that end by then")
    p.add_argument("--only", nargs="*", help="only these goals or models")

    p = sub.add_parser("serve", help="run the scheduler and serve /metrics and /healthz")
    _config_arg(p)
    p.add_argument("--port", type=int, default=n.PORT, help=f"HTTP port (default {n.PORT})")
    _host_arg(p)
    p.add_argument("--now", type=_timestamp, help="start the clock at this moment and let it run (ISO 8601), for a world pinned in the past")

    p = sub.add_parser("metrics", help="print the Prometheus exposition of the latest results")
    _config_arg(p)

    p = sub.add_parser("check", help="validate the config and run every SQL against the database, storing nothing",
                       description="Validates the config; checks tables and columns, prints the format of each model's "
                                   "timestamp column, warns on id-like categorical features and on goal SQL that never "
                                   "uses the window parameters, runs each goal's SQL read-only on its latest due window "
                                   "and checks what it returns; tries results_url. Exit 0: ok (warnings allowed), "
                                   "2: the config or a SQL file is wrong, or a database cannot be reached.")
    _config_arg(p)
    p.add_argument("--now", type=_timestamp, help="pin the clock: the latest due window is the one before it")

    p = sub.add_parser("build", help="write alerts/ and dashboards/ from the config",
                       description="Writes alerts/ and dashboards/ from the config (default: the demo config). "
                                   "--check fails when the committed files are stale.")
    _config_arg(p, required=False)
    p.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale")
    p.add_argument("--out", metavar="DIR", help="folder to write alerts/ and dashboards/ into (default: the project folder)")
    p.add_argument("--root", default=".", help="project folder, holding examples/monitor.yaml (default: .)")

    p = sub.add_parser("app", help="start the Streamlit review app")
    _config_arg(p)
    p.add_argument("--port", type=int, default=8501, help="HTTP port (default 8501)")
    _host_arg(p)
    p.add_argument("--now", type=_timestamp, help="pin the app's clock (ISO 8601), for a world pinned in the past")

    p = sub.add_parser("dashboards", help="Grafana dashboards")
    dsub = p.add_subparsers(dest="dashboards_command", metavar="ACTION")
    pp = dsub.add_parser("push", help="upsert every dashboard into a Grafana folder",
                         description="Token from GRAFANA_TOKEN, or basic auth from GRAFANA_USER and GRAFANA_PASSWORD.")
    _config_arg(pp, required=False)
    pp.add_argument("--grafana-url", required=True, help="Grafana's base URL")
    pp.add_argument("--folder", default="Monitor", help="folder title (default: Monitor)")
    pp.add_argument("--root", default=".", help="project folder holding dashboards/ (default: .)")
    return ap


def configure_logging(verbose: bool = False, quiet: bool = False, command: str | None = None) -> None:
    """Quiet by default: warnings and errors; -v adds the monitor's own INFO lines; -q errors only.
    The scheduler's per-job lines and Alembic's migration lines stay out unless they are warnings."""
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    logging.getLogger("monitor").setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.NOTSET)
    # one-shot commands print the failed jobs themselves, once, at the end; `serve` logs each one
    logging.getLogger("monitor.jobs").setLevel(
        logging.NOTSET if command == "serve" else logging.INFO if verbose else logging.CRITICAL)
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    configure_logging(verbose=args.verbose, quiet=args.quiet, command=args.command)
    if not args.command:
        ap.print_help()
        return EXIT_USAGE
    from .config import ConfigError
    from .store import StoreError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, UsageError, StoreError) as e:  # StoreError: a schema this monitor cannot use
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnusable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def plural(n: int, word: str) -> str:
    """`1 goal`, `2 goals`."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _load(args):
    from .config import load_config

    return load_config(args.config)


def _store(cfg):
    from .store import Store

    return Store(cfg.store_url, statement_timeout=cfg.statement_timeout)


def cmd_run_once(args) -> int:
    from .durations import utcnow
    from .jobs import run_cycle
    from .report import goal_table, model_table, print_failures

    cfg = _load(args)
    now = args.now or utcnow()
    store = _store(cfg)
    with _results_store(cfg):
        report = run_cycle(cfg, now, store=store, progress=args.progress)
        now = report.now
        if args.now:
            warn_past_newest_rows(cfg, store, now)
        if cfg.notify:
            from .notify import notify_cycle
            notify_cycle(cfg, store, now)
        rows = goal_table(cfg, store)
        models = model_table(cfg, store, report.computed)
    if args.json:
        print(json.dumps({"now": now.isoformat(), "goals": rows, "models": models, "failed": [
            {"job": j, "window": str(w) if w else None, "error": e} for j, w, e in report.failed]}, indent=2, default=str))
    else:
        from .report import print_goal_table, print_model_table
        if rows:
            print_goal_table(rows)
        if rows and models:
            print()
        if models:
            print_model_table(models)
    print_failures(report)
    if args.push or args.textfile:
        from .batch import PublishError, publish
        try:
            publish(cfg, store, push=args.push, textfile=args.textfile)
        except PublishError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK if report.ok else EXIT_FAILED


def warn_past_newest_rows(cfg, store, now, only: set[str] | None = None) -> None:
    """A clock pinned past a model's newest source row: its latest windows are empty. One line per model."""
    from datetime import UTC, datetime

    from .windows import due_windows

    newest = store.newest_rows()
    for m in cfg.models:
        due = due_windows(m.start, now, m.window)[-1:]
        if (only and m.name not in only) or m.name not in newest or not due:
            continue
        row = datetime.fromtimestamp(newest[m.name], UTC)
        if row < due[0].start:
            logging.getLogger("monitor.cycle").warning(
                "model %s: its newest source row is at %s, before the window %s: windows after that row are empty",
                m.name, row.isoformat(timespec="seconds"), due[0])


def cmd_backfill(args) -> int:
    from .jobs import run_cycle
    from .report import print_failures

    cfg = _load(args)
    if args.end <= args.start:
        raise UsageError("--to must be after --from")
    cfg = cfg.model_copy(update={
        "goals": [g.model_copy(update={"start": max(g.start, args.start), "recompute": 10**6}) for g in cfg.goals],
        "models": [m.model_copy(update={"start": max(m.start, args.start), "recompute": 10**6}) for m in cfg.models],
    })
    only = set(args.only) if args.only else None
    known = {g.name for g in cfg.goals} | {m.name for m in cfg.models}
    if only and only - known:
        raise UsageError(f"--only: unknown goal or model {', '.join(sorted(only - known))}")
    with _results_store(cfg):
        store = _store(cfg)
        report = run_cycle(cfg, args.end, store=store, progress=True, only=only)
        warn_past_newest_rows(cfg, store, report.now, only)
    print(f"computed {report.ran} windows" + (f", {len(report.failed)} failed" if report.failed else ""))
    if report.capped_from:
        print(f"stopped at {report.now.isoformat(timespec='seconds')} (now): --to is in the future, and a window "
              "is computed only once it has ended")
    print_failures(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_metrics(args) -> int:
    from .exporter import exposition

    cfg = _load(args)
    store = _store(cfg)
    try:
        with _results_store(cfg):
            text = exposition(cfg, store).decode()
    except StoreUnusable as e:
        hint = " (no results yet? run `monitor run-once --config FILE` first)" if _no_tables(str(e)) else ""
        raise StoreUnusable(f"{e}{hint}") from None
    sys.stdout.write(text)
    return EXIT_OK


def _no_tables(message: str) -> bool:
    return "no such table" in message or ("relation" in message and "does not exist" in message)


def cmd_check(args) -> int:
    from .check import DatabaseDown, check

    cfg = _load(args)
    try:
        report = check(cfg, now=args.now)
    except DatabaseDown as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for line in report.notes:
        print(line)
    for p in report.warnings:
        print(f"warning: {p}", file=sys.stderr)
    for p in report.errors:
        print(f"error: {p}", file=sys.stderr)
    if not report.errors:
        print(f"ok: {plural(len(cfg.goals), 'goal')} and {plural(len(cfg.models), 'model')} checked against the database"
              + (f", {plural(len(report.warnings), 'warning')}" if report.warnings else ""))
    return EXIT_USAGE if report.errors else EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.dir), seed=args.seed, days=args.days, scale=args.scale, database_url=args.database_url,
                    end=args.end, force=args.force)


def cmd_init(args) -> int:
    from .init import InitError, init

    try:
        summary, files = init(args.database_url, args.table, Path(args.out), force=args.force)
    except InitError as e:
        raise UsageError(str(e)) from None
    print(summary)
    print(f"Next: check every guess in {files[0]}, then `monitor check --config {files[0]}`.")
    return EXIT_OK


def cmd_build(args) -> int:
    from .build import build

    return build(args.config, Path(args.root), check=args.check, out=Path(args.out) if args.out else None)


def cmd_serve(args) -> int:
    from .serve import serve

    return serve(_load(args), host=args.host, port=args.port, now=args.now)


def cmd_app(args) -> int:
    from .app_launcher import launch

    return launch(args.config, host=args.host, port=args.port, now=args.now)


def cmd_dashboards(args) -> int:
    if args.dashboards_command != "push":
        raise UsageError("usage: monitor dashboards push --grafana-url URL")
    from .grafana_push import push

    return push(args.grafana_url, Path(args.root), folder=args.folder)


COMMANDS = {
    "demo": cmd_demo, "init": cmd_init, "run-once": cmd_run_once, "backfill": cmd_backfill, "serve": cmd_serve,
    "metrics": cmd_metrics, "check": cmd_check, "build": cmd_build, "app": cmd_app, "dashboards": cmd_dashboards,
}

if __name__ == "__main__":
    sys.exit(main())
