"""Issue 18, item 4: Pinecone's freshness check through the SDK 10.2.0, unmodified.

Its REST data plane reads `x-pinecone-request-lsn` into `response_info.lsn_committed` on
writes and `x-pinecone-max-indexed-lsn` into `response_info.lsn_reconciled` on queries, and
`is_reconciled(committed)` is Pinecone's documented read-your-writes check. In Larch every
acknowledged write is visible to the next query, so the check passes at once.
"""

import pytest
from pinecone import Pinecone, ServerlessSpec


@pytest.fixture(scope="module")
def index(larch):
    pc = Pinecone(api_key=larch.key, host=f"http://{larch.addr}", grpc_scheme="http")
    pc.create_index(
        name="fresh",
        dimension=2,
        metric="cosine",
        spec=ServerlessSpec(cloud="aws", region="us-east-1"),
    )
    yield pc.Index(name="fresh")
    pc.delete_index("fresh")


def test_writes_report_growing_lsns_and_queries_reconcile_them(index):
    committed = [
        index.upsert(vectors=[("a", [1.0, 0.0]), ("b", [0.0, 1.0])], namespace="films"),
        index.update(id="a", set_metadata={"genre": "drama"}, namespace="films"),
        index.upsert(vectors=[("c", [0.5, 0.5])]),
    ]
    # The SDK's delete returns None (the header is sent, but it shows no response).
    assert index.delete(ids=["b"], namespace="films") is None
    lsns = [response.response_info.lsn_committed for response in committed]
    assert all(isinstance(lsn, int) for lsn in lsns), lsns
    assert lsns == sorted(set(lsns)), f"LSNs must strictly increase: {lsns}"

    found = index.query(vector=[1.0, 0.0], top_k=5, namespace="films", include_metadata=True)
    assert found.response_info.lsn_reconciled >= lsns[-1]
    assert found.response_info.is_reconciled(lsns[-1])
    # And the answer does reflect every one of those writes, and the delete.
    assert [m.id for m in found.matches] == ["a"]
    assert found.matches[0].metadata == {"genre": "drama"}
    # A read reports no committed position; a write no reconciled one.
    assert found.response_info.lsn_committed is None
    assert committed[0].response_info.lsn_reconciled is None
