//! Sessions shared with a real Django 5.2 (the LTS) in both directions, on SQLite,
//! PostgreSQL, MySQL/MariaDB and Redis: the tiny project in `tests/django/` runs as `manage.py`
//! subprocesses against the same store and SECRET_KEY as the Rust side.
//!
//! Needs the virtual environment `scripts/django-env` makes (or `DJANGO_PYTHON`), and
//! the test servers (`scripts/test --servers-only`; `source target/test-servers.env`).
//! Missing either fails the test, naming the command that fixes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use integration_tests::servers;
use serde_json::{Value, json};
use session_core::codec::CodecError;
use session_core::{
    Error, Expiry, Record, Session, SessionData, SessionKey, SessionSettings, SessionStore,
};
use session_django::cache::{CACHE_PREFIX, DjangoCacheStore};
use session_django::db::{DjangoDbConfig, DjangoDbStore};
use session_django::{AuthUser, DjangoFormat, DjangoSecrets};

const SECRET: &str = "interop-secret-key-for-tests-only";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The venv's python, checked to import Django 5.2; panics with the fix otherwise.
fn python() -> PathBuf {
    let py = std::env::var_os("DJANGO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/django-venv/bin/python"));
    let ok = Command::new(&py)
        .args([
            "-c",
            "import django, redis, psycopg, pymysql; assert django.VERSION[:2] == (5, 2)",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "Django 5.2 is not installed at {}: run `scripts/django-env` (it creates \
         target/django-venv and pip-installs Django 5.2, redis, psycopg and PyMySQL), or set \
         DJANGO_PYTHON to a python that has them",
        py.display()
    );
    py
}

/// One Django configuration: environment for `manage.py`.
struct Django {
    py: PathBuf,
    env: Vec<(String, String)>,
}

impl Django {
    fn new(db_url: &str, engine: &str) -> Django {
        Django {
            py: python(),
            env: vec![
                ("DJANGO_SECRET_KEY".into(), SECRET.into()),
                ("DJANGO_DB_URL".into(), db_url.into()),
                ("DJANGO_SESSION_ENGINE".into(), engine.into()),
            ],
        }
    }

    fn with(&self, k: &str, v: &str) -> Django {
        let mut env: Vec<_> = self.env.iter().filter(|(n, _)| n != k).cloned().collect();
        env.push((k.into(), v.into()));
        Django {
            py: self.py.clone(),
            env,
        }
    }

