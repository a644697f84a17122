//! Blobs on a registry: whether a repository has one (HEAD), and
//! downloads: one GET, resumed with `Range` when the connection breaks, or
//! when it stalls after real progress
//! ([`super::ClientOptions::resume_after`]); a stall before that fails at
//! once, naming the blob and the host. The caller verifies the digest.

use std::io::{self, Read};
use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header;

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::limits::Retries;
use super::reply::Reply;
use super::request::Call;
use crate::digest::Digest;
use crate::reference::RegistryRef;

impl RegistryClient {
    /// Opens a blob for streaming. The reader resumes with a Range request
    /// when the connection breaks, or stalls after real progress; the
    /// caller verifies the digest.
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
            start: 0,
            retries: Retries::new(&self.opts, self.opts.attempts),
        };
        reader.open()?;
        Ok(reader)
    }

    /// Whether the repository has the blob (HEAD).
    pub fn blob_exists(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        scope: &Scope,
    ) -> Result<bool, RegistryError> {
        let what = format!("checking blob {digest} in {}/{}", r.registry, r.repository);
        let resp = Call::new(r, scope.clone(), what)
            .head(blob_path(r, digest))
            .or(StatusCode::NOT_FOUND)
            .send(self)?;
        Ok(resp.status().is_success())
    }

    /// A GET of the blob from `offset` on (a 206 or, from a registry
    /// without Range support, a 200 with the whole blob).
    fn blob_request(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        offset: u64,
    ) -> Result<Reply, RegistryError> {
        let mut call = Call::new(r, Scope::pull(&r.repository), blob_what(r, digest))
            .get(blob_path(r, digest));
        if offset > 0 {
            call = call.header(header::RANGE, format!("bytes={offset}-"));
        }
        call.send(self)
    }
}

/// `/v2/<name>/blobs/<digest>`.
fn blob_path(r: &RegistryRef, digest: &Digest) -> String {
    format!("/v2/{}/blobs/{digest}", r.repository)
}

/// What a blob download is, for messages.
fn blob_what(r: &RegistryRef, digest: &Digest) -> String {
    format!("pulling blob {digest} from {}/{}", r.registry, r.repository)
}

/// A blob download that resumes with `Range` after a broken connection, or
/// after a stall once the connection had made real progress
/// ([`super::ClientOptions::resume_after`]); a stall before that fails at once.
pub struct BlobReader {
    client: Arc<RegistryClient>,
    r: RegistryRef,
    digest: Digest,
    size: u64,
    offset: u64,
    current: Option<Reply>,
    /// Where the current connection started.
    start: u64,
    retries: Retries,
}

impl BlobReader {
    fn open(&mut self) -> Result<(), RegistryError> {
        let mut resp = self
            .client
            .blob_request(&self.r, &self.digest, self.offset)?;
        if self.offset > 0 && resp.status() == StatusCode::OK {
            // No range support: skip what we already have.
            let skipped = io::copy(&mut (&mut resp).take(self.offset), &mut io::sink());
            if let Err(e) = skipped {
                return Err(resp.body_error(&format!("resuming blob {}", self.digest), e));
            }
        }
        self.current = Some(resp);
        self.start = self.offset;
        Ok(())
    }

