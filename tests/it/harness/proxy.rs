//! A fault-injecting reverse proxy on its own loopback port, in front of a
//! real registry (or any HTTP/1.1 server): it forwards every request,
//! points the `Location`s the upstream sends back at itself, records what
//! clients sent (headers included, so tests can see where credentials went)
//! and misbehaves when a [`Rule`] says so: canned answers, 5xx and 429
//! bursts, connections reset in the middle of a body, stalls, bodies that
//! trickle, an upstream that goes away and comes back.
//!
//! Requests and answers are buffered whole (test images are small); the
//! faults are applied when the answer is written to the client. With no
//! upstream set (or one that does not answer) the proxy says 502, as a
//! load balancer in front of a registry being restarted would.

use std::io::{BufReader, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::{self, Request, Response};

/// What a rule does to a request it matches.
#[derive(Clone)]
pub enum Action {
    /// Answer with what the function returns; nothing is forwarded.
    Respond(Arc<dyn Fn(&Request) -> Response + Send + Sync>),
    /// Answer `status` with a Distribution error body and, if set,
    /// `Retry-After: VALUE`; nothing is forwarded.
    Fail {
        status: u16,
        retry_after: Option<String>,
    },
    /// Forward, then send the head and `after` body bytes, then reset the
    /// connection (TCP RST).
    ResetAfter(usize),
    /// Forward, send the head and `after` body bytes, say nothing for
    /// `pause`, then send the rest (if the client is still there).
    StallAfter { after: usize, pause: Duration },
    /// Forward, send the head at once and the body at this many bytes per
    /// second, until it is sent or the client goes away.
    Drip { bytes_per_sec: u64 },
    /// Forward, then send nothing at all (not even the head) for `pause`,
    /// then close.
    Silent { pause: Duration },
    /// Reset the connection without answering; nothing is forwarded.
    Drop,
    /// Read `after` bytes of the request's body, then reset the connection
    /// (an upload cut in the middle); nothing is forwarded.
    ResetReading(usize),
    /// Run the function (e.g. restart the registry), then reset the
    /// connection without answering, as a restart would.
    Hook(Arc<dyn Fn() + Send + Sync>),
}

impl Action {
    /// [`Action::Respond`] from a closure.
    pub fn respond(f: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Action {
        Action::Respond(Arc::new(f))
    }

    /// [`Action::Fail`].
    pub fn fail(status: u16, retry_after: Option<&str>) -> Action {
        Action::Fail {
            status,
            retry_after: retry_after.map(str::to_string),
        }
    }

    /// A `307 Temporary Redirect` to `base` (`http://HOST:PORT`) plus the
    /// request's own target.
    pub fn redirect_to(base: &str) -> Action {
        let base = base.to_string();
        Action::respond(move |req| {
            Response::new(307).header("Location", format!("{base}{}", req.target))
        })
    }
}

/// Which requests a rule applies to, what it does and how often.
pub struct Rule {
    /// `None`: any method.
    method: Option<String>,
    /// A substring of the request target (path and query).
    target_contains: String,
    /// `None`: forever; otherwise the number of hits left.
    remaining: Option<usize>,
    action: Action,
    hits: Arc<AtomicUsize>,
}

/// Counts the requests a rule acted on.
#[derive(Clone, Debug)]
pub struct Hits(Arc<AtomicUsize>);

impl Hits {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

struct State {
    addr: String,
    upstream: Mutex<Option<String>>,
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<Request>>,
    /// Sent upstream as `Authorization` instead of whatever the client sent
    /// (an origin that needs no client credentials, like a pre-signed URL).
    upstream_auth: Mutex<Option<String>>,
    /// `HOST:PORT` the upstream's `Location`s are pointed at (default: the
    /// proxy itself).
    locations_to: Mutex<Option<String>>,
}

/// A running proxy; dropping it stops accepting connections.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`HOST:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let p = Proxy::start_detached();
        p.set_upstream(Some(upstream));
        p
    }

    /// A proxy with no upstream yet: everything not answered by a rule gets
    /// 502 until [`Proxy::set_upstream`].
    pub fn start_detached() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(State {
            addr: addr.to_string(),
            upstream: Mutex::new(None),
            rules: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            upstream_auth: Mutex::new(None),
            locations_to: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stop2) = (state.clone(), stop.clone());
        std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let st = st.clone();
                    let _ = std::thread::Builder::new()
                        .name("proxy-conn".into())
                        .spawn(move || serve(stream, &st));
                }
            })
            .expect("starting the proxy thread");
        Proxy { addr, state, stop }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT/REPO_TAG`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// Where requests go (`None`: nowhere, 502).
    pub fn set_upstream(&self, upstream: Option<&str>) {
        *lock(&self.state.upstream) = upstream.map(str::to_string);
    }

    /// Send `Authorization: VALUE` upstream in place of the client's.
    pub fn set_upstream_auth(&self, value: Option<String>) {
        *lock(&self.state.upstream_auth) = value;
    }

    /// Point the upstream's `Location`s at `addr` (`HOST:PORT`) instead of
    /// at the proxy: upload sessions continue on another origin.
    pub fn point_locations_at(&self, addr: Option<&str>) {
        *lock(&self.state.locations_to) = addr.map(str::to_string);
    }

    /// Adds a rule (checked in the order added; the first live match wins).
    /// `method` `"*"` matches any; `times` `None` is forever.
    pub fn on(
        &self,
        method: &str,
        target_contains: &str,
        times: Option<usize>,
        action: Action,
    ) -> Hits {
        let hits = Arc::new(AtomicUsize::new(0));
        lock(&self.state.rules).push(Rule {
            method: (method != "*").then(|| method.to_string()),
            target_contains: target_contains.to_string(),
            remaining: times,
            action,
            hits: hits.clone(),
        });
        Hits(hits)
    }

    /// Removes every rule: from now on the proxy only forwards.
    pub fn clear_rules(&self) {
        lock(&self.state.rules).clear();
    }

    /// Every request clients sent, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state.requests).clone()
    }

    /// Requests that carried an `Authorization` header.
    pub fn requests_with_credentials(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.header("authorization").is_some())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The action of the first live rule matching `req`, counting the hit.
fn action_for(st: &State, req: &Request) -> Option<Action> {
    let mut rules = lock(&st.rules);
    let rule = rules.iter_mut().find(|r| {
        r.remaining != Some(0)
            && r.method.as_deref().is_none_or(|m| m == req.method)
            && req.target.contains(&r.target_contains)
    })?;
    if let Some(n) = &mut rule.remaining {
        *n -= 1;
    }
    rule.hits.fetch_add(1, Ordering::SeqCst);
    Some(rule.action.clone())
}

fn serve(stream: TcpStream, st: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(Some(mut req)) = http::read_head(&mut reader) {
        let action = action_for(st, &req);
        if let Some(Action::ResetReading(after)) = action {
            lock(&st.requests).push(req.clone());
            let length = req.header("content-length").and_then(|v| v.parse().ok());
            let n = length.map_or(after, |len: usize| after.min(len));
            let _ = std::io::copy(&mut (&mut reader).take(n as u64), &mut std::io::sink());
            reset(&writer);
            return;
        }
        if http::read_body(&mut reader, &mut req).is_err() {
            return;
        }
        lock(&st.requests).push(req.clone());
        let keep_open = match action {
            Some(Action::Respond(f)) => write_whole(&mut writer, &req, &f(&req)),
            Some(Action::Fail {
                status,
                retry_after,
            }) => {
                let mut r = Response::new(status).json(&serde_json::json!({"errors": [{
                    "code": "UNAVAILABLE", "message": "proxy: failing on purpose"}]}));
                if let Some(v) = retry_after {
                    r = r.header("Retry-After", v);
                }
                write_whole(&mut writer, &req, &r)
            }
            Some(Action::Drop) => {
                reset(&writer);
                false
            }
            Some(Action::Hook(f)) => {
                f();
                reset(&writer);
                false
            }
            Some(fault) => {
                let resp = forward(st, &req);
                write_faulty(&mut writer, &req, &resp, &fault)
            }
            None => {
                let resp = forward(st, &req);
                write_whole(&mut writer, &req, &resp)
            }
        };
        if !keep_open {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Closes with a TCP RST (SO_LINGER 0) instead of a FIN.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Hop-by-hop headers and those the proxy sets itself.
const NOT_FORWARDED: [&str; 6] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "authorization",
];

/// Sends `req` upstream and returns the answer, its `Location` pointed back
/// at the proxy; 502 when there is no upstream or it does not answer.
fn forward(st: &State, req: &Request) -> Response {
    let Some(upstream) = lock(&st.upstream).clone() else {
        return Response::new(502).body("proxy: no upstream\n");
    };
    let mut headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter(|(k, _)| !NOT_FORWARDED.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let injected = lock(&st.upstream_auth).clone();
    match (&injected, req.header("authorization")) {
        (Some(v), _) => headers.push(("Authorization", v)),
        (None, Some(v)) => headers.push(("Authorization", v)),
        (None, None) => {}
    }
    let raw = match http::request(&upstream, &req.method, &req.target, &headers, &req.body) {
        Ok(r) => r,
        Err(e) => return Response::new(502).body(format!("proxy: upstream {upstream}: {e}\n")),
    };
    let chunked = raw
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        http::read_chunked(&mut Cursor::new(&raw.body)).unwrap_or_default()
    } else {
        raw.body.clone()
    };
    let mut resp = Response::new(raw.status).body(body);
    let here = lock(&st.locations_to)
        .clone()
        .unwrap_or_else(|| st.addr.clone());
    for (k, v) in &raw.headers {
        if [
            "connection",
            "transfer-encoding",
            "content-length",
            "keep-alive",
        ]
        .contains(&k.as_str())
        {
            continue;
        }
        let v = if k == "location" {
            v.replace(&format!("//{upstream}"), &format!("//{here}"))
        } else {
            v.clone()
        };
        resp = resp.header(k, v);
    }
    if req.method == "HEAD"
        && let Some(len) = raw.content_length()
    {
        // A HEAD answer carries the length of the body it did not send.
        resp.truncate_at = Some(len);
    }
    resp
}

/// The status line and headers; for HEAD, `truncate_at` holds the length to
/// announce.
fn head(req: &Request, resp: &Response) -> Vec<u8> {
    let len = if req.method == "HEAD" {
        resp.truncate_at.unwrap_or(resp.body.len())
    } else {
        resp.body.len()
    };
    let mut h = format!("HTTP/1.1 {} Status\r\n", resp.status);
    for (k, v) in &resp.headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    h.into_bytes()
}

fn body_of<'a>(req: &Request, resp: &'a Response) -> &'a [u8] {
    if req.method == "HEAD" {
        &[]
    } else {
        &resp.body
    }
}

/// Writes the whole answer; true when the connection may be reused.
fn write_whole(w: &mut TcpStream, req: &Request, resp: &Response) -> bool {
    w.write_all(&head(req, resp)).is_ok() && w.write_all(body_of(req, resp)).is_ok()
}

/// Writes the answer with `fault` applied; false: the connection is done.
fn write_faulty(w: &mut TcpStream, req: &Request, resp: &Response, fault: &Action) -> bool {
    let body = body_of(req, resp);
    match fault {
        Action::Silent { pause } => {
            std::thread::sleep(*pause);
            false
        }
        Action::ResetAfter(after) => {
            let n = (*after).min(body.len());
            let _ = w.write_all(&head(req, resp));
            let _ = w.write_all(&body[..n]);
            let _ = w.flush();
            // Let the bytes leave before the RST discards them.
            std::thread::sleep(Duration::from_millis(100));
            reset(w);
            false
        }
        Action::StallAfter { after, pause } => {
            let n = (*after).min(body.len());
            let ok = w.write_all(&head(req, resp)).is_ok() && w.write_all(&body[..n]).is_ok();
            std::thread::sleep(*pause);
            ok && w.write_all(&body[n..]).is_ok()
        }
        Action::Drip { bytes_per_sec } => {
            if w.write_all(&head(req, resp)).is_err() {
                return false;
            }
            let per_write = (*bytes_per_sec).clamp(1, 64 << 10) as usize;
            let pause = Duration::from_secs_f64(per_write as f64 / *bytes_per_sec as f64);
            for chunk in body.chunks(per_write) {
                if w.write_all(chunk).is_err() {
                    return false;
                }
                std::thread::sleep(pause);
            }
            true
        }
        _ => write_whole(w, req, resp),
    }
}
