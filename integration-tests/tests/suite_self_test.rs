//! Tests of the conformance suite itself.
//!
//! A suite that passes every store proves nothing, so this file keeps deliberately
//! broken stores and checks that the cases meant to catch each flaw do fail (by name),
//! while a correct store built the same way passes every case. The correct store keeps
//! encoded bytes and offers raw access, so the corrupt-bytes cases run here too (the
//! in-process `memory` store keeps decoded records and skips them).
//!
//! It also runs the worked example in `examples/custom_store.rs` and checks that the
//! case counts documented in the README are current.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use integration_tests::{
    Category, Outcome, StoreFactory, all_cases, case_counts, run_cases, run_conformance,
};
use session_core::users::{session_id, validate_principal};
use session_core::{
    BincodeCodec, BoxError, Capabilities, Codec, Error, Inserted, RawAccess, Record, Result,
    SessionKey, SessionStore, Timestamp, UserIndex, UserSession, async_trait,
};

#[allow(dead_code)]
#[path = "../examples/custom_store.rs"]
mod custom_store;

/// What is wrong with a [`FlawedStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// None: the control.
    None,
    /// `load` and `exists` ignore the deadline.
    ReturnsExpired,
    /// `update` of a missing record writes it (the resurrection bug).
    UpsertsOnUpdate,
    /// `insert_new` writes even over a live record.
    InsertOverwrites,
    /// `update` ignores the expected version (no compare-and-set).
    IgnoresExpectedVersion,
    /// `update` stores the caller's `record.version` instead of current + 1.
    TrustsRecordVersion,
    /// `touch` bumps the version.
    TouchBumpsVersion,
    /// Undecodable bytes load as "no session" instead of a typed codec error.
    CorruptReadsAsMissing,
    /// Undecodable bytes are reported as a backend failure.
    CorruptIsBackendError,
    /// `clear_expired` removes live records too.
    ClearExpiredRemovesLive,
    /// `delete` always reports that a record existed.
    DeleteAlwaysTrue,
    /// `list` ignores its cursor.
    ListIgnoresCursor,
    /// Timestamps are kept in whole seconds.
    WholeSeconds,
    /// The user index lists a record bound to another principal, or signed out, since.
    IndexKeepsRebound,
    /// The user index lists expired records.
    IndexListsExpired,
    /// `update` does not index the record's principal (only `insert_new` does).
    IndexIgnoresUpdates,
    /// The user index folds case and trims spaces (a case-insensitive, PAD SPACE
    /// collation).
    PrincipalFolded,
    /// The user index lists newest first.
    NewestFirst,
    /// `end_sessions` ends the kept session too.
    EndSessionsIgnoresKeep,
    /// `end_session` ends a session with the id whatever its principal.
    EndSessionAnyPrincipal,
    /// The user index accepts any principal.
    NoPrincipalValidation,
}

#[derive(Clone, Debug)]
struct Entry {
    bytes: Vec<u8>,
    expires_at: Timestamp,
    version: u64,
}

/// A byte-keeping store (like a database row: blob + deadline + version columns) with
/// one deliberate flaw. Its user index maps principals to keys; an entry is added
/// before a record bound to the principal is written, and entries whose record is
/// gone, expired or bound elsewhere are pruned when listing (under the map's lock, so a
/// prune never races a write).
#[derive(Debug)]
struct FlawedStore {
    flaw: Flaw,
    codec: BincodeCodec,
    map: Mutex<HashMap<SessionKey, Entry>>,
    index: Mutex<HashMap<String, BTreeSet<SessionKey>>>,
}

impl FlawedStore {
    fn new(flaw: Flaw) -> Self {
        FlawedStore {
            flaw,
            codec: BincodeCodec::default(),
            map: Mutex::new(HashMap::new()),
            index: Mutex::new(HashMap::new()),
        }
    }

