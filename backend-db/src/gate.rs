//! The in-process queue of writers to one SQLite database file (see [`crate::DbStore`],
//! "Writers on SQLite").
//!
//! One `tokio::sync::Mutex` per file, shared by every store of the process on that
//! file: tokio's mutex is fair (first come, first served), which is the point, and is
//! held across the statement's `.await`. The table of gates holds weak references, so a
//! gate lives as long as a store that uses it; the file's path is canonicalized where it
//! exists, so two spellings of one file share a gate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use crate::store::WriteGate;

static GATES: LazyLock<Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Mutex::default);

/// The gate of the database file at `path`, shared with every other store of this
/// process on the same file.
pub(crate) fn for_file(path: &Path) -> WriteGate {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(gate) = gates.get(&path).and_then(Weak::upgrade) {
        return gate;
    }
    // Forget the files no store uses any more before adding this one.
    gates.retain(|_, g| g.strong_count() > 0);
    let gate = WriteGate::default();
    gates.insert(path, Arc::downgrade(&gate));
    gate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_one_gate_however_spelled() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("s.db");
        std::fs::write(&file, b"").expect("file");
        let a = for_file(&file);
        let b = for_file(&dir.path().join(".").join("s.db"));
        assert!(Arc::ptr_eq(&a, &b));
        let other = for_file(&dir.path().join("t.db"));
        assert!(!Arc::ptr_eq(&a, &other));
        // A gate no store holds is forgotten.
        drop((a, b));
        let c = for_file(&file);
        assert_eq!(Arc::strong_count(&c), 1);
    }
}
