//! Recovery of a whole index directory from arbitrary files.
//!
//! The input is a byte for the index (dimension 1–8, metric) and then files, each a kind byte
//! (which file, and whether to seal it — recompute its checksums), a little-endian `u16`
//! length and the bytes: `index.meta`, `manifest`, `wal-000001.log` to `wal-000003.log`,
//! `segments/seg-000001.seg` to `seg-000004.seg`. They are written to a directory (in
//! `/dev/shm` where there is one) and opened with [`Engine::open_index`], as after a restart.
//! Opening must return (an error is fine); an index that opens must answer a query and a
//! namespace listing, take a write, flush, and open again with the same records.

#![no_main]

use std::{
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use larch_engine::fuzzing::{Format, seal};
use larch_engine::{
    Dimension, Engine, Index, IndexConfig, ListNamespacesRequest, ListRequest, QueryRequest,
    UpsertRequest, VectorInput,
};
use libfuzzer_sys::fuzz_target;

const INDEX: &str = "idx";

/// The files an input can hold, by kind byte (modulo their number).
const FILES: [(&str, Format); 9] = [
    ("index.meta", Format::IndexMeta),
    ("manifest", Format::Manifest),
    ("wal-000001.log", Format::Log),
    ("wal-000002.log", Format::Log),
    ("wal-000003.log", Format::Log),
    ("segments/seg-000001.seg", Format::Segment),
    ("segments/seg-000002.seg", Format::Segment),
    ("segments/seg-000003.seg", Format::Segment),
    ("segments/seg-000004.seg", Format::Segment),
];

/// Where the index directories go: memory-backed where possible, so fsync costs nothing.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("larch-fuzz-recovery-{}", std::process::id()))
    })
}

/// Every namespace's record ids, sorted.
fn records(index: &Index) -> Vec<(String, Vec<String>)> {
    let namespaces = index
        .list_namespaces(ListNamespacesRequest {
            limit: Some(100),
            ..Default::default()
        })
        .expect("a listing of a recovered index");
    namespaces
        .namespaces
        .into_iter()
        .map(|info| {
            let mut ids = Vec::new();
            let mut token = None;
            loop {
                let page = index
                    .list(ListRequest {
                        namespace: info.name.clone(),
                        limit: Some(100),
                        pagination_token: token,
                        ..Default::default()
                    })
                    .expect("a listing of a recovered namespace");
                ids.extend(page.ids);
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            (info.name, ids)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    larch_fuzz::init();
    let Some((&index_byte, mut rest)) = data.split_first() else {
        return;
    };
    let dimension = usize::from(index_byte & 0x7) + 1;
    let config = IndexConfig {
        dimension: Dimension::new(dimension as u32).expect("1 to 8"),
        metric: larch_fuzz::metric(index_byte >> 4),
    };
    let root = root();
    let dir = root.join(INDEX);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("segments")).expect("a scratch directory");
    while let [kind, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let (name, format) = FILES[usize::from(kind & 0x7f) % FILES.len()];
        let mut bytes = bytes.to_vec();
        if kind & 0x80 != 0 {
            seal(format, &mut bytes);
        }
        fs::write(dir.join(name), bytes).expect("a scratch file");
    }

    let engine = Engine::open(root);
    let Ok(index) = engine.open_index(INDEX, config) else {
        return;
    };
    let before = records(&index);
    index
        .query(QueryRequest {
            top_k: 100,
            vector: vec![0.5; dimension],
            include_metadata: true,
            ..Default::default()
        })
        .expect("a query of a recovered index");
    // The recovered index takes a write and flushes it, and all of it survives a restart.
    let written = index.upsert(UpsertRequest {
        namespace: "after".to_owned(),
        vectors: vec![VectorInput {
            id: "new".to_owned(),
            values: vec![1.0; dimension],
            ..Default::default()
        }],
    });
    let flushed = index.flush();
    drop(index);
    drop(engine);
    if written.is_ok() && flushed.is_ok() {
        let engine = Engine::open(root);
        let index = engine
            .open_index(INDEX, config)
            .expect("an index that recovered, wrote and flushed opens again");
        let mut expected = before;
        match expected.iter_mut().find(|(name, _)| name == "after") {
            Some((_, ids)) if !ids.contains(&"new".to_owned()) => {
                ids.push("new".to_owned());
                ids.sort();
            }
            Some(_) => {}
            None => {
                expected.push(("after".to_owned(), vec!["new".to_owned()]));
                expected.sort();
            }
        }
        let mut after = records(&index);
        after.sort();
        expected.sort();
        assert_eq!(after, expected, "a restart changed the records");
    }
});
