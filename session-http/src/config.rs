//! The cookie and middleware settings: plain serde structs read from the `[cookie]` and
//! `[middleware]` sections of `Sessions.toml` (or built in code), checked once when the
//! layer is built so that a bad value fails at startup, never per request.
//!
//! ```toml
//! [cookie]
//! name = "sessionid"        # Django's default
//! # domain = ".example.com"
//! path = "/"
//! secure = true             # default on: the cookie never travels over plain HTTP
//! http_only = true
//! same_site = "lax"         # "strict", "lax" or "none" (needs secure)
//! host_prefix = false       # true: the cookie is named "__Host-<name>": Secure, Path=/, no Domain
//! signing_keys = []         # sign the cookie value; the first key signs, every key verifies
//!
//! [middleware]
//! save_every_request = false
//! touch_interval_secs = 60  # extend idle sessions on reads, at most once a minute
//! ```
//!
//! Environment variables override the file as for every other setting:
//! `SESSION_COOKIE__NAME=id`, `SESSION_COOKIE__SIGNING_KEYS=new-key…,old-key…` (every list
//! takes a comma-separated string as well as a TOML array),
//! `SESSION_MIDDLEWARE__SAVE_EVERY_REQUEST=true`.

use std::fmt;

use serde::{Deserialize, Serialize};
use session_core::{Error, Result};

/// Django's `SESSION_COOKIE_NAME`.
pub const DEFAULT_COOKIE_NAME: &str = "sessionid";

/// The prefix that makes browsers insist on Secure, `Path=/` and no `Domain`.
pub const HOST_PREFIX: &str = "__Host-";

/// The prefix that makes browsers insist on Secure.
pub const SECURE_PREFIX: &str = "__Secure-";

/// Shortest signing key accepted, in bytes: a key shorter than an HMAC-SHA256 output
/// weakens the signature.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// Sent only on same-site requests.
    Strict,
    /// Sent on same-site requests and top-level navigations (Django's default).
    #[default]
    Lax,
    /// Sent on cross-site requests too; browsers require `Secure` with it.
    None,
}

impl SameSite {
    /// The attribute value as it appears in a `Set-Cookie` header.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// The session cookie's settings (section `[cookie]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieConfig {
    /// Cookie name (default `sessionid`). With `host_prefix` the cookie is sent as
    /// `__Host-<name>`.
    pub name: String,
    /// `Domain` attribute; none by default (the cookie stays on the exact host).
    pub domain: Option<String>,
    /// `Path` attribute (default `/`).
    pub path: String,
    /// `Secure` attribute (default on).
    pub secure: bool,
    /// `HttpOnly` attribute (default on): scripts cannot read the cookie.
    pub http_only: bool,
    /// `SameSite` attribute (default `Lax`).
    pub same_site: SameSite,
    /// Name the cookie `__Host-<name>`: browsers then only accept it with `Secure`,
    /// `Path=/` and no `Domain`, so a sibling subdomain cannot plant or overwrite it.
    pub host_prefix: bool,
    /// Keys signing the cookie value with HMAC-SHA256. The first key signs; every key
    /// verifies, so a key can be rotated out gradually: put the new key first and keep
    /// the old one until the cookies it signed have expired. Empty: the cookie carries
    /// the bare session key (still unguessable: ~165 bits). Required by the `cookie`
    /// engine. Each key needs at least 32 bytes.
    #[serde(deserialize_with = "session_core::config::string_list")]
    pub signing_keys: Vec<String>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: DEFAULT_COOKIE_NAME.to_owned(),
            domain: None,
            path: "/".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            host_prefix: false,
            signing_keys: Vec::new(),
        }
    }
}

impl fmt::Debug for CookieConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Signing keys are secrets: show how many there are, never what they are.
        f.debug_struct("CookieConfig")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("path", &self.path)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("same_site", &self.same_site)
            .field("host_prefix", &self.host_prefix)
            .field(
                "signing_keys",
                &format_args!("<{} redacted>", self.signing_keys.len()),
            )
            .finish()
    }
}

