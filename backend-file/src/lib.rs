//! # backend-file
//!
//! Django's `file` session engine, rebuilt to be safe across processes and crashes: one
//! file per session in a directory, named `prefix + key` (`ls` shows `sess_<key>`),
//! holding exactly the codec's bytes (with the JSON codec, `cat` shows
//! `{"data":{"user_id":101},...}`).
//!
//! ```
//! use backend_file::FileStore;
//! use session_core::{Record, SessionData, SessionStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! let store = FileStore::new(tmp.path().join("sessions"))?;
//! let mut data = SessionData::new();
//! data.insert("user_id".into(), 101.into());
//! let key = store.create(&Record::with_ttl(data, 3600)).await?;
//! assert!(store.path_of(&key).ends_with(format!("sess_{}", key.as_str())));
//! let again = store.load(&key).await?.expect("stored");
//! assert_eq!(again.data["user_id"], 101);
//! # Ok(()) }
//! ```
//!
//! From configuration, register the engine and select it by name:
//!
//! ```toml
//! engine = "file"
//! [file]
//! path = "/var/lib/myapp/sessions"   # default: `sessions` under the OS temp dir
//! prefix = "sess_"
//! fsync = true
//! ```
//!
//! The engine builds its store with [`FileConfig::build`], the same constructor every
//! backend crate has (see "Constructors" in `docs/BACKENDS.md`):
//!
//! ```
//! use backend_file::FileConfig;
//! use session_core::SessionSettings;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! let config = FileConfig { path: Some(tmp.path().join("sessions")), ..FileConfig::default() };
//! let store = config.build(&SessionSettings::default()).await?;
//! assert_eq!(store.count().await?, 0);
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//!
//! - **Atomic writes.** Every write goes to a temp file in the same directory (named
//!   `.tmp_<pid>_<n>`, which no session name can collide with), is flushed (`fsync`, on
//!   by default) and is then renamed over the session file; the directory is flushed too.
//!   A reader sees the old record or the new one, never a mix, even if a writer is
//!   killed mid-write.
//! - **Create never overwrites.** A new session file appears by `link(temp, name)`,
//!   which fails if the name exists: two processes never get the same key, and the file
//!   is complete from the moment it has a name. An expired file under the name may be
//!   replaced.
//! - **Compare-and-set across processes.** `update`, `touch` and `delete` hold the
//!   session file's `flock` around read-check-write; a waiter re-checks that it locked
//!   the file the path still names. A session deleted meanwhile is `NotFound`, never
//!   resurrected. Reads take no lock.
//! - **Expiry.** `load` never returns an expired record and removes its file. Each
//!   file's modification time is set to its record's deadline, so `clear_expired`
//!   streams the directory in bounded batches and reads only files whose deadline
//!   passed. The deadline inside the record stays authoritative.
//! - **Lazy loads.** The session handle's load ([`session_core::SessionStore::load_lazy`])
//!   reads the file as `load` does (the same expiry check and removal, the same errors)
//!   but keeps the record's data encoded until a key is read ([`session_core::lazy`]),
//!   so a request reading one key of a wide session decodes one value. The bytes are
//!   copied once out of the reading thread's reusable buffer, which the next read
//!   overwrites, into a buffer the record keeps. A value damaged inside the data is
//!   found when it is read (the session handle then starts a new session), and the file
//!   is left in place as below.
//! - **Corrupt files.** A file that does not decode gives [`session_core::Error::Codec`]
//!   and a warning (with the session's fingerprint, never its key), and is **left in
//!   place** for inspection; create never overwrites it. `clear_expired` removes it once
//!   its deadline (the mtime of its last write) has passed.
//! - **Only regular files are sessions.** A FIFO, directory, symlink, socket or device
//!   under a session's name is opened with `O_NOFOLLOW | O_NONBLOCK` and recognised by
//!   `fstat` before anything is read or locked, so it can neither hang a request nor lead
//!   outside the directory. It is a corrupt record for that key (the visitor gets a new
//!   session), logged by fingerprint and never removed; [`FileStore::sweep`] counts it.
//!   Every read, raw reads included, stops at `max_file_size` (+1 byte).
//! - **Leftovers.** Temp files of writers that died are skipped by listing and removed by
//!   `clear_expired` once an hour old (judged by their ctime).
//! - **Every session of a user.** [`FileStore`] is a [`session_core::UserIndex`]: each
//!   signed-in session has an empty marker file `users/<SHA-256 of the principal, in
//!   hex>/<key>`, created (and `flock`ed) before its record is written and removed with
//!   it, so listing a user reads one small directory and that user's session files, in
//!   any process sharing the directory. Stale markers (expired or re-bound sessions,
//!   crashes) are pruned under their lock by listing and by `clear_expired`; `users` is
//!   never taken for a session. See the `index` module's docs for the locking rules.
//! - **No blocking on the executor.** Each operation's file-system work is one
//!   `tokio::task::spawn_blocking` call.
//!
//! ## Security
//!
//! File names are session keys, so the directory is created with mode 0700 and files
//! with mode 0600. The default directory in the shared temp dir is refused if it is a
//! symlink, belongs to another user or is open to others; a configured directory open to
//! others draws a warning. A path is only ever built from a validated
//! [`session_core::SessionKey`] (32 characters of `[a-z0-9]`) and a prefix restricted to
//! ASCII letters, digits, `_` and `-`, so no input can name a file outside the directory.
//!
//! ## Platform
//!
//! Built for Unix file systems with `flock`, hard links and atomic `rename` (Linux,
//! macOS, the BSDs; local disks, or NFSv4 for sharing between hosts).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
mod error;
mod fs;
mod index;
mod ops;
pub mod store;

use std::sync::Arc;

pub use config::FileConfig;
pub use error::FileError;
pub use store::{FileStore, FileStoreBuilder, SweepReport};

use session_core::{EngineContext, EngineRegistry, Error, Result, SessionSettings, SessionStore};

impl FileConfig {
    /// Checks the options without touching the disk.
    pub fn validate(&self) -> Result<()> {
        config::validate_prefix(&self.prefix)
    }

    /// Builds the store from this configuration and the shared settings (codec,
    /// `max_encoded_size`): the constructor the `file` engine uses. Preparing the
    /// directory runs off the async executor.
    pub async fn build(&self, settings: &SessionSettings) -> Result<Arc<dyn SessionStore>> {
        let cfg = self.clone();
        let codec = settings.codec();
        let max = settings.max_encoded_size;
        let store = tokio::task::spawn_blocking(move || FileStore::from_config(&cfg, codec, max))
            .await
            .map_err(|e| Error::backend("file", e))??;
        Ok(Arc::new(store))
    }
}

/// Registers the `file` engine, configured by the `[file]` section (`path`, `prefix`,
/// `fsync`) with the shared `codec` and `max_encoded_size`.
pub fn register(registry: &EngineRegistry) {
    registry.register_checked(
        "file",
        |ctx: EngineContext| async move {
            let cfg: FileConfig = ctx.section("file")?;
            cfg.build(&ctx.settings).await.map_err(|e| ctx.locate(e))
        },
        |ctx: &EngineContext| {
            let cfg: FileConfig = ctx.section("file")?;
            cfg.validate().map_err(|e| ctx.locate(e))
        },
    );
}

#[cfg(test)]
mod tests;

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
