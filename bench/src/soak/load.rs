//! The load clients: each has its own HTTP/2 connection and its own id range, and runs a
//! weighted mix of upserts, queries (with and without a filter), fetches, updates and deletes
//! back to back until the deadline, checking every answer it can against its expected state.
//!
//! Checks while the load runs (a failed one is a *violation*):
//! - fetch returns exactly the expected records of the client's own ids, and nothing for
//!   deleted ones;
//! - a query filtered on the client's own ids returns `min(top_k, live)` matches, all live,
//!   with the expected metadata; a query filtered on a group returns only that group;
//! - every query's matches are sorted by score, and unfiltered ones return `top_k` matches.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{
    DeleteRequest, FetchRequest, QueryRequest, ScoredVector, UpdateRequest, UpsertRequest, Vector,
};
use tonic::Status;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::Rng;
use super::model::{self, Metadata, Record, Slots, Value};
use super::stats::{Op, Recorder};

/// The trailer naming how long to wait before retrying a `RESOURCE_EXHAUSTED` call.
const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// How long one call may keep being pushed back before it counts as an error.
const RETRY_BUDGET: Duration = Duration::from_secs(60);

/// Groups written to the `group` metadata field (filtered queries pick two).
const GROUPS: u64 = 8;

/// A data-plane client that sends the API key with every request.
pub(crate) type Data = VectorServiceClient<InterceptedService<Channel, ApiKey>>;

/// Adds the `api-key` metadata entry to every request.
#[derive(Clone)]
pub(crate) struct ApiKey(MetadataValue<tonic::metadata::Ascii>);

impl ApiKey {
    pub(crate) fn new(key: &str) -> anyhow::Result<ApiKey> {
        Ok(ApiKey(key.parse()?))
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request.metadata_mut().insert("api-key", self.0.clone());
        Ok(request)
    }
}

/// Opens one connection to the data plane at `addr` (`host:port`).
pub(crate) async fn connect(
    addr: &str,
    authority: Option<&str>,
    key: &ApiKey,
    timeout: Duration,
) -> anyhow::Result<Data> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    if let Some(authority) = authority {
        // Split mode: the data plane routes by `:authority` to the index with that host.
        endpoint = endpoint.origin(format!("http://{authority}").parse()?);
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(VectorServiceClient::with_interceptor(channel, key.clone())
        .max_decoding_message_size(64 << 20))
}

/// The pushback of a `RESOURCE_EXHAUSTED` status, if it carries one.
pub(crate) fn pushback(status: &Status) -> Option<Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let ms = status
        .metadata()
        .get(PUSHBACK)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms))
}

/// What every client shares.
pub(crate) struct Params {
    pub(crate) namespace: String,
    pub(crate) dim: usize,
    pub(crate) batch: usize,
    pub(crate) top_k: u32,
    /// Cumulative weights of [`Op::ALL`].
    pub(crate) mix: [u32; 6],
    pub(crate) recorder: Arc<Recorder>,
}

/// One load client.
pub(crate) struct Client {
    data: Data,
    slots: Slots,
    rng: Rng,
    /// Written into `ver` by every write, so each write's record differs from the last.
    version: u64,
    params: Arc<Params>,
}

impl Client {
    pub(crate) fn new(data: Data, slots: Slots, seed: u64, params: Arc<Params>) -> Client {
        Client {
            data,
            slots,
            rng: Rng::new(seed),
            version: 0,
            params,
        }
    }

    /// Upserts every slot once, in batches of `batch`: the namespace starts full, so the run
    /// measures a steady state rather than growth. Errors end the prefill.
    pub(crate) async fn prefill(&mut self, batch: usize) -> anyhow::Result<()> {
        let len = self.slots.len();
        let mut start = 0;
        while start < len {
            let slots: Vec<usize> = (start..(start + batch).min(len)).collect();
            self.upsert_slots(&slots)
                .await
                .map_err(|status| anyhow::anyhow!("prefill upsert: {status}"))?;
            start += batch;
        }
        Ok(())
    }

