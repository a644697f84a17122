//! A local container engine through the Docker Engine API on a Unix socket
//! (Docker's own, or Podman's compatible API): which socket, which API
//! version, and the four calls slim makes — `GET /version`,
//! `GET /images/{name}/json`, `GET /images/{name}/get` (a `docker save`
//! stream) and `POST /images/load` (a `docker load`).
//!
//! The socket is `DOCKER_HOST` (`unix://` only) when set, as the Docker CLI
//! does; else the first of `/var/run/docker.sock`,
//! `$XDG_RUNTIME_DIR/podman/podman.sock` and `/run/podman/podman.sock` that
//! accepts a connection. The API version is the engine's own
//! (`ApiVersion` from `/version`), used as `/v{ApiVersion}/…`: the calls
//! slim makes are the same in every version engines still serve.
//!
//! Every exchange is bounded (see [`unix_http`](super::unix_http)): small
//! answers in time and size; exports and loads by a silence limit here, by
//! the spool's size limit and by the run's `--timeout`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::unix_http::{self, Body, Limits, Response, Upload, address, encode_path};

/// Docker's socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Podman's socket when it runs as root.
pub const PODMAN_ROOT_SOCKET: &str = "/run/podman/podman.sock";

/// Small requests (`/version`, inspecting an image): the longest silence,
/// and the longest exchange. A socket-activated Podman starts its service
/// on the first connection, which takes a few seconds.
const SMALL_SILENCE: Duration = Duration::from_secs(30);
const SMALL_TOTAL: Duration = Duration::from_secs(60);
/// Small answers are at most this large.
const MAX_SMALL_ANSWER: u64 = 4 << 20;
/// An export: engines write the whole archive to a temp file before the
/// first byte goes out, so the first read may wait long.
const EXPORT_SILENCE: Duration = Duration::from_secs(600);
/// A load: the longest the engine may take to read the next part of the
/// body, and to answer once it has all of it (it imports every layer
/// first).
const LOAD_SILENCE: Duration = Duration::from_secs(300);
const LOAD_ANSWER_SILENCE: Duration = Duration::from_secs(1800);

/// What went wrong talking to an engine; each message names the socket.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "no Docker or Podman engine socket found (tried {}); start one, or name a registry with docker://",
        .tried.join(", ")
    )]
    NotFound { tried: Vec<String> },
    #[error(
        "DOCKER_HOST={host}: slim reaches an engine only over a Unix socket (DOCKER_HOST=unix:///path/to/docker.sock); for a remote engine, pipe `docker save` into slim docker-archive:-, or name a registry with docker://"
    )]
    UnsupportedHost { host: String },
    #[error(
        "permission denied on {address}: slim needs the access the docker or podman CLI has there (e.g. membership of the docker group); or name a registry with docker://"
    )]
    PermissionDenied { address: String },
    #[error("cannot talk to the engine at {address}")]
    Io {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("{address} does not answer as a Docker Engine API: {reason}")]
    NotAnEngine { address: String, reason: String },
    #[error("the engine at {address} has no image {name}")]
    NoSuchImage { address: String, name: String },
    #[error("the engine at {address} answered {status} to {what}: {message}")]
    Refused {
        address: String,
        what: String,
        status: String,
        message: String,
    },
}

/// An engine that answered `/version`.
#[derive(Clone, Debug)]
pub struct Engine {
    socket: PathBuf,
    /// `1.41`.
    api: String,
    /// `Docker 27.3.1`, `Podman 4.3.1`: for logs.
    product: String,
}

/// What the engine says about an image.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    /// The engine's image ID (the config digest, or with Docker's
    /// containerd store the manifest digest).
    pub id: String,
    /// `RootFS.Layers`: the image's diff_ids.
    pub diff_ids: Vec<String>,
}

/// The sockets to try, in order.
pub fn candidates() -> Result<Vec<PathBuf>, EngineError> {
    if let Some(host) = std::env::var_os("DOCKER_HOST").filter(|h| !h.is_empty()) {
        let host = host.to_string_lossy().into_owned();
        return match unix_http::socket_of(&host) {
            Some(p) => Ok(vec![p]),
            None => Err(EngineError::UnsupportedHost { host }),
        };
    }
    let mut sockets = vec![PathBuf::from(DOCKER_SOCKET)];
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        sockets.push(Path::new(&run).join("podman").join("podman.sock"));
    }
    sockets.push(PathBuf::from(PODMAN_ROOT_SOCKET));
    Ok(sockets)
}

impl Engine {
    /// The first engine that answers among [`candidates`]. A socket that
    /// is absent or that nobody listens on is passed over; one that
    /// refuses slim's access, or answers wrongly, is an error (an engine is
    /// there, and slim should not quietly look elsewhere).
    pub fn discover() -> Result<Engine, EngineError> {
        let mut tried = Vec::new();
        for socket in candidates()? {
            match Engine::connect(&socket) {
                Ok(e) => return Ok(e),
                Err(Absent::Missing) => tried.push(address(&socket)),
                Err(Absent::Stale) => {
                    tried.push(format!("{} (nothing listening)", address(&socket)))
                }
                Err(Absent::Error(e)) => return Err(e),
            }
        }
        Err(EngineError::NotFound { tried })
    }