    /// Sleeps before resuming after `cause`, or gives up with it.
    fn retry(&mut self, cause: RegistryError) -> io::Result<()> {
        match self.retries.next_wait(None) {
            Ok(wait) => {
                tracing::warn!(digest = %self.digest, offset = self.offset, error = %cause, ?wait, "blob download broke; resuming");
                self.retries.sleep(wait);
                Ok(())
            }
            Err(give_up) => {
                tracing::debug!(digest = %self.digest, %give_up, "giving up on a blob download");
                let (what, host) = (blob_what(&self.r, &self.digest), self.r.api_host());
                // The last break's own cause, without the layers that would
                // repeat what this error says.
                let last: Box<dyn std::error::Error + Send + Sync> = match cause {
                    RegistryError::Io { source, .. } => Box::new(source),
                    RegistryError::Stalled { stall, .. } => Box::new(stall),
                    RegistryError::Protocol { reason, .. } => reason.into(),
                    other => Box::new(other),
                };
                Err(io::Error::other(RegistryError::GaveUp {
                    what,
                    host: host.to_string(),
                    attempts: self.retries.attempts(),
                    offset: self.offset,
                    size: self.size,
                    last,
                }))
            }
        }
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
                    // is one more broken transfer to retry like the first.
                    Err(e @ (RegistryError::Io { .. } | RegistryError::Stalled { .. })) => {
                        self.retry(e)?;
                        continue;
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            let resp = self.current.as_mut().expect("opened");
            match resp.read(buf) {
                Ok(0) if self.offset < self.size => {
                    // Closed early: resume from where we are.
                    let cause = RegistryError::Protocol {
                        what: blob_what(&self.r, &self.digest),
                        reason: format!(
                            "{} closed the connection after {} of {} bytes",
                            resp.host, self.offset, self.size
                        ),
                    };
                    self.current = None;
                    self.retry(cause)?;
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) => {
                    let cause = resp.body_error(&blob_what(&self.r, &self.digest), e);
                    self.current = None;
                    let progress = self.offset - self.start;
                    if matches!(cause, RegistryError::Stalled { .. })
                        && progress < self.client.opts.resume_after
                    {
                        return Err(io::Error::other(cause));
                    }
                    self.retry(cause)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::options::ClientOptions;
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// What a connection of [`scripted_server`] does after its bytes.
    #[derive(Clone, Copy)]
    enum Then {
        /// Close the connection.
        Close,
        /// Say nothing more for a long while.
        Silent,
        /// Send the rest one byte per interval.
        Trickle(Duration),
    }

    /// A loopback "registry" serving one blob with its full
    /// `Content-Length`: connection `i` sends `script[i].0` bytes, then does
    /// `script[i].1`; later connections send everything. With `ranges`, a
    /// `Range: bytes=N-` request gets a 206 from N. Returns the address and
    /// a count of connections (and of Range requests) so far.
    fn scripted_server(
        body: Vec<u8>,
        script: Vec<(usize, Then)>,
        ranges: bool,
    ) -> (String, Arc<(AtomicUsize, AtomicUsize)>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let seen = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut line, mut from) = (String::new(), 0);
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        from = v.trim().trim_end_matches('-').parse().unwrap();
                        seen.1.fetch_add(1, Ordering::SeqCst);
                    }
                    line.clear();
                }
                let i = seen.0.fetch_add(1, Ordering::SeqCst);
                let from = if ranges { from } else { 0 };
                let rest = body[from..].to_vec();
                let (n, then) = script.get(i).copied().unwrap_or((rest.len(), Then::Close));
                let status = if from > 0 {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                std::thread::spawn(move || {
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                        rest.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let n = n.min(rest.len());
                    let _ = stream.write_all(&rest[..n]);
                    match then {
                        Then::Close => {}
                        Then::Silent => std::thread::sleep(Duration::from_secs(20)),
                        Then::Trickle(every) => {
                            for b in &rest[n..] {
                                std::thread::sleep(every);
                                if stream.write_all(&[*b]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, counts)
    }

    fn blob() -> Vec<u8> {
        (0..100_000u32).map(|i| (i % 251) as u8).collect()
    }

    /// A client with the low-speed limit shrunk: 4 KiB/s over 400 ms.
    fn quick_client(resume_after: u64) -> Arc<RegistryClient> {
        Arc::new(
            RegistryClient::new(ClientOptions {
                backoff: Duration::from_millis(1),
                speed_limit: 4096,
                speed_time: Duration::from_millis(400),
                resume_after,
                ..ClientOptions::default()
            })
            .unwrap(),
        )
    }

    fn pull(client: &Arc<RegistryClient>, addr: &str, body: &[u8]) -> io::Result<Vec<u8>> {
        let r = RegistryRef::parse(&format!("{addr}/repo:latest")).unwrap();
        let digest = Digest::sha256_of(body);
        let mut got = Vec::new();
        client
            .open_blob(&r, &digest, body.len() as u64)
            .map_err(io::Error::other)?
            .read_to_end(&mut got)?;
        Ok(got)
    }

    /// Regression: when resuming from a server without Range support, a
    /// break while skipping the bytes already read ended the download
    /// instead of counting as one more retry.
    #[test]
    fn blob_reader_retries_a_break_during_the_resume_skip() {
        let body = blob();
        // First cut at half; the second before the point the first reached.
        let script = vec![(50_000, Then::Close), (20_000, Then::Close)];
        let (addr, counts) = scripted_server(body.clone(), script, false);
        let client = quick_client(1 << 20);
        assert_eq!(pull(&client, &addr, &body).unwrap(), body);
        assert_eq!(counts.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_blob_that_goes_silent_before_real_progress_fails_at_once_naming_it() {
        let body = blob();
        let (addr, counts) = scripted_server(body.clone(), vec![(1000, Then::Silent)], true);
        let started = Instant::now();
        let err = pull(&quick_client(10_000), &addr, &body).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let msg = err.to_string();
        let digest = Digest::sha256_of(&body).to_string();
        for needle in [digest.as_str(), &addr, "stalled"] {
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
        assert_eq!(counts.0.load(Ordering::SeqCst), 1, "it was retried");
    }

    #[test]
    fn a_blob_that_stalls_after_real_progress_is_resumed() {
        let body = blob();
        let (addr, counts) = scripted_server(body.clone(), vec![(50_000, Then::Silent)], true);
        assert_eq!(pull(&quick_client(10_000), &addr, &body).unwrap(), body);
        assert_eq!(counts.0.load(Ordering::SeqCst), 2);
        assert_eq!(counts.1.load(Ordering::SeqCst), 1, "no Range request");
    }

    #[test]
    fn a_trickling_blob_fails_within_the_window() {
        let body = blob();
        let every = Duration::from_millis(20);
        let (addr, _) = scripted_server(body.clone(), vec![(0, Then::Trickle(every))], true);
        let started = Instant::now();
        let err = pull(&quick_client(10_000), &addr, &body).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let stall = match err
            .get_ref()
            .and_then(|e| e.downcast_ref::<RegistryError>())
        {
            Some(RegistryError::Stalled { stall, .. }) => stall.to_string(),
            _ => panic!("not a stall: {err:?}"),
        };
        assert!(stall.ends_with("below the minimum of 4 KiB/s"), "{stall}");
    }
}
