//! The SQL text of every statement, per database, built once per store.
//!
//! Each statement is formatted once, when the store is built, with the validated and
//! quoted table name as the only interpolated text; everything else is a bind parameter.
//! The strings are kept as shared [`SqlStr`]s so each execution clones a pointer, and
//! sqlx's per-connection statement cache (keyed by this text) prepares each statement
//! once per connection.
//!
//! The three dialects differ where they must: placeholders (`$1` / `?1` / `?`), quoting
//! (`"t"` / `` `t` ``), the atomic insert (PostgreSQL and SQLite `ON CONFLICT .. DO UPDATE
//! .. WHERE expired`; MySQL a plain `INSERT`, and on a duplicate key one `DELETE` of the
//! row if it is expired, then the `INSERT` again), how an `UPDATE` reports the new version
//! (`RETURNING` versus MySQL's `LAST_INSERT_ID(expr)`, which the server sends back in the
//! OK packet of the same round trip) and the bounded batch delete.
//!
//! Every write of a record (`insert_new`, `update`) also writes its principal into the
//! `principal` column in the same statement, so the per-user index can never lag behind
//! a live session; the per-user reads filter the deadline like every other read.

use session_core::users::MAX_PRINCIPAL_LEN;
use sqlx::{AssertSqlSafe, SqlStr};

use crate::config::{Backend, SCHEMA_TABLE, TableName};

/// Longest identifier PostgreSQL keeps (it truncates longer ones).
const MAX_IDENT: usize = 63;

fn sql(text: String) -> SqlStr {
    // The only interpolated text is a `TableName` (validated to `[A-Za-z0-9_]`) or a name
    // derived from it, always quoted.
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(std::sync::Arc::<str>::from(text)))
}

/// `name` quoted for `backend`.
pub(crate) fn quote(backend: Backend, name: &str) -> String {
    match backend {
        Backend::MySql => format!("`{name}`"),
        Backend::Sqlite | Backend::Postgres => format!("\"{name}\""),
    }
}

/// The name of the expiry index: `<table>_expires_at`, or, when that would exceed the
/// identifier limit, a prefix of the table name and a stable hash of the whole of it.
pub(crate) fn expiry_index_name(table: &TableName) -> String {
    index_name(table, "expires_at", "exp")
}

/// The name of the principal index (schema version 2): `<table>_principal`, shortened
/// like [`expiry_index_name`].
pub(crate) fn principal_index_name(table: &TableName) -> String {
    index_name(table, "principal", "pri")
}

fn index_name(table: &TableName, column: &str, short: &str) -> String {
    let plain = format!("{}_{column}", table.as_str());
    if plain.len() <= MAX_IDENT {
        return plain;
    }
    // FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
    let mut hash: u32 = 0x811c_9dc5;
    for b in table.as_str().bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{}_{hash:08x}_{short}", &table.as_str()[..40])
}

/// MySQL's name of the principal index (index names are per table there).
pub(crate) const MYSQL_PRINCIPAL_INDEX: &str = "principal_idx";

/// Every statement the store runs, for one table on one database: the exact text a
/// [`DbStore`](crate::DbStore) executes, exposed by
/// [`DbStore::statements`](crate::DbStore::statements) so that tools running the same
/// I/O (the benchmark's raw SQL floor) cannot drift from it. Each field names the
/// parameters it binds, in order; `principal` is the record's principal, `NULL` for an
/// anonymous session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Statements {
    /// PG/SQLite: upsert replacing only an expired row; binds key, data, expires_at,
    /// version, principal, now. MySQL: plain insert; binds key, data, expires_at,
    /// version, principal.
    pub insert_new: SqlStr,
    /// MySQL only: removes an expired row holding the key; binds key, now.
    pub delete_expired_key: SqlStr,
    /// binds key, now -> (data, expires_at, version).
    pub load: SqlStr,
    /// binds data, expires_at, principal, key, now -> version (PG/SQLite RETURNING;
    /// MySQL via `last_insert_id`).
    pub update: SqlStr,
    /// binds data, expires_at, principal, key, now, expected -> version.
    pub update_cas: SqlStr,
    /// binds key, now -> version of the live row.
    pub live_version: SqlStr,
    /// binds expires_at, key, now.
    pub touch: SqlStr,
    /// binds key.
    pub delete: SqlStr,
    /// binds key, now.
    pub exists: SqlStr,
    /// binds now, limit.
    pub clear_batch: SqlStr,
    /// no binds -> count.
    pub count: SqlStr,
    /// binds limit -> keys.
    pub list_first: SqlStr,
    /// binds after, limit -> keys.
    pub list_after: SqlStr,
    /// binds key, data, expires_at: insert or replace, bumping the version; the
    /// principal becomes `NULL` (the bytes are not decoded).
    pub put_raw: SqlStr,
    /// binds key -> data.
    pub get_raw: SqlStr,
    /// binds principal, now -> (key, data, expires_at, version) of its live rows.
    pub sessions_of: SqlStr,
    /// binds principal, now -> keys of its live rows.
    pub keys_of: SqlStr,
    /// binds principal, now -> count of its live rows.
    pub count_of: SqlStr,
    /// binds key, principal, now: deletes the row only while it is live and the
    /// principal's.
    pub delete_of: SqlStr,
    /// PG/SQLite: binds principal, now -> rows deleted (every live row of the
    /// principal). MySQL ends sessions one [`Statements::delete_of`] at a time instead.
    pub delete_all_of: SqlStr,
    /// PG/SQLite: binds principal, now, kept key -> rows deleted (every other live row).
    pub delete_others_of: SqlStr,
}

