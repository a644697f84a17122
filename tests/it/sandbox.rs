//! `slim run` against a real OCI runtime (runc, installed by `.ci/run`):
//! output and exit codes as `docker run --rm` gives them, options, a real
//! HTTP probe on the fixture's `busybox httpd`, an over-stripped image that
//! fails naming what is missing, and after every run: no container, mount,
//! process, cgroup or temp directory left, also when slim is interrupted.
//!
//! These need root (mount namespaces, overlayfs, runc). They fail, not
//! skip, without it or without runc: CI runs as root and installs runc.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Sandbox tests one at a time: the leftover checks look at the whole
/// machine (cgroups, mounts, processes).
static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) struct Sandboxed {
    pub(crate) ctx: TestContext,
    pub(crate) tmp: PathBuf,
    _serial: std::sync::MutexGuard<'static, ()>,
}

pub(crate) fn setup() -> Sandboxed {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the sandbox tests need root (mount namespaces, overlayfs, runc); CI runs them as root"
    );
    assert!(
        [
            "/usr/sbin/runc",
            "/usr/bin/runc",
            "/usr/local/sbin/runc",
            "/usr/local/bin/runc"
        ]
        .iter()
        .any(|p| Path::new(p).exists()),
        "runc is not installed: apt-get install runc (.ci/run does)"
    );
    let ctx = TestContext::new();
    let tmp = ctx.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    Sandboxed {
        ctx,
        tmp,
        _serial: serial,
    }
}

impl Sandboxed {
    pub(crate) fn slim(&self, args: &[&str]) -> Output {
        self.slim_env(args, &[])
    }

    /// [`Self::slim`] with more environment variables.
    pub(crate) fn slim_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let tmp = self.tmp.to_str().unwrap();
        let mut all = vec![("TMPDIR", tmp)];
        all.extend_from_slice(env);
        let out = self.ctx.slim_with(args, &all, None);
        self.assert_nothing_left();
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.slim(&all)
    }

    /// Nothing of the run is left: its temp dir (rootfs, runtime state,
    /// overlay upper dirs) is gone, no process anywhere has a mount or a
    /// root under it, and no cgroup slim made remains.
    #[track_caller]
    pub(crate) fn assert_nothing_left(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
        let tmp = self.tmp.to_string_lossy().into_owned();
        for proc_dir in std::fs::read_dir("/proc").unwrap().flatten() {
            let p = proc_dir.path();
            if let Ok(info) = std::fs::read_to_string(p.join("mountinfo")) {
                assert!(
                    !info.contains(&tmp),
                    "{} still has a mount under {tmp}:\n{info}",
                    p.display()
                );
            }
            if let Ok(root) = std::fs::read_link(p.join("root")) {
                assert!(
                    !root.to_string_lossy().contains(&tmp),
                    "process {} still runs in {}",
                    p.display(),
                    root.display()
                );
            }
        }
        for ctrl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            if let Ok(rd) = std::fs::read_dir(ctrl.path()) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    // `slim-slim-PID-N-RAND`: a slim that still runs is
                    // another test binary's (CI may run two at once); ours
                    // have exited by now.
                    let live = name
                        .strip_prefix("slim-slim-")
                        .and_then(|r| r.split('-').next())
                        .is_some_and(|pid| Path::new("/proc").join(pid).exists());
                    assert!(
                        !name.starts_with("slim-slim-") || live,
                        "cgroup {} left behind",
                        e.path().display()
                    );
                }
            }
        }
    }
}

#[test]
fn run_prints_the_command_output_and_exits_with_its_code() {
    let s = setup();
    let image = fixture_ref();
    let out = s.run(&[&image, "--", "echo", "hello"]);
    out.assert_success();
    assert_eq!(out.stdout_str(), "hello\n");

    let out = s.run(&[&image, "--", "cat", "/etc/os-release"]);
    out.assert_success();
    assert!(out.stdout_str().contains("ID=debian"), "{out}");

    s.run(&[&image, "--", "sh", "-c", "exit 7"]).assert_code(7);
    let out = s.run(&[&image, "--", "sh", "-c", "echo to-stderr >&2; exit 3"]);
    out.assert_code(3);
    assert!(out.stderr_str().contains("to-stderr"), "{out}");

    // No command: the image's entrypoint (/app/run.sh), in its WorkingDir.
    let out = s.run(&[&image]);
    out.assert_success();
    assert!(
        out.stdout_str().contains("hello from the slim demo app"),
        "{out}"
    );
}

