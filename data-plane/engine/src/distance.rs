//! Distance kernels.
//!
//! Every dense kernel has a portable build: chunks of [`LANES`] with that
//! many independent accumulators. On x86-64 CPUs with AVX2 and FMA (checked
//! at run time; the standard library caches the answer) the `avx2` module's
//! hand-written versions run instead: eight 8-lane fused multiply-add chains,
//! about four times faster at dimension 384 than what the compiler makes of
//! the portable loops (it packs them into 2-lane operations). The ANN graph
//! and exact scans spend their time here. Cosine uses norms precomputed per
//! stored row. A caller computing many distances in a row (the graph walk, a
//! query's exact scan and rescoring) takes a [`Kernel`] once, for its CPU and
//! vector length, instead of paying the feature check per call. An int8
//! graph compares signed-byte codes with [`CodeKernel`]: an exact integer
//! inner product, 32 codes per AVX2 step.
//!
//! A SIMD crate would do the same, but the ones measured (SimSIMD/NumKong,
//! through `usearch`) compile hundreds of kernels in C for minutes on two
//! cores; three kernels are a few dozen lines.

use crate::{Metric, SparseVector};

/// Lanes per portable step: one AVX register's worth.
const LANES: usize = 8;

/// Whether this CPU runs the `avx2` kernels.
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Declares a kernel that runs its `avx2` version where the CPU allows and
/// its portable body elsewhere.
macro_rules! dispatched {
    ($(#[$doc:meta])* $name:ident($a:ident: &[f32], $b:ident: &[$bt:ty]) = $body:ident) => {
        $(#[$doc])*
        pub(crate) fn $name($a: &[f32], $b: &[$bt]) -> f32 {
            debug_assert_eq!($a.len(), $b.len());
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                #[allow(unsafe_code)]
                // SAFETY: the kernel needs AVX2 and FMA, which the CPU was just checked to have.
                return unsafe { avx2::$name::<false, 0>($a, $b) };
            }
            $body($a, $b)
        }
    };
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let ((chunks_a, tail_a), (chunks_b, tail_b)) = (a.as_chunks::<LANES>(), b.as_chunks::<LANES>());
    let tail: f32 = tail_a.iter().zip(tail_b).map(|(x, y)| x * y).sum();
    let mut acc = [0.0f32; LANES];
    for (xs, ys) in chunks_a.iter().zip(chunks_b) {
        for i in 0..LANES {
            acc[i] += xs[i] * ys[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn squared_euclidean_portable(a: &[f32], b: &[f32]) -> f32 {
    let ((chunks_a, tail_a), (chunks_b, tail_b)) = (a.as_chunks::<LANES>(), b.as_chunks::<LANES>());
    let tail: f32 = tail_a
        .iter()
        .zip(tail_b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let mut acc = [0.0f32; LANES];
    for (xs, ys) in chunks_a.iter().zip(chunks_b) {
        for i in 0..LANES {
            let d = xs[i] - ys[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn dot_codes_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

dispatched! {
    /// Inner product of two equally long slices.
    dot(a: &[f32], b: &[f32]) = dot_portable
}

dispatched! {
    /// Squared euclidean distance of two equally long slices.
    squared_euclidean(a: &[f32], b: &[f32]) = squared_euclidean_portable
}

/// Inner product of two signed-byte code vectors (int8 quantization), exact in integers.
/// Codes must lie in `-127..=127`, as [`crate::hnsw`]'s quantizer makes them.
pub(crate) fn dot_codes(a: &[i8], b: &[i8]) -> i32 {
    CodeKernel::dot(a.len()).run(a, b)
}

/// A dense kernel chosen once for this CPU. The dispatching functions above
/// check the CPU's features on every call; a graph walk computes thousands of
/// distances per query, so it picks its kernel once and calls it through this.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernel<T: 'static>(
    /// Only ever the portable build or, when the CPU has AVX2 and FMA, the `avx2` one.
    unsafe fn(&[f32], &[T]) -> f32,
);

impl<T> Kernel<T> {
    /// The kernel's value for two equally long slices.
    #[inline]
    pub(crate) fn run(self, a: &[f32], b: &[T]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        #[allow(unsafe_code)]
        // SAFETY: the constructors below hand out an `avx2` kernel only after checking that the
        // CPU has AVX2 and FMA; the portable kernels have no requirement.
        unsafe {
            (self.0)(a, b)
        }
    }
}

/// The `avx2` build of kernel `$name` fastest for vectors of `$width` values (and right for
/// any): for the common embedding sizes (384, 768, 1024, 1536) one whose length is a constant,
/// so the compiler unrolls its rounds; for other multiples of a round (64 values) one that
/// skips the code for a partial round and a tail; the general one otherwise.
#[cfg(target_arch = "x86_64")]
macro_rules! for_width {
    ($name:ident, $width:expr) => {
        match $width {
            384 => avx2::$name::<true, 6>,
            768 => avx2::$name::<true, 12>,
            1024 => avx2::$name::<true, 16>,
            1536 => avx2::$name::<true, 24>,
            width if width.is_multiple_of(avx2::ROUND) => avx2::$name::<true, 0>,
            _ => avx2::$name::<false, 0>,
        }
    };
}

impl Kernel<f32> {
    /// [`dot`] for vectors of `width` values, chosen for this CPU.
    pub(crate) fn dot(width: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            return Kernel(for_width!(dot, width));
        }
        let _ = width;
        Kernel(dot_portable)
    }

    /// [`squared_euclidean`] for vectors of `width` values, chosen for this CPU.
    pub(crate) fn squared_euclidean(width: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            return Kernel(for_width!(squared_euclidean, width));
        }
        let _ = width;
        Kernel(squared_euclidean_portable)
    }
}

/// [`dot_codes`] chosen once for this CPU and a code length, as [`Kernel`] is for floats.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CodeKernel(
    /// Only ever the portable build or, when the CPU has AVX2, the `avx2` one.
    unsafe fn(&[i8], &[i8]) -> i32,
);

impl CodeKernel {
    /// The integer inner product of codes of `width` values, chosen for this CPU: with AVX2,
    /// 32 products a step in three instructions; for the common embedding sizes a build
    /// whose step count is a constant, so the compiler unrolls it (right for any length).
    pub(crate) fn dot(width: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return CodeKernel(match width {
                384 => avx2::dot_codes::<12>,
                768 => avx2::dot_codes::<24>,
                1024 => avx2::dot_codes::<32>,
                1536 => avx2::dot_codes::<48>,
                _ => avx2::dot_codes::<0>,
            });
        }
        let _ = width;
        CodeKernel(dot_codes_portable)
    }

    /// The kernel's value for two equally long code slices.
    #[inline]
    pub(crate) fn run(self, a: &[i8], b: &[i8]) -> i32 {
        debug_assert_eq!(a.len(), b.len());
        #[allow(unsafe_code)]
        // SAFETY: `dot` hands out the `avx2` build only after checking that the CPU has AVX2;
        // the portable build has no requirement.
        unsafe {
            (self.0)(a, b)
        }
    }
}

/// Asks the CPU to start loading every cache line of `values`. A hint only: it reads
/// nothing and cannot fault. The graph walk issues it for all the
/// neighbours it is about to score, so their loads overlap.
#[inline(always)]
pub(crate) fn prefetch<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = values.as_ptr().cast::<i8>();
        let bytes = size_of_val(values);
        for offset in (0..bytes).step_by(64) {
            #[allow(unsafe_code)]
            // SAFETY: prefetching is a hint that never faults, and the address is within `values`.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.add(offset));
            }
        }
    }
}

/// AVX2 + FMA kernels. Callers must have checked that the CPU has both.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm_add_epi32, _mm_add_ps, _mm_cvtsi128_si32, _mm_cvtss_f32, _mm_hadd_epi32,
        _mm_hadd_ps, _mm256_add_epi32, _mm256_add_ps, _mm256_castps256_ps128,
        _mm256_castsi256_si128, _mm256_extractf128_ps, _mm256_extracti128_si256, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16,
        _mm256_set1_epi16, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_sign_epi8,
        _mm256_sub_ps,
    };

    /// Eight lanes at a time.
    const STEP: usize = 8;

    /// Independent accumulators, one 8-value block each per round: 64 values
    /// a round, so a 384-value vector takes six rounds of eight loads and
    /// eight fused multiply-adds, and the loop's own bookkeeping (three
    /// instructions a round) is a tenth of the work instead of a quarter with
    /// four.
    const ACCUMULATORS: usize = 8;

    /// Values per round.
    pub(super) const ROUND: usize = ACCUMULATORS * STEP;

    /// Evaluates `$step` (an `__m256` from block start `$i` and accumulator
    /// `$acc`) for every 8-value block below `$len`, spreading blocks over
    /// [`ACCUMULATORS`] accumulators; yields their horizontal sum and where
    /// the tail starts. With `$whole` (`$len` is a multiple of [`ROUND`]) the
    /// loop for a partial round is left out. A macro, so the code lands
    /// inside each `#[target_feature]` function.
    macro_rules! blocks {
        ($whole:expr, $len:expr, |$i:ident, $acc:ident| $step:expr) => {{
            let len: usize = $len;
            let mut lanes = [_mm256_setzero_ps(); ACCUMULATORS];
            let mut start = 0;
            while start + ROUND <= len {
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let ($i, $acc) = (start + j * STEP, *lane);
                    *lane = $step;
                }
                start += ROUND;
            }
            while !$whole && start + STEP <= len {
                let ($i, $acc) = (start, lanes[0]);
                lanes[0] = $step;
                start += STEP;
            }
            let quads = [
                _mm256_add_ps(lanes[0], lanes[1]),
                _mm256_add_ps(lanes[2], lanes[3]),
                _mm256_add_ps(lanes[4], lanes[5]),
                _mm256_add_ps(lanes[6], lanes[7]),
            ];
            let sum = _mm256_add_ps(
                _mm256_add_ps(quads[0], quads[1]),
                _mm256_add_ps(quads[2], quads[3]),
            );
            let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
            let quarter = _mm_hadd_ps(half, half);
            (_mm_cvtss_f32(_mm_hadd_ps(quarter, quarter)), start)
        }};
    }

    /// Declares the `avx2` build of a kernel: [`blocks`] running `$step` (an
    /// `__m256` from block start `$i` and accumulator `$acc`), then the
    /// values after the last block summed by `$tail` (from a value `$x` of
    /// `$a` and `$y` of `$b`). The kernels differ only in those two.
    macro_rules! kernel {
        (
            $name:ident($a:ident: &[f32], $b:ident: &[$bt:ty]),
            |$i:ident, $acc:ident| $step:expr,
            |$x:ident, $y:ident| $tail:expr $(,)?
        ) => {
            /// With `WHOLE`, fast for lengths that are a multiple of [`ROUND`]: it
            /// leaves out the code for a partial round and a tail. With `ROUNDS`
            /// above 0, fast for exactly that many rounds: a constant the compiler
            /// unrolls. Any other length gets the general kernel, so a kernel chosen
            /// for one width still answers right for another.
            ///
            /// # Safety
            /// The CPU must support AVX2 and FMA.
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn $name<const WHOLE: bool, const ROUNDS: usize>(
                $a: &[f32],
                $b: &[$bt],
            ) -> f32 {
                let len = $a.len().min($b.len());
                // Constants, so each build keeps one comparison at most.
                let fits = if ROUNDS > 0 {
                    len == ROUNDS * ROUND
                } else {
                    !WHOLE || len.is_multiple_of(ROUND)
                };
                if !fits {
                    // SAFETY: the same CPU features; no length requirement.
                    return unsafe { $name::<false, 0>($a, $b) };
                }
                let len = if ROUNDS > 0 { ROUNDS * ROUND } else { len };
                let (sum, tail) = blocks!(WHOLE, len, |$i, $acc| $step);
                if WHOLE {
                    return sum;
                }
                sum + $a[tail..len]
                    .iter()
                    .zip(&$b[tail..len])
                    .map(|($x, $y)| $tail)
                    .sum::<f32>()
            }
        };
    }

    kernel!(
        dot(a: &[f32], b: &[f32]),
        |i, acc| {
            // SAFETY: `blocks` only passes `i` with `i + 8 <= len`, in bounds of both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                )
            };
            _mm256_fmadd_ps(x, y, acc)
        },
        |x, y| x * y,
    );

    kernel!(
        squared_euclidean(a: &[f32], b: &[f32]),
        |i, acc| {
            // SAFETY: as in `dot`.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                )
            };
            let d = _mm256_sub_ps(x, y);
            _mm256_fmadd_ps(d, d, acc)
        },
        |x, y| (x - y) * (x - y),
    );

    /// Codes per step of [`dot_codes`]: one 256-bit register of bytes.
    const CODE_STEP: usize = 32;

    /// The integer inner product of two code slices, 32 codes a step: `maddubs` multiplies
    /// `|a|` (as unsigned bytes) by `b` with `a`'s sign and adds neighbouring pairs into 16-bit
    /// lanes, which cannot saturate as codes lie in `-127..=127` (2 · 127 · 127 < 2¹⁵), and
    /// `madd` with ones widens the pairs into the 32-bit sums. With `STEPS` above 0, fast for
    /// exactly that many steps (a constant the compiler unrolls); any other length takes the
    /// general loop and a scalar tail.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_codes<const STEPS: usize>(a: &[i8], b: &[i8]) -> i32 {
        let len = a.len().min(b.len());
        if STEPS > 0 && len != STEPS * CODE_STEP {
            // SAFETY: the same CPU feature; no length requirement.
            return unsafe { dot_codes::<0>(a, b) };
        }
        let steps = if STEPS > 0 { STEPS } else { len / CODE_STEP };
        let ones = _mm256_set1_epi16(1);
        // One chain of one-cycle additions: the multiplies of successive steps overlap
        // anyway. (An array of accumulators indexed by the step kept them in memory.)
        let mut sum: __m256i = _mm256_setzero_si256();
        for step in 0..steps {
            let i = step * CODE_STEP;
            // SAFETY: `i + 32 <= len`, in bounds of both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(b.as_ptr().add(i).cast()),
                )
            };
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, ones));
        }
        let half = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let quarter = _mm_hadd_epi32(half, half);
        let whole = _mm_cvtsi128_si32(_mm_hadd_epi32(quarter, quarter));
        let tail = steps * CODE_STEP;
        whole + super::dot_codes_portable(&a[tail..len], &b[tail..len])
    }
}