    fn index(&self) -> MutexGuard<'_, HashMap<String, BTreeSet<SessionKey>>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_key(&self, principal: &str) -> String {
        if self.flaw == Flaw::PrincipalFolded {
            principal.trim().to_lowercase()
        } else {
            principal.to_owned()
        }
    }

    /// Adds the index entry of `record`'s principal (call before writing the record).
    fn index_record(&self, key: &SessionKey, record: &Record) {
        if let Some(p) = record.principal() {
            self.index()
                .entry(self.index_key(p))
                .or_default()
                .insert(key.clone());
        }
    }

    fn decode(&self, e: &Entry) -> Result<Record> {
        let mut r = self.codec.decode(&e.bytes)?;
        r.version = e.version;
        r.expires_at = e.expires_at;
        Ok(r)
    }

    fn check_principal(&self, principal: &str) -> Result<()> {
        if self.flaw == Flaw::NoPrincipalValidation {
            return Ok(());
        }
        validate_principal(principal)
    }

    fn bound_to(&self, r: &Record, principal: &str) -> bool {
        match self.flaw {
            Flaw::IndexKeepsRebound => true,
            Flaw::PrincipalFolded => r
                .principal()
                .is_some_and(|p| self.index_key(p) == self.index_key(principal)),
            _ => r.principal() == Some(principal),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<SessionKey, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_live(&self, e: &Entry) -> bool {
        e.expires_at > Timestamp::now()
    }

    fn encode(&self, r: &Record) -> Result<Vec<u8>> {
        let mut r = r.clone();
        if self.flaw == Flaw::WholeSeconds {
            r.created_at = Timestamp::from_unix_millis(r.created_at.as_unix_millis() / 1000 * 1000);
        }
        Ok(self.codec.encode(&r)?)
    }
}

#[async_trait]
impl SessionStore for FlawedStore {
    fn engine(&self) -> &str {
        "flawed"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none().compare_and_set(true).listing(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let bytes = self.encode(record)?;
        let mut map = self.map();
        let taken = map.get(key).is_some_and(|e| self.is_live(e));
        if taken && self.flaw != Flaw::InsertOverwrites {
            return Ok(Inserted::KeyTaken);
        }
        self.index_record(key, record);
        map.insert(
            key.clone(),
            Entry {
                bytes,
                expires_at: record.expires_at,
                version: record.version,
            },
        );
        Ok(Inserted::Created)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let Some(e) = self.map().get(key).cloned() else {
            return Ok(None);
        };
        if !self.is_live(&e) && self.flaw != Flaw::ReturnsExpired {
            return Ok(None);
        }
        match self.decode(&e) {
            Ok(r) => Ok(Some(r)),
            Err(_) if self.flaw == Flaw::CorruptReadsAsMissing => Ok(None),
            Err(err) if self.flaw == Flaw::CorruptIsBackendError => {
                Err(Error::backend("flawed", err.to_string()))
            }
            Err(err) => Err(err),
        }
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let bytes = self.encode(record)?;
        let mut map = self.map();
        let current = map.get(key).filter(|e| self.is_live(e)).map(|e| e.version);
        let version = match current {
            None if self.flaw == Flaw::UpsertsOnUpdate => 1,
            None => return Err(Error::NotFound),
            Some(found) => {
                if let Some(expected) = expected_version.filter(|v| *v != found)
                    && self.flaw != Flaw::IgnoresExpectedVersion
                {
                    return Err(Error::Conflict { expected, found });
                }
                if self.flaw == Flaw::TrustsRecordVersion {
                    record.version
                } else {
                    found + 1
                }
            }
        };
        if self.flaw != Flaw::IndexIgnoresUpdates {
            self.index_record(key, record);
        }
        map.insert(
            key.clone(),
            Entry {
                bytes,
                expires_at: record.expires_at,
                version,
            },
        );
        Ok(version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let existed = self.map().remove(key).is_some();
        Ok(existed || self.flaw == Flaw::DeleteAlwaysTrue)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let mut map = self.map();
        match map.get_mut(key) {
            Some(e) if e.expires_at > Timestamp::now() => {
                e.expires_at = expires_at;
                if self.flaw == Flaw::TouchBumpsVersion {
                    e.version += 1;
                }
                Ok(())
            }
            _ => Err(Error::NotFound),
        }
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(self
            .map()
            .get(key)
            .is_some_and(|e| self.is_live(e) || self.flaw == Flaw::ReturnsExpired))
    }

    async fn clear_expired(&self) -> Result<u64> {
        let mut map = self.map();
        let before = map.len();
        let remove_live = self.flaw == Flaw::ClearExpiredRemovesLive;
        map.retain(|_, e| !remove_live && e.expires_at > Timestamp::now());
        Ok((before - map.len()) as u64)
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.map().len() as u64)
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let after = if self.flaw == Flaw::ListIgnoresCursor {
            None
        } else {
            after
        };
        let mut keys: Vec<SessionKey> = self
            .map()
            .keys()
            .filter(|k| after.is_none_or(|a| *k > a))
            .cloned()
            .collect();
        keys.sort_unstable();
        keys.truncate(limit);
        Ok(keys)
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }

    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }
}

#[async_trait]
impl UserIndex for FlawedStore {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        self.check_principal(principal)?;
        let map = self.map();
        let mut index = self.index();
        let Some(keys) = index.get_mut(&self.index_key(principal)) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for k in keys.iter() {
            let live = map
                .get(k)
                .filter(|e| self.is_live(e) || self.flaw == Flaw::IndexListsExpired)
                .map(|e| self.decode(e))
                .transpose()?;
            match live {
                Some(r) if self.bound_to(&r, principal) => {
                    out.push(UserSession::from_record(k.clone(), &r, current));
                }
                _ => stale.push(k.clone()),
            }
        }
        for k in &stale {
            keys.remove(k);
        }
        out.sort_by_key(|s| s.created_at);
        if self.flaw == Flaw::NewestFirst {
            out.reverse();
        }
        Ok(out)
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        self.check_principal(principal)?;
        let target = if self.flaw == Flaw::EndSessionAnyPrincipal {
            let all: Vec<SessionKey> = self.index().values().flatten().cloned().collect();
            all.into_iter().find(|k| session_id(k) == id)
        } else {
            self.sessions_of(principal, None)
                .await?
                .into_iter()
                .find(|s| s.id == id)
                .map(|s| s.stored_key)
        };
        match target {
            Some(k) => self.delete(&k).await,
            None => Ok(false),
        }
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        let mut ended = 0;
        for s in self.sessions_of(principal, None).await? {
            if keep == Some(&s.stored_key) && self.flaw != Flaw::EndSessionsIgnoresKeep {
                continue;
            }
            if self.delete(&s.stored_key).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }
}

#[async_trait]
impl RawAccess for FlawedStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        self.map().insert(
            key.clone(),
            Entry {
                bytes: bytes.to_vec(),
                expires_at,
                version: 1,
            },
        );
        Ok(())
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        Ok(self.map().get(key).map(|e| e.bytes.clone()))
    }
}

