//! [`FileStore`]: the async face of the session directory, and its builder.
//!
//! Every operation hands all of its file-system work to one
//! `tokio::task::spawn_blocking` call: the executor's threads never block on the disk,
//! and one hop per operation keeps the cost of that hand-off small.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use session_core::codec::DEFAULT_MAX_ENCODED_SIZE;
use session_core::maintenance::{Progress, scan_stats};
use session_core::users::{UserIndex, UserSession, validate_principal};
use session_core::{
    BincodeCodec, Capabilities, ClearReport, Codec, Error, Inserted, LazyRecord, Maintenance,
    RawAccess, Record, Result, SessionKey, SessionStore, StoreStats, Timestamp, async_trait,
};

use crate::config::{self, FileConfig};
use crate::error::ENGINE;
use crate::fs as sfs;
use crate::index::IndexWalk;
use crate::ops::{Inner, SWEEP_BATCH};

/// How old a temp file must be before `clear_expired` takes it for a leftover of a
/// crashed writer and removes it.
pub const DEFAULT_STALE_TEMP_AFTER: Duration = Duration::from_secs(3600);

/// What a sweep of the session directory ([`FileStore::sweep`]) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Session files removed: expired records, and undecodable ones whose deadline (the
    /// mtime of their last write) has passed.
    pub removed: u64,
    /// Entries named like session files that are not regular files (FIFOs, directories,
    /// symlinks, sockets, devices): skipped, logged by fingerprint, left in place.
    pub not_regular: u64,
    /// Session files that could not be checked (an I/O error such as a permission
    /// denied): skipped, logged by fingerprint, left in place.
    pub failed: u64,
    /// Entries of the per-user index (`users/`) whose session file was gone, removed
    /// (the entries of the records this sweep removed are not counted here).
    pub index_entries_removed: u64,
}

impl SweepReport {
    /// Every entry the sweep skipped: [`Self::not_regular`] plus [`Self::failed`].
    pub fn skipped(&self) -> u64 {
        self.not_regular + self.failed
    }
}

/// Session store keeping one file per session in a directory (engine `file`).
///
/// Cheap to clone: clones share the configuration. Several processes may use the same
/// directory at once; see the crate documentation for the guarantees.
#[derive(Clone, Debug)]
pub struct FileStore {
    inner: Arc<Inner>,
}

impl FileStore {
    /// A store in `dir` with the defaults: prefix `sess_`, fsync on, the bincode codec.
    /// Creates the directory (mode 0700) when missing. Blocking: call it at startup.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::builder().dir(dir).build()
    }

    /// A builder for the other options.
    pub fn builder() -> FileStoreBuilder {
        FileStoreBuilder::default()
    }

    /// A store from the `[file]` configuration section, with the codec and size limit
    /// of the shared settings. Blocking: call it at startup.
    pub fn from_config(
        config: &FileConfig,
        codec: Arc<dyn Codec>,
        max_file_size: usize,
    ) -> Result<Self> {
        let mut b = Self::builder()
            .prefix(config.prefix.clone())
            .fsync(config.fsync)
            .codec(codec)
            .max_file_size(max_file_size);
        if let Some(p) = config.path.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            b = b.dir(p.clone());
        }
        b.build()
    }

    /// The session directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file name prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Whether writes are flushed to disk before they are acknowledged.
    pub fn fsync(&self) -> bool {
        self.inner.fsync
    }

    /// The file that holds `key`'s session (which may not exist).
    pub fn path_of(&self, key: &SessionKey) -> PathBuf {
        self.inner.path_of(key)
    }

    /// Removes expired session files and stale temp files, like
    /// [`SessionStore::clear_expired`], and reports what it removed and what it skipped.
    ///
    /// The directory is streamed in bounded batches, one blocking call each. An entry
    /// that is not a regular file, or a file that cannot be checked, is skipped, counted
    /// and left in place: it never stops (or hangs) the sweep of the others. Only a failure
    /// to read the directory itself is an error.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let mut iter = self.blocking(|s| s.open_dir("clear expired")).await?;
        let mut report = SweepReport::default();
        // One bounded batch per blocking call: the directory is streamed, never listed
        // whole, and a huge sweep does not pin a blocking thread for its whole length.
        loop {
            let (it, batch, done) = self
                .blocking(move |s| {
                    let mut batch = SweepReport::default();
                    let done = s.sweep_batch(&mut iter, &mut batch)?;
                    Ok((iter, batch, done))
                })
                .await?;
            report.removed += batch.removed;
            report.not_regular += batch.not_regular;
            report.failed += batch.failed;
            if done {
                break;
            }
            iter = it;
        }
        // Then the index: markers whose session file is gone (see `index`), in bounded
        // batches too.
        let mut walk = IndexWalk::default();
        loop {
            let (w, removed, done) = self
                .blocking(move |s| {
                    let mut batch = SweepReport::default();
                    let done = s.sweep_index_batch(&mut walk, SWEEP_BATCH, &mut batch)?;
                    Ok((walk, batch.index_entries_removed, done))
                })
                .await?;
            report.index_entries_removed += removed;
            if done {
                return Ok(report);
            }
            walk = w;
        }
    }

    /// Runs one operation's file-system work off the async executor.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::backend(ENGINE, e))?
    }
}

