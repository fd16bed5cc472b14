//! Issue 18, item 4: Pinecone's freshness headers. Every write (upsert, update, delete)
//! answers `x-pinecone-request-lsn` and every query `x-pinecone-max-indexed-lsn`, over gRPC
//! (initial metadata) and REST (headers), in the embedded and the split data plane; LSNs only
//! grow, across namespaces and across a restart (with and without a flush before it).

use http::StatusCode;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{DeleteRequest, QueryRequest, UpdateRequest, UpsertRequest, Vector};
use larch_tests::{DataClient, KeyInterceptor, TestServer, json};
use serde_json::json as j;
use tonic::metadata::MetadataMap;

use crate::rest_client::{Reply, Rest};
use crate::routed_server::RoutedServer;

const REQUEST_LSN: &str = "x-pinecone-request-lsn";
const MAX_INDEXED_LSN: &str = "x-pinecone-max-indexed-lsn";

/// The LSN in gRPC metadata `header`; fails if it is missing or not a number.
#[track_caller]
fn lsn_of(metadata: &MetadataMap, header: &str) -> u64 {
    let value = metadata
        .get(header)
        .unwrap_or_else(|| panic!("no {header} in {metadata:?}"));
    value.to_str().unwrap().parse().unwrap()
}

/// The LSN in REST header `header` of a 200 reply; fails if it is missing or not a number.
#[track_caller]
fn rest_lsn(reply: Reply, header: &str) -> u64 {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let value = reply
        .headers
        .get(header)
        .unwrap_or_else(|| panic!("no {header} in {:?}", reply.headers));
    value.to_str().unwrap().parse().unwrap()
}

fn upsert(namespace: &str, id: &str) -> UpsertRequest {
    UpsertRequest {
        vectors: vec![Vector {
            id: id.into(),
            values: vec![1.0, 0.5],
            ..Default::default()
        }],
        namespace: namespace.into(),
    }
}

fn query(namespace: &str) -> QueryRequest {
    QueryRequest {
        namespace: namespace.into(),
        top_k: 10,
        vector: vec![1.0, 0.5],
        ..Default::default()
    }
}

/// An upsert, an update and a delete in `namespace` over gRPC: the LSN each answers.
async fn grpc_writes(data: &mut DataClient, namespace: &str, id: &str) -> [u64; 3] {
    let upserted = data.upsert(upsert(namespace, id)).await.unwrap();
    let update = UpdateRequest {
        id: id.into(),
        set_metadata: json(j!({"seen": true})),
        namespace: namespace.into(),
        ..Default::default()
    };
    let updated = data.update(update).await.unwrap();
    // Deletes something real, so it changes the index (an id that is not there changes
    // nothing and takes no new LSN).
    data.upsert(upsert(namespace, "doomed")).await.unwrap();
    let delete = DeleteRequest {
        ids: vec!["doomed".into()],
        namespace: namespace.into(),
        ..Default::default()
    };
    let deleted = data.delete(delete).await.unwrap();
    [
        lsn_of(upserted.metadata(), REQUEST_LSN),
        lsn_of(updated.metadata(), REQUEST_LSN),
        lsn_of(deleted.metadata(), REQUEST_LSN),
    ]
}

/// Asserts `lsns` strictly increase.
#[track_caller]
fn assert_increasing(lsns: &[u64]) {
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
}

