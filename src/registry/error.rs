//! What can go wrong talking to a registry, and which failures are worth
//! another attempt.
//!
//! Each message says what slim was doing (`what`: the manifest or blob and
//! its repository), what the registry or the network did, and what the
//! user can do about it. The underlying cause, when there is one, is the
//! error's `source` and is never repeated in the message, so a printed
//! chain (`error: …` then `Caused by: …`) says each thing once.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;

use super::limits::{Stall, find_stall};
use super::options::ClientOptions;

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
    Credentials(#[from] CredentialError),
    /// Reading an answer failed (not a stall: those are [`Self::Stalled`]).
    #[error("{what}: reading the answer of {host} failed (try again later)")]
    Io {
        what: String,
        host: String,
        #[source]
        source: io::Error,
    },
}

/// The user's credential files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading credentials for {registry} from {path}: {reason}")]
    Read {
        registry: String,
        path: PathBuf,
        reason: String,
    },
}

/// An answer worth another attempt: too many requests, a timeout, or a
/// server error that may pass.
pub(super) fn is_transient_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS
        || s == StatusCode::REQUEST_TIMEOUT
        || matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

/// A failure worth another attempt: the connection broke or was refused.
/// Not a timeout or a stall: those cost a whole window each, so a request
/// that got nowhere in one is not tried again (a blob download that made
/// progress is resumed by [`super::BlobReader`]).
pub(super) fn is_transient_error(e: &reqwest::Error) -> bool {
    (e.is_connect() || e.is_request() || e.is_body())
        && !e.is_timeout()
        && find_stall(e, Duration::ZERO).is_none()
        && certificate_problem(e).is_none()
}

/// Whether a whole exchange (an upload) that failed with `e` is worth
/// another attempt.
pub(super) fn is_retryable(e: &RegistryError) -> bool {
    match e {
        RegistryError::Transport { source, .. } => is_transient_error(source),
        RegistryError::Status { status, .. } => {
            is_transient_status(StatusCode::from_u16(*status).unwrap_or(StatusCode::OK))
        }
        _ => false,
    }
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
pub(super) fn transport_error(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Every variant with a cause leaves the cause to its `source`: the
    /// message does not quote it, so a printed chain needs no
    /// de-duplication.
    #[test]
    fn no_registry_error_repeats_its_cause() {
        let (what, host) = (
            "pulling blob sha256:aa from r/x".to_string(),
            "r".to_string(),
        );
        let reqwest = reqwest::blocking::Client::new()
            .get("not a url")
            .build()
            .unwrap_err();
        let errors = [
            RegistryError::Io {
                what: what.clone(),
                host: host.clone(),
                source: io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer"),
            },
            RegistryError::Transport {
                what: what.clone(),
                host: host.clone(),
                source: reqwest,
            },
            RegistryError::Stalled {
                what: what.clone(),
                host: host.clone(),
                stall: Stall::silent(Duration::from_secs(30)),
            },
            RegistryError::GaveUp {
                what: what.clone(),
                host: host.clone(),
                attempts: 5,
                offset: 1,
                size: 2,
                last: "r closed the connection after 1 of 2 bytes".into(),
            },
        ];
        for e in errors {
            let message = e.to_string();
            let cause = e.source().expect("a cause").to_string();
            assert!(!message.contains(&cause), "{message:?} repeats {cause:?}");
            assert!(
                message.contains(&what) && message.contains(&host),
                "{message}"
            );
        }
    }
}
