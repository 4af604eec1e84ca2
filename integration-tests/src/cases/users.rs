//! Every session of a user: the per-principal index ([`session_core::users`]) and the
//! handle's sign-in operations.
//!
//! Most cases need [`SessionStore::user_index`]; on a store without one they report
//! themselves not applicable at run time (the way the corrupt-bytes cases treat
//! [`SessionStore::raw`]), because an index is found by discovery, not declared in
//! [`session_core::Capabilities`]. Seven cases run on every store: sign-in metadata
//! round-trips through the engine, the auth check flushes through the store's delete,
//! invalid principals are refused before any I/O, and the handle's listing operations
//! report [`Error::Unsupported`] without an index.
//!
//! The cases drive both the raw [`UserIndex`] and the [`Session`] handle. They accept a
//! store that hashes keys at rest ([`session_core::HashedKeys`]): a listing names the
//! key the store holds, which is either the session's key or its derived key.
//!
//! Expired sessions are written with deadlines already past (the suite's timing rules):
//! no case waits for a deadline. Concurrency cases spawn their tasks and give up after
//! [`CONCURRENCY_DEADLINE`].
//!
//! [`SessionStore::user_index`]: session_core::SessionStore::user_index
//! [`SessionStore::raw`]: session_core::SessionStore::raw

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use session_core::hashed::derive_key;
use session_core::users::{MAX_PRINCIPAL_LEN, auth_check_fn, session_id, validate_principal};
use session_core::{
    Error, Record, Session, SessionKey, SessionMeta, Timestamp, UserIndex, UserSession,
};

use super::{
    CONCURRENCY_DEADLINE, Ctx as _, EXPIRED_SECS, LIVE_SECS, TOLERANCE_MS, case, data, ensure,
    handle, key, must_load, near, record, saved_session,
};
use crate::{Case, CaseResult, Ctx, SpyStore, not_applicable};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        // Need a user index.
        case!(Users, a_new_principal_has_no_sessions),
        case!(Users, login_lists_the_session),
        case!(Users, listings_are_per_principal),
        case!(Users, anonymous_sessions_are_never_listed),
        case!(Users, logout_leaves_the_listing),
        case!(Users, clear_and_save_leaves_the_listing),
        case!(Users, login_as_another_principal_moves_the_session),
        case!(Users, a_record_rebound_in_place_moves_between_listings),
        case!(Users, deleted_sessions_are_not_listed),
        case!(Users, expired_sessions_are_not_listed),
        case!(Users, sessions_are_listed_oldest_first),
        case!(Users, saves_keep_one_entry_per_session),
        case!(Users, cycle_key_moves_the_entry),
        case!(Users, end_other_sessions_keeps_the_current_one),
        case!(Users, end_session_ends_exactly_that_one),
        case!(Users, ending_all_sessions_stops_a_request_in_flight),
        case!(Users, ending_a_session_by_id_stops_a_request_in_flight),
        case!(Users, odd_principals_stay_separate),
        case!(Users, sixteen_concurrent_logins_are_all_listed),
        case!(
            Users,
            logins_racing_end_sessions_leave_no_live_session_unlisted
        ),
        // Every store.
        case!(Users, login_records_the_principal_outside_the_data),
        case!(Users, touch_records_last_seen_and_the_client),
        case!(Users, auth_check_mismatch_flushes_the_session),
        case!(Users, auth_check_match_keeps_the_session),
        case!(Users, auth_check_of_a_deleted_user_flushes_the_session),
        case!(Users, invalid_principals_are_refused_without_io),
        case!(Users, handle_operations_need_a_sign_in_and_an_index),
    ]
}

/// The store's user index, or "not applicable".
fn index(ctx: &Ctx) -> Result<&dyn UserIndex, String> {
    ctx.store
        .user_index()
        .ok_or_else(|| not_applicable("the store keeps no user index (user_index() is None)"))
}

/// A new session signed in as `principal` (auth hash `h1`); returns the handle and key.
async fn login(ctx: &Ctx, principal: &str) -> Result<(Session, SessionKey), String> {
    let s = handle(ctx, None);
    s.login(principal, Some("h1"))
        .await
        .ctx(&format!("login as {principal:?}"))?;
    let k = s
        .key()
        .ok_or_else(|| format!("a session signed in as {principal:?} has no key"))?;
    Ok((s, k))
}

/// A live record signed in as `principal`, last seen now.
fn signed_record(principal: &str) -> Record {
    let mut r = record(&[("n", json!(1))]);
    r.meta = SessionMeta {
        principal: Some(principal.to_owned()),
        auth_hash: Some("h1".to_owned()),
        last_seen: Some(Timestamp::now()),
        ..SessionMeta::default()
    };
    r
}

/// Whether `stored` is the key a store holds for the session key `k`: the key itself,
/// or its derived key behind [`session_core::HashedKeys`].
fn holds(stored: &SessionKey, k: &SessionKey) -> bool {
    stored == k || *stored == derive_key(k)
}

async fn list(
    ix: &dyn UserIndex,
    principal: &str,
    current: Option<&SessionKey>,
) -> Result<Vec<UserSession>, String> {
    ix.sessions_of(principal, current)
        .await
        .ctx(&format!("sessions_of({principal:?})"))
}

async fn count(ix: &dyn UserIndex, principal: &str) -> Result<u64, String> {
    ix.count_of(principal)
        .await
        .ctx(&format!("count_of({principal:?})"))
}

