"""The ``recon`` command. Parses arguments and calls the stages; no stage logic lives here.

Exit codes: 0 success, 1 error (the message says what and what to do), 2 usage or configuration
error, 3 held by a gate or guard. Every error is one line on stderr (``recon: ...``); ``-v`` adds
the trace. Output (console.py): one line per stage, live progress on a terminal, the closing table
of ``recon run``; ``--json`` prints the machine summary instead; ``-v`` lets every log line through.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .config import Config, load_config
from .console import Console, ConsoleLogHandler, summary_table
from .errors import HeldError, ReconError

log = logging.getLogger("stripe_recon")
DEFAULT_CONFIG = os.environ.get("RECON_CONFIG", "conf/local.yaml")
INCREMENTAL_HELP = ("compare again only the keys whose silver rows changed since the last detect "
                    "(Change Data Feed); the rows are those of a full detect")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help=f"environment config file (default {DEFAULT_CONFIG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set storage.root=/tmp/run1 (repeatable)")
    p.add_argument("--run-id", default=None, help="use this run id instead of a new one")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show everything: debug logging, Spark's own output, error traces")
    p.add_argument("--json", action="store_true", help="print the machine-readable summary (JSON) on stdout")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"recon: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recon", description="Reconcile an internal product catalog with Stripe.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write a synthetic catalog with known discrepancies (truth.jsonl)")
    _common(g)
    g.add_argument("--out", required=True, help="output folder (local path or Hadoop URI)")
    g.add_argument("--products", type=int, default=1000, help="number of internal products (default 1000)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--rate", type=float, default=0.02, help="fraction of rows seeded with each discrepancy kind")
    g.set_defaults(func=cmd_generate)

    land = sub.add_parser("land", help="land an input side into bronze and silver Delta tables")
    land_sub = land.add_subparsers(dest="side", required=True, metavar="SIDE")
    li = land_sub.add_parser("internal", help="land the internal products and prices")
    _common(li)
    li.add_argument("--products", help="products path (.csv, .parquet, .json/.jsonl, optionally .gz, or a Delta/"
                                       "part-file folder; the format follows the path unless --format)")
    li.add_argument("--prices", help="prices path")
    li.add_argument("--format", choices=["auto", "parquet", "csv", "json", "delta", "jdbc"],
                    help="read the paths as this format (default: sources.internal.format, auto = from the path)")
    li.add_argument("--jdbc-url", help="JDBC URL; implies --format jdbc")
    li.add_argument("--jdbc-user")
    li.add_argument("--allow-empty", action="store_true", help="accept an empty internal input")
    cdc = li.add_mutually_exclusive_group()
    cdc.add_argument("--cdc", metavar="PATH", help="apply Debezium change events from JSON-lines files "
                                                   "(sources.internal.cdc.path) instead of a snapshot")
    cdc.add_argument("--kafka", metavar="SERVERS", help="apply Debezium change events from Kafka "
                                                       "(sources.internal.cdc.kafka.servers); needs --topic")
    li.add_argument("--topic", help="Kafka topic(s) of the change events (sources.internal.cdc.kafka.topic)")
    li.set_defaults(func=cmd_land_internal, writes="land internal")
    ls = land_sub.add_parser("stripe", help="land the Stripe side from export files or the API")
    _common(ls)
    src = ls.add_mutually_exclusive_group()
    src.add_argument("--from-files", metavar="PATH", help="API-object JSON lines or Airbyte raw records")
    src.add_argument("--from-api", action="store_true", help="export products and prices through the API")
    src.add_argument("--from-events", action="store_true",
                     help="land only the objects named by Stripe events since the last landing "
                          "(a full API export when there is no cursor or it is past the 30-day retention)")
    ls.add_argument("--format", choices=["auto", "jsonl", "airbyte"])
    ls.add_argument("--allow-empty", action="store_true", help="accept an export with no products or no prices")
    ls.set_defaults(func=cmd_land_stripe, writes="land stripe")

    for name, helptext, func in [
        ("validate", "run the input validation gates (Great Expectations) and quarantine bad rows", "cmd_validate"),
        ("detect", "find every discrepancy (gold.discrepancies)", "cmd_detect"),
        ("plan", "turn discrepancies into a correction batch (gold.corrections)", "cmd_plan"),
    ]:
        p = sub.add_parser(name, help=helptext)
        _common(p)
        if name == "detect":
            p.add_argument("--fail-on-discrepancies", action="store_true",
                           help="exit 3 when any discrepancy is found (for schedulers that alert on drift)")
            p.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)
        p.set_defaults(func=globals()[func], writes=name)

    push = sub.add_parser("push", help="apply the planned corrections to Stripe")
    _common(push)
    push.add_argument("--dry-run", action="store_true", help="verify and report, write nothing")
    push.add_argument("--approve", metavar="PLAN_HASH", help="release a held plan with this hash")
    push.add_argument("--force", action="store_true", help="push even a held plan")
    push.set_defaults(func=cmd_push, writes="push")

    run = sub.add_parser("run", help="every stage in order: land, validate, detect, plan, push")
    _common(run)
    run.add_argument("--dry-run", action="store_true", help="stop before writing to Stripe")
    run.add_argument("--approve", metavar="PLAN_HASH")
    run.add_argument("--force", action="store_true")
    run.add_argument("--allow-empty", action="store_true", help="accept an empty internal input or Stripe export")
    run.add_argument("--fail-on-discrepancies", action="store_true")
    run.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)
    run.set_defaults(func=cmd_run, writes="run")

    rep = sub.add_parser("report", help="print or write the run report")
    _common(rep)
    rep.add_argument("--run", dest="report_run", default="latest", help="run id or 'latest'")
    rep.add_argument("--format", choices=["json", "html"], default="json")
    rep.add_argument("--details", action="store_true", help="list every discrepancy (json)")
    rep.set_defaults(func=cmd_report)

    emu = sub.add_parser("stripe-emulator", help="serve a local, stateful Stripe-compatible API")
    _common(emu)
    emu.add_argument("--host", default=None)
    emu.add_argument("--port", type=int, default=None)
    emu.add_argument("--seed-from", metavar="DIR", help="load products/prices from an export folder")
    emu.add_argument("--rate-limit", type=float, default=None, help="requests per second before 429")
    emu.add_argument("--fault-rate", type=float, default=0.0, help="fraction of requests answered with a fault")
    emu.add_argument("--faults", metavar="SPEC", default=None,
                     help="per-kind fault rates, e.g. error_5xx=0.1,rate_limit=0.05,lost_response=0.02 "
                          "(kinds: error_5xx, rate_limit, latency, drop, lost_response); wins over --fault-rate")
    emu.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws (reproducible runs)")
    emu.add_argument("--latency", type=float, default=0.2, help="seconds added by the latency fault")
    emu.set_defaults(func=cmd_emulator)

    lease = sub.add_parser("lease", help="show or break the storage root's writer lease")
    lease_sub = lease.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, helptext in (("show", "print the holder of the lease (JSON), without waiting"),
                             ("break", "free the lease now, whoever holds it (its pushes keep their claims)")):
        lp = lease_sub.add_parser(action, help=helptext)
        _common(lp)
        lp.set_defaults(func=cmd_lease)

    dep = sub.add_parser("deploy", help="deploy the job to a scheduler (AWS Glue 5.0)")
    dep_sub = dep.add_subparsers(dest="target", required=True, metavar="TARGET")
    dg = dep_sub.add_parser("glue", help="upload the wheel and entry script to S3; create or update the Glue job")
    _common(dg)
    dg.add_argument("--wheel", help="the wheel to upload (default: the newest dist/stripe_recon-*.whl)")
    dg.add_argument("--script", default="jobs/glue_job.py", help="the Glue entry script (default jobs/glue_job.py)")
    dg.set_defaults(func=cmd_deploy_glue)
    return parser


# -- command handlers -------------------------------------------------------------------------

def _console(args: argparse.Namespace) -> Console:
    return args.console


def _session(cfg: Config, args: argparse.Namespace):
    """The Spark session (a new local one is quiet unless -v); starting one is a console line."""
    from pyspark.sql import SparkSession

    from .spark import get_spark, on_cluster

    console = _console(args)
    if SparkSession.getActiveSession() is not None:
        spark = get_spark(cfg)
    else:
        console.stage_started("spark")
        t0 = time.monotonic()
        spark = get_spark(cfg, quiet=not args.verbose, announce=console.line)
        what = "cluster session" if on_cluster() else f"local session {cfg.spark.master} started"
        console.stage_finished("spark", {}, "ok", what, time.monotonic() - t0)
    console.attach(spark)
    return spark


def _run(args: argparse.Namespace, cfg: Config):
    """The command's run; a writing command takes the storage root's lease here, after its
    preflight checks (a bad path or key is one line before any Spark starts), held until it ends."""
    from .ledger import Run

    spark = _session(cfg, args)
    if getattr(args, "writes", None):
        from .lease import hold
        from .ledger import new_run_id

        args.run_id = args.run_id or new_run_id()
        args.exit_stack.enter_context(hold(spark, cfg, run_id=args.run_id, command=args.writes))
    run = Run.new(spark, cfg, args.run_id)
    run.observer = _console(args)
    return run


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str, sort_keys=False))


def _result(args: argparse.Namespace, obj: Any, *lines: str) -> None:
    """The command's result: JSON with --json, else ``lines`` (stage lines were printed already)."""
    if args.json:
        _print(obj)
        return
    for line in lines:
        _console(args).line(line)


