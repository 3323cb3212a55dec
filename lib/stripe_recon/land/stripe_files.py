"""Land a Stripe export (files) into bronze and silver Delta tables.

``sources.stripe.path`` is a file, a folder (read recursively) or a glob, local or any Hadoop URI
(s3a:// included). Files are read as text lines so that nothing is lost: a line that is not a JSON
object is quarantined as ``malformed_json`` with the line itself as the record. Each line is an
API object (products and prices may be mixed in one file) or an Airbyte raw record
(``_airbyte_data`` holds the object; ``is_deleted`` is honoured); ``sources.stripe.format``
auto-detects per line, or forces ``jsonl`` / ``airbyte``. Compressed files (.gz, .bz2) are read
transparently by Hadoop.

Bronze (``bronze.stripe_products`` / ``_prices``): ``id``, ``object``, ``raw`` (the object's JSON as
exported, unknown fields kept), ``is_deleted``, the Airbyte ids, lineage. Silver: typed per
tables.py, one row per Stripe id (the latest version, see canonical.latest_per_id).

Example::

    counts = land_stripe_files(Run.new(spark, cfg.with_overrides("sources.stripe.path=/exports/stripe")))
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import functions as F

from .. import canonical, quarantine, tables
from ..errors import InputError
from ..guard import refuse_empty_stripe
from ..ledger import Run
from .common import (
    CacheScope,
    EntitySpec,
    bronze_and_count,
    check_path,
    ledger_counts,
    lineage,
    publish,
    read_input,
    write_quarantine,
)

PRODUCTS = EntitySpec(
    entity="product", key="id", bronze=tables.BRONZE_STRIPE_PRODUCTS,
    silver=tables.SILVER_STRIPE_PRODUCTS, schema=tables.SILVER_STRIPE_PRODUCTS_SCHEMA,
    canonicalise=canonical.stripe_products, dedup=canonical.latest_per_id,
)
PRICES = EntitySpec(
    entity="price", key="id", bronze=tables.BRONZE_STRIPE_PRICES,
    silver=tables.SILVER_STRIPE_PRICES, schema=tables.SILVER_STRIPE_PRICES_SCHEMA,
    canonicalise=canonical.stripe_prices, dedup=canonical.latest_per_id,
)


def land_stripe_files(run: Run) -> dict[str, Any]:
    """Land the export at ``sources.stripe.path``; returns counts per entity and the path.

    Counts: ``products`` / ``prices`` (rows_in, landed, quarantined, silver_rows) and
    ``unrecognised`` (lines that are not a product or price object: rows_in = quarantined).
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
        lines = text.select("value", *lineage(run, "stripe", F.col("_metadata.file_path"))).filter(
            "trim(value) <> ''"
        )
        with CacheScope() as cache:
            parsed = canonical.parse_stripe_lines(lines, src.format)
            is_bad = F.size(quarantine.REASONS) > 0  # the line as it arrived is kept for rejected lines only
            parsed = cache.keep(parsed.select(*canonical.STRIPE_BRONZE_COLUMNS, quarantine.REASONS,
                                              F.when(is_bad, F.col(canonical.RECORD)).alias(canonical.RECORD)))
            ok, bad = quarantine.split(parsed)
            result: dict[str, Any] = {}
            flagged = {}
            specs = (("products", PRODUCTS), ("prices", PRICES))
            for plural, spec in specs:
                bronze = ok.filter(F.col("object") == spec.entity).select(*canonical.STRIPE_BRONZE_COLUMNS)
                result[plural], flagged[plural] = bronze_and_count(run, spec, bronze, cache)
            refuse_empty_stripe(result, path, src.allow_empty)  # before silver is touched
            frames = [publish(run, spec, flagged[plural], "stripe") for plural, spec in specs]
            frames.append(
                quarantine.to_quarantine_rows(
                    run.run_id, bad, stage="land", source="stripe", entity="unknown", key_col="id",
                    record_col=canonical.RECORD, source_file_col="_source_file",
                )
            )
            write_quarantine(run, "stripe", frames)
            n_bad = bad.count()
        result["unrecognised"] = {"rows_in": n_bad, "landed": 0, "quarantined": n_bad}
        st.counts.update(ledger_counts({k: result[k] for k in ("products", "prices", "unrecognised")}))
        st.message = f"format={src.format}"
        result["paths"] = {"stripe": path}
        result.update({k: st.counts[k] for k in ("rows_in", "landed", "quarantined")})
    return result
