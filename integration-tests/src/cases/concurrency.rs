//! Concurrency: parallel creates, races on one key, and many handles saving one session.
//!
//! Outcomes the suite pins (and the README documents):
//! - 64 handles each setting their own key, then saving: every key survives, because a
//!   save that loses a compare-and-set race reloads and re-applies only its own changes;
//! - 64 handles incrementing one counter with [`Session::update`]: the counter ends at
//!   exactly 64, because the closure is re-run on the fresh value;
//! - 64 handles doing a plain `get` then `insert` of one counter: last writer wins for
//!   that key (the final value is between 1 and 64), no save fails, and no other key
//!   is lost.
//!
//! Every case runs its tasks with `tokio::spawn` (so a multi-thread runtime really runs
//! them in parallel) and gives up after [`CONCURRENCY_DEADLINE`].

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::json;
use session_core::{Error, Inserted, Record, Session, SessionKey, SessionSettings, SessionStore};

use super::{
    CONCURRENCY_DEADLINE, Ctx as _, always, case, compare_and_set, data, ensure, key, must_load,
    record, sample, saved_session, settings_with,
};
use crate::{Case, CaseResult, Ctx};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        case!(
            Concurrency,
            a_thousand_concurrent_creates_never_collide,
            always
        ),
        case!(
            Concurrency,
            racing_insert_new_on_one_key_has_one_winner,
            always
        ),
        case!(
            Concurrency,
            racing_compare_and_set_updates_have_one_winner,
            compare_and_set
        ),
        case!(
            Concurrency,
            sixty_four_handles_keep_every_key,
            compare_and_set
        ),
        case!(
            Concurrency,
            sixty_four_update_closures_count_exactly,
            compare_and_set
        ),
        case!(
            Concurrency,
            sixty_four_plain_increments_last_writer_wins,
            compare_and_set
        ),
        case!(
            Concurrency,
            sixty_four_handles_removing_their_own_keys,
            compare_and_set
        ),
        case!(Concurrency, concurrent_logout_never_resurrects, always),
        case!(
            Concurrency,
            touch_racing_updates_never_bumps_the_version,
            always
        ),
        case!(Concurrency, readers_never_see_a_torn_record, always),
        case!(Concurrency, parallel_sessions_stay_isolated, always),
    ]
}

const HANDLES: usize = 64;

/// Runs `f` under the concurrency deadline.
async fn bounded<T>(what: &str, f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(CONCURRENCY_DEADLINE, f)
        .await
        .map_err(|_| format!("{what} did not finish within {CONCURRENCY_DEADLINE:?}"))?
}

/// Joins every task, turning a panicked task into a failure.
async fn join_all<T: Send + 'static>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| format!("a task failed: {e}"))?);
    }
    Ok(out)
}

/// Settings with enough save attempts for `HANDLES` contenders: each lost race is a
/// win for another handle, so `HANDLES` attempts always suffice.
fn contended(ctx: &Ctx) -> Arc<SessionSettings> {
    settings_with(ctx, |s| {
        s.save_attempts = s.save_attempts.max(HANDLES as u32 * 2)
    })
}

async fn a_thousand_concurrent_creates_never_collide(ctx: &Ctx) -> CaseResult {
    const N: usize = 1_000;
    bounded("1,000 creates", async {
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let store = ctx.store.clone();
                tokio::spawn(async move {
                    store
                        .create(&record(&[("i", json!(i))]))
                        .await
                        .map(|k| (i, k))
                })
            })
            .collect();
        let created: Vec<(usize, SessionKey)> = join_all(tasks)
            .await?
            .into_iter()
            .collect::<Result<_, _>>()
            .ctx("create")?;
        let distinct: HashSet<&SessionKey> = created.iter().map(|(_, k)| k).collect();
        ensure!(
            distinct.len() == N,
            "{N} creates gave only {} distinct keys",
            distinct.len()
        );
        let store = ctx.store.clone();
        let mut loads = futures::stream::iter(created)
            .map(|(i, k)| {
                let store = store.clone();
                async move { (i, store.load(&k).await) }
            })
            .buffer_unordered(32);
        while let Some((i, got)) = loads.next().await {
            let got = got.ctx("load")?;
            ensure!(
                got.as_ref().and_then(|r| r.data.get("i")) == Some(&json!(i)),
                "created record #{i} loads as {got:?}"
            );
        }
        Ok(())
    })
    .await
}

