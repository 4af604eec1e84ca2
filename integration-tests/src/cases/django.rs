//! The session handle's Django semantics (`SessionTestsMixin` and the "behaviours a port
//! must reproduce" list), run over the store under test.

use std::sync::Arc;

use serde_json::{Value, json};
use session_core::session::{TEST_COOKIE_NAME, TEST_COOKIE_VALUE};
use session_core::{Error, Expiry, Session, SessionKey};

use super::{
    Ctx as _, case, data, ensure, expect_not_found, expired, handle, key, must_load, saved_session,
    settings_with,
};
use crate::{Call, Case, CaseResult, Ctx, SpyStore};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(Django, new_session_is_neither_accessed_nor_modified),
        case!(Django, get_on_an_empty_session_is_none),
        case!(Django, store_sets_modified_and_pop_returns_the_value),
        case!(Django, pop_of_a_present_key),
        case!(Django, pop_of_a_missing_key_leaves_modified_false),
        case!(Django, remove_of_a_missing_key_leaves_modified_false),
        case!(Django, setdefault_inserts_once),
        case!(Django, setdefault_of_a_stored_key_does_not_modify),
        case!(Django, extend_sets_accessed_and_modified),
        case!(Django, extend_with_nothing_still_modifies),
        case!(Django, contains_key_reads_without_modifying),
        case!(Django, values_read_without_modifying),
        case!(Django, keys_read_without_modifying),
        case!(Django, items_read_without_modifying),
        case!(Django, every_read_marks_accessed_only),
        case!(Django, every_write_marks_modified),
        case!(Django, insert_replaces_a_value),
        case!(Django, clear_empties_and_keeps_the_key),
        case!(Django, clear_does_not_load),
        case!(Django, save_makes_the_session_exist),
        case!(Django, delete_after_save_removes_it),
        case!(Django, save_doesnt_clear_data),
        case!(Django, saving_twice_keeps_the_data),
        case!(Django, an_emptied_session_is_still_saved),
        case!(Django, flush_deletes_the_record_and_drops_the_key),
        case!(Django, flush_of_a_new_session_does_no_io),
        case!(Django, flush_then_save_mints_a_new_key),
        case!(Django, cycle_key_keeps_data_and_kills_the_old_key),
        case!(Django, cycle_key_with_no_session_cache),
        case!(Django, cycle_key_of_a_new_session_creates_without_deleting),
        case!(Django, changes_after_cycle_key_are_saved_under_the_new_key),
        case!(Django, invalid_key_gets_a_fresh_key),
        case!(Django, unknown_key_is_never_adopted),
        case!(Django, expired_key_is_never_adopted),
        case!(Django, load_does_not_create_a_record),
        case!(
            Django,
            save_does_not_resurrect_a_session_logged_out_elsewhere
        ),
        case!(Django, test_cookie_helpers),
        case!(Django, test_cookie_with_another_value_did_not_work),
        case!(Django, is_empty_follows_django),
        case!(Django, the_handle_is_lazy),
        case!(Django, update_closure_sees_the_stored_value),
        case!(Django, wrong_type_is_a_value_error),
        case!(Django, max_keys_is_enforced),
        case!(Django, version_advances_with_each_save),
        case!(Django, created_at_survives_saves),
        case!(Django, clones_share_one_state),
        case!(Django, set_expiry_marks_accessed_and_modified),
    ]
}

fn flags(s: &Session) -> (bool, bool) {
    (s.accessed(), s.modified())
}

/// A handle over a spy in front of the case's store.
fn spied(ctx: &Ctx, k: Option<SessionKey>) -> (Arc<SpyStore>, Session) {
    let spy = Arc::new(SpyStore::new(ctx.store.clone()));
    let s = Session::new(spy.clone(), ctx.settings.clone(), k);
    (spy, s)
}

async fn new_session_is_neither_accessed_nor_modified(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    ensure!(
        flags(&s) == (false, false),
        "a new session has flags {:?}",
        flags(&s)
    );
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    ensure!(
        flags(&s) == (false, false),
        "a new handle on a key has flags {:?}",
        flags(&s)
    );
    Ok(())
}

async fn get_on_an_empty_session_is_none(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    let got = s.get::<String>("cat").await.ctx("get")?;
    ensure!(got.is_none(), "get on an empty session gave {got:?}");
    ensure!(
        flags(&s) == (true, false),
        "flags after get: {:?}",
        flags(&s)
    );
    Ok(())
}