    /// Runs the mix until `deadline`, then hands back the expected state.
    pub(crate) async fn run(mut self, deadline: Instant) -> Slots {
        while Instant::now() < deadline {
            // Errors are recorded where they happen; the run goes on.
            let _ = match self.pick() {
                Op::Upsert => {
                    let slots = self.window(self.params.batch);
                    self.upsert_slots(&slots).await
                }
                Op::Query => self.query().await,
                Op::FilteredQuery => self.filtered_query().await,
                Op::Fetch => self.fetch().await,
                Op::Update => self.update().await,
                Op::Delete => self.delete().await,
            };
        }
        self.slots
    }

    fn pick(&mut self) -> Op {
        let total = self.params.mix[5];
        let roll = self.rng.below(u64::from(total)) as u32;
        Op::ALL[self.params.mix.iter().position(|&c| roll < c).unwrap_or(5)]
    }

    /// `n` consecutive slots (wrapping) from a random start: distinct ids for one request.
    fn window(&mut self, n: usize) -> Vec<usize> {
        let len = self.slots.len();
        let start = self.rng.below(len as u64) as usize;
        (0..n.min(len)).map(|i| (start + i) % len).collect()
    }

    fn values(&mut self) -> Vec<f32> {
        (0..self.params.dim).map(|_| self.rng.f32()).collect()
    }

    fn group(&mut self) -> String {
        format!("g{}", self.rng.below(GROUPS))
    }

