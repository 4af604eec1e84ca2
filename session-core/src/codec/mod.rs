//! Codecs turn a [`Record`] into bytes and back.
//!
//! Two formats ship: [`BincodeCodec`] (compact, the default) and [`JsonCodec`]
//! (readable: `cat` a session file and read it). Both carry a format version, and each
//! codec's decoder reads both formats, so switching the configured codec never logs
//! anyone out: old records are read in their old format and rewritten in the new one at
//! their next save.
//!
//! Decoding is defensive: input longer than the configured maximum is refused before it
//! is parsed, nesting is bounded, and corrupt, truncated, foreign or future-format bytes
//! give a typed [`CodecError`], never a panic.
//!
//! [`EncryptedCodec`] wraps either of them to seal records at rest (XChaCha20-Poly1305,
//! with key rotation); it is selected by `[encryption] keys` in the configuration.
//!
//! bincode's 2.x line is the last release of an unmaintained project (RUSTSEC-2025-0141;
//! 3.0.0 on the registry is an empty tombstone); the [`Codec`] trait keeps it swappable,
//! and `codec = "json"` switches without logging anyone out.

pub(crate) mod binary;
mod encrypted;
mod json;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use binary::BincodeCodec;
pub(crate) use encrypted::MisconfiguredCodec;
pub use encrypted::{
    ENCRYPTED_FORMAT_VERSION, ENCRYPTION_OVERHEAD, EncryptedCodec, EncryptionKey, KEY_BYTES,
};
pub use json::JsonCodec;

use crate::lazy::{EncodedBytes, LazyRecord};
use crate::record::Record;

/// Default maximum encoded size of one session: 4 MiB.
pub const DEFAULT_MAX_ENCODED_SIZE: usize = 4 * 1024 * 1024;

/// Maximum nesting depth of a session value (arrays and objects inside each other).
pub const MAX_DEPTH: usize = 128;

/// The first bytes of a binary record: a non-text byte, "SR", then the format version.
pub(crate) const BINARY_MAGIC: [u8; 3] = [0xB1, b'S', b'R'];

/// The first bytes of an encrypted record: a non-text byte, "SR", then the format version.
pub(crate) const ENCRYPTED_MAGIC: [u8; 3] = [0xE5, b'S', b'R'];

/// The newest binary format version this build writes (2: with
/// [`crate::record::SessionMeta`]; records with empty meta are written as format 1).
pub const BINARY_FORMAT_VERSION: u8 = 2;

/// The newest JSON format version this build writes (2: with a `"meta"` object; records
/// with empty meta are written as format 1).
pub const JSON_FORMAT_VERSION: u32 = 2;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The encoding is larger than the configured maximum.
    #[error("encoded session is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The size seen.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The bytes end before the record does.
    #[error("truncated session record: {0}")]
    Truncated(String),
    /// The bytes are not a session record of any known format.
    #[error("not a session record (unknown format)")]
    Foreign,
    /// A session record from a newer (or unknown) format version.
    #[error("unsupported session record format version {0}")]
    UnsupportedVersion(u32),
    /// The bytes look like a record but are damaged.
    #[error("corrupt session record: {0}")]
    Corrupt(String),
    /// The record could not be encoded.
    #[error("session record could not be encoded: {0}")]
    Encode(String),
    /// An encrypted record was read, but no encryption keys are configured.
    #[error(
        "session record is encrypted, but no encryption keys are configured (set [encryption] keys)"
    )]
    Encrypted,
    /// An unencrypted record was read while encryption is on and plaintext is refused.
    #[error(
        "unencrypted session record refused: encryption is on (set encryption.accept_plaintext = true only while migrating)"
    )]
    Plaintext,
    /// An encrypted record could not be opened: altered bytes, or an unknown key.
    #[error("encrypted session record could not be opened: {0}")]
    Decrypt(String),
    /// A signed record's signature matches none of the configured secrets: the bytes
    /// were altered, or signed by an application with another secret key.
    #[error("signed session record refused: {0}")]
    BadSignature(String),
}

/// Record <-> bytes. Object-safe; stores hold an `Arc<dyn Codec>`.
pub trait Codec: Send + Sync + fmt::Debug {
    /// The codec's configuration name (`"bincode"`, `"json"`).
    fn name(&self) -> &'static str;
    /// Encodes `record`, failing with [`CodecError::TooLarge`] above the limit.
    fn encode(&self, record: &Record) -> Result<Vec<u8>, CodecError>;
    /// Decodes bytes written by any built-in codec.
    fn decode(&self, bytes: &[u8]) -> Result<Record, CodecError>;
    /// Decodes the record's header and leaves its data to be decoded as it is read
    /// ([`crate::lazy`]). By default the whole record is decoded; the compact codec
    /// leaves its data map encoded. Fails where [`Codec::decode`] fails on the header;
    /// damage inside the data is found when it is read.
    fn decode_lazy(&self, bytes: EncodedBytes) -> Result<LazyRecord, CodecError> {
        self.decode(&bytes).map(LazyRecord::from)
    }
}

/// Which codec a configuration selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CodecKind {
    /// [`BincodeCodec`].
    #[default]
    Bincode,
    /// [`JsonCodec`].
    Json,
}

impl CodecKind {
    /// Builds the codec with a maximum encoded size.
    pub fn build(self, max_encoded_size: usize) -> Arc<dyn Codec> {
        match self {
            CodecKind::Bincode => Arc::new(BincodeCodec::new(max_encoded_size)),
            CodecKind::Json => Arc::new(JsonCodec::new(max_encoded_size)),
        }
    }
}

/// Decodes either format, dispatching on the first byte.
pub(crate) fn decode_any(bytes: &[u8], limit: usize) -> Result<Record, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    match bytes.first() {
        None => Err(CodecError::Truncated("empty input".into())),
        Some(&b) if b == BINARY_MAGIC[0] => binary::decode(bytes),
        Some(b'{') => json::decode(bytes),
        Some(_) if bytes.starts_with(&ENCRYPTED_MAGIC) => Err(CodecError::Encrypted),
        Some(_) => Err(CodecError::Foreign),
    }
}

pub(crate) fn check_size(bytes: Vec<u8>, limit: usize) -> Result<Vec<u8>, CodecError> {
    if bytes.len() > limit {
        Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        })
    } else {
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests;
