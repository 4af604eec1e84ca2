use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::expiry::Expiry;
use crate::lazy::{KeyIndex, LazyData};
use crate::record::{Record, SessionData};
use crate::time::Timestamp;

fn codecs() -> Vec<Box<dyn Codec>> {
    vec![
        Box::new(BincodeCodec::default()),
        Box::new(JsonCodec::default()),
    ]
}

fn sample() -> Record {
    let mut data = SessionData::new();
    data.insert("null".into(), Value::Null);
    data.insert("t".into(), json!(true));
    data.insert("f".into(), json!(false));
    data.insert("neg".into(), json!(-42));
    data.insert("min".into(), json!(i64::MIN));
    data.insert("max".into(), json!(u64::MAX));
    data.insert("float".into(), json!(3.25));
    data.insert("tiny".into(), json!(1e-300));
    data.insert("str".into(), json!("Zoë ☃ 𝄞 \u{0} \"quoted\""));
    data.insert("arr".into(), json!([1, "two", [3], {"four": 4}]));
    data.insert("obj".into(), json!({"nested": {"deep": [null, 1.5]}}));
    data.insert("ключ".into(), json!("значение"));
    data.insert(String::new(), json!("empty key"));
    Record {
        data,
        expiry: Expiry::Idle(300),
        created_at: Timestamp::from_unix_millis(1_700_000_000_000),
        expires_at: Timestamp::from_unix_millis(1_700_000_300_000),
        version: 7,
        meta: Default::default(),
    }
}

#[test]
fn every_value_kind_round_trips_in_both_codecs() {
    for c in codecs() {
        let r = sample();
        let bytes = c.encode(&r).expect("encode");
        assert_eq!(c.decode(&bytes).expect("decode"), r, "{}", c.name());
    }
}

#[test]
fn every_expiry_kind_round_trips() {
    for c in codecs() {
        for e in [
            Expiry::Default,
            Expiry::BrowserClose,
            Expiry::Idle(-5),
            Expiry::At(Timestamp::from_unix_millis(-1)),
        ] {
            let r = Record {
                expiry: e,
                ..sample()
            };
            assert_eq!(c.decode(&c.encode(&r).expect("enc")).expect("dec"), r);
        }
    }
}

#[test]
fn each_codec_reads_the_other_format() {
    let r = sample();
    let b = BincodeCodec::default().encode(&r).expect("bin");
    let j = JsonCodec::default().encode(&r).expect("json");
    assert_eq!(JsonCodec::default().decode(&b).expect("json reads bin"), r);
    assert_eq!(
        BincodeCodec::default().decode(&j).expect("bin reads json"),
        r
    );
}

#[test]
fn json_is_readable() {
    let mut data = SessionData::new();
    data.insert("user_id".into(), json!(101));
    let text = String::from_utf8(
        JsonCodec::default()
            .encode(&Record::with_ttl(data, 10))
            .expect("enc"),
    )
    .expect("utf8");
    assert!(text.starts_with("{\"data\":{\"user_id\":101}"), "{text}");
    assert!(text.contains("\"format\":1"));
}

#[test]
fn truncated_input_is_a_typed_error() {
    for c in codecs() {
        let bytes = c.encode(&sample()).expect("enc");
        for cut in [0, 1, 2, 3, 4, 5, bytes.len() / 2, bytes.len() - 1] {
            match c.decode(&bytes[..cut]) {
                Err(CodecError::Truncated(_)) => {}
                other => panic!("{} cut at {cut}: {other:?}", c.name()),
            }
        }
    }
}