/// Euclidean length of a vector.
pub(crate) fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Cosine similarity from a dot product and the two norms. A zero norm gives
/// 0 rather than NaN; rounding is clamped back into `[-1, 1]`.
pub(crate) fn cosine(dot: f32, norm_a: f32, norm_b: f32) -> f32 {
    if norm_a == 0.0 || norm_b == 0.0 {
        return 0.0;
    }
    // Divide twice rather than by the product, which could overflow.
    (dot / norm_a / norm_b).clamp(-1.0, 1.0)
}

/// A dense query ready to score stored rows under one metric: its kernel chosen once for
/// this CPU and the query's length, its norm computed once for cosine. An exact scan or a
/// rescoring runs it on every row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DenseQuery<'a> {
    metric: Metric,
    values: &'a [f32],
    /// Norm of `values` for cosine; 0 for the other metrics, which do not use it.
    norm: f32,
    kernel: Kernel<f32>,
}

impl<'a> DenseQuery<'a> {
    /// `values` scored under `metric`.
    pub(crate) fn new(metric: Metric, values: &'a [f32]) -> Self {
        let (norm, kernel) = match metric {
            Metric::Cosine => (norm(values), Kernel::dot(values.len())),
            Metric::DotProduct => (0.0, Kernel::dot(values.len())),
            Metric::Euclidean => (0.0, Kernel::squared_euclidean(values.len())),
        };
        DenseQuery {
            metric,
            values,
            norm,
            kernel,
        }
    }

