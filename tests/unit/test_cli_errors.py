"""Every user error is one line on stderr and exit 1 or 2 (2 for usage and configuration), never a
stack trace; -v adds the trace. Each case goes through the CLI (``cli.main``, or a fresh ``recon``
process where it matters that no JVM ever prints)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stripe_recon.cli import main
from stripe_recon.emulator import EmulatorServer

from .test_land_internal import PRICE_HEADER, PRODUCT_HEADER, good_csv, write_csv

REPO = Path(__file__).resolve().parents[2]
CONF = str(REPO / "conf" / "local.yaml")


def recon(capsys, root: Path, *argv: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``recon ARGV --config local.yaml --set storage.root=ROOT``."""
    code = main([*argv, "--config", CONF, "--set", f"storage.root={root}", "--set", "console.plain_progress_seconds=0"])
    return code, capsys.readouterr().err.splitlines()


@pytest.fixture
def inputs(tmp_path):
    return good_csv(tmp_path)


@pytest.fixture
def stripe_key(monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_cli_errors")


# -- before Spark starts --------------------------------------------------------------------------

def test_missing_path_in_a_fresh_process_is_one_line_and_no_jvm_output(tmp_path, inputs):
    products, _ = inputs
    missing = tmp_path / "nope" / "prices.csv"
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("recon")), "land", "internal", "--products", products, "--prices",
         str(missing), "--config", CONF, "--set", f"storage.root={tmp_path / 'root'}"],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", f"recon: internal prices path {missing} does not exist: check the path (or the config key that sets it)\n")


def test_empty_file(capsys, tmp_path, inputs):
    products, _ = inputs
    empty = tmp_path / "prices.csv"
    empty.write_text("")
    code, err = recon(capsys, tmp_path / "root", "land", "internal", "--products", products, "--prices", str(empty))
    assert (code, err) == (1, [f"recon: internal prices path {empty} is empty (0 bytes): expected CSV text with a header row"])


def test_unknown_extension(capsys, tmp_path, inputs):
    products, _ = inputs
    odd = tmp_path / "prices.xlsx"
    odd.write_text("x")
    code, err = recon(capsys, tmp_path / "root", "land", "internal", "--products", products, "--prices", str(odd))
    assert (code, err) == (1, [
        f"recon: cannot tell the format of internal prices path {odd} from its name: name it .csv, .parquet, .json "
        "or .jsonl (optionally .gz) or pass --format (sources.internal.format)"])


def test_unknown_config_key_exits_2(capsys, tmp_path):
    code, err = recon(capsys, tmp_path, "detect", "--set", "guard.max_change_ratioo=0.1")
    assert code == 2
    assert err == ["recon: invalid configuration: guard.max_change_ratioo: unknown key; allowed here: max_archive_ratio, "
                   f"max_change_ratio, max_shrink_ratio (from conf/base.yaml + {CONF} + overrides)"]


def test_bad_config_value_exits_2(capsys, tmp_path):
    code, err = recon(capsys, tmp_path, "detect", "--set", "guard.max_change_ratio=2")
    assert code == 2
    assert err == ["recon: invalid configuration: guard.max_change_ratio: Input should be less than or equal to 1 "
                   f"(got 2) (from conf/base.yaml + {CONF} + overrides)"]


