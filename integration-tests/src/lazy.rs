//! A check that a lazily loaded record reads exactly as the whole load of it: what the
//! conformance case `load_lazy_reads_what_load_reads` asks of every store, offered to a
//! store's own tests (a cache tier's hits, a first level's) as well.

use session_core::{LazyRecord, Record};

/// `Ok` when `lazy` holds exactly `whole`: the same header (version, deadlines, expiry
/// policy, meta), every key's value by a lazy lookup, none for each of `absent` (keys
/// `whole` does not hold), and a full decode equal to `whole`. The error says what
/// differs.
pub fn lazy_reads_as(lazy: &LazyRecord, whole: &Record, absent: &[&str]) -> Result<(), String> {
    let header = (
        lazy.version,
        lazy.expires_at,
        lazy.created_at,
        lazy.expiry,
        &lazy.meta,
    );
    let wanted = (
        whole.version,
        whole.expires_at,
        whole.created_at,
        whole.expiry,
        &whole.meta,
    );
    if header != wanted {
        return Err(format!(
            "load_lazy's header {lazy:?} differs from load's {whole:?}"
        ));
    }
    for (key, value) in &whole.data {
        let got = lazy
            .data
            .get(key)
            .map_err(|e| format!("a lazy lookup of {key}: {e}"))?;
        if got.as_ref() != Some(value) {
            return Err(format!("{key}: lazily {got:?}, wanted {value:?}"));
        }
    }
    for key in absent {
        let got = lazy
            .data
            .get(key)
            .map_err(|e| format!("a lazy lookup of {key:?}: {e}"))?;
        if got.is_some() {
            return Err(format!("{key:?} is absent, lazily {got:?}"));
        }
    }
    let decoded = lazy
        .clone()
        .decode()
        .map_err(|e| format!("a lazy record's full decode: {e}"))?;
    if &decoded != whole {
        return Err(format!("decoded {decoded:?}, wanted {whole:?}"));
    }
    Ok(())
}
