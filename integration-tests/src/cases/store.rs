//! The store contract: create, insert_new, load, update, delete, touch, exists, versions.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use session_core::{
    Error, Expiry, Inserted, KeyError, Record, SessionKey, Timestamp, create_with,
    store::MAX_CREATE_ATTEMPTS,
};

use super::{
    Ctx as _, LIVE_SECS, case, ensure, expect_not_found, key, key_of, must_load, near, record,
    sample,
};
use crate::{Case, CaseResult, Ctx};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(Store, create_then_load),
        case!(Store, create_mints_a_valid_key),
        case!(Store, creates_mint_distinct_keys),
        case!(Store, load_missing_is_none),
        case!(Store, insert_new_on_a_free_key_creates),
        case!(Store, insert_new_never_overwrites),
        case!(Store, insert_new_keeps_the_given_version),
        case!(Store, create_rerolls_on_collision_through_the_key_hook),
        case!(Store, create_gives_up_when_every_key_is_taken),
        case!(Store, create_with_a_failing_key_generator_writes_nothing),
        case!(Store, update_bumps_version),
        case!(Store, update_returns_the_version_load_reports),
        case!(Store, update_ignores_the_records_own_version),
        case!(Store, update_with_the_current_version_succeeds),
        case!(Store, update_replaces_the_data_entirely),
        case!(Store, update_stores_expiry_policy_created_at_and_deadline),
        case!(Store, update_after_delete_is_not_found),
        case!(
            Store,
            update_after_delete_with_expected_version_is_not_found
        ),
        case!(Store, update_of_a_never_created_key_is_not_found),
        case!(Store, compare_and_set_conflict_is_detected),
        case!(Store, conflict_reports_the_stored_version),
        case!(Store, a_conflicting_write_changes_nothing),
        case!(Store, delete_is_idempotent),
        case!(Store, delete_removes_only_its_key),
        case!(Store, delete_then_insert_new_reuses_the_key),
        case!(Store, exists_tracks_the_records_life),
        case!(Store, exists_of_an_unknown_key_creates_nothing),
        case!(Store, touch_keeps_data_and_version),
        case!(Store, touch_moves_the_deadline),
        case!(
            Store,
            update_after_touch_with_the_pre_touch_version_succeeds
        ),
        case!(Store, touch_does_not_clobber_a_concurrent_update),
        case!(Store, touch_of_a_missing_key_is_not_found),
        case!(Store, touch_after_delete_does_not_resurrect),
        case!(Store, alphabet_edge_keys_are_distinct_records),
        case!(Store, keys_sharing_a_prefix_do_not_collide),
        case!(Store, expiry_policy_and_created_at_round_trip),
        case!(Store, every_expiry_policy_round_trips),
        case!(Store, loaded_record_carries_its_deadline),
        case!(Store, load_lazy_reads_what_load_reads),
    ]
}

/// `load_lazy` (the session handle's load, which may leave the data encoded) answers
/// as `load` does: the same header, every key's value, absent keys, missing and expired
/// records.
async fn load_lazy_reads_what_load_reads(ctx: &Ctx) -> CaseResult {
    let mut wide = session_core::SessionData::new();
    for i in 0..300 {
        wide.insert(
            format!("k{i}"),
            json!({"i": i, "s": format!("v{i}"), "l": [i, null]}),
        );
    }
    let mut signed_in = sample();
    signed_in.meta.principal = Some("lazy-reader@example.com".into());
    signed_in.meta.auth_hash = Some("hash".into());
    for r in [sample(), record(&[]), super::record_of(wide), signed_in] {
        let k = ctx.store.create(&r).await.ctx("create")?;
        let whole = must_load(ctx, &k, "load").await?;
        let lazy = ctx
            .store
            .load_lazy(&k)
            .await
            .ctx("load_lazy")?
            .ok_or("load_lazy of a live record gave None")?;
        crate::lazy::lazy_reads_as(&lazy, &whole, &["", "k", "k5x", "zzz"])?;
        ctx.store.delete(&k).await.ctx("delete")?;
        let gone = ctx.store.load_lazy(&k).await.ctx("load_lazy")?;
        ensure!(
            gone.is_none(),
            "load_lazy of a deleted record gave {gone:?}"
        );
    }
    let missing = ctx.store.load_lazy(&key()).await.ctx("load_lazy")?;
    ensure!(
        missing.is_none(),
        "load_lazy of a missing key gave {missing:?}"
    );
    Ok(())
}

