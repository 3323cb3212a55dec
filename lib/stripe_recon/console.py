"""What the ``recon`` command shows while it works: one line per stage, live progress, a closing table.

- **Stage lines** (stdout; stderr with ``--json``): ``Run.stage`` tells the console when a stage
  starts and ends (:class:`Console` is the run's ``observer``); the line says what the stage did in
  its ledger counts (:data:`STAGE_LINES`) and how long it took.
- **Live progress** (stderr): on a terminal, one status line redrawn in place with a bar, done/total,
  rate and ETA: corrections for the push (push.py reports them), Spark tasks for everything else
  (:class:`SparkTasks` polls ``statusTracker()``: the stages' own code is not touched). Not on a
  terminal (CI logs, Glue, Databricks): no bar, a plain progress line every
  ``console.plain_progress_seconds`` while a stage runs.
- **Closing table** of ``recon run`` (:func:`summary_table`): discrepancies by kind and action,
  corrections by status, the report's path.

``-v`` keeps the stage lines, drops the live line, and lets every log line through (Spark's too);
``--json`` prints the machine summary on stdout instead of the table.

Example::

    console = Console(interactive=False)
    run.observer = console.attach(spark)
    with run.stage("detect") as st: ...      # prints "detect          158 discrepancies ...   12.3s"
    console.close()
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

# -- numbers ----------------------------------------------------------------------------------------


def n(value: Any) -> str:
    """1234 -> '1,234'; None -> '0'."""
    return f"{int(value or 0):,}"


def duration(seconds: float) -> str:
    """3.24 -> '3.2s'; 75 -> '1m15s'; 3725 -> '1h02m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


# -- stage lines ------------------------------------------------------------------------------------

Counts = Mapping[str, int]


def _sides(c: Counts) -> str:
    parts = [f"{n(c.get(f'{p}.rows_in'))} {p}" for p in ("products", "prices") if f"{p}.rows_in" in c]
    text = (", ".join(parts) + " read" if parts else f"{n(c.get('rows_in'))} rows read")
    return f"{text}: {n(c.get('landed'))} landed, {n(c.get('quarantined'))} quarantined"


def _export(c: Counts) -> str:
    return (f"{n(c.get('exported.products'))} products, {n(c.get('exported.prices'))} prices exported "
            f"in {n(c.get('requests'))} requests ({n(c.get('retries'))} retried)")


def _gate(unit: str) -> Callable[[Counts], str]:
    def line(c: Counts) -> str:
        text = f"{n(c.get('rows_in'))} {unit} checked: {n(c.get('valid'))} valid, {n(c.get('quarantined'))} quarantined"
        errors, warns = c.get("expectations_failed_error", 0), c.get("expectations_failed_warn", 0)
        if errors or warns:
            text += f"; {n(errors)} failed expectations, {n(warns)} warnings"
        return text
    return line


#: Kinds in the order people read them (detect.KINDS holds the same names).
KIND_ORDER = ("missing_in_stripe", "missing_in_internal", "field_mismatch", "duplicate_in_stripe",
              "price_product_mismatch")


def _detect(c: Counts) -> str:
    kinds = [f"{n(c[k])} {k}" for k in KIND_ORDER if c.get(k)]
    unknown = sum(v for k, v in c.items() if k.endswith(".unknown_keys"))
    return (f"{n(c.get('discrepancies'))} discrepancies" + (f" ({', '.join(kinds)})" if kinds else "")
            + (f"; {n(unknown)} quarantined keys left unknown (not compared)" if unknown else ""))


PLAN_OPS = ("create_product", "update_product", "archive_product", "create_price", "replace_price",
            "update_price", "archive_price")


def _plan(c: Counts) -> str:
    ops = [f"{n(c[op])} {op}" for op in PLAN_OPS if c.get(op)]
    return f"{n(c.get('corrections'))} corrections planned" + (f" ({', '.join(ops)})" if ops else "")


def _push(c: Counts) -> str:
    text = (f"{n(c.get('applied'))} applied, {n(c.get('failed'))} failed, {n(c.get('stale'))} stale, "
            f"{n(c.get('skipped'))} skipped of {n(c.get('total'))}")
    if c.get("would_apply"):
        text += f", {n(c['would_apply'])} would apply (dry run)"
    return text + f"; {n(c.get('requests'))} requests"


#: Stage name -> its line from the stage's ledger counts. A stage not listed gets :func:`_generic`.
STAGE_LINES: dict[str, Callable[[Counts], str]] = {
    "land_internal": _sides,
    "export_stripe_api": _export,
    "land_stripe": _sides,
    "validate_inputs": _gate("rows"),
    "detect": _detect,
    "plan": _plan,
    "validate_plan": _gate("corrections"),
    "push": _push,
}


def _generic(c: Counts) -> str:
    top = [(k, v) for k, v in c.items() if "." not in k][:6]
    return ", ".join(f"{k.replace('_', ' ')} {n(v)}" for k, v in top)


