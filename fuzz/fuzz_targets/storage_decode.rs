//! The engine's storage files, decoded from arbitrary bytes: a write-ahead log file, one log
//! record, a segment, the manifest, `index.meta` and a saved HNSW graph.
//!
//! The first byte picks the format (see [`Format::ALL`]), the second the index (dimension
//! 1–8 and metric) and whether to seal the bytes first — recompute their checksums, so that
//! mutations reach the decoders behind them. Decoding must return (an error is fine), never
//! panic and never allocate more than the input justifies; what decodes is applied to
//! namespaces as recovery would, and must write back as a segment that decodes.

#![no_main]

use larch_engine::fuzzing::{Format, decode, seal};
use larch_engine::{Dimension, IndexConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    larch_fuzz::init();
    let [format, index, bytes @ ..] = data else {
        return;
    };
    let format = Format::ALL[usize::from(*format) % Format::ALL.len()];
    let config = IndexConfig {
        dimension: Dimension::new(u32::from(index & 0x7) + 1).expect("1 to 8"),
        metric: larch_fuzz::metric(index >> 4),
    };
    if index & 0x8 == 0 {
        let _ = decode(format, bytes, config);
    } else {
        let mut sealed = bytes.to_vec();
        seal(format, &mut sealed);
        let _ = decode(format, &sealed, config);
    }
});
