//! Independent judges: skopeo and umoci, run as subprocesses.
//!
//! Tests check what slim wrote with tools that share no code with it. Every
//! function here panics with the tool's stderr on failure, so a test reads as
//! a list of expectations.
//!
//! skopeo is run with `DOCKER_CONFIG` pointing at an empty directory and
//! without `REGISTRY_AUTH_FILE`, so the developer's logins never leak in;
//! credentials are only ever passed explicitly (`--creds`, `--src-creds`,
//! `--dest-creds`). Loopback registries are plain HTTP, so `docker://`
//! references on `127.*`/`localhost` get `--tls-verify=false` (or the
//! `--src-`/`--dest-` form for `copy`); other registries are verified, with
//! `--cert-dir` when the runner has one ([`Skopeo::with_cert_dir`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::context::Output;
use super::registry::runs_dir;

/// Runs skopeo, optionally with credentials for the registry side(s) and a
/// directory of CA certificates for TLS registries.
#[derive(Clone, Debug, Default)]
pub struct Skopeo {
    /// `USER:PASSWORD`.
    creds: Option<String>,
    /// `--cert-dir` (or `--src-`/`--dest-cert-dir`) for non-loopback
    /// `docker://` references.
    cert_dir: Option<String>,
}

fn is_loopback_docker_ref(reference: &str) -> bool {
    let Some(rest) = reference.strip_prefix("docker://") else {
        return false;
    };
    rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
}

fn empty_docker_config() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = runs_dir().join(format!("skopeo-{}-config", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating an empty DOCKER_CONFIG for skopeo");
        dir
    })
}

impl Skopeo {
    pub fn anonymous() -> Self {
        Skopeo::default()
    }

    pub fn with_creds(user: &str, password: &str) -> Self {
        Skopeo {
            creds: Some(format!("{user}:{password}")),
            ..Skopeo::default()
        }
    }

    /// Trust the CAs (`*.crt`) in `dir` for TLS registries; TLS stays
    /// verified.
    pub fn with_cert_dir(mut self, dir: &Path) -> Self {
        self.cert_dir = Some(dir.display().to_string());
        self
    }

    /// `--{prefix}cert-dir=DIR` when a CA dir is set and `reference` is a
    /// registry reached over TLS.
    fn cert_flag(&self, prefix: &str, reference: &str) -> Option<String> {
        let dir = self.cert_dir.as_ref()?;
        (reference.starts_with("docker://") && !is_loopback_docker_ref(reference))
            .then(|| format!("--{prefix}cert-dir={dir}"))
    }

    /// Run `skopeo ARGS` as given (no flags added) and return what happened.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("skopeo")
            .args(args)
            .env("DOCKER_CONFIG", empty_docker_config())
            .env_remove("REGISTRY_AUTH_FILE")
            .output()
            .expect("running skopeo (is it installed?)");
        Output::from_std(format!("skopeo {}", args.join(" ")), out)
    }

    /// Flags for a command that reads one reference (`inspect`).
    fn read_flags(&self, reference: &str) -> Vec<String> {
        let mut flags = Vec::new();
        if reference.starts_with("docker://") {
            if is_loopback_docker_ref(reference) {
                flags.push("--tls-verify=false".to_string());
            }
            flags.extend(self.cert_flag("", reference));
            if let Some(c) = &self.creds {
                flags.push(format!("--creds={c}"));
            }
        }
        flags
    }

    fn inspect_with(&self, reference: &str, extra: &[&str]) -> Output {
        let flags = self.read_flags(reference);
        let mut args = vec!["inspect"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(extra);
        args.push(reference);
        let out = self.run(&args);
        out.assert_success();
        out
    }

    /// `skopeo inspect --raw`: the manifest (or index) bytes exactly as stored.
    pub fn inspect_raw_bytes(&self, reference: &str) -> Vec<u8> {
        self.inspect_with(reference, &["--raw"]).stdout
    }

    /// `skopeo inspect --raw`, parsed.
    pub fn inspect_raw(&self, reference: &str) -> Value {
        parse_json(&self.inspect_raw_bytes(reference), reference)
    }

    /// `skopeo inspect`: skopeo's summary (Digest, Layers, Env, Labels…).
    pub fn inspect(&self, reference: &str) -> Value {
        parse_json(&self.inspect_with(reference, &[]).stdout, reference)
    }

    /// `skopeo inspect --config`: the image config blob, parsed.
    pub fn inspect_config(&self, reference: &str) -> Value {
        parse_json(
            &self.inspect_with(reference, &["--config"]).stdout,
            reference,
        )
    }

    /// `sha256:` of the raw manifest bytes as skopeo returns them.
    pub fn manifest_digest(&self, reference: &str) -> String {
        sha256_digest(&self.inspect_raw_bytes(reference))
    }

    /// `skopeo copy [tls/creds flags] EXTRA SRC DST` without checking the
    /// outcome.
    pub fn try_copy(&self, src: &str, dst: &str, extra_args: &[&str]) -> Output {
        let mut flags = Vec::new();
        if is_loopback_docker_ref(src) {
            flags.push("--src-tls-verify=false".to_string());
        }
        if is_loopback_docker_ref(dst) {
            flags.push("--dest-tls-verify=false".to_string());
        }
        flags.extend(self.cert_flag("src-", src));
        flags.extend(self.cert_flag("dest-", dst));
        if let Some(c) = &self.creds {
            if src.starts_with("docker://") {
                flags.push(format!("--src-creds={c}"));
            }
            if dst.starts_with("docker://") {
                flags.push(format!("--dest-creds={c}"));
            }
        }
        let mut args = vec!["copy", "--quiet"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(extra_args);
        args.push(src);
        args.push(dst);
        self.run(&args)
    }

    /// `skopeo copy`, asserting success.
    pub fn copy(&self, src: &str, dst: &str, extra_args: &[&str]) -> Output {
        let out = self.try_copy(src, dst, extra_args);
        out.assert_success();
        out
    }
}

fn parse_json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "skopeo output for {what} is not JSON ({e}):\n{}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// `sha256:HEX` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `skopeo inspect --raw REFERENCE` (anonymous), parsed.
pub fn skopeo_inspect_raw(reference: &str) -> Value {
    Skopeo::anonymous().inspect_raw(reference)
}

/// `skopeo inspect REFERENCE` (anonymous), parsed.
pub fn skopeo_inspect(reference: &str) -> Value {
    Skopeo::anonymous().inspect(reference)
}

/// `skopeo copy EXTRA SRC DST` (anonymous), asserting success.
pub fn skopeo_copy(src: &str, dst: &str, extra_args: &[&str]) -> Output {
    Skopeo::anonymous().copy(src, dst, extra_args)
}

/// `sha256:` of the raw manifest of REFERENCE (anonymous).
pub fn manifest_digest_of(reference: &str) -> String {
    Skopeo::anonymous().manifest_digest(reference)
}

/// Whether the tests run as root (CI does; then umoci keeps owners, the
/// setuid bit and `security.capability` exactly).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE` (`--rootless` unless root) and
/// return `BUNDLE/rootfs`. `bundle` must not exist yet.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    umoci_try_unpack(layout, tag, bundle).assert_success();
    bundle.join("rootfs")
}

/// [`umoci_unpack`] without checking the outcome: for images an extractor
/// must refuse.
pub fn umoci_try_unpack(layout: &Path, tag: &str, bundle: &Path) -> Output {
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    cmd.arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle);
    let out = cmd.output().expect("running umoci (is it installed?)");
    Output::from_std(
        format!(
            "umoci unpack {}:{tag} {}",
            layout.display(),
            bundle.display()
        ),
        out,
    )
}