def describe(name: str, counts: Counts, message: str = "") -> str:
    """What a stage did, in words, from its ledger counts (the console line and the report's stage table)."""
    if message.startswith("skipped"):
        return message
    try:
        return STAGE_LINES.get(name, _generic)(counts) or message or "done"
    except (KeyError, TypeError, ValueError):  # counts of another shape: never hide the stage
        return _generic(counts) or message or "done"


def stage_line(name: str, counts: Counts, status: str, message: str, seconds: float) -> str:
    """``land_internal     2,000 products, 3,987 prices read: 5,980 landed, 7 quarantined  12.3s``."""
    if status == "failed":
        what = "failed"
    else:
        what = describe(name, counts, message or "")
        if status == "held":
            what = f"HELD: {what}"
    return f"{name:<18}{what}  {duration(seconds)}"


# -- Spark progress ---------------------------------------------------------------------------------


class SparkTasks:
    """Tasks done / total over the Spark stages seen since :meth:`reset`, from the status tracker.

    A stage that leaves the active list counts as complete. Polling is metadata only (no job).
    """

    def __init__(self, spark: Any) -> None:
        self.tracker = spark.sparkContext.statusTracker()
        self.seen: dict[int, tuple[int, int]] = {}

    def reset(self) -> None:
        self.seen = {}

    def sample(self) -> tuple[int, int]:
        active = set()
        for sid in self.tracker.getActiveStageIds():
            info = self.tracker.getStageInfo(sid)
            if info is not None:
                active.add(sid)
                self.seen[sid] = (int(info.numCompletedTasks), int(info.numTasks))
        for sid, (_, total) in list(self.seen.items()):
            if sid not in active:
                self.seen[sid] = (total, total)
        return sum(d for d, _ in self.seen.values()), sum(t for _, t in self.seen.values())


# -- the console ------------------------------------------------------------------------------------


class Progress:
    """What the live line shows for the running stage: done/total of a unit, since ``t0``."""

    def __init__(self, label: str, clock: Callable[[], float]) -> None:
        self.label = label
        self.clock = clock
        self.t0 = clock()
        self.done = 0
        self.total: int | None = None
        self.unit = ""
        self.rate_t0 = self.t0
        self.rate_done0 = 0

    def update(self, done: int, total: int | None, unit: str) -> None:
        if unit != self.unit:  # another unit (Spark tasks -> corrections): the rate starts again
            self.rate_t0, self.rate_done0 = self.clock(), done
        self.done, self.total, self.unit = done, total, unit

    def render(self, width: int, bar: bool) -> str:
        """``detect  [#######.............]  45/120 tasks  12.3/s  ETA 6.1s  (14.0s)``."""
        now = self.clock()
        elapsed = now - self.t0
        parts = [f"{self.label:<18}"]
        if self.unit and self.total:
            frac = min(1.0, self.done / self.total)
            if bar:
                cells = 20
                filled = int(round(frac * cells))
                parts.append("[" + "#" * filled + "." * (cells - filled) + "] ")
            parts.append(f"{n(self.done)}/{n(self.total)} {self.unit}")
            span = now - self.rate_t0
            rate = (self.done - self.rate_done0) / span if span > 0.5 else 0.0
            if rate > 0:
                parts.append(f"  {rate:,.1f}/s")
                left = self.total - self.done
                parts.append(f"  ETA {duration(left / rate)}" if left > 0 else "  finishing")
        elif self.unit:
            parts.append(f"{n(self.done)} {self.unit}")
        else:
            parts.append("working")
        parts.append(f"  ({duration(elapsed)})")
        return "".join(parts)[: max(20, width - 1)]