#[test]
fn every_prefix_and_every_single_byte_flip_is_handled_without_panic() {
    let original = sample();
    for c in codecs() {
        let bytes = c.encode(&original).expect("enc");
        // A strict prefix is a truncated record: an error, or (were the cut bytes
        // redundant) exactly the original record, never some other record.
        for cut in 0..bytes.len() {
            match c.decode(&bytes[..cut]) {
                Err(_) => {}
                Ok(r) => assert_eq!(
                    r,
                    original,
                    "{} decoded the {cut}-byte prefix of a {}-byte record into another record",
                    c.name(),
                    bytes.len()
                ),
            }
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = c.decode(&b);
            }
        }
    }
}

/// A record whose strings cross the decoder's UTF-8 runs in every way: lengths on both
/// sides of a one-byte length (128) and of a run (4,096 bytes), multi-byte characters
/// across a run's end, floats and negative numbers (bytes that end a run) between
/// strings, maps small enough to fill in place and large enough to build in bulk.
fn wide_and_varied() -> Record {
    let mut r = sample();
    for (i, len) in [0usize, 1, 127, 128, 250, 251, 300, 4095, 4096, 4097, 9000]
        .into_iter()
        .enumerate()
    {
        let text: String = "aé☃𝄞".chars().cycle().take(len).collect();
        r.data.insert(format!("s{i:02}"), json!(text));
        r.data.insert(format!("s{i:02}f"), json!(-(i as f64) - 0.5));
    }
    r.data.insert(
        "nested".into(),
        json!({"a": ["é".repeat(200), -7, 2.5, {"b": "☃".repeat(1500)}], "c": [true, null]}),
    );
    r
}

#[test]
fn the_data_decoder_reads_every_string_and_agrees_with_the_checking_walk() {
    let c = BincodeCodec::default();
    let original = wide_and_varied();
    let bytes = c.encode(&original).expect("enc");
    assert_eq!(c.decode(&bytes).expect("decode"), original);
    let lazy = c.decode_lazy(bytes.clone().into()).expect("lazy");
    for (k, v) in &original.data {
        assert_eq!(lazy.data.get(k).expect("get").as_ref(), Some(v), "{k}");
    }
    assert_eq!(lazy.data.decode().expect("lazy decode"), original.data);
    // Damaged anywhere, the whole decode fails exactly when the walk that checks the
    // data (`LazyData::check`) fails, and never decodes into another record.
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            let whole = c.decode(&b);
            let Ok(lazy) = c.decode_lazy(b.into()) else {
                assert!(whole.is_err(), "byte {i} ^ {flip:#x}: header");
                continue;
            };
            let checked = lazy.data.check();
            let data = lazy.data.decode();
            assert_eq!(
                checked.is_ok(),
                data.is_ok(),
                "byte {i} ^ {flip:#x}: {checked:?}"
            );
            assert_eq!(whole.is_ok(), data.is_ok(), "byte {i} ^ {flip:#x}");
        }
    }
}

