//! Bad input: malformed cookies never reach the store, and corrupt stored bytes are a
//! typed error at the store and a fresh session at the handle, with nothing overwritten.
//!
//! The cookie cases put a [`SpyStore`] in front of the store under test and count every
//! call. The corrupt-byte cases need [`session_core::SessionStore::raw`]; on a store
//! without it they are reported as not applicable.

use std::sync::Arc;

use serde_json::json;
use session_core::{
    BincodeCodec, Codec, Error, Expiry, JsonCodec, RawAccess, Record, Session, SessionKey,
    Timestamp,
};

use super::{Ctx as _, LIVE_SECS, case, data, ensure, key, must_load, sample, saved_session};
use crate::{Call, Case, CaseResult, Ctx, SpyStore, not_applicable};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(BadInput, malformed_cookies_are_rejected_before_any_io),
        case!(BadInput, malformed_cookie_reads_do_no_io),
        case!(BadInput, malformed_cookie_save_creates_only_a_new_key),
        case!(BadInput, malformed_cookie_flush_does_no_io),
        case!(BadInput, malformed_cookie_cycle_key_only_creates),
        case!(BadInput, malformed_cookie_helpers_and_expiry_do_no_io),
        case!(BadInput, malformed_cookie_update_closure_then_save),
        case!(BadInput, absent_cookie_does_no_io_until_save),
        case!(BadInput, near_miss_cookies_never_reach_a_stored_session),
        case!(BadInput, a_valid_cookie_loads_exactly_its_key),
        case!(BadInput, corrupt_garbage_bytes_are_a_codec_error),
        case!(BadInput, corrupt_truncated_records_are_a_codec_error),
        case!(BadInput, corrupt_foreign_bytes_are_a_codec_error),
        case!(BadInput, corrupt_empty_bytes_are_a_codec_error),
        case!(BadInput, corrupt_future_format_version_is_a_codec_error),
        case!(BadInput, corrupt_oversized_record_is_a_codec_error),
        case!(
            BadInput,
            corrupt_record_starts_a_new_session_and_stays_untouched
        ),
        case!(BadInput, corrupt_record_survives_cycle_key_and_reads),
        case!(BadInput, corrupt_record_can_be_flushed),
        case!(
            BadInput,
            a_value_damaged_inside_the_data_starts_a_new_session_when_read
        ),
        case!(BadInput, raw_bytes_of_a_stored_record_decode),
        case!(BadInput, raw_put_of_valid_bytes_loads),
    ]
}

/// `prefix` padded with `a` to exactly a key's length, so only the alphabet check rejects it.
fn pad(prefix: &str) -> String {
    let mut s = prefix.to_owned();
    while s.len() < session_core::key::KEY_LEN {
        s.push('a');
    }
    s
}

/// Cookie values that must never become a key: wrong length, wrong alphabet, or
/// characters that mean something to a filesystem, SQL, Redis or an HTTP header.
fn malformed_cookies() -> Vec<String> {
    let mut v: Vec<String> = vec![
        String::new(),
        "1".into(),
        "1234567".into(),
        "abcdefghijklmnopqrstuvwxyz01234".into(),
        "abcdefghijklmnopqrstuvwxyz0123456".into(),
        "a".repeat(4096),
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345".into(),
        "Abcdefghijklmnopqrstuvwxyz012345".into(),
        "../../etc/passwd".into(),
        "abcdefghijklmnopqrstuvwxyz0123\u{0}4".into(),
        "\u{0}".repeat(32),
        "abcdefghijklmnopqrstuvwxyz0123é".into(),
        "ключключключключ".into(),
        "' OR '1'='1' --".into(),
        "*".into(),
        "?".repeat(32),
        " abcdefghijklmnopqrstuvwxyz01234".into(),
        "abcdefghijklmnopqrstuvwxyz01234\n".into(),
    ];
    for p in [
        "../../../../../../../etc/passwd",
        "..\\..\\windows\\system32",
        "/tmp/x",
        "' OR 1=1; DROP TABLE s;--",
        "abc%27%20OR%201%3D1",
        "sess:*",
        "[a-z]*",
        "abc\\*",
        "abc\r\nSet-Cookie: x=y",
        "abc;path=/",
        "abc\"",
        "abc def",
        "abc.def",
        "abc-def_",
        "abc\u{7f}",
    ] {
        v.push(pad(p));
    }
    v
}

