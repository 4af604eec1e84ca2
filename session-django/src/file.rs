//! Django's `file` session engine layout: one file per session,
//! `{SESSION_FILE_PATH}/{SESSION_COOKIE_NAME}{session_key}`, holding exactly the signed
//! `session_data` string (ASCII, no newline), written through a temporary file in the
//! same directory and an atomic rename, as Django does.
//!
//! Expiry as Django reads it: a fixed deadline from `_session_expiry` when it is an ISO
//! datetime, otherwise the file's mtime plus the cookie age. Django never expires a file
//! whose `_session_expiry` is an integer; we do, `n` seconds after the last write, which
//! is stricter and what the application asked for. Writes set the mtime so that Django
//! computes the same deadline as we do. Compare-and-set is checked against the file's
//! content just before the rename (not atomic across processes: Django takes no lock
//! either).

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use session_core::store::RawAccess;
use session_core::{
    Capabilities, Error, Expiry, Inserted, Record, Result, SessionKey, SessionStore, Timestamp,
};

use crate::format::{DjangoFormat, DjangoSecrets, version_of};

/// The engine name in errors and logs.
pub const ENGINE: &str = "django_file";

/// Options of the `django_file` engine (config section `django_file`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DjangoFileConfig {
    /// Django's `SESSION_FILE_PATH`.
    pub path: PathBuf,
    /// Django's `SESSION_COOKIE_NAME` (the file name prefix).
    pub cookie_name: String,
    /// Django's `SESSION_COOKIE_AGE` in seconds.
    pub cookie_age_secs: i64,
    /// Django's `SECRET_KEY` and `SECRET_KEY_FALLBACKS`.
    #[serde(flatten)]
    pub secrets: DjangoSecrets,
}

impl Default for DjangoFileConfig {
    fn default() -> Self {
        DjangoFileConfig {
            path: std::env::temp_dir(),
            cookie_name: "sessionid".into(),
            cookie_age_secs: session_core::expiry::DEFAULT_AGE_SECS,
            secrets: DjangoSecrets::default(),
        }
    }
}

impl DjangoFileConfig {
    /// Checks the directory and the secret key.
    pub fn validate(&self) -> Result<()> {
        if !self.path.is_dir() {
            return Err(Error::config(
                "django_file.path",
                format!(
                    "{} is not a directory (Django's SESSION_FILE_PATH)",
                    self.path.display()
                ),
            ));
        }
        if self.cookie_name.is_empty() || self.cookie_name.contains(['/', '\\']) {
            return Err(Error::config(
                "django_file.cookie_name",
                "must be a plain file name prefix",
            ));
        }
        self.secrets.validate("django_file")
    }

    /// The store.
    pub fn build(&self) -> Result<DjangoFileStore> {
        self.validate()?;
        Ok(DjangoFileStore {
            dir: self.path.clone(),
            prefix: self.cookie_name.clone(),
            cookie_age_secs: self.cookie_age_secs,
            format: DjangoFormat::from_secrets(&self.secrets),
        })
    }
}

/// Sessions in files as Django's `file` engine keeps them.
#[derive(Clone, Debug)]
pub struct DjangoFileStore {
    dir: PathBuf,
    prefix: String,
    cookie_age_secs: i64,
    format: DjangoFormat,
}

fn io(e: std::io::Error) -> Error {
    Error::backend(ENGINE, e)
}

impl DjangoFileStore {
    fn path(&self, key: &SessionKey) -> PathBuf {
        // Keys are validated ([a-z0-9], as Django's VALID_KEY_CHARS) before any I/O.
        self.dir.join(format!("{}{}", self.prefix, key.as_str()))
    }

    /// The deadline Django computes for a file's data and mtime.
    fn deadline(&self, expiry: Expiry, mtime: Timestamp) -> Timestamp {
        match expiry {
            Expiry::At(t) => t,
            Expiry::Idle(n) => mtime.add_secs(n),
            Expiry::Default | Expiry::BrowserClose => mtime.add_secs(self.cookie_age_secs),
        }
    }

