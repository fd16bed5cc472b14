"""Pinecone's own Python client (pinecone==10.2.0, unmodified) against a real `larch serve`.

The server is the real binary (see conftest.py); the index is created over gRPC through server
reflection (grpc_requests), exactly as a user exploring with a reflection client would, and then
driven with `pinecone.grpc.GrpcIndex`.

Run: LARCH_BIN=target/debug/larch python -m pytest tests/compat
"""

import re

import pytest
from grpc_requests import Client
from pinecone.errors import ApiError, NotFoundError, UnauthorizedError
from pinecone.grpc import GrpcIndex


@pytest.fixture(scope="module")
def host(larch):
    control = Client.get_by_endpoint(larch.addr).service("larch.control.v1.IndexService")
    model = control.CreateIndex(
        {
            "name": "compat",
            "dimension": 4,
            "metric": "cosine",
            "spec": {"serverless": {"cloud": "aws", "region": "us-west-2"}},
            "deletion_protection": "disabled",
            "tags": {"env": "dev"},
        },
        metadata=[("api-key", larch.key)],
    )
    assert model["status"] == {"ready": True, "state": "Ready"}
    assert model["deletion_protection"] == "disabled"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", model["host"]), model["host"]
    return model["host"]


@pytest.fixture(scope="module")
def index(larch, host):
    return GrpcIndex(host=host, api_key=larch.key, grpc_scheme="http")


def test_upsert_query_fetch_update_delete(index):
    assert index.upsert(
        vectors=[
            ("a", [1.0, 0.0, 0.0, 0.0], {"genre": "drama", "year": 2001}),
            ("b", [0.0, 1.0, 0.0, 0.0], {"genre": "comedy", "tags": ["x", "y"]}),
            ("c", [0.7, 0.7, 0.0, 0.0], {"genre": "comedy", "year": 2010}),
        ],
        namespace="films",
    ).upserted_count == 3

    result = index.query(vector=[1.0, 0.1, 0.0, 0.0], top_k=3, namespace="films", include_metadata=True)
    assert [m.id for m in result.matches] == ["a", "c", "b"]
    assert result.matches[0].metadata == {"genre": "drama", "year": 2001.0}
    assert result.matches[0].score == pytest.approx(1.0 / (1.01 ** 0.5), rel=1e-5)

    filtered = index.query(vector=[1.0, 0.0, 0.0, 0.0], top_k=3, namespace="films", filter={"genre": {"$eq": "comedy"}})
    assert [m.id for m in filtered.matches] == ["c", "b"]

    fetched = index.fetch(ids=["b", "missing"], namespace="films")
    assert set(fetched.vectors) == {"b"}
    assert fetched.vectors["b"].metadata == {"genre": "comedy", "tags": ["x", "y"]}

    assert index.update(id="a", set_metadata={"year": 2002}, namespace="films").matched_records == 1
    assert index.fetch(ids=["a"], namespace="films").vectors["a"].metadata == {"genre": "drama", "year": 2002.0}

    index.delete(ids=["b"], namespace="films")
    stats = index.describe_index_stats()
    assert stats.total_vector_count == 2
    assert stats.dimension == 4


def test_errors_map_to_pinecone_exceptions(host, index):
    with pytest.raises(ApiError, match="index dimension is 4"):
        index.query(vector=[1.0, 0.0], top_k=1)
    with pytest.raises(NotFoundError, match="not found"):
        index.query(id="no-such-id", top_k=1, namespace="films")
    with pytest.raises(UnauthorizedError):
        GrpcIndex(host=host, api_key="wrong", grpc_scheme="http").describe_index_stats()