async fn create_then_load(ctx: &Ctx) -> CaseResult {
    let r = sample();
    let k = ctx.store.create(&r).await.ctx("create")?;
    let got = ctx.store.load(&k).await.ctx("load")?;
    ensure!(
        got.as_ref().map(|g| &g.data) == Some(&r.data),
        "loaded {got:?}, wanted {r:?}"
    );
    ensure!(
        got.map(|g| g.version) == Some(1),
        "a new record has version 1"
    );
    Ok(())
}

async fn create_mints_a_valid_key(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let reparsed = SessionKey::parse(k.as_str());
    ensure!(
        reparsed.as_ref() == Ok(&k),
        "create returned a key that does not parse back: {reparsed:?}"
    );
    Ok(())
}

async fn creates_mint_distinct_keys(ctx: &Ctx) -> CaseResult {
    let mut seen = std::collections::HashSet::new();
    for i in 0..50 {
        let k = ctx
            .store
            .create(&record(&[("i", json!(i))]))
            .await
            .ctx("create")?;
        ensure!(
            seen.insert(k),
            "create #{i} returned a key it had returned before"
        );
    }
    Ok(())
}

async fn load_missing_is_none(ctx: &Ctx) -> CaseResult {
    let got = ctx.store.load(&key()).await.ctx("load")?;
    ensure!(got.is_none(), "unknown key loaded {got:?}");
    Ok(())
}

async fn insert_new_on_a_free_key_creates(ctx: &Ctx) -> CaseResult {
    let k = key();
    let r = sample();
    let res = ctx.store.insert_new(&k, &r).await.ctx("insert_new")?;
    ensure!(
        res == Inserted::Created,
        "insert_new on a free key gave {res:?}"
    );
    let got = must_load(ctx, &k, "load").await?;
    ensure!(got.data == r.data, "loaded {got:?}");
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
    let again = ctx
        .store
        .insert_new(&k, &second)
        .await
        .ctx("insert again")?;
    ensure!(
        again == Inserted::KeyTaken,
        "second insert on a live key returned {again:?}"
    );
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data == first.data && got.version == 1,
        "insert_new overwrote the record: {got:?}"
    );
    Ok(())
}

async fn insert_new_keeps_the_given_version(ctx: &Ctx) -> CaseResult {
    let k = key();
    let mut r = sample();
    r.version = 7;
    ctx.store.insert_new(&k, &r).await.ctx("insert_new")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.version == 7,
        "stored version is {}, wanted the record's 7",
        got.version
    );
    let v = ctx
        .store
        .update(&k, &sample(), Some(7))
        .await
        .ctx("update")?;
    ensure!(v == 8, "update after version 7 returned {v}");
    Ok(())
}

async fn create_rerolls_on_collision_through_the_key_hook(ctx: &Ctx) -> CaseResult {
    let taken = ctx
        .store
        .create(&record(&[("who", json!("owner"))]))
        .await
        .ctx("create")?;
    let fresh = key();
    let calls = AtomicUsize::new(0);
    let (t, f) = (taken.clone(), fresh.clone());
    let gen_keys = move || {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(t.clone())
        } else {
            Ok(f.clone())
        }
    };
    let got = create_with(
        ctx.store.as_ref(),
        &record(&[("who", json!("intruder"))]),
        &gen_keys,
    )
    .await
    .ctx("create_with")?;
    ensure!(got == fresh, "create did not re-roll to the second key");
    let owner = must_load(ctx, &taken, "load owner").await?;
    ensure!(
        owner.data.get("who") == Some(&json!("owner")),
        "collision overwrote the owner: {owner:?}"
    );
    let intruder = must_load(ctx, &fresh, "load re-rolled").await?;
    ensure!(
        intruder.data.get("who") == Some(&json!("intruder")),
        "the re-rolled key holds {intruder:?}"
    );
    Ok(())
}

async fn create_gives_up_when_every_key_is_taken(ctx: &Ctx) -> CaseResult {
    let taken = ctx
        .store
        .create(&record(&[("who", json!("owner"))]))
        .await
        .ctx("create")?;
    let calls = AtomicUsize::new(0);
    let t = taken.clone();
    let gen_keys = move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(t.clone())
    };
    match create_with(
        ctx.store.as_ref(),
        &record(&[("who", json!("intruder"))]),
        &gen_keys,
    )
    .await
    {
        Err(Error::KeyCollision { attempts }) if attempts == MAX_CREATE_ATTEMPTS => {}
        other => {
            return Err(format!(
                "create with only a taken key gave {other:?}, wanted KeyCollision"
            ));
        }
    }
    let owner = must_load(ctx, &taken, "load owner").await?;
    ensure!(
        owner.data.get("who") == Some(&json!("owner")) && owner.version == 1,
        "repeated collisions overwrote the owner: {owner:?}"
    );
    Ok(())
}

