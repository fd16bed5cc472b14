"""A sparse index with Pinecone's classic SDK 8.1.2, unmodified: API 2025-10's
`create_index(..., metric="dotproduct", vector_type="sparse")` without a dimension (which
Pinecone Local refuses, python-sdk #679), described without `dimension`, then upserted and
queried with sparse values over gRPC and REST.
"""

import pytest
from pinecone import Pinecone, ServerlessSpec
from pinecone.grpc import GRPCClientConfig, PineconeGRPC

RECORDS = [
    {"id": "a", "sparse_values": {"indices": [10, 3000000000], "values": [0.5, 2.0]}},
    {"id": "b", "sparse_values": {"indices": [10], "values": [1.0]}},
    {"id": "c", "sparse_values": {"indices": [7], "values": [3.0]}},
]
QUERY = {"indices": [10, 3000000000], "values": [1.0, 1.0]}


@pytest.fixture(scope="module")
def pc(larch):
    return PineconeGRPC(api_key=larch.key, host=f"http://{larch.addr}")


def check(index):
    assert index.upsert(vectors=RECORDS, namespace="ns").upserted_count == 3
    result = index.query(sparse_vector=QUERY, top_k=3, namespace="ns")
    # c shares no dimension with the query: dropped, as Pinecone drops zero scores.
    assert [(m.id, m.score) for m in result.matches] == [("a", 2.5), ("b", 1.0)]
    stats = index.describe_index_stats()
    assert stats.total_vector_count == 3
    # 8.1.2's stats model has no vector_type; the dimension is left out, as Pinecone does.
    assert stats.dimension is None


def test_sparse_index_with_the_classic_sdk(pc):
    model = pc.create_index(
        name="classic-sparse",
        metric="dotproduct",
        spec=ServerlessSpec(cloud="aws", region="us-east-1"),
        vector_type="sparse",
    )
    assert model.vector_type == "sparse"
    assert model.dimension is None
    assert model.metric == "dotproduct"
    check(pc.Index(host=model.host, grpc_config=GRPCClientConfig(secure=False)))
    rest = Pinecone(api_key=pc.config.api_key, host=pc.config.host)
    rest_index = rest.Index(host="http://" + model.host)
    result = rest_index.query(sparse_vector=QUERY, top_k=3, namespace="ns")
    assert [m.id for m in result.matches] == ["a", "b"]
    pc.delete_index("classic-sparse")
