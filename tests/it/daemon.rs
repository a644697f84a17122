//! The local engine: `docker-daemon:` and short names, against a real
//! Docker Engine API (`podman system service`, see `harness/podman.rs`),
//! judged by the podman CLI, skopeo and umoci.
//!
//! - `slim myapp:latest -o myapp:slim` reads from the engine and loads the
//!   result back, and no registry is contacted (a proxy and a credential
//!   helper stand guard).
//! - Without an engine, or without the image in it, a short name is a
//!   registry image as before, and slim says why.
//! - `docker-daemon:` reads into and writes from every other transport.
//! - A failed or interrupted run loads nothing and leaves nothing behind.
//! - Exporting a large image keeps memory flat.

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Environment that points slim at `engine`.
fn at(engine: &Podman) -> Vec<(String, String)> {
    vec![
        ("DOCKER_HOST".into(), engine.docker_host()),
        ("RUST_BACKTRACE".into(), "0".into()),
    ]
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The tree of an image in the engine: `podman save`, then skopeo and umoci.
fn engine_tree(ctx: &TestContext, engine: &Podman, name: &str) -> Tree {
    let archive = ctx.path(&unique_name("saved"));
    engine.save(name, &archive);
    ctx.tree_of_image(
        &Skopeo::anonymous(),
        &format!("docker-archive:{}", archive.display()),
    )
}

/// What slim makes of the fixture with its default settings, read straight
/// from the committed layout: the tree every engine run must give too.
fn slimmed_fixture_tree(ctx: &TestContext) -> Tree {
    let layout = ctx.path("expected");
    ctx.slim(&[&fixture_ref(), "-o", &oci_ref(&layout, "slim")])
        .assert_success();
    tree_of(&ctx.umoci_unpack(&layout, "slim"))
}

/// The everyday use, done criterion one: with the engine holding
/// `myapp:latest`, `slim myapp:latest -o myapp:slim` reads from it, loads
/// `myapp:slim` into it, says so in the output line and the report, the
/// result runs, and no registry is contacted: every proxy variable points
/// at a tripwire and `credsStore` at a helper that records its calls.
#[test]
fn short_name_reads_from_the_engine_and_loads_the_result_back_without_a_registry() {
    let engine = Podman::start();
    engine.load_fixture("myapp:latest");
    let ctx = TestContext::new();
    let tripwire = Tripwire::start(ctx.root());
    ctx.write_docker_config_json(&Tripwire::docker_config());
    let mut env = at(&engine);
    env.extend(tripwire.env());
    let out = ctx.slim_with(
        &[
            "myapp:latest",
            "-o",
            "myapp:slim",
            "--report",
            "report.json",
        ],
        &env_refs(&env),
        None,
    );
    out.assert_success();
    let from = format!("from the local engine ({})", engine.docker_host());
    out.assert_stderr_contains(&format!("myapp:latest: {from}"));
    out.assert_stderr_contains("wrote docker-daemon:myapp:slim (image config sha256:");
    out.assert_stderr_contains(&format!(
        "loaded into the local engine ({})",
        engine.docker_host()
    ));
    assert!(
        tripwire.connections().is_empty(),
        "slim contacted a registry: {:?}\n{out}",
        tripwire.connections()
    );
    assert!(
        tripwire.helper_calls().is_empty(),
        "slim asked for registry credentials: {:?}\n{out}",
        tripwire.helper_calls()
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx.path("report.json")).unwrap()).unwrap();
    assert_eq!(report["source"]["reference"], "docker-daemon:myapp:latest");
    assert_eq!(
        report["source"]["from"],
        format!("the local engine ({})", engine.docker_host())
    );
    assert_eq!(report["output"]["reference"], "docker-daemon:myapp:slim");

    // The engine has it, squashed to one layer, its config kept.
    assert!(engine.exists("myapp:slim"));
    let inspect = engine.inspect("myapp:slim");
    assert_eq!(
        inspect["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "{inspect:#}"
    );
    assert_eq!(
        inspect["Config"]["Entrypoint"],
        serde_json::json!(["/app/run.sh"])
    );
    // The same tree as slimming the committed layout directly.
    assert_same_tree(
        &slimmed_fixture_tree(&ctx),
        &engine_tree(&ctx, &engine, "myapp:slim"),
    );
    // And it runs: the entrypoint script, then a command through busybox.
    let run = engine.run(&["myapp:slim"]);
    run.assert_success();
    assert!(
        run.stdout_str().contains("hello from the slim demo app"),
        "{run}"
    );
    // The docs rule removed the changelog; the licence keep saved copyright.
    let ls = engine.run(&[
        "--entrypoint",
        "/bin/ls",
        "myapp:slim",
        "/usr/share/doc/busybox-static",
    ]);
    ls.assert_success();
    assert_eq!(ls.stdout_str().trim(), "copyright", "{ls}");
}

/// Done criterion two: with no engine reachable (DOCKER_HOST names a
/// missing socket), a short name is a Docker Hub image as it always was,
/// and the note says no engine was found. The tripwire proves the registry
/// was tried (and that it would catch a contact in the test above).
#[test]
fn short_name_without_an_engine_goes_to_the_registry_and_says_so() {
    let ctx = TestContext::new();
    let tripwire = Tripwire::start(ctx.root());
    let missing = ctx.path("no-engine.sock");
    let mut env = vec![
        (
            "DOCKER_HOST".to_string(),
            format!("unix://{}", missing.display()),
        ),
        ("RUST_BACKTRACE".to_string(), "0".to_string()),
    ];
    env.extend(tripwire.env());
    let out = ctx.slim_with(
        &["myapp:latest", "-o", "myapp:slim", "--timeout", "4s"],
        &env_refs(&env),
        None,
    );
    out.assert_code(1);
    out.assert_stderr_contains(&format!(
        "note: no Docker or Podman engine found (tried unix://{}); reading docker.io/library/myapp:latest from the registry",
        missing.display()
    ));
    let seen = tripwire.connections();
    assert!(
        seen.iter()
            .any(|c| c.starts_with("CONNECT registry-1.docker.io:443")),
        "the registry was not tried: {seen:?}\n{out}"
    );
}

/// An engine without the image: the registry, and the note says the engine
/// has no such image. `docker://` forces the registry even when the engine
/// has the image; a registry host does too.
#[test]
fn the_registry_when_the_engine_lacks_the_image_or_a_registry_is_named() {
    let engine = Podman::shared();
    let name = unique_name("local-only");
    engine.load_fixture(&format!("{name}:latest"));
    let ctx = TestContext::new();
    let tripwire = Tripwire::start(ctx.root());
    let mut env = at(engine);
    env.extend(tripwire.env());

    let ghost = unique_name("ghost");
    let out = ctx.slim_with(
        &["analyze", &format!("{ghost}:latest"), "--timeout", "3s"],
        &env_refs(&env),
        None,
    );
    out.assert_code(1);
    out.assert_stderr_contains(&format!(
        "note: the local engine ({}) has no image {ghost}:latest; reading docker.io/library/{ghost}:latest from the registry",
        engine.docker_host()
    ));

    for forced in [
        format!("docker://{name}:latest"),
        format!("docker.io/library/{name}:latest"),
    ] {
        let before = tripwire.connections().len();
        let out = ctx.slim_with(
            &["analyze", &forced, "--timeout", "3s"],
            &env_refs(&env),
            None,
        );
        out.assert_code(1);
        assert!(
            !out.stderr_str().contains("local engine"),
            "{forced} went near the engine:\n{out}"
        );
        assert!(
            tripwire.connections().len() > before,
            "{forced} did not go to the registry:\n{out}"
        );
    }
}

/// Without DOCKER_HOST, slim finds Podman's socket in
/// `$XDG_RUNTIME_DIR/podman/podman.sock` (the context's run dir), and
/// `slim analyze` resolves short names through the same function.
#[test]
fn discovery_finds_the_podman_socket_and_analyze_uses_it() {
    assert!(
        !Path::new("/var/run/docker.sock").exists(),
        "/var/run/docker.sock exists on this machine and comes before the Podman socket in slim's search; this test needs it absent"
    );
    let engine = Podman::shared();
    let name = format!("{}:v1", unique_name("team/found"));
    engine.load_fixture(&name);
    let ctx = TestContext::new();
    let podman_dir = ctx.path("run").join("podman");
    std::fs::create_dir_all(&podman_dir).unwrap();
    symlink(engine.socket(), podman_dir.join("podman.sock")).unwrap();
    let mut cmd = ctx.command();
    cmd.env_remove("DOCKER_HOST")
        .env("RUST_BACKTRACE", "0")
        .args(["analyze", &name, "--json"]);
    let out = Output::from_std(format!("slim analyze {name} --json"), cmd.output().unwrap());
    out.assert_success();
    let socket = format!("unix://{}", podman_dir.join("podman.sock").display());
    out.assert_stderr_contains(&format!("{name}: from the local engine ({socket})"));
    let json = out.stdout_json();
    assert_eq!(json["reference"], format!("docker-daemon:{name}"));
    assert_eq!(json["from"], format!("the local engine ({socket})"));
    assert_eq!(
        json["images"][0]["layers"].as_array().map(Vec::len),
        Some(3)
    );
}

/// `docker-daemon:` as a source, into every other transport; each result
/// unpacks to the fixture's tree (a faithful copy changes no file).
#[test]
fn docker_daemon_reads_into_every_transport() {
    let engine = Podman::shared();
    let name = format!("{}:v1", unique_name("from-engine"));
    engine.load_fixture(&name);
    let ctx = TestContext::new();
    let env = at(engine);
    let env = env_refs(&env);
    let src = format!("docker-daemon:{name}");

    let layout = ctx.path("layout");
    slim_copy_with(&ctx, &src, &oci_ref(&layout, "t"), &[], &env, None).assert_success();
    assert_layout_is_fixture(&ctx, &layout, "t");

    let skopeo = Skopeo::anonymous();
    let oci_archive = format!("oci-archive:{}:t", ctx.path("img-oci.tar").display());
    slim_copy_with(&ctx, &src, &oci_archive, &[], &env, None).assert_success();
    assert_same_tree(fixture_tree(), &ctx.tree_of_image(&skopeo, &oci_archive));

    let docker_archive = format!("docker-archive:{}", ctx.path("img-docker.tar").display());
    slim_copy_with(&ctx, &src, &docker_archive, &[], &env, None).assert_success();
    assert_same_tree(fixture_tree(), &ctx.tree_of_image(&skopeo, &docker_archive));

    let registry = Registry::shared();
    let repo_tag = format!("{}:t", unique_name("from-engine"));
    slim_copy_with(&ctx, &src, &registry.reference(&repo_tag), &[], &env, None).assert_success();
    assert_same_tree(
        fixture_tree(),
        &ctx.tree_of_image(&registry.skopeo(), &registry.docker_ref(&repo_tag)),
    );
}

/// `docker-daemon:` as a destination, from every other transport: the
/// engine has the image under its name, and `podman save` of it unpacks to
/// the fixture's tree.
#[test]
fn every_transport_writes_into_docker_daemon() {
    let engine = Podman::shared();
    let ctx = TestContext::new();
    let env = at(engine);
    let env = env_refs(&env);
    let skopeo = Skopeo::anonymous();

    let oci_archive = format!("oci-archive:{}:t", ctx.path("src-oci.tar").display());
    skopeo.copy(&fixture_ref(), &oci_archive, &[]);
    let docker_archive = format!("docker-archive:{}", ctx.path("src-docker.tar").display());
    skopeo.copy(&fixture_ref(), &format!("{docker_archive}:src:t"), &[]);
    let registry = Registry::shared();
    let repo_tag = format!("{}:t", unique_name("into-engine"));
    push_fixture(registry, &repo_tag);

    for src in [
        fixture_ref(),
        oci_archive,
        docker_archive,
        registry.reference(&repo_tag),
    ] {
        let name = format!("{}:v1", unique_name("into-engine"));
        let out = slim_copy_with(
            &ctx,
            &src,
            &format!("docker-daemon:{name}"),
            &[],
            &env,
            None,
        );
        out.assert_success();
        out.assert_stderr_contains(&format!("wrote docker-daemon:{name} (image config sha256:"));
        assert!(engine.exists(&name), "{name} is not in the engine:\n{out}");
        assert_same_tree(fixture_tree(), &engine_tree(&ctx, engine, &name));
    }
}

/// A missing image: the error names the socket and the image; a short
/// name's output also goes into the engine by `docker-daemon:` explicitly.
#[test]
fn a_missing_image_names_the_socket_and_the_image() {
    let engine = Podman::shared();
    let ctx = TestContext::new();
    let env = at(engine);
    let ghost = unique_name("nope");
    let out = ctx.slim_with(
        &[
            &format!("docker-daemon:{ghost}:latest"),
            "-o",
            &oci_ref(&ctx.path("out"), "t"),
        ],
        &env_refs(&env),
        None,
    );
    out.assert_code(1);
    out.assert_stderr_contains(&format!(
        "the engine at {} has no image {ghost}:latest",
        engine.docker_host()
    ));
    assert!(!ctx.path("out").exists(), "{out}");

    // An engine on TCP is refused with the way out.
    let out = ctx.slim_with(
        &[&format!("{ghost}:latest"), "-o", "x:slim"],
        &[
            ("DOCKER_HOST", "tcp://127.0.0.1:2375"),
            ("RUST_BACKTRACE", "0"),
        ],
        None,
    );
    out.assert_code(1);
    out.assert_stderr_contains(
        "DOCKER_HOST=tcp://127.0.0.1:2375: slim reaches an engine only over a Unix socket",
    );
    out.assert_stderr_contains("docker://");
}

/// A run that fails after reading the source and opening the engine as
/// destination loads nothing, and leaves no staging directory.
#[test]
fn a_failed_run_loads_nothing_and_leaves_nothing() {
    let engine = Podman::shared();
    let name = unique_name("fails");
    engine.load_fixture(&format!("{name}:latest"));
    let ctx = TestContext::new();
    let tmp = ctx.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut env = at(engine);
    env.push(("TMPDIR".into(), tmp.display().to_string()));
    // No layer may decompress to more than 0 bytes: the rewrite fails.
    let out = ctx.slim_with(
        &[
            &format!("{name}:latest"),
            "-o",
            &format!("{name}:slim"),
            "--max-layer-size",
            "0",
        ],
        &env_refs(&env),
        None,
    );
    out.assert_code(1);
    out.assert_stderr_contains("from the local engine");
    assert!(!engine.exists(&format!("{name}:slim")), "{out}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{out}");
}

/// Writes `size` bytes of incompressible data as files of `file_size` into
/// a tar at `path`, for `podman import`.
fn random_rootfs_tar(path: &Path, size: u64, file_size: u64) {
    let mut b = tar::Builder::new(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ));
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for i in 0..size.div_ceil(file_size) {
        let mut data = vec![0u8; file_size as usize];
        for chunk in data.chunks_mut(8) {
            let v = next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(file_size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("data/blob{i:03}.bin"), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap();
}

/// Runs `cmd`, returning what it printed and its peak RSS in KiB: the
/// largest `VmHWM` of `/proc/PID/status`, read every few milliseconds while
/// it runs. (Not `wait4`'s `ru_maxrss`: a child spawned from this test
/// binary inherits the binary's own high-water mark at exec, hundreds of
/// MiB while other tests run.)
fn run_measuring_rss(mut cmd: Command) -> (Output, u64) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning slim");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = Output {
        command: format!("{cmd:?}"),
        code: status.code(),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    (out, peak_kib)
}

/// Memory stays flat while a large image streams out of the engine (and
/// back in): 256 MiB of incompressible files, exported, spooled, slimmed
/// and loaded, take far less than the image's size in RAM. Then an
/// interrupted load: SIGTERM while slim streams the archive into the
/// engine leaves no image and no staging directory.
#[test]
fn a_large_image_streams_through_in_bounded_memory_and_an_interrupted_load_loads_nothing() {
    const SIZE: u64 = 256 << 20;
    let engine = Podman::shared();
    let ctx = TestContext::new();
    let rootfs = ctx.path("rootfs.tar");
    random_rootfs_tar(&rootfs, SIZE, 32 << 20);
    let name = format!("{}:v1", unique_name("big"));
    engine
        .cli(&["import", &rootfs.display().to_string(), &name])
        .assert_success();
    std::fs::remove_file(&rootfs).unwrap();
    let tmp = ctx.path("tmp");
    std::fs::create_dir(&tmp).unwrap();

    let mut cmd = ctx.command();
    cmd.env("DOCKER_HOST", engine.docker_host())
        .env("TMPDIR", &tmp)
        .env("RUST_BACKTRACE", "0")
        .args([
            &format!("docker-daemon:{name}"),
            "-o",
            &format!("docker-daemon:{name}-slim"),
            "--profile",
            "none",
            "--compression",
            "zstd",
            "--level",
            "1",
        ]);
    let (out, rss_kib) = run_measuring_rss(cmd);
    out.assert_success();
    assert!(engine.exists(&format!("{name}-slim")), "{out}");
    eprintln!(
        "peak RSS slimming a {} MiB image engine to engine: {} MiB",
        SIZE >> 20,
        rss_kib >> 10
    );
    assert!(
        rss_kib < (SIZE >> 10) / 2,
        "peak RSS {} MiB for a {} MiB image: not streaming",
        rss_kib >> 10,
        SIZE >> 20
    );

    // Interrupted while the archive streams into the engine: podman spools
    // a load to `api_load.tar*` in its TMPDIR; once that grows, stop slim.
    let podman_tmp = engine.dir().join("tmp");
    let loading = || -> Option<PathBuf> {
        std::fs::read_dir(&podman_tmp)
            .ok()?
            .flatten()
            .find(|e| {
                e.file_name().to_string_lossy().starts_with("api_load.tar")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
            .map(|e| e.path())
    };
    assert!(loading().is_none(), "a load is already under way");
    let target = format!("{name}-interrupted");
    let mut cmd = ctx.command();
    cmd.env("DOCKER_HOST", engine.docker_host())
        .env("TMPDIR", &tmp)
        .env("RUST_BACKTRACE", "0")
        .args([
            &format!("docker-daemon:{name}"),
            "-o",
            &format!("docker-daemon:{target}"),
            "--profile",
            "none",
            "--compression",
            "none",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let spooled = loop {
        if let Some(p) = loading() {
            break p;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "slim ended before it began loading"
        );
        assert!(Instant::now() < deadline, "slim never began loading");
        std::thread::sleep(Duration::from_millis(2));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let at_signal = std::fs::metadata(&spooled).map_or(0, |m| m.len());
    let out = child.wait_with_output().unwrap();
    let out = Output::from_std("slim (interrupted)".into(), out);
    eprintln!(
        "SIGTERM when the engine had {} MiB of the archive",
        at_signal >> 20
    );
    out.assert_code(143);
    out.assert_stderr_contains("interrupted (SIGTERM)");
    assert!(
        !engine.exists(&target),
        "the interrupted load made {target}:\n{out}"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{out}");
}
