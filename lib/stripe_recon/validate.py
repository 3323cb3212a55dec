"""Validation gates: Great Expectations suites + row-level quarantine, with Data Docs per run.

Two gates, each a stage of its own with a runs-ledger row:

* :func:`validate_inputs` (stage ``validate_inputs``) checks the four silver tables before detect;
* :func:`validate_plan` (stage ``validate_plan``) checks the latest plan's ``planned`` corrections
  before push.

For each table (see :mod:`stripe_recon.gx_suites` for the suite format and which expectations are
row-level and which table-level):

1. the required columns and types are checked on the schema (a broken schema holds the gate at once:
   no row rule can be evaluated against a missing column);
2. the counts (rows in, rejected rows, rows per rule) come from one aggregation grouped by the key
   (the uniqueness rule), reading only the key and the columns the rules name (no UDF, no collect,
   nothing cached); the input gate runs steps 1-2 of the four tables in threads, so their Spark
   jobs overlap;
3. only when rows were rejected, every row rule becomes one Spark projection adding ``_reasons``; the
   rejected rows are cached and go to ``gold.quarantine`` (stage ``validate``) with their reasons, and
   the valid rows are the input without the rejected keys (or, for a suite without a not-null and
   unique key, the flagged frame is cached once); in every case ``rows_in = valid + quarantined``;
4. GX validates the valid rows with the whole suite through a Checkpoint (error row rules are not
   evaluated twice: their counts from step 2 are added to the result); the Data Docs site of the run,
   ``{storage.root}/runs/{run_id}/data_docs/index.html``, is built once per stage from the stored results;
5. the gate: an ``error`` expectation failing, or rejected rows under a suite whose
   ``meta.row_failures`` is ``hold``, holds the stage (:class:`HeldError`, exit code 3; nothing
   downstream runs). ``warn`` failures are only reported. When a silver table's gate passes and rows
   were rejected, the table is replaced by its valid rows so detect never sees them; a held table is
   left as it was, so re-running validate holds again until the input is fixed.

The row-count band compares a table's valid rows with the valid rows of the latest ``ok``
``validate_inputs`` ledger row of another run: ``prev * (1 - band) <= n <= prev * (1 + band)``
(``validation.row_count_band``). The first run has no band.

Example::

    run = Run.new(spark, cfg)
    summary = validate_inputs(run)     # {"rows_in": ..., "valid": ..., "quarantined": ..., "data_docs": ".../index.html"}
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from . import gx_suites, ledger, quarantine, silver, tables
from .errors import HeldError
from .quarantine import REASONS

log = logging.getLogger(__name__)

INPUT_SUITES: list[tuple[str, str]] = [
    ("internal_products", tables.SILVER_INTERNAL_PRODUCTS),
    ("internal_prices", tables.SILVER_INTERNAL_PRICES),
    ("stripe_products", tables.SILVER_STRIPE_PRODUCTS),
    ("stripe_prices", tables.SILVER_STRIPE_PRICES),
]
PLAN_SUITE = "corrections"
STAGE_INPUTS = "validate_inputs"
STAGE_PLAN = "validate_plan"
DOCS_SITE = "recon"


@dataclass
class TableResult:
    """What one suite found on one table (also the shape of the per-table entries returned)."""

    suite: str
    table: str
    rows_in: int = 0
    valid: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    evaluated: int = 0
    held_because: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # rules (projection, counts, quarantine), gx, write

    @property
    def held(self) -> bool:
        return bool(self.held_because)

    def failed_count(self, severity: str) -> int:
        return sum(1 for f in self.failed if f["severity"] == severity)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows_in": self.rows_in,
            "valid": self.valid,
            "quarantined": self.quarantined,
            "reasons": self.reasons,
            "expectations_evaluated": self.evaluated,
            "expectations_failed": {"error": self.failed_count("error"), "warn": self.failed_count("warn")},
            "failed": self.failed,
            "status": "held" if self.held else "ok",
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


# -- public stages ------------------------------------------------------------------------------

def validate_inputs(run) -> dict[str, Any]:
    """Gate the four silver tables; quarantine bad rows; raise HeldError when the gate holds.

    The Spark-only part of each table (its latest-commit read, the schema check and the rule counts) and
    the ledger read for the row-count band run in threads, so their jobs overlap: most of this
    gate's time on a warm session is per-job latency (planning, the Delta snapshot, scheduling), not
    row work. GX, the quarantine and the rewrite then run table by table in this thread."""
    cfg = run.cfg
    with run.stage(STAGE_INPUTS) as st:
        if not cfg.validation.enabled:
            st.message = "skipped: validation.enabled is false"
            return {"status": "skipped", "message": st.message}
        with ThreadPoolExecutor(max_workers=len(INPUT_SUITES) + 1, thread_name_prefix="validate") as pool:
            previous_f = pool.submit(_previous_valid_counts, run)
            passes = [pool.submit(_read_and_count, run, st, suite_name, table) for suite_name, table in INPUT_SUITES]
            gx = GxRunner(run, STAGE_INPUTS)  # its file context is set up while Spark counts
            previous = previous_f.result()
            results = []
            for counted in passes:
                first = counted.result()
                extra = _row_count_parameters(previous.get(first.suite_name), cfg.validation.row_count_band)
                results.append(_finish_table(run, gx, first, extra, replace_silver=True))
        docs = gx.publish()
        summary = _summarise(results, docs)
        _record(st, results, summary)
        _raise_if_held(results, docs, STAGE_INPUTS, run.run_id,
                       "fix the source data, land it again and re-run `recon validate`")
        return summary


def validate_plan(run) -> dict[str, Any]:
    """Gate the latest plan's ``planned`` corrections before push; raise HeldError when it holds.

    Rejected corrections are quarantined (source ``plan``, entity ``correction``) and their outbox
    row is set to status ``held`` with the reasons in ``last_error``, so no push sends them.
    """
    cfg = run.cfg
    with run.stage(STAGE_PLAN) as st:
        if not cfg.validation.enabled:
            st.message = "skipped: validation.enabled is false"
            return {"status": "skipped", "message": st.message}
        run.read_version(st, tables.GOLD_CORRECTIONS)
        planned = tables.read_or_empty(run.spark, cfg, tables.GOLD_CORRECTIONS, tables.CORRECTIONS_SCHEMA).filter(
            F.col("status") == "planned"
        )
        latest = planned.agg(F.max("run_id")).first()[0]
        plan = planned.filter(F.col("run_id") == latest) if latest is not None else planned
        gx = GxRunner(run, STAGE_PLAN)
        first = _count_rules(run, PLAN_SUITE, tables.GOLD_CORRECTIONS, plan)
        result = _finish_table(run, gx, first, {}, replace_silver=False)
        docs = gx.publish()
        summary = _summarise([result], docs)
        summary["plan_run_id"] = latest
        _record(st, [result], summary)
        _raise_if_held([result], docs, STAGE_PLAN, run.run_id,
                       "nothing was pushed; fix the planner input or configuration and re-run `recon plan`")
        return summary


# -- one table ----------------------------------------------------------------------------------

@dataclass
class FirstPass:
    """What the Spark-only first pass over one table found (see :func:`_count_rules`)."""

    suite_name: str
    table: str
    suite: dict[str, Any]
    df: DataFrame
    rules: list
    result: TableResult
    schema_problems: list[str]
    warned: dict[str, int]
    commit: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    landed_by: str | None = None  # the landing run whose recorded counts vouch for the row rules


def _read_and_count(run, st, suite_name: str, table: str) -> FirstPass:
    """A silver table's latest commit (version and writer metadata, one commit-file read), then the rule
    counts of the table as read right after it (as before the threads: a commit landing between the
    two reads is not guarded against). Spark work only: safe to run in a thread beside the others
    (the version goes into ``st.versions_read``, one key per table)."""
    commit = run.read_version(st, table)
    df = tables.read(run.spark, run.cfg, table, hint="run `recon land internal` and `recon land stripe` first")
    return _vouched_by_landing(run, suite_name, table, df, commit) or _count_rules(run, suite_name, table, df, commit,
                                                                                   vouch=True)


# suite -> (side, entity, key) of the silver table it checks, as land records them in bronze.manifests
_LANDED = {"internal_products": ("internal", "products", "product_id"), "internal_prices": ("internal", "prices", "price_id"),
           "stripe_products": ("stripe", "products", "id"), "stripe_prices": ("stripe", "prices", "id")}


def _vouched_by_landing(run, suite_name: str, table: str, df: DataFrame, commit: dict[str, Any]) -> FirstPass | None:
    """The first pass of a silver table that land wrote in its latest commit: land evaluated this
    suite's row rules on every record in its own pass (as Delta Live Tables' expectations do) and
    recorded the counts in bronze.manifests, so they are read, not recomputed. None (check every row
    here) when the latest commit is not land's, was made under other row rules, or has no manifest."""
    landing = silver.Commit.of(commit).landing
    if suite_name not in _LANDED or landing is None or not landing.run_id:
        return None
    t0 = time.monotonic()
    side, entity, key = _LANDED[suite_name]
    suite = gx_suites.load_suite(suite_name, run.cfg)
    if landing.rules_spec != gx_suites.landing_rules_spec(suite, key, run.cfg):
        return None
    if any(e["meta"].get("rule") and e["meta"]["severity"] == "warn" for e in suite["expectations"]):
        return None  # land evaluates error rules only; warn row rules are counted on the rows here
    manifest = tables.landing_manifests(run.spark, run.cfg, landing.run_id, side).get(entity)
    if not manifest or manifest.get("silver_version") is None:
        return None
    suite = _vouch_unique(suite, commit, table)
    note = (f"evaluated on every record by land (run {landing.run_id}) in its own pass; counts recorded in "
            "bronze.manifests")
    suite = {**suite, "expectations": [
        {**e, "meta": {**e["meta"], "vouched_by": e["meta"].get("vouched_by") or note}} if e["meta"].get("rule") else e
        for e in suite["expectations"]]}
    res = TableResult(suite_name, table)
    counts = manifest["counts"] or {}
    res.quarantined = int(counts.get("suite_quarantined") or 0)
    res.valid = int(counts.get("silver_rows") or 0)
    res.rows_in = res.valid + res.quarantined
    res.reasons = {k: int(v) for k, v in (manifest["suite_failed"] or {}).items()}
    problems = gx_suites.schema_problems(suite, df.schema)
    rules = gx_suites.row_rules(suite, gx_suites.parameters(run.cfg)) if not problems else []
    return FirstPass(suite_name, table, suite, df, rules, res, problems, {}, commit,
                     seconds=time.monotonic() - t0, landed_by=landing.run_id)


