//! The fuzz targets' checks, replayed in the normal test suite on the committed seed
//! corpus (`fuzz/seeds/`) and on every input a fuzzer ever found to crash (listed in
//! `REGRESSIONS` below; empty so far: no fuzzing run has crashed). Keeps the seeds
//! honest (each must still be accepted or refused as before) without needing cargo-fuzz.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use session_core::codec::{EncryptedCodec, EncryptionKey};
use session_core::hashed::derive_key;
use session_core::{BincodeCodec, Codec, Config, JsonCodec, Record, SessionKey};

/// Inputs that once crashed a fuzz target: `(target, bytes)`. Add each new crash here
/// (with the fix) so it can never come back.
const REGRESSIONS: &[(&str, &[u8])] = &[];

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()))
        .flatten()
        .map(|e| {
            let p = e.path();
            let bytes = std::fs::read(&p).expect("read seed");
            (p, bytes)
        })
        .collect();
    out.extend(
        REGRESSIONS
            .iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, b)| (PathBuf::from("regression"), b.to_vec())),
    );
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

/// A record a codec decoded must encode again and decode to itself: an encoding
/// failure is a failure of the test, not a reason to skip the check.
fn round_trips(codec: &dyn Codec, record: &Record, seed: &Path) {
    let again = codec.encode(record).unwrap_or_else(|e| {
        panic!(
            "seed {}: the decoded record does not encode: {e}",
            seed.display()
        )
    });
    assert_eq!(
        &codec.decode(&again).unwrap_or_else(|e| panic!(
            "seed {}: the re-encoded record does not decode: {e}",
            seed.display()
        )),
        record
    );
}

#[test]
fn decode_binary_seeds() {
    let codec = BincodeCodec::default();
    let mut decoded = 0;
    for (path, data) in seeds("decode_binary") {
        let mut bytes = vec![0xB1, b'S', b'R', 1];
        bytes.extend_from_slice(&data);
        if let Ok(r) = codec.decode(&bytes) {
            round_trips(&codec, &r, &path);
            decoded += 1;
        } else {
            panic!("seed {} no longer decodes", path.display());
        }
        let _ = codec.decode(&data);
    }
    assert!(decoded >= 3);
}

#[test]
fn decode_json_seeds() {
    let json = JsonCodec::default();
    for (path, data) in seeds("decode_json") {
        match json.decode(&data) {
            Ok(r) => {
                round_trips(&json, &r, &path);
                let b = BincodeCodec::default().encode(&r).expect("bincode");
                assert_eq!(json.decode(&b).expect("json reads bincode"), r);
            }
            Err(e) => assert!(
                path.ends_with("foreign"),
                "seed {} refused: {e}",
                path.display()
            ),
        }
    }
}

#[test]
fn decode_encrypted_seeds() {
    let key = EncryptionKey::from_bytes(&[7; 32]);
    let codec = EncryptedCodec::new(Arc::new(BincodeCodec::default()), vec![key])
        .expect("codec")
        .accept_plaintext(true);
    for (path, data) in seeds("decode_encrypted") {
        codec
            .decode(&data)
            .unwrap_or_else(|e| panic!("seed {} refused: {e}", path.display()));
        let sealed = codec
            .encode(&Record::with_ttl(Default::default(), 60))
            .expect("seal");
        let mut forged = sealed[..12].to_vec();
        forged.extend_from_slice(&data);
        assert!(codec.decode(&forged).is_err());
    }
}

#[test]
fn session_key_seeds() {
    for (_, data) in seeds("session_key") {
        let Ok(s) = std::str::from_utf8(&data) else {
            continue;
        };
        let valid = s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        match SessionKey::parse(s) {
            Ok(k) => {
                assert!(valid);
                assert!(SessionKey::parse(derive_key(&k).as_str()).is_ok());
            }
            Err(_) => assert!(!valid),
        }
    }
}

#[test]
fn config_seeds() {
    for (path, data) in seeds("config") {
        let text = std::str::from_utf8(&data).expect("utf-8");
        let config = Config::from_toml(text);
        let settings = config
            .settings()
            .unwrap_or_else(|e| panic!("seed {} refused: {e}", path.display()));
        settings
            .try_codec()
            .expect("validated settings give a codec");
        let _ = config.nested("cached_db.cache", "cache").settings();
    }
}
