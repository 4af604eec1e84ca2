//! Key parsing on arbitrary strings: only 32 characters of [a-z0-9] may pass, and a
//! parsed key's derived (hashed) key and Debug output behave.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_core::SessionKey;
use session_core::hashed::derive_key;

fn is_key_shaped(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match SessionKey::parse(s) {
        Ok(key) => {
            assert_eq!(key.as_str(), s);
            assert!(is_key_shaped(s));
            assert!(!format!("{key:?}").contains(s));
            let derived = derive_key(&key);
            assert!(SessionKey::parse(derived.as_str()).is_ok());
        }
        Err(_) => {
            assert!(!is_key_shaped(s));
        }
    }
});