    /// The mtime that makes Django compute `expires_at` for `expiry`.
    fn mtime_for(&self, expiry: Expiry, expires_at: Timestamp) -> Timestamp {
        match expiry {
            Expiry::Idle(n) => expires_at.add_secs(-n),
            Expiry::Default | Expiry::BrowserClose => expires_at.add_secs(-self.cookie_age_secs),
            Expiry::At(_) => Timestamp::now(),
        }
    }

    fn read(path: &Path) -> Result<Option<(String, Timestamp)>> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let mtime = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .map_err(io)?;
                Ok(Some((
                    String::from_utf8_lossy(&bytes).into_owned(),
                    Timestamp::from_system_time(mtime),
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    fn write(&self, path: &Path, text: &str, mtime: Timestamp) -> Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(
                "{}_out_",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("session")
            ))
            .tempfile_in(&self.dir)
            .map_err(io)?;
        tmp.write_all(text.as_bytes()).map_err(io)?;
        tmp.as_file()
            .set_modified(mtime.to_system_time())
            .map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    fn live(&self, key: &SessionKey) -> Result<Option<(Record, String)>> {
        let Some((text, mtime)) = Self::read(&self.path(key))? else {
            return Ok(None);
        };
        if text.is_empty() {
            // Django's placeholder between O_EXCL and the first write.
            return Ok(None);
        }
        let (data, expiry) = self.format.decode(&text)?;
        let expires_at = self.deadline(expiry, mtime);
        let now = Timestamp::now();
        if expires_at <= now {
            return Ok(None);
        }
        Ok(Some((
            Record {
                meta: crate::format::meta_of(&data),
                data,
                expiry,
                created_at: now,
                expires_at,
                version: version_of(text.as_bytes()),
            },
            text,
        )))
    }
}

#[async_trait]
impl SessionStore for DjangoFileStore {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .cross_process(true)
            .durable(true)
            .compare_and_set(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let path = self.path(key);
        let text = self.format.encode(record)?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if self.live(key).ok().flatten().is_some() {
                    return Ok(Inserted::KeyTaken);
                }
            }
            Err(e) => return Err(io(e)),
        }
        self.write(
            &path,
            &text,
            self.mtime_for(record.expiry, record.expires_at),
        )?;
        Ok(Inserted::Created)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        Ok(self.live(key)?.map(|(r, _)| r))
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        let Some((_, old)) = self.live(key)? else {
            return Err(Error::NotFound);
        };
        if let Some(expected) = expected {
            let found = version_of(old.as_bytes());
            if found != expected {
                return Err(Error::Conflict { expected, found });
            }
        }
        let text = self.format.encode(record)?;
        self.write(
            &self.path(key),
            &text,
            self.mtime_for(record.expiry, record.expires_at),
        )?;
        Ok(version_of(text.as_bytes()))
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        match std::fs::remove_file(self.path(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let Some((rec, _)) = self.live(key)? else {
            return Err(Error::NotFound);
        };
        let f = std::fs::File::options()
            .write(true)
            .open(self.path(key))
            .map_err(io)?;
        f.set_modified(self.mtime_for(rec.expiry, expires_at).to_system_time())
            .map_err(io)
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.live(key)?.is_some())
    }

    async fn clear_expired(&self) -> Result<u64> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&self.prefix)) else {
                continue;
            };
            let Ok(key) = SessionKey::parse(rest) else {
                continue; // temporary `_out_` files and foreign names
            };
            let Some((text, mtime)) = Self::read(&entry.path())? else {
                continue;
            };
            if text.is_empty() {
                continue; // as Django: placeholders are never expired
            }
            // Undecodable files are left alone (they may be another secret's).
            let Ok((_, expiry)) = self.format.decode(&text) else {
                continue;
            };
            if self.deadline(expiry, mtime) <= Timestamp::now() && self.delete(&key).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }
}

#[async_trait]
impl RawAccess for DjangoFileStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        let text = String::from_utf8_lossy(bytes).into_owned();
        self.write(
            &self.path(key),
            &text,
            expires_at.add_secs(-self.cookie_age_secs),
        )
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        Ok(Self::read(&self.path(key))?.map(|(t, _)| t.into_bytes()))
    }
}
