//! Records decoded only as far as a request reads them.
//!
//! A store's [`SessionStore::load`](crate::SessionStore::load) returns a whole
//! [`Record`]: every key and value of the session decoded into a map, about two
//! allocations per key. A request that reads one key of a 1,000-key session pays for all
//! 1,000. [`SessionStore::load_lazy`](crate::SessionStore::load_lazy) returns a
//! [`LazyRecord`] instead: the header (version, deadline, expiry policy, meta) decoded,
//! the data left as the stored bytes ([`LazyData`]), shared with the store where it keeps
//! them in memory ([`EncodedBytes`]). [`LazyData::get`] finds one key in the bytes
//! and decodes only its value; [`LazyData::decode`] builds the whole map when a request
//! changes the data or asks for all of it.
//!
//! ## Design
//!
//! - **The format is unchanged.** The compact codec ([`crate::codec::BincodeCodec`])
//!   writes a record's keys in ascending order, each followed by a tagged value whose
//!   size can be skipped without decoding it. A lookup walks the keys, skipping values,
//!   and stops at the first key past the one it looks for: no allocation, a few
//!   nanoseconds per key passed. Records of every format version already stored are read
//!   this way; nothing is rewritten.
//! - **Only the compact codec is lazy.** A JSON record (or one sealed by
//!   [`crate::codec::EncryptedCodec`], which must open the whole record anyway) is
//!   decoded whole, as before, and its [`LazyData`] holds the decoded map.
//! - **Damage is found where it is read.** A lazy load checks the header and, for a
//!   signed-in record (format 2, whose meta follows the data), walks the data to reach
//!   the meta; it does not check the values it skips. A damaged value is found when a
//!   lookup or a full decode reaches it, and is the same [`CodecError`] the whole decode
//!   gives. The session handle treats it as it treats a record that fails to load: it
//!   logs the key's fingerprint, starts a new session under a new key, and leaves the
//!   stored bytes as they are.
//! - **Key order is trusted.** A lookup stops at the first key greater than the one it
//!   looks for. If the key right after the one it finds does not come after it (a
//!   repeated key), the record was not written in order and the lookup asks the whole
//!   decode instead (which keeps the last of repeated keys). Every record this codec
//!   wrote is in order. A record damaged or made by hand so that its keys fall out of
//!   order elsewhere can answer a lookup otherwise than the whole decode: "absent", or
//!   the first of two values under a repeated key; a full read ([`LazyData::decode`]) is
//!   always exactly the whole decode.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde_json::Value;

use crate::codec::{CodecError, binary};
use crate::expiry::Expiry;
use crate::record::{Record, SessionData, SessionMeta};
use crate::time::Timestamp;

/// The bytes of a stored record: owned (read from a file or a server) or shared with
/// the store that keeps them (the memory engine), so that a load copies nothing. A
/// cheap clone can narrow to a part ([`EncodedBytes::slice`]).
#[derive(Clone)]
pub struct EncodedBytes {
    buf: Bytes,
    start: usize,
    end: usize,
}

#[derive(Clone)]
enum Bytes {
    Owned(Arc<Vec<u8>>),
    Shared(Arc<[u8]>),
}

impl EncodedBytes {
    /// The bytes as a slice.
    pub fn as_slice(&self) -> &[u8] {
        let all: &[u8] = match &self.buf {
            Bytes::Owned(v) => v,
            Bytes::Shared(a) => a,
        };
        &all[self.start..self.end]
    }

    /// The part `range` of these bytes (relative to them), sharing the buffer; `None`
    /// when the range is out of bounds.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<EncodedBytes> {
        if range.start > range.end || range.end > self.end - self.start {
            return None;
        }
        Some(EncodedBytes {
            buf: self.buf.clone(),
            start: self.start + range.start,
            end: self.start + range.end,
        })
    }
}

impl Deref for EncodedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for EncodedBytes {
    fn from(v: Vec<u8>) -> Self {
        let end = v.len();
        EncodedBytes {
            buf: Bytes::Owned(Arc::new(v)),
            start: 0,
            end,
        }
    }
}

impl From<Arc<[u8]>> for EncodedBytes {
    fn from(a: Arc<[u8]>) -> Self {
        let end = a.len();
        EncodedBytes {
            buf: Bytes::Shared(a),
            start: 0,
            end,
        }
    }
}

impl fmt::Debug for EncodedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncodedBytes({} bytes)", self.len())
    }
}

/// Where each key of a compact record's data map starts, for lookups by binary search
/// instead of a walk: 4 bytes (little-endian `u32`) per key, in key order. A store that
/// writes records itself (the memory engine) builds it once per write
/// ([`KeyIndex::build`]), keeps it beside the record, and hands it to each lazy load
/// ([`LazyData::with_index`]). Worth it from [`KeyIndex::MIN_KEYS`] keys: below that, a
/// walk is as quick and the index would only take memory.
#[derive(Clone, Debug)]
pub struct KeyIndex(EncodedBytes);

impl KeyIndex {
    /// The fewest keys a record has for [`KeyIndex::build`] to index it.
    pub const MIN_KEYS: usize = 32;

    /// The index of the compact record `record`: `None` when it is not a compact record,
    /// cannot be read, has fewer than [`KeyIndex::MIN_KEYS`] keys, or its keys are not
    /// in strictly ascending order (every record this codec writes is).
    pub fn build(record: &[u8]) -> Option<Vec<u8>> {
        binary::key_index(record, Self::MIN_KEYS)
    }