    fn manage(&self, args: &[&str]) -> String {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django");
        let out = Command::new(&self.py)
            .arg("manage.py")
            .args(args)
            .current_dir(dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "manage.py {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sess(&self, args: &[&str]) -> Value {
        let mut all = vec!["sess"];
        all.extend_from_slice(args);
        let out = self.manage(&all);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn migrate(&self) {
        self.manage(&["migrate", "-v0"]);
    }
}

fn key(v: &Value) -> SessionKey {
    SessionKey::parse(v["key"].as_str().expect("key")).expect("Django's key is valid for us")
}

fn obj(v: Value) -> SessionData {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Everything both sides must agree on, for any Django-format store.
async fn both_directions(store: Arc<dyn SessionStore>, dj: &Django, durable: bool) {
    let settings = Arc::new(SessionSettings::default());
    let open = |k: Option<SessionKey>| Session::new(store.clone(), settings.clone(), k);

    // 1. Django signs alice in and stores a cart; we read the same session by its key.
    let login = dj.sess(&["login", "alice"]);
    let k1 = key(&login);
    let s = open(Some(k1.clone()));
    let data = s.load().await.expect("we read Django's session");
    let user = AuthUser::from_data(&data).expect("Django's auth keys");
    assert_eq!(user.id_i64(), login["user_id"].as_i64());
    assert_eq!(user.backend, "django.contrib.auth.backends.ModelBackend");
    assert!(user.hash.is_some());
    assert_eq!(data["cart"], json!(["book", "Zoë's pen"]));
    assert_eq!(
        s.principal().await.expect("principal"),
        Some(user.id.clone()),
        "Django's signed-in user is the session's principal"
    );

    // 2. We change it (and its expiry); Django reads the change, still signed in.
    s.insert("from_rust", "héllo").await.expect("insert");
    s.set_expiry(Expiry::Idle(3600));
    s.save().await.expect("save");
    let seen = dj.sess(&["get", k1.as_str()]);
    assert_eq!(seen["found"], json!(true), "{seen}");
    assert_eq!(seen["data"]["from_rust"], json!("héllo"));
    assert_eq!(seen["data"]["cart"], json!(["book", "Zoë's pen"]));
    assert_eq!(seen["expiry_age"], json!(3600));
    assert_eq!(
        dj.sess(&["whoami", k1.as_str()])["username"],
        json!("alice")
    );

    // 3. A session we create (signing alice in on our side) is read by Django.
    let mine = open(None);
    let mut auth = SessionData::new();
    user.write_to(&mut auth);
    mine.extend(auth).await.expect("extend");
    mine.insert("made_by", "rust").await.expect("insert");
    mine.save().await.expect("create");
    let k2 = mine.key().expect("a new key");
    assert_eq!(
        dj.sess(&["whoami", k2.as_str()])["username"],
        json!("alice")
    );
    assert_eq!(
        dj.sess(&["get", k2.as_str()])["data"]["made_by"],
        json!("rust")
    );
    // ... as is one signed in with the handle's `login` (Django's auth keys written
    // from the principal and auth hash).
    let via_login = open(None);
    via_login
        .login(&user.id, user.hash.as_deref())
        .await
        .expect("login");
    let k3 = via_login.key().expect("a new key");
    assert_eq!(
        dj.sess(&["whoami", k3.as_str()])["username"],
        json!("alice")
    );
    assert_eq!(
        open(Some(k3.clone())).principal().await.expect("principal"),
        Some(user.id.clone())
    );
    // ... and a change Django makes to it comes back to us.
    dj.sess(&["set", k2.as_str(), r#"{"django_says": "hi"}"#]);
    let again = open(Some(k2.clone())).load().await.expect("reload");
    assert_eq!(again["django_says"], json!("hi"));
    assert_eq!(again["made_by"], json!("rust"));

    // 4. flush on either side ends the session for both.
    dj.sess(&["flush", k1.as_str()]);
    assert!(store.load(&k1).await.expect("load").is_none());
    assert!(
        open(Some(k1.clone()))
            .load()
            .await
            .expect("load")
            .is_empty()
    );
    let s2 = open(Some(k2.clone()));
    s2.flush().await.expect("our flush");
    assert_eq!(dj.sess(&["get", k2.as_str()])["found"], json!(false));
    assert_eq!(dj.sess(&["whoami", k2.as_str()])["username"], Value::Null);

    // 5. Django's clearsessions leaves our live sessions alone (and removes expired ones).
    let live_ours = store
        .create(&Record::with_ttl(obj(json!({"mine": 1})), 3600))
        .await
        .expect("create");
    let expired_ours = store
        .create(&Record::with_ttl(obj(json!({"mine": 2})), -60))
        .await
        .expect("create expired");
    dj.manage(&["clearsessions"]);
    let kept = store.load(&live_ours).await.expect("load");
    assert_eq!(kept.expect("still live").data["mine"], json!(1));
    let raw = store.raw().expect("raw access");
    assert!(raw.get_raw(&expired_ours).await.expect("raw").is_none());

    // ... and our clear-expired leaves Django's live sessions alone.
    let live_django = key(&dj.sess(&["create", r#"{"theirs": 1}"#]));
    let expired_django = key(&dj.sess(&["create", r#"{"theirs": 2}"#, "-60"]));
    let removed = store.clear_expired().await.expect("clear_expired");
    let still = dj.sess(&["get", live_django.as_str()]);
    assert_eq!(still["data"]["theirs"], json!(1), "{still}");
    assert!(raw.get_raw(&expired_django).await.expect("raw").is_none());
    if durable {
        assert_eq!(removed, 1, "only Django's expired row");
    }
}

/// Tampered and foreign-key-signed `session_data` are typed errors on our side;
/// SECRET_KEY_FALLBACKS are honoured.
async fn signatures(store: &DjangoDbStore, dj: &Django) {
    let t = key(&dj.sess(&["create", r#"{"user": "x"}"#]));
    let raw = store.raw().expect("raw");
    let mut bytes = raw.get_raw(&t).await.expect("raw").expect("row");
    // "eyJ1..." -> change one payload character.
    bytes[1] = if bytes[1] == b'A' { b'B' } else { b'A' };
    raw.put_raw(&t, &bytes, session_core::Timestamp::now().add_secs(600))
        .await
        .expect("plant");
    match store.load(&t).await {
        Err(Error::Codec(CodecError::BadSignature(_))) => {}
        other => panic!("tampered data must be refused, got {other:?}"),
    }

    let foreign = dj.with("DJANGO_SECRET_KEY", "another-apps-secret");
    let f = key(&foreign.sess(&["create", r#"{"user": "y"}"#]));
    match store.load(&f).await {
        Err(Error::Codec(CodecError::BadSignature(_))) => {}
        other => panic!("foreign-key data must be refused, got {other:?}"),
    }

    // After a key rotation on the Django side, the old key is a fallback on ours.
    let rotated = DjangoDbStore::new(
        store.pool().clone(),
        "django_session",
        DjangoFormat::new("the-new-secret", &["another-apps-secret"]),
    )
    .expect("store");
    let rec = rotated
        .load(&f)
        .await
        .expect("fallback verifies")
        .expect("live");
    assert_eq!(rec.data["user"], json!("y"));
}

/// Removes every key under `prefix` (the run's own namespace) from Redis.
async fn drop_redis_prefix(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| servers::unreachable("Redis", url, e));
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut c)
            .await
            .expect("DEL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_both_directions_with_django() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("django.sqlite3");
    let dj = Django::new(&format!("sqlite://{}", path.display()), "db");
    dj.migrate();
    let store = DjangoDbConfig {
        url: format!("sqlite://{}", path.display()),
        secrets: DjangoSecrets {
            secret_key: SECRET.into(),
            secret_key_fallbacks: vec![],
        },
        ..DjangoDbConfig::default()
    }
    .build()
    .await
    .expect("our store on Django's SQLite database");
    both_directions(Arc::new(store.clone()), &dj, true).await;
    signatures(&store, &dj).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_both_directions_with_django() {
    use sqlx::Connection;
    let admin_url = servers::postgres_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| servers::unreachable("PostgreSQL", &admin_url, e));
    let db = format!("django_interop_{}", servers::unique_suffix());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
    let url = format!("{base}/{db}");
    let dj = Django::new(&url, "db");
    dj.migrate();
    let store = DjangoDbConfig {
        url: url.clone(),
        secrets: DjangoSecrets {
            secret_key: SECRET.into(),
            secret_key_fallbacks: vec![],
        },
        ..DjangoDbConfig::default()
    }
    .build()
    .await
    .expect("our store on Django's PostgreSQL database");
    both_directions(Arc::new(store.clone()), &dj, true).await;
    signatures(&store, &dj).await;
    store.pool().close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{db}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_both_directions_with_django() {
    use sqlx::Connection;
    let admin_url = servers::mysql_url();
    let mut admin = sqlx::MySqlConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| servers::unreachable("MySQL/MariaDB", &admin_url, e));
    let db = format!("django_interop_{}", servers::unique_suffix());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
    let url = format!("{base}/{db}");
    let dj = Django::new(&url, "db");
    dj.migrate();
    let store = DjangoDbConfig {
        url: url.clone(),
        secrets: DjangoSecrets {
            secret_key: SECRET.into(),
            secret_key_fallbacks: vec![],
        },
        ..DjangoDbConfig::default()
    }
    .build()
    .await
    .expect("our store on Django's MySQL/MariaDB database");
    // The table is the one Django's MySQL migration made.
    let cols: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'django_session' ORDER BY ORDINAL_POSITION"
    )))
    .fetch_all(&mut admin)
    .await
    .expect("columns");
    assert_eq!(
        cols,
        [
            ("session_key".to_owned(), "varchar(40)".to_owned()),
            ("session_data".to_owned(), "longtext".to_owned()),
            ("expire_date".to_owned(), "datetime(6)".to_owned()),
        ]
    );
    both_directions(Arc::new(store.clone()), &dj, true).await;
    signatures(&store, &dj).await;

    // expire_date is naive UTC, as Django's MySQL backend stores it with USE_TZ: a
    // session we save for an hour is stored an hour after UTC_TIMESTAMP().
    let mine = store
        .create(&Record::with_ttl(obj(json!({"tz": 1})), 3600))
        .await
        .expect("create");
    let skew: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), expire_date) FROM `{db}`.django_session \
         WHERE session_key = ?"
    )))
    .bind(mine.as_str())
    .fetch_one(&mut admin)
    .await
    .expect("expire_date");
    assert!(
        (3590..=3600).contains(&skew),
        "expire_date is {skew}s ahead"
    );
    assert_eq!(dj.sess(&["get", mine.as_str()])["data"]["tz"], json!(1));

    // Our own migration makes the same table (on a fresh table name).
    let ours = DjangoDbStore::new(
        store.pool().clone(),
        "rust_made_session",
        DjangoFormat::new::<&str>(SECRET, &[]),
    )
    .expect("store");
    ours.migrate().await.expect("migrate");
    ours.migrate().await.expect("migrate twice");
    let k = ours
        .create(&Record::with_ttl(obj(json!({"m": 1})), 60))
        .await
        .expect("create");
    let rec = ours.load(&k).await.expect("load").expect("live");
    assert_eq!(rec.data["m"], json!(1));
    // Compare-and-set on MySQL: the current version wins, a stale one is a conflict.
    let v2 = ours
        .update(
            &k,
            &Record::with_ttl(obj(json!({"m": 2})), 60),
            Some(rec.version),
        )
        .await
        .expect("update with the current version");
    match ours
        .update(
            &k,
            &Record::with_ttl(obj(json!({"m": 3})), 60),
            Some(rec.version),
        )
        .await
    {
        Err(Error::Conflict { found, .. }) => assert_eq!(found, v2),
        other => panic!("a stale version must conflict, got {other:?}"),
    }
    assert_eq!(
        ours.load(&k).await.expect("load").expect("live").data["m"],
        json!(2)
    );

    store.pool().close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{db}`")))
        .execute(&mut admin)
        .await
        .expect("drop database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_both_directions_with_django() {
    let redis_url = servers::redis_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.sqlite3");
    let prefix = format!("interop{}", servers::unique_suffix());
    let dj = Django::new(&format!("sqlite://{}", path.display()), "cache")
        .with("DJANGO_REDIS_URL", &redis_url)
        .with("DJANGO_CACHE_KEY_PREFIX", &prefix);
    dj.migrate();
    let store = DjangoCacheStore::connect(&redis_url, &prefix, 1, CACHE_PREFIX)
        .await
        .unwrap_or_else(|e| servers::unreachable("Redis", &redis_url, e));
    both_directions(Arc::new(store.clone()), &dj, false).await;

    // A value that is not a pickled dict of JSON types is a typed error.
    let k = key(&dj.sess(&["create", r#"{"a": 1}"#]));
    let raw = store.raw().expect("raw");
    raw.put_raw(
        &k,
        b"\x80\x05K\x01.",
        session_core::Timestamp::now().add_secs(60),
    )
    .await
    .expect("plant");
    assert!(matches!(
        store.load(&k).await,
        Err(Error::Codec(CodecError::Corrupt(_)))
    ));
    store.delete(&k).await.expect("cleanup");
    drop_redis_prefix(&redis_url, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_both_directions_with_django() {
    let redis_url = servers::redis_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("django.sqlite3");
    let prefix = format!("interop{}", servers::unique_suffix());
    let dj = Django::new(&format!("sqlite://{}", path.display()), "cached_db")
        .with("DJANGO_REDIS_URL", &redis_url)
        .with("DJANGO_CACHE_KEY_PREFIX", &prefix);
    dj.migrate();
    let store = session_django::cached_db::DjangoCachedDbConfig {
        redis_url: redis_url.clone(),
        key_prefix: prefix.clone(),
        db: DjangoDbConfig {
            url: format!("sqlite://{}", path.display()),
            secrets: DjangoSecrets {
                secret_key: SECRET.into(),
                secret_key_fallbacks: vec![],
            },
            ..DjangoDbConfig::default()
        },
        ..Default::default()
    }
    .build()
    .await
    .expect("our cached_db store on Django's SQLite database and Redis");
    both_directions(Arc::new(store.clone()), &dj, true).await;

    // Django's cached copy follows our writes: Django reads its cache first.
    let k = key(&dj.sess(&["create", r#"{"n": 1}"#]));
    let s = Session::new(
        Arc::new(store.clone()),
        Arc::new(SessionSettings::default()),
        Some(k.clone()),
    );
    s.insert("n", &2).await.expect("insert");
    s.save().await.expect("save");
    assert!(store.cache().exists(&k).await.expect("cached copy"));
    assert_eq!(dj.sess(&["get", k.as_str()])["data"]["n"], json!(2));
    store.delete(&k).await.expect("delete");
    assert!(!store.cache().exists(&k).await.expect("cache"));
    assert_eq!(dj.sess(&["get", k.as_str()])["found"], json!(false));
    drop_redis_prefix(&redis_url, &prefix).await;
}

/// The engines build from configuration (as `sessions clear-expired` builds them), and
/// a missing secret key is refused before anything connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_build_from_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("django.sqlite3");
    let dj = Django::new(&format!("sqlite://{}", path.display()), "db");
    dj.migrate();
    let toml = dir.path().join("Sessions.toml");
    std::fs::write(
        &toml,
        format!(
            "engine = \"django_db\"\n[django_db]\nurl = \"sqlite://{}\"\nsecret_key = \"{SECRET}\"\n",
            path.display()
        ),
    )
    .expect("write config");
    let registry = session_core::EngineRegistry::new();
    session_django::register(&registry);
    let config =
        session_core::Config::load_file_only(&toml, SessionSettings::default()).expect("config");
    registry.validate(&config).expect("valid");
    let store = registry.build(&config).await.expect("store");
    assert_eq!(store.engine(), "django_db");
    let live = key(&dj.sess(&["create", r#"{"x": 1}"#]));
    let dead = key(&dj.sess(&["create", r#"{"x": 2}"#, "-60"]));
    assert_eq!(store.clear_expired().await.expect("clear"), 1);
    assert_eq!(dj.sess(&["get", live.as_str()])["data"]["x"], json!(1));
    assert!(
        store
            .raw()
            .expect("raw")
            .get_raw(&dead)
            .await
            .expect("raw")
            .is_none()
    );

    std::fs::write(
        &toml,
        "engine = \"django_db\"\n[django_db]\nurl = \"sqlite://x.db\"\n",
    )
    .expect("write config");
    let config =
        session_core::Config::load_file_only(&toml, SessionSettings::default()).expect("config");
    let err = registry.validate(&config).expect_err("no secret key");
    assert!(err.to_string().contains("secret_key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_both_directions_with_django() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("django.sqlite3");
    let files = dir.path().join("sessions");
    std::fs::create_dir(&files).expect("mkdir");
    let dj = Django::new(&format!("sqlite://{}", path.display()), "file")
        .with("DJANGO_SESSION_FILE_PATH", &files.display().to_string());
    dj.migrate();
    let store = session_django::file::DjangoFileConfig {
        path: files.clone(),
        secrets: DjangoSecrets {
            secret_key: SECRET.into(),
            secret_key_fallbacks: vec![],
        },
        ..Default::default()
    }
    .build()
    .expect("our store on Django's session directory");
    both_directions(Arc::new(store.clone()), &dj, true).await;
    // Django's file names: the cookie name, then the key.
    let k = key(&dj.sess(&["create", r#"{"f": 1}"#]));
    assert!(files.join(format!("sessionid{}", k.as_str())).is_file());
    assert_eq!(
        store.load(&k).await.expect("load").expect("live").data["f"],
        json!(1)
    );
}

// ---------------------------------------------------------------------------------
// Cookie level: our axum middleware over real HTTP and Django's middleware share one
// `sessionid` cookie.
// ---------------------------------------------------------------------------------

/// Serves a tiny app behind `SessionLayer::builder_from_config(config)` on
/// 127.0.0.1:0: `GET /whoami` answers the session as JSON (data and the Django user
/// id), `POST /set` merges a JSON object into the session. Returns the base URL.
async fn serve_ours(config: &session_core::Config) -> String {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use session_axum::{Session, SessionError, SessionLayer};

    async fn whoami(session: Session) -> Result<String, SessionError> {
        let data = session.load().await?;
        let user = AuthUser::from_data(&data).map(|u| json!(u.id_i64()));
        Ok(json!({"data": data, "user_id": user}).to_string())
    }
    async fn set(session: Session, body: String) -> Result<&'static str, Response> {
        let Ok(Value::Object(map)) = serde_json::from_str(&body) else {
            return Err((StatusCode::BAD_REQUEST, "not a JSON object").into_response());
        };
        session
            .extend(map)
            .await
            .map_err(|e| SessionError(e).into_response())?;
        Ok("ok")
    }

    let registry = session_core::EngineRegistry::new();
    session_django::register(&registry);
    let layer = SessionLayer::builder_from_config(config, &registry)
        .await
        .expect("our layer from the config")
        .secure(false)
        .build()
        .expect("layer");
    assert_eq!(layer.cookie_name(), "sessionid", "Django's cookie name");
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/set", post(set))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}

/// The `sessionid` value of a response's Set-Cookie, if any.
fn set_cookie_value(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("sessionid="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// Django signs alice in and sets `sessionid`; our middleware, given that cookie over
/// HTTP, reads her session, changes it, and Django (through its own middleware and
/// the same cookie) reads the change; a session our middleware creates is read by
/// Django from our Set-Cookie value as the same session, and back again.
async fn cookie_level(config: &session_core::Config, dj: &Django) {
    let base = serve_ours(config).await;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("client");
    let send = |req: reqwest::RequestBuilder, cookie: Option<&str>| {
        let req = match cookie {
            Some(c) => req.header(reqwest::header::COOKIE, format!("sessionid={c}")),
            None => req,
        };
        async move {
            let res = req.send().await.expect("request to our app");
            assert_eq!(res.status(), 200);
            res
        }
    };

    // 1. Django's login: the cookie Django's response set.
    let login = dj.sess(&["login", "alice"]);
    let cookie = login["key"]
        .as_str()
        .expect("Django's sessionid")
        .to_owned();
    let res = send(http.get(format!("{base}/whoami")), Some(&cookie)).await;
    let seen: Value = serde_json::from_str(&res.text().await.expect("body")).expect("json");
    assert_eq!(seen["user_id"], login["user_id"], "{seen}");
    assert_eq!(seen["data"]["cart"], json!(["book", "Zoë's pen"]));
    let auth = json!({
        "_auth_user_id": seen["data"]["_auth_user_id"],
        "_auth_user_backend": seen["data"]["_auth_user_backend"],
        "_auth_user_hash": seen["data"]["_auth_user_hash"],
    });

    // 2. We change it through the middleware; the key (the cookie) stays.
    let res = send(
        http.post(format!("{base}/set"))
            .body(r#"{"from_rust": "héllo"}"#),
        Some(&cookie),
    )
    .await;
    if let Some(v) = set_cookie_value(&res) {
        assert_eq!(v, cookie, "a change keeps the key");
    }
    assert_eq!(res.text().await.expect("body"), "ok");
    // Django, through its middleware and the same cookie, reads the change.
    let django = dj.sess(&["cookie", &cookie]);
    assert_eq!(django["username"], json!("alice"), "{django}");
    assert_eq!(django["data"]["from_rust"], json!("héllo"));
    assert_eq!(django["data"]["cart"], json!(["book", "Zoë's pen"]));

    // 3. A session our middleware creates (alice's auth keys, copied): Django reads our
    // Set-Cookie value as the same session, signed in.
    let mut body = auth.as_object().expect("object").clone();
    body.insert("made_by".into(), json!("rust"));
    let res = send(
        http.post(format!("{base}/set"))
            .body(Value::Object(body).to_string()),
        None,
    )
    .await;
    let ours = set_cookie_value(&res).expect("our middleware set sessionid");
    assert_ne!(ours, cookie);
    let django = dj.sess(&["cookie", &ours]);
    assert_eq!(django["username"], json!("alice"), "{django}");
    assert_eq!(django["data"]["made_by"], json!("rust"));
    assert_eq!(
        django["set_cookie"],
        Value::Null,
        "Django kept our session (no new cookie)"
    );

    // ... and Django's change to it, made through its middleware, comes back to us.
    let django = dj.sess(&["cookie-set", &ours, r#"{"django_says": "hi"}"#]);
    assert_eq!(django["ok"], json!(true), "{django}");
    let res = send(http.get(format!("{base}/whoami")), Some(&ours)).await;
    let seen: Value = serde_json::from_str(&res.text().await.expect("body")).expect("json");
    assert_eq!(seen["data"]["django_says"], json!("hi"), "{seen}");
    assert_eq!(seen["data"]["made_by"], json!("rust"));
    assert_eq!(seen["user_id"], login["user_id"]);

    // A cookie neither side issued is an empty, anonymous session on both.
    let stranger = "a".repeat(32);
    let res = send(http.get(format!("{base}/whoami")), Some(&stranger)).await;
    let seen: Value = serde_json::from_str(&res.text().await.expect("body")).expect("json");
    assert_eq!(seen["data"], json!({}), "{seen}");
    assert_eq!(dj.sess(&["cookie", &stranger])["username"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_level_django_db_through_our_middleware() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("django.sqlite3");
    let url = format!("sqlite://{}", path.display());
    let dj = Django::new(&url, "db");
    dj.migrate();
    let config = session_core::Config::from_toml(&format!(
        "engine = \"django_db\"\n[django_db]\nurl = \"{url}\"\nsecret_key = \"{SECRET}\"\n"
    ));
    cookie_level(&config, &dj).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_level_django_cache_through_our_middleware() {
    let redis_url = servers::redis_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.sqlite3");
    let prefix = format!("cookie{}", servers::unique_suffix());
    let dj = Django::new(&format!("sqlite://{}", path.display()), "cache")
        .with("DJANGO_REDIS_URL", &redis_url)
        .with("DJANGO_CACHE_KEY_PREFIX", &prefix);
    dj.migrate();
    let config = session_core::Config::from_toml(&format!(
        "engine = \"django_cache\"\n[django_cache]\nurl = \"{redis_url}\"\nkey_prefix = \"{prefix}\"\n"
    ));
    cookie_level(&config, &dj).await;
    drop_redis_prefix(&redis_url, &prefix).await;
}