def _count_rules(run, suite_name: str, table: str, df: DataFrame, commit: dict[str, Any] | None = None,
                 vouch: bool = False) -> FirstPass:
    """Load the suite, check the schema and count the rows breaking each row rule (one scan, one
    narrow aggregation; nothing cached, no GX). ``commit``: the metadata of the commit ``df`` was
    read at; with ``vouch`` the uniqueness it guarantees is not re-checked (:func:`_vouch_unique`)."""
    commit = commit or {}
    t0 = time.monotonic()
    suite = gx_suites.load_suite(suite_name, run.cfg)
    if vouch:
        suite = _vouch_unique(suite, commit, table)
    params = gx_suites.parameters(run.cfg)
    res = TableResult(suite_name, table)
    problems = gx_suites.schema_problems(suite, df.schema)
    rules, warned = [], {}
    if problems:
        res.rows_in = res.valid = df.count()
    else:
        rules = gx_suites.row_rules(suite, params)
        error_rules = list(dict.fromkeys(r.name for r in rules if r.severity == "error"))
        res.rows_in, res.quarantined, res.reasons, warned = _rule_counts(df, suite, rules, error_rules)
        res.valid = res.rows_in - res.quarantined
    return FirstPass(suite_name, table, suite, df, rules, res, problems, warned, commit,
                     seconds=time.monotonic() - t0)