def cmd_generate(args: argparse.Namespace, cfg: Config) -> int:
    from .console import duration, n
    from .generate import generate

    spark = _session(cfg, args)
    console = _console(args)
    console.stage_started("generate")
    summary = generate(spark, args.out, products=args.products, seed=args.seed, rate=args.rate)
    console.end()
    files = summary.get("files", {})
    _result(args, summary, f"{'generate':<18}{n(files.get('internal/products.parquet'))} products, "
                           f"{n(files.get('internal/prices.parquet'))} prices, "
                           f"{n(files.get('truth.jsonl'))} seeded discrepancies into {args.out}  "
                           f"{duration(float(summary.get('seconds', 0)))}")
    return 0


def _internal_sets(args: argparse.Namespace) -> list[str]:
    sets = []
    if args.jdbc_url:
        sets += ["sources.internal.format=jdbc", f"sources.internal.jdbc.url={args.jdbc_url}"]
    if args.jdbc_user:
        sets.append(f"sources.internal.jdbc.user={args.jdbc_user}")
    if args.format:
        sets.append(f"sources.internal.format={args.format}")
    if args.products:
        sets.append(f"sources.internal.products={args.products}")
    if args.prices:
        sets.append(f"sources.internal.prices={args.prices}")
    if args.allow_empty:
        sets.append("sources.internal.allow_empty=true")
    if getattr(args, "cdc", None):
        sets.append(f"sources.internal.cdc.path={args.cdc}")
    if getattr(args, "kafka", None):
        sets += [f"sources.internal.cdc.kafka.servers={args.kafka}", "sources.internal.cdc.path=null"]
    if getattr(args, "topic", None):
        sets.append(f"sources.internal.cdc.kafka.topic={args.topic}")
    if (getattr(args, "kafka", None) or getattr(args, "topic", None)) and not (args.kafka and args.topic):
        from .errors import InputError

        raise InputError("--kafka SERVERS and --topic T go together")
    return sets


