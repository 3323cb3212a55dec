"""The Maven jars of a local Spark session: resolved once, then started from local paths.

A local session needs Delta's jar (``io.delta:delta-spark_<scala>:<the delta-spark pip version>``),
the packages in ``spark.extra_packages`` (the PostgreSQL JDBC driver by default) and, on Spark 3.5,
icu4j. Spark could resolve them at every start (``spark.jars.packages``), but Ivy then prints its
resolution report each time. Instead they are resolved once, by a child process whose output goes to
``{spark.ivy_dir}/resolve.log``; the local jar paths go to a manifest
``{spark.ivy_dir}/recon-jars-<key>.txt`` and sessions start with ``spark.jars`` = those paths. The key
hashes the coordinates and the Spark version, so changing either resolves again, and so does a
manifest whose jars are gone. ``make jars`` (a step of ``make run`` and ``make test``) runs
``python -m stripe_recon.jars``; without it the first local session resolves.

On a cluster (spark-submit, Glue, Databricks) nothing here runs: the launcher's jars are used.

Example::

    spark_jars = local_jars(cfg)   # ['file:///…/.cache/ivy/jars/io.delta_delta-spark_2.13-4.0.1.jar', …]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

from .config import Config
from .errors import ReconError

# Spark 4 bundles icu4j (exact Unicode NFC in normalise.nfc); Spark 3.5 does not, so a local 3.5
# session adds the same version and both lanes normalise identically.
ICU4J_PACKAGE = "com.ibm.icu:icu4j:76.1"
RESOLVE_TIMEOUT_S = 900


def _pyspark_jar_version(prefix: str) -> str:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    for jar in sorted(jars.glob(f"{prefix}-*.jar")):
        return jar.name[len(prefix) + 1:-len(".jar")]
    raise ReconError(f"no {prefix} jar under {jars}: is pyspark installed from pip?")


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def delta_package() -> str:
    """Delta's coordinate for the installed pip packages (what ``configure_spark_with_delta_pip`` adds)."""
    scala = ".".join(_pyspark_jar_version("scala-library").split(".")[:2])
    return f"io.delta:delta-spark_{scala}:{metadata.version('delta_spark')}"


KAFKA_CONNECTOR = {"4.0": "org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.0",
                   "3.5": "org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.4"}


def kafka_package() -> str:
    """The spark-sql-kafka coordinate for the installed pyspark; a local session adds it when
    ``sources.internal.cdc.kafka.servers`` is set (on a cluster pass it with ``--packages``)."""
    import pyspark

    line = ".".join(pyspark.__version__.split(".")[:2])
    if line not in KAFKA_CONNECTOR:
        raise RuntimeError(f"no spark-sql-kafka coordinate declared for Spark {line}: add it to jars.KAFKA_CONNECTOR")
    return KAFKA_CONNECTOR[line]


def packages(cfg: Config) -> list[str]:
    """Every Maven coordinate a local session of ``cfg`` needs, Delta's first."""
    extra = list(cfg.spark.extra_packages)
    if int(spark_version().split(".")[0]) < 4 and not any(p.startswith("com.ibm.icu:icu4j:") for p in extra):
        extra.append(ICU4J_PACKAGE)
    if cfg.sources.internal.cdc.kafka.servers and not any(":spark-sql-kafka-" in p for p in extra):
        extra.append(kafka_package())
    return [delta_package(), *extra]


def manifest_path(cfg: Config, coords: list[str]) -> Path:
    key = hashlib.sha256("\n".join([spark_version(), *coords]).encode()).hexdigest()[:16]
    return Path(cfg.spark.ivy_dir).resolve() / f"recon-jars-{key}.txt"


def _local(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri.removeprefix("file:")


def read_manifest(path: Path) -> list[str] | None:
    """The jar URIs of a manifest whose jars all exist; None otherwise."""
    try:
        jars = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return None
    return jars if jars and all(os.path.isfile(_local(j)) for j in jars) else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One resolver at a time per Ivy folder (two first runs at once would race on Ivy's cache)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def local_jars(cfg: Config, announce: Callable[[str], None] | None = None) -> list[str]:
    """The local jar URIs for ``spark.jars``; resolves them first when no valid manifest exists.

    ``announce`` is told (one line) when a resolution starts: it reaches Maven Central once.
    """
    coords = packages(cfg)
    manifest = manifest_path(cfg, coords)
    jars = read_manifest(manifest)
    if jars is not None:
        return jars
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(manifest.parent / "recon-jars.lock"):
        jars = read_manifest(manifest)  # another process may have resolved meanwhile
        if jars is None:
            if announce:
                announce(f"resolving the Maven jars once ({', '.join(coords)}) into {manifest.parent}")
            jars = _resolve(coords, manifest)
    return jars


def _resolve(coords: list[str], manifest: Path) -> list[str]:
    log_path = manifest.parent / "resolve.log"
    cmd = [sys.executable, "-m", "stripe_recon.jars", "--child", "--ivy", str(manifest.parent),
           "--manifest", str(manifest), *coords]
    env = {**os.environ, "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=RESOLVE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ReconError(f"resolving the Maven jars took over {RESOLVE_TIMEOUT_S}s: see {log_path}") from None
    jars = read_manifest(manifest) if done.returncode == 0 else None
    if jars is None:
        tail = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        hint = next((ln for ln in reversed(tail) if "unresolved" in ln.lower() or "Exception" in ln), tail[-1] if tail else "")
        raise ReconError(f"could not resolve the Maven jars {', '.join(coords)} (needs Maven Central once, or a "
                         f"filled spark.ivy_dir): {hint[:300]} (full output: {log_path})")
    return jars


def _child(ivy: str, manifest: str, coords: list[str]) -> None:
    """Start a throwaway local session that resolves ``coords`` with Ivy; write what it put in spark.jars."""
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("stripe-recon-resolve-jars")
               .config("spark.jars.packages", ",".join(coords)).config("spark.jars.ivy", ivy)
               .config("spark.ui.enabled", "false").getOrCreate())
    try:
        jars = [j for j in session.sparkContext.getConf().get("spark.jars", "").split(",") if j]
    finally:
        session.stop()
    tmp = f"{manifest}.{os.getpid()}.tmp"
    Path(tmp).write_text("\n".join(jars) + "\n")
    os.replace(tmp, manifest)


def main(argv: list[str] | None = None) -> int:
    """``python -m stripe_recon.jars [--config FILE] [--set k=v]``: resolve once (a set-up step)."""
    p = argparse.ArgumentParser(prog="python -m stripe_recon.jars", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.environ.get("RECON_CONFIG", "conf/local.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--quiet", action="store_true", help="print nothing when the jars are already resolved")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ivy", help=argparse.SUPPRESS)
    p.add_argument("--manifest", help=argparse.SUPPRESS)
    p.add_argument("coords", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.ivy, args.manifest, args.coords)
        return 0
    from .config import load_config

    resolved: list[str] = []

    def announce(line: str) -> None:
        resolved.append(line)
        print(line, flush=True)

    try:
        cfg = load_config(args.config, args.overrides)
        jars = local_jars(cfg, announce=announce)
    except ReconError as exc:
        print(f"recon: {exc}", file=sys.stderr)
        return exc.exit_code
    if resolved or not args.quiet:
        print(f"Maven jars ready: {len(jars)} jars listed in {manifest_path(cfg, packages(cfg))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
