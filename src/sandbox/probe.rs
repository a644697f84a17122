//! Probes: does the image still do its job?
//!
//! - [`Probe::Cmd`]: a command in the image (`/bin/sh -c` when the image has
//!   a shell, else split into argv); passes on exit 0.
//! - [`Probe::Tcp`]: the entrypoint starts listening on the port.
//! - [`Probe::Http`]: that, then `GET path` answers 2xx or 3xx.
//!
//! Network probes share one container running the entrypoint (or the
//! run's command). They connect from a slim thread that has joined the
//! container's network namespace (`setns` on `/proc/PID/ns/net`, the pid
//! from `runtime state`): the container has loopback only, and nothing
//! is published on the host. Time to ready runs from the runtime's start
//! to the first accepted connection.

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::http::{Answer, http_get, timed_gets, wait_listen};
pub use super::http::{HttpAnswer, Latency};
use super::{RunSpec, Sandbox};

/// One probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A command; passes on exit 0.
    Cmd(String),
    /// `GET http://127.0.0.1:PORT/PATH` inside the container; passes on
    /// 2xx/3xx.
    Http { port: u16, path: String },
    /// The port accepts connections.
    Tcp { port: u16 },
}

impl Probe {
    /// `PORT[/PATH]` (`--probe-http`); the path defaults to `/`.
    pub fn parse_http(s: &str) -> Result<Probe, String> {
        let (port, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, "/"),
        };
        Ok(Probe::Http {
            port: parse_port(port, s)?,
            path: path.to_string(),
        })
    }

    /// `PORT` (`--probe-tcp`).
    pub fn parse_tcp(s: &str) -> Result<Probe, String> {
        Ok(Probe::Tcp {
            port: parse_port(s, s)?,
        })
    }

    fn port(&self) -> Option<u16> {
        match self {
            Probe::Cmd(_) => None,
            Probe::Http { port, .. } | Probe::Tcp { port } => Some(*port),
        }
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{whole:?}: expected PORT[/PATH] with a port from 1 to 65535"))
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Cmd(c) => write!(f, "command {c:?}"),
            Probe::Http { port, path } => write!(f, "HTTP GET :{port}{path}"),
            Probe::Tcp { port } => write!(f, "TCP :{port}"),
        }
    }
}

/// How probes run.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Per probe: how long a command may run, or how long a port may take
    /// to accept connections and answer.
    pub timeout: Duration,
    /// Env, user, workdir and limits; `command` replaces the entrypoint
    /// that network probes start.
    pub base: RunSpec,
    /// HTTP probes that pass: this many more requests, timed, for the
    /// latency figures (0: none).
    pub requests: usize,
    /// HTTP probes keep their first answer's status and body
    /// ([`ProbeResult::answer`]), for `--probe-http-expect same`.
    pub keep_answers: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: Duration::from_secs(60),
            base: RunSpec::default(),
            requests: DEFAULT_REQUESTS,
            keep_answers: false,
        }
    }
}

/// `--probe-requests`: timed requests per passing HTTP probe.
pub const DEFAULT_REQUESTS: usize = 20;

/// What a probe found.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    /// The probe, as [`Probe`]'s `Display` names it.
    pub probe: String,
    pub passed: bool,
    /// One line: why it passed or failed.
    pub message: String,
    /// The last output of the container (stdout and stderr interleaved).
    pub output_tail: String,
    /// From the runtime's start to the port's first accepted connection
    /// (network probes), or to the command's end.
    pub time_to_ready: Option<Duration>,
    /// Peak memory of the container, where the cgroups tell.
    pub peak_memory: Option<u64>,
    /// HTTP probes that passed: the timed requests after the first.
    pub latency: Option<Latency>,
    /// HTTP probes with [`ProbeOptions::keep_answers`]: the first answer.
    pub answer: Option<HttpAnswer>,
}

/// The last `max` bytes written to it.
pub(crate) struct Tail {
    max: usize,
    bytes: VecDeque<u8>,
}

impl Tail {
    pub fn new(max: usize) -> Tail {
        Tail {
            max,
            bytes: VecDeque::new(),
        }
    }

    fn push(&mut self, b: &[u8]) {
        self.bytes.extend(b);
        let over = self.bytes.len().saturating_sub(self.max);
        self.bytes.drain(..over);
    }

