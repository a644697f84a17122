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

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
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

/// A request whose body is being sent, chunked.
pub struct Upload {
    conn: Option<Conn>,
    buf: Vec<u8>,
    sent: u64,
    method: String,
    /// The silence limit for the answer, which may come only after the
    /// peer has done all its work on the body.
    answer_silence: Duration,
}

impl Upload {
    /// Connects and sends the request head; write the body, then
    /// [`Upload::finish`].
    pub fn start(
        socket: &Path,
        method: &str,
        target: &str,
        content_type: &str,
        limits: Limits,
        answer_silence: Duration,
    ) -> io::Result<Upload> {
        let mut conn = Conn::open(socket, limits)?;
        conn.write_all(&request_head(
            method,
            target,
            &[
                ("Content-Type", content_type),
                ("Transfer-Encoding", "chunked"),
            ],
        ))?;
        Ok(Upload {
            conn: Some(conn),
            buf: Vec::with_capacity(CHUNK + HOLD_BACK),
            sent: 0,
            method: method.to_string(),
            answer_silence,
        })
    }

    fn conn(&mut self) -> io::Result<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::other("the upload was already given up"))
    }

    fn send_chunk(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(n + 16);
        frame.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        frame.extend_from_slice(&self.buf[..n]);
        frame.extend_from_slice(b"\r\n");
        let r = self.conn()?.write_all(&frame);
        if r.is_err() {
            self.buf.clear();
        }
        r?;
        self.buf.drain(..n);
        self.sent += n as u64;
        Ok(())
    }

    /// How many body bytes went out so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends the rest of the body and the last chunk, and reads the
    /// response head. Until this is called, the peer has not seen the last
    /// [`HOLD_BACK`] bytes of the body (nor its end).
    pub fn finish(mut self) -> io::Result<Response> {
        let n = self.buf.len();
        self.send_chunk(n)?;
        let mut conn = self.conn.take().expect("checked by send_chunk");
        conn.write_all(b"0\r\n\r\n")?;
        conn.limits = Limits::stream(self.answer_silence);
        Response::read(BufReader::with_capacity(64 << 10, conn), &self.method)
    }

    /// After a failed write: what the peer answered, if it answered before
    /// it stopped reading (an engine refusing the body says why), waiting at
    /// most `wait`.
    pub fn early_answer(mut self, wait: Duration) -> Option<Response> {
        let mut conn = self.conn.take()?;
        conn.limits = Limits::small(wait, wait);
        Response::read(BufReader::with_capacity(64 << 10, conn), &self.method).ok()
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK + HOLD_BACK {
            let n = self.buf.len() - HOLD_BACK;
            self.send_chunk(n)?;
        }
        Ok(data.len())
    }

    /// Nothing: the held-back tail goes out only in [`Upload::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a response body ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(ChunkState),
    Close,
}

#[derive(Debug)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// The last chunk and the trailers were read.
    Done,
}

/// A response: status, headers, and the body as a stream.
pub struct Response {
    pub status: u16,
    pub reason: String,
    headers: Vec<(String, String)>,
    body: Body,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Response {
    fn read(mut reader: BufReader<Conn>, method: &str) -> io::Result<Response> {
        let address = reader.get_ref().address.clone();
        let malformed = |reason: String| {
            HttpError::Malformed {
                address: address.clone(),
                reason,
            }
            .io()
        };
        loop {
            let head = read_head(&mut reader, &address)?;
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut fields);
            match parsed.parse(&head) {
                Ok(httparse::Status::Complete(_)) => {}
                Ok(httparse::Status::Partial) => {
                    return Err(malformed("an incomplete head".into()));
                }
                Err(e) => return Err(malformed(e.to_string())),
            }
            let status = parsed.code.unwrap_or(0);
            // `100 Continue` and other interim answers come before the real one.
            if (100..200).contains(&status) {
                continue;
            }
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect();
            let reason = parsed.reason.unwrap_or("").to_string();
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let framing = if method == "HEAD" || status == 204 || status == 304 {
                Framing::Length(0)
            } else if let Some(te) = get("transfer-encoding") {
                if te
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
                {
                    Framing::Chunked(ChunkState::Size)
                } else {
                    Framing::Close
                }
            } else if let Some(len) = get("content-length") {
                Framing::Length(
                    len.parse()
                        .map_err(|_| malformed(format!("Content-Length {len:?}")))?,
                )
            } else {
                Framing::Close
            };
            return Ok(Response {
                status,
                reason,
                body: Body {
                    reader,
                    framing,
                    address,
                },
                headers,
            });
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as a stream.
    pub fn into_body(self) -> Body {
        self.body
    }

    /// The whole body, refused past `max` bytes.
    pub fn read_body(self, max: u64) -> io::Result<Vec<u8>> {
        let mut body = self.body;
        let address = body.address.clone();
        let mut out = Vec::new();
        (&mut body).take(max + 1).read_to_end(&mut out)?;
        if out.len() as u64 > max {
            return Err(HttpError::TooLarge {
                address,
                limit: max,
            }
            .io());
        }
        Ok(out)
    }
}

/// Reads up to the blank line that ends a response head, at most
/// [`MAX_HEAD`] bytes.
fn read_head(reader: &mut BufReader<Conn>, address: &str) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let n = read_line(reader, &mut head, MAX_HEAD, address)?;
        if n == 0 {
            if head.is_empty() {
                return Err(HttpError::Malformed {
                    address: address.to_string(),
                    reason: "the connection closed before any answer".into(),
                }
                .io());
            }
            return Err(HttpError::Truncated {
                address: address.to_string(),
            }
            .io());
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            if head == b"\r\n" {
                // Stray blank lines before a status line are allowed.
                head.clear();
                continue;
            }
            return Ok(head);
        }
    }
}