def _cdc_input(args: argparse.Namespace, cfg: Config) -> bool:
    """Change events rather than a snapshot: --cdc / --kafka, or a configured CDC input and no
    snapshot paths (nor JDBC)."""
    if getattr(args, "cdc", None) or getattr(args, "kafka", None) or getattr(args, "topic", None):
        return True
    src = cfg.sources.internal
    snapshot = src.products or src.prices or src.format == "jdbc"
    return not snapshot and bool(src.cdc.path or src.cdc.kafka.servers)


def cmd_land_internal(args: argparse.Namespace, cfg: Config) -> int:
    from . import preflight
    from .land.internal import land_internal

    cfg = cfg.with_overrides(*_internal_sets(args))
    preflight.storage_root(cfg)
    if _cdc_input(args, cfg):
        from .land.internal_cdc import land_internal_cdc

        run = _run(args, cfg)
        result = land_internal_cdc(run)
        _result(args, {"run_id": run.run_id, **result})
        return 0
    preflight.internal_inputs(cfg)
    run = _run(args, cfg)
    result = land_internal(run)
    _result(args, {"run_id": run.run_id, **result})
    return 0


def cmd_land_stripe(args: argparse.Namespace, cfg: Config) -> int:
    from . import preflight

    sets = []
    if args.from_files:
        sets += ["sources.stripe.mode=files", f"sources.stripe.path={args.from_files}"]
    if args.from_api:
        sets.append("sources.stripe.mode=api")
    if args.from_events:
        sets.append("sources.stripe.mode=events")
    if args.format:
        sets.append(f"sources.stripe.format={args.format}")
    if args.allow_empty:
        sets.append("sources.stripe.allow_empty=true")
    from .pipeline import land_stripe

    cfg = cfg.with_overrides(*sets)
    preflight.storage_root(cfg)
    if cfg.sources.stripe.mode in ("api", "events"):
        preflight.stripe_api(cfg)
    run = _run(args, cfg)
    result = land_stripe(run)
    _result(args, {"run_id": run.run_id, **result})
    return 0