/// Checks the listing's shape (ids derived from stored keys, the principal, no
/// duplicates) and maps each entry to the session key among `keys` it stands for.
fn listed_among(
    listing: &[UserSession],
    principal: &str,
    keys: &[SessionKey],
) -> Result<BTreeSet<SessionKey>, String> {
    let mut found = BTreeSet::new();
    for e in listing {
        ensure!(
            e.id == session_id(&e.stored_key),
            "an entry's id {} is not session_id(stored_key)",
            e.id
        );
        ensure!(
            e.id.len() == 32 && e.id.bytes().all(|b| b.is_ascii_hexdigit()),
            "an entry's id {:?} is not 32 hex digits",
            e.id
        );
        ensure!(
            e.meta.principal.as_deref() == Some(principal),
            "the listing of {principal:?} holds a session of {:?}",
            e.meta.principal
        );
        let k = keys
            .iter()
            .find(|k| holds(&e.stored_key, k))
            .ok_or_else(|| {
                format!(
                    "the listing of {principal:?} holds a session ({}) that is none of the {} expected",
                    e.stored_key.fingerprint(),
                    keys.len()
                )
            })?;
        ensure!(
            found.insert(k.clone()),
            "the listing of {principal:?} holds one session twice"
        );
    }
    Ok(found)
}

/// Fails unless the listing of `principal` is exactly the sessions `want` (and its
/// count agrees).
async fn expect_listed(
    ix: &dyn UserIndex,
    principal: &str,
    want: &[SessionKey],
    what: &str,
) -> Result<(), String> {
    let listing = list(ix, principal, None).await?;
    let got = listed_among(&listing, principal, want).map_err(|e| format!("{what}: {e}"))?;
    ensure!(
        got.len() == want.len(),
        "{what}: {principal:?} lists {} sessions, wanted {}",
        got.len(),
        want.len()
    );
    ensure!(
        listing.iter().all(|e| !e.current),
        "{what}: an entry is current although no current key was given"
    );
    let n = count(ix, principal).await?;
    ensure!(
        n == want.len() as u64,
        "{what}: count_of({principal:?}) is {n}, wanted {}",
        want.len()
    );
    Ok(())
}

/// Fails unless no live record is stored under `k`.
async fn expect_gone(ctx: &Ctx, k: &SessionKey, what: &str) -> Result<(), String> {
    ensure!(
        ctx.store.load(k).await.ctx(what)?.is_none(),
        "{what}: the session still loads"
    );
    ensure!(
        !ctx.store.exists(k).await.ctx(what)?,
        "{what}: the session still exists"
    );
    Ok(())
}

/// Fails unless `res` is [`Error::InvalidPrincipal`].
fn expect_invalid<T: std::fmt::Debug>(res: session_core::Result<T>, what: &str) -> CaseResult {
    match res {
        Err(Error::InvalidPrincipal { .. }) => Ok(()),
        other => Err(format!("{what} gave {other:?}, wanted InvalidPrincipal")),
    }
}

async fn a_new_principal_has_no_sessions(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    // Another principal's and an anonymous session exist, so the store is not empty.
    let (_, bob) = login(ctx, "bob").await?;
    saved_session(ctx, &[("n", json!(1))]).await?;
    let listing = list(ix, "alice", None).await?;
    ensure!(listing.is_empty(), "alice lists {} sessions", listing.len());
    let n = count(ix, "alice").await?;
    ensure!(n == 0, "count_of(alice) is {n}");
    let ended = ix.end_sessions("alice", None).await.ctx("end_sessions")?;
    ensure!(ended == 0, "end_sessions of a new principal ended {ended}");
    let ended = ix
        .end_session("alice", &"0".repeat(32))
        .await
        .ctx("end_session")?;
    ensure!(!ended, "end_session of a new principal reported a session");
    expect_listed(ix, "bob", &[bob], "bob's session").await
}

async fn login_lists_the_session(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let before = Timestamp::now();
    let (s, k) = login(ctx, "alice").await?;
    let after = Timestamp::now();
    let listing = s.user_sessions().await.ctx("user_sessions")?;
    ensure!(
        listing.len() == 1,
        "alice lists {} sessions after one login",
        listing.len()
    );
    let e = &listing[0];
    ensure!(e.current, "the asking session is not marked current");
    ensure!(
        holds(&e.stored_key, &k),
        "the entry names another key than the session's"
    );
    ensure!(
        e.id == session_id(&e.stored_key),
        "the id is not session_id(stored_key)"
    );
    ensure!(
        e.meta.principal.as_deref() == Some("alice"),
        "the entry's principal is {:?}",
        e.meta.principal
    );
    ensure!(
        e.meta.auth_hash.as_deref() == Some("h1"),
        "the entry's auth hash is {:?}",
        e.meta.auth_hash
    );
    let in_window = |t: Timestamp| {
        before.millis_until(t) >= -TOLERANCE_MS && t.millis_until(after) >= -TOLERANCE_MS
    };
    let seen = e.meta.last_seen.ok_or("the entry has no last_seen")?;
    ensure!(
        in_window(seen),
        "last_seen {seen:?} is outside the login ({before:?}..{after:?})"
    );
    ensure!(
        in_window(e.created_at),
        "created_at {:?} is outside the login ({before:?}..{after:?})",
        e.created_at
    );
    let stored = s.stored_expires_at().ok_or("the handle has no deadline")?;
    ensure!(
        near(e.expires_at, stored),
        "the entry expires at {:?}, the session was written to expire at {stored:?}",
        e.expires_at
    );
    ensure!(
        Timestamp::now().secs_until(e.expires_at) >= 60,
        "the entry expires within a minute: {:?}",
        e.expires_at
    );
    // The raw index agrees, and marks the asked-for key only.
    let raw = list(ix, "alice", Some(&k)).await?;
    ensure!(
        raw.len() == 1 && raw[0].id == e.id && raw[0].current,
        "sessions_of with the current key disagrees with user_sessions"
    );
    let raw = list(ix, "alice", None).await?;
    ensure!(
        raw.len() == 1 && !raw[0].current,
        "sessions_of without a current key marks an entry current"
    );
    let other = key();
    let raw = list(ix, "alice", Some(&other)).await?;
    ensure!(
        raw.len() == 1 && !raw[0].current,
        "sessions_of with an unrelated current key marks an entry current"
    );
    Ok(())
}