/// Appends one line (up to and including `\n`) to `out`, which may grow to
/// at most `max` bytes in all; returns the bytes read (0 at the end).
fn read_line(
    reader: &mut impl BufRead,
    out: &mut Vec<u8>,
    max: usize,
    address: &str,
) -> io::Result<usize> {
    let mut read = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(read);
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if out.len() + take > max {
            return Err(HttpError::TooLarge {
                address: address.to_string(),
                limit: max as u64,
            }
            .io());
        }
        out.extend_from_slice(&available[..take]);
        reader.consume(take);
        read += take;
        if done {
            return Ok(read);
        }
    }
}

/// A response body: reads end where the framing says the body ends.
pub struct Body {
    reader: BufReader<Conn>,
    framing: Framing,
    address: String,
}

impl Body {
    fn truncated(&self) -> io::Error {
        HttpError::Truncated {
            address: self.address.clone(),
        }
        .io()
    }

    fn malformed(&self, reason: &str) -> io::Error {
        HttpError::Malformed {
            address: self.address.clone(),
            reason: reason.to_string(),
        }
        .io()
    }

    /// Reads a chunk-size line; returns the size.
    fn chunk_size(&mut self) -> io::Result<u64> {
        let mut line = Vec::new();
        if read_line(&mut self.reader, &mut line, MAX_CHUNK_LINE, &self.address)? == 0 {
            return Err(self.truncated());
        }
        let text = std::str::from_utf8(&line).map_err(|_| self.malformed("a chunk size"))?;
        let hex = text.split(';').next().unwrap_or("").trim();
        if hex.is_empty() || hex.len() > 15 {
            return Err(self.malformed("a chunk size"));
        }
        u64::from_str_radix(hex, 16).map_err(|_| self.malformed("a chunk size"))
    }

    fn skip_trailers(&mut self) -> io::Result<()> {
        let mut all = Vec::new();
        loop {
            let start = all.len();
            if read_line(&mut self.reader, &mut all, MAX_TRAILERS, &self.address)? == 0 {
                return Err(self.truncated());
            }
            if matches!(&all[start..], b"\r\n" | b"\n") {
                return Ok(());
            }
        }
    }

    fn expect_crlf(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        if read_line(&mut self.reader, &mut line, 2, &self.address)? == 0 {
            return Err(self.truncated());
        }
        if line != b"\r\n" && line != b"\n" {
            return Err(self.malformed("no line end after a chunk"));
        }
        Ok(())
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.framing {
                Framing::Length(0) => return Ok(0),
                Framing::Length(left) => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = self.reader.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(self.truncated());
                    }
                    *left -= n as u64;
                    return Ok(n);
                }
                Framing::Close => return self.reader.read(buf),
                Framing::Chunked(ChunkState::Done) => return Ok(0),
                Framing::Chunked(ChunkState::Size) => {
                    let size = self.chunk_size()?;
                    if size == 0 {
                        self.skip_trailers()?;
                        self.framing = Framing::Chunked(ChunkState::Done);
                    } else {
                        self.framing = Framing::Chunked(ChunkState::Data(size));
                    }
                }
                Framing::Chunked(ChunkState::Data(left)) => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = self.reader.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(self.truncated());
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        self.expect_crlf()?;
                        self.framing = Framing::Chunked(ChunkState::Size);
                    }
                    return Ok(n);
                }
            }
        }
    }
}

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
