//! I/O failures of the file store, with what was being done and to which session.
//!
//! A session file's path contains its key, so the error carries the session's
//! fingerprint instead of the path: errors end up in logs, keys must not.

use std::fmt;
use std::io;
use std::path::PathBuf;

use session_core::{Error, SessionKey};

/// The engine name, used in every [`Error::Backend`] of this crate.
pub(crate) const ENGINE: &str = "file";

/// An I/O error of the file store (the `source` of an [`Error::Backend`]).
#[derive(Debug)]
pub struct FileError {
    operation: &'static str,
    session: Option<String>,
    dir: PathBuf,
    source: io::Error,
}

impl FileError {
    /// What the store was doing (`"load"`, `"update"`, ...).
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The underlying I/O error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.operation)?;
        if let Some(fp) = &self.session {
            write!(f, " of session #{fp}")?;
        }
        write!(
            f,
            " in {} failed: {} (check that the directory exists and this user may read and write it)",
            self.dir.display(),
            self.source
        )
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Wraps an I/O error as the store's [`Error::Backend`].
pub(crate) fn io_error(
    operation: &'static str,
    key: Option<&SessionKey>,
    dir: &std::path::Path,
    source: io::Error,
) -> Error {
    Error::backend(
        ENGINE,
        FileError {
            operation,
            session: key.map(SessionKey::fingerprint),
            dir: dir.to_path_buf(),
            source,
        },
    )
}
