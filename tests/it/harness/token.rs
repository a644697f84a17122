//! A Docker token issuer (the "auth server" of the registry token protocol)
//! for the `auth: token` registry flavour.
//!
//! Protocol (<https://distribution.github.io/distribution/spec/auth/token/>):
//! the registry answers 401 with
//! `WWW-Authenticate: Bearer realm="…/token",service="…",scope="…"`; the
//! client asks `GET realm?service=S&scope=repository:NAME:pull,push` (scope
//! may repeat, and one value may hold several space-separated scopes) with
//! Basic credentials, or `POST realm` with an OAuth2 password-grant form;
//! the issuer answers `{"token", "access_token", "expires_in", "issued_at"}`.
//!
//! Only `slim`/`s3cret` is accepted; anonymous and wrong credentials get 401.
//! Every requested action is granted.
//!
//! The token is a JWT signed RS256 by a throwaway RSA key. Distribution 2.8
//! (`registry/auth/token/token.go`) checks: `iss` is the configured issuer,
//! `aud` (a plain string there) is the configured service, `exp`/`nbf` with
//! 60 s leeway, a non-empty signature, and a signing key found through the
//! header's `x5c` chain verified against `rootcertbundle`. A self-signed
//! certificate in the bundle that is also the `x5c` leaf verifies (Go's
//! `x509.Verify` accepts a leaf that is itself a root). The key and certificate
//! are made with the `openssl` CLI, and tokens are signed by piping the
//! signing input through `openssl dgst -sha256 -sign` (PKCS#1 v1.5, i.e.
//! RS256), so no crypto crate is needed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::http::{Request, Response, Server, parse_form};
use super::{PASSWORD, USER};

/// The `service` the registry is configured with and the issuer puts in `aud`.
pub const TOKEN_SERVICE: &str = "slim-test-registry";
/// The `issuer` the registry trusts and the issuer puts in `iss`.
pub const TOKEN_ISSUER: &str = "slim-test-issuer";
/// Lifetime of issued tokens, in seconds.
pub const TOKEN_TTL: u64 = 300;

/// One request the issuer saw.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub service: Option<String>,
    /// Every scope asked for, one entry per scope.
    pub scopes: Vec<String>,
    /// The account named by the credentials, if any were sent.
    pub account: Option<String>,
    /// Whether a token was issued.
    pub granted: bool,
}

struct State {
    key_path: PathBuf,
    /// Base64 (standard) DER of the signing certificate, for `x5c`.
    cert_b64: String,
    issued: AtomicUsize,
    requests: Mutex<Vec<TokenRequest>>,
}

/// A running token issuer on its own loopback port.
pub struct TokenIssuer {
    server: Server,
    cert_path: PathBuf,
    state: Arc<State>,
}

impl TokenIssuer {
    /// Make a key and self-signed certificate in `dir` (`token-key.pem`,
    /// `token-cert.pem`) and start serving `GET|POST /token`.
    pub fn start(dir: &Path) -> TokenIssuer {
        let key_path = dir.join("token-key.pem");
        let cert_path = dir.join("token-cert.pem");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
            ])
            .args(["-subj", "/CN=slim-test-token-issuer"])
            .arg("-keyout")
            .arg(&key_path)
            .arg("-out")
            .arg(&cert_path)
            .output()
            .expect("running openssl req (is openssl installed?)");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = std::fs::read_to_string(&cert_path).expect("reading the token certificate");
        // A PEM body is the base64 of the DER, which is what x5c holds.
        let cert_b64: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        STANDARD
            .decode(&cert_b64)
            .expect("token certificate PEM is base64");

        let state = Arc::new(State {
            key_path,
            cert_b64,
            issued: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let server = Server::start("token-issuer", move |req| handle(&st, req));
        TokenIssuer {
            server,
            cert_path,
            state,
        }
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// `127.0.0.1:PORT` of the issuer.
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    /// The certificate for the registry's `auth.token.rootcertbundle`.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// How many tokens were handed out so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Mint a token for `scopes` directly (not counted as issued), e.g. to
    /// talk to the registry with a raw HTTP client.
    pub fn mint(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        sign_token(&self.state, USER, &scopes)
    }
}

fn handle(state: &State, req: &Request) -> Response {
    if req.path() != "/token" {
        return Response::new(404).body("not found\n");
    }
    let mut params = req.query();
    if req.method == "POST" {
        params.extend(parse_form(&String::from_utf8_lossy(&req.body)));
    } else if req.method != "GET" {
        return Response::new(405).body("method not allowed\n");
    }
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();

    // Credentials: Basic header, or a password grant in a POST form.
    let mut creds = req.header("authorization").and_then(|h| {
        let b64 = h
            .strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))?;
        let raw = STANDARD.decode(b64.trim()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (u, p) = raw.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    });
    if creds.is_none() && req.method == "POST" {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("grant_type").as_deref() == Some("password")
            && let (Some(u), Some(p)) = (get("username"), get("password"))
        {
            creds = Some((u, p));
        }
    }
    let account = creds.as_ref().map(|(u, _)| u.clone());
    let granted = creds
        .as_ref()
        .is_some_and(|(u, p)| u == USER && p == PASSWORD);
    state
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(TokenRequest {
            method: req.method.clone(),
            service,
            scopes: scopes.clone(),
            account,
            granted,
        });

    if !granted {
        return Response::new(401)
            .header("WWW-Authenticate", "Basic realm=\"slim-test-token-issuer\"")
            .json(&json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": null}]}));
    }
    let token = sign_token(state, USER, &scopes);
    state.issued.fetch_add(1, Ordering::SeqCst);
    Response::new(200).json(&json!({
        "token": token,
        "access_token": token,
        "expires_in": TOKEN_TTL,
        "issued_at": rfc3339(now_secs()),
    }))
}

/// `type:name:action,action` -> a JWT `access` entry. The name may itself
/// contain `:` (a host with a port), so split at the first and last colon.
fn access_entry(scope: &str) -> Option<serde_json::Value> {
    let (typ, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some(json!({"type": typ, "name": name, "actions": actions}))
}

fn sign_token(state: &State, subject: &str, scopes: &[String]) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let now = now_secs();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [state.cert_b64]});
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": subject,
        "aud": TOKEN_SERVICE,
        "exp": now + TOKEN_TTL,
        // A little in the past, so a token is usable the moment it is made.
        "nbf": now - 5,
        "iat": now,
        "jti": format!("slim-test-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)),
        "access": scopes.iter().filter_map(|s| access_entry(s)).collect::<Vec<_>>(),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&state.key_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running openssl dgst");
    child
        .stdin
        .take()
        .expect("openssl stdin")
        .write_all(signing_input.as_bytes())
        .expect("writing to openssl dgst");
    let out = child.wait_with_output().expect("waiting for openssl dgst");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "openssl dgst -sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&out.stdout))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
