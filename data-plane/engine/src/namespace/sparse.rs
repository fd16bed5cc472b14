//! The inverted index over a namespace's sparse values: for each sparse dimension, a
//! posting list of the rows holding a non-zero value there and that value.
//!
//! A sparse query only needs the rows sharing a dimension with it: every other row's sparse
//! dot product is zero. [`SparseIndex::dot_products`] walks the posting lists of the query's
//! dimensions and accumulates each reached row's dot product, so a query costs the length of
//! those lists instead of a scan of every record. The products are added in ascending
//! dimension order, as `distance::sparse_dot` adds them, so a row's score is bitwise the one an
//! exact scan computes.
//!
//! The store keeps the index in step with its rows (see `namespace`): a record's entries
//! are inserted when it is written, removed when it is deleted or its sparse values change,
//! and relabelled when a removal moves the last row into the hole. Nothing is persisted: a
//! namespace loaded from segments or replayed from the log applies the same writes, which
//! rebuild it (about as costly as reading the sparse values it holds).
//!
//! Posting lists are unordered. Each row also remembers where its entries sit in their lists,
//! so removing or moving a row costs its own number of entries, however long the lists are
//! (a removed entry's place is taken by its list's last entry, whose row's remembered place is
//! corrected): 12 bytes an entry in all.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use crate::{SparseVector, interrupt};

/// One entry of a posting list: a row and its value in the list's dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Posting {
    row: u32,
    value: f32,
}

/// Posting lists of one namespace, by sparse dimension.
#[derive(Debug, Default)]
pub(crate) struct SparseIndex {
    /// Keyed by client-chosen dimensions: the standard (collision-resistant) hasher.
    postings: HashMap<u32, Vec<Posting>>,
    /// Row → the place of each of its entries (in the order of its sparse indices) in its
    /// dimension's posting list; empty for a row without sparse values.
    places: Vec<Vec<u32>>,
}

/// The sparse dot products of one query with the rows that share a dimension with it.
#[derive(Debug, Default)]
pub(crate) struct DotProducts {
    /// Keyed by row numbers, which the engine chooses: a hasher of one multiplication.
    by_row: HashMap<u32, f32, BuildHasherDefault<RowHasher>>,
}

impl DotProducts {
    /// Rows reached and their dot products, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.by_row.iter().map(|(row, dot)| (*row as usize, *dot))
    }

    /// Number of rows reached.
    pub(crate) fn len(&self) -> usize {
        self.by_row.len()
    }
}

impl SparseIndex {
    /// An empty index.
    pub(crate) fn new() -> Self {
        SparseIndex::default()
    }

    /// Adds the entries of `row` (which has none yet), holding `sparse`.
    pub(crate) fn insert(&mut self, row: usize, sparse: &SparseVector) {
        let places = sparse
            .indices
            .iter()
            .zip(&sparse.values)
            .map(|(&dimension, &value)| {
                let list = self.postings.entry(dimension).or_default();
                list.push(Posting {
                    row: row as u32,
                    value,
                });
                (list.len() - 1) as u32
            })
            .collect();
        if self.places.len() <= row {
            self.places.resize_with(row + 1, Vec::new);
        }
        debug_assert!(self.places[row].is_empty(), "row {row} is already indexed");
        self.places[row] = places;
    }

