//! `sessions`: the operator's tool for the session framework, with every built-in engine.
//!
//! See the `session_cli` library for the commands, and for shipping a `sessions` with
//! engines of your own.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    session_cli::main_with(session_cli::builtin_registry())
}
