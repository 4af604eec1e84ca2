//! backend-cached-db: work in progress.
#![forbid(unsafe_code)]