    /// Removes the entries of `row`, which holds `sparse`. `indices_of` gives the sparse
    /// indices of any other row, to correct the place of an entry moved into a hole.
    pub(crate) fn remove<'a>(
        &mut self,
        row: usize,
        sparse: &SparseVector,
        indices_of: impl Fn(usize) -> &'a [u32],
    ) {
        let places = self
            .places
            .get_mut(row)
            .map(std::mem::take)
            .unwrap_or_default();
        debug_assert_eq!(places.len(), sparse.len(), "row {row} is indexed");
        for (dimension, place) in sparse.indices.iter().zip(places) {
            let Some(list) = self.postings.get_mut(dimension) else {
                debug_assert!(false, "a stored entry has a posting list");
                continue;
            };
            let place = place as usize;
            debug_assert_eq!(list[place].row, row as u32);
            list.swap_remove(place);
            if let Some(moved) = list.get(place) {
                // The list's last entry now fills the hole: tell its row where it is.
                let moved = moved.row as usize;
                let entry = indices_of(moved).binary_search(dimension);
                debug_assert!(entry.is_ok(), "row {moved} holds dimension {dimension}");
                if let Ok(entry) = entry {
                    self.places[moved][entry] = place as u32;
                }
            } else if list.is_empty() {
                self.postings.remove(dimension);
            }
        }
        while self.places.last().is_some_and(Vec::is_empty) {
            self.places.pop();
        }
    }

    /// The row at `from`, with its entries, now lives at `to` (whose entries were removed).
    pub(crate) fn move_row(&mut self, from: usize, to: usize, sparse: &SparseVector) {
        let places = self
            .places
            .get_mut(from)
            .map(std::mem::take)
            .unwrap_or_default();
        debug_assert_eq!(places.len(), sparse.len(), "row {from} is indexed");
        for (dimension, &place) in sparse.indices.iter().zip(&places) {
            if let Some(posting) = self
                .postings
                .get_mut(dimension)
                .and_then(|list| list.get_mut(place as usize))
            {
                debug_assert_eq!(posting.row, from as u32);
                posting.row = to as u32;
            }
        }
        if self.places.len() <= to {
            self.places.resize_with(to + 1, Vec::new);
        }
        self.places[to] = places;
        while self.places.last().is_some_and(Vec::is_empty) {
            self.places.pop();
        }
    }

    /// Forgets every entry.
    pub(crate) fn clear(&mut self) {
        *self = SparseIndex::default();
    }

    /// Memory held by the posting lists, their map and the rows' places.
    pub(crate) fn memory_bytes(&self) -> usize {
        let lists: usize = self
            .postings
            .values()
            .map(|list| list.capacity() * size_of::<Posting>())
            .sum();
        // A map slot: the key, the list's header and a control byte.
        let slots = self.postings.capacity() * (size_of::<u32>() + size_of::<Vec<Posting>>() + 1);
        let places: usize = self
            .places
            .iter()
            .map(|places| places.capacity() * size_of::<u32>())
            .sum::<usize>()
            + self.places.capacity() * size_of::<Vec<u32>>();
        lists + slots + places
    }

    /// The dot product of `query` with every row sharing a dimension with it. Stops early
    /// (with what it has) when the request was abandoned.
    pub(crate) fn dot_products(&self, query: &SparseVector) -> DotProducts {
        let mut dots = DotProducts::default();
        let mut walked = 0;
        // Ascending dimensions (a validated vector is sorted): each row's sum is added up in
        // the order `distance::sparse_dot` adds it.
        for (dimension, &weight) in query.indices.iter().zip(&query.values) {
            let Some(list) = self.postings.get(dimension) else {
                continue;
            };
            for posting in list {
                *dots.by_row.entry(posting.row).or_insert(0.0) += weight * posting.value;
            }
            walked += list.len();
            if walked >= interrupt::CHECK_EVERY {
                walked = 0;
                if interrupt::requested() {
                    break;
                }
            }
        }
        dots
    }
}

/// Hashes a row number by one multiplication (Fibonacci hashing): rows are dense small
/// integers the engine assigns, so nothing needs the cost of a keyed hash.
#[derive(Debug, Default)]
struct RowHasher(u64);

impl Hasher for RowHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::sparse_dot;

    fn sparse(entries: &[(u32, f32)]) -> SparseVector {
        SparseVector {
            indices: entries.iter().map(|e| e.0).collect(),
            values: entries.iter().map(|e| e.1).collect(),
        }
    }

    fn dots(index: &SparseIndex, query: &SparseVector) -> Vec<(usize, f32)> {
        let mut dots: Vec<_> = index.dot_products(query).iter().collect();
        dots.sort_by_key(|d| d.0);
        dots
    }

    #[test]
    fn reaches_only_rows_sharing_a_dimension_with_exact_dot_products() {
        let rows = [
            sparse(&[(1, 0.5), (7, 2.0)]),
            sparse(&[(2, 1.0)]),
            sparse(&[(1, -1.0), (2, 3.0), (4_000_000_000, 0.25)]),
        ];
        let mut index = SparseIndex::new();
        for (row, values) in rows.iter().enumerate() {
            index.insert(row, values);
        }
        let query = sparse(&[(1, 2.0), (7, 1.5), (4_000_000_000, 4.0)]);
        let expected: Vec<(usize, f32)> = [0, 2]
            .into_iter()
            .map(|row| (row, sparse_dot(&query, &rows[row])))
            .collect();
        assert_eq!(dots(&index, &query), expected);
        assert_eq!(dots(&index, &sparse(&[(3, 1.0)])), []);
    }

    #[test]
    fn remove_and_move_keep_the_lists_in_step_with_the_rows() {
        let a = sparse(&[(1, 1.0), (2, 2.0)]);
        let b = sparse(&[(2, 3.0)]);
        let c = sparse(&[(1, 5.0), (3, 1.0)]);
        let mut index = SparseIndex::new();
        index.insert(0, &a);
        index.insert(1, &b);
        index.insert(2, &c);
        let all = sparse(&[(1, 1.0), (2, 1.0), (3, 1.0)]);
        // Row 0 removed, row 2 moved into it (what the store's swap_remove does): b's entry in
        // dimension 2 and c's in dimension 1 fill a's holes, and their places are corrected.
        let rows = [&a, &b, &c];
        index.remove(0, &a, |row| &rows[row].indices);
        assert_eq!(index.places, [vec![], vec![0], vec![0, 0]]);
        index.move_row(2, 0, &c);
        assert_eq!(index.places, [vec![0, 0], vec![0]]);
        assert_eq!(dots(&index, &all), [(0, 6.0), (1, 3.0)]);
        // Dimension 3's list emptied: it leaves the map.
        let rows = [&c, &b];
        index.remove(0, &c, |row| &rows[row].indices);
        assert_eq!(index.postings.len(), 1);
        assert_eq!(dots(&index, &all), [(1, 3.0)]);
        assert!(index.memory_bytes() > 0);
        index.clear();
        assert_eq!(dots(&index, &all), []);
    }
}
