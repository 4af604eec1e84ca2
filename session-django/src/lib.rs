//! # session-django
//!
//! Share sessions with a running Django application.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod format;
pub mod signing;

pub use format::{AuthUser, DjangoFormat, DjangoSecrets};
pub use signing::{Signer, SigningError};