async fn create_with_a_failing_key_generator_writes_nothing(ctx: &Ctx) -> CaseResult {
    let gen_keys = || Err(KeyError::Random("entropy source unavailable (test)".into()));
    match create_with(ctx.store.as_ref(), &sample(), &gen_keys).await {
        Err(Error::InvalidKey(KeyError::Random(_))) => {}
        other => return Err(format!("a failing generator gave {other:?}")),
    }
    if ctx.caps.listing {
        let n = ctx.store.count().await.ctx("count")?;
        ensure!(n == 0, "a failed create left {n} record(s)");
    }
    Ok(())
}

async fn update_bumps_version(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let v2 = ctx
        .store
        .update(&k, &record(&[("n", json!(2))]), Some(1))
        .await
        .ctx("update")?;
    ensure!(v2 == 2, "version after one update is {v2}");
    let v3 = ctx
        .store
        .update(&k, &record(&[("n", json!(3))]), None)
        .await
        .ctx("blind update")?;
    ensure!(v3 == 3, "version after two updates is {v3}");
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.version == 3 && got.data.get("n") == Some(&json!(3)),
        "loaded {got:?}"
    );
    Ok(())
}

async fn update_returns_the_version_load_reports(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    for i in 0..5 {
        let v = ctx
            .store
            .update(&k, &record(&[("i", json!(i))]), None)
            .await
            .ctx("update")?;
        let got = must_load(ctx, &k, "load").await?;
        ensure!(
            got.version == v,
            "update returned version {v} but load reports {}",
            got.version
        );
    }
    Ok(())
}

async fn update_ignores_the_records_own_version(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let mut r = record(&[("n", json!(1))]);
    r.version = 99;
    let v = ctx.store.update(&k, &r, None).await.ctx("update")?;
    ensure!(
        v == 2,
        "update used the record's version field: returned {v}, wanted 2"
    );
    let got = must_load(ctx, &k, "load").await?;
    ensure!(got.version == 2, "stored version {}, wanted 2", got.version);
    Ok(())
}

async fn update_with_the_current_version_succeeds(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let mut expected = 1;
    for i in 0..4 {
        expected = ctx
            .store
            .update(&k, &record(&[("i", json!(i))]), Some(expected))
            .await
            .ctx("compare-and-set update with the current version")?;
    }
    ensure!(
        expected == 5,
        "after four CAS updates the version is {expected}"
    );
    Ok(())
}

async fn update_replaces_the_data_entirely(ctx: &Ctx) -> CaseResult {
    let k = ctx
        .store
        .create(&record(&[("a", json!(1)), ("b", json!(2))]))
        .await
        .ctx("create")?;
    ctx.store
        .update(&k, &record(&[("c", json!(3))]), Some(1))
        .await
        .ctx("update")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data == super::data(&[("c", json!(3))]),
        "update merged instead of replacing: {:?}",
        got.data
    );
    Ok(())
}

async fn update_stores_expiry_policy_created_at_and_deadline(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let now = Timestamp::now();
    let mut r = sample();
    r.expiry = Expiry::Idle(7_200);
    r.created_at = now.add_secs(-1_234);
    r.expires_at = now.add_secs(7_200);
    ctx.store.update(&k, &r, Some(1)).await.ctx("update")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.expiry == r.expiry,
        "policy {:?}, wanted {:?}",
        got.expiry,
        r.expiry
    );
    ensure!(
        got.created_at == r.created_at,
        "created_at {:?}, wanted {:?}",
        got.created_at,
        r.created_at
    );
    ensure!(
        near(got.expires_at, r.expires_at),
        "deadline {:?}, wanted about {:?}",
        got.expires_at,
        r.expires_at
    );
    Ok(())
}

async fn update_after_delete_is_not_found(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store.delete(&k).await.ctx("delete")?;
    expect_not_found(
        ctx.store.update(&k, &sample(), None).await,
        "blind update after delete",
    )?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "update resurrected the session"
    );
    Ok(())
}

