//! The spool: a first-in first-out queue of results not yet stored, kept in memory up to a
//! bound and on disk in full, so that a killed process loses none of them.
//!
//! ```text
//!  push ──> append one JSON line to the open segment ──> memory queue ──> take ──> ack
//!            (segment-<seq>.jsonl in the spool dir)        (or disk only             │
//!                                                           while spilling)    requeue ┘
//! ```
//!
//! Every item is written to disk when it is pushed (one `write` per line): a killed process
//! loses nothing. [`Spool::sync`] (`fsync` of the open segment, and of the directory after a
//! segment was created) bounds what a crash of the whole machine can lose to the lines written
//! since its last call, segments closed since then included. A
//! segment is deleted once every item in it has been acknowledged (stored, or given up). At
//! start, the segments left by the previous run are queued first, oldest first: they are
//! *replayed*. Replaying an item that was in fact stored just before the kill is harmless only
//! if the consumer ignores duplicates (the heartbeat insert does, by a unique key).
//!
//! Memory holds at most `memory_items` items (plus the segment being loaded). Beyond that, new
//! items are on disk only ("spilling") and are read back, one segment at a time, once memory
//! has drained. The whole spool holds at most `max_items`: past it, the oldest items are
//! dropped and returned to the caller, which counts and logs them.
//!
//! One process at a time may use a spool directory: it holds an exclusive lock on its `lock`
//! file for as long as the spool is open.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Default most items the spool holds, memory and disk together.
pub const DEFAULT_MAX_ITEMS: usize = 100_000;
/// Default most items kept in memory.
pub const DEFAULT_MEMORY_ITEMS: usize = 10_000;
/// Default items per segment file.
pub const DEFAULT_SEGMENT_ITEMS: usize = 1_000;

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another process holds the directory's lock.
    #[error("spool directory {0} is in use by another process")]
    Busy(PathBuf),
    /// A file operation failed.
    #[error("spool I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An item could not be encoded.
    #[error("cannot encode spool item: {0}")]
    Encode(#[from] serde_json::Error),
}

impl SpoolError {
    /// True when the spool cannot be used at all (as opposed to one failed write).
    pub fn is_fatal(&self) -> bool {
        matches!(self, SpoolError::Busy(_))
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Bounds of a spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The directory holding the segments and the lock file.
    pub dir: PathBuf,
    /// Most items held, memory and disk together; the oldest go first past it.
    pub max_items: usize,
    /// Most items kept in memory before new ones stay on disk only.
    pub memory_items: usize,
    /// Items per segment file before a new one is started.
    pub segment_items: usize,
}

impl SpoolConfig {
    /// The default bounds in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_items: DEFAULT_MAX_ITEMS,
            memory_items: DEFAULT_MEMORY_ITEMS,
            segment_items: DEFAULT_SEGMENT_ITEMS,
        }
    }
}

/// An item taken from the spool; give it back with [`Spool::ack`] or [`Spool::requeue`].
#[derive(Debug)]
pub struct Spooled<T> {
    pub item: T,
    /// The segment holding it on disk; `None` when writing it to disk failed.
    segment: Option<u64>,
}

/// What [`Spool::open`] found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Segments left by an earlier run.
    pub segments: usize,
    /// Lines in them (replayed as they are read back).
    pub items: usize,
}

/// What was dropped to keep the spool within its bound, oldest first.
#[derive(Debug)]
pub struct Dropped<T> {
    /// Items dropped from memory.
    pub items: Vec<T>,
    /// Items dropped with a whole segment that could not be read back.
    pub unread: usize,
}

impl<T> Dropped<T> {
    /// How many items were dropped.
    pub fn count(&self) -> usize {
        self.items.len() + self.unread
    }
}

struct OpenSegment {
    seq: u64,
    file: File,
    items: usize,
    /// Whether its items are on disk only (not in memory).
    disk_only: bool,
    /// Whether lines were written to it since it was last synced.
    unsynced: bool,
}

/// A spool of `T`s; see the module docs.
pub struct Spool<T> {
    config: SpoolConfig,
    _lock: File,
    memory: VecDeque<Spooled<T>>,
    /// Items taken and neither acknowledged nor requeued yet.
    taken: usize,
    /// Segments whose items were in memory: unacknowledged items left in each.
    loaded: BTreeMap<u64, usize>,
    /// Sealed segments whose items are on disk only, oldest first, with their line counts.
    unloaded: VecDeque<(u64, usize)>,
    open: Option<OpenSegment>,
    next_seq: u64,
    /// Lines that could not be read back, since the spool was opened.
    unreadable: usize,
    /// Whether a segment was created since the directory was last synced.
    dir_unsynced: bool,
    /// Segments closed with lines not yet synced, for the next [`Spool::sync`] (dropped when
    /// deleted, so bounded by the segments on disk even if `sync` is never called).
    sealed_unsynced: Vec<(u64, File)>,
}

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".jsonl";