async fn racing_insert_new_on_one_key_has_one_winner(ctx: &Ctx) -> CaseResult {
    const RACERS: usize = 16;
    bounded("insert_new race", async {
        for round in 0..8 {
            let k = key();
            let tasks: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (store, k) = (ctx.store.clone(), k.clone());
                    tokio::spawn(async move {
                        store
                            .insert_new(&k, &record(&[("winner", json!(i))]))
                            .await
                            .map(|r| (i, r))
                    })
                })
                .collect();
            let results: Vec<(usize, Inserted)> = join_all(tasks)
                .await?
                .into_iter()
                .collect::<Result<_, _>>()
                .ctx("insert_new")?;
            let winners: Vec<usize> = results
                .iter()
                .filter(|(_, r)| *r == Inserted::Created)
                .map(|(i, _)| *i)
                .collect();
            ensure!(
                winners.len() == 1,
                "round {round}: {} racers created the same key: {winners:?}",
                winners.len()
            );
            let got = must_load(ctx, &k, "load").await?;
            ensure!(
                got.data.get("winner") == Some(&json!(winners[0])),
                "round {round}: racer {} won but the record holds {:?}",
                winners[0],
                got.data
            );
        }
        Ok(())
    })
    .await
}

async fn racing_compare_and_set_updates_have_one_winner(ctx: &Ctx) -> CaseResult {
    const RACERS: usize = 16;
    bounded("compare-and-set race", async {
        let k = ctx.store.create(&sample()).await.ctx("create")?;
        for round in 0..8u64 {
            let expected = round + 1;
            let tasks: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (store, k) = (ctx.store.clone(), k.clone());
                    tokio::spawn(async move {
                        (
                            i,
                            store
                                .update(&k, &record(&[("w", json!(i))]), Some(expected))
                                .await,
                        )
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for (i, res) in join_all(tasks).await? {
                match res {
                    Ok(v) if v == expected + 1 => winners.push(i),
                    Ok(v) => {
                        return Err(format!("round {round}: a CAS update returned version {v}"));
                    }
                    Err(Error::Conflict { .. }) => {}
                    Err(e) => return Err(format!("round {round}: a CAS update failed: {e}")),
                }
            }
            ensure!(
                winners.len() == 1,
                "round {round}: {} writers won the same version: {winners:?}",
                winners.len()
            );
            let got = must_load(ctx, &k, "load").await?;
            ensure!(
                got.version == expected + 1 && got.data.get("w") == Some(&json!(winners[0])),
                "round {round}: winner {} but the store holds {got:?}",
                winners[0]
            );
        }
        Ok(())
    })
    .await
}

/// Starts `HANDLES` handles on `k`, each running `f(handle, i)` then `save`.
async fn swarm<F, Fut>(ctx: &Ctx, k: &SessionKey, f: F) -> Result<Vec<Result<(), Error>>, String>
where
    F: Fn(Session, usize) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let settings = contended(ctx);
    // Every handle reads before any saves: the worst case for lost updates.
    let barrier = Arc::new(tokio::sync::Barrier::new(HANDLES));
    let tasks: Vec<_> = (0..HANDLES)
        .map(|i| {
            let s = Session::new(ctx.store.clone(), settings.clone(), Some(k.clone()));
            let work = f(s.clone(), i);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let done = work.await;
                barrier.wait().await;
                done?;
                s.save().await
            })
        })
        .collect();
    join_all(tasks).await
}

fn all_ok(results: Vec<Result<(), Error>>, what: &str) -> CaseResult {
    for (i, r) in results.into_iter().enumerate() {
        r.ctx(&format!("{what}: handle #{i}"))?;
    }
    Ok(())
}

async fn sixty_four_handles_keep_every_key(ctx: &Ctx) -> CaseResult {
    bounded("64 handles", async {
        let k = saved_session(ctx, &[("base", json!("kept"))]).await?;
        let results = swarm(ctx, &k, |s, i| async move {
            s.insert(&format!("h{i:02}"), &i).await
        })
        .await?;
        all_ok(results, "save")?;
        let got = must_load(ctx, &k, "load").await?;
        for i in 0..HANDLES {
            let name = format!("h{i:02}");
            ensure!(
                got.data.get(&name) == Some(&json!(i)),
                "handle #{i}'s key was lost: {name} = {:?}",
                got.data.get(&name)
            );
        }
        ensure!(
            got.data.get("base") == Some(&json!("kept")),
            "the pre-existing key was lost"
        );
        ensure!(
            got.data.len() == HANDLES + 1,
            "the session holds {} keys",
            got.data.len()
        );
        Ok(())
    })
    .await
}

