//! The graph file: a published graph of one namespace, saved so a restart
//! does not have to build it again.
//!
//! A graph file is derived data. It is written once a namespace is fully
//! indexed, read when the namespace has no graph yet (after recovery), and
//! ignored — the graph is simply rebuilt — when it is missing, damaged, or
//! built with other parameters. Loading never trusts it for results: each
//! node names the record it was built from, and is used only if that
//! record still holds the values the node was built from, up to rounding
//! (see [`Graph::holds`]).
//!
//! Layout (little-endian), then a CRC-32 of everything before it:
//!
//! ```text
//! "LGRF" version:u32 namespace:str space:u8 quantization:u8 width:u32 m:u32
//! ef_construction:u32 norm_bound:f32 (NaN: none) over_bound:u64 rng:u64
//! entry_node:u32 entry_level:u32 (u32::MAX: empty) nodes:u64
//! per node: id:str (empty: a stale node) levels:u8, links per level 0..=levels: count:u32 u32*
//! vectors: f32 * width * nodes, or i8 * width * nodes, scales f32 * nodes, sq_norms f32 * nodes
//! ```
//! where `str` is a `u32` byte length and UTF-8 bytes.

use super::{CHUNK, Chunked, Graph, Node, Space, Vectors};
use crate::{SearchParams, distance, limits};

const MAGIC: &[u8; 4] = b"LGRF";
const VERSION: u32 = 1;

/// A graph read back from its file, with the record id of each node
/// (`None` for nodes that were stale when it was saved).
pub(crate) struct Loaded {
    pub(crate) graph: Graph,
    pub(crate) ids: Vec<Option<String>>,
}

