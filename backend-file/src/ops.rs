//! The store's operations as blocking functions over the session directory.
//!
//! Rules every operation follows:
//! - readers never lock: a session file only ever changes by an atomic `rename` (or
//!   appears by `link`), so a read sees one complete version;
//! - every change to an existing session file (update, touch, delete, removal of an
//!   expired file, replacement of an expired file by a create) happens while holding the
//!   file's `flock`, obtained through [`sfs::lock_existing`], after re-reading the file
//!   through the locked descriptor. That makes read-check-write atomic across threads and
//!   processes, and a writer that waited on a file deleted meanwhile finds it gone instead
//!   of resurrecting it;
//! - a new session file appears by `link(temp, final)`, which fails if the name exists:
//!   two creators never both win, and readers never see a partial file;
//! - each file's modification time is its record's deadline, so a sweep skips live files
//!   with one `stat` each. The deadline inside the encoded record stays authoritative;
//! - only regular files are sessions: every open goes through [`sfs::open_regular`], and
//!   an entry of any other kind under a session's name (FIFO, directory, symlink, socket,
//!   device) is a corrupt record for that session: never read, locked, replaced or
//!   removed, and logged by the session's fingerprint.

use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::fs::{self, File, ReadDir};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use session_core::{
    Codec, CodecError, EncodedBytes, Error, Inserted, LazyRecord, Record, Result, SessionKey,
    Timestamp,
};

use crate::error::io_error;
use crate::fs::{self as sfs, EntryKind, Opened, ReadOutcome, TEMP_PREFIX};
use crate::store::SweepReport;

/// How many directory entries one blocking step of a sweep handles.
pub(crate) const SWEEP_BATCH: usize = 256;

/// The configured store: everything the blocking operations need.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) prefix: String,
    pub(crate) fsync: bool,
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) max_file_size: usize,
    pub(crate) stale_temp_after: Duration,
}

/// A session file's content, decoded: whole ([`Record`]), or with its data left encoded
/// ([`LazyRecord`], for [`Inner::load_lazy`]).
enum Current<R = Record> {
    Live(R),
    Expired(R),
    Corrupt(CodecError),
    /// The name holds something other than a regular file.
    NotRegular(EntryKind),
}

/// What a read decodes a session file's bytes into: a whole [`Record`], or a
/// [`LazyRecord`] whose data stays encoded until a key is read.
trait Decoded: Sized {
    /// Decodes the file's bytes (borrowed from the reading thread's buffer).
    fn decode(codec: &dyn Codec, bytes: &[u8]) -> std::result::Result<Self, CodecError>;
    /// Whether the record's deadline (the one inside it, which is authoritative) has
    /// passed at `now`.
    fn is_expired_at(&self, now: Timestamp) -> bool;
}

impl Decoded for Record {
    fn decode(codec: &dyn Codec, bytes: &[u8]) -> std::result::Result<Self, CodecError> {
        codec.decode(bytes)
    }
    fn is_expired_at(&self, now: Timestamp) -> bool {
        Record::is_expired_at(self, now)
    }
}

impl Decoded for LazyRecord {
    /// The bytes are copied once into a buffer of their own: they are borrowed from the
    /// thread's reusable read buffer (see [`sfs::with_read_buf`]), which the next read
    /// overwrites, while the record's data must keep them until the request reads it.
    fn decode(codec: &dyn Codec, bytes: &[u8]) -> std::result::Result<Self, CodecError> {
        codec.decode_lazy(EncodedBytes::from(bytes.to_vec()))
    }
    /// As [`Record::is_expired_at`]: a deadline equal to `now` counts as past.
    fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// What [`Inner::remove_expired`] did with a file.
enum Removal {
    /// Removed; the principal the record was signed in as, if it could be read.
    Removed(Option<String>),
    Kept,
    NotRegular(EntryKind),
}

impl Inner {
    /// The file of `key`. The key is validated `[a-z0-9]{32}` and the prefix is checked
    /// at construction, so the name never leaves the directory.
    pub(crate) fn path_of(&self, key: &SessionKey) -> PathBuf {
        let key = key.as_str();
        // One allocation of the final size: `dir.join(prefix + key)` costs two and a copy.
        let mut path =
            PathBuf::with_capacity(self.dir.as_os_str().len() + 1 + self.prefix.len() + key.len());
        path.push(&self.dir);
        path.push(&self.prefix); // an empty prefix leaves just the separator
        path.as_mut_os_string().push(key);
        path
    }