impl Statements {
    pub(crate) fn new(backend: Backend, table: &TableName) -> Statements {
        let t = quote(backend, table.as_str());
        // Placeholder `n` (1-based) in this dialect. MySQL's are positional only, so its
        // statements below never reuse a parameter, and every statement binds in the
        // order its text names the parameters.
        let p = |n: u32| match backend {
            Backend::Postgres => format!("${n}"),
            Backend::Sqlite => format!("?{n}"),
            Backend::MySql => "?".to_owned(),
        };
        let cols = "session_key, session_data, expires_at, version, principal";
        let raw_cols = "session_key, session_data, expires_at, version";
        let (insert_new, put_raw, update_version, returning) = match backend {
            Backend::Postgres | Backend::Sqlite => (
                format!(
                    "INSERT INTO {t} ({cols}) VALUES ({}, {}, {}, {}, {}) \
                     ON CONFLICT (session_key) DO UPDATE SET \
                     session_data = excluded.session_data, expires_at = excluded.expires_at, \
                     version = excluded.version, principal = excluded.principal \
                     WHERE {t}.expires_at <= {}",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6)
                ),
                format!(
                    "INSERT INTO {t} ({raw_cols}) VALUES ({}, {}, {}, 1) \
                     ON CONFLICT (session_key) DO UPDATE SET \
                     session_data = excluded.session_data, expires_at = excluded.expires_at, \
                     version = {t}.version + 1, principal = NULL",
                    p(1),
                    p(2),
                    p(3)
                ),
                "version + 1",
                " RETURNING version",
            ),
            Backend::MySql => (
                format!("INSERT INTO {t} ({cols}) VALUES (?, ?, ?, ?, ?)"),
                format!(
                    "INSERT INTO {t} ({raw_cols}) VALUES (?, ?, ?, 1) \
                     ON DUPLICATE KEY UPDATE session_data = VALUES(session_data), \
                     expires_at = VALUES(expires_at), version = version + 1, principal = NULL"
                ),
                // The server returns `expr` as the statement's last-insert id.
                "LAST_INSERT_ID(version + 1)",
                "",
            ),
        };
        // MariaDB's optimizer may pick the expiry index for `expires_at > ?` on a young
        // table and then lock a range of it, deadlocking with a concurrent delete of the
        // same row; updates go through the primary key, always.
        let update_target = match backend {
            Backend::MySql => format!("{t} FORCE INDEX (PRIMARY)"),
            Backend::Sqlite | Backend::Postgres => t.clone(),
        };
        // Reads by principal name their index on MySQL, so a young table's statistics
        // never turn them into a scan of the expiry index.
        let by_principal = match backend {
            Backend::MySql => format!("{t} FORCE INDEX ({MYSQL_PRINCIPAL_INDEX})"),
            Backend::Sqlite | Backend::Postgres => t.clone(),
        };
        // The same for a delete by key, which only the multi-table form lets name its
        // index: the principal or expiry index would take gap locks that deadlock with
        // concurrent saves moving their entries.
        let delete_target = match backend {
            Backend::MySql => format!("{t} FROM {t} FORCE INDEX (PRIMARY)"),
            Backend::Sqlite | Backend::Postgres => format!("FROM {t}"),
        };
        let update = format!(
            "UPDATE {update_target} SET session_data = {}, expires_at = {}, principal = {}, \
             version = {update_version} WHERE session_key = {} AND expires_at > {}",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5)
        );
        let clear_batch = match backend {
            // Re-checking the expiry outside the sub-select keeps a row that a concurrent
            // `insert_new` revived between the two from being deleted.
            Backend::Postgres => format!(
                "DELETE FROM {t} WHERE session_key IN \
                 (SELECT session_key FROM {t} WHERE expires_at <= $1 LIMIT $2) \
                 AND expires_at <= $1"
            ),
            Backend::Sqlite => format!(
                "DELETE FROM {t} WHERE rowid IN \
                 (SELECT rowid FROM {t} WHERE expires_at <= ?1 LIMIT ?2) \
                 AND expires_at <= ?1"
            ),
            Backend::MySql => format!("DELETE FROM {t} WHERE expires_at <= ? LIMIT ?"),
        };
        let delete_all_of = format!(
            "DELETE FROM {t} WHERE principal = {} AND expires_at > {}",
            p(1),
            p(2)
        );
        Statements {
            insert_new: sql(insert_new),
            delete_expired_key: sql(format!(
                "DELETE FROM {t} WHERE session_key = {} AND expires_at <= {}",
                p(1),
                p(2)
            )),
            load: sql(format!(
                "SELECT session_data, expires_at, version FROM {t} \
                 WHERE session_key = {} AND expires_at > {}",
                p(1),
                p(2)
            )),
            update_cas: sql(format!("{update} AND version = {}{returning}", p(6))),
            update: sql(format!("{update}{returning}")),
            live_version: sql(format!(
                "SELECT version FROM {t} WHERE session_key = {} AND expires_at > {}",
                p(1),
                p(2)
            )),
            touch: sql(format!(
                "UPDATE {update_target} SET expires_at = {} WHERE session_key = {} AND expires_at > {}",
                p(1),
                p(2),
                p(3)
            )),
            delete: sql(format!("DELETE FROM {t} WHERE session_key = {}", p(1))),
            exists: sql(format!(
                "SELECT 1 FROM {t} WHERE session_key = {} AND expires_at > {}",
                p(1),
                p(2)
            )),
            clear_batch: sql(clear_batch),
            count: sql(format!("SELECT COUNT(*) FROM {t}")),
            list_first: sql(format!(
                "SELECT session_key FROM {t} ORDER BY session_key LIMIT {}",
                p(1)
            )),
            list_after: sql(format!(
                "SELECT session_key FROM {t} WHERE session_key > {} \
                 ORDER BY session_key LIMIT {}",
                p(1),
                p(2)
            )),
            put_raw: sql(put_raw),
            get_raw: sql(format!(
                "SELECT session_data FROM {t} WHERE session_key = {}",
                p(1)
            )),
            sessions_of: sql(format!(
                "SELECT session_key, session_data, expires_at, version FROM {by_principal} \
                 WHERE principal = {} AND expires_at > {}",
                p(1),
                p(2)
            )),
            keys_of: sql(format!(
                "SELECT session_key FROM {by_principal} WHERE principal = {} AND expires_at > {}",
                p(1),
                p(2)
            )),
            count_of: sql(format!(
                "SELECT COUNT(*) FROM {by_principal} WHERE principal = {} AND expires_at > {}",
                p(1),
                p(2)
            )),
            delete_of: sql(format!(
                "DELETE {delete_target} WHERE session_key = {} AND principal = {} \
                 AND expires_at > {}",
                p(1),
                p(2),
                p(3)
            )),
            delete_others_of: sql(format!("{delete_all_of} AND session_key <> {}", p(3))),
            delete_all_of: sql(delete_all_of),
        }
    }
}