impl Graph {
    /// The file of this graph for namespace `namespace`; `ids[node]` names
    /// the record each node stands for (`None`: stale).
    pub(crate) fn encode(&self, namespace: &str, ids: &[Option<String>]) -> Vec<u8> {
        debug_assert_eq!(ids.len(), self.len());
        let mut out = Vec::with_capacity(self.memory_bytes() + ids.len() * 16 + 64);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, VERSION);
        put_str(&mut out, namespace);
        out.push(match self.space {
            Space::Cosine => 0,
            Space::L2 => 1,
        });
        out.push(u8::from(matches!(self.vectors, Vectors::Int8 { .. })));
        put_u32(&mut out, self.width as u32);
        put_u32(&mut out, self.m as u32);
        put_u32(&mut out, self.ef_construction as u32);
        put_f32(&mut out, self.norm_bound.unwrap_or(f32::NAN));
        out.extend_from_slice(&(self.over_bound as u64).to_le_bytes());
        out.extend_from_slice(&self.rng.to_le_bytes());
        let (entry, level) = self
            .entry
            .map_or((u32::MAX, u32::MAX), |(n, l)| (n, l as u32));
        put_u32(&mut out, entry);
        put_u32(&mut out, level);
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        for (node, id) in ids.iter().enumerate() {
            put_str(&mut out, id.as_deref().unwrap_or(""));
            let levels = self.upper[node].len();
            out.push(levels as u8);
            for level in 0..=levels {
                let links = self.links(node as Node, level);
                put_u32(&mut out, links.len() as u32);
                links.iter().for_each(|link| put_u32(&mut out, *link));
            }
        }
        match &self.vectors {
            Vectors::F32(values) => (0..self.len())
                .flat_map(|node| values.get(node))
                .for_each(|v| put_f32(&mut out, *v)),
            Vectors::Int8 {
                codes,
                scales,
                sq_norms,
            } => {
                (0..self.len())
                    .flat_map(|node| codes.get(node))
                    .for_each(|c| out.push(*c as u8));
                scales
                    .iter()
                    .chain(sq_norms)
                    .for_each(|v| put_f32(&mut out, *v));
            }
        }
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out
    }

    /// Reads a graph file; `None` if it is damaged or not one (the caller
    /// then builds the graph anew).
    pub(crate) fn decode(bytes: &[u8]) -> Option<(String, Loaded)> {
        let (body, crc) = bytes.split_last_chunk::<4>()?;
        if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC || r.u32()? != VERSION {
            return None;
        }
        let namespace = r.str()?;
        let space = match r.u8()? {
            0 => Space::Cosine,
            1 => Space::L2,
            _ => return None,
        };
        let quantized = r.u8()? == 1;
        let width = r.u32()? as usize;
        let m = r.u32()? as usize;
        let ef_construction = r.u32()? as usize;
        let norm_bound = Some(r.f32()?).filter(|b| !b.is_nan());
        let over_bound = usize::try_from(r.u64()?).ok()?;
        let rng = r.u64()?;
        let (entry, level) = (r.u32()?, r.u32()?);
        let count = usize::try_from(r.u64()?).ok()?;
        // The parameters of a graph the engine built (see `SearchParams`): a search or an
        // insertion sizes its buffers by them, so a damaged value must not get through.
        let (m_min, m_max) = SearchParams::M_RANGE;
        let (ef_min, ef_max) = SearchParams::EF_RANGE;
        if width == 0
            || width > limits::MAX_DIMENSION as usize + 1
            || !(m_min as usize..=m_max as usize).contains(&m)
            || !(ef_min as usize..=ef_max as usize).contains(&ef_construction)
            || count > r.0.len()
            // It counts nodes: inserting one more must not overflow it.
            || over_bound > count
        {
            return None;
        }
        let m0 = 2 * m;
        let mut ids = Vec::with_capacity(count);
        let mut layer0 = Vec::with_capacity(count * (m0 + 1));
        let mut upper = Vec::with_capacity(count);
        for _ in 0..count {
            let id = r.str()?;
            ids.push((!id.is_empty()).then_some(id));
            let levels = r.u8()? as usize;
            let mut node_upper = Vec::with_capacity(levels);
            for level in 0..=levels {
                let n = r.u32()? as usize;
                let cap = if level == 0 { m0 } else { m };
                if n > cap {
                    return None;
                }
                let links = (0..n)
                    .map(|_| r.u32().filter(|link| (*link as usize) < count))
                    .collect::<Option<Vec<Node>>>()?;
                if level == 0 {
                    layer0.push(n as Node);
                    layer0.extend_from_slice(&links);
                    layer0.extend(std::iter::repeat_n(0, m0 - n));
                } else {
                    node_upper.push(links);
                }
            }
            upper.push(node_upper);
        }
        // A link on layer `level` must lead to a node on that layer, or a search stepping
        // along it finds no links there.
        let reaches = |level: usize, link: &Node| upper[*link as usize].len() >= level;
        let linked = upper.iter().all(|levels| {
            (1..=levels.len())
                .all(|level| levels[level - 1].iter().all(|link| reaches(level, link)))
        });
        if !linked {
            return None;
        }
        let vectors = if quantized {
            let bytes = r.take(count.checked_mul(width)?)?;
            let codes = chunked(width, count, (bytes, 1), |b| b[0] as i8);
            let scales = (0..count).map(|_| r.f32()).collect::<Option<Vec<_>>>()?;
            let sq_norms = (0..count).map(|_| r.f32()).collect::<Option<Vec<_>>>()?;
            Vectors::Int8 {
                codes,
                scales,
                sq_norms,
            }
        } else {
            let bytes = r.take(count.checked_mul(width)?.checked_mul(4)?)?;
            Vectors::F32(chunked(width, count, (bytes, 4), |b| {
                f32::from_le_bytes(b.try_into().expect("4 bytes"))
            }))
        };
        let entry = match (entry, level) {
            (u32::MAX, _) if count == 0 => None,
            (node, level)
                if (node as usize) < count && upper[node as usize].len() == level as usize =>
            {
                Some((node, level as usize))
            }
            _ => return None,
        };
        if !r.0.is_empty() {
            return None;
        }
        let graph = Graph {
            space,
            width,
            norm_bound,
            over_bound,
            m,
            m0,
            ef_construction,
            level_mult: 1.0 / (m as f64).ln(),
            vectors,
            layer0,
            upper,
            entry,
            rng,
        };
        Some((namespace, Loaded { graph, ids }))
    }

    /// Whether this graph indexes `dim`-dimensional vectors under `metric`.
    pub(crate) fn fits(&self, dim: usize, metric: crate::Metric) -> bool {
        let space = match metric {
            crate::Metric::Cosine => Space::Cosine,
            crate::Metric::DotProduct | crate::Metric::Euclidean => Space::L2,
        };
        let extra = usize::from(metric == crate::Metric::DotProduct);
        self.space == space
            && self.width == dim + extra
            && self.norm_bound.is_some() == (extra == 1)
    }

    /// Whether `node` was built from `values` (as this graph prepares them), so it may stand
    /// for a record holding them. Equal up to rounding, not bit for bit: preparing a vector
    /// normalizes it with the distance kernel of the running build and CPU, whose summation
    /// order may differ from the one that built the graph (a new kernel, another machine), and
    /// a node that differs from its record in the last bits still leads a search to the right
    /// neighbours, whose candidates are rescored with the record's exact values anyway.
    pub(crate) fn holds(&self, node: Node, values: &[f32]) -> bool {
        let (prepared, _) = self.stored_form(values);
        let node = node as usize;
        // Dotproduct's extra value, `sqrt(M² - |x|²)`, follows from the others, and rounding
        // moves it a lot near the bound: compare the record's own values only.
        let own = self.width - usize::from(self.norm_bound.is_some());
        match &self.vectors {
            Vectors::F32(stored) => {
                rounding_apart(&stored.get(node)[..own], &prepared.values[..own])
            }
            Vectors::Int8 { codes, scales, .. } => {
                // A value on the edge between two codes may round either way.
                let (code, scale) = (&prepared.codes, prepared.code_scale);
                codes.get(node)[..own]
                    .iter()
                    .zip(&code[..own])
                    .all(|(a, b)| (i16::from(*a) - i16::from(*b)).abs() <= 1)
                    && (scales[node] - scale).abs() <= INT8_SCALE_TOLERANCE * scale
            }
        }
    }
}

