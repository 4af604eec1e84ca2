//! Expiry: deadlines at the store, `clear_expired`, and every `set_expiry` form at the
//! handle (Django's expiry arithmetic, browser-close cookies, the absolute timeout).

use std::time::Duration;

use serde_json::json;
use session_core::{Expiry, ExpirySettings, Inserted, Session, Timestamp};

use super::{
    Ctx as _, EXPIRED_SECS, LIVE_SECS, case, ensure, expect_not_found, expired, handle, key,
    must_load, near, record, sample, saved_session, settings_with,
};
use crate::{Case, CaseResult, Ctx};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(Expiry, load_never_returns_expired),
        case!(Expiry, update_of_an_expired_record_is_not_found),
        case!(Expiry, touch_of_an_expired_record_is_not_found),
        case!(Expiry, insert_new_may_replace_an_expired_record),
        case!(Expiry, touch_to_a_past_deadline_expires_the_record),
        case!(Expiry, update_to_a_past_deadline_expires_the_record),
        case!(Expiry, a_deadline_ninety_seconds_away_is_live),
        case!(Expiry, a_deadline_beyond_thirty_days_is_live),
        case!(Expiry, delete_of_an_expired_record_leaves_nothing),
        case!(Expiry, clear_expired_removes_only_expired, |c| !c
            .native_ttl),
        case!(Expiry, clear_expired_keeps_every_live_record),
        case!(Expiry, clear_expired_on_an_empty_store_removes_nothing),
        case!(Expiry, clear_expired_twice_removes_nothing_the_second_time),
        case!(
            Expiry,
            clear_expired_counts_records_expired_by_update,
            |c| !c.native_ttl
        ),
        case!(Expiry, key_is_reusable_after_clear_expired),
        case!(Expiry, default_expiry_is_the_configured_age),
        case!(Expiry, browser_close_keeps_the_default_server_age),
        case!(Expiry, custom_expiry_seconds),
        case!(Expiry, custom_expiry_timedelta),
        case!(Expiry, custom_expiry_datetime),
        case!(Expiry, custom_expiry_reset),
        case!(Expiry, expiry_age_is_negative_past_a_fixed_deadline),
        case!(Expiry, expire_at_browser_close_with_the_setting_off),
        case!(Expiry, expire_at_browser_close_with_the_setting_on),
        case!(Expiry, actual_expiry_with_negative_seconds),
        case!(Expiry, actual_expiry_with_a_past_datetime),
        case!(Expiry, saved_policy_survives_reload),
        case!(Expiry, custom_expiry_datetime_survives_the_store),
        case!(Expiry, save_writes_the_deadline_each_policy_gives),
        case!(Expiry, sliding_expiry_is_renewed_by_a_save),
        case!(Expiry, a_fixed_deadline_does_not_slide),
        case!(Expiry, absolute_timeout_caps_the_saved_deadline),
        case!(Expiry, absolute_timeout_counts_from_creation_across_saves),
    ]
}

/// A handle with explicit expiry settings, so expectations do not depend on the factory.
fn handle_with_expiry(
    ctx: &Ctx,
    expiry: ExpirySettings,
    k: Option<session_core::SessionKey>,
) -> Session {
    let settings = settings_with(ctx, |s| s.expiry = expiry);
    Session::new(ctx.store.clone(), settings, k)
}

fn expiry_settings(default_age_secs: i64, browser_close: bool) -> ExpirySettings {
    ExpirySettings {
        default_age_secs,
        expire_at_browser_close: browser_close,
        absolute_timeout_secs: None,
    }
}

async fn load_never_returns_expired(ctx: &Ctx) -> CaseResult {
    let k = key();
    ctx.store
        .insert_new(&k, &expired(&[("x", json!(1))]))
        .await
        .ctx("insert expired")?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "expired record returned before clear_expired"
    );
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists")?,
        "exists() true for an expired record"
    );
    Ok(())
}

async fn update_of_an_expired_record_is_not_found(ctx: &Ctx) -> CaseResult {
    let k = key();
    ctx.store
        .insert_new(&k, &expired(&[("x", json!(1))]))
        .await
        .ctx("insert expired")?;
    expect_not_found(ctx.store.update(&k, &sample(), None).await, "blind update")?;
    expect_not_found(ctx.store.update(&k, &sample(), Some(1)).await, "CAS update")?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "update revived an expired session"
    );
    Ok(())
}