def _finish_table(run, gx: GxRunner, first: FirstPass, extra_params: dict[str, Any], replace_silver: bool) -> TableResult:
    """Quarantine the rejected rows, let GX validate the valid rows, decide, and (input gate) replace
    the silver table by its valid rows."""
    cfg = run.cfg
    suite, df, rules, res, table, warned = first.suite, first.df, first.rules, first.result, first.table, first.warned
    meta = suite["meta"]
    params = {**gx_suites.parameters(cfg), **extra_params}
    if first.schema_problems:
        # Row rules cannot run against a broken schema: report the schema expectations only.
        _collect(res, gx.validate(gx_suites.schema_only(suite), df, params))
        res.held_because.append(f"schema: {'; '.join(first.schema_problems)}")
        return res

    t0 = time.monotonic()
    valid = df
    cached = None
    commit = first.commit
    try:
        if res.quarantined and first.landed_by:
            # Land already quarantined these records (stage validate) in the landing that wrote silver.
            if meta.get("row_failures") == "hold":
                counts = ", ".join(f"{k}: {v}" for k, v in res.reasons.items())
                res.held_because.append(f"{res.quarantined} rows broke row rules ({counts}) at landing "
                                        f"(run {first.landed_by}); this suite holds on them")
        elif res.quarantined:
            # Rows were rejected: now (only now) each row's reasons are needed.
            marked, flag_rules, markers = _duplicate_markers(df, suite, rules)
            flagged = quarantine.flag(marked, flag_rules).drop(*markers)
            key_col = _whole_key_column(suite)
            if key_col:
                # Every row of a key is either valid or rejected (a repeated or null key rejects all of
                # its rows), so the valid rows are the input without the rejected keys: the rules are
                # not evaluated a second time and only the (few) rejected rows are cached.
                rejected = flagged.filter(F.size(REASONS) > 0).persist()
                cached = rejected
                keys = rejected.select(F.col(f"`{key_col}`").alias("_rejected_key")).distinct()
                valid = df.join(keys, df[f"`{key_col}`"].eqNullSafe(keys["_rejected_key"]), "left_anti")
            else:
                cached = flagged.persist()  # read by the quarantine write, GX and the silver rewrite
                valid, rejected = quarantine.split(cached)
            source_file = "_source_file" if "_source_file" in df.columns else None
            rows = quarantine.to_quarantine_rows(
                run.run_id, rejected, "validate", meta.get("source", first.suite_name), meta.get("entity", "unknown"),
                meta.get("key"), source_file_col=source_file,
            )
            quarantine.append_quarantine(run, rows)
            # The rewritten table names this run: detect treats its rejected keys as unknown (unknown.py).
            commit = {**commit, **silver.Commit.of(commit).with_quarantine_run(run.run_id).as_json()}
            if meta.get("row_failures") == "hold":
                counts = ", ".join(f"{k}: {v}" for k, v in res.reasons.items())
                res.held_because.append(f"{res.quarantined} rows broke row rules ({counts}); this suite holds on them")
            if table == tables.GOLD_CORRECTIONS:
                _hold_corrections(run, rejected)

        t1 = time.monotonic()
        # GX evaluates the table-level expectations (and warn row rules) on the valid rows; error row
        # rules were evaluated above and are reported with their counts on the input.
        spark_rules = [e for e in suite["expectations"]
                       if e["meta"].get("rule") and (e["meta"]["severity"] == "error" or _spark_warn_rule(e))]
        gx_part = {**suite, "expectations": [e for e in suite["expectations"] if e not in spark_rules]}
        row_results = [(e, res.rows_in, res.reasons.get(e["meta"]["rule"], 0)) if e["meta"]["severity"] == "error"
                       else (e, res.valid, warned.get(e["meta"]["rule"], 0)) for e in spark_rules]
        _collect(res, gx.validate(gx_part, valid, params, row_results), skip_rules=True)
        t2 = time.monotonic()
        if not res.held and res.quarantined and replace_silver:
            # Only rows are removed: whatever the landing commit vouched for (detect's stored
            # fingerprints) still holds for the rows kept, so its metadata goes with the rewrite.
            tables.overwrite(run.spark, cfg, table, valid, commit)
        res.seconds = {"rules": first.seconds + t1 - t0, "gx": t2 - t1, "write": time.monotonic() - t2}
    finally:
        if cached is not None:
            cached.unpersist()
    return res


