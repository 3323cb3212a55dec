"""Files as real producers write them land as written (issue #16 items 2 and 6): RFC 4180 CSV (quoted
commas, doubled quotes and line breaks, a UTF-8 BOM, CRLF) and Parquet timestamps in every unit
(ns, us, ms, INT96, with and without a time zone, pandas files with their index and metadata)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import Row

from stripe_recon import tables
from stripe_recon.cli import main

from .test_land_internal import PRICE_HEADER, PRODUCT_HEADER, land, quarantined, silver, write_csv

# In setup.py's dev extra; the Spark 3.5 compat venv (which runs only the tests marked compat) lacks them.
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

REPO = Path(__file__).resolve().parents[2]
CONF = str(REPO / "conf" / "local.yaml")
TS = dt.datetime(2026, 1, 2, 3, 4, 5, 123456)  # session time zone UTC (conf/local.yaml)


def recon_json(capsys, root: Path, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json", "--config", CONF, "--set", f"storage.root={root}",
                 "--set", "console.plain_progress_seconds=0"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def _prices(tmp_path: Path) -> str:
    return write_csv(tmp_path / "in" / "prices.csv", PRICE_HEADER, [["pr1", "p1", "usd", "1.00", *[None] * 5]])


RFC_4180 = (
    "\ufeff" + ",".join(PRODUCT_HEADER) + "\r\n"
    'p1,"Basic, monthly","Line one\r\nline two, ""quoted""",true,,,,\r\n'
    "p2,Plain,plain,false,,,,\r\n"
    'p3,Multi,"a\nb\nc",true,,,,\r\n'
)


def test_rfc_4180_csv_lands_one_row_per_record(spark, make_cfg, tmp_path):
    products = tmp_path / "in" / "products.csv"
    products.parent.mkdir(parents=True)
    products.write_bytes(RFC_4180.encode("utf-8"))
    run, out = land(spark, make_cfg, f"sources.internal.products={products}", f"sources.internal.prices={_prices(tmp_path)}")
    assert out["products"]["rows_in"] == 3 and out["products"]["quarantined"] == 0
    rows = [(r.product_id, r.name, r.description, r.active) for r in silver(run, tables.SILVER_INTERNAL_PRODUCTS)]
    assert rows == [("p1", "Basic, monthly", 'Line one\nline two, "quoted"', True), ("p2", "Plain", "plain", False),
                    ("p3", "Multi", "a\nb\nc", True)]


def test_malformed_csv_records_are_quarantined_and_counted_as_records(spark, make_cfg, tmp_path):
    products = tmp_path / "in" / "products.csv"
    products.parent.mkdir(parents=True)
    products.write_text(
        ",".join(PRODUCT_HEADER) + "\n"
        'p1,One,"two\nlines",true,,,,\n'
        "p2,Two,too,few\n"
        'p3,Three,"unterminated,true,,,,\n'
        "p4,Four,swallowed,true,,,,\n"
    )
    run, out = land(spark, make_cfg, f"sources.internal.products={products}", f"sources.internal.prices={_prices(tmp_path)}")
    # p3's open quote runs to the end of the file: p3 and p4 are one record, with too few fields
    assert out["products"] == {"rows_in": 3, "landed": 1, "quarantined": 2, "silver_rows": 1, "suite_quarantined": 0}
    # the line each record starts on: p1 spans lines 2-3, so p2 is on line 4 and p3 on line 5
    assert [r for r in quarantined(run) if r[0] == "product"] == [("product", "p2", ["malformed_row: line 4",
                                                                                      "wrong_type:active"]),
                                                                   ("product", "p3", ["malformed_row: line 5"])]


def test_a_malformed_json_line_is_quarantined_with_its_line_number(spark, make_cfg, tmp_path):
    products = tmp_path / "in" / "products.jsonl"
    products.parent.mkdir(parents=True)
    products.write_text('{"product_id": "p1", "name": "One"}\n'
                        '{"product_id": "p2", "name": \n'
                        '{"product_id": "p3", "name": "Three"}\n')
    run, out = land(spark, make_cfg, f"sources.internal.products={products}", f"sources.internal.prices={_prices(tmp_path)}")
    assert out["products"]["rows_in"] == 3 and out["products"]["quarantined"] == 1
    assert [r[2] for r in quarantined(run) if r[0] == "product"] == [["malformed_row: line 2"]]


