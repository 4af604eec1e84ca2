//! Configuration parsing on arbitrary TOML: the shared settings, an engine section, and
//! a nested engine configuration must give a value or a typed error, never a panic; an
//! accepted configuration must yield a codec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use session_core::Config;

/// Shaped like a backend's section (`[file]`): defaults and unknown fields refused.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(dead_code)] // the fields are only parsed
struct Section {
    path: Option<String>,
    fsync: bool,
    max_entries: Option<u64>,
    nodes: Vec<String>,
    timeout_ms: Option<u32>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = Config::from_toml(text);
    if let Ok(settings) = config.settings() {
        let codec = settings
            .try_codec()
            .expect("validated settings give a codec");
        let _ = codec.name();
    }
    let _ = config.section::<Section>("file");
    let nested = config.nested("cached_db.cache", "cache");
    let _ = nested.settings();
    let _ = nested.section::<Section>("redis");
});