struct Flawed(Flaw);

#[async_trait]
impl StoreFactory for Flawed {
    async fn fresh(&self) -> std::result::Result<Arc<dyn SessionStore>, BoxError> {
        Ok(Arc::new(FlawedStore::new(self.0)))
    }
}

/// Runs the suite on a store with `flaw` and checks every named case failed, while the
/// basic round trip still passes (so the failures are specific, not a broken harness).
async fn assert_caught(flaw: Flaw, must_fail: &[&str]) {
    let report = run_conformance(&format!("{flaw:?}"), &Flawed(flaw)).await;
    let failed: HashSet<&str> = report.failures().iter().map(|(n, _)| *n).collect();
    for name in must_fail {
        assert!(
            all_cases().iter().any(|c| c.name == *name),
            "no case is named {name}"
        );
        assert!(
            report.failed(name),
            "a store with flaw {flaw:?} passed {name}; failed cases were {failed:?}"
        );
    }
    assert!(
        !report.failed("create_then_load"),
        "flaw {flaw:?} broke the basic round trip: {:?}",
        report.failures()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_byte_store_passes_every_case() {
    let report = run_conformance("flawless", &Flawed(Flaw::None)).await;
    report.assert_passed();
    let skipped: Vec<&str> = report
        .results
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Skipped))
        .map(|(n, _, _)| *n)
        .collect();
    // Only the native-TTL-free clear_expired count cases are gated, and this store has no
    // native TTL: every case, corrupt bytes included, must have run.
    assert!(
        skipped.is_empty(),
        "cases skipped on a full-featured store: {skipped:?}"
    );
}

