//! Tripwires that record any attempt to reach a registry.
//!
//! [`Tripwire::start`] listens on a loopback port meant to be named as
//! `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`: every HTTP client that honours
//! them (slim's does) connects here first, whatever host it wants. Each
//! connection is recorded with its first line (`CONNECT
//! registry-1.docker.io:443 HTTP/1.1`) and refused with a 502. It also
//! writes a `DOCKER_CONFIG` whose `credsStore` helper records each time it
//! is asked for credentials and then fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct Tripwire {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    helper_log: PathBuf,
    bin_dir: PathBuf,
}

impl Tripwire {
    /// Starts the listener and writes the helper into `dir` (a test's
    /// context directory): `dir/tripwire-bin/docker-credential-tripwire`.
    pub fn start(dir: &Path) -> Tripwire {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the tripwire");
        let port = listener.local_addr().expect("tripwire address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut first = String::new();
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let _ = BufReader::new(&stream).read_line(&mut first);
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(first.trim().to_string());
                let _ = (&stream).write_all(b"HTTP/1.1 502 Tripwire\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let bin_dir = dir.join("tripwire-bin");
        std::fs::create_dir_all(&bin_dir).expect("creating the tripwire bin dir");
        let helper_log = dir.join("tripwire-helper.log");
        let helper = bin_dir.join("docker-credential-tripwire");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nread server\necho \"$1 $server\" >> '{}'\necho 'tripwire: no registry may be contacted' >&2\nexit 1\n",
                helper_log.display()
            ),
        )
        .expect("writing the tripwire helper");
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the tripwire helper");
        Tripwire {
            port,
            seen,
            helper_log,
            bin_dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for slim: every proxy variable points here, nothing is
    /// exempt, and `PATH` finds the helper first.
    pub fn env(&self) -> Vec<(String, String)> {
        let url = self.proxy_url();
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env: Vec<(String, String)> = [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ]
        .iter()
        .map(|k| (k.to_string(), url.clone()))
        .collect();
        env.push(("NO_PROXY".into(), String::new()));
        env.push(("no_proxy".into(), String::new()));
        env.push(("PATH".into(), path));
        env
    }

    /// A `config.json` value whose every credential lookup runs the helper.
    pub fn docker_config() -> serde_json::Value {
        serde_json::json!({"auths": {}, "credsStore": "tripwire"})
    }

    /// First lines of the connections made to the proxy.
    pub fn connections(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the credential helper was asked (`get SERVER` lines).
    pub fn helper_calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.helper_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}