def cmd_validate(args: argparse.Namespace, cfg: Config) -> int:
    from . import preflight
    from .validate import validate_inputs

    preflight.storage_root(cfg)
    run = _run(args, cfg)
    result = validate_inputs(run)
    _result(args, {"run_id": run.run_id, **result})
    return 0


def cmd_detect(args: argparse.Namespace, cfg: Config) -> int:
    from . import preflight
    from .detect import detect

    preflight.storage_root(cfg)
    run = _run(args, cfg)
    counts = detect(run, incremental_run=args.incremental)
    _result(args, {"run_id": run.run_id, **counts})
    if args.fail_on_discrepancies and counts.get("discrepancies", 0) > 0:
        print(f"recon: {counts['discrepancies']} discrepancies found (--fail-on-discrepancies)", file=sys.stderr)
        return 3
    return 0


def cmd_plan(args: argparse.Namespace, cfg: Config) -> int:
    from . import preflight
    from .plan import plan

    preflight.storage_root(cfg)
    run = _run(args, cfg)
    result = plan(run)
    _result(args, {"run_id": run.run_id, **result}, f"{'plan hash':<18}{result.get('plan_hash')}")
    return 0


def cmd_push(args: argparse.Namespace, cfg: Config) -> int:
    from . import preflight
    from .push import push

    preflight.storage_root(cfg)
    preflight.stripe_api(cfg)
    run = _run(args, cfg)
    result = push(run, dry_run=args.dry_run, approve=args.approve, force=args.force)
    _result(args, {"run_id": run.run_id, **result})
    return 0


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from . import preflight
    from .pipeline import run_all

    if args.allow_empty:
        cfg = cfg.with_overrides("sources.internal.allow_empty=true", "sources.stripe.allow_empty=true")
    preflight.storage_root(cfg)
    preflight.internal_inputs(cfg)
    preflight.stripe_api(cfg)
    run = _run(args, cfg)
    rep: dict[str, Any] = {}
    try:
        summary = run_all(run, dry_run=args.dry_run, approve=args.approve, force=args.force, report_out=rep,
                          incremental=args.incremental)
    except HeldError as exc:
        _closing_table(args, rep, None, held=str(exc).split(". ")[0])
        raise
    if args.json:
        _print(summary)
    else:
        _closing_table(args, rep, summary.get("report"))
    if args.fail_on_discrepancies and summary.get("discrepancies", 0) > 0:
        print(f"recon: {summary['discrepancies']} discrepancies found (--fail-on-discrepancies)", file=sys.stderr)
        return 3
    return 0


def _closing_table(args: argparse.Namespace, rep: dict[str, Any], path: str | None, held: str | None = None) -> None:
    if args.json or not rep:
        return
    from .report import report_path

    plan = rep.get("plan") or {}
    if plan.get("status") == "held":  # the guard's verdict, and the command that releases the plan
        held = f"plan {plan['plan_hash'][:12]} held: {'; '.join(plan['reasons'])}; release it with: {plan['release']}"
    lines = summary_table(rep["summary"].get("by_kind_action", {}), plan.get("corrections", {}),
                          path or report_path(args.cfg, rep["run_id"]), held=held)
    console = _console(args)
    console.line("")
    for line in lines:
        console.line(line)