async fn store_sets_modified_and_pop_returns_the_value(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    s.insert("cat", "dog").await.ctx("insert")?;
    ensure!(s.modified(), "insert did not set modified");
    let got = s.pop::<String>("cat").await.ctx("pop")?;
    ensure!(got.as_deref() == Some("dog"), "pop gave {got:?}");
    Ok(())
}

async fn pop_of_a_present_key(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("some key", json!("exists"))]).await?;
    let s = handle(ctx, Some(k));
    let got = s.pop::<String>("some key").await.ctx("pop")?;
    ensure!(got.as_deref() == Some("exists"), "pop gave {got:?}");
    ensure!(
        flags(&s) == (true, true),
        "flags after pop: {:?}",
        flags(&s)
    );
    ensure!(
        s.get_value("some key").await.ctx("get")?.is_none(),
        "the popped key is still there"
    );
    Ok(())
}

async fn pop_of_a_missing_key_leaves_modified_false(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    let got = s.pop::<String>("some key").await.ctx("pop")?;
    // Django's `pop(key, default)` returns the default: the Rust form is `unwrap_or`.
    let with_default = got.unwrap_or_else(|| "does not exist".to_owned());
    ensure!(
        with_default == "does not exist",
        "pop of a missing key gave {with_default:?}"
    );
    ensure!(
        flags(&s) == (true, false),
        "flags after pop of a missing key: {:?}",
        flags(&s)
    );
    Ok(())
}

async fn remove_of_a_missing_key_leaves_modified_false(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    let got = s.remove("absent").await.ctx("remove")?;
    ensure!(got.is_none(), "remove of a missing key gave {got:?}");
    ensure!(flags(&s) == (true, false), "flags: {:?}", flags(&s));
    Ok(())
}

async fn setdefault_inserts_once(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    let first = s
        .setdefault("foo", "bar".to_owned())
        .await
        .ctx("setdefault")?;
    ensure!(first == "bar", "first setdefault gave {first:?}");
    let second = s
        .setdefault("foo", "baz".to_owned())
        .await
        .ctx("setdefault")?;
    ensure!(second == "bar", "second setdefault gave {second:?}");
    ensure!(flags(&s) == (true, true), "flags: {:?}", flags(&s));
    Ok(())
}

async fn setdefault_of_a_stored_key_does_not_modify(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("foo", json!("bar"))]).await?;
    let s = handle(ctx, Some(k));
    let got = s
        .setdefault("foo", "baz".to_owned())
        .await
        .ctx("setdefault")?;
    ensure!(got == "bar", "setdefault of a stored key gave {got:?}");
    ensure!(flags(&s) == (true, false), "flags: {:?}", flags(&s));
    Ok(())
}

async fn extend_sets_accessed_and_modified(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    s.extend(data(&[("update key", json!(1))]))
        .await
        .ctx("extend")?;
    ensure!(flags(&s) == (true, true), "flags: {:?}", flags(&s));
    let got = s.get::<i64>("update key").await.ctx("get")?;
    ensure!(got == Some(1), "extended value reads {got:?}");
    Ok(())
}

async fn extend_with_nothing_still_modifies(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    s.extend(data(&[])).await.ctx("extend")?;
    ensure!(
        flags(&s) == (true, true),
        "flags after an empty update: {:?}",
        flags(&s)
    );
    Ok(())
}

