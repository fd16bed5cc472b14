"""Pinecone's documented sparse-index examples with its Python SDK 10.2.0, unmodified.

Pinecone's guide "Indexes with sparse vectors" creates a sparse index with
`create_index(..., metric="dotproduct", vector_type="sparse")` and no dimension, upserts records
of `sparse_values` (indices are uint32 token hashes, many above 2**31) and metadata, queries with
`sparse_vector` (and by id), and reads `describe_index_stats`. The same calls run here over REST
(`pc.Index`) and gRPC (`pc.index(..., grpc=True)`).
"""

import pytest
from pinecone import Pinecone, ServerlessSpec
from pinecone.errors import ApiError

# The records of the guide's example: chunks of financial news as sparse vectors.
RECORDS = [
    {
        "id": "vec1",
        "sparse_values": {
            "values": [1.7958984, 0.41577148, 2.828125, 2.8027344, 5.3671875],
            "indices": [822745112, 1009084850, 1221765879, 1408993854, 3517203014],
        },
        "metadata": {
            "chunk_text": "AAPL reported a year-over-year revenue increase, expecting stronger Q3 demand.",
            "category": "technology",
            "quarter": "Q3",
        },
    },
    {
        "id": "vec2",
        "sparse_values": {
            "values": [0.4362793, 3.3457031, 2.7714844, 3.0273438],
            "indices": [2999376487, 3517203014, 3590924191, 4051519290],
        },
        "metadata": {
            "chunk_text": "Analysts suggest that AAPL's upcoming Q4 product launch may outpace the market.",
            "category": "technology",
            "quarter": "Q4",
        },
    },
    {
        "id": "vec3",
        "sparse_values": {
            "values": [2.6875, 4.2929688, 3.609375],
            "indices": [131900689, 592326839, 710158994],
        },
        "metadata": {
            "chunk_text": "AAPL's strategic Q3 partnerships with semiconductor suppliers could boost margins.",
            "category": "technology",
            "quarter": "Q3",
        },
    },
]

QUERY = {"values": [4.4414062, 3.3554688], "indices": [3517203014, 3590924191]}


def dot(a, b):
    weights = dict(zip(a["indices"], a["values"]))
    return sum(weights.get(i, 0.0) * v for i, v in zip(b["indices"], b["values"]))


@pytest.fixture(scope="module")
def pc(larch):
    return Pinecone(api_key=larch.key, host=f"http://{larch.addr}", grpc_scheme="http")


def create_sparse_index(pc, name):
    """The guide's create call: no dimension, dotproduct, vector_type sparse."""
    if not pc.has_index(name):
        pc.create_index(
            name=name,
            metric="dotproduct",
            spec=ServerlessSpec(cloud="aws", region="us-east-1"),
            vector_type="sparse",
        )
    model = pc.describe_index(name)
    assert model.vector_type == "sparse"
    assert model.dimension is None
    assert model.metric == "dotproduct"
    return model


def sparse_lifecycle(index):
    """Upsert, query by sparse vector and by id, filter, fetch, update, stats and delete."""
    assert index.upsert(namespace="example-namespace", vectors=RECORDS).upserted_count == 3

    results = index.query(
        namespace="example-namespace",
        sparse_vector=QUERY,
        top_k=3,
        include_metadata=True,
        include_values=False,
    )
    # vec3 shares no token with the query: a sparse index drops zero scores, as Pinecone does.
    expected = sorted(
        ((r["id"], dot(QUERY, r["sparse_values"])) for r in RECORDS[:2]),
        key=lambda m: -m[1],
    )
    assert [m.id for m in results.matches] == [id for id, _ in expected]
    for match, (_, score) in zip(results.matches, expected):
        assert match.score == pytest.approx(score, rel=1e-5)
    assert results.matches[0].metadata["category"] == "technology"

    q3 = index.query(
        namespace="example-namespace",
        sparse_vector=QUERY,
        top_k=3,
        filter={"quarter": {"$eq": "Q3"}},
    )
    assert [m.id for m in q3.matches] == ["vec1"]

    by_id = index.query(namespace="example-namespace", id="vec2", top_k=2, include_values=True)
    assert [m.id for m in by_id.matches] == ["vec2", "vec1"]
    assert list(by_id.matches[0].sparse_values.indices) == sorted(RECORDS[1]["sparse_values"]["indices"])

    fetched = index.fetch(ids=["vec3"], namespace="example-namespace").vectors["vec3"]
    assert list(fetched.sparse_values.indices) == RECORDS[2]["sparse_values"]["indices"]
    assert not fetched.values

    index.update(
        id="vec3",
        sparse_values={"indices": [3590924191], "values": [10.0]},
        namespace="example-namespace",
    )
    top = index.query(namespace="example-namespace", sparse_vector=QUERY, top_k=1)
    assert [m.id for m in top.matches] == ["vec3"]

    stats = index.describe_index_stats()
    assert stats.total_vector_count == 3
    assert stats.namespaces["example-namespace"].vector_count == 3
    assert stats.vector_type == "sparse"
    assert stats.metric == "dotproduct"
    assert not stats.dimension

    # Dense values have no place in a sparse index.
    with pytest.raises(ApiError) as refused:
        index.upsert(namespace="example-namespace", vectors=[("dense", [0.1, 0.2])])
    assert "sparse" in str(refused.value)

    index.delete(ids=["vec1"], namespace="example-namespace")
    left = index.query(namespace="example-namespace", sparse_vector=QUERY, top_k=3)
    assert [m.id for m in left.matches] == ["vec3", "vec2"]


def test_sparse_index_over_rest(pc):
    create_sparse_index(pc, "example-sparse-index")
    sparse_lifecycle(pc.Index(name="example-sparse-index"))
    pc.delete_index("example-sparse-index")


def test_sparse_index_over_grpc(pc):
    create_sparse_index(pc, "example-sparse-grpc")
    sparse_lifecycle(pc.index(name="example-sparse-grpc", grpc=True))
    pc.delete_index("example-sparse-grpc")