async fn touch_of_an_expired_record_is_not_found(ctx: &Ctx) -> CaseResult {
    let k = key();
    ctx.store
        .insert_new(&k, &expired(&[("x", json!(1))]))
        .await
        .ctx("insert expired")?;
    expect_not_found(
        ctx.store
            .touch(&k, Timestamp::now().add_secs(LIVE_SECS))
            .await,
        "touch of an expired record",
    )?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "touch revived an expired session"
    );
    Ok(())
}

async fn insert_new_may_replace_an_expired_record(ctx: &Ctx) -> CaseResult {
    let k = key();
    ctx.store
        .insert_new(&k, &expired(&[("gen", json!("old"))]))
        .await
        .ctx("insert expired")?;
    let res = ctx
        .store
        .insert_new(&k, &record(&[("gen", json!("new"))]))
        .await
        .ctx("insert over expired")?;
    let got = ctx.store.load(&k).await.ctx("load")?;
    match res {
        Inserted::Created => ensure!(
            got.as_ref().and_then(|r| r.data.get("gen")) == Some(&json!("new")),
            "insert over an expired record reported Created but load gives {got:?}"
        ),
        Inserted::KeyTaken => ensure!(
            got.is_none(),
            "the expired record came back after a refused insert: {got:?}"
        ),
    }
    Ok(())
}

async fn touch_to_a_past_deadline_expires_the_record(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store
        .touch(&k, Timestamp::now().add_secs(-EXPIRED_SECS))
        .await
        .ctx("touch to the past")?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "a record touched to a past deadline is still returned"
    );
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists")?,
        "exists() after touch to the past"
    );
    expect_not_found(ctx.store.update(&k, &sample(), None).await, "update")?;
    Ok(())
}

async fn update_to_a_past_deadline_expires_the_record(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store
        .update(&k, &expired(&[("x", json!(1))]), Some(1))
        .await
        .ctx("update to a past deadline")?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "a record updated to a past deadline is still returned"
    );
    ensure!(
        !ctx.store.exists(&k).await.ctx("exists")?,
        "exists() after update to the past"
    );
    Ok(())
}

async fn a_deadline_ninety_seconds_away_is_live(ctx: &Ctx) -> CaseResult {
    let mut r = sample();
    r.expires_at = Timestamp::now().add_secs(90);
    let k = ctx.store.create(&r).await.ctx("create")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        near(got.expires_at, r.expires_at),
        "deadline {:?}, wanted {:?}",
        got.expires_at,
        r.expires_at
    );
    ensure!(
        ctx.store.exists(&k).await.ctx("exists")?,
        "exists() false for a live record"
    );
    Ok(())
}

async fn a_deadline_beyond_thirty_days_is_live(ctx: &Ctx) -> CaseResult {
    // Memcached reads a TTL above 30 days as an absolute Unix time: a store that passes
    // seconds-from-now blindly expires these records at once.
    for days in [31, 400] {
        let mut r = sample();
        r.expires_at = Timestamp::now().add_secs(days * 86_400);
        let k = ctx.store.create(&r).await.ctx("create")?;
        let got = ctx.store.load(&k).await.ctx("load")?;
        let Some(got) = got else {
            return Err(format!(
                "a record {days} days from its deadline is not returned"
            ));
        };
        ensure!(
            near(got.expires_at, r.expires_at),
            "{days}-day deadline read back as {:?}, wanted {:?}",
            got.expires_at,
            r.expires_at
        );
        let later = Timestamp::now().add_secs(days * 86_400 + 60);
        ctx.store.touch(&k, later).await.ctx("touch far")?;
        ensure!(
            ctx.store.exists(&k).await.ctx("exists")?,
            "a record touched {days} days ahead vanished"
        );
    }
    Ok(())
}

async fn delete_of_an_expired_record_leaves_nothing(ctx: &Ctx) -> CaseResult {
    let k = key();
    ctx.store
        .insert_new(&k, &expired(&[("x", json!(1))]))
        .await
        .ctx("insert expired")?;
    // Whether it reports a record is the store's business; it must not fail or revive it.
    ctx.store.delete(&k).await.ctx("delete expired")?;
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "delete revived the record"
    );
    let res = ctx
        .store
        .insert_new(&k, &sample())
        .await
        .ctx("insert after delete")?;
    ensure!(res == Inserted::Created, "insert after delete gave {res:?}");
    Ok(())
}

