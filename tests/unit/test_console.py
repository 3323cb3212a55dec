"""console.py: stage lines from ledger counts, the live line on a terminal, plain lines elsewhere,
Spark task progress from the status tracker, the closing table of `recon run`."""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest

from stripe_recon.console import Console, ConsoleLogHandler, Progress, SparkTasks, duration, stage_line, summary_table


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("seconds, text", [(0.04, "0.0s"), (3.24, "3.2s"), (59.96, "60.0s"), (75, "1m15s"),
                                           (3725, "1h02m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("name, counts, status, message, line", [
    ("land_internal", {"products.rows_in": 2000, "prices.rows_in": 3987, "rows_in": 5987, "landed": 5980,
                       "quarantined": 7}, "ok", "format=csv",
     "land_internal     2,000 products, 3,987 prices read: 5,980 landed, 7 quarantined  12.3s"),
    ("export_stripe_api", {"exported.products": 2008, "exported.prices": 3939, "requests": 100, "retries": 2}, "ok", "",
     "export_stripe_api 2,008 products, 3,939 prices exported in 100 requests (2 retried)  12.3s"),
    ("validate_inputs", {"rows_in": 11934, "valid": 11930, "quarantined": 4, "expectations_failed_error": 0,
                         "expectations_failed_warn": 1}, "ok", "",
     "validate_inputs   11,934 rows checked: 11,930 valid, 4 quarantined; 0 failed expectations, 1 warnings  12.3s"),
    ("detect", {"discrepancies": 158, "missing_in_stripe": 38, "field_mismatch": 120, "duplicate_in_stripe": 0,
                "product.field_mismatch": 100}, "ok", "",
     "detect            158 discrepancies (38 missing_in_stripe, 120 field_mismatch)  12.3s"),
    ("detect", {"discrepancies": 1, "missing_in_internal": 1, "product.unknown_keys": 2, "price.unknown_keys": 1},
     "ok", "", "detect            1 discrepancies (1 missing_in_internal); 3 quarantined keys left unknown "
     "(not compared)  12.3s"),
    ("plan", {"corrections": 12, "create_product": 2, "update_product": 10, "archive_price": 0}, "held", "plan x held",
     "plan              HELD: 12 corrections planned (2 create_product, 10 update_product)  12.3s"),
    ("push", {"total": 118, "applied": 117, "failed": 1, "stale": 0, "skipped": 0, "requests": 300}, "ok", "",
     "push              117 applied, 1 failed, 0 stale, 0 skipped of 118; 300 requests  12.3s"),
    ("validate_plan", {}, "ok", "skipped: validation.enabled is false",
     "validate_plan     skipped: validation.enabled is false  12.3s"),
    ("land_stripe", {}, "failed", "InputError: nope", "land_stripe       failed  12.3s"),
    ("release_plan", {}, "ok", "plan abc released by --force", "release_plan      plan abc released by --force  12.3s"),
    ("something_new", {"rows_in": 5, "a.b": 1, "kept": 2}, "ok", "", "something_new     rows in 5, kept 2  12.3s"),
])
def test_stage_lines_say_what_the_stage_did(name, counts, status, message, line):
    assert stage_line(name, counts, status, message, 12.3) == line


def test_progress_renders_bar_rate_and_eta():
    clock = Clock()
    p = Progress("push", clock)
    p.update(0, 200, "corrections")
    clock.t += 10
    p.update(50, 200, "corrections")
    assert p.render(200, bar=True) == "push              [#####...............] 50/200 corrections  5.0/s  ETA 30.0s  (10.0s)"
    assert p.render(200, bar=False) == "push              50/200 corrections  5.0/s  ETA 30.0s  (10.0s)"
    assert p.render(30, bar=True) == "push              [#####....."  # cut to the width, last column left free
    q = Progress("export_stripe_api", clock)
    assert q.render(200, bar=True) == "export_stripe_api working  (0.0s)"


def test_live_line_on_a_terminal_is_redrawn_in_place_and_cleared_before_a_stage_line():
    clock, out, err = Clock(), io.StringIO(), Tty()
    console = Console(out=out, err=err, clock=clock, refresh=1e6)  # ticks only when the test says
    assert console.live
    console.stage_started("push")  # no session attached: progress comes from the stage itself
    console.progress(0, 10, "corrections")
    clock.t += 2
    console.progress(4, 10, "corrections")
    console.tick()
    assert err.getvalue() == "\r\x1b[2Kpush              [########............] 4/10 corrections  2.0/s  ETA 3.0s  (2.0s)"
    console.stage_finished("push", {"total": 10, "applied": 10, "requests": 20}, "ok", "", 4.0)
    console.close()
    assert err.getvalue().endswith("\r\x1b[2K")
    assert out.getvalue() == "push              10 applied, 0 failed, 0 stale, 0 skipped of 10; 20 requests  4.0s\n"


def test_not_a_terminal_gets_plain_lines_at_the_interval_and_no_bar():
    clock, out, err = Clock(), io.StringIO(), io.StringIO()
    console = Console(out=out, err=err, plain_every=60, clock=clock, refresh=1e6)
    assert not console.live
    console.stage_started("push")
    console.progress(30, 100, "corrections")
    clock.t += 30
    console.tick()
    assert err.getvalue() == ""  # not yet due
    clock.t += 30
    console.progress(60, 100, "corrections")
    console.tick()
    console.close()
    # the rate counts from the first report of this unit (30 done at t=0): 30 in 60 s
    assert err.getvalue() == "  push              60/100 corrections  0.5/s  ETA 1m20s  (1m00s)\n"
    assert "\r" not in err.getvalue() and "\x1b" not in err.getvalue()


def test_verbose_and_json_modes():
    out, err = io.StringIO(), Tty()
    assert not Console(out=out, err=err, verbose=True).live  # -v: log lines flow, no live line
    console = Console(out=out, err=err, json_mode=True, interactive=False)
    console.stage_finished("detect", {"discrepancies": 0}, "ok", "", 1.0)
    assert out.getvalue() == "" and err.getvalue() == "detect            0 discrepancies  1.0s\n"


def test_log_records_become_one_warning_line_without_trace():
    out, err = io.StringIO(), io.StringIO()
    handler = ConsoleLogHandler(Console(out=out, err=err, interactive=False))
    logger = logging.getLogger("stripe_recon.test_console")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("could not merge %d statuses\ninto gold.corrections", 3)
        logger.info("not shown")
    finally:
        logger.removeHandler(handler)
    assert err.getvalue() == "recon: error: could not merge 3 statuses into gold.corrections\n"


def test_spark_tasks_follow_a_running_job(spark):
    tasks = SparkTasks(spark)
    seen: list[tuple[int, int]] = []
    job = threading.Thread(target=lambda: spark.sparkContext.parallelize(range(4), 4).foreach(lambda _: time.sleep(1.5)))
    job.start()
    deadline = time.monotonic() + 120
    while job.is_alive() and time.monotonic() < deadline:
        seen.append(tasks.sample())
        time.sleep(0.1)
    job.join()
    assert any(total == 4 and done < 4 for done, total in seen), seen  # seen while it ran
    assert tasks.sample() == (4, 4)
    tasks.reset()
    assert tasks.sample() == (0, 0)


def test_summary_table():
    lines = summary_table(
        {"field_mismatch": {"push": 53, "replace": 11, "pull": 8}, "missing_in_stripe": {"create": 38},
         "duplicate_in_stripe": {"review": 8}},
        {"applied": 110, "failed": 2, "held": 6}, "data/reports/r1/report.html", held="plan abc is held")
    assert lines == [
        "discrepancies        create   push  replace   pull  review  total",
        "missing_in_stripe        38      -        -      -       -     38",
        "field_mismatch            -     53       11      8       -     72",
        "duplicate_in_stripe       -      -        -      -       8      8",
        "total                    38     53       11      8       8    118",
        "corrections          110 applied, 2 failed, 6 held",
        "held                 plan abc is held",
        "report               data/reports/r1/report.html",
    ]
    assert summary_table({}, {}, None) == [
        "discrepancies  total", "(none)", "corrections    none", "report         not written"]
