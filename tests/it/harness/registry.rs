//! The real Distribution registry (`/usr/bin/docker-registry`, Debian's
//! `docker-registry` package, CNCF Distribution 2.8) on a free loopback port.
//!
//! Three shared flavours, each started once per test binary on first use:
//! [`Registry::shared`] (anonymous), [`Registry::shared_basic`] (htpasswd,
//! `slim`/`s3cret`) and [`Registry::shared_token`] (`auth: token`, backed by
//! the in-process [`TokenIssuer`]). Tests that share one must use their own
//! repository names ([`super::unique_name`]). Tests that need a private or
//! tweaked registry use [`Registry::start`] with a [`RegistryConfig`]; such a
//! registry is killed when dropped. Shared ones live in statics that are never
//! dropped, so every registry is spawned through
//! [`super::process::spawn_tethered`] and dies with the test binary.
//!
//! With [`RegistryConfig::tls`] the registry serves HTTPS (`http.tls`) on the
//! machine's first non-loopback IPv4 address instead (slim and Docker use
//! plain HTTP for loopback hosts, so TLS can only be tested elsewhere), with
//! a CA and a server certificate for that IP made by the `openssl` CLI in the
//! registry's directory; [`Registry::shared_tls`] is the shared one.
//!
//! Storage, config, htpasswd/certificates and the log live in one directory
//! under `CARGO_TARGET_TMPDIR/slim-it/`; directories left by earlier test
//! binaries that are no longer running are swept on the first start.
//!
//! The log file holds both the registry's own logrus lines (stderr) and its
//! access log (stdout). Distribution 2.8 writes the access log through
//! gorilla's `CombinedLoggingHandler`, one Apache "combined" line per
//! response:
//!
//! ```text
//! 127.0.0.1 - - [25/Nov/2026:22:13:01 +0000] "HEAD /v2/demo/blobs/sha256:78… HTTP/1.1" 404 157 "" "skopeo/1.9.3"
//! ```
//!
//! [`Registry::requests`] and [`Registry::count_requests`] parse those lines
//! (the logrus `msg="response completed"` lines are ignored, so nothing is
//! counted twice).

use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::http;
use super::judges::Skopeo;
use super::process::spawn_tethered;
use super::token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenIssuer};
use super::{PASSWORD, USER};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 5;

/// How clients must authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No authentication at all.
    Anonymous,
    /// `auth: htpasswd` with [`USER`]/[`PASSWORD`] (bcrypt, cost 4).
    Basic,
    /// `auth: token`: Bearer tokens from a [`TokenIssuer`] that accepts
    /// [`USER`]/[`PASSWORD`].
    Token,
}

/// What goes into the registry's `config.yml`. Small on purpose: the
/// harness writes `version`, `log`, `storage`, `http` and `auth`; anything
/// else goes in [`extra_yaml`](Self::extra_yaml) (other top-level sections)
/// or [`env`](Self::env) (`REGISTRY_SECTION_KEY=value` overrides, which
/// Distribution applies on top of the file for any key).
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub auth: RegistryAuth,
    /// `storage.delete.enabled` (manifest and blob DELETE). Default true.
    pub delete_enabled: bool,
    /// `storage.maintenance.readonly.enabled`: pushes get 405. Default false.
    pub read_only: bool,
    /// Appended verbatim as top-level YAML, e.g.
    /// `"validation:\n  disabled: true\n"`. Must not repeat a section above.
    pub extra_yaml: String,
    /// Extra environment for the registry process.
    pub env: Vec<(String, String)>,
    /// Serve HTTPS on the first non-loopback IPv4 address, with a
    /// certificate signed by a CA made for this registry
    /// ([`Registry::ca_cert`]). Default false.
    pub tls: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            auth: RegistryAuth::Anonymous,
            delete_enabled: true,
            read_only: false,
            extra_yaml: String::new(),
            env: Vec::new(),
            tls: false,
        }
    }
}

impl RegistryConfig {
    pub fn anonymous() -> Self {
        Self::default()
    }

    pub fn basic() -> Self {
        RegistryConfig {
            auth: RegistryAuth::Basic,
            ..Self::default()
        }
    }

    pub fn token() -> Self {
        RegistryConfig {
            auth: RegistryAuth::Token,
            ..Self::default()
        }
    }

    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    pub fn delete_enabled(mut self, on: bool) -> Self {
        self.delete_enabled = on;
        self
    }

