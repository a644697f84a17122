//! One registry request, as every endpoint makes it ([`Call`]).
//!
//! An endpoint says what differs: what the request is in words (for
//! messages), the repository and token scope, the method and the target (a
//! path under the registry's base URL, or a URL the registry gave), and
//! any headers, body, deadline, attempts, and statuses besides success that
//! it handles itself. [`Call::send`] sends it through
//! [`RegistryClient::execute`] and checks the answer: anything else than a
//! success or one of those statuses becomes an error that names the host,
//! the repository and what to do ([`Call::check`]).

use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{Body, Client, RequestBuilder};
use reqwest::header::HeaderName;
use reqwest::{Method, StatusCode, Url};

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::reply::{Reply, error_detail};
use crate::reference::{RegistryRef, is_loopback_host};

/// Where a request goes.
#[derive(Clone, Debug)]
pub(super) enum Target {
    /// A path under the registry's base URL (`/v2/…`).
    Path(String),
    /// A URL the registry gave (an upload session, a next page).
    Url(Url),
}

impl From<String> for Target {
    fn from(path: String) -> Target {
        Target::Path(path)
    }
}

impl From<Url> for Target {
    fn from(url: Url) -> Target {
        Target::Url(url)
    }
}

/// A body made afresh for each attempt.
type MakeBody = Arc<dyn Fn() -> Body + Send + Sync>;

/// A registry request: what it is about, and how to make it again for
/// each attempt.
#[derive(Clone)]
pub(super) struct Call {
    /// The API host, `host[:port]`.
    host: String,
    /// The repository, for the hint of a 404 ("" for none).
    repository: String,
    what: String,
    scope: Scope,
    /// `None`: as many as the client's options allow.
    attempts: Option<u32>,
    method: Method,
    target: Target,
    headers: Vec<(HeaderName, String)>,
    body: Option<MakeBody>,
    timeout: Option<Duration>,
    /// Statuses besides success that the endpoint handles itself.
    also: Vec<StatusCode>,
}

impl Call {
    /// A GET of `/v2/` on the repository of `r`; the methods below change
    /// what differs.
    pub(super) fn new(r: &RegistryRef, scope: Scope, what: impl Into<String>) -> Call {
        Call::on(r.api_host(), &r.repository, scope, what)
    }

    /// A GET of `/v2/` on `host`, about `repository` ("" for none).
    pub(super) fn on(host: &str, repository: &str, scope: Scope, what: impl Into<String>) -> Call {
        Call {
            host: host.to_string(),
            repository: repository.to_string(),
            what: what.into(),
            scope,
            attempts: None,
            method: Method::GET,
            target: Target::Path("/v2/".to_string()),
            headers: Vec::new(),
            body: None,
            timeout: None,
            also: Vec::new(),
        }
    }

    fn to(mut self, method: Method, target: impl Into<Target>) -> Call {
        self.method = method;
        self.target = target.into();
        self
    }

    pub(super) fn get(self, target: impl Into<Target>) -> Call {
        self.to(Method::GET, target)
    }

    pub(super) fn head(self, target: impl Into<Target>) -> Call {
        self.to(Method::HEAD, target)
    }

    pub(super) fn put(self, target: impl Into<Target>) -> Call {
        self.to(Method::PUT, target)
    }

    pub(super) fn post(self, target: impl Into<Target>) -> Call {
        self.to(Method::POST, target)
    }

    pub(super) fn patch(self, target: impl Into<Target>) -> Call {
        self.to(Method::PATCH, target)
    }

    pub(super) fn delete(self, target: impl Into<Target>) -> Call {
        self.to(Method::DELETE, target)
    }

    pub(super) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }

    /// A body of these bytes, sent again on each attempt.
    pub(super) fn bytes(self, bytes: Vec<u8>) -> Call {
        let bytes = Arc::new(bytes);
        self.body(move || Body::from(bytes.as_ref().clone()))
    }

    /// A body `make` makes for each attempt.
    pub(super) fn body(mut self, make: impl Fn() -> Body + Send + Sync + 'static) -> Call {
        self.body = Some(Arc::new(make));
        self
    }

    /// The deadline of the whole request (else the client's silence limit).
    pub(super) fn timeout(mut self, deadline: Duration) -> Call {
        self.timeout = Some(deadline);
        self
    }

    pub(super) fn attempts(mut self, attempts: u32) -> Call {
        self.attempts = Some(attempts);
        self
    }

    /// `status` is an answer the endpoint handles itself, not an error.
    pub(super) fn or(mut self, status: StatusCode) -> Call {
        self.also.push(status);
        self
    }

    pub(super) fn what(&self) -> &str {
        &self.what
    }

    pub(super) fn host(&self) -> &str {
        &self.host
    }

    pub(super) fn repository(&self) -> &str {
        &self.repository
    }

    /// Sends the request and checks the answer ([`Call::check`]).
    pub(super) fn send(&self, client: &RegistryClient) -> Result<Reply, RegistryError> {
        let reply = self.send_unchecked(client)?;
        self.check(client, reply)
    }

    /// Sends the request; any answer is the caller's to judge.
    pub(super) fn send_unchecked(&self, client: &RegistryClient) -> Result<Reply, RegistryError> {
        let attempts = self.attempts.unwrap_or(client.opts.attempts);
        client.execute(&self.host, &self.scope, &self.what, attempts, &|c, base| {
            self.build(c, base)
        })
    }

    /// The request for one attempt, against the registry's `base` URL.
    fn build(&self, c: &Client, base: &str) -> RequestBuilder {
        let mut req = match &self.target {
            Target::Path(path) => c.request(self.method.clone(), format!("{base}{path}")),
            Target::Url(url) => c.request(self.method.clone(), url.clone()),
        };
        for (name, value) in &self.headers {
            req = req.header(name.clone(), value.as_str());
        }
        if let Some(make) = &self.body {
            req = req.body(make());
        }
        if let Some(deadline) = self.timeout {
            req = req.timeout(deadline);
        }
        req
    }

    /// `reply` if it is a success or a status the endpoint handles itself;
    /// otherwise the error it is: not found (and how to see what exists),
    /// or the status and what the registry said, after how many attempts,
    /// and whether a host it redirected slim to answered.
    pub(super) fn check(
        &self,
        client: &RegistryClient,
        reply: Reply,
    ) -> Result<Reply, RegistryError> {
        let status = reply.status();
        if status.is_success() || self.also.contains(&status) {
            return Ok(reply);
        }
        let (host, what) = (self.host.as_str(), self.what.as_str());
        let answered_by = reply.host.clone();
        let own = reply.own;
        let attempts = reply.attempts;
        let mut detail = error_detail(reply);
        if attempts > 1 {
            detail.push_str(&format!(" (after {attempts} attempts)"));
        }
        if status == StatusCode::NOT_FOUND {
            // skopeo verifies TLS unless told otherwise, even on loopback.
            let plain = is_loopback_host(host) || client.is_insecure(host);
            let detail = detail.trim_start_matches(": ");
            return Err(RegistryError::NotFound {
                what: what.to_string(),
                host: host.to_string(),
                repository: self.repository.clone(),
                skopeo_flags: if plain { "--tls-verify=false " } else { "" },
                detail: if detail.is_empty() {
                    "not found".to_string()
                } else {
                    detail.to_string()
                },
            });
        }
        if !own {
            detail.push_str(&format!(
                " (where {host} redirected slim; it sends no credentials to another host)"
            ));
        }
        Err(RegistryError::Status {
            what: what.to_string(),
            host: answered_by,
            status: status.as_u16(),
            detail,
        })
    }
}