async fn update_after_delete_with_expected_version_is_not_found(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store.delete(&k).await.ctx("delete")?;
    expect_not_found(
        ctx.store.update(&k, &sample(), Some(1)).await,
        "compare-and-set update after delete",
    )?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "update resurrected the session"
    );
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists")?,
        "exists() sees a resurrected session"
    );
    Ok(())
}

async fn update_of_a_never_created_key_is_not_found(ctx: &Ctx) -> CaseResult {
    let k = key();
    expect_not_found(ctx.store.update(&k, &sample(), None).await, "update")?;
    expect_not_found(ctx.store.update(&k, &sample(), Some(1)).await, "CAS update")?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "update of an unknown key created it"
    );
    Ok(())
}

async fn compare_and_set_conflict_is_detected(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store
        .update(&k, &record(&[("a", json!(1))]), Some(1))
        .await
        .ctx("first writer")?;
    match ctx
        .store
        .update(&k, &record(&[("b", json!(2))]), Some(1))
        .await
    {
        Err(Error::Conflict {
            expected: 1,
            found: 2,
        }) => {}
        other => {
            return Err(format!(
                "stale write gave {other:?}, wanted Conflict 1 vs 2"
            ));
        }
    }
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data.get("a") == Some(&json!(1)) && !got.data.contains_key("b"),
        "stale write landed: {got:?}"
    );
    Ok(())
}

async fn conflict_reports_the_stored_version(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    for _ in 0..3 {
        ctx.store.update(&k, &sample(), None).await.ctx("update")?;
    }
    // A version from the future conflicts as surely as one from the past.
    for stale in [1, 2, 3, 5, 100] {
        match ctx.store.update(&k, &sample(), Some(stale)).await {
            Err(Error::Conflict { expected, found: 4 }) if expected == stale => {}
            other => {
                return Err(format!(
                    "update expecting {stale} on version 4 gave {other:?}"
                ));
            }
        }
    }
    Ok(())
}

async fn a_conflicting_write_changes_nothing(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let before = must_load(ctx, &k, "load before").await?;
    let mut r = record(&[("evil", json!(true))]);
    r.expires_at = Timestamp::now().add_secs(LIVE_SECS * 10);
    r.expiry = Expiry::Idle(1);
    let res = ctx.store.update(&k, &r, Some(42)).await;
    ensure!(
        matches!(res, Err(Error::Conflict { .. })),
        "update with a wrong version gave {res:?}"
    );
    let after = must_load(ctx, &k, "load after").await?;
    ensure!(
        after.data == before.data
            && after.version == before.version
            && after.expiry == before.expiry
            && near(after.expires_at, before.expires_at),
        "a refused write changed the record: before {before:?}, after {after:?}"
    );
    Ok(())
}

async fn delete_is_idempotent(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ensure!(
        ctx.store.delete(&k).await.ctx("delete")?,
        "first delete reports a record"
    );
    ensure!(
        !ctx.store.delete(&k).await.ctx("delete again")?,
        "second delete reports none"
    );
    ensure!(
        !ctx.store.delete(&key()).await.ctx("delete unknown")?,
        "unknown key reports none"
    );
    Ok(())
}

async fn delete_removes_only_its_key(ctx: &Ctx) -> CaseResult {
    let a = ctx
        .store
        .create(&record(&[("who", json!("a"))]))
        .await
        .ctx("create a")?;
    let b = ctx
        .store
        .create(&record(&[("who", json!("b"))]))
        .await
        .ctx("create b")?;
    ctx.store.delete(&a).await.ctx("delete a")?;
    ensure!(
        ctx.store.load(&a).await.ctx("load a")?.is_none(),
        "a survived its delete"
    );
    let got = must_load(ctx, &b, "load b").await?;
    ensure!(
        got.data.get("who") == Some(&json!("b")),
        "b changed: {got:?}"
    );
    Ok(())
}

async fn delete_then_insert_new_reuses_the_key(ctx: &Ctx) -> CaseResult {
    let k = key();
    ctx.store
        .insert_new(&k, &record(&[("gen", json!(1))]))
        .await
        .ctx("insert")?;
    ctx.store.delete(&k).await.ctx("delete")?;
    let res = ctx
        .store
        .insert_new(&k, &record(&[("gen", json!(2))]))
        .await
        .ctx("insert after delete")?;
    ensure!(res == Inserted::Created, "insert after delete gave {res:?}");
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data.get("gen") == Some(&json!(2)) && got.version == 1,
        "loaded {got:?}"
    );
    Ok(())
}