def _vouch_unique(suite: dict[str, Any], commit: dict[str, Any], table: str) -> dict[str, Any]:
    """Mark the uniqueness rules whose column the table's latest commit guarantees unique.

    Land writes silver with ``{"unique": [<key>]}`` in the commit metadata: every row of a key that
    arrived more than once was quarantined (internal) or de-duplicated to its latest version (Stripe)
    in the very job that wrote the table, so the key is unique by construction. Checking it again
    would cost a shuffle of the whole table (the largest part of this gate). A later write by any
    other tool carries no such metadata, and then the rule is evaluated on the rows as usual; the
    gate's own rewrite only removes rows and carries the metadata over."""
    vouched = set(silver.Commit.of(commit).unique)
    if not vouched:
        return suite
    note = f"guaranteed by the writer of {table} (commit metadata 'unique'): not re-checked"
    exps = [
        {**e, "meta": {**e["meta"], "vouched_by": note}}
        if e["type"] == "expect_column_values_to_be_unique" and e["meta"].get("rule") and e["kwargs"].get("column") in vouched
        else e
        for e in suite["expectations"]
    ]
    return {**suite, "expectations": exps}


def _whole_key_column(suite: dict[str, Any]) -> str | None:
    """The column that is both not-null and unique under ``error`` row rules, if the suite has one."""
    def columns(etype: str) -> set[str]:
        return {e["kwargs"].get("column") for e in suite["expectations"]
                if e["type"] == etype and e["meta"].get("rule") and e["meta"].get("severity") == "error"}

    both = columns("expect_column_values_to_not_be_null") & columns("expect_column_values_to_be_unique")
    return sorted(both)[0] if both else None


