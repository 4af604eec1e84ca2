//! The JSON decoder on hostile bytes (the seeds are JSON records): malformed, truncated,
//! foreign or deeply nested JSON must be a typed error. A record that decodes must
//! round-trip through both codecs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_core::{BincodeCodec, Codec, JsonCodec};

fuzz_target!(|data: &[u8]| {
    let json = JsonCodec::default();
    if let Ok(record) = json.decode(data) {
        if let Ok(again) = json.encode(&record) {
            assert_eq!(
                json.decode(&again).expect("re-encoded JSON decodes"),
                record
            );
        }
        let bin = BincodeCodec::default();
        if let Ok(b) = bin.encode(&record) {
            assert_eq!(json.decode(&b).expect("JSON codec reads bincode"), record);
        }
    }
});