    pub fn extra_yaml(mut self, yaml: &str) -> Self {
        self.extra_yaml.push_str(yaml);
        if !self.extra_yaml.ends_with('\n') {
            self.extra_yaml.push('\n');
        }
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// The YAML text for a registry in `dir` listening on `addr`.
    fn render(&self, dir: &Path, addr: &str, issuer: Option<&TokenIssuer>) -> String {
        let q = |p: &Path| yaml_quote(&p.display().to_string());
        let mut y = [
            "version: 0.1".to_string(),
            "log:".into(),
            "  level: info".into(),
            "  formatter: text".into(),
            "  accesslog:".into(),
            "    disabled: false".into(),
            "storage:".into(),
            "  filesystem:".into(),
            format!("    rootdirectory: {}", q(&dir.join("storage"))),
            "  delete:".into(),
            format!("    enabled: {}", self.delete_enabled),
            "  maintenance:".into(),
            "    uploadpurging:".into(),
            "      enabled: false".into(),
            "    readonly:".into(),
            format!("      enabled: {}", self.read_only),
            "http:".into(),
            format!("  addr: {addr}"),
            "  secret: slim-test-http-secret".into(),
        ]
        .join("\n");
        y.push('\n');
        if self.tls {
            y.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                q(&dir.join(SERVER_CERT)),
                q(&dir.join(SERVER_KEY))
            ));
        }
        match self.auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Basic => {
                y.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: slim-test-basic\n    path: {}\n",
                    q(&dir.join("htpasswd"))
                ));
            }
            RegistryAuth::Token => {
                let issuer = issuer.expect("token auth needs a token issuer");
                y.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    yaml_quote(&issuer.realm()),
                    yaml_quote(TOKEN_SERVICE),
                    yaml_quote(TOKEN_ISSUER),
                    q(issuer.cert_path())
                ));
            }
        }
        y.push_str(&self.extra_yaml);
        y
    }
}

fn yaml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    /// The request URI as sent: path and query.
    pub uri: String,
    pub status: u16,
    pub user_agent: String,
}

/// Parse one Apache "combined" access-log line; `None` for anything else.
pub fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    if line.starts_with("time=") {
        return None;
    }
    let start = line.find("] \"")? + 3;
    let (request, after) = line[start..].split_once("\" ")?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_string();
    let uri = parts.next()?.to_string();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = after.split(' ').next()?.parse().ok()?;
    let user_agent = after
        .trim_end()
        .strip_suffix('"')
        .and_then(|s| s.rsplit_once('"'))
        .map(|(_, ua)| ua.to_string())
        .unwrap_or_default();
    Some(AccessLogEntry {
        method,
        uri,
        status,
        user_agent,
    })
}

/// A running registry.
pub struct Registry {
    addr: String,
    dir: PathBuf,
    auth: RegistryAuth,
    tls: bool,
    child: Mutex<Child>,
    issuer: Option<TokenIssuer>,
    /// Owns `dir` for private registries; `None` for shared ones, whose
    /// directory is swept by a later run instead.
    _tempdir: Option<tempfile::TempDir>,
}