async fn listings_are_per_principal(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(login(ctx, "alice").await?);
    }
    let (bob, bob_key) = login(ctx, "bob").await?;
    let alice_keys: Vec<SessionKey> = alice.iter().map(|(_, k)| k.clone()).collect();
    for (i, (s, k)) in alice.iter().enumerate() {
        let listing = s.user_sessions().await.ctx("alice's user_sessions")?;
        let got = listed_among(&listing, "alice", &alice_keys)?;
        ensure!(
            got.len() == 3,
            "alice's session {i} lists {} sessions, wanted 3",
            got.len()
        );
        let current: Vec<&UserSession> = listing.iter().filter(|e| e.current).collect();
        ensure!(
            current.len() == 1 && holds(&current[0].stored_key, k),
            "alice's session {i}: {} entries are current, wanted exactly its own",
            current.len()
        );
        let ids: BTreeSet<&str> = listing.iter().map(|e| e.id.as_str()).collect();
        ensure!(ids.len() == 3, "alice's sessions share ids");
    }
    let listing = bob.user_sessions().await.ctx("bob's user_sessions")?;
    ensure!(
        listing.len() == 1 && listing[0].current && holds(&listing[0].stored_key, &bob_key),
        "bob lists {} sessions, wanted his own only",
        listing.len()
    );
    expect_listed(ix, "alice", &alice_keys, "alice").await?;
    expect_listed(ix, "bob", &[bob_key], "bob").await
}

async fn anonymous_sessions_are_never_listed(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let mut anonymous = Vec::new();
    for i in 0..3 {
        anonymous.push(saved_session(ctx, &[("i", json!(i))]).await?);
    }
    ctx.store
        .create(&record(&[("user", json!("alice"))]))
        .await
        .ctx("create an anonymous record")?;
    let (_, k) = login(ctx, "alice").await?;
    expect_listed(ix, "alice", &[k], "one signed-in among anonymous sessions").await?;
    let s = handle(ctx, Some(anonymous[0].clone()));
    match s.user_sessions().await {
        Err(Error::NotSignedIn) => Ok(()),
        other => Err(format!(
            "user_sessions of an anonymous session gave {other:?}, wanted NotSignedIn"
        )),
    }
}

async fn logout_leaves_the_listing(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let (a, a_key) = login(ctx, "alice").await?;
    let (b, b_key) = login(ctx, "alice").await?;
    expect_listed(ix, "alice", &[a_key.clone(), b_key.clone()], "two logins").await?;
    a.logout().await.ctx("logout")?;
    expect_gone(ctx, &a_key, "the logged-out session").await?;
    let listing = b.user_sessions().await.ctx("user_sessions")?;
    ensure!(
        listing.len() == 1 && listing[0].current && holds(&listing[0].stored_key, &b_key),
        "after one of two sessions logged out, {} are listed",
        listing.len()
    );
    // Logout in a fresh handle (a later request) too.
    handle(ctx, Some(b_key.clone()))
        .flush()
        .await
        .ctx("flush")?;
    expect_listed(ix, "alice", &[], "both logged out").await
}

async fn clear_and_save_leaves_the_listing(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let (_, k) = login(ctx, "alice").await?;
    let s = handle(ctx, Some(k.clone()));
    s.clear();
    s.save().await.ctx("save after clear")?;
    ensure!(
        s.key().as_ref() == Some(&k),
        "clear then save changed the key"
    );
    let r = must_load(ctx, &k, "the cleared session").await?;
    ensure!(
        r.principal().is_none(),
        "the cleared session is still signed in as {:?}",
        r.principal()
    );
    expect_listed(ix, "alice", &[], "signed out by clear()").await
}

async fn login_as_another_principal_moves_the_session(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let (_, k) = login(ctx, "alice").await?;
    let s = handle(ctx, Some(k.clone()));
    s.insert_value("cart", json!(3)).await.ctx("insert")?;
    s.login("bob", Some("h2")).await.ctx("login as bob")?;
    let bob_key = s.key().ok_or("bob's session has no key")?;
    ensure!(bob_key != k, "login as another principal kept the key");
    expect_gone(ctx, &k, "alice's old key").await?;
    expect_listed(ix, "alice", &[], "alice after the re-login").await?;
    expect_listed(
        ix,
        "bob",
        std::slice::from_ref(&bob_key),
        "bob after the re-login",
    )
    .await?;
    let r = must_load(ctx, &bob_key, "bob's session").await?;
    ensure!(
        r.data.is_empty(),
        "alice's data followed the session to bob: {:?}",
        r.data
    );
    Ok(())
}

async fn a_record_rebound_in_place_moves_between_listings(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let k = ctx
        .store
        .create(&signed_record("alice"))
        .await
        .ctx("create")?;
    expect_listed(ix, "alice", std::slice::from_ref(&k), "created as alice").await?;
    let steps: [(Option<&str>, &str); 4] = [
        (Some("bob"), "rebound to bob"),
        (None, "made anonymous"),
        (Some("alice"), "signed in as alice again"),
        (Some("bob"), "rebound to bob again"),
    ];
    for (principal, what) in steps {
        let current = must_load(ctx, &k, what).await?;
        let mut next = match principal {
            Some(p) => signed_record(p),
            None => record(&[("n", json!(2))]),
        };
        next.created_at = current.created_at;
        ctx.store
            .update(&k, &next, Some(current.version))
            .await
            .ctx(what)?;
        for p in ["alice", "bob"] {
            let want = if principal == Some(p) {
                vec![k.clone()]
            } else {
                Vec::new()
            };
            expect_listed(ix, p, &want, &format!("{p} after the record was {what}")).await?;
        }
    }
    Ok(())
}

async fn deleted_sessions_are_not_listed(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let (_, a) = login(ctx, "alice").await?;
    let (_, b) = login(ctx, "alice").await?;
    let gone_id = list(ix, "alice", Some(&a))
        .await?
        .into_iter()
        .find(|e| e.current)
        .ok_or("the first session is not listed as current")?
        .id;
    ensure!(
        ctx.store.delete(&a).await.ctx("delete")?,
        "delete found no record"
    );
    expect_listed(ix, "alice", &[b], "after a delete").await?;
    let ended = ix
        .end_session("alice", &gone_id)
        .await
        .ctx("end_session of a deleted session")?;
    ensure!(!ended, "end_session of a deleted session reported true");
    Ok(())
}

