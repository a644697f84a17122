//! Registry authentication: credentials from the user's files, the
//! `WWW-Authenticate` challenge, and Bearer tokens (Docker token protocol,
//! distribution spec "Token Authentication").
//!
//! Credentials come, in order, from `REGISTRY_AUTH_FILE` (containers
//! auth.json), then `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`
//! (`auths`, `credHelpers`, `credsStore`, via the docker_credential crate).
//! Secrets are never printed: [`Credential`]'s Debug hides them.
//!
//! A host's challenge is learnt from its first 401 ([`HostAuth::challenged`]);
//! from then on every request carries Basic credentials or a Bearer token
//! for its [`Scope`] ([`HostAuth::header`]), fetched from the realm once per
//! scope however many threads ask at once. Credentials go to the realm's
//! origin only, and not at all to a plain-HTTP realm of an HTTPS registry
//! ([`super::origin`]).

use std::collections::HashMap;
use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::Client;
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};

pub use super::error::CredentialError;
use super::error::{RegistryError, is_transient_error, is_transient_status, transport_error};
use super::limits::{GiveUp, Retries};
use super::options::ClientOptions;
use super::origin::{self, Credentials, Origin, SendError};
use super::reply::{Reply, authority, error_detail, read_limited, retry_after};

/// What the user configured for a registry.
#[derive(Clone)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

impl Credential {
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// Credentials found for a registry, and the file they came from.
#[derive(Clone, Debug)]
pub struct FoundCredential {
    pub credential: Credential,
    pub source: PathBuf,
}

/// The key config.json uses for a registry (Docker Hub's is historical).
fn config_key(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

/// Looks up credentials for `registry` (as named in the reference).
pub fn lookup(registry: &str) -> Result<Option<FoundCredential>, CredentialError> {
    let key = config_key(registry);
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    let docker_dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
    if let Some(d) = docker_dir {
        files.push(d.join("config.json"));
    }
    for path in files {
        if !path.is_file() {
            continue;
        }
        let file = std::fs::File::open(&path).map_err(|e| CredentialError::Read {
            registry: registry.to_string(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        use docker_credential::CredentialRetrievalError as E;
        match docker_credential::get_credential_from_reader(BufReader::new(file), key) {
            Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
                return Ok(Some(FoundCredential {
                    credential: Credential::Basic { username, password },
                    source: path,
                }));
            }
            Ok(docker_credential::DockerCredential::IdentityToken(t)) => {
                return Ok(Some(FoundCredential {
                    credential: Credential::IdentityToken(t),
                    source: path,
                }));
            }
            Err(E::NoCredentialConfigured) => continue,
            // A helper that knows nothing of this registry answers non-zero:
            // that is "no credentials", as Docker treats it.
            Err(E::HelperFailure { stdout, .. }) if stdout.contains("credentials not found") => {
                continue;
            }
            Err(e) => {
                return Err(CredentialError::Read {
                    registry: registry.to_string(),
                    path,
                    reason: e.to_string().lines().next().unwrap_or_default().to_string(),
                });
            }
        }
    }
    Ok(None)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let params = parse_params(rest);
                let realm = params.get("realm")?.clone();
                Some(Challenge::Bearer {
                    realm,
                    service: params.get("service").cloned(),
                })
            }
            _ => None,
        }
    }
}

/// `key="value", key2=value2` (RFC 7235 auth-params; values may be quoted
/// and contain commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// A Bearer token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub expires: Instant,
}

impl Token {
    pub fn is_fresh(&self) -> bool {
        Instant::now() + Duration::from_secs(10) < self.expires
    }
}

/// The token endpoint's answer (Docker token spec: `token` or `access_token`).
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<Token> {
        let value = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        // The spec's default lifetime is 60 seconds.
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60).max(1));
        Some(Token {
            value,
            expires: Instant::now() + lifetime,
        })
    }
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

    /// What a denied request wanted to do, in words.
    pub(super) fn action(&self) -> &'static str {
        if self.0.iter().any(|(_, a)| a.contains("push")) {
            "push to"
        } else {
            "pull from"
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

/// The registry a request goes to, as authentication needs to know it.
pub(super) struct RegistryHost<'a> {
    /// `host[:port]` of the API, as messages name it.
    pub host: &'a str,
    /// The origin of the base URL slim settled on for it.
    pub origin: &'a Origin,
    /// The HTTP client for it (verifying TLS, or not for an insecure host).
    pub http: &'a Client,
    pub opts: &'a ClientOptions,
}

/// What slim knows about one host's authentication; shared by the threads
/// that talk to it.
#[derive(Default)]
pub(super) struct HostAuth {
    pub(super) state: Mutex<AuthState>,
    /// Held while a token is fetched, so that threads needing the same
    /// scope at once wait for one token instead of each fetching their own.
    fetching: Mutex<()>,
}

