//! Blocking file-system primitives: the directory, locked session files, temp files.
//!
//! Everything the store guarantees rests on three facts about POSIX file systems:
//! `rename` within a directory atomically replaces the target (readers see the old file or
//! the new one, never a mix); `link` atomically creates a name only if it is absent (our
//! `O_EXCL` that never exposes a half-written file); and `flock` on an open file excludes
//! every other open file description, in this process or another. A lock on a session file
//! is taken on the inode its path names *at the moment of locking*: since writers replace
//! the inode, whoever acquires a lock re-checks that the path still names the locked inode
//! and starts over otherwise (see [`lock_existing`]).
//!
//! Only regular files are sessions. Anything else under a session file's name (a FIFO,
//! a directory, a symlink, a socket, a device) could hang a reader (a FIFO blocks `open`
//! and `read`), never end (`/dev/zero`), or lead outside the directory (a symlink), so
//! every session file is opened by [`open_regular`]: `O_NOFOLLOW | O_NONBLOCK`, then its
//! type is checked with `fstat` before a byte is read or a lock is taken. The store
//! treats such an entry as a corrupt record and never removes it.
//!
//! Nothing here runs on an async executor thread: the store calls it from
//! `tokio::task::spawn_blocking`.

use std::cell::RefCell;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Names of temp files start with this; a configured prefix may not start with `.`, so a
/// temp file can never be mistaken for a session file (and vice versa).
pub(crate) const TEMP_PREFIX: &str = ".tmp_";

/// How many times a locker re-opens a session file that was replaced while it waited for
/// the lock. Every retry means another writer completed, so the bound only trips under
/// pathological contention (thousands of writers on one session).
const MAX_LOCK_ATTEMPTS: u32 = 10_000;

/// Distinguishes the temp files of one process; the pid distinguishes processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// This process's id, asked of the kernel once (`getpid` is a syscall per call).
fn pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// A temp file in the session directory, removed on drop unless it was renamed or linked
/// into place and [`TempFile::persisted`] was called.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The temp name was renamed away: nothing left to remove.
    pub(crate) fn persisted(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover temp file is removed later by `clear_expired`.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to a fresh temp file in `dir` (mode 0600, created exclusively), stamps
/// its modification time with `mtime`, and flushes it to disk when `fsync` is set.
pub(crate) fn write_temp(
    dir: &Path,
    bytes: &[u8],
    mtime: SystemTime,
    fsync: bool,
) -> io::Result<TempFile> {
    let pid = pid();
    let mut last_err = None;
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{TEMP_PREFIX}{pid}_{n}"));
        let mut file = match private_create_new(&path) {
            Ok(f) => f,
            // A leftover of an earlier process that had our pid: pick the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let guard = TempFile { path, armed: true };
        file.write_all(bytes)?;
        // The modification time carries the record's deadline, so a sweep can skip live
        // files by a `stat` alone. A clock the file system cannot store is only a weaker
        // hint (the sweep confirms by decoding), so a failure here is not an error.
        if let Err(e) = file.set_modified(mtime) {
            tracing::debug!(error = %e, "could not stamp a session file's deadline as its mtime");
        }
        if fsync {
            file.sync_data()?;
        }
        return Ok(guard);
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free temp file name")))
}

#[cfg(unix)]
fn private_create_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// What an entry named like a session file is, when it is not a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A symbolic link (never followed: it may lead outside the directory).
    Symlink,
    /// A directory.
    Directory,
    /// A named pipe, which would block a reader until a writer comes.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A block or character device (such as `/dev/zero`, which never ends).
    Device,
    /// Anything else the platform has.
    Other,
}

impl EntryKind {
    /// The kind of a non-regular file type.
    pub(crate) fn of(ft: fs::FileType) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() {
                return EntryKind::Fifo;
            }
            if ft.is_socket() {
                return EntryKind::Socket;
            }
            if ft.is_block_device() || ft.is_char_device() {
                return EntryKind::Device;
            }
        }
        if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_dir() {
            EntryKind::Directory
        } else {
            EntryKind::Other
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Directory => "a directory",
            EntryKind::Fifo => "a named pipe (FIFO)",
            EntryKind::Socket => "a socket",
            EntryKind::Device => "a device",
            EntryKind::Other => "a special file",
        })
    }
}

/// What the name of a session file holds, once opened.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Nothing under the name.
    Missing,
    /// A regular file, open for reading, with its metadata (from `fstat` on it).
    File(File, fs::Metadata),
    /// Something other than a regular file; it was not read, and is closed again.
    NotRegular(EntryKind),
}