/// Options of a [`FileStore`]; [`FileStoreBuilder::build`] creates it.
#[derive(Clone, Debug)]
pub struct FileStoreBuilder {
    dir: Option<PathBuf>,
    prefix: String,
    fsync: bool,
    codec: Option<Arc<dyn Codec>>,
    max_file_size: usize,
    stale_temp_after: Duration,
}

impl Default for FileStoreBuilder {
    fn default() -> Self {
        FileStoreBuilder {
            dir: None,
            prefix: config::DEFAULT_PREFIX.to_owned(),
            fsync: true,
            codec: None,
            max_file_size: DEFAULT_MAX_ENCODED_SIZE,
            stale_temp_after: DEFAULT_STALE_TEMP_AFTER,
        }
    }
}

impl FileStoreBuilder {
    /// The session directory (default: [`config::default_dir`], which must then be a
    /// private directory of this user).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// File name prefix (default `sess_`): ASCII letters, digits, `_`, `-`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Flush each write to disk before acknowledging it (default on). Off, a power loss
    /// may lose recent writes, though never leaves a torn file.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The codec of new writes (default bincode). Either built-in codec reads both formats.
    pub fn codec(mut self, codec: Arc<dyn Codec>) -> Self {
        self.codec = Some(codec);
        self
    }

    /// Largest session file read, in bytes (default 4 MiB); larger files are a codec error.
    pub fn max_file_size(mut self, bytes: usize) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// Age after which `clear_expired` removes a temp file as a crashed writer's leftover
    /// (default one hour). Writes in flight take milliseconds; keep this generous.
    pub fn stale_temp_after(mut self, age: Duration) -> Self {
        self.stale_temp_after = age;
        self
    }

    /// Validates the options and prepares the directory. Blocking: call it at startup.
    pub fn build(self) -> Result<FileStore> {
        config::validate_prefix(&self.prefix)?;
        if self.max_file_size == 0 {
            return Err(Error::config("max_encoded_size", "must be greater than 0"));
        }
        let (dir, shared_default) = match self.dir {
            Some(d) => (d, false),
            None => (config::default_dir(), true),
        };
        prepare_dir(&dir, shared_default)?;
        Ok(FileStore {
            inner: Arc::new(Inner {
                dir,
                prefix: self.prefix,
                fsync: self.fsync,
                codec: self
                    .codec
                    .unwrap_or_else(|| Arc::new(BincodeCodec::new(self.max_file_size))),
                max_file_size: self.max_file_size,
                stale_temp_after: self.stale_temp_after,
            }),
        })
    }
}

/// Creates the directory (0700) if needed and checks it is fit to hold session keys:
/// its file names *are* the keys, so whoever can list it can hijack sessions.
pub(crate) fn prepare_dir(dir: &Path, shared_default: bool) -> Result<()> {
    let bad = |msg: String| Error::config("file.path", msg);
    sfs::create_private_dir(dir).map_err(|e| {
        bad(format!(
            "cannot create the session directory {}: {e}; create it (mode 0700) or set `file.path`",
            dir.display()
        ))
    })?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| bad(format!("cannot inspect {}: {e}", dir.display())))?;
    let is_dir = if meta.file_type().is_symlink() {
        // A configured path may be a symlink to the real directory; the shared default
        // may not, since anyone can plant one in the temp dir.
        !shared_default && dir.is_dir()
    } else {
        meta.is_dir()
    };
    if !is_dir {
        return Err(bad(format!(
            "{} is not a directory{}",
            dir.display(),
            if shared_default {
                " (a symlink is not accepted in the shared temp dir); set `file.path`"
            } else {
                ""
            }
        )));
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| bad(format!("cannot inspect {}: {e}", dir.display())))?;
    let mode = sfs::mode_of(&meta);
    let ours = sfs::owned_by_us(dir, &meta).map_err(|e| {
        bad(format!(
            "cannot write in the session directory {}: {e}; fix its permissions or set `file.path`",
            dir.display()
        ))
    })?;
    if shared_default && (!ours || mode & 0o077 != 0) {
        return Err(bad(format!(
            "the default session directory {} is owned by another user or open to others \
             (mode {mode:o}); set `file.path` to a private directory",
            dir.display()
        )));
    }
    if mode & 0o077 != 0 {
        tracing::warn!(
            engine = ENGINE,
            dir = %dir.display(),
            mode = format_args!("{mode:o}"),
            "the session directory is open to other users, and its file names are session keys; chmod 700 it"
        );
    }
    Ok(())
}