#[test]
fn foreign_input_is_recognised() {
    let django = b"eyJ1c2VyX2lkIjoxMDF9:1r31eq:_h3jaZ971_4kGhQPNtIugVb-pQC9VhmGBadPptk5vEo";
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    for c in codecs() {
        assert_eq!(c.decode(django), Err(CodecError::Foreign));
        assert_eq!(c.decode(png), Err(CodecError::Foreign));
        // JSON, but not one of our records.
        assert_eq!(c.decode(br#"{"user_id":101}"#), Err(CodecError::Foreign));
        assert_eq!(c.decode(b"\xB1XY\x01abc"), Err(CodecError::Foreign));
    }
}

#[test]
fn future_formats_are_reported() {
    let mut b = BincodeCodec::default().encode(&sample()).expect("enc");
    b[3] = 9;
    assert_eq!(
        BincodeCodec::default().decode(&b),
        Err(CodecError::UnsupportedVersion(9))
    );
    let j = String::from_utf8(JsonCodec::default().encode(&sample()).expect("enc"))
        .expect("utf8")
        .replace("\"format\":1", "\"format\":3");
    assert_eq!(
        JsonCodec::default().decode(j.as_bytes()),
        Err(CodecError::UnsupportedVersion(3))
    );
}

#[test]
fn corrupt_input_is_a_typed_error() {
    let mut b = BincodeCodec::default().encode(&sample()).expect("enc");
    b.push(0);
    assert!(matches!(
        BincodeCodec::default().decode(&b),
        Err(CodecError::Corrupt(_))
    ));
    assert!(matches!(
        JsonCodec::default().decode(br#"{"data":{},"expires_at":"x","expiry":"default","created_at":0,"version":1,"format":1}"#),
        Err(CodecError::Corrupt(_))
    ));
    // An unknown value tag.
    let r = Record {
        data: SessionData::new(),
        ..sample()
    };
    let mut b = BincodeCodec::default().encode(&r).expect("enc");
    let last = b.len() - 1; // map length 0 -> claim one entry with a bad tag
    b[last] = 1;
    b.extend_from_slice(&[1, b'k', 99]);
    assert!(matches!(
        BincodeCodec::default().decode(&b),
        Err(CodecError::Corrupt(_))
    ));
}

#[test]
fn hostile_length_prefixes_do_not_allocate_or_panic() {
    let r = Record {
        data: SessionData::new(),
        ..sample()
    };
    let mut b = BincodeCodec::default().encode(&r).expect("enc");
    b.pop(); // drop map length 0
    // varint u64 marker (253) then u64::MAX: "a map of 2^64-1 entries".
    b.push(253);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(BincodeCodec::default().decode(&b).is_err());
    // A string claiming 2^40 bytes.
    let mut b = BincodeCodec::default().encode(&r).expect("enc");
    b.pop();
    b.push(1);
    b.push(253);
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(BincodeCodec::default().decode(&b).is_err());
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let mut v = json!(1);
    for _ in 0..(MAX_DEPTH + 10) {
        v = json!([v]);
    }
    let mut data = SessionData::new();
    data.insert("deep".into(), v);
    let r = Record { data, ..sample() };
    assert!(matches!(
        BincodeCodec::default().encode(&r),
        Err(CodecError::Encode(_))
    ));
    // Hand-made deep binary input: tag 6 (array) of length 1, repeated.
    let base = Record {
        data: SessionData::new(),
        ..sample()
    };
    let mut b = BincodeCodec::default().encode(&base).expect("enc");
    b.pop();
    b.push(1);
    b.extend_from_slice(&[1, b'k']);
    for _ in 0..100_000 {
        b.extend_from_slice(&[6, 1]);
    }
    b.push(0);
    assert!(matches!(
        BincodeCodec::default().decode(&b),
        Err(CodecError::Corrupt(_))
    ));
    let deep_json = format!(
        "{{\"data\":{{\"k\":{}1{}}},\"expires_at\":0,\"expiry\":\"default\",\"created_at\":0,\"version\":1,\"format\":1}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(
        JsonCodec::new(10 << 20)
            .decode(deep_json.as_bytes())
            .is_err()
    );
}

#[test]
fn oversized_records_are_refused_both_ways() {
    let mut data = SessionData::new();
    data.insert("big".into(), json!("x".repeat(2000)));
    let r = Record { data, ..sample() };
    for c in [
        Box::new(BincodeCodec::new(1000)) as Box<dyn Codec>,
        Box::new(JsonCodec::new(1000)),
    ] {
        assert!(matches!(
            c.encode(&r),
            Err(CodecError::TooLarge { limit: 1000, .. })
        ));
    }
    let big = JsonCodec::default().encode(&r).expect("enc");
    assert!(matches!(
        JsonCodec::new(1000).decode(&big),
        Err(CodecError::TooLarge { limit: 1000, .. })
    ));
}

#[test]
fn a_one_mebibyte_value_round_trips() {
    let mut data = SessionData::new();
    data.insert("blob".into(), json!("é".repeat(512 * 1024)));
    let r = Record { data, ..sample() };
    for c in codecs() {
        assert_eq!(c.decode(&c.encode(&r).expect("enc")).expect("dec"), r);
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn proptest_round_trip(
        entries in prop::collection::btree_map(".*", arb_value(), 0..16),
        version in any::<u64>(),
        created in any::<i64>(),
        expires in any::<i64>(),
        idle in any::<i64>(),
    ) {
        let r = Record {
            data: entries.into_iter().collect(),
            expiry: Expiry::Idle(idle),
            created_at: Timestamp::from_unix_millis(created),
            expires_at: Timestamp::from_unix_millis(expires),
            version,
            meta: Default::default(),
        };
        for c in codecs() {
            let bytes = c.encode(&r).expect("encode");
            prop_assert_eq!(c.decode(&bytes).expect("decode"), r.clone());
        }
    }

    #[test]
    fn proptest_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for c in codecs() {
            let _ = c.decode(&bytes);
            let mut with_magic = BINARY_MAGIC.to_vec();
            with_magic.push(BINARY_FORMAT_VERSION);
            with_magic.extend_from_slice(&bytes);
            let _ = c.decode(&with_magic);
        }
    }
}

fn with_meta() -> Record {
    Record {
        meta: crate::record::SessionMeta {
            principal: Some("alice@example.com".into()),
            auth_hash: Some("pbkdf2$abc".into()),
            last_seen: Some(Timestamp::from_unix_millis(1_700_000_100_000)),
            user_agent: Some("Mozilla/5.0 ☃".into()),
            client_addr: Some("::1".into()),
        },
        ..sample()
    }
}

#[test]
fn meta_round_trips_in_format_2_and_empty_meta_stays_format_1() {
    for c in codecs() {
        let r = with_meta();
        let bytes = c.encode(&r).expect("encode");
        for d in codecs() {
            assert_eq!(
                d.decode(&bytes).expect("decode"),
                r,
                "{} -> {}",
                c.name(),
                d.name()
            );
        }
        let plain = c.encode(&sample()).expect("encode");
        if plain[0] == BINARY_MAGIC[0] {
            assert_eq!(plain[3], 1, "anonymous records keep binary format 1");
            assert_eq!(bytes[3], 2);
        } else {
            let v: serde_json::Value = serde_json::from_slice(&plain).expect("json");
            assert_eq!(v["format"], 1, "anonymous records keep JSON format 1");
            assert!(v.get("meta").is_none());
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(v["format"], 2);
            assert_eq!(v["meta"]["principal"], "alice@example.com");
        }
        // Cut anywhere inside the meta: a typed error, never a panic.
        for cut in (plain.len().saturating_sub(2)..bytes.len()).step_by(3) {
            let _ = c.decode(&bytes[..cut]);
        }
    }
}

#[test]
fn a_format_1_json_record_carrying_meta_is_corrupt() {
    let r = with_meta();
    let bytes = JsonCodec::default().encode(&r).expect("encode");
    let text = String::from_utf8(bytes)
        .expect("utf8")
        .replace("\"format\":2", "\"format\":1");
    let err = JsonCodec::default()
        .decode(text.as_bytes())
        .expect_err("refused");
    assert!(matches!(err, CodecError::Corrupt(_)), "{err}");
}

/// A bincode record of one-key data, written by hand: `entries` (key bytes, value tag
/// and payload bytes) after an empty map's header.
fn bincode_with_entries(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let r = Record {
        data: SessionData::new(),
        ..sample()
    };
    let mut b = BincodeCodec::default().encode(&r).expect("enc");
    let last = b.len() - 1; // the map's length, 0
    b[last] = entries.len() as u8;
    for (k, v) in entries {
        b.push(k.len() as u8);
        b.extend_from_slice(k);
        b.extend_from_slice(v);
    }
    b
}

#[test]
fn invalid_utf8_in_a_key_or_a_string_value_is_corrupt() {
    let bad_key = bincode_with_entries(&[(b"k\xff", &[0])]);
    let bad_value = bincode_with_entries(&[(b"k", &[5, 2, b'a', 0xc3])]);
    for b in [bad_key, bad_value] {
        match BincodeCodec::default().decode(&b) {
            Err(CodecError::Corrupt(msg)) => assert!(msg.to_lowercase().contains("utf-8"), "{msg}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    // The same bytes, valid, decode.
    let good = bincode_with_entries(&[(b"k", &[5, 2, b'a', b'b'])]);
    let r = BincodeCodec::default().decode(&good).expect("valid");
    assert_eq!(r.data.get("k"), Some(&json!("ab")));
}

#[test]
fn keys_out_of_order_or_repeated_decode_as_inserted_one_by_one() {
    // Not written by this codec (it writes a map's keys once, in order), but readable:
    // the last value of a repeated key wins, and the order of the input does not matter.
    let b = bincode_with_entries(&[(b"b", &[2, 2]), (b"a", &[2, 4]), (b"b", &[2, 6])]);
    let r = BincodeCodec::default().decode(&b).expect("decode");
    assert_eq!(Value::Object(r.data), json!({"a": 2, "b": 3}));
}

/// Every key of `r` (and keys it lacks) looked up in `bytes` decoded lazily by `c`
/// answers what the whole decode answers.
fn assert_lazy_matches(c: &dyn Codec, bytes: &[u8], r: &Record, probes: &[&str]) {
    let lazy = c.decode_lazy(bytes.to_vec().into()).expect("lazy decode");
    assert_eq!(
        (lazy.version, lazy.created_at, lazy.expires_at, lazy.expiry),
        (r.version, r.created_at, r.expires_at, r.expiry)
    );
    assert_eq!(lazy.meta, r.meta);
    for k in r
        .data
        .keys()
        .map(String::as_str)
        .chain(probes.iter().copied())
    {
        assert_eq!(
            lazy.data.get(k).expect("get"),
            r.data.get(k).cloned(),
            "{k:?}"
        );
        assert_eq!(
            lazy.data.contains_key(k).expect("contains"),
            r.data.contains_key(k)
        );
    }
    assert_eq!(&lazy.clone().decode().expect("decode"), r);
}

/// `data` in an anonymous record (format 1) and in a signed-in one (format 2).
fn wide_records(data: SessionData) -> [Record; 2] {
    [
        Record {
            data: data.clone(),
            ..sample()
        },
        Record {
            data,
            ..with_meta()
        },
    ]
}

#[test]
fn lazy_decodes_answer_as_the_whole_decode_in_every_format() {
    let mut wide = SessionData::new();
    for i in 0..1_000 {
        wide.insert(format!("k{i}"), json!({"n": i, "s": format!("value-{i}")}));
    }
    let records = [
        sample(),
        with_meta(),
        Record {
            data: SessionData::new(),
            ..with_meta()
        },
    ];
    let records: Vec<Record> = records.into_iter().chain(wide_records(wide)).collect();
    let probes = ["", "a", "k", "k5", "k9999", "zzz", "é"];
    for r in &records {
        for c in codecs() {
            let bytes = c.encode(r).expect("encode");
            assert_lazy_matches(c.as_ref(), &bytes, r, &probes);
            for d in codecs() {
                assert_lazy_matches(d.as_ref(), &bytes, r, &probes);
            }
            // Only the compact format stays encoded.
            let lazy = c.decode_lazy(bytes.into()).expect("lazy");
            assert_eq!(lazy.data.is_decoded(), c.name() == "json", "{}", c.name());
        }
    }
}

#[test]
fn lazy_decodes_of_damaged_bytes_fail_where_the_whole_decode_does() {
    let r = Record {
        data: (0..40)
            .map(|i| (format!("k{i:02}"), json!([i, "x", {"y": null}])))
            .collect(),
        ..with_meta()
    };
    let anon = Record {
        meta: Default::default(),
        ..r.clone()
    };
    let c = BincodeCodec::default();
    for rec in [&r, &anon] {
        let good = c.encode(rec).expect("encode");
        let mut variants: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for i in 0..good.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut b = good.clone();
                b[i] ^= flip;
                variants.push(b);
            }
        }
        for b in variants {
            let whole = c.decode(&b);
            let lazy = c.decode_lazy(b.clone().into());
            match (whole, lazy) {
                (Ok(w), Ok(l)) => {
                    l.data
                        .check()
                        .expect("check of a record the whole decode reads");
                    // A flip inside a key can leave a readable record whose keys are out
                    // of order, where lookups trust the order (see `crate::lazy`); they
                    // still never fail where the whole decode reads, and a full read
                    // is exactly the whole decode.
                    for k in w.data.keys() {
                        l.data.get(k).expect("get");
                    }
                    assert_eq!(l.decode().expect("decode"), w);
                }
                (Ok(w), Err(e)) => panic!("lazy refused what the whole decode read: {e} {w:?}"),
                // Damage the header check missed is found by a full read of the data.
                (Err(_), Ok(l)) => {
                    assert!(l.data.check().is_err(), "check passed damaged data");
                    let _ = l.data.get("k20");
                    assert!(l.decode().is_err());
                }
                (Err(_), Err(_)) => {}
            }
        }
    }
}

#[test]
fn lazy_lookups_past_a_damaged_value_fail_and_before_it_answer() {
    // "a" is sound, "b" holds invalid UTF-8: the lookup of "a" stops before "b".
    let b = bincode_with_entries(&[(b"a", &[5, 2, b'o', b'k']), (b"b", &[5, 2, b'a', 0xc3])]);
    let lazy = BincodeCodec::default()
        .decode_lazy(b.clone().into())
        .expect("header");
    assert_eq!(lazy.data.get("a").expect("a"), Some(json!("ok")));
    assert!(matches!(lazy.data.get("b"), Err(CodecError::Corrupt(_))));
    assert!(BincodeCodec::default().decode(&b).is_err());
    // The check finds it without a lookup reaching it.
    assert!(matches!(lazy.data.check(), Err(CodecError::Corrupt(_))));
    assert!(lazy.decode().is_err());
    // A hostile element count ends at the end of the input, a typed error.
    let hostile =
        bincode_with_entries(&[(b"a", &[6, 253, 255, 255, 255, 255, 255, 255, 255, 127])]);
    let lazy = BincodeCodec::default()
        .decode_lazy(hostile.into())
        .expect("header");
    assert!(matches!(lazy.data.get("b"), Err(CodecError::Truncated(_))));
}

#[test]
fn the_data_check_fails_exactly_where_the_whole_decode_does() {
    // Each value damaged in a way only a decode notices: a boolean byte, a float that
    // is not finite, UTF-8 in a nested string and in a key, an unknown tag.
    let cases: [&[(&[u8], &[u8])]; 5] = [
        &[(b"a", &[1, 2])],
        &[(b"a", &[4, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f])],
        &[(b"a", &[6, 1, 5, 1, 0xff])],
        &[(b"\xff", &[0])],
        &[(b"a", &[9])],
    ];
    let c = BincodeCodec::default();
    for entries in cases {
        let b = bincode_with_entries(entries);
        assert!(c.decode(&b).is_err(), "{entries:?}");
        let lazy = c.decode_lazy(b.into()).expect("header");
        assert!(lazy.data.check().is_err(), "{entries:?}");
    }
    let sound =
        bincode_with_entries(&[(b"a", &[1, 1]), (b"b", &[4, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f])]);
    let lazy = c.decode_lazy(sound.into()).expect("header");
    lazy.data.check().expect("sound data");
    // Decoded data has nothing to check.
    LazyData::decoded(Default::default())
        .check()
        .expect("decoded");
}

#[test]
fn lazy_lookups_of_a_repeated_key_answer_as_the_whole_decode() {
    let repeated: [&[(&[u8], &[u8])]; 2] = [
        &[(b"b", &[2, 2]), (b"a", &[2, 4]), (b"b", &[2, 6])],
        &[(b"a", &[2, 4]), (b"b", &[2, 2]), (b"b", &[2, 6])],
    ];
    for entries in repeated {
        let b = bincode_with_entries(entries);
        let whole = BincodeCodec::default().decode(&b).expect("decode");
        let lazy = BincodeCodec::default().decode_lazy(b.into()).expect("lazy");
        // A repeated key is seen by the lookup that reaches it, and the whole decode
        // answers (the last value wins).
        assert_eq!(
            lazy.data.get("b").expect("get"),
            whole.data.get("b").cloned()
        );
        assert_eq!(lazy.data.get("b").expect("get"), Some(json!(3)));
    }
}

#[test]
fn indexed_lookups_answer_as_the_whole_decode() {
    let mut wide = SessionData::new();
    for i in 0..500 {
        wide.insert(format!("k{i}"), json!([i, format!("v{i}")]));
    }
    let probes = ["", "a", "k", "k5", "k50x", "k9999", "zzz"];
    for r in wide_records(wide) {
        let bytes = BincodeCodec::default().encode(&r).expect("encode");
        let index = KeyIndex::build(&bytes).expect("a wide record is indexed");
        assert_eq!(index.len(), 4 * r.data.len());
        let lazy = BincodeCodec::default()
            .decode_lazy(bytes.into())
            .expect("lazy");
        let indexed = lazy
            .data
            .clone()
            .with_index(KeyIndex::new(index.clone().into()));
        assert!(indexed.is_indexed());
        for k in r.data.keys().map(String::as_str).chain(probes) {
            assert_eq!(
                indexed.get(k).expect("get"),
                r.data.get(k).cloned(),
                "{k:?}"
            );
            assert_eq!(
                indexed.contains_key(k).expect("contains"),
                r.data.contains_key(k)
            );
        }
        assert_eq!(indexed.decode().expect("decode"), r.data);
        // An index of another length is not used.
        let short = lazy
            .data
            .clone()
            .with_index(KeyIndex::new(index[4..].to_vec().into()));
        assert!(!short.is_indexed());
        // An index pointing outside the map is an error, never a panic.
        let mut wild = index.clone();
        wild[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let wild = lazy.data.with_index(KeyIndex::new(wild.into()));
        for k in r.data.keys().take(20) {
            let _ = wild.get(k);
        }
    }
}

#[test]
fn only_compact_records_with_enough_ordered_keys_are_indexed() {
    let few = Record {
        data: (0..KeyIndex::MIN_KEYS - 1)
            .map(|i| (format!("k{i:03}"), json!(i)))
            .collect(),
        ..sample()
    };
    let enough = Record {
        data: (0..KeyIndex::MIN_KEYS)
            .map(|i| (format!("k{i:03}"), json!(i)))
            .collect(),
        ..sample()
    };
    let b = BincodeCodec::default();
    assert!(KeyIndex::build(&b.encode(&few).expect("enc")).is_none());
    assert!(KeyIndex::build(&b.encode(&enough).expect("enc")).is_some());
    assert!(KeyIndex::build(&JsonCodec::default().encode(&enough).expect("enc")).is_none());
    assert!(KeyIndex::build(b"garbage").is_none());
    // Keys out of order (not written by this codec): no index; lookups walk.
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = (0..KeyIndex::MIN_KEYS)
        .map(|i| (format!("k{i:03}").into_bytes(), vec![0]))
        .collect();
    entries.swap(3, 4);
    let refs: Vec<(&[u8], &[u8])> = entries
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    assert!(KeyIndex::build(&bincode_with_entries(&refs)).is_none());
}
