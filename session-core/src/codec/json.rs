//! The readable codec: one JSON object per record.
//!
//! ```text
//! {"data":{"user_id":101},"expires_at":1700001209600,"expiry":"default","created_at":1700000000000,"version":1,"format":1}
//! ```
//!
//! Format 2 adds a `"meta"` object ([`crate::record::SessionMeta`]); a record with empty
//! meta is still written as format 1, so older builds keep reading it.

use serde::{Deserialize, Serialize};

use super::{Codec, CodecError, JSON_FORMAT_VERSION, check_size, decode_any};
use crate::expiry::Expiry;
use crate::record::{Record, SessionData, SessionMeta};
use crate::time::Timestamp;

/// JSON records, readable with `cat`.
#[derive(Debug, Clone)]
pub struct JsonCodec {
    max_encoded_size: usize,
}

impl JsonCodec {
    /// A JSON codec refusing encodings above `max_encoded_size` bytes.
    pub fn new(max_encoded_size: usize) -> Self {
        JsonCodec { max_encoded_size }
    }
}

impl Default for JsonCodec {
    fn default() -> Self {
        JsonCodec::new(super::DEFAULT_MAX_ENCODED_SIZE)
    }
}

#[derive(Serialize)]
struct Out<'a> {
    data: &'a SessionData,
    expires_at: Timestamp,
    expiry: Expiry,
    created_at: Timestamp,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a SessionMeta>,
    format: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct In {
    data: SessionData,
    expires_at: Timestamp,
    expiry: Expiry,
    created_at: Timestamp,
    version: u64,
    #[serde(default)]
    meta: Option<SessionMeta>,
    format: u32,
}

#[derive(Deserialize)]
struct Probe {
    format: Option<serde_json::Value>,
}

impl Codec for JsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, r: &Record) -> Result<Vec<u8>, CodecError> {
        let bytes = serde_json::to_vec(&Out {
            data: &r.data,
            expires_at: r.expires_at,
            expiry: r.expiry,
            created_at: r.created_at,
            version: r.version,
            meta: (!r.meta.is_empty()).then_some(&r.meta),
            format: if r.meta.is_empty() {
                1
            } else {
                JSON_FORMAT_VERSION
            },
        })
        .map_err(|e| CodecError::Encode(e.to_string()))?;
        check_size(bytes, self.max_encoded_size)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Record, CodecError> {
        decode_any(bytes, self.max_encoded_size)
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Record, CodecError> {
    match serde_json::from_slice::<In>(bytes) {
        Ok(r) if r.format == 1 && r.meta.is_some() => {
            Err(CodecError::Corrupt("format 1 record carries meta".into()))
        }
        Ok(r) if r.format == 1 || r.format == JSON_FORMAT_VERSION => Ok(Record {
            data: r.data,
            expiry: r.expiry,
            created_at: r.created_at,
            expires_at: r.expires_at,
            version: r.version,
            meta: r.meta.unwrap_or_default(),
        }),
        Ok(r) => Err(CodecError::UnsupportedVersion(r.format)),
        Err(e) if e.is_eof() => Err(CodecError::Truncated(e.to_string())),
        Err(e) => Err(match serde_json::from_slice::<Probe>(bytes) {
            Ok(Probe { format: None }) => CodecError::Foreign,
            Ok(Probe {
                format: Some(serde_json::Value::Number(n)),
            }) if !matches!(n.as_u64(), Some(1 | 2)) => CodecError::UnsupportedVersion(
                n.as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(u32::MAX),
            ),
            _ => CodecError::Corrupt(e.to_string()),
        }),
    }
}