fn spied(ctx: &Ctx, cookie: Option<&str>) -> (Arc<SpyStore>, Session) {
    let spy = Arc::new(SpyStore::new(ctx.store.clone()));
    let s = Session::from_cookie(spy.clone(), ctx.settings.clone(), cookie);
    (spy, s)
}

fn no_io(spy: &SpyStore, cookie: &str, after: &str) -> CaseResult {
    let calls = spy.calls();
    ensure!(
        calls.is_empty(),
        "cookie {cookie:?}: {after} reached the store: {calls:?}"
    );
    Ok(())
}

/// The only call allowed after a save of a malformed-cookie session: one create of a
/// new key, which the session now holds.
fn only_created(spy: &SpyStore, s: &Session, cookie: &str) -> CaseResult {
    let k = s
        .key()
        .ok_or_else(|| format!("cookie {cookie:?}: save left no key"))?;
    ensure!(k.as_str() != cookie, "cookie {cookie:?} was adopted");
    let calls = spy.calls();
    ensure!(
        calls == vec![Call::Create(Some(k))],
        "cookie {cookie:?}: save did {calls:?}, wanted only the create of a new key"
    );
    Ok(())
}

async fn malformed_cookies_are_rejected_before_any_io(_ctx: &Ctx) -> CaseResult {
    for c in malformed_cookies() {
        ensure!(
            SessionKey::parse(&c).is_err(),
            "cookie {c:?} parsed as a key"
        );
    }
    Ok(())
}

async fn malformed_cookie_reads_do_no_io(ctx: &Ctx) -> CaseResult {
    for c in malformed_cookies() {
        let (spy, s) = spied(ctx, Some(&c));
        ensure!(s.key().is_none(), "cookie {c:?} gave a key");
        ensure!(
            s.get_value("x").await.ctx("get")?.is_none(),
            "cookie {c:?}: data appeared"
        );
        s.contains_key("x").await.ctx("contains")?;
        s.keys().await.ctx("keys")?;
        s.values().await.ctx("values")?;
        s.len().await.ctx("len")?;
        s.load().await.ctx("load")?;
        s.expiry_age().await.ctx("expiry_age")?;
        no_io(&spy, &c, "reading")?;
    }
    Ok(())
}

async fn malformed_cookie_save_creates_only_a_new_key(ctx: &Ctx) -> CaseResult {
    for c in malformed_cookies() {
        let (spy, s) = spied(ctx, Some(&c));
        s.get_value("cart").await.ctx("get")?;
        s.insert("cart", &["apple"]).await.ctx("insert")?;
        s.save().await.ctx("save")?;
        only_created(&spy, &s, &c)?;
        let k = s.key().ok_or("no key")?;
        let got = must_load(ctx, &k, "load the new session").await?;
        ensure!(
            got.data == data(&[("cart", json!(["apple"]))]),
            "stored {:?}",
            got.data
        );
    }
    Ok(())
}

async fn malformed_cookie_flush_does_no_io(ctx: &Ctx) -> CaseResult {
    for c in malformed_cookies() {
        let (spy, s) = spied(ctx, Some(&c));
        s.insert("x", &1).await.ctx("insert")?;
        s.flush().await.ctx("flush")?;
        s.clear();
        no_io(&spy, &c, "flush")?;
    }
    Ok(())
}

