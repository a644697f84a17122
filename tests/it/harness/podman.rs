//! A real Docker Engine API: `podman system service` on a Unix socket,
//! touching nothing of the host's containers.
//!
//! Each [`Podman`] owns a directory under the runs dir with its own storage
//! (`--root`; the `vfs` driver: no mounts to leave behind; `--runroot` in
//! `/tmp/slim-pm-PID-*`, as podman wants it shorter than 50 characters),
//! `--tmpdir`, `TMPDIR` (where the API spools loads), `XDG_RUNTIME_DIR`,
//! `HOME`, and `CONTAINERS_CONF`, `CONTAINERS_STORAGE_CONF` and
//! `CONTAINERS_REGISTRIES_CONF` files written here, so neither the host's
//! `/etc/containers` nor its images are read or changed; and in a private
//! mount namespace where `/var/tmp`, `/run/runc` and
//! `/var/lib/containers/cache` are its own (see `PRIVATE_MOUNTS`). The service is
//! tethered ([`super::process`]): it dies with the test binary. If it does
//! not come up, the test fails with podman's own log.
//!
//! The same settings drive the `podman` CLI used as a judge
//! ([`Podman::cli`]): `image exists`, `image inspect`, `run`, `save`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::context::Output;
use super::fixture::fixture_ref;
use super::judges::Skopeo;
use super::process::spawn_tethered;
use super::registry::runs_dir;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A private podman API service.
pub struct Podman {
    dir: PathBuf,
    /// `--runroot`: podman refuses one longer than 50 characters, so it
    /// lives in `/tmp` rather than the runs dir.
    runroot: PathBuf,
    socket: PathBuf,
    child: Mutex<Child>,
    _tempdir: Option<tempfile::TempDir>,
    _runroot: Option<tempfile::TempDir>,
}

/// containers.conf: runc (Debian's crun refuses cgroups in hybrid mode),
/// cgroupfs and file events (no systemd, no journald in CI); the network
/// configuration (and its lock) in `DIR/networks`, not `/etc/cni/net.d`.
fn containers_conf(dir: &Path) -> String {
    format!(
        "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
         [network]\nnetwork_config_dir = \"{}\"\n",
        dir.join("networks").display()
    )
}

/// Where podman 4.3 writes whatever its configuration says: `podman load`
/// (and the API's) untars each archive into `/var/tmp` while it guesses the
/// format, runc keeps container state in `/run/runc`, and containers/image
/// its blob-info cache in `/var/lib/containers/cache`. Every podman of the
/// harness runs in a mount namespace of its own (`unshare --mount`, root
/// only, as podman itself here) where each of these that exists is this
/// instance's directory. `$1` is the instance's directory; the rest are
/// podman's arguments.
const PRIVATE_MOUNTS: &str = r#"set -e
dir=$1; shift
for pair in /var/tmp:vartmp /run/runc:runc /var/lib/containers/cache:cache; do
  target=${pair%%:*}
  if [ -d "$target" ]; then mount --bind "$dir/${pair#*:}" "$target"; fi
done
exec podman "$@""#;

/// Short names resolve as Docker's do.
const REGISTRIES_CONF: &str = r#"unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
"#;