/// How far, relative to their norm, a node's values may be from its record's prepared values
/// and still hold them (see [`Graph::holds`]): a thousand times `f32`'s rounding error at
/// dimension 384, and far below any change a client would make on purpose.
const HOLDS_TOLERANCE: f32 = 1e-5;

/// The same for the scale of int8 codes, whose largest value may be dotproduct's extra one
/// (see `holds`): still an eighth of one code's step.
const INT8_SCALE_TOLERANCE: f32 = 1e-3;

/// Whether `a` is within [`HOLDS_TOLERANCE`] of `b`, relative to `b`'s norm.
fn rounding_apart(a: &[f32], b: &[f32]) -> bool {
    distance::squared_euclidean(a, b) <= HOLDS_TOLERANCE * HOLDS_TOLERANCE * distance::dot(b, b)
}

/// `count` rows of `width` values, each decoded by `value` from `size` of `bytes` (which
/// holds exactly `count * width` of them), in chunks of exactly the rows there are:
/// [`Chunked::push`] would reserve a whole chunk of `CHUNK` rows for a file holding one.
fn chunked<T: Copy>(
    width: usize,
    count: usize,
    (bytes, size): (&[u8], usize),
    value: impl Fn(&[u8]) -> T,
) -> Chunked<T> {
    debug_assert_eq!(bytes.len(), count * width * size);
    let chunks = bytes
        .chunks(CHUNK * width * size)
        .map(|chunk| std::sync::Arc::new(chunk.chunks_exact(size).map(&value).collect()))
        .collect();
    Chunked {
        width,
        chunks,
        len: count,
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f32(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Reads fixed-size values off the front of a slice; `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn f32(&mut self) -> Option<f32> {
        Some(f32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(feature = "fuzzing")]
impl Graph {
    /// What the engine does with a graph it loaded (see `ann`): searches it and inserts the
    /// rows still pending. A decoded graph must survive both.
    pub(crate) fn exercise(mut self) {
        let dim = self.width - usize::from(self.norm_bound.is_some());
        let query = self.prepare(&vec![0.5; dim]);
        self.search(&query, 10, |_| true);
        self.insert(&vec![0.25; dim]);
        let query = self.prepare(&vec![-1.0; dim]);
        self.search(&query, 10, |_| true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph file of one node with the given body; the checksum is appended here.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut bytes = body.to_vec();
        let crc = crc32fast::hash(&bytes);
        put_u32(&mut bytes, crc);
        bytes
    }

    /// The header of a graph file (version 1, namespace "", cosine over f32 of width 2, m 4, no
    /// norm bound) with `ef_construction`, `over_bound`, the entry node (`u32::MAX`: none) and
    /// its level, before the node count.
    fn header(ef_construction: u32, over_bound: u64, entry: u32, level: u32) -> Vec<u8> {
        [
            b"LGRF".as_slice(),
            &1u32.to_le_bytes(), // version
            &0u32.to_le_bytes(), // namespace ""
            &[0, 0],             // cosine, f32
            &2u32.to_le_bytes(), // width
            &4u32.to_le_bytes(), // m
            &ef_construction.to_le_bytes(),
            &f32::NAN.to_le_bytes(), // no norm bound
            &over_bound.to_le_bytes(),
            &1u64.to_le_bytes(), // rng
            &entry.to_le_bytes(),
            &level.to_le_bytes(),
        ]
        .concat()
    }

    /// Found by `fuzz/` (storage_decode): a checksummed graph file whose `ef_construction`
    /// says 134 million decoded, and inserting into it allocated a 1 GiB candidate heap.
    #[test]
    fn fuzz_regression_graph_ef_construction_allocation() {
        let body = [
            header(0x0800_0080, 0, 0, 0).as_slice(),
            &1u64.to_le_bytes(), // nodes
            &1u32.to_le_bytes(), // id "v"
            b"v",
            &[0],                  // levels
            &0u32.to_le_bytes(),   // no links
            &1.0f32.to_le_bytes(), // vector
            &0.0f32.to_le_bytes(),
        ]
        .concat();
        assert!(Graph::decode(&sealed(&body)).is_none());
        // The same file with a real ef_construction loads.
        let mut fixed = body.clone();
        fixed[22..26].copy_from_slice(&128u32.to_le_bytes());
        assert!(Graph::decode(&sealed(&fixed)).is_some());
    }

    /// Found by `fuzz/` (storage_decode): a checksummed graph file of no nodes whose vectors
    /// had 131 325 values decoded, and the first insertion reserved a 2 GiB chunk for them.
    /// (The engine checks a loaded graph's width against the index before inserting, but no
    /// index has vectors that wide.) Decoding also reserves exactly the rows a file holds.
    #[test]
    fn fuzz_regression_graph_width_allocation() {
        let body = |width: u32, nodes: u64, values: &[f32]| {
            let entry = if nodes == 0 { u32::MAX } else { 0 };
            let mut body = [
                b"LGRF".as_slice(),
                &1u32.to_le_bytes(),     // version
                &0u32.to_le_bytes(),     // namespace ""
                &[0, 0],                 // cosine, f32
                &width.to_le_bytes(),    // width
                &4u32.to_le_bytes(),     // m
                &128u32.to_le_bytes(),   // ef_construction
                &f32::NAN.to_le_bytes(), // no norm bound
                &0u64.to_le_bytes(),     // over bound
                &1u64.to_le_bytes(),     // rng
                &entry.to_le_bytes(),    // entry node 0 on layer 0, or none
                &entry.to_le_bytes(),
                &nodes.to_le_bytes(),
            ]
            .concat();
            for _ in 0..nodes {
                body.extend_from_slice(&0u32.to_le_bytes()); // a stale node
                body.push(0);
                body.extend_from_slice(&0u32.to_le_bytes());
            }
            values.iter().for_each(|v| put_f32(&mut body, *v));
            body
        };
        assert!(Graph::decode(&sealed(&body(131_325, 0, &[]))).is_none());
        assert!(Graph::decode(&sealed(&body(20_001, 0, &[]))).is_some());
        // One row of a wide graph takes one row of memory, not a chunk of 4096.
        let (_, loaded) = Graph::decode(&sealed(&body(3, 1, &[1.0, 2.0, 3.0]))).expect("valid");
        let Vectors::F32(values) = &loaded.graph.vectors else {
            panic!("f32 vectors expected");
        };
        assert_eq!(values.get(0), [1.0, 2.0, 3.0]);
        assert_eq!(values.chunks[0].capacity(), 3);
    }

    /// Found by `fuzz/` (storage_decode): a checksummed graph file whose count of vectors
    /// over the norm bound was 2^64 − 1 decoded, and the next insertion overflowed it.
    #[test]
    fn fuzz_regression_graph_over_bound_count() {
        let body = |over_bound: u64| {
            [
                header(128, over_bound, u32::MAX, u32::MAX).as_slice(), // no entry node
                &0u64.to_le_bytes(),                                    // no nodes
            ]
            .concat()
        };
        assert!(Graph::decode(&sealed(&body(u64::MAX))).is_none());
        assert!(
            Graph::decode(&sealed(&body(1))).is_none(),
            "more than the nodes"
        );
        let (_, loaded) = Graph::decode(&sealed(&body(0))).expect("valid");
        let mut graph = loaded.graph;
        graph.insert(&[0.25, 0.5]);
        assert_eq!(graph.over_bound(), 0);
    }

    /// Found by `fuzz/` (storage_decode): a checksummed graph file in which node 0 links, on
    /// layer 1, to node 1, which is only on layer 0, decoded; the first search stepping
    /// along that link indexed node 1's missing layer 1 and panicked.
    #[test]
    fn fuzz_regression_graph_link_above_level() {
        let node = |id: &[u8], links: &[&[u32]]| -> Vec<u8> {
            let mut out = (id.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(id);
            out.push(links.len() as u8 - 1); // levels above layer 0
            for layer in links {
                out.extend_from_slice(&(layer.len() as u32).to_le_bytes());
                layer
                    .iter()
                    .for_each(|link| out.extend_from_slice(&link.to_le_bytes()));
            }
            out
        };
        let body = |upper_link: &[u32]| {
            [
                header(128, 0, 0, 1).as_slice(), // entry: node 0 on layer 1
                &2u64.to_le_bytes(),             // nodes
                &node(b"a", &[&[1], upper_link]),
                &node(b"b", &[&[0]]),
                &0.0f32.to_le_bytes(), // vectors: a, far from the query
                &1.0f32.to_le_bytes(),
                &1.0f32.to_le_bytes(), // b, close to it
                &0.0f32.to_le_bytes(),
            ]
            .concat()
        };
        assert!(Graph::decode(&sealed(&body(&[1]))).is_none());
        // Without that link the file loads, and searches.
        let (_, loaded) = Graph::decode(&sealed(&body(&[]))).expect("a valid graph");
        let query = loaded.graph.prepare(&[1.0, 0.0]);
        assert_eq!(loaded.graph.search(&query, 2, |_| true).len(), 2);
    }
}
