//! The operator commands: migrate, clear-expired, stats, show, copy, check, user, revoke.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde_json::json;
use session_core::maintenance::{SIZE_BUCKETS, scan_stats};
use session_core::{ClearReport, EngineRegistry, Error, Inserted, SessionKey, SessionStore};

use crate::engines;
use crate::fmt::{CliError, CliResult, iso, progress};

/// Keys fetched per listing page.
const PAGE: usize = 1000;

/// `clear-expired` options.
#[derive(Args, Debug)]
pub struct ClearArgs {
    /// Rows (or files) deleted per statement; smaller batches hold shorter locks.
    /// Default: the store's own (10,000; 1,000 on SQLite, whose lock covers the whole
    /// database).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u64>,
}

/// `stats` options.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `show` options.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The session key (the value of the session cookie).
    pub key: String,
    /// Print the stored bytes as they are instead of the decoded record.
    #[arg(long)]
    pub raw: bool,
}

/// `copy` options.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Configuration file of the engine to copy from, read as it is (SESSION_* variables
    /// do not apply to either side).
    #[arg(long, value_name = "CONFIG")]
    pub from: PathBuf,
    /// Configuration file of the engine to copy to, read as it is.
    #[arg(long, value_name = "CONFIG")]
    pub to: PathBuf,
}

/// `sessions migrate`: the store's [`session_core::Maintenance::migrate`].
pub async fn migrate(registry: &EngineRegistry, path: Option<&Path>) -> CliResult {
    let config = engines::load_for(registry, path, "migrate")?;
    let store = engines::build_for(registry, &config, "migrate").await?;
    let Some(maintenance) = store.maintenance() else {
        println!(
            "engine {} offers no maintenance operations (no schema to migrate): nothing to do",
            store.engine()
        );
        return Ok(());
    };
    match maintenance.migrate().await? {
        None => println!(
            "engine {} keeps no schema: nothing to migrate",
            store.engine()
        ),
        Some(done) if done.created() => {
            println!("created {} (schema version {})", done.object, done.to)
        }
        Some(done) if done.changed() => println!(
            "migrated {} from schema version {} to {}",
            done.object, done.from, done.to
        ),
        Some(done) => println!("{} is up to date (schema version {})", done.object, done.to),
    }
    Ok(())
}

/// `sessions clear-expired`: the store's [`session_core::Maintenance::clear_expired`]
/// (batched, with a running count) where it offers one, else
/// [`SessionStore::clear_expired`].
pub async fn clear_expired(
    registry: &EngineRegistry,
    path: Option<&Path>,
    args: ClearArgs,
) -> CliResult {
    if args.batch_size == Some(0) {
        return Err(CliError::usage("--batch-size must be at least 1", None));
    }
    let config = engines::load_for(registry, path, "clear-expired")?;
    let store = engines::build_for(registry, &config, "clear-expired").await?;
    let pb = progress(None, "deleting expired sessions");
    let (target, report, native_ttl) = match store.maintenance() {
        Some(m) => {
            let set = |n: u64| pb.set_position(n);
            let batch = args.batch_size.unwrap_or_else(|| m.default_batch());
            let report = m.clear_expired(batch, &set).await?;
            (m.target(), report, false)
        }
        None => {
            let removed = store.clear_expired().await?;
            (
                store.engine().to_owned(),
                ClearReport::removed(removed),
                store.capabilities().native_ttl,
            )
        }
    };
    pb.finish_and_clear();
    let removed = report.removed;
    if native_ttl {
        println!("{removed} expired sessions removed ({target} expires sessions by itself)");
    } else {
        println!("{removed} expired sessions removed from {target}");
    }
    if report.skipped > 0 {
        let detail = report
            .skipped_detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        println!(
            "skipped {} unreadable entries{detail}; they are left in place, and logged by \
             session fingerprint",
            report.skipped,
        );
    }
    Ok(())
}

#[derive(Serialize, Default)]
struct Stats {
    engine: String,
    live: u64,
    expired: u64,
    unreadable: u64,
    /// Entries that could not be read at all (not a regular file, over the size limit).
    skipped: u64,
    total_bytes: u64,
    largest_bytes: u64,
    /// Seconds since the oldest expired record still stored expired (`None`: no expired
    /// record, or the store cannot tell).
    cleanup_lag_secs: Option<i64>,
    /// (upper bound in bytes, count); the last bucket has no bound.
    histogram: Vec<(String, u64)>,
}

/// Labels of [`session_core::maintenance::SIZE_BUCKETS`].
const BUCKET_LABELS: [&str; SIZE_BUCKETS.len()] = [
    "< 1 KiB",
    "1-4 KiB",
    "4-16 KiB",
    "16-64 KiB",
    "64-256 KiB",
    ">= 256 KiB",
];

