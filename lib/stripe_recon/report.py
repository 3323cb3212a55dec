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
import posixpath
from typing import Any

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from . import ledger, tables, unknown
from .config import Config
from .console import describe
from .detect import KINDS
from .errors import InputError

SAMPLES_PER_KIND = 5
#: Corrections listed as "object: before -> after" rows (all of them are in gold.corrections).
PLAN_ROWS = 50
#: Unknown (quarantined) keys listed; the count covers all of them (gold.quarantine holds the records).
UNKNOWN_ROWS = 200
UNKNOWN_COLS = ["entity", "side", "key", "stripe_id", "reasons", "records"]
#: Runs shown in the "discrepancies per kind over the last runs" chart.
HISTORY_RUNS = 10
DETAIL_COLS = ["entity", "key", "stripe_id", "kind", "attribute", "internal_value", "stripe_value", "owner", "action"]
PLAN_COLS = ["seq", "entity", "key", "stripe_id", "operation", "status", "payload", "observed", "last_error"]


def resolve_run_id(spark: SparkSession, cfg: Config, run_id: str = "latest") -> str:
    """``latest`` -> the run of the most recent successful detect stage in the ledger."""
    if run_id and run_id != "latest":
        return run_id
    row = ledger.latest_ok(spark, cfg, "detect", ["run_id"])
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
    by_kind_action: dict[str, dict[str, int]] = {}
    for r in agg:
        row = by_kind_action.setdefault(r["kind"], {})
        row[r["action"]] = row.get(r["action"], 0) + r["count"]
    versions: dict[str, int] = {}
    for s in stages:
        versions.update(s["versions_read"])
    docs = f"{cfg.storage.root.rstrip('/')}/runs/{run_id}/data_docs/index.html"
    history = _history(spark, cfg, run_id)
    previous = next((h["run_id"] for h in history if h["run_id"] < run_id), None)
    previous_report = report_path(cfg, previous) if previous else None
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
            "by_kind_action": {k: dict(sorted(v.items())) for k, v in sorted(by_kind_action.items())},
        },
        "stages": stages,
        "versions_read": versions,
        "validation": {
            "stages": [s for s in stages if s["stage"].startswith("validate")],
            "data_docs": docs if _exists(spark, docs) else None,
        },
        "samples": samples,
        "unknown": _unknown(spark, cfg, stages),
        "plan": _plan(spark, cfg, run_id),
        "history": history,
        "previous_run": {"run_id": previous,
                         "report": previous_report if previous_report and _exists(spark, previous_report) else None},
    }
    if details:
        report["discrepancies"] = [
            r.asDict() for r in disc.orderBy("entity", "kind", "key", "attribute", "stripe_id").select(*DETAIL_COLS).toLocalIterator()
        ]
    return report


