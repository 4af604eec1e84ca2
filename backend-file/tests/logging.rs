//! Warnings and errors name a session by its fingerprint, never by its key.

use std::io::Write;
use std::sync::{Arc, Mutex};

use backend_file::FileStore;
use session_core::{Error, Record, SessionData, SessionKey, SessionStore, Timestamp};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_file_warning_and_io_errors_carry_the_fingerprint_only() {
    let logs = Captured::default();
    let writer = logs.clone();
    // Global, because the store logs from blocking-pool threads.
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .expect("the only subscriber of this test binary");

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let store = FileStore::new(&dir).expect("store");
    let key = SessionKey::generate().expect("key");
    store
        .raw()
        .expect("raw")
        .put_raw(&key, b"{broken", Timestamp::now().add_secs(60))
        .await
        .expect("plant");
    assert!(matches!(store.load(&key).await, Err(Error::Codec(_))));

    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf-8");
    assert!(text.contains("WARN"), "no warning logged: {text}");
    assert!(text.contains(&key.fingerprint()), "no fingerprint: {text}");
    assert!(
        !text.contains(key.as_str()),
        "the key leaked into the log: {text}"
    );

    // The session handle's load (lazy) warns the same way.
    logs.0.lock().expect("logs").clear();
    assert!(matches!(store.load_lazy(&key).await, Err(Error::Codec(_))));
    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf-8");
    assert!(
        text.contains("WARN") && text.contains("session file cannot be decoded"),
        "no warning logged by the lazy load: {text}"
    );
    assert!(text.contains(&key.fingerprint()), "no fingerprint: {text}");
    assert!(
        !text.contains(key.as_str()),
        "the key leaked into the log: {text}"
    );

    // An I/O failure (the directory vanished) names the session the same way.
    std::fs::remove_dir_all(&dir).expect("rm");
    let other = SessionKey::generate().expect("key");
    let err = store
        .insert_new(&other, &Record::with_ttl(SessionData::new(), 60))
        .await
        .expect_err("no directory");
    assert!(err.is_unavailable(), "{err:?}");
    let shown = format!("{err} / {err:?}");
    assert!(shown.contains(&other.fingerprint()), "{shown}");
    assert!(
        !shown.contains(other.as_str()),
        "the key leaked into the error: {shown}"
    );
}