impl Registry {
    /// The anonymous registry shared by the whole test binary.
    pub fn shared() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(|| Registry::launch(RegistryConfig::anonymous(), true))
    }

    /// The htpasswd (Basic auth, `slim`/`s3cret`) registry shared by the binary.
    pub fn shared_basic() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(|| Registry::launch(RegistryConfig::basic(), true))
    }

    /// The token-auth registry shared by the binary; its issuer is
    /// [`Registry::token_issuer`].
    pub fn shared_token() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(|| Registry::launch(RegistryConfig::token(), true))
    }

    /// The anonymous HTTPS registry shared by the binary, on the first
    /// non-loopback IPv4 address (panics if there is none).
    pub fn shared_tls() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(|| Registry::launch(RegistryConfig::anonymous().tls(true), true))
    }

    /// A private registry with this config, killed on drop.
    pub fn start(config: RegistryConfig) -> Registry {
        Registry::launch(config, false)
    }

    pub fn start_plain() -> Registry {
        Registry::start(RegistryConfig::anonymous())
    }

    pub fn start_basic() -> Registry {
        Registry::start(RegistryConfig::basic())
    }

    pub fn start_token() -> Registry {
        Registry::start(RegistryConfig::token())
    }

    fn launch(config: RegistryConfig, shared: bool) -> Registry {
        let base = runs_dir();
        let tempdir = tempfile::Builder::new()
            .prefix(&format!("registry-{}-", std::process::id()))
            .tempdir_in(&base)
            .expect("creating a registry temp dir");
        let dir = tempdir.path().to_path_buf();
        let (tempdir, dir) = if shared {
            (None, tempdir.keep())
        } else {
            (Some(tempdir), dir)
        };

        if config.auth == RegistryAuth::Basic {
            let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt hash");
            fs::write(dir.join("htpasswd"), format!("{USER}:{hash}\n")).expect("writing htpasswd");
        }
        let issuer = (config.auth == RegistryAuth::Token).then(|| TokenIssuer::start(&dir));
        let ip = if config.tls {
            let ip = non_loopback_ipv4();
            make_tls_certificates(&dir, ip);
            ip
        } else {
            Ipv4Addr::LOCALHOST
        };

        let mut last_log = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let addr = format!("{ip}:{}", free_port(ip));
            let config_path = dir.join("config.yml");
            fs::write(&config_path, config.render(&dir, &addr, issuer.as_ref()))
                .expect("writing registry config.yml");
            let log_path = dir.join("registry.log");
            let log = File::create(&log_path).expect("creating registry.log");
            let mut cmd = Command::new(REGISTRY_BIN);
            cmd.arg("serve")
                .arg(&config_path)
                .current_dir(&dir)
                .stdin(Stdio::null());
            cmd.stdout(log.try_clone().expect("dup log fd")).stderr(log);
            // Distribution reads REGISTRY_* as config overrides; never let the
            // developer's environment (e.g. containers' REGISTRY_AUTH_FILE) in.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            cmd.envs(config.env.iter().map(|(k, v)| (k, v)));
            let child = spawn_tethered(cmd).unwrap_or_else(|e| {
                panic!("cannot start {REGISTRY_BIN}: {e} (is docker-registry installed?)")
            });
            let mut reg = Registry {
                addr,
                dir: dir.clone(),
                auth: config.auth,
                tls: config.tls,
                child: Mutex::new(child),
                issuer: None,
                _tempdir: None,
            };
            match reg.wait_ready() {
                Ok(()) => {
                    reg.issuer = issuer;
                    reg._tempdir = tempdir;
                    return reg;
                }
                Err(log) if log.contains("address already in use") => {
                    // Someone took the port between our probe and the
                    // registry's bind; try another one.
                    let _ = fs::rename(
                        &log_path,
                        dir.join(format!("registry.log.attempt{attempt}")),
                    );
                    last_log = log;
                    continue;
                }
                Err(log) => panic!(
                    "docker-registry exited before answering on {} (dir {}); log tail:\n{}",
                    reg.addr,
                    dir.display(),
                    tail(&log, 30)
                ),
            }
        }
        panic!(
            "docker-registry could not bind a free port in {START_ATTEMPTS} attempts; last log:\n{}",
            tail(&last_log, 30)
        );
    }

    /// Poll `GET /v2/` until any HTTP answer (401 counts: auth is on; so
    /// does the 400 a TLS registry gives a plain-HTTP request).
    /// `Err(log)` if the process exited; panics on timeout.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait()
            {
                let log = self.log_text();
                return Err(format!("{log}\n(exit status: {status})"));
            }
            if http::get(&self.addr, "/v2/").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.lock().unwrap_or_else(|e| e.into_inner()).kill();
                panic!(
                    "docker-registry did not answer GET http://{}/v2/ within {:?} (dir {}); log tail:\n{}",
                    self.addr,
                    READY_TIMEOUT,
                    self.dir.display(),
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT` (`IP:PORT` for a TLS registry).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://IP:PORT` for a TLS registry).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA (PEM) that signed a TLS registry's certificate.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join(CA_CERT))
    }

    /// A directory holding only that CA as `ca.crt`, for skopeo's
    /// `--cert-dir` (containers/image reads `*.crt` there as CAs).
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join(CERT_DIR))
    }

    /// `127.0.0.1:PORT/REPO_TAG` (e.g. `reference("demo:latest")`).
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{}", self.addr, repo_tag)
    }

    /// `docker://127.0.0.1:PORT/REPO_TAG`, for skopeo.
    pub fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{}", self.addr, repo_tag)
    }

    pub fn auth(&self) -> RegistryAuth {
        self.auth
    }

    /// `Some((USER, PASSWORD))` unless anonymous.
    pub fn credentials(&self) -> Option<(&'static str, &'static str)> {
        (self.auth != RegistryAuth::Anonymous).then_some((USER, PASSWORD))
    }

    /// A skopeo runner with this registry's credentials, if any, trusting
    /// its CA if it serves TLS.
    pub fn skopeo(&self) -> Skopeo {
        let skopeo = match self.credentials() {
            Some((u, p)) => Skopeo::with_creds(u, p),
            None => Skopeo::anonymous(),
        };
        match self.cert_dir() {
            Some(dir) => skopeo.with_cert_dir(&dir),
            None => skopeo,
        }
    }

    /// The token issuer, for [`RegistryAuth::Token`] registries.
    pub fn token_issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    /// The registry's directory (config, storage, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `storage.filesystem.rootdirectory`.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.join("storage")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yml")
    }

    /// The log file: logrus lines and the access log, interleaved.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// The whole log as text.
    pub fn log_text(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_text(), n)
    }

    /// A position in the log; pass it to [`Registry::requests_since`] to see
    /// only what happened after it (useful on a shared registry).
    pub fn log_mark(&self) -> u64 {
        self.settle_log();
        fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0)
    }

    /// Every access-log entry so far.
    pub fn requests(&self) -> Vec<AccessLogEntry> {
        self.requests_since(0)
    }

    /// Access-log entries written after `mark` (see [`Registry::log_mark`]).
    pub fn requests_since(&self, mark: u64) -> Vec<AccessLogEntry> {
        self.settle_log();
        let bytes = fs::read(self.log_path()).unwrap_or_default();
        let from = (mark as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..])
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }

    /// How many requests with this method (case-insensitive) had a URI
    /// containing `path_substring`, e.g.
    /// `count_requests("PUT", "/v2/myrepo/manifests/")`. Every status counts
    /// (401 challenges too); filter [`Registry::requests`] to be pickier.
    pub fn count_requests(&self, method: &str, path_substring: &str) -> usize {
        count_matching(&self.requests(), method, path_substring)
    }

    /// Like [`Registry::count_requests`], only after `mark`.
    pub fn count_requests_since(&self, mark: u64, method: &str, path_substring: &str) -> usize {
        count_matching(&self.requests_since(mark), method, path_substring)
    }

    /// The registry writes an access-log line just after it answers, so a
    /// client can be done before the line is. Wait until the file stops
    /// growing for a moment (at most 2 s).
    fn settle_log(&self) {
        let path = self.log_path();
        let size = || fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = size();
        loop {
            std::thread::sleep(Duration::from_millis(30));
            let now = size();
            if now == last || Instant::now() > deadline {
                return;
            }
            last = now;
        }
    }

    /// Kill the registry now (also done on drop for private registries).
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn count_matching(entries: &[AccessLogEntry], method: &str, path_substring: &str) -> usize {
    entries
        .iter()
        .filter(|e| e.method.eq_ignore_ascii_case(method) && e.uri.contains(path_substring))
        .count()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A port on `ip` that was free a moment ago. The registry binds it itself,
/// so there is a small race; [`Registry::start`] retries on "address already
/// in use".
pub(crate) fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("binding {ip}:0: {e}"))
        .port()
}

