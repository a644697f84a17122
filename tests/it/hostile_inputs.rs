//! Hostile inputs that used to give a silently wrong image, an unbounded
//! run, or leftovers at the destination: manifests of unknown media types,
//! endless `docker-archive:-` streams, runs that fail, are interrupted,
//! killed or time out, and concurrent runs into one new OCI layout.
//!
//! Each test here failed before the fix it guards.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

/// Waits for `child` at most `limit`; kills it and panics when it runs
/// longer (a hang is the bug these tests guard against).
fn wait_at_most(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("polling slim").is_some() {
            let out = child.wait_with_output().expect("collecting slim's output");
            return Output::from_std(what.to_string(), out);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collecting slim's output");
            panic!(
                "{what}: still running after {limit:?}; killed\n{}",
                Output::from_std(what.to_string(), out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The entries of a directory, sorted (`[]` if it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A one-image layout whose manifest says `manifest_type` (in its JSON when
/// `in_json`, else only in the index descriptor).
fn layout_with_manifest_type(dir: &Path, manifest_type: &str, in_json: bool) {
    write_image(
        dir,
        "v1",
        &[LayerBlob::raw(
            &gzip(&tar_of(&[("etc/hello", b"hello\n")])),
            OCI_LAYER_GZIP,
            &sha256_digest(&tar_of(&[("etc/hello", b"hello\n")])),
        )],
        json!({"config": {}}),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let desc = &index["manifests"][0];
    let digest = desc["digest"].as_str().unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&crate::harness::fixture::read_blob(dir, digest)).unwrap();
    if in_json {
        manifest["mediaType"] = json!(manifest_type);
    } else {
        manifest.as_object_mut().unwrap().remove("mediaType");
    }
    tag_only(
        dir,
        &serde_json::to_vec(&manifest).unwrap(),
        manifest_type,
        "v1",
    );
}

// ---------------------------------------------------------------------------
// Manifests (issue point 6)
// ---------------------------------------------------------------------------

/// Regression: a manifest of an unknown media type was read by its shape
/// and rewritten as an OCI image.
#[test]
fn a_manifest_of_an_unknown_media_type_is_refused() {
    let ctx = TestContext::new();
    for (i, in_json) in [true, false].into_iter().enumerate() {
        let src = ctx.path(&format!("evil-{i}"));
        layout_with_manifest_type(&src, "application/vnd.example.evil+json", in_json);
        let out_dir = ctx.path(&format!("out-{i}"));
        let out = ctx.slim(&[&oci_ref(&src, "v1"), "-o", &oci_ref(&out_dir, "slim")]);
        assert_clean_failure(&out, 1);
        let err = out.stderr_str();
        assert!(
            err.contains("application/vnd.example.evil+json") && err.contains("media type"),
            "{out}"
        );
        assert!(!out_dir.exists(), "the destination was created:\n{out}");
    }
}

/// Regression: an image without layers failed with "--keep-base keeps all
/// 0 layers" though no --keep-base was given.
#[test]
fn an_image_without_layers_gets_its_own_error() {
    let ctx = TestContext::new();
    let src = ctx.path("empty");
    std::fs::create_dir_all(src.join("blobs/sha256")).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put_blob(&src, &config), "size": config.len()},
        "layers": [],
    }))
    .unwrap();
    tag_only(
        &src,
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
        "v1",
    );
    let out_dir = ctx.path("out");
    let out = ctx.slim(&[&oci_ref(&src, "v1"), "-o", &oci_ref(&out_dir, "slim")]);
    assert_clean_failure(&out, 1);
    let err = out.stderr_str();
    assert!(err.contains("lists no layers"), "{out}");
    assert!(!err.contains("keep-base"), "{out}");
    // A faithful copy of it still works.
    slim_copy(&ctx, &oci_ref(&src, "v1"), &oci_ref(&out_dir, "copy"), &[]).assert_success();
}

// ---------------------------------------------------------------------------
// docker-archive on stdin (issue point 10)
// ---------------------------------------------------------------------------

/// Runs `slim docker-archive:- ARGS` fed by `feed` on another thread.
fn slim_from_stdin(
    ctx: &TestContext,
    args: &[&str],
    feed: impl FnOnce(std::process::ChildStdin) + Send + 'static,
) -> Output {
    let mut cmd = ctx.command();
    cmd.arg("docker-archive:-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running slim");
    let stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || feed(stdin));
    wait_at_most(child, Duration::from_secs(90), "slim docker-archive:-")
}

/// Regression: slim read stdin to its end before looking at the archive, so
/// a stream that goes on after the archive (a producer that never closes
/// the pipe) made it wait and spool forever. It stops at the tar
/// end-of-archive marker.
#[test]
fn docker_archive_on_stdin_stops_at_the_end_of_the_archive() {
    let ctx = TestContext::new();
    let archive = std::fs::read(skopeo_docker_archive(&ctx, "demo.tar")).unwrap();
    let out_dir = ctx.path("out");
    let out = slim_from_stdin(&ctx, &["-o", &oci_ref(&out_dir, "slim")], move |mut w| {
        if w.write_all(&archive).is_err() {
            return;
        }
        // Then zeros (more end-of-archive blocks) and garbage, never closed.
        let junk = vec![0u8; 1 << 20];
        while w.write_all(&junk).is_ok() {}
    });
    out.assert_success();
    assert!(ctx.umoci_unpack(&out_dir, "slim").join("etc").is_dir());
}

/// An endless stream of valid tar members is refused at the bound instead
/// of filling the disk.
#[test]
fn docker_archive_on_stdin_larger_than_the_bound_is_refused() {
    let ctx = TestContext::new();
    let out_dir = ctx.path("out");
    let started = Instant::now();
    let out = slim_from_stdin(
        &ctx,
        &["--max-archive-size", "1", "-o", &oci_ref(&out_dir, "slim")],
        |mut w| {
            let chunk = 64u64 << 20;
            let zeros = vec![0u8; chunk as usize];
            for i in 0.. {
                let mut h = tar::Header::new_gnu();
                h.set_path(format!("member-{i}")).unwrap();
                h.set_size(chunk);
                h.set_mode(0o644);
                h.set_cksum();
                if w.write_all(h.as_bytes()).is_err() || w.write_all(&zeros).is_err() {
                    return;
                }
            }
        },
    );
    let err = assert_clean_failure(&out, 1);
    assert!(err.contains("docker-archive:-"), "{out}");
    assert!(
        out.stderr_str().contains("larger than 1.1 GB")
            || out.stderr_str().contains("--max-archive-size"),
        "{out}"
    );
    assert!(!out_dir.exists());
    assert!(started.elapsed() < Duration::from_secs(60));
}

// ---------------------------------------------------------------------------
// Leftovers (issue point 11)
// ---------------------------------------------------------------------------

/// Regression: a failing run into `oci:new1/new2/out` removed `out` but
/// left the `new1/new2/` it had created.
#[test]
fn a_failed_run_removes_the_parent_directories_it_created() {
    let ctx = TestContext::new();
    let (src, _) = corrupt_layout(&ctx);
    let out = ctx.slim(&[
        &format!("oci:{}:{FIXTURE_TAG}", src.display()),
        "-o",
        "oci:new1/new2/out:slim",
    ]);
    assert_clean_failure(&out, 1);
    assert!(!ctx.path("new1").exists(), "new1/ left behind:\n{out}");
}

/// A failed copy into an existing layout takes back the blobs it added
/// (they were not there before and no image uses them) and keeps the rest.
#[test]
fn a_failed_run_into_an_existing_layout_leaves_its_blobs_as_they_were() {
    let ctx = TestContext::new();
    let dest = ctx.path("dest");
    // An existing layout holding an unrelated one-layer image.
    write_image(
        &dest,
        "v1",
        &[LayerBlob::raw(
            &gzip(&tar_of(&[("a", b"a\n")])),
            OCI_LAYER_GZIP,
            &sha256_digest(&tar_of(&[("a", b"a\n")])),
        )],
        json!({"config": {}}),
    );
    let before = listing(&dest.join("blobs/sha256"));
    let index_before = std::fs::read(dest.join("index.json")).unwrap();
    let (src, _) = corrupt_layout(&ctx);
    let out = slim_copy(
        &ctx,
        &format!("oci:{}:{FIXTURE_TAG}", src.display()),
        &oci_ref(&dest, "copy"),
        &[],
    );
    assert_clean_failure(&out, 1);
    assert_eq!(listing(&dest.join("blobs/sha256")), before, "{out}");
    assert_eq!(
        std::fs::read(dest.join("index.json")).unwrap(),
        index_before
    );
    assert_eq!(listing(&dest), ["blobs", "index.json", "oci-layout"]);
}

/// Starts `slim ADDR/demo:latest -o DEST` against a hostile registry that
/// answers every manifest request with 429 and `Retry-After: 20`, so the
/// run sits mid-pull with its destination open. Returns once the
/// destination's staging directory exists.
fn start_stuck_run(ctx: &TestContext, hostile: &Hostile, dest: &str, extra: &[&str]) -> Child {
    hostile.set_fault(Fault::FailFirst {
        status: 429,
        count: 1000,
        retry_after: Some(20),
    });
    hostile.clear_requests();
    let mut cmd = ctx.command();
    cmd.args([&hostile.reference("demo:latest"), "-o", dest])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("running slim");
    let deadline = Instant::now() + Duration::from_secs(20);
    while hostile.count("GET", "/manifests/") == 0 {
        assert!(
            Instant::now() < deadline,
            "slim never asked for the manifest"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Regression: Ctrl-C mid-pull left `out/.slim-staging-XXXX/` in a
/// destination that did not exist before. Interrupted, slim removes what it
/// created and exits 130 (SIGTERM: 143).
#[test]
fn an_interrupted_run_leaves_no_destination_behind() {
    let ctx = TestContext::new();
    let hostile = Hostile::start();
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let dest = ctx.path(&format!("new-{sig}/out"));
        let child = start_stuck_run(&ctx, &hostile, &oci_ref(&dest, "slim"), &[]);
        assert!(
            dest.is_dir(),
            "the destination should be open by now: {:?}",
            hostile.requests()
        );
        signal(&child, sig);
        let out = wait_at_most(child, Duration::from_secs(20), "interrupted slim");
        out.assert_code(code);
        assert!(out.stderr_str().contains("interrupted"), "{out}");
        assert!(
            !ctx.path(&format!("new-{sig}")).exists(),
            "left behind: {:?}\n{out}",
            listing(&dest)
        );
    }
}

/// Regression: every run ended within its time only by the goodwill of the
/// server. `--timeout` stops the whole run, undoing what it wrote.
#[test]
fn a_run_past_its_timeout_stops_and_leaves_nothing() {
    let ctx = TestContext::new();
    let hostile = Hostile::start();
    let dest = ctx.path("out");
    let started = Instant::now();
    let child = start_stuck_run(
        &ctx,
        &hostile,
        &oci_ref(&dest, "slim"),
        &["--timeout", "2s"],
    );
    let out = wait_at_most(child, Duration::from_secs(30), "slim --timeout 2s");
    let err = assert_clean_failure(&out, 1);
    assert!(err.contains("--timeout 2s"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(15), "{out}");
    assert!(!dest.exists(), "left behind: {:?}", listing(&dest));
}

/// `kill -9` cannot be caught: the staging directory stays, held by
/// nobody. The next run into the layout succeeds and removes it.
#[test]
fn a_rerun_after_kill_9_succeeds_and_removes_the_stale_staging_directory() {
    let ctx = TestContext::new();
    let hostile = Hostile::start();
    let dest = ctx.path("out");
    let child = start_stuck_run(&ctx, &hostile, &oci_ref(&dest, "slim"), &[]);
    signal(&child, libc::SIGKILL);
    wait_at_most(child, Duration::from_secs(20), "killed slim");
    let left = listing(&dest);
    assert!(
        left.iter().any(|n| n.starts_with(".slim-staging-")),
        "expected the killed run's staging dir: {left:?}"
    );
    let out = slim_copy(&ctx, &fixture_ref(), &oci_ref(&dest, "slim"), &[]);
    out.assert_success();
    assert_eq!(listing(&dest), ["blobs", "index.json", "oci-layout"]);
    assert_same_tree(&tree_of(&ctx.umoci_unpack(&dest, "slim")), fixture_tree());
}

// ---------------------------------------------------------------------------
// Concurrency (issue point 12)
// ---------------------------------------------------------------------------

/// Regression: four runs writing different tags into the same new layout
/// directory: three failed with "a non-empty directory that is not an OCI
/// layout". All four land, and every tag is readable.
#[test]
fn concurrent_runs_into_one_new_layout_all_land() {
    let ctx = TestContext::new();
    let dest = ctx.path("shared/layout");
    let runs: Vec<Child> = (0..4)
        .map(|i| {
            let mut cmd = ctx.command();
            let squash = if i % 2 == 0 { "all" } else { "none" };
            cmd.args([&fixture_ref(), "-o", &oci_ref(&dest, &format!("t{i}"))])
                .args(["--squash", squash])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().expect("running slim")
        })
        .collect();
    for (i, child) in runs.into_iter().enumerate() {
        wait_at_most(child, Duration::from_secs(120), &format!("run {i}")).assert_success();
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
    let mut tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    tags.sort();
    assert_eq!(tags, ["t0", "t1", "t2", "t3"]);
    for t in tags {
        assert!(ctx.umoci_unpack(&dest, t).join("etc").is_dir());
    }
    assert_eq!(listing(&dest), ["blobs", "index.json", "oci-layout"]);
}

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

/// Regression (found by `fuzz_parsers::config_rewrite_takes_any_json`): a
/// config whose history holds something other than objects made the
/// config rewrite panic (exit 101). It is refused with its digest.
#[test]
fn a_config_with_a_malformed_history_is_refused() {
    let ctx = TestContext::new();
    let src = ctx.path("src");
    std::fs::create_dir_all(src.join("blobs/sha256")).unwrap();
    let layer_tar = tar_of(&[("etc/hello", b"hello\n")]);
    let layer = gzip(&layer_tar);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer_tar)]},
        "history": ["not an object"],
    }))
    .unwrap();
    let config_digest = put_blob(&src, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": put_blob(&src, &layer), "size": layer.len()}],
    }))
    .unwrap();
    tag_only(
        &src,
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
        "v1",
    );
    let out_dir = ctx.path("out");
    let out = ctx.slim(&[&oci_ref(&src, "v1"), "-o", &oci_ref(&out_dir, "slim")]);
    assert_clean_failure(&out, 1);
    let err = out.stderr_str();
    assert!(
        err.contains(&config_digest) && err.contains("history[0] is not an object"),
        "{out}"
    );
    assert!(!out_dir.exists());
}

// ---------------------------------------------------------------------------
// Memory per file
// ---------------------------------------------------------------------------

/// Regression: memory followed the number of entries without bound (a
/// 10 MB layer of a million empty files took 450–710 MB). The image's
/// layers together may hold `--max-files` entries; past that the run is
/// refused naming the layer, the entry and the flag.
#[test]
fn an_image_with_more_entries_than_max_files_is_refused() {
    let ctx = TestContext::new();
    let out_dir = ctx.path("out");
    let out = ctx.slim(&[
        &fixture_ref(),
        "-o",
        &oci_ref(&out_dir, "slim"),
        "--max-files",
        "20",
    ]);
    assert_clean_failure(&out, 1);
    let err = out.stderr_str();
    assert!(
        err.contains("more than 20 entries (--max-files)") && err.contains("at entry /"),
        "{out}"
    );
    assert!(!out_dir.exists());
    // The default takes the fixture.
    ctx.slim(&[&fixture_ref(), "-o", &oci_ref(&out_dir, "slim")])
        .assert_success();
}
