//! Where an index lives among several data-plane pods: which pods serve it and which one
//! should write it, by rendezvous (highest-random-weight) hashing.
//!
//! Every pod gets a weight for every index — a stable hash of the pod's name and the index's
//! storage name (SHA-256, never std's per-process randomized hasher, so every control-plane
//! replica and every release computes the same) — and the pods are ranked by weight. The
//! first is the index's **preferred writer**. Because each pod's weight for an index depends
//! only on that pod and that index:
//!
//! - adding a pod moves only the indexes the new pod now wins;
//! - removing a pod moves only the indexes it was first for (each to its runner-up);
//! - the choice is the same on every replica and after every restart.
//!
//! # Placing an index on a subset of pods (capacity)
//!
//! Today every index is served by every pod ([`Placement::all`]): each pod keeps its own copy
//! until the object log lets every pod read one copy from the bucket. To place an index on `n`
//! pods only, take the first `n` of the ranking ([`Pods::rank`]) — [`Placement::on`] does —
//! and store `n` with the index (a per-index replica count, defaulting to "all"). The
//! assignment already lists the serving pods (`IndexAssignment.pods`), and the control plane
//! already calls only the pods listed; the remaining step is that a data plane serves only
//! the assignments listing it. Rendezvous ranking keeps such a subset stable too: growing the
//! cluster moves an index only onto a new pod that outranks one of its `n`.
//!
//! # Example
//! ```
//! use larch_control_plane::placement::{Placement, Pods};
//!
//! let pods = Pods::new(["larch-data-0", "larch-data-1", "larch-data-2"]).unwrap();
//! let everywhere = Placement::all(&pods, "movies@acme@9f3c2a1b7d4e6f80");
//! assert_eq!(everywhere.pods().len(), 3);
//! assert_eq!(everywhere.preferred_writer(), everywhere.pods()[0].as_str());
//! // The same choice wherever it is computed.
//! assert_eq!(everywhere, Placement::all(&pods, "movies@acme@9f3c2a1b7d4e6f80"));
//! ```

use sha2::{Digest, Sha256};

/// The data-plane pods a control plane knows, by name (unique, in the order given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pods {
    names: Vec<String>,
}

/// Why a list of pod names cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodsError {
    /// No pod at all.
    #[error("no data-plane pods")]
    Empty,
    /// An empty pod name.
    #[error("a data-plane pod has an empty name")]
    EmptyName,
    /// Two pods of the same name: their weights would tie for every index.
    #[error("two data-plane pods are both named {0:?}: give each a name of its own")]
    Duplicate(String),
}

impl Pods {
    /// The pods named `names` (non-empty, unique).
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Result<Pods, PodsError> {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.is_empty() {
            return Err(PodsError::Empty);
        }
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        for name in &names {
            if name.is_empty() {
                return Err(PodsError::EmptyName);
            }
            if !seen.insert(name.as_str()) {
                return Err(PodsError::Duplicate(name.clone()));
            }
        }
        Ok(Pods { names })
    }

    /// The names, in the order given.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a pod of this name is known.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|known| known == name)
    }

    /// How many pods there are (at least one).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a [`Pods`] holds at least one pod.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every pod ranked for the index stored as `index`: highest weight first (ties, which
    /// need a 64-bit hash collision, broken by name).
    pub fn rank(&self, index: &str) -> Vec<&str> {
        let mut ranked: Vec<(u64, &str)> = self
            .names
            .iter()
            .map(|pod| (weight(pod, index), pod.as_str()))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        ranked.into_iter().map(|(_, pod)| pod).collect()
    }
}

/// The pods serving one index and the one that should write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Highest rendezvous weight first; never empty.
    pods: Vec<String>,
}

impl Placement {
    /// Every pod serves the index stored as `index` (today's placement).
    pub fn all(pods: &Pods, index: &str) -> Placement {
        Placement::on(pods, index, pods.len())
    }

