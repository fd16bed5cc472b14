"""Backups and restore with Pinecone's Python SDK 10.2.0, unmodified (issue 18, item 3).

The SDK's own calls — ``create_backup``, ``list_backups``, ``describe_backup``,
``create_index_from_backup`` (which polls the new index until it is Ready),
``list_restore_jobs``, ``describe_restore_job`` and ``delete_backup`` — against Larch's control
plane: a restore holds exactly the records written before the backup, and the backup outlives
its index.
"""

import pytest
from pinecone import Pinecone, ServerlessSpec
from pinecone.errors import ConflictError, NotFoundError

ROWS = [("a", [1.0, 0.0]), ("b", [0.0, 1.0]), ("c", [0.5, 0.5])]


@pytest.fixture(scope="module")
def pc(larch):
    return Pinecone(api_key=larch.key, host=f"http://{larch.addr}")


def test_back_up_write_more_restore_and_delete(pc):
    pc.create_index(
        name="bk-source",
        dimension=2,
        metric="euclidean",
        spec=ServerlessSpec(cloud="aws", region="us-east-1"),
        tags={"env": "dev"},
    )
    source = pc.Index(name="bk-source")
    assert source.upsert(vectors=ROWS, namespace="films").upserted_count == 3

    backup = pc.create_backup(
        index_name="bk-source", backup_name="nightly", description="three films"
    )
    assert backup.status == "Ready"
    assert (backup.source_index_name, backup.name, backup.description) == (
        "bk-source",
        "nightly",
        "three films",
    )
    assert (backup.record_count, backup.namespace_count) == (3, 1)
    assert backup.size_bytes > 0
    assert backup.schema.fields["_values"].dimension == 2
    assert pc.describe_backup(backup_id=backup.backup_id).backup_id == backup.backup_id
    assert [b.backup_id for b in pc.list_backups(index_name="bk-source")] == [backup.backup_id]
    assert backup.backup_id in [b.backup_id for b in pc.list_backups()]

    # Written after the backup: not in the restore.
    source.upsert(vectors=[("late", [2.0, 2.0])], namespace="films")

    restored = pc.create_index_from_backup(name="bk-restored", backup_id=backup.backup_id)
    assert restored.status.ready
    assert restored.tags == {"env": "dev"}
    index = pc.Index(name="bk-restored")
    fetched = index.fetch(ids=["a", "b", "c", "late"], namespace="films").vectors
    assert set(fetched) == {"a", "b", "c"}
    assert fetched["c"].values == [0.5, 0.5]
    assert index.describe_index_stats().total_vector_count == 3

    jobs = pc.list_restore_jobs()
    job = next(j for j in jobs.data if j.target_index_name == "bk-restored")
    assert (job.backup_id, job.status, job.percent_complete) == (
        backup.backup_id,
        "Completed",
        100,
    )
    described = pc.describe_restore_job(job_id=job.restore_job_id)
    assert described.status == "Completed"
    assert described.completed_at is not None

    # A taken name is refused; the backup outlives its index.
    with pytest.raises(ConflictError):
        pc.create_index_from_backup(name="bk-restored", backup_id=backup.backup_id, timeout=-1)
    pc.delete_index("bk-source")
    assert pc.describe_backup(backup_id=backup.backup_id).source_index_deleted_at is not None
    again = pc.create_index_from_backup(name="bk-source", backup_id=backup.backup_id)
    assert again.status.ready
    assert pc.Index(name="bk-source").describe_index_stats().total_vector_count == 3

    pc.delete_backup(backup_id=backup.backup_id)
    with pytest.raises(NotFoundError):
        pc.describe_backup(backup_id=backup.backup_id)
    with pytest.raises(NotFoundError):
        pc.describe_restore_job(job_id="no-such-job")
    for name in ("bk-source", "bk-restored"):
        pc.delete_index(name)
