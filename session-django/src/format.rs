//! Django's session dict <-> our [`Record`], and the signed `session_data` string.
//!
//! Django keeps the expiry an application asked for *inside* the data, under
//! `_session_expiry`: an int (seconds, a sliding timeout; `0` means "until the browser
//! closes") or an ISO-8601 string (a fixed deadline, written by `set_expiry(datetime)`).
//! [`DjangoFormat`] maps it to and from [`Expiry`] and keeps it out of the data the
//! application sees, so both sides honour the same expiry.
//!
//! Django stores no version and no creation time. The version a Django-format store
//! reports is the first 8 bytes of SHA-256 over the stored bytes, so compare-and-set
//! compares whole stored values; the creation time of a loaded record is the load time
//! (the absolute timeout cannot be enforced on records Django writes).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use session_core::codec::CodecError;
use session_core::{Error, Expiry, Record, SessionData, SessionMeta, Timestamp};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::signing::{Signer, SigningError};

/// The key Django keeps a custom expiry under.
pub const EXPIRY_KEY: &str = "_session_expiry";

/// The settings a Django-format store shares with the Django application.
///
/// ```toml
/// secret_key = "the Django SECRET_KEY"
/// secret_key_fallbacks = ["an older SECRET_KEY, still accepted for reading"]
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DjangoSecrets {
    /// Django's `SECRET_KEY`: signs what we write, verifies what we read.
    pub secret_key: String,
    /// Django's `SECRET_KEY_FALLBACKS`: accepted for reading only.
    #[serde(deserialize_with = "session_core::config::string_list")]
    pub secret_key_fallbacks: Vec<String>,
}

impl std::fmt::Debug for DjangoSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoSecrets")
            .field("secret_key", &"<redacted>")
            .field(
                "secret_key_fallbacks",
                &format_args!("<{} redacted>", self.secret_key_fallbacks.len()),
            )
            .finish()
    }
}