/// The DDL of schema version 1: the session table and its expiry index.
pub(crate) fn create_table_v1(backend: Backend, table: &TableName) -> Vec<Ddl> {
    let t = quote(backend, table.as_str());
    let index = quote(backend, &expiry_index_name(table));
    let ddl = match backend {
        // "C" collation: keys compare bytewise, like `SessionKey`'s `Ord`, so listing
        // pages in the same order everywhere (and the index compares faster).
        Backend::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 session_key VARCHAR(64) COLLATE \"C\" NOT NULL PRIMARY KEY, \
                 session_data BYTEA NOT NULL, \
                 expires_at BIGINT NOT NULL, \
                 version BIGINT NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)"),
        ],
        Backend::Sqlite => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 session_key TEXT NOT NULL PRIMARY KEY, \
                 session_data BLOB NOT NULL, \
                 expires_at INTEGER NOT NULL, \
                 version INTEGER NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)"),
        ],
        // MySQL has no `CREATE INDEX IF NOT EXISTS`; an inline index has a per-table name.
        Backend::MySql => vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
             session_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
             session_data LONGBLOB NOT NULL, \
             expires_at BIGINT NOT NULL, \
             version BIGINT NOT NULL, \
             PRIMARY KEY (session_key), \
             KEY expires_at_idx (expires_at)\
             ) ENGINE=InnoDB"
        )],
    };
    ddl.into_iter().map(Ddl::always).collect()
}

