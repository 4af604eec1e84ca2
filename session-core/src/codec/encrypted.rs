//! Session payloads encrypted at rest: XChaCha20-Poly1305 around any other codec.
//!
//! [`EncryptedCodec`] encodes a record with the codec it wraps, then seals the bytes with
//! XChaCha20-Poly1305 (an AEAD: a reader without the key learns nothing but the length,
//! and any change to the stored bytes is detected). A fresh random 24-byte nonce is drawn
//! from the OS for every record written; 192-bit nonces make a repeat negligible however
//! many records one key seals. Layout of a stored record:
//!
//! ```text
//! E5 'S' 'R' <version 1> <key id: 8 bytes> <nonce: 24 bytes> <ciphertext + 16-byte tag>
//! ```
//!
//! The first twelve bytes (magic, version, key id) are authenticated as associated data,
//! so they cannot be altered either. The key id is the start of a domain-separated
//! SHA-256 of the key: it picks the key to try without revealing it.
//!
//! **Rotation**: the first configured key encrypts, every configured key decrypts. Put a
//! new key first, keep the old ones until the sessions they sealed have expired (each
//! save re-encrypts a session with the first key), then drop them.
//!
//! **Plaintext records** (written before encryption was turned on) are refused with
//! [`CodecError::Plaintext`] unless [`EncryptedCodec::accept_plaintext`] is set for a
//! migration window; once every such session has been saved again or expired, turn it
//! off. Without a setting saying so, a store that accepted plaintext would let anyone
//! who can write to it plant unauthenticated sessions.
//!
//! Tampered bytes, a removed key and truncated records all give a typed [`CodecError`],
//! never a panic; the tag is checked in constant time by the `chacha20poly1305` crate.
//!
//! What encryption does not do: bind a record to its session key (the [`Codec`] trait
//! never sees the key), so someone who can *write* the store can still move a sealed
//! record from one key to another; it protects dumps, backups and replicas from being
//! read or altered, not a store under an attacker's full control.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use super::{Codec, CodecError, DEFAULT_MAX_ENCODED_SIZE, ENCRYPTED_MAGIC};
use crate::record::Record;

/// The encrypted format version this build writes.
pub const ENCRYPTED_FORMAT_VERSION: u8 = 1;

/// Length of an encryption key in bytes.
pub const KEY_BYTES: usize = 32;

const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Magic, version and key id: authenticated, not encrypted.
const HEADER_LEN: usize = ENCRYPTED_MAGIC.len() + 1 + KEY_ID_LEN;

/// Bytes encryption adds to a record: header, nonce and tag.
pub const ENCRYPTION_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// One 256-bit XChaCha20-Poly1305 key. `Debug` shows only its id.
#[derive(Clone)]
pub struct EncryptionKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl EncryptionKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; KEY_BYTES]) -> Self {
        let mut h = Sha256::new();
        h.update(b"session-core/encryption-key-id/v1\0");
        h.update(bytes);
        let digest = h.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        EncryptionKey {
            id,
            cipher: XChaCha20Poly1305::new(&Key::from(*bytes)),
        }
    }

    /// A key from base64 (standard or URL-safe alphabet, padded or not) of 32 bytes,
    /// such as `openssl rand -base64 32` prints. The error never contains the input.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let decoded = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or_else(|| {
                "is not valid base64; generate a key with `openssl rand -base64 32`".to_owned()
            })?;
        let bytes: [u8; KEY_BYTES] = decoded.as_slice().try_into().map_err(|_| {
            format!(
                "decodes to {} bytes, but a key must be exactly {KEY_BYTES} bytes; \
                 generate one with `openssl rand -base64 32`",
                decoded.len()
            )
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A new random key from the OS CSPRNG, and its base64 text for a config file.
    pub fn generate() -> Result<(Self, String), CodecError> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| {
            CodecError::Encode(format!("the OS random number generator failed: {e}"))
        })?;
        Ok((Self::from_bytes(&bytes), STANDARD.encode(bytes)))
    }

    /// The key's public id (16 hex digits): what a sealed record names, safe to log.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(id {}, <redacted>)", self.id_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals records of the wrapped codec with XChaCha20-Poly1305; see the module docs.
///
/// ```
/// use std::sync::Arc;
/// use session_core::{BincodeCodec, Codec, CodecError, Record, SessionData};
/// use session_core::codec::{EncryptedCodec, EncryptionKey};
///
/// let (key, _base64) = EncryptionKey::generate().unwrap();
/// let codec = EncryptedCodec::new(Arc::new(BincodeCodec::default()), vec![key]).unwrap();
/// let record = Record::with_ttl(SessionData::new(), 60);
/// let mut sealed = codec.encode(&record).unwrap();
/// assert_eq!(codec.decode(&sealed).unwrap(), record);
/// let last = sealed.len() - 1;
/// sealed[last] ^= 1;
/// assert!(matches!(codec.decode(&sealed), Err(CodecError::Decrypt(_))));
/// ```
#[derive(Clone)]
pub struct EncryptedCodec {
    inner: Arc<dyn Codec>,
    keys: Vec<EncryptionKey>,
    accept_plaintext: bool,
    max_encoded_size: usize,
}

impl fmt::Debug for EncryptedCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedCodec")
            .field("inner", &self.inner)
            .field("keys", &self.keys)
            .field("accept_plaintext", &self.accept_plaintext)
            .field("max_encoded_size", &self.max_encoded_size)
            .finish()
    }
}

