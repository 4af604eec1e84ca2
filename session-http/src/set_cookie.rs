//! `Set-Cookie` headers in Django's exact form, built from pieces computed once per layer.
//!
//! Django emits attributes in Python's `SimpleCookie` order (sorted by name):
//! `name=value; Domain=..; expires=<HTTP date>; HttpOnly; Max-Age=..; Path=..;
//! SameSite=..; Secure`. Producing the same bytes keeps responses diffable against a
//! Django deployment, and building the header from precomputed pieces keeps the hot
//! path to one allocation per response. Numbers are written with `itoa` and fixed-width
//! digits rather than `core::fmt`, whose machinery cost more than the rest of the header.

use http::HeaderValue;
use session_core::{Error, Result};

use crate::config::{CookieSpec, HOST_PREFIX, SECURE_PREFIX, SameSite};

/// Writes the session cookie and its deleting twin.
#[derive(Debug)]
pub(crate) struct CookieWriter {
    /// `name=`
    head: String,
    /// `; Domain=d` or empty.
    domain: String,
    http_only: bool,
    /// `; Path=p; SameSite=s[; Secure]`
    tail: String,
    /// Django's deleting cookie, fixed for the layer's life.
    deletion: HeaderValue,
}

impl CookieWriter {
    pub(crate) fn new(spec: &CookieSpec) -> Result<Self> {
        let domain = spec
            .domain
            .as_deref()
            .map(|d| format!("; Domain={d}"))
            .unwrap_or_default();
        let tail = format!(
            "; Path={}; SameSite={}{}",
            spec.path,
            spec.same_site.as_str(),
            if spec.secure { "; Secure" } else { "" }
        );
        // Django's delete_cookie adds Secure only where browsers would otherwise refuse
        // the deletion: prefixed names and SameSite=None.
        let deletion_secure = spec.name.starts_with(SECURE_PREFIX)
            || spec.name.starts_with(HOST_PREFIX)
            || spec.same_site == SameSite::None;
        let deletion = format!(
            "{}=\"\"{domain}; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path={}; SameSite={}{}",
            spec.name,
            spec.path,
            spec.same_site.as_str(),
            if deletion_secure { "; Secure" } else { "" }
        );
        let deletion = HeaderValue::try_from(deletion).map_err(|_| {
            Error::config("cookie", "the cookie settings do not form a valid header")
        })?;
        Ok(CookieWriter {
            head: format!("{}=", spec.name),
            domain,
            http_only: spec.http_only,
            tail,
            deletion,
        })
    }

    /// The default cookie (`sessionid`, Secure, HttpOnly, `SameSite=Lax`, `Path=/`) and
    /// its writer, without a fallible step.
    pub(crate) fn defaults() -> (CookieSpec, Self) {
        let spec = CookieSpec {
            name: crate::config::DEFAULT_COOKIE_NAME.to_owned(),
            domain: None,
            path: "/".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        };
        let writer = CookieWriter {
            head: "sessionid=".to_owned(),
            domain: String::new(),
            http_only: true,
            tail: "; Path=/; SameSite=Lax; Secure".to_owned(),
            deletion: HeaderValue::from_static(
                "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax",
            ),
        };
        (spec, writer)
    }

    /// The deleting cookie.
    pub(crate) fn deletion(&self) -> HeaderValue {
        self.deletion.clone()
    }

    /// The session cookie carrying `value`; with `max_age` (seconds, from `now_secs`)
    /// it gets `Max-Age` and the matching `expires`, without it is a browser-session
    /// cookie.
    pub(crate) fn session(
        &self,
        value: &str,
        max_age: Option<i64>,
        now_secs: i64,
    ) -> Option<HeaderValue> {
        let age = max_age.map(|a| a.max(0));
        let mut buffer = itoa::Buffer::new();
        let age_digits = age.map(|a| buffer.format(a));
        // The exact length: a header value whose buffer is full becomes the header's
        // bytes as it is, where a larger one costs an allocation more.
        let len = self.head.len()
            + value.len()
            + self.domain.len()
            + if self.http_only { HTTP_ONLY.len() } else { 0 }
            + age_digits.map_or(0, |d| {
                EXPIRES.len() + HTTP_DATE_LEN + MAX_AGE.len() + d.len()
            })
            + self.tail.len();
        let mut s = String::with_capacity(len);
        s.push_str(&self.head);
        s.push_str(value);
        s.push_str(&self.domain);
        if let Some(age) = age {
            s.push_str(EXPIRES);
            http_date(now_secs.saturating_add(age), &mut s);
        }
        if self.http_only {
            s.push_str(HTTP_ONLY);
        }
        if let Some(d) = age_digits {
            s.push_str(MAX_AGE);
            s.push_str(d);
        }
        s.push_str(&self.tail);
        debug_assert_eq!(
            s.len(),
            len,
            "the Set-Cookie value's length was reckoned wrong"
        );
        HeaderValue::try_from(s).ok()
    }
}

