//! The Distribution API client: manifests and blobs in and out of a registry,
//! with authentication, retries and streaming.
//!
//! Written on reqwest rather than oci-client because slim needs what that
//! crate does not expose: response headers on errors (`Retry-After` on 429),
//! retries at all, tokens scoped to two repositories (cross-repository
//! mounts), a 202 answer to a mount treated as "not mounted", and uploads
//! streamed from a spooled file that can be replayed on a retry.
//!
//! Every request goes through [`RegistryClient::execute`]: credentials and
//! Bearer tokens are added once the host's challenge is known (and only on
//! the registry's own origin, [`origin`]), a 401 refreshes them once, and
//! transient failures (connection errors, 429, 5xx) are retried within
//! bounds ([`limits`]): attempts, any one wait, the total waited. Every
//! body, down and up, is read under a low-speed guard, so a registry that
//! trickles or goes silent fails the request instead of holding it.
//!
//! - `blob.rs`: downloads, resumed after a break ([`BlobReader`]);
//! - `upload.rs`: mounts, upload sessions, monolithic and streamed uploads
//!   ([`StreamingUpload`]), each watched while its body moves;
//! - [`listing`]: catalog and tag lists, every name checked before use;
//! - [`auth`]: credentials, challenges, tokens; [`origin`]: where they may
//!   go; [`limits`]: retries and the speed guard.

pub mod auth;
mod blob;
pub mod limits;
pub mod listing;
pub mod origin;
mod upload;

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};

use crate::digest::Digest;
use crate::image::media;
use crate::reference::{RegistryRef, is_loopback_host};
use auth::{Challenge, Credential, FoundCredential, Token};
pub use blob::BlobReader;
use limits::{GiveUp, GuardedRead, Retries, SpeedGuard, Stall, find_stall};
pub use listing::{Listing, escaped};
use origin::{Credentials, Origin, SendError};
pub use upload::StreamingUpload;

/// Settings for talking to registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Hosts reached without TLS verification (and over HTTP if they do not
    /// speak TLS).
    pub insecure_hosts: Vec<String>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_certs: Vec<std::path::PathBuf>,
    /// Attempts per request for transient failures (1 = no retry).
    pub attempts: u32,
    /// First backoff delay; doubles each retry, capped at `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` slim honours; a registry asking for more
    /// fails the request at once.
    pub max_retry_after: Duration,
    /// The most slim waits between the attempts of one request, in all.
    pub retry_budget: Duration,
    /// With `speed_time`, the low-speed limit (curl's `--speed-limit` and
    /// `--speed-time`): a body moving fewer bytes per second than this
    /// over `speed_time` has stalled. `speed_time` is also how long slim
    /// waits for an answer or for any byte of a body.
    pub speed_limit: u64,
    pub speed_time: Duration,
    /// A stalled blob download is resumed only when its connection had
    /// brought at least this many bytes; otherwise it fails.
    pub resume_after: u64,
    /// Caps on one listing (catalog or tags): pages, and names in all.
    pub max_list_pages: usize,
    pub max_list_names: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_hosts: Vec::new(),
            ca_certs: Vec::new(),
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(30),
            retry_budget: Duration::from_secs(60),
            speed_limit: 10 << 10,
            speed_time: Duration::from_secs(30),
            resume_after: 1 << 20,
            max_list_pages: 10_000,
            max_list_names: 1_000_000,
        }
    }
}

impl ClientOptions {
    /// How long an upload of `size` bytes may take at the minimum speed,
    /// plus one window: the deadline of a request with that body.
    fn upload_deadline(&self, size: u64) -> Duration {
        self.speed_time + Duration::from_secs_f64(size as f64 / self.speed_limit.max(1) as f64)
    }

