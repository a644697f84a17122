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
//! Bearer tokens are added once the host's challenge is known, a 401 refreshes
//! them once, and transient failures (connection errors, 429, 5xx) are
//! retried with bounded exponential backoff.

pub mod auth;

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{self, HeaderMap};

use crate::digest::Digest;
use crate::image::media;
use crate::reference::{RegistryRef, is_loopback_host};
use auth::{Challenge, Credential, FoundCredential, Token};

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
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_hosts: Vec::new(),
            ca_certs: Vec::new(),
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
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
        let builder = || {
            Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(30))
                .tcp_keepalive(Duration::from_secs(30))
                .timeout(None::<Duration>)
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
            let probe = self
                .unverified
                .get(format!("{https}/v2/"))
                .timeout(Duration::from_secs(15))
                .send();
            match probe {
                Ok(_) => https,
                Err(e) if e.is_connect() || e.is_request() => format!("http://{host}"),
                Err(source) => {
                    return Err(transport_error("probing the registry", host, source));
                }
            }
        } else {
            format!("https://{host}")
        };
        state.lock().expect("host lock").base = Some(base.clone());
        Ok(base)
    }

    fn backoff(&self, attempt: u32, headers: Option<&HeaderMap>) -> Duration {
        if let Some(after) = headers.and_then(retry_after) {
            return after.min(Duration::from_secs(120));
        }
        let d = self.opts.backoff.saturating_mul(1 << attempt.min(16));
        d.min(self.opts.max_backoff)
    }

    /// Sends the request `build` makes (against the host's base URL), with
    /// auth, retrying transient failures up to `attempts` times.
    pub fn execute(
        &self,
        host: &str,
        scope: &Scope,
        what: &str,
        attempts: u32,
        build: &dyn Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            let base = self.base(host)?;
            let mut req = build(self.http_for(host), &base);
            let sent = self.auth_header(host, scope, what)?;
            if let Some(h) = &sent {
                req = req.header(header::AUTHORIZATION, h);
            }
            match req.send() {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
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
                        let detail = error_detail(resp);
                        return Err(self.unauthorized(host, what, detail));
                    }
                    if is_transient_status(status) && attempt + 1 < attempts {
                        let wait = self.backoff(attempt, Some(resp.headers()));
                        tracing::warn!(%host, %status, ?wait, "{what}: retrying");
                        drop(resp);
                        std::thread::sleep(wait);
                        attempt += 1;
                        continue;
                    }
                    if status == StatusCode::FORBIDDEN {
                        return Err(RegistryError::Denied {
                            what: what.to_string(),
                            host: host.to_string(),
                            detail: error_detail(resp),
                            action: scope.action(),
                        });
                    }
                    return Ok(resp);
                }
                Err(e) if is_transient_error(&e) && attempt + 1 < attempts => {
                    let wait = self.backoff(attempt, None);
                    tracing::warn!(%host, error = %e, ?wait, "{what}: retrying");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(source) => return Err(transport_error(what, host, source)),
            }
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
    fn fetch_token(
        &self,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        what: &str,
    ) -> Result<Token, RegistryError> {
        let credential = self.credential(host)?;
        let http = self.http_for(host);
        let scopes = scope.params();
        let mut attempt = 0;
        loop {
            let req = match credential.as_ref().map(|c| &c.credential) {
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
                    http.post(realm)
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(body)
                }
                other => {
                    let mut url =
                        reqwest::Url::parse(realm).map_err(|e| RegistryError::Protocol {
                            what: what.to_string(),
                            reason: format!("{host} sent a malformed token realm {realm:?}: {e}"),
                        })?;
                    {
                        let mut q = url.query_pairs_mut();
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        for s in &scopes {
                            q.append_pair("scope", s);
                        }
                    }
                    let mut r = http.get(url);
                    if let Some(h) = other.and_then(Credential::basic_header) {
                        r = r.header(header::AUTHORIZATION, h);
                    }
                    r
                }
            };
            match req.timeout(Duration::from_secs(60)).send() {
                Ok(resp) if resp.status().is_success() => {
                    let raw = read_limited(resp, 1 << 20, what)?;
                    let body: auth::TokenResponse =
                        serde_json::from_slice(&raw).map_err(|e| RegistryError::Protocol {
                            what: what.to_string(),
                            reason: format!(
                                "the token service of {host} sent an unreadable answer: {e}"
                            ),
                        })?;
                    return body.into_token().ok_or_else(|| RegistryError::Protocol {
                        what: what.to_string(),
                        reason: format!("the token service of {host} sent no token"),
                    });
                }
                Ok(resp)
                    if is_transient_status(resp.status()) && attempt + 1 < self.opts.attempts =>
                {
                    std::thread::sleep(self.backoff(attempt, Some(resp.headers())));
                    attempt += 1;
                }
                Ok(resp)
                    if matches!(
                        resp.status(),
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    ) =>
                {
                    let detail = error_detail(resp);
                    return Err(self.unauthorized(host, what, detail));
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    return Err(RegistryError::Status {
                        what: format!("{what} (token request)"),
                        host: host.to_string(),
                        status,
                        detail: error_detail(resp),
                    });
                }
                Err(e) if is_transient_error(&e) && attempt + 1 < self.opts.attempts => {
                    std::thread::sleep(self.backoff(attempt, None));
                    attempt += 1;
                }
                Err(source) => {
                    return Err(transport_error(
                        &format!("{what} (token request to {realm})"),
                        host,
                        source,
                    ));
                }
            }
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
                    .timeout(Duration::from_secs(120))
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
                    .timeout(Duration::from_secs(60))
            },
        )?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = self.expect_ok(resp, host, &r.repository, &what)?;
        Ok(header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse().ok()))
    }

    /// Opens a blob for streaming. The reader resumes with a Range request
    /// when the connection breaks; the caller verifies the digest.
    pub fn open_blob(
        self: &Arc<Self>,
        r: &RegistryRef,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobReader, RegistryError> {
        let mut reader = BlobReader {
            client: self.clone(),
            r: r.clone(),
            digest: digest.clone(),
            size,
            offset: 0,
            current: None,
            failures: 0,
        };
        reader.open()?;
        Ok(reader)
    }

    fn blob_request(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        offset: u64,
    ) -> Result<Response, RegistryError> {
        let host = r.api_host();
        let what = format!("pulling blob {digest} from {}/{}", r.registry, r.repository);
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        let resp = self.execute(
            host,
            &Scope::pull(&r.repository),
            &what,
            self.opts.attempts,
            &|c, base| {
                let mut req = c
                    .get(format!("{base}{path}"))
                    .timeout(Duration::from_secs(120));
                if offset > 0 {
                    req = req.header(header::RANGE, format!("bytes={offset}-"));
                }
                req
            },
        )?;
        if resp.status() == StatusCode::PARTIAL_CONTENT && offset > 0 {
            return Ok(resp);
        }
        self.expect_ok(resp, host, &r.repository, &what)
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
                .timeout(Duration::from_secs(60))
        })?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => self
                .expect_ok(resp, host, &r.repository, &what)
                .map(|_| false),
        }
    }

    /// Asks the registry to mount a blob from another repository of the same
    /// registry. `Ok(false)` means "not mounted, upload it" (a 202 answer
    /// opens an upload session, which slim cancels).
    pub fn mount_blob(
        &self,
        r: &RegistryRef,
        from: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let host = r.api_host();
        let what = format!(
            "mounting blob {digest} from {from} into {}/{}",
            r.registry, r.repository
        );
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={digest}&from={from}",
            r.repository
        );
        let scope = Scope::push_mount(&r.repository, from);
        let resp = self.execute(host, &scope, &what, self.opts.attempts, &|c, base| {
            c.post(format!("{base}{path}"))
                .header(header::CONTENT_LENGTH, "0")
                .timeout(Duration::from_secs(60))
        })?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Some(loc) = header_str(resp.headers(), "location") {
                    let base = self.base(host)?;
                    let url = resolve_location(&base, &loc);
                    let _ = self.execute(host, &scope, &what, 1, &|c, _| {
                        c.delete(&url).timeout(Duration::from_secs(30))
                    });
                }
                Ok(false)
            }
            _ => self
                .expect_ok(resp, host, &r.repository, &what)
                .map(|_| false),
        }
    }

    /// Uploads a blob from a file: POST to open a session, then one streaming
    /// PUT with the digest. The whole exchange is retried on transient
    /// failures, replaying the file.
    pub fn upload_blob(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        file: &Path,
        size: u64,
    ) -> Result<(), RegistryError> {
        let what = format!("pushing blob {digest} to {}/{}", r.registry, r.repository);
        let scope = Scope::push(&r.repository);
        let mut attempt = 0;
        loop {
            match self.upload_once(r, digest, file, size, &scope, &what) {
                Ok(()) => return Ok(()),
                Err(e) if attempt + 1 < self.opts.attempts && is_retryable(&e) => {
                    let wait = self.backoff(attempt, None);
                    tracing::warn!(error = %e, ?wait, "retrying upload");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn upload_once(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        file: &Path,
        size: u64,
        scope: &Scope,
        what: &str,
    ) -> Result<(), RegistryError> {
        let host = r.api_host();
        let mut url = self.open_upload(r, scope, what)?;
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        // Generous: a minute plus one second per 4 MiB.
        let timeout = Duration::from_secs(60 + size / (4 << 20));
        let resp = self.execute(host, scope, what, 1, &|c, _| {
            let body = match std::fs::File::open(file) {
                Ok(f) => reqwest::blocking::Body::sized(f, size),
                Err(_) => reqwest::blocking::Body::from(Vec::new()),
            };
            c.put(&url)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, size.to_string())
                .body(body)
                .timeout(timeout)
        })?;
        if resp.status() != StatusCode::CREATED {
            return self.expect_ok(resp, host, &r.repository, what).map(|_| ());
        }
        Ok(())
    }

    /// POSTs to open an upload session; returns its absolute URL.
    fn open_upload(
        &self,
        r: &RegistryRef,
        scope: &Scope,
        what: &str,
    ) -> Result<String, RegistryError> {
        let host = r.api_host();
        let path = format!("/v2/{}/blobs/uploads/", r.repository);
        let resp = self.execute(host, scope, what, self.opts.attempts, &|c, base| {
            c.post(format!("{base}{path}"))
                .header(header::CONTENT_LENGTH, "0")
                .timeout(Duration::from_secs(60))
        })?;
        if resp.status() != StatusCode::ACCEPTED {
            self.expect_ok(resp, host, &r.repository, what)?;
            return Err(RegistryError::Protocol {
                what: what.to_string(),
                reason: format!("{host} did not open an upload session (expected 202 Accepted)"),
            });
        }
        let location =
            header_str(resp.headers(), "location").ok_or_else(|| RegistryError::Protocol {
                what: what.to_string(),
                reason: format!("{host} opened an upload session without a Location"),
            })?;
        Ok(resolve_location(&self.base(host)?, &location))
    }

    /// Opens an upload session and starts one streaming PATCH whose body is
    /// read from `body` (a blob still being written, read as it grows).
    /// [`StreamingUpload::finish`] commits it under its digest (which the
    /// registry checks).
    pub fn stream_upload(
        self: &Arc<Self>,
        r: &RegistryRef,
        body: Box<dyn Read + Send>,
    ) -> Result<StreamingUpload, RegistryError> {
        let host = r.api_host().to_string();
        let what = format!("streaming a blob to {}/{}", r.registry, r.repository);
        let scope = Scope::push(&r.repository);
        let url = self.open_upload(r, &scope, &what)?;
        let client = self.clone();
        let thread_url = url.clone();
        let thread_host = host.clone();
        let thread = std::thread::spawn(move || -> Result<String, RegistryError> {
            // One-shot body: a retry cannot replay it (the caller falls back
            // to uploading the finished file).
            let body = Mutex::new(Some(reqwest::blocking::Body::new(body)));
            let resp = client.execute(&thread_host, &scope, &what, 1, &|c, _| {
                let body = body
                    .lock()
                    .expect("body lock")
                    .take()
                    .unwrap_or_else(|| Vec::new().into());
                c.patch(&thread_url)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(body)
            })?;
            if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT {
                client.expect_ok(resp, &thread_host, "", &what)?;
                return Err(RegistryError::Protocol {
                    what,
                    reason: "the registry did not accept the streamed data".into(),
                });
            }
            let next = header_str(resp.headers(), "location").unwrap_or(thread_url);
            Ok(resolve_location(&client.base(&thread_host)?, &next))
        });
        Ok(StreamingUpload {
            client: self.clone(),
            r: r.clone(),
            url,
            thread: Some(thread),
        })
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
                    .timeout(Duration::from_secs(120))
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

    /// Tags of a repository (`/v2/<name>/tags/list`, following pagination).
    pub fn list_tags(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Vec<String>, RegistryError> {
        self.paginated_list(
            registry,
            repository,
            &Scope::pull(repository),
            format!("/v2/{repository}/tags/list?n=1000"),
            "tags",
            &format!("listing tags of {registry}/{repository}"),
        )
    }

    /// Repositories of a registry (`/v2/_catalog`, following pagination).
    pub fn catalog(&self, registry: &str) -> Result<Vec<String>, RegistryError> {
        self.paginated_list(
            registry,
            "",
            &Scope::catalog(),
            "/v2/_catalog?n=1000".to_string(),
            "repositories",
            &format!("listing repositories of {registry}"),
        )
    }

    /// A list the registry pages with `Link: <…>; rel="next"`: the string
    /// array under `key` of every page.
    fn paginated_list(
        &self,
        registry: &str,
        repository: &str,
        scope: &Scope,
        first: String,
        key: &str,
        what: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let host = crate::reference::api_host(registry);
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let resp = self.execute(host, scope, what, self.opts.attempts, &|c, base| {
                c.get(format!("{base}{path}"))
                    .timeout(Duration::from_secs(60))
            })?;
            let resp = self.expect_ok(resp, host, repository, what)?;
            next = next_link(resp.headers());
            let body = read_limited(resp, 64 << 20, what)?;
            let page: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    what: what.to_string(),
                    reason: format!("unreadable answer: {e}"),
                })?;
            out.extend(
                page[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string)),
            );
        }
        Ok(out)
    }

    fn expect_ok(
        &self,
        resp: Response,
        host: &str,
        repository: &str,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let detail = error_detail(resp);
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
        Err(RegistryError::Status {
            what: what.to_string(),
            host: host.to_string(),
            status: status.as_u16(),
            detail,
        })
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

/// A blob upload that reads the blob while it is being written.
pub struct StreamingUpload {
    client: Arc<RegistryClient>,
    r: RegistryRef,
    url: String,
    thread: Option<std::thread::JoinHandle<Result<String, RegistryError>>>,
}

impl StreamingUpload {
    /// Waits for the body to end and commits the blob under `digest`.
    pub fn finish(mut self, digest: &Digest) -> Result<(), RegistryError> {
        let what = format!(
            "pushing blob {digest} to {}/{}",
            self.r.registry, self.r.repository
        );
        let location =
            self.thread
                .take()
                .expect("thread")
                .join()
                .map_err(|_| RegistryError::Protocol {
                    what: what.clone(),
                    reason: "the upload thread panicked".into(),
                })??;
        let mut url = location;
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let host = self.r.api_host().to_string();
        let resp = self.client.execute(
            &host,
            &Scope::push(&self.r.repository),
            &what,
            1,
            &|c, _| {
                c.put(&url)
                    .header(header::CONTENT_LENGTH, "0")
                    .timeout(Duration::from_secs(300))
            },
        )?;
        if resp.status() != StatusCode::CREATED {
            return self
                .client
                .expect_ok(resp, &host, &self.r.repository, &what)
                .map(|_| ());
        }
        Ok(())
    }

    /// Waits for the request to stop (the caller made its body fail) and
    /// cancels the session.
    pub fn abort(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let host = self.r.api_host().to_string();
        let url = self.url.clone();
        let _ = self.client.execute(
            &host,
            &Scope::push(&self.r.repository),
            "cancelling an upload",
            1,
            &|c, _| c.delete(&url).timeout(Duration::from_secs(30)),
        );
    }
}

impl Drop for StreamingUpload {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

/// A blob download that resumes with `Range` after a broken connection.
pub struct BlobReader {
    client: Arc<RegistryClient>,
    r: RegistryRef,
    digest: Digest,
    size: u64,
    offset: u64,
    current: Option<Response>,
    failures: u32,
}

impl BlobReader {
    fn open(&mut self) -> Result<(), RegistryError> {
        let mut resp = self
            .client
            .blob_request(&self.r, &self.digest, self.offset)?;
        if self.offset > 0 && resp.status() == StatusCode::OK {
            // No range support: skip what we already have.
            io::copy(&mut (&mut resp).take(self.offset), &mut io::sink()).map_err(|source| {
                RegistryError::Io {
                    what: format!("resuming blob {}", self.digest),
                    source,
                }
            })?;
        }
        self.current = Some(resp);
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                match self.open() {
                    Ok(()) => {}
                    // Resuming from a server without Range support re-reads
                    // the blob to skip what we have; a break during that skip
                    // is one more broken transfer to retry like the first
                    // (it used to end the download at once).
                    Err(e @ RegistryError::Io { .. })
                        if self.failures + 1 < self.client.opts.attempts =>
                    {
                        tracing::warn!(digest = %self.digest, offset = self.offset, error = %e, "blob download broke while resuming; retrying");
                        self.failures += 1;
                        std::thread::sleep(self.client.backoff(self.failures - 1, None));
                        continue;
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            let resp = self.current.as_mut().expect("opened");
            match resp.read(buf) {
                Ok(n) => {
                    if n == 0
                        && self.offset < self.size
                        && self.failures < self.client.opts.attempts
                    {
                        // Closed early: resume from where we are.
                        self.failures += 1;
                        self.current = None;
                        std::thread::sleep(self.client.backoff(self.failures - 1, None));
                        continue;
                    }
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if self.failures + 1 < self.client.opts.attempts => {
                    tracing::warn!(digest = %self.digest, offset = self.offset, error = %e, "blob download broke; resuming");
                    self.failures += 1;
                    self.current = None;
                    std::thread::sleep(self.client.backoff(self.failures - 1, None));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_transient_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS
        || s == StatusCode::REQUEST_TIMEOUT
        || matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

fn is_transient_error(e: &reqwest::Error) -> bool {
    (e.is_timeout() || e.is_connect() || e.is_request() || e.is_body())
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
/// do about it; anything else is "cannot talk to the host".
fn transport_error(what: &str, host: &str, source: reqwest::Error) -> RegistryError {
    match certificate_problem(&source) {
        Some(reason) => {
            tracing::debug!(%host, error = ?source, "TLS certificate rejected");
            RegistryError::Certificate {
                what: what.to_string(),
                host: host.to_string(),
                reason,
            }
        }
        None => RegistryError::Transport {
            what: what.to_string(),
            host: host.to_string(),
            source,
        },
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

/// `Link: </v2/_catalog?last=x&n=100>; rel="next"`.
fn next_link(h: &HeaderMap) -> Option<String> {
    let v = header_str(h, "link")?;
    let start = v.find('<')? + 1;
    let end = v[start..].find('>')? + start;
    v[end..]
        .contains("rel=\"next\"")
        .then(|| v[start..end].to_string())
}

fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

/// `: CODE: message` from a registry error body, or the start of the body.
fn error_detail(resp: Response) -> String {
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

fn read_limited(resp: Response, limit: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    resp.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|source| RegistryError::Io {
            what: what.to_string(),
            source,
        })?;
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

    /// A loopback "registry" that answers every request for a blob with its
    /// full `Content-Length`, sends only `cuts[i]` bytes of the body on the
    /// i-th connection and closes, then the whole body; no Range support.
    fn cutting_server(body: Vec<u8>, cuts: Vec<usize>) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                let n = cuts.get(served).copied().unwrap_or(body.len());
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[..n]);
                served += 1;
                if n == body.len() {
                    return served;
                }
            }
            served
        });
        (addr, handle)
    }

    /// Regression: when resuming from a server without Range support, a
    /// break while skipping the bytes already read ended the download
    /// instead of counting as one more retry.
    #[test]
    fn blob_reader_retries_a_break_during_the_resume_skip() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        // First cut at half; the second before the point the first reached.
        let (addr, server) = cutting_server(body.clone(), vec![50_000, 20_000]);
        let client = Arc::new(
            RegistryClient::new(ClientOptions {
                backoff: Duration::from_millis(1),
                ..ClientOptions::default()
            })
            .unwrap(),
        );
        let r = RegistryRef::parse(&format!("{addr}/repo:latest")).unwrap();
        let digest = Digest::sha256_of(&body);
        let mut got = Vec::new();
        client
            .open_blob(&r, &digest, body.len() as u64)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, body);
        assert_eq!(server.join().unwrap(), 3);
    }

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
    fn link_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            "</v2/_catalog?last=b&n=2>; rel=\"next\"".parse().unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
    }

    #[test]
    fn scopes() {
        assert_eq!(
            Scope::push_mount("a", "b").params(),
            vec!["repository:a:pull,push", "repository:b:pull"]
        );
    }
}
