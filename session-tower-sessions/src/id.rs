//! tower-sessions' session ids as our session keys, one to one.
//!
//! A tower-sessions [`Id`] is an `i128`: 128 random bits. A [`SessionKey`] is
//! [`KEY_LEN`] (32) characters of [`KEY_ALPHABET`] (36 symbols), ~165 bits. The mapping
//! reads the id's bits as a `u128` (a bijection of `i128` onto `u128`) and writes that
//! number in base 36, most significant digit first, zero-padded to 32 digits, the digit
//! `d` being the character `KEY_ALPHABET[d]` (`a` is 0, `z` is 25, `0` is 26, `9` is 35).
//!
//! Fixed-width positional notation is a bijection between `[0, 36^32)` and all 32-character
//! strings over the alphabet; since `2^128 < 36^25 < 36^32`, every id has exactly one key,
//! distinct ids have distinct keys, and [`id_for_key`] inverts it on the image (the keys
//! whose value is below `2^128`, which begin with seven `a`s). No bit of the id is lost
//! and no two ids share a key, so the store sees exactly the entropy tower-sessions minted
//! (128 bits; our own middleware's keys carry ~165).
//!
//! Keys minted by our own middleware are uniform over all 36^32 strings, so one of them
//! falls into this image with probability `2^128 / 36^32 ≈ 2^-37`; even then the two
//! cannot overwrite each other, because creation is an insert-if-absent in either front door.

use session_core::{KeyError, SessionKey, key::KEY_ALPHABET, key::KEY_LEN};
use tower_sessions_core::session::Id;

const BASE: u128 = KEY_ALPHABET.len() as u128;

/// The session key that stores the session `id`.
pub fn key_for_id(id: Id) -> Result<SessionKey, KeyError> {
    // `as` between integers of one width reinterprets the bits: a bijection.
    let mut n = id.0 as u128;
    let mut digits = [KEY_ALPHABET[0]; KEY_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = KEY_ALPHABET[(n % BASE) as usize];
        n /= BASE;
        if n == 0 {
            break;
        }
    }
    // Every byte is from KEY_ALPHABET, so this is valid ASCII and a valid key.
    let text = std::str::from_utf8(&digits).map_err(|_| KeyError::Character(0))?;
    SessionKey::parse(text)
}

/// The session id whose key is `key`, or `None` when `key` is not one that
/// [`key_for_id`] makes (a key minted by another front door).
pub fn id_for_key(key: &SessionKey) -> Option<Id> {
    let mut n: u128 = 0;
    for b in key.as_str().bytes() {
        let digit = KEY_ALPHABET.iter().position(|&a| a == b)? as u128;
        n = n.checked_mul(BASE)?.checked_add(digit)?;
    }
    Some(Id(n as i128))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn round_trips_at_the_edges() {
        for v in [
            0,
            1,
            -1,
            35,
            36,
            i128::MIN,
            i128::MAX,
            i128::MIN + 1,
            i128::MAX - 1,
        ] {
            let key = key_for_id(Id(v)).expect("key");
            assert_eq!(key.as_str().len(), KEY_LEN);
            assert_eq!(id_for_key(&key), Some(Id(v)), "{v}");
        }
        assert_eq!(
            key_for_id(Id(0)).expect("key").as_str(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        );
        assert_eq!(
            key_for_id(Id(37)).expect("key").as_str(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaabb"
        );
        // u128::MAX = 2^128 - 1 needs 25 base-36 digits: seven padding digits remain.
        let max = key_for_id(Id(-1)).expect("key");
        assert!(max.as_str().starts_with("aaaaaaa"));
        assert!(!max.as_str().starts_with("aaaaaaaa"));
    }

    #[test]
    fn random_ids_round_trip_and_never_share_a_key() {
        let mut keys = HashSet::new();
        for _ in 0..20_000 {
            let id = Id::default();
            let key = key_for_id(id).expect("key");
            assert_eq!(id_for_key(&key), Some(id));
            assert!(keys.insert(key));
        }
        // Neighbouring ids (differing in the lowest bit only) get distinct keys too.
        for v in 0..2_000i128 {
            assert!(keys.insert(key_for_id(Id(i128::MIN + v)).expect("key")));
        }
    }

    #[test]
    fn keys_outside_the_image_have_no_id() {
        // 2^128 itself: the first value past u128::MAX.
        let mut past = key_for_id(Id(-1)).expect("key").as_str().to_owned();
        // Increment the base-36 number by one.
        let mut bytes = past.clone().into_bytes();
        for b in bytes.iter_mut().rev() {
            let d = KEY_ALPHABET.iter().position(|a| a == b).expect("digit");
            if d + 1 < KEY_ALPHABET.len() {
                *b = KEY_ALPHABET[d + 1];
                break;
            }
            *b = KEY_ALPHABET[0];
        }
        past = String::from_utf8(bytes).expect("ascii");
        let past = SessionKey::parse(&past).expect("a valid key");
        assert_eq!(id_for_key(&past), None);
        let native = SessionKey::parse("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz").expect("key");
        assert_eq!(id_for_key(&native), None);
    }
}