    /// How long a registry may take to answer the commit of a `size`-byte
    /// blob: a window, plus the time to copy it at 100 times the minimum
    /// speed (registries on object stores copy a blob into place then).
    fn commit_deadline(&self, size: u64) -> Duration {
        self.speed_time
            + Duration::from_secs_f64(size as f64 / (100.0 * self.speed_limit.max(1) as f64))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{what}: {detail} (does it exist? try `skopeo list-tags {skopeo_flags}docker://{host}/{repository}`)"
    )]
    NotFound {
        what: String,
        host: String,
        repository: String,
        detail: String,
        /// What skopeo needs to reach the host as slim does
        /// (`--tls-verify=false ` for plain-HTTP and insecure hosts).
        skopeo_flags: &'static str,
    },
    #[error("{what}: {host} refused the credentials{detail} ({hint})")]
    Unauthorized {
        what: String,
        host: String,
        detail: String,
        hint: String,
    },
    #[error(
        "{what}: access denied by {host}{detail} (check that your account may {action} this repository)"
    )]
    Denied {
        what: String,
        host: String,
        detail: String,
        action: &'static str,
    },
    #[error("{what}: {host} answered HTTP {status}{detail}")]
    Status {
        what: String,
        host: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{what}: cannot talk to {host} (is the registry running and the name right? for a plain-HTTP registry pass --insecure-registry {host})"
    )]
    Transport {
        what: String,
        host: String,
        #[source]
        source: reqwest::Error,
    },
    /// The host's certificate failed verification. Not retried; the
    /// reqwest error is logged, its innermost cause is `reason`.
    #[error(
        "{what}: the TLS certificate of {host} is not trusted ({reason}); if a private CA signed it, pass --ca-cert CA.pem or set SSL_CERT_FILE, or skip verification for this host with --insecure-registry {host}"
    )]
    Certificate {
        what: String,
        host: String,
        reason: String,
    },
    #[error("{what}: {reason}")]
    Protocol { what: String, reason: String },
    /// A blob download broke again and again.
    #[error(
        "{what}: the connection to {host} kept breaking; gave up after {attempts} attempts at {offset} of {size} bytes (try again later)"
    )]
    GaveUp {
        what: String,
        host: String,
        attempts: u32,
        offset: u64,
        size: u64,
        /// What broke the last attempt.
        #[source]
        last: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A body moved too slowly, or nothing came at all.
    #[error(
        "{what}: the connection to {host} stalled (the registry or the network is stuck or overloaded; try again later)"
    )]
    Stalled {
        what: String,
        host: String,
        #[source]
        stall: Stall,
    },
    #[error(
        "{what}: {host} asked slim to wait {} s before retrying (Retry-After), more than the {} s slim waits; try again later",
        asked.as_secs(),
        max.as_secs()
    )]
    RetryAfter {
        what: String,
        host: String,
        asked: Duration,
        max: Duration,
    },
    /// The realm would have taken the credentials over plain HTTP from an
    /// HTTPS registry, so they were not sent, and it wanted them.
    #[error(
        "{what}: the token service of {host} is {realm}, plain HTTP, while the registry uses HTTPS; slim does not send your credentials over it (the registry's operator should serve its token realm over HTTPS)"
    )]
    CredentialsWithheld {
        what: String,
        host: String,
        realm: String,
    },
    #[error(transparent)]
    Credentials(#[from] auth::CredentialError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Which actions a request needs on which repositories (token scopes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope(Vec<(String, &'static str)>);

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope(vec![(repository.to_string(), "pull")])
    }

    pub fn push(repository: &str) -> Scope {
        Scope(vec![(repository.to_string(), "pull,push")])
    }

    /// Push to `repository` and pull from `from` (a cross-repository mount).
    pub fn push_mount(repository: &str, from: &str) -> Scope {
        let mut s = Scope::push(repository);
        if from != repository {
            s.0.push((from.to_string(), "pull"));
        }
        s
    }

    /// The catalog endpoint.
    pub fn catalog() -> Scope {
        Scope(vec![("catalog:*".to_string(), "*")])
    }

    fn params(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(repo, actions)| {
                if repo.starts_with("catalog:") {
                    "registry:catalog:*".to_string()
                } else {
                    format!("repository:{repo}:{actions}")
                }
            })
            .collect()
    }

    fn action(&self) -> &'static str {
        if self.0.iter().any(|(_, a)| a.contains("push")) {
            "push to"
        } else {
            "pull from"
        }
    }
}

/// What slim knows about one registry host.
#[derive(Default)]
struct HostState {
    /// `http://host` or `https://host`, decided at first contact.
    base: Option<String>,
    challenge: Option<Challenge>,
    /// `None` = not looked up yet.
    credential: Option<Option<FoundCredential>>,
    tokens: HashMap<Scope, Token>,
    tokens_issued: u64,
    /// Held while a token is fetched, so that threads needing the same
    /// scope at once wait for one token instead of each fetching their own.
    token_fetch: Arc<Mutex<()>>,
    /// The plain-HTTP realm slim did not send this HTTPS host's credentials
    /// to, if it named one.
    withheld_from: Option<String>,
}

