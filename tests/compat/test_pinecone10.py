"""Pinecone's Python SDK 10.2.0, unmodified, pointed only at Larch's control-plane host.

`Pinecone(api_key=..., host="http://127.0.0.1:PORT")` speaks API 2026-07 over REST to the control
plane (the `schema`/`deployment` shape), and opens indexes by name: the `host` it gets back is
`http://127.0.0.1:PORT` (see the README's host rule), which its REST data plane dials in
plaintext and its gRPC data plane (`grpc=True`, `grpc_scheme="http"`) dials as h2c.
"""

import pinecone
import pytest
from pinecone import Pinecone, ServerlessSpec
from pinecone.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)

from conftest import import_ended, parquet_set

FILMS = [
    ("a", [1.0, 0.0, 0.0, 0.0], {"genre": "drama", "year": 2001}),
    ("b", [0.0, 1.0, 0.0, 0.0], {"genre": "comedy", "tags": ["x", "y"]}),
    ("c", [0.7, 0.7, 0.0, 0.0], {"genre": "comedy", "year": 2010}),
    ("d", [0.0, 0.0, 1.0, 0.0], {"genre": "drama", "year": 1999}),
    ("e", [0.0, 0.0, 0.0, 1.0], {"genre": "horror"}),
]


def test_client_is_10_2_0():
    assert pinecone.__version__ == "10.2.0"


@pytest.fixture(scope="module")
def pc(larch):
    return Pinecone(api_key=larch.key, host=f"http://{larch.addr}", grpc_scheme="http")


def index_lifecycle(pc, name):
    """has/create/describe/list/configure an index; returns its model."""
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
    assert model.host.startswith("http://127.0.0.1:"), model.host
    assert (model.dimension, model.metric, model.vector_type) == (4, "cosine", "dense")
    assert (model.spec.serverless.cloud, model.spec.serverless.region) == ("aws", "us-west-2")
    assert pc.has_index(name)
    assert name in pc.list_indexes().names()

    pc.configure_index(name, deletion_protection="enabled", tags={"team": "search"})
    described = pc.describe_index(name)
    assert described.deletion_protection == "enabled"
    assert dict(described.tags) == {"env": "dev", "team": "search"}
    assert described.host == model.host
    with pytest.raises(ForbiddenError):
        pc.delete_index(name)
    pc.configure_index(name, deletion_protection="disabled")
    return described


def data_lifecycle(index):
    """Every data-plane operation on `index` (4 dimensions, cosine), REST or gRPC."""
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
    assert by_id.matches[0].values == pytest.approx([0.7, 0.7, 0.0, 0.0])
    default_ns = index.query(vector=[1.0, 0.0, 0.0, 0.0], top_k=10)
    assert [m.id for m in default_ns.matches] == ["z"]

    fetched = index.fetch(ids=["b", "missing"], namespace="films")
    assert set(fetched.vectors) == {"b"}
    assert fetched.vectors["b"].metadata == {"genre": "comedy", "tags": ["x", "y"]}
    by_metadata = index.fetch_by_metadata(filter={"genre": "comedy"}, namespace="films")
    assert set(by_metadata.vectors) == {"b", "c"}

    assert index.update(id="a", set_metadata={"year": 2002}, namespace="films").matched_records == 1
    assert index.fetch(ids=["a"], namespace="films").vectors["a"].metadata == {"genre": "drama", "year": 2002.0}
    index.update(id="d", values=[0.0, 0.0, 0.0, 2.0], namespace="films")
    assert index.fetch(ids=["d"], namespace="films").vectors["d"].values == [0.0, 0.0, 0.0, 2.0]

    first = index.list_paginated(namespace="films", limit=2)
    assert [v.id for v in first.vectors] == ["a", "b"]
    second = index.list_paginated(namespace="films", limit=2, pagination_token=first.pagination.next)
    assert [v.id for v in second.vectors] == ["c", "d"]
    pages = list(index.list(namespace="films", limit=2))
    assert [v.id for page in pages for v in page.vectors] == ["a", "b", "c", "d", "e"]
    assert [v.id for v in index.list_paginated(namespace="films", prefix="c").vectors] == ["c"]

    stats = index.describe_index_stats()
    assert stats.total_vector_count == 6
    assert stats.dimension == 4
    assert stats.namespaces["films"].vector_count == 5
    assert stats.namespaces["__default__"].vector_count == 1

    created = index.create_namespace(name="tenant-a")
    assert (created.name, created.record_count) == ("tenant-a", 0)
    with pytest.raises(ConflictError):
        index.create_namespace(name="tenant-a")
    assert index.describe_namespace(name="films").record_count == 5
    names = [ns.name for page in index.list_namespaces() for ns in page.namespaces]
    assert names == ["__default__", "films", "tenant-a"]
    index.delete_namespace(name="tenant-a")
    with pytest.raises(NotFoundError):
        index.describe_namespace(name="tenant-a")

    index.delete(ids=["b"], namespace="films")
    index.delete(filter={"genre": "horror"}, namespace="films")
    assert set(index.fetch(ids=["a", "b", "c", "d", "e"], namespace="films").vectors) == {"a", "c", "d"}
    index.delete(delete_all=True, namespace="films")
    assert index.describe_index_stats().namespaces["films"].vector_count == 0

    with pytest.raises(ApiError, match="index dimension is 4"):
        index.query(vector=[1.0, 0.0], top_k=1)
    with pytest.raises(NotFoundError, match="not found"):
        index.query(id="no-such-id", top_k=1)


