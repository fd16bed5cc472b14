"""Pinecone's Python SDK 10.2.0 importing from an s3:// bucket prefix (issue 18, item 2).

A server of its own, started with ``--import-allow-s3`` and the test S3 server's ``AWS_*``
variables (``tests/run`` starts moto and exports them with ``LARCH_TEST_S3_URL``). The generated
Parquet set (tests/examples/compat_parquet.rs) is put into a fresh prefix with plain HTTP PUTs
(the compat venv has no boto3; moto takes unsigned writes), then ``index.start_import`` reads it.
Skipped without the server, failing instead with ``LARCH_REQUIRE_S3=1``.
"""

import os
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
from pinecone import Pinecone, ServerlessSpec

from conftest import KEY, LISTENING, Larch
from test_pinecone10 import parquet_set

S3_URL = os.environ.get("LARCH_TEST_S3_URL", "")


@pytest.fixture(scope="module")
def s3_larch():
    if not S3_URL:
        assert os.environ.get("LARCH_REQUIRE_S3") != "1", (
            "LARCH_REQUIRE_S3=1 but LARCH_TEST_S3_URL is not set: start tests/s3/serve.py"
        )
        pytest.skip("no S3-compatible server (LARCH_TEST_S3_URL is not set; tests/run starts one)")
    binary = os.environ.get("LARCH_BIN", "target/debug/larch")
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.Popen(
            [binary, "serve", "--control-addr", "127.0.0.1:0", "--data-ports", "0",
             "--admin-addr", "127.0.0.1:0", "--data-dir", data_dir, "--import-allow-s3"],
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
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            yield addr, scratch
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0, "larch did not exit cleanly on SIGTERM"


def upload(local_dir, prefix):
    """PUTs every file under ``local_dir`` to ``prefix/<relative path>`` of the test bucket."""
    bucket = S3_URL[len("s3://"):].split("/", 1)[0]
    endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    for root, _, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(root, name)
            key = f"{prefix}/{os.path.relpath(path, local_dir)}"
            with open(path, "rb") as f:
                request = urllib.request.Request(
                    f"{endpoint}/{bucket}/{key}", data=f.read(), method="PUT",
                    headers={"Content-Type": "application/octet-stream"},
                )
            with urllib.request.urlopen(request, timeout=60) as answer:
                assert answer.status == 200, (key, answer.status)
    return f"s3://{bucket}/{prefix}"


def test_start_import_from_s3(s3_larch):
    addr, scratch = s3_larch
    pc = Pinecone(api_key=KEY, host=f"http://{addr}", grpc_scheme="http")
    pc.create_index(
        name="s3-imports", dimension=4, metric="cosine",
        spec=ServerlessSpec(cloud="aws", region="us-east-1"),
    )
    index = pc.Index(name="s3-imports")
    local = parquet_set(Larch(addr, KEY, scratch))
    uri = upload(local[len("file://"):], f"compat-sdk-{os.getpid()}-{time.time_ns()}/set")

    started = index.start_import(uri=uri, error_mode="abort")
    deadline = time.monotonic() + 60
    while True:
        described = index.describe_import(started.id)
        if described.status in ("Completed", "Failed", "Cancelled"):
            break
        assert time.monotonic() < deadline, described
        time.sleep(0.05)
    assert described.status == "Completed", described
    assert described.records_imported == 500
    assert described.uri == uri
    stats = index.describe_index_stats()
    assert stats.namespaces["films"].vector_count == 200
    assert stats.namespaces["__default__"].vector_count == 300
    assert index.fetch(ids=["f7"], namespace="films").vectors["f7"].metadata == {"n": 7}
    pc.delete_index("s3-imports")