async fn sixty_four_update_closures_count_exactly(ctx: &Ctx) -> CaseResult {
    bounded("64 increments", async {
        let k = saved_session(ctx, &[("counter", json!(0))]).await?;
        let results = swarm(ctx, &k, |s, _| async move {
            s.update("counter", |n: Option<u64>| n.unwrap_or(0) + 1)
                .await
                .map(|_| ())
        })
        .await?;
        all_ok(results, "save")?;
        let got = must_load(ctx, &k, "load").await?;
        ensure!(
            got.data.get("counter") == Some(&json!(HANDLES)),
            "64 concurrent increments gave {:?}",
            got.data.get("counter")
        );
        Ok(())
    })
    .await
}

async fn sixty_four_plain_increments_last_writer_wins(ctx: &Ctx) -> CaseResult {
    bounded("64 plain increments", async {
        let k = saved_session(ctx, &[]).await?;
        let results = swarm(ctx, &k, |s, i| async move {
            let n = s.get::<u64>("counter").await?.unwrap_or(0);
            s.insert("counter", &(n + 1)).await?;
            s.insert(&format!("h{i:02}"), &true).await
        })
        .await?;
        all_ok(results, "save (a plain get+insert must not fail)")?;
        let got = must_load(ctx, &k, "load").await?;
        let counter = got.data.get("counter").and_then(serde_json::Value::as_u64);
        ensure!(
            counter.is_some_and(|n| (1..=HANDLES as u64).contains(&n)),
            "the counter ended at {counter:?}, wanted a value in 1..=64 (last writer wins)"
        );
        for i in 0..HANDLES {
            ensure!(
                got.data.contains_key(&format!("h{i:02}")),
                "handle #{i}'s own key was lost"
            );
        }
        Ok(())
    })
    .await
}

async fn sixty_four_handles_removing_their_own_keys(ctx: &Ctx) -> CaseResult {
    bounded("64 removals", async {
        let mut pairs: Vec<(String, serde_json::Value)> = (0..HANDLES)
            .map(|i| (format!("h{i:02}"), json!(i)))
            .collect();
        pairs.push(("survivor".into(), json!(true)));
        let refs: Vec<(&str, serde_json::Value)> =
            pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let k = saved_session(ctx, &refs).await?;
        let results = swarm(ctx, &k, |s, i| async move {
            s.remove(&format!("h{i:02}")).await.map(|_| ())
        })
        .await?;
        all_ok(results, "save")?;
        let got = must_load(ctx, &k, "load").await?;
        ensure!(
            got.data == data(&[("survivor", json!(true))]),
            "after 64 concurrent removals the session holds {} keys: {:?}",
            got.data.len(),
            got.data.keys().take(5).collect::<Vec<_>>()
        );
        Ok(())
    })
    .await
}

async fn concurrent_logout_never_resurrects(ctx: &Ctx) -> CaseResult {
    bounded("logout race", async {
        for round in 0..16 {
            let k = saved_session(ctx, &[("user", json!(1))]).await?;
            // The writer has read the live session before the logout starts.
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let writer = {
                let s = Session::new(ctx.store.clone(), ctx.settings.clone(), Some(k.clone()));
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let read = s.insert("late", &true).await;
                    barrier.wait().await;
                    read?;
                    s.save().await
                })
            };
            let logout = {
                let s = Session::new(ctx.store.clone(), ctx.settings.clone(), Some(k.clone()));
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.flush().await
                })
            };
            let (w, l) = (writer.await, logout.await);
            l.map_err(|e| format!("logout task: {e}"))?.ctx("logout")?;
            match w.map_err(|e| format!("writer task: {e}"))? {
                Ok(()) | Err(Error::NotFound) => {}
                Err(e) => return Err(format!("round {round}: the racing save failed with {e}")),
            }
            let got = ctx.store.load(&k).await.ctx("load")?;
            ensure!(
                got.is_none(),
                "round {round}: the logged-out session came back: {got:?}"
            );
        }
        Ok(())
    })
    .await
}