def _unknown(spark: SparkSession, cfg: Config, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The keys detect treated as unknown (quarantined by the runs that produced the silver versions
    it read, unknown.py): found again from those versions' commit metadata; the first
    :data:`UNKNOWN_ROWS` listed with their reasons (a bounded collect), all of them counted."""
    detects = [s for s in stages if s["stage"] == "detect"]
    read = detects[-1]["versions_read"] if detects else {}
    commits = {name: tables.commit_at(spark, cfg, name, v) for name, v in read.items() if name.startswith("silver.")}
    found = unknown.quarantined_keys(spark, cfg, commits)
    if found is None:
        return {"total": 0, "rows": []}
    keys = unknown.by_key(found)
    total = keys.count()  # an aggregate
    listed = keys.orderBy("entity", "side", "key", "stripe_id").limit(UNKNOWN_ROWS).select(*UNKNOWN_COLS).collect() if total else []
    return {"total": total, "rows": [{**r.asDict(), "reasons": list(r["reasons"] or [])} for r in listed]}


def _history(spark: SparkSession, cfg: Config, run_id: str) -> list[dict[str, Any]]:
    """Discrepancies per kind of the last :data:`HISTORY_RUNS` detect runs up to ``run_id``, oldest
    first, from the runs ledger (a handful of ledger rows, not row data)."""
    if not tables.exists(spark, cfg, tables.GOLD_RUNS):
        return []
    rows = (
        tables.read(spark, cfg, tables.GOLD_RUNS)
        .where((F.col("stage") == "detect") & (F.col("status") == "ok") & (F.col("run_id") <= run_id))
        .groupBy("run_id").agg(F.max_by("counts", "started_at").alias("counts"))  # its newest attempt
        .orderBy(F.col("run_id").desc()).limit(HISTORY_RUNS).collect()
    )
    return [{"run_id": r["run_id"], "by_kind": {k: int((r["counts"] or {}).get(k, 0)) for k in KINDS}}
            for r in reversed(rows)]


def _plan(spark: SparkSession, cfg: Config, run_id: str) -> dict[str, Any] | None:
    """The newest plan made in or from this run: its status, the guard's reasons, corrections by
    status, the first :data:`PLAN_ROWS` corrections as before -> after changes, and (held) the command
    that releases it."""
    if not tables.exists(spark, cfg, tables.GOLD_PLANS):
        return None
    row = (
        tables.read(spark, cfg, tables.GOLD_PLANS)
        .where((F.col("run_id") == run_id) | (F.col("source_run_id") == run_id))
        .orderBy(F.col("created_at").desc(), F.col("run_id").desc()).first()
    )
    if row is None:
        return None
    h = row["plan_hash"]
    corr = tables.read_or_empty(spark, cfg, tables.GOLD_CORRECTIONS, tables.CORRECTIONS_SCHEMA).where(F.col("plan_hash") == h)
    by_status = {r["status"]: int(r["count"]) for r in corr.groupBy("status").count().collect()}  # aggregate
    listed = corr.orderBy("seq", "entity", "key", "operation").limit(PLAN_ROWS).select(*PLAN_COLS).collect()
    rows = []
    for r in listed:
        payload = json.loads(r["payload"]) if r["payload"] else {}
        observed = json.loads(r["observed"]) if r["observed"] else None
        rows.append({"entity": r["entity"], "key": r["key"], "stripe_id": r["stripe_id"], "operation": r["operation"],
                     "status": r["status"], "last_error": r["last_error"],
                     "changes": [list(c) for c in changes(r["operation"], payload, observed)]})
    status = row["status"]
    return {
        "plan_hash": h, "run_id": row["run_id"], "status": status, "reasons": list(row["reasons"] or []),
        "counts": dict(row["counts"] or {}), "created_at": row["created_at"], "approved_at": row["approved_at"],
        "corrections": by_status, "total": sum(by_status.values()), "rows": rows,
        "release": (f"recon push --approve {h}" if status == "held" else None),
    }


#: Payload fields that identify or link rather than change what a person would see.
_NOT_CHANGES = {"id", "lookup_key", "product", "transfer_lookup_key", "archive", "default_price_of"}
#: Payload field -> the key of the same value in ``observed`` (prices keep recurring flat there).
_OBSERVED_AS = {"recurring.interval": "interval", "recurring.interval_count": "interval_count"}


def _flatten(value: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in value.items():
        if isinstance(v, dict) and k in ("metadata", "recurring"):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def changes(operation: str, payload: dict[str, Any], observed: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """What a correction changes in Stripe, as (field, before, after); ``""`` (clear, unset) is None.

    Creates have no before; a replace_price lists only the fields that differ from the old price.

    >>> changes("update_product", {"name": "New", "metadata": {"a": ""}}, {"name": "Old", "metadata": {"a": "1"}})
    [('name', 'Old', 'New'), ('metadata.a', '1', None)]
    """
    fields = payload.get("create", {}) if operation == "replace_price" else payload
    obs = observed or {}
    out = []
    for name, after in _flatten(fields):
        if name in _NOT_CHANGES:
            continue
        if operation.startswith("create"):
            before = None
        elif name.startswith("metadata."):
            before = (obs.get("metadata") or {}).get(name[len("metadata."):])
        else:
            before = obs.get(_OBSERVED_AS.get(name, name))
        after = None if after == "" else after
        before = None if before == "" else before
        if operation == "replace_price" and before == after:
            continue
        out.append((name, before, after))
    return out


def report_path(cfg: Config, run_id: str) -> str:
    return f"{cfg.storage.root.rstrip('/')}/reports/{run_id}/report.html"


def write_html(spark: SparkSession, cfg: Config, run_id: str = "latest", details: bool = False) -> tuple[str, dict[str, Any]]:
    """Write the HTML report; returns (its path, the report dict it shows)."""
    rep = collect_report(spark, cfg, run_id, details=details)
    path = report_path(cfg, rep["run_id"])
    _write_text(spark, path, to_html(rep, path))
    return path, rep


def render_report(spark: SparkSession, cfg: Config, run_id: str = "latest", fmt: str = "json", details: bool = False) -> str:
    """JSON text, or (``fmt="html"``) the path of the written report.html."""
    if fmt == "html":
        return write_html(spark, cfg, run_id, details=details)[0]
    if fmt != "json":
        raise InputError(f"unknown report format {fmt!r}: use json or html")
    return json.dumps(collect_report(spark, cfg, run_id, details=details or False), indent=2, default=str)


# -- HTML --------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.total{font-size:2em;font-weight:600}.muted{color:#777}code{background:#f6f6f6;padding:0 3px}
nav a{margin-right:1.2em}.held{border:2px solid #d9534f;background:#fdf2f2;padding:.6em 1em;margin:1em 0}
.cards{display:flex;gap:1.5em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.5em 1em}
.chg{white-space:pre-wrap}.arrow{color:#777}.legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
"""
COLORS = {"missing_in_stripe": "#d9534f", "missing_in_internal": "#f0ad4e", "field_mismatch": "#5bc0de",
          "duplicate_in_stripe": "#9b59b6", "price_product_mismatch": "#5cb85c"}


def _e(v: Any) -> str:
    return "<span class=muted>null</span>" if v is None else html.escape(str(v))


def _n(v: Any) -> str:
    return f"{int(v or 0):,}"


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


def _run_label(run_id: str) -> str:
    """``20260102T030405123Z-abc123`` -> ``01-02 03:04:05``; other ids as they are (shortened)."""
    d = run_id
    if len(d) >= 15 and d[8] == "T" and d[:8].isdigit():
        return f"{d[4:6]}-{d[6:8]} {d[9:11]}:{d[11:13]}:{d[13:15]}"
    return d[:14]


def _history_chart(history: list[dict[str, Any]], current: str) -> str:
    """Stacked bars: one per detect run (oldest left), one segment per kind; the current run in bold."""
    if not history:
        return "<p class=muted>no detect runs in the ledger</p>"
    top = max([sum(h["by_kind"].values()) for h in history] + [1])
    bar_w, gap, plot_h, left, base = 46, 18, 160, 40, 190
    parts = [f'<line x1="{left - 6}" y1="{base}" x2="{left + len(history) * (bar_w + gap)}" y2="{base}" stroke="#999"/>',
             f'<text x="{left - 10}" y="{base - plot_h + 4}" font-size="11" text-anchor="end">{_n(top)}</text>',
             f'<text x="{left - 10}" y="{base + 4}" font-size="11" text-anchor="end">0</text>']
    for i, h in enumerate(history):
        x = left + i * (bar_w + gap)
        y = base
        total = sum(h["by_kind"].values())
        for kind in KINDS:
            n = h["by_kind"].get(kind, 0)
            if not n:
                continue
            seg = max(1.0, plot_h * n / top)
            y -= seg
            parts.append(f'<rect class="bar" data-run="{html.escape(h["run_id"])}" data-kind="{kind}" data-count="{n}" '
                         f'x="{x}" y="{y:.1f}" width="{bar_w}" height="{seg:.1f}" fill="{COLORS.get(kind, "#888")}">'
                         f'<title>{html.escape(h["run_id"])}: {_n(n)} {kind}</title></rect>')
        weight = ' font-weight="bold"' if h["run_id"] == current else ""
        parts.append(f'<text x="{x + bar_w / 2}" y="{y - 4:.1f}" font-size="11" text-anchor="middle"{weight}>{_n(total)}</text>')
        parts.append(f'<text x="{x + bar_w / 2}" y="{base + 14}" font-size="10" text-anchor="middle"{weight}>'
                     f'{html.escape(_run_label(h["run_id"]).split(" ")[0])}</text>')
        parts.append(f'<text x="{x + bar_w / 2}" y="{base + 26}" font-size="10" text-anchor="middle"{weight}>'
                     f'{html.escape(_run_label(h["run_id"]).split(" ")[-1])}</text>')
    width = left + len(history) * (bar_w + gap) + 10
    legend = "".join(f"<span><i class=swatch style='background:{COLORS[k]}'></i>{k}</span>" for k in KINDS)
    return (f'<svg id="history-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{base + 34}" '
            f'role="img" aria-label="discrepancies per kind over the last {len(history)} runs" '
            f'data-runs="{len(history)}">{"".join(parts)}</svg><div class=legend>{legend}</div>')


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset(), raw: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)

    def cell(i: int, c: Any) -> str:
        body = c if i in raw else _e(c)
        return f"<td class=n>{body}</td>" if i in numeric else f"<td>{body}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _rel(from_path: str, to_path: str) -> str:
    """A relative link between two files under one storage root (works on disk and when the root is served)."""
    return posixpath.relpath(to_path, posixpath.dirname(from_path))