async fn clear_expired_removes_only_expired(ctx: &Ctx) -> CaseResult {
    const N_EXPIRED: u64 = 5;
    let mut gone = Vec::new();
    for i in 0..N_EXPIRED {
        let k = key();
        ctx.store
            .insert_new(&k, &expired(&[("i", json!(i))]))
            .await
            .ctx("insert expired")?;
        gone.push(k);
    }
    let mut live = Vec::new();
    for i in 0..3 {
        live.push(
            ctx.store
                .create(&record(&[("i", json!(i))]))
                .await
                .ctx("create live")?,
        );
    }
    let removed = ctx.store.clear_expired().await.ctx("clear_expired")?;
    ensure!(
        removed == N_EXPIRED,
        "clear_expired reported {removed} removed, wanted {N_EXPIRED}"
    );
    for (i, k) in live.iter().enumerate() {
        let got = must_load(ctx, k, "load live after clear_expired").await?;
        ensure!(
            got.data.get("i") == Some(&json!(i)) && got.version == 1,
            "clear_expired changed a live record: {got:?}"
        );
    }
    for k in &gone {
        ensure!(
            ctx.store.load(k).await.ctx("load")?.is_none(),
            "an expired record came back"
        );
    }
    Ok(())
}

async fn clear_expired_keeps_every_live_record(ctx: &Ctx) -> CaseResult {
    let mut live = Vec::new();
    for i in 0..4 {
        live.push(
            ctx.store
                .create(&record(&[("i", json!(i))]))
                .await
                .ctx("create live")?,
        );
        ctx.store
            .insert_new(&key(), &expired(&[("i", json!(i))]))
            .await
            .ctx("insert expired")?;
    }
    ctx.store.clear_expired().await.ctx("clear_expired")?;
    for (i, k) in live.iter().enumerate() {
        let got = must_load(ctx, k, "live record after clear_expired").await?;
        ensure!(
            got.data.get("i") == Some(&json!(i)),
            "live record #{i} changed: {got:?}"
        );
    }
    Ok(())
}

async fn clear_expired_on_an_empty_store_removes_nothing(ctx: &Ctx) -> CaseResult {
    let n = ctx.store.clear_expired().await.ctx("clear_expired")?;
    ensure!(n == 0, "clear_expired on an empty store reported {n}");
    Ok(())
}

async fn clear_expired_twice_removes_nothing_the_second_time(ctx: &Ctx) -> CaseResult {
    for _ in 0..3 {
        ctx.store
            .insert_new(&key(), &expired(&[]))
            .await
            .ctx("insert expired")?;
    }
    ctx.store.create(&sample()).await.ctx("create live")?;
    ctx.store.clear_expired().await.ctx("first clear_expired")?;
    let again = ctx
        .store
        .clear_expired()
        .await
        .ctx("second clear_expired")?;
    ensure!(again == 0, "the second clear_expired reported {again}");
    Ok(())
}

async fn clear_expired_counts_records_expired_by_update(ctx: &Ctx) -> CaseResult {
    let k = ctx.store.create(&sample()).await.ctx("create")?;
    let keep = ctx.store.create(&sample()).await.ctx("create")?;
    ctx.store
        .update(&k, &expired(&[]), Some(1))
        .await
        .ctx("update to the past")?;
    let n = ctx.store.clear_expired().await.ctx("clear_expired")?;
    ensure!(n == 1, "clear_expired reported {n}, wanted 1");
    ensure!(
        ctx.store.exists(&keep).await.ctx("exists")?,
        "a live record was cleared"
    );
    Ok(())
}

async fn key_is_reusable_after_clear_expired(ctx: &Ctx) -> CaseResult {
    let k = key();
    ctx.store
        .insert_new(&k, &expired(&[("gen", json!(1))]))
        .await
        .ctx("insert expired")?;
    ctx.store.clear_expired().await.ctx("clear_expired")?;
    let res = ctx
        .store
        .insert_new(&k, &record(&[("gen", json!(2))]))
        .await
        .ctx("insert again")?;
    ensure!(
        res == Inserted::Created,
        "insert after clear_expired gave {res:?}"
    );
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.data.get("gen") == Some(&json!(2)) && got.version == 1,
        "loaded {got:?}"
    );
    Ok(())
}

