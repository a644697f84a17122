//! A request with a body of unknown length, sent chunked (RFC 9112 §7.1)
//! while it is written; the last [`HOLD_BACK`] bytes and the end go out only
//! in [`Upload::finish`], so the peer cannot act on a body slim may still
//! abandon.

use std::io::{self, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use super::{CHUNK, Conn, HOLD_BACK, Limits, Response, request_head};

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
