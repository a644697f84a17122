//! HTTP/1.1 over a Unix socket, blocking: just what talking to a Docker
//! Engine API (Docker's, or Podman's compatible one) takes.
//!
//! One connection per request (`Connection: close`). Responses are framed by
//! `Content-Length`, `Transfer-Encoding: chunked` (RFC 9112 §7.1; what both
//! engines send for exports) or the end of the connection; request bodies
//! of unknown length go out chunked. Nothing here waits or takes without a
//! bound: every read and write has a silence limit and, for small requests,
//! a deadline for the whole exchange; a response head is at most
//! [`MAX_HEAD`] bytes; chunk-size lines and trailers are bounded; bodies
//! are read whole only through [`Response::read_body`], up to a limit.
//!
//! The response head is parsed by `httparse` (already built for reqwest);
//! the rest is written out here: reqwest cannot dial a Unix socket, and
//! hyper with hyperlocal would bring an async runtime into code that is
//! blocking from end to end.

mod response;
mod upload;

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A response head larger than this is refused.
pub const MAX_HEAD: usize = 64 << 10;
/// At most this many header fields.
const MAX_HEADERS: usize = 100;
/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 << 10;
/// Trailers after the last chunk, in all.
const MAX_TRAILERS: usize = 16 << 10;
/// A request body is sent in chunks of about this size.
const CHUNK: usize = 1 << 20;
/// The tail of a request body that [`Upload`] keeps until
/// [`Upload::finish`]: a peer cannot see the whole body before then.
pub const HOLD_BACK: usize = 4 << 10;

/// `unix:///path`, as `DOCKER_HOST` spells a socket.
pub fn address(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// How long a request may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest wait for any one read or write.
    pub silence: Duration,
    /// When the whole exchange must be over (`None`: only the silence
    /// limit, for streams as long as an image).
    pub deadline: Option<Instant>,
}

impl Limits {
    /// A small request: `silence` per read, `total` for everything.
    pub fn small(silence: Duration, total: Duration) -> Limits {
        Limits {
            silence,
            deadline: Some(Instant::now() + total),
        }
    }

    /// A stream: only the silence limit.
    pub fn stream(silence: Duration) -> Limits {
        Limits {
            silence,
            deadline: None,
        }
    }
}

/// Why an exchange with the socket stopped: the message names the socket,
/// and says only what happened at this layer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{address} sent nothing for {}s", .silence.as_secs())]
    Silent { address: String, silence: Duration },
    #[error("{address} did not finish answering in time")]
    Deadline { address: String },
    #[error("{address} sent a malformed HTTP answer: {reason}")]
    Malformed { address: String, reason: String },
    #[error("{address} closed the connection in the middle of the answer")]
    Truncated { address: String },
    #[error("{address} sent more than the {limit} bytes slim accepts here")]
    TooLarge { address: String, limit: u64 },
}

