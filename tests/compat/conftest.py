"""The real `larch serve` for the compatibility suite, shared by every test module of a run.

The binary (LARCH_BIN, default target/debug/larch) runs on 127.0.0.1 with OS-chosen ports
(control plane on port 0, one data-plane port per index) in a temporary data directory, with
a configured bootstrap key. Its control address is read from the log line it prints once it
listens. On teardown it gets SIGTERM and must drain and exit 0.
"""

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
Larch = namedtuple("Larch", "addr key import_root", defaults=(None,))


@pytest.fixture(scope="session")
def larch():
    binary = os.environ.get("LARCH_BIN", "target/debug/larch")
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryDirectory() as import_root:
        proc = subprocess.Popen(
            [binary, "serve", "--control-addr", "127.0.0.1:0", "--data-ports", "0",
             "--admin-addr", "127.0.0.1:0", "--data-dir", data_dir,
             "--import-root", import_root],
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
            yield Larch(addr, KEY, import_root)
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0, "larch did not exit cleanly on SIGTERM"
