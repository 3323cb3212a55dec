"""Local sessions start from local jar files resolved once (jars.py), not through Ivy at every start;
a quiet session's JVM output goes to a log file (spark.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from stripe_recon import jars
from stripe_recon.spark import jvm_log_path


def test_packages_are_deltas_then_the_extra_ones(cfg):
    assert jars.packages(cfg) == [f"io.delta:delta-spark_2.13:{metadata.version('delta_spark')}",
                                  "org.postgresql:postgresql:42.7.4"]


def test_the_manifest_key_follows_the_coordinates(cfg, make_cfg):
    other = make_cfg("spark.extra_packages=[org.postgresql:postgresql:42.7.5]")
    assert jars.manifest_path(cfg, jars.packages(cfg)) != jars.manifest_path(other, jars.packages(other))
    assert jars.manifest_path(cfg, jars.packages(cfg)).parent == Path(cfg.spark.ivy_dir).resolve()


def test_a_manifest_whose_jars_are_gone_is_not_used(tmp_path):
    jar = tmp_path / "a.jar"
    jar.write_bytes(b"PK")
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"file://{jar}\n")
    assert jars.read_manifest(manifest) == [f"file://{jar}"]
    manifest.write_text(f"file://{jar}\nfile://{tmp_path / 'gone.jar'}\n")
    assert jars.read_manifest(manifest) is None
    assert jars.read_manifest(tmp_path / "absent.txt") is None


def test_the_session_started_from_local_jars_without_ivy(spark):
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.jars.packages", None) is None
    listed = conf.get("spark.jars").split(",")
    assert any("io.delta_delta-spark_2.13" in j for j in listed) and any("postgresql" in j for j in listed)
    assert all(os.path.isfile(j.removeprefix("file://")) for j in listed)
    assert "-Dlog4j2.configurationFile=file:" in conf.get("spark.driver.extraJavaOptions")


def test_jvm_output_goes_to_the_log_file_while_the_process_keeps_its_own(tmp_path):
    log = tmp_path / "logs" / "spark.log"
    probe = (
        "import os, subprocess\n"
        "from pathlib import Path\n"
        "from stripe_recon.spark import _output_to\n"
        f"with _output_to(Path({str(log)!r})):\n"
        "    child = subprocess.Popen(['sh', '-c', 'sleep 0.3; echo from-the-jvm >&2; echo jvm-out'])\n"
        "print('from-python', flush=True)\n"
        "child.wait()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "from-python\n", "")
    text = log.read_text().splitlines()
    assert text[0].startswith("== stripe-recon local Spark session, pid ") and text[1:] == ["from-the-jvm", "jvm-out"]


def test_the_log_file_defaults_under_a_local_storage_root(cfg, make_cfg):
    assert jvm_log_path(cfg) == Path(cfg.storage.root).resolve() / "logs" / "spark.log"
    assert jvm_log_path(make_cfg("spark.log_file=/tmp/x/spark.log")) == Path("/tmp/x/spark.log")
    assert jvm_log_path(make_cfg("storage.root=s3a://bucket/recon")).name == "spark.log"
