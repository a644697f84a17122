//! Settings for talking to registries: TLS, retries, the low-speed limit
//! and the caps on a listing. Plain data, read by the client
//! ([`super::client`]) and the limits ([`super::limits`]).

use std::path::PathBuf;
use std::time::Duration;

/// Settings for talking to registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Hosts reached without TLS verification (and over HTTP if they do not
    /// speak TLS).
    pub insecure_hosts: Vec<String>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_certs: Vec<PathBuf>,
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
    pub(super) fn upload_deadline(&self, size: u64) -> Duration {
        self.speed_time + Duration::from_secs_f64(size as f64 / self.speed_limit.max(1) as f64)
    }

    /// How long a registry may take to answer the commit of a `size`-byte
    /// blob: a window, plus the time to copy it at 100 times the minimum
    /// speed (registries on object stores copy a blob into place then).
    pub(super) fn commit_deadline(&self, size: u64) -> Duration {
        self.speed_time
            + Duration::from_secs_f64(size as f64 / (100.0 * self.speed_limit.max(1) as f64))
    }
}
