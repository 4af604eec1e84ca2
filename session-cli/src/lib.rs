//! `sessions`: the operator's tool for the session framework, as a library.
//!
//! It runs a demo app, creates or upgrades schemas, clears expired sessions, reports
//! statistics, prints one session, copies every session between engines, lists or ends
//! every session of a user (on engines with a per-user index,
//! [`session_core::SessionStore::user_index`]) and checks a configuration — for any engine of the registry it runs with. Schema migration, batched
//! expiry sweeps and statistics are found on the built store
//! ([`session_core::SessionStore::maintenance`]), never by engine name, so an engine of
//! your own gets them by implementing [`session_core::Maintenance`].
//!
//! The `sessions` binary is [`main_with`] on [`builtin_registry`]. An application with
//! engines of its own ships its own `sessions` the same way:
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     let registry = session_cli::builtin_registry();
//!     // my_engine::register(&registry);
//!     session_cli::main_with(registry)
//! }
//! ```
//!
//! `examples/custom_engine.rs` is a complete one, with an engine that implements
//! [`session_core::Maintenance`].
//!
//! Exit codes: 0 success; 1 the store failed (unreachable server, I/O error, corrupt
//! data); 2 bad usage or bad configuration.
#![forbid(unsafe_code)]

mod commands;
mod demo;
mod engines;
mod fmt;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use session_core::EngineRegistry;

/// Exit code for a store failure.
pub const EXIT_STORE: u8 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "sessions",
    version,
    about = "Server-side sessions: demo app and operator commands",
    long_about = "Server-side sessions for Rust web apps.\n\n\
        Every command reads the engine configuration from Sessions.toml in the working \
        directory (or --config FILE), overridden by SESSION_* environment variables, e.g. \
        SESSION_ENGINE=db SESSION_DB__URL=postgres://app@127.0.0.1/app. Operator commands \
        refuse to run with no engine configured or with the in-process memory engine; \
        copy reads its --from and --to files as they are, without SESSION_* overrides.",
    after_help = "Examples:\n  \
        sessions demo                                  # demo app on the file engine, http://127.0.0.1:8000\n  \
        SESSION_ENGINE=memory sessions demo --port 9000\n  \
        sessions --config prod.toml check              # validate config and reach the store\n  \
        sessions --config prod.toml migrate            # create or upgrade the sessions table\n  \
        sessions clear-expired --batch-size 5000       # Django's clearsessions\n  \
        sessions stats --json\n  \
        sessions show 3k9x...                          # one session as JSON\n  \
        sessions copy --from file.toml --to redis.toml # move sessions between engines\n  \
        sessions user ada --json                       # every live session of user ada\n  \
        sessions revoke --user ada                     # sign ada out everywhere\n\n\
        Exit codes: 0 success, 1 store failure, 2 bad usage or configuration."
)]
struct Cli {
    /// Configuration file (default: Sessions.toml in the working directory, if present).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a small web app that shows sessions at work (default engine: file).
    Demo(demo::DemoArgs),
    /// Create or upgrade the store's schema (the sessions table of SQL engines); safe to re-run.
    Migrate,
    /// Delete expired sessions and print how many (Django's clearsessions). Run it from cron.
    ClearExpired(commands::ClearArgs),
    /// Live and expired counts, total and largest sizes, size histogram.
    Stats(commands::StatsArgs),
    /// Print one session, decoded, as JSON.
    Show(commands::ShowArgs),
    /// Copy every live session, with its expiry, from one engine to another.
    Copy(commands::CopyArgs),
    /// Validate the configuration and reach the store.
    Check,
    /// List a user's live sessions (id, created, last seen, expires, client).
    User(commands::UserArgs),
    /// End every live session of a user and print how many ended.
    Revoke(commands::RevokeArgs),
}

/// A registry with every engine of the workspace's backend crates (file, SQL, cache,
/// cached SQL), the middleware's cookie engine and the Django-format engines
/// (`django_db`, `django_cache`, `django_cached_db`).
pub fn builtin_registry() -> EngineRegistry {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    backend_file::register(&registry);
    backend_db::register(&registry);
    backend_cached_db::register(&registry);
    session_axum::register(&registry);
    session_django::register(&registry);
    registry
}

/// Runs the `sessions` command line (arguments from the process) with the engines of
/// `registry`, and returns its exit code.
pub fn main_with(registry: EngineRegistry) -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SESSIONS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_STORE);
        }
    };
    let config = cli.config.as_deref();
    let r = &registry;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(r, config, args).await,
            Command::Migrate => commands::migrate(r, config).await,
            Command::ClearExpired(args) => commands::clear_expired(r, config, args).await,
            Command::Stats(args) => commands::stats(r, config, args).await,
            Command::Show(args) => commands::show(r, config, args).await,
            Command::Copy(args) => commands::copy(r, args).await,
            Command::Check => commands::check(r, config).await,
            Command::User(args) => commands::user(r, config, args).await,
            Command::Revoke(args) => commands::revoke(r, config, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.code())
        }
    }
}
