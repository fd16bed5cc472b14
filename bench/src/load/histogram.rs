//! Latencies in a log-linear histogram (HDR-style, hand-rolled): every power of two is split
//! into 128 equal buckets, so any recorded value is known to within 1/128 (< 0.8 %) while the
//! memory stays fixed (~7,400 counters) however long the run. One per load task, merged at the
//! end: recording is an index computation and an increment, nothing shared.

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed for any `u64`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) << SUB_BITS) + SUB as usize;

/// Counts of values (nanoseconds here) in log-linear buckets, plus the exact maximum and sum.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }
}

/// The bucket of `value`: values below 256 have a bucket each; above, a bucket spans
/// `2^(msb - 7)` values.
fn bucket(value: u64) -> usize {
    if value < 2 * SUB {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (value >> shift) & (SUB - 1);
    (((shift + 1) as usize) << SUB_BITS) | sub as usize
}

/// The largest value that falls into bucket `index`.
fn highest_in(index: usize) -> u64 {
    if index < 2 * SUB as usize {
        return index as u64;
    }
    let shift = (index >> SUB_BITS) as u32 - 1;
    let low = (SUB + (index as u64 & (SUB - 1))) << shift;
    low + ((1u64 << shift) - 1)
}

impl Histogram {
    /// Records one value.
    pub(crate) fn record(&mut self, value: u64) {
        self.counts[bucket(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Adds every value recorded in `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The exact largest value recorded (0 when empty).
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The exact mean (0 when empty).
    pub(crate) fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0..=1): the smallest recorded value `v` such that at least
    /// `q` of all values are `<= v`, reported as the top of its bucket (never above the
    /// maximum), so it may exceed the true value by < 0.8 %. 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return highest_in(index).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        // Every bucket's range starts right after the previous one's and is at most 1/128 of
        // its values wide.
        let mut previous_high = None;
        for index in 0..BUCKETS {
            let high = highest_in(index);
            let low = previous_high.map_or(0, |h: u64| h + 1);
            assert_eq!(bucket(low), index, "low end of bucket {index}");
            assert_eq!(bucket(high), index, "high end of bucket {index}");
            assert!(
                (high - low) as f64 <= low as f64 / SUB as f64,
                "bucket {index} [{low}, {high}] too wide"
            );
            previous_high = Some(high);
        }
        assert_eq!(previous_high, Some(u64::MAX));
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        // 1..=10_000 microseconds, in nanoseconds.
        for us in 1..=10_000u64 {
            h.record(us * 1000);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), 10_000_000);
        for (q, want) in [(0.5, 5_000_000.0), (0.95, 9_500_000.0), (0.99, 9_900_000.0)] {
            let got = h.quantile(q) as f64;
            assert!(
                got >= want && got <= want * (1.0 + 1.0 / SUB as f64),
                "q{q}: {got} vs {want}"
            );
        }
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert!((h.mean() - 5_000_500.0).abs() < 1.0);
        // Quantiles are ordered.
        let qs: Vec<u64> = [0.0, 0.5, 0.95, 0.99, 1.0]
            .iter()
            .map(|&q| h.quantile(q))
            .collect();
        assert!(qs.windows(2).all(|w| w[0] <= w[1]), "{qs:?}");
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let mut h = Histogram::default();
        assert_eq!((h.quantile(0.5), h.max(), h.mean()), (0, 0, 0.0));
        for v in [3, 3, 7, 200] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 3);
        assert_eq!(h.quantile(0.75), 7);
        assert_eq!(h.quantile(0.99), 200);
    }

    #[test]
    fn merging_adds_counts() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        for v in 0..100 {
            a.record(v * 10_000);
            b.record(v * 10_000 + 5_000_000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 200);
        assert_eq!(a.max(), 99 * 10_000 + 5_000_000);
        let median = a.quantile(0.5);
        assert!((990_000..=1_000_000).contains(&median), "{median}");
    }
}