impl Podman {
    /// One service shared by the tests that need no engine of their own
    /// (they use unique image names).
    pub fn shared() -> &'static Podman {
        static SHARED: OnceLock<Podman> = OnceLock::new();
        SHARED.get_or_init(|| Podman::launch(true))
    }

    /// A service of its own, stopped and removed when dropped.
    pub fn start() -> Podman {
        Podman::launch(false)
    }

    fn launch(shared: bool) -> Podman {
        let tempdir = tempfile::Builder::new()
            .prefix(&format!("podman-{}-", std::process::id()))
            .tempdir_in(runs_dir())
            .expect("creating a podman temp dir");
        let dir = tempdir.path().to_path_buf();
        sweep_stale_runroots();
        let runroot_dir = tempfile::Builder::new()
            .prefix(&format!("{RUNROOT_PREFIX}{}-", std::process::id()))
            .tempdir_in("/tmp")
            .expect("creating a podman runroot in /tmp");
        let runroot = runroot_dir.path().to_path_buf();
        let (tempdir, runroot_dir) = if shared {
            let _ = tempdir.keep();
            let _ = runroot_dir.keep();
            (None, None)
        } else {
            (Some(tempdir), Some(runroot_dir))
        };
        for sub in [
            "root",
            "tmp",
            "xdg",
            "home",
            "libpod-tmp",
            "networks",
            "vartmp",
            "runc",
            "cache",
        ] {
            fs::create_dir_all(dir.join(sub)).expect("creating podman dirs");
        }
        fs::write(dir.join("containers.conf"), containers_conf(&dir)).expect("containers.conf");
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("root").display(),
                runroot.display()
            ),
        )
        .expect("storage.conf");
        fs::write(dir.join("registries.conf"), REGISTRIES_CONF).expect("registries.conf");
        let socket = dir.join("podman.sock");
        let log_path = dir.join("service.log");
        let log = File::create(&log_path).expect("creating service.log");
        let podman = Podman {
            dir: dir.clone(),
            runroot: runroot.clone(),
            socket: socket.clone(),
            child: Mutex::new(
                spawn_tethered({
                    let mut cmd = Podman::command_in(&dir, &runroot);
                    cmd.args(["system", "service", "--time=0"])
                        .arg(format!("unix://{}", socket.display()))
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().expect("dup log fd"))
                        .stderr(log);
                    cmd
                })
                .unwrap_or_else(|e| panic!("cannot start podman: {e} (is podman installed?)")),
            ),
            _tempdir: tempdir,
            _runroot: runroot_dir,
        };
        podman.wait_ready();
        podman
    }

    /// `podman` with this instance's storage, config and environment, in a
    /// private mount namespace (see [`PRIVATE_MOUNTS`]).
    fn command_in(dir: &Path, runroot: &Path) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg(PRIVATE_MOUNTS)
            .arg("slim-test-podman")
            .arg(dir)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(runroot)
            .arg("--tmpdir")
            .arg(dir.join("libpod-tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
            .env("XDG_RUNTIME_DIR", dir.join("xdg"))
            .env("XDG_CONFIG_HOME", dir.join("home").join(".config"))
            .env("HOME", dir.join("home"))
            .env("TMPDIR", dir.join("tmp"))
            .env_remove("DOCKER_HOST")
            .env_remove("CONTAINER_HOST")
            .env_remove("REGISTRY_AUTH_FILE");
        cmd
    }

    /// Polls `GET /_ping` on the socket; panics with the service log if the
    /// service exits or stays silent.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait()
            {
                panic!(
                    "podman system service exited ({status}) before answering on {}; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            if ping(&self.socket) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "podman system service did not answer on {} within {READY_TIMEOUT:?}; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix:///…/podman.sock`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `podman ARGS` against this instance's storage.
    pub fn cli(&self, args: &[&str]) -> Output {
        let out = Podman::command_in(&self.dir, &self.runroot)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running podman");
        Output::from_std(format!("podman {}", args.join(" ")), out)
    }

    /// Loads the fixture image as `name` (`myapp:latest`): skopeo writes a
    /// `docker save` archive, `podman load` reads it.
    pub fn load_fixture(&self, name: &str) {
        let archive = self
            .dir
            .join("tmp")
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        let _ = fs::remove_file(&archive);
        Skopeo::anonymous().copy(
            &fixture_ref(),
            &format!("docker-archive:{}:{name}", archive.display()),
            &[],
        );
        self.cli(&["load", "-i", &archive.display().to_string()])
            .assert_success();
        fs::remove_file(&archive).expect("removing the fixture archive");
        assert!(self.exists(name), "podman load did not make {name}");
    }

    /// `podman image exists NAME`.
    pub fn exists(&self, name: &str) -> bool {
        let out = self.cli(&["image", "exists", name]);
        match out.code {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("podman image exists failed:\n{out}"),
        }
    }

    /// `podman image inspect NAME` (the first and only entry).
    pub fn inspect(&self, name: &str) -> Value {
        let out = self.cli(&["image", "inspect", name]);
        out.assert_success();
        out.stdout_json()[0].clone()
    }

    /// `podman save` of `name` as a `docker save` archive at `path`.
    pub fn save(&self, name: &str, path: &Path) {
        self.cli(&[
            "save",
            "--format",
            "docker-archive",
            "-o",
            &path.display().to_string(),
            name,
        ])
        .assert_success();
    }

    /// `podman run` (removed after, no network, low ulimits, never pulls)
    /// with `args`: further flags, the image, its arguments.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "run",
            "--rm",
            "--pull=never",
            "--network=none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        all.extend(args);
        self.cli(&all)
    }

    fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.kill();
    }
}

const RUNROOT_PREFIX: &str = "slim-pm-";

/// Removes `/tmp/slim-pm-PID-*` runroots whose test binary is gone.
fn sweep_stale_runroots() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(RUNROOT_PREFIX) else {
            continue;
        };
        if let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok())
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Whether the API on `socket` answers `GET /_ping` with 200.
fn ping(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = s.take(4096).read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}
