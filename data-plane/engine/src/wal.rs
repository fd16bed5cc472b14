//! The write-ahead log of one index: framing, group commit and replay.
//!
//! # Files
//!
//! An index directory holds numbered log files, `wal-000001.log`,
//! `wal-000002.log`, …, replayed in order. A flush starts the next file
//! ([`Wal::rotate`]) at the moment it cuts the memtable, so every file before
//! it is wholly covered by the segments the flush writes; once the manifest
//! says so, those files are deleted ([`remove_before`]) and recovery replays
//! from the manifest's first file on. Each file is:
//!
//! ```text
//! header = magic "LARCHWAL" | version:u32 | file number:u64 | crc32 of the previous 20 bytes:u32
//! record = payload length:u32 | crc32 of the payload:u32 | crc32 of the previous 8 bytes:u32 | payload   (see `codec`)
//! ```
//!
//! All integers are little-endian. The files are written with plain
//! `std::fs`: a log needs appends and `fdatasync`, which the `object_store`
//! abstraction (immutable whole objects) does not offer; segments and the
//! manifest go through it (see `storage`). A new file is written as
//! `wal-NNNNNN.log.tmp`, synced and renamed into place, so a crash never
//! leaves a half-made log file; a leftover `.tmp` is deleted.
//!
//! # Group commit
//!
//! A writer frames its record into a shared pending buffer and waits. One
//! writer at a time becomes the leader: it takes the whole buffer, writes it
//! and calls `sync_data` without holding the buffer's mutex (so others keep
//! queueing the next batch), then numbers its records (their log sequence
//! numbers, see `wal/commit.rs`), publishes the batch's number as finished
//! and wakes everyone. Writers of one batch share one `fdatasync`.
//!
//! # Replay and damage
//!
//! A crash can leave the last batch half written. Replay therefore drops a
//! damaged record at the very end of the last file (incomplete, or failing its
//! checksum with nothing but zeros after it), truncates the file to the last
//! good record and logs a warning. Damage anywhere else is
//! [`Error::Corrupt`](crate::Error::Corrupt) with the file and offset: recovery stops instead of
//! serving partial data.
//!
//! The frame carries its own checksum, so a damaged length is never mistaken
//! for a record cut short by a crash: a frame that passes its checksum has a
//! true length (a record running past the end of the file is then torn), and
//! a frame that fails it is torn only if no intact record follows it anywhere
//! in the file — a crash cannot leave acknowledged records behind a torn one,
//! while damage to an old record does.
//!
//! # Layout
//!
//! | File | What it owns |
//! |---|---|
//! | `wal/frame.rs` | the byte format: file header and record frame, their checksums |
//! | `wal/file.rs` | log files on disk: names, creation, deletion, directory syncs, the `LogFile` appended to |
//! | `wal/commit.rs` | [`Wal`]: appends with group commit, the poisoning after a failed sync, rotation |
//! | `wal/replay.rs` | reading the log back: `replay` of an index directory, `scan` of one file, torn tails and damage |

mod commit;
mod file;
mod frame;
mod replay;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub(crate) use commit::Wal;
#[cfg(test)]
pub(crate) use file::LogFile;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use file::file_name;
pub(crate) use file::{create_file, remove_before, sync_dir};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use frame::FRAME_LEN;
pub(crate) use frame::HEADER_LEN;
#[cfg(test)]
pub(crate) use replay::Scan;
pub(crate) use replay::replay;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use replay::scan;
