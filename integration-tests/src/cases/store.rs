//! The store contract.

use serde_json::json;
use session_core::{Error, Inserted, create_with};

use super::{Ctx as _, always, case, ensure, expired, key, record, sample};
use crate::{Case, CaseResult, Ctx};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(Store, create_then_load, always),
        case!(Store, load_missing_is_none),
        case!(Store, insert_new_never_overwrites),
        case!(Store, create_rerolls_on_collision_through_the_key_hook),
        case!(Store, update_bumps_version),
        case!(Store, update_after_delete_is_not_found),
        case!(Store, compare_and_set_conflict_is_detected),
        case!(Store, delete_is_idempotent),
        case!(Store, load_never_returns_expired),
    ]
}

async fn create_then_load(ctx: &Ctx) -> CaseResult {
    let r = sample();
    let k = ctx.store.create(&r).await.ctx("create")?;
    let got = ctx.store.load(&k).await.ctx("load")?;
    ensure!(got.as_ref().map(|g| &g.data) == Some(&r.data), "loaded {got:?}, wanted {r:?}");
    ensure!(got.map(|g| g.version) == Some(1), "a new record has version 1");
    Ok(())
}

async fn load_missing_is_none(ctx: &Ctx) -> CaseResult {
    let got = ctx.store.load(&key()).await.ctx("load")?;
    ensure!(got.is_none(), "unknown key loaded {got:?}");
    Ok(())
}

async fn insert_new_never_overwrites(ctx: &Ctx) -> CaseResult {
    let k = key();
    let first = record(&[("who", json!("first"))]);
    ensure!(
        ctx.store.insert_new(&k, &first).await.ctx("insert")? == Inserted::Created,
        "first insert must create"
    );
    let second = record(&[("who", json!("second"))]);
    let again = ctx.store.insert_new(&k, &second).await.ctx("insert again")?;
    ensure!(again == Inserted::KeyTaken, "second insert on a live key returned {again:?}");
    let got = ctx.store.load(&k).await.ctx("load")?.ok_or("record vanished")?;
    ensure!(got.data == first.data, "insert_new overwrote the record: {got:?}");
    Ok(())
}

async fn create_rerolls_on_collision_through_the_key_hook(ctx: &Ctx) -> CaseResult {
    let taken = ctx.store.create(&record(&[("who", json!("owner"))])).await.ctx("create")?;
    let fresh = key();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let (t, f) = (taken.clone(), fresh.clone());
    let gen_keys = move || {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Ok(t.clone())
        } else {
            Ok(f.clone())
        }
    };
    let got = create_with(ctx.store.as_ref(), &record(&[("who", json!("intruder"))]), &gen_keys)
        .await
        .ctx("create_with")?;
    ensure!(got == fresh, "create did not re-roll to the second key");
    let owner = ctx.store.load(&taken).await.ctx("load")?.ok_or("owner vanished")?;
    ensure!(owner.data.get("who") == Some(&json!("owner")), "collision overwrote the owner: {owner:?}");
    Ok(())
}

async fn update_bumps_version(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let v2 = ctx.store.update(&k, &record(&[("n", json!(2))]), Some(1)).await.ctx("update")?;
    ensure!(v2 == 2, "version after one update is {v2}");
    let v3 = ctx.store.update(&k, &record(&[("n", json!(3))]), None).await.ctx("blind update")?;
    ensure!(v3 == 3, "version after two updates is {v3}");
    let got = ctx.store.load(&k).await.ctx("load")?.ok_or("vanished")?;
    ensure!(got.version == 3 && got.data.get("n") == Some(&json!(3)), "loaded {got:?}");
    Ok(())
}

async fn update_after_delete_is_not_found(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store.delete(&k).await.ctx("delete")?;
    for expected in [None, Some(1)] {
        match ctx.store.update(&k, &sample(), expected).await {
            Err(Error::NotFound) => {}
            other => return Err(format!("update after delete gave {other:?}, wanted NotFound")),
        }
    }
    ensure!(ctx.store.load(&k).await.ctx("load")?.is_none(), "update resurrected the session");
    Ok(())
}

async fn compare_and_set_conflict_is_detected(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store.update(&k, &record(&[("a", json!(1))]), Some(1)).await.ctx("first writer")?;
    match ctx.store.update(&k, &record(&[("b", json!(2))]), Some(1)).await {
        Err(Error::Conflict { expected: 1, found: 2 }) => {}
        other => return Err(format!("stale write gave {other:?}, wanted Conflict 1 vs 2")),
    }
    let got = ctx.store.load(&k).await.ctx("load")?.ok_or("vanished")?;
    ensure!(got.data.get("a") == Some(&json!(1)) && !got.data.contains_key("b"), "stale write landed: {got:?}");
    Ok(())
}

async fn delete_is_idempotent(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ensure!(ctx.store.delete(&k).await.ctx("delete")?, "first delete reports a record");
    ensure!(!ctx.store.delete(&k).await.ctx("delete again")?, "second delete reports none");
    ensure!(!ctx.store.delete(&key()).await.ctx("delete unknown")?, "unknown key reports none");
    Ok(())
}

async fn load_never_returns_expired(ctx: &Ctx) -> CaseResult {
    let k = key();
    ctx.store.insert_new(&k, &expired(&[("x", json!(1))])).await.ctx("insert expired")?;
    ensure!(ctx.store.load(&k).await.ctx("load")?.is_none(), "expired record returned before clear_expired");
    ensure!(!ctx.store.exists(&k).await.ctx("exists")?, "exists() true for an expired record");
    Ok(())
}