async fn malformed_cookie_cycle_key_only_creates(ctx: &Ctx) -> CaseResult {
    for c in malformed_cookies() {
        let (spy, s) = spied(ctx, Some(&c));
        s.insert("x", &1).await.ctx("insert")?;
        s.cycle_key().await.ctx("cycle_key")?;
        only_created(&spy, &s, &c)?;
    }
    Ok(())
}

async fn malformed_cookie_helpers_and_expiry_do_no_io(ctx: &Ctx) -> CaseResult {
    for c in malformed_cookies() {
        let (spy, s) = spied(ctx, Some(&c));
        ensure!(s.is_empty(), "cookie {c:?}: the session is not empty");
        s.set_test_cookie().await.ctx("set_test_cookie")?;
        s.test_cookie_worked().await.ctx("test_cookie_worked")?;
        s.delete_test_cookie().await.ctx("delete_test_cookie")?;
        s.set_expiry(Expiry::seconds(0));
        s.expire_at_browser_close()
            .await
            .ctx("expire_at_browser_close")?;
        s.expiry_date().await.ctx("expiry_date")?;
        s.pop::<String>("x").await.ctx("pop")?;
        s.remove("y").await.ctx("remove")?;
        no_io(&spy, &c, "test-cookie helpers and expiry")?;
    }
    Ok(())
}

async fn malformed_cookie_update_closure_then_save(ctx: &Ctx) -> CaseResult {
    for c in malformed_cookies().into_iter().take(8) {
        let (spy, s) = spied(ctx, Some(&c));
        let n = s
            .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
            .ctx("update")?;
        ensure!(n == 1, "cookie {c:?}: a fresh session counted {n}");
        no_io(&spy, &c, "update")?;
        s.save().await.ctx("save")?;
        only_created(&spy, &s, &c)?;
    }
    Ok(())
}

async fn absent_cookie_does_no_io_until_save(ctx: &Ctx) -> CaseResult {
    let spy = Arc::new(SpyStore::new(ctx.store.clone()));
    let s = Session::from_cookie(spy.clone(), ctx.settings.clone(), None);
    s.get_value("x").await.ctx("get")?;
    s.insert("x", &1).await.ctx("insert")?;
    no_io(&spy, "<none>", "a new session's reads and writes")?;
    s.save().await.ctx("save")?;
    only_created(&spy, &s, "<none>")
}

async fn near_miss_cookies_never_reach_a_stored_session(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("secret", json!("mine"))]).await?;
    let real = k.as_str();
    let misses = [
        real.to_uppercase(),
        format!("{real} "),
        format!(" {real}"),
        format!("{real}\n"),
        format!("\"{real}\""),
        real[..31].to_owned(),
        format!("{real}a"),
        format!("{}*", &real[..31]),
        format!("{}?", &real[..31]),
        format!("{real}\u{0}"),
    ];
    for c in misses {
        let (spy, s) = spied(ctx, Some(&c));
        ensure!(
            s.get_value("secret").await.ctx("get")?.is_none(),
            "cookie {c:?} reached another visitor's session"
        );
        no_io(&spy, &c, "reading")?;
    }
    Ok(())
}

async fn a_valid_cookie_loads_exactly_its_key(ctx: &Ctx) -> CaseResult {
    // The control for the cases above: a well-formed cookie does reach the store.
    let k = saved_session(ctx, &[("secret", json!("mine"))]).await?;
    let (spy, s) = spied(ctx, Some(k.as_str()));
    let got = s.get::<String>("secret").await.ctx("get")?;
    ensure!(
        got.as_deref() == Some("mine"),
        "a valid cookie read {got:?}"
    );
    ensure!(
        spy.calls() == vec![Call::Load(k)],
        "a valid cookie did {:?}",
        spy.calls()
    );
    Ok(())
}

fn raw(ctx: &Ctx) -> Result<&dyn RawAccess, String> {
    ctx.store
        .raw()
        .ok_or_else(|| not_applicable("the store offers no raw byte access"))
}

