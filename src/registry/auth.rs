//! Registry authentication: credentials from the user's files, the
//! `WWW-Authenticate` challenge, and Bearer tokens (Docker token protocol,
//! distribution spec "Token Authentication").
//!
//! Credentials come, in order, from `REGISTRY_AUTH_FILE` (containers
//! auth.json), then `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`
//! (`auths`, `credHelpers`, `credsStore`, via the docker_credential crate).
//! Secrets are never printed: [`Credential`]'s Debug hides them.

use std::collections::HashMap;
use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

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

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading credentials for {registry} from {path}: {reason}")]
    Read {
        registry: String,
        path: PathBuf,
        reason: String,
    },
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
}
