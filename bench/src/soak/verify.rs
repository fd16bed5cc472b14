//! The final check, once the load has stopped: every id of every client is fetched and must
//! hold exactly its last acknowledged record (values and metadata), deleted ids must be
//! absent, and the namespace's vector count in `DescribeIndexStats` must equal the number of
//! live ids.

use larch_proto::pinecone::{DescribeIndexStatsRequest, FetchRequest};

use super::load::{Data, check_fetched, pushback};
use super::model::Slots;

/// Ids per fetch (the server allows 1000).
const FETCH_IDS: usize = 500;

/// What the final check found.
#[derive(Debug, Default)]
pub(crate) struct Verification {
    /// Ids fetched.
    pub(crate) checked: usize,
    /// Ids present (and as expected).
    pub(crate) live: usize,
    /// Ids absent (and expected so).
    pub(crate) absent: usize,
    /// Ids with several possible states (a write to them failed), and matching one of them.
    pub(crate) uncertain: usize,
    /// Ids not as expected, with the first few descriptions.
    pub(crate) mismatches: usize,
    pub(crate) examples: Vec<String>,
    /// The namespace's vector count in `DescribeIndexStats`.
    pub(crate) stats_count: u64,
    /// The churn client's namespace's vector count (not checked).
    pub(crate) churn_count: u64,
}

impl Verification {
    /// Whether everything was as expected.
    pub(crate) fn passed(&self) -> bool {
        self.mismatches == 0 && self.stats_count == self.live as u64
    }
}

/// Fetches every id of `clients` from `namespace`.
pub(crate) async fn verify(
    data: &Data,
    namespace: &str,
    churn_namespace: &str,
    clients: &[Slots],
) -> anyhow::Result<Verification> {
    let mut found = Verification::default();
    for slots in clients {
        for start in (0..slots.len()).step_by(FETCH_IDS) {
            let range = start..(start + FETCH_IDS).min(slots.len());
            let request = FetchRequest {
                ids: range.clone().map(|s| slots.id(s)).collect(),
                namespace: namespace.to_owned(),
            };
            let response = honouring_pushback(|| {
                let (mut data, request) = (data.clone(), request.clone());
                async move { data.fetch(request).await }
            })
            .await?;
            for slot in range {
                let id = slots.id(slot);
                let got = response.vectors.get(&id);
                found.checked += 1;
                if slots.candidates(slot).len() > 1 {
                    found.uncertain += 1;
                }
                match check_fetched(slots, slot, got) {
                    Ok(()) if got.is_some() => found.live += 1,
                    Ok(()) => found.absent += 1,
                    Err(problem) => {
                        found.mismatches += 1;
                        // Present ids count as live for the stats check either way.
                        found.live += usize::from(got.is_some());
                        if found.examples.len() < 10 {
                            found.examples.push(format!("{id}: {problem}"));
                        }
                    }
                }
            }
        }
    }
    let stats = honouring_pushback(|| {
        let mut data = data.clone();
        async move {
            data.describe_index_stats(DescribeIndexStatsRequest { filter: None })
                .await
        }
    })
    .await?;
    let count = |ns: &str| {
        stats
            .namespaces
            .get(ns)
            .map_or(0, |s| u64::from(s.vector_count))
    };
    found.stats_count = count(namespace);
    found.churn_count = count(churn_namespace);
    Ok(found)
}

/// Calls `attempt` until it is not pushed back (`RESOURCE_EXHAUSTED` with a pushback).
async fn honouring_pushback<T, F, Fut>(mut attempt: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    loop {
        match attempt().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) => match pushback(&status) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(status),
            },
        }
    }
}