/// Plants `bytes` under a fresh key and checks `load` reports a codec error.
async fn plant_and_expect_codec_error(
    ctx: &Ctx,
    bytes: &[u8],
    what: &str,
) -> Result<SessionKey, String> {
    let raw = raw(ctx)?;
    let k = key();
    raw.put_raw(&k, bytes, Timestamp::now().add_secs(LIVE_SECS))
        .await
        .ctx("put_raw")?;
    match ctx.store.load(&k).await {
        Err(Error::Codec(_)) => Ok(k),
        other => Err(format!(
            "load of {what} gave {other:?}, wanted Error::Codec"
        )),
    }
}

fn encoded_sample() -> Vec<(&'static str, Vec<u8>)> {
    let r = sample();
    vec![
        (
            "bincode",
            BincodeCodec::default()
                .encode(&r)
                .expect("the sample record encodes with bincode"),
        ),
        (
            "json",
            JsonCodec::default()
                .encode(&r)
                .expect("the sample record encodes as JSON"),
        ),
    ]
}

async fn corrupt_garbage_bytes_are_a_codec_error(ctx: &Ctx) -> CaseResult {
    raw(ctx)?;
    let mut noise = Vec::with_capacity(4096);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..4096 {
        // xorshift: deterministic noise, no dependency needed.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    noise[0] = 0xFF;
    plant_and_expect_codec_error(ctx, &noise, "random bytes").await?;
    // Garbage behind a valid binary header, and a damaged JSON record.
    let mut header_then_noise = vec![0xB1, b'S', b'R', 1];
    header_then_noise.extend_from_slice(&noise[..512]);
    plant_and_expect_codec_error(ctx, &header_then_noise, "a binary header followed by noise")
        .await?;
    plant_and_expect_codec_error(
        ctx,
        b"{\"data\": {\"x\": 1}, \"expires_at\": \"soon\"",
        "damaged JSON",
    )
    .await?;
    for (name, mut bytes) in encoded_sample() {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        bytes[mid + 1] = 0xFF;
        // A damaged record is a codec error, or (should the damage miss everything the
        // decoder reads) exactly the original data: never a record with other content,
        // a missing record, a panic or an untyped error.
        let k = key();
        raw(ctx)?
            .put_raw(&k, &bytes, Timestamp::now().add_secs(LIVE_SECS))
            .await
            .ctx("put_raw")?;
        match ctx.store.load(&k).await {
            Err(Error::Codec(_)) => {}
            Ok(Some(got)) if got.data == sample().data => {}
            other => {
                return Err(format!(
                    "load of a bit-flipped {name} record gave {other:?}, wanted \
                     Error::Codec or exactly the original data"
                ));
            }
        }
    }
    Ok(())
}

async fn corrupt_truncated_records_are_a_codec_error(ctx: &Ctx) -> CaseResult {
    raw(ctx)?;
    for (name, bytes) in encoded_sample() {
        for cut in [1, 3, 4, 5, bytes.len() / 2, bytes.len() - 1] {
            plant_and_expect_codec_error(
                ctx,
                &bytes[..cut],
                &format!("a {name} record cut to {cut} bytes"),
            )
            .await?;
        }
    }
    Ok(())
}

async fn corrupt_foreign_bytes_are_a_codec_error(ctx: &Ctx) -> CaseResult {
    raw(ctx)?;
    let foreign: [(&str, &[u8]); 8] = [
        (
            "a Django signed session",
            b"eyJ1c2VyX2lkIjoxMDF9:1r31eq:_h3jaZ971_4kGhQPNtIugVb-pQC9VhmGBadPptk5vEo",
        ),
        ("a PNG header", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
        ("gzip", b"\x1f\x8b\x08\0\0\0\0\0\0\x03"),
        ("plain text", b"hello, world"),
        ("JSON null", b"null"),
        ("a JSON array", b"[1,2,3]"),
        ("an empty JSON object", b"{}"),
        (
            "a JSON object with unknown fields",
            b"{\"session\":{\"user_id\":101},\"ttl\":3600}",
        ),
    ];
    for (what, bytes) in foreign {
        plant_and_expect_codec_error(ctx, bytes, what).await?;
    }
    Ok(())
}

async fn corrupt_empty_bytes_are_a_codec_error(ctx: &Ctx) -> CaseResult {
    raw(ctx)?;
    plant_and_expect_codec_error(ctx, b"", "zero bytes").await?;
    Ok(())
}

async fn corrupt_future_format_version_is_a_codec_error(ctx: &Ctx) -> CaseResult {
    raw(ctx)?;
    for (name, bytes) in encoded_sample() {
        let future = if name == "bincode" {
            let mut b = bytes.clone();
            b[3] = 99;
            b
        } else {
            String::from_utf8_lossy(&bytes)
                .replace("\"format\":1", "\"format\":99")
                .into_bytes()
        };
        ensure!(future != bytes, "could not build a future {name} record");
        plant_and_expect_codec_error(ctx, &future, &format!("a {name} record from format 99"))
            .await?;
    }
    Ok(())
}

async fn corrupt_oversized_record_is_a_codec_error(ctx: &Ctx) -> CaseResult {
    raw(ctx)?;
    let limit = ctx.settings.max_encoded_size;
    if limit > 16 * 1024 * 1024 {
        return Err(not_applicable("max_encoded_size above 16 MiB"));
    }
    // A well-formed record, just too big: encoded without a limit.
    let big = "x".repeat(limit + 1024);
    let r = Record::with_ttl(data(&[("big", json!(big))]), LIVE_SECS);
    let bytes = BincodeCodec::new(usize::MAX).encode(&r).ctx("encode")?;
    plant_and_expect_codec_error(ctx, &bytes, "a record over max_encoded_size").await?;
    Ok(())
}

async fn corrupt_record_starts_a_new_session_and_stays_untouched(ctx: &Ctx) -> CaseResult {
    let garbage = b"\xB1SR\x01 definitely not bincode \xFF\xFF\xFF\xFF".to_vec();
    let k = plant_and_expect_codec_error(ctx, &garbage, "garbage").await?;
    let s = Session::new(ctx.store.clone(), ctx.settings.clone(), Some(k.clone()));
    ensure!(
        s.get_value("x").await.ctx("get")?.is_none(),
        "a corrupt record showed data"
    );
    ensure!(s.key().is_none(), "the corrupt record's key was kept");
    s.insert("x", &1).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let new = s.key().ok_or("save gave no key")?;
    ensure!(new != k, "the corrupt record's key was reused");
    let still = raw(ctx)?.get_raw(&k).await.ctx("get_raw")?;
    ensure!(
        still.as_deref() == Some(garbage.as_slice()),
        "the corrupt bytes were changed: {:?}",
        still.map(|b| b.len())
    );
    let got = must_load(ctx, &new, "load the new session").await?;
    ensure!(
        got.data == data(&[("x", json!(1))]),
        "the new session holds {:?}",
        got.data
    );
    Ok(())
}

/// A compact record whose first value is sound and whose second is not (invalid UTF-8):
/// a store that decodes lazily answers a read of the sound key, one that decodes whole
/// finds the damage at load; either way the damaged value is never served, the session
/// starts new at the read that meets it, and the stored bytes stay as they were.
async fn a_value_damaged_inside_the_data_starts_a_new_session_when_read(ctx: &Ctx) -> CaseResult {
    let raw = raw(ctx)?;
    let mut bytes = BincodeCodec::default()
        .encode(&super::record(&[("a", json!("ok")), ("b", json!("x"))]))
        .expect("a two-key record encodes");
    let last = bytes.len() - 1;
    bytes[last] = 0xFF; // "x", the value of "b", becomes invalid UTF-8
    let k = key();
    raw.put_raw(&k, &bytes, Timestamp::now().add_secs(LIVE_SECS))
        .await
        .ctx("put_raw")?;
    let s = super::handle(ctx, Some(k.clone()));
    let a = s.get_value("a").await.ctx("reading the sound key")?;
    ensure!(
        a.is_none() || a == Some(json!("ok")),
        "the sound key read {a:?}"
    );
    let b = s.get_value("b").await.ctx("reading the damaged key")?;
    ensure!(b.is_none(), "the damaged value was served: {b:?}");
    ensure!(s.key().is_none(), "the damaged record's key was kept");
    s.insert_value("c", json!(1)).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let new_key = s.key().ok_or("the new session has no key")?;
    ensure!(new_key != k, "the damaged record's key was adopted");
    let fresh = must_load(ctx, &new_key, "the new session").await?;
    ensure!(
        fresh.data == data(&[("c", json!(1))]),
        "the new session holds {:?}",
        fresh.data
    );
    let kept = raw.get_raw(&k).await.ctx("get_raw")?;
    ensure!(
        kept.as_deref() == Some(&bytes[..]),
        "the damaged record's bytes changed"
    );
    Ok(())
}

async fn corrupt_record_survives_cycle_key_and_reads(ctx: &Ctx) -> CaseResult {
    let garbage = b"not a session at all".to_vec();
    let k = plant_and_expect_codec_error(ctx, &garbage, "text").await?;
    let s = Session::new(ctx.store.clone(), ctx.settings.clone(), Some(k.clone()));
    s.keys().await.ctx("keys")?;
    s.cycle_key().await.ctx("cycle_key")?;
    ensure!(
        s.key().is_some_and(|n| n != k),
        "cycle_key kept the corrupt key"
    );
    let still = raw(ctx)?.get_raw(&k).await.ctx("get_raw")?;
    ensure!(
        still.as_deref() == Some(garbage.as_slice()),
        "cycle_key touched the corrupt bytes"
    );
    Ok(())
}

async fn corrupt_record_can_be_flushed(ctx: &Ctx) -> CaseResult {
    let k = plant_and_expect_codec_error(ctx, b"\0\0\0\0", "zeros").await?;
    let s = Session::new(ctx.store.clone(), ctx.settings.clone(), Some(k.clone()));
    s.flush().await.ctx("flush (logout) of a corrupt session")?;
    ensure!(
        raw(ctx)?.get_raw(&k).await.ctx("get_raw")?.is_none(),
        "flush left the corrupt bytes"
    );
    Ok(())
}

async fn raw_bytes_of_a_stored_record_decode(ctx: &Ctx) -> CaseResult {
    let raw = raw(ctx)?;
    let r = sample();
    let k = ctx.store.create(&r).await.ctx("create")?;
    let bytes = raw
        .get_raw(&k)
        .await
        .ctx("get_raw")?
        .ok_or("get_raw of a stored record is None")?;
    let decoded = BincodeCodec::new(usize::MAX)
        .decode(&bytes)
        .ctx("decode the stored bytes")?;
    ensure!(
        decoded.data == r.data,
        "the stored bytes decode to {:?}",
        decoded.data
    );
    ensure!(
        raw.get_raw(&key()).await.ctx("get_raw unknown")?.is_none(),
        "get_raw of an unknown key"
    );
    Ok(())
}

async fn raw_put_of_valid_bytes_loads(ctx: &Ctx) -> CaseResult {
    let raw = raw(ctx)?;
    let r = sample();
    for (name, bytes) in encoded_sample() {
        let k = key();
        raw.put_raw(&k, &bytes, r.expires_at).await.ctx("put_raw")?;
        let got = must_load(ctx, &k, &format!("load planted {name} bytes")).await?;
        ensure!(
            got.data == r.data,
            "planted {name} bytes loaded as {:?}",
            got.data
        );
    }
    Ok(())
}
