//! Blob uploads: a cross-repository mount first, else a session (POST)
//! and one streaming PUT from the spooled file, replayed on a retry; or a
//! streamed PATCH that follows a blob while slim writes it, committed (PUT
//! with the digest) once the blob is verified.
//!
//! The session URL is the registry's `Location`, resolved against the
//! answer it came with; it may be on another origin, which then gets the
//! data but no credentials ([`super::origin`]).

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header;
use reqwest::{StatusCode, Url};

use super::limits::{BodyWatch, GuardedBody, Retries, Stall};
use super::origin;
use super::{RegistryClient, RegistryError, Reply, Scope, header_str, is_retryable};
use crate::digest::Digest;
use crate::reference::RegistryRef;

impl RegistryClient {
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
                if let Ok(url) = self.location(&resp, host, &what) {
                    let _ = self.execute(host, &scope, &what, 1, &|c, _| c.delete(url.clone()));
                }
                Ok(false)
            }
            _ => self
                .expect_ok(resp, host, &r.repository, &what)
                .map(|_| false),
        }
    }

    /// The `Location` of an answer, resolved against the URL it came from.
    fn location(&self, resp: &Reply, host: &str, what: &str) -> Result<Url, RegistryError> {
        let location =
            header_str(resp.headers(), "location").ok_or_else(|| RegistryError::Protocol {
                what: what.to_string(),
                reason: format!("{host} opened an upload session without a Location"),
            })?;
        origin::resolve(resp.url(), &location).map_err(|why| RegistryError::Protocol {
            what: what.to_string(),
            reason: format!("{host} sent an upload Location at {why}"),
        })
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
        let mut retries = Retries::new(&self.opts, self.opts.attempts);
        loop {
            match self.upload_once(r, digest, file, size, &scope, &what) {
                Ok(()) => return Ok(()),
                Err(e) if is_retryable(&e) => match retries.next_wait(None) {
                    Ok(wait) => {
                        tracing::warn!(error = %e, ?wait, "retrying upload");
                        retries.sleep(wait);
                    }
                    Err(_) => return Err(e),
                },
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
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let watch = Mutex::new(None);
        let resp = self
            .execute(host, scope, what, 1, &|c, _| {
                let body = match std::fs::File::open(file) {
                    Ok(f) => {
                        let guarded = GuardedBody::new(f, &self.opts);
                        *watch.lock().expect("watch lock") = Some(guarded.watch());
                        reqwest::blocking::Body::sized(guarded, size)
                    }
                    Err(_) => reqwest::blocking::Body::from(Vec::new()),
                };
                c.put(url.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, size.to_string())
                    .body(body)
                    .timeout(self.opts.upload_deadline(size))
            })
            .map_err(|e| self.stalled_upload(e, &watch))?;
        if resp.status() != StatusCode::CREATED {
            return self.expect_ok(resp, host, &r.repository, what).map(|_| ());
        }
        Ok(())
    }

    /// A broken upload whose body the transport had stopped asking for
    /// (for a whole window) as the stall it was; see [`BodyWatch`].
    fn stalled_upload(&self, e: RegistryError, watch: &Mutex<Option<BodyWatch>>) -> RegistryError {
        let waited = watch
            .lock()
            .expect("watch lock")
            .as_ref()
            .map_or(Duration::ZERO, BodyWatch::waited);
        match e {
            RegistryError::Transport { what, host, .. } if waited >= self.opts.speed_time => {
                RegistryError::Stalled {
                    what,
                    host,
                    stall: Stall::silent(waited),
                }
            }
            other => other,
        }
    }

    /// POSTs to open an upload session; returns its absolute URL.
    fn open_upload(
        &self,
        r: &RegistryRef,
        scope: &Scope,
        what: &str,
    ) -> Result<Url, RegistryError> {
        let host = r.api_host();
        let path = format!("/v2/{}/blobs/uploads/", r.repository);
        let resp = self.execute(host, scope, what, self.opts.attempts, &|c, base| {
            c.post(format!("{base}{path}"))
                .header(header::CONTENT_LENGTH, "0")
        })?;
        if resp.status() != StatusCode::ACCEPTED {
            self.expect_ok(resp, host, &r.repository, what)?;
            return Err(RegistryError::Protocol {
                what: what.to_string(),
                reason: format!("{host} did not open an upload session (expected 202 Accepted)"),
            });
        }
        self.location(&resp, host, what)
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
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = (|| -> Result<Url, RegistryError> {
                // One-shot body: a retry cannot replay it (the caller falls
                // back to uploading the finished file).
                let guarded = GuardedBody::new(body, &client.opts);
                let watch = Mutex::new(Some(guarded.watch()));
                let body = Mutex::new(Some(reqwest::blocking::Body::new(guarded)));
                let resp = client
                    .execute(&host, &scope, &what, 1, &|c, _| {
                        let body = body
                            .lock()
                            .expect("body lock")
                            .take()
                            .unwrap_or_else(|| Vec::new().into());
                        // The body follows slim's own writing, so its length and
                        // pace are not known; the speed guard and
                        // StreamingUpload's bounded waits end a stuck transfer.
                        c.patch(thread_url.clone())
                            .header(header::CONTENT_TYPE, "application/octet-stream")
                            .body(body)
                            .timeout(STREAM_DEADLINE)
                    })
                    .map_err(|e| client.stalled_upload(e, &watch))?;
                if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT
                {
                    client.expect_ok(resp, &host, "", &what)?;
                    return Err(RegistryError::Protocol {
                        what,
                        reason: "the registry did not accept the streamed data".into(),
                    });
                }
                match header_str(resp.headers(), "location") {
                    Some(_) => client.location(&resp, &host, &what),
                    None => Ok(thread_url),
                }
            })();
            let _ = done.send(outcome);
        });
        Ok(StreamingUpload {
            client: self.clone(),
            r: r.clone(),
            url,
            result,
        })
    }
}