async fn exists_tracks_the_records_life(ctx: &Ctx) -> CaseResult {
    let k = key();
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists before")?,
        "exists before insert"
    );
    ctx.store.insert_new(&k, &sample()).await.ctx("insert")?;
    ensure!(
        ctx.store.exists(&k).await.ctx("exists")?,
        "exists false for a live record"
    );
    ctx.store.update(&k, &sample(), None).await.ctx("update")?;
    ensure!(
        ctx.store.exists(&k).await.ctx("exists after update")?,
        "exists false after update"
    );
    ctx.store.delete(&k).await.ctx("delete")?;
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists after delete")?,
        "exists true after delete"
    );
    Ok(())
}

async fn exists_of_an_unknown_key_creates_nothing(ctx: &Ctx) -> CaseResult {
    let k = key();
    for _ in 0..3 {
        ensure!(
            !ctx.store.exists(&k).await.ctx("exists")?,
            "exists true for an unknown key"
        );
    }
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "exists created a record"
    );
    let res = ctx.store.insert_new(&k, &sample()).await.ctx("insert")?;
    ensure!(
        res == Inserted::Created,
        "exists left something behind: insert gave {res:?}"
    );
    Ok(())
}

async fn touch_keeps_data_and_version(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store
        .update(&k, &record(&[("n", json!(2))]), Some(1))
        .await
        .ctx("update")?;
    let before = must_load(ctx, &k, "load before").await?;
    ctx.store
        .touch(&k, Timestamp::now().add_secs(LIVE_SECS * 2))
        .await
        .ctx("touch")?;
    let after = must_load(ctx, &k, "load after").await?;
    ensure!(
        after.version == before.version,
        "touch changed the version from {} to {}",
        before.version,
        after.version
    );
    ensure!(
        after.data == before.data
            && after.expiry == before.expiry
            && after.created_at == before.created_at,
        "touch rewrote the record: before {before:?}, after {after:?}"
    );
    Ok(())
}

async fn touch_moves_the_deadline(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    for secs in [LIVE_SECS * 3, LIVE_SECS / 2, LIVE_SECS * 24] {
        let deadline = Timestamp::now().add_secs(secs);
        ctx.store.touch(&k, deadline).await.ctx("touch")?;
        let got = must_load(ctx, &k, "load").await?;
        ensure!(
            near(got.expires_at, deadline),
            "touch to +{secs}s left the deadline at {:?}, wanted about {deadline:?}",
            got.expires_at
        );
    }
    Ok(())
}

async fn update_after_touch_with_the_pre_touch_version_succeeds(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let v = must_load(ctx, &k, "load").await?.version;
    ctx.store
        .touch(&k, Timestamp::now().add_secs(LIVE_SECS * 2))
        .await
        .ctx("touch")?;
    let v2 = ctx
        .store
        .update(&k, &record(&[("after", json!("touch"))]), Some(v))
        .await
        .ctx("update with the version read before touch")?;
    ensure!(
        v2 == v + 1,
        "update after touch returned {v2}, wanted {}",
        v + 1
    );
    Ok(())
}

async fn touch_does_not_clobber_a_concurrent_update(ctx: &Ctx) -> CaseResult {
    // A request read the record (and may touch it later), another request updates it
    // meanwhile: the touch must move the deadline of the *updated* record only.
    let k = ctx
        .store
        .create(&record(&[("n", json!("old"))]))
        .await
        .ctx("create")?;
    let snapshot = must_load(ctx, &k, "first request's load").await?;
    ctx.store
        .update(&k, &record(&[("n", json!("new"))]), Some(snapshot.version))
        .await
        .ctx("second request's update")?;
    let deadline = Timestamp::now().add_secs(LIVE_SECS * 5);
    ctx.store
        .touch(&k, deadline)
        .await
        .ctx("first request's touch")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data.get("n") == Some(&json!("new")),
        "touch wrote back stale data: {got:?}"
    );
    ensure!(
        got.version == snapshot.version + 1,
        "touch changed the version: {got:?}"
    );
    ensure!(
        near(got.expires_at, deadline),
        "touch did not move the deadline: {got:?}"
    );
    Ok(())
}

