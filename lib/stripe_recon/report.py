"""The run report: JSON for machines, a self-contained HTML page for people.

Counts first (by kind, entity and attribute, all from ONE aggregation), then the run's stages from the
ledger (inputs, Delta versions read, timings), then samples per kind; ``details`` adds every
discrepancy. The HTML page has no external assets: inline CSS and an inline SVG bar chart, and a link
to the Great Expectations Data Docs when ``{storage.root}/runs/{run_id}/data_docs/index.html`` exists.

Example::

    print(render_report(spark, cfg, "latest", "json", details=True))
    path = render_report(spark, cfg, run_id, "html")   # {storage.root}/reports/{run_id}/report.html
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from typing import Any

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from . import tables
from .config import Config
from .detect import KINDS
from .errors import InputError

SAMPLES_PER_KIND = 5
DETAIL_COLS = ["entity", "key", "stripe_id", "kind", "attribute", "internal_value", "stripe_value", "owner", "action"]


def resolve_run_id(spark: SparkSession, cfg: Config, run_id: str = "latest") -> str:
    """``latest`` -> the run of the most recent successful detect stage in the ledger."""
    if run_id and run_id != "latest":
        return run_id
    if tables.exists(spark, cfg, tables.GOLD_RUNS):
        row = (
            tables.read(spark, cfg, tables.GOLD_RUNS)
            .where("stage = 'detect' AND status = 'ok'")
            .orderBy(F.col("finished_at").desc(), F.col("run_id").desc())
            .select("run_id")
            .first()
        )
        if row:
            return row[0]
    latest = tables.latest_run_id(spark, cfg, tables.GOLD_DISCREPANCIES)
    if latest is None:
        raise InputError(
            f"no detect run found under {cfg.storage.root}: run `recon detect` (or `recon run`) first, "
            "or pass --run-id of an existing run"
        )
    return latest


def _local_path(root: str) -> str | None:
    if root.startswith("file:"):
        return "/" + root[len("file:"):].lstrip("/")
    return None if "://" in root else root


def _exists(spark: SparkSession, path: str) -> bool:
    local = _local_path(path)
    if local is not None:
        return os.path.exists(local)
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(p)


def _write_text(spark: SparkSession, path: str, text: str) -> None:
    local = _local_path(path)
    if local is not None:
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    jvm = spark.sparkContext._jvm  # s3a:// and friends: through Hadoop's FileSystem
    p = jvm.org.apache.hadoop.fs.Path(path)
    out = p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).create(p, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def collect_report(spark: SparkSession, cfg: Config, run_id: str = "latest", details: bool = False) -> dict[str, Any]:
    """The report as a dict (what the JSON format prints)."""
    run_id = resolve_run_id(spark, cfg, run_id)
    cond = F.col("run_id") == F.lit(run_id)
    stages = []
    if tables.exists(spark, cfg, tables.GOLD_RUNS):
        for r in tables.read(spark, cfg, tables.GOLD_RUNS).where(cond).orderBy("started_at").collect():
            stages.append({
                "stage": r["stage"], "status": r["status"], "started_at": r["started_at"],
                "finished_at": r["finished_at"], "duration_s": r["duration_s"], "counts": dict(r["counts"] or {}),
                "versions_read": dict(r["versions_read"] or {}), "message": r["message"],
            })
    disc = tables.read_or_empty(spark, cfg, tables.GOLD_DISCREPANCIES, tables.DISCREPANCIES_SCHEMA).where(cond)
    agg = disc.groupBy("entity", "kind", "attribute", "action").count().collect()  # one aggregation
    if not agg and not any(s["stage"] == "detect" for s in stages):
        raise InputError(f"run {run_id!r} has no detect results: check the id with `recon report --run latest`")
    by_kind = {k: 0 for k in KINDS}
    by_entity: dict[str, dict[str, int]] = {}
    by_attribute: dict[str, int] = {}
    by_action: dict[str, int] = {}
    for r in agg:
        n = r["count"]
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0) + n
        by_entity.setdefault(r["entity"], {}).setdefault(r["kind"], 0)
        by_entity[r["entity"]][r["kind"]] += n
        by_action[r["action"]] = by_action.get(r["action"], 0) + n
        if r["kind"] == "field_mismatch":
            name = f"{r['entity']}.{r['attribute']}"
            by_attribute[name] = by_attribute.get(name, 0) + n
    w = Window.partitionBy("kind").orderBy("entity", "key", "attribute", "stripe_id")
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS if by_kind.get(k)}
    for r in (
        disc.withColumn("_n", F.row_number().over(w)).where(F.col("_n") <= SAMPLES_PER_KIND)
        .orderBy("kind", "_n").select(*DETAIL_COLS).collect()
    ):
        samples.setdefault(r["kind"], []).append(r.asDict())
    versions: dict[str, int] = {}
    for s in stages:
        versions.update(s["versions_read"])
    docs = f"{cfg.storage.root.rstrip('/')}/runs/{run_id}/data_docs/index.html"
    report: dict[str, Any] = {
        "run_id": run_id,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "storage_root": cfg.storage.root,
        "summary": {
            "discrepancies": sum(by_kind.values()),
            "by_kind": by_kind,
            "by_entity": by_entity,
            "by_attribute": dict(sorted(by_attribute.items())),
            "by_action": dict(sorted(by_action.items())),
        },
        "stages": stages,
        "versions_read": versions,
        "validation": {
            "stages": [s for s in stages if s["stage"].startswith("validate")],
            "data_docs": docs if _exists(spark, docs) else None,
        },
        "samples": samples,
    }
    if details:
        report["discrepancies"] = [
            r.asDict() for r in disc.orderBy("entity", "kind", "key", "attribute", "stripe_id").select(*DETAIL_COLS).toLocalIterator()
        ]
    return report


def render_report(spark: SparkSession, cfg: Config, run_id: str = "latest", fmt: str = "json", details: bool = False) -> str:
    """JSON text, or (``fmt="html"``) the path of the written report.html."""
    rep = collect_report(spark, cfg, run_id, details=details or False)
    if fmt == "json":
        return json.dumps(rep, indent=2, default=str)
    if fmt != "html":
        raise InputError(f"unknown report format {fmt!r}: use json or html")
    path = f"{cfg.storage.root.rstrip('/')}/reports/{rep['run_id']}/report.html"
    _write_text(spark, path, to_html(rep))
    return path


# -- HTML --------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.total{font-size:2em;font-weight:600}.muted{color:#777}code{background:#f6f6f6;padding:0 3px}
"""
COLORS = {"missing_in_stripe": "#d9534f", "missing_in_internal": "#f0ad4e", "field_mismatch": "#5bc0de",
          "duplicate_in_stripe": "#9b59b6", "price_product_mismatch": "#5cb85c"}