/// The most a streamed PATCH may take in all. Its body follows slim's own
/// writing of the blob (as long as a download or a compression takes), so
/// the real bounds are the speed guard on it and [`StreamingUpload`]'s
/// bounded waits for its end; this only keeps an abandoned one from living
/// for ever.
const STREAM_DEADLINE: Duration = Duration::from_secs(6 * 3600);

/// A blob upload that reads the blob while it is being written. The PATCH
/// runs on a thread of its own; slim waits for it only as long as an
/// upload of the blob may take ([`super::ClientOptions::upload_deadline`]), and
/// abandons it after that.
pub struct StreamingUpload {
    client: Arc<RegistryClient>,
    r: RegistryRef,
    /// The session, for cancelling it.
    url: Url,
    /// The PATCH's outcome: the session URL to commit to.
    result: std::sync::mpsc::Receiver<Result<Url, RegistryError>>,
}

impl StreamingUpload {
    /// Waits for the body (`size` bytes) to be sent and commits the blob
    /// under `digest`.
    pub fn finish(self, digest: &Digest, size: u64) -> Result<(), RegistryError> {
        let what = format!(
            "pushing blob {digest} to {}/{}",
            self.r.registry, self.r.repository
        );
        let host = self.r.api_host().to_string();
        let wait = self.client.opts.upload_deadline(size);
        let mut url = match self.result.recv_timeout(wait) {
            Ok(outcome) => outcome?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(RegistryError::Stalled {
                    what,
                    host,
                    stall: Stall {
                        bytes: size,
                        window: wait,
                        limit: self.client.opts.speed_limit,
                        silent: false,
                    },
                });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(RegistryError::Protocol {
                    what,
                    reason: "the upload thread ended without an answer".into(),
                });
            }
        };
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let resp = self.client.execute(
            &host,
            &Scope::push(&self.r.repository),
            &what,
            1,
            &|c, _| {
                // Committing can take a while where the registry moves the
                // blob into place (object stores copy it).
                c.put(url.clone())
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

    /// Waits a moment for the request to stop (the caller made its body
    /// fail) and cancels the session.
    pub fn abort(self) {
        let _ = self.result.recv_timeout(self.client.opts.speed_time);
        let host = self.r.api_host().to_string();
        let _ = self.client.execute(
            &host,
            &Scope::push(&self.r.repository),
            "cancelling an upload",
            1,
            &|c, _| c.delete(self.url.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ClientOptions;
    use std::io::{BufRead, BufReader, Write};
    use std::time::Instant;

    /// A loopback "registry" that opens upload sessions and then takes the
    /// PUT's body one byte per 50 ms.
    fn slow_reader() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    let _ = reader.read_line(&mut first);
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        line.clear();
                    }
                    if first.starts_with("POST") {
                        let _ = stream.write_all(
                            b"HTTP/1.1 202 Accepted\r\nLocation: /v2/repo/blobs/uploads/1\r\n\
                              Content-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                    let mut byte = [0u8];
                    while reader.read_exact(&mut byte).is_ok() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
            }
        });
        addr
    }

    /// A registry that stops taking an upload's body does not hold slim:
    /// the connection is given up within a few windows.
    #[test]
    fn an_upload_the_registry_stops_reading_fails_quickly() {
        let client = RegistryClient::new(ClientOptions {
            speed_limit: 64 << 10,
            speed_time: Duration::from_millis(500),
            ..ClientOptions::default()
        })
        .unwrap();
        let addr = slow_reader();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blob");
        // Far more than the loopback socket buffers hold.
        let body = vec![7u8; 64 << 20];
        std::fs::write(&file, &body).unwrap();
        let r = RegistryRef::parse(&format!("{addr}/repo:latest")).unwrap();
        let started = Instant::now();
        let err = client
            .upload_blob(&r, &Digest::sha256_of(&body), &file, body.len() as u64)
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}: {err}",
            started.elapsed()
        );
        assert!(matches!(err, RegistryError::Stalled { .. }), "{err:?}");
    }
}
