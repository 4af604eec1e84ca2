//! The driver features select what gets compiled: a PostgreSQL-only build pulls in
//! neither SQLite nor the MySQL driver (as `cargo tree` resolves it, offline and against
//! the lock file), and the full build has all three.

use std::process::Command;

/// `cargo tree` of backend-db's normal dependencies with `args` for its features.
fn tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "backend-db",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--offline", "--locked"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn has_crate(tree: &str, name: &str) -> bool {
    tree.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn a_postgres_only_build_compiles_no_sqlite_and_no_mysql() {
    let pg = tree(&["--no-default-features", "--features", "postgres"]);
    assert!(has_crate(&pg, "sqlx-postgres"), "{pg}");
    for absent in ["libsqlite3-sys", "sqlx-sqlite", "sqlx-mysql"] {
        assert!(
            !has_crate(&pg, absent),
            "{absent} in a postgres-only build:\n{pg}"
        );
    }
}

#[test]
fn each_driver_feature_brings_only_its_driver() {
    for (feature, present, absent) in [
        ("sqlite", "libsqlite3-sys", ["sqlx-postgres", "sqlx-mysql"]),
        ("mysql", "sqlx-mysql", ["sqlx-postgres", "libsqlite3-sys"]),
    ] {
        let t = tree(&["--no-default-features", "--features", feature]);
        assert!(has_crate(&t, present), "{feature}: {present} missing:\n{t}");
        for a in absent {
            assert!(!has_crate(&t, a), "{feature}: {a} present:\n{t}");
        }
    }
    let all = tree(&[]);
    for driver in ["libsqlite3-sys", "sqlx-postgres", "sqlx-mysql"] {
        assert!(has_crate(&all, driver), "default features lack {driver}");
    }
}