/// Any transport the CLI reads: a registry, `docker-archive:`,
/// `oci-archive:`.
#[test]
fn run_reads_images_from_every_transport() {
    let s = setup();
    let registry = Registry::shared();
    let repo = unique_name("sandbox");
    push_fixture(registry, &format!("{repo}:src"));
    let docker_archive = format!("docker-archive:{}", s.ctx.path("img.tar").display());
    let oci_archive = format!("oci-archive:{}:x", s.ctx.path("oci.tar").display());
    for dest in [&docker_archive, &oci_archive] {
        s.slim(&[&fixture_ref(), "-o", dest, "--profile", "none", "-q"])
            .assert_success();
    }
    for image in [
        registry.reference(&format!("{repo}:src")),
        docker_archive,
        oci_archive,
    ] {
        let out = s.run(&["-q", &image, "--", "cat", "/app/README.md"]);
        out.assert_success();
        assert!(out.stdout_str().contains("Version 2"), "{image}: {out}");
    }
}

/// The tree the container sees is the fixture's final tree: the opaque
/// whiteout and the plain whiteout applied, the hard link one inode, the
/// setuid bit and the owner kept, README version 2.
#[test]
fn the_container_sees_the_image_tree_as_an_extractor_makes_it() {
    let s = setup();
    let out = s.run(&[
        &fixture_ref(),
        "--",
        "sh",
        "-c",
        "ls /app/data/old; test -e /tmp/build.log && echo build.log-present; \
         busybox stat -c %i /app/data/a; busybox stat -c %i /app/data/b; \
         busybox stat -c %A /usr/local/bin/tool; busybox stat -c '%u %g' /app/data/big.txt; \
         cat /app/README.md",
    ]);
    out.assert_success();
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "new.txt", "{out}");
    assert!(!text.contains("build.log-present"), "{out}");
    assert_eq!(lines[1], lines[2], "a and b are one inode: {out}");
    assert_eq!(lines[3], "-rwsr-xr-x", "{out}");
    assert_eq!(lines[4], "1000 1000", "{out}");
    assert!(text.contains("Version 2"), "{out}");
}

