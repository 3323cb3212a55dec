"""The data path stays in the JVM: no Python UDFs and no collect of row data (design, Performance).

Two checks: a static AST scan of the data-path modules, and the physical plan of detect itself.
A call on an aggregate result (a handful of count rows) is allowed when its line says ``# aggregate``,
so that every exception is visible in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stripe_recon import tables
from stripe_recon.detect import discrepancies

from .silver_rows import iprice, iprod, sprice, sprod

LIB = Path(__file__).resolve().parents[2] / "lib" / "stripe_recon"
DATA_PATH = ["detect.py", "normalise.py", "canonical.py", "plan.py", "records.py", "silver.py", *(f"land/{p.name}" for p in sorted((LIB / "land").glob("*.py")))]
FORBIDDEN_CALLS = {"udf", "pandas_udf", "toPandas", "toLocalIterator", "collect", "mapInPandas", "applyInPandas",
                   "mapInArrow", "foreach", "foreachPartition"}
FORBIDDEN_ATTRS = {"rdd"}


def _violations(path: Path) -> list[str]:
    src = path.read_text()
    lines = src.splitlines()
    out = []
    for node in ast.walk(ast.parse(src)):
        name = None
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name not in FORBIDDEN_CALLS:
                name = None
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
            name = node.attr
        elif isinstance(node, ast.ImportFrom) and any(a.name in {"udf", "pandas_udf"} for a in node.names):
            name = "import udf"
        if name:
            line = lines[node.lineno - 1]
            if "# aggregate" in line:
                continue
            out.append(f"{path.relative_to(LIB)}:{node.lineno}: {name}: {line.strip()}")
    return out


@pytest.mark.parametrize("module", DATA_PATH)
def test_no_udf_or_row_collect_in_source(module):
    path = LIB / module
    if not path.exists():
        pytest.skip(f"{module} not written yet")
    assert _violations(path) == []


def test_scanner_catches_a_udf_and_a_collect(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("from pyspark.sql.functions import udf\nrows = df.collect()\nn = df.rdd.count()\nok = agg.collect()  # aggregate\n")
    monkeypatch.setattr(f"{__name__}.LIB", tmp_path)
    assert [v.split(":")[2].strip() for v in _violations(bad)] == ["import udf", "collect", "rdd"]


def test_detect_plan_has_no_python_evaluation(spark, cfg):
    frames = {
        tables.SILVER_INTERNAL_PRODUCTS: spark.createDataFrame([iprod("P1")], tables.SILVER_INTERNAL_PRODUCTS_SCHEMA),
        tables.SILVER_STRIPE_PRODUCTS: spark.createDataFrame([sprod("prod_1", "P1")], tables.SILVER_STRIPE_PRODUCTS_SCHEMA),
        tables.SILVER_INTERNAL_PRICES: spark.createDataFrame([iprice("Q", "P1")], tables.SILVER_INTERNAL_PRICES_SCHEMA),
        tables.SILVER_STRIPE_PRICES: spark.createDataFrame([sprice("q", "Q", "prod_1")], tables.SILVER_STRIPE_PRICES_SCHEMA),
    }
    df = discrepancies(spark, cfg, frames, "r1")
    plan = df._jdf.queryExecution().executedPlan().toString()
    for marker in ("BatchEvalPython", "ArrowEvalPython", "PythonUDF", "MapInPandas", "FlatMapGroupsInPandas"):
        assert marker not in plan
    assert "xxhash64" in plan.lower()