def test_cli_lands_a_csv_with_a_quoted_line_break(capsys, spark, tmp_path):
    """Failed on main: the record was split into three malformed rows (rows_in 4 for 2 records)."""
    products = tmp_path / "in" / "products.csv"
    products.parent.mkdir(parents=True)
    products.write_bytes(RFC_4180.encode("utf-8"))
    code, out = recon_json(capsys, tmp_path / "root", "land", "internal", "--products", str(products),
                           "--prices", _prices(tmp_path))
    assert code == 0
    assert out["products"]["rows_in"] == 3 and out["products"]["quarantined"] == 0


def _ts_table(unit: str, tz: str | None) -> pa.Table:
    values = pa.array([TS, None], pa.timestamp("us", tz="UTC" if tz else None)).cast(pa.timestamp(unit, tz=tz))
    return pa.table({"product_id": ["p1", "p2"], "name": ["One", "Two"], "deleted_at": values, "updated_at": values})


PARQUET_CASES = {
    "ns": lambda p: pq.write_table(_ts_table("ns", None), p),
    "ns_utc": lambda p: pq.write_table(_ts_table("ns", "UTC"), p),
    "ns_paris": lambda p: pq.write_table(_ts_table("ns", "Europe/Paris"), p),
    "us": lambda p: pq.write_table(_ts_table("us", None), p, coerce_timestamps="us"),
    "us_utc": lambda p: pq.write_table(_ts_table("us", "UTC"), p, coerce_timestamps="us"),
    "ms": lambda p: pq.write_table(_ts_table("us", "UTC"), p, coerce_timestamps="ms", allow_truncated_timestamps=True),
    "int96": lambda p: pq.write_table(_ts_table("us", None), p, use_deprecated_int96_timestamps=True),
    "pandas": lambda p: pd.DataFrame({"product_id": ["p1", "p2"], "name": ["One", "Two"],
                                      "deleted_at": pd.to_datetime([TS, None]),
                                      "updated_at": pd.to_datetime([TS, None]).tz_localize("UTC")})
    .set_index("product_id").to_parquet(p),
}


@pytest.mark.parametrize("case", sorted(PARQUET_CASES))
def test_parquet_timestamps_in_any_unit_land_as_timestamps(spark, make_cfg, tmp_path, case):
    products = tmp_path / "in" / "products.parquet"
    products.parent.mkdir(parents=True)
    PARQUET_CASES[case](str(products))
    run, out = land(spark, make_cfg, f"sources.internal.products={products}", f"sources.internal.prices={_prices(tmp_path)}")
    assert out["products"]["quarantined"] == 0, quarantined(run)
    expected = TS.replace(microsecond=123000) if case == "ms" else TS
    got = [Row(product_id=r.product_id, deleted_at=r.deleted_at, updated_at=r.updated_at)
           for r in silver(run, tables.SILVER_INTERNAL_PRODUCTS)]
    assert got == [Row(product_id="p1", deleted_at=expected, updated_at=expected),
                   Row(product_id="p2", deleted_at=None, updated_at=None)]


def test_cli_lands_a_pandas_parquet_with_nanosecond_timestamps(capsys, spark, tmp_path):
    """Failed on main: PARQUET_TYPE_ILLEGAL ... TIMESTAMP(NANOS) as a JVM trace."""
    products = tmp_path / "in" / "products.parquet"
    products.parent.mkdir(parents=True)
    PARQUET_CASES["pandas"](str(products))
    code, out = recon_json(capsys, tmp_path / "root", "land", "internal", "--products", str(products),
                           "--prices", _prices(tmp_path))
    assert code == 0
    assert out["products"]["rows_in"] == 2 and out["products"]["quarantined"] == 0