/// A client for any number of registries; cheap to share between threads.
pub struct RegistryClient {
    verified: Client,
    unverified: Client,
    opts: ClientOptions,
    hosts: Mutex<HashMap<String, Arc<Mutex<HostState>>>>,
}

const USER_AGENT: &str = concat!("slim/", env!("CARGO_PKG_VERSION"));

impl RegistryClient {
    pub fn new(opts: ClientOptions) -> anyhow::Result<RegistryClient> {
        let mut certs = Vec::new();
        let mut extra: Vec<std::path::PathBuf> = opts.ca_certs.clone();
        if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
            extra.push(p.into());
        }
        for path in &extra {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading CA certificate {}: {e}", path.display()))?;
            let parsed = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!("CA certificate {} is not PEM: {e}", path.display())
            })?;
            certs.extend(parsed);
        }
        // Redirects are followed by `origin::send`, which decides about
        // credentials at every hop. The client's timeout is the silence
        // limit: reqwest applies it to the wait for an answer and to each
        // read of a body (requests with a body of their own set a deadline
        // that fits its size). TCP_USER_TIMEOUT ends a connection whose
        // peer stopped taking data (a zero window) after the same time.
        let builder = || {
            Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(opts.speed_time)
                .tcp_keepalive(Duration::from_secs(30))
                .tcp_user_timeout(opts.speed_time)
                .timeout(opts.speed_time)
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(8)
        };
        let verified = builder()
            .tls_certs_merge(certs)
            .build()
            .map_err(|e| anyhow::anyhow!("setting up the HTTP client: {e}"))?;
        let unverified = builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| anyhow::anyhow!("setting up the HTTP client: {e}"))?;
        Ok(RegistryClient {
            verified,
            unverified,
            opts,
            hosts: Mutex::new(HashMap::new()),
        })
    }

    fn host(&self, host: &str) -> Arc<Mutex<HostState>> {
        self.hosts
            .lock()
            .expect("host table lock")
            .entry(host.to_string())
            .or_default()
            .clone()
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.opts.insecure_hosts.iter().any(|h| h == host)
    }

    fn http_for(&self, host: &str) -> &Client {
        if self.is_insecure(host) {
            &self.unverified
        } else {
            &self.verified
        }
    }

    /// How many Bearer tokens slim fetched for `host` (for tests and logs).
    pub fn tokens_issued(&self, host: &str) -> u64 {
        self.host(host).lock().expect("host lock").tokens_issued
    }

    /// `scheme://host`: loopback hosts use HTTP; insecure hosts try HTTPS
    /// without verification, then HTTP (as Docker does); all others HTTPS.
    fn base(&self, host: &str) -> Result<String, RegistryError> {
        let state = self.host(host);
        if let Some(b) = &state.lock().expect("host lock").base {
            return Ok(b.clone());
        }
        let base = if is_loopback_host(host) {
            format!("http://{host}")
        } else if self.is_insecure(host) {
            let https = format!("https://{host}");
            // Like every request, through origin::send (it carries nothing).
            let probe = self
                .unverified
                .get(format!("{https}/v2/"))
                .timeout(Duration::from_secs(15))
                .build()
                .map_err(SendError::Http)
                .and_then(|req| origin::send(&self.unverified, req, None));
            match probe {
                Ok(_) | Err(SendError::Redirect(_)) => https,
                Err(SendError::Http(e)) if e.is_connect() || e.is_request() => {
                    format!("http://{host}")
                }
                Err(SendError::Http(source)) => {
                    return Err(transport_error(
                        "probing the registry",
                        host,
                        source,
                        &self.opts,
                    ));
                }
            }
        } else {
            format!("https://{host}")
        };
        state.lock().expect("host lock").base = Some(base.clone());
        Ok(base)
    }

    /// Sends the request `build` makes (against the host's base URL), with
    /// the host's credentials (on its own origin only), retrying transient
    /// failures within `attempts` and the retry bounds.
    pub fn execute(
        &self,
        host: &str,
        scope: &Scope,
        what: &str,
        attempts: u32,
        build: &dyn Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<Reply, RegistryError> {
        let mut retries = Retries::new(&self.opts, attempts);
        let mut reauthenticated = false;
        loop {
            let base = self.base(host)?;
            let registry = Origin::parse(&base).ok_or_else(|| RegistryError::Protocol {
                what: what.to_string(),
                reason: format!("{base} is not a URL"),
            })?;
            let http = self.http_for(host);
            let req = build(http, &base)
                .build()
                .map_err(|e| RegistryError::Protocol {
                    what: what.to_string(),
                    reason: format!("cannot make a request of it: {e}"),
                })?;
            let sent = self.auth_header(host, scope, what)?;
            let credentials = sent
                .as_deref()
                .and_then(|v| Credentials::new(registry.clone(), v));
            match origin::send(http, req, credentials.as_ref()) {
                Ok((resp, url)) => {
                    let status = resp.status();
                    // Only the registry's own answers speak for it: a 401 or
                    // 403 from wherever it redirected slim is just a status.
                    let own = Origin::of(&url).as_ref() == Some(&registry);
                    if status == StatusCode::UNAUTHORIZED && own {
                        let challenge = resp
                            .headers()
                            .get(header::WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(Challenge::parse);
                        let state = self.host(host);
                        {
                            let mut s = state.lock().expect("host lock");
                            // Drop the token only if this request carried it.
                            // A 401 to a request sent before the challenge was
                            // known says nothing about a token another thread
                            // fetched meanwhile; dropping that one made every
                            // concurrent first request fetch its own token.
                            let rejected = s.tokens.get(scope).is_some_and(|t| {
                                sent.as_deref() == Some(format!("Bearer {}", t.value).as_str())
                            });
                            if rejected {
                                s.tokens.remove(scope);
                            }
                            if challenge.is_some() {
                                s.challenge = challenge;
                            }
                        }
                        if !reauthenticated {
                            reauthenticated = true;
                            continue;
                        }
                        let detail = error_detail(self.reply(resp, url, &retries, own));
                        return Err(self.unauthorized(host, what, detail));
                    }
                    if is_transient_status(status) {
                        match retries.next_wait(retry_after(resp.headers())) {
                            Ok(wait) => {
                                tracing::warn!(%host, %status, ?wait, "{what}: retrying");
                                drop(resp);
                                retries.sleep(wait);
                                continue;
                            }
                            Err(GiveUp::RetryAfter { asked, max }) => {
                                return Err(RegistryError::RetryAfter {
                                    what: what.to_string(),
                                    host: authority(&url),
                                    asked,
                                    max,
                                });
                            }
                            // The caller reports the status (and the attempts).
                            Err(_) => {}
                        }
                    }
                    if status == StatusCode::FORBIDDEN && own {
                        return Err(RegistryError::Denied {
                            what: what.to_string(),
                            host: host.to_string(),
                            detail: error_detail(self.reply(resp, url, &retries, own)),
                            action: scope.action(),
                        });
                    }
                    return Ok(self.reply(resp, url, &retries, own));
                }
                Err(SendError::Redirect(why)) => {
                    return Err(RegistryError::Protocol {
                        what: what.to_string(),
                        reason: format!("{host} answered with {why}"),
                    });
                }
                Err(SendError::Http(e)) if is_transient_error(&e) => {
                    match retries.next_wait(None) {
                        Ok(wait) => {
                            tracing::warn!(%host, error = %e, ?wait, "{what}: retrying");
                            retries.sleep(wait);
                        }
                        Err(_) => return Err(transport_error(what, host, e, &self.opts)),
                    }
                }
                Err(SendError::Http(e)) => return Err(transport_error(what, host, e, &self.opts)),
            }
        }
    }

    /// A response as a [`Reply`] (`own`: the registry itself answered).
    fn reply(&self, resp: Response, url: Url, retries: &Retries, own: bool) -> Reply {
        Reply {
            body: GuardedRead {
                inner: resp,
                guard: SpeedGuard::new(&self.opts),
            },
            host: authority(&url),
            url,
            attempts: retries.attempts(),
            own,
            window: self.opts.speed_time,
        }
    }

    fn credential(&self, host: &str) -> Result<Option<FoundCredential>, RegistryError> {
        let state = self.host(host);
        let mut s = state.lock().expect("host lock");
        if s.credential.is_none() {
            s.credential = Some(auth::lookup(&registry_name_for(host))?);
        }
        Ok(s.credential.clone().flatten())
    }

    fn unauthorized(&self, host: &str, what: &str, detail: String) -> RegistryError {
        if let Some(realm) = self
            .host(host)
            .lock()
            .expect("host lock")
            .withheld_from
            .clone()
        {
            return RegistryError::CredentialsWithheld {
                what: what.to_string(),
                host: host.to_string(),
                realm,
            };
        }
        let hint = match self.credential(host) {
            Ok(Some(found)) => format!(
                "the ones in {}; check them with `docker login {host}`",
                found.source.display()
            ),
            _ => format!(
                "no credentials for {host} found; run `docker login {host}` or point REGISTRY_AUTH_FILE at an auth.json"
            ),
        };
        RegistryError::Unauthorized {
            what: what.to_string(),
            host: host.to_string(),
            detail,
            hint,
        }
    }

    /// The Authorization header for a request, once the host has challenged.
    fn auth_header(
        &self,
        host: &str,
        scope: &Scope,
        what: &str,
    ) -> Result<Option<String>, RegistryError> {
        let state = self.host(host);
        let challenge = state.lock().expect("host lock").challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .credential(host)?
                .and_then(|c| c.credential.basic_header())),
            Some(Challenge::Bearer { realm, service }) => {
                let cached = || {
                    state
                        .lock()
                        .expect("host lock")
                        .tokens
                        .get(scope)
                        .filter(|t| t.is_fresh())
                        .map(|t| format!("Bearer {}", t.value))
                };
                if let Some(v) = cached() {
                    return Ok(Some(v));
                }
                // One fetch at a time per host: with `-j N`, N blob requests
                // start together and would otherwise each ask the realm for
                // the same scope (N tokens where one does). Whoever waited
                // finds the token the first one stored.
                let fetch = state.lock().expect("host lock").token_fetch.clone();
                let _fetching = fetch.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(v) = cached() {
                    return Ok(Some(v));
                }
                let token = self.fetch_token(host, &realm, service.as_deref(), scope, what)?;
                let value = format!("Bearer {}", token.value);
                let mut s = state.lock().expect("host lock");
                s.tokens.insert(scope.clone(), token);
                s.tokens_issued += 1;
                Ok(Some(value))
            }
        }
    }

    /// Asks the realm for a token (Docker token protocol): GET with Basic
    /// credentials, or the OAuth2 refresh-token POST for identity tokens.
    /// The credentials go to the realm's origin only, and not at all to a
    /// plain-HTTP realm of an HTTPS registry.
    fn fetch_token(
        &self,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        what: &str,
    ) -> Result<Token, RegistryError> {
        let protocol = |reason: String| RegistryError::Protocol {
            what: what.to_string(),
            reason,
        };
        let mut url = Url::parse(realm).map_err(|e| {
            protocol(format!(
                "{host} sent a malformed token realm {realm:?}: {e}"
            ))
        })?;
        let realm_origin = Origin::of(&url).ok_or_else(|| {
            protocol(format!(
                "{host} sent a token realm without a host: {realm:?}"
            ))
        })?;
        let registry = Origin::parse(&self.base(host)?);
        let mut credential = self.credential(host)?.map(|c| c.credential);
        let withheld = credential.is_some()
            && registry
                .as_ref()
                .is_some_and(|r| !origin::realm_may_receive_credentials(r, &url));
        if withheld {
            let state = self.host(host);
            let mut s = state.lock().expect("host lock");
            if s.withheld_from.is_none() {
                tracing::warn!(%host, %realm, "not sending credentials to a plain-HTTP token realm of an HTTPS registry");
                s.withheld_from = Some(realm.to_string());
            }
            credential = None;
        }
        let scopes = scope.params();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scopes {
                q.append_pair("scope", s);
            }
        }
        let http = self.http_for(host);
        let mut retries = Retries::new(&self.opts, self.opts.attempts);
        loop {
            let (req, credentials) = match &credential {
                Some(Credential::IdentityToken(refresh)) => {
                    let mut form: Vec<(&str, &str)> = vec![
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh.as_str()),
                        ("client_id", "slim"),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s));
                    }
                    let joined = scopes.join(" ");
                    form.push(("scope", &joined));
                    let body = form
                        .iter()
                        .map(|(k, v)| format!("{}={}", k, url_encode(v)))
                        .collect::<Vec<_>>()
                        .join("&");
                    let req = http
                        .post(realm)
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(body);
                    (req, None)
                }
                other => {
                    let credentials = other
                        .as_ref()
                        .and_then(Credential::basic_header)
                        .and_then(|h| Credentials::new(realm_origin.clone(), &h));
                    (http.get(url.clone()), credentials)
                }
            };
            let req = req
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| protocol(format!("cannot make a token request of {realm}: {e}")))?;
            match origin::send(http, req, credentials.as_ref()) {
                Ok((resp, at)) if resp.status().is_success() => {
                    let raw = read_limited(self.reply(resp, at, &retries, true), 1 << 20, what)?;
                    let body: auth::TokenResponse = serde_json::from_slice(&raw).map_err(|e| {
                        protocol(format!(
                            "the token service of {host} sent an unreadable answer: {e}"
                        ))
                    })?;
                    return body.into_token().ok_or_else(|| {
                        protocol(format!("the token service of {host} sent no token"))
                    });
                }
                Ok((resp, at)) if is_transient_status(resp.status()) => {
                    match retries.next_wait(retry_after(resp.headers())) {
                        Ok(wait) => retries.sleep(wait),
                        Err(GiveUp::RetryAfter { asked, max }) => {
                            return Err(RegistryError::RetryAfter {
                                what: format!("{what} (token request)"),
                                host: authority(&at),
                                asked,
                                max,
                            });
                        }
                        Err(_) => {
                            return Err(self.token_status(host, what, resp, at, &retries));
                        }
                    }
                }
                Ok((resp, _))
                    if matches!(
                        resp.status(),
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    ) =>
                {
                    let detail = error_detail(self.reply(resp, url.clone(), &retries, true));
                    return Err(self.unauthorized(host, what, detail));
                }
                Ok((resp, at)) => return Err(self.token_status(host, what, resp, at, &retries)),
                Err(SendError::Redirect(why)) => {
                    return Err(protocol(format!(
                        "the token service of {host} answered with {why}"
                    )));
                }
                Err(SendError::Http(e)) if is_transient_error(&e) => {
                    match retries.next_wait(None) {
                        Ok(wait) => retries.sleep(wait),
                        Err(_) => {
                            return Err(transport_error(
                                &format!("{what} (token request to {realm})"),
                                host,
                                e,
                                &self.opts,
                            ));
                        }
                    }
                }
                Err(SendError::Http(e)) => {
                    return Err(transport_error(
                        &format!("{what} (token request to {realm})"),
                        host,
                        e,
                        &self.opts,
                    ));
                }
            }
        }
    }

    fn token_status(
        &self,
        host: &str,
        what: &str,
        resp: Response,
        at: Url,
        retries: &Retries,
    ) -> RegistryError {
        let reply = self.reply(resp, at, retries, true);
        RegistryError::Status {
            what: format!("{what} (token request)"),
            host: host.to_string(),
            status: reply.status().as_u16(),
            detail: error_detail(reply),
        }
    }

    /// Fetches a manifest by tag or digest: its bytes, Content-Type and the
    /// `Docker-Content-Digest` header. The caller verifies the digest.
    pub fn get_manifest(
        &self,
        r: &RegistryRef,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let host = r.api_host();
        let what = format!(
            "pulling manifest {}/{}:{reference}",
            r.registry, r.repository
        )
        .replace(":sha256:", "@sha256:");
        let path = format!("/v2/{}/manifests/{reference}", r.repository);
        let resp = self.execute(
            host,
            &Scope::pull(&r.repository),
            &what,
            self.opts.attempts,
            &|c, base| {
                c.get(format!("{base}{path}"))
                    .header(header::ACCEPT, media::ACCEPT_MANIFESTS.join(", "))
            },
        )?;
        let resp = self.expect_ok(resp, host, &r.repository, &what)?;
        let content_type = header_str(resp.headers(), header::CONTENT_TYPE.as_str())
            .map(|s| s.split(';').next().unwrap_or(&s).trim().to_string());
        let digest = header_str(resp.headers(), "docker-content-digest");
        let bytes = read_limited(resp, crate::image::MAX_MANIFEST_BYTES, &what)?;
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// HEAD of a manifest: its digest if the registry has it.
    pub fn head_manifest(
        &self,
        r: &RegistryRef,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let host = r.api_host();
        let what = format!(
            "checking manifest {}/{}:{reference}",
            r.registry, r.repository
        );
        let path = format!("/v2/{}/manifests/{reference}", r.repository);
        let resp = self.execute(
            host,
            &Scope::pull(&r.repository),
            &what,
            self.opts.attempts,
            &|c, base| {
                c.head(format!("{base}{path}"))
                    .header(header::ACCEPT, media::ACCEPT_MANIFESTS.join(", "))
            },
        )?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.expect_ok(resp, host, &r.repository, &what)?;
        Ok(header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse().ok()))
    }

    /// Whether the repository has the blob (HEAD).
    pub fn blob_exists(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        scope: &Scope,
    ) -> Result<bool, RegistryError> {
        let host = r.api_host();
        let what = format!("checking blob {digest} in {}/{}", r.registry, r.repository);
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        let resp = self.execute(host, scope, &what, self.opts.attempts, &|c, base| {
            c.head(format!("{base}{path}"))
        })?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => self
                .expect_ok(resp, host, &r.repository, &what)
                .map(|_| false),
        }
    }

    /// Pushes manifest bytes under a tag or digest; returns the digest the
    /// registry reports (checked against the bytes' own).
    pub fn put_manifest(
        &self,
        r: &RegistryRef,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let host = r.api_host();
        let what = format!(
            "pushing manifest {}/{}:{reference}",
            r.registry, r.repository
        )
        .replace(":sha256:", "@sha256:");
        let path = format!("/v2/{}/manifests/{reference}", r.repository);
        let body = bytes.to_vec();
        let resp = self.execute(
            host,
            &Scope::push(&r.repository),
            &what,
            self.opts.attempts,
            &|c, base| {
                c.put(format!("{base}{path}"))
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone())
                    .timeout(self.opts.upload_deadline(body.len() as u64))
            },
        )?;
        let resp = self.expect_ok(resp, host, &r.repository, &what)?;
        let expected = Digest::sha256_of(bytes);
        if let Some(d) = header_str(resp.headers(), "docker-content-digest")
            && let Ok(d) = d.parse::<Digest>()
            && d.algorithm() == expected.algorithm()
            && d != expected
        {
            return Err(RegistryError::Protocol {
                what,
                reason: format!(
                    "the registry stored the manifest as {d}, but its bytes hash to {expected}"
                ),
            });
        }
        Ok(())
    }

    fn expect_ok(
        &self,
        resp: Reply,
        host: &str,
        repository: &str,
        what: &str,
    ) -> Result<Reply, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let answered_by = resp.host.clone();
        let resp_own = resp.own;
        let attempts = resp.attempts;
        let mut detail = error_detail(resp);
        if attempts > 1 {
            detail.push_str(&format!(" (after {attempts} attempts)"));
        }
        if status == StatusCode::NOT_FOUND {
            // skopeo verifies TLS unless told otherwise, even on loopback.
            let plain = is_loopback_host(host) || self.is_insecure(host);
            return Err(RegistryError::NotFound {
                what: what.to_string(),
                host: host.to_string(),
                repository: repository.to_string(),
                skopeo_flags: if plain { "--tls-verify=false " } else { "" },
                detail: detail
                    .trim_start_matches(": ")
                    .to_string()
                    .if_empty("not found"),
            });
        }
        if !resp_own {
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

/// `host[:port]` of a URL, as messages name hosts.
fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.to_string(),
    }
}