async fn contains_key_reads_without_modifying(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("some key", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    ensure!(
        s.contains_key("some key").await.ctx("contains")?,
        "stored key not found"
    );
    ensure!(
        !s.contains_key("other").await.ctx("contains")?,
        "absent key found"
    );
    ensure!(flags(&s) == (true, false), "flags: {:?}", flags(&s));
    Ok(())
}

async fn values_read_without_modifying(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    let v = s.values().await.ctx("values")?;
    ensure!(v.is_empty(), "values of an empty session: {v:?}");
    ensure!(s.accessed(), "values did not set accessed");
    let k = saved_session(ctx, &[("some key", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    let v = s.values().await.ctx("values")?;
    ensure!(v == vec![json!(1)], "values gave {v:?}");
    ensure!(flags(&s) == (true, false), "flags: {:?}", flags(&s));
    Ok(())
}

async fn keys_read_without_modifying(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    let keys = s.keys().await.ctx("keys")?;
    ensure!(keys == vec!["x".to_owned()], "keys gave {keys:?}");
    ensure!(flags(&s) == (true, false), "flags: {:?}", flags(&s));
    Ok(())
}

async fn items_read_without_modifying(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    let items = s.load().await.ctx("load")?;
    ensure!(items == data(&[("x", json!(1))]), "items gave {items:?}");
    ensure!(s.len().await.ctx("len")? == 1, "len is not 1");
    ensure!(flags(&s) == (true, false), "flags: {:?}", flags(&s));
    Ok(())
}

async fn every_read_marks_accessed_only(ctx: &Ctx) -> CaseResult {
    let k = saved_session(
        ctx,
        &[
            ("x", json!(1)),
            (TEST_COOKIE_NAME, json!(TEST_COOKIE_VALUE)),
        ],
    )
    .await?;
    for op in 0..12 {
        let s = handle(ctx, Some(k.clone()));
        let name = match op {
            0 => s.get::<i64>("x").await.map(|_| "get"),
            1 => s.get_value("missing").await.map(|_| "get_value"),
            2 => s.contains_key("x").await.map(|_| "contains_key"),
            3 => s.keys().await.map(|_| "keys"),
            4 => s.values().await.map(|_| "values"),
            5 => s.len().await.map(|_| "len"),
            6 => s.load().await.map(|_| "load (items)"),
            7 => s.expiry().await.map(|_| "expiry"),
            8 => s.expiry_age().await.map(|_| "expiry_age"),
            9 => s.expiry_date().await.map(|_| "expiry_date"),
            10 => s
                .expire_at_browser_close()
                .await
                .map(|_| "expire_at_browser_close"),
            _ => s.test_cookie_worked().await.map(|_| "test_cookie_worked"),
        }
        .ctx("read")?;
        ensure!(
            flags(&s) == (true, false),
            "{name} left flags {:?}, wanted (accessed, not modified)",
            flags(&s)
        );
    }
    Ok(())
}

async fn every_write_marks_modified(ctx: &Ctx) -> CaseResult {
    let k = saved_session(
        ctx,
        &[
            ("x", json!(1)),
            (TEST_COOKIE_NAME, json!(TEST_COOKIE_VALUE)),
        ],
    )
    .await?;
    for op in 0..12 {
        // A fresh copy per operation: cycle_key and flush change the key.
        let s = handle(
            ctx,
            Some(
                saved_session(
                    ctx,
                    &[
                        ("x", json!(1)),
                        (TEST_COOKIE_NAME, json!(TEST_COOKIE_VALUE)),
                    ],
                )
                .await?,
            ),
        );
        let name = match op {
            0 => s.insert("y", &2).await.map(|_| "insert"),
            1 => s.insert_value("y", json!(2)).await.map(|_| "insert_value"),
            2 => s.remove("x").await.map(|_| "remove of a present key"),
            3 => s.pop::<i64>("x").await.map(|_| "pop of a present key"),
            4 => s.extend(data(&[("y", json!(2))])).await.map(|_| "extend"),
            5 => {
                s.clear();
                Ok("clear")
            }
            6 => s
                .update("x", |v: Option<i64>| v.unwrap_or(0) + 1)
                .await
                .map(|_| "update"),
            7 => {
                s.set_expiry(Expiry::seconds(60));
                Ok("set_expiry")
            }
            8 => s
                .setdefault("new", 1)
                .await
                .map(|_| "setdefault of a new key"),
            9 => s.set_test_cookie().await.map(|_| "set_test_cookie"),
            10 => s.delete_test_cookie().await.map(|_| "delete_test_cookie"),
            _ => s.flush().await.map(|_| "flush"),
        }
        .ctx("write")?;
        ensure!(
            flags(&s) == (true, true),
            "{name} left flags {:?}, wanted both set",
            flags(&s)
        );
    }
    let s = handle(ctx, Some(k));
    s.cycle_key().await.ctx("cycle_key")?;
    ensure!(s.modified(), "cycle_key did not set modified");
    Ok(())
}

async fn insert_replaces_a_value(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k.clone()));
    s.insert("x", &2).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data == data(&[("x", json!(2))]),
        "stored {:?}",
        got.data
    );
    Ok(())
}

async fn clear_empties_and_keeps_the_key(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k.clone()));
    s.clear();
    let items = s.load().await.ctx("load")?;
    ensure!(items.is_empty(), "items after clear: {items:?}");
    ensure!(
        flags(&s) == (true, true),
        "flags after clear: {:?}",
        flags(&s)
    );
    ensure!(s.key().as_ref() == Some(&k), "clear dropped the key");
    Ok(())
}