async fn default_expiry_is_the_configured_age(ctx: &Ctx) -> CaseResult {
    for age in [session_core::expiry::DEFAULT_AGE_SECS, 86_400] {
        let s = handle_with_expiry(ctx, expiry_settings(age, false), None);
        let got = s.expiry_age().await.ctx("expiry_age")?;
        ensure!(got == age, "default expiry age is {got}, wanted {age}");
        let m = Timestamp::now();
        let date = s.expiry_date_at(m).await.ctx("expiry_date_at")?;
        ensure!(
            date == m.add_secs(age),
            "default expiry date {date:?}, wanted m + {age}s"
        );
    }
    Ok(())
}

async fn browser_close_keeps_the_default_server_age(ctx: &Ctx) -> CaseResult {
    let age = 86_400;
    let s = handle_with_expiry(ctx, expiry_settings(age, false), None);
    s.set_expiry(Expiry::seconds(0));
    ensure!(
        s.expiry().await.ctx("expiry")? == Expiry::BrowserClose,
        "set_expiry(0) is not browser-close"
    );
    let got = s.expiry_age().await.ctx("expiry_age")?;
    ensure!(
        got == age,
        "browser-close expiry age is {got}, wanted the default {age}"
    );
    Ok(())
}

async fn custom_expiry_seconds(ctx: &Ctx) -> CaseResult {
    let s = handle_with_expiry(ctx, expiry_settings(86_400, false), None);
    s.set_expiry(Expiry::seconds(10));
    let m = Timestamp::now().add_secs(-1_000);
    let date = s.expiry_date_at(m).await.ctx("expiry_date_at")?;
    ensure!(
        date == m.add_secs(10),
        "date {date:?}, wanted modification + 10s"
    );
    let age = s.expiry_age_at(m).await.ctx("expiry_age_at")?;
    ensure!(age == 10, "age {age}, wanted 10");
    Ok(())
}

async fn custom_expiry_timedelta(ctx: &Ctx) -> CaseResult {
    let s = handle_with_expiry(ctx, expiry_settings(86_400, false), None);
    let before = Timestamp::now();
    s.set_expiry(Expiry::after(Duration::from_secs(10)));
    let after = Timestamp::now();
    let date = s.expiry_date().await.ctx("expiry_date")?;
    ensure!(
        before.add_secs(10) <= date && date <= after.add_secs(10),
        "date {date:?} is not 10 s after set_expiry"
    );
    let age = s.expiry_age_at(before).await.ctx("expiry_age_at")?;
    ensure!((10..=11).contains(&age), "age {age}, wanted 10");
    Ok(())
}

async fn custom_expiry_datetime(ctx: &Ctx) -> CaseResult {
    let s = handle_with_expiry(ctx, expiry_settings(86_400, false), None);
    let m = Timestamp::now();
    s.set_expiry(Expiry::At(m.add_secs(10)));
    let date = s.expiry_date_at(m).await.ctx("expiry_date_at")?;
    ensure!(date == m.add_secs(10), "date {date:?}, wanted m + 10s");
    let age = s.expiry_age_at(m).await.ctx("expiry_age_at")?;
    ensure!(age == 10, "age {age}, wanted 10");
    // A later modification does not move a fixed deadline.
    let date_later = s
        .expiry_date_at(m.add_secs(5))
        .await
        .ctx("expiry_date_at")?;
    ensure!(
        date_later == m.add_secs(10),
        "a fixed deadline moved to {date_later:?}"
    );
    Ok(())
}

async fn custom_expiry_reset(ctx: &Ctx) -> CaseResult {
    let age = 86_400;
    let s = handle_with_expiry(ctx, expiry_settings(age, false), None);
    // Resetting with nothing set is harmless.
    s.set_expiry(Expiry::Default);
    s.set_expiry(Expiry::seconds(10));
    ensure!(
        s.expiry_age().await.ctx("age")? == 10,
        "set_expiry(10) not applied"
    );
    s.set_expiry(Expiry::Default);
    let got = s.expiry_age().await.ctx("age")?;
    ensure!(got == age, "after reset the age is {got}, wanted {age}");
    Ok(())
}

async fn expiry_age_is_negative_past_a_fixed_deadline(ctx: &Ctx) -> CaseResult {
    let s = handle_with_expiry(ctx, expiry_settings(86_400, false), None);
    let m = Timestamp::now();
    s.set_expiry(Expiry::At(m.add_secs(-10)));
    let age = s.expiry_age_at(m).await.ctx("expiry_age_at")?;
    ensure!(age == -10, "age {age}, wanted -10");
    s.set_expiry(Expiry::seconds(-10));
    let age = s.expiry_age_at(m).await.ctx("expiry_age_at")?;
    ensure!(age == -10, "age for set_expiry(-10) is {age}, wanted -10");
    Ok(())
}

