//! A hostile registry: a tiny `/v2/` server that serves the fixture image
//! (manifest, config and layers read from `fixtures/oci`) and misbehaves on
//! demand, in the style of rust-oci-client's `tests/digest_validation.rs`.
//!
//! It answers `GET /v2/` (200), `GET|HEAD /v2/NAME/manifests/REF` for the
//! fixture's tag (`latest`) or its manifest digest, and
//! `GET|HEAD /v2/NAME/blobs/DIGEST` for every blob in the layout, for any
//! repository NAME. Anything else is 404 (or 405 for writes). It needs no
//! authentication.
//!
//! Faults ([`Fault`]) are switched at run time with [`Hostile::set_fault`]
//! and apply until changed. Every request is recorded (method, target,
//! headers) so tests can assert what a client asked for and how often.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::fixture::{FIXTURE_TAG, fixture_layout, image_in_layout};
use super::http::{Request, Response, Server};
use super::judges::sha256_digest;

/// How the server misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Blob bodies come with one byte flipped (same length, so only the
    /// digest check can notice). `Some(digest)` limits it to that blob.
    CorruptBlob(Option<String>),
    /// Blobs: the full `Content-Length`, then half the body, then the
    /// connection closes. `Some(digest)` limits it to that blob.
    TruncatedBlob(Option<String>),
    /// The first `count` requests for manifests or blobs (the `/v2/` ping is
    /// never failed) get `status` (e.g. 500, 429), with `Retry-After:
    /// SECONDS` when set; later ones are served normally. Counting starts
    /// when the fault is set.
    FailFirst {
        status: u16,
        count: usize,
        retry_after: Option<u32>,
    },
    /// Manifests are served as 200 with a body that is not JSON.
    ManifestNotJson,
    /// Manifests are served as valid JSON whose bytes do not hash to the
    /// requested digest (pretty-printed), with the original
    /// `Docker-Content-Digest` header.
    ManifestDigestMismatch,
}

/// One request the hostile server saw.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path plus query.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

struct State {
    tag: String,
    manifest: Vec<u8>,
    manifest_digest: String,
    media_type: String,
    blobs: HashMap<String, Vec<u8>>,
    fault: Mutex<Fault>,
    failed: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running hostile registry.
pub struct Hostile {
    server: Server,
    state: Arc<State>,
}

impl Hostile {
    /// Serve the committed fixture; its tag `demo:latest` becomes tag
    /// `latest` of any repository (so `ADDR/demo:latest` works).
    pub fn start() -> Hostile {
        Hostile::start_with(&fixture_layout(), FIXTURE_TAG)
    }

    /// Serve the image tagged `layout_tag` in `layout`; the part after the
    /// last `:` is the tag clients ask for.
    pub fn start_with(layout: &Path, layout_tag: &str) -> Hostile {
        let image = image_in_layout(layout, layout_tag);
        let mut blobs = HashMap::new();
        for entry in std::fs::read_dir(layout.join("blobs").join("sha256"))
            .expect("layout blobs")
            .flatten()
        {
            let bytes = std::fs::read(entry.path()).expect("reading a blob");
            blobs.insert(
                format!("sha256:{}", entry.file_name().to_string_lossy()),
                bytes,
            );
        }
        let tag = layout_tag
            .rsplit(':')
            .next()
            .unwrap_or(layout_tag)
            .to_string();
        let state = Arc::new(State {
            tag,
            manifest: image.manifest_bytes,
            manifest_digest: image.manifest_digest,
            media_type: image.media_type,
            blobs,
            fault: Mutex::new(Fault::None),
            failed: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let server = Server::start("hostile", move |req| handle(&st, req));
        Hostile { server, state }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    /// `127.0.0.1:PORT/REPO_TAG`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr())
    }

    /// The tag served (`latest` for the fixture).
    pub fn tag(&self) -> &str {
        &self.state.tag
    }

    /// Digest of the manifest served when behaving.
    pub fn manifest_digest(&self) -> &str {
        &self.state.manifest_digest
    }

    /// Switch the fault (resets the [`Fault::FailFirst`] counter).
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
        self.state.failed.store(0, Ordering::SeqCst);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Requests with this method whose target contains `path_substring`.
    pub fn count(&self, method: &str, path_substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.target.contains(path_substring))
            .count()
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::new(status)
        .header("Docker-Distribution-Api-Version", "registry/2.0")
        .json(&json!({"errors": [{"code": code, "message": message, "detail": null}]}))
}

fn handle(st: &State, req: &Request) -> Response {
    st.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(RecordedRequest {
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
        });
    let path = req.path().to_string();
    if path == "/v2/" || path == "/v2" {
        return Response::new(200)
            .header("Docker-Distribution-Api-Version", "registry/2.0")
            .json(&json!({}));
    }
    let fault = st.fault.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Fault::FailFirst {
        status,
        count,
        retry_after,
    } = &fault
        && path.starts_with("/v2/")
        && st.failed.fetch_add(1, Ordering::SeqCst) < *count
    {
        let mut r = error(
            *status,
            "UNAVAILABLE",
            "hostile registry: failing on purpose",
        );
        if let Some(secs) = retry_after {
            r = r.header("Retry-After", secs.to_string());
        }
        return r;
    }
    if req.method != "GET" && req.method != "HEAD" {
        return error(405, "UNSUPPORTED", "hostile registry is read-only");
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(404, "NOT_FOUND", "not found");
    };
    if let Some((_name, reference)) = rest.rsplit_once("/manifests/") {
        if reference != st.tag && reference != st.manifest_digest {
            return error(404, "MANIFEST_UNKNOWN", "manifest unknown");
        }
        let body = match fault {
            Fault::ManifestNotJson => b"<html>this is not a manifest</html>\n".to_vec(),
            Fault::ManifestDigestMismatch => {
                let v: serde_json::Value =
                    serde_json::from_slice(&st.manifest).expect("manifest JSON");
                serde_json::to_vec_pretty(&v).expect("manifest")
            }
            _ => st.manifest.clone(),
        };
        return Response::new(200)
            .header("Content-Type", st.media_type.clone())
            .header("Docker-Content-Digest", st.manifest_digest.clone())
            .header("Docker-Distribution-Api-Version", "registry/2.0")
            .body(body);
    }
    if let Some((_name, digest)) = rest.rsplit_once("/blobs/") {
        let Some(bytes) = st.blobs.get(digest) else {
            return error(404, "BLOB_UNKNOWN", "blob unknown to registry");
        };
        let hit = |only: &Option<String>| only.as_deref().is_none_or(|d| d == digest);
        let mut resp = Response::new(200)
            .header("Content-Type", "application/octet-stream")
            .header("Docker-Content-Digest", digest.to_string())
            .header("Docker-Distribution-Api-Version", "registry/2.0")
            .body(bytes.clone());
        match &fault {
            Fault::CorruptBlob(only) if hit(only) && !resp.body.is_empty() => {
                let mid = resp.body.len() / 2;
                resp.body[mid] ^= 0xff;
                debug_assert_ne!(sha256_digest(&resp.body), digest);
            }
            Fault::TruncatedBlob(only) if hit(only) => {
                resp.truncate_at = Some(resp.body.len() / 2);
            }
            _ => {}
        }
        return resp;
    }
    error(404, "NOT_FOUND", "not found")
}