async fn expired_sessions_are_not_listed(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let past = Timestamp::now().add_secs(-EXPIRED_SECS);
    let live = ctx
        .store
        .create(&signed_record("alice"))
        .await
        .ctx("create live")?;
    // Written already expired.
    let mut expired = signed_record("alice");
    expired.expires_at = past;
    ctx.store
        .insert_new(&key(), &expired)
        .await
        .ctx("insert expired")?;
    // Expired by an update.
    let updated = ctx
        .store
        .create(&signed_record("alice"))
        .await
        .ctx("create")?;
    let mut r = signed_record("alice");
    r.expires_at = past;
    ctx.store
        .update(&updated, &r, None)
        .await
        .ctx("update to a past deadline")?;
    // Expired by a touch.
    let touched = ctx
        .store
        .create(&signed_record("alice"))
        .await
        .ctx("create")?;
    ctx.store
        .touch(&touched, past)
        .await
        .ctx("touch to a past deadline")?;
    expect_listed(
        ix,
        "alice",
        std::slice::from_ref(&live),
        "with three expired sessions",
    )
    .await?;
    ctx.store.clear_expired().await.ctx("clear_expired")?;
    expect_listed(
        ix,
        "alice",
        std::slice::from_ref(&live),
        "after clear_expired",
    )
    .await?;
    let ended = ix.end_sessions("alice", None).await.ctx("end_sessions")?;
    ensure!(
        ended == 1,
        "end_sessions ended {ended} sessions, wanted the 1 live one"
    );
    expect_gone(ctx, &live, "the ended session").await
}

async fn sessions_are_listed_oldest_first(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let now = Timestamp::now();
    let mut by_age = BTreeMap::new();
    // Written out of order: middle, newest, oldest.
    for age in [2_000, 1_000, 3_000] {
        let mut r = signed_record("alice");
        r.created_at = now.add_secs(-age);
        let k = ctx.store.create(&r).await.ctx("create")?;
        by_age.insert(age, k);
    }
    let listing = list(ix, "alice", None).await?;
    let oldest_first: Vec<SessionKey> = by_age.values().rev().cloned().collect();
    listed_among(&listing, "alice", &oldest_first)?;
    ensure!(
        listing.len() == 3,
        "alice lists {} sessions, wanted 3",
        listing.len()
    );
    for (i, (e, k)) in listing.iter().zip(&oldest_first).enumerate() {
        ensure!(
            holds(&e.stored_key, k),
            "entry {i} is not the {}th oldest session (created_at {:?})",
            i + 1,
            e.created_at
        );
    }
    for (e, age) in listing.iter().zip([3_000, 2_000, 1_000]) {
        ensure!(
            near(e.created_at, now.add_secs(-age)),
            "an entry's created_at {:?} is not the stored one",
            e.created_at
        );
    }
    Ok(())
}

async fn saves_keep_one_entry_per_session(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let (_, k) = login(ctx, "alice").await?;
    let mut last_seen = list(ix, "alice", None).await?[0].meta.last_seen;
    for i in 0..5 {
        let s = handle(ctx, Some(k.clone()));
        s.insert_value("i", json!(i)).await.ctx("insert")?;
        s.save().await.ctx("save")?;
        let t = handle(ctx, Some(k.clone()));
        t.load().await.ctx("load")?;
        t.touch_if_due(Duration::ZERO).await.ctx("touch_if_due")?;
        expect_listed(
            ix,
            "alice",
            std::slice::from_ref(&k),
            &format!("after {} saves", i + 1),
        )
        .await?;
        let seen = list(ix, "alice", None).await?[0].meta.last_seen;
        ensure!(
            seen.is_some() && seen >= last_seen,
            "last_seen went from {last_seen:?} to {seen:?}"
        );
        last_seen = seen;
    }
    let r = must_load(ctx, &k, "after the saves").await?;
    ensure!(
        r.data.get("i") == Some(&json!(4)) && r.principal() == Some("alice"),
        "the saves lost data or the principal: {:?} {:?}",
        r.data,
        r.meta
    );
    Ok(())
}

async fn cycle_key_moves_the_entry(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let (_, old) = login(ctx, "alice").await?;
    let s = handle(ctx, Some(old.clone()));
    s.cycle_key().await.ctx("cycle_key")?;
    let new = s.key().ok_or("no key after cycle_key")?;
    ensure!(new != old, "cycle_key kept the key");
    expect_gone(ctx, &old, "the old key").await?;
    expect_listed(ix, "alice", std::slice::from_ref(&new), "after cycle_key").await?;
    let listing = s.user_sessions().await.ctx("user_sessions")?;
    ensure!(
        listing.len() == 1 && listing[0].current,
        "the cycled session is not listed as current"
    );
    Ok(())
}

async fn end_other_sessions_keeps_the_current_one(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let mut alice = Vec::new();
    for _ in 0..4 {
        alice.push(login(ctx, "alice").await?);
    }
    let (_, bob) = login(ctx, "bob").await?;
    let (me, my_key) = &alice[0];
    let ended = me.end_other_sessions().await.ctx("end_other_sessions")?;
    ensure!(ended == 3, "end_other_sessions ended {ended}, wanted 3");
    for (_, k) in &alice[1..] {
        expect_gone(ctx, k, "another session of alice").await?;
        let other = handle(ctx, Some(k.clone()));
        ensure!(
            other.load().await.ctx("load")?.is_empty() && other.key().is_none(),
            "an ended session still loads through a handle"
        );
    }
    must_load(ctx, my_key, "the current session").await?;
    let listing = me.user_sessions().await.ctx("user_sessions")?;
    ensure!(
        listing.len() == 1 && listing[0].current && holds(&listing[0].stored_key, my_key),
        "after end_other_sessions alice lists {} sessions",
        listing.len()
    );
    expect_listed(ix, "bob", std::slice::from_ref(&bob), "bob").await?;
    must_load(ctx, &bob, "bob's session").await?;
    let again = me.end_other_sessions().await.ctx("end_other_sessions")?;
    ensure!(again == 0, "a second end_other_sessions ended {again}");
    Ok(())
}