def test_missing_config_file_exits_2(capsys, tmp_path):
    code = main(["detect", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err.splitlines()
    assert (code, err) == (2, [f"recon: config file not found: {tmp_path / 'nope.yaml'}. Pass --config with an existing file."])


def test_usage_error_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["push", "--aprove", "abc"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "recon: unrecognized arguments: --aprove abc (see `recon --help`)"]


def test_storage_root_not_writable(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = recon(capsys, blocker / "root", "detect")
    assert (code, err) == (1, [
        f"recon: storage root {blocker / 'root'} is not writable (Not a directory): set storage.root (or "
        "RECON_STORAGE_ROOT) to a folder this user can write"])


def test_unreachable_stripe_api_base(capsys, tmp_path, stripe_key):
    code, err = recon(capsys, tmp_path, "push", "--set", "stripe.api_base=http://127.0.0.1:9",
                      "--set", "stripe.max_attempts=1")
    assert (code, err) == (1, [
        "recon: cannot reach the Stripe API at http://127.0.0.1:9 (Connection refused): check stripe.api_base "
        "and the network"])


def test_bad_api_key_401(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_live_not_accepted_here")
    with EmulatorServer(port=0) as emu:
        code, err = recon(capsys, tmp_path, "land", "stripe", "--from-api", "--set", f"stripe.api_base={emu.url}")
    assert (code, err) == (1, [
        f"recon: the Stripe API at {emu.url} refused the API key (HTTP 401: Invalid API Key provided: "
        "sk_live_[REDACTED]): check the key in the environment variable STRIPE_API_KEY (stripe.key_env)"])


def test_missing_api_key(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    code, err = recon(capsys, tmp_path, "push")
    assert code == 1 and len(err) == 1
    assert err[0].startswith("recon: no Stripe API key: set the environment variable STRIPE_API_KEY (stripe.key_env)")


def test_verbose_shows_the_trace(capsys, tmp_path):
    code, err = recon(capsys, tmp_path, "detect", "-v", "--set", "guard.max_change_ratio=2")
    assert code == 2
    assert err[0] == "Traceback (most recent call last):" and err[-1].startswith("recon: invalid configuration: ")


# -- with Spark (the shared session; the error comes from the reader or the driver) -------------

def test_wrong_format(capsys, spark, tmp_path, inputs):
    products, prices = inputs
    as_parquet = tmp_path / "products.parquet"
    as_parquet.write_bytes(Path(products).read_bytes())
    code, err = recon(capsys, tmp_path / "root", "land", "internal", "--products", str(as_parquet), "--prices", prices)
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"recon: internal products path {as_parquet} does not parse as parquet: expected a "
                             "Parquet file (")
    assert err[0].endswith("); pass --format if the name misleads")


def test_unreadable_path(capsys, spark, tmp_path, inputs):
    products, _ = inputs
    code, err = recon(capsys, tmp_path / "root", "land", "internal", "--products", products,
                      "--prices", "nope://bucket/prices.csv")
    assert (code, err) == (1, [
        'recon: internal prices path nope://bucket/prices.csv cannot be opened: No FileSystem for scheme "nope"'])


def test_header_only_csv(capsys, spark, tmp_path):
    products = write_csv(tmp_path / "in" / "products.csv", PRODUCT_HEADER, [])
    prices = write_csv(tmp_path / "in" / "prices.csv", PRICE_HEADER, [])
    code, err = recon(capsys, tmp_path / "root", "land", "internal", "--products", products, "--prices", prices)
    assert (code, err) == (1, [
        f"recon: internal products input {products} is empty: an empty catalog would look like 'delete everything'. "
        "Fix the input, or pass --allow-empty (sources.internal.allow_empty=true) if it really is empty."])


def test_missing_jdbc_driver(capsys, spark, tmp_path):
    code, err = recon(capsys, tmp_path, "land", "internal", "--jdbc-url", "jdbc:postgresql://127.0.0.1:9/recon",
                      "--set", "sources.internal.jdbc.driver=org.example.NoSuchDriver")
    assert (code, err) == (1, [
        "recon: cannot read internal products from jdbc:postgresql://127.0.0.1:9/recon table products: "
        "java.lang.ClassNotFoundException: org.example.NoSuchDriver"])


def test_refused_jdbc_connection(capsys, spark, tmp_path):
    code, err = recon(capsys, tmp_path, "land", "internal", "--jdbc-url", "jdbc:postgresql://127.0.0.1:9/recon")
    assert (code, err) == (1, [
        "recon: cannot read internal products from jdbc:postgresql://127.0.0.1:9/recon table products: "
        "org.postgresql.util.PSQLException: Connection to 127.0.0.1:9 refused. Check that the hostname and port "
        "are correct and that the postmaster is accepting TCP/IP connections."])