def _rule_counts(df: DataFrame, suite: dict[str, Any], rules: list,
                 error_rules: list[str]) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """(rows in, rows rejected, rows per error rule, valid rows per warn rule) in one scan and one
    narrow aggregation.

    The rows are grouped by the column of the suite's first uniqueness rule (the key): a group of more
    than one row with a non-null key breaks that rule, and the other rules' flags are summed per group.
    Spark reads only the key and the columns the rules name; nothing is cached. Further uniqueness
    rules, if a suite has any, are evaluated with marker columns (:func:`_duplicate_markers`).
    Equivalent to counting :func:`quarantine.flag`'s ``_reasons`` row by row. ``warn`` row rules
    (except uniqueness, left to GX) are counted in the same pass over the rows that stay valid, which
    is what GX would have reported on the valid frame, without GX's own jobs per expectation."""
    unique = [e for e in suite["expectations"]
              if e["type"] == "expect_column_values_to_be_unique" and e["meta"].get("rule") and e["meta"]["severity"] == "error"
              and not e["meta"].get("vouched_by")]
    first = unique[0] if unique else None
    group_col = first["kwargs"]["column"] if first else None
    other = {**suite, "expectations": [e for e in suite["expectations"] if e is not first]}
    rule_exps = [e for e in suite["expectations"] if e["meta"].get("rule")]  # row_rules' order, one rule each
    marked, rules, markers = _duplicate_markers(df, other, rules)
    dup_rule = first["meta"]["rule"] if first else None
    by_name: dict[str, Column] = {}  # rule name -> "this row breaks it" (rules sharing a name are OR-ed)
    warn_by_name: dict[str, Column] = {}
    for exp, r in zip(rule_exps, rules, strict=True):
        # The first uniqueness rule is counted from the group sizes below, not by its window form.
        if exp is first or (r.severity != "error" and not _spark_warn_rule(exp)):
            continue
        target = by_name if r.severity == "error" else warn_by_name
        broken = F.coalesce(F.expr(r.fails), F.lit(False))
        target[r.name] = target[r.name] | broken if r.name in target else broken
    names, warn_names = list(by_name), list(warn_by_name)
    any_broken = F.lit(False)
    for c in by_name.values():
        any_broken = any_broken | c
    per_row = [any_broken.cast("long").alias("_bad"), *[c.cast("long").alias(f"f{i}") for i, c in enumerate(by_name.values())],
               *[(c & ~any_broken).cast("long").alias(f"w{i}") for i, c in enumerate(warn_by_name.values())]]
    sums = ["_bad", *(f"f{i}" for i in range(len(names))), *(f"w{i}" for i in range(len(warn_names)))]
    if group_col is None:
        rows = marked.select(F.lit(1).alias("_n"), *per_row)
        dup = F.lit(False)
    else:
        rows = marked.select(F.col(f"`{group_col}`").alias("_k"), *per_row).groupBy("_k").agg(
            F.count(F.lit(1)).alias("_n"), *[F.sum(c).alias(c) for c in sums],
        )
        dup = F.col("_k").isNotNull() & (F.col("_n") > 1)
    per_rule = []
    for name in error_rules:
        broken_rows = F.col(f"f{names.index(name)}") if name in names else F.lit(0)
        if name == dup_rule:  # every row of a repeated key breaks it
            broken_rows = F.when(dup, F.col("_n")).otherwise(broken_rows)
        per_rule.append(F.coalesce(F.sum(broken_rows), F.lit(0)).alias(name))
    per_warn = [F.coalesce(F.sum(F.when(dup, F.lit(0)).otherwise(F.col(f"w{i}"))), F.lit(0)).alias(f"w{i}")
                for i in range(len(warn_names))]
    totals = rows.agg(
        F.coalesce(F.sum("_n"), F.lit(0)).alias("_rows_in"),
        F.coalesce(F.sum(F.when(dup, F.col("_n")).otherwise(F.col("_bad"))), F.lit(0)).alias("_quarantined"),
        *per_rule, *per_warn,
    ).first()  # one row of counts
    reasons = {name: int(totals[name]) for name in error_rules if totals[name]}
    warned = {name: int(totals[f"w{i}"]) for i, name in enumerate(warn_names)}
    return int(totals["_rows_in"]), int(totals["_quarantined"]), reasons, warned