async fn clear_does_not_load(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let (spy, s) = spied(ctx, Some(k.clone()));
    s.clear();
    ensure!(spy.call_count() == 0, "clear did I/O: {:?}", spy.calls());
    s.save().await.ctx("save")?;
    ensure!(
        s.key().as_ref() == Some(&k),
        "saving a cleared session changed its key"
    );
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data.is_empty(),
        "a cleared session was saved as {:?}",
        got.data
    );
    Ok(())
}

async fn save_makes_the_session_exist(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    s.insert("x", &1).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let k = s.key().ok_or("save gave no key")?;
    ensure!(
        ctx.store.exists(&k).await.ctx("exists")?,
        "a saved session does not exist"
    );
    Ok(())
}

async fn delete_after_save_removes_it(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    ctx.store.delete(&k).await.ctx("delete")?;
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists")?,
        "a deleted session still exists"
    );
    Ok(())
}

async fn save_doesnt_clear_data(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    s.insert("a", "b").await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let got = s.get::<String>("a").await.ctx("get")?;
    ensure!(
        got.as_deref() == Some("b"),
        "after save the data reads {got:?}"
    );
    Ok(())
}

async fn saving_twice_keeps_the_data(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    s.insert("a", "b").await.ctx("insert")?;
    s.save().await.ctx("first save")?;
    let k = s.key();
    s.save().await.ctx("second save")?;
    ensure!(s.key() == k, "a second save changed the key");
    let stored = must_load(ctx, &k.ok_or("no key")?, "load").await?;
    ensure!(
        stored.data == data(&[("a", json!("b"))]),
        "stored {:?}",
        stored.data
    );
    Ok(())
}

async fn an_emptied_session_is_still_saved(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k.clone()));
    s.remove("x").await.ctx("remove")?;
    s.save().await.ctx("save")?;
    ensure!(
        s.key().as_ref() == Some(&k),
        "saving an emptied session changed its key"
    );
    let got = must_load(ctx, &k, "an emptied session must still be stored").await?;
    ensure!(got.data.is_empty(), "stored {:?}", got.data);
    Ok(())
}

async fn flush_deletes_the_record_and_drops_the_key(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("foo", json!("bar"))]).await?;
    let s = handle(ctx, Some(k.clone()));
    s.flush().await.ctx("flush")?;
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists")?,
        "the flushed record still exists"
    );
    ensure!(s.key().is_none(), "flush kept the key");
    ensure!(
        flags(&s) == (true, true),
        "flags after flush: {:?}",
        flags(&s)
    );
    ensure!(
        s.load().await.ctx("load")?.is_empty(),
        "flush kept the data"
    );
    ensure!(s.is_empty(), "a flushed session is not empty");
    Ok(())
}

async fn flush_of_a_new_session_does_no_io(ctx: &Ctx) -> CaseResult {
    let (spy, s) = spied(ctx, None);
    s.insert("x", &1).await.ctx("insert")?;
    s.flush().await.ctx("flush")?;
    ensure!(
        spy.call_count() == 0,
        "flush of an unsaved session did I/O: {:?}",
        spy.calls()
    );
    ensure!(s.key().is_none(), "flush gave a key");
    Ok(())
}

async fn flush_then_save_mints_a_new_key(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("user", json!(1))]).await?;
    let s = handle(ctx, Some(k.clone()));
    s.flush().await.ctx("flush")?;
    s.insert("fresh", &true).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let new = s.key().ok_or("save gave no key")?;
    ensure!(new != k, "a flushed session was saved under its old key");
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists")?,
        "the old record came back"
    );
    let got = must_load(ctx, &new, "load").await?;
    ensure!(
        got.data == data(&[("fresh", json!(true))]),
        "new record holds {:?}",
        got.data
    );
    Ok(())
}

