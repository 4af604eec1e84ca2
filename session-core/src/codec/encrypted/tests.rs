use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::codec::{BincodeCodec, JsonCodec};
use crate::config::{Config, SessionSettings};
use crate::error::Error;
use crate::record::SessionData;

const KEY_A: [u8; KEY_BYTES] = [7; KEY_BYTES];
const KEY_B: [u8; KEY_BYTES] = [9; KEY_BYTES];

fn b64(k: &[u8; KEY_BYTES]) -> String {
    STANDARD.encode(k)
}

fn record() -> Record {
    let mut data = SessionData::new();
    data.insert("user_id".into(), json!(101));
    data.insert("note".into(), json!("secret-value"));
    // Fixed times: two calls must give equal records.
    let mut r = Record::with_ttl(data, 3600);
    r.created_at = crate::time::Timestamp::from_unix_millis(1_700_000_000_000);
    r.expires_at = crate::time::Timestamp::from_unix_millis(4_000_000_000_000);
    r
}

fn codec(keys: &[[u8; KEY_BYTES]]) -> EncryptedCodec {
    EncryptedCodec::new(
        Arc::new(BincodeCodec::default()),
        keys.iter().map(EncryptionKey::from_bytes).collect(),
    )
    .expect("keys")
}

#[test]
fn round_trips_over_both_inner_codecs_and_hides_the_payload() {
    let inners: [Arc<dyn Codec>; 2] = [
        Arc::new(BincodeCodec::default()),
        Arc::new(JsonCodec::default()),
    ];
    for inner in inners {
        let c = EncryptedCodec::new(inner, vec![EncryptionKey::from_bytes(&KEY_A)]).expect("c");
        let r = record();
        let sealed = c.encode(&r).expect("encode");
        assert!(sealed.starts_with(&ENCRYPTED_MAGIC));
        let hay = String::from_utf8_lossy(&sealed);
        assert!(!hay.contains("secret-value") && !hay.contains("user_id"));
        assert_eq!(c.decode(&sealed).expect("decode"), r);
    }
}

#[test]
fn every_record_gets_a_fresh_nonce() {
    let c = codec(&[KEY_A]);
    let r = record();
    let a = c.encode(&r).expect("a");
    let b = c.encode(&r).expect("b");
    assert_ne!(a, b);
    assert_ne!(
        a[HEADER_LEN..HEADER_LEN + NONCE_LEN],
        b[HEADER_LEN..HEADER_LEN + NONCE_LEN]
    );
}

#[test]
fn rotation_encrypts_with_the_first_key_and_decrypts_with_any() {
    let old = codec(&[KEY_A]);
    let rotated = codec(&[KEY_B, KEY_A]);
    let new_only = codec(&[KEY_B]);
    let r = record();
    let by_old = old.encode(&r).expect("old");
    assert_eq!(rotated.decode(&by_old).expect("rotated reads old"), r);
    let by_rotated = rotated.encode(&r).expect("rotated");
    assert_eq!(new_only.decode(&by_rotated).expect("new reads rotated"), r);
    // The old key alone cannot read what the rotated codec wrote, and says why.
    match old.decode(&by_rotated) {
        Err(CodecError::Decrypt(m)) => {
            assert!(
                m.contains(&EncryptionKey::from_bytes(&KEY_B).id_hex()),
                "{m}"
            );
            assert!(m.contains("not among the configured"), "{m}");
        }
        other => panic!("old key read a new record: {other:?}"),
    }
    assert!(matches!(
        new_only.decode(&by_old),
        Err(CodecError::Decrypt(_))
    ));
}

#[test]
fn every_single_bit_flip_and_truncation_is_a_typed_error() {
    let c = codec(&[KEY_A]);
    let sealed = c.encode(&record()).expect("encode");
    for i in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = sealed.clone();
            t[i] ^= bit;
            assert!(c.decode(&t).is_err(), "flip of byte {i} accepted");
        }
    }
    for n in 0..sealed.len() {
        assert!(
            c.decode(&sealed[..n]).is_err(),
            "truncation to {n} accepted"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(c.decode(&longer), Err(CodecError::Decrypt(_))));
}

