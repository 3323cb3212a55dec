"""The chaos lane (`make test-chaos`): real processes against the emulator with faults on.

A generated catalog is landed and planned once (``recon run --dry-run``), then pushed twice from
copies of the same storage root: once cleanly to a fault-free emulator (the reference), and once
to an emulator injecting 5xx errors, 429s and lost responses (``recon stripe-emulator --faults ...
--fault-seed N``), where the push is

1. SIGKILLed at two seeded points and resumed (each resume takes over the dead holder's lease and
   claims at once);
2. run twice at once with the lease broken in between: the second push takes the lease but none
   of the corrections the first one claimed (it sends nothing), then the first is SIGKILLed;
3. started together with `recon land internal` and `recon report`: exactly one writer runs, the
   other exits 1 with the one lease line, the reader does not wait;
4. resumed to the end, then replayed: the replay sends nothing.

After each phase the emulator's objects are checked one by one (through the API): no second product
per internal id, no lookup_key on two prices; at the end every correction's target values hold and
the whole account equals the reference's, object by object. The figures are printed.

A second test races three real processes for one lease (three rounds, fresh roots): exactly one
wins each round, and the Delta conflict the losers hit is named.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.chaos
REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CHAOS_SEED", "16"))
PRODUCTS = int(os.environ.get("CHAOS_PRODUCTS", "200"))
FAULTS = "error_5xx=0.08,rate_limit=0.05,lost_response=0.04"
KEY = "sk_test_chaos"
ENV = {**os.environ, "STRIPE_API_KEY": KEY, "GX_ANALYTICS_ENABLED": "false", "PYSPARK_PYTHON": sys.executable}
LEASE_LINE = "recon: storage root "


# -- processes --------------------------------------------------------------------------------

def recon_cmd(root: Path, api: str | None, *args: str, rate: float = 20) -> list[str]:
    sets = {"storage.root": str(root), "spark.ivy_dir": str(REPO / ".cache" / "ivy"), "spark.driver_memory": "1g",
            "spark.shuffle_partitions": "2", "stripe.rate_limit_per_second": str(rate), "stripe.threads": "4",
            "stripe.max_attempts": "12", "stripe.status_chunk_size": "20",
            "guard.max_change_ratio": "1", "guard.max_archive_ratio": "1"}
    if api:
        sets["stripe.api_base"] = api
    cmd = [sys.executable, "-m", "stripe_recon.cli", *args, "--json", "--config", str(REPO / "conf" / "local.yaml")]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=log.open("w"),
                            start_new_session=True, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, dict | None]:
    out, _ = proc.communicate(timeout=timeout)
    try:
        return proc.returncode, json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        return proc.returncode, None


def run(root: Path, api: str | None, *args: str, log: Path, rate: float = 20) -> tuple[int, dict | None]:
    return finish(start(recon_cmd(root, api, *args, rate=rate), log))


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def recon_lines(log: Path) -> list[str]:
    """The lines the recon command itself printed on stderr (not Ivy's or Spark's)."""
    return [ln for ln in log.read_text().splitlines() if ln.startswith("recon: ")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the emulator over HTTP -------------------------------------------------------------------

class Emulator:
    def __init__(self, seed_from: Path, log: Path, faults: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "stripe_recon.cli", "stripe-emulator", "--port", str(self.port),
               "--seed-from", str(seed_from)]
        if faults:
            cmd += ["--faults", faults, "--fault-seed", str(SEED)]
        self.proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        for _ in range(200):
            try:
                self.get("/_emulator/state")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"emulator did not start: {log.read_text()}")
        self.seq = 0

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: dict) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def journal(self, since: int = 0) -> list[dict]:
        return self.get(f"/_emulator/journal?since={since}")["entries"]

    def writes_since(self, seq: int) -> int:
        return sum(1 for e in self.journal(seq) if e["method"] == "POST" and e["applied"])

    def objects(self) -> dict[str, list[dict]]:
        """Every product and price, read through the API with the faults paused."""
        saved = self.post("/_emulator/faults", {})
        self.post("/_emulator/faults", {"rates": {}})
        try:
            out: dict[str, list[dict]] = {"product": [], "price": []}
            for kind, query in (("product", ""), ("price", "&active=true"), ("price", "&active=false")):
                after = ""
                while True:
                    page = self.get(f"/v1/{kind}s?limit=100{query}{after}")
                    out[kind] += page["data"]
                    if not page["has_more"]:
                        break
                    after = f"&starting_after={page['data'][-1]['id']}"
            return out
        finally:
            self.post("/_emulator/faults", {"rates": saved.get("rates", {})})

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


# -- what the account must look like ----------------------------------------------------------

def assert_no_duplicates(objs: dict[str, list[dict]], seeded: collections.Counter) -> dict[str, int]:
    """No internal id gained a second product; no lookup_key is on two prices."""
    per_id = collections.Counter((p.get("metadata") or {}).get("internal_id") for p in objs["product"])
    dup_products = {k: n for k, n in per_id.items() if k is not None and n > max(1, seeded[k])}
    per_key = collections.Counter(p["lookup_key"] for p in objs["price"] if p.get("lookup_key"))
    dup_keys = {k: n for k, n in per_key.items() if n > 1}
    assert dup_products == {} and dup_keys == {}, (dup_products, dup_keys)
    ids = [o["id"] for kind in objs for o in objs[kind]]
    assert len(ids) == len(set(ids))
    return {"duplicate_products": len(dup_products), "duplicate_lookup_keys": len(dup_keys)}


def canonical(objs: dict[str, list[dict]], seeded_ids: set[str]) -> dict[str, dict]:
    """The account as comparable values: products by id, seeded prices by id, created ones by lookup_key."""
    prices = {p["id"]: p for p in objs["price"]}

    def price_ref(pid: str | None) -> str | None:
        if pid is None or pid in seeded_ids:
            return pid
        return "new:" + str(prices[pid].get("lookup_key")) if pid in prices else "missing:" + pid

    out: dict[str, dict] = {}
    for p in objs["product"]:
        out["product:" + p["id"]] = {k: p.get(k) for k in ("name", "description", "active", "metadata", "tax_code")} | {
            "default_price": price_ref(p.get("default_price"))}
    for p in objs["price"]:
        rec = p.get("recurring") or {}
        out["price:" + str(price_ref(p["id"]))] = {
            "product": p.get("product"), "currency": p.get("currency"), "unit_amount": p.get("unit_amount"),
            "interval": rec.get("interval"), "interval_count": rec.get("interval_count"), "active": p.get("active"),
            "nickname": p.get("nickname"), "lookup_key": p.get("lookup_key"), "metadata": p.get("metadata")}
    return out


def assert_corrections_hold(objs: dict[str, list[dict]], corrections: list[dict]) -> int:
    """Every correction's target (internal-owned) values are what the account holds now."""
    products = {p["id"]: p for p in objs["product"]}
    active_by_key = {p["lookup_key"]: p for p in objs["price"] if p.get("lookup_key") and p.get("active")}
    prices = {p["id"]: p for p in objs["price"]}
    wrong = []

    def same(have: Any, want: Any) -> bool:
        """"" in a payload clears (Stripe then holds null); anything else must be equal."""
        return have in (None, "") if want in (None, "") else have == want

    def holds(obj: dict | None, want: dict) -> bool:
        if obj is None:
            return False
        for k, v in want.items():
            if k == "metadata":
                have = obj.get("metadata") or {}
                if not all(same(have.get(mk), mv) for mk, mv in (v or {}).items()):
                    return False
            elif k == "recurring":
                rec = obj.get("recurring") or {}
                if not all(same(rec.get(rk), rv) for rk, rv in (v or {}).items()):
                    return False
            elif not same(obj.get(k), v):
                return False
        return True

    for c in corrections:
        payload = json.loads(c["payload"])
        op = c["operation"]
        if op == "create_product":
            ok = holds(products.get(payload["id"]), {k: v for k, v in payload.items() if k != "id"})
        elif op in ("update_product", "archive_product"):
            ok = holds(products.get(c["stripe_id"]), payload)
        elif op == "create_price":
            ok = holds(active_by_key.get(payload["lookup_key"]), {k: v for k, v in payload.items() if k != "lookup_key"})
        elif op == "replace_price":
            create = {k: v for k, v in payload["create"].items() if k not in ("lookup_key", "transfer_lookup_key")}
            ok = holds(active_by_key.get(payload["create"]["lookup_key"]), create) and \
                prices.get(payload["archive"], {}).get("active") is False
        else:  # update_price, archive_price
            ok = holds(prices.get(c["stripe_id"]), payload)
        if not ok:
            wrong.append((op, c["key"]))
    assert wrong == [], wrong[:20]
    return len(corrections)