/// The text of a panic raised by `f`, or `None` when it returned.
fn panic_text(f: impl FnOnce()) -> Option<String> {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).err()?;
    Some(
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_fails_when_cases_move_to_not_applicable_and_names_them() {
    // A store without raw byte access: its corrupt-bytes cases are not applicable.
    struct NoRaw;
    #[async_trait]
    impl StoreFactory for NoRaw {
        async fn fresh(&self) -> std::result::Result<Arc<dyn SessionStore>, BoxError> {
            Ok(Arc::new(backend_cache::MemoryStore::new()))
        }
    }
    let report = run_conformance("no raw access", &NoRaw).await;
    let na = report.not_applicable();
    assert!(!na.is_empty(), "{report}");
    let total = report.results.len();
    // The right pin holds.
    report.assert_pinned(total - na.len(), na.len());
    // The pin of a store that had raw access (everything passed) fails, naming the cases.
    let msg = panic_text(|| report.assert_pinned(total, 0)).expect("a wrong pin must fail");
    assert!(
        msg.contains(&format!("expected {total} passed and 0 not applicable")),
        "{msg}"
    );
    for name in &na {
        assert!(
            msg.contains(&format!("  - {name}")),
            "{name} not listed: {msg}"
        );
    }
    // A failure is reported as a failure even when the counts would match.
    let flawless = run_conformance("flawless", &Flawed(Flaw::None)).await;
    flawless.assert_pinned(total, 0);
    let mut broken = flawless.clone();
    broken.results[0].2 = Outcome::Failed("planted".into());
    let msg = panic_text(|| broken.assert_pinned(total - 1, 0)).expect("a failure must fail");
    assert!(msg.contains("planted"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_returning_expired_records_is_caught() {
    assert_caught(
        Flaw::ReturnsExpired,
        &[
            "load_never_returns_expired",
            "touch_to_a_past_deadline_expires_the_record",
            "update_to_a_past_deadline_expires_the_record",
            "actual_expiry_with_negative_seconds",
            "actual_expiry_with_a_past_datetime",
            "expired_key_is_never_adopted",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_upserts_on_update_is_caught() {
    assert_caught(
        Flaw::UpsertsOnUpdate,
        &[
            "update_after_delete_is_not_found",
            "update_after_delete_with_expected_version_is_not_found",
            "update_of_a_never_created_key_is_not_found",
            "update_of_an_expired_record_is_not_found",
            "save_does_not_resurrect_a_session_logged_out_elsewhere",
            // `concurrent_logout_never_resurrects` usually catches it too, but it races
            // real tasks and may miss the window; the cases above are deterministic.
            "ending_all_sessions_stops_a_request_in_flight",
            "ending_a_session_by_id_stops_a_request_in_flight",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_insert_new_overwrites_is_caught() {
    assert_caught(
        Flaw::InsertOverwrites,
        &[
            "insert_new_never_overwrites",
            "create_rerolls_on_collision_through_the_key_hook",
            "create_gives_up_when_every_key_is_taken",
            "racing_insert_new_on_one_key_has_one_winner",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_compare_and_set_is_caught() {
    assert_caught(
        Flaw::IgnoresExpectedVersion,
        &[
            "compare_and_set_conflict_is_detected",
            "conflict_reports_the_stored_version",
            "a_conflicting_write_changes_nothing",
            "racing_compare_and_set_updates_have_one_winner",
            "sixty_four_handles_keep_every_key",
            "sixty_four_update_closures_count_exactly",
            "sixty_four_handles_removing_their_own_keys",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_trusting_the_callers_version_is_caught() {
    assert_caught(
        Flaw::TrustsRecordVersion,
        &["update_ignores_the_records_own_version"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_that_bumps_the_version_is_caught() {
    assert_caught(
        Flaw::TouchBumpsVersion,
        &[
            "touch_keeps_data_and_version",
            "update_after_touch_with_the_pre_touch_version_succeeds",
            "touch_does_not_clobber_a_concurrent_update",
            "touch_racing_updates_never_bumps_the_version",
        ],
    )
    .await;
}

const CORRUPT_CASES: &[&str] = &[
    "corrupt_garbage_bytes_are_a_codec_error",
    "corrupt_truncated_records_are_a_codec_error",
    "corrupt_foreign_bytes_are_a_codec_error",
    "corrupt_empty_bytes_are_a_codec_error",
    "corrupt_future_format_version_is_a_codec_error",
    "corrupt_oversized_record_is_a_codec_error",
    "corrupt_record_starts_a_new_session_and_stays_untouched",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bytes_read_as_missing_are_caught() {
    assert_caught(Flaw::CorruptReadsAsMissing, CORRUPT_CASES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bytes_reported_as_an_outage_are_caught() {
    assert_caught(Flaw::CorruptIsBackendError, CORRUPT_CASES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_expired_that_removes_live_records_is_caught() {
    assert_caught(
        Flaw::ClearExpiredRemovesLive,
        &[
            "clear_expired_removes_only_expired",
            "clear_expired_keeps_every_live_record",
            "count_after_clear_expired_is_the_live_count",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_always_reports_a_record_is_caught() {
    assert_caught(Flaw::DeleteAlwaysTrue, &["delete_is_idempotent"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_ignoring_its_cursor_is_caught() {
    assert_caught(
        Flaw::ListIgnoresCursor,
        &[
            "list_pages_by_keyset",
            "list_after_the_last_key_is_empty",
            "list_after_an_absent_key_starts_after_it",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_keeping_whole_seconds_is_caught() {
    assert_caught(
        Flaw::WholeSeconds,
        &["expiry_policy_and_created_at_round_trip"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_listing_rebound_records_is_caught() {
    assert_caught(
        Flaw::IndexKeepsRebound,
        &[
            "clear_and_save_leaves_the_listing",
            "a_record_rebound_in_place_moves_between_listings",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_listing_expired_records_is_caught() {
    assert_caught(
        Flaw::IndexListsExpired,
        &["expired_sessions_are_not_listed"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_blind_to_updates_is_caught() {
    assert_caught(
        Flaw::IndexIgnoresUpdates,
        &["a_record_rebound_in_place_moves_between_listings"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_folding_principals_is_caught() {
    assert_caught(Flaw::PrincipalFolded, &["odd_principals_stay_separate"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_listing_newest_first_is_caught() {
    assert_caught(Flaw::NewestFirst, &["sessions_are_listed_oldest_first"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_sessions_ignoring_keep_is_caught() {
    assert_caught(
        Flaw::EndSessionsIgnoresKeep,
        &["end_other_sessions_keeps_the_current_one"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_session_across_principals_is_caught() {
    assert_caught(
        Flaw::EndSessionAnyPrincipal,
        &["end_session_ends_exactly_that_one"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_index_without_principal_validation_is_caught() {
    assert_caught(
        Flaw::NoPrincipalValidation,
        &["invalid_principals_are_refused_without_io"],
    )
    .await;
}

/// The reference store behind a wrapper that forwards `user_index`.
struct Wrapped(fn(Arc<dyn SessionStore>) -> Arc<dyn SessionStore>);

#[async_trait]
impl StoreFactory for Wrapped {
    async fn fresh(&self) -> std::result::Result<Arc<dyn SessionStore>, BoxError> {
        Ok((self.0)(Arc::new(FlawedStore::new(Flaw::None))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_cases_run_through_the_spy_and_hashed_keys() {
    let users = || -> Vec<_> {
        all_cases()
            .into_iter()
            .filter(|c| c.category == Category::Users)
            .collect()
    };
    let n = users().len();
    let spy = run_cases(
        "spy",
        &Wrapped(|s| Arc::new(integration_tests::SpyStore::new(s))),
        users(),
    )
    .await;
    spy.assert_pinned(n, 0);
    // Listings name derived keys behind the wrapper; the cases accept either form.
    let hashed = run_cases(
        "hashed keys",
        &Wrapped(|s| Arc::new(session_core::HashedKeys::new(s))),
        users(),
    )
    .await;
    hashed.assert_pinned(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_store_example_passes() {
    let report = run_conformance("map-store", &custom_store::MapStoreFactory).await;
    report.assert_passed();
    assert!(
        report.passed() >= 120,
        "only {} cases ran: {report}",
        report.passed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_cases_runs_only_the_given_cases() {
    let subset: Vec<_> = all_cases()
        .into_iter()
        .filter(|c| c.category == Category::Listing)
        .collect();
    let n = subset.len();
    let report = run_cases("subset", &Flawed(Flaw::None), subset).await;
    assert_eq!(report.results.len(), n);
    assert_eq!(report.passed(), n, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_that_cannot_build_a_store_fails_every_case() {
    struct Broken;
    #[async_trait]
    impl StoreFactory for Broken {
        async fn fresh(&self) -> std::result::Result<Arc<dyn SessionStore>, BoxError> {
            Err("server unreachable".into())
        }
    }
    let cases: Vec<_> = all_cases().into_iter().take(3).collect();
    let report = run_cases("broken", &Broken, cases).await;
    assert_eq!(report.failures().len(), 3, "{report}");
    assert!(report.failures()[0].1.contains("server unreachable"));
}

#[test]
fn case_names_are_unique_and_plentiful() {
    let cases = all_cases();
    let mut names = HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "two cases are named {}", c.name);
    }
    assert!(
        cases.len() >= 120,
        "the suite has only {} cases",
        cases.len()
    );
    for cat in [
        Category::Store,
        Category::Expiry,
        Category::Django,
        Category::Values,
        Category::Concurrency,
        Category::BadInput,
        Category::Listing,
        Category::Users,
    ] {
        assert!(
            case_counts().get(&cat).is_some_and(|n| *n > 0),
            "no {cat} cases"
        );
    }
}

#[test]
fn the_readme_lists_the_current_case_counts() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("integration-tests/README.md is readable");
    let total: usize = case_counts().values().sum();
    for (cat, n) in case_counts() {
        let row = format!("| {cat} | {n} |");
        assert!(
            readme.contains(&row),
            "README.md lacks the row `{row}`: update the category table"
        );
    }
    let total_row = format!("| **Total** | **{total}** |");
    assert!(readme.contains(&total_row), "README.md lacks `{total_row}`");
}