async fn cycle_key_keeps_data_and_kills_the_old_key(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    s.insert("a", "c").await.ctx("insert")?;
    s.insert("b", "d").await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let before = s.load().await.ctx("load")?;
    let old = s.key().ok_or("no key")?;
    s.cycle_key().await.ctx("cycle_key")?;
    let new = s.key().ok_or("cycle_key left no key")?;
    ensure!(new != old, "cycle_key kept the key");
    ensure!(
        !ctx.store.exists(&old).await.ctx("exists old")?,
        "the old key still exists"
    );
    ensure!(
        s.load().await.ctx("load")? == before,
        "cycle_key changed the data"
    );
    let stored = must_load(ctx, &new, "load new").await?;
    ensure!(
        stored.data == before,
        "the new record holds {:?}",
        stored.data
    );
    Ok(())
}

async fn cycle_key_with_no_session_cache(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("a", json!("c")), ("b", json!("d"))]).await?;
    let s = handle(ctx, Some(k.clone()));
    s.cycle_key().await.ctx("cycle_key")?;
    let new = s.key().ok_or("cycle_key left no key")?;
    ensure!(new != k, "cycle_key kept the key");
    let want = data(&[("a", json!("c")), ("b", json!("d"))]);
    ensure!(
        s.load().await.ctx("load")? == want,
        "data lost by cycle_key without a cache"
    );
    let stored = must_load(ctx, &new, "load new").await?;
    ensure!(
        stored.data == want,
        "the new record holds {:?}",
        stored.data
    );
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists old")?,
        "the old key still exists"
    );
    Ok(())
}

async fn cycle_key_of_a_new_session_creates_without_deleting(ctx: &Ctx) -> CaseResult {
    let (spy, s) = spied(ctx, None);
    s.insert("x", &1).await.ctx("insert")?;
    s.cycle_key().await.ctx("cycle_key")?;
    let k = s.key().ok_or("cycle_key left no key")?;
    let calls = spy.calls();
    ensure!(
        calls == vec![Call::Create(Some(k.clone()))],
        "cycle_key of a new session did {calls:?}, wanted one create"
    );
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data == data(&[("x", json!(1))]),
        "stored {:?}",
        got.data
    );
    Ok(())
}

async fn changes_after_cycle_key_are_saved_under_the_new_key(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("a", json!(1))]).await?;
    let s = handle(ctx, Some(k.clone()));
    s.cycle_key().await.ctx("cycle_key")?;
    s.insert("b", &2).await.ctx("insert")?;
    s.save().await.ctx("save after cycle_key")?;
    let new = s.key().ok_or("no key")?;
    let got = must_load(ctx, &new, "load").await?;
    ensure!(
        got.data == data(&[("a", json!(1)), ("b", json!(2))]),
        "stored {:?}",
        got.data
    );
    ensure!(
        ctx.store.load(&k).await.ctx("load old")?.is_none(),
        "the old key came back"
    );
    Ok(())
}

async fn invalid_key_gets_a_fresh_key(ctx: &Ctx) -> CaseResult {
    let s = Session::from_cookie(ctx.store.clone(), ctx.settings.clone(), Some("1"));
    s.save().await.ctx("save")?;
    let k = s.key().ok_or("save gave no key")?;
    ensure!(k.as_str() != "1", "the invalid key was adopted");
    ensure!(
        s.get_value("cat").await.ctx("get")?.is_none(),
        "a fresh session holds data"
    );
    ensure!(
        ctx.store.exists(&k).await.ctx("exists")?,
        "the fresh key was not stored"
    );
    Ok(())
}

async fn unknown_key_is_never_adopted(ctx: &Ctx) -> CaseResult {
    let unknown = key();
    let s = handle(ctx, Some(unknown.clone()));
    s.insert("x", &1).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let k = s.key().ok_or("save gave no key")?;
    ensure!(k != unknown, "the client's unknown key was adopted");
    ensure!(
        !ctx.store.exists(&unknown).await.ctx("exists")?,
        "a record was created under the client's key"
    );
    Ok(())
}

async fn expired_key_is_never_adopted(ctx: &Ctx) -> CaseResult {
    let old = key();
    ctx.store
        .insert_new(&old, &expired(&[("secret", json!("old"))]))
        .await
        .ctx("insert expired")?;
    let s = handle(ctx, Some(old.clone()));
    ensure!(
        s.get_value("secret").await.ctx("get")?.is_none(),
        "expired data was visible"
    );
    s.insert("x", &1).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let k = s.key().ok_or("save gave no key")?;
    ensure!(k != old, "an expired session's key was reused");
    ensure!(
        ctx.store.load(&old).await.ctx("load")?.is_none(),
        "the expired record was revived"
    );
    Ok(())
}

