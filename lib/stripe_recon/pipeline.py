"""`recon run`: every stage in order, one run id, one ledger.

land internal -> land stripe -> validate inputs -> detect -> plan (+ guard) -> validate plan -> push.
A gate or the guard raises HeldError (exit 3): the stages after it do not run and nothing is pushed.
The run report is written whatever happened after detect, so a held run can still be read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .errors import HeldError
from .ledger import Run

log = logging.getLogger(__name__)


def land_stripe(run: Run) -> dict[str, Any]:
    """Land the Stripe side from export files or through the API, per ``sources.stripe.mode``."""
    if run.cfg.sources.stripe.mode == "api":
        from .land.stripe_api import land_stripe_api

        return land_stripe_api(run)
    from .land.stripe_files import land_stripe_files

    return land_stripe_files(run)


def run_all(run: Run, dry_run: bool = False, approve: str | None = None, force: bool = False) -> dict[str, Any]:
    """Run every stage for ``run``; returns a summary with each stage's result."""
    from .detect import detect
    from .land.internal import land_internal
    from .plan import plan
    from .push import push
    from .report import render_report
    from .validate import validate_inputs, validate_plan

    summary: dict[str, Any] = {"run_id": run.run_id, "stages": {}}
    stages = [
        ("land_internal", lambda: land_internal(run)),
        ("land_stripe", lambda: land_stripe(run)),
    ]
    if run.cfg.validation.enabled:
        stages.append(("validate_inputs", lambda: validate_inputs(run)))
    stages += [("detect", lambda: detect(run)), ("plan", lambda: plan(run))]
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
                summary["report"] = render_report(run.spark, run.cfg, run_id=run.run_id, fmt="html")
                log.info("report: %s", summary["report"])
            except Exception:  # a report failure must not hide the run's own outcome
                log.exception("could not write the run report")
    return summary