impl<T: Serialize + DeserializeOwned> Spool<T> {
    /// Opens (creating it if needed) and locks the directory, and queues the segments an
    /// earlier run left there for replay.
    pub fn open(config: SpoolConfig) -> Result<(Self, Recovered), SpoolError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Busy(dir));
        }

        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let name = entry.map_err(io_error(&dir))?.file_name();
            let seq = name
                .to_str()
                .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok());
            seqs.extend(seq);
        }
        seqs.sort_unstable();

        let mut recovered = Recovered::default();
        let mut unloaded = VecDeque::new();
        for &seq in &seqs {
            let path = segment_path(&dir, seq);
            let file = File::open(&path).map_err(io_error(&path))?;
            let lines = BufReader::new(file).lines().count();
            if lines == 0 {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            recovered.segments += 1;
            recovered.items += lines;
            unloaded.push_back((seq, lines));
        }
        let spool = Self {
            next_seq: seqs.last().map_or(0, |s| s + 1),
            config,
            _lock: lock,
            memory: VecDeque::new(),
            taken: 0,
            loaded: BTreeMap::new(),
            unloaded,
            open: None,
            unreadable: 0,
            dir_unsynced: false,
            sealed_unsynced: Vec::new(),
        };
        Ok((spool, recovered))
    }

    /// Items held: in memory, taken, and on disk only.
    pub fn len(&self) -> usize {
        self.memory.len() + self.taken + self.disk_only_items()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items not taken yet (in memory or on disk only).
    pub fn waiting(&self) -> usize {
        self.memory.len() + self.disk_only_items()
    }

    /// Lines that could not be read back since the spool was opened (skipped).
    pub fn unreadable(&self) -> usize {
        self.unreadable
    }

    fn disk_only_items(&self) -> usize {
        let open = self
            .open
            .as_ref()
            .filter(|o| o.disk_only)
            .map_or(0, |o| o.items);
        self.unloaded.iter().map(|(_, n)| n).sum::<usize>() + open
    }

    fn spilling(&self) -> bool {
        !self.unloaded.is_empty() || self.open.as_ref().is_some_and(|o| o.disk_only)
    }

    /// Appends an item. It is kept even when writing it to disk fails (in memory only; the
    /// error is returned for the caller to log). Returns what was dropped to stay in bounds.
    pub fn push(&mut self, item: T) -> (Dropped<T>, Result<(), SpoolError>) {
        let disk_only = self.spilling() || self.memory.len() + self.taken >= self.memory_bound();
        match self.append(&item, disk_only) {
            Ok(_) if disk_only => {}
            Ok(seq) => {
                *self.loaded.entry(seq).or_insert(0) += 1;
                self.memory.push_back(Spooled {
                    item,
                    segment: Some(seq),
                });
            }
            Err(e) => {
                self.memory.push_back(Spooled {
                    item,
                    segment: None,
                });
                return (self.enforce_bound(), Err(e));
            }
        }
        (self.enforce_bound(), Ok(()))
    }

    fn memory_bound(&self) -> usize {
        self.config.memory_items.max(1)
    }

    /// Writes one line to the open segment (starting a new one when the open one is full or
    /// of the other kind), and returns the segment's number.
    fn append(&mut self, item: &T, disk_only: bool) -> Result<u64, SpoolError> {
        let mut line = serde_json::to_vec(item)?;
        line.push(b'\n');
        let full = self.open.as_ref().is_some_and(|o| {
            o.items >= self.config.segment_items.max(1) || o.disk_only != disk_only
        });
        if full {
            self.seal()?;
        }
        if self.open.is_none() {
            let seq = self.next_seq;
            let path = segment_path(&self.config.dir, seq);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            self.next_seq += 1;
            self.open = Some(OpenSegment {
                seq,
                file,
                items: 0,
                disk_only,
                unsynced: false,
            });
            self.dir_unsynced = true;
        }
        let open = self.open.as_mut().expect("a segment was opened just above");
        let path = segment_path(&self.config.dir, open.seq);
        open.file.write_all(&line).map_err(io_error(&path))?;
        open.items += 1;
        open.unsynced = true;
        Ok(open.seq)
    }

    /// Closes the open segment: deleted if every item in it is already acknowledged, else kept
    /// for the next [`Spool::sync`] if it has unsynced lines, and queued for reading back if
    /// its items are on disk only.
    fn seal(&mut self) -> Result<(), SpoolError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let pending = self.loaded.get(&open.seq).is_some_and(|n| *n > 0);
        if !open.disk_only && !pending {
            self.loaded.remove(&open.seq);
            return self.remove_segment(open.seq);
        }
        if open.unsynced {
            self.sealed_unsynced.push((open.seq, open.file));
        }
        if open.disk_only {
            self.unloaded.push_back((open.seq, open.items));
        }
        Ok(())
    }

    /// Makes every line written so far durable: `fsync` of the segments closed and of the open
    /// one if lines were written to them since the last call, and of the directory if a
    /// segment was created. The writer calls it on a timer, off the path of each push.
    /// Returns whether anything needed it.
    pub fn sync(&mut self) -> Result<bool, SpoolError> {
        let mut synced = !self.sealed_unsynced.is_empty();
        for (seq, file) in std::mem::take(&mut self.sealed_unsynced) {
            file.sync_data()
                .map_err(io_error(&segment_path(&self.config.dir, seq)))?;
        }
        if let Some(open) = self.open.as_mut().filter(|o| o.unsynced) {
            let path = segment_path(&self.config.dir, open.seq);
            open.file.sync_data().map_err(io_error(&path))?;
            open.unsynced = false;
            synced = true;
        }
        if self.dir_unsynced {
            let dir = &self.config.dir;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(dir))?;
            self.dir_unsynced = false;
            synced = true;
        }
        Ok(synced)
    }

    /// Takes up to `n` items, oldest first, reading the next segment back from disk when
    /// memory is empty. Returns the items and the lines that could not be read back.
    pub fn take(&mut self, n: usize) -> Result<Vec<Spooled<T>>, SpoolError> {
        if self.memory.is_empty() && self.spilling() {
            self.load_next_segment()?;
        }
        let n = n.min(self.memory.len());
        self.taken += n;
        Ok(self.memory.drain(..n).collect())
    }

    fn load_next_segment(&mut self) -> Result<(), SpoolError> {
        if self.unloaded.is_empty() {
            self.seal()?;
        }
        let Some((seq, _)) = self.unloaded.pop_front() else {
            return Ok(());
        };
        let path = segment_path(&self.config.dir, seq);
        let file = File::open(&path).map_err(io_error(&path))?;
        let mut count = 0;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io_error(&path))?;
            match serde_json::from_str::<T>(&line) {
                Ok(item) => {
                    count += 1;
                    self.memory.push_back(Spooled {
                        item,
                        segment: Some(seq),
                    });
                }
                // A line cut short by a full disk, or written by another version.
                Err(_) => self.unreadable += 1,
            }
        }
        if count == 0 {
            self.remove_segment(seq)?;
        } else {
            self.loaded.insert(seq, count);
        }
        Ok(())
    }

    /// Marks taken items as done (stored, or given up for good); deletes every segment
    /// left with nothing pending.
    pub fn ack(&mut self, items: impl IntoIterator<Item = Spooled<T>>) -> Result<(), SpoolError> {
        for spooled in items {
            self.taken = self.taken.saturating_sub(1);
            self.release(spooled.segment)?;
        }
        Ok(())
    }

    /// Gives taken items back, at the head of the queue in their order.
    pub fn requeue(&mut self, items: Vec<Spooled<T>>) {
        self.taken = self.taken.saturating_sub(items.len());
        for spooled in items.into_iter().rev() {
            self.memory.push_front(spooled);
        }
    }

    fn release(&mut self, segment: Option<u64>) -> Result<(), SpoolError> {
        let Some(seq) = segment else {
            return Ok(());
        };
        let Some(pending) = self.loaded.get_mut(&seq) else {
            return Ok(());
        };
        *pending = pending.saturating_sub(1);
        if *pending > 0 {
            return Ok(());
        }
        // Done with: deleted, and closed first if it is the open one (the next push starts a
        // new segment), so that a clean stop leaves nothing to replay.
        self.loaded.remove(&seq);
        if self.open.as_ref().is_some_and(|o| o.seq == seq) {
            self.open = None;
        }
        self.remove_segment(seq)
    }

    /// Drops the oldest items until the spool is within `max_items` again. Items being
    /// written (taken) are never dropped.
    fn enforce_bound(&mut self) -> Dropped<T> {
        let mut dropped = Dropped {
            items: Vec::new(),
            unread: 0,
        };
        while self.len() > self.config.max_items.max(1) {
            if self.memory.is_empty() && !self.unloaded.is_empty() {
                // Read the oldest segment back so that its items are dropped one by one.
                if self.load_next_segment().is_err() {
                    if let Some((seq, lines)) = self.unloaded.pop_front() {
                        let _ = self.remove_segment(seq);
                        dropped.unread += lines;
                    }
                    continue;
                }
            }
            if let Some(oldest) = self.memory.pop_front() {
                // Deleting a segment can fail; it is then replayed once more at the next
                // start, which the consumer must tolerate anyway.
                let _ = self.release(oldest.segment);
                dropped.items.push(oldest.item);
            } else {
                // Only taken items and the open disk-only segment are left: the newest.
                break;
            }
        }
        dropped
    }

    fn remove_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
        // Nothing left to sync in it: this keeps one handle at most per segment on disk.
        self.sealed_unsynced.retain(|(s, _)| *s != seq);
        let path = segment_path(&self.config.dir, seq);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path)(e)),
            _ => Ok(()),
        }
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}"))
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