async fn load_does_not_create_a_record(ctx: &Ctx) -> CaseResult {
    let unknown = key();
    let (spy, s) = spied(ctx, Some(unknown.clone()));
    let items = s.load().await.ctx("load")?;
    ensure!(items.is_empty(), "an unknown key loaded {items:?}");
    ensure!(s.key().is_none(), "an unknown key was kept after load");
    let calls = spy.calls();
    ensure!(
        calls == vec![Call::Load(unknown.clone())],
        "loading an unknown key did {calls:?}, wanted a single load"
    );
    ensure!(
        !ctx.store.exists(&unknown).await.ctx("exists")?,
        "load created a record"
    );
    if ctx.caps.listing {
        let n = ctx.store.count().await.ctx("count")?;
        ensure!(n == 0, "load left {n} record(s) in the store");
    }
    Ok(())
}

async fn save_does_not_resurrect_a_session_logged_out_elsewhere(ctx: &Ctx) -> CaseResult {
    let s1 = handle(ctx, None);
    s1.insert("foo", "bar").await.ctx("insert")?;
    s1.save().await.ctx("s1 save")?;
    let k = s1.key().ok_or("no key")?;
    let s2 = handle(ctx, Some(k.clone()));
    s2.flush().await.ctx("s2 flush (logout)")?;
    s1.insert("modified", &true).await.ctx("s1 insert")?;
    expect_not_found(s1.save().await, "s1 save after logout")?;
    expect_not_found(s1.save().await, "s1 second save after logout")?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "the logged-out session came back"
    );
    let s3 = handle(ctx, Some(k));
    ensure!(
        s3.load().await.ctx("load")?.is_empty(),
        "a new handle sees the logged-out data"
    );
    Ok(())
}

async fn test_cookie_helpers(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    ensure!(
        !s.contains_key(TEST_COOKIE_NAME).await.ctx("contains")?,
        "test cookie present at start"
    );
    ensure!(
        !s.test_cookie_worked().await.ctx("worked")?,
        "test cookie worked before being set"
    );
    s.set_test_cookie().await.ctx("set")?;
    ensure!(
        s.test_cookie_worked().await.ctx("worked")?,
        "test cookie did not work"
    );
    s.save().await.ctx("save")?;
    let again = handle(ctx, s.key());
    ensure!(
        again.test_cookie_worked().await.ctx("worked")?,
        "test cookie lost by the store"
    );
    again.delete_test_cookie().await.ctx("delete")?;
    ensure!(
        !again.contains_key(TEST_COOKIE_NAME).await.ctx("contains")?,
        "test cookie not deleted"
    );
    ensure!(
        !again.test_cookie_worked().await.ctx("worked")?,
        "deleted test cookie still works"
    );
    Ok(())
}

async fn test_cookie_with_another_value_did_not_work(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[(TEST_COOKIE_NAME, json!("failed"))]).await?;
    let s = handle(ctx, Some(k));
    ensure!(
        !s.test_cookie_worked().await.ctx("worked")?,
        "a wrong test-cookie value worked"
    );
    Ok(())
}

async fn is_empty_follows_django(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    ensure!(s.is_empty(), "a new session is not empty");
    s.insert("x", &1).await.ctx("insert")?;
    ensure!(!s.is_empty(), "a session with data is empty");
    let k = saved_session(ctx, &[]).await?;
    let (spy, keyed) = spied(ctx, Some(k));
    ensure!(!keyed.is_empty(), "a session with a key is empty");
    ensure!(spy.call_count() == 0, "is_empty did I/O: {:?}", spy.calls());
    keyed.flush().await.ctx("flush")?;
    ensure!(keyed.is_empty(), "a flushed session is not empty");
    Ok(())
}

async fn the_handle_is_lazy(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let (spy, s) = spied(ctx, Some(k.clone()));
    ensure!(
        spy.call_count() == 0,
        "building a handle did I/O: {:?}",
        spy.calls()
    );
    s.set_expiry(Expiry::seconds(60));
    ensure!(
        spy.call_count() == 0,
        "set_expiry did I/O: {:?}",
        spy.calls()
    );
    s.get_value("x").await.ctx("get")?;
    s.contains_key("x").await.ctx("contains")?;
    s.keys().await.ctx("keys")?;
    ensure!(
        spy.calls() == vec![Call::Load(k)],
        "three reads did {:?}, wanted exactly one load",
        spy.calls()
    );
    Ok(())
}