#[test]
fn a_key_id_swapped_for_another_configured_key_fails_authentication() {
    let c = codec(&[KEY_A, KEY_B]);
    let mut sealed = c.encode(&record()).expect("encode");
    let b_id = EncryptionKey::from_bytes(&KEY_B).id;
    sealed[ENCRYPTED_MAGIC.len() + 1..HEADER_LEN].copy_from_slice(&b_id);
    match c.decode(&sealed) {
        Err(CodecError::Decrypt(m)) => assert!(m.contains("authentication failed"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plaintext_is_refused_unless_the_migration_window_is_open() {
    let plain = BincodeCodec::default().encode(&record()).expect("plain");
    let json = JsonCodec::default().encode(&record()).expect("json");
    let c = codec(&[KEY_A]);
    assert_eq!(c.decode(&plain), Err(CodecError::Plaintext));
    assert_eq!(c.decode(&json), Err(CodecError::Plaintext));
    assert_eq!(c.decode(b"garbage"), Err(CodecError::Plaintext));
    let migrating = c.clone().accept_plaintext(true);
    assert_eq!(migrating.decode(&plain).expect("plain accepted"), record());
    assert_eq!(migrating.decode(&json).expect("json accepted"), record());
    assert!(matches!(
        migrating.decode(b"garbage"),
        Err(CodecError::Foreign)
    ));
    // The migration codec still writes sealed records.
    assert!(
        migrating
            .encode(&record())
            .expect("enc")
            .starts_with(&ENCRYPTED_MAGIC)
    );
}

#[test]
fn plain_codecs_say_a_sealed_record_needs_keys() {
    let sealed = codec(&[KEY_A]).encode(&record()).expect("sealed");
    assert_eq!(
        BincodeCodec::default().decode(&sealed),
        Err(CodecError::Encrypted)
    );
    assert_eq!(
        JsonCodec::default().decode(&sealed),
        Err(CodecError::Encrypted)
    );
}

#[test]
fn a_sealed_record_inside_a_sealed_record_is_refused() {
    let c = codec(&[KEY_A]);
    let inner = c.encode(&record()).expect("inner");
    let key = &c.keys[0];
    let mut out = ENCRYPTED_MAGIC.to_vec();
    out.push(ENCRYPTED_FORMAT_VERSION);
    out.extend_from_slice(&key.id);
    let nonce = [3u8; NONCE_LEN];
    let sealed = key
        .cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &inner,
                aad: &out,
            },
        )
        .expect("seal");
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    assert_eq!(c.decode(&out), Err(CodecError::Encrypted));
}

#[test]
fn the_size_limit_counts_the_sealed_bytes() {
    let s = SessionSettings {
        max_encoded_size: 300,
        encryption: crate::config::EncryptionSettings {
            keys: vec![b64(&KEY_A)],
            accept_plaintext: false,
        },
        ..SessionSettings::default()
    };
    let c = s.try_codec().expect("codec");
    assert_eq!(c.name(), "encrypted");
    let mut r = record();
    r.data.insert("blob".into(), json!("x".repeat(150)));
    let sealed = c.encode(&r).expect("fits");
    assert!(sealed.len() <= 300);
    r.data.insert("blob".into(), json!("x".repeat(400)));
    match c.encode(&r) {
        Err(CodecError::TooLarge { size, limit }) => {
            assert_eq!(limit, 300);
            assert!(size > 300);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.decode(&vec![0xE5; 301]),
        Err(CodecError::TooLarge {
            size: 301,
            limit: 300
        })
    ));
}

#[test]
fn keys_come_from_toml_and_errors_name_the_key_without_showing_it() {
    let cfg = Config::from_toml(&format!(
        "[encryption]\nkeys = [\"{}\", \"{}\"]\n",
        b64(&KEY_B),
        b64(&KEY_A)
    ));
    let s = cfg.settings().expect("settings");
    let c = s.codec();
    assert_eq!(c.name(), "encrypted");
    assert!(
        !format!("{s:?}").contains(&b64(&KEY_A)),
        "Debug shows a key"
    );
    assert!(
        !format!("{c:?}").contains(&b64(&KEY_A)),
        "Debug shows a key"
    );
    // Old records (key A) are read; new ones are sealed with key B.
    let by_a = codec(&[KEY_A]).encode(&record()).expect("a");
    assert_eq!(c.decode(&by_a).expect("read"), record());
    assert_eq!(
        codec(&[KEY_B])
            .decode(&c.encode(&record()).expect("enc"))
            .expect("b"),
        record()
    );

    let secret_looking = "bm90IGEga2V5IGF0IGFsbA";
    let cases = [
        (
            format!("[\"{}\", \"%%%not base64%%%\"]", b64(&KEY_A)),
            "encryption.keys[1]",
            "base64",
        ),
        (
            format!("[\"{secret_looking}\"]"),
            "encryption.keys[0]",
            "exactly 32 bytes",
        ),
        (
            format!("[\"{}\", \"{}\"]", b64(&KEY_A), b64(&KEY_A)),
            "encryption.keys[1]",
            "repeats",
        ),
    ];
    for (keys, want_key, want_msg) in cases {
        let err = Config::from_toml(&format!("[encryption]\nkeys = {keys}\n"))
            .settings()
            .expect_err("bad key");
        match &err {
            Error::Config {
                key: Some(k),
                message,
            } => {
                assert_eq!(k, want_key);
                assert!(message.contains(want_msg), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            !text.contains(secret_looking) && !text.contains("%%%"),
            "{text}"
        );
    }
    let err = Config::from_toml("[encryption]\nkey = []\n")
        .settings()
        .expect_err("typo");
    assert!(err.to_string().contains("key"), "{err}");
    let err = Config::from_toml(&format!(
        "max_encoded_size = 40\n[encryption]\nkeys = [\"{}\"]\n",
        b64(&KEY_A)
    ))
    .settings()
    .expect_err("too small");
    assert!(err.to_string().contains("max_encoded_size"), "{err}");
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
fn keys_come_from_the_environment_as_a_comma_separated_list() {
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "SESSION_ENCRYPTION__KEYS",
            format!("{},{}", b64(&KEY_B), b64(&KEY_A)),
        );
        jail.set_env("SESSION_HASH_KEYS", "true");
        let s = Config::load(None)
            .expect("load")
            .settings()
            .expect("settings");
        assert_eq!(s.encryption.keys, vec![b64(&KEY_B), b64(&KEY_A)]);
        assert!(s.hash_keys);
        let by_a = codec(&[KEY_A]).encode(&record()).expect("a");
        assert_eq!(s.codec().decode(&by_a).expect("read"), record());
        Ok(())
    });
}

#[test]
fn invalid_settings_never_fall_back_to_plaintext() {
    let s = SessionSettings {
        encryption: crate::config::EncryptionSettings {
            keys: vec!["short".into()],
            accept_plaintext: true,
        },
        ..SessionSettings::default()
    };
    assert!(s.validate().is_err());
    let c = s.codec();
    assert!(matches!(c.encode(&record()), Err(CodecError::Encode(_))));
    let plain = BincodeCodec::default().encode(&record()).expect("plain");
    assert!(matches!(c.decode(&plain), Err(CodecError::Decrypt(_))));
}

#[test]
fn generated_keys_parse_back() {
    let (k, text) = EncryptionKey::generate().expect("rng");
    let back = EncryptionKey::from_base64(&text).expect("parse");
    assert_eq!(k.id_hex(), back.id_hex());
    assert!(!format!("{k:?}").contains(&text));
    assert!(EncryptionKey::from_base64(&URL_SAFE_NO_PAD.encode(KEY_A)).is_ok());
}