    /// An index [`KeyIndex::build`] made, kept in `bytes`.
    pub fn new(bytes: EncodedBytes) -> Self {
        KeyIndex(bytes)
    }
}

/// A session's data, decoded or still encoded (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct LazyData(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Decoded(SessionData),
    /// The compact codec's data map, and the positions of its keys when known.
    Binary {
        map: EncodedBytes,
        index: Option<KeyIndex>,
    },
}

impl LazyData {
    /// Data already decoded.
    pub fn decoded(data: SessionData) -> Self {
        LazyData(Repr::Decoded(data))
    }

    /// The compact codec's encoded map.
    pub(crate) fn binary(map: EncodedBytes) -> Self {
        LazyData(Repr::Binary { map, index: None })
    }

    /// This data, its lookups done by binary search over `index` (built by
    /// [`KeyIndex::build`] from the same record). An index whose length does not match
    /// the map's number of keys is not used; decoded data is returned as it is.
    pub fn with_index(self, index: KeyIndex) -> Self {
        match self.0 {
            Repr::Binary { map, .. } if binary::index_fits(&map, &index.0) => {
                LazyData(Repr::Binary {
                    map,
                    index: Some(index),
                })
            }
            other => LazyData(other),
        }
    }

    /// Whether the data is a decoded map (no lookup will decode anything).
    pub fn is_decoded(&self) -> bool {
        matches!(self.0, Repr::Decoded(_))
    }

    /// Whether lookups search a key index ([`LazyData::with_index`]).
    pub fn is_indexed(&self) -> bool {
        matches!(&self.0, Repr::Binary { index: Some(_), .. })
    }

    /// The value under `key`, decoding only that value.
    pub fn get(&self, key: &str) -> Result<Option<Value>, CodecError> {
        match &self.0 {
            Repr::Decoded(d) => Ok(d.get(key).cloned()),
            Repr::Binary { map, index } => match find(map, index.as_ref(), key)? {
                binary::Lookup::Found(at) => binary::decode_value_at(map, at).map(Some),
                binary::Lookup::Absent => Ok(None),
                binary::Lookup::Unordered => Ok(self.clone().decode()?.remove(key)),
            },
        }
    }

    /// Whether `key` holds a value, decoding no value.
    pub fn contains_key(&self, key: &str) -> Result<bool, CodecError> {
        match &self.0 {
            Repr::Decoded(d) => Ok(d.contains_key(key)),
            Repr::Binary { map, index } => match find(map, index.as_ref(), key)? {
                binary::Lookup::Found(_) => Ok(true),
                binary::Lookup::Absent => Ok(false),
                binary::Lookup::Unordered => Ok(self.clone().decode()?.contains_key(key)),
            },
        }
    }

    /// Checks every key and value as [`LazyData::decode`] would read them, building
    /// nothing: an error exactly when the whole decode would fail (a value damaged
    /// inside the data, which the lookups find only when they reach it). For a store
    /// that holds a second copy of the record and would rather fall back to it than
    /// hand out data that fails later (`cached_db` checks each cache hit this way).
    /// Cheaper than the decode: a walk and the strings' UTF-8 check, no allocation.
    pub fn check(&self) -> Result<(), CodecError> {
        match &self.0 {
            Repr::Decoded(_) => Ok(()),
            Repr::Binary { map, .. } => binary::check_data(map),
        }
    }

    /// The whole map.
    pub fn decode(self) -> Result<SessionData, CodecError> {
        match self.0 {
            Repr::Decoded(d) => Ok(d),
            Repr::Binary { map, .. } => binary::decode_data(&map),
        }
    }
}

/// `key` in the encoded map `map`: by binary search over `index` when there is one, by a
/// walk otherwise.
fn find(map: &[u8], index: Option<&KeyIndex>, key: &str) -> Result<binary::Lookup, CodecError> {
    match index {
        Some(i) => binary::lookup_indexed(map, &i.0, key),
        None => binary::lookup(map, key),
    }
}

/// A record whose header is decoded and whose data is decoded on demand
/// ([`LazyData`]); what [`SessionStore::load_lazy`](crate::SessionStore::load_lazy)
/// returns. The fields mean what [`Record`]'s do.
#[derive(Clone, Debug)]
pub struct LazyRecord {
    /// The application's data, decoded as far as it is read.
    pub data: LazyData,
    /// [`Record::expiry`].
    pub expiry: Expiry,
    /// [`Record::created_at`].
    pub created_at: Timestamp,
    /// [`Record::expires_at`].
    pub expires_at: Timestamp,
    /// [`Record::version`].
    pub version: u64,
    /// [`Record::meta`].
    pub meta: SessionMeta,
}

impl LazyRecord {
    /// The whole record, its data decoded.
    pub fn decode(self) -> Result<Record, CodecError> {
        Ok(Record {
            data: self.data.decode()?,
            expiry: self.expiry,
            created_at: self.created_at,
            expires_at: self.expires_at,
            version: self.version,
            meta: self.meta,
        })
    }

    /// The principal the session is signed in as, if any.
    pub fn principal(&self) -> Option<&str> {
        self.meta.principal.as_deref()
    }
}

impl From<Record> for LazyRecord {
    fn from(r: Record) -> Self {
        LazyRecord {
            data: LazyData::decoded(r.data),
            expiry: r.expiry,
            created_at: r.created_at,
            expires_at: r.expires_at,
            version: r.version,
            meta: r.meta,
        }
    }
}
