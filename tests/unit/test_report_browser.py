"""The HTML report in a real browser (Debian's chromium, headless): the counts, the held plan with the
command that releases it, the before -> after rows and the chart are on the rendered page, its links
open the pages they name, and the screenshot shows the chart's colours."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from stripe_recon.detect import detect
from stripe_recon.errors import HeldError
from stripe_recon.ledger import Run
from stripe_recon.plan import plan
from stripe_recon.report import COLORS, write_html

from .silver_rows import iprice, iprod, sprice, sprod, write_silver

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
R1, R2 = "20260101T000000000Z-aaaaaa", "20260102T000000000Z-bbbbbb"
#: Seconds one headless page may take (a warm start takes 1-3 s here).
PAGE_SECONDS = 90


def _render(profile: Path, *args: str) -> tuple[int | None, str, str, list[str]]:
    """Run headless Chromium once: (exit code or None when it outlived PAGE_SECONDS, stdout, stderr, command).
    It runs in a process group of its own with its output in files (Chromium's helper processes hold a
    pipe open), and the whole group is killed at the end: a browser that hangs never hangs the suite."""
    out, err = profile.with_suffix(".out"), profile.with_suffix(".err")
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            code = proc.wait(timeout=PAGE_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)  # a process stuck in the kernel cannot be reaped: do not wait on it
    return code, out.read_text(), err.read_text()[-2000:], cmd


def chromium(tmp_path: Path, *args: str) -> str:
    code, out, err, cmd = _render(tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}", *args)
    assert code is not None, f"chromium did not finish in {PAGE_SECONDS} s: {' '.join(cmd)}: {err}"
    assert code == 0, err
    return out


@pytest.fixture(scope="module", autouse=True)
def _browser_starts(tmp_path_factory):
    """Skip, saying why, when this machine's Chromium cannot render a one-line data: page at all (before
    the Spark fixtures run); once it can, every page of the test must render."""
    code, out, err, _ = _render(tmp_path_factory.mktemp("chromium-probe") / "profile",
                                "--dump-dom", "data:text/html,<p id=probe>ok</p>")
    if code != 0 or 'id="probe"' not in out:
        pytest.skip(f"chromium cannot render a page here (exit {code}, None = still running after "
                    f"{PAGE_SECONDS} s): {err.strip().splitlines()[-1:] or '(no output)'}")


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("id"):
            self.hrefs[a["id"]] = a.get("href") or ""


def png_pixels(path: Path) -> set[tuple[int, int, int]]:
    """The RGB colours of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6) and body[12] == 0
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, prev, colours = zlib.decompress(idat), width * channels, bytearray(width * channels), set()
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        colours.update(tuple(line[i:i + 3]) for i in range(0, stride, channels))
        prev = line
    return colours


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


@pytest.fixture
def reports(spark, make_cfg):
    """Two detect runs; the second's plan is held by the guard; Data Docs for the second."""
    cfg = make_cfg("guard.max_change_ratio=0")
    write_silver(spark, cfg, [iprod("A", name="Tea"), iprod("B")], [sprod("prod_a", "A", name="Tea")],
                 [iprice("Q1", "A", unit_amount=1000)], [sprice("price_1", "Q1", "prod_a", unit_amount=1000)])
    detect(Run.new(spark, cfg, R1))
    first, _ = write_html(spark, cfg, R1)
    write_silver(
        spark, cfg,
        [iprod("A", name="<b>Tea</b>", metadata={"color": "red"}), iprod("B"), iprod("C")],
        [sprod("prod_a", "A", name="Tea"), sprod("prod_z", "Z")],
        [iprice("Q1", "A", unit_amount=1000)],
        [sprice("price_1", "Q1", "prod_a", unit_amount=1200)],
    )
    run = Run.new(spark, cfg, R2)
    detect(run)
    with pytest.raises(HeldError):
        plan(run)
    docs = Path(cfg.storage.root) / "runs" / R2 / "data_docs" / "index.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<!doctype html><html><head><title>Data Docs of the test run</title></head><body>ok</body></html>")
    second, rep = write_html(spark, cfg, R2)
    return Path(first), Path(second), rep


def test_report_renders_in_chromium_with_counts_chart_and_working_links(reports, tmp_path):
    first, second, rep = reports
    url = second.as_uri()
    dom = chromium(tmp_path, "--dump-dom", url)

    # counts
    assert '<span class="total" id="total-discrepancies">6</span>' in dom
    plan = rep["plan"]
    assert plan["status"] == "held" and plan["total"] == 4
    assert '<span class="total" id="total-corrections">4</span> corrections: 4 held (plan held)' in dom
    # the held plan, why, and what releases it
    assert f'<code id="release-command">recon push --approve {plan["plan_hash"]}</code>' in dom
    assert "change ratio" in dom and "max_change_ratio 0.00%" in dom
    # before -> after, escaped
    assert "name: Tea <span class=\"arrow\">-&gt;</span> &lt;b&gt;Tea&lt;/b&gt;" in dom
    assert "metadata.color: <span class=\"muted\">(none)</span> <span class=\"arrow\">-&gt;</span> red" in dom
    assert "unit_amount: 1200 <span class=\"arrow\">-&gt;</span> 1000" in dom
    # the chart: two runs, one bar segment per (run, kind) with discrepancies
    assert 'id="history-chart"' in dom and 'data-runs="2"' in dom
    segments = sorted((r["run_id"], k, n) for r in rep["history"] for k, n in r["by_kind"].items() if n)
    assert segments == [(R1, "missing_in_stripe", 1), (R2, "field_mismatch", 3), (R2, "missing_in_internal", 1),
                        (R2, "missing_in_stripe", 2)]
    for run_id, kind, n in segments:
        assert f'class="bar" data-run="{run_id}" data-kind="{kind}" data-count="{n}"' in dom

    # links: each opens the page it names
    links = Links()
    links.feed(dom)
    assert sorted(links.hrefs) == ["link-data-docs", "link-previous"]
    docs_dom = chromium(tmp_path, "--dump-dom", urljoin(url, links.hrefs["link-data-docs"]))
    assert "<title>Data Docs of the test run</title>" in docs_dom
    previous = urljoin(url, links.hrefs["link-previous"])
    assert urlparse(previous).path == str(first)
    assert f"<title>stripe-recon run {R1}</title>" in chromium(tmp_path, "--dump-dom", previous)

    # the screenshot shows the chart (its kind colours are on screen)
    shot = tmp_path / "report.png"
    chromium(tmp_path, "--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={shot}", url)
    colours = png_pixels(shot)
    for kind in ("missing_in_stripe", "field_mismatch", "missing_in_internal"):
        assert _rgb(COLORS[kind]) in colours, kind