/// The DDL of schema version 2: the nullable `principal` column (the signed-in user
/// of the row's session, `NULL` for anonymous sessions and for rows written before the
/// upgrade) and its index on `(principal, expires_at)`.
///
/// The column holds principals of up to [`MAX_PRINCIPAL_LEN`] bytes compared bytewise
/// (PostgreSQL `"C"` collation; MySQL `VARBINARY`, so neither case folding nor the
/// PAD SPACE rule of MySQL's text collations makes two principals equal). PostgreSQL
/// and SQLite index only signed-in rows (a partial index: anonymous sessions cost the
/// index nothing); MySQL has no partial indexes and indexes the `NULL`s too. Adding a
/// nullable column without a default is a catalogue change on all three (no table
/// rewrite); building the index reads the table once.
pub(crate) fn add_principal_v2(backend: Backend, table: &TableName) -> Vec<Ddl> {
    let t = quote(backend, table.as_str());
    let index = quote(backend, &principal_index_name(table));
    match backend {
        Backend::Postgres => vec![
            Ddl::always(format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS \
                 principal VARCHAR({MAX_PRINCIPAL_LEN}) COLLATE \"C\""
            )),
            Ddl::always(format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {t} (principal, expires_at) \
                 WHERE principal IS NOT NULL"
            )),
        ],
        // No `ADD COLUMN IF NOT EXISTS`: the catalogue says whether a table made by
        // hand already has it.
        Backend::Sqlite => vec![
            Ddl::unless(
                format!("ALTER TABLE {t} ADD COLUMN principal TEXT"),
                "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = 'principal'",
            ),
            Ddl::always(format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {t} (principal, expires_at) \
                 WHERE principal IS NOT NULL"
            )),
        ],
        // MySQL's DDL is not transactional, so a run interrupted between the two
        // statements resumes from the catalogue; MySQL (unlike MariaDB) has no
        // `IF NOT EXISTS` for either.
        Backend::MySql => vec![
            Ddl::unless(
                format!("ALTER TABLE {t} ADD COLUMN principal VARBINARY({MAX_PRINCIPAL_LEN}) NULL"),
                "SELECT COUNT(*) FROM information_schema.columns WHERE \
                 table_schema = DATABASE() AND table_name = ? AND column_name = 'principal'",
            ),
            Ddl::unless(
                format!(
                    "ALTER TABLE {t} ADD INDEX {MYSQL_PRINCIPAL_INDEX} (principal, expires_at)"
                ),
                format!(
                    "SELECT COUNT(*) FROM information_schema.statistics WHERE \
                     table_schema = DATABASE() AND table_name = ? \
                     AND index_name = '{MYSQL_PRINCIPAL_INDEX}'"
                ),
            ),
        ],
    }
}

/// One DDL statement of a schema step.
pub(crate) struct Ddl {
    /// The statement.
    pub sql: String,
    /// For a statement that cannot say `IF NOT EXISTS`: a query binding the table name
    /// and counting what the statement creates (non-zero: skip it).
    pub applied: Option<String>,
}

impl Ddl {
    fn always(sql: String) -> Ddl {
        Ddl { sql, applied: None }
    }

    fn unless(sql: String, applied: impl Into<String>) -> Ddl {
        Ddl {
            sql,
            applied: Some(applied.into()),
        }
    }
}

/// The schema-version table, shared by every session table of the database.
pub(crate) fn create_schema_table(backend: Backend) -> String {
    let s = quote(backend, SCHEMA_TABLE);
    let name_type = match backend {
        Backend::MySql => "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin",
        Backend::Postgres => "VARCHAR(64) COLLATE \"C\"",
        Backend::Sqlite => "TEXT",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {s} (\
         table_name {name_type} NOT NULL PRIMARY KEY, \
         version BIGINT NOT NULL, \
         applied_at BIGINT NOT NULL)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_table_names_get_short_stable_index_names() {
        let short = TableName::new("sessions").expect("name");
        assert_eq!(expiry_index_name(&short), "sessions_expires_at");
        let long = TableName::new(&"t".repeat(63)).expect("name");
        let a = expiry_index_name(&long);
        assert!(a.len() <= MAX_IDENT, "{a}");
        let other = TableName::new(&format!("{}u", "t".repeat(62))).expect("name");
        assert_ne!(a, expiry_index_name(&other));
        assert_eq!(a, expiry_index_name(&long));
    }

    #[test]
    fn only_the_quoted_table_name_is_interpolated() {
        let t = TableName::new("order").expect("name");
        let pg = Statements::new(Backend::Postgres, &t);
        assert!(pg.load.as_str().contains("FROM \"order\" WHERE"));
        let my = Statements::new(Backend::MySql, &t);
        assert!(my.load.as_str().contains("FROM `order` WHERE"));
        assert_eq!(my.update_cas.as_str().matches('?').count(), 6);
    }
}
