//! A registry's answer ([`Reply`]): status, headers, where it came from,
//! and a body read under the low-speed guard ([`super::limits`]); and what
//! slim reads of one: a small body whole, the error a registry describes
//! in its body, `Retry-After`, a header as text.

use std::io::{self, Read};
use std::time::Duration;

use reqwest::blocking::Response;
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};

use super::error::RegistryError;
use super::limits::{GuardedRead, SpeedGuard, find_stall};
use super::options::ClientOptions;

/// A registry's answer: status and headers, and a body read under the
/// low-speed guard.
pub struct Reply {
    body: GuardedRead<Response>,
    /// Where the answer came from (after redirects).
    url: Url,
    /// `host[:port]` of `url`.
    pub(super) host: String,
    /// Attempts it took (1: no retry).
    pub(super) attempts: u32,
    /// Whether the registry itself answered (not a host it redirected to).
    pub(super) own: bool,
    /// The silence limit, for [`Reply::body_error`].
    window: Duration,
}

impl Reply {
    /// `resp`, from `url`, after `attempts` (`own`: the registry itself
    /// answered).
    pub(super) fn new(
        resp: Response,
        url: Url,
        opts: &ClientOptions,
        attempts: u32,
        own: bool,
    ) -> Reply {
        Reply {
            body: GuardedRead {
                inner: resp,
                guard: SpeedGuard::new(opts),
            },
            host: authority(&url),
            url,
            attempts,
            own,
            window: opts.speed_time,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.body.inner.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.body.inner.headers()
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// A failed read of this body as an error about `what`.
    pub(super) fn body_error(&self, what: &str, source: io::Error) -> RegistryError {
        match find_stall(&source, self.window) {
            Some(stall) => RegistryError::Stalled {
                what: what.to_string(),
                host: self.host.clone(),
                stall,
            },
            None => RegistryError::Io {
                what: what.to_string(),
                host: self.host.clone(),
                source,
            },
        }
    }
}

impl Read for Reply {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

/// `host[:port]` of a URL, as messages name hosts.
pub(super) fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.to_string(),
    }
}

pub(super) fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A whole (small) body, at most `limit` bytes.
pub(super) fn read_limited(resp: Reply, limit: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    let mut resp = resp;
    if let Err(e) = (&mut resp).take(limit + 1).read_to_end(&mut out) {
        return Err(resp.body_error(what, e));
    }
    if out.len() as u64 > limit {
        return Err(RegistryError::Protocol {
            what: what.to_string(),
            reason: format!("the answer is larger than {limit} bytes"),
        });
    }
    Ok(out)
}

/// `: CODE: message` from a registry error body, or the start of the body.
pub(super) fn error_detail(resp: Reply) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    let body = read_limited(resp, 64 << 10, "").unwrap_or_default();
    if let Ok(e) = serde_json::from_slice::<Errors>(&body)
        && let Some(first) = e.errors.first()
    {
        let code = first.code.clone().unwrap_or_default();
        let message = first.message.clone().unwrap_or_default();
        return match (code.is_empty(), message.is_empty()) {
            (false, false) => format!(": {code}: {message}"),
            (false, true) => format!(": {code}"),
            (true, false) => format!(": {message}"),
            (true, true) => String::new(),
        };
    }
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {}", line.chars().take(200).collect::<String>())
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub(super) fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires.
fn httpdate_parse(s: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = t.as_slice() else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + m * 60 + sec;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert!(httpdate_parse("yesterday").is_none());
    }
}