async fn browser_close_table(ctx: &Ctx, setting: bool, default_expected: bool) -> CaseResult {
    let s = handle_with_expiry(ctx, expiry_settings(86_400, setting), None);
    for (policy, want) in [
        (Expiry::seconds(10), false),
        (Expiry::seconds(0), true),
        (Expiry::Default, default_expected),
        (Expiry::At(Timestamp::now().add_secs(LIVE_SECS)), false),
    ] {
        s.set_expiry(policy);
        let got = s
            .expire_at_browser_close()
            .await
            .ctx("expire_at_browser_close")?;
        ensure!(
            got == want,
            "with the setting {setting}, {policy:?} gives expire_at_browser_close={got}, wanted {want}"
        );
    }
    Ok(())
}

async fn expire_at_browser_close_with_the_setting_off(ctx: &Ctx) -> CaseResult {
    browser_close_table(ctx, false, false).await
}

async fn expire_at_browser_close_with_the_setting_on(ctx: &Ctx) -> CaseResult {
    browser_close_table(ctx, true, true).await
}

async fn expect_expired_on_reload(ctx: &Ctx, policy: Expiry) -> CaseResult {
    let s = handle(ctx, None);
    s.insert("secret", "gone").await.ctx("insert")?;
    s.set_expiry(policy);
    s.save().await.ctx("save")?;
    let k = s.key().ok_or("save gave no key")?;
    let again = handle(ctx, Some(k.clone()));
    let got = again.get_value("secret").await.ctx("get")?;
    ensure!(
        got.is_none(),
        "a session saved with {policy:?} still has its data: {got:?}"
    );
    ensure!(again.key().is_none(), "an expired session's key was kept");
    ensure!(
        ctx.store.load(&k).await.ctx("load")?.is_none(),
        "the store returns a session saved already expired"
    );
    Ok(())
}

async fn actual_expiry_with_negative_seconds(ctx: &Ctx) -> CaseResult {
    expect_expired_on_reload(ctx, Expiry::seconds(-EXPIRED_SECS)).await
}

async fn actual_expiry_with_a_past_datetime(ctx: &Ctx) -> CaseResult {
    expect_expired_on_reload(ctx, Expiry::At(Timestamp::now().add_secs(-EXPIRED_SECS))).await
}

async fn saved_policy_survives_reload(ctx: &Ctx) -> CaseResult {
    let s = handle(ctx, None);
    s.set_expiry(Expiry::seconds(600));
    s.save().await.ctx("save")?;
    let k = s.key().ok_or("save gave no key")?;
    let again = handle(ctx, Some(k));
    let policy = again.expiry().await.ctx("expiry")?;
    ensure!(
        policy == Expiry::Idle(600),
        "reloaded policy {policy:?}, wanted Idle(600)"
    );
    let age = again.expiry_age().await.ctx("expiry_age")?;
    ensure!(age == 600, "reloaded age {age}, wanted 600");
    ensure!(
        !again.modified(),
        "reading the policy marked the session modified"
    );
    Ok(())
}

async fn custom_expiry_datetime_survives_the_store(ctx: &Ctx) -> CaseResult {
    let m = Timestamp::now();
    let deadline = super::millis_past_second(m.add_secs(LIVE_SECS), 321);
    let s = handle(ctx, None);
    s.set_expiry(Expiry::At(deadline));
    s.save().await.ctx("save")?;
    let again = handle(ctx, s.key());
    let date = again.expiry_date_at(m).await.ctx("expiry_date_at")?;
    ensure!(
        date == deadline,
        "reloaded deadline {date:?}, wanted exactly {deadline:?}"
    );
    Ok(())
}

