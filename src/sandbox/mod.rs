//! The sandbox: run an image, daemonless, to prove it still works.
//!
//! ```text
//! image (any transport) -> layers decoded (layer/read.rs, verified)
//!     -> rootfs.rs   applied in order into a temporary root (whiteouts,
//!                    hard links, symlinks, modes, owners, xattrs; never out of the root)
//!     -> runtime.rs  per run: an overlay over that root (the tree never changes),
//!                    a bundle config.json, runc/crun, state in the temp dir
//!     -> probe.rs    commands, TCP and HTTP probes in the container's
//!                    loopback-only network; time to ready, peak memory
//! ```
//!
//! [`Sandbox::prepare`] materializes an image from a [`Source`];
//! [`Sandbox::from_layers`] does it from layers the pipeline already decoded
//! (for `--verify`). [`Sandbox::run`] runs a command or the image's
//! entrypoint ([`RunSpec`] -> [`Outcome`]); [`Sandbox::probe`] runs
//! [`Probe`]s (-> [`ProbeResult`]).
//!
//! Guarantees: every container is deleted (`runc delete --force`), its
//! overlay unmounted and its cgroups removed when the run ends, fails, or
//! is stopped by SIGINT/SIGTERM ([`crate::cleanup`]); the temp directory
//! (rootfs, runtime state, overlay upper dirs) goes when the [`Sandbox`] is
//! dropped or the run stopped. Mounts live in a mount namespace of one slim
//! thread only, so the host never sees them. Needs root.

mod diagnose;
mod http;
pub mod probe;
pub mod rootfs;
pub mod runtime;
mod select;
pub mod user;
pub mod verify;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cleanup::{Guard, StagingDir};
use crate::digest::Digest;
use crate::image::Platform;
use crate::layer::read::{IndexOptions, LayerIndex, index_layer};
use crate::transport::{Source, open_verified};

pub use probe::{Probe, ProbeOptions, ProbeResult};
pub use rootfs::Rootfs;
pub use runtime::{Limits, Runtime};
use select::platform_image;
pub use select::{platforms, runs_here};

/// What the image config says about running it.
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `ExposedPorts` keys (`8080/tcp`).
    pub exposed_ports: Vec<String>,
    /// `Healthcheck.Test` (`["CMD-SHELL", "cmd"]`, `["CMD", args…]`).
    pub healthcheck: Vec<String>,
}

impl ImageConfig {
    /// From an image config JSON (its `config` object).
    pub fn from_json(config: &Value) -> ImageConfig {
        let c = config.get("config").unwrap_or(&Value::Null);
        let strings = |k: &str| -> Vec<String> {
            c.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        ImageConfig {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            working_dir: string("WorkingDir"),
            user: string("User"),
            exposed_ports: c
                .get("ExposedPorts")
                .and_then(Value::as_object)
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default(),
            healthcheck: c
                .pointer("/Healthcheck/Test")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Where and how to run.
#[derive(Clone, Debug, Default)]
pub struct PrepareOptions {
    /// The OCI runtime (`--runtime`); `None`: runc, else crun, on `PATH`.
    pub runtime: Option<PathBuf>,
    /// Where the temp directory goes (default: the system's).
    pub temp_dir: Option<PathBuf>,
    /// The platform of an index to materialize (default: the host's). An
    /// image of another platform can be looked at (the static check), not
    /// run.
    pub platform: Option<Platform>,
}

/// One run of a process in the image.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    /// Replaces the image's Entrypoint and Cmd (`slim run IMAGE -- CMD`);
    /// `None`: Entrypoint + Cmd.
    pub command: Option<Vec<String>>,
    /// `K=V` added to (or replacing in) the image's Env.
    pub env: Vec<String>,
    /// Replaces the image's User.
    pub user: Option<String>,
    /// Replaces the image's WorkingDir.
    pub workdir: Option<String>,
    pub limits: Limits,
    /// Killed after this long.
    pub timeout: Option<Duration>,
    /// Capture stdout and stderr (the tail lands in [`Outcome::output_tail`])
    /// instead of passing them through to slim's own.
    pub capture: bool,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The process's exit code (128 + signal when killed, as shells say).
    pub exit_code: i32,
    pub timed_out: bool,
    pub duration: Duration,
    /// Peak memory of the container's cgroup, bytes, where the cgroups tell.
    pub peak_memory: Option<u64>,
    /// The last bytes of stdout and stderr, interleaved (with `capture`).
    pub output_tail: String,
}

/// A materialized image and the means to run it.
pub struct Sandbox {
    runtime: Runtime,
    config: ImageConfig,
    rootfs: Rootfs,
    state: PathBuf,
    next: AtomicU32,
    /// Dropped before `temp` (field order): mounts go, then the files.
    ns: runtime::MountNs,
    /// Warnings from extraction (xattrs or device nodes not applied).
    pub warnings: Vec<String>,
    on_mount: Mutex<Option<OnMount>>,
    temp: StagingDir,
}

/// Called with each container's root (its overlay mount point), on the
/// thread of the sandbox's mount namespace (where that path exists), after
/// the overlay is mounted and before the runtime starts: a tracer marks it.
pub type OnMount = Arc<dyn Fn(&Path) -> Result<()> + Send + Sync>;

/// The sandbox directories' name prefix in the temp directory.
const PREFIX: &str = "slim-sandbox-";

/// Cleans up after sandboxes whose slim was killed (`kill -9`: no undo
/// ran): directories of [`PREFIX`] that no live run holds locked and that
/// are older than a few seconds (a new one is locked right after it is
/// made). Their containers are deleted and their cgroups removed, then the
/// directory; their mounts went with the killed slim's mount namespace.
fn sweep_killed(parent: &Path, rt: &Runtime) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let stale = e.file_name().to_string_lossy().starts_with(PREFIX)
            && e.file_type().is_ok_and(|t| t.is_dir())
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(5))
            && !crate::cleanup::is_held(&path);
        if !stale {
            continue;
        }
        let state = path.join("state");
        for id in runtime::list(rt, &state) {
            runtime::delete(rt, &state, &id);
            runtime::remove_cgroups(&id);
        }
        crate::cleanup::remove_tree(&path);
        tracing::info!(
            "removed {} and its containers, left by a slim run that was killed",
            path.display()
        );
    }
}