impl EncryptedCodec {
    /// Seals `inner`'s records with the first of `keys`, opens them with any; refuses
    /// plaintext records. Fails when `keys` is empty.
    ///
    /// The stored size limit defaults to [`DEFAULT_MAX_ENCODED_SIZE`]; give `inner` a limit
    /// [`ENCRYPTION_OVERHEAD`] bytes lower so its own check agrees (as
    /// [`crate::SessionSettings::codec`] does).
    pub fn new(inner: Arc<dyn Codec>, keys: Vec<EncryptionKey>) -> Result<Self, CodecError> {
        if keys.is_empty() {
            return Err(CodecError::Encode(
                "an encrypted codec needs at least one key".into(),
            ));
        }
        Ok(EncryptedCodec {
            inner,
            keys,
            accept_plaintext: false,
            max_encoded_size: DEFAULT_MAX_ENCODED_SIZE,
        })
    }

    /// Whether records without encryption (written before it was turned on) are read.
    /// Off by default; turn it on only for a migration window.
    pub fn accept_plaintext(mut self, accept: bool) -> Self {
        self.accept_plaintext = accept;
        self
    }

    /// The largest stored (sealed) record accepted, in bytes.
    pub fn max_encoded_size(mut self, limit: usize) -> Self {
        self.max_encoded_size = limit;
        self
    }

    /// The ids of the configured keys, the encrypting one first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(EncryptionKey::id_hex).collect()
    }

    fn open(&self, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::Truncated(
                "encrypted record header cut short".into(),
            ));
        }
        let version = bytes[ENCRYPTED_MAGIC.len()];
        if version != ENCRYPTED_FORMAT_VERSION {
            return Err(CodecError::UnsupportedVersion(u32::from(version)));
        }
        if bytes.len() < ENCRYPTION_OVERHEAD {
            return Err(CodecError::Truncated(
                "encrypted record shorter than its nonce and tag".into(),
            ));
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let id = &header[ENCRYPTED_MAGIC.len() + 1..];
        let mut candidates = self.keys.iter().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            return Err(CodecError::Decrypt(format!(
                "the record was sealed with key id {}, which is not among the configured \
                 encryption keys (configured: {}); was a key dropped too early?",
                hex(id),
                self.key_ids().join(", ")
            )));
        }
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CodecError::Truncated("encrypted record nonce cut short".into()))?;
        let nonce = XNonce::from(nonce);
        candidates
            .find_map(|k| {
                k.cipher
                    .decrypt(
                        &nonce,
                        Payload {
                            msg: ciphertext,
                            aad: header,
                        },
                    )
                    .ok()
            })
            .ok_or_else(|| {
                CodecError::Decrypt(
                    "authentication failed: the record was altered, or sealed with another key \
                     of the same id"
                        .into(),
                )
            })
    }
}

impl Codec for EncryptedCodec {
    fn name(&self) -> &'static str {
        "encrypted"
    }

    fn encode(&self, record: &Record) -> Result<Vec<u8>, CodecError> {
        // The inner codec's own limit is reported in stored (sealed) bytes.
        let plain = self.inner.encode(record).map_err(|e| match e {
            CodecError::TooLarge { size, limit } => CodecError::TooLarge {
                size: size.saturating_add(ENCRYPTION_OVERHEAD),
                limit: limit.saturating_add(ENCRYPTION_OVERHEAD),
            },
            other => other,
        })?;
        let size = plain.len().saturating_add(ENCRYPTION_OVERHEAD);
        if size > self.max_encoded_size {
            return Err(CodecError::TooLarge {
                size,
                limit: self.max_encoded_size,
            });
        }
        let Some(key) = self.keys.first() else {
            return Err(CodecError::Encode("no encryption key configured".into()));
        };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| {
            CodecError::Encode(format!("the OS random number generator failed: {e}"))
        })?;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&ENCRYPTED_MAGIC);
        out.push(ENCRYPTED_FORMAT_VERSION);
        out.extend_from_slice(&key.id);
        let sealed = key
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &out,
                },
            )
            .map_err(|_| CodecError::Encode("encryption failed".into()))?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Record, CodecError> {
        if bytes.len() > self.max_encoded_size {
            return Err(CodecError::TooLarge {
                size: bytes.len(),
                limit: self.max_encoded_size,
            });
        }
        if bytes.starts_with(&ENCRYPTED_MAGIC) {
            let plain = self.open(bytes)?;
            // A sealed record holds a plaintext record; anything else inside (even another
            // sealed record) is refused by the inner decoder.
            return self.inner.decode(&plain);
        }
        if self.accept_plaintext {
            self.inner.decode(bytes)
        } else {
            Err(CodecError::Plaintext)
        }
    }
}

/// Stands in for the codec when the encryption settings are invalid and
/// [`crate::SessionSettings::codec`] (which cannot fail) is asked for one anyway: it
/// refuses every record rather than silently storing sessions unencrypted.
#[derive(Debug)]
pub(crate) struct MisconfiguredCodec(pub(crate) String);

impl Codec for MisconfiguredCodec {
    fn name(&self) -> &'static str {
        "misconfigured"
    }

    fn encode(&self, _: &Record) -> Result<Vec<u8>, CodecError> {
        Err(CodecError::Encode(format!(
            "encryption is misconfigured: {}",
            self.0
        )))
    }

    fn decode(&self, _: &[u8]) -> Result<Record, CodecError> {
        Err(CodecError::Decrypt(format!(
            "encryption is misconfigured: {}",
            self.0
        )))
    }
}

#[cfg(test)]
mod tests;
