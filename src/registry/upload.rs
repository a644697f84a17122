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
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::blocking::Body;
use reqwest::header;
use reqwest::{StatusCode, Url};

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::{RegistryError, is_retryable};
use super::limits::{BodyWatch, GuardedBody, Retries, Stall};
use super::origin;
use super::reply::{Reply, header_str};
use super::request::Call;
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
        let what = format!(
            "mounting blob {digest} from {from} into {}/{}",
            r.registry, r.repository
        );
        let call = Call::new(r, Scope::push_mount(&r.repository, from), what);
        let resp = call
            .clone()
            .post(format!(
                "/v2/{}/blobs/uploads/?mount={digest}&from={from}",
                r.repository
            ))
            .header(header::CONTENT_LENGTH, "0")
            .timeout(Duration::from_secs(60))
            .send(self)?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(url) = self.location(&resp, call.host(), call.what()) {
                    let _ = call.delete(url).attempts(1).send_unchecked(self);
                }
                Ok(false)
            }
            _ => Ok(false),
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
        self: &Arc<Self>,
        r: &RegistryRef,
        digest: &Digest,
        file: &Path,
        size: u64,
    ) -> Result<(), RegistryError> {
        let what = format!("pushing blob {digest} to {}/{}", r.registry, r.repository);
        let call = Call::new(r, Scope::push(&r.repository), what);
        let mut retries = Retries::new(&self.opts, self.opts.attempts);
        loop {
            match self.upload_once(&call, digest, file, size) {
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

    /// One session and one PUT of the file (`call`: the upload, before a
    /// method and target).
    fn upload_once(
        self: &Arc<Self>,
        call: &Call,
        digest: &Digest,
        file: &Path,
        size: u64,
    ) -> Result<(), RegistryError> {
        let mut url = self.open_upload(call)?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let watch = BodyWatch::new();
        let (w, opts, file) = (watch.clone(), self.opts.clone(), file.to_path_buf());
        let put = call
            .clone()
            .put(url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size.to_string())
            .body(move || {
                // Opened again if the request is replayed (after a 401).
                match std::fs::File::open(&file) {
                    Ok(f) => Body::sized(
                        GuardedBody::new(
                            std::io::BufReader::with_capacity(crate::spool::IO_CHUNK, f),
                            &opts,
                            &w,
                        ),
                        size,
                    ),
                    Err(_) => Body::from(Vec::new()),
                }
            })
            .timeout(self.opts.upload_deadline(size));
        let resp = self.send_body(put.clone(), &watch, size).wait()?;
        put.check(self, resp)?;
        Ok(())
    }

    /// Sends `call`, whose body `watch` follows, once, on a thread of its
    /// own, so that slim can stop waiting for a registry that stops taking
    /// the body or answering it ([`Sending::wait`]). The answer is not
    /// checked. `commits`: the size of the blob the request commits (0 for
    /// none).
    fn send_body(self: &Arc<Self>, call: Call, watch: &BodyWatch, commits: u64) -> Sending {
        let (done, result) = mpsc::channel();
        let (what, host) = (call.what().to_string(), call.host().to_string());
        let client = self.clone();
        std::thread::spawn(move || {
            let _ = done.send(call.attempts(1).send_unchecked(&client));
        });
        Sending {
            result,
            watch: watch.clone(),
            what,
            host,
            window: self.opts.speed_time,
            answer: self.opts.commit_deadline(commits),
        }
    }

    /// POSTs to open an upload session; returns its absolute URL.
    fn open_upload(&self, call: &Call) -> Result<Url, RegistryError> {
        let resp = call
            .clone()
            .post(format!("/v2/{}/blobs/uploads/", call.repository()))
            .header(header::CONTENT_LENGTH, "0")
            .send(self)?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(RegistryError::Protocol {
                what: call.what().to_string(),
                reason: format!(
                    "{} did not open an upload session (expected 202 Accepted)",
                    call.host()
                ),
            });
        }
        self.location(&resp, call.host(), call.what())
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
        let what = format!("streaming a blob to {}/{}", r.registry, r.repository);
        let url = self.open_upload(&Call::new(r, Scope::push(&r.repository), &what))?;
        let watch = BodyWatch::new();
        let (w, opts) = (watch.clone(), self.opts.clone());
        // One-shot body: a replay (after a 401) sends nothing, the commit
        // then fails, and the caller uploads the finished file instead.
        let body = Mutex::new(Some(body));
        // A 404 to the PATCH is the session's, not the repository's: the
        // hint names no repository.
        let patch = Call::on(r.api_host(), "", Scope::push(&r.repository), what)
            .patch(url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(move || match body.lock().expect("body lock").take() {
                // A read returns what the file holds so far (up to 1 MiB).
                Some(b) => Body::new(GuardedBody::new(
                    std::io::BufReader::with_capacity(crate::spool::IO_CHUNK, b),
                    &opts,
                    &w,
                )),
                None => Body::from(Vec::new()),
            })
            // The body follows slim's own writing, so neither its length
            // nor its pace is known: the speed guard and the watch bound
            // it, this deadline only ends an abandoned request.
            .timeout(STREAM_DEADLINE);
        Ok(StreamingUpload {
            client: self.clone(),
            r: r.clone(),
            url,
            sending: self.send_body(patch.clone(), &watch, 0),
            patch,
        })
    }
}

/// The most a streamed PATCH may take in all, so that one abandoned by
/// [`Sending::wait`] does not live for ever.
const STREAM_DEADLINE: Duration = Duration::from_secs(6 * 3600);

/// A request with a body under way on its own thread.
struct Sending {
    result: mpsc::Receiver<Result<Reply, RegistryError>>,
    watch: BodyWatch,
    what: String,
    host: String,
    window: Duration,
    /// How long the registry may take to answer after the last byte.
    answer: Duration,
}

impl Sending {
    /// The answer, as long as the transport keeps taking the body and the
    /// registry answers within a window of the last of it; otherwise a
    /// stall (the request is left to end on its own).
    fn wait(self) -> Result<Reply, RegistryError> {
        let stalled = |stall| RegistryError::Stalled {
            what: self.what.clone(),
            host: self.host.clone(),
            stall,
        };
        match self.watch.wait_for(&self.result, self.window, self.answer) {
            Ok(Some(Ok(reply))) => Ok(reply),
            // A receiver that stopped taking data makes TCP_USER_TIMEOUT
            // end the connection, and reqwest says only "disconnected": a
            // body that waited a whole window before that was stalled.
            Ok(Some(Err(RegistryError::Transport { .. })))
                if self.watch.waited() >= self.window =>
            {
                Err(stalled(Stall::silent(self.watch.waited())))
            }
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Err(RegistryError::Protocol {
                what: self.what.clone(),
                reason: "the upload ended without an answer".into(),
            }),
            Err(stall) => Err(stalled(stall)),
        }
    }
}

/// A blob upload that reads the blob while it is being written (a PATCH on
/// a thread of its own).
pub struct StreamingUpload {
    client: Arc<RegistryClient>,
    r: RegistryRef,
    /// The session, for cancelling it.
    url: Url,
    sending: Sending,
    /// The PATCH, for judging its answer.
    patch: Call,
}

impl StreamingUpload {
    /// Waits for the body to be sent and commits the blob (`size` bytes)
    /// under `digest`.
    pub fn finish(self, digest: &Digest, size: u64) -> Result<(), RegistryError> {
        let client = &self.client;
        let what = format!(
            "pushing blob {digest} to {}/{}",
            self.r.registry, self.r.repository
        );
        let resp = self.patch.check(client, self.sending.wait()?)?;
        if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT {
            return Err(RegistryError::Protocol {
                what: self.patch.what().to_string(),
                reason: "the registry did not accept the streamed data".into(),
            });
        }
        let mut url = match header_str(resp.headers(), "location") {
            Some(_) => client.location(&resp, self.r.api_host(), &what)?,
            None => self.url.clone(),
        };
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        Call::new(&self.r, Scope::push(&self.r.repository), what)
            .put(url)
            .header(header::CONTENT_LENGTH, "0")
            .timeout(client.opts.commit_deadline(size))
            .attempts(1)
            .send(client)?;
        Ok(())
    }

    /// Waits for the request to stop (the caller made its body fail) and
    /// cancels the session.
    pub fn abort(self) {
        let _ = self.sending.wait();
        let _ = Call::new(
            &self.r,
            Scope::push(&self.r.repository),
            "cancelling an upload",
        )
        .delete(self.url.clone())
        .attempts(1)
        .send_unchecked(&self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::options::ClientOptions;
    use std::io::{BufRead, BufReader, Write};
    use std::time::Instant;

    /// A loopback "registry" that opens upload sessions, then takes the
    /// PUT's body one byte per 50 ms (`mute`: all of it, and never answers).
    fn bad_receiver(mute: bool) -> String {
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
                    if mute {
                        let _ = std::io::copy(&mut reader, &mut std::io::sink());
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

    /// Uploads `size` bytes to `addr` with a 500 ms window; the error and
    /// how long it took.
    fn upload_to(addr: &str, size: usize) -> (RegistryError, Duration) {
        let client = Arc::new(
            RegistryClient::new(ClientOptions {
                speed_limit: 64 << 10,
                speed_time: Duration::from_millis(500),
                ..ClientOptions::default()
            })
            .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blob");
        let body = vec![7u8; size];
        std::fs::write(&file, &body).unwrap();
        let r = RegistryRef::parse(&format!("{addr}/repo:latest")).unwrap();
        let started = Instant::now();
        let err = client
            .upload_blob(&r, &Digest::sha256_of(&body), &file, body.len() as u64)
            .unwrap_err();
        (err, started.elapsed())
    }

    /// A registry that stops taking an upload's body does not hold slim:
    /// the upload is given up within a few windows, as a stall.
    #[test]
    fn an_upload_the_registry_stops_reading_fails_quickly() {
        // Far more than the loopback socket buffers hold.
        let (err, took) = upload_to(&bad_receiver(false), 64 << 20);
        assert!(took < Duration::from_secs(10), "{took:?}: {err}");
        assert!(matches!(err, RegistryError::Stalled { .. }), "{err:?}");
    }

    /// Nor does one that takes the whole body and never answers.
    #[test]
    fn an_upload_the_registry_never_answers_fails_quickly() {
        let (err, took) = upload_to(&bad_receiver(true), 1 << 20);
        assert!(took < Duration::from_secs(10), "{took:?}: {err}");
        assert!(matches!(err, RegistryError::Stalled { .. }), "{err:?}");
    }
}