async fn update_closure_sees_the_stored_value(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("n", json!(41))]).await?;
    let s = handle(ctx, Some(k.clone()));
    let n = s
        .update("n", |v: Option<u64>| v.map_or(0, |v| v + 1))
        .await
        .ctx("update")?;
    ensure!(n == 42, "update returned {n}, wanted 42");
    let fresh = s
        .update("absent", |v: Option<u64>| v.map_or(7, |v| v + 1))
        .await
        .ctx("update absent")?;
    ensure!(fresh == 7, "update of an absent key saw a value: {fresh}");
    s.save().await.ctx("save")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data == data(&[("n", json!(42)), ("absent", json!(7))]),
        "stored {:?}",
        got.data
    );
    Ok(())
}

async fn wrong_type_is_a_value_error(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("n", json!("not a number"))]).await?;
    let s = handle(ctx, Some(k));
    match s.get::<u64>("n").await {
        Err(Error::Value { key, .. }) if key == "n" => {}
        other => {
            return Err(format!(
                "reading a string as u64 gave {other:?}, wanted Error::Value"
            ));
        }
    }
    match s.pop::<Vec<bool>>("n").await {
        Err(Error::Value { .. }) => {}
        other => return Err(format!("pop as the wrong type gave {other:?}")),
    }
    Ok(())
}

async fn max_keys_is_enforced(ctx: &Ctx) -> CaseResult {
    let settings = settings_with(ctx, |s| s.max_keys = 3);
    let s = Session::new(ctx.store.clone(), settings, None);
    for i in 0..3 {
        s.insert(&format!("k{i}"), &i)
            .await
            .ctx("insert under the limit")?;
    }
    match s.insert("k3", &3).await {
        Err(Error::Limit(_)) => {}
        other => return Err(format!("a fourth key gave {other:?}, wanted Error::Limit")),
    }
    s.insert("k0", &"replaced")
        .await
        .ctx("replacing a key at the limit")?;
    s.save().await.ctx("save")?;
    let got = must_load(ctx, &s.key().ok_or("no key")?, "load").await?;
    ensure!(got.data.len() == 3, "stored {} keys", got.data.len());
    Ok(())
}

async fn version_advances_with_each_save(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    ensure!(s.version().is_none(), "a new session has a version");
    for i in 1..=4u64 {
        s.insert("i", &i).await.ctx("insert")?;
        s.save().await.ctx("save")?;
        ensure!(
            s.version() == Some(i),
            "after save #{i} the handle's version is {:?}",
            s.version()
        );
        let got = must_load(ctx, &s.key().ok_or("no key")?, "load").await?;
        ensure!(
            got.version == i,
            "after save #{i} the store's version is {}",
            got.version
        );
    }
    Ok(())
}

async fn created_at_survives_saves(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("n", json!(0))]).await?;
    let created = must_load(ctx, &k, "load").await?.created_at;
    for i in 1..=3 {
        let s = handle(ctx, Some(k.clone()));
        s.insert("n", &i).await.ctx("insert")?;
        s.save().await.ctx("save")?;
        let got = must_load(ctx, &k, "load").await?;
        ensure!(
            got.created_at == created,
            "save #{i} moved created_at to {:?}",
            got.created_at
        );
    }
    Ok(())
}

async fn clones_share_one_state(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    let c = s.clone();
    c.insert("x", &1).await.ctx("insert via clone")?;
    ensure!(
        s.get::<i64>("x").await.ctx("get")? == Some(1),
        "a clone's insert is invisible"
    );
    s.save().await.ctx("save")?;
    ensure!(
        c.key().is_some() && c.key() == s.key(),
        "a clone does not see the saved key"
    );
    Ok(())
}

async fn set_expiry_marks_accessed_and_modified(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("x", json!(1))]).await?;
    let s = handle(ctx, Some(k));
    s.set_expiry(Expiry::seconds(300));
    ensure!(
        flags(&s) == (true, true),
        "flags after set_expiry: {:?}",
        flags(&s)
    );
    let v: Option<Value> = s.get_value("x").await.ctx("get")?;
    ensure!(v == Some(json!(1)), "set_expiry lost the data: {v:?}");
    ensure!(
        s.expiry().await.ctx("expiry")? == Expiry::Idle(300),
        "set_expiry was overridden by the load"
    );
    Ok(())
}
