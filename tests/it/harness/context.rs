//! `TestContext`: one temp directory per test, and the way to run `slim`.
//!
//! `slim` runs hermetically: with its working directory in the context's
//! temp dir, `DOCKER_CONFIG` pointing at `<ctx>/docker` (empty until
//! [`TestContext::write_docker_config`]), `HOME` and `XDG_RUNTIME_DIR` inside
//! the context, no `REGISTRY_AUTH_FILE`, and `NO_COLOR=1`; so the developer's
//! real credentials and settings are never read. `RUST_LOG` is inherited, to
//! debug a failing test.
//!
//! [`Output`] keeps what a process printed and its exit code, and its
//! assertions print both streams when they fail.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::judges::{Skopeo, umoci_unpack};
use super::registry::runs_dir;
use super::tree::{Tree, tree_of};

/// The binary under test.
pub const SLIM: &str = env!("CARGO_BIN_EXE_slim");

/// What a finished process left behind.
#[derive(Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn from_std(command: String, out: std::process::Output) -> Output {
        Output {
            command,
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout parsed as JSON (e.g. `--report -`).
    pub fn stdout_json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout of `{}` is not JSON ({e}):\n{self}", self.command))
    }

    /// Panic, showing both streams, unless the exit code is 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Panic, showing both streams, if the process exited with 0.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(!self.success(), "expected failure:\n{self}");
        self
    }

    /// Panic unless the exit code is exactly `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "expected exit code {code}:\n{self}");
        self
    }

    /// Panic unless stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr_str().contains(needle),
            "expected stderr to contain {needle:?}:\n{self}"
        );
        self
    }
}

/// At most this much of a stream goes into a failure message.
const SHOW_LIMIT: usize = 8000;

fn show(bytes: &[u8]) -> String {
    if bytes.len() > 64 && bytes.iter().take(512).any(|&b| b == 0) {
        return format!("<{} bytes of binary output>", bytes.len());
    }
    let text = String::from_utf8_lossy(bytes);
    if text.len() > SHOW_LIMIT {
        let cut = text
            .char_indices()
            .map(|(i, _)| i)
            .take_while(|&i| i <= SHOW_LIMIT)
            .last()
            .unwrap_or(0);
        format!("{}\n… ({} bytes more)", &text[..cut], text.len() - cut)
    } else {
        text.into_owned()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self
            .code
            .map_or("killed by a signal".to_string(), |c| c.to_string());
        write!(
            f,
            "--- command: {}\n--- exit code: {code}\n--- stdout:\n{}\n--- stderr:\n{}\n---",
            self.command,
            show(&self.stdout),
            show(&self.stderr)
        )
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `PREFIX-N`, unique within this test binary: repository names for tests
/// that share a registry.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::SeqCst))
}

/// A temp directory for one test, removed when the context is dropped.
pub struct TestContext {
    dir: tempfile::TempDir,
}

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

impl TestContext {
    pub fn new() -> TestContext {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ctx-{}-", std::process::id()))
            .tempdir_in(runs_dir())
            .expect("creating a test context dir");
        for sub in ["docker", "home", "run"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("creating context subdirs");
        }
        TestContext { dir }
    }

    /// The context's directory (slim's working directory).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `<ctx>/NAME`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What `DOCKER_CONFIG` points at for slim.
    pub fn docker_config_dir(&self) -> PathBuf {
        self.path("docker")
    }

    /// A `Command` for slim with the hermetic environment; add args and run.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(SLIM);
        cmd.current_dir(self.root())
            .env("DOCKER_CONFIG", self.docker_config_dir())
            .env("HOME", self.path("home"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("NO_COLOR", "1")
            .env_remove("REGISTRY_AUTH_FILE")
            // A backtrace on stderr is not what a user sees (tests that
            // want one set it again).
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env_remove("XDG_CONFIG_HOME")
            // No slim.toml above the test's directory applies (the config
            // tests remove this).
            .env("SLIM_NO_CONFIG", "1")
            // Not the outputs of whatever CI runs the tests.
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY")
            .stdin(Stdio::null());
        cmd
    }

    /// Run `slim ARGS` and collect its output (never panics on failure).
    pub fn slim(&self, args: &[&str]) -> Output {
        self.slim_with(args, &[], None)
    }

    /// Run `slim ARGS` with extra environment and, optionally, bytes on stdin
    /// (for `docker-archive:-`).
    pub fn slim_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.command();
        cmd.args(args).envs(env.iter().copied());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SLIM}: {e}"));
        // Feed stdin from a thread so a slim that writes a lot before reading
        // everything cannot deadlock us.
        let feeder = stdin.map(|bytes| {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let out = child.wait_with_output().expect("waiting for slim");
        if let Some(t) = feeder {
            let _ = t.join();
        }
        let out = Output::from_std(format!("slim {}", args.join(" ")), out);
        assert_chain_says_each_thing_once(&out);
        out
    }

    /// Write `<ctx>/docker/config.json` with an `auths` entry for `registry`
    /// (`HOST:PORT`), merged with entries written before.
    pub fn write_docker_config(&self, registry: &str, user: &str, password: &str) {
        let path = self.docker_config_dir().join("config.json");
        let mut config: Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"auths": {}}));
        config["auths"][registry] = json!({"auth": STANDARD.encode(format!("{user}:{password}"))});
        self.write_docker_config_json(&config);
    }

    /// Write `<ctx>/docker/config.json` verbatim (credHelpers, credsStore…).
    pub fn write_docker_config_json(&self, config: &Value) {
        let path = self.docker_config_dir().join("config.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(config).expect("serialising config.json"),
        )
        .expect("writing docker config.json");
    }

    /// `umoci unpack` an OCI layout into a fresh bundle in the context and
    /// return its rootfs.
    pub fn umoci_unpack(&self, layout: &Path, tag: &str) -> PathBuf {
        let bundle = self.path(&unique_name("bundle"));
        umoci_unpack(layout, tag, &bundle)
    }

    /// Copy any image skopeo can read (`docker://…`, `oci:…`,
    /// `docker-archive:…`) into a fresh OCI layout in the context, then
    /// unpack it with umoci; returns the rootfs. `extra_copy_args` go to
    /// skopeo copy (e.g. `["--override-arch", "arm64"]` for an index).
    pub fn unpack_image(
        &self,
        skopeo: &Skopeo,
        reference: &str,
        extra_copy_args: &[&str],
    ) -> PathBuf {
        let layout = self.path(&unique_name("pulled"));
        skopeo.copy(
            reference,
            &format!("oci:{}:img", layout.display()),
            extra_copy_args,
        );
        self.umoci_unpack(&layout, "img")
    }

    /// [`TestContext::unpack_image`] followed by [`tree_of`].
    pub fn tree_of_image(&self, skopeo: &Skopeo, reference: &str) -> Tree {
        tree_of(&self.unpack_image(skopeo, reference, &[]))
    }
}

/// Each error slim prints describes only its own layer, so no `Caused by:`
/// line repeats a message above it. Guards every run: slim once hid such
/// repetition by de-duplicating the chain as it printed it.
#[track_caller]
fn assert_chain_says_each_thing_once(out: &Output) {
    let stderr = out.stderr_str();
    let mut chain: Vec<&str> = Vec::new();
    for line in stderr.lines() {
        if let Some(top) = line.strip_prefix("error: ") {
            chain = vec![top];
        } else if let Some(cause) = line.strip_prefix("  Caused by: ") {
            assert!(
                !chain.iter().any(|above| above.contains(cause)),
                "{cause:?} repeats a message above it:\n{out}"
            );
            chain.push(cause);
        }
    }
}
