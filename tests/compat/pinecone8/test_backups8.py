"""Backups and restore with Pinecone's classic Python SDK 8.1.2, unmodified: API 2025-10, whose
generated models check every field's type (so optional fields must be absent, not null)."""

import pytest
from pinecone import Pinecone, ServerlessSpec
from pinecone.exceptions import NotFoundException


@pytest.fixture(scope="module")
def pc(larch):
    return Pinecone(api_key=larch.key, host=f"http://{larch.addr}")


def test_classic_backups_round_trip(pc):
    pc.create_index(
        name="bk8-source",
        dimension=2,
        metric="dotproduct",
        spec=ServerlessSpec(cloud="aws", region="us-east-1"),
    )
    host = pc.describe_index("bk8-source").host
    index = pc.Index(host="http://" + host)
    index.upsert(vectors=[("a", [1.0, 0.0]), ("b", [0.0, 1.0])])

    backup = pc.create_backup(index_name="bk8-source", backup_name="classic")
    assert (backup.status, backup.dimension, backup.metric, backup.record_count) == (
        "Ready",
        2,
        "dotproduct",
        2,
    )
    assert backup.backup_id in [b.backup_id for b in pc.list_backups(index_name="bk8-source")]
    assert pc.describe_backup(backup_id=backup.backup_id).name == "classic"
    index.upsert(vectors=[("late", [1.0, 1.0])])

    restored = pc.create_index_from_backup(name="bk8-copy", backup_id=backup.backup_id)
    assert restored.status.ready
    copy = pc.Index(host="http://" + pc.describe_index("bk8-copy").host)
    assert copy.describe_index_stats().total_vector_count == 2
    job = pc.list_restore_jobs().data[0]
    assert pc.describe_restore_job(job_id=job.restore_job_id).status == "Completed"

    pc.delete_backup(backup_id=backup.backup_id)
    with pytest.raises(NotFoundException):
        pc.describe_backup(backup_id=backup.backup_id)
    for name in ("bk8-source", "bk8-copy"):
        pc.delete_index(name)