/// Every key of a listing store, a page at a time.
struct KeyPages {
    store: Arc<dyn SessionStore>,
    after: Option<SessionKey>,
    done: bool,
}

impl KeyPages {
    fn new(store: Arc<dyn SessionStore>) -> Self {
        KeyPages {
            store,
            after: None,
            done: false,
        }
    }

    async fn next(&mut self) -> CliResult<Option<Vec<SessionKey>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.list(self.after.as_ref(), PAGE).await?;
        match page.last() {
            None => {
                self.done = true;
                Ok(None)
            }
            Some(last) => {
                self.after = Some(last.clone());
                Ok(Some(page))
            }
        }
    }
}

/// `sessions stats`: the store's [`session_core::Maintenance::stats`] where it offers
/// them, else a scan of a store that lists its keys
/// ([`session_core::maintenance::scan_stats`]).
pub async fn stats(registry: &EngineRegistry, path: Option<&Path>, args: StatsArgs) -> CliResult {
    let config = engines::load_for(registry, path, "stats")?;
    let codec = config.settings()?.codec();
    let store = engines::build_for(registry, &config, "stats").await?;
    let total = store.count().await.ok();
    let pb = progress(total, "reading sessions");
    let set = |n: u64| pb.set_position(n);
    let found = match store.maintenance() {
        Some(m) => m.stats(&set).await?,
        None => scan_stats(store.as_ref(), codec.as_ref(), &set).await?,
    };
    pb.finish_and_clear();
    let s = Stats {
        engine: store.engine().to_owned(),
        live: found.live,
        expired: found.expired,
        unreadable: found.unreadable,
        skipped: found.skipped,
        total_bytes: found.total_bytes,
        largest_bytes: found.largest_bytes,
        cleanup_lag_secs: found
            .oldest_expired
            .map(|t| t.secs_until(session_core::Timestamp::now()).max(0)),
        histogram: BUCKET_LABELS
            .iter()
            .zip(found.sizes)
            .map(|(label, n)| ((*label).to_owned(), n))
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    println!("engine        {}", s.engine);
    println!("live          {}", s.live);
    println!(
        "expired       {} (run `sessions clear-expired` to remove them)",
        s.expired
    );
    match s.cleanup_lag_secs {
        Some(lag) => println!(
            "cleanup lag   {} (the oldest expired record still stored expired that long ago)",
            humantime::format_duration(std::time::Duration::from_secs(lag.unsigned_abs()))
        ),
        None if s.expired == 0 => println!("cleanup lag   none (no expired record stored)"),
        None => println!("cleanup lag   unknown (this store does not tell record deadlines)"),
    }
    if s.unreadable > 0 {
        println!("unreadable    {} (corrupt or foreign bytes)", s.unreadable);
    }
    if s.skipped > 0 {
        println!(
            "skipped {} unreadable entries (not a regular file, or over max_encoded_size; \
             left in place and logged by session fingerprint)",
            s.skipped
        );
    }
    println!("total size    {}", human_bytes(s.total_bytes));
    println!("largest       {}", human_bytes(s.largest_bytes));
    println!("sizes:");
    let widest = s
        .histogram
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0)
        .max(1);
    for (label, n) in &s.histogram {
        let bar = "#".repeat(((*n * 40).div_ceil(widest)) as usize);
        println!("  {label:>11}  {n:>8}  {bar}");
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n < 1 << 10 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// `sessions show KEY`.
pub async fn show(registry: &EngineRegistry, path: Option<&Path>, args: ShowArgs) -> CliResult {
    let key = SessionKey::parse(args.key.trim()).map_err(Error::from)?;
    let config = engines::load_for(registry, path, "show")?;
    let store = engines::build_for(registry, &config, "show").await?;
    if args.raw {
        let raw = store
            .raw()
            .ok_or_else(|| Error::unsupported(store.engine(), "raw access"))?;
        return match raw.get_raw(&key).await? {
            Some(bytes) => {
                println!("{}", String::from_utf8_lossy(&bytes));
                Ok(())
            }
            None => Err(not_found(&key)),
        };
    }
    match store.load(&key).await {
        Ok(Some(r)) => {
            let out = json!({
                "version": r.version,
                "created_at": iso(r.created_at),
                "expires_at": iso(r.expires_at),
                "expiry": r.expiry,
                "data": r.data,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
        Ok(None) => Err(not_found(&key)),
        Err(e @ Error::Codec(_)) => Err(CliError::from(e)),
        Err(e) => Err(e.into()),
    }
}

fn not_found(key: &SessionKey) -> CliError {
    CliError::store(
        format!(
            "no live session under that key (fingerprint {})",
            key.fingerprint()
        ),
        Some(
            "the session may have expired or been deleted; `sessions stats` counts what is stored"
                .into(),
        ),
    )
}

/// `SESSION_*` variables set in this process's environment (names only: values may be
/// secrets).
fn session_env_names() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.to_ascii_uppercase()
                .starts_with(session_core::config::ENV_PREFIX)
        })
        .collect();
    names.sort();
    names
}

/// `sessions copy --from A --to B`.
///
/// Both files are read as they are. `SESSION_*` environment overrides would apply to
/// both sides alike (`SESSION_ENGINE=memory` left in the shell once made a copy
/// "memory -> memory" of nothing), so copy ignores them, and says so.
pub async fn copy(registry: &EngineRegistry, args: CopyArgs) -> CliResult {
    let ignored = session_env_names();
    if !ignored.is_empty() {
        eprintln!(
            "note: copy reads --from and --to as they are; ignoring the environment overrides {}",
            ignored.join(", ")
        );
    }
    let from_cfg = engines::load_file_only(registry, &args.from, "copy")?;
    let to_cfg = engines::load_file_only(registry, &args.to, "copy")?;
    let src = engines::build_for(registry, &from_cfg, "copy").await?;
    let dst = engines::build_for(registry, &to_cfg, "copy").await?;
    if !src.capabilities().listing {
        return Err(
            Error::unsupported(src.engine(), "listing sessions (needed to copy from it)").into(),
        );
    }
    let total = src.count().await.ok();
    let pb = progress(
        total,
        &format!("copying {} -> {}", src.engine(), dst.engine()),
    );
    let (mut created, mut updated, mut unchanged, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    let (mut seen, mut unreadable, mut unwritable) = (0u64, 0u64, 0u64);
    let mut pages = KeyPages::new(src.clone());
    while let Some(page) = pages.next().await? {
        for k in page {
            pb.inc(1);
            seen += 1;
            let record = match src.load(&k).await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    skipped += 1; // expired meanwhile
                    continue;
                }
                Err(Error::Codec(e)) => {
                    tracing::warn!(session = %k.fingerprint(), error = %e, "skipping an unreadable session");
                    skipped += 1;
                    unreadable += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match dst.insert_new(&k, &record).await? {
                Inserted::Created => created += 1,
                Inserted::KeyTaken => match dst.load(&k).await {
                    Ok(Some(t)) if t.data == record.data && t.expires_at == record.expires_at => {
                        unchanged += 1
                    }
                    // What the target holds under the key cannot be read (a corrupt record,
                    // or not a session file at all): it is never overwritten.
                    Err(Error::Codec(e)) => {
                        tracing::warn!(session = %k.fingerprint(), error = %e, "not copying over an unreadable entry of the target");
                        skipped += 1;
                        unwritable += 1;
                    }
                    Err(e) => return Err(e.into()),
                    Ok(_) => match dst.update(&k, &record, None).await {
                        Ok(_) => updated += 1,
                        Err(Error::NotFound) => {
                            dst.insert_new(&k, &record).await?;
                            created += 1;
                        }
                        Err(e) => return Err(e.into()),
                    },
                },
            }
        }
    }
    pb.finish_and_clear();
    let copied = created + updated + unchanged;
    println!(
        "copied {copied} sessions from {} to {}: {created} new, {updated} updated, {unchanged} already there, {skipped} skipped (expired or unreadable)",
        src.engine(),
        dst.engine()
    );
    if unreadable + unwritable > 0 {
        println!(
            "skipped {} unreadable entries ({unreadable} in the source, {unwritable} in the \
             target under the same key); they are left in place and logged by session fingerprint",
            unreadable + unwritable
        );
    }
    if copied == 0 {
        let from = args.from.display();
        if seen == 0 {
            eprintln!(
                "note: the source ({from}, engine {}) holds no sessions",
                src.engine()
            );
        } else if unreadable > 0 {
            return Err(CliError::store(
                format!(
                    "none of the {seen} sessions of the source ({from}) was copied: \
                     {unreadable} could not be read, the others have expired"
                ),
                Some(
                    "the source's codec or encryption keys must be the ones its application \
                     writes with; `sessions stats` counts unreadable sessions"
                        .into(),
                ),
            ));
        } else {
            eprintln!(
                "note: the source ({from}) holds {seen} sessions, all expired: nothing to copy"
            );
        }
    }
    Ok(())
}

/// `sessions check`.
pub async fn check(registry: &EngineRegistry, path: Option<&Path>) -> CliResult {
    let config = engines::load_for(registry, path, "check")?;
    let settings = config.settings()?;
    let store = match tokio::time::timeout(
        Duration::from_secs(15),
        engines::build_for(registry, &config, "check"),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Timeout {
                engine: settings.engine.clone(),
                after: Duration::from_secs(15),
            }
            .into());
        }
    };
    let probe = SessionKey::generate().map_err(Error::from)?;
    match tokio::time::timeout(Duration::from_secs(10), store.exists(&probe)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(Error::Timeout {
                engine: store.engine().to_owned(),
                after: Duration::from_secs(10),
            }
            .into());
        }
    }
    let caps = store.capabilities();
    println!(
        "ok: engine {} answers (codec {:?}, default age {} s, durable: {}, shared across processes: {})",
        store.engine(),
        settings.codec,
        settings.expiry.default_age_secs,
        caps.durable,
        caps.cross_process
    );
    Ok(())
}

