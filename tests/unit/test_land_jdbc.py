"""Landing the internal side from a real PostgreSQL over JDBC (tables created with psql).

The server is the one scripts/test_services.sh prepares (localhost:5432, db recon_test, user
recon/recon); RECON_TEST_PG_HOST/PORT/DB/USER/PASSWORD point elsewhere. Skipped, with the reason,
only when no server answers.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
from decimal import Decimal

import pytest

from stripe_recon import tables
from stripe_recon.errors import InputError
from stripe_recon.land.internal import _read, land_internal
from stripe_recon.ledger import Run

PG = {
    "host": os.environ.get("RECON_TEST_PG_HOST", "localhost"),
    "port": os.environ.get("RECON_TEST_PG_PORT", "5432"),
    "db": os.environ.get("RECON_TEST_PG_DB", "recon_test"),
    "user": os.environ.get("RECON_TEST_PG_USER", "recon"),
    "password": os.environ.get("RECON_TEST_PG_PASSWORD", "recon"),
}
URL = f"jdbc:postgresql://{PG['host']}:{PG['port']}/{PG['db']}"


def psql(sql: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": PG["password"]}
    return subprocess.run(
        ["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", PG["db"], "-v", "ON_ERROR_STOP=1",
         "-qtAX", "-c", sql],
        env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def pg_tables():
    """Create products/prices tables with a unique prefix (other engineers share the database)."""
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed: run scripts/test_services.sh (installs PostgreSQL)")
    probe = psql("SELECT 1")
    if probe.returncode != 0:
        pytest.skip(f"PostgreSQL at {PG['host']}:{PG['port']}/{PG['db']} is unreachable: {probe.stderr.strip()}")
    prefix = f"land_{secrets.token_hex(4)}"
    ddl = f"""
    CREATE TABLE {prefix}_products (row_no serial, product_id text, name text, description text, active boolean,
        deleted_at timestamp, tax_code text, metadata jsonb, updated_at timestamp);
    INSERT INTO {prefix}_products (product_id, name, description, active, deleted_at, tax_code, metadata, updated_at)
    VALUES ('p1', 'Basic', 'Plan', true, NULL, 'txcd_1', '{{"color": "red"}}', '2026-01-02 03:04:05'),
           ('p2', 'Gone', NULL, true, '2026-01-01 00:00:00', NULL, NULL, NULL),
           ('p2', 'Gone again', NULL, true, NULL, NULL, NULL, NULL);
    CREATE TABLE {prefix}_prices (row_no serial, price_id text, product_id text, currency text,
        amount numeric(14,4), "interval" text, interval_count int, active boolean, nickname text, updated_at timestamp);
    INSERT INTO {prefix}_prices (price_id, product_id, currency, amount, "interval", interval_count, active, nickname)
    VALUES ('pr1', 'p1', 'usd', 19.99, 'month', 1, true, 'Monthly'),
           ('pr2', 'p1', 'jpy', 500, NULL, NULL, true, NULL),
           ('pr3', 'p1', 'kwd', 1.2300, 'year', 1, false, NULL),
           ('pr4', 'p1', 'usd', 1.2340, NULL, NULL, true, NULL),
           ('pr5', 'p1', 'xxx', 1.00, NULL, NULL, true, NULL);
    """
    created = psql(ddl)
    assert created.returncode == 0, created.stderr
    try:
        yield prefix
    finally:
        psql(f"DROP TABLE IF EXISTS {prefix}_products; DROP TABLE IF EXISTS {prefix}_prices")


def jdbc_cfg(make_cfg, prefix: str, *more: str):
    return make_cfg(
        "sources.internal.format=jdbc", f"sources.internal.jdbc.url={URL}", f"sources.internal.jdbc.user={PG['user']}",
        "sources.internal.jdbc.password_env=RECON_TEST_JDBC_PW",
        f"sources.internal.jdbc.products_table={prefix}_products",
        f"sources.internal.jdbc.prices_table={prefix}_prices", *more,
    )


def test_partitioned_jdbc_read_lands_silver_and_quarantine(spark, make_cfg, pg_tables, monkeypatch):
    monkeypatch.setenv("RECON_TEST_JDBC_PW", PG["password"])
    cfg = jdbc_cfg(make_cfg, pg_tables, "sources.internal.jdbc.partition_column=row_no",
                   "sources.internal.jdbc.lower_bound=1", "sources.internal.jdbc.upper_bound=6",
                   "sources.internal.jdbc.num_partitions=2")
    run = Run.new(spark, cfg)
    df, where = _read(run, cfg.sources.internal, "prices")
    assert df.rdd.getNumPartitions() == 2 and where == f"{URL} table {pg_tables}_prices"
    out = land_internal(run)
    prices = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRICES)
    got = sorted(tuple(r) for r in prices.select("price_id", "currency", "amount", "unit_amount", "interval",
                                                 "interval_count", "active", "nickname").collect())
    assert got == [
        ("pr1", "usd", Decimal("19.990000"), 1999, "month", 1, True, "Monthly"),
        ("pr2", "jpy", Decimal("500.000000"), 500, None, None, True, None),
        ("pr3", "kwd", Decimal("1.230000"), 1230, "year", 1, False, None),
    ]
    products = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS).collect()
    assert [(r.product_id, r.name, r.metadata, r.updated_at, r._source) for r in products] == [
        ("p1", "Basic", {"color": "red"}, dt.datetime(2026, 1, 2, 3, 4, 5), "internal:jdbc")]
    q = tables.read(spark, cfg, tables.GOLD_QUARANTINE).collect()
    assert sorted((r.entity, r.key, tuple(r.reasons)) for r in q) == [
        ("price", "pr4", ("amount_not_representable",)),
        ("price", "pr5", ("unknown_currency",)),
        ("product", "p2", ("duplicate_key",)),
        ("product", "p2", ("duplicate_key",)),
    ]
    assert out["products"] == {"rows_in": 3, "landed": 1, "quarantined": 2, "silver_rows": 1, "suite_quarantined": 0}
    assert out["prices"] == {"rows_in": 5, "landed": 3, "quarantined": 2, "silver_rows": 3, "suite_quarantined": 0}
    assert out["paths"]["products"] == f"{URL} table {pg_tables}_products"


def test_wrong_password_names_the_env_var_not_the_password(spark, make_cfg, pg_tables, monkeypatch):
    monkeypatch.setenv("RECON_TEST_JDBC_PW", "not-the-password-xyz")
    with pytest.raises(InputError, match="RECON_TEST_JDBC_PW") as err:
        land_internal(Run.new(spark, jdbc_cfg(make_cfg, pg_tables)))
    assert "not-the-password-xyz" not in str(err.value)


def test_missing_table_is_named(spark, make_cfg, pg_tables, monkeypatch):
    monkeypatch.setenv("RECON_TEST_JDBC_PW", PG["password"])
    cfg = jdbc_cfg(make_cfg, pg_tables, f"sources.internal.jdbc.prices_table={pg_tables}_nope")
    with pytest.raises(InputError, match=f"cannot read internal prices from .* table {pg_tables}_nope"):
        land_internal(Run.new(spark, cfg))
