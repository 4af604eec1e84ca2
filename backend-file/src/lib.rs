//! backend-file: work in progress.
#![forbid(unsafe_code)]
