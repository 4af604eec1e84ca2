//! Counting and listing (stores declaring `listing`): counts follow creates and deletes,
//! `list` returns keys in ascending order and pages by keyset.

use std::collections::BTreeSet;

use serde_json::json;
use session_core::{Capabilities, SessionKey};

use super::{Ctx as _, case, ensure, expired, key, key_of, record, sample};
use crate::{Case, CaseResult, Ctx};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(Listing, count_of_an_empty_store_is_zero, listing),
        case!(Listing, count_follows_creates, listing),
        case!(Listing, count_drops_after_delete, listing),
        case!(
            Listing,
            count_after_clear_expired_is_the_live_count,
            listing_without_ttl
        ),
        case!(Listing, list_returns_every_key_in_ascending_order, listing),
        case!(Listing, list_pages_by_keyset, listing),
        case!(Listing, list_with_limit_zero_is_empty, listing),
        case!(Listing, list_after_the_last_key_is_empty, listing),
        case!(Listing, list_after_an_absent_key_starts_after_it, listing),
        case!(Listing, list_omits_deleted_keys, listing),
        case!(Listing, list_of_an_empty_store_is_empty, listing),
    ]
}

fn listing(c: &Capabilities) -> bool {
    c.listing
}

fn listing_without_ttl(c: &Capabilities) -> bool {
    c.listing && !c.native_ttl
}

async fn create_n(ctx: &Ctx, n: usize) -> Result<BTreeSet<SessionKey>, String> {
    let mut keys = BTreeSet::new();
    for i in 0..n {
        keys.insert(
            ctx.store
                .create(&record(&[("i", json!(i))]))
                .await
                .ctx("create")?,
        );
    }
    Ok(keys)
}

async fn count_of_an_empty_store_is_zero(ctx: &Ctx) -> CaseResult {
    let n = ctx.store.count().await.ctx("count")?;
    ensure!(n == 0, "a fresh store counts {n}");
    Ok(())
}

async fn count_follows_creates(ctx: &Ctx) -> CaseResult {
    for i in 1..=5u64 {
        ctx.store.create(&sample()).await.ctx("create")?;
        let n = ctx.store.count().await.ctx("count")?;
        ensure!(n == i, "after {i} creates the count is {n}");
    }
    Ok(())
}

async fn count_drops_after_delete(ctx: &Ctx) -> CaseResult {
    let keys = create_n(ctx, 4).await?;
    let first = keys.iter().next().ok_or("no keys")?;
    ctx.store.delete(first).await.ctx("delete")?;
    let n = ctx.store.count().await.ctx("count")?;
    ensure!(n == 3, "after deleting one of 4 the count is {n}");
    Ok(())
}

async fn count_after_clear_expired_is_the_live_count(ctx: &Ctx) -> CaseResult {
    create_n(ctx, 3).await?;
    for _ in 0..2 {
        ctx.store
            .insert_new(&key(), &expired(&[]))
            .await
            .ctx("insert expired")?;
    }
    ctx.store.clear_expired().await.ctx("clear_expired")?;
    let n = ctx.store.count().await.ctx("count")?;
    ensure!(
        n == 3,
        "after clear_expired the count is {n}, wanted the 3 live records"
    );
    Ok(())
}

async fn list_returns_every_key_in_ascending_order(ctx: &Ctx) -> CaseResult {
    let keys = create_n(ctx, 10).await?;
    let listed = ctx.store.list(None, 100).await.ctx("list")?;
    let want: Vec<SessionKey> = keys.into_iter().collect();
    ensure!(
        listed == want,
        "list gave {} keys, not the {} created in ascending order",
        listed.len(),
        want.len()
    );
    Ok(())
}

async fn list_pages_by_keyset(ctx: &Ctx) -> CaseResult {
    let keys = create_n(ctx, 10).await?;
    let mut seen = Vec::new();
    let mut after: Option<SessionKey> = None;
    // 10 keys in pages of 3: four pages and an empty one; more means the cursor is ignored.
    for _ in 0..6 {
        let page = ctx.store.list(after.as_ref(), 3).await.ctx("list page")?;
        ensure!(page.len() <= 3, "a page of limit 3 held {}", page.len());
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        after = Some(last);
    }
    let want: Vec<SessionKey> = keys.into_iter().collect();
    ensure!(
        seen == want,
        "paging gave {} keys (with order and duplicates checked), wanted {}",
        seen.len(),
        want.len()
    );
    Ok(())
}

async fn list_with_limit_zero_is_empty(ctx: &Ctx) -> CaseResult {
    create_n(ctx, 3).await?;
    let listed = ctx.store.list(None, 0).await.ctx("list")?;
    ensure!(
        listed.is_empty(),
        "list with limit 0 gave {} keys",
        listed.len()
    );
    Ok(())
}

async fn list_after_the_last_key_is_empty(ctx: &Ctx) -> CaseResult {
    let keys = create_n(ctx, 3).await?;
    let last = keys.iter().next_back().ok_or("no keys")?;
    let listed = ctx.store.list(Some(last), 10).await.ctx("list")?;
    ensure!(
        listed.is_empty(),
        "list after the last key gave {} keys",
        listed.len()
    );
    Ok(())
}

async fn list_after_an_absent_key_starts_after_it(ctx: &Ctx) -> CaseResult {
    let (a, m, z) = (key_of('a'), key_of('m'), key_of('z'));
    for k in [&a, &m, &z] {
        ctx.store.insert_new(k, &sample()).await.ctx("insert")?;
    }
    let listed = ctx.store.list(Some(&key_of('n')), 10).await.ctx("list")?;
    ensure!(
        listed == vec![z.clone()],
        "list after an absent key gave {} keys",
        listed.len()
    );
    let listed = ctx.store.list(Some(&key_of('b')), 10).await.ctx("list")?;
    ensure!(
        listed == vec![m, z],
        "list after 'bbb…' gave {} keys",
        listed.len()
    );
    Ok(())
}

async fn list_omits_deleted_keys(ctx: &Ctx) -> CaseResult {
    let keys = create_n(ctx, 5).await?;
    let gone: Vec<SessionKey> = keys.iter().step_by(2).cloned().collect();
    for k in &gone {
        ctx.store.delete(k).await.ctx("delete")?;
    }
    let listed = ctx.store.list(None, 100).await.ctx("list")?;
    let want: Vec<SessionKey> = keys.into_iter().filter(|k| !gone.contains(k)).collect();
    ensure!(
        listed == want,
        "list after deletes gave {} keys, wanted {}",
        listed.len(),
        want.len()
    );
    Ok(())
}

async fn list_of_an_empty_store_is_empty(ctx: &Ctx) -> CaseResult {
    let listed = ctx.store.list(None, 10).await.ctx("list")?;
    ensure!(
        listed.is_empty(),
        "an empty store listed {} keys",
        listed.len()
    );
    Ok(())
}