/// Opens the entry at `path` for reading if, and only if, it is a regular file.
///
/// On Unix the open uses `O_NOFOLLOW` (a symlink fails with `ELOOP` instead of being
/// followed) and `O_NONBLOCK` (a FIFO opens at once instead of waiting for a writer;
/// on a regular file the flag changes nothing), and the type is then checked on the
/// open descriptor, so a name swapped between a check and the open cannot slip through.
/// When the open itself fails, `lstat` tells a special entry (a symlink, a socket) from a
/// real I/O error.
pub(crate) fn open_regular(path: &Path) -> io::Result<Opened> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) => {
            return match fs::symlink_metadata(path) {
                Ok(m) if !m.is_file() => Ok(Opened::NotRegular(EntryKind::of(m.file_type()))),
                Err(e2) if e2.kind() == io::ErrorKind::NotFound => Ok(Opened::Missing),
                _ => Err(e),
            };
        }
    };
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok(Opened::File(file, meta))
    } else {
        Ok(Opened::NotRegular(EntryKind::of(meta.file_type())))
    }
}

/// Opens the regular file at `path` (see [`open_regular`]) and takes its exclusive lock,
/// making sure the path still names the locked file once the lock is held.
/// [`Opened::Missing`] when there is no file at `path`; an entry that is not a regular
/// file is neither read nor locked.
///
/// The lock is released when the file is dropped (or the process dies).
pub(crate) fn lock_existing(path: &Path) -> io::Result<Opened> {
    for _ in 0..MAX_LOCK_ATTEMPTS {
        let (file, held) = match open_regular(path)? {
            Opened::File(f, m) => (f, m),
            other => return Ok(other),
        };
        file.lock()?;
        match fs::symlink_metadata(path) {
            // The `fstat` taken before the lock still holds: a session file's content
            // never changes in place (writers replace the inode), so its size is final.
            Ok(now) if same_file(&held, &now) => return Ok(Opened::File(file, held)),
            // Replaced while we waited: the lock we hold guards a dead inode.
            Ok(_) => continue,
            // Deleted while we waited (a delete holds the lock while it unlinks).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "a session file kept being replaced while waiting for its lock",
    ))
}

#[cfg(unix)]
pub(crate) fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // The locked file is open, so its inode number cannot be reused meanwhile.
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
pub(crate) fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    // Without inode numbers, length and modification time are the best available proxy.
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// What reading a session file gave: its bytes, borrowed from the reading thread's buffer
/// (see [`with_read_buf`]), the size of a file above the limit, which was not read whole,
/// or the kind of an entry that is not a regular file, which was not read at all.
pub(crate) enum ReadOutcome<'a> {
    /// The whole file.
    Bytes(&'a [u8]),
    /// The file is larger than the limit; its size.
    TooLarge(u64),
    /// Not a regular file.
    NotRegular(EntryKind),
}

/// The largest buffer a thread keeps between reads. A larger one (a huge session) is
/// freed after use, so an idle blocking thread holds at most this much.
const KEPT_BUF: usize = 16 * 1024;

