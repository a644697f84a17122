//! Reading a response: the head (parsed by `httparse`, at most
//! [`MAX_HEAD`] bytes) and the body as a stream, framed by `Content-Length`,
//! `Transfer-Encoding: chunked` or the end of the connection, every line and
//! trailer bounded.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use super::{Conn, HttpError, MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS, MAX_TRAILERS};

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
    pub(super) fn read(mut reader: BufReader<Conn>, method: &str) -> io::Result<Response> {
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
