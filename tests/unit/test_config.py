"""Config loading: precedence, environment variables, and errors that name the key."""

from __future__ import annotations

import pytest

from stripe_recon.config import load_config
from stripe_recon.errors import ConfigError


def test_defaults_come_from_base_yaml():
    cfg = load_config(environ={})
    assert cfg.storage.root == "./data"
    assert cfg.guard.max_change_ratio == 0.05
    assert cfg.guard.max_archive_ratio == 0.01
    assert cfg.guard.max_shrink_ratio == 0.10
    assert cfg.attributes.product["tax_code"].owner == "stripe"
    assert cfg.attributes.price["amount"].owner == "internal"
    assert cfg.mapping.product_key == "metadata.internal_id"


def test_precedence_file_then_env_then_set(tmp_path):
    env_file = tmp_path / "env.yaml"
    env_file.write_text("storage:\n  root: /from/file\nspark:\n  shuffle_partitions: 3\n")
    cfg = load_config(env_file, environ={})
    assert (cfg.storage.root, cfg.spark.shuffle_partitions) == ("/from/file", 3)
    cfg = load_config(env_file, environ={"RECON_STORAGE_ROOT": "/from/env"})
    assert cfg.storage.root == "/from/env"
    cfg = load_config(env_file, ["storage.root=/from/set"], environ={"RECON_STORAGE_ROOT": "/from/env"})
    assert cfg.storage.root == "/from/set"


def test_env_names_with_underscored_keys_resolve():
    cfg = load_config(environ={"RECON_SPARK_SHUFFLE_PARTITIONS": "5", "RECON_GUARD__MAX_ARCHIVE_RATIO": "0.2",
                               "RECON_JDBC_PASSWORD": "secret", "RECON_UNRELATED_THING": "x"})
    assert cfg.spark.shuffle_partitions == 5
    assert cfg.guard.max_archive_ratio == 0.2


def test_set_values_are_typed():
    cfg = load_config(overrides=["guard.max_change_ratio=0.5", "spark.extra_packages=[a:b:1]",
                                 "sources.internal.jdbc.url=null"], environ={})
    assert cfg.guard.max_change_ratio == 0.5
    assert cfg.spark.extra_packages == ["a:b:1"]
    assert cfg.sources.internal.jdbc.url is None


def test_unknown_key_names_path_and_allowed_keys():
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=["storage.rooot=/x"], environ={})
    assert "storage.rooot: unknown key; allowed here: root" in str(exc.value)


def test_bad_value_names_path():
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=["guard.max_change_ratio=2"], environ={})
    assert "guard.max_change_ratio" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=["attributes.product.name.owner=nobody"], environ={})
    assert "attributes.product.name.owner" in str(exc.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_malformed_override():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(overrides=["storage.root"], environ={})