def test_rest_lifecycle(pc):
    index_lifecycle(pc, "rest-films")
    index = pc.Index(name="rest-films")
    data_lifecycle(index)
    # s3:// imports are off unless the operator allows them: a clear 412 naming the flag.
    with pytest.raises(ApiError, match="--import-allow-s3"):
        index.start_import(uri="s3://bucket/path")
    pc.delete_index("rest-films")
    assert not pc.has_index("rest-films")
    assert "rest-films" not in pc.list_indexes().names()


def test_grpc_lifecycle(pc):
    index_lifecycle(pc, "grpc-films")
    index = pc.index(name="grpc-films", grpc=True)
    assert type(index).__name__ == "GrpcIndex"
    data_lifecycle(index)
    pc.delete_index("grpc-films")
    assert not pc.has_index("grpc-films")


def test_errors_map_to_pinecone_exceptions(larch, pc):
    wrong = Pinecone(api_key="wrong-key", host=f"http://{larch.addr}", grpc_scheme="http")
    with pytest.raises(UnauthorizedError):
        wrong.list_indexes()
    with pytest.raises(NotFoundError):
        pc.describe_index("no-such-index")
    with pytest.raises(NotFoundError):
        pc.Index(name="no-such-index")
    with pytest.raises(ApiError, match="dimension"):
        pc.create_index(name="bad-dimension", dimension=0, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    with pytest.raises(ApiError, match="dimension"):
        pc.create_index(name="bad-dimension", dimension=20001, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    assert not pc.has_index("bad-dimension")

    pc.create_index(name="errors", dimension=2, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    host = pc.describe_index("errors").host
    with pytest.raises(UnauthorizedError):
        wrong.Index(host=host).describe_index_stats()
    with pytest.raises(UnauthorizedError):
        wrong.index(host=host, grpc=True).describe_index_stats()
    with pytest.raises(ConflictError):
        pc.create_index(name="errors", dimension=2, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1"))
    pc.delete_index("errors")


def test_bulk_import(larch, pc):
    pc.create_index(
        name="imports", dimension=4, metric="cosine", spec=ServerlessSpec(cloud="aws", region="us-east-1")
    )
    index = pc.Index(name="imports")
    uri = "file://" + parquet_set(larch.import_root)

    started = index.start_import(uri=uri, error_mode="continue")
    first = started.id
    described = import_ended(index, first)
    assert described.status == "Completed", described
    assert described.records_imported == 500
    assert described.percent_complete == 100.0
    assert described.uri == uri
    assert described.error is None
    assert described.finished_at is not None
    stats = index.describe_index_stats()
    assert stats.namespaces["films"].vector_count == 200
    assert stats.namespaces["__default__"].vector_count == 300
    assert index.fetch(ids=["f7"], namespace="films").vectors["f7"].metadata == {"n": 7}

    # Cancel: accepted while the import runs (then it ends Cancelled), refused once it ended.
    second = index.start_import(uri=uri).id
    try:
        index.cancel_import(second)
        cancelled = True
    except ApiError as err:
        assert "already ended" in str(err), err
        cancelled = False
    described = import_ended(index, second)
    assert described.status == ("Cancelled" if cancelled else "Completed"), described

    listed = list(index.list_imports())
    assert [imp.id for imp in listed] == [first, second]
    page = index.list_imports_paginated(limit=1)
    assert [imp.id for imp in page] == [first]
    assert page.pagination.next
    page = index.list_imports_paginated(limit=1, pagination_token=page.pagination.next)
    assert [imp.id for imp in page] == [second]

    with pytest.raises(NotFoundError):
        index.describe_import("999")
    # Outside the import root: refused, saying so.
    with pytest.raises(ApiError, match="outside"):
        index.start_import(uri="file:///")
    pc.delete_index("imports")