    pub fn text(&self) -> String {
        let v: Vec<u8> = self.bytes.iter().copied().collect();
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// Reads `r` to its end into `tail`.
pub(crate) fn collect(mut r: Box<dyn Read + Send>, tail: &Mutex<Tail>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Ok(mut t) = tail.lock() {
            t.push(&buf[..n]);
        }
    }
}

/// Splits a command line into argv: whitespace separates, `'…'` and `"…"`
/// quote, `\` escapes (for images without a shell).
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub(crate) fn run_all(
    sb: &Sandbox,
    probes: &[Probe],
    opts: &ProbeOptions,
) -> Result<Vec<ProbeResult>> {
    let mut results: Vec<Option<ProbeResult>> = vec![None; probes.len()];
    for (i, p) in probes.iter().enumerate() {
        if let Probe::Cmd(cmd) = p {
            results[i] = Some(command_probe(sb, p, cmd, opts)?);
        }
    }
    let net: Vec<usize> = (0..probes.len())
        .filter(|i| probes[*i].port().is_some())
        .collect();
    if !net.is_empty() {
        let found = network_probes(sb, probes, &net, opts)?;
        for (i, r) in net.into_iter().zip(found) {
            results[i] = Some(r);
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every probe ran"))
        .collect())
}

fn command_probe(sb: &Sandbox, p: &Probe, cmd: &str, opts: &ProbeOptions) -> Result<ProbeResult> {
    let argv = if sb.rootfs().missing("/bin/sh").is_none() {
        vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()]
    } else {
        split_args(cmd)
    };
    let spec = RunSpec {
        command: Some(argv),
        capture: true,
        timeout: Some(opts.timeout),
        ..opts.base.clone()
    };
    let (passed, message, out) = match sb.run(&spec) {
        Ok(o) if o.timed_out => (
            false,
            format!(
                "did not finish within --probe-timeout {}",
                crate::cleanup::humantime_short(opts.timeout)
            ),
            Some(o),
        ),
        Ok(o) if o.exit_code == 0 => (true, "exited 0".to_string(), Some(o)),
        Ok(o) => (false, format!("exited {}", o.exit_code), Some(o)),
        // The program is not in the image: that is the probe's finding.
        Err(e) => (false, format!("{e:#}"), None),
    };
    Ok(ProbeResult {
        probe: p.to_string(),
        passed,
        message,
        output_tail: out
            .as_ref()
            .map(|o| o.output_tail.clone())
            .unwrap_or_default(),
        time_to_ready: out.as_ref().map(|o| o.duration),
        latency: None,
        answer: None,
        peak_memory: out.and_then(|o| o.peak_memory),
    })
}

/// What the network thread found for one probe.
struct NetFinding {
    passed: bool,
    /// Failed because the container ended.
    exited: bool,
    message: String,
    ready: Option<Duration>,
    latency: Option<Latency>,
    answer: Option<HttpAnswer>,
}

fn network_probes(
    sb: &Sandbox,
    probes: &[Probe],
    which: &[usize],
    opts: &ProbeOptions,
) -> Result<Vec<ProbeResult>> {
    let spec = RunSpec {
        capture: true,
        ..opts.base.clone()
    };
    let fail_all = |message: String, tail: String, peak: Option<u64>| {
        which
            .iter()
            .map(|i| ProbeResult {
                probe: probes[*i].to_string(),
                passed: false,
                message: message.clone(),
                output_tail: tail.clone(),
                time_to_ready: None,
                peak_memory: peak,
                latency: None,
                answer: None,
            })
            .collect::<Vec<_>>()
    };
    let process = match sb.process(&spec) {
        Ok(p) => p,
        Err(e) => return Ok(fail_all(format!("{e:#}"), String::new(), None)),
    };
    let mut c = sb.start(&process, &spec.limits, true)?;
    let deadline = c.started + opts.timeout;
    // The container's init pid, once the runtime has started it.
    let pid = loop {
        if let Some(status) = c.exited() {
            let code = super::exit_code(Some(status));
            let tail = c.tail();
            let peak = c.finish();
            return Ok(fail_all(
                format!("the container exited (code {code}) before it listened"),
                tail,
                peak,
            ));
        }
        if let Some(pid) = c.pid() {
            break pid;
        }
        if Instant::now() >= deadline {
            c.kill();
            let tail = c.tail();
            let peak = c.finish();
            return Ok(fail_all(
                "the container did not start within --probe-timeout".into(),
                tail,
                peak,
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let netns = match std::fs::File::open(format!("/proc/{pid}/ns/net")) {
        Ok(f) => f,
        Err(e) => {
            // The process ended between `state` and now: report its exit.
            let until = Instant::now() + Duration::from_secs(5);
            let status = loop {
                match c.exited() {
                    Some(s) => break Some(s),
                    None if Instant::now() >= until => break None,
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            if status.is_none() {
                c.kill();
            }
            let tail = c.tail();
            let peak = c.finish();
            let message = match status {
                Some(s) => format!(
                    "the container exited (code {}) before it listened",
                    super::exit_code(Some(s))
                ),
                None => format!("cannot join the container's network namespace (pid {pid}): {e}"),
            };
            return Ok(fail_all(message, tail, peak));
        }
    };
    let started = c.started;
    let wanted: Vec<Probe> = which.iter().map(|i| probes[*i].clone()).collect();
    let timeout = opts.timeout;
    let requests = opts.requests;
    let keep_answers = opts.keep_answers;
    let findings = std::thread::scope(|s| {
        s.spawn(move || -> Result<Vec<NetFinding>> {
            // This thread only: it joins the container's network.
            rustix::thread::move_into_link_name_space(
                netns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(std::io::Error::from)
            .context("joining the container's network namespace")?;
            let alive = Path::new("/proc").join(pid.to_string());
            let mut ready_at: Vec<(u16, Result<Duration, String>)> = Vec::new();
            let mut out = Vec::new();
            for p in &wanted {
                let port = p.port().expect("network probe");
                let ready = match ready_at.iter().find(|(q, _)| *q == port) {
                    Some((_, r)) => r.clone(),
                    None => {
                        let r = wait_listen(port, started, deadline, &alive, timeout);
                        ready_at.push((port, r.clone()));
                        r
                    }
                };
                out.push(match (ready, p) {
                    (Err(why), _) => NetFinding {
                        passed: false,
                        exited: why.starts_with("the container exited"),
                        message: why,
                        ready: None,
                        latency: None,
                        answer: None,
                    },
                    (Ok(t), Probe::Tcp { .. }) => NetFinding {
                        passed: true,
                        exited: false,
                        message: format!("port {port} accepted a connection"),
                        ready: Some(t),
                        latency: None,
                        answer: None,
                    },
                    (Ok(t), Probe::Http { path, .. }) => {
                        let left = deadline
                            .saturating_duration_since(Instant::now())
                            .max(Duration::from_secs(1));
                        let read = if keep_answers {
                            Answer::Kept
                        } else {
                            Answer::StatusLine
                        };
                        match http_get(port, path, left, read) {
                            Ok((code, line, answer)) => {
                                let passed = (200..400).contains(&code);
                                let latency = if passed {
                                    timed_gets(port, path, requests, deadline)
                                } else {
                                    None
                                };
                                NetFinding {
                                    passed,
                                    exited: false,
                                    message: format!("GET http://127.0.0.1:{port}{path}: {line}"),
                                    ready: Some(t),
                                    latency,
                                    answer,
                                }
                            }
                            Err(e) => NetFinding {
                                passed: false,
                                exited: false,
                                message: format!("GET http://127.0.0.1:{port}{path}: {e}"),
                                ready: Some(t),
                                latency: None,
                                answer: None,
                            },
                        }
                    }
                    (Ok(_), Probe::Cmd(_)) => unreachable!("not a network probe"),
                });
            }
            Ok(out)
        })
        .join()
        .expect("probe thread panicked")
    });
    let mut findings = findings?;
    // A container that ended on its own: say with what code.
    if findings.iter().any(|f| f.exited) {
        let until = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match c.exited() {
                Some(s) => break Some(s),
                None if Instant::now() >= until => break None,
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        if let Some(s) = status {
            let code = super::exit_code(Some(s));
            for f in findings.iter_mut().filter(|f| f.exited) {
                f.message = f.message.replace(
                    "the container exited",
                    &format!("the container exited (code {code})"),
                );
            }
        }
    }
    c.kill();
    let tail = c.tail();
    let peak = c.finish();
    Ok(which
        .iter()
        .zip(findings)
        .map(|(i, f)| ProbeResult {
            probe: probes[*i].to_string(),
            passed: f.passed,
            message: f.message,
            output_tail: tail.clone(),
            time_to_ready: f.ready,
            peak_memory: peak,
            latency: f.latency,
            answer: f.answer,
        })
        .collect())
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
