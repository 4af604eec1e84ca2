//! The per-principal index of the session directory ([`session_core::UserIndex`]).
//!
//! Layout: `users/<principal hash>/<key>` under the session directory, one empty
//! *marker* file per signed-in session, where the principal hash is the SHA-256 of the
//! principal in 64 hex digits (a fixed-length name of `[0-9a-f]`, whatever the
//! principal holds) and the marker is named by the session key (32 characters of
//! `[a-z0-9]`, validated). Listing a principal reads one small directory and loads
//! one session file per marker: its cost follows that principal's sessions, never the
//! store's size. `users` is no session name (a session file's name is the prefix plus 32
//! key characters) and no temp name (`.tmp_`), so counting, listing, `clear_expired` and
//! `stats` never take it for a session or for an odd entry.
//!
//! The record stays authoritative; the index is a superset of the live signed-in
//! sessions, kept so by one rule: a marker is removed only while holding its `flock`
//! and after re-reading the session file, and a writer holds the marker's `flock` (from
//! before the record is written until after) whenever it writes a record bound to that
//! principal. So a marker is pruned exactly when its session is missing, expired,
//! undecodable or bound to someone else *and no writer is about to change that*; a writer
//! that finds its marker unlinked while it waited for the lock creates it again. Markers
//! are never replaced, only created and unlinked, so a locker checks that the path still
//! names the inode it locked, like the session files' lockers do.
//!
//! Lock order: a session file's lock may be held while taking a marker's, never the
//! other way round (pruning reads the session file without its lock: readers never lock).
//!
//! Who removes markers:
//! - `delete` (and so ending a session through the index, and logout) removes the
//!   deleted record's marker; an `update` that re-binds a session (login as someone
//!   else, logout through `clear()`) removes the old principal's;
//! - `clear_expired` removes the markers of the records it removes, then walks the index
//!   and removes markers whose session file is gone (a crash between marker and record,
//!   a file removed by hand), at one `stat` per marker and without reading live
//!   sessions, and removes principal directories left empty;
//! - listing prunes whatever stale marker it meets (a record expired but not yet cleared,
//!   or re-bound by a raw write).
//!
//! A new marker is flushed to disk with its directory when the store flushes its writes
//! (`fsync`), so after a power loss a surviving record still has its marker. Markers
//! are created only at sign-in, so that costs one directory flush per login.
//!
//! Path safety: marker names are validated keys and principal directories are hex
//! digests, so no input names anything outside `users/`. `users` and the principal
//! directories are created by the store with mode 0700; a `users` that is not a
//! directory (a symlink, a file) makes every index operation fail instead of following
//! it. Markers are opened with `O_NOFOLLOW | O_NONBLOCK` and must be regular files.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, ReadDir};
use std::io;
use std::path::{Path, PathBuf};

use session_core::users::UserSession;
use session_core::{Error, Record, Result, SessionKey, Timestamp};
use sha2::{Digest, Sha256};

use crate::error::io_error;
use crate::fs::{self as sfs, Opened};
use crate::ops::Inner;
use crate::store::SweepReport;

/// The index's directory, under the session directory.
pub(crate) const USERS_DIR: &str = "users";

/// How many times a writer re-creates a marker that a pruner unlinked (or whose
/// directory it removed) while the writer waited. Each retry means a pruner finished.
const MAX_MARKER_ATTEMPTS: u32 = 1_000;