impl HttpError {
    fn io(self) -> io::Error {
        let kind = match self {
            HttpError::Silent { .. } | HttpError::Deadline { .. } => io::ErrorKind::TimedOut,
            HttpError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

/// A connection whose every read and write is bounded by [`Limits`].
struct Conn {
    stream: UnixStream,
    address: String,
    limits: Limits,
}

impl Conn {
    fn open(socket: &Path, limits: Limits) -> io::Result<Conn> {
        Ok(Conn {
            stream: UnixStream::connect(socket)?,
            address: address(socket),
            limits,
        })
    }

    /// How long the next read or write may wait.
    fn wait(&self) -> io::Result<Duration> {
        let wait = match self.limits.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => self.limits.silence,
        };
        if wait.is_zero() {
            return Err(HttpError::Deadline {
                address: self.address.clone(),
            }
            .io());
        }
        Ok(wait.min(self.limits.silence))
    }

    fn timed_out(&self, e: io::Error) -> io::Error {
        if !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return e;
        }
        if self
            .limits
            .deadline
            .is_some_and(|d| Instant::now() + Duration::from_millis(5) >= d)
        {
            HttpError::Deadline {
                address: self.address.clone(),
            }
            .io()
        } else {
            HttpError::Silent {
                address: self.address.clone(),
                silence: self.limits.silence,
            }
            .io()
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = self.wait()?;
        self.stream.set_read_timeout(Some(wait))?;
        self.stream.read(buf).map_err(|e| self.timed_out(e))
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let wait = self.wait()?;
        self.stream.set_write_timeout(Some(wait))?;
        self.stream.write(buf).map_err(|e| self.timed_out(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Percent-encodes what may not stand in a path segment as it is (image
/// names are checked before they get here; this is a second fence).
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn request_head(method: &str, target: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: slim/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Sends a request without a body and reads the response head.
pub fn request(socket: &Path, method: &str, target: &str, limits: Limits) -> io::Result<Response> {
    let mut conn = Conn::open(socket, limits)?;
    conn.write_all(&request_head(method, target, &[]))?;
    Response::read(BufReader::with_capacity(256 << 10, conn), method)
}

pub use response::{Body, Response};
pub use upload::Upload;

/// The socket path behind an address (`unix:///path`).
pub fn socket_of(address: &str) -> Option<PathBuf> {
    address
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A one-shot server: answers the first connection with `answer` after
    /// reading the request head (and a body, when `read_body`).
    fn serve(answer: Vec<u8>, read_body: bool) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            if read_body {
                // Chunked: read until the last chunk.
                let mut rest = Vec::new();
                loop {
                    let mut l = Vec::new();
                    r.read_until(b'\n', &mut l).unwrap();
                    rest.extend_from_slice(&l);
                    if l == b"0\r\n" || l.is_empty() {
                        break;
                    }
                }
            }
            let _ = s.write_all(&answer);
        });
        (dir, path)
    }

    fn quick() -> Limits {
        Limits::small(Duration::from_secs(5), Duration::from_secs(10))
    }

    #[test]
    fn content_length_chunked_and_close_bodies() {
        let (_d, p) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA".to_vec(),
            false,
        );
        let r = request(&p, "GET", "/x", quick()).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.read_body(100).unwrap(), b"hello");

        let (_d, p) = serve(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n".to_vec(),
            false,
        );
        let r = request(&p, "GET", "/x", quick()).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
        assert_eq!(r.read_body(100).unwrap(), b"abcde");

        let (_d, p) = serve(b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(), false);
        let r = request(&p, "GET", "/x", quick()).unwrap();
        assert_eq!(r.read_body(100).unwrap(), b"until close");
    }

    #[test]
    fn bounds_hold() {
        let (_d, p) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
                .iter()
                .chain([b'x'; 50].iter())
                .copied()
                .collect(),
            false,
        );
        let e = request(&p, "GET", "/x", quick())
            .unwrap()
            .read_body(10)
            .unwrap_err();
        assert!(e.to_string().contains("more than the 10 bytes"), "{e}");

        // A truncated chunked body is an error, not a short read.
        let (_d, p) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc".to_vec(),
            false,
        );
        let e = request(&p, "GET", "/x", quick())
            .unwrap()
            .read_body(100)
            .unwrap_err();
        assert!(e.to_string().contains("in the middle"), "{e}");

        // A head that never ends is refused at MAX_HEAD.
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let (_d, p) = serve(endless, false);
        let e = request(&p, "GET", "/x", quick()).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");

        // A chunk size that is not hex.
        let (_d, p) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            false,
        );
        let e = request(&p, "GET", "/x", quick())
            .unwrap()
            .read_body(100)
            .unwrap_err();
        assert!(e.to_string().contains("chunk size"), "{e}");
    }

    #[test]
    fn silence_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(2));
            drop(s);
        });
        let started = Instant::now();
        let e = request(
            &path,
            "GET",
            "/x",
            Limits::small(Duration::from_millis(300), Duration::from_secs(10)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("sent nothing"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    #[test]
    fn uploads_go_out_chunked_and_hold_back_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = Vec::new();
            loop {
                let mut size = String::new();
                r.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                if n == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end).unwrap();
                    break;
                }
                let mut chunk = vec![0; n];
                r.read_exact(&mut chunk).unwrap();
                body.extend_from_slice(&chunk);
                let mut crlf = [0; 2];
                r.read_exact(&mut crlf).unwrap();
                assert_eq!(&crlf, b"\r\n");
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            body
        });
        let data: Vec<u8> = (0..3 * CHUNK + 77).map(|i| (i % 251) as u8).collect();
        let mut up = Upload::start(
            &path,
            "POST",
            "/load",
            "application/x-tar",
            quick(),
            Duration::from_secs(5),
        )
        .unwrap();
        for piece in data.chunks(10_000) {
            up.write_all(piece).unwrap();
        }
        // Everything but the tail went out before `finish`.
        let sent = up.sent() as usize;
        assert!(sent <= data.len() - HOLD_BACK, "{sent}");
        assert!(sent >= data.len() - HOLD_BACK - CHUNK, "{sent}");
        let r = up.finish().unwrap();
        assert_eq!(r.read_body(10).unwrap(), b"ok");
        assert_eq!(t.join().unwrap(), data);
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode_path("team/app:1.0"), "team/app:1.0");
        assert_eq!(encode_path("a b?c#d%"), "a%20b%3Fc%23d%25");
        assert_eq!(
            socket_of("unix:///run/x.sock"),
            Some(PathBuf::from("/run/x.sock"))
        );
        assert_eq!(socket_of("tcp://1.2.3.4:2375"), None);
    }
}