def _spark_warn_rule(exp: dict[str, Any]) -> bool:
    """A warn row rule counted in the rule pass (uniqueness needs its own aggregation: GX does it)."""
    return (bool(exp["meta"].get("rule")) and exp["meta"].get("severity") == "warn"
            and exp["type"] != "expect_column_values_to_be_unique")


def _duplicate_markers(df: DataFrame, suite: dict[str, Any], rules: list) -> tuple[DataFrame, list, list[str]]:
    """Uniqueness row rules without a window over whole rows: the repeated keys are found with an
    aggregation of the key column alone (a small shuffle), broadcast back and joined as a boolean
    marker column the rule then reads. Returns (frame with markers, rules, marker column names)."""
    out, markers = df, []
    rules = list(rules)
    for exp in suite["expectations"]:
        if exp["type"] != "expect_column_values_to_be_unique" or not exp["meta"].get("rule") or exp["meta"].get("vouched_by"):
            continue
        col, marker = exp["kwargs"]["column"], f"_dup_{exp['kwargs']['column']}"
        repeated = (
            df.groupBy(col).count().filter((F.col("count") > 1) & F.col(col).isNotNull())
            .select(F.col(col).alias(marker + "_k"), F.lit(True).alias(marker))
        )
        out = out.join(F.broadcast(repeated), out[col] == F.col(marker + "_k"), "left").drop(marker + "_k")
        rules = [quarantine.Rule(r.name, f"coalesce(`{marker}`, false)", r.severity)
                 if r.name == exp["meta"]["rule"] else r for r in rules]
        markers.append(marker)
    return out.select(*[F.col(f"`{c}`") for c in df.columns], *markers), rules, markers


def _collect(res: TableResult, result, skip_rules: bool = False) -> None:
    """Fold a GX suite validation result into ``res`` (failures by severity; errors hold).

    With ``skip_rules`` the error row rules' entries (already counted as quarantined rows) are not
    failures of the gate: the suite's ``row_failures`` policy decides about them. Warn row rules
    counted by Spark are reported like any warn failure."""
    res.evaluated += len(result.results)
    for r in result.results:
        spark_error_rule = (r.meta or {}).get("evaluated_by") and (r.expectation_config.meta or {}).get("severity") == "error"
        if r.success or (skip_rules and spark_error_rule):
            continue
        cfg = r.expectation_config
        meta = cfg.meta or {}
        detail = r.result or {}
        observed = detail.get("observed_value", detail.get("unexpected_count"))
        exc = (r.exception_info or {}).get("exception_message") if r.exception_info else None
        kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "unexpected_rows_query")}
        entry = {
            "expectation": cfg.type,
            "kwargs": _jsonable(kwargs),
            "rule": meta.get("rule"),
            "severity": meta.get("severity", "error"),
            "observed": _jsonable(observed),
        }
        if exc:
            entry["exception"] = str(exc)[:500]
        res.failed.append(entry)
        if entry["severity"] == "error":
            what = cfg.type + (f" ({entry['rule']})" if entry["rule"] else "")
            col = kwargs.get("column")
            res.held_because.append(
                f"{what}{' on ' + col if col else ''} failed: observed {entry['observed']!r}"
                + (f", expected {kwargs.get('min_value')}..{kwargs.get('max_value')}"
                   if cfg.type == "expect_table_row_count_to_be_between" else "")
                + (f" [{entry['exception']}]" if exc else "")
            )


def _resolved(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        return params.get(value["$PARAMETER"])
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value[:20]]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _hold_corrections(run, rejected: DataFrame) -> None:
    """Mark rejected corrections ``held`` in the outbox so no push sends them."""
    cols = tables.CORRECTIONS_SCHEMA.fieldNames()
    held = rejected.dropDuplicates(["correction_id"]).withColumns(
        {
            "status": F.lit("held"),
            "last_error": F.concat(F.lit("validate_plan: "), F.concat_ws(", ", F.col(REASONS))),
            "updated_at": F.current_timestamp(),
        }
    ).select(*cols)
    tables.merge_upsert(run.spark, run.cfg, tables.GOLD_CORRECTIONS, held, ["correction_id"])


# -- row-count band -----------------------------------------------------------------------------

def _previous_valid_counts(run) -> dict[str, int]:
    """Valid rows per suite from the latest ``ok`` validate_inputs ledger row of another run."""
    row = ledger.latest_ok(run.spark, run.cfg, STAGE_INPUTS, ["counts"], other_than=run.run_id)
    counts = (row["counts"] or {}) if row else {}
    return {name: int(counts[f"{name}.valid"]) for name, _ in INPUT_SUITES if f"{name}.valid" in counts}