/// `user` options.
#[derive(Args, Debug)]
pub struct UserArgs {
    /// The user (the principal the application signs sessions in as).
    pub name: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `revoke` options.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// End every session of this user (the principal the application signs sessions
    /// in as).
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// The engines that keep a per-user index, for the error on one that does not.
const INDEXED_ENGINES: &str = "file, db (SQLite, PostgreSQL, MySQL/MariaDB), cached_db, and \
    cache on Redis or Redis Cluster (not Memcached)";

/// Refuses a name no store would hold as a principal, before any I/O.
fn check_user(name: &str) -> CliResult {
    session_core::users::validate_principal(name).map_err(|e| {
        CliError::usage(
            format!("invalid user name {name:?}: {e}"),
            Some(format!(
                "a user name is 1 to {} bytes, with no control characters",
                session_core::users::MAX_PRINCIPAL_LEN
            )),
        )
    })
}

/// The store of an operator command about a user's sessions, and its user index; a
/// usage error on an engine without one.
async fn user_store(
    registry: &EngineRegistry,
    path: Option<&Path>,
    command: &str,
) -> CliResult<Arc<dyn SessionStore>> {
    let config = engines::load_for(registry, path, command)?;
    let store = engines::build_for(registry, &config, command).await?;
    if store.user_index().is_none() {
        return Err(CliError::usage(
            format!(
                "engine {} keeps no per-user index: it cannot list or end a user's sessions",
                store.engine()
            ),
            Some(format!("the engines that keep one: {INDEXED_ENGINES}")),
        ));
    }
    Ok(store)
}

fn index_of(store: &dyn SessionStore) -> CliResult<&dyn session_core::UserIndex> {
    Ok(session_core::users::index_of(store)?)
}

/// `sessions user NAME`: the user's live sessions, oldest first.
pub async fn user(registry: &EngineRegistry, path: Option<&Path>, args: UserArgs) -> CliResult {
    check_user(&args.name)?;
    let store = user_store(registry, path, "user").await?;
    let list = index_of(store.as_ref())?
        .sessions_of(&args.name, None)
        .await?;
    if args.json {
        let sessions: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "created_at": iso(s.created_at),
                    "last_seen": s.meta.last_seen.map(iso),
                    "expires_at": iso(s.expires_at),
                    "user_agent": s.meta.user_agent,
                    "client_addr": s.meta.client_addr,
                })
            })
            .collect();
        let out = json!({ "user": args.name, "engine": store.engine(), "sessions": sessions });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    if list.is_empty() {
        println!(
            "no live session of {:?} (engine {})",
            args.name,
            store.engine()
        );
        return Ok(());
    }
    println!(
        "{} live session(s) of {:?} (engine {}):",
        list.len(),
        args.name,
        store.engine()
    );
    println!(
        "{:<32}  {:<20}  {:<20}  {:<20}  client",
        "id", "created", "last seen", "expires"
    );
    for s in &list {
        let client = match (&s.meta.user_agent, &s.meta.client_addr) {
            (None, None) => "-".to_owned(),
            (ua, addr) => format!(
                "{} {}",
                addr.as_deref().unwrap_or("-"),
                ua.as_deref().unwrap_or("-")
            ),
        };
        println!(
            "{:<32}  {:<20}  {:<20}  {:<20}  {client}",
            s.id,
            iso(s.created_at),
            s.meta.last_seen.map(iso).unwrap_or_else(|| "-".into()),
            iso(s.expires_at),
        );
    }
    Ok(())
}

/// `sessions revoke --user NAME`: ends every live session of the user.
pub async fn revoke(registry: &EngineRegistry, path: Option<&Path>, args: RevokeArgs) -> CliResult {
    check_user(&args.user)?;
    let store = user_store(registry, path, "revoke").await?;
    let ended = index_of(store.as_ref())?
        .end_sessions(&args.user, None)
        .await?;
    if args.json {
        let out = json!({ "user": args.user, "engine": store.engine(), "ended": ended });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!(
            "ended {ended} session(s) of {:?} (engine {})",
            args.user,
            store.engine()
        );
    }
    Ok(())
}
