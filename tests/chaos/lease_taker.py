"""One process of the lease race (tests/chaos/test_chaos.py): ``python lease_taker.py NAME SYNC ROOT...``.

Once its JVM is warm it writes ``SYNC/ready-NAME`` and waits for ``SYNC/go`` (the race's START, epoch
seconds, written when every taker is ready). For each ROOT it waits until START + 25 s x round, then takes that root's lease once (the table is
created by whichever taker gets there first) and prints one JSON line: the round, whether it won,
the Delta conflicts its tries lost (exception class names), for a winner when it took the lease and
when it began to release it (epoch seconds), and for a loser the refusal message.
A winner keeps the lease until the round's end so no loser can take it after it is released.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class _Conflicts(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "lost a Delta commit race" in record.getMessage():
            self.names.append(str(record.args[0]) if record.args else record.getMessage())


def main() -> None:
    from stripe_recon import lease
    from stripe_recon.config import load_config
    from stripe_recon.spark import get_spark

    name, sync, roots = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    start = None
    conflicts = _Conflicts()
    logging.getLogger("stripe_recon.lease").addHandler(conflicts)
    logging.getLogger("stripe_recon.lease").setLevel(logging.DEBUG)
    spark = None
    for i, root in enumerate(roots):
        cfg = load_config(REPO / "conf" / "local.yaml", [
            f"storage.root={root}", "spark.master=local[1]", "spark.shuffle_partitions=1",
            f"spark.ivy_dir={REPO / '.cache' / 'ivy'}", "spark.driver_memory=1g"])
        if spark is None:
            spark = get_spark(cfg)
            spark.range(1).count()  # warm the JVM before the first round
            (sync / f"ready-{name}").write_text("ready")
            go = sync / "go"
            while not (go.exists() and go.read_text().strip()):
                time.sleep(0.05)
            start = float(go.read_text())
        at = start + 25 * i
        while time.time() < at:
            time.sleep(0.005)
        conflicts.names.clear()
        out = {"round": i, "name": name}
        try:
            held = lease.take(spark, cfg, f"R-{name}", "chaos")
            out.update(won=True, took=time.time())
            while time.time() < at + 20:
                time.sleep(0.1)
            out["released"] = time.time()  # before the release: the lease may be free from here on
            held.release()
        except lease.LeaseHeldError as exc:
            out.update(won=False, refused=str(exc))
        out["conflicts"] = list(conflicts.names)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