    /// Creates and locks the index entry of a record signed in as `principal` (nothing
    /// for an anonymous one); the caller writes the record while holding it.
    fn mark(
        &self,
        principal: Option<&str>,
        key: &SessionKey,
    ) -> io::Result<Option<crate::index::MarkerLock>> {
        principal.map(|p| self.hold_marker(p, key)).transpose()
    }

    /// Removes the index entry of `principal` for `key` if it is stale now.
    fn unmark_opt(&self, principal: Option<&str>, key: &SessionKey) {
        if let Some(p) = principal {
            self.unmark_logged(p, key);
        }
    }

    /// The key a directory entry belongs to, if it is a session file.
    fn key_of(&self, name: &OsStr) -> Option<SessionKey> {
        let rest = name.to_str()?.strip_prefix(self.prefix.as_str())?;
        SessionKey::parse(rest).ok()
    }

    fn io(&self, op: &'static str, key: Option<&SessionKey>) -> impl FnOnce(io::Error) -> Error {
        move |e| io_error(op, key, &self.dir, e)
    }

    fn sync_dir(&self) -> io::Result<()> {
        if self.fsync {
            sfs::sync_dir(&self.dir)
        } else {
            Ok(())
        }
    }

    fn too_large(&self, size: u64) -> CodecError {
        CodecError::TooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: self.max_file_size,
        }
    }

    /// Decodes what was read, with the limit applied.
    fn decode<R: Decoded>(&self, read: ReadOutcome<'_>) -> std::result::Result<R, CodecError> {
        match read {
            ReadOutcome::Bytes(bytes) => R::decode(self.codec.as_ref(), bytes),
            ReadOutcome::TooLarge(size) => Err(self.too_large(size)),
            ReadOutcome::NotRegular(kind) => Err(not_regular_error(kind)),
        }
    }

    fn classify<R: Decoded>(&self, read: ReadOutcome<'_>, now: Timestamp) -> Current<R> {
        if let ReadOutcome::NotRegular(kind) = read {
            return Current::NotRegular(kind);
        }
        match self.decode::<R>(read) {
            Ok(r) if r.is_expired_at(now) => Current::Expired(r),
            Ok(r) => Current::Live(r),
            Err(e) => Current::Corrupt(e),
        }
    }

    /// Reads the file through its locked descriptor.
    fn read_locked(&self, (file, meta): &(File, fs::Metadata)) -> io::Result<Current> {
        sfs::with_read_buf(|buf| {
            let read = match sfs::read_known_len(file, meta.len(), buf, self.max_file_size)? {
                None => ReadOutcome::Bytes(buf),
                Some(size) => ReadOutcome::TooLarge(size),
            };
            Ok(self.classify(read, Timestamp::now()))
        })
    }

    /// A stored record that cannot be decoded: warned about (by fingerprint) and typed.
    fn corrupt(&self, key: &SessionKey, e: CodecError) -> Error {
        tracing::warn!(
            engine = crate::error::ENGINE,
            session = %key.fingerprint(),
            error = %e,
            "session file cannot be decoded; it is left in place until its deadline (its mtime) passes"
        );
        Error::Codec(e)
    }

    /// An entry under a session's name that is not a regular file: warned about (by
    /// fingerprint), typed as a corrupt record, and left where it is.
    fn not_regular(&self, key: &SessionKey, kind: EntryKind) -> Error {
        self.warn_not_regular(key, kind);
        Error::Codec(not_regular_error(kind))
    }

    fn warn_not_regular(&self, key: &SessionKey, kind: EntryKind) {
        tracing::warn!(
            engine = crate::error::ENGINE,
            session = %key.fingerprint(),
            entry = %kind,
            "an entry named like a session file is not a regular file; it is treated as a \
             corrupt record, not read, and left in place"
        );
    }

