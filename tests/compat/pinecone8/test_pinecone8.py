"""Pinecone's classic Python SDK 8.1.2 (`pinecone[grpc]`), unmodified, against Larch.

It speaks API 2025-10: the control plane answers in the classic `spec`/`dimension`/`metric`
shape with a bare `host:port`, which its gRPC client dials with `GRPCClientConfig(secure=False)`
(8.x strips only `https://`, so a scheme would break it). Its REST data plane needs the scheme
spelled out: `pc.Index(host="http://" + host)`.

Runs in its own virtualenv (.venv-pinecone8, created by tests/run), since 8.1.2 and 10.2.0
cannot share one.
"""

import pinecone
import pytest
from pinecone import Pinecone, ServerlessSpec
from pinecone.exceptions import (
    ForbiddenException,
    NotFoundException,
    PineconeApiException,
    PineconeException,
    UnauthorizedException,
)
from pinecone.grpc import GRPCClientConfig, PineconeGRPC

FILMS = [
    ("a", [1.0, 0.0, 0.0, 0.0], {"genre": "drama", "year": 2001}),
    ("b", [0.0, 1.0, 0.0, 0.0], {"genre": "comedy", "tags": ["x", "y"]}),
    ("c", [0.7, 0.7, 0.0, 0.0], {"genre": "comedy", "year": 2010}),
    ("d", [0.0, 0.0, 1.0, 0.0], {"genre": "drama", "year": 1999}),
    ("e", [0.0, 0.0, 0.0, 1.0], {"genre": "horror"}),
]


def test_client_is_8_1_2():
    assert pinecone.__version__ == "8.1.2"


@pytest.fixture(scope="module")
def pc(larch):
    return PineconeGRPC(api_key=larch.key, host=f"http://{larch.addr}")


def index_lifecycle(pc, name):
    """has/create/describe/list/configure an index; returns its bare host."""
    assert not pc.has_index(name)
    model = pc.create_index(
        name=name,
        dimension=4,
        metric="cosine",
        spec=ServerlessSpec(cloud="aws", region="us-west-2"),
        deletion_protection="disabled",
        tags={"env": "dev"},
    )
    assert model.status.ready
    host = model.host
    assert host.startswith("127.0.0.1:") and "://" not in host, host
    assert pc.has_index(name)
    assert name in pc.list_indexes().names()
    described = pc.describe_index(name)
    assert (described.dimension, described.metric, described.vector_type) == (4, "cosine", "dense")
    assert described.spec.serverless.region == "us-west-2"

    pc.configure_index(name, deletion_protection="enabled", tags={"team": "search"})
    described = pc.describe_index(name)
    assert described.deletion_protection == "enabled"
    assert described.tags.to_dict() == {"env": "dev", "team": "search"}
    with pytest.raises(ForbiddenException):
        pc.delete_index(name)
    pc.configure_index(name, deletion_protection="disabled")
    return host


