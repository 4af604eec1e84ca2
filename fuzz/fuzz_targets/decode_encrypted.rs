//! The encrypted codec on hostile bytes, with plaintext accepted (the widest surface):
//! forged headers, unknown key ids, bad tags and truncation must be typed errors. The
//! input is also tried behind a valid header of a configured key.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use session_core::codec::{EncryptedCodec, EncryptionKey};
use session_core::{BincodeCodec, Codec};

fuzz_target!(|data: &[u8]| {
    let key = EncryptionKey::from_bytes(&[7; 32]);
    let Ok(codec) = EncryptedCodec::new(Arc::new(BincodeCodec::default()), vec![key]) else {
        return;
    };
    let codec = codec.accept_plaintext(true);
    let _ = codec.decode(data);
    // Behind the real header (magic, version, key id) the input reaches the AEAD check,
    // which nothing but the key can pass (forging a tag is a 2^-128 event).
    if let Ok(sealed) = codec.encode(&session_core::Record::with_ttl(Default::default(), 60)) {
        let mut forged = sealed[..12].to_vec();
        forged.extend_from_slice(data);
        assert!(codec.decode(&forged).is_err());
    }
});