thread_local! {
    /// Each thread's read buffer, reused from one read to the next. A fresh heap buffer per
    /// read cost more than the `read` itself: at this size glibc's `malloc` takes the
    /// large-chunk path, which first consolidates every small chunk freed since (the
    /// decoded records of earlier reads, freed by other threads).
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with an empty buffer: the thread's reusable one, or a fresh one if that is
/// already in use (a nested read). The buffer's contents never outlive `f`.
pub(crate) fn with_read_buf<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    READ_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let out = f(&mut buf);
            buf.clear();
            if buf.capacity() > KEPT_BUF {
                *buf = Vec::new();
            }
            out
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Reads a whole file of known length `len` (from `fstat` on the open file: session files
/// never change in place, so that is the length to read) into `buf` (empty), refusing
/// anything above `limit` before reading a byte. `take` bounds the read to `len` bytes,
/// should the file grow anyway. `Ok(None)` when the file is in `buf`, else its size.
pub(crate) fn read_known_len(
    file: &File,
    len: u64,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<u64>> {
    if len > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Ok(Some(len));
    }
    // `take` ends the read at `len` without a final empty `read` call.
    buf.reserve(usize::try_from(len).unwrap_or(limit));
    file.take(len).read_to_end(buf)?;
    Ok(None)
}

/// Opens the regular file at `path` (see [`open_regular`]) and reads it whole (see
/// [`read_known_len`], with the size the type check's `fstat` gave) into the thread's
/// buffer, then hands what it read to `f`. `Ok(None)` when there is no file at `path`.
pub(crate) fn read_path<T>(
    path: &Path,
    limit: usize,
    f: impl FnOnce(ReadOutcome<'_>) -> T,
) -> io::Result<Option<T>> {
    let (file, meta) = match open_regular(path)? {
        Opened::File(file, meta) => (file, meta),
        Opened::Missing => return Ok(None),
        Opened::NotRegular(kind) => return Ok(Some(f(ReadOutcome::NotRegular(kind)))),
    };
    with_read_buf(|buf| {
        let read = match read_known_len(&file, meta.len(), buf, limit)? {
            None => ReadOutcome::Bytes(buf),
            Some(size) => ReadOutcome::TooLarge(size),
        };
        Ok(Some(f(read)))
    })
}

/// Removes `path`; `Ok(false)` when it was already gone.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes the directory's entries (renames, links, unlinks) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// When the file's inode last changed (Unix `ctime`): unlike the modification time, which
/// the store uses for deadlines, it cannot be set, so it tells when a temp file was written.
pub(crate) fn changed_at(meta: &fs::Metadata) -> Option<SystemTime> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let secs = u64::try_from(meta.ctime()).ok()?;
        let nanos = u32::try_from(meta.ctime_nsec()).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    }
    #[cfg(not(unix))]
    {
        meta.modified().ok()
    }
}

/// Creates `dir` (and missing parents) with mode 0700, or accepts it if it exists.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The permission bits of a file or directory (0 where the platform has none).
pub(crate) fn mode_of(meta: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// Whether the directory at `dir` belongs to the user running this process, checked by
/// creating a probe file in it (std has no portable `getuid`).
pub(crate) fn owned_by_us(dir: &Path, dir_meta: &fs::Metadata) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let probe = write_temp(dir, b"", SystemTime::now(), false)?;
        let ours = fs::metadata(probe.path())?.uid();
        drop(probe);
        Ok(ours == dir_meta.uid())
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, dir_meta);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_private_and_cleaned_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = write_temp(dir.path(), b"abc", SystemTime::now(), true).expect("temp");
        let name = t
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_owned();
        assert!(name.starts_with(TEMP_PREFIX), "{name}");
        #[cfg(unix)]
        assert_eq!(
            mode_of(&fs::metadata(t.path()).expect("meta")) & 0o777,
            0o600
        );
        let path = t.path().to_owned();
        drop(t);
        assert!(!path.exists());
    }

    #[test]
    fn lock_follows_replacement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        fs::write(&path, b"one").expect("write");
        let Opened::File(held, _) = lock_existing(&path).expect("lock") else {
            panic!("present");
        };
        // Another writer replaces the file: a fresh locker must see the new inode.
        let t = write_temp(dir.path(), b"two", SystemTime::now(), false).expect("temp");
        fs::rename(t.path(), &path).expect("rename");
        t.persisted();
        drop(held);
        let Opened::File(mut again, meta) = lock_existing(&path).expect("lock") else {
            panic!("present");
        };
        assert_eq!(meta.len(), 3);
        let mut s = String::new();
        again.read_to_string(&mut s).expect("read");
        assert_eq!(s, "two");
        drop(again);
        fs::remove_file(&path).expect("rm");
        assert!(matches!(
            lock_existing(&path).expect("lock"),
            Opened::Missing
        ));
    }

    #[test]
    fn capped_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let r = 8 * 1024;
        for limit in [5, r - 1, r, r + 1, 3 * r] {
            for size in [0, 1, 4, 5, 6, r - 1, r, r + 1, 2 * r + 7, 3 * r, 3 * r + 1] {
                let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                fs::write(&path, &content).expect("write");
                let got = read_path(&path, limit, |read| match read {
                    ReadOutcome::Bytes(b) => Ok(b.to_vec()),
                    ReadOutcome::TooLarge(n) => Err(n),
                    ReadOutcome::NotRegular(k) => panic!("a regular file taken for {k}"),
                })
                .expect("read")
                .expect("present");
                if size <= limit {
                    assert_eq!(got, Ok(content), "size {size}, limit {limit}");
                } else {
                    assert_eq!(got, Err(size as u64), "size {size}, limit {limit}");
                }
            }
        }
        fs::remove_file(&path).expect("rm");
        assert!(read_path(&path, 5, |_| ()).expect("read").is_none());
    }

    #[test]
    fn huge_files_are_sized_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = File::create(&path).expect("create");
        // Sparse: 1 GiB of size, no data; reading it whole would take seconds.
        file.set_len(1 << 30).expect("set_len");
        let got = read_path(&path, 1 << 20, |read| match read {
            ReadOutcome::TooLarge(n) => n,
            ReadOutcome::Bytes(b) => panic!("read {} bytes", b.len()),
            ReadOutcome::NotRegular(k) => panic!("a regular file taken for {k}"),
        });
        assert_eq!(got.expect("read"), Some(1 << 30));
    }

    #[test]
    fn nested_reads_get_their_own_buffer() {
        with_read_buf(|outer| {
            outer.extend_from_slice(b"outer");
            with_read_buf(|inner| {
                assert!(inner.is_empty());
                inner.extend_from_slice(b"inner");
            });
            assert_eq!(outer, b"outer");
        });
        with_read_buf(|again| assert!(again.is_empty()));
    }
}