def data_lifecycle(index):
    """Every data-plane operation on `index` (4 dimensions, cosine), gRPC or REST."""
    assert index.upsert(vectors=FILMS, namespace="films").upserted_count == 5
    assert index.upsert(vectors=[("z", [0.5, 0.5, 0.5, 0.5], {"genre": "drama"})]).upserted_count == 1

    result = index.query(vector=[1.0, 0.1, 0.0, 0.0], top_k=3, namespace="films", include_metadata=True)
    assert [m.id for m in result.matches] == ["a", "c", "b"]
    assert result.matches[0].metadata == {"genre": "drama", "year": 2001.0}
    assert result.matches[0].score == pytest.approx(1.0 / (1.01**0.5), rel=1e-5)
    filtered = index.query(
        vector=[1.0, 0.0, 0.0, 0.0],
        top_k=5,
        namespace="films",
        filter={"$and": [{"genre": {"$eq": "drama"}}, {"year": {"$gte": 2000}}]},
    )
    assert [m.id for m in filtered.matches] == ["a"]
    by_id = index.query(id="c", top_k=2, namespace="films", include_values=True, filter={"genre": "comedy"})
    assert [m.id for m in by_id.matches] == ["c", "b"]
    assert list(by_id.matches[0].values) == pytest.approx([0.7, 0.7, 0.0, 0.0])

    fetched = index.fetch(ids=["b", "missing"], namespace="films")
    assert set(fetched.vectors) == {"b"}
    assert fetched.vectors["b"].metadata == {"genre": "comedy", "tags": ["x", "y"]}

    index.update(id="a", set_metadata={"year": 2002}, namespace="films")
    assert index.fetch(ids=["a"], namespace="films").vectors["a"].metadata == {"genre": "drama", "year": 2002.0}

    first = index.list_paginated(namespace="films", limit=2)
    assert [v.id for v in first.vectors] == ["a", "b"]
    second = index.list_paginated(namespace="films", limit=2, pagination_token=first.pagination.next)
    assert [v.id for v in second.vectors] == ["c", "d"]
    assert [i for page in index.list(namespace="films", limit=2) for i in page] == ["a", "b", "c", "d", "e"]

    stats = index.describe_index_stats()
    assert stats.total_vector_count == 6
    assert stats.dimension == 4
    assert stats.namespaces["films"].vector_count == 5

    assert index.describe_namespace(namespace="films").record_count == 5
    names = [ns.name for ns in index.list_namespaces()]
    assert "films" in names
    index.delete_namespace(namespace="films")
    with pytest.raises(PineconeException):
        index.describe_namespace(namespace="films")

    index.delete(ids=["z"])
    assert index.describe_index_stats().total_vector_count == 0


def test_grpc_lifecycle(pc):
    host = index_lifecycle(pc, "grpc8-films")
    index = pc.Index(host=host, grpc_config=GRPCClientConfig(secure=False))
    data_lifecycle(index)
    index.upsert(vectors=[("n", [1.0, 0.0, 0.0, 0.0])], namespace="tenant")
    assert index.create_namespace(name="tenant-b").name == "tenant-b"
    with pytest.raises(PineconeException, match="index dimension is 4"):
        index.query(vector=[1.0, 0.0], top_k=1)
    pc.delete_index("grpc8-films")
    assert not pc.has_index("grpc8-films")


def test_rest_data_plane_with_an_explicit_http_host(larch, pc):
    host = index_lifecycle(pc, "rest8-films")
    index = Pinecone(api_key=larch.key, host=f"http://{larch.addr}").Index(host=f"http://{host}")
    data_lifecycle(index)
    with pytest.raises(PineconeApiException, match="index dimension is 4"):
        index.query(vector=[1.0, 0.0], top_k=1)
    pc.delete_index("rest8-films")
    assert not pc.has_index("rest8-films")


def test_errors_map_to_pinecone_exceptions(larch, pc):
    wrong = PineconeGRPC(api_key="wrong-key", host=f"http://{larch.addr}")
    with pytest.raises(UnauthorizedException):
        wrong.list_indexes()
    with pytest.raises(NotFoundException):
        pc.describe_index("no-such-index")
    # 8.x checks the dimension range itself; the server's checks show through other fields.
    with pytest.raises(PineconeApiException, match="name: "):
        pc.create_index(name="Bad_Name", dimension=2, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    pc.create_index(name="errors8", dimension=2, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    host = pc.describe_index("errors8").host
    rest = Pinecone(api_key=larch.key, host=f"http://{larch.addr}").Index(host=f"http://{host}")
    with pytest.raises(PineconeApiException, match="index dimension is 2"):
        rest.upsert(vectors=[("x", [1.0, 0.0, 0.0])])
    with pytest.raises(PineconeException, match="index dimension is 2"):
        pc.Index(host=host, grpc_config=GRPCClientConfig(secure=False)).upsert(vectors=[("x", [1.0, 0.0, 0.0])])
    with pytest.raises(PineconeException, match="invalid api key"):
        wrong.Index(host=host, grpc_config=GRPCClientConfig(secure=False)).describe_index_stats()
    with pytest.raises(UnauthorizedException):
        Pinecone(api_key="wrong-key", host=f"http://{larch.addr}").Index(host=f"http://{host}").describe_index_stats()
    pc.delete_index("errors8")
