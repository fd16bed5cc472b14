//! The seed lifecycle of the README: create index → describe → upsert → query → delete.

use larch_proto::control::{DeleteIndexRequest, DescribeIndexRequest};
use larch_proto::pinecone::{QueryRequest, UpsertRequest, Vector};
use larch_tests::{TestServer, json};

#[tokio::test]
async fn create_describe_upsert_query_delete() {
    let server = TestServer::start().await;
    let (model, mut data) = server.create_index("seed", 3, "cosine").await;
    assert_eq!(model.name, "seed");
    assert!(model.status.as_ref().unwrap().ready);
    assert!(model.host.starts_with("127.0.0.1:"), "{}", model.host);

    let mut control = server.control().await;
    let described = control
        .describe_index(DescribeIndexRequest {
            name: "seed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described, model);

    let upserted = data
        .upsert(UpsertRequest {
            vectors: vec![
                Vector {
                    id: "a".into(),
                    values: vec![1.0, 0.0, 0.0],
                    metadata: json(serde_json::json!({"genre": "drama"})),
                    ..Default::default()
                },
                Vector {
                    id: "b".into(),
                    values: vec![0.0, 1.0, 0.0],
                    ..Default::default()
                },
            ],
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upserted.upserted_count, 2);

    let result = data
        .query(QueryRequest {
            top_k: 2,
            vector: vec![0.9, 0.1, 0.0],
            include_metadata: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = result.matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(result.matches[0].metadata.is_some());

    control
        .delete_index(DeleteIndexRequest {
            name: "seed".into(),
        })
        .await
        .unwrap();
    let err = control
        .describe_index(DescribeIndexRequest {
            name: "seed".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // The index's data plane is gone too.
    assert!(
        data.query(QueryRequest {
            top_k: 1,
            vector: vec![1.0, 0.0, 0.0],
            ..Default::default()
        })
        .await
        .is_err()
    );
    server.stop().await;
}
