//! Where a request goes, and whether it may carry credentials.
//!
//! The rule (containerd's and Docker's): credentials configured for a
//! registry — Basic, or a Bearer token its realm issued — go only to that
//! registry's origin (scheme, host, port). Basic credentials may also go to
//! the token realm the registry names in its challenge, unless the registry
//! is HTTPS and the realm plain HTTP. A request anywhere else — an upload
//! `Location` on another host, a redirect to a CDN, a realm's redirect —
//! carries none.
//!
//! [`send`] applies the rule to every request slim makes, at every hop:
//! reqwest's own redirect handling is off (`redirect::Policy::none()`), and
//! GET and HEAD redirects are followed here, each hop decided afresh; a
//! redirect or `Location` from HTTPS to plain HTTP is refused.

use std::fmt;

use reqwest::Url;
use reqwest::blocking::{Client, Request, Response};
use reqwest::header::{self, HeaderValue};

/// At most this many redirects per request (curl's and Go's default is 10
/// or more; registries use one, to blob storage).
pub const MAX_REDIRECTS: usize = 10;

/// Scheme, host and port (the default port when the URL names none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    pub fn of(url: &Url) -> Option<Origin> {
        Some(Origin {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    /// The origin of `http(s)://host[:port]` (a registry's base URL).
    pub fn parse(base: &str) -> Option<Origin> {
        Origin::of(&Url::parse(base).ok()?)
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// An `Authorization` value and the one origin it may be sent to.
pub struct Credentials {
    pub origin: Origin,
    pub value: HeaderValue,
}

impl Credentials {
    /// `None` when `value` cannot be a header (it then goes nowhere).
    pub fn new(origin: Origin, value: &str) -> Option<Credentials> {
        let mut value = HeaderValue::from_str(value).ok()?;
        value.set_sensitive(true);
        Some(Credentials { origin, value })
    }

    fn applies_to(&self, url: &Url) -> bool {
        Origin::of(url).as_ref() == Some(&self.origin)
    }
}

/// Whether a registry at `registry` may have Basic credentials sent to the
/// token realm it named: not over plain HTTP when the registry is HTTPS.
pub fn realm_may_receive_credentials(registry: &Origin, realm: &Url) -> bool {
    !registry.is_https() || realm.scheme() == "https"
}

/// Resolves a `Location` or `Link` target against the URL it came with
/// (absolute, absolute-path or relative), refusing anything but HTTP(S)
/// and a step down from HTTPS to plain HTTP.
pub fn resolve(from: &Url, target: &str) -> Result<Url, String> {
    let to = from
        .join(target.trim())
        .map_err(|e| format!("a malformed URL {target:?} ({e})"))?;
    match to.scheme() {
        "http" | "https" => {}
        other => return Err(format!("{to}, a {other}: URL")),
    }
    if from.scheme() == "https" && to.scheme() == "http" {
        return Err(format!(
            "{to}, plain HTTP after HTTPS (slim does not downgrade)"
        ));
    }
    Ok(to)
}

/// Why [`send`] did not get an answer.
#[derive(Debug)]
pub enum SendError {
    Http(reqwest::Error),
    /// A redirect slim does not follow, in words.
    Redirect(String),
}

/// Sends `req`, with `credentials` only if it goes to their origin, and
/// follows redirects of GET and HEAD requests (each hop decided afresh).
/// Returns the answer and the URL that gave it.
pub fn send(
    http: &Client,
    mut req: Request,
    credentials: Option<&Credentials>,
) -> Result<(Response, Url), SendError> {
    let follows = matches!(req.method().as_str(), "GET" | "HEAD");
    let mut hops = 0;
    loop {
        let url = req.url().clone();
        req.headers_mut().remove(header::AUTHORIZATION);
        if let Some(c) = credentials.filter(|c| c.applies_to(&url)) {
            req.headers_mut()
                .insert(header::AUTHORIZATION, c.value.clone());
        }
        let next = follows.then(|| req.try_clone()).flatten();
        let resp = http.execute(req).map_err(SendError::Http)?;
        let location = resp
            .status()
            .is_redirection()
            .then(|| resp.headers().get(header::LOCATION))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (Some(mut next), Some(location)) = (next, location) else {
            return Ok((resp, url));
        };
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(SendError::Redirect(format!(
                "more than {MAX_REDIRECTS} redirects, the last to {location:?}"
            )));
        }
        let to = resolve(&url, &location)
            .map_err(|why| SendError::Redirect(format!("a redirect to {why}")))?;
        tracing::debug!(from = %url, to = %to, "following a redirect");
        *next.url_mut() = to;
        req = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = Origin::parse("https://Registry.example.com").unwrap();
        assert_eq!(
            Origin::of(&url("https://registry.example.com:443/v2/")),
            Some(a.clone())
        );
        for other in [
            "http://registry.example.com/v2/",
            "https://registry.example.com:5000/v2/",
            "https://cdn.example.com/v2/",
        ] {
            assert_ne!(Origin::of(&url(other)).as_ref(), Some(&a), "{other}");
        }
    }

    #[test]
    fn targets_resolve_against_where_they_came_from() {
        let page = url("http://r:5000/v2/_catalog?n=2");
        assert_eq!(
            resolve(&page, "/v2/_catalog?last=b&n=2").unwrap().as_str(),
            "http://r:5000/v2/_catalog?last=b&n=2"
        );
        assert_eq!(
            resolve(&page, "_catalog?last=b").unwrap().as_str(),
            "http://r:5000/v2/_catalog?last=b"
        );
        assert_eq!(
            resolve(&page, "http://other:1/x").unwrap().as_str(),
            "http://other:1/x"
        );
        assert!(resolve(&page, "file:///etc/passwd").is_err());
        let secure = url("https://r/v2/x/blobs/sha256:aa");
        let err = resolve(&secure, "http://cdn/blob").unwrap_err();
        assert!(err.contains("does not downgrade"), "{err}");
        assert!(resolve(&secure, "https://cdn/blob").is_ok());
    }

    #[test]
    fn basic_credentials_never_go_to_a_plain_http_realm_of_an_https_registry() {
        let https = Origin::parse("https://r.example.com").unwrap();
        let http = Origin::parse("http://127.0.0.1:5000").unwrap();
        assert!(!realm_may_receive_credentials(
            &https,
            &url("http://auth.example.com/token")
        ));
        assert!(realm_may_receive_credentials(
            &https,
            &url("https://auth.example.com/token")
        ));
        assert!(realm_may_receive_credentials(
            &http,
            &url("http://127.0.0.1:5001/token")
        ));
    }
}
