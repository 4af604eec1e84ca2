//! Values: every JSON-model kind, sizes up to 1 MiB, unicode keys and values, the empty
//! session. Each case round-trips through the store (create, load, update, load) and,
//! where it says so, through a session handle too.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use session_core::{Session, SessionData};

use super::{Ctx as _, case, data, ensure, handle, must_load, record_of};
use crate::{Case, CaseResult, Ctx};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(Values, null_round_trips),
        case!(Values, booleans_round_trip),
        case!(Values, i64_extremes_round_trip),
        case!(Values, u64_max_round_trips),
        case!(Values, small_integers_round_trip),
        case!(Values, floats_round_trip_exactly),
        case!(Values, integers_and_floats_stay_distinct),
        case!(Values, strings_with_nul_and_control_characters),
        case!(Values, emoji_and_non_latin_text),
        case!(Values, strings_that_look_like_markup_or_queries),
        case!(Values, nested_arrays_and_objects),
        case!(Values, empty_containers_and_strings),
        case!(Values, deep_nesting_within_the_codec_limit),
        case!(Values, a_large_array),
        case!(Values, one_mib_string_value),
        case!(Values, one_mib_of_multibyte_text),
        case!(Values, one_mib_spread_over_many_keys),
        case!(Values, unicode_session_keys),
        case!(Values, odd_session_data_keys),
        case!(Values, many_keys_in_one_session),
        case!(Values, the_empty_session_round_trips),
        case!(Values, typed_values_through_the_handle),
        case!(Values, every_kind_in_one_session_through_the_handle),
    ]
}

/// Round-trips `d` through create/load and update/load.
async fn through_store(ctx: &Ctx, d: SessionData) -> CaseResult {
    let k = ctx
        .store
        .create(&record_of(d.clone()))
        .await
        .ctx("create")?;
    let got = must_load(ctx, &k, "load after create").await?;
    if got.data != d {
        return Err(format!(
            "create/load changed the data: {}",
            diff(&d, &got.data)
        ));
    }
    // Through the update path too (some stores encode differently on update).
    ctx.store
        .update(&k, &record_of(SessionData::new()), None)
        .await
        .ctx("update to empty")?;
    ctx.store
        .update(&k, &record_of(d.clone()), None)
        .await
        .ctx("update")?;
    let got = must_load(ctx, &k, "load after update").await?;
    if got.data != d {
        return Err(format!(
            "update/load changed the data: {}",
            diff(&d, &got.data)
        ));
    }
    Ok(())
}

/// Round-trips `d` through a session handle: insert, save, new handle, read.
async fn through_handle(ctx: &Ctx, d: &SessionData) -> CaseResult {
    let s = handle(ctx, None);
    for (k, v) in d {
        s.insert_value(k, v.clone()).await.ctx("insert")?;
    }
    s.save().await.ctx("save")?;
    let again = Session::new(ctx.store.clone(), ctx.settings.clone(), s.key());
    for (k, v) in d {
        let got = again.get_value(k).await.ctx("get")?;
        ensure!(
            got.as_ref() == Some(v),
            "key {k:?} read back as {}",
            short(&got)
        );
    }
    ensure!(
        again.len().await.ctx("len")? == d.len(),
        "the handle sees another number of keys"
    );
    Ok(())
}

async fn both(ctx: &Ctx, d: SessionData) -> CaseResult {
    through_store(ctx, d.clone()).await?;
    through_handle(ctx, &d).await
}

/// A short description of how two data maps differ (values may be a megabyte long).
fn diff(want: &SessionData, got: &SessionData) -> String {
    for (k, v) in want {
        match got.get(k) {
            None => return format!("key {k:?} is missing"),
            Some(g) if g != v => {
                return format!(
                    "key {k:?}: wanted {}, got {}",
                    short(&Some(v.clone())),
                    short(&Some(g.clone()))
                );
            }
            _ => {}
        }
    }
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    format!("unexpected keys {extra:?}")
}

fn short(v: &Option<Value>) -> String {
    let s = format!("{v:?}");
    if s.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}... ({} chars)", &s[..cut], s.len())
    } else {
        s
    }
}

async fn null_round_trips(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[("nothing", Value::Null), ("list", json!([null, null]))]),
    )
    .await
}