impl Sandbox {
    /// Opens the image `src` names (the host's platform of an index),
    /// decodes and applies its layers into a temporary root.
    pub fn prepare(src: &dyn Source, opts: &PrepareOptions) -> Result<Sandbox> {
        let mut sb = Self::empty(opts)?;
        let (manifest, config) = platform_image(src, opts.platform.as_ref())?;
        let layers = manifest.layers()?;
        let diff_ids: Vec<Digest> = crate::image::config::diff_ids(&config)
            .context("the image config has a malformed diff_id")?
            .unwrap_or_default();
        if diff_ids.len() != layers.len() {
            bail!(
                "image {}: the config lists {} diff_ids for {} layers; the image is inconsistent",
                manifest.digest,
                diff_ids.len(),
                layers.len()
            );
        }
        let idx_opts = IndexOptions::default();
        for (i, (desc, diff_id)) in layers.iter().zip(&diff_ids).enumerate() {
            let what = format!("layer {} ({}) of {}", i + 1, desc.short(), src.name());
            let idx = index_layer(
                open_verified(src, desc)?,
                &what,
                Some(diff_id),
                sb.temp.path(),
                &idx_opts,
            )?;
            sb.rootfs.apply(&idx, &what)?;
        }
        sb.rootfs.finish()?;
        sb.config = ImageConfig::from_json(&config);
        sb.warnings = std::mem::take(&mut sb.rootfs.warnings);
        Ok(sb)
    }

    /// The same, from layers the pipeline already decoded (bottom first) and
    /// the image config JSON: the tree `--verify` checks.
    pub fn from_layers(
        layers: &[LayerIndex],
        config: &Value,
        opts: &PrepareOptions,
    ) -> Result<Sandbox> {
        let mut sb = Self::empty(opts)?;
        for (i, l) in layers.iter().enumerate() {
            sb.rootfs.apply(l, &format!("layer {}", i + 1))?;
        }
        sb.rootfs.finish()?;
        sb.config = ImageConfig::from_json(config);
        sb.warnings = std::mem::take(&mut sb.rootfs.warnings);
        Ok(sb)
    }

    fn empty(opts: &PrepareOptions) -> Result<Sandbox> {
        let runtime = Runtime::find(opts.runtime.as_deref())?;
        let ns = runtime::MountNs::start()?;
        let parent = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        sweep_killed(&parent, &runtime);
        let temp = StagingDir::create_in(&parent, PREFIX, false)
            .with_context(|| format!("creating a sandbox directory in {}", parent.display()))?;
        let state = temp.path().join("state");
        std::fs::create_dir(&state)?;
        let rootfs = Rootfs::create(&temp.path().join("image"))?;
        Ok(Sandbox {
            runtime,
            config: ImageConfig::default(),
            rootfs,
            state,
            next: AtomicU32::new(0),
            ns,
            warnings: Vec::new(),
            on_mount: Mutex::new(None),
            temp,
        })
    }

