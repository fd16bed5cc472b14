//! Restarts: indexes (with their settings and hosts), namespaces (even empty ones), records,
//! sparse values and metadata, and the API key are all the same after a clean restart.

use std::collections::BTreeMap;

use larch_proto::control::{ConfigureIndexRequest, DeleteIndexRequest, ListIndexesRequest};
use larch_proto::pinecone::{
    CreateNamespaceRequest, DeleteRequest, DescribeIndexStatsRequest, FetchRequest,
    ListNamespacesRequest, ListRequest, QueryRequest, SparseValues, UpdateRequest, UpsertRequest,
    Vector,
};
use larch_tests::{DataClient, TestServer, json};
use serde_json::json as j;

/// Everything a client can observe about one index's data, in a comparable form.
async fn snapshot(data: &mut DataClient) -> String {
    let stats = data
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let namespaces = data
        .list_namespaces(ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Map fields are HashMaps: sort them so the text compares.
    let counts: BTreeMap<_, _> = stats.namespaces.iter().collect();
    let mut out = format!(
        "dimension={:?} metric={:?} total={} {counts:?}\n{namespaces:?}\n",
        stats.dimension, stats.metric, stats.total_vector_count
    );
    for ns in &namespaces.namespaces {
        let ids: Vec<String> = data
            .list(ListRequest {
                namespace: ns.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .vectors
            .into_iter()
            .map(|item| item.id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let fetched: BTreeMap<_, _> = data
            .fetch(FetchRequest {
                ids,
                namespace: ns.name.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .vectors
            .into_iter()
            .collect();
        let query = data
            .query(QueryRequest {
                namespace: ns.name.clone(),
                top_k: 10,
                vector: vec![1.0, 0.5, 0.25],
                include_values: true,
                include_metadata: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out += &format!("{}: {fetched:?}\n{:?}\n", ns.name, query.matches);
    }
    out
}

#[tokio::test]
async fn everything_is_the_same_after_a_restart() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("kept", 3, "dotproduct").await;
    let (_, mut gone) = server.create_index("gone", 2, "cosine").await;
    let mut control = server.control().await;
    control
        .configure_index(ConfigureIndexRequest {
            name: "kept".into(),
            deletion_protection: Some("enabled".into()),
            tags: [("env".to_owned(), "prod".to_owned())].into(),
            search: None,
        })
        .await
        .unwrap();
    gone.upsert(UpsertRequest {
        vectors: vec![Vector {
            id: "x".into(),
            values: vec![1.0, 0.0],
            ..Default::default()
        }],
        namespace: String::new(),
    })
    .await
    .unwrap();
    control
        .delete_index(DeleteIndexRequest {
            name: "gone".into(),
        })
        .await
        .unwrap();

    let vector = |id: &str, values: Vec<f32>, metadata: serde_json::Value| Vector {
        id: id.into(),
        values,
        sparse_values: None,
        metadata: json(metadata),
    };
    data.upsert(UpsertRequest {
        vectors: vec![
            vector(
                "a",
                vec![1.0, 0.0, 0.0],
                j!({"genre": "drama", "year": 2001}),
            ),
            vector(
                "b",
                vec![0.0, 1.0, 0.0],
                j!({"tags": ["x", "y"], "ok": true}),
            ),
            Vector {
                sparse_values: Some(SparseValues {
                    indices: vec![3, 70],
                    values: vec![0.5, 2.0],
                }),
                ..vector("c", vec![0.5, 0.5, 0.0], j!({"genre": "comedy"}))
            },
        ],
        namespace: String::new(),
    })
    .await
    .unwrap();
    data.upsert(UpsertRequest {
        vectors: vec![vector("n1", vec![0.0, 0.0, 1.0], j!({"k": 1}))],
        namespace: "films".into(),
    })
    .await
    .unwrap();
    data.update(UpdateRequest {
        id: "a".into(),
        set_metadata: json(j!({"year": 2002, "new": "yes"})),
        ..Default::default()
    })
    .await
    .unwrap();
    data.update(UpdateRequest {
        id: "b".into(),
        values: vec![0.0, 2.0, 0.0],
        ..Default::default()
    })
    .await
    .unwrap();
    data.delete(DeleteRequest {
        ids: vec!["c".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    data.create_namespace(CreateNamespaceRequest {
        name: "empty".into(),
        schema: None,
    })
    .await
    .unwrap();

    let indexes_before = control
        .list_indexes(ListIndexesRequest {})
        .await
        .unwrap()
        .into_inner();
    let data_before = snapshot(&mut data).await;
    assert!(data_before.contains("empty"), "{data_before}");

    let server = server.restart().await;
    let mut control = server.control().await;
    let indexes_after = control
        .list_indexes(ListIndexesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        indexes_after, indexes_before,
        "indexes, settings and hosts survive"
    );
    assert_eq!(
        indexes_after.indexes.len(),
        1,
        "the deleted index stays deleted"
    );
    let host = &indexes_after.indexes[0].host;
    larch_tests::wait_serving(host).await;
    let mut data = server.data(host).await;
    assert_eq!(snapshot(&mut data).await, data_before);

    // Writes keep working after recovery, and survive another restart.
    data.upsert(UpsertRequest {
        vectors: vec![vector("d", vec![0.1, 0.2, 0.3], j!({}))],
        namespace: "films".into(),
    })
    .await
    .unwrap();
    let data_before = snapshot(&mut data).await;
    let server = server.restart().await;
    let mut data = server.data(host).await;
    larch_tests::wait_serving(host).await;
    assert_eq!(snapshot(&mut data).await, data_before);
    server.stop().await;
}