async fn booleans_round_trip(ctx: &Ctx) -> CaseResult {
    both(ctx, data(&[("t", json!(true)), ("f", json!(false))])).await
}

async fn i64_extremes_round_trip(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("min", json!(i64::MIN)),
            ("max", json!(i64::MAX)),
            ("minus_one", json!(-1)),
        ]),
    )
    .await
}

async fn u64_max_round_trips(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("u64max", json!(u64::MAX)),
            ("above_i64", json!(i64::MAX as u64 + 1)),
        ]),
    )
    .await
}

async fn small_integers_round_trip(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("zero", json!(0)),
            ("one", json!(1)),
            ("byte", json!(255)),
            ("neg", json!(-128)),
        ]),
    )
    .await
}

async fn floats_round_trip_exactly(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("tenth", json!(0.1)),
            ("third", json!(1.0 / 3.0)),
            ("pi", json!(std::f64::consts::PI)),
            ("big", json!(f64::MAX)),
            ("tiny", json!(f64::MIN_POSITIVE)),
            ("subnormal", json!(5e-324)),
            ("negative", json!(-2.5e-7)),
            ("whole", json!(1e15)),
        ]),
    )
    .await
}

async fn integers_and_floats_stay_distinct(ctx: &Ctx) -> CaseResult {
    let d = data(&[("int", json!(1)), ("float", json!(1.0))]);
    let k = ctx.store.create(&record_of(d)).await.ctx("create")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data
            .get("int")
            .is_some_and(|v| v.is_u64() || v.is_i64()),
        "the integer 1 came back as {:?}",
        got.data.get("int")
    );
    ensure!(
        got.data.get("float").is_some_and(Value::is_f64),
        "the float 1.0 came back as {:?}",
        got.data.get("float")
    );
    Ok(())
}

async fn strings_with_nul_and_control_characters(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("nul", json!("before\u{0}after")),
            ("only_nul", json!("\u{0}")),
            ("controls", json!("\t\n\r\u{1b}[31m\u{7f}\u{1}")),
            ("quotes", json!("\"'\\`")),
        ]),
    )
    .await
}

async fn emoji_and_non_latin_text(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("emoji", json!("🦀🎉👩‍👩‍👧‍👦🏳️‍🌈")),
            ("cjk", json!("日本語のテキスト")),
            ("rtl", json!("مرحبا بالعالم")),
            ("combining", json!("e\u{301} Zoë Ångström")),
            ("astral", json!("\u{1F600}\u{10FFFF}")),
            ("bom", json!("\u{FEFF}text")),
        ]),
    )
    .await
}

async fn strings_that_look_like_markup_or_queries(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("sql", json!("'; DROP TABLE sessions; --")),
            ("glob", json!("*?[a-z]{}")),
            ("html", json!("<script>alert(1)</script>")),
            ("json", json!("{\"not\": \"an object\"}")),
            ("crlf", json!("a\r\nSet-Cookie: x=y")),
            ("path", json!("../../etc/passwd")),
        ]),
    )
    .await
}

async fn nested_arrays_and_objects(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            (
                "cart",
                json!({
                    "items": [{"sku": "A-1", "qty": 2, "price": 9.99}, {"sku": "B-2", "qty": 1, "tags": ["gift", null]}],
                    "coupon": null,
                    "meta": {"nested": {"deeper": [1, [2, [3, {"x": true}]]]}}
                }),
            ),
            ("mixed", json!([1, "two", 3.5, false, null, {"k": []}, [[]]])),
        ]),
    )
    .await
}

async fn empty_containers_and_strings(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("empty_string", json!("")),
            ("empty_array", json!([])),
            ("empty_object", json!({})),
            ("nested_empty", json!({"a": {}, "b": [[], {}]})),
        ]),
    )
    .await
}

async fn deep_nesting_within_the_codec_limit(ctx: &Ctx) -> CaseResult {
    let mut v = json!("bottom");
    for i in 0..60 {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "d": v })
        };
    }
    both(ctx, data(&[("deep", v)])).await
}

async fn a_large_array(ctx: &Ctx) -> CaseResult {
    let arr: Vec<Value> = (0..20_000i64).map(|i| json!(i * 7919 - 50_000)).collect();
    through_store(ctx, data(&[("numbers", Value::Array(arr))])).await
}

