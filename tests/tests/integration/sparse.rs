//! Sparse-only indexes (issue 18, item 5) through the real servers: created through the
//! control plane with `vector_type: "sparse"`, written, queried by sparse vector and by id
//! (with a filter), updated, deleted, and the same after a restart; wrong input is refused
//! with INVALID_ARGUMENT naming the field.

use larch_proto::control::{CreateIndexRequest, DescribeIndexRequest, IndexModel};
use larch_proto::pinecone::{
    DeleteRequest, DescribeIndexStatsRequest, FetchRequest, QueryRequest, ScoredVector,
    SparseValues, UpdateRequest, UpsertRequest, Vector,
};
use larch_tests::{DataClient, TestServer, json, wait_serving};
use serde_json::json as j;
use tonic::{Code, Response, Status};

fn sparse(indices: &[u32], values: &[f32]) -> Option<SparseValues> {
    Some(SparseValues {
        indices: indices.to_vec(),
        values: values.to_vec(),
    })
}

fn record(id: &str, indices: &[u32], values: &[f32], genre: &str) -> Vector {
    Vector {
        id: id.into(),
        values: Vec::new(),
        sparse_values: sparse(indices, values),
        metadata: json(j!({ "genre": genre })),
    }
}

fn invalid<T: std::fmt::Debug>(result: Result<Response<T>, Status>, parts: &[&str]) {
    let status = match result {
        Ok(response) => panic!("expected INVALID_ARGUMENT, got {:?}", response.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    for part in parts {
        assert!(
            status.message().contains(part),
            "message {:?} lacks {part:?}",
            status.message()
        );
    }
}

fn create_sparse(name: &str) -> CreateIndexRequest {
    CreateIndexRequest {
        name: name.into(),
        vector_type: Some("sparse".into()),
        ..Default::default()
    }
}

async fn create(server: &TestServer, name: &str) -> (IndexModel, DataClient) {
    let model = server
        .control()
        .await
        .create_index(create_sparse(name))
        .await
        .unwrap()
        .into_inner();
    wait_serving(&model.host).await;
    let data = server.data(&model.host).await;
    (model, data)
}

/// Ids and scores of a query's matches.
fn ranked(matches: &[ScoredVector]) -> Vec<(&str, f32)> {
    matches.iter().map(|m| (m.id.as_str(), m.score)).collect()
}

async fn query(data: &mut DataClient, request: QueryRequest) -> Vec<ScoredVector> {
    data.query(QueryRequest {
        top_k: 10,
        ..request
    })
    .await
    .unwrap()
    .into_inner()
    .matches
}

fn by_sparse(indices: &[u32], values: &[f32]) -> QueryRequest {
    QueryRequest {
        sparse_vector: sparse(indices, values),
        ..Default::default()
    }
}

#[tokio::test]
async fn sparse_indexes_are_created_without_a_dimension_and_only_as_dotproduct() {
    let server = TestServer::start().await;
    let mut control = server.control().await;
    let (model, _) = create(&server, "splade").await;
    assert_eq!(model.vector_type, "sparse");
    assert_eq!(model.metric, "dotproduct");
    assert_eq!(model.dimension, None);
    let described = control
        .describe_index(DescribeIndexRequest {
            name: "splade".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described, model);

    invalid(
        control
            .create_index(CreateIndexRequest {
                metric: Some("cosine".into()),
                ..create_sparse("cosine")
            })
            .await,
        &["metric", "dotproduct"],
    );
    invalid(
        control
            .create_index(CreateIndexRequest {
                dimension: Some(8),
                ..create_sparse("sized")
            })
            .await,
        &["dimension", "sparse index has no dimension"],
    );
    server.stop().await;
}

#[tokio::test]
async fn sparse_records_are_queried_updated_deleted_and_survive_a_restart() {
    let server = TestServer::start().await;
    let (model, mut data) = create(&server, "splade").await;
    data.upsert(UpsertRequest {
        vectors: vec![
            record("a", &[10, 45, 16], &[0.5, 0.5, 0.2], "drama"),
            record("b", &[12, 45], &[1.0, 0.25], "comedy"),
            record("c", &[7], &[3.0], "drama"),
            record("d", &[10, 99], &[2.0, 1.0], "comedy"),
        ],
        namespace: "films".into(),
    })
    .await
    .unwrap();

    // Only records sharing a dimension with the query match; c shares none.
    let query_vector = by_sparse(&[10, 45], &[1.0, 2.0]);
    let matches = query(
        &mut data,
        QueryRequest {
            namespace: "films".into(),
            include_values: true,
            include_metadata: true,
            ..query_vector.clone()
        },
    )
    .await;
    assert_eq!(ranked(&matches), [("d", 2.0), ("a", 1.5), ("b", 0.5)]);
    assert!(
        matches[0].values.is_empty(),
        "a sparse record has no dense values"
    );
    assert_eq!(matches[0].sparse_values, sparse(&[10, 99], &[2.0, 1.0]));

    let drama = query(
        &mut data,
        QueryRequest {
            namespace: "films".into(),
            filter: json(j!({"genre": "drama"})),
            ..query_vector.clone()
        },
    )
    .await;
    assert_eq!(ranked(&drama), [("a", 1.5)]);

    // By id: the stored record's sparse values are the query (a·d = 0.5·2).
    let by_id = query(
        &mut data,
        QueryRequest {
            namespace: "films".into(),
            id: "a".into(),
            ..Default::default()
        },
    )
    .await;
    let expected_by_id: Vec<(&str, f32)> = ["d", "a", "b"]
        .into_iter()
        .map(|id| (id, expected_by_id(id)))
        .collect();
    assert_eq!(ranked(&by_id), expected_by_id);

    // New sparse values move c to the top; a delete removes b.
    data.update(UpdateRequest {
        id: "c".into(),
        sparse_values: sparse(&[45], &[4.0]),
        namespace: "films".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    data.delete(DeleteRequest {
        ids: vec!["b".into()],
        namespace: "films".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let expected = [("c", 8.0), ("d", 2.0), ("a", 1.5)];
    let namespace = |request: QueryRequest| QueryRequest {
        namespace: "films".into(),
        ..request
    };
    assert_eq!(
        ranked(&query(&mut data, namespace(query_vector.clone())).await),
        expected
    );

    let stats = data
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.dimension, None, "a sparse index reports no dimension");
    assert_eq!(stats.vector_type.as_deref(), Some("sparse"));
    assert_eq!(stats.metric.as_deref(), Some("dotproduct"));
    assert_eq!(stats.total_vector_count, 3);

    // Durable: the same answers after a restart (the inverted index is rebuilt on open).
    let server = server.restart().await;
    wait_serving(&model.host).await;
    let mut data = server.data(&model.host).await;
    assert_eq!(
        ranked(&query(&mut data, namespace(query_vector)).await),
        expected
    );
    let fetched = data
        .fetch(FetchRequest {
            ids: vec!["c".into(), "b".into()],
            namespace: "films".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .vectors;
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched["c"].sparse_values, sparse(&[45], &[4.0]));
    server.stop().await;
}

/// The score of each record queried by record a's sparse values ({10: 0.5, 16: 0.2, 45: 0.5}).
fn expected_by_id(id: &str) -> f32 {
    match id {
        "a" => 0.5 * 0.5 + 0.2 * 0.2 + 0.5 * 0.5,
        "d" => 0.5 * 2.0,
        "b" => 0.5 * 0.25,
        other => panic!("unexpected match {other}"),
    }
}

#[tokio::test]
async fn wrong_input_for_a_sparse_index_is_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let (_, mut data) = create(&server, "splade").await;
    invalid(
        data.upsert(UpsertRequest {
            vectors: vec![Vector {
                values: vec![0.1, 0.2],
                ..record("a", &[1], &[1.0], "drama")
            }],
            namespace: String::new(),
        })
        .await,
        &["vectors[0].values", "sparse index"],
    );
    invalid(
        data.upsert(UpsertRequest {
            vectors: vec![Vector {
                sparse_values: None,
                ..record("a", &[1], &[1.0], "drama")
            }],
            namespace: String::new(),
        })
        .await,
        &["vectors[0].sparse_values", "required"],
    );
    invalid(
        data.query(QueryRequest {
            top_k: 3,
            vector: vec![0.5, 0.5],
            ..Default::default()
        })
        .await,
        &["vector", "sparse_vector"],
    );
    invalid(
        data.query(QueryRequest {
            top_k: 3,
            ..Default::default()
        })
        .await,
        &["sparse_vector", "id"],
    );
    invalid(
        data.update(UpdateRequest {
            id: "a".into(),
            values: vec![1.0],
            ..Default::default()
        })
        .await,
        &["values", "sparse index"],
    );
    server.stop().await;
}

#[tokio::test]
async fn rest_creates_and_describes_sparse_indexes_in_both_shapes_and_serves_them() {
    use http::StatusCode;

    use crate::rest_client::Rest;

    let server = TestServer::start().await;
    let control = Rest::new(&server.control_addr.to_string()).key(&server.key);
    // What pinecone 8.1.2 sends: the classic body without a dimension.
    let classic = control
        .clone()
        .version("2025-10")
        .post(
            "/indexes",
            j!({"name": "classic", "metric": "dotproduct", "vector_type": "sparse",
                "spec": {"serverless": {"cloud": "aws", "region": "us-east-1"}}}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(classic["vector_type"], "sparse");
    assert_eq!(classic["metric"], "dotproduct");
    assert!(classic.get("dimension").is_none(), "{classic}");
    // What pinecone 10.2.0 sends: a schema of `_sparse_values` alone.
    let schema = control
        .clone()
        .version("2026-07")
        .post(
            "/indexes",
            j!({"name": "schema", "schema": {"fields": {"_sparse_values": {"type": "sparse_vector"}}},
                "deployment": {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"}}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        schema["schema"],
        j!({"fields": {"_sparse_values": {"type": "sparse_vector"}}})
    );
    let described = control
        .clone()
        .version("2025-10")
        .get("/indexes/schema")
        .await
        .expect(StatusCode::OK);
    assert_eq!(described["vector_type"], "sparse");

    let host = classic["host"].as_str().unwrap().to_owned();
    wait_serving(&host).await;
    let data = Rest::new(&host).key(&server.key);
    data.post(
        "/vectors/upsert",
        j!({"vectors": [
            {"id": "a", "sparseValues": {"indices": [4000000000u32, 3], "values": [1.5, 1.0]}},
            {"id": "b", "sparseValues": {"indices": [3], "values": [2.0]}}
        ]}),
    )
    .await
    .expect(StatusCode::OK);
    let answer = data
        .post(
            "/query",
            j!({"topK": 5, "sparseVector": {"indices": [4000000000u32], "values": [2.0]}}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(answer["matches"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["matches"][0]["id"], "a");
    assert_eq!(answer["matches"][0]["score"], 3.0);
    let stats = data
        .post("/describe_index_stats", j!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(stats["vectorType"], "sparse");
    assert!(stats.get("dimension").is_none(), "{stats}");
    let refused = data
        .post("/query", j!({"topK": 5, "vector": [0.1, 0.2]}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("sparse index"),
        "{refused}"
    );
    server.stop().await;
}
