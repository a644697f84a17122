//! The probes' side of the network: waiting for a port to accept, `GET`
//! over HTTP/1.0 from inside the container's network namespace (the
//! caller's thread has joined it), timing repeated answers, and keeping an
//! answer's status and body digest for `--probe-http-expect same`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// The time of whole answers (request sent to the last byte read) of
/// repeated `GET`s to one path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub requests: usize,
    pub median: Duration,
    pub p95: Duration,
}

impl Latency {
    /// Median and 95th percentile (nearest rank) of `times`; `None` when
    /// empty.
    pub fn of(mut times: Vec<Duration>) -> Option<Latency> {
        if times.is_empty() {
            return None;
        }
        times.sort();
        let rank =
            |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
        Some(Latency {
            requests: times.len(),
            median: rank(0.5),
            p95: rank(0.95),
        })
    }
}

/// An HTTP answer as `--probe-http-expect same` compares it: the status
/// code and the body (headers differ between any two runs: dates, ids).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HttpAnswer {
    pub status: u16,
    /// Body bytes (read up to 64 MiB).
    pub bytes: u64,
    /// `sha256:…` of the body.
    pub digest: String,
    /// The body's first bytes, for people (lossy UTF-8, one line).
    pub start: String,
}

impl HttpAnswer {
    /// `status 200, 1.2 KB body sha256:0123456789ab "<html>…"`.
    pub fn describe(&self) -> String {
        let short = self.digest.get(..19).unwrap_or(&self.digest);
        format!(
            "status {}, {}-byte body {short}… {:?}",
            self.status, self.bytes, self.start
        )
    }
}

/// `requests` more `GET`s of `path`, one after another, each timed from
/// connecting to the end of the answer; stops at the first failure or at
/// the probe's deadline (the figures then cover what was answered).
pub(super) fn timed_gets(
    port: u16,
    path: &str,
    requests: usize,
    deadline: Instant,
) -> Option<Latency> {
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let begun = Instant::now();
        match http_get(port, path, left, Answer::Whole) {
            Ok((code, _, _)) if (200..400).contains(&code) => times.push(begun.elapsed()),
            _ => break,
        }
    }
    Latency::of(times)
}

/// Answers read for timing stop after this much (a probe path is not a
/// download).
const MAX_TIMED_ANSWER: u64 = 64 << 20;

/// Connects to `127.0.0.1:port` until it accepts, the container ends, or
/// the deadline passes.
pub(super) fn wait_listen(
    port: u16,
    started: Instant,
    deadline: Instant,
    alive: &Path,
    timeout: Duration,
) -> Result<Duration, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(started.elapsed());
        }
        if !alive.exists() {
            return Err(format!(
                "the container exited before it listened on port {port}"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing listened on port {port} within --probe-timeout {}",
                crate::cleanup::humantime_short(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How much of an answer [`http_get`] reads.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Answer {
    /// Up to the status line: the probe's verdict.
    StatusLine,
    /// To the server's close (at most [`MAX_TIMED_ANSWER`]): a timed request.
    Whole,
    /// The whole answer, kept as an [`HttpAnswer`].
    Kept,
}

/// `GET path` over HTTP/1.0; the status code, the status line, and with
/// [`Answer::Kept`] the answer.
pub(super) fn http_get(
    port: u16,
    path: &str,
    timeout: Duration,
    answer: Answer,
) -> std::io::Result<(u16, String, Option<HttpAnswer>)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slim-probe\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < 8192 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default())
        .trim()
        .to_string();
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP answer: {line:?}"),
            )
        })?;
    match answer {
        Answer::StatusLine => Ok((code, line, None)),
        Answer::Whole => {
            std::io::copy(&mut (&mut s).take(MAX_TIMED_ANSWER), &mut std::io::sink())?;
            Ok((code, line, None))
        }
        Answer::Kept => {
            let mut rest = head;
            (&mut s)
                .take(MAX_TIMED_ANSWER.saturating_sub(rest.len() as u64))
                .read_to_end(&mut rest)?;
            Ok((code, line, Some(kept_answer(code, &rest))))
        }
    }
}

/// The body of a whole HTTP/1.0 answer (after the blank line that ends the
/// headers; none without one).
pub(super) fn kept_answer(status: u16, whole: &[u8]) -> HttpAnswer {
    use sha2::Digest as _;
    let body = whole
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &whole[i + 4..])
        .or_else(|| {
            whole
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| &whole[i + 2..])
        })
        .unwrap_or_default();
    let start: String = String::from_utf8_lossy(&body[..body.len().min(60)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HttpAnswer {
        status,
        bytes: body.len() as u64,
        digest: format!("sha256:{:x}", sha2::Sha256::digest(body)),
        start,
    }
}