def _row_count_parameters(previous: int | None, band: float) -> dict[str, Any]:
    if previous is None:
        return {"row_count_min": 0, "row_count_max": None}
    return {
        "row_count_min": max(0, math.ceil(previous * (1 - band))),
        "row_count_max": math.floor(previous * (1 + band)),
    }


# -- results ------------------------------------------------------------------------------------

def _summarise(results: list[TableResult], docs: str | None) -> dict[str, Any]:
    return {
        "status": "held" if any(r.held for r in results) else "ok",
        "rows_in": sum(r.rows_in for r in results),
        "valid": sum(r.valid for r in results),
        "quarantined": sum(r.quarantined for r in results),
        "expectations_failed": {
            "error": sum(r.failed_count("error") for r in results),
            "warn": sum(r.failed_count("warn") for r in results),
        },
        "tables": {r.suite: r.as_dict() for r in results},
        "data_docs": docs,
    }


def _record(st, results: list[TableResult], summary: dict[str, Any]) -> None:
    """Counts for the runs ledger: totals and ``{suite}.{count}`` per table."""
    st.counts.update(
        rows_in=summary["rows_in"], valid=summary["valid"], quarantined=summary["quarantined"],
        expectations_failed_error=summary["expectations_failed"]["error"],
        expectations_failed_warn=summary["expectations_failed"]["warn"],
    )
    for r in results:
        st.counts.update({
            f"{r.suite}.rows_in": r.rows_in, f"{r.suite}.valid": r.valid, f"{r.suite}.quarantined": r.quarantined,
            f"{r.suite}.expectations_failed_error": r.failed_count("error"),
            f"{r.suite}.expectations_failed_warn": r.failed_count("warn"),
        })
    warns = [f"{r.suite}: {f['expectation']}" + (f" on {f['kwargs'].get('column')}" if f["kwargs"].get("column") else "")
             for r in results for f in r.failed if f["severity"] == "warn"]
    if warns:
        st.message = "warnings: " + "; ".join(warns)
    if summary["data_docs"]:
        st.message = (st.message + "; " if st.message else "") + f"data docs: {summary['data_docs']}"


def _raise_if_held(results: list[TableResult], docs: str | None, stage: str, run_id: str, todo: str) -> None:
    held = [r for r in results if r.held]
    if not held:
        return
    lines = [f"{r.suite} ({r.table}): " + "; ".join(r.held_because) for r in held]
    where = f" Data Docs: {docs}." if docs else ""
    raise HeldError(
        f"{stage} held the run: " + " | ".join(lines)
        + f". Nothing downstream ran. Rejected rows are in gold.quarantine (run_id {run_id}).{where} To go on: {todo}."
    )


# -- Great Expectations -------------------------------------------------------------------------