class Console:
    """The run's observer: prints stage lines, keeps the live line, writes the closing table.

    ``interactive`` (default: stderr is a terminal) draws the live line; ``verbose`` never draws it;
    ``json_mode`` sends stage lines to stderr so stdout holds only the JSON summary.
    """

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, interactive: bool | None = None,
                 verbose: bool = False, json_mode: bool = False, plain_every: float = 60.0,
                 refresh: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        tty = interactive if interactive is not None else _isatty(self.err)
        self.live = tty and not verbose
        self.json_mode = json_mode
        self.plain_every = plain_every
        self.refresh = refresh
        self.clock = clock
        self._lock = threading.RLock()
        self._progress: Progress | None = None
        self._shown = False  # a live line is on screen
        self._spark: SparkTasks | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_plain = 0.0

    # -- wiring --------------------------------------------------------------------------------

    def attach(self, spark: Any) -> Console:
        """Poll this session's status tracker for Spark progress; returns self (the run's observer)."""
        try:
            self._spark = SparkTasks(spark)
        except Exception:  # Spark Connect and friends: no tracker, no task progress
            self._spark = None
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._lock:
            self._clear()
            self._progress = None

    # -- what the stages call (Run.stage, push) ------------------------------------------------

    def stage_started(self, name: str) -> None:
        with self._lock:
            self._progress = Progress(name, self.clock)
            self._last_plain = self.clock()
            if self._spark is not None:
                self._spark.reset()
        self._ensure_thread()

    def stage_finished(self, name: str, counts: Counts, status: str, message: str, seconds: float) -> None:
        with self._lock:
            self._progress = None
            self.line(stage_line(name, counts, status, message or "", seconds))

    def end(self) -> None:
        """The running piece of work is over (without a stage line of its own)."""
        with self._lock:
            self._progress = None
            self._clear()

    def progress(self, done: int, total: int | None, unit: str) -> None:
        """Work counted by the stage itself (push: corrections done of total)."""
        with self._lock:
            if self._progress is not None:
                self._progress.update(done, total, unit)

    # -- output ----------------------------------------------------------------------------------

    @property
    def stage_stream(self) -> TextIO:
        return self.err if self.json_mode else self.out

    def line(self, text: str, stream: TextIO | None = None) -> None:
        """Print one line (the live line is cleared first and redrawn by the next tick)."""
        with self._lock:
            self._clear()
            target = stream or self.stage_stream
            print(text, file=target, flush=True)

    def _clear(self) -> None:
        if self._shown:
            self.err.write("\r\x1b[2K")
            self.err.flush()
            self._shown = False

    def _ensure_thread(self) -> None:
        if self._thread is None and (self.live or self.plain_every > 0):
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="recon-console", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - progress must never break a run
                pass

    def tick(self) -> None:
        """Refresh the progress of the running stage: redraw the live line, or a plain line when due."""
        spark = self._spark
        with self._lock:
            prog = self._progress
            if prog is None:
                return
            uses_spark = spark is not None and prog.unit in ("", "tasks")
        if uses_spark:
            done, total = spark.sample()  # py4j call outside the lock
            with self._lock:
                if self._progress is prog and prog.unit in ("", "tasks") and total:
                    prog.update(done, total, "tasks")
        with self._lock:
            if self._progress is not prog:
                return
            if self.live:
                width = shutil.get_terminal_size((100, 20)).columns
                self.err.write("\r\x1b[2K" + prog.render(width, bar=True))
                self.err.flush()
                self._shown = True
            elif self.plain_every > 0 and self.clock() - self._last_plain >= self.plain_every:
                self._last_plain = self.clock()
                print("  " + prog.render(200, bar=False).strip(), file=self.err, flush=True)


class ConsoleLogHandler(logging.Handler):
    """Log records (WARNING and up, outside -v) as ``recon: warning: ...`` lines on stderr, through
    the console so the live line is cleared first. No traceback: -v shows those."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
            self.console.line(f"recon: {record.levelname.lower()}: {text}", stream=self.console.err)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- the closing table ------------------------------------------------------------------------------

ACTION_ORDER = ("create", "push", "replace", "archive", "pull", "review", "ignore")
STATUS_ORDER = ("applied", "failed", "held", "stale", "skipped", "planned")


def summary_table(by_kind_action: Mapping[str, Mapping[str, int]], corrections: Mapping[str, int],
                  report: str | None, held: str | None = None) -> list[str]:
    """The lines closing ``recon run``: a kind x action table, corrections by status, the report path.

    >>> summary_table({"field_mismatch": {"push": 3}}, {"applied": 3}, "data/r.html")[0]
    'discrepancies    push  total'
    """
    actions = [a for a in ACTION_ORDER if any(a in row for row in by_kind_action.values())]
    actions += sorted({a for row in by_kind_action.values() for a in row} - set(actions))
    kinds = [k for k in KIND_ORDER if k in by_kind_action] + sorted(set(by_kind_action) - set(KIND_ORDER))
    label_w = max([len("discrepancies"), *(len(k) for k in kinds)]) + 2
    widths = [max(len(a), 5) for a in [*actions, "total"]]

    def row(label: str, cells: list[str]) -> str:
        return (label.ljust(label_w) + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    lines = [row("discrepancies", [*actions, "total"])]
    totals = {a: 0 for a in actions}
    for kind in kinds:
        counts = by_kind_action[kind]
        for a in actions:
            totals[a] += counts.get(a, 0)
        lines.append(row(kind, [n(counts[a]) if counts.get(a) else "-" for a in actions] + [n(sum(counts.values()))]))
    if kinds:
        lines.append(row("total", [n(totals[a]) for a in actions] + [n(sum(totals.values()))]))
    else:
        lines.append("(none)")
    statuses = [s for s in STATUS_ORDER if corrections.get(s)] + sorted(set(corrections) - set(STATUS_ORDER))
    shown = ", ".join(f"{n(corrections[s])} {s}" for s in statuses if corrections.get(s))
    lines.append("corrections".ljust(label_w) + (shown or "none"))
    if held:
        lines.append("held".ljust(label_w) + held)
    lines.append("report".ljust(label_w) + (report or "not written"))
    return lines