    /// Atomically replaces the file at `path` (whose lock the caller holds, if it exists).
    fn replace(&self, path: &Path, bytes: &[u8], deadline: Timestamp) -> io::Result<()> {
        let temp = sfs::write_temp(&self.dir, bytes, deadline.to_system_time(), self.fsync)?;
        fs::rename(temp.path(), path)?;
        temp.persisted();
        self.sync_dir()
    }

    pub(crate) fn insert_new(
        &self,
        key: &SessionKey,
        bytes: &[u8],
        deadline: Timestamp,
        principal: Option<&str>,
    ) -> Result<Inserted> {
        let io = |e| io_error("create", Some(key), &self.dir, e);
        let path = self.path_of(key);
        // Written and flushed before any name is claimed: the link below publishes a
        // complete file or nothing.
        let temp =
            sfs::write_temp(&self.dir, bytes, deadline.to_system_time(), self.fsync).map_err(io)?;
        for _ in 0..16 {
            // The index entry first (a listing may show a session that does not exist
            // yet, never miss one that does), locked until the record has its name.
            let marker = self.mark(principal, key).map_err(io)?;
            match fs::hard_link(temp.path(), &path) {
                Ok(()) => {
                    drop(marker);
                    drop(temp);
                    self.sync_dir().map_err(io)?;
                    return Ok(Inserted::Created);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io(io::Error::new(
                        e.kind(),
                        format!(
                            "{e} (creating a session links a temp file to its name: the \
                             directory's file system must support hard links)"
                        ),
                    )));
                }
            }
            // A session file's lock is never awaited while holding a marker's.
            drop(marker);
            // The name is taken: only an expired record may be replaced, under its lock.
            let locked = match sfs::lock_existing(&path).map_err(io)? {
                Opened::File(f, m) => (f, m),
                Opened::Missing => continue, // deleted meanwhile: try to claim the name again
                // Never replaced: create re-rolls the key.
                Opened::NotRegular(_) => {
                    self.unmark_opt(principal, key);
                    return Ok(Inserted::KeyTaken);
                }
            };
            return match self.read_locked(&locked).map_err(io)? {
                Current::Expired(old) => {
                    let marker = self.mark(principal, key).map_err(io)?;
                    fs::rename(temp.path(), &path).map_err(io)?;
                    temp.persisted();
                    drop(marker);
                    drop(locked);
                    self.sync_dir().map_err(io)?;
                    if old.principal() != principal {
                        self.unmark_opt(old.principal(), key);
                    }
                    Ok(Inserted::Created)
                }
                // A record that cannot be read is never overwritten; create re-rolls.
                Current::Live(_) | Current::Corrupt(_) | Current::NotRegular(_) => {
                    drop(locked);
                    self.unmark_opt(principal, key);
                    Ok(Inserted::KeyTaken)
                }
            };
        }
        Err(io(io::Error::other(
            "the session name kept appearing and disappearing while creating it",
        )))
    }

    pub(crate) fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.load_as(key)
    }

    /// [`Inner::load`], the record's data left encoded until a key is read
    /// ([`session_core::lazy`]): the same read, expiry check, removal of an expired file
    /// and errors; only the decode differs ([`Codec::decode_lazy`]).
    pub(crate) fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.load_as(key)
    }

    /// The live record under `key`, decoded as `R`. An expired file is removed (its lock
    /// taken and the file re-read and decoded whole, as every removal does).
    fn load_as<R: Decoded>(&self, key: &SessionKey) -> Result<Option<R>> {
        let path = self.path_of(key);
        // Decoded here, on the blocking thread: a large session takes milliseconds to
        // decode, which must not stall the executor either. Decoded straight from the
        // thread's read buffer, which is free again before any removal below reads.
        let current = sfs::read_path(&path, self.max_file_size, |read| {
            self.classify::<R>(read, Timestamp::now())
        });
        let Some(current) = current.map_err(self.io("load", Some(key)))? else {
            return Ok(None);
        };
        match current {
            Current::Live(r) => Ok(Some(r)),
            Current::Expired(_) => {
                let removal = self
                    .remove_expired(key, &path)
                    .map_err(self.io("remove expired", Some(key)))?;
                if let Removal::Removed(principal) = removal {
                    self.unmark_opt(principal.as_deref(), key);
                }
                Ok(None)
            }
            Current::Corrupt(e) => Err(self.corrupt(key, e)),
            Current::NotRegular(kind) => Err(self.not_regular(key, kind)),
        }
    }

    /// Removes the file at `path` if, under its lock, it holds an expired record, or an
    /// undecodable one whose deadline (the file's mtime) has passed. An entry that is not
    /// a regular file is never locked nor removed.
    fn remove_expired(&self, key: &SessionKey, path: &Path) -> io::Result<Removal> {
        let locked = match sfs::lock_existing(path)? {
            Opened::File(f, m) => (f, m),
            Opened::Missing => return Ok(Removal::Kept),
            Opened::NotRegular(kind) => return Ok(Removal::NotRegular(kind)),
        };
        let mut principal = None;
        let remove = match self.read_locked(&locked)? {
            Current::Expired(r) => {
                principal = r.meta.principal;
                true
            }
            Current::NotRegular(kind) => return Ok(Removal::NotRegular(kind)),
            Current::Live(r) => {
                // The deadline hint was stale (the file was copied or touched by hand):
                // repair it so later sweeps skip the file by `stat` again.
                let _ = locked.0.set_modified(r.expires_at.to_system_time());
                false
            }
            Current::Corrupt(e) => {
                let deadline = locked.1.modified()?;
                let due = Timestamp::from_system_time(deadline) <= Timestamp::now();
                if due {
                    tracing::warn!(
                        engine = crate::error::ENGINE,
                        session = %key.fingerprint(),
                        error = %e,
                        "removing an undecodable session file whose deadline passed"
                    );
                }
                due
            }
        };
        if remove {
            sfs::remove_if_present(path)?;
            Ok(Removal::Removed(principal))
        } else {
            Ok(Removal::Kept)
        }
    }

    pub(crate) fn update(
        &self,
        key: &SessionKey,
        mut record: Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        let io = |e| io_error("update", Some(key), &self.dir, e);
        let path = self.path_of(key);
        let locked = match sfs::lock_existing(&path).map_err(io)? {
            Opened::File(f, m) => (f, m),
            Opened::Missing => return Err(Error::NotFound),
            Opened::NotRegular(kind) => return Err(self.not_regular(key, kind)),
        };
        let current = match self.read_locked(&locked).map_err(io)? {
            Current::Live(r) => r,
            Current::Expired(old) => {
                sfs::remove_if_present(&path).map_err(io)?;
                drop(locked);
                self.unmark_opt(old.principal(), key);
                return Err(Error::NotFound);
            }
            Current::Corrupt(e) => return Err(self.corrupt(key, e)),
            Current::NotRegular(kind) => return Err(self.not_regular(key, kind)),
        };
        if let Some(expected) = expected.filter(|v| *v != current.version) {
            return Err(Error::Conflict {
                expected,
                found: current.version,
            });
        }
        record.version = current.version.saturating_add(1);
        let bytes = self.codec.encode(&record)?;
        // The index entry is held across the write (see `index`): a listing that meets
        // it meanwhile waits and then sees the new record.
        let marker = self.mark(record.principal(), key).map_err(io)?;
        self.replace(&path, &bytes, record.expires_at).map_err(io)?;
        drop(marker);
        drop(locked); // the lock is held until the new file is in place
        if current.principal() != record.principal() {
            // Re-bound (a login as someone else, a logout by `clear()`): the old
            // principal's listing loses it now rather than at its next listing.
            self.unmark_opt(current.principal(), key);
        }
        Ok(record.version)
    }

    pub(crate) fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let io = |e| io_error("touch", Some(key), &self.dir, e);
        let path = self.path_of(key);
        let locked = match sfs::lock_existing(&path).map_err(io)? {
            Opened::File(f, m) => (f, m),
            Opened::Missing => return Err(Error::NotFound),
            Opened::NotRegular(kind) => return Err(self.not_regular(key, kind)),
        };
        let mut current = match self.read_locked(&locked).map_err(io)? {
            Current::Live(r) => r,
            Current::Expired(old) => {
                sfs::remove_if_present(&path).map_err(io)?;
                drop(locked);
                self.unmark_opt(old.principal(), key);
                return Err(Error::NotFound);
            }
            Current::Corrupt(e) => return Err(self.corrupt(key, e)),
            Current::NotRegular(kind) => return Err(self.not_regular(key, kind)),
        };
        // The deadline lives inside the encoded record, so the file is rewritten with the
        // same data and version: only `expires_at` differs.
        current.expires_at = expires_at;
        let bytes = self.codec.encode(&current)?;
        // Held across the write like `update`'s: a listing must not prune the marker of
        // a session whose deadline this renews.
        let marker = self.mark(current.principal(), key).map_err(io)?;
        self.replace(&path, &bytes, expires_at).map_err(io)?;
        drop(marker);
        drop(locked);
        Ok(())
    }

    pub(crate) fn delete(&self, key: &SessionKey) -> Result<bool> {
        let io = |e| io_error("delete", Some(key), &self.dir, e);
        let path = self.path_of(key);
        // Under the lock, so a writer holding it finishes first and a writer waiting for
        // it finds the file gone afterwards (no resurrection).
        let locked = match sfs::lock_existing(&path).map_err(io)? {
            Opened::File(f, m) => (f, m),
            Opened::Missing => return Ok(false),
            // Not a session: nothing of the visitor's to delete, and not ours to remove.
            Opened::NotRegular(kind) => {
                self.warn_not_regular(key, kind);
                return Ok(false);
            }
        };
        // The record's principal, whose index entry goes with it (none for a record that
        // cannot be decoded: listing or `clear_expired` prunes that entry).
        let principal = match self.read_locked(&locked).map_err(io)? {
            Current::Live(r) | Current::Expired(r) => r.meta.principal,
            Current::Corrupt(_) | Current::NotRegular(_) => None,
        };
        let removed = sfs::remove_if_present(&path).map_err(io)?;
        drop(locked);
        if removed {
            self.sync_dir().map_err(io)?;
        }
        self.unmark_opt(principal.as_deref(), key);
        Ok(removed)
    }

    pub(crate) fn put_raw(
        &self,
        key: &SessionKey,
        bytes: &[u8],
        expires_at: Timestamp,
    ) -> Result<()> {
        let io = |e| io_error("put raw", Some(key), &self.dir, e);
        let path = self.path_of(key);
        let lock = match sfs::lock_existing(&path).map_err(io)? {
            // Not replaced either: the rename would remove whatever was put there.
            Opened::NotRegular(kind) => return Err(self.not_regular(key, kind)),
            other => other,
        };
        // Bytes that decode to a signed-in record are indexed like any write of one.
        let principal = self.codec.decode(bytes).ok().and_then(|r| r.meta.principal);
        let marker = self.mark(principal.as_deref(), key).map_err(io)?;
        self.replace(&path, bytes, expires_at).map_err(io)?;
        drop(marker);
        drop(lock);
        Ok(())
    }

    /// The stored bytes, read with the same bound as a load: a file above the limit is a
    /// [`CodecError::TooLarge`] and an entry that is not a regular file a corrupt record.
    pub(crate) fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        let read = sfs::read_path(&self.path_of(key), self.max_file_size, |read| match read {
            ReadOutcome::Bytes(b) => Ok(b.to_vec()),
            ReadOutcome::NotRegular(kind) => Err(self.not_regular(key, kind)),
            ReadOutcome::TooLarge(size) => Err(self.corrupt(key, self.too_large(size))),
        });
        read.map_err(self.io("get raw", Some(key)))?.transpose()
    }

    pub(crate) fn open_dir(&self, op: &'static str) -> Result<ReadDir> {
        fs::read_dir(&self.dir).map_err(self.io(op, None))
    }

    /// One bounded step of a sweep: handles up to [`SWEEP_BATCH`] entries of `iter`,
    /// adding what it did to `report`. Whether the directory is exhausted.
    ///
    /// An entry it cannot handle (one that is not a regular file, or a file it could not
    /// check) is counted, logged by fingerprint and left in place; the sweep goes on.
    pub(crate) fn sweep_batch(&self, iter: &mut ReadDir, report: &mut SweepReport) -> Result<bool> {
        let now = Timestamp::now();
        for _ in 0..SWEEP_BATCH {
            let Some(entry) = iter.next() else {
                return Ok(true);
            };
            let entry = entry.map_err(self.io("clear expired", None))?;
            let name = entry.file_name();
            if let Some(key) = self.key_of(&name) {
                self.sweep_entry(&key, &entry, now, report);
            } else if name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                self.remove_if_stale_temp(&entry.path());
            }
        }
        Ok(false)
    }

    fn sweep_entry(
        &self,
        key: &SessionKey,
        entry: &fs::DirEntry,
        now: Timestamp,
        report: &mut SweepReport,
    ) {
        let failed = |report: &mut SweepReport, e: io::Error| {
            report.failed += 1;
            tracing::warn!(
                engine = crate::error::ENGINE,
                session = %key.fingerprint(),
                error = %e,
                "clear_expired skipped a session file it could not check"
            );
        };
        // Neither the file type nor the metadata follows a symlink; the type usually
        // comes with the directory entry itself.
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => return failed(report, e),
        };
        if !meta.is_file() {
            report.not_regular += 1;
            self.warn_not_regular(key, EntryKind::of(meta.file_type()));
            return;
        }
        // The mtime is the deadline: live files cost one `stat`, no read.
        let due = meta
            .modified()
            .map(|t| Timestamp::from_system_time(t) <= now)
            .unwrap_or(true);
        if !due {
            return;
        }
        match self.remove_expired(key, &entry.path()) {
            Ok(Removal::Removed(principal)) => {
                report.removed += 1;
                self.unmark_opt(principal.as_deref(), key);
            }
            Ok(Removal::Kept) => {}
            // Replaced by something else since the `stat`.
            Ok(Removal::NotRegular(kind)) => {
                report.not_regular += 1;
                self.warn_not_regular(key, kind);
            }
            // One unreadable file must not stop the sweep of all the others.
            Err(e) => failed(report, e),
        }
    }

    /// Removes a temp file left behind by a writer that died, judged by when it was
    /// written (its ctime; the mtime holds a deadline). Writes in flight are far younger.
    fn remove_if_stale_temp(&self, path: &Path) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        let written = sfs::changed_at(&meta).unwrap_or(SystemTime::UNIX_EPOCH);
        let age = SystemTime::now()
            .duration_since(written)
            .unwrap_or(Duration::ZERO);
        if age >= self.stale_temp_after && meta.is_file() {
            match fs::remove_file(path) {
                Ok(()) => tracing::debug!(
                    engine = crate::error::ENGINE,
                    "removed a stale temp file left by an interrupted write"
                ),
                Err(e) => tracing::debug!(
                    engine = crate::error::ENGINE,
                    error = %e,
                    "could not remove a stale temp file"
                ),
            }
        }
    }

    pub(crate) fn count(&self) -> Result<u64> {
        let mut n = 0;
        for entry in self.open_dir("count")? {
            let entry = entry.map_err(self.io("count", None))?;
            if self.key_of(&entry.file_name()).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The `limit` smallest keys above `after`, streaming the directory through a bounded
    /// max-heap: memory is O(limit) whatever the directory's size.
    pub(crate) fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut heap: BinaryHeap<SessionKey> = BinaryHeap::with_capacity(limit.min(4096) + 1);
        for entry in self.open_dir("list")? {
            let entry = entry.map_err(self.io("list", None))?;
            let Some(key) = self.key_of(&entry.file_name()) else {
                continue;
            };
            if after.is_some_and(|a| key <= *a) {
                continue;
            }
            if heap.len() < limit {
                heap.push(key);
            } else if heap.peek().is_some_and(|top| key < *top) {
                heap.pop();
                heap.push(key);
            }
        }
        Ok(heap.into_sorted_vec())
    }
}

/// The corrupt-record error of an entry that is not a regular file.
fn not_regular_error(kind: EntryKind) -> CodecError {
    CodecError::Corrupt(format!(
        "the session's name holds {kind}, not a regular file (left in place)"
    ))
}