#[tokio::test]
async fn issue_18_grpc_writes_and_queries_carry_pinecones_lsn_metadata() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("fresh", 2, "cosine").await;

    let mut lsns = grpc_writes(&mut data, "films", "a").await.to_vec();
    // Another namespace: the index's LSN goes on from there.
    lsns.extend(grpc_writes(&mut data, "", "b").await);
    lsns.extend(grpc_writes(&mut data, "films", "c").await);
    assert_increasing(&lsns);
    let last = *lsns.last().unwrap();

    for namespace in ["films", "", "never-written"] {
        let answer = data.query(query(namespace)).await.unwrap();
        let indexed = lsn_of(answer.metadata(), MAX_INDEXED_LSN);
        assert!(indexed >= last, "{namespace:?}: {indexed} < {last}");
        assert!(answer.metadata().get(REQUEST_LSN).is_none());
    }
    // The writes are in the answer the LSN vouches for.
    let answer = data.query(query("films")).await.unwrap().into_inner();
    let mut ids: Vec<String> = answer.matches.into_iter().map(|m| m.id).collect();
    ids.sort();
    assert_eq!(ids, ["a", "c"]);

    // A refused write has no LSN to report.
    let refused = data.upsert(UpsertRequest {
        vectors: vec![Vector {
            id: "bad".into(),
            values: vec![1.0],
            ..Default::default()
        }],
        namespace: "films".into(),
    });
    let status = refused.await.unwrap_err();
    assert!(status.metadata().get(REQUEST_LSN).is_none(), "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn issue_18_rest_writes_and_queries_carry_pinecones_lsn_headers() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("fresh-rest", 2, "dotproduct").await;
    let rest = Rest::new(&model.host).key(&server.key);

    let mut lsns = Vec::new();
    for (namespace, id) in [("films", "a"), ("", "b"), ("films", "c")] {
        let body = j!({"namespace": namespace, "vectors": [{"id": id, "values": [1.0, 0.5]}]});
        lsns.push(rest_lsn(
            rest.post("/vectors/upsert", body).await,
            REQUEST_LSN,
        ));
        let body = j!({"namespace": namespace, "id": id, "setMetadata": {"seen": true}});
        lsns.push(rest_lsn(
            rest.post("/vectors/update", body).await,
            REQUEST_LSN,
        ));
        let body =
            j!({"namespace": namespace, "vectors": [{"id": "doomed", "values": [0.0, 1.0]}]});
        rest.post("/vectors/upsert", body)
            .await
            .expect(StatusCode::OK);
        let body = j!({"namespace": namespace, "ids": ["doomed"]});
        lsns.push(rest_lsn(
            rest.post("/vectors/delete", body).await,
            REQUEST_LSN,
        ));
    }
    assert_increasing(&lsns);
    let last = *lsns.last().unwrap();

    let body = j!({"namespace": "films", "vector": [1.0, 0.5], "topK": 10});
    let reply = rest.post("/query", body).await;
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/json"),
        "still JSON"
    );
    let ids: Vec<String> = reply.body["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(rest_lsn(reply, MAX_INDEXED_LSN) >= last);

    // Over h2c too, and the same numbers as gRPC: one index, one sequence.
    let h2c = Rest::h2c(&model.host).key(&server.key);
    let body = j!({"vectors": [{"id": "d", "values": [1.0, 0.5]}]});
    let over_h2c = rest_lsn(h2c.post("/vectors/upsert", body).await, REQUEST_LSN);
    assert!(over_h2c > last);
    let mut data = server.data(&model.host).await;
    let grpc = data.upsert(upsert("", "e")).await.unwrap();
    assert!(lsn_of(grpc.metadata(), REQUEST_LSN) > over_h2c);
    server.stop().await;
}

#[tokio::test]
async fn issue_18_lsns_keep_growing_across_restarts() {
    let server = TestServer::start().await;
    let (model, mut data) = server.create_index("kept-fresh", 2, "euclidean").await;
    let mut lsns = grpc_writes(&mut data, "films", "a").await.to_vec();
    // Flush, so the log files the next restart would count are gone: the manifest keeps
    // where they ended.
    let storage_name = server.storage_name("kept-fresh");
    let index = server.data_plane().engine().index(&storage_name).unwrap();
    assert!(
        tokio::task::spawn_blocking(move || index.flush().unwrap())
            .await
            .unwrap()
    );
    lsns.extend(grpc_writes(&mut data, "films", "b").await);
    drop(data);

    // A restart replaying the log on top of the flushed segments.
    let server = server.restart().await;
    let mut data = server.data(&model.host).await;
    let answer = data.query(query("films")).await.unwrap();
    let indexed = lsn_of(answer.metadata(), MAX_INDEXED_LSN);
    assert_eq!(indexed, *lsns.last().unwrap(), "every write was replayed");
    lsns.extend(grpc_writes(&mut data, "films", "c").await);
    drop(data);

    // A restart straight after another one, with nothing flushed since.
    let server = server.restart().await;
    let mut data = server.data(&model.host).await;
    lsns.extend(grpc_writes(&mut data, "other", "d").await);
    assert_increasing(&lsns);
    server.stop().await;
}

/// Split mode: the routed data plane (every index on one address, routed by host) sends the
/// same headers.
#[tokio::test]
async fn issue_18_split_mode_sends_the_lsn_headers_too() {
    let server = RoutedServer::start().await;
    let host = "fresh.default.larch.test";
    server.attach("fresh", "cosine", host).await;
    let mut data = VectorServiceClient::with_interceptor(
        server.via(host).await,
        KeyInterceptor::new(Some(server.admin.as_str())),
    );
    let lsns = grpc_writes(&mut data, "films", "a").await;
    assert_increasing(&lsns);
    let answer = data.query(query("films")).await.unwrap();
    assert!(lsn_of(answer.metadata(), MAX_INDEXED_LSN) >= lsns[2]);

    server.stop().await;
}
