//! A real Prometheus Pushgateway (Debian's `prometheus-pushgateway`) on a
//! free loopback port, for `slim batch --pushgateway`; what it holds is read
//! back from its `/metrics`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::http;
use super::process::spawn_tethered;
use super::registry::{free_port, runs_dir};

pub const PUSHGATEWAY_BIN: &str = "prometheus-pushgateway";

pub struct Pushgateway {
    pub addr: String,
    child: Mutex<Child>,
    _dir: tempfile::TempDir,
}

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pushgateway-{}-", std::process::id()))
            .tempdir_in(runs_dir())
            .expect("creating the pushgateway dir");
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST));
            let log = std::fs::File::create(dir.path().join("pushgateway.log")).unwrap();
            let mut cmd = Command::new(PUSHGATEWAY_BIN);
            cmd.arg(format!("--web.listen-address={addr}"))
                .arg(format!(
                    "--persistence.file={}",
                    dir.path().join("metrics.data").display()
                ))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            let mut child = spawn_tethered(cmd).unwrap_or_else(|e| {
                panic!("cannot start {PUSHGATEWAY_BIN}: {e} (is prometheus-pushgateway installed?)")
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            let ready = loop {
                if let Ok(r) = http::get(&addr, "/-/ready")
                    && r.status == 200
                {
                    break true;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break false; // the port was taken: another one
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("the Pushgateway did not get ready on {addr}");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if ready {
                return Pushgateway {
                    addr,
                    child: Mutex::new(child),
                    _dir: dir,
                };
            }
        }
        panic!(
            "the Pushgateway exited at start five times (log in {})",
            dir.path().display()
        );
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The samples it serves, parsed from the text format.
    pub fn samples(&self) -> Vec<Sample> {
        // Chunked: read with a full HTTP client.
        let text = reqwest::blocking::get(format!("{}/metrics", self.url()))
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("GET /metrics of the Pushgateway");
        parse_samples(&text)
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Samples of a Prometheus text exposition (comments skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("NAME VALUE");
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                // Label values here never hold `",` (names, numbers, paths).
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n.to_string(), labels)
            }
            None => (head.to_string(), BTreeMap::new()),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}
