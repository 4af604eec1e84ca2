//! Options of the `file` engine: the `[file]` section of the configuration.
//!
//! ```toml
//! engine = "file"
//! codec = "json"            # `cat` a session file and read it
//!
//! [file]
//! path = "/var/lib/myapp/sessions"   # default: a `sessions` folder under the OS temp dir
//! prefix = "sess_"                   # file name = prefix + session key
//! fsync = true                       # flush each write to disk before acknowledging it
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use session_core::{Error, Result};

/// The default file name prefix: `ls` shows `sess_<key>`.
pub const DEFAULT_PREFIX: &str = "sess_";

/// Longest accepted prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// Options of the `file` engine (config section `file`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// The session directory; `None` (or empty) picks [`default_dir`].
    pub path: Option<PathBuf>,
    /// File name prefix; the file of a session is `prefix + key`.
    pub prefix: String,
    /// Flush every write (file and directory entry) to disk before acknowledging it.
    pub fsync: bool,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            fsync: true,
        }
    }
}

/// The directory used when none is configured: `sessions` under the OS temp dir
/// (`$TMPDIR/sessions`, typically `/tmp/sessions`).
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("sessions")
}

/// Checks a file name prefix: at most [`MAX_PREFIX_LEN`] bytes of ASCII letters, digits,
/// `_` and `-`, not starting with `-`. Temp files start with `.`, so no prefix can collide
/// with them, and no prefix can name a path outside the directory.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(Error::config(
            "file.prefix",
            format!(
                "is {} bytes long; use at most {MAX_PREFIX_LEN}",
                prefix.len()
            ),
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Error::config(
            "file.prefix",
            format!("contains {c:?}; use only ASCII letters, digits, `_` and `-` (e.g. \"sess_\")"),
        ));
    }
    if prefix.starts_with('-') {
        return Err(Error::config(
            "file.prefix",
            "must not start with `-` (shell tools would read the file names as options)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Config;

    #[test]
    fn defaults_and_overrides() {
        let cfg: FileConfig = Config::from_toml("").section("file").expect("section");
        assert_eq!(cfg, FileConfig::default());
        assert_eq!(cfg.prefix, "sess_");
        assert!(cfg.fsync);
        let cfg: FileConfig =
            Config::from_toml("[file]\npath = \"/srv/s\"\nprefix = \"s-\"\nfsync = false")
                .section("file")
                .expect("section");
        assert_eq!(cfg.path, Some(PathBuf::from("/srv/s")));
        assert_eq!(cfg.prefix, "s-");
        assert!(!cfg.fsync);
    }

    #[test]
    fn unknown_and_mistyped_keys_name_themselves() {
        let err = Config::from_toml("[file]\nfsinc = true")
            .section::<FileConfig>("file")
            .expect_err("unknown key");
        assert!(err.to_string().contains("fsinc"), "{err}");
        let err = Config::from_toml("[file]\nfsync = \"yes\"")
            .section::<FileConfig>("file")
            .expect_err("bad type");
        assert!(
            matches!(&err, Error::Config { key: Some(k), .. } if k == "file.fsync"),
            "{err}"
        );
    }

    #[test]
    fn prefixes() {
        for ok in ["", "sess_", "sessionid", "app-1_"] {
            assert!(validate_prefix(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            ".tmp_", "../", "a/b", "a\\b", "-rf", "sess.", "sé", "a b", "x\0",
        ] {
            let err = validate_prefix(bad).expect_err(bad);
            assert!(
                matches!(&err, Error::Config { key: Some(k), .. } if k == "file.prefix"),
                "{err}"
            );
        }
        assert!(validate_prefix(&"a".repeat(65)).is_err());
    }
}