async fn touch_of_a_missing_key_is_not_found(ctx: &Ctx) -> CaseResult {
    let k = key();
    expect_not_found(
        ctx.store
            .touch(&k, Timestamp::now().add_secs(LIVE_SECS))
            .await,
        "touch of an unknown key",
    )?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "touch created a record"
    );
    Ok(())
}

async fn touch_after_delete_does_not_resurrect(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store.delete(&k).await.ctx("delete")?;
    expect_not_found(
        ctx.store
            .touch(&k, Timestamp::now().add_secs(LIVE_SECS))
            .await,
        "touch after delete",
    )?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "touch resurrected the record"
    );
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists")?,
        "exists after touch of a deleted key"
    );
    Ok(())
}

async fn alphabet_edge_keys_are_distinct_records(ctx: &Ctx) -> CaseResult {
    let keys = [key_of('0'), key_of('9'), key_of('a'), key_of('z')];
    for (i, k) in keys.iter().enumerate() {
        let res = ctx
            .store
            .insert_new(k, &record(&[("i", json!(i))]))
            .await
            .ctx("insert")?;
        ensure!(
            res == Inserted::Created,
            "insert of edge key #{i} gave {res:?}"
        );
    }
    for (i, k) in keys.iter().enumerate() {
        let got = must_load(ctx, k, "load edge key").await?;
        ensure!(
            got.data.get("i") == Some(&json!(i)),
            "edge key #{i} holds {got:?}"
        );
    }
    Ok(())
}

async fn keys_sharing_a_prefix_do_not_collide(ctx: &Ctx) -> CaseResult {
    // Stores that match keys by prefix or pattern (SCAN, LIKE, file globbing) would mix these up.
    let base = "k".repeat(session_core::key::KEY_LEN - 1);
    let keys: Vec<SessionKey> = ["a", "b", "0"]
        .iter()
        .map(|last| SessionKey::parse(&format!("{base}{last}")).expect("valid key"))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        ctx.store
            .insert_new(k, &record(&[("i", json!(i))]))
            .await
            .ctx("insert")?;
    }
    ctx.store.delete(&keys[0]).await.ctx("delete first")?;
    ensure!(
        ctx.store.load(&keys[0]).await.ctx("load")?.is_none(),
        "delete missed"
    );
    for (i, k) in keys.iter().enumerate().skip(1) {
        let got = must_load(ctx, k, "load neighbour").await?;
        ensure!(
            got.data.get("i") == Some(&json!(i)),
            "neighbour #{i} holds {got:?}"
        );
    }
    Ok(())
}

async fn expiry_policy_and_created_at_round_trip(ctx: &Ctx) -> CaseResult {
    let now = Timestamp::now();
    // A millisecond part catches stores that keep whole seconds.
    let created = super::millis_past_second(now.add_secs(-86_400), 123);
    let r = Record {
        data: super::data(&[("x", json!(1))]),
        expiry: Expiry::Idle(5_400),
        created_at: created,
        expires_at: now.add_secs(5_400),
        version: 1,
        meta: Default::default(),
    };
    let k = ctx.store.create(&r).await.ctx("create")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.expiry == r.expiry,
        "policy {:?}, wanted {:?}",
        got.expiry,
        r.expiry
    );
    ensure!(
        got.created_at == created,
        "created_at {:?}, wanted {created:?} (to the millisecond)",
        got.created_at
    );
    Ok(())
}

async fn every_expiry_policy_round_trips(ctx: &Ctx) -> CaseResult {
    let at = super::millis_past_second(Timestamp::now().add_secs(LIVE_SECS), 7);
    for policy in [
        Expiry::Default,
        Expiry::BrowserClose,
        Expiry::Idle(1),
        Expiry::Idle(-10),
        Expiry::Idle(i64::MAX),
        Expiry::At(at),
    ] {
        let mut r = sample();
        r.expiry = policy;
        let k = ctx.store.create(&r).await.ctx("create")?;
        let got = must_load(ctx, &k, "load").await?;
        ensure!(
            got.expiry == policy,
            "policy {policy:?} came back as {:?}",
            got.expiry
        );
    }
    Ok(())
}

async fn loaded_record_carries_its_deadline(ctx: &Ctx) -> CaseResult {
    let r = sample();
    let k = ctx.store.create(&r).await.ctx("create")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        near(got.expires_at, r.expires_at),
        "loaded deadline {:?}, wanted about {:?}",
        got.expires_at,
        r.expires_at
    );
    Ok(())
}