    /// The index stored as `index` on the `count` pods that rank highest for it (at least one,
    /// at most every pod).
    pub fn on(pods: &Pods, index: &str, count: usize) -> Placement {
        let count = count.clamp(1, pods.len());
        Placement {
            pods: pods
                .rank(index)
                .into_iter()
                .take(count)
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The serving pods, the preferred writer first.
    pub fn pods(&self) -> &[String] {
        &self.pods
    }

    /// The pod that should write the index.
    pub fn preferred_writer(&self) -> &str {
        self.pods
            .first()
            .map(String::as_str)
            .expect("a placement holds at least one pod")
    }

    /// Whether `pod` serves the index.
    pub fn serves(&self, pod: &str) -> bool {
        self.pods.iter().any(|serving| serving == pod)
    }
}

/// The rendezvous weight of `pod` for `index`: the first 8 bytes of SHA-256 over both,
/// each length-prefixed so no two (pod, index) pairs hash the same bytes.
fn weight(pod: &str, index: &str) -> u64 {
    let mut hash = Sha256::new();
    for part in [pod, index] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn pods(n: usize) -> Pods {
        Pods::new((0..n).map(|i| format!("larch-data-{i}"))).unwrap()
    }

    fn indexes() -> Vec<String> {
        (0..2_000)
            .map(|i| format!("index-{i}@project-{}@{i:016x}", i % 7))
            .collect()
    }

    fn writers(pods: &Pods) -> HashMap<String, String> {
        indexes()
            .into_iter()
            .map(|index| {
                let writer = Placement::all(pods, &index).preferred_writer().to_owned();
                (index, writer)
            })
            .collect()
    }

    #[test]
    fn the_weight_is_a_fixed_function_of_pod_and_index() {
        // Pinned: a change of hash would move every index's writer on upgrade.
        assert_eq!(
            weight("larch-data-0", "movies"),
            weight("larch-data-0", "movies")
        );
        let expected = {
            let mut hash = Sha256::new();
            hash.update(12u64.to_be_bytes());
            hash.update(b"larch-data-0");
            hash.update(6u64.to_be_bytes());
            hash.update(b"movies");
            let digest = hash.finalize();
            u64::from_be_bytes(digest[..8].try_into().unwrap())
        };
        assert_eq!(weight("larch-data-0", "movies"), expected);
        // Length prefixes: moving a character between the parts changes the weight.
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
    }

    #[test]
    fn the_choice_does_not_depend_on_the_order_pods_are_listed() {
        let forward = pods(5);
        let mut names = forward.names().to_vec();
        names.reverse();
        let backward = Pods::new(names).unwrap();
        assert_eq!(writers(&forward), writers(&backward));
        for index in indexes().iter().take(50) {
            assert_eq!(forward.rank(index), backward.rank(index));
        }
    }

    #[test]
    fn writers_spread_over_the_pods() {
        let three = pods(3);
        let mut per_pod: HashMap<String, usize> = HashMap::new();
        for writer in writers(&three).into_values() {
            *per_pod.entry(writer).or_default() += 1;
        }
        assert_eq!(per_pod.len(), 3, "{per_pod:?}");
        // 2000 indexes over 3 pods: about 667 each; a fair hash stays well within 500..850.
        for (pod, count) in &per_pod {
            assert!((500..850).contains(count), "{pod}: {count} of 2000");
        }
    }

    #[test]
    fn adding_a_pod_moves_only_the_indexes_it_wins() {
        let before = writers(&pods(3));
        let after = writers(&pods(4));
        let mut moved = 0;
        for (index, writer) in &after {
            if before[index] != *writer {
                assert_eq!(writer, "larch-data-3", "{index} moved between old pods");
                moved += 1;
            }
        }
        // About a quarter move to the new pod, and nothing else changes.
        assert!((350..650).contains(&moved), "{moved} of 2000 moved");
    }

    #[test]
    fn removing_a_pod_moves_only_the_indexes_it_held() {
        let four = pods(4);
        let before = writers(&four);
        let without = Pods::new(["larch-data-0", "larch-data-1", "larch-data-3"]).unwrap();
        let after = writers(&without);
        for (index, writer) in &after {
            if before[index] != "larch-data-2" {
                assert_eq!(
                    &before[index], writer,
                    "{index} moved off a pod that stayed"
                );
            } else {
                // Its runner-up takes it.
                let runner_up = four
                    .rank(index)
                    .into_iter()
                    .find(|pod| *pod != "larch-data-2")
                    .unwrap();
                assert_eq!(writer, runner_up);
            }
        }
    }

    #[test]
    fn a_subset_is_the_top_of_the_ranking_and_stays_put_as_pods_are_added() {
        let index = "movies@acme@9f3c2a1b7d4e6f80";
        let five = pods(5);
        let two = Placement::on(&five, index, 2);
        assert_eq!(two.pods(), &five.rank(index)[..2]);
        assert_eq!(
            two.preferred_writer(),
            Placement::all(&five, index).preferred_writer()
        );
        assert!(two.serves(two.preferred_writer()));
        // Bounds: at least one pod, at most every pod.
        assert_eq!(Placement::on(&five, index, 0).pods().len(), 1);
        assert_eq!(Placement::on(&five, index, 9).pods().len(), 5);
        // With a sixth pod, the subset keeps its pods unless the new one outranks them.
        let six = pods(6);
        let grown = Placement::on(&six, index, 2);
        let kept = grown.pods().iter().filter(|pod| two.serves(pod)).count();
        let newcomer = grown.serves("larch-data-5");
        assert_eq!(kept + usize::from(newcomer), 2, "{grown:?} vs {two:?}");
    }

    #[test]
    fn pod_lists_are_checked() {
        assert_eq!(Pods::new(Vec::<String>::new()), Err(PodsError::Empty));
        assert_eq!(Pods::new(["a", ""]), Err(PodsError::EmptyName));
        assert_eq!(
            Pods::new(["a", "b", "a"]),
            Err(PodsError::Duplicate("a".into()))
        );
        let one = Pods::new(["only"]).unwrap();
        assert_eq!(Placement::all(&one, "x").preferred_writer(), "only");
        assert!(one.contains("only") && !one.contains("other"));
    }
}