async fn one_mib_string_value(ctx: &Ctx) -> CaseResult {
    let big: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    both(ctx, data(&[("blob", json!(big))])).await
}

async fn one_mib_of_multibyte_text(ctx: &Ctx) -> CaseResult {
    // "Zoë🦀" is 8 bytes: 131,072 copies make exactly 1 MiB of UTF-8.
    let big = "Zoë🦀".repeat(1024 * 1024 / 8);
    both(ctx, data(&[("text", json!(big))])).await
}

async fn one_mib_spread_over_many_keys(ctx: &Ctx) -> CaseResult {
    let chunk = "x".repeat(4096);
    let d: SessionData = (0..256)
        .map(|i| (format!("chunk{i:03}"), json!(chunk)))
        .collect();
    through_store(ctx, d).await
}

async fn unicode_session_keys(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("ключ", json!("значение")),
            ("🔑", json!("🔒")),
            ("日本", json!(1)),
            ("Zoë", json!(true)),
        ]),
    )
    .await
}

async fn odd_session_data_keys(ctx: &Ctx) -> CaseResult {
    both(
        ctx,
        data(&[
            ("", json!("empty key")),
            (" ", json!("space")),
            ("with\u{0}nul", json!(1)),
            ("a.b", json!(2)),
            ("$where", json!(3)),
            ("*", json!(4)),
            ("_auth_user_id", json!("101")),
        ]),
    )
    .await
}

async fn many_keys_in_one_session(ctx: &Ctx) -> CaseResult {
    let d: SessionData = (0..1_000).map(|i| (format!("key-{i}"), json!(i))).collect();
    through_store(ctx, d).await
}

async fn the_empty_session_round_trips(ctx: &Ctx) -> CaseResult {
    through_store(ctx, SessionData::new()).await?;
    let s = handle(ctx, None);
    s.save().await.ctx("save an untouched session")?;
    let k = s.key().ok_or("save gave no key")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data.is_empty(),
        "the empty session came back as {:?}",
        got.data
    );
    Ok(())
}

async fn typed_values_through_the_handle(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    let cart: Vec<(String, u32)> = vec![("apple".into(), 3), ("pear".into(), 1)];
    let mut prefs = BTreeMap::new();
    prefs.insert("theme".to_owned(), Some("dark".to_owned()));
    prefs.insert("lang".to_owned(), None);
    s.insert("cart", &cart).await.ctx("insert cart")?;
    s.insert("prefs", &prefs).await.ctx("insert prefs")?;
    s.insert("big", &u64::MAX).await.ctx("insert u64")?;
    s.insert("small", &i64::MIN).await.ctx("insert i64")?;
    s.insert("ratio", &0.1f64).await.ctx("insert f64")?;
    s.insert("opt", &Option::<u8>::None)
        .await
        .ctx("insert None")?;
    s.save().await.ctx("save")?;
    let again = handle(ctx, s.key());
    ensure!(
        again.get::<Vec<(String, u32)>>("cart").await.ctx("cart")? == Some(cart),
        "cart changed"
    );
    ensure!(
        again
            .get::<BTreeMap<String, Option<String>>>("prefs")
            .await
            .ctx("prefs")?
            == Some(prefs),
        "prefs changed"
    );
    ensure!(
        again.get::<u64>("big").await.ctx("big")? == Some(u64::MAX),
        "u64::MAX changed"
    );
    ensure!(
        again.get::<i64>("small").await.ctx("small")? == Some(i64::MIN),
        "i64::MIN changed"
    );
    ensure!(
        again.get::<f64>("ratio").await.ctx("ratio")? == Some(0.1),
        "0.1 changed"
    );
    ensure!(
        again.get::<Option<u8>>("opt").await.ctx("opt")? == Some(None),
        "None changed"
    );
    Ok(())
}

async fn every_kind_in_one_session_through_the_handle(ctx: &Ctx) -> CaseResult {
    through_handle(
        ctx,
        &data(&[
            ("null", Value::Null),
            ("bool", json!(true)),
            ("i64min", json!(i64::MIN)),
            ("u64max", json!(u64::MAX)),
            ("float", json!(-0.5)),
            ("string", json!("nul\u{0} and 🦀")),
            ("array", json!([1, [2, 3], {"four": 4}])),
            ("object", json!({"a": {"b": {"c": null}}})),
        ]),
    )
    .await
}
