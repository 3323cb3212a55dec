"""`recon run`: every stage in order, one run id, one ledger.

land internal -> land stripe -> validate inputs -> detect -> plan (+ guard) -> validate plan -> push.
A gate or the guard raises HeldError (exit 3): the stages after it do not run and nothing is pushed.
``--force`` / ``--approve PLAN_HASH`` mean what they mean on ``recon push``: when the guard holds the
plan, its verdict and reasons are still recorded (gold.plans, the plan stage's ledger row ``held``),
then the plan is released (stage ``release_plan``: gold.plans ``approved``, its held corrections
``planned``) and the run goes on through the plan gate to the push. A dry run releases nothing: its
push reports what a release would send. The run report is written whatever happened after detect,
so a held run can still be read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .errors import HeldError
from .ledger import Run

log = logging.getLogger(__name__)


def land_stripe(run: Run) -> dict[str, Any]:
    """Land the Stripe side from export files, through the API or from its events, per
    ``sources.stripe.mode``."""
    if run.cfg.sources.stripe.mode == "events":
        from .land.stripe_events import land_stripe_events

        return land_stripe_events(run)
    if run.cfg.sources.stripe.mode == "api":
        from .land.stripe_api import land_stripe_api

        return land_stripe_api(run)
    from .land.stripe_files import land_stripe_files

    return land_stripe_files(run)


def plan_or_release(run: Run, approve: str | None = None, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """:func:`plan.plan`; when the guard holds the plan and ``force`` (or ``approve`` = its hash) is
    given, release it instead of stopping. A wrong ``approve`` hash stops the run (HeldError)."""
    from .plan import plan
    from .push import latest_plan, release

    try:
        return plan(run)
    except HeldError:
        if not (force or approve):
            raise
        row = latest_plan(run)
        h = row["plan_hash"]
        if row["status"] != "held":  # held by something else than the guard's plan row: not ours to release
            raise
        if approve is not None and approve != h:
            raise HeldError(f"--approve {approve} does not match the held plan {h}; nothing was pushed. "
                            f"Check the hash in gold.plans, then run: recon run --approve {h}") from None
        reasons = list(row.get("reasons") or [])
        by = "--force" if force and approve != h else f"--approve {h}"
        if not dry_run:
            with run.stage("release_plan") as st:
                release(run, row)
                st.message = f"plan {h} released by {by}; held for: {'; '.join(reasons)}"
        return {"plan_hash": h, "status": "held", "released_by": by, "dry_run": dry_run, "reasons": reasons,
                **{k: int(v) for k, v in (row.get("counts") or {}).items()}}


def run_all(run: Run, dry_run: bool = False, approve: str | None = None, force: bool = False,
            report_out: dict[str, Any] | None = None, incremental: bool = False) -> dict[str, Any]:
    """Run every stage for ``run``; returns a summary with each stage's result.

    ``incremental``: detect compares again only what changed since the last detect (detect.py).

    ``report_out``, when given, receives the run report as a dict (report.collect_report) once it is
    written, so the caller can show it without reading the tables again.
    """
    from .detect import detect
    from .land.internal import land_internal
    from .push import push
    from .report import write_html
    from .validate import validate_inputs, validate_plan

    summary: dict[str, Any] = {"run_id": run.run_id, "stages": {}}
    stages = [
        ("land_internal", lambda: land_internal(run)),
        ("land_stripe", lambda: land_stripe(run)),
    ]
    if run.cfg.validation.enabled:
        stages.append(("validate_inputs", lambda: validate_inputs(run)))
    stages += [("detect", lambda: detect(run, incremental_run=incremental)),
               ("plan", lambda: plan_or_release(run, approve=approve, force=force, dry_run=dry_run))]
    if run.cfg.validation.enabled:
        stages.append(("validate_plan", lambda: validate_plan(run)))
    stages.append(("push", lambda: push(run, dry_run=dry_run, approve=approve, force=force)))

    detected = False
    try:
        for name, step in stages:
            t0 = time.monotonic()
            log.info("[%s] %s ...", run.run_id, name)
            result = step()
            summary["stages"][name] = result
            log.info("[%s] %s done in %.1fs", run.run_id, name, time.monotonic() - t0)
            if name == "detect":
                detected = True
                summary["discrepancies"] = int(result.get("discrepancies", 0))
    except HeldError as exc:
        summary["held"] = str(exc)
        raise
    finally:
        if detected:
            try:
                summary["report"], rep = write_html(run.spark, run.cfg, run_id=run.run_id)
                if report_out is not None:
                    report_out.update(rep)
                log.info("report: %s", summary["report"])
            except Exception:  # a report failure must not hide the run's own outcome
                log.exception("could not write the run report")
    return summary