def read_delta(path: Path) -> list[dict]:
    """The rows of a Delta table, read without Spark (the test process has no JVM): replay the commit
    JSON files of ``_delta_log`` (all kept; the tables here use no deletion vectors), read the live
    Parquet files with pyarrow."""
    import pyarrow.parquet as pq

    live: set[str] = set()
    for commit in sorted((path / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live.add(urllib.parse.unquote(action["add"]["path"]))
            elif "remove" in action:
                live.discard(urllib.parse.unquote(action["remove"]["path"]))
    return [row for f in sorted(live) for row in pq.read_table(path / f).to_pylist()]


def kill_after(emu: Emulator, seq: int, writes: int, proc: subprocess.Popen, log: Path) -> None:
    """SIGKILL ``proc`` once the emulator has applied ``writes`` writes since journal entry ``seq``."""
    wait_for(lambda: emu.writes_since(seq) >= writes or proc.poll() is not None, f"{writes} writes")
    assert proc.poll() is None, log.read_text()[-3000:]
    kill(proc)


def wait_for(cond, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# -- the lane ---------------------------------------------------------------------------------

def test_chaos_kills_concurrency_and_replay_leave_the_account_right(tmp_path):
    t_start = time.monotonic()
    rng = random.Random(SEED)
    logs = tmp_path / "logs"
    logs.mkdir()
    cat, root, ref_root = tmp_path / "catalog", tmp_path / "root", tmp_path / "ref"
    code, gen = run(root, None, "generate", "--out", str(cat), "--products", str(PRODUCTS), "--seed", str(SEED),
                    "--rate", "0.03", log=logs / "generate.log")
    assert code == 0, (logs / "generate.log").read_text()[-3000:]
    seed_objs = [json.loads(ln) for f in sorted((cat / "stripe").rglob("part-*")) for ln in f.read_text().splitlines()
                 if ln.strip()]
    assert len(seed_objs) > PRODUCTS
    seeded = collections.Counter((o.get("metadata") or {}).get("internal_id") for o in seed_objs
                                 if o.get("object") == "product")
    seeded_ids = {o["id"] for o in seed_objs}

    emu = Emulator(cat / "stripe", logs / "emulator.log", faults=FAULTS)
    ref = Emulator(cat / "stripe", logs / "emulator-ref.log")
    figures: dict[str, Any] = {"seed": SEED, "products": PRODUCTS, "faults": FAULTS, "kills": 0}
    try:
        internal = ["--products", str(cat / "internal" / "products.parquet"),
                    "--prices", str(cat / "internal" / "prices.parquet")]
        # (the validation gates are left out: their own tests cover them, and this lane is about pushing)
        code, summary = run(root, emu.url, "run", "--dry-run", "--set", "sources.stripe.mode=api",
                            "--set", "validation.enabled=false",
                            "--set", f"sources.internal.products={cat / 'internal' / 'products.parquet'}",
                            "--set", f"sources.internal.prices={cat / 'internal' / 'prices.parquet'}",
                            log=logs / "run-dry.log")
        assert code == 0, (logs / "run-dry.log").read_text()[-3000:]
        n = summary["stages"]["plan"]["corrections"]
        assert n > 40, summary["stages"]["plan"]
        figures["corrections"] = n
        shutil.copytree(root, ref_root)

        # the reference: the same plan pushed once, no faults, no kills (beside phase 1: other root, other account)
        ref_push = start(recon_cmd(ref_root, ref.url, "push"), logs / "push-ref.log")

        seq0 = emu.journal()[-1]["seq"]
        kill_at = [rng.randint(max(2, n // 10), max(3, n // 4))]
        kill_at.append(rng.randint(kill_at[0] + 3, max(kill_at[0] + 4, n // 2)))

        # 1. SIGKILL the push at two seeded points (cumulative writes), each time resuming it
        for i, at in enumerate(kill_at, 1):
            kill_after(emu, seq0, at, start(recon_cmd(root, emu.url, "push"), logs / f"push-kill{i}.log"),
                       logs / f"push-kill{i}.log")
            figures["kills"] += 1
            assert_no_duplicates(emu.objects(), seeded)
        code, ref_summary = finish(ref_push)
        assert code == 0 and ref_summary["failed"] == 0, (logs / "push-ref.log").read_text()[-3000:]
        ref_objs = ref.objects()
        assert_no_duplicates(ref_objs, seeded)

        # 2. two pushes at once with the lease broken between them, then the first one SIGKILLed
        seq_a = emu.journal()[-1]["seq"]
        slow = start(recon_cmd(root, emu.url, "push", rate=1), logs / "push-a.log")
        wait_for(lambda: emu.writes_since(seq_a) >= 1 or slow.poll() is not None, "push A's first write")
        assert slow.poll() is None, (logs / "push-a.log").read_text()[-3000:]
        code, broken = run(root, None, "lease", "break", log=logs / "lease-break.log")
        assert code == 0 and broken["broken"]["command"] == "push", broken
        code, second = run(root, emu.url, "push", log=logs / "push-b.log")
        assert code == 0, (logs / "push-b.log").read_text()[-3000:]
        assert slow.poll() is None, "push A ended before push B claimed: slow it down (rate)"
        assert second["claimed_elsewhere"] > 0 and second["applied"] == 0 and second["found_applied"] == 0, second
        figures["claimed_elsewhere_by_b"] = second["claimed_elsewhere"]
        target = emu.writes_since(seq0) + rng.randint(1, 4)
        wait_for(lambda: emu.writes_since(seq0) >= target, "the second kill point")
        kill(slow)
        figures["kills"] += 1
        assert_no_duplicates(emu.objects(), seeded)

        # 3. a writer and a reader start together with a push: one writer runs, one exits 1, report never waits
        procs = {name: start(recon_cmd(root, emu.url, *args, rate=5), logs / f"{name}.log") for name, args in (
            ("push-c", ("push",)), ("land-c", ("land", "internal", *internal)),
            ("report-c", ("report", "--format", "json")))}  # push at 5/s: it outlasts the others' start
        done = {name: finish(p) for name, p in procs.items()}
        assert done["report-c"][0] == 0, (logs / "report-c.log").read_text()[-3000:]
        codes = sorted((done[name][0], name) for name in ("push-c", "land-c"))
        assert [c for c, _ in codes] == [0, 1], codes
        loser = codes[1][1]
        lines = recon_lines(logs / f"{loser}.log")
        assert len(lines) == 1 and lines[0].startswith(LEASE_LINE) and "is in use by run" in lines[0], lines
        assert "`recon lease break`" in lines[0] and "last heartbeat" in lines[0]
        figures["concurrent_writer_refused"] = loser
        resumed = done["push-c"][1] if loser != "push-c" else None
        assert_no_duplicates(emu.objects(), seeded)

        # 4. resume to the end, then replay
        code, final = run(root, emu.url, "push", log=logs / "push-final.log")
        assert code == 0 and final["failed"] == 0 and final["stale"] == 0, final
        resumed = resumed or final
        figures["resumed_push"] = {k: resumed[k] for k in ("total", "applied", "already_applied", "found_applied")}
        replay_seq = emu.journal()[-1]["seq"]
        code, replay = run(root, emu.url, "push", log=logs / "push-replay.log")
        assert code == 0 and replay["total"] == 0 and replay["applied"] == 0, replay
        assert [e for e in emu.journal(replay_seq) if e["method"] == "POST"] == []
        figures["replay_writes"] = 0

        corrections = read_delta(root / "tables" / "gold" / "corrections")
        assert collections.Counter(c["status"] for c in corrections) == collections.Counter(
            {"applied": len(corrections)}), collections.Counter(c["status"] for c in corrections)
        objs = emu.objects()
        figures.update(assert_no_duplicates(objs, seeded))
        figures["corrections_verified"] = assert_corrections_hold(objs, corrections)
        assert canonical(objs, seeded_ids) == canonical(ref_objs, seeded_ids)
        figures["objects_compared"] = len(canonical(objs, seeded_ids))
        journal = emu.journal()
        figures["faults_injected"] = dict(collections.Counter(e["fault"] for e in journal if e.get("fault")))
        figures["requests"] = len(journal)
        writes = [e for e in journal if e["method"] == "POST" and e["applied"]]
        per_key = collections.Counter(e["idempotency_key"] for e in writes)
        assert max(per_key.values()) == 1, [k for k, v in per_key.items() if v > 1]
        figures["writes_applied"] = len(writes)
    finally:
        figures["seconds"] = round(time.monotonic() - t_start, 1)
        print("\nCHAOS FIGURES " + json.dumps(figures, sort_keys=True))  # also when a check failed: where it got to
        emu.stop()
        ref.stop()


def test_one_of_three_processes_takes_the_lease_and_the_losers_conflict(tmp_path):
    """Three real processes race for one lease, three rounds (fresh roots: the table is created in the race).
    At no moment do two hold it: each round has a winner, and a second winner only ever took the lease after
    the first released it (a taker slowed down past the holder's release, on a loaded machine, rightly gets
    the free lease). A loser is refused naming a winner; one whose conditional write overlapped the
    winner's names the Delta conflict it lost (ConcurrentAppendException: the winner rewrote the one file its
    UPDATE read)."""
    roots = [str(tmp_path / f"root{i}") for i in range(3)]
    sync = tmp_path / "sync"
    sync.mkdir()
    logs = {name: tmp_path / f"taker-{name}.log" for name in ("a", "b", "c")}
    procs = [subprocess.Popen([sys.executable, str(REPO / "tests" / "chaos" / "lease_taker.py"), name, str(sync), *roots],
                              env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=logs[name].open("w"), text=True)
             for name in logs]
    # the race starts when all three JVMs are warm (each writes sync/ready-NAME), not after a guessed delay
    wait_for(lambda: all((sync / f"ready-{name}").exists() for name in logs) or any(p.poll() is not None for p in procs),
             "three warm lease takers", timeout=600)
    for name, p in zip(logs, procs, strict=True):
        assert p.poll() is None, logs[name].read_text()[-3000:]
    (sync / "go.tmp").write_text(str(time.time() + 2))
    (sync / "go.tmp").rename(sync / "go")  # all at once: a taker never reads half a number
    results = []
    for name, p in zip(logs, procs, strict=True):
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, logs[name].read_text()[-3000:]
        results += [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert len(results) == 9
    conflicts: collections.Counter = collections.Counter()
    winners_per_round = []
    for rnd in range(3):
        this = [r for r in results if r["round"] == rnd]
        held = sorted((r for r in this if r["won"]), key=lambda r: r["took"])
        assert held, this
        winners_per_round.append(len(held))
        for first, then in zip(held, held[1:], strict=False):
            assert then["took"] >= first["released"], this  # never two holders at once
        for r in this:
            conflicts.update(r["conflicts"])
            if not r["won"]:
                assert any(f"is in use by run R-{w['name']} (recon chaos" in r["refused"] for w in held), this
    assert set(conflicts) <= {"ConcurrentAppendException", "ConcurrentDeleteReadException"}, conflicts
    print("\nLEASE RACE " + json.dumps({"rounds": 3, "takers": 3, "winners_per_round": winners_per_round,
                                        "conflicts": dict(conflicts)}))
    assert conflicts, "no two conditional writes overlapped in three rounds"
