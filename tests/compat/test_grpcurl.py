"""Exploring Larch with grpcurl (`cargo install --locked grpcurl-rs`) through server reflection:
list the services, describe a message, and call the control plane and `VectorService` with JSON —
the README's walk-through, run for real.

Skipped when no `grpcurl` is installed, unless LARCH_REQUIRE_GRPCURL=1 (set by .ci/run, which
installs it).
"""

import json
import os
import shutil
import subprocess

import pytest


def find_grpcurl():
    found = shutil.which("grpcurl")
    cargo_bin = os.path.expanduser("~/.cargo/bin/grpcurl")
    if found is None and os.access(cargo_bin, os.X_OK):
        found = cargo_bin
    if found is None:
        if os.environ.get("LARCH_REQUIRE_GRPCURL") == "1":
            pytest.fail("grpcurl is required: cargo install --locked grpcurl-rs")
        pytest.skip("grpcurl not installed (cargo install --locked grpcurl-rs)")
    return found


@pytest.fixture(scope="module")
def grpcurl(larch):
    binary = find_grpcurl()

    def run(*args, key=larch.key, data=None, check=True):
        command = [binary, "-plaintext"]
        if key is not None:
            command += ["-H", f"api-key: {key}"]
        if data is not None:
            command += ["-d", json.dumps(data)]
        done = subprocess.run(command + list(args), capture_output=True, text=True, timeout=30)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    return run


def test_walk_through(larch, grpcurl):
    listed = grpcurl(larch.addr, "list", key=None).stdout.split()
    for service in ["VectorService", "larch.control.v1.IndexService", "grpc.health.v1.Health"]:
        assert service in listed

    model = json.loads(
        grpcurl(
            larch.addr,
            "larch.control.v1.IndexService/CreateIndex",
            data={
                "name": "grpcurl-index",
                "dimension": 3,
                "metric": "cosine",
                "spec": {"serverless": {"cloud": "aws", "region": "us-west-2"}},
                "deletion_protection": "disabled",
                "tags": {"env": "dev"},
            },
        ).stdout
    )
    host = model["host"]
    assert model["status"] == {"ready": True, "state": "Ready"}

    assert "VectorService" in grpcurl(host, "list", key=None).stdout.split()
    described = grpcurl(host, "describe", "QueryRequest", key=None).stdout
    assert "uint32 top_k = 2;" in described
    assert "repeated float vector = 7;" in described

    upserted = grpcurl(
        host,
        "VectorService/Upsert",
        data={
            "vectors": [
                {"id": "a", "values": [1, 0, 0], "metadata": {"genre": "drama", "year": 2001}},
                {"id": "b", "values": [0, 1, 0], "metadata": {"genre": "comedy", "tags": ["x", "y"]}},
            ]
        },
    )
    assert json.loads(upserted.stdout) == {"upsertedCount": 2}

    queried = grpcurl(
        host,
        "VectorService/Query",
        data={"vector": [0.9, 0.1, 0], "topK": 2, "filter": {"genre": {"$eq": "drama"}}, "includeMetadata": True},
    )
    matches = json.loads(queried.stdout)["matches"]
    assert [m["id"] for m in matches] == ["a"]
    assert matches[0]["metadata"] == {"genre": "drama", "year": 2001}

    refused = grpcurl(host, "VectorService/Query", key=None, data={"vector": [1, 0, 0], "topK": 1}, check=False)
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stdout + refused.stderr

    grpcurl(larch.addr, "larch.control.v1.IndexService/DeleteIndex", data={"name": "grpcurl-index"})