/// How the middleware behaves around the handler (section `[middleware]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiddlewareConfig {
    /// Save the session and re-send its cookie on every response, not only when the
    /// session changed (Django's `SESSION_SAVE_EVERY_REQUEST`). Empty sessions are
    /// still never created.
    pub save_every_request: bool,
    /// Extend a sliding session that was read but not changed with a cheap
    /// `store.touch` (no data rewrite), at most once per this many seconds: the touch
    /// happens when a save now would move the deadline at least this far past the
    /// stored one. Off (`None`) by default, as in Django, where a session only slides
    /// when it is saved.
    pub touch_interval_secs: Option<u64>,
    /// Record the client (`User-Agent` and, where the framework knows it, the peer
    /// address) of a signed-in session, for a "your devices" page
    /// ([`session_core::SessionMeta`]). Off by default: it is personal data.
    pub track_clients: bool,
}

/// A checked cookie configuration: the name as sent, and attributes browsers accept.
#[derive(Clone, Debug)]
pub(crate) struct CookieSpec {
    pub name: String,
    pub domain: Option<String>,
    pub path: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
}

fn is_token_char(b: u8) -> bool {
    // RFC 6265 cookie-name = token (RFC 7230): visible ASCII except separators.
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_attr_char(b: u8) -> bool {
    // Attribute values may not contain ';' (it would start a new attribute) or controls.
    (0x20..0x7f).contains(&b) && b != b';'
}

impl CookieConfig {
    /// Checks the settings and returns the cookie as it will be sent.
    pub(crate) fn spec(&self) -> Result<CookieSpec> {
        let mut name = self.name.trim().to_owned();
        if self.host_prefix && !name.starts_with(HOST_PREFIX) {
            name = format!("{HOST_PREFIX}{name}");
        }
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(Error::config(
                "cookie.name",
                format!(
                    "{:?} is not a valid cookie name: use letters, digits and !#$%&'*+-.^_`|~",
                    self.name
                ),
            ));
        }
        if !self.path.starts_with('/') || !self.path.bytes().all(is_attr_char) {
            return Err(Error::config(
                "cookie.path",
                format!(
                    "{:?} is not a valid cookie path: it must start with '/' and hold no ';'",
                    self.path
                ),
            ));
        }
        let domain = match self.domain.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) if d.bytes().all(|b| is_attr_char(b) && b != b' ') => Some(d.to_owned()),
            Some(d) => {
                return Err(Error::config(
                    "cookie.domain",
                    format!("{d:?} is not a valid cookie domain"),
                ));
            }
        };
        if name.starts_with(HOST_PREFIX) {
            // Browsers silently drop a __Host- cookie that breaks these rules: fail now.
            if !self.secure {
                return Err(Error::config(
                    "cookie.secure",
                    "a __Host- cookie must be Secure: remove `secure = false` or `host_prefix`",
                ));
            }
            if self.path != "/" {
                return Err(Error::config(
                    "cookie.path",
                    "a __Host- cookie must have Path=/: remove `path` or `host_prefix`",
                ));
            }
            if domain.is_some() {
                return Err(Error::config(
                    "cookie.domain",
                    "a __Host- cookie cannot have a Domain: remove `domain` or `host_prefix`",
                ));
            }
        }
        if name.starts_with(SECURE_PREFIX) && !self.secure {
            return Err(Error::config(
                "cookie.secure",
                "a __Secure- cookie must be Secure: remove `secure = false` or rename the cookie",
            ));
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(Error::config(
                "cookie.same_site",
                "browsers reject SameSite=None without Secure: set `secure = true` or use \"lax\"",
            ));
        }
        for (i, k) in self.signing_keys.iter().enumerate() {
            if k.len() < MIN_SIGNING_KEY_LEN {
                return Err(Error::config(
                    "cookie.signing_keys",
                    format!(
                        "key #{} has {} bytes; use at least {MIN_SIGNING_KEY_LEN} random bytes \
                         (e.g. `openssl rand -base64 48`)",
                        i + 1,
                        k.len()
                    ),
                ));
            }
        }
        Ok(CookieSpec {
            name,
            domain,
            path: self.path.clone(),
            secure: self.secure,
            http_only: self.http_only,
            same_site: self.same_site,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(err: Error) -> String {
        match err {
            Error::Config { key: Some(k), .. } => k,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_django_but_secure() {
        let c = CookieConfig::default();
        let s = c.spec().expect("defaults are valid");
        assert_eq!(s.name, "sessionid");
        assert_eq!(s.path, "/");
        assert!(s.secure && s.http_only);
        assert_eq!(s.same_site, SameSite::Lax);
        assert!(s.domain.is_none());
    }

    #[test]
    fn host_prefix_is_validated() {
        let c = CookieConfig {
            host_prefix: true,
            ..CookieConfig::default()
        };
        assert_eq!(c.spec().expect("valid").name, "__Host-sessionid");
        let bad = |c: CookieConfig| key_of(c.spec().expect_err("invalid"));
        assert_eq!(
            bad(CookieConfig {
                secure: false,
                ..c.clone()
            }),
            "cookie.secure"
        );
        assert_eq!(
            bad(CookieConfig {
                path: "/app".into(),
                ..c.clone()
            }),
            "cookie.path"
        );
        assert_eq!(
            bad(CookieConfig {
                domain: Some("example.com".into()),
                ..c.clone()
            }),
            "cookie.domain"
        );
        // A name already carrying the prefix gets the same checks.
        assert_eq!(
            bad(CookieConfig {
                name: "__Host-id".into(),
                secure: false,
                ..CookieConfig::default()
            }),
            "cookie.secure"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |c: CookieConfig| key_of(c.spec().expect_err("invalid"));
        assert_eq!(
            bad(CookieConfig {
                name: "a b".into(),
                ..Default::default()
            }),
            "cookie.name"
        );
        assert_eq!(
            bad(CookieConfig {
                path: "/x; Domain=evil".into(),
                ..Default::default()
            }),
            "cookie.path"
        );
        assert_eq!(
            bad(CookieConfig {
                same_site: SameSite::None,
                secure: false,
                ..Default::default()
            }),
            "cookie.same_site"
        );
        assert_eq!(
            bad(CookieConfig {
                signing_keys: vec!["short".into()],
                ..Default::default()
            }),
            "cookie.signing_keys"
        );
    }

    #[test]
    fn debug_redacts_signing_keys() {
        let c = CookieConfig {
            signing_keys: vec!["a-very-secret-signing-key-of-32-bytes!".into()],
            ..Default::default()
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(dbg.contains("<1 redacted>"), "{dbg}");
    }

    #[test]
    fn reads_from_sessions_toml() {
        let cfg = session_core::Config::from_toml(
            r#"
            [cookie]
            name = "sid"
            same_site = "strict"
            secure = false
            [middleware]
            save_every_request = true
            touch_interval_secs = 30
            "#,
        );
        let c: CookieConfig = cfg.section("cookie").expect("cookie section");
        assert_eq!(c.name, "sid");
        assert_eq!(c.same_site, SameSite::Strict);
        assert!(!c.secure);
        assert!(c.http_only, "unset values keep their defaults");
        let m: MiddlewareConfig = cfg.section("middleware").expect("middleware section");
        assert!(m.save_every_request);
        assert_eq!(m.touch_interval_secs, Some(30));
        let err = session_core::Config::from_toml("[cookie]\nsamesite = \"lax\"")
            .section::<CookieConfig>("cookie")
            .expect_err("unknown field");
        assert!(err.to_string().contains("samesite"), "{err}");
    }
}
