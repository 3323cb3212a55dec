"""The internal input's format follows its path (land/formats.py); --format overrides; a file that does
not parse as its format is one InputError line naming the path and what was expected."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from stripe_recon import tables
from stripe_recon.errors import InputError
from stripe_recon.land.formats import Listing, format_of_name, local_listing, resolve_format

from .test_land_internal import EXPECTED_PRICES, EXPECTED_PRODUCTS, good_csv, land, silver


def _file(name: str, size: int = 10) -> Listing:
    return Listing(is_dir=False, files=((name, size),))


def _folder(*names: str, delta: bool = False) -> Listing:
    return Listing(is_dir=True, delta_log=delta, files=tuple((n, 10) for n in names))


@pytest.mark.parametrize("name, expected", [
    ("products.csv", "csv"), ("products.CSV", "csv"), ("products.csv.gz", "csv"), ("p.parquet", "parquet"),
    ("p.json", "json"), ("p.jsonl", "json"), ("p.jsonl.gz", "json"), ("p.json.gz", "json"), ("p.ndjson", "json"),
    ("part-00000-1b2c.snappy.parquet", "parquet"), ("part-00000-1b2c.c000.csv", "csv"),
    ("p.parquet.gz", None), ("p.txt", None), ("p", None), ("p.gz", None),
])
def test_format_of_a_file_name(name, expected):
    assert format_of_name(name) == expected


@pytest.mark.parametrize("path, override, listing, expected", [
    ("in/products.csv", "auto", _file("products.csv"), "csv"),
    ("in/products.jsonl.gz", "auto", _file("products.jsonl.gz"), "json"),
    ("in/products.txt", "csv", _file("products.txt"), "csv"),          # --format wins over the name
    ("in/products.csv", "parquet", _file("products.csv"), "parquet"),
    ("in/t", "auto", _folder("part-0.snappy.parquet", delta=True), "delta"),
    ("in/products.parquet", "auto", _folder("_SUCCESS", "part-0.snappy.parquet", "part-1.snappy.parquet"), "parquet"),
    ("in/products", "auto", _folder("_SUCCESS", ".part-0.csv.crc", "part-0.csv"), "csv"),
    ("in/p*.json", "auto", _folder("p1.json", "p2.json"), "json"),
])
def test_resolve_format(path, override, listing, expected):
    assert resolve_format(path, override, listing, "internal products") == expected


@pytest.mark.parametrize("path, listing, message", [
    ("in/products.txt", _file("products.txt"),
     "cannot tell the format of internal products path in/products.txt from its name: name it .csv, .parquet, "
     ".json or .jsonl (optionally .gz) or pass --format (sources.internal.format)"),
    ("in/products.parquet.gz", _file("products.parquet.gz"),
     "cannot tell the format of internal products path in/products.parquet.gz from its name"),
    ("in/empty", _folder("_SUCCESS"),
     "internal products path in/empty holds no data files (.csv, .parquet, .json, .jsonl, or a Delta _delta_log): "
     "point at the files, or pass --format"),
    ("in/mixed", _folder("a.csv", "b.parquet", "c.txt"),
     "internal products path in/mixed mixes file formats (csv, parquet): point at one of them, or pass --format"),
])
def test_unresolvable_paths_are_one_line_errors(path, listing, message):
    with pytest.raises(InputError) as exc:
        resolve_format(path, "auto", listing, "internal products")
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_local_listing_reads_the_file_system(tmp_path):
    (tmp_path / "t" / "_delta_log").mkdir(parents=True)
    (tmp_path / "t" / "part-0.parquet").write_bytes(b"x")
    (tmp_path / "f.csv").write_text("")
    assert local_listing(str(tmp_path / "t")) == Listing(is_dir=True, delta_log=True, files=(("part-0.parquet", 1),))
    assert local_listing(f"file://{tmp_path}/f.csv") == Listing(is_dir=False, files=(("f.csv", 0),))
    assert local_listing(str(tmp_path / "*.csv")) == Listing(is_dir=True, files=(("f.csv", 0),))
    assert local_listing("s3a://bucket/x.csv") is None
    with pytest.raises(InputError, match=f"^internal prices path {tmp_path}/nope.csv does not exist: check the path"):
        local_listing(str(tmp_path / "nope.csv"), "internal prices")


# -- through land_internal, with the default config (sources.internal.format: auto) ----------------

def _paths(products: str, prices: str) -> list[str]:
    return [f"sources.internal.products={products}", f"sources.internal.prices={prices}"]


def test_csv_lands_without_a_format(spark, make_cfg, tmp_path):
    assert make_cfg().sources.internal.format == "auto"
    products, prices = good_csv(tmp_path)
    run, out = land(spark, make_cfg, *_paths(products, prices))
    assert silver(run, tables.SILVER_INTERNAL_PRODUCTS) == EXPECTED_PRODUCTS
    assert silver(run, tables.SILVER_INTERNAL_PRICES) == EXPECTED_PRICES
    sources = tables.read(spark, run.cfg, tables.SILVER_INTERNAL_PRICES).select("_source").distinct().collect()
    assert [r._source for r in sources] == ["internal:csv"]


def _gzip(src: str, dest: Path) -> str:
    with open(src, "rb") as fh, gzip.open(dest, "wb") as out:
        shutil.copyfileobj(fh, out)
    return str(dest)


def test_gzipped_csv_and_json_lines_land_like_the_csv(spark, make_cfg, tmp_path):
    products, prices = good_csv(tmp_path)
    gz_products = _gzip(products, tmp_path / "products.csv.gz")
    # The same catalog as JSON lines: metadata as an object, amounts as JSON numbers (their digits are kept).
    json_prices = tmp_path / "prices.jsonl"
    json_prices.write_text("\n".join(json.dumps(r) for r in [
        {"price_id": "pr_usd", "product_id": "p1", "currency": "usd", "amount": 19.99, "interval": "month",
         "interval_count": 1, "active": True, "nickname": "Monthly", "updated_at": "2026-01-02 03:04:05"},
        {"price_id": "pr_jpy", "product_id": "p1", "currency": "JPY", "amount": 500},
        {"price_id": "pr_kwd", "product_id": "p2", "currency": "kwd", "amount": "1.230", "interval": "year",
         "interval_count": 2, "active": False, "nickname": "Yearly"},
        {"price_id": "pr_cheap", "product_id": "p2", "currency": "usd", "amount": 0.29, "active": True},
    ]) + "\n")
    gz_prices = _gzip(str(json_prices), tmp_path / "prices.jsonl.gz")
    run, out = land(spark, make_cfg, *_paths(gz_products, gz_prices))
    assert (out["products"]["quarantined"], out["prices"]["quarantined"]) == (0, 0)
    assert silver(run, tables.SILVER_INTERNAL_PRODUCTS) == EXPECTED_PRODUCTS
    assert silver(run, tables.SILVER_INTERNAL_PRICES) == EXPECTED_PRICES
    sources = tables.read(spark, run.cfg, tables.SILVER_INTERNAL_PRICES).select("_source").distinct().collect()
    assert [r._source for r in sources] == ["internal:json"]


def test_part_file_folders_and_delta_folders_land_without_a_format(spark, make_cfg, tmp_path):
    products, prices = good_csv(tmp_path)
    spark.read.options(header=True, escape='"').csv(products).write.parquet(str(tmp_path / "pq" / "products"))
    spark.read.options(header=True, escape='"').csv(prices).write.format("delta").save(str(tmp_path / "dl" / "prices"))
    run, _ = land(spark, make_cfg, *_paths(str(tmp_path / "pq" / "products"), str(tmp_path / "dl" / "prices")))
    assert silver(run, tables.SILVER_INTERNAL_PRODUCTS) == EXPECTED_PRODUCTS
    assert silver(run, tables.SILVER_INTERNAL_PRICES) == EXPECTED_PRICES
    sources = {r._source for r in tables.read(spark, run.cfg, tables.BRONZE_INTERNAL_PRODUCTS).collect()}
    assert sources == {"internal:parquet"}


def test_a_name_that_says_nothing_needs_a_format(spark, make_cfg, tmp_path):
    products, prices = good_csv(tmp_path)
    txt = tmp_path / "products.txt"
    shutil.copy(products, txt)
    with pytest.raises(InputError, match="cannot tell the format of internal products path .*products.txt"):
        land(spark, make_cfg, *_paths(str(txt), prices))
    # (with --format csv it lands: every test of test_land_internal.py passes sources.internal.format)


def test_a_file_that_is_not_its_format_is_one_line(spark, make_cfg, tmp_path):
    products, prices = good_csv(tmp_path)
    as_parquet = tmp_path / "products.parquet"
    shutil.copy(products, as_parquet)
    with pytest.raises(InputError) as exc:
        land(spark, make_cfg, *_paths(str(as_parquet), prices))
    assert str(exc.value).startswith(
        f"internal products path {as_parquet} does not parse as parquet: expected a Parquet file (")
    assert str(exc.value).endswith("); pass --format if the name misleads") and "\n" not in str(exc.value)

    spark.read.options(header=True).csv(products).coalesce(1).write.parquet(str(tmp_path / "pq"))
    parquet_file = next((tmp_path / "pq").glob("part-*.parquet"))
    as_csv = tmp_path / "binary.csv"
    shutil.copy(parquet_file, as_csv)
    with pytest.raises(InputError) as exc:
        land(spark, make_cfg, *_paths(str(as_csv), prices))
    assert str(exc.value) == (f"internal products path {as_csv} does not parse as csv: expected CSV text with a "
                              "header row; its first line is not a text header")

    as_json = tmp_path / "products.jsonl"
    shutil.copy(products, as_json)
    with pytest.raises(InputError) as exc:
        land(spark, make_cfg, *_paths(str(as_json), prices))
    assert str(exc.value) == (f"internal products path {as_json} does not parse as json: expected JSON lines "
                              "(one object per line); no line of it is a JSON object")


def test_an_empty_file_is_one_line(spark, make_cfg, tmp_path):
    products, prices = good_csv(tmp_path)
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as exc:
        land(spark, make_cfg, *_paths(str(empty), prices))
    assert str(exc.value) == f"internal products path {empty} is empty (0 bytes): expected a Parquet file"
