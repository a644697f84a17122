//! The OCI runtime side: find `runc` (or `crun`), write a bundle's
//! `config.json` (runtime spec 1.0), and run one container at a time
//! through it with its state (`--root`) inside slim's temp directory.
//!
//! Each container gets its own writable root: an overlay whose lower layer
//! is the materialized image tree, which therefore never changes. The
//! overlay is mounted in a mount namespace private to one thread of slim
//! ([`MountNs`]), and the runtime is started from that thread, so the host
//! never sees the mount and it goes away with slim, even on `kill -9`.
//!
//! Cleanup of a container, on every path out (success, error, drop, and
//! SIGINT/SIGTERM through [`crate::cleanup::on_stop`]): `runtime delete
//! --force`, the overlay unmounted, its upper directory removed, and the
//! cgroups slim made for it removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// An OCI runtime binary.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub path: PathBuf,
}

/// What to install when no runtime works.
const INSTALL_HINT: &str =
    "install runc (Debian/Ubuntu: apt-get install runc) or pass --runtime PATH";

fn cgroups_hybrid() -> bool {
    Path::new("/sys/fs/cgroup/unified").is_dir() && Path::new("/sys/fs/cgroup/memory").is_dir()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Runtime {
    /// `explicit` (`--runtime PATH`), else `runc`, else `crun` on `PATH`
    /// (and the sbin directories). Says why when none will do.
    pub fn find(explicit: Option<&Path>) -> Result<Runtime> {
        let path = match explicit {
            Some(p) => {
                let p = if p.components().count() == 1 {
                    find_on_path(&p.to_string_lossy()).unwrap_or_else(|| p.to_path_buf())
                } else {
                    p.to_path_buf()
                };
                if !is_executable(&p) {
                    bail!(
                        "--runtime {}: no such executable; {INSTALL_HINT}",
                        p.display()
                    );
                }
                p
            }
            None => match find_on_path("runc") {
                Some(p) => p,
                None => match find_on_path("crun") {
                    Some(_) if cgroups_hybrid() => bail!(
                        "no usable OCI runtime: only crun is installed, and crun refuses cgroups in hybrid v1/v2 mode, which this machine uses; {INSTALL_HINT}"
                    ),
                    Some(p) => p,
                    None => bail!(
                        "no OCI runtime found (looked for runc and crun on PATH); {INSTALL_HINT}"
                    ),
                },
            },
        };
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("crun"))
            && cgroups_hybrid()
        {
            tracing::warn!(
                "{}: crun (1.8 at least) refuses cgroups in hybrid v1/v2 mode, which this machine uses; if it fails, use runc (apt-get install runc)",
                path.display()
            );
        }
        let out = Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} --version", path.display()))?;
        if !out.status.success() {
            bail!(
                "{} --version failed ({}): {}; {INSTALL_HINT}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Runtime { path })
    }

    /// `runtime --root STATE ARGS…`.
    pub fn command(&self, state: &Path) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(state).stdin(Stdio::null());
        c
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in a mount namespace of its own (mounts propagate into
/// it from the host, never out of it). Mounts for containers are made, and
/// runtimes started, from this thread.
pub struct MountNs {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl MountNs {
    pub fn start() -> Result<MountNs> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("slim-sandbox-mounts".into())
            .spawn(move || {
                // SAFETY: NEWNS unshares this thread's mount namespace and
                // file system attributes (cwd, root, umask) only; no file
                // descriptor table is unshared.
                let r =
                    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                        .and_then(|()| {
                            rustix::mount::mount_change(
                                "/",
                                rustix::mount::MountPropagationFlags::DOWNSTREAM
                                    | rustix::mount::MountPropagationFlags::REC,
                            )
                        })
                        .map_err(std::io::Error::from);
                let ok = r.is_ok();
                let _ = ready_tx.send(r);
                if ok {
                    for job in rx {
                        job();
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(MountNs {
                tx: Some(tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(anyhow::Error::new(e).context(
                    "the sandbox needs root (CAP_SYS_ADMIN) to make a private mount namespace for the container's overlay root",
                ))
            }
            Err(_) => bail!("the sandbox mount thread died"),
        }
    }

    /// Runs `f` on the namespace's thread and returns its result.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .expect("running")
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .expect("the sandbox mount thread is alive");
        rx.recv().expect("the sandbox mount thread answered")
    }

    /// Spawns `cmd` from the namespace's thread (so the process lives in it).
    pub fn spawn(&self, mut cmd: Command) -> std::io::Result<Child> {
        self.call(move || cmd.spawn())
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Mounts the overlay `lower` + `dir/upper` at `dir/rootfs`.
pub fn mount_overlay(ns: &MountNs, lower: &Path, dir: &Path) -> Result<PathBuf> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    let merged = dir.join("rootfs");
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for p in [lower, &upper, &work] {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\\']) {
            bail!(
                "the temp directory {} has a ',' or ':' in its path, which overlayfs options cannot hold; set TMPDIR to another directory",
                p.display()
            );
        }
    }
    // `volatile` (Linux 5.10): the upper layer is thrown away, so it need
    // not be synced; without it, unmounting syncs the whole upper file
    // system, which took 250 ms per run here.
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let target = merged.clone();
    ns.call(move || {
        let mount = |data: String| {
            let data = std::ffi::CString::new(data).expect("no NUL in paths");
            rustix::mount::mount(
                "overlay",
                &target,
                "overlay",
                rustix::mount::MountFlags::empty(),
                Some(data.as_c_str()),
            )
        };
        mount(format!("{data},volatile")).or_else(|_| mount(data))
    })
    .map_err(std::io::Error::from)
    .with_context(|| format!("mounting an overlay root at {}", merged.display()))?;
    Ok(merged)
}

pub fn unmount(ns: &MountNs, target: &Path) {
    let target = target.to_path_buf();
    let _ = ns.call(move || rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH));
}

/// The cgroup directories slim asks the runtime to use for one container:
/// `slim-ID/ctr`. The runtime removes `ctr` when the container ends; the
/// parent `slim-ID` keeps the peak memory of what ran in it (cgroup v1's
/// `memory.max_usage_in_bytes` and v2's `memory.peak` count descendants),
/// and slim removes it after reading.
pub fn cgroups_path(id: &str) -> String {
    format!("/slim-{id}/ctr")
}

/// The peak memory of container `id`, if the cgroups tell.
pub fn peak_memory(id: &str) -> Option<u64> {
    let base = Path::new("/sys/fs/cgroup");
    [
        base.join(format!("memory/slim-{id}/memory.max_usage_in_bytes")),
        base.join(format!("slim-{id}/memory.peak")),
        base.join(format!("unified/slim-{id}/memory.peak")),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
    .filter(|n: &u64| *n > 0)
}

/// Removes the cgroups of container `id` in every hierarchy (children
/// first; cgroupfs only removes empty groups, and the runtime killed the
/// processes).
pub fn remove_cgroups(id: &str) {
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join(format!("slim-{id}"))];
    if let Ok(rd) = std::fs::read_dir(base) {
        dirs.extend(rd.flatten().map(|e| e.path().join(format!("slim-{id}"))));
    }
    // A cgroup is busy until the kernel has reaped its last task, which on
    // a loaded machine takes a while after `runc delete` returns: retry
    // both levels for up to five seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for d in dirs {
        let mut pause = Duration::from_millis(10);
        while d.is_dir() {
            let _ = std::fs::remove_dir(d.join("ctr"));
            match std::fs::remove_dir(&d) {
                Err(e)
                    if e.kind() != std::io::ErrorKind::NotFound
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                _ => break,
            }
        }
    }
}

/// What the process in a container is.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resource limits, applied through the runtime's cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// `linux.resources.memory.limit`, bytes.
    pub memory: Option<u64>,
    /// CPUs (0.5 = half of one), as a CFS quota over a 100 ms period.
    pub cpus: Option<f64>,
}

/// Docker's default capability set: what a program in a container expects
/// to have.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The bundle's `config.json` (OCI runtime spec 1.0.2): the root is
/// `rootfs` in the bundle, writable; its own PID, mount, UTS, IPC and
/// network namespaces (runc brings up `lo` in a new network namespace and
/// adds no other interface: loopback only); `/proc`, a minimal `/dev` (the
/// runtime adds null, zero, full, random, urandom, tty), `/tmp` as tmpfs.
pub fn bundle_config(p: &ProcessSpec, limits: &Limits, cgroups_path: &str) -> Value {
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}]
    });
    if let Some(m) = limits.memory {
        resources["memory"] = json!({"limit": m, "swap": m});
    }
    if let Some(c) = limits.cpus {
        resources["cpu"] = json!({"quota": (c * 100_000.0).round() as i64, "period": 100_000});
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": p.uid, "gid": p.gid, "additionalGids": p.additional_gids},
            "args": p.args,
            "env": p.env,
            "cwd": p.cwd,
            "capabilities": {
                "bounding": CAPS, "effective": CAPS, "permitted": CAPS
            },
            "noNewPrivileges": false
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "slim-sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// `runtime state ID`: the container's init pid while it runs.
pub fn container_pid(rt: &Runtime, state: &Path, id: &str) -> Option<i32> {
    let out = rt
        .command(state)
        .args(["state", id])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    if v.get("status").and_then(Value::as_str) != Some("running") {
        return None;
    }
    v.get("pid")?.as_i64().filter(|p| *p > 0).map(|p| p as i32)
}

/// `runtime delete --force ID`, quietly (it may be gone already).
pub fn delete(rt: &Runtime, state: &Path, id: &str) {
    let _ = rt
        .command(state)
        .args(["delete", "--force", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The ids of containers the runtime still knows in `state`.
pub fn list(rt: &Runtime, state: &Path) -> Vec<String> {
    let Ok(out) = rt
        .command(state)
        .args(["list", "--quiet"])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_namespaces_mounts_and_limits() {
        let p = ProcessSpec {
            args: vec!["/bin/sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![50],
        };
        let c = bundle_config(
            &p,
            &Limits {
                memory: Some(64 << 20),
                cpus: Some(0.5),
            },
            "/slim-x/ctr",
        );
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "network", "ipc", "uts", "mount"] {
            assert!(ns.contains(&want), "{want}");
        }
        // A new network namespace with no path: loopback only.
        assert!(c["linux"]["namespaces"][1].get("path").is_none());
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(c["root"]["readonly"], false);
        assert_eq!(c["process"]["user"]["additionalGids"][0], 50);
        let tmp = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/tmp")
            .unwrap();
        assert_eq!(tmp["type"], "tmpfs");
    }
}
