//! The `cookie` engine (Django's `signed_cookies`): the whole session lives in a signed
//! cookie and no server-side store is involved.
//!
//! The handler still sees an ordinary [`session_core::Session`]: for each request the
//! middleware decodes the cookie into a one-record, request-local store (`CookieSlot`),
//! lets the handle load and save through it, and after the handler encodes whatever the
//! slot holds back into the cookie.
//!
//! Cookie value: `base64url(JSON payload) "." base64url(HMAC-SHA256)`; the payload holds
//! the data, the expiry policy, the creation time, the absolute deadline and, for a
//! signed-in session, its [`SessionMeta`] (principal, auth hash), and the
//! deadline is enforced on every load (unlike Django, whose signed cookies ignore a
//! custom expiry, ticket #19201).
//!
//! Limits, inherent to the design: the data is signed, not encrypted, so the client can
//! read it; a cookie cannot be revoked, so a logout only forgets the client's copy and a
//! stolen cookie stays valid until its deadline; browsers keep at most 4096 bytes per
//! cookie, so a larger session is refused with a clear error; concurrent requests are
//! last-writer-wins on the client.

use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use session_core::{
    Capabilities, Error, Expiry, Inserted, Record, Result, SessionData, SessionKey, SessionMeta,
    SessionStore, Timestamp, async_trait,
};

use crate::signing::{Purpose, Signer};

/// Engine name that selects the cookie engine in `Sessions.toml`.
pub const ENGINE: &str = "cookie";

/// Largest `name=value` a browser keeps for one cookie.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// The key under which a request's decoded cookie sits in its slot. It never leaves the
/// process (the cookie carries the data, not a key), so a constant is enough.
const LOADED_KEY: &str = "cookieengine0000000000000000000a";

/// Payload format version.
const FORMAT: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    data: SessionData,
    expiry: Expiry,
    created_at: Timestamp,
    expires_at: Timestamp,
    #[serde(default)]
    meta: SessionMeta,
}

/// The session record a cookie value carries, if it is authentic and well formed.
pub(crate) fn decode(signer: &Signer, cookie_name: &str, value: &str) -> Option<Record> {
    // A browser never sends more than it keeps; anything larger is not ours.
    if value.len() > MAX_COOKIE_BYTES * 2 {
        return None;
    }
    let body = signer.open(Purpose::SessionData, cookie_name, value)?;
    let json = URL_SAFE_NO_PAD.decode(body).ok()?;
    let p: Payload = serde_json::from_slice(&json).ok()?;
    (p.v == FORMAT).then_some(Record {
        data: p.data,
        expiry: p.expiry,
        created_at: p.created_at,
        expires_at: p.expires_at,
        version: 1,
        meta: p.meta,
    })
}

/// The signed cookie value for `record`.
pub(crate) fn encode(signer: &Signer, cookie_name: &str, record: &Record) -> Result<String> {
    #[derive(Serialize)]
    struct PayloadRef<'a> {
        v: u8,
        data: &'a SessionData,
        expiry: Expiry,
        created_at: Timestamp,
        expires_at: Timestamp,
        #[serde(skip_serializing_if = "SessionMeta::is_empty")]
        meta: &'a SessionMeta,
    }
    let json = serde_json::to_vec(&PayloadRef {
        v: FORMAT,
        data: &record.data,
        expiry: record.expiry,
        created_at: record.created_at,
        expires_at: record.expires_at,
        meta: &record.meta,
    })
    .map_err(|source| Error::Value {
        key: "<session>".into(),
        source,
    })?;
    let body = URL_SAFE_NO_PAD.encode(json);
    let value = signer.seal(Purpose::SessionData, cookie_name, &body);
    let size = cookie_name.len() + 1 + value.len();
    if size > MAX_COOKIE_BYTES {
        return Err(Error::Limit(format!(
            "the session needs a {size}-byte cookie but browsers keep at most {MAX_COOKIE_BYTES} \
             bytes per cookie: keep less in the session, or use a server-side engine \
             (memory, file, db, cache, cached_db)"
        )));
    }
    Ok(value)
}

/// A request-local store holding at most one record: the session decoded from the
/// request's cookie, then whatever the handler saved.
#[derive(Debug, Default)]
pub(crate) struct CookieSlot {
    slot: Mutex<Option<(SessionKey, Record)>>,
}