impl DjangoSecrets {
    /// Refuses an empty secret key (Django refuses to start without one too).
    pub fn validate(&self, section: &str) -> session_core::Result<()> {
        if self.secret_key.is_empty() {
            return Err(Error::config(
                format!("{section}.secret_key"),
                "must be the Django application's SECRET_KEY",
            ));
        }
        if let Some(i) = self.secret_key_fallbacks.iter().position(String::is_empty) {
            return Err(Error::config(
                format!("{section}.secret_key_fallbacks[{i}]"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// Converts records to Django's session dicts and signed strings and back.
#[derive(Clone, Debug)]
pub struct DjangoFormat {
    signer: Signer,
}

impl DjangoFormat {
    /// The format under `secret_key`, reading also what `fallbacks` signed.
    pub fn new<S: AsRef<str>>(secret_key: &str, fallbacks: &[S]) -> Self {
        DjangoFormat {
            signer: Signer::sessions(secret_key, fallbacks),
        }
    }

    /// From the configured secrets.
    pub fn from_secrets(s: &DjangoSecrets) -> Self {
        DjangoFormat::new(&s.secret_key, &s.secret_key_fallbacks)
    }

    /// The signer (session salt).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// `SessionBase.encode(dict)`: the record as a signed `session_data` string.
    pub fn encode(&self, record: &Record) -> session_core::Result<String> {
        let dict = to_dict(record);
        let now = Timestamp::now().as_unix_millis().div_euclid(1000);
        self.signer
            .dumps(&Value::Object(dict), now)
            .map_err(codec_error)
    }

    /// `SessionBase.decode(text)`, but failing with a typed error where Django returns
    /// `{}`: [`CodecError::BadSignature`] for a tampered or foreign-key-signed value,
    /// [`CodecError::Corrupt`] for anything else unreadable.
    pub fn decode(&self, text: &str) -> session_core::Result<(SessionData, Expiry)> {
        let (v, _ts) = self.signer.loads(text).map_err(codec_error)?;
        match v {
            Value::Object(map) => from_dict(map),
            _ => Err(Error::Codec(CodecError::Corrupt(
                "Django session data is not a JSON object".into(),
            ))),
        }
    }
}

/// Maps a signing failure to the core's codec error.
pub fn codec_error(e: SigningError) -> Error {
    Error::Codec(match e {
        SigningError::BadSignature => CodecError::BadSignature(e.to_string()),
        SigningError::TooLarge { limit } => CodecError::TooLarge {
            size: limit + 1,
            limit,
        },
        other => CodecError::Corrupt(other.to_string()),
    })
}

/// The authentication backend written for a principal signed in from Rust
/// ([`session_core::Session::login`]) into a session that names none.
pub const DEFAULT_AUTH_BACKEND: &str = "django.contrib.auth.backends.ModelBackend";

/// The record's data as Django's dict, with `_session_expiry` set from its policy.
///
/// A signed-in record ([`session_core::SessionMeta::principal`]) is written with
/// Django's auth keys, so Django sees the same user: `_auth_user_id` is the principal,
/// `_auth_user_hash` the auth hash (removed when there is none), and
/// `_auth_user_backend` is kept, or [`DEFAULT_AUTH_BACKEND`] when the data names none.
/// The rest of the meta (last seen, client) has no place in Django's format and is not
/// stored. A record without a principal is written as its data says.
pub fn to_dict(record: &Record) -> serde_json::Map<String, Value> {
    let mut dict = record.data.clone();
    dict.remove(EXPIRY_KEY);
    if let Some(principal) = &record.meta.principal {
        let backend = dict
            .get(AuthUser::BACKEND_KEY)
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_AUTH_BACKEND)
            .to_owned();
        AuthUser {
            id: principal.clone(),
            backend,
            hash: record.meta.auth_hash.clone(),
        }
        .write_to(&mut dict);
    }
    match record.expiry {
        Expiry::Default => {}
        Expiry::BrowserClose => {
            dict.insert(EXPIRY_KEY.into(), Value::from(0));
        }
        Expiry::Idle(n) => {
            dict.insert(EXPIRY_KEY.into(), Value::from(n));
        }
        Expiry::At(t) => {
            dict.insert(EXPIRY_KEY.into(), Value::from(iso_format(t)));
        }
    }
    dict
}

/// Django's dict as our data and expiry policy (`_session_expiry` taken out).
pub fn from_dict(
    mut dict: serde_json::Map<String, Value>,
) -> session_core::Result<(SessionData, Expiry)> {
    let expiry = match dict.remove(EXPIRY_KEY) {
        None | Some(Value::Null) => Expiry::Default,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(secs) => Expiry::seconds(secs),
            None => return Err(bad_expiry(&n.to_string())),
        },
        Some(Value::String(s)) => Expiry::At(iso_parse(&s).ok_or_else(|| bad_expiry(&s))?),
        Some(other) => return Err(bad_expiry(&other.to_string())),
    };
    Ok((dict, expiry))
}

/// The meta of a Django session: its principal and auth hash from Django's auth keys
/// (`_auth_user_id`, `_auth_user_hash`), which stay in the data as well, so Django and
/// [`AuthUser`] keep reading them. Empty for an anonymous session.
pub fn meta_of(data: &SessionData) -> SessionMeta {
    match AuthUser::from_data(data) {
        Some(user) => SessionMeta {
            principal: Some(user.id),
            auth_hash: user.hash,
            ..SessionMeta::default()
        },
        None => SessionMeta::default(),
    }
}

fn bad_expiry(v: &str) -> Error {
    Error::Codec(CodecError::Corrupt(format!(
        "{EXPIRY_KEY} is neither seconds nor an ISO-8601 datetime: {v:?}"
    )))
}

fn odt(t: Timestamp) -> OffsetDateTime {
    let nanos = i128::from(t.as_unix_millis()) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn from_odt(d: OffsetDateTime) -> Timestamp {
    let ms = d.unix_timestamp_nanos().div_euclid(1_000_000);
    Timestamp::from_unix_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// `datetime.isoformat()` of an aware UTC datetime: `2030-01-01T00:00:00+00:00`, with
/// `.ffffff` only when the microseconds are not zero.
pub fn iso_format(t: Timestamp) -> String {
    format!("{}+00:00", naive_utc(t, 'T'))
}

/// Python's `str(datetime)` of the naive UTC time, with `sep` between date and time.
pub(crate) fn naive_utc(t: Timestamp, sep: char) -> String {
    let d = odt(t);
    let mut s = format!(
        "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    );
    if d.microsecond() != 0 {
        s.push_str(&format!(".{:06}", d.microsecond()));
    }
    s
}

/// `datetime.fromisoformat` for the forms Django writes: with an offset (aware) or
/// without (naive, taken as UTC), `T` or a space between date and time.
pub fn iso_parse(s: &str) -> Option<Timestamp> {
    let s = s.trim().replacen(' ', "T", 1);
    let time_part = s.split_once('T')?.1;
    let has_offset = time_part.ends_with('Z') || time_part.contains('+') || time_part.contains('-');
    let full = if has_offset {
        s.clone()
    } else {
        format!("{s}+00:00")
    };
    OffsetDateTime::parse(&full, &Rfc3339).ok().map(from_odt)
}

/// The version a Django-format store reports for stored bytes.
pub fn version_of(stored: &[u8]) -> u64 {
    let h = Sha256::digest(stored);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b).max(1)
}

/// The user `django.contrib.auth` signed in, from its session keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser {
    /// `_auth_user_id`: the user's primary key as Django serialised it (a string).
    pub id: String,
    /// `_auth_user_backend`: the dotted path of the authentication backend.
    pub backend: String,
    /// `_auth_user_hash`: the session auth hash (an HMAC of the password hash); Django
    /// logs the user out when it no longer matches.
    pub hash: Option<String>,
}

impl AuthUser {
    /// Django's key for the user id.
    pub const ID_KEY: &str = "_auth_user_id";
    /// Django's key for the backend path.
    pub const BACKEND_KEY: &str = "_auth_user_backend";
    /// Django's key for the session auth hash.
    pub const HASH_KEY: &str = "_auth_user_hash";

    /// The signed-in user, when the data holds Django's auth keys. Django stores the
    /// primary key with `_meta.pk.value_to_string`, a string; a number is accepted too.
    pub fn from_data(data: &SessionData) -> Option<AuthUser> {
        let id = match data.get(Self::ID_KEY)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let backend = data.get(Self::BACKEND_KEY)?.as_str()?.to_owned();
        let hash = data
            .get(Self::HASH_KEY)
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(AuthUser { id, backend, hash })
    }

    /// The user id parsed as an integer (Django's default `AutoField`/`BigAutoField`).
    pub fn id_i64(&self) -> Option<i64> {
        self.id.parse().ok()
    }

    /// Writes the three keys as Django's `login()` does (the hash only when present).
    pub fn write_to(&self, data: &mut SessionData) {
        data.insert(Self::ID_KEY.into(), Value::from(self.id.clone()));
        data.insert(Self::BACKEND_KEY.into(), Value::from(self.backend.clone()));
        match &self.hash {
            Some(h) => data.insert(Self::HASH_KEY.into(), Value::from(h.clone())),
            None => data.remove(Self::HASH_KEY),
        };
    }

    /// Removes the keys (what Django's `logout()` leaves behind after its flush).
    pub fn remove_from(data: &mut SessionData) {
        for k in [Self::ID_KEY, Self::BACKEND_KEY, Self::HASH_KEY] {
            data.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn expiry_maps_both_ways() {
        let t = Timestamp::from_unix_millis(1_893_456_000_000); // 2030-01-01T00:00:00Z
        assert_eq!(iso_format(t), "2030-01-01T00:00:00+00:00");
        let t2 = Timestamp::from_unix_millis(1_893_456_000_123);
        assert_eq!(iso_format(t2), "2030-01-01T00:00:00.123000+00:00");
        for (stored, want) in [
            (json!({"a": 1}), Expiry::Default),
            (json!({"a": 1, "_session_expiry": 0}), Expiry::BrowserClose),
            (json!({"a": 1, "_session_expiry": 300}), Expiry::Idle(300)),
            (
                json!({"a": 1, "_session_expiry": "2030-01-01T00:00:00+00:00"}),
                Expiry::At(t),
            ),
            (
                json!({"a": 1, "_session_expiry": "2030-01-01T01:00:00.123000+01:00"}),
                Expiry::At(t2),
            ),
            (
                json!({"a": 1, "_session_expiry": "2030-01-01T00:00:00"}),
                Expiry::At(t),
            ),
        ] {
            let (data, exp) = from_dict(map(stored.clone())).expect("decodes");
            assert_eq!(exp, want, "{stored}");
            assert_eq!(Value::Object(data.clone()), json!({"a": 1}));
            let rec = Record {
                data,
                expiry: exp,
                created_at: t,
                expires_at: t,
                version: 1,
                meta: Default::default(),
            };
            let back = to_dict(&rec);
            assert_eq!(from_dict(back).expect("again").1, want);
        }
        assert!(from_dict(map(json!({"_session_expiry": "soon"}))).is_err());
        assert!(from_dict(map(json!({"_session_expiry": [1]}))).is_err());
    }

    #[test]
    fn a_principal_is_written_as_djangos_auth_keys_and_read_back() {
        let mut rec = Record::with_ttl(map(json!({"cart": [1]})), 60);
        rec.meta = SessionMeta {
            principal: Some("42".into()),
            auth_hash: Some("h".into()),
            last_seen: Some(Timestamp::now()),
            ..SessionMeta::default()
        };
        let dict = to_dict(&rec);
        assert_eq!(dict["_auth_user_id"], "42");
        assert_eq!(dict["_auth_user_hash"], "h");
        assert_eq!(dict["_auth_user_backend"], DEFAULT_AUTH_BACKEND);
        let (data, _) = from_dict(dict).expect("decodes");
        let meta = meta_of(&data);
        assert_eq!(meta.principal.as_deref(), Some("42"));
        assert_eq!(meta.auth_hash.as_deref(), Some("h"));
        // A backend Django wrote is kept.
        rec.data = map(json!({"_auth_user_backend": "app.Backend"}));
        assert_eq!(to_dict(&rec)["_auth_user_backend"], "app.Backend");
        // Anonymous: nothing added.
        assert!(meta_of(&map(json!({"cart": [1]}))).is_empty());
        let anon = Record::with_ttl(map(json!({"cart": [1]})), 60);
        assert!(!to_dict(&anon).contains_key("_auth_user_id"));
    }

    #[test]
    fn auth_user_reads_djangos_keys() {
        let data = map(json!({
            "_auth_user_id": "7",
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": "abc",
        }));
        let u = AuthUser::from_data(&data).expect("signed in");
        assert_eq!(u.id_i64(), Some(7));
        assert_eq!(u.hash.as_deref(), Some("abc"));
        let mut copy = SessionData::new();
        u.write_to(&mut copy);
        assert_eq!(copy, data);
        AuthUser::remove_from(&mut copy);
        assert!(AuthUser::from_data(&copy).is_none());
        assert!(AuthUser::from_data(&map(json!({"_auth_user_id": "7"}))).is_none());
    }

    #[test]
    fn tampered_and_foreign_data_are_typed_errors() {
        let f = DjangoFormat::new::<&str>("test-secret", &[]);
        let rec = Record::with_ttl(map(json!({"k": "v"})), 60);
        let s = f.encode(&rec).expect("encode");
        assert_eq!(f.decode(&s).expect("decode").0, rec.data);
        let other = DjangoFormat::new::<&str>("other", &[]);
        assert!(matches!(
            other.decode(&s),
            Err(Error::Codec(CodecError::BadSignature(_)))
        ));
        let mut t = s.into_bytes();
        t[2] ^= 1;
        let t = String::from_utf8(t).expect("ascii");
        assert!(matches!(
            f.decode(&t),
            Err(Error::Codec(CodecError::BadSignature(_)))
        ));
    }
}
