//! Output helpers: command errors with exit codes and hints, timestamps, progress bars.

use std::fmt;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use session_core::{Error, Timestamp};

use crate::{EXIT_CONFIG, EXIT_STORE};

/// A command failure: what went wrong, and what to do next.
#[derive(Debug)]
pub struct CliError {
    message: String,
    hint: Option<String>,
    code: u8,
}

impl CliError {
    /// A usage or configuration error.
    pub fn usage(message: impl Into<String>, hint: Option<String>) -> Self {
        CliError {
            message: message.into(),
            hint,
            code: EXIT_CONFIG,
        }
    }

    /// A store-side failure.
    pub fn store(message: impl Into<String>, hint: Option<String>) -> Self {
        CliError {
            message: message.into(),
            hint,
            code: EXIT_STORE,
        }
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// What to do next, if known.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let (code, hint) = match &e {
            Error::Config { key, .. } => (
                EXIT_CONFIG,
                Some(match key {
                    Some(k) => format!(
                        "fix `{k}` in the configuration file, or its SESSION_ environment variable \
                         (nested keys use a double underscore: SESSION_DB__URL)"
                    ),
                    None => "check the configuration file and SESSION_* environment variables".into(),
                }),
            ),
            Error::UnknownEngine { .. } => (
                EXIT_CONFIG,
                Some("set `engine` in Sessions.toml or SESSION_ENGINE to one of the known engines".into()),
            ),
            Error::InvalidKey(_) => (
                EXIT_CONFIG,
                Some("a session key is 32 characters of a-z and 0-9, as found in the sessionid cookie".into()),
            ),
            Error::Backend { engine, .. } | Error::Timeout { engine, .. } => (
                EXIT_STORE,
                Some(format!(
                    "is the {engine} server running and reachable at the configured URL? \
                     `sessions check` tests the configuration"
                )),
            ),
            Error::Unsupported { .. } => (
                EXIT_CONFIG,
                Some("this engine cannot do that; see `sessions --help`".into()),
            ),
            _ => (EXIT_STORE, None),
        };
        CliError {
            message: e.to_string(),
            hint,
            code,
        }
    }
}

/// A command's result.
pub type CliResult<T = ()> = Result<T, CliError>;

/// RFC 3339 form of a timestamp (UTC, seconds).
pub fn iso(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(t.to_system_time()).to_string()
}

/// A progress bar for `len` items, or a spinner when the length is unknown. Hidden when
/// standard error is not a terminal, so scripts and logs stay clean.
pub fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    pb.set_message(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}