    /// The engine on `socket`, with the API version it speaks.
    pub fn at(socket: &Path) -> Result<Engine, EngineError> {
        match Engine::connect(socket) {
            Ok(e) => Ok(e),
            Err(Absent::Missing) => Err(EngineError::NotFound {
                tried: vec![address(socket)],
            }),
            Err(Absent::Stale) => Err(EngineError::NotFound {
                tried: vec![format!("{} (nothing listening)", address(socket))],
            }),
            Err(Absent::Error(e)) => Err(e),
        }
    }

    fn connect(socket: &Path) -> Result<Engine, Absent> {
        let address = address(socket);
        let response = match unix_http::request(
            socket,
            "GET",
            "/version",
            Limits::small(SMALL_SILENCE, SMALL_TOTAL),
        ) {
            Ok(r) => r,
            Err(e) => {
                return Err(match e.kind() {
                    io::ErrorKind::NotFound => Absent::Missing,
                    io::ErrorKind::ConnectionRefused => Absent::Stale,
                    io::ErrorKind::PermissionDenied => {
                        Absent::Error(EngineError::PermissionDenied { address })
                    }
                    _ => Absent::Error(EngineError::Io { address, source: e }),
                });
            }
        };
        let not_engine = |reason: String| {
            Absent::Error(EngineError::NotAnEngine {
                address: address.clone(),
                reason,
            })
        };
        if !response.is_success() {
            return Err(not_engine(format!(
                "GET /version answered {} {}",
                response.status, response.reason
            )));
        }
        let body = response
            .read_body(MAX_SMALL_ANSWER)
            .map_err(|e| not_engine(e.to_string()))?;
        let version: Value = crate::image::parse_json(
            &format!("{address}: /version"),
            &body,
            crate::image::MAX_JSON_VALUES,
        )
        .map_err(|e| not_engine(e.to_string()))?;
        let api = version
            .get("ApiVersion")
            .and_then(Value::as_str)
            .filter(|v| is_api_version(v))
            .ok_or_else(|| not_engine("no ApiVersion in GET /version".into()))?
            .to_string();
        let podman = version
            .pointer("/Components")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.get("Name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.contains("Podman"))
                })
            });
        let product = format!(
            "{} {}",
            if podman { "Podman" } else { "Docker" },
            version
                .get("Version")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
        tracing::info!("{address}: {product}, API {api}");
        Ok(Engine {
            socket: socket.to_path_buf(),
            api,
            product,
        })
    }

    /// `unix:///path`.
    pub fn address(&self) -> String {
        address(&self.socket)
    }

    pub fn product(&self) -> &str {
        &self.product
    }

    fn target(&self, path: &str) -> String {
        format!("/v{}{path}", self.api)
    }

    fn io(&self, e: io::Error) -> EngineError {
        EngineError::Io {
            address: self.address(),
            source: e,
        }
    }

    /// An error answer: the engine's `message` (Docker and Podman both send
    /// one), cleaned for the terminal.
    fn refused(&self, what: &str, response: Response) -> EngineError {
        let status = format!("{} {}", response.status, response.reason);
        let body = response.read_body(64 << 10).unwrap_or_default();
        EngineError::Refused {
            address: self.address(),
            what: what.to_string(),
            status,
            message: error_message(&body),
        }
    }

    /// What the engine knows of image `name`; `None` when it has no such
    /// image.
    pub fn image(&self, name: &str) -> Result<Option<ImageInfo>, EngineError> {
        let target = self.target(&format!("/images/{}/json", encode_path(name)));
        let response = unix_http::request(
            &self.socket,
            "GET",
            &target,
            Limits::small(SMALL_SILENCE, SMALL_TOTAL),
        )
        .map_err(|e| self.io(e))?;
        if response.status == 404 {
            return Ok(None);
        }
        if !response.is_success() {
            return Err(self.refused(&format!("GET {target}"), response));
        }
        let body = response
            .read_body(MAX_SMALL_ANSWER)
            .map_err(|e| self.io(e))?;
        let info = crate::image::parse_json(
            &format!("{}: image {name}", self.address()),
            &body,
            crate::image::MAX_JSON_VALUES,
        )
        .map_err(|e| EngineError::NotAnEngine {
            address: self.address(),
            reason: e.to_string(),
        })?;
        Ok(Some(ImageInfo {
            id: info
                .get("Id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            diff_ids: info
                .pointer("/RootFS/Layers")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    /// Image `name` as a `docker save` stream.
    pub fn export(&self, name: &str) -> Result<Body, EngineError> {
        let target = self.target(&format!("/images/{}/get", encode_path(name)));
        let response =
            unix_http::request(&self.socket, "GET", &target, Limits::stream(EXPORT_SILENCE))
                .map_err(|e| self.io(e))?;
        if response.status == 404 {
            return Err(EngineError::NoSuchImage {
                address: self.address(),
                name: name.to_string(),
            });
        }
        if !response.is_success() {
            return Err(self.refused(&format!("GET {target}"), response));
        }
        Ok(response.into_body())
    }

    /// Starts a `docker load`: write the archive into the returned [`Load`],
    /// then [`Load::finish`].
    pub fn load(&self) -> Result<Load, EngineError> {
        let target = self.target("/images/load?quiet=1");
        let upload = Upload::start(
            &self.socket,
            "POST",
            &target,
            "application/x-tar",
            Limits::stream(LOAD_SILENCE),
            LOAD_ANSWER_SILENCE,
        )
        .map_err(|e| self.io(e))?;
        Ok(Load {
            engine: self.clone(),
            upload,
            target,
        })
    }
}

/// Why a socket was passed over, or the error that stops the search.
enum Absent {
    Missing,
    Stale,
    Error(EngineError),
}

/// `1.41`: digits, one dot, digits.
fn is_api_version(v: &str) -> bool {
    v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.len() <= 3
            && b.len() <= 3
            && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
    })
}

/// The `message` of an engine's JSON error, or the text itself; control
/// characters dropped and the length bounded, since it goes to a terminal.
fn error_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.pointer("/errorDetail/message"))
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    clean(&text)
}