/// A registry's answer: status and headers, and a body read under the
/// low-speed guard.
pub struct Reply {
    body: GuardedRead<Response>,
    /// Where the answer came from (after redirects).
    url: Url,
    /// `host[:port]` of `url`.
    host: String,
    /// Attempts it took (1: no retry).
    attempts: u32,
    /// Whether the registry itself answered (not a host it redirected to).
    own: bool,
    /// The silence limit, for [`body_error`].
    window: Duration,
}

impl Reply {
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
    fn body_error(&self, what: &str, source: io::Error) -> RegistryError {
        match find_stall(&source, self.window) {
            Some(stall) => RegistryError::Stalled {
                what: what.to_string(),
                host: self.host.clone(),
                stall,
            },
            None => RegistryError::Io {
                what: what.to_string(),
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

trait IfEmpty {
    fn if_empty(self, default: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, default: &str) -> String {
        if self.is_empty() {
            default.to_string()
        } else {
            self
        }
    }
}

/// The registry name credentials are stored under for an API host.
fn registry_name_for(host: &str) -> String {
    match host {
        "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// A manifest as a registry served it. Not verified yet.
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    /// Content-Type without parameters.
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` header.
    pub digest: Option<String>,
}

fn is_transient_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS
        || s == StatusCode::REQUEST_TIMEOUT
        || matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

/// A failure worth another attempt: the connection broke or was refused.
/// Not a timeout or a stall: those cost a whole window each, so a request
/// that got nowhere in one is not tried again (a blob download that made
/// progress is resumed by [`BlobReader`]).
fn is_transient_error(e: &reqwest::Error) -> bool {
    (e.is_connect() || e.is_request() || e.is_body())
        && !e.is_timeout()
        && find_stall(e, Duration::ZERO).is_none()
        && certificate_problem(e).is_none()
}

/// The verifier's complaint when `e` failed on the host's certificate
/// (rustls: "invalid peer certificate: UnknownIssuer", "…: NotValidForName",
/// "…: Expired"). reqwest reports it as a connect error, three causes deep,
/// and does not expose the rustls type, so the chain's text is searched.
fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    let mut found = None;
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if text.contains("certificate") {
            found = Some(text);
        }
        cause = c.source();
    }
    found
}

/// A failed request as an error: a certificate problem says so and what to
/// do about it, a timeout or a stall is a stall; anything else is "cannot
/// talk to the host".
fn transport_error(
    what: &str,
    host: &str,
    source: reqwest::Error,
    opts: &ClientOptions,
) -> RegistryError {
    if let Some(reason) = certificate_problem(&source) {
        tracing::debug!(%host, error = ?source, "TLS certificate rejected");
        return RegistryError::Certificate {
            what: what.to_string(),
            host: host.to_string(),
            reason,
        };
    }
    if let Some(stall) = find_stall(&source, opts.speed_time) {
        tracing::debug!(%host, error = ?source, "stalled");
        return RegistryError::Stalled {
            what: what.to_string(),
            host: host.to_string(),
            stall,
        };
    }
    RegistryError::Transport {
        what: what.to_string(),
        host: host.to_string(),
        source,
    }
}

fn is_retryable(e: &RegistryError) -> bool {
    match e {
        RegistryError::Transport { source, .. } => is_transient_error(source),
        RegistryError::Status { status, .. } => {
            is_transient_status(StatusCode::from_u16(*status).unwrap_or(StatusCode::OK))
        }
        _ => false,
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
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

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `: CODE: message` from a registry error body, or the start of the body.
fn error_detail(resp: Reply) -> String {
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

/// A whole (small) body, at most `limit` bytes.
fn read_limited(resp: Reply, limit: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
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

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a 401 to a request sent before the challenge was known
    /// dropped the token another thread had fetched meanwhile, so every
    /// concurrent first request fetched a token of its own.
    #[test]
    fn a_401_to_an_unauthenticated_request_keeps_a_fresh_token() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let client = Arc::new(RegistryClient::new(ClientOptions::default()).unwrap());
        let scope = Scope::pull("repo");
        let (c, h, sc) = (client.clone(), host.clone(), scope.clone());
        let server = std::thread::spawn(move || {
            let mut token_requests = 0;
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut head, mut line) = (String::new(), String::new());
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    head.push_str(&line);
                    line.clear();
                }
                let answer = if head.starts_with("STOP") {
                    break;
                } else if head.starts_with("GET /token") {
                    token_requests += 1;
                    "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"token\":\"late\"}".to_string()
                } else if head.to_ascii_lowercase().contains("authorization: bearer") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                } else {
                    // While this request was in flight, "another thread"
                    // learnt the challenge and stored a fresh token.
                    let state = c.host(&h);
                    let mut s = state.lock().unwrap();
                    s.challenge = Some(Challenge::Bearer {
                        realm: format!("http://{h}/token"),
                        service: None,
                    });
                    s.tokens.insert(
                        sc.clone(),
                        Token {
                            value: "fresh".into(),
                            expires: std::time::Instant::now() + Duration::from_secs(300),
                        },
                    );
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{h}/token\"\r\nContent-Length: 0\r\n\r\n"
                    )
                };
                stream.write_all(answer.as_bytes()).unwrap();
            }
            token_requests
        });
        let resp = client
            .execute(&host, &scope, "test", 1, &|c, base| {
                c.get(format!("{base}/v2/"))
                    .header(header::CONNECTION, "close")
            })
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        std::net::TcpStream::connect(&host)
            .unwrap()
            .write_all(b"STOP\r\n\r\n")
            .unwrap();
        assert_eq!(server.join().unwrap(), 0, "the fresh token was thrown away");
    }

    #[test]
    fn http_dates() {
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert!(httpdate_parse("yesterday").is_none());
    }

    #[test]
    fn scopes() {
        assert_eq!(
            Scope::push_mount("a", "b").params(),
            vec!["repository:a:pull,push", "repository:b:pull"]
        );
    }
}
