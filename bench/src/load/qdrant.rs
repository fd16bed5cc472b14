//! The few messages of Qdrant's gRPC API (`package qdrant`, service `Points`) that the load
//! generator sends and reads, written here from the field numbers of Qdrant's public
//! `points.proto`. Only the fields used are declared; prost skips the others when decoding.
//! A `oneof` member is declared as an optional field with the member's number: on the wire the
//! two are the same.

/// `/qdrant.Points/Search`.
pub(crate) const SEARCH: &str = "/qdrant.Points/Search";
/// `/qdrant.Points/Upsert`.
pub(crate) const UPSERT: &str = "/qdrant.Points/Upsert";
/// `/qdrant.Qdrant/HealthCheck`: Qdrant's own health RPC (empty request), for the ceiling when
/// a server has no `grpc.health.v1`.
pub(crate) const HEALTH_CHECK: &str = "/qdrant.Qdrant/HealthCheck";

/// `SearchPoints`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SearchPoints {
    #[prost(string, tag = "1")]
    pub(crate) collection_name: String,
    #[prost(float, repeated, tag = "2")]
    pub(crate) vector: Vec<f32>,
    #[prost(uint64, tag = "4")]
    pub(crate) limit: u64,
    #[prost(message, optional, tag = "6")]
    pub(crate) with_payload: Option<Selector>,
    #[prost(message, optional, tag = "7")]
    pub(crate) params: Option<SearchParams>,
    #[prost(message, optional, tag = "11")]
    pub(crate) with_vectors: Option<Selector>,
}

/// `WithPayloadSelector` / `WithVectorsSelector`, only their `bool enable = 1` member.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Selector {
    #[prost(bool, optional, tag = "1")]
    pub(crate) enable: Option<bool>,
}

/// `SearchParams`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SearchParams {
    /// The beam width of the HNSW search (`ef`).
    #[prost(uint64, optional, tag = "1")]
    pub(crate) hnsw_ef: Option<u64>,
    #[prost(bool, optional, tag = "2")]
    pub(crate) exact: Option<bool>,
}

/// `SearchResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SearchResponse {
    #[prost(message, repeated, tag = "1")]
    pub(crate) result: Vec<ScoredPoint>,
}

/// `ScoredPoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ScoredPoint {
    #[prost(message, optional, tag = "1")]
    pub(crate) id: Option<PointId>,
    #[prost(float, tag = "3")]
    pub(crate) score: f32,
}

/// `PointId`: a number or a UUID (a `oneof`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PointId {
    #[prost(uint64, optional, tag = "1")]
    pub(crate) num: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub(crate) uuid: Option<String>,
}

impl PointId {
    /// The id as text, as Pinecone-style ids are compared.
    pub(crate) fn text(&self) -> String {
        match (&self.num, &self.uuid) {
            (Some(num), _) => num.to_string(),
            (None, Some(uuid)) => uuid.clone(),
            (None, None) => String::new(),
        }
    }
}

/// `UpsertPoints`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct UpsertPoints {
    #[prost(string, tag = "1")]
    pub(crate) collection_name: String,
    /// Answer only after the points are applied (like Larch's durable acknowledgement).
    #[prost(bool, optional, tag = "2")]
    pub(crate) wait: Option<bool>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) points: Vec<PointStruct>,
}

/// `PointStruct`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PointStruct {
    #[prost(message, optional, tag = "1")]
    pub(crate) id: Option<PointId>,
    #[prost(message, optional, tag = "4")]
    pub(crate) vectors: Option<Vectors>,
}

/// `Vectors`, only its unnamed `Vector vector = 1` member.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Vectors {
    #[prost(message, optional, tag = "1")]
    pub(crate) vector: Option<Vector>,
}

/// `Vector`, only `repeated float data = 1` (accepted by every Qdrant 1.x).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Vector {
    #[prost(float, repeated, tag = "1")]
    pub(crate) data: Vec<f32>,
}