    /// Sets (or clears) the hook every later container's root goes through
    /// before it starts ([`OnMount`]).
    pub fn set_on_mount(&self, hook: Option<OnMount>) {
        *self.on_mount.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The materialized image tree (read-only by convention: runs write to
    /// their own overlay).
    pub fn rootfs(&self) -> &Rootfs {
        &self.rootfs
    }

    /// The runtime's state directory (`runc --root`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The sandbox's temp directory (removed on drop).
    pub fn temp_dir(&self) -> &Path {
        self.temp.path()
    }

    /// Runs the image's entrypoint, or `spec.command`, to its end.
    pub fn run(&self, spec: &RunSpec) -> Result<Outcome> {
        let process = self.process(spec)?;
        let mut c = self.start(&process, &spec.limits, spec.capture)?;
        let (status, timed_out) = c.wait(spec.timeout)?;
        let duration = c.started.elapsed();
        let output_tail = c.tail();
        let peak_memory = c.finish();
        Ok(Outcome {
            exit_code: exit_code(status),
            timed_out,
            duration,
            peak_memory,
            output_tail,
        })
    }

    /// Runs probes: each command probe in a container of its own; the
    /// network probes against one container running the entrypoint.
    pub fn probe(&self, probes: &[Probe], opts: &ProbeOptions) -> Result<Vec<ProbeResult>> {
        probe::run_all(self, probes, opts)
    }

    /// The process a run starts: args, env, user and cwd resolved against
    /// the image. Fails, naming it, when the program is not in the tree.
    pub fn process(&self, spec: &RunSpec) -> Result<runtime::ProcessSpec> {
        let args = match &spec.command {
            Some(c) if !c.is_empty() => c.clone(),
            _ => {
                let mut a = self.config.entrypoint.clone();
                a.extend(self.config.cmd.iter().cloned());
                a
            }
        };
        if args.is_empty() {
            bail!(
                "the image has no Entrypoint or Cmd: give the command to run (slim run IMAGE -- CMD...)"
            );
        }
        let user_spec = spec
            .user
            .clone()
            .unwrap_or_else(|| self.config.user.clone());
        let read = |p: &str| {
            self.rootfs
                .read_file(p, 4 << 20)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let user = user::resolve(&user_spec, &read("/etc/passwd"), &read("/etc/group"))
            .with_context(|| format!("resolving user {user_spec:?}"))?;
        let mut env: Vec<String> = self.config.env.clone();
        for kv in &spec.env {
            let (k, kv) = match kv.split_once('=') {
                Some((k, _)) => (k.to_string(), kv.clone()),
                // `--env K`: the value slim was given, as `docker run -e K`.
                None => match std::env::var(kv) {
                    Ok(v) => (kv.clone(), format!("{kv}={v}")),
                    Err(_) => continue,
                },
            };
            env.retain(|e| e.split('=').next() != Some(k.as_str()));
            env.push(kv);
        }
        let has = |env: &[String], k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
        if !has(&env, "PATH") {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        if !has(&env, "HOME") {
            env.push(format!(
                "HOME={}",
                user.home.clone().unwrap_or_else(|| "/".into())
            ));
        }
        let cwd = spec
            .workdir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| self.config.working_dir.clone());
        let cwd = if cwd.is_empty() {
            "/".to_string()
        } else if cwd.starts_with('/') {
            cwd
        } else {
            format!("/{cwd}")
        };
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or_default()
            .to_string();
        if let Some(why) = self.find_program(&args[0], &cwd, &path_var) {
            bail!("cannot run {:?}: {why}", args[0]);
        }
        Ok(runtime::ProcessSpec {
            args,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
        })
    }

    /// `None` when `program` is found in the tree as the runtime will look
    /// it up (a path, else the image's `PATH`); else what is missing.
    fn find_program(&self, program: &str, cwd: &str, path_var: &str) -> Option<String> {
        if program.contains('/') {
            let full = if program.starts_with('/') {
                program.to_string()
            } else {
                format!("{}/{program}", cwd.trim_end_matches('/'))
            };
            return self.rootfs.missing(&full);
        }
        let dirs: Vec<&str> = path_var.split(':').filter(|d| !d.is_empty()).collect();
        let mut first_missing = None;
        for d in &dirs {
            let full = format!("{}/{program}", d.trim_end_matches('/'));
            match self.rootfs.missing(&full) {
                None if self.rootfs.is_file(&full) => return None,
                // A dangling symlink or a script without its interpreter
                // says more than "not found".
                Some(why) if why.contains("links to") || why.contains("script") => {
                    first_missing.get_or_insert(why);
                }
                _ => {}
            }
        }
        Some(first_missing.unwrap_or_else(|| {
            format!("{program} is in none of the image's PATH directories ({path_var})")
        }))
    }

    /// Starts a container for `process`.
    fn start(
        &self,
        process: &runtime::ProcessSpec,
        limits: &Limits,
        capture: bool,
    ) -> Result<Container<'_>> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let id = format!("slim-{}-{n}-{:08x}", std::process::id(), rand_u32());
        let dir = self.temp.path().join(format!("run-{n}"));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Registered before anything exists, so a stop in between cleans up.
        let guard = {
            let rt = self.runtime.clone();
            let state = self.state.clone();
            let id = id.clone();
            crate::cleanup::on_stop(move || {
                runtime::delete(&rt, &state, &id);
                runtime::remove_cgroups(&id);
            })
        };
        let mut c = Container {
            sb: self,
            id,
            dir: dir.clone(),
            merged: None,
            child: None,
            tail: Arc::new(Mutex::new(probe::Tail::new(8 << 10))),
            readers: Vec::new(),
            started: Instant::now(),
            done: false,
            _guard: guard,
        };
        let merged = runtime::mount_overlay(&self.ns, self.rootfs.path(), &dir)?;
        c.merged = Some(merged.clone());
        let hook = self
            .on_mount
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            self.ns.call(move || hook(&merged))?;
        }
        let config = runtime::bundle_config(process, limits, &runtime::cgroups_path(&c.id));
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        let mut cmd = self.runtime.command(&self.state);
        cmd.arg("run").arg("--bundle").arg(&dir).arg(&c.id);
        if capture {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let _permit = crate::cleanup::permit()?;
        c.started = Instant::now();
        let mut child = self
            .ns
            .spawn(cmd)
            .with_context(|| format!("starting {}", self.runtime.path.display()))?;
        if capture {
            let out = child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>);
            let err = child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>);
            for r in [out, err].into_iter().flatten() {
                let tail = c.tail.clone();
                c.readers
                    .push(std::thread::spawn(move || probe::collect(r, &tail)));
            }
        }
        c.child = Some(child);
        Ok(c)
    }
}

