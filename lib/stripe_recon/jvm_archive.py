"""A class-data archive for the JVM of local sessions: each command starts about 5 s sooner.

A fresh ``recon`` process spends seconds loading and verifying the same Spark and Delta classes from
the jars every time (measured at 100k products: a ``plan`` in a fresh process 25.2-25.5 s, with the
archive 19.0-21.1 s; the session start 5.0-5.9 s against 3.0-3.9 s). Java's dynamic class-data
sharing (JDK 13+) keeps them in a file: a JVM started with ``-XX:ArchiveClassesAtExit=F`` writes the
classes it loaded to F when it exits, and one started with ``-XX:SharedArchiveFile=F`` maps them
instead of loading them again.

An archive is only good for the JVM and the class path it was written with, so its file name is a
hash of both (the java binary, pyspark's version, the session's jar list); a session with other jars
(``spark.extra_packages``) finds no archive and starts as before. Sessions only read archives:
``make jars`` builds one (``python -m stripe_recon.jvm_archive``) by running a small job in a child
process, and moves the file into place once that process has exited, so no reader ever sees a file
being written. A session that cannot map the archive (another JVM, a changed jar) starts without it
and says nothing. ``spark.class_archive: false`` turns it off. Launcher-owned sessions (spark-submit,
Glue, Databricks) are never touched.

Example::

    python -m stripe_recon.jvm_archive            # once per machine (make jars does it)
    recon plan                                    # starts from the archive
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .config import Config, load_config

#: Set in the training child only: the file its JVM writes the loaded classes to at exit.
_DUMP_ENV = "RECON_CLASS_ARCHIVE_DUMP"
#: Unified-logging selection that keeps class-data-sharing messages (a mismatch, classes skipped
#: while dumping) out of the terminal: a session without its archive is a normal session.
_QUIET = "-Xlog:cds*=off"


def java_binary() -> str | None:
    """The java that pyspark starts (JAVA_HOME's, else the one on PATH), symlinks resolved."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return os.path.realpath(found) if found and os.path.exists(found) else None


def archive_file(cfg: Config, jars: list[str]) -> Path | None:
    """Where the archive for this JVM and these jars lives (None: no java found)."""
    import pyspark

    java = java_binary()
    if java is None:
        return None
    st = os.stat(java)
    ident = json.dumps([java, st.st_size, int(st.st_mtime), pyspark.__version__, list(jars)])
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return Path(cfg.spark.ivy_dir).resolve().parent / "jvm-archive" / f"classes-{digest}.jsa"


def java_options(cfg: Config, jars: list[str]) -> str:
    """The driver JVM options for a local session: map the archive when there is one, write it when
    this process is the training child, else nothing."""
    dump = os.environ.get(_DUMP_ENV)
    if dump:
        return f"-XX:ArchiveClassesAtExit={dump} {_QUIET}"
    if not cfg.spark.class_archive:
        return ""
    path = archive_file(cfg, jars)
    if path is None or not path.is_file():
        return ""
    return f"-XX:SharedArchiveFile={path} {_QUIET}"


def build(cfg: Config, config_file: str | None = None) -> Path | None:
    """Write the archive for ``cfg``'s jars unless it exists; returns its path (None: none made).
    ``config_file``: the environment file ``cfg`` came from (the child loads it too, so its JVM has the
    same class path)."""
    from .jars import local_jars

    def say(msg: str) -> None:
        print(msg, file=sys.stderr)

    path = archive_file(cfg, local_jars(cfg, None))
    if path is None:
        say("jvm archive: no java found (JAVA_HOME or PATH); sessions start without an archive")
        return None
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(".classes-*.tmp"):  # left by a build killed before its JVM ended
        if time.time() - stale.stat().st_mtime > 3600:
            stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="recon-jvm-archive-") as work:
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        env = {**os.environ, _DUMP_ENV: str(tmp), "GX_ANALYTICS_ENABLED": "false"}
        say(f"jvm archive: running a small job once to record the classes it loads ({path.name})")
        child = [sys.executable, "-m", "stripe_recon.jvm_archive", "--train", work, "--ivy-dir", cfg.spark.ivy_dir]
        done = subprocess.run([*child, *(["--config", config_file] if config_file else [])],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            tmp.unlink(missing_ok=True)
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            say(f"jvm archive: not built (exit {done.returncode}: {last}); sessions start without one")
            return None
        os.replace(tmp, path)  # atomic: a session sees no archive or a whole one
    say(f"jvm archive: {path} ({path.stat().st_size // 2**20} MB)")
    return path


def _train(work: str, ivy_dir: str, config_file: str | None) -> None:
    """The job's stages on a small generated catalog, in this process (its JVM dumps at exit)."""
    from .detect import detect
    from .errors import HeldError
    from .generate import generate
    from .land.internal import land_internal
    from .ledger import Run
    from .pipeline import land_stripe
    from .plan import plan
    from .spark import get_spark
    from .validate import validate_inputs

    gen = Path(work) / "gen"
    cfg = load_config(config_file, [
        f"storage.root={Path(work) / 'data'}", f"spark.ivy_dir={ivy_dir}", "sources.internal.format=parquet",
        f"sources.internal.products={gen}/internal/products.parquet",
        f"sources.internal.prices={gen}/internal/prices.parquet",
        "sources.stripe.mode=files", f"sources.stripe.path={gen}/stripe",
    ])
    spark = get_spark(cfg, quiet=True)
    generate(spark, str(gen), products=200, seed=7, rate=0.05)
    run = Run.new(spark, cfg)
    for stage in (land_internal, land_stripe, validate_inputs, detect, plan):
        try:
            stage(run)
        except HeldError:
            pass
    # The JVM writes the archive when it exits, which pyspark leaves to happen after this process
    # is gone: end it here (it exits on its stdin's EOF) and wait, so the parent finds the whole file.
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    spark.stop()
    if proc is not None:
        SparkContext._gateway.shutdown()
        proc.stdin.close()
        proc.wait(timeout=900)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the JVM class-data archive local sessions start from.")
    parser.add_argument("--config", default=None, help="environment config file (default: conf/local.yaml)")
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--ivy-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train:
        _train(args.train, args.ivy_dir, args.config)
        return 0
    config_file = args.config or "conf/local.yaml"
    cfg = load_config(config_file)
    if cfg.spark.class_archive:
        build(cfg, config_file)
    return 0  # never fails a build: a session without an archive is only slower


if __name__ == "__main__":
    raise SystemExit(main())