async fn touch_racing_updates_never_bumps_the_version(ctx: &Ctx) -> CaseResult {
    const UPDATES: u64 = 16;
    bounded("touch vs update", async {
        let k = ctx.store.create(&sample()).await.ctx("create")?;
        let mut tasks = Vec::new();
        for i in 0..UPDATES {
            let (store, key) = (ctx.store.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .update(&key, &record(&[("n", json!(i))]), None)
                    .await
                    .map(|_| ())
            }));
            let (store, key) = (ctx.store.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .touch(
                        &key,
                        session_core::Timestamp::now().add_secs(super::LIVE_SECS * 2),
                    )
                    .await
            }));
        }
        for r in join_all(tasks).await? {
            r.ctx("update or touch")?;
        }
        let got = must_load(ctx, &k, "load").await?;
        ensure!(
            got.version == 1 + UPDATES,
            "{UPDATES} updates and {UPDATES} touches left version {}, wanted {}",
            got.version,
            1 + UPDATES
        );
        ensure!(
            got.data
                .get("n")
                .and_then(serde_json::Value::as_u64)
                .is_some_and(|n| n < UPDATES),
            "the record holds data no update wrote: {:?}",
            got.data
        );
        Ok(())
    })
    .await
}

async fn readers_never_see_a_torn_record(ctx: &Ctx) -> CaseResult {
    bounded("readers vs writer", async {
        let pair = |i: u64| {
            let payload = format!("{i:08}").repeat(512);
            record(&[
                ("a", json!(i)),
                ("b", json!(i)),
                ("payload", json!(payload)),
            ])
        };
        let k = ctx.store.create(&pair(0)).await.ctx("create")?;
        let writer = {
            let (store, k) = (ctx.store.clone(), k.clone());
            tokio::spawn(async move {
                for i in 1..=50 {
                    store.update(&k, &pair(i), None).await?;
                }
                Ok::<_, Error>(())
            })
        };
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (store, k) = (ctx.store.clone(), k.clone());
                tokio::spawn(async move { read_consistently(store, k, 50).await })
            })
            .collect();
        writer
            .await
            .map_err(|e| format!("writer task: {e}"))?
            .ctx("update")?;
        for r in join_all(readers).await? {
            r?;
        }
        Ok(())
    })
    .await
}

async fn read_consistently(store: Arc<dyn SessionStore>, k: SessionKey, n: usize) -> CaseResult {
    for _ in 0..n {
        let got: Option<Record> = store.load(&k).await.ctx("load")?;
        let r = got.ok_or("the record vanished while being updated")?;
        let a = r.data.get("a").cloned();
        ensure!(
            a == r.data.get("b").cloned(),
            "torn read: a = {a:?}, b = {:?}",
            r.data.get("b")
        );
        let want = a
            .and_then(|v| v.as_u64())
            .map(|i| format!("{i:08}").repeat(512));
        ensure!(
            want.as_ref().map(|w| json!(w)).as_ref() == r.data.get("payload"),
            "torn read: the payload does not match a = {:?}",
            r.data.get("a")
        );
        tokio::task::yield_now().await;
    }
    Ok(())
}

async fn parallel_sessions_stay_isolated(ctx: &Ctx) -> CaseResult {
    bounded("parallel sessions", async {
        let tasks: Vec<_> = (0..HANDLES)
            .map(|i| {
                let s = Session::new(ctx.store.clone(), ctx.settings.clone(), None);
                tokio::spawn(async move {
                    s.insert("owner", &i).await?;
                    s.save().await?;
                    s.insert("step", &2).await?;
                    s.save().await?;
                    Ok::<_, Error>((i, s.key()))
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for r in join_all(tasks).await? {
            let (i, k) = r.ctx("session")?;
            let k = k.ok_or("a saved session has no key")?;
            ensure!(seen.insert(k.clone()), "two sessions share a key");
            let got = must_load(ctx, &k, "load").await?;
            ensure!(
                got.data == data(&[("owner", json!(i)), ("step", json!(2))]),
                "session #{i} holds {:?}",
                got.data
            );
        }
        Ok(())
    })
    .await
}
