//! The client: the HTTP clients (verifying TLS, and not, for
//! `--insecure-registry` hosts), what slim knows of each host (its base
//! URL, its authentication), and [`RegistryClient::execute`], which every
//! registry request goes through.
//!
//! `execute` adds the host's credentials or token once its challenge is
//! known, and only on its own origin ([`super::origin`]); refreshes them
//! once after a 401; and retries transient failures (connection errors,
//! 429, 5xx) within the bounds of [`super::limits`]. Bodies are read under
//! the low-speed guard ([`Reply`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};

use super::auth::{HostAuth, RegistryHost, Scope};
use super::error::{RegistryError, is_transient_error, is_transient_status, transport_error};
use super::limits::{GiveUp, Retries};
use super::options::ClientOptions;
use super::origin::{self, Credentials, Origin, SendError};
use super::reply::{Reply, authority, error_detail, retry_after};
use crate::reference::is_loopback_host;

/// What slim knows about one registry host.
#[derive(Default)]
pub(super) struct Host {
    /// `http://host` or `https://host`, decided at first contact.
    base: Mutex<Option<String>>,
    pub(super) auth: HostAuth,
}

/// A client for any number of registries; cheap to share between threads.
pub struct RegistryClient {
    verified: Client,
    unverified: Client,
    pub(super) opts: ClientOptions,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

const USER_AGENT: &str = concat!("slim/", env!("CARGO_PKG_VERSION"));

impl RegistryClient {
    pub fn new(opts: ClientOptions) -> anyhow::Result<RegistryClient> {
        let mut certs = Vec::new();
        let mut extra: Vec<PathBuf> = opts.ca_certs.clone();
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

    pub(super) fn host(&self, host: &str) -> Arc<Host> {
        self.hosts
            .lock()
            .expect("host table lock")
            .entry(host.to_string())
            .or_default()
            .clone()
    }

    /// Whether `host` was named with `--insecure-registry`.
    pub(super) fn is_insecure(&self, host: &str) -> bool {
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
        self.host(host).auth.tokens_issued()
    }

    /// `scheme://host`: loopback hosts use HTTP; insecure hosts try HTTPS
    /// without verification, then HTTP (as Docker does); all others HTTPS.
    pub(super) fn base(&self, host: &str) -> Result<String, RegistryError> {
        let state = self.host(host);
        if let Some(b) = &*state.base.lock().expect("host lock") {
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
        *state.base.lock().expect("host lock") = Some(base.clone());
        Ok(base)
    }

    /// Sends the request `build` makes (against the host's base URL), with
    /// the host's credentials (on its own origin only), retrying transient
    /// failures within `attempts` and the retry bounds. Endpoints describe
    /// their requests with [`super::request::Call`], which comes here.
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
        let state = self.host(host);
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
            let to = RegistryHost {
                host,
                origin: &registry,
                http,
                opts: &self.opts,
            };
            let sent = state.auth.header(&to, scope, what)?;
            let credentials = sent
                .as_deref()
                .and_then(|v| Credentials::new(registry.clone(), v));
            let reply = |resp, url, retries: &Retries, own| {
                Reply::new(resp, url, &self.opts, retries.attempts(), own)
            };
            match origin::send(http, req, credentials.as_ref()) {
                Ok((resp, url)) => {
                    let status = resp.status();
                    // Only the registry's own answers speak for it: a 401 or
                    // 403 from wherever it redirected slim is just a status.
                    let own = Origin::of(&url).as_ref() == Some(&registry);
                    if status == StatusCode::UNAUTHORIZED && own {
                        state
                            .auth
                            .challenged(scope, sent.as_deref(), resp.headers());
                        if !reauthenticated {
                            reauthenticated = true;
                            continue;
                        }
                        let detail = error_detail(reply(resp, url, &retries, own));
                        return Err(state.auth.unauthorized(host, what, detail));
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
                            detail: error_detail(reply(resp, url, &retries, own)),
                            action: scope.action(),
                        });
                    }
                    return Ok(reply(resp, url, &retries, own));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::{Challenge, Token};
    use reqwest::header;

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
                    let mut s = state.auth.state.lock().unwrap();
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
}
