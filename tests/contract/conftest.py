"""A session-scoped stripe-mock (Stripe's official OpenAPI-driven mock) on free ports.

The binary comes from STRIPE_MOCK_BIN (set by `make test`), .cache/bin/stripe-mock (`make stripe-mock`)
or PATH; without it the contract tests are skipped with the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stripe_mock_binary() -> str | None:
    for candidate in (os.environ.get("STRIPE_MOCK_BIN"), str(REPO / ".cache" / "bin" / "stripe-mock"),
                      shutil.which("stripe-mock")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def stripe_mock_url(tmp_path_factory):
    binary = stripe_mock_binary()
    if binary is None:
        pytest.skip("stripe-mock is not installed: run `make stripe-mock` (go install "
                    "github.com/stripe/stripe-mock@v0.197.0) or set STRIPE_MOCK_BIN")
    http_port, https_port = _free_port(), _free_port()
    log_path = tmp_path_factory.mktemp("stripe-mock") / "stripe-mock.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([binary, "-http-port", str(http_port), "-https-port", str(https_port)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", http_port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"stripe-mock did not start (exit {proc.poll()}): {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{http_port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
