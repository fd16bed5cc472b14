"""The real `larch serve` for the compatibility suite, shared by every test module of a run.

The binary (LARCH_BIN, default target/debug/larch) runs on 127.0.0.1 with OS-chosen ports
(control plane on port 0, one data-plane port per index) in a temporary data directory, with
a configured bootstrap key. Its control address is read from the log line it prints once it
listens. On teardown it gets SIGTERM and must drain and exit 0.
"""

import contextlib
import os
import re
import subprocess
import tempfile
import threading
import time
from collections import namedtuple

import pytest

KEY = "larch-compat-test-key"
LISTENING = re.compile(r"larch control plane listening addr=(\S+)")

#: ``addr`` is the control plane's ``host:port``; ``key`` the admin API key; ``import_root``
#: the directory the server may bulk-import from (``--import-root``).
Larch = namedtuple("Larch", "addr key import_root")


@contextlib.contextmanager
def serve(*flags):
    """Runs ``larch serve`` with ``flags`` in a temporary data directory; yields its control
    address once it listens, and on exit sends SIGTERM, after which it must drain and exit 0."""
    binary = os.environ.get("LARCH_BIN", "target/debug/larch")
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.Popen(
            [binary, "serve", "--control-addr", "127.0.0.1:0", "--data-ports", "0",
             "--admin-addr", "127.0.0.1:0", "--data-dir", data_dir, *flags],
            env={**os.environ, "LARCH_API_KEY": KEY, "LARCH_LOG": "info"},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            addr = None
            deadline = time.monotonic() + 30
            while addr is None and time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                match = LISTENING.search(line)
                if match:
                    addr = match.group(1)
            assert addr, "larch did not report its control address"
            # Keep reading the log so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            yield addr
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0, "larch did not exit cleanly on SIGTERM"


@pytest.fixture(scope="session")
def larch():
    with tempfile.TemporaryDirectory() as import_root, serve("--import-root", import_root) as addr:
        yield Larch(addr, KEY, import_root)


def parquet_set(directory):
    """Writes the generated Parquet set (tests/examples/compat_parquet.rs) in Pinecone's import
    layout to ``directory/set``; returns that path."""
    helper = os.path.join(
        os.path.dirname(os.environ.get("LARCH_BIN", "target/debug/larch")),
        "examples",
        "compat_parquet",
    )
    assert os.path.exists(helper), (
        f"{helper} is missing: build it with cargo build -p larch-tests --example compat_parquet"
    )
    target = os.path.join(directory, "set")
    subprocess.run([helper, target], check=True)
    return target


def import_ended(index, import_id, seconds=60):
    """Describes import ``import_id`` until it has ended, failing after ``seconds``; returns the
    last description."""
    deadline = time.monotonic() + seconds
    while True:
        described = index.describe_import(import_id)
        if described.status in ("Completed", "Failed", "Cancelled"):
            return described
        assert time.monotonic() < deadline, described
        time.sleep(0.05)
