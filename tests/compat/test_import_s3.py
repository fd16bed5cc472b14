"""Pinecone's Python SDK 10.2.0 importing from an s3:// bucket prefix (issue 18, item 2).

A server of its own, started with ``--import-allow-s3`` and the test S3 server's ``AWS_*``
variables (``tests/run`` starts moto and exports them with ``LARCH_TEST_S3_URL``). The generated
Parquet set (tests/examples/compat_parquet.rs) is put into a fresh prefix with plain HTTP PUTs
(the compat venv has no boto3; moto takes unsigned writes), then ``index.start_import`` reads it.
Skipped without the server, failing instead with ``LARCH_REQUIRE_S3=1``.
"""

import os
import time
import urllib.request

import pytest
from pinecone import Pinecone, ServerlessSpec

from conftest import KEY, import_ended, parquet_set, serve

S3_URL = os.environ.get("LARCH_TEST_S3_URL", "")


@pytest.fixture(scope="module")
def s3_larch():
    if not S3_URL:
        assert os.environ.get("LARCH_REQUIRE_S3") != "1", (
            "LARCH_REQUIRE_S3=1 but LARCH_TEST_S3_URL is not set: start tests/s3/serve.py"
        )
        pytest.skip("no S3-compatible server (LARCH_TEST_S3_URL is not set; tests/run starts one)")
    with serve("--import-allow-s3") as addr:
        yield addr


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


def test_start_import_from_s3(s3_larch, tmp_path):
    pc = Pinecone(api_key=KEY, host=f"http://{s3_larch}", grpc_scheme="http")
    pc.create_index(
        name="s3-imports", dimension=4, metric="cosine",
        spec=ServerlessSpec(cloud="aws", region="us-east-1"),
    )
    index = pc.Index(name="s3-imports")
    local = parquet_set(tmp_path)
    uri = upload(local, f"compat-sdk-{os.getpid()}-{time.time_ns()}/set")

    started = index.start_import(uri=uri, error_mode="abort")
    described = import_ended(index, started.id)
    assert described.status == "Completed", described
    assert described.records_imported == 500
    assert described.uri == uri
    stats = index.describe_index_stats()
    assert stats.namespaces["films"].vector_count == 200
    assert stats.namespaces["__default__"].vector_count == 300
    assert index.fetch(ids=["f7"], namespace="films").vectors["f7"].metadata == {"n": 7}
    pc.delete_index("s3-imports")