impl CookieSlot {
    /// A slot holding the decoded cookie (if any) and the key to load it with.
    pub(crate) fn with_record(record: Option<Record>) -> (Self, Option<SessionKey>) {
        match (record, SessionKey::parse(LOADED_KEY)) {
            (Some(r), Ok(k)) => (
                CookieSlot {
                    slot: Mutex::new(Some((k.clone(), r))),
                },
                Some(k),
            ),
            _ => (CookieSlot::default(), None),
        }
    }

    /// The record to write into the response cookie.
    pub(crate) fn record(&self) -> Option<Record> {
        self.lock().as_ref().map(|(_, r)| r.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(SessionKey, Record)>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl SessionStore for CookieSlot {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none().compare_and_set(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let mut slot = self.lock();
        if matches!(&*slot, Some((k, r)) if k == key && !r.is_expired_at(Timestamp::now())) {
            return Ok(Inserted::KeyTaken);
        }
        *slot = Some((key.clone(), record.clone()));
        Ok(Inserted::Created)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now();
        Ok(self
            .lock()
            .as_ref()
            .filter(|(k, r)| k == key && !r.is_expired_at(now))
            .map(|(_, r)| r.clone()))
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        let now = Timestamp::now();
        let mut slot = self.lock();
        match &mut *slot {
            Some((k, cur)) if k == key && !cur.is_expired_at(now) => {
                if let Some(e) = expected.filter(|e| *e != cur.version) {
                    return Err(Error::Conflict {
                        expected: e,
                        found: cur.version,
                    });
                }
                let version = cur.version.saturating_add(1);
                *cur = Record {
                    version,
                    ..record.clone()
                };
                Ok(version)
            }
            _ => Err(Error::NotFound),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let mut slot = self.lock();
        if matches!(&*slot, Some((k, _)) if k == key) {
            *slot = None;
            return Ok(true);
        }
        Ok(false)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let now = Timestamp::now();
        match &mut *self.lock() {
            Some((k, r)) if k == key && !r.is_expired_at(now) => {
                r.expires_at = expires_at;
                Ok(())
            }
            _ => Err(Error::NotFound),
        }
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.load(key).await?.is_some())
    }

    async fn clear_expired(&self) -> Result<u64> {
        // The records live in browsers; nothing to sweep.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(&["cookie-engine-test-key-0123456789abcdef".into()]).expect("key")
    }

    fn record() -> Record {
        let mut data = SessionData::new();
        data.insert("user_id".into(), 101.into());
        Record::with_ttl(data, 3600)
    }

    #[test]
    fn round_trip_and_tamper() {
        let s = signer();
        let r = record();
        let v = encode(&s, "sessionid", &r).expect("encode");
        let back = decode(&s, "sessionid", &v).expect("decode");
        assert_eq!(back.data, r.data);
        assert_eq!(back.expires_at, r.expires_at);
        assert!(
            decode(&s, "other", &v).is_none(),
            "bound to the cookie name"
        );
        let (body, tag) = v.rsplit_once('.').expect("dot");
        let forged = format!("{}x.{tag}", body);
        assert!(decode(&s, "sessionid", &forged).is_none());
        assert!(decode(&s, "sessionid", "garbage").is_none());
    }

    #[test]
    fn oversized_sessions_are_refused_clearly() {
        let mut r = record();
        r.data.insert("blob".into(), "x".repeat(4000).into());
        let err = encode(&signer(), "sessionid", &r).expect_err("too big");
        assert!(
            matches!(&err, Error::Limit(m) if m.contains("4096")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn slot_behaves_like_a_store() {
        let (slot, key) = CookieSlot::with_record(Some(record()));
        let key = key.expect("key");
        assert!(slot.load(&key).await.expect("load").is_some());
        assert!(matches!(
            slot.update(&key, &record(), Some(7)).await,
            Err(Error::Conflict { .. })
        ));
        assert_eq!(
            slot.update(&key, &record(), Some(1)).await.expect("update"),
            2
        );
        assert!(slot.delete(&key).await.expect("delete"));
        assert!(matches!(
            slot.update(&key, &record(), None).await,
            Err(Error::NotFound)
        ));
        let fresh = slot.create(&record()).await.expect("create");
        assert!(slot.load(&fresh).await.expect("load").is_some());
        let mut past = record();
        past.expires_at = Timestamp::now().add_secs(-1);
        let (slot, key) = CookieSlot::with_record(Some(past));
        assert!(slot.load(&key.expect("key")).await.expect("load").is_none());
    }
}
