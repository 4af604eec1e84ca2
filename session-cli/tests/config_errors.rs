//! Configuration mistakes, tried on the built `sessions` binary as an operator makes
//! them: every unknown key is refused with its path, where it was written and the
//! nearest known key, and nothing is built (no store, no file) from a config with a typo.

mod support;

use std::path::Path;
use std::process::Output;

use integration_tests::servers;

/// The binary, run in `cwd`, with none of the developer's `SESSION_*` variables.
fn sessions(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = support::sessions();
    c.current_dir(cwd)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run sessions")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2 (configuration), and every `needle` in the message.
fn refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// Nothing was created in the working directory (no `sessions.db` fallback).
fn untouched(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "Sessions.toml")
        .collect();
    assert!(
        left.is_empty(),
        "created in the working directory: {left:?}"
    );
}

#[test]
fn a_typo_in_the_file_names_key_file_line_and_suggestion() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Sessions.toml"),
        "codec = \"json\"\nenigne = \"db\"\n",
    )
    .expect("write");
    let o = sessions(dir.path(), &[], &["check"]);
    refused(
        &o,
        &[
            "`enigne`",
            "Sessions.toml, line 2",
            "did you mean `engine`?",
        ],
    );
    untouched(dir.path());

    std::fs::write(
        dir.path().join("Sessions.toml"),
        "engine = \"db\"\n\n[memroy]\nmax_entries = 10\n",
    )
    .expect("write");
    let o = sessions(dir.path(), &[], &["stats"]);
    refused(&o, &["`memroy`", "line 3", "did you mean `memory`?"]);
    untouched(dir.path());

    std::fs::write(
        dir.path().join("Sessions.toml"),
        "engine = \"file\"\n[file]\npaht = \"/srv/sessions\"\n",
    )
    .expect("write");
    let o = sessions(dir.path(), &[], &["check"]);
    refused(&o, &["`file.paht`", "line 3", "did you mean `path`?"]);
}

#[test]
fn a_typo_in_the_environment_names_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = sessions(dir.path(), &[("SESSION_ENIGNE", "db")], &["check"]);
    refused(
        &o,
        &[
            "`enigne`",
            "environment variable SESSION_ENIGNE",
            "did you mean `engine`?",
        ],
    );
    let o = sessions(
        dir.path(),
        &[("SESSION_ENGINE", "db"), ("SESSION_DB__TABEL", "s")],
        &["check"],
    );
    refused(
        &o,
        &["`db.tabel`", "SESSION_DB__TABEL", "did you mean `table`?"],
    );
    untouched(dir.path());
}

#[test]
fn the_demo_refuses_a_typo_instead_of_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Sessions.toml"),
        "engine = \"memory\"\n[middleware]\nsave_every_requests = true\n",
    )
    .expect("write");
    let o = sessions(dir.path(), &[], &["demo", "--port", "0"]);
    refused(&o, &["middleware.save_every_requests", "line 3"]);
}

#[test]
fn nested_engines_take_the_spelling_a_user_guesses() {
    let redis = servers::redis_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("nested.db");
    let db_url = format!("sqlite://{}", db.display());
    let env = [
        ("SESSION_ENGINE", "cached_db"),
        ("SESSION_CACHED_DB__CACHE__URL", redis.as_str()),
        ("SESSION_CACHED_DB__DB__URL", db_url.as_str()),
    ];
    let o = sessions(dir.path(), &env, &["check"]);
    assert!(o.status.success(), "check failed: {}", stderr(&o));
    assert!(db.exists(), "the configured SQLite file was not used");
    untouched(dir.path());

    // A typo in the nested spelling is refused by its variable's name.
    let mut typo = env.to_vec();
    typo.push(("SESSION_CACHED_DB__CACHE__ULR", "redis://127.0.0.1:1"));
    let o = sessions(dir.path(), &typo, &["check"]);
    refused(
        &o,
        &[
            "`cached_db.cache.ulr`",
            "SESSION_CACHED_DB__CACHE__ULR",
            "did you mean `url`?",
        ],
    );
}

#[test]
fn a_layer_section_is_a_known_key_for_operator_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Sessions.toml"),
        format!(
            "engine = \"file\"\nlayers = [\"timeout\"]\n[timeout]\nper_call_ms = 2000\n\
             [file]\npath = {:?}\n",
            data.path().display().to_string()
        ),
    )
    .expect("write");
    let o = sessions(dir.path(), &[], &["stats"]);
    assert!(o.status.success(), "stats refused a layer: {}", stderr(&o));

    // A typo in the layer's name is still refused as the typo it is.
    std::fs::write(
        dir.path().join("Sessions.toml"),
        "engine = \"file\"\n[timout]\nper_call_ms = 2000\n",
    )
    .expect("write");
    let o = sessions(dir.path(), &[], &["stats"]);
    refused(&o, &["`timout`", "line 2", "did you mean `timeout`?"]);
}