/// A sandbox may serve probes from several threads (the original and the
/// slim image side by side).
#[allow(dead_code)]
fn assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Sandbox>();
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

fn exit_code(status: Option<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => s
            .code()
            .or_else(|| s.signal().map(|sig| 128 + sig))
            .unwrap_or(1),
        None => 137,
    }
}

/// One container: the runtime's `run` process, its overlay and cgroups.
pub(crate) struct Container<'a> {
    sb: &'a Sandbox,
    id: String,
    dir: PathBuf,
    merged: Option<PathBuf>,
    child: Option<Child>,
    tail: Arc<Mutex<probe::Tail>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
    done: bool,
    _guard: Guard,
}

impl Container<'_> {
    /// Waits for the container's end, killing it after `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<(Option<ExitStatus>, bool)> {
        let deadline = timeout.map(|t| self.started + t);
        let child = self.child.as_mut().expect("started");
        loop {
            if let Some(s) = child.try_wait()? {
                // When slim is being stopped (SIGINT/SIGTERM), the runtime
                // ended because the stop deleted the container: the permit
                // then blocks until the stop exits with its own code (130,
                // 143), instead of this run reporting the kill as the
                // command's exit code.
                drop(crate::cleanup::permit());
                return Ok((Some(s), false));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.kill();
                let s = self.child.as_mut().expect("started").wait()?;
                return Ok((Some(s), true));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the container's process has ended (its exit status if so).
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn kill(&self) {
        let _ = self
            .sb
            .runtime
            .command(&self.sb.state)
            .args(["kill", &self.id, "KILL"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn pid(&self) -> Option<i32> {
        runtime::container_pid(&self.sb.runtime, &self.sb.state, &self.id)
    }

    /// The captured output, once the container has ended (the readers end
    /// when the runtime's pipes close).
    fn tail(&mut self) -> String {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.tail.lock().map(|t| t.text()).unwrap_or_default()
    }

    /// Tears the container down; returns its peak memory.
    fn finish(mut self) -> Option<u64> {
        self.teardown()
    }

    fn teardown(&mut self) -> Option<u64> {
        if self.done {
            return None;
        }
        self.done = true;
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                self.kill();
            }
            let _ = child.wait();
        }
        runtime::delete(&self.sb.runtime, &self.sb.state, &self.id);
        let peak = runtime::peak_memory(&self.id);
        runtime::remove_cgroups(&self.id);
        if let Some(m) = self.merged.take() {
            runtime::unmount(&self.sb.ns, &m);
        }
        crate::cleanup::remove_tree(&self.dir);
        peak
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        self.teardown();
    }
}