def _e(v: Any) -> str:
    return "<span class=muted>null</span>" if v is None else html.escape(str(v))


def _bar_chart(counts: dict[str, int]) -> str:
    items = list(counts.items())
    top = max([n for _, n in items] + [1])
    bar_h, label_w, width = 22, 190, 420
    rows = []
    for i, (kind, n) in enumerate(items):
        y = i * (bar_h + 6)
        w = 0 if n == 0 else max(2, round(width * n / top))
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="12">{html.escape(kind)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" fill="{COLORS.get(kind, "#888")}"/>'
            f'<text x="{label_w + w + 6}" y="{y + 15}" font-size="12">{n}</text>'
        )
    h = len(items) * (bar_h + 6)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 80}" height="{h}" role="img" '
            f'aria-label="discrepancies by kind">{"".join(rows)}</svg>')


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td class=n>{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def to_html(rep: dict[str, Any]) -> str:
    s = rep["summary"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>stripe-recon run {html.escape(rep['run_id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>stripe-recon run <code>{html.escape(rep['run_id'])}</code></h1>",
        f"<p class=muted>generated {html.escape(rep['generated_at'])} &middot; storage root {_e(rep['storage_root'])}</p>",
        f"<p><span class=total>{s['discrepancies']}</span> discrepancies</p>",
        "<h2>By kind</h2>", _bar_chart(s["by_kind"]),
        _table(["kind", *sorted(s["by_entity"]), "total"],
               [[k, *[s["by_entity"][e].get(k, 0) for e in sorted(s["by_entity"])], n] for k, n in s["by_kind"].items()],
               numeric=set(range(1, len(s["by_entity"]) + 2))),
        "<h2>Field mismatches by attribute</h2>",
        _table(["attribute", "rows"], [[a, n] for a, n in s["by_attribute"].items()], numeric={1})
        if s["by_attribute"] else "<p class=muted>none</p>",
        "<h2>By action</h2>", _table(["action", "rows"], [[a, n] for a, n in s["by_action"].items()], numeric={1}),
        "<h2>Samples per kind</h2>",
    ]
    for kind, rows in rep["samples"].items():
        parts.append(f"<h3>{html.escape(kind)}</h3>")
        parts.append(_table(["entity", "key", "stripe_id", "attribute", "internal", "stripe", "owner", "action"],
                            [[r["entity"], r["key"], r["stripe_id"], r["attribute"], r["internal_value"],
                              r["stripe_value"], r["owner"], r["action"]] for r in rows]))
    if not rep["samples"]:
        parts.append("<p class=muted>no discrepancies</p>")
    parts.append("<h2>Run inputs and stages</h2>")
    parts.append(_table(
        ["stage", "status", "started", "seconds", "counts", "Delta versions read", "message"],
        [[st["stage"], st["status"], st["started_at"], st["duration_s"],
          ", ".join(f"{k}={v}" for k, v in sorted(st["counts"].items())),
          ", ".join(f"{k}@v{v}" for k, v in sorted(st["versions_read"].items())), st["message"]] for st in rep["stages"]],
        numeric={3},
    ))
    parts.append("<h2>Validation</h2>")
    docs = rep["validation"]["data_docs"]
    if docs:
        href = docs if "://" in docs else "file://" + os.path.abspath(docs)
        parts.append(f"<p><a href='{html.escape(href, quote=True)}'>Great Expectations Data Docs</a></p>")
    else:
        parts.append("<p class=muted>no Data Docs for this run</p>")
    for st in rep["validation"]["stages"]:
        parts.append(f"<p>{_e(st['stage'])}: {_e(st['status'])} {_e(st['message'])}</p>")
    if "discrepancies" in rep:
        parts.append("<h2>All discrepancies</h2>")
        parts.append(_table(DETAIL_COLS, [[r[c] for c in DETAIL_COLS] for r in rep["discrepancies"]]))
    parts.append("</body></html>")
    return "\n".join(parts)