def _value(v: Any) -> str:
    if v is None:
        return "<span class=muted>(none)</span>"
    text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list, bool)) else str(v)
    return html.escape(text)


def _change_cell(changes_: list[list[Any]]) -> str:
    lines = [f"{html.escape(str(f))}: {_value(b)} <span class=arrow>-&gt;</span> {_value(a)}" for f, b, a in changes_]
    return "<div class=chg>" + "<br>".join(lines) + "</div>" if lines else "<span class=muted>-</span>"


def _object(r: dict[str, Any]) -> str:
    sid = f" ({html.escape(r['stripe_id'])})" if r.get("stripe_id") else ""
    return f"{html.escape(r['entity'])} <code>{html.escape(str(r['key']))}</code>{sid}"


def to_html(rep: dict[str, Any], path: str | None = None) -> str:
    """The page. ``path`` (where it is written) makes the Data Docs and previous-run links relative."""
    s = rep["summary"]
    here = path or report_path_from(rep)
    plan = rep.get("plan")
    docs = rep["validation"]["data_docs"]
    prev = rep.get("previous_run") or {}
    nav = []
    if docs:
        nav.append(f"<a id=link-data-docs href='{html.escape(_rel(here, docs), quote=True)}'>Great Expectations Data Docs</a>")
    if prev.get("report"):
        nav.append(f"<a id=link-previous href='{html.escape(_rel(here, prev['report']), quote=True)}'>"
                   f"previous run {html.escape(prev['run_id'])}</a>")
    elif prev.get("run_id"):
        nav.append(f"<span class=muted>previous run {html.escape(prev['run_id'])} (no report written)</span>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>stripe-recon run {html.escape(rep['run_id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>stripe-recon run <code>{html.escape(rep['run_id'])}</code></h1>",
        f"<p class=muted>generated {html.escape(rep['generated_at'])} &middot; storage root {_e(rep['storage_root'])}</p>",
        f"<nav>{''.join(nav) or '<span class=muted>no Data Docs and no previous run</span>'}</nav>",
        "<div class=cards>",
        f"<div class=card><span class=total id=total-discrepancies>{_n(s['discrepancies'])}</span> discrepancies</div>",
    ]
    if plan:
        c = plan["corrections"]
        statuses = ", ".join(f"{_n(c[k])} {html.escape(k)}" for k in sorted(c))
        parts.append(f"<div class=card><span class=total id=total-corrections>{_n(plan['total'])}</span> corrections"
                     + (f": {statuses}" if statuses else "") + f" (plan {html.escape(plan['status'])})</div>")
    parts.append("</div>")
    if plan and plan["status"] == "held":
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in plan["reasons"]) or "<li>see gold.plans</li>"
        parts.append(f"<div class=held id=held><b>Plan {html.escape(plan['plan_hash'][:12])}… is held: nothing was pushed.</b>"
                     f"<ul>{reasons}</ul>Review the corrections below, then release it with "
                     f"<code id=release-command>{html.escape(plan['release'])}</code> (or <code>recon run --approve "
                     f"{html.escape(plan['plan_hash'])}</code>).</div>")
    parts += [
        "<h2>Discrepancies per kind over the last runs</h2>", _history_chart(rep.get("history") or [], rep["run_id"]),
        "<h2>By kind</h2>", _bar_chart(s["by_kind"]),
        _table(["kind", *sorted(s["by_entity"]), "total"],
               [[k, *[s["by_entity"][e].get(k, 0) for e in sorted(s["by_entity"])], n] for k, n in s["by_kind"].items()],
               numeric=set(range(1, len(s["by_entity"]) + 2))),
    ]
    actions = sorted({a for row in s.get("by_kind_action", {}).values() for a in row})
    if actions:
        parts += ["<h2>By kind and action</h2>", _table(
            ["kind", *actions, "total"],
            [[k, *[row.get(a, 0) for a in actions], sum(row.values())] for k, row in s["by_kind_action"].items()],
            numeric=set(range(1, len(actions) + 2)))]
    parts += [
        "<h2>Field mismatches by attribute</h2>",
        _table(["attribute", "rows"], [[a, n] for a, n in s["by_attribute"].items()], numeric={1})
        if s["by_attribute"] else "<p class=muted>none</p>",
    ]
    parts.append("<h2>Correction plan: what changes in Stripe</h2>")
    if plan and plan["rows"]:
        shown = len(plan["rows"])
        more = f" (the first {shown} of {_n(plan['total'])}; all in gold.corrections)" if plan["total"] > shown else ""
        parts.append(f"<p>plan <code>{html.escape(plan['plan_hash'])}</code>, status {html.escape(plan['status'])}{more}</p>")
        parts.append(_table(["object", "operation", "status", "before -> after"],
                            [[_object(r), html.escape(r["operation"]), html.escape(r["status"] or "")
                              + (f"<br><span class=muted>{html.escape(r['last_error'])}</span>" if r.get("last_error") else ""),
                              _change_cell(r["changes"])] for r in plan["rows"]], raw={0, 1, 2, 3}))
    else:
        parts.append("<p class=muted>no corrections planned for this run</p>")
    parts.append(_unknown_html(rep.get("unknown") or {"total": 0, "rows": []}))
    parts.append("<h2>Samples per kind</h2>")
    for kind, rows in rep["samples"].items():
        parts.append(f"<h3>{html.escape(kind)}</h3>")
        parts.append(_table(["entity", "key", "stripe_id", "attribute", "internal", "stripe", "owner", "action"],
                            [[r["entity"], r["key"], r["stripe_id"], r["attribute"], r["internal_value"],
                              r["stripe_value"], r["owner"], r["action"]] for r in rows]))
    if not rep["samples"]:
        parts.append("<p class=muted>no discrepancies</p>")
    parts.append("<h2>Run inputs and stages</h2>")
    parts.append(_table(
        ["stage", "status", "started", "seconds", "what it did", "Delta versions read", "message"],
        [[st["stage"], st["status"], st["started_at"], st["duration_s"],
          describe(st["stage"], st["counts"], st["message"] or ""),
          ", ".join(f"{k}@v{v}" for k, v in sorted(st["versions_read"].items())), st["message"]] for st in rep["stages"]],
        numeric={3},
    ))
    parts.append("<h2>Validation</h2>")
    if docs:
        parts.append(f"<p><a href='{html.escape(_rel(here, docs), quote=True)}'>Great Expectations Data Docs</a></p>")
    else:
        parts.append("<p class=muted>no Data Docs for this run</p>")
    for st in rep["validation"]["stages"]:
        parts.append(f"<p>{_e(st['stage'])}: {_e(st['status'])}, {_e(describe(st['stage'], st['counts'], st['message'] or ''))}</p>")
    if "discrepancies" in rep:
        parts.append("<h2>All discrepancies</h2>")
        parts.append(_table(DETAIL_COLS, [[r[c] for c in DETAIL_COLS] for r in rep["discrepancies"]]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _unknown_html(unk: dict[str, Any]) -> str:
    """The unknown keys: quarantined, so neither compared nor corrected (on either side) this run."""
    head = ("<h2 id=unknown-keys>Unknown keys: quarantined, not compared</h2>"
            "<p class=muted>A key rejected at landing is not treated as absent: no discrepancy and no "
            "correction for it on either side (nor for a price whose product is rejected) until its input "
            "is fixed. The records are in gold.quarantine.</p>")
    if not unk["total"]:
        return head + "<p class=muted>none</p>"
    shown = len(unk["rows"])
    more = f"<p>the first {shown} of {_n(unk['total'])}</p>" if unk["total"] > shown else ""
    return head + more + _table(["entity", "side", "key", "stripe_id", "reasons", "records"],
                                [[r["entity"], r["side"], r["key"], r["stripe_id"], ", ".join(r["reasons"]),
                                  r["records"]] for r in unk["rows"]], numeric={5})


def report_path_from(rep: dict[str, Any]) -> str:
    return f"{str(rep['storage_root']).rstrip('/')}/reports/{rep['run_id']}/report.html"