fn clean(text: &str) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect();
    if out.is_empty() {
        out = "(no message)".into();
    }
    out
}

/// A `docker load` under way: the archive goes in through [`Write`].
pub struct Load {
    engine: Engine,
    upload: Upload,
    target: String,
}

impl Write for Load {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.upload.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.upload.flush()
    }
}

impl Load {
    /// Sends the end of the archive and reads the engine's answer; an error
    /// in it (an HTTP error, or an `error` in the JSON stream Docker sends
    /// with 200) fails the load. Returns what the engine reported
    /// (`Loaded image: …`).
    pub fn finish(self) -> Result<Vec<String>, EngineError> {
        let what = format!("POST {}", self.target);
        let response = self.upload.finish().map_err(|e| self.engine.io(e))?;
        if !response.is_success() {
            return Err(self.engine.refused(&what, response));
        }
        let body = response
            .read_body(MAX_SMALL_ANSWER)
            .map_err(|e| self.engine.io(e))?;
        load_answer(&body).map_err(|message| EngineError::Refused {
            address: self.engine.address(),
            what,
            status: "an error".into(),
            message,
        })
    }

    /// The load failed on slim's side (`cause`), or the engine stopped
    /// reading: when the engine said why, that is the error.
    pub fn fail(self, cause: anyhow::Error) -> anyhow::Error {
        let what = format!("POST {}", self.target);
        match self.upload.early_answer(Duration::from_secs(5)) {
            Some(r) if !r.is_success() => anyhow::Error::new(self.engine.refused(&what, r)),
            _ => cause,
        }
    }
}

/// Reads the JSON messages of a load answer: `Ok` with the `stream` lines
/// when none is an error, else the error's message.
fn load_answer(body: &[u8]) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let value = value.map_err(|e| format!("a malformed answer ({e})"))?;
        if value.get("error").is_some() || value.get("errorDetail").is_some() {
            return Err(error_message(
                &serde_json::to_vec(&value).unwrap_or_default(),
            ));
        }
        if let Some(s) = value.get("stream").and_then(Value::as_str) {
            lines.push(clean(s));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        for v in ["1.41", "1.24", "1.100"] {
            assert!(is_api_version(v), "{v}");
        }
        for v in ["", "1", "1.", ".1", "1.41/../x", "v1.41", "1.4a", "1.2.3"] {
            assert!(!is_api_version(v), "{v}");
        }
    }

    #[test]
    fn load_answers() {
        assert_eq!(
            load_answer(br#"{"stream":"Loaded image: myapp:slim\n"}"#).unwrap(),
            vec!["Loaded image: myapp:slim".to_string()]
        );
        assert_eq!(
            load_answer(
                br#"{"stream":"x"}
{"errorDetail":{"message":"open /var/lib/docker/tmp/x: no space left on device"},"error":"open /var/lib/docker/tmp/x: no space left on device"}"#
            )
            .unwrap_err(),
            "open /var/lib/docker/tmp/x: no space left on device"
        );
        assert!(load_answer(b"{not json").is_err());
        assert_eq!(load_answer(b"").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn error_messages_are_cleaned() {
        assert_eq!(
            error_message(br#"{"message":"No such image: x:\u001b[31mred"}"#),
            "No such image: x: [31mred"
        );
        assert_eq!(error_message(b"plain\ntext"), "plain text");
        assert_eq!(error_message(b""), "(no message)");
    }
}