    /// The metric scored.
    pub(crate) fn metric(&self) -> Metric {
        self.metric
    }

    /// The query's values.
    pub(crate) fn values(&self) -> &'a [f32] {
        self.values
    }

    /// Score of a stored `row`. Cosine also wants the row's norm, asked for only then and
    /// after the kernel, so a scan keeps nothing else live across the call.
    #[inline]
    pub(crate) fn score(&self, row: &[f32], row_norm: impl FnOnce() -> f32) -> f32 {
        let raw = self.kernel.run(self.values, row);
        match self.metric {
            Metric::Cosine => cosine(raw, self.norm, row_norm()),
            Metric::Euclidean | Metric::DotProduct => raw,
        }
    }
}

/// Inner product of two sparse vectors (indices sorted ascending): a merge walk.
pub(crate) fn sparse_dot(a: &SparseVector, b: &SparseVector) -> f32 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0f32);
    while i < a.indices.len() && j < b.indices.len() {
        match a.indices[i].cmp(&b.indices[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a.values[i] * b.values[j];
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `DenseQuery`'s score of `row` against `q`.
    fn score(metric: Metric, q: &[f32], row: &[f32]) -> f32 {
        DenseQuery::new(metric, q).score(row, || norm(row))
    }

    /// Deterministic values for kernel tests, covering lengths around the lane width.
    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
            .collect()
    }

    #[test]
    fn kernels_match_naive_loops_for_every_tail_length() {
        for len in [1, 3, 7, 8, 9, 15, 16, 17, 33] {
            let (a, b) = (ramp(len, 0.5), ramp(len + 1, 0.25)[1..].to_vec());
            let naive_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let naive_l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
            assert!((dot(&a, &b) - naive_dot).abs() < 1e-4, "len {len}");
            assert!(
                (squared_euclidean(&a, &b) - naive_l2).abs() < 1e-4,
                "len {len}"
            );
        }
    }

    /// Codes in `-127..=127`, as the quantizer makes them, varied by `step`.
    fn codes(len: usize, step: usize) -> Vec<i8> {
        (0..len)
            .map(|i| (i * step % 255) as i8 ^ -128)
            .map(|c| c.max(-127))
            .collect()
    }

    /// The integer kernel is exact for every length, also at the extremes where 16-bit
    /// pair sums come closest to saturating.
    #[test]
    fn code_kernels_are_exact() {
        for len in [1, 31, 32, 33, 64, 100, 384, 385, 768, 1024, 1536, 3072] {
            let (a, b) = (codes(len, 37), codes(len + 1, 91)[1..].to_vec());
            let naive = dot_codes_portable(&a, &b);
            assert_eq!(dot_codes(&a, &b), naive, "len {len}");
            assert_eq!(CodeKernel::dot(len).run(&a, &b), naive, "len {len}");
            let (high, low) = (vec![127i8; len], vec![-127i8; len]);
            let extreme = 127 * 127 * len as i32;
            assert_eq!(dot_codes(&high, &low), -extreme, "len {len}");
            assert_eq!(dot_codes(&low, &low), extreme, "len {len}");
        }
    }

    #[test]
    fn dispatched_kernels_match_the_portable_build() {
        for len in [1, 31, 32, 33, 64, 100, 128, 384, 385, 768, 1024, 1536] {
            let (a, b) = (ramp(len, 0.5), ramp(len + 1, 0.25)[1..].to_vec());
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-3 * (1.0 + x.abs());
            assert!(close(dot(&a, &b), dot_portable(&a, &b)), "len {len}");
            assert_eq!(Kernel::dot(len).run(&a, &b), dot(&a, &b));
            assert_eq!(
                Kernel::squared_euclidean(len).run(&a, &b),
                squared_euclidean(&a, &b)
            );
            assert!(close(
                squared_euclidean(&a, &b),
                squared_euclidean_portable(&a, &b)
            ));
        }
    }

    /// A kernel chosen for one width (a graph's, a query's) and handed vectors of another
    /// length computes all of them: the constant-length builds once dropped the values past
    /// their width, or a partial round and tail, in release builds (and panicked in debug).
    #[test]
    fn a_kernel_chosen_for_one_width_is_right_for_any_length() {
        for (width, len) in [(384, 400), (384, 320), (768, 770), (128, 100), (128, 136)] {
            let (a, b) = (ramp(len, 0.5), ramp(len + 1, 0.25)[1..].to_vec());
            let codes = codes(len, 37);
            let what = format!("width {width}, len {len}");
            assert_eq!(Kernel::dot(width).run(&a, &b), dot(&a, &b), "{what}");
            assert_eq!(
                Kernel::squared_euclidean(width).run(&a, &b),
                squared_euclidean(&a, &b),
                "{what}"
            );
            assert_eq!(
                CodeKernel::dot(width).run(&codes, &codes),
                dot_codes_portable(&codes, &codes),
                "{what}"
            );
        }
    }

    #[test]
    fn hand_computed_scores() {
        let (q, r) = ([1.0, 2.0, 3.0], [4.0, -5.0, 6.0]);
        // 4 - 10 + 18
        assert_eq!(score(Metric::DotProduct, &q, &r), 12.0);
        // 9 + 49 + 9
        assert_eq!(score(Metric::Euclidean, &q, &r), 67.0);
        // 12 / (sqrt(14) * sqrt(77))
        let expected = 12.0 / (14f32.sqrt() * 77f32.sqrt());
        assert!((score(Metric::Cosine, &q, &r) - expected).abs() < 1e-6);
    }

    #[test]
    fn cosine_handles_zero_norms_and_rounding() {
        assert_eq!(cosine(0.0, 0.0, 1.0), 0.0);
        assert_eq!(cosine(0.0, 1.0, 0.0), 0.0);
        let v = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
        let same = cosine(dot(&v, &v), norm(&v), norm(&v));
        assert!(same <= 1.0 && (same - 1.0).abs() < 1e-6);
        assert_eq!(cosine(-2.0, 1.0, 1.0), -1.0);
    }

    #[test]
    fn sparse_dot_multiplies_shared_indices() {
        let a = SparseVector {
            indices: vec![1, 4, 9],
            values: vec![1.0, 2.0, 3.0],
        };
        let b = SparseVector {
            indices: vec![0, 4, 9, 12],
            values: vec![5.0, 0.5, -1.0, 7.0],
        };
        assert_eq!(sparse_dot(&a, &b), 1.0 - 3.0);
        assert_eq!(sparse_dot(&a, &SparseVector::default()), 0.0);
    }
}