async fn end_session_ends_exactly_that_one(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(login(ctx, "alice").await?);
    }
    let (bob, bob_key) = login(ctx, "bob").await?;
    let (me, my_key) = &alice[0];
    let target = &alice[1].1;
    let listing = me.user_sessions().await.ctx("user_sessions")?;
    let id_of = |k: &SessionKey| {
        listing
            .iter()
            .find(|e| holds(&e.stored_key, k))
            .map(|e| e.id.clone())
            .ok_or_else(|| "a session of alice is not listed".to_owned())
    };
    let target_id = id_of(target)?;
    ensure!(
        me.end_user_session(&target_id)
            .await
            .ctx("end_user_session")?,
        "end_user_session of a listed id reported false"
    );
    expect_gone(ctx, target, "the ended session").await?;
    must_load(ctx, my_key, "the asking session").await?;
    must_load(ctx, &alice[2].1, "the third session").await?;
    expect_listed(
        ix,
        "alice",
        &[my_key.clone(), alice[2].1.clone()],
        "after ending one",
    )
    .await?;
    ensure!(
        !me.end_user_session(&target_id)
            .await
            .ctx("end_user_session again")?,
        "ending an ended session reported true"
    );
    for unknown in [
        "0".repeat(32),
        "f".repeat(32),
        "not-an-id".to_owned(),
        String::new(),
    ] {
        ensure!(
            !me.end_user_session(&unknown)
                .await
                .ctx("end_user_session of an unknown id")?,
            "end_user_session({unknown:?}) reported true"
        );
    }
    let bob_id = bob.user_sessions().await.ctx("bob's user_sessions")?[0]
        .id
        .clone();
    ensure!(
        !me.end_user_session(&bob_id)
            .await
            .ctx("end_user_session of bob's id")?,
        "alice ended a session of bob"
    );
    ensure!(
        !ix.end_session("alice", &bob_id)
            .await
            .ctx("end_session(alice, bob's id)")?,
        "end_session(alice, bob's id) reported true"
    );
    must_load(ctx, &bob_key, "bob's session").await?;
    ensure!(
        ix.end_session("bob", &bob_id)
            .await
            .ctx("end_session(bob, bob's id)")?,
        "end_session(bob, bob's id) reported false"
    );
    expect_gone(ctx, &bob_key, "bob's ended session").await?;
    expect_listed(ix, "bob", &[], "bob after his session ended").await
}

/// How the in-flight race ends the session.
#[derive(Clone, Copy)]
enum Ending {
    /// `UserIndex::end_sessions(principal, None)`: every session of the principal.
    All,
    /// Another device's `Session::end_user_session` with the listed id.
    ById,
}

/// Loads a signed-in session in a handle (a request in flight), ends it, then lets the
/// request write: the write is `NotFound` and nothing comes back.
async fn in_flight_race(ctx: &Ctx, ending: Ending) -> CaseResult {
    let ix = index(ctx)?;
    let (_, victim) = login(ctx, "alice").await?;
    let (other, _) = login(ctx, "alice").await?;
    let request = handle(ctx, Some(victim.clone()));
    request
        .get_value("n")
        .await
        .ctx("the in-flight request's read")?;
    ensure!(
        request.key().as_ref() == Some(&victim),
        "the in-flight request did not adopt its session"
    );
    let toucher = handle(ctx, Some(victim.clone()));
    toucher.load().await.ctx("the second request's read")?;
    match ending {
        Ending::All => {
            let ended = ix.end_sessions("alice", None).await.ctx("end_sessions")?;
            ensure!(ended == 2, "end_sessions ended {ended}, wanted 2");
        }
        Ending::ById => {
            let listing = other.user_sessions().await.ctx("user_sessions")?;
            let id = listing
                .iter()
                .find(|e| holds(&e.stored_key, &victim))
                .map(|e| e.id.clone())
                .ok_or("the in-flight session is not listed")?;
            ensure!(
                other.end_user_session(&id).await.ctx("end_user_session")?,
                "end_user_session reported false"
            );
        }
    }
    request
        .insert_value("cart", json!(["book"]))
        .await
        .ctx("insert")?;
    super::expect_not_found(
        request.save().await,
        "saving a session ended while in flight",
    )?;
    let touched = toucher
        .touch_if_due(Duration::ZERO)
        .await
        .ctx("touch_if_due of an ended session")?;
    ensure!(
        !touched,
        "touch_if_due of an ended session reported a write"
    );
    expect_gone(ctx, &victim, "the ended session after the in-flight writes").await?;
    let listing = list(ix, "alice", None).await?;
    ensure!(
        listing.iter().all(|e| !holds(&e.stored_key, &victim)),
        "the ended session is listed again"
    );
    if matches!(ending, Ending::All) {
        expect_listed(ix, "alice", &[], "after ending every session").await?;
    }
    Ok(())
}

async fn ending_all_sessions_stops_a_request_in_flight(ctx: &Ctx) -> CaseResult {
    in_flight_race(ctx, Ending::All).await
}

async fn ending_a_session_by_id_stops_a_request_in_flight(ctx: &Ctx) -> CaseResult {
    in_flight_race(ctx, Ending::ById).await
}

