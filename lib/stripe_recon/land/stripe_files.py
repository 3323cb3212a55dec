"""Land a Stripe export (files) into bronze and silver Delta tables.

``sources.stripe.path`` is a file, a folder (read recursively) or a glob, local or any Hadoop URI
(s3a:// included). Files are read as text lines so that nothing is lost: a line that is not a JSON
object is quarantined as ``malformed_json`` with the line itself as the record. Each line is an
API object (products and prices may be mixed in one file) or an Airbyte raw record
(``_airbyte_data`` holds the object; ``is_deleted`` is honoured); ``sources.stripe.format``
auto-detects per line, or forces ``jsonl`` / ``airbyte``. Compressed files (.gz, .bz2) are read
transparently by Hadoop.

One lean pass (land/common.py): every line is parsed ONCE and typed, flagged by land's rules and the
GX suites' row rules, and appended to ``bronze.stripe_objects`` (partitioned by ``_entity``: product,
price, unknown; ``raw`` keeps the object's JSON as exported, unknown fields included; on a re-landing
only new or changed lines). Silver (``silver.stripe_products`` / ``_prices``) is then published from
bronze's typed columns: one row per Stripe id (the latest version, canonical.latest_version_order),
with the per-key columns detect reads (records.py). An export identical to the last landing's is not
written again.

Example::

    counts = land_stripe_files(Run.new(spark, cfg.with_overrides("sources.stripe.path=/exports/stripe")))
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from .. import canonical, quarantine, records, silver, tables
from ..errors import InputError
from ..guard import refuse_empty_stripe
from ..ledger import Run
from .common import (
    ROW,
    EntitySpec,
    check_path,
    hash_sums,
    held_in_memory,
    landing_spec,
    ledger_counts,
    lineage,
    manifest_of,
    manifest_row,
    new_or_changed,
    publish,
    read_input,
    repeat_landing,
    suite_rules,
    unchanged_since,
    with_suite_reasons,
    write_bronze,
    write_manifest,
    write_quarantine,
)
from .stripe_changes import changed_ids, context

_COMMON_RULES = ("null_key", "wrong_type:active", "wrong_type:livemode", "wrong_type:created", "wrong_type:metadata")
PRODUCTS = EntitySpec(
    entity="product", side="stripe", key="id", silver=tables.SILVER_STRIPE_PRODUCTS,
    schema=tables.SILVER_STRIPE_PRODUCTS_SCHEMA, suite="stripe_products",
    land_rules=(*_COMMON_RULES, "wrong_type:updated"),
)
PRICES = EntitySpec(
    entity="price", side="stripe", key="id", silver=tables.SILVER_STRIPE_PRICES,
    schema=tables.SILVER_STRIPE_PRICES_SCHEMA, suite="stripe_prices",
    land_rules=(*_COMMON_RULES, "unknown_currency", "wrong_type:unit_amount", "negative_amount",
                "amount_not_representable", "wrong_type:interval_count"),
)
SPECS = {"products": PRODUCTS, "prices": PRICES}
BRONZE = tables.BRONZE_STRIPE_OBJECTS


def land_stripe_files(run: Run, changes: bool = False) -> dict[str, Any]:
    """Land the export at ``sources.stripe.path``; returns counts per entity and the path.

    Counts: ``products`` / ``prices`` (rows_in, landed, quarantined, silver_rows, suite_quarantined)
    and ``unrecognised`` (lines that are not a product or price object: rows_in = quarantined).
    ``changes``: the files hold changed objects (``--from-events``), not a snapshot: they are MERGEd
    into silver, which keeps every other object, and the per-key columns of the keys they touch are
    recomputed (stripe_changes.py); an empty input is no error.
    """
    src = run.cfg.sources.stripe
    spark = run.spark
    path = src.path or ""
    what = "Stripe export"
    with run.stage("land_stripe") as st:  # a missing path is recorded in the ledger as a failed stage
        if not path:
            raise InputError("no Stripe export path: set sources.stripe.path or pass --from-files PATH")
        check_path(spark, path, what)
        text = read_input(what, path, lambda: spark.read.option("recursiveFileLookup", "true").text(path))
        lines = text.select("value", *lineage(run, "stripe", F.col("_metadata.file_path"))).filter("trim(value) <> ''")
        files = sorted(text.inputFiles())[:10_000]
        spec_id = landing_spec(run, list(SPECS.values()), {"side": "stripe", "format": src.format})
        commits = {s.silver: tables.last_commit(spark, run.cfg, s.silver)[1] for s in SPECS.values()}
        line_hash = F.xxhash64("value")

        # 1. unchanged?
        if all(commits.values()) and not changes:
            manifest = manifest_of(lines, line_hash)
            same = unchanged_since(run, list(SPECS.values()), manifest, spec_id, commits)
            if same:
                per = repeat_landing(run, "stripe", same.run_id, {"products": manifest, "prices": manifest,
                                                                     "unrecognised": manifest},
                                     {p: files for p in ("products", "prices", "unrecognised")})
                st.counts.update(ledger_counts(per))
                st.message = f"format={src.format}; unchanged since run {same.run_id}: nothing written"
                return {**per, "paths": {"stripe": path}, "unchanged_since": same.run_id,
                        **{k: st.counts[k] for k in ("rows_in", "landed", "quarantined")}}

        # 2. bronze: every line parsed once, typed and flagged; new or changed lines only
        in_memory = not changes and held_in_memory(run, list(SPECS.values()))
        flagged = _flagged(run, lines, src.format, line_hash)
        if in_memory:  # a small re-landing: its passes read the typed lines from memory, not the files
            flagged = st.hold(flagged)
        seen = Observation()
        observed = flagged.observe(
            seen, F.count(F.lit(1)).alias("rows"), *hash_sums(F.col(silver.RAW_HASH)),
            F.count_if(F.col(canonical.ENTITY) == "unknown").alias("unknown"),
            *[F.count_if(F.col(canonical.ENTITY) == s.entity).alias(p) for p, s in SPECS.items()])
        fresh = new_or_changed(run, observed, [s.silver for s in SPECS.values()])
        full_bronze = fresh is observed
        appended = Observation()
        write_bronze(run, BRONZE, canonical.bronze_line(fresh.observe(appended, F.count(F.lit(1)).alias("n"))),
                     partition_by=canonical.ENTITY)
        got = seen.get
        manifest = {"rows": int(got["rows"]), "h_lo": int(got["h_lo"] or 0), "h_hi": int(got["h_hi"] or 0)}
        n_unknown, bronze_rows = int(got["unknown"] or 0), int(appended.get.get("n") or 0)
        if not changes:
            refuse_empty_stripe({p: {"rows_in": int(got[p] or 0)} for p in SPECS}, path, src.allow_empty)  # before silver

        # 3. silver, 4. quarantine
        def source(entity: str) -> DataFrame:
            if full_bronze:
                b = tables.read(spark, run.cfg, BRONZE).where(
                    (F.col("_run_id") == run.run_id) & (F.col(canonical.ENTITY) == entity))
                return canonical.from_bronze_line(b)
            return flagged.where(F.col(canonical.ENTITY) == entity)

        result: dict[str, Any] = {}
        rejected: list[DataFrame] = []
        manifest_rows: list[dict[str, Any]] = []
        frames = records.SmallFrames()
        landing = silver.Landing(spec=spec_id, run_id=run.run_id, input=manifest)
        try:
            products_version, product_changes = None, None
            for plural, spec in SPECS.items():
                products = None
                if spec.entity == "price":
                    products = tables.read(spark, run.cfg, tables.SILVER_STRIPE_PRODUCTS).select("id", records.KEY)
                before = tables.version(spark, run.cfg, spec.silver) if changes else None
                pub = publish(run, spec, source(spec.entity), [r.name for r in suite_rules(run, spec)], frames,
                              landing=landing, products=products, products_version=products_version,
                              changes_only=changes, in_memory=in_memory,
                              context=context(run, spec.silver, product_changes) if changes else None)
                if changes and spec.entity == "product":
                    product_changes = changed_ids(run, spec.silver, before)
                if spec.entity == "product":
                    products_version = pub.details["silver_version"]
                result[plural] = pub.counts
                if pub.rejected is not None:
                    rejected.append(pub.rejected)
                manifest_rows.append(manifest_row(run, "stripe", plural, files, manifest, bronze_rows,
                                                  pub.counts, pub.details))
        finally:
            frames.release()
        if n_unknown:
            bad = source("unknown")
            rejected.append(quarantine.to_quarantine_rows(
                run.run_id, bad, stage="land", source="stripe", entity="unknown", key_col="id",
                record_col=canonical.RECORD, source_file_col="_source_file"))
        unrecognised = {"rows_in": n_unknown, "landed": 0, "quarantined": n_unknown}
        manifest_rows.append(manifest_row(run, "stripe", "unrecognised", files, manifest, bronze_rows, unrecognised,
                                          {"land_failed": None, "suite_failed": None, "id_set": None,
                                           "silver_version": None}))
        write_quarantine(run, "stripe", rejected)
        write_manifest(run, "stripe", manifest_rows)
        result["unrecognised"] = unrecognised
        st.counts.update(ledger_counts({k: result[k] for k in ("products", "prices", "unrecognised")}))
        st.message = f"format={src.format}" + ("; changes (objects named by Stripe events)" if changes else "")
        result["paths"] = {"stripe": path}
        result.update({k: st.counts[k] for k in ("rows_in", "landed", "quarantined")})
    return result


def _flagged(run: Run, lines: DataFrame, fmt: str, line_hash) -> DataFrame:
    """Every line parsed once: typed columns of both entities, land's reasons, the suites' reasons,
    ``_rh`` (hash of the line), ``_row`` (unique per line: picks one of identical versions)."""
    parsed = canonical.parse_stripe_lines(lines.withColumn(silver.RAW_HASH, line_hash), fmt, keep=(silver.RAW_HASH,))
    flagged = with_suite_reasons(parsed, {s.entity: suite_rules(run, s) for s in SPECS.values()},
                                 entity_col=canonical.ENTITY)
    return flagged.withColumn(ROW, F.monotonically_increasing_id())