/// The name of a principal's directory: SHA-256 of the principal, 64 hex digits.
pub(crate) fn principal_hash(principal: &str) -> String {
    let digest = Sha256::digest(principal.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether a directory name is a principal hash (64 lowercase hex digits).
fn is_principal_hash(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b.len() == 64 && b.iter().all(|c| HEX.contains(c))
}

/// The held lock of a marker: the writer keeps it while it writes the record.
#[derive(Debug)]
pub(crate) struct MarkerLock {
    _file: File,
}

/// What [`Inner::prune_marker`] did.
enum Pruned {
    /// The session is live and bound to the principal: the marker stays.
    Kept(Record),
    /// The marker was stale and is removed (or a pruner removed it first).
    Removed,
    /// The marker is not a regular file: left alone.
    Skipped,
}

/// What a session file says about a marker of a principal.
enum Bound {
    /// A live record signed in as the principal.
    Live(Record),
    /// Missing, expired, undecodable, not a regular file, anonymous or someone else's.
    Stale,
}

/// The state of one streamed walk of the index ([`Inner::sweep_index_batch`]).
#[derive(Debug, Default)]
pub(crate) struct IndexWalk {
    started: bool,
    outer: Option<ReadDir>,
    current: Option<PrincipalWalk>,
}

#[derive(Debug)]
struct PrincipalWalk {
    dir: PathBuf,
    iter: ReadDir,
    kept: u64,
}

impl Inner {
    pub(crate) fn users_dir(&self) -> PathBuf {
        self.dir.join(USERS_DIR)
    }

    fn principal_dir(&self, hash: &str) -> PathBuf {
        let mut p = self.users_dir();
        p.push(hash);
        p
    }

    fn index_io(
        &self,
        op: &'static str,
        key: Option<&SessionKey>,
    ) -> impl FnOnce(io::Error) -> Error {
        move |e| io_error(op, key, &self.dir, e)
    }

    /// Checks that `users` is a real directory. `Ok(false)` when it does not exist.
    fn check_users_dir(&self) -> io::Result<bool> {
        match fs::symlink_metadata(self.users_dir()) {
            Ok(m) if m.is_dir() => Ok(true),
            Ok(m) => Err(io::Error::other(format!(
                "the index entry `{USERS_DIR}` of the session directory is {}, not a \
                 directory; remove it (the store recreates it)",
                sfs::EntryKind::of(m.file_type())
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates `users/<hash>` as needed (mode 0700), flushing each new directory's
    /// parent when the store flushes writes.
    fn create_principal_dir(&self, pdir: &Path) -> io::Result<()> {
        let users = self.users_dir();
        if create_dir_0700(&users)? {
            self.sync_dir_if(&self.dir)?;
        }
        self.check_users_dir()?;
        if create_dir_0700(pdir)? {
            self.sync_dir_if(&users)?;
        }
        Ok(())
    }

    fn sync_dir_if(&self, dir: &Path) -> io::Result<()> {
        if self.fsync {
            sfs::sync_dir(dir)
        } else {
            Ok(())
        }
    }

    /// Creates the marker of (`principal`, `key`) if needed and takes its lock: the
    /// caller writes the record while holding it. See the module docs.
    pub(crate) fn hold_marker(&self, principal: &str, key: &SessionKey) -> io::Result<MarkerLock> {
        let pdir = self.principal_dir(&principal_hash(principal));
        let path = pdir.join(key.as_str());
        // One `lstat`: a `users` replaced by a symlink is refused, never followed.
        self.check_users_dir()?;
        for _ in 0..MAX_MARKER_ATTEMPTS {
            let file = match open_marker(&path, false) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match open_marker(&path, true) {
                        Ok(f) => {
                            self.sync_dir_if(&pdir)?;
                            f
                        }
                        // Created by another writer meanwhile: lock that one.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        // No directory (yet, or removed by a sweep): create it, retry.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            self.create_principal_dir(&pdir)?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(marker_open_error(&path, e)),
            };
            let held = file.metadata()?;
            if !held.is_file() {
                return Err(io::Error::other(format!(
                    "a session's index entry is {}, not a regular file",
                    sfs::EntryKind::of(held.file_type())
                )));
            }
            file.lock()?;
            match fs::symlink_metadata(&path) {
                Ok(now) if sfs::same_file(&held, &now) => return Ok(MarkerLock { _file: file }),
                // Unlinked by a pruner while we waited: create it again.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(
            "a session's index entry kept disappearing while signing it in",
        ))
    }

    /// What the session file of `key` says about the principal whose hash is `hash`.
    fn bound_to(&self, hash: &str, key: &SessionKey, now: Timestamp) -> io::Result<Bound> {
        let path = self.path_of(key);
        let read = sfs::read_path(&path, self.max_file_size, |read| match read {
            sfs::ReadOutcome::Bytes(bytes) => self.codec.decode(bytes).ok(),
            _ => None,
        })?;
        Ok(match read.flatten() {
            Some(r)
                if !r.is_expired_at(now)
                    && r.principal().is_some_and(|p| principal_hash(p) == hash) =>
            {
                Bound::Live(r)
            }
            _ => Bound::Stale,
        })
    }

    /// Removes the marker `pdir/key` unless, under its lock, the session is live and bound
    /// to the principal hashed `hash`.
    fn prune_marker(&self, pdir: &Path, hash: &str, key: &SessionKey) -> io::Result<Pruned> {
        let path = pdir.join(key.as_str());
        for _ in 0..MAX_MARKER_ATTEMPTS {
            let (file, held) = match sfs::open_regular(&path)? {
                Opened::File(f, m) => (f, m),
                Opened::Missing => return Ok(Pruned::Removed),
                Opened::NotRegular(_) => return Ok(Pruned::Skipped),
            };
            file.lock()?;
            match fs::symlink_metadata(&path) {
                Ok(now) if sfs::same_file(&held, &now) => {}
                // Unlinked by another pruner and created again by a writer: judge that one.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Pruned::Removed),
                Err(e) => return Err(e),
            }
            return match self.bound_to(hash, key, Timestamp::now())? {
                Bound::Live(r) => Ok(Pruned::Kept(r)),
                Bound::Stale => {
                    sfs::remove_if_present(&path)?;
                    drop(file);
                    Ok(Pruned::Removed)
                }
            };
        }
        Err(io::Error::other(
            "a session's index entry kept being replaced while checking it",
        ))
    }

    /// Removes the marker of (`principal`, `key`) if the session is no longer live and
    /// bound to `principal` (after a delete, an expiry or a re-binding).
    pub(crate) fn unmark(&self, principal: &str, key: &SessionKey) -> io::Result<()> {
        let hash = principal_hash(principal);
        self.prune_marker(&self.principal_dir(&hash), &hash, key)
            .map(drop)
    }

    /// [`Inner::unmark`] after a record was removed or re-bound: the record change has
    /// happened, so a failure to tidy the index is logged, not returned (listing or the
    /// next `clear_expired` prunes the marker).
    pub(crate) fn unmark_logged(&self, principal: &str, key: &SessionKey) {
        if let Err(e) = self.unmark(principal, key) {
            tracing::warn!(
                engine = crate::error::ENGINE,
                session = %key.fingerprint(),
                error = %e,
                "could not remove a session's index entry; listing or clear_expired will"
            );
        }
    }

    /// The live sessions of `principal`, oldest first, pruning stale markers on the way.
    pub(crate) fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        let io = self.index_io("list a user's sessions", None);
        let hash = principal_hash(principal);
        let pdir = self.principal_dir(&hash);
        let walk = (|| -> io::Result<Vec<(SessionKey, Record)>> {
            if !self.check_users_dir()? {
                return Ok(Vec::new());
            }
            let iter = match fs::read_dir(&pdir) {
                Ok(it) => it,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let now = Timestamp::now();
            let (mut live, mut pruned) = (Vec::new(), false);
            for entry in iter {
                let entry = entry?;
                let Some(key) = marker_key(&entry.file_name()) else {
                    continue;
                };
                match self.bound_to(&hash, &key, now)? {
                    Bound::Live(r) => live.push((key, r)),
                    // Re-checked under the marker's lock: a writer may be signing it in.
                    Bound::Stale => match self.prune_marker(&pdir, &hash, &key)? {
                        Pruned::Kept(r) => live.push((key, r)),
                        Pruned::Removed => pruned = true,
                        Pruned::Skipped => {}
                    },
                }
            }
            if pruned && live.is_empty() {
                remove_empty_dir(&pdir);
            }
            Ok(live)
        })();
        let mut out: Vec<UserSession> = walk
            .map_err(io)?
            .into_iter()
            .map(|(key, r)| UserSession::from_record(key, &r, current))
            .collect();
        session_core::users::sort_oldest_first(&mut out);
        Ok(out)
    }

    /// Ends the live session of `principal` whose public id is `id`.
    pub(crate) fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        for s in self.sessions_of(principal, None)? {
            if s.id == id {
                return self.delete(&s.stored_key);
            }
        }
        Ok(false)
    }

    /// Ends every live session of `principal` but `keep`; how many it ended.
    pub(crate) fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        let mut ended = 0;
        for s in self.sessions_of(principal, None)? {
            if Some(&s.stored_key) != keep && self.delete(&s.stored_key)? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// One bounded step of the index walk of a sweep: up to `budget` markers, removing
    /// those whose session file is gone and principal directories left empty. Whether
    /// the walk is done.
    pub(crate) fn sweep_index_batch(
        &self,
        walk: &mut IndexWalk,
        budget: usize,
        report: &mut SweepReport,
    ) -> Result<bool> {
        let io = self.index_io("clear expired index entries", None);
        let step = (|| -> io::Result<bool> {
            if !walk.started {
                walk.started = true;
                if !self.check_users_dir()? {
                    return Ok(true);
                }
                walk.outer = match fs::read_dir(self.users_dir()) {
                    Ok(it) => Some(it),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
                    Err(e) => return Err(e),
                };
            }
            let mut handled = 0;
            while handled < budget {
                let Some(pw) = walk.current.as_mut() else {
                    let Some(outer) = walk.outer.as_mut() else {
                        return Ok(true);
                    };
                    let Some(entry) = outer.next() else {
                        walk.outer = None;
                        return Ok(true);
                    };
                    let entry = entry?;
                    handled += 1;
                    let name = entry.file_name();
                    // Only our own directories: anything else is left alone.
                    if !is_principal_hash(&name) || !entry.file_type()?.is_dir() {
                        continue;
                    }
                    let dir = entry.path();
                    walk.current = match fs::read_dir(&dir) {
                        Ok(iter) => Some(PrincipalWalk { dir, iter, kept: 0 }),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(e),
                    };
                    continue;
                };
                let Some(entry) = pw.iter.next() else {
                    if pw.kept == 0 {
                        remove_empty_dir(&pw.dir);
                    }
                    walk.current = None;
                    continue;
                };
                let entry = entry?;
                handled += 1;
                let Some(key) = marker_key(&entry.file_name()) else {
                    pw.kept += 1;
                    continue;
                };
                // One `stat`: a live session's file is never read here.
                let gone = match fs::symlink_metadata(self.path_of(&key)) {
                    Ok(_) => false,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                    Err(e) => return Err(e),
                };
                if !gone {
                    pw.kept += 1;
                    continue;
                }
                let hash = pw
                    .dir
                    .file_name()
                    .and_then(OsStr::to_str)
                    .unwrap_or_default();
                match self.prune_marker(&pw.dir, hash, &key)? {
                    Pruned::Removed => report.index_entries_removed += 1,
                    Pruned::Kept(_) | Pruned::Skipped => pw.kept += 1,
                }
            }
            Ok(false)
        })();
        step.map_err(io)
    }
}

/// Opens a marker for locking, creating it (exclusively, mode 0600) when `create`.
/// Never follows a symlink and never blocks on a FIFO.
fn open_marker(path: &Path, create: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    if create {
        options.write(true).create_new(true);
    } else {
        options.read(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    options.open(path)
}

/// An open failure of an existing marker, with a hint when it is a symlink.
fn marker_open_error(path: &Path, e: io::Error) -> io::Error {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => io::Error::other(format!(
            "a session's index entry is {}, not a regular file",
            sfs::EntryKind::of(m.file_type())
        )),
        _ => e,
    }
}

/// The key a marker is named by, if the name is one.
fn marker_key(name: &OsStr) -> Option<SessionKey> {
    SessionKey::parse(name.to_str()?).ok()
}

/// Creates a directory with mode 0700; `Ok(true)` when it was created.
fn create_dir_0700(dir: &Path) -> io::Result<bool> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a principal directory if it is empty. A writer that created a marker in it
/// meanwhile makes this fail harmlessly; one that finds it gone creates it again.
fn remove_empty_dir(dir: &Path) {
    let _ = fs::remove_dir(dir);
}