def cmd_report(args: argparse.Namespace, cfg: Config) -> int:
    from .report import render_report

    # `recon report --run-id ID` (the design's spelling, from _common) and `--run ID` both select the run.
    run_id = args.run_id or args.report_run
    _console(args).json_mode = True  # stdout holds the JSON or the page's path only (the session line: stderr)
    out = render_report(_session(cfg, args), cfg, run_id=run_id, fmt=args.format, details=args.details)
    print(out)
    return 0


def cmd_emulator(args: argparse.Namespace, cfg: Config) -> int:
    from .emulator.server import serve

    serve(
        host=args.host or cfg.emulator.host,
        port=args.port if args.port is not None else cfg.emulator.port,
        seed_from=args.seed_from,
        rate_limit=args.rate_limit,
        fault_rate=args.fault_rate,
        faults=args.faults,
        fault_seed=args.fault_seed,
        latency_seconds=args.latency,
    )
    return 0


def cmd_lease(args: argparse.Namespace, cfg: Config) -> int:
    from .lease import break_lease, read_holder

    spark = _session(cfg, args)
    holder = read_holder(spark, cfg) if args.action == "show" else break_lease(spark, cfg)
    key = "holder" if args.action == "show" else "broken"
    _print({"storage_root": cfg.storage.root, key: holder.as_dict() if holder else None,
            **({"state": holder.state(cfg.lease.timeout_seconds)} if holder else {})})
    return 0


def cmd_deploy_glue(args: argparse.Namespace, cfg: Config) -> int:
    from .deploy import deploy_glue, find_wheel

    result = deploy_glue(cfg, wheel=args.wheel or find_wheel(), script=args.script)
    trigger = result.get("trigger") or {}
    _result(args, result, f"{'deploy glue':<18}job {result.get('job_name')} {result.get('job')}; "
                          f"script {result.get('script')}; wheel {result.get('wheel')}"
                          + (f"; trigger {trigger.get('name')} {trigger.get('action')} ({trigger.get('schedule')})"
                             if trigger else ""))
    return 0


# -- errors -----------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_line(exc: BaseException, cfg: Config | None) -> tuple[str, int]:
    """(the one line to print, the exit code) for an error that ended the command."""
    import stripe

    if isinstance(exc, ReconError):
        return _one_line(exc), exc.exit_code
    if isinstance(exc, stripe.StripeError) and cfg is not None:
        from .preflight import stripe_error_line

        return _one_line(stripe_error_line(exc, cfg)), 1
    from .stripe_client import redact

    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    where = ""
    if cfg is not None and "py4j" in type(exc).__module__:
        from .spark import jvm_log_path

        where = f"; Spark's log: {jvm_log_path(cfg)}"
    return _one_line(f"unexpected error: {type(exc).__name__}: {redact(first)[:300]} "
                     f"(run again with -v for the trace{where})"), 1


def _setup_logging(args: argparse.Namespace, console: Console) -> None:
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, ConsoleLogHandler)]:
        root.removeHandler(h)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
        root.setLevel(logging.DEBUG)
    else:
        root.addHandler(ConsoleLogHandler(console))
        root.setLevel(logging.WARNING)
    for noisy in ("py4j", "urllib3", "great_expectations", "stripe"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    handler: Callable[[argparse.Namespace, Config], int] = args.func
    cfg: Config | None = None
    console = Console(verbose=args.verbose, json_mode=args.json)
    args.console = console
    _setup_logging(args, console)
    try:
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
        console.plain_every = cfg.console.plain_progress_seconds
        args.cfg = cfg
        with contextlib.ExitStack() as args.exit_stack:
            return handler(args, cfg)
    except KeyboardInterrupt:
        console.close()
        print("recon: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error ends as one line (the trace with -v)
        console.close()
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        line, code = _error_line(exc, cfg)
        print(f"recon: {line}", file=sys.stderr, flush=True)
        return code
    finally:
        console.close()


if __name__ == "__main__":
    sys.exit(main())