    fn record(&mut self, slot: usize) -> Record {
        self.version += 1;
        let tags = vec![
            format!("t{}", self.rng.below(4)),
            format!("t{}", 4 + self.rng.below(4)),
        ];
        let metadata = [
            ("client", Value::Number(self.slots.client() as f64)),
            ("slot", Value::Number(slot as f64)),
            ("group", Value::Text(self.group())),
            ("ver", Value::Number(self.version as f64)),
            ("tags", Value::List(tags)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Record {
            values: self.values(),
            metadata,
        }
    }

    /// Sends a call built by `attempt`, honouring pushbacks, and records its outcome.
    async fn call<T, F, Fut>(&self, op: Op, mut attempt: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let recorder = &self.params.recorder;
        let started = Instant::now();
        loop {
            let sent = Instant::now();
            match attempt().await {
                Ok(response) => {
                    recorder.ok(op, sent.elapsed());
                    return Ok(response.into_inner());
                }
                Err(status) => match pushback(&status) {
                    Some(wait) if started.elapsed() < RETRY_BUDGET => {
                        recorder.backpressure(op.name(), wait);
                        tokio::time::sleep(wait).await;
                    }
                    _ => {
                        recorder.error(op.name(), &status);
                        return Err(status);
                    }
                },
            }
        }
    }

    async fn upsert_slots(&mut self, slots: &[usize]) -> Result<(), Status> {
        let records: Vec<(usize, Record)> = slots.iter().map(|&s| (s, self.record(s))).collect();
        let request = UpsertRequest {
            vectors: records
                .iter()
                .map(|(slot, record)| Vector {
                    id: self.slots.id(*slot),
                    values: record.values.clone(),
                    sparse_values: None,
                    metadata: Some(model::to_struct(&record.metadata)),
                })
                .collect(),
            namespace: self.params.namespace.clone(),
        };
        let data = self.data.clone();
        let result = self
            .call(Op::Upsert, || {
                let (mut data, request) = (data.clone(), request.clone());
                async move { data.upsert(request).await }
            })
            .await;
        let acked = result.is_ok();
        if let Ok(response) = &result
            && response.upserted_count as usize != records.len()
        {
            self.violation(
                Op::Upsert,
                format!(
                    "upserted_count {} for {} vectors",
                    response.upserted_count,
                    records.len()
                ),
            );
        }
        for (slot, record) in records {
            self.slots.set(slot, Some(record), acked);
        }
        result.map(drop)
    }

    async fn update(&mut self) -> Result<(), Status> {
        // A slot known to be live; after a few misses (a mostly deleted range) upsert instead.
        let Some(slot) = (0..8).find_map(|_| {
            let slot = self.rng.below(self.slots.len() as u64) as usize;
            matches!(self.slots.certain(slot), Some(Some(_))).then_some(slot)
        }) else {
            let slots = self.window(1);
            return self.upsert_slots(&slots).await;
        };
        self.version += 1;
        let values = self.rng.chance(0.5).then(|| self.values());
        let patch: Metadata = [
            ("ver".to_owned(), Value::Number(self.version as f64)),
            ("group".to_owned(), Value::Text(self.group())),
        ]
        .into();
        let request = UpdateRequest {
            id: self.slots.id(slot),
            values: values.clone().unwrap_or_default(),
            sparse_values: None,
            set_metadata: Some(model::to_struct(&patch)),
            namespace: self.params.namespace.clone(),
            filter: None,
            dry_run: None,
        };
        let data = self.data.clone();
        let result = self
            .call(Op::Update, || {
                let (mut data, request) = (data.clone(), request.clone());
                async move { data.update(request).await }
            })
            .await;
        self.slots
            .update(slot, values.as_deref(), &patch, result.is_ok());
        result.map(drop)
    }

    async fn delete(&mut self) -> Result<(), Status> {
        let n = 1 + self.rng.below(5) as usize;
        let slots = self.window(n);
        let request = DeleteRequest {
            ids: slots.iter().map(|&s| self.slots.id(s)).collect(),
            delete_all: false,
            namespace: self.params.namespace.clone(),
            filter: None,
        };
        let data = self.data.clone();
        let result = self
            .call(Op::Delete, || {
                let (mut data, request) = (data.clone(), request.clone());
                async move { data.delete(request).await }
            })
            .await;
        for slot in slots {
            self.slots.set(slot, None, result.is_ok());
        }
        result.map(drop)
    }

    async fn fetch(&mut self) -> Result<(), Status> {
        let n = 1 + self.rng.below(10) as usize;
        let slots = self.window(n);
        let request = FetchRequest {
            ids: slots.iter().map(|&s| self.slots.id(s)).collect(),
            namespace: self.params.namespace.clone(),
        };
        let data = self.data.clone();
        let mut response = self
            .call(Op::Fetch, || {
                let (mut data, request) = (data.clone(), request.clone());
                async move { data.fetch(request).await }
            })
            .await?;
        for slot in slots {
            let id = self.slots.id(slot);
            let got = response.vectors.remove(&id);
            if let Err(problem) = check_fetched(&self.slots, slot, got.as_ref()) {
                self.violation(Op::Fetch, format!("{id}: {problem}"));
            }
        }
        if !response.vectors.is_empty() {
            let extra: Vec<&String> = response.vectors.keys().collect();
            self.violation(Op::Fetch, format!("ids not asked for: {extra:?}"));
        }
        Ok(())
    }

    async fn query(&mut self) -> Result<(), Status> {
        let include_metadata = self.rng.chance(0.5);
        let request = QueryRequest {
            namespace: self.params.namespace.clone(),
            top_k: self.params.top_k,
            include_values: self.rng.chance(0.25),
            include_metadata,
            vector: self.values(),
            ..QueryRequest::default()
        };
        let data = self.data.clone();
        let response = self
            .call(Op::Query, || {
                let (mut data, request) = (data.clone(), request.clone());
                async move { data.query(request).await }
            })
            .await?;
        // The namespace holds far more than top_k records after the prefill.
        if response.matches.len() != self.params.top_k as usize {
            self.violation(
                Op::Query,
                format!(
                    "{} matches, top_k {}",
                    response.matches.len(),
                    self.params.top_k
                ),
            );
        }
        self.check_matches(Op::Query, &response.matches, include_metadata);
        Ok(())
    }

    async fn filtered_query(&mut self) -> Result<(), Status> {
        let own = self.rng.chance(0.5);
        let groups = [self.group(), self.group()];
        let filter = if own {
            model::filter("client", "$eq", model::number(self.slots.client() as f64))
        } else {
            model::filter("group", "$in", model::strings(&groups))
        };
        let include_metadata = !own || self.rng.chance(0.5);
        let request = QueryRequest {
            namespace: self.params.namespace.clone(),
            top_k: self.params.top_k,
            filter: Some(filter),
            include_values: self.rng.chance(0.25),
            include_metadata,
            vector: self.values(),
            ..QueryRequest::default()
        };
        let data = self.data.clone();
        let response = self
            .call(Op::FilteredQuery, || {
                let (mut data, request) = (data.clone(), request.clone());
                async move { data.query(request).await }
            })
            .await?;
        let matches = &response.matches;
        self.check_matches(Op::FilteredQuery, matches, include_metadata);
        if own {
            let foreign: Vec<&str> = matches
                .iter()
                .filter(|m| model::parse_id(&m.id).map(|(c, _)| c) != Some(self.slots.client()))
                .map(|m| m.id.as_str())
                .collect();
            if !foreign.is_empty() {
                self.violation(
                    Op::FilteredQuery,
                    format!("client filter returned {foreign:?}"),
                );
            }
            if let Some(live) = self.slots.live_count() {
                let want = live.min(self.params.top_k as usize);
                if matches.len() != want {
                    self.violation(
                        Op::FilteredQuery,
                        format!("{} matches, want {want} ({live} live ids)", matches.len()),
                    );
                }
            }
        } else {
            for m in matches {
                let group = m.metadata.as_ref().and_then(|md| md.fields.get("group"));
                let ok = matches!(
                    group.and_then(|v| v.kind.as_ref()),
                    Some(prost_types::value::Kind::StringValue(g)) if groups.contains(g)
                );
                if !ok {
                    self.violation(
                        Op::FilteredQuery,
                        format!("{}: group {group:?} is not in {groups:?}", m.id),
                    );
                }
            }
        }
        Ok(())
    }

    /// Checks that apply to every query: scores descending, ids the soak wrote, and for the
    /// client's own ids, the expected record.
    fn check_matches(&self, op: Op, matches: &[ScoredVector], with_metadata: bool) {
        if matches.windows(2).any(|w| w[0].score < w[1].score) {
            let scores: Vec<f32> = matches.iter().map(|m| m.score).collect();
            self.violation(op, format!("scores not descending: {scores:?}"));
        }
        for m in matches {
            let Some((client, slot)) = model::parse_id(&m.id) else {
                self.violation(op, format!("unknown id {:?}", m.id));
                continue;
            };
            if client != self.slots.client() || slot >= self.slots.len() {
                continue;
            }
            match self.slots.certain(slot) {
                Some(None) => self.violation(op, format!("{}: deleted, yet returned", m.id)),
                Some(Some(record)) => {
                    if with_metadata {
                        let got = m.metadata.as_ref().map(model::from_struct);
                        if got != Some(Ok(record.metadata.clone())) {
                            self.violation(
                                op,
                                format!("{}: metadata {got:?}, want {:?}", m.id, record.metadata),
                            );
                        }
                    }
                    if !m.values.is_empty() && m.values != record.values {
                        self.violation(op, format!("{}: values differ from the last write", m.id));
                    }
                }
                None => {}
            }
        }
    }

    fn violation(&self, op: Op, message: String) {
        self.params
            .recorder
            .violation(op, format!("client {}: {message}", self.slots.client()));
    }
}

/// Whether `got` (a fetch's answer for `slot`) is one of the slot's expected states.
pub(crate) fn check_fetched(
    slots: &Slots,
    slot: usize,
    got: Option<&Vector>,
) -> Result<(), String> {
    let got = match got {
        None => None,
        Some(vector) => Some(Record {
            values: vector.values.clone(),
            metadata: vector
                .metadata
                .as_ref()
                .map(model::from_struct)
                .transpose()?
                .unwrap_or_default(),
        }),
    };
    let candidates = slots.candidates(slot);
    if candidates.contains(&got) {
        return Ok(());
    }
    let describe = |state: &Option<Record>| match state {
        None => "absent".to_owned(),
        Some(record) => format!(
            "values[..2] {:?} metadata {:?}",
            &record.values[..record.values.len().min(2)],
            record.metadata
        ),
    };
    let want: Vec<String> = candidates.iter().map(describe).collect();
    Err(format!(
        "got {}, want {}",
        describe(&got),
        want.join(" or ")
    ))
}