#[test]
fn env_user_workdir_and_limits_apply() {
    let s = setup();
    let out = s.run(&[
        &fixture_ref(),
        "--env",
        "GREETING=hi there",
        "--user",
        "1000:1000",
        "--workdir",
        "/tmp",
        "--run-memory",
        "64m",
        "--run-cpus",
        "0.5",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"; id -u; id -g; pwd; echo $PATH; touch /tmp/x && echo wrote",
    ]);
    out.assert_success();
    assert_eq!(
        out.stdout_str(),
        "hi there\n1000\n1000\n/tmp\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nwrote\n"
    );
    // The memory limit holds: a 96 MiB buffer is killed under 32m (exit
    // 137, SIGKILL from the OOM killer) and not without the limit.
    let big = [
        "--",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=96M",
        "count=1",
    ];
    let mut args = vec![fixture_ref(), "--run-memory".into(), "32m".into()];
    args.extend(big.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s.run(&args);
    out.assert_code(137);
    let mut args = vec![fixture_ref()];
    args.extend(big.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.run(&args).assert_success();
    // A user the image's /etc/passwd does not know, by name: an error that
    // says so.
    let out = s.run(&[&fixture_ref(), "--user", "nosuchuser", "--", "id"]);
    out.assert_failure();
    assert!(out.stderr_str().contains("nosuchuser"), "{out}");
}

#[test]
fn the_network_is_loopback_only() {
    let s = setup();
    let out = s.run(&[
        &fixture_ref(),
        "--",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ]);
    out.assert_success();
    assert_eq!(out.stdout_str(), "lo\n");
}

/// The image writes into its overlay; the next run starts from the image
/// again.
#[test]
fn runs_do_not_change_the_image() {
    let s = setup();
    let out = s.run(&[
        &fixture_ref(),
        "--",
        "sh",
        "-c",
        "echo changed > /app/README.md; cat /app/README.md",
    ]);
    out.assert_success();
    assert_eq!(out.stdout_str(), "changed\n");
    let out = s.run(&[&fixture_ref(), "--", "cat", "/app/README.md"]);
    assert!(out.stdout_str().contains("Version 2"), "{out}");
}

pub(crate) const HTTPD: &str = "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www";

#[test]
fn http_probe_passes_on_a_real_server_and_reports_readiness() {
    let s = setup();
    let out = s.run(&[
        &fixture_ref(),
        "--probe-http",
        "8080/",
        "--probe-http",
        "8080/index.html",
        "--probe-tcp",
        "8080",
        "--probe-cmd",
        "grep -q bookworm /etc/os-release",
        "--probe-timeout",
        "20s",
        "--",
        "sh",
        "-c",
        HTTPD,
    ]);
    out.assert_success();
    let text = out.stdout_str();
    assert!(
        text.contains("probe HTTP GET :8080/: passed (ready in "),
        "{out}"
    );
    assert!(text.contains("HTTP/1.1 200 OK"), "{out}");
    assert!(text.contains("probe TCP :8080: passed"), "{out}");
    assert!(
        text.contains("probe command \"grep -q bookworm /etc/os-release\": passed"),
        "{out}"
    );
    assert!(!text.contains("FAILED"), "{out}");
}

#[test]
fn http_probe_fails_clearly_on_a_404_and_on_a_port_nobody_listens_on() {
    let s = setup();
    let started = Instant::now();
    let out = s.run(&[
        &fixture_ref(),
        "--probe-http",
        "8080/missing",
        "--probe-http",
        "9999/",
        "--probe-timeout",
        "3s",
        "--",
        "sh",
        "-c",
        HTTPD,
    ]);
    out.assert_failure();
    let text = out.stdout_str();
    assert!(
        text.contains("probe HTTP GET :8080/missing: FAILED") && text.contains("404 Not Found"),
        "{out}"
    );
    assert!(
        text.contains("probe HTTP GET :9999/: FAILED")
            && text.contains("nothing listened on port 9999 within --probe-timeout 3s"),
        "{out}"
    );
    out.assert_stderr_contains("2 of 2 probes failed");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A program that exits before it listens: the probe says so at once.
#[test]
fn a_server_that_exits_fails_its_probe_with_its_output() {
    let s = setup();
    let out = s.run(&[
        &fixture_ref(),
        "--probe-tcp",
        "8080",
        "--",
        "sh",
        "-c",
        "echo cannot bind >&2; exit 3",
    ]);
    out.assert_failure();
    let text = out.stdout_str();
    assert!(text.contains("exited (code 3) before it listened"), "{out}");
    assert!(text.contains("cannot bind"), "{out}");
}

#[test]
fn an_over_stripped_image_fails_naming_what_is_missing() {
    let s = setup();
    let layout = s.ctx.path("stripped");
    let dest = format!("oci:{}:stripped", layout.display());
    s.slim(&[
        &fixture_ref(),
        "-o",
        &dest,
        "--remove",
        "/bin/busybox",
        "--no-safety-keeps",
        "-q",
    ])
    .assert_success();
    let out = s.run(&[&dest]);
    out.assert_failure();
    out.assert_stderr_contains(
        "/app/run.sh is a script for /bin/sh, but the image has no /bin/busybox (what /bin/sh links to)",
    );
    let out = s.run(&[&dest, "--probe-cmd", "ls /"]);
    out.assert_failure();
    assert!(
        out.stdout_str()
            .contains("the image has no /bin/busybox (what /bin/ls links to)"),
        "{out}"
    );
}

/// SIGTERM and SIGINT while the container runs: slim deletes it, and
/// nothing is left.
#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    let s = setup();
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let mut cmd = s.ctx.command();
        cmd.env("TMPDIR", &s.tmp)
            .args(["run", &fixture_ref(), "--", "sleep", "60"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        // Wait until the runtime knows the container (its state dir).
        let deadline = Instant::now() + Duration::from_secs(20);
        let running = loop {
            let state = std::fs::read_dir(&s.tmp)
                .unwrap()
                .flatten()
                .map(|e| e.path().join("state"))
                .find(|p| p.is_dir());
            if let Some(state) = state {
                let out = std::process::Command::new("runc")
                    .arg("--root")
                    .arg(&state)
                    .args(["list", "--quiet"])
                    .output()
                    .unwrap();
                let ids = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !ids.is_empty() {
                    break ids;
                }
            }
            assert!(Instant::now() < deadline, "the container never started");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(running.starts_with("slim-"), "{running}");
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("interrupted"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.assert_nothing_left();
    }
}

/// `kill -9` cannot be caught: the container outlives slim. The next run
/// in the same temp directory deletes it and removes what was left.
#[test]
fn the_next_run_cleans_up_after_a_killed_one() {
    let s = setup();
    let mut cmd = s.ctx.command();
    cmd.env("TMPDIR", &s.tmp)
        .args(["run", &fixture_ref(), "--", "sleep", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let state = std::fs::read_dir(&s.tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path().join("state"))
            .find(|p| p.is_dir());
        if let Some(state) = state
            && !runc_list(&state).is_empty()
        {
            break state;
        }
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(runc_list(&state).len(), 1, "the container outlives slim");
    // Old enough to be taken for a killed run's.
    std::thread::sleep(Duration::from_secs(6));
    let out = s.run(&[&fixture_ref(), "--", "echo", "after"]);
    out.assert_success();
    assert_eq!(out.stdout_str(), "after\n");
    assert!(!state.exists());
}

fn runc_list(state: &Path) -> Vec<String> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(state)
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// `--timeout` (global) stops a command that runs too long, and cleans up.
#[test]
fn timeout_stops_the_run_and_leaves_nothing() {
    let s = setup();
    let started = Instant::now();
    let out = s.run(&["--timeout", "3s", &fixture_ref(), "--", "sleep", "60"]);
    out.assert_code(1);
    out.assert_stderr_contains("--timeout 3s");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_runtime_that_does_not_exist_is_named_with_what_to_install() {
    let s = setup();
    let out = s.run(&[
        &fixture_ref(),
        "--runtime",
        "/nonexistent/runc",
        "--",
        "true",
    ]);
    out.assert_failure();
    out.assert_stderr_contains("apt-get install runc");
}

/// The library API the `--verify` gate will use: a sandbox from a source,
/// and one from layers the pipeline already decoded; runs with captured
/// output and peak memory; probes with time to ready; nothing left after.
#[test]
fn the_library_api_runs_and_probes_and_cleans_up() {
    use slim::sandbox::{PrepareOptions, Probe, ProbeOptions, RunSpec, Sandbox};
    let s = setup();
    let opts = PrepareOptions {
        runtime: None,
        temp_dir: Some(s.tmp.clone()),
        platform: None,
    };
    let client = std::sync::Arc::new(
        slim::registry::RegistryClient::new(slim::registry::ClientOptions::default()).unwrap(),
    );
    let src = slim::transport::resolve::source(&fixture_ref())
        .unwrap()
        .open_source(&client, Default::default())
        .unwrap();
    let sb = Sandbox::prepare(src.as_ref(), &opts).unwrap();
    assert_eq!(sb.config().entrypoint, vec!["/app/run.sh"]);
    let out = sb
        .run(&RunSpec {
            command: Some(vec!["cat".into(), "/etc/os-release".into()]),
            capture: true,
            ..RunSpec::default()
        })
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(out.output_tail.contains("ID=debian"), "{out:?}");
    assert!(out.peak_memory.is_some_and(|m| m > 0), "{out:?}");
    let results = sb
        .probe(
            &[
                Probe::Http {
                    port: 8080,
                    path: "/".into(),
                },
                Probe::Cmd("test -x /usr/local/bin/tool".into()),
            ],
            &ProbeOptions {
                timeout: Duration::from_secs(20),
                base: RunSpec {
                    command: Some(vec!["sh".into(), "-c".into(), HTTPD.into()]),
                    ..RunSpec::default()
                },
                requests: 7,
                ..ProbeOptions::default()
            },
        )
        .unwrap();
    // The passing HTTP probe is timed over the requests asked for.
    let latency = results[0].latency.expect("HTTP probe latency");
    assert_eq!(latency.requests, 7, "{latency:?}");
    assert!(latency.median <= latency.p95, "{latency:?}");
    assert!(latency.p95 < Duration::from_secs(5), "{latency:?}");
    assert!(results[1].latency.is_none(), "{:?}", results[1]);
    for r in &results {
        assert!(r.passed, "{r:?}");
        assert!(r.time_to_ready.is_some(), "{r:?}");
    }
    drop(sb);
    s.assert_nothing_left();

    // From decoded layers and the config JSON, as the pipeline has them.
    let image = fixture_image();
    let spool = s.ctx.path("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let layers: Vec<_> = image
        .layer_digests
        .iter()
        .map(|d| {
            slim::layer::read::index_layer(
                std::io::Cursor::new(crate::harness::fixture::read_blob(&fixture_layout(), d)),
                d,
                None,
                &spool,
                &Default::default(),
            )
            .unwrap()
        })
        .collect();
    let config: serde_json::Value = serde_json::from_slice(&crate::harness::fixture::read_blob(
        &fixture_layout(),
        &image.config_digest,
    ))
    .unwrap();
    let sb = Sandbox::from_layers(&layers, &config, &opts).unwrap();
    let out = sb
        .run(&RunSpec {
            capture: true,
            ..RunSpec::default()
        })
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(
        out.output_tail.contains("hello from the slim demo app"),
        "{out:?}"
    );
    drop(sb);
    s.assert_nothing_left();
}