class GxRunner:
    """One GX file context per run under ``runs/{run_id}/gx`` (results persist, so the Data Docs
    index of a run lists the input gate and the plan gate even when they run in two processes).

    When ``storage.root`` is a URI (s3a://, file://) the context and Data Docs are built in a local
    folder and the Data Docs are copied to ``{root}/runs/{run_id}/data_docs`` with Hadoop's FileSystem.
    """

    def __init__(self, run, stage: str) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.run = run
        self.asset_name = stage  # the Data Docs' "asset" of every validation of this stage
        self._batch_def = None
        root = run.cfg.storage.root.rstrip("/")
        self.remote = "://" in root
        self.target = f"{root}/runs/{run.run_id}/data_docs"
        base = Path(tempfile.gettempdir()) / "stripe-recon" / run.run_id if self.remote else Path(root) / "runs" / run.run_id
        self.local_docs = (base / "data_docs").resolve()
        self.docs_enabled = run.cfg.validation.data_docs
        self.context = gx.get_context(mode="file", project_root_dir=str((base / "gx").resolve()))
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        for site in list(self.context.get_config().data_docs_sites or {}):
            self.context.delete_data_docs_site(site)
        if self.docs_enabled:
            self.context.add_data_docs_site(
                DOCS_SITE,
                {
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(self.local_docs)},
                },
            )
        # GX must not cache the frames: a valid frame is the table itself (or a filter of it), and the
        # table-level expectations GX evaluates read only a few of its columns.
        self.source = self.context.data_sources.add_or_update_spark(name="spark", persist=False)

    def validate(
        self,
        suite_dict: dict[str, Any],
        df: DataFrame,
        params: dict[str, Any],
        row_results: list[tuple[dict[str, Any], int, int]] = (),
    ):
        """Run ``suite_dict`` on ``df`` through a Checkpoint, add the results of the row rules already
        evaluated by Spark (``(expectation, rows_in, rows_broken)``), store them and update Data Docs.

        Row rules are not re-run by GX: the projection already evaluated them on every row, and a
        second pass per expectation (2-3 Spark jobs each) would cost more than the rest of the gate.
        Their Data Docs entry shows how many input rows broke them (and were quarantined)."""
        gx = self._gx
        from great_expectations.core.expectation_validation_result import ExpectationValidationResult
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
        from great_expectations.validator.validation_statistics import calc_validation_statistics

        name = suite_dict["name"]
        meta = suite_dict.get("meta", {})
        gx_suite = self.context.suites.add_or_update(
            gx.ExpectationSuite(name=name, expectations=suite_dict["expectations"], meta=meta)
        )
        batch_def = self._batch_definition()
        vd = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch_def, suite=gx_suite)
        )
        checkpoint = self.context.checkpoints.add_or_update(
            gx.Checkpoint(name=f"recon_{name}", validation_definitions=[vd], actions=[], result_format="SUMMARY")
        )
        result = checkpoint.run(
            batch_parameters={"dataframe": df},
            expectation_parameters=params,
            run_id=RunIdentifier(run_name=self.run.run_id),
        )
        key, suite_result = next(iter(result.run_results.items()))
        for exp, rows_in, broken in row_results:
            config = ExpectationConfiguration(
                type=exp["type"], kwargs={k: _resolved(v, params) for k, v in exp["kwargs"].items()}, meta=exp["meta"]
            )
            pct = 100.0 * broken / rows_in if rows_in else 0.0
            detail = ({"observed_value": broken} if exp["type"] == "unexpected_rows_expectation" else
                      {"element_count": rows_in, "unexpected_count": broken, "unexpected_percent": pct,
                       "missing_count": 0, "missing_percent": 0.0, "unexpected_percent_total": pct,
                       "unexpected_percent_nonmissing": pct, "partial_unexpected_list": []})
            suite_result.results.append(ExpectationValidationResult(
                success=broken == 0, expectation_config=config, result=detail,
                meta={"evaluated_by": exp["meta"].get("vouched_by") or "Spark row rule (one projection)",
                      ("quarantined_rows" if exp["meta"].get("severity") == "error" else "valid_rows_breaking_it"): broken},
            ))
        stats = calc_validation_statistics(suite_result.results)
        suite_result.success = stats.success
        suite_result.suite_name = name
        suite_result.statistics = stats._asdict()
        self.context.validation_results_store.set(key, suite_result)
        # The suite page of the Data Docs shows every expectation, the Spark-evaluated ones included.
        self.context.suites.add_or_update(
            gx.ExpectationSuite(name=name, expectations=suite_dict["expectations"] + [e for e, _, _ in row_results],
                                meta=meta)
        )
        return suite_result

    def _batch_definition(self):
        """The stage's one dataframe asset and its whole-frame batch definition, shared by the
        stage's suites: a file context rewrites its project config on every asset or batch
        definition added (about 0.2 s each), so one pair per stage instead of one per suite."""
        if self._batch_def is None:
            try:
                asset = self.source.get_asset(self.asset_name)
            except LookupError:
                asset = self.source.add_dataframe_asset(name=self.asset_name)
            try:
                self._batch_def = asset.get_batch_definition("whole")
            except KeyError:
                self._batch_def = asset.add_batch_definition_whole_dataframe("whole")
        return self._batch_def

    def publish(self) -> str | None:
        """Where the Data Docs index is (copied to the storage root first when that is a URI)."""
        if not self.docs_enabled:
            return None
        # One build per stage from the stored results (those of an earlier gate of the run included).
        self.context.build_data_docs(site_names=[DOCS_SITE])
        if not self.remote:
            return str(self.local_docs / "index.html")
        spark = self.run.spark
        jvm = spark._jvm
        hadoop_path = jvm.org.apache.hadoop.fs.Path
        dst = hadoop_path(self.target)
        fs = dst.getFileSystem(spark._jsc.hadoopConfiguration())
        fs.delete(dst, True)
        fs.copyFromLocalFile(False, True, hadoop_path(self.local_docs.as_uri()), dst)
        return f"{self.target}/index.html"