async fn save_writes_the_deadline_each_policy_gives(ctx: &Ctx) -> CaseResult {
    let age = 86_400;
    let fixed = Timestamp::now().add_secs(LIVE_SECS * 3);
    for (policy, secs) in [
        (Expiry::Default, Some(age)),
        (Expiry::BrowserClose, Some(age)),
        (Expiry::Idle(600), Some(600)),
        (Expiry::At(fixed), None),
    ] {
        let s = handle_with_expiry(ctx, expiry_settings(age, false), None);
        s.insert("p", &format!("{policy:?}")).await.ctx("insert")?;
        s.set_expiry(policy);
        let now = Timestamp::now();
        s.save().await.ctx("save")?;
        let k = s.key().ok_or("save gave no key")?;
        let got = must_load(ctx, &k, "load").await?;
        let want = secs.map_or(fixed, |n| now.add_secs(n));
        ensure!(
            near(got.expires_at, want),
            "{policy:?} saved a deadline of {:?}, wanted about {want:?}",
            got.expires_at
        );
        ensure!(
            got.expiry == policy,
            "{policy:?} was stored as {:?}",
            got.expiry
        );
    }
    Ok(())
}

async fn sliding_expiry_is_renewed_by_a_save(ctx: &Ctx) -> CaseResult {
    let k = saved_session(ctx, &[("n", json!(1))]).await?;
    // Time passes: the deadline is two minutes away now.
    ctx.store
        .touch(&k, Timestamp::now().add_secs(120))
        .await
        .ctx("touch")?;
    let s = handle(ctx, Some(k.clone()));
    s.insert("n", &2).await.ctx("insert")?;
    let now = Timestamp::now();
    s.save().await.ctx("save")?;
    let got = must_load(ctx, &k, "load").await?;
    let want = now.add_secs(ctx.settings.expiry.default_age_secs);
    let want = match ctx.settings.expiry.absolute_timeout_secs {
        Some(a) => want.min(got.created_at.add_secs(a)),
        None => want,
    };
    ensure!(
        near(got.expires_at, want),
        "a save did not renew the sliding deadline: {:?}, wanted about {want:?}",
        got.expires_at
    );
    Ok(())
}

async fn a_fixed_deadline_does_not_slide(ctx: &Ctx) -> CaseResult {
    let fixed = Timestamp::now().add_secs(LIVE_SECS);
    let s = handle(ctx, None);
    s.set_expiry(Expiry::At(fixed));
    s.save().await.ctx("save")?;
    let k = s.key().ok_or("save gave no key")?;
    let again = handle(ctx, Some(k.clone()));
    again.insert("n", &1).await.ctx("insert")?;
    again.save().await.ctx("second save")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        near(got.expires_at, fixed),
        "a fixed deadline moved to {:?}, wanted {fixed:?}",
        got.expires_at
    );
    Ok(())
}

async fn absolute_timeout_caps_the_saved_deadline(ctx: &Ctx) -> CaseResult {
    let settings = ExpirySettings {
        default_age_secs: 7_200,
        expire_at_browser_close: false,
        absolute_timeout_secs: Some(3_600),
    };
    let s = handle_with_expiry(ctx, settings, None);
    s.set_expiry(Expiry::seconds(7_200));
    let now = Timestamp::now();
    s.save().await.ctx("save")?;
    let k = s.key().ok_or("save gave no key")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        near(got.expires_at, now.add_secs(3_600)),
        "the absolute timeout did not cap the deadline: {:?}",
        got.expires_at
    );
    let age = s.expiry_age().await.ctx("expiry_age")?;
    ensure!(
        (3_590..=3_600).contains(&age),
        "capped age is {age}, wanted about 3600"
    );
    Ok(())
}

async fn absolute_timeout_counts_from_creation_across_saves(ctx: &Ctx) -> CaseResult {
    let now = Timestamp::now();
    let mut r = sample();
    r.created_at = now.add_secs(-3_000);
    let k = ctx.store.create(&r).await.ctx("create")?;
    let settings = ExpirySettings {
        default_age_secs: 7_200,
        expire_at_browser_close: false,
        absolute_timeout_secs: Some(3_600),
    };
    let s = handle_with_expiry(ctx, settings, Some(k.clone()));
    s.insert("n", &1).await.ctx("insert")?;
    s.save().await.ctx("save")?;
    let got = must_load(ctx, &k, "load").await?;
    ensure!(
        got.created_at == r.created_at,
        "a save moved created_at from {:?} to {:?}",
        r.created_at,
        got.created_at
    );
    ensure!(
        near(got.expires_at, r.created_at.add_secs(3_600)),
        "deadline {:?}, wanted creation + 3600 s = {:?}",
        got.expires_at,
        r.created_at.add_secs(3_600)
    );
    Ok(())
}