#[async_trait]
impl SessionStore for FileStore {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .cross_process(true)
            .durable(self.inner.fsync)
            .compare_and_set(true)
            .listing(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        // Encoding here costs what cloning the record into the closure would.
        let bytes = self.inner.codec.encode(record)?;
        let deadline = record.expires_at;
        let principal = record.meta.principal.clone();
        let key = key.clone();
        self.blocking(move |s| s.insert_new(&key, &bytes, deadline, principal.as_deref()))
            .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let key = key.clone();
        self.blocking(move |s| s.load(&key)).await
    }

    /// [`SessionStore::load`] (the same read, expiry check and errors), the data left
    /// encoded until a key is read: the file's bytes are copied once out of the reading
    /// thread's buffer into the record.
    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        let key = key.clone();
        self.blocking(move |s| s.load_lazy(&key)).await
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let key = key.clone();
        let record = record.clone();
        self.blocking(move |s| s.update(&key, record, expected_version))
            .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let key = key.clone();
        self.blocking(move |s| s.delete(&key)).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let key = key.clone();
        self.blocking(move |s| s.touch(&key, expires_at)).await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let key = key.clone();
        self.blocking(move |s| s.load(&key).map(|r| r.is_some()))
            .await
    }

    async fn clear_expired(&self) -> Result<u64> {
        Ok(self.sweep().await?.removed)
    }

    async fn count(&self) -> Result<u64> {
        self.blocking(|s| s.count()).await
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let after = after.cloned();
        self.blocking(move |s| s.list(after.as_ref(), limit)).await
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        Some(self)
    }

    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }
}

/// The per-user index kept in `users/` under the session directory (see the crate
/// docs): listing a principal costs one small directory read and one session read per
/// session of that principal, and prunes stale entries. Each call is one blocking hop;
/// an invalid principal is refused before any I/O.
#[async_trait]
impl UserIndex for FileStore {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        validate_principal(principal)?;
        let principal = principal.to_owned();
        let current = current.cloned();
        self.blocking(move |s| s.sessions_of(&principal, current.as_ref()))
            .await
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        validate_principal(principal)?;
        let (principal, id) = (principal.to_owned(), id.to_owned());
        self.blocking(move |s| s.end_session(&principal, &id)).await
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        validate_principal(principal)?;
        let principal = principal.to_owned();
        let keep = keep.cloned();
        self.blocking(move |s| s.end_sessions(&principal, keep.as_ref()))
            .await
    }
}

/// `sessions clear-expired` and `stats` on the directory. The directory keeps no schema,
/// so [`Maintenance::migrate`] is the default (nothing to migrate).
#[async_trait]
impl Maintenance for FileStore {
    fn target(&self) -> String {
        ENGINE.to_owned()
    }

    /// [`FileStore::sweep`] (which streams the directory in its own bounded batches, so
    /// `batch` does not apply), with the entries it skipped in the report.
    async fn clear_expired(&self, _batch: u64, progress: Progress<'_>) -> Result<ClearReport> {
        let report = self.sweep().await?;
        progress(report.removed);
        Ok(ClearReport::removed(report.removed).with_skipped(
            report.skipped(),
            Some(format!(
                "{} not regular files, {} that could not be checked",
                report.not_regular, report.failed
            )),
        ))
    }

    /// [`scan_stats`] over the directory with the store's codec: entries that are not
    /// regular files or exceed the size limit are counted as skipped.
    async fn stats(&self, progress: Progress<'_>) -> Result<StoreStats> {
        scan_stats(self, self.inner.codec.as_ref(), progress).await
    }
}

/// Raw access writes the given bytes as the session file verbatim; `expires_at` becomes
/// the file's deadline (its mtime), which `clear_expired` uses for a file it cannot decode.
/// Reads are bounded like loads: a file above `max_file_size` is
/// [`session_core::CodecError::TooLarge`], and an entry that is not a regular file is a
/// corrupt record ([`Error::Codec`]), neither read nor replaced.
#[async_trait]
impl RawAccess for FileStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        let key = key.clone();
        let bytes = bytes.to_vec();
        self.blocking(move |s| s.put_raw(&key, &bytes, expires_at))
            .await
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        let key = key.clone();
        self.blocking(move |s| s.get_raw(&key)).await
    }
}