#[derive(Default)]
pub(super) struct AuthState {
    pub(super) challenge: Option<Challenge>,
    /// `None` = not looked up yet.
    credential: Option<Option<FoundCredential>>,
    pub(super) tokens: HashMap<Scope, Token>,
    tokens_issued: u64,
    /// The plain-HTTP realm slim did not send this HTTPS host's credentials
    /// to, if it named one.
    withheld_from: Option<String>,
}

impl HostAuth {
    fn state(&self) -> MutexGuard<'_, AuthState> {
        self.state.lock().expect("host lock")
    }

    /// How many Bearer tokens slim fetched for the host.
    pub(super) fn tokens_issued(&self) -> u64 {
        self.state().tokens_issued
    }

    /// Learns from the registry's own 401 (its `headers`) to a request
    /// that carried `sent`: the challenge, and that the token it carried,
    /// if any, is no good.
    pub(super) fn challenged(&self, scope: &Scope, sent: Option<&str>, headers: &HeaderMap) {
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let mut s = self.state();
        // Drop the token only if this request carried it. A 401 to a
        // request sent before the challenge was known says nothing about a
        // token another thread fetched meanwhile; dropping that one made
        // every concurrent first request fetch its own token.
        let rejected = s
            .tokens
            .get(scope)
            .is_some_and(|t| sent == Some(format!("Bearer {}", t.value).as_str()));
        if rejected {
            s.tokens.remove(scope);
        }
        if challenge.is_some() {
            s.challenge = challenge;
        }
    }

    /// The user's credentials for `host`, looked up once.
    fn credential(&self, host: &str) -> Result<Option<FoundCredential>, RegistryError> {
        let mut s = self.state();
        if s.credential.is_none() {
            s.credential = Some(lookup(&registry_name_for(host))?);
        }
        Ok(s.credential.clone().flatten())
    }

    /// The error for a request `host` still refused after a fresh
    /// challenge: which credentials it refused and what to do, or that
    /// slim withheld them.
    pub(super) fn unauthorized(&self, host: &str, what: &str, detail: String) -> RegistryError {
        if let Some(realm) = self.state().withheld_from.clone() {
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
    pub(super) fn header(
        &self,
        to: &RegistryHost<'_>,
        scope: &Scope,
        what: &str,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = self.state().challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .credential(to.host)?
                .and_then(|c| c.credential.basic_header())),
            Some(Challenge::Bearer { realm, service }) => {
                let cached = || {
                    self.state()
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
                let _fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(v) = cached() {
                    return Ok(Some(v));
                }
                let token = self.fetch_token(to, &realm, service.as_deref(), scope, what)?;
                let value = format!("Bearer {}", token.value);
                let mut s = self.state();
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
        to: &RegistryHost<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        what: &str,
    ) -> Result<Token, RegistryError> {
        let host = to.host;
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
        let mut credential = self.credential(host)?.map(|c| c.credential);
        if credential.is_some() && !origin::realm_may_receive_credentials(to.origin, &url) {
            let mut s = self.state();
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
        let http = to.http;
        let mut retries = Retries::new(to.opts, to.opts.attempts);
        let reply =
            |resp, at, retries: &Retries| Reply::new(resp, at, to.opts, retries.attempts(), true);
        let transport = |e| {
            transport_error(
                &format!("{what} (token request to {realm})"),
                host,
                e,
                to.opts,
            )
        };
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
                    let raw = read_limited(reply(resp, at, &retries), 1 << 20, what)?;
                    let body: TokenResponse = serde_json::from_slice(&raw).map_err(|e| {
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
                            return Err(token_status(host, what, reply(resp, at, &retries)));
                        }
                    }
                }
                Ok((resp, _))
                    if matches!(
                        resp.status(),
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    ) =>
                {
                    let detail = error_detail(reply(resp, url.clone(), &retries));
                    return Err(self.unauthorized(host, what, detail));
                }
                Ok((resp, at)) => return Err(token_status(host, what, reply(resp, at, &retries))),
                Err(SendError::Redirect(why)) => {
                    return Err(protocol(format!(
                        "the token service of {host} answered with {why}"
                    )));
                }
                Err(SendError::Http(e)) if is_transient_error(&e) => {
                    match retries.next_wait(None) {
                        Ok(wait) => retries.sleep(wait),
                        Err(_) => return Err(transport(e)),
                    }
                }
                Err(SendError::Http(e)) => return Err(transport(e)),
            }
        }
    }
}

/// A token service's failing answer as an error.
fn token_status(host: &str, what: &str, reply: Reply) -> RegistryError {
    RegistryError::Status {
        what: format!("{what} (token request)"),
        host: host.to_string(),
        status: reply.status().as_u16(),
        detail: error_detail(reply),
    }
}

/// `application/x-www-form-urlencoded` value encoding.
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

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        let p = parse_params(r#"realm="a,b", service=svc, scope="x""#);
        assert_eq!(p["realm"], "a,b");
        assert_eq!(p["service"], "svc");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credential::IdentityToken("tok".into())).contains("tok"));
    }

    #[test]
    fn scopes() {
        assert_eq!(
            Scope::push_mount("a", "b").params(),
            vec!["repository:a:pull,push", "repository:b:pull"]
        );
    }
}
