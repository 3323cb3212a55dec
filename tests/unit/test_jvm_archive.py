"""The JVM class-data archive of local sessions (jvm_archive.py): which options a session gets."""

from __future__ import annotations

import pytest

from stripe_recon import jvm_archive

JARS = ["file:/jars/delta-spark_2.13-4.0.0.jar", "file:/jars/postgresql-42.7.4.jar"]


@pytest.fixture
def archive_cfg(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("RECON_CLASS_ARCHIVE_DUMP", raising=False)
    return make_cfg(f"spark.ivy_dir={tmp_path / 'cache' / 'ivy'}")


def test_no_archive_no_option_and_an_archive_is_mapped(archive_cfg, tmp_path):
    assert jvm_archive.java_options(archive_cfg, JARS) == ""
    path = jvm_archive.archive_file(archive_cfg, JARS)
    assert path.parent == (tmp_path / "cache" / "jvm-archive").resolve()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert jvm_archive.java_options(archive_cfg, JARS) == f"-XX:SharedArchiveFile={path} -Xlog:cds*=off"
    off = archive_cfg.with_overrides("spark.class_archive=false")
    assert jvm_archive.java_options(off, JARS) == ""


def test_another_jar_list_is_another_archive(archive_cfg):
    one = jvm_archive.archive_file(archive_cfg, JARS)
    other = jvm_archive.archive_file(archive_cfg, [*JARS, "file:/jars/hadoop-aws-3.4.1.jar"])
    assert one != other and one.name.startswith("classes-") and one.suffix == ".jsa"
    assert jvm_archive.archive_file(archive_cfg, list(JARS)) == one


def test_the_training_child_writes_the_archive_at_exit(archive_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("RECON_CLASS_ARCHIVE_DUMP", str(tmp_path / "out.jsa"))
    assert jvm_archive.java_options(archive_cfg, JARS) == f"-XX:ArchiveClassesAtExit={tmp_path / 'out.jsa'} -Xlog:cds*=off"