const EXPIRES: &str = "; expires=";
const HTTP_ONLY: &str = "; HttpOnly";
const MAX_AGE: &str = "; Max-Age=";
/// The length of every date [`http_date`] writes (`Thu, 01 Jan 1970 00:00:00 GMT`).
const HTTP_DATE_LEN: usize = 29;

/// Latest instant an HTTP date can show: 9999-12-31T23:59:59Z.
const MAX_HTTP_DATE_SECS: i64 = 253_402_300_799;

/// Appends the IMF-fixdate (RFC 9110) for `secs` since the Unix epoch, clamped to years
/// 1970..=9999.
fn http_date(secs: i64, out: &mut String) {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = secs.clamp(0, MAX_HTTP_DATE_SECS);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7);
    out.push_str(DAYS[weekday as usize]);
    out.push_str(", ");
    digits(out, day, 2);
    out.push(' ');
    out.push_str(MONTHS[(month - 1) as usize]);
    out.push(' ');
    digits(out, year, 4);
    out.push(' ');
    digits(out, sod / 3600, 2);
    out.push(':');
    digits(out, sod / 60 % 60, 2);
    out.push(':');
    digits(out, sod % 60, 2);
    out.push_str(" GMT");
}

/// Appends the last `width` decimal digits of `n` (0 <= n), zero-padded.
fn digits(out: &mut String, n: i64, width: u32) {
    for p in (0..width).rev() {
        let d = n / 10i64.pow(p) % 10;
        out.push(char::from(b'0' + d as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(secs: i64) -> String {
        let mut s = String::new();
        http_date(secs, &mut s);
        s
    }

    #[test]
    fn http_dates() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        for secs in [
            i64::MIN,
            -1,
            0,
            59,
            1_700_000_000,
            253_402_300_799,
            i64::MAX,
        ] {
            assert_eq!(date(secs).len(), HTTP_DATE_LEN, "{secs}");
        }
        // Cross-check against the `time` crate over a range of instants.
        for secs in (0..4_000_000_000i64).step_by(86_400 * 37 + 3_601) {
            let t = cookie::time::OffsetDateTime::from_unix_timestamp(secs).expect("in range");
            let parsed = cookie::Cookie::parse(format!("a=b; Expires={}", date(secs)))
                .expect("parses")
                .expires_datetime()
                .expect("a date");
            assert_eq!(parsed, t, "{secs}");
        }
    }

    fn spec(domain: Option<&str>, path: &str, name: &str, same_site: SameSite) -> CookieSpec {
        CookieSpec {
            name: name.into(),
            domain: domain.map(Into::into),
            path: path.into(),
            secure: true,
            http_only: true,
            same_site,
        }
    }

    #[test]
    fn session_cookies_follow_djangos_attribute_order() {
        let w = CookieWriter::new(&spec(Some(".example.com"), "/", "sessionid", SameSite::Lax))
            .expect("writer");
        let h = w
            .session("abc", Some(1_209_600), 1_700_000_000)
            .expect("header");
        assert_eq!(
            h,
            "sessionid=abc; Domain=.example.com; expires=Tue, 28 Nov 2023 22:13:20 GMT; \
             HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax; Secure"
        );
        let c = cookie::Cookie::parse(h.to_str().expect("ascii").to_owned()).expect("parses");
        assert_eq!(c.value(), "abc");
        assert_eq!(
            c.max_age(),
            Some(cookie::time::Duration::seconds(1_209_600))
        );
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(c.secure(), Some(true));
        assert_eq!(c.same_site(), Some(cookie::SameSite::Lax));
        let h = w.session("abc", None, 1_700_000_000).expect("header");
        assert_eq!(
            h,
            "sessionid=abc; Domain=.example.com; HttpOnly; Path=/; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn deletion_headers_match_django() {
        let h = |s: CookieSpec| CookieWriter::new(&s).expect("writer").deletion();
        assert_eq!(
            h(spec(None, "/", "sessionid", SameSite::Lax)),
            "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax"
        );
        assert_eq!(
            h(spec(
                Some(".example.local"),
                "/example/",
                "sessionid",
                SameSite::Lax
            )),
            "sessionid=\"\"; Domain=.example.local; expires=Thu, 01 Jan 1970 00:00:00 GMT; \
             Max-Age=0; Path=/example/; SameSite=Lax"
        );
        assert_eq!(
            h(spec(None, "/", "__Host-id", SameSite::Strict)),
            "__Host-id=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; \
             SameSite=Strict; Secure"
        );
    }
}
