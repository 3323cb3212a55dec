"""The ``recon`` command. Parses arguments and calls the stages; no stage logic lives here.

Exit codes: 0 success, 1 error (the message says what and what to do), 2 usage error,
3 held by a gate or guard.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .config import Config, load_config
from .errors import ReconError

log = logging.getLogger("stripe_recon")
DEFAULT_CONFIG = os.environ.get("RECON_CONFIG", "conf/local.yaml")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help=f"environment config file (default {DEFAULT_CONFIG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set storage.root=/tmp/run1 (repeatable)")
    p.add_argument("--run-id", default=None, help="use this run id instead of a new one")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon", description="Reconcile an internal product catalog with Stripe.")
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
    li.set_defaults(func=cmd_land_internal)
    ls = land_sub.add_parser("stripe", help="land the Stripe side from export files or the API")
    _common(ls)
    src = ls.add_mutually_exclusive_group()
    src.add_argument("--from-files", metavar="PATH", help="API-object JSON lines or Airbyte raw records")
    src.add_argument("--from-api", action="store_true", help="export products and prices through the API")
    ls.add_argument("--format", choices=["auto", "jsonl", "airbyte"])
    ls.set_defaults(func=cmd_land_stripe)

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
        p.set_defaults(func=globals()[func])

    push = sub.add_parser("push", help="apply the planned corrections to Stripe")
    _common(push)
    push.add_argument("--dry-run", action="store_true", help="verify and report, write nothing")
    push.add_argument("--approve", metavar="PLAN_HASH", help="release a held plan with this hash")
    push.add_argument("--force", action="store_true", help="push even a held plan")
    push.set_defaults(func=cmd_push)

    run = sub.add_parser("run", help="every stage in order: land, validate, detect, plan, push")
    _common(run)
    run.add_argument("--dry-run", action="store_true", help="stop before writing to Stripe")
    run.add_argument("--approve", metavar="PLAN_HASH")
    run.add_argument("--force", action="store_true")
    run.add_argument("--allow-empty", action="store_true")
    run.add_argument("--fail-on-discrepancies", action="store_true")
    run.set_defaults(func=cmd_run)

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

    dep = sub.add_parser("deploy", help="deploy the job to a scheduler (AWS Glue 5.0)")
    dep_sub = dep.add_subparsers(dest="target", required=True, metavar="TARGET")
    dg = dep_sub.add_parser("glue", help="upload the wheel and entry script to S3; create or update the Glue job")
    _common(dg)
    dg.add_argument("--wheel", help="the wheel to upload (default: the newest dist/stripe_recon-*.whl)")
    dg.add_argument("--script", default="jobs/glue_job.py", help="the Glue entry script (default jobs/glue_job.py)")
    dg.set_defaults(func=cmd_deploy_glue)
    return parser


# -- command handlers -------------------------------------------------------------------------

def _session(cfg: Config):
    from .spark import get_spark

    return get_spark(cfg)


def _run(args: argparse.Namespace, cfg: Config):
    from .ledger import Run

    return Run.new(_session(cfg), cfg, args.run_id)


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str, sort_keys=False))


def cmd_generate(args: argparse.Namespace, cfg: Config) -> int:
    from .generate import generate

    summary = generate(_session(cfg), args.out, products=args.products, seed=args.seed, rate=args.rate)
    _print(summary)
    return 0


def cmd_land_internal(args: argparse.Namespace, cfg: Config) -> int:
    from .land.internal import land_internal

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
    cfg = cfg.with_overrides(*sets)
    run = _run(args, cfg)
    _print({"run_id": run.run_id, **land_internal(run)})
    return 0


def cmd_land_stripe(args: argparse.Namespace, cfg: Config) -> int:
    sets = []
    if args.from_files:
        sets += ["sources.stripe.mode=files", f"sources.stripe.path={args.from_files}"]
    if args.from_api:
        sets.append("sources.stripe.mode=api")
    if args.format:
        sets.append(f"sources.stripe.format={args.format}")
    from .pipeline import land_stripe

    cfg = cfg.with_overrides(*sets)
    run = _run(args, cfg)
    _print({"run_id": run.run_id, **land_stripe(run)})
    return 0


def cmd_validate(args: argparse.Namespace, cfg: Config) -> int:
    from .validate import validate_inputs

    run = _run(args, cfg)
    _print({"run_id": run.run_id, **validate_inputs(run)})
    return 0


def cmd_detect(args: argparse.Namespace, cfg: Config) -> int:
    from .detect import detect

    run = _run(args, cfg)
    counts = detect(run)
    _print({"run_id": run.run_id, **counts})
    if args.fail_on_discrepancies and counts.get("discrepancies", 0) > 0:
        print(f"{counts['discrepancies']} discrepancies found (--fail-on-discrepancies)", file=sys.stderr)
        return 3
    return 0


def cmd_plan(args: argparse.Namespace, cfg: Config) -> int:
    from .plan import plan

    run = _run(args, cfg)
    _print({"run_id": run.run_id, **plan(run)})
    return 0


def cmd_push(args: argparse.Namespace, cfg: Config) -> int:
    from .push import push

    run = _run(args, cfg)
    _print({"run_id": run.run_id, **push(run, dry_run=args.dry_run, approve=args.approve, force=args.force)})
    return 0


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from .pipeline import run_all

    if args.allow_empty:
        cfg = cfg.with_overrides("sources.internal.allow_empty=true")
    run = _run(args, cfg)
    summary = run_all(run, dry_run=args.dry_run, approve=args.approve, force=args.force)
    _print(summary)
    if args.fail_on_discrepancies and summary.get("discrepancies", 0) > 0:
        return 3
    return 0


def cmd_report(args: argparse.Namespace, cfg: Config) -> int:
    from .report import render_report

    # `recon report --run-id ID` (the design's spelling, from _common) and `--run ID` both select the run.
    run_id = args.run_id or args.report_run
    out = render_report(_session(cfg), cfg, run_id=run_id, fmt=args.format, details=args.details)
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


def cmd_deploy_glue(args: argparse.Namespace, cfg: Config) -> int:
    from .deploy import deploy_glue, find_wheel

    _print(deploy_glue(cfg, wheel=args.wheel or find_wheel(), script=args.script))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "urllib3", "great_expectations", "stripe"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    handler: Callable[[argparse.Namespace, Config], int] = args.func
    try:
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
        return handler(args, cfg)
    except ReconError as exc:
        print(f"recon: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