/// Files of a TLS registry, in its directory.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const CERT_DIR: &str = "certs.d";

/// The machine's first non-loopback IPv4 address that is up (getifaddrs
/// order). Panics when there is none: a TLS test cannot run on loopback, and
/// must not pass without running.
pub fn non_loopback_ipv4() -> Ipv4Addr {
    let mut found = None;
    // SAFETY: getifaddrs fills a list that is only read here and released
    // with freeifaddrs; each ifa_addr is checked for null and for AF_INET
    // before it is read as a sockaddr_in.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            panic!(
                "getifaddrs failed: {}; the TLS tests need this machine's non-loopback IPv4 address",
                std::io::Error::last_os_error()
            );
        }
        let mut cur = list;
        while !cur.is_null() && found.is_none() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            if up
                && !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_unspecified() {
                    found = Some(ip);
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.unwrap_or_else(|| {
        panic!(
            "this machine has no non-loopback IPv4 address; the TLS tests need one, because slim \
             (like Docker) reaches loopback registries over plain HTTP"
        )
    })
}

/// Writes a CA (`ca.pem`, `ca.key`), a server certificate it signed for
/// `ip` (`server.pem`, `server.key`; subjectAltName IP:ip) and `certs.d/ca.crt`
/// into `dir`, with the `openssl` CLI. EC P-256 keys: quick to make.
fn make_tls_certificates(dir: &Path, ip: Ipv4Addr) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl (is it installed?)");
        assert!(
            out.status.success(),
            "openssl {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "7", "-subj", "/CN=slim test CA"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        CA_KEY,
        "-out",
        CA_CERT,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca);
    let subject = format!("/CN={ip}");
    let mut csr = vec!["req", "-new", "-subj", &subject];
    csr.extend(ec);
    csr.extend(["-keyout", SERVER_KEY, "-out", "server.csr"]);
    openssl(&csr);
    fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=IP:{ip}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("writing server.ext");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "7",
        "-in",
        "server.csr",
        "-CA",
        CA_CERT,
        "-CAkey",
        CA_KEY,
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        SERVER_CERT,
    ]);
    fs::create_dir_all(dir.join(CERT_DIR)).expect("creating certs.d");
    fs::copy(dir.join(CA_CERT), dir.join(CERT_DIR).join("ca.crt")).expect("copying ca.crt");
}

/// `CARGO_TARGET_TMPDIR/slim-it`, swept once per binary of directories left by
/// test binaries that are no longer running (their registries were killed
/// with them, but statics never clean up their temp dirs).
pub(crate) fn runs_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slim-it");
        fs::create_dir_all(&dir).expect("creating CARGO_TARGET_TMPDIR/slim-it");
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // NAME-PID-RANDOM
                let pid = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
                if let Some(pid) = pid
                    && pid != std::process::id()
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        dir
    })
    .clone()
}
