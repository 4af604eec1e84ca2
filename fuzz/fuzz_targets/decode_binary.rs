//! The binary (bincode) decoder on hostile bytes: the input follows a valid header, so the
//! fuzzer spends its time inside the record body (hostile length prefixes, bad tags,
//! deep nesting, truncation). A record that decodes must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_core::{BincodeCodec, Codec};

fuzz_target!(|data: &[u8]| {
    let codec = BincodeCodec::default();
    let mut bytes = Vec::with_capacity(data.len() + 4);
    bytes.extend_from_slice(&[0xB1, b'S', b'R', 1]);
    bytes.extend_from_slice(data);
    for input in [&bytes[..], data] {
        if let Ok(record) = codec.decode(input) {
            // Encoding may refuse (size, depth) but must not panic; what it writes reads back.
            if let Ok(again) = codec.encode(&record) {
                let back = codec.decode(&again).expect("a re-encoded record decodes");
                assert_eq!(back, record);
            }
        }
    }
});