/// Principals that a key-, path- or query-building engine could confuse: case and
/// trailing-space variants (case-insensitive or PAD SPACE SQL collations), glob and
/// `LIKE` metacharacters, path separators, cluster hash tags, SQL quoting, non-ASCII,
/// and the longest allowed.
fn odd_principals() -> Vec<String> {
    let mut v: Vec<String> = [
        "alice",
        "Alice",
        "ALICE",
        "alice ",
        " alice",
        "alice:1",
        "alice:",
        "alice*",
        "al?ce",
        "[alice]",
        "al%",
        "al_ce",
        "../alice",
        "a/b",
        "a\\b",
        ".",
        "{alice}",
        "' OR '1'='1",
        "\"alice\"",
        "$where",
        "Zoë",
        "Zoe\u{308}",
        "🎉",
        "用户",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("a".repeat(MAX_PRINCIPAL_LEN));
    v.push("é".repeat(MAX_PRINCIPAL_LEN / 2));
    v
}

async fn odd_principals_stay_separate(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let principals = odd_principals();
    let mut keys = Vec::new();
    for p in &principals {
        keys.push(login(ctx, p).await?.1);
    }
    for (p, k) in principals.iter().zip(&keys) {
        expect_listed(ix, p, std::slice::from_ref(k), &format!("{p:?}")).await?;
    }
    for absent in ["alic", "alice*x", "al", "a", "%", "*", "_", "é"] {
        expect_listed(ix, absent, &[], &format!("the unused principal {absent:?}")).await?;
    }
    // Ending one principal's sessions leaves every look-alike signed in.
    let ended = ix.end_sessions("alice", None).await.ctx("end_sessions")?;
    ensure!(
        ended == 1,
        "end_sessions(\"alice\") ended {ended}, wanted 1"
    );
    expect_gone(ctx, &keys[0], "alice's session").await?;
    for (p, k) in principals.iter().zip(&keys).skip(1) {
        must_load(ctx, k, &format!("the session of {p:?}")).await?;
        expect_listed(
            ix,
            p,
            std::slice::from_ref(k),
            &format!("{p:?} after alice ended"),
        )
        .await?;
    }
    Ok(())
}

const LOGINS: usize = 16;

async fn sixteen_concurrent_logins_are_all_listed(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let keys = tokio::time::timeout(CONCURRENCY_DEADLINE, async {
        let tasks: Vec<_> = (0..LOGINS)
            .map(|i| {
                let s = handle(ctx, None);
                tokio::spawn(async move {
                    s.insert_value("i", json!(i)).await?;
                    s.login("alice", Some("h1")).await?;
                    Ok::<_, Error>(s.key())
                })
            })
            .collect();
        let mut keys = Vec::new();
        for t in tasks {
            let k = t
                .await
                .map_err(|e| format!("a login task failed: {e}"))?
                .ctx("a concurrent login")?;
            keys.push(k.ok_or("a signed-in session has no key")?);
        }
        Ok::<_, String>(keys)
    })
    .await
    .map_err(|_| format!("16 logins did not finish within {CONCURRENCY_DEADLINE:?}"))??;
    let distinct: BTreeSet<&SessionKey> = keys.iter().collect();
    ensure!(distinct.len() == LOGINS, "concurrent logins shared keys");
    expect_listed(ix, "alice", &keys, "16 concurrent logins").await
}

async fn logins_racing_end_sessions_leave_no_live_session_unlisted(ctx: &Ctx) -> CaseResult {
    let ix = index(ctx)?;
    let store = ctx.store.clone();
    let keys = tokio::time::timeout(CONCURRENCY_DEADLINE, async {
        let logins: Vec<_> = (0..LOGINS)
            .map(|_| {
                let s = handle(ctx, None);
                tokio::spawn(async move {
                    s.login("alice", Some("h1")).await?;
                    Ok::<_, Error>(s.key())
                })
            })
            .collect();
        let ender = tokio::spawn(async move {
            let ix = store
                .user_index()
                .ok_or_else(|| Error::unsupported(store.engine(), "a user index"))?;
            let mut ended = 0;
            for _ in 0..LOGINS / 2 {
                ended += ix.end_sessions("alice", None).await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(ended)
        });
        let mut keys = Vec::new();
        for t in logins {
            let k = t
                .await
                .map_err(|e| format!("a login task failed: {e}"))?
                .ctx("a login racing end_sessions")?;
            keys.push(k.ok_or("a signed-in session has no key")?);
        }
        let ended = ender
            .await
            .map_err(|e| format!("the ending task failed: {e}"))?
            .ctx("end_sessions racing logins")?;
        ensure!(
            ended <= LOGINS as u64,
            "end_sessions ended {ended} of {LOGINS} sessions"
        );
        Ok::<_, String>(keys)
    })
    .await
    .map_err(|_| format!("the race did not finish within {CONCURRENCY_DEADLINE:?}"))??;
    let mut live = Vec::new();
    for k in &keys {
        if ctx.store.exists(k).await.ctx("exists")? {
            live.push(k.clone());
        }
    }
    // Every live session is listed, and nothing else.
    expect_listed(ix, "alice", &live, "after logins raced end_sessions").await?;
    let ended = ix.end_sessions("alice", None).await.ctx("end_sessions")?;
    ensure!(
        ended == live.len() as u64,
        "a final end_sessions ended {ended}, wanted the {} live sessions",
        live.len()
    );
    for k in &keys {
        expect_gone(ctx, k, "a session after the final end_sessions").await?;
    }
    Ok(())
}

async fn login_records_the_principal_outside_the_data(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    s.insert_value("cart", json!(3)).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let anonymous = s.key().ok_or("no key after save")?;
    s.login("alice", Some("h1")).await.ctx("login")?;
    let k = s.key().ok_or("no key after login")?;
    ensure!(k != anonymous, "login did not cycle the key");
    expect_gone(ctx, &anonymous, "the pre-login key").await?;
    let r = must_load(ctx, &k, "the signed-in session").await?;
    ensure!(
        r.data == data(&[("cart", json!(3))]),
        "the signed-in session's data is {:?}, wanted the anonymous cart only",
        r.data
    );
    ensure!(
        r.principal() == Some("alice") && r.meta.auth_hash.as_deref() == Some("h1"),
        "the stored meta is {:?}",
        r.meta
    );
    ensure!(r.meta.last_seen.is_some(), "a login records no last_seen");
    // A later request sees the principal.
    let later = handle(ctx, Some(k.clone()));
    ensure!(
        later.principal().await.ctx("principal")?.as_deref() == Some("alice"),
        "a later request does not see the principal"
    );
    // Signing in again as the same principal keeps the data; as another empties it.
    later.login("alice", Some("h2")).await.ctx("login again")?;
    let k2 = later.key().ok_or("no key")?;
    let r = must_load(ctx, &k2, "after a second login").await?;
    ensure!(
        r.data.get("cart") == Some(&json!(3)) && r.meta.auth_hash.as_deref() == Some("h2"),
        "a second login as the same principal stored {:?} {:?}",
        r.data,
        r.meta
    );
    later.login("bob", None).await.ctx("login as bob")?;
    let k3 = later.key().ok_or("no key")?;
    let r = must_load(ctx, &k3, "after login as bob").await?;
    ensure!(
        r.data.is_empty() && r.principal() == Some("bob") && r.meta.auth_hash.is_none(),
        "login as another principal stored {:?} {:?}",
        r.data,
        r.meta
    );
    Ok(())
}

async fn touch_records_last_seen_and_the_client(ctx: &Ctx) -> CaseResult {
    let mut r = signed_record("alice");
    r.meta.last_seen = Some(Timestamp::now().add_secs(-LIVE_SECS / 2));
    let k = ctx.store.create(&r).await.ctx("create")?;
    let s = handle(ctx, Some(k.clone()));
    s.set_client(Some("Agent/1.0".to_owned()), Some("127.0.0.1".to_owned()));
    s.load().await.ctx("load")?;
    let now = Timestamp::now();
    ensure!(
        s.touch_if_due(Duration::from_secs(60))
            .await
            .ctx("touch_if_due")?,
        "a signed-in session last seen half an hour ago was not touched"
    );
    let stored = must_load(ctx, &k, "after the touch").await?;
    let seen = stored
        .meta
        .last_seen
        .ok_or("no last_seen after the touch")?;
    ensure!(
        near(seen, now),
        "last_seen is {seen:?} after a touch at {now:?}"
    );
    ensure!(
        stored.meta.user_agent.as_deref() == Some("Agent/1.0")
            && stored.meta.client_addr.as_deref() == Some("127.0.0.1"),
        "the client was not recorded: {:?}",
        stored.meta
    );
    ensure!(
        stored.principal() == Some("alice") && stored.data == r.data,
        "the touch changed the principal or the data"
    );
    let again = handle(ctx, Some(k.clone()));
    again.load().await.ctx("load")?;
    ensure!(
        !again
            .touch_if_due(Duration::from_secs(60))
            .await
            .ctx("touch_if_due")?,
        "a session seen a moment ago was touched again within the interval"
    );
    if let Some(ix) = ctx.store.user_index() {
        let listing = list(ix, "alice", Some(&k)).await?;
        ensure!(
            listing.len() == 1 && listing[0].meta == stored.meta && listing[0].current,
            "the listing's meta differs from the stored meta"
        );
    }
    Ok(())
}

/// An auth check answering `answer` for every principal, recording whom it was asked.
type Asked = Arc<Mutex<Vec<String>>>;

fn check_answering(answer: Option<&str>) -> (Arc<dyn session_core::users::AuthCheck>, Asked) {
    let asked: Asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let answer = answer.map(str::to_owned);
    let check = auth_check_fn(move |principal: String| {
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(principal);
        let answer = answer.clone();
        async move { Ok(answer) }
    });
    (check, asked)
}

fn asked(a: &Asked) -> Vec<String> {
    a.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// A session signed in as alice with hash `h1` holding a cart; returns its key.
async fn signed_in_with_cart(ctx: &Ctx) -> Result<SessionKey, String> {
    let (s, k) = login(ctx, "alice").await?;
    s.insert_value("cart", json!(3)).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    Ok(k)
}

/// Loads `k` through a handle with an auth check answering `answer`, and checks the
/// session was flushed: no data, no key, `flushed()`, and nothing stored or listed.
async fn expect_flushed_by_check(ctx: &Ctx, answer: Option<&str>) -> CaseResult {
    let k = signed_in_with_cart(ctx).await?;
    let (check, asked_whom) = check_answering(answer);
    let s = Session::with_auth_check(
        ctx.store.clone(),
        ctx.settings.clone(),
        Some(k.clone()),
        Some(check),
    );
    let loaded = s.load().await.ctx("load")?;
    ensure!(
        loaded.is_empty(),
        "the flushed session shows data: {loaded:?}"
    );
    ensure!(s.key().is_none(), "the flushed session kept its key");
    ensure!(s.flushed(), "flushed() is false");
    ensure!(
        s.principal().await.ctx("principal")?.is_none(),
        "the flushed session is still signed in"
    );
    ensure!(
        asked(&asked_whom) == vec!["alice".to_owned()],
        "the check was asked about {:?}, wanted alice once",
        asked(&asked_whom)
    );
    expect_gone(ctx, &k, "the flushed session").await?;
    if let Some(ix) = ctx.store.user_index() {
        expect_listed(ix, "alice", &[], "after the flush").await?;
    }
    // The next save starts a new, anonymous session.
    s.insert_value("n", json!(1)).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let fresh = s.key().ok_or("no key after save")?;
    ensure!(fresh != k, "the flushed key was reused");
    let r = must_load(ctx, &fresh, "the new session").await?;
    ensure!(
        r.principal().is_none(),
        "the new session is signed in as {:?}",
        r.principal()
    );
    Ok(())
}

async fn auth_check_mismatch_flushes_the_session(ctx: &Ctx) -> CaseResult {
    expect_flushed_by_check(ctx, Some("h2")).await
}

async fn auth_check_of_a_deleted_user_flushes_the_session(ctx: &Ctx) -> CaseResult {
    expect_flushed_by_check(ctx, None).await
}

async fn auth_check_match_keeps_the_session(ctx: &Ctx) -> CaseResult {
    let k = signed_in_with_cart(ctx).await?;
    let (check, asked_whom) = check_answering(Some("h1"));
    let s = Session::with_auth_check(
        ctx.store.clone(),
        ctx.settings.clone(),
        Some(k.clone()),
        Some(check.clone()),
    );
    ensure!(
        s.get_value("cart").await.ctx("get")? == Some(json!(3)),
        "a session whose auth hash matches lost its data"
    );
    ensure!(
        s.key().as_ref() == Some(&k) && !s.flushed(),
        "a session whose auth hash matches was flushed"
    );
    ensure!(
        asked(&asked_whom) == vec!["alice".to_owned()],
        "the check was asked about {:?}",
        asked(&asked_whom)
    );
    must_load(ctx, &k, "the kept session").await?;
    // An anonymous session is never checked, even by a check that knows no one.
    let anonymous = saved_session(ctx, &[("n", json!(1))]).await?;
    let (nobody, asked_nobody) = check_answering(None);
    let s = Session::with_auth_check(
        ctx.store.clone(),
        ctx.settings.clone(),
        Some(anonymous.clone()),
        Some(nobody),
    );
    ensure!(
        s.get_value("n").await.ctx("get")? == Some(json!(1)) && !s.flushed(),
        "an anonymous session was flushed by the auth check"
    );
    ensure!(
        asked(&asked_nobody).is_empty(),
        "the check was asked about an anonymous session"
    );
    Ok(())
}

async fn invalid_principals_are_refused_without_io(ctx: &Ctx) -> CaseResult {
    let mut bad: Vec<String> = [
        "",
        "al\u{0}ice",
        "alice\n",
        "\r\nSet-Cookie: x=1",
        "tab\there",
        "\u{7f}",
        "\u{85}alice",
        "\u{1b}[31m",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    bad.push("a".repeat(MAX_PRINCIPAL_LEN + 1));
    // 129 two-byte characters: few enough characters, too many bytes.
    bad.push("é".repeat(MAX_PRINCIPAL_LEN / 2 + 1));
    let k = saved_session(ctx, &[("n", json!(1))]).await?;
    let spy = Arc::new(SpyStore::new(ctx.store.clone()));
    for p in &bad {
        ensure!(
            validate_principal(p).is_err(),
            "validate_principal accepts {p:?}"
        );
        let s = Session::new(spy.clone(), ctx.settings.clone(), Some(k.clone()));
        match s.login(p, Some("h1")).await {
            Err(Error::InvalidPrincipal { len }) if len == p.len() => {}
            other => {
                return Err(format!(
                    "login({p:?}) gave {other:?}, wanted InvalidPrincipal {{ len: {} }}",
                    p.len()
                ));
            }
        }
        ensure!(
            spy.call_count() == 0,
            "login({p:?}) reached the store: {:?}",
            spy.calls()
        );
        if let Some(ix) = ctx.store.user_index() {
            let what = |op: &str| format!("UserIndex::{op}({p:?})");
            expect_invalid(ix.sessions_of(p, None).await, &what("sessions_of"))?;
            expect_invalid(ix.count_of(p).await, &what("count_of"))?;
            expect_invalid(ix.end_sessions(p, None).await, &what("end_sessions"))?;
            expect_invalid(
                ix.end_session(p, &"0".repeat(32)).await,
                &what("end_session"),
            )?;
        }
    }
    let r = must_load(ctx, &k, "the session the refused logins named").await?;
    ensure!(
        r.principal().is_none() && r.data == data(&[("n", json!(1))]),
        "a refused login changed the session"
    );
    // The limits themselves are allowed.
    for p in [
        "a".repeat(MAX_PRINCIPAL_LEN),
        "é".repeat(MAX_PRINCIPAL_LEN / 2),
    ] {
        let s = handle(ctx, None);
        s.login(&p, None)
            .await
            .ctx(&format!("login with a {}-byte principal", p.len()))?;
    }
    Ok(())
}

async fn handle_operations_need_a_sign_in_and_an_index(ctx: &Ctx) -> CaseResult {
    let anonymous = saved_session(ctx, &[("n", json!(1))]).await?;
    let s = handle(ctx, Some(anonymous));
    let not_signed_in = |what: &str, r: Result<String, Error>| match r {
        Err(Error::NotSignedIn) => Ok(()),
        other => Err(format!(
            "{what} of an anonymous session gave {other:?}, wanted NotSignedIn"
        )),
    };
    not_signed_in(
        "user_sessions",
        s.user_sessions().await.map(|v| format!("{v:?}")),
    )?;
    not_signed_in(
        "end_other_sessions",
        s.end_other_sessions().await.map(|v| v.to_string()),
    )?;
    not_signed_in(
        "end_user_session",
        s.end_user_session(&"0".repeat(32))
            .await
            .map(|v| v.to_string()),
    )?;
    let (me, k) = login(ctx, "alice").await?;
    match ctx.store.user_index() {
        Some(_) => {
            let listing = me.user_sessions().await.ctx("user_sessions")?;
            ensure!(
                listing.len() == 1 && listing[0].current && holds(&listing[0].stored_key, &k),
                "a signed-in session lists {} sessions",
                listing.len()
            );
        }
        None => {
            let unsupported = |what: &str, r: Result<String, Error>| match r {
                Err(Error::Unsupported { .. }) => Ok(()),
                other => Err(format!(
                    "{what} on a store without a user index gave {other:?}, wanted Unsupported"
                )),
            };
            unsupported(
                "user_sessions",
                me.user_sessions().await.map(|v| format!("{v:?}")),
            )?;
            unsupported(
                "end_other_sessions",
                me.end_other_sessions().await.map(|v| v.to_string()),
            )?;
            unsupported(
                "end_user_session",
                me.end_user_session(&"0".repeat(32))
                    .await
                    .map(|v| v.to_string()),
            )?;
            must_load(ctx, &k, "the signed-in session").await?;
        }
    }
    Ok(())
}
