//! Bad input: every failure exits 1 (2 for usage errors), prints exactly one
//! `error:` line naming what is wrong (reference, digest or path; the cause
//! chain follows on `Caused by:` lines), never a panic or a backtrace, and
//! leaves the destination as it was: no registry tag, no `index.json`
//! entry, no archive file.

use std::path::Path;

use serde_json::json;

use crate::harness::*;

/// Assert that `haystack` contains every needle (the failing output shown).
#[track_caller]
fn assert_mentions(out: &Output, haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            haystack.contains(n),
            "expected {n:?} in {haystack:?}:\n{out}"
        );
    }
}

/// The registry has no `repo:tag` (asked with valid credentials, so only
/// "unknown" can be the reason).
#[track_caller]
fn assert_tag_absent(reg: &Registry, repo: &str, tag: &str) {
    if reg.auth() == RegistryAuth::Token {
        let out = reg.skopeo().run(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("--creds={USER}:{PASSWORD}"),
            &reg.docker_ref(&format!("{repo}:{tag}")),
        ]);
        out.assert_failure();
        assert!(out.stderr_str().contains("unknown"), "{out}");
    } else {
        let tags = registry_tags(reg, repo);
        assert!(
            !tags.iter().any(|t| t == tag),
            "{repo}:{tag} was written: {tags:?}"
        );
    }
}

#[track_caller]
fn assert_absent(path: &Path) {
    assert!(!path.exists(), "{} was created", path.display());
}

// ---------------------------------------------------------------------------
// Usage errors (exit 2)
// ---------------------------------------------------------------------------

#[test]
fn malformed_reference_is_a_usage_error() {
    let ctx = TestContext::new();
    let layout = ctx.path("out");
    for bad in ["UPPER:case:bad", "team/App:1.0", "reg.example.com/a:b:c"] {
        let out = slim_copy(&ctx, bad, &oci_ref(&layout, "v1"), &[]);
        let line = assert_clean_failure(&out, 2);
        assert_mentions(&out, &line, &[bad, "malformed"]);
        assert_absent(&layout);
    }
    // As a destination too; nothing is read from the source first.
    let out = slim_copy(&ctx, &fixture_ref(), "UPPER:case:bad", &[]);
    let line = assert_clean_failure(&out, 2);
    assert_mentions(&out, &line, &["UPPER:case:bad"]);

    // A docker archive names its image NAME:TAG; a digest cannot be a RepoTag.
    let archive = ctx.path("out.tar");
    let digested = format!(
        "docker-archive:{}:demo@{}",
        archive.display(),
        fixture_image().manifest_digest
    );
    let out = slim_copy(&ctx, &fixture_ref(), &digested, &[]);
    let line = assert_clean_failure(&out, 2);
    assert_mentions(&out, &line, &["digest"]);
    assert_absent(&archive);
}

#[test]
fn unknown_transport_is_a_usage_error() {
    let ctx = TestContext::new();
    let target = ctx.path("x");
    let dir_ref = format!("dir:{}", target.display());

    let out = slim_copy(&ctx, &dir_ref, &oci_ref(&ctx.path("out"), "v1"), &[]);
    let line = assert_clean_failure(&out, 2);
    assert_mentions(&out, &line, &["unknown transport", "\"dir\"", &dir_ref]);
    assert_absent(&ctx.path("out"));

    let out = slim_copy(&ctx, &fixture_ref(), &dir_ref, &[]);
    let line = assert_clean_failure(&out, 2);
    assert_mentions(&out, &line, &["unknown transport", "\"dir\""]);
    assert_absent(&target);
}

// ---------------------------------------------------------------------------
// Missing things (exit 1)
// ---------------------------------------------------------------------------

#[test]
fn missing_tag_on_the_registry_names_the_reference() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let repo = unique_name("errors/notag");
    push_fixture(reg, &format!("{repo}:v1"));
    let src = reg.reference(&format!("{repo}:nope"));
    let layout = ctx.path("out");

    let out = slim_copy(&ctx, &src, &oci_ref(&layout, "v1"), &[]);
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&src]);
    assert_mentions(
        &out,
        &out.stderr_str().to_lowercase(),
        &["manifest unknown"],
    );
    assert_absent(&layout);
}

#[test]
fn missing_repository_on_the_registry_names_the_reference() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let src = reg.reference(&format!("{}:v1", unique_name("errors/norepo")));
    let archive = ctx.path("out.tar");

    let out = slim_copy(
        &ctx,
        &src,
        &format!("docker-archive:{}", archive.display()),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&src]);
    assert_mentions(&out, &out.stderr_str(), &["does it exist?"]);
    assert_absent(&archive);
}

#[test]
fn missing_oci_layout_directory_names_the_path() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let missing = ctx.path("no-such-layout");
    let repo = unique_name("errors/nolayout");

    let out = slim_copy(
        &ctx,
        &oci_ref(&missing, "v1"),
        &reg.reference(&format!("{repo}:v1")),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&missing.display().to_string()]);
    assert_mentions(&out, &out.stderr_str(), &["no such directory"]);
    assert_tag_absent(reg, &repo, "v1");
}

#[test]
fn tag_not_in_the_layout_lists_the_available_tags() {
    let ctx = TestContext::new();
    let layout = ctx.path("out");
    let src = oci_ref(&fixture_layout(), "nope");

    let out = slim_copy(&ctx, &src, &oci_ref(&layout, "v1"), &[]);
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&src]);
    assert_mentions(&out, &out.stderr_str(), &["\"nope\"", FIXTURE_TAG]);
    assert_absent(&layout);
}

#[test]
fn oci_archive_that_does_not_exist_names_the_path() {
    let ctx = TestContext::new();
    let missing = ctx.path("missing.tar");
    let archive = ctx.path("out.tar");

    let out = slim_copy(
        &ctx,
        &format!("oci-archive:{}:v1", missing.display()),
        &format!("docker-archive:{}", archive.display()),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&missing.display().to_string()]);
    assert_mentions(&out, &out.stderr_str(), &["no such file"]);
    assert_absent(&archive);
}

#[test]
fn docker_archive_that_is_not_a_tar_names_the_path() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let junk = ctx.path("junk.tar");
    std::fs::write(&junk, "this is not a tar archive\n".repeat(100)).unwrap();
    let repo = unique_name("errors/notatar");

    let out = slim_copy(
        &ctx,
        &format!("docker-archive:{}", junk.display()),
        &reg.reference(&format!("{repo}:v1")),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&junk.display().to_string()]);
    assert_tag_absent(reg, &repo, "v1");

    // The same bytes on stdin.
    let bytes = std::fs::read(&junk).unwrap();
    let out = slim_copy_with(
        &ctx,
        "docker-archive:-",
        &reg.reference(&format!("{repo}:v1")),
        &[],
        &[],
        Some(&bytes),
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &["docker-archive:-"]);
    assert_tag_absent(reg, &repo, "v1");
}

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

#[test]
fn wrong_password_on_a_basic_registry_pushes_nothing() {
    let reg = Registry::shared_basic();
    let ctx = TestContext::new();
    ctx.write_docker_config(reg.addr(), USER, "wrong-password");
    let repo = unique_name("errors/basic-wrong");

    let out = slim_copy(
        &ctx,
        &fixture_ref(),
        &reg.reference(&format!("{repo}:v1")),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[reg.addr()]);
    assert_mentions(&out, &out.stderr_str(), &["credentials", "docker login"]);
    assert_tag_absent(reg, &repo, "v1");

    // Pulling with them fails the same way.
    let src_repo = unique_name("errors/basic-wrong-src");
    push_fixture(reg, &format!("{src_repo}:v1"));
    let layout = ctx.path("out");
    let out = slim_copy(
        &ctx,
        &reg.reference(&format!("{src_repo}:v1")),
        &oci_ref(&layout, "v1"),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[reg.addr()]);
    assert_mentions(&out, &out.stderr_str(), &["credentials", "docker login"]);
    assert_absent(&layout);
}

#[test]
fn no_credentials_for_a_basic_registry_says_how_to_log_in() {
    let reg = Registry::shared_basic();
    let ctx = TestContext::new();
    let repo = unique_name("errors/basic-none");

    let out = slim_copy(
        &ctx,
        &fixture_ref(),
        &reg.reference(&format!("{repo}:v1")),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[reg.addr()]);
    assert_mentions(
        &out,
        &out.stderr_str(),
        &["docker login", "REGISTRY_AUTH_FILE"],
    );
    assert_tag_absent(reg, &repo, "v1");
}

#[test]
fn wrong_password_on_a_token_registry_pushes_nothing() {
    let reg = Registry::shared_token();
    let ctx = TestContext::new();
    let auth_file = ctx.path("auth.json");
    std::fs::write(
        &auth_file,
        serde_json::to_vec(&serde_json::json!({"auths": {reg.addr(): {
            "auth": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{USER}:wrong"),
            )
        }}}))
        .unwrap(),
    )
    .unwrap();
    let repo = unique_name("errors/token-wrong");

    let out = slim_copy_with(
        &ctx,
        &fixture_ref(),
        &reg.reference(&format!("{repo}:v1")),
        &[],
        &[("REGISTRY_AUTH_FILE", &auth_file.display().to_string())],
        None,
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[reg.addr()]);
    assert_mentions(
        &out,
        &out.stderr_str(),
        &[
            "credentials",
            "docker login",
            &auth_file.display().to_string(),
        ],
    );
    assert_tag_absent(reg, &repo, "v1");
}

// ---------------------------------------------------------------------------
// Corrupt content
// ---------------------------------------------------------------------------

#[test]
fn corrupt_layer_in_an_oci_layout_to_a_fresh_layout_writes_nothing() {
    let ctx = TestContext::new();
    let (bad, layer) = corrupt_layout(&ctx);
    let layout = ctx.path("out");

    let out = slim_copy(
        &ctx,
        &oci_ref(&bad, FIXTURE_TAG),
        &oci_ref(&layout, "v1"),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&bad.display().to_string()]);
    assert_mentions(&out, &out.stderr_str(), &[&layer, "digest mismatch"]);
    assert_absent(&layout);
}

#[test]
fn corrupt_layer_in_an_oci_layout_to_an_existing_layout_adds_no_tag() {
    let ctx = TestContext::new();
    let (bad, layer) = corrupt_layout(&ctx);
    // A layout that already holds an image (written by skopeo) but not the
    // corrupted layer, so that layer must really be read from the source.
    let layout = ctx.path("out");
    skopeo_copy(&fixture_ref(), &oci_ref(&layout, "other"), &[]);
    std::fs::remove_file(crate::harness::fixture::blob_path(&layout, &layer)).ok();
    let index_before = std::fs::read(layout.join("index.json")).unwrap();

    let out = slim_copy(
        &ctx,
        &oci_ref(&bad, FIXTURE_TAG),
        &oci_ref(&layout, "v1"),
        &[],
    );
    assert_clean_failure(&out, 1);
    assert_mentions(&out, &out.stderr_str(), &[&layer, "digest mismatch"]);
    assert_eq!(
        std::fs::read(layout.join("index.json")).unwrap(),
        index_before,
        "index.json changed"
    );
    assert!(
        !crate::harness::fixture::blob_path(&layout, &layer).exists(),
        "the corrupt blob was stored"
    );
}

/// Regression: a failed copy into an existing empty directory used to leave
/// `blobs/` behind, and the next run refused the directory as "not an OCI
/// layout".
#[test]
fn corrupt_layer_into_an_empty_directory_leaves_it_empty_and_usable() {
    let ctx = TestContext::new();
    let (bad, layer) = corrupt_layout(&ctx);
    let layout = ctx.path("empty");
    std::fs::create_dir(&layout).unwrap();

    let out = slim_copy(
        &ctx,
        &oci_ref(&bad, FIXTURE_TAG),
        &oci_ref(&layout, "v1"),
        &[],
    );
    assert_clean_failure(&out, 1);
    assert_mentions(&out, &out.stderr_str(), &[&layer]);
    let left: Vec<_> = std::fs::read_dir(&layout)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    slim_copy(&ctx, &fixture_ref(), &oci_ref(&layout, "v1"), &[]).assert_success();
    assert_eq!(
        manifest_digest_of(&oci_ref(&layout, "v1")),
        fixture_image().manifest_digest
    );
}

#[test]
fn corrupt_layer_in_an_oci_layout_to_a_registry_leaves_the_tag_absent() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let (bad, layer) = corrupt_layout(&ctx);
    let repo = unique_name("errors/corrupt");

    let out = slim_copy(
        &ctx,
        &oci_ref(&bad, FIXTURE_TAG),
        &reg.reference(&format!("{repo}:v1")),
        &[],
    );
    assert_clean_failure(&out, 1);
    assert_mentions(&out, &out.stderr_str(), &[&layer, "digest mismatch"]);
    assert_tag_absent(reg, &repo, "v1");
    // Nothing unverified was pushed: the corrupt layer never reached the
    // registry.
    let layer_uploads = reg
        .requests()
        .iter()
        .filter(|e| {
            e.method == "PUT"
                && e.uri.starts_with(&format!("/v2/{repo}/blobs/uploads/"))
                && e.uri.contains(&format!("digest={layer}"))
        })
        .count();
    assert_eq!(layer_uploads, 0, "the corrupt layer was uploaded");
}

#[test]
fn corrupt_layer_to_archives_writes_no_file_and_leaves_no_temp_files() {
    let ctx = TestContext::new();
    let (bad, layer) = corrupt_layout(&ctx);
    let outdir = ctx.path("archives");
    std::fs::create_dir(&outdir).unwrap();

    for dst in [
        format!("oci-archive:{}:v1", outdir.join("image.tar").display()),
        format!("docker-archive:{}", outdir.join("saved.tar").display()),
    ] {
        let out = slim_copy(&ctx, &oci_ref(&bad, FIXTURE_TAG), &dst, &[]);
        let line = assert_clean_failure(&out, 1);
        assert_mentions(&out, &line, &[&dst]);
        assert_mentions(&out, &out.stderr_str(), &[&layer, "digest mismatch"]);
        let left: Vec<_> = std::fs::read_dir(&outdir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{dst} left {left:?}");
    }
}

#[test]
fn hostile_corrupt_blob_fails_with_its_digest() {
    let reg = Registry::shared();
    let h = Hostile::start();
    let layer = biggest_layer();
    h.set_fault(Fault::CorruptBlob(Some(layer.clone())));
    let ctx = TestContext::new();
    let repo = unique_name("errors/hostile-corrupt");

    let out = slim_copy(
        &ctx,
        &h.reference("demo:latest"),
        &reg.reference(&format!("{repo}:v1")),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&h.reference("demo:latest")]);
    assert_mentions(&out, &out.stderr_str(), &[&layer, "digest mismatch"]);
    assert_tag_absent(reg, &repo, "v1");
    // The copy streamed the blob to the registry while it downloaded it,
    // but never committed it: the session was cancelled, and the
    // repository does not hold the layer.
    let requests = reg.requests();
    let uploads = format!("/v2/{repo}/blobs/uploads/");
    assert!(
        requests
            .iter()
            .any(|e| e.method == "DELETE" && e.uri.starts_with(&uploads)),
        "no upload session was cancelled"
    );
    assert!(
        !requests.iter().any(|e| e.method == "PUT"
            && e.uri.starts_with(&uploads)
            && e.uri.contains(&format!("digest={layer}"))),
        "the corrupt layer was committed"
    );
    let link = reg.storage_dir().join(format!(
        "docker/registry/v2/repositories/{repo}/_layers/sha256/{}",
        &layer["sha256:".len()..]
    ));
    assert!(!link.exists(), "{} exists", link.display());
}

#[test]
fn hostile_truncated_blob_every_time_fails_with_its_digest() {
    let h = Hostile::start();
    let layer = biggest_layer();
    h.set_fault(Fault::TruncatedBlob(Some(layer.clone())));
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let out = slim_copy(
        &ctx,
        &h.reference("demo:latest"),
        &oci_ref(&layout, "v1"),
        &[],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&h.reference("demo:latest")]);
    assert_mentions(&out, &out.stderr_str(), &[&layer]);
    assert_absent(&layout);
    // It tried more than once before giving up.
    assert!(h.count("GET", &format!("/blobs/{layer}")) > 1);
}

#[test]
fn hostile_manifest_that_is_not_json_fails_cleanly() {
    let h = Hostile::start();
    h.set_fault(Fault::ManifestNotJson);
    let ctx = TestContext::new();
    let layout = ctx.path("out");
    let src = h.reference("demo:latest");

    let out = slim_copy(&ctx, &src, &oci_ref(&layout, "v1"), &[]);
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&src]);
    assert_absent(&layout);

    // Pinned by digest, the bytes are checked against it first.
    let pinned = h.reference(&format!("demo@{}", h.manifest_digest()));
    let out = slim_copy(&ctx, &pinned, &oci_ref(&layout, "v1"), &[]);
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&pinned]);
    assert_mentions(&out, &out.stderr_str(), &[h.manifest_digest()]);
    assert_absent(&layout);
}

#[test]
fn hostile_manifest_digest_mismatch_fails_with_the_digest() {
    let h = Hostile::start();
    h.set_fault(Fault::ManifestDigestMismatch);
    let ctx = TestContext::new();
    let archive = ctx.path("out.tar");
    let dst = format!("docker-archive:{}", archive.display());

    for src in [
        h.reference("demo:latest"),
        h.reference(&format!("demo@{}", h.manifest_digest())),
    ] {
        let out = slim_copy(&ctx, &src, &dst, &[]);
        let line = assert_clean_failure(&out, 1);
        assert_mentions(&out, &line, &[&src]);
        assert_mentions(
            &out,
            &out.stderr_str(),
            &[h.manifest_digest(), "digest mismatch"],
        );
        assert_absent(&archive);
    }
}

// ---------------------------------------------------------------------------
// Platforms
// ---------------------------------------------------------------------------

#[test]
fn platform_that_matches_nothing_lists_the_available_ones() {
    let ctx = TestContext::new();
    let m = multiarch_layout();
    let layout = ctx.path("out");

    let out = slim_copy(
        &ctx,
        &m.reference,
        &oci_ref(&layout, "v1"),
        &["--platform", "linux/s390x"],
    );
    let line = assert_clean_failure(&out, 1);
    assert_mentions(&out, &line, &[&m.reference]);
    assert_mentions(
        &out,
        &out.stderr_str(),
        &["linux/s390x", "linux/amd64", "linux/arm64/v8"],
    );
    assert_absent(&layout);

    // A single-platform image says what it is.
    let out = slim_copy(
        &ctx,
        &fixture_ref(),
        &oci_ref(&layout, "v1"),
        &["--platform", "linux/arm64"],
    );
    assert_clean_failure(&out, 1);
    assert_mentions(&out, &out.stderr_str(), &["linux/amd64", "linux/arm64"]);
    assert_absent(&layout);

    // A platform that is not os/arch is a usage error.
    let out = slim_copy(
        &ctx,
        &m.reference,
        &oci_ref(&layout, "v1"),
        &["--platform", "bogus"],
    );
    let line = assert_clean_failure(&out, 2);
    assert_mentions(&out, &line, &["\"bogus\""]);
    assert_absent(&layout);
}

// ---------------------------------------------------------------------------
// Backtraces
// ---------------------------------------------------------------------------

/// A backtrace is for developers: printed when `RUST_BACKTRACE` asks for
/// one (any value but `0`), never otherwise.
#[test]
fn a_backtrace_only_when_rust_backtrace_asks_for_one() {
    let ctx = TestContext::new();
    let src = oci_ref(&ctx.path("no-such-layout"), "v1");
    let dst = oci_ref(&ctx.path("out"), "v1");
    for (value, wanted) in [
        (Some("1"), true),
        (Some("full"), true),
        (Some("0"), false),
        (None, false),
    ] {
        let mut cmd = ctx.command();
        cmd.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        if let Some(v) = value {
            cmd.env("RUST_BACKTRACE", v);
        }
        let out = Output::from_std(
            format!("RUST_BACKTRACE={value:?} slim {src} -o {dst}"),
            cmd.args([src.as_str(), "-o", &dst]).output().unwrap(),
        );
        if wanted {
            out.assert_code(1);
            let stderr = out.stderr_str();
            let frames = stderr
                .lines()
                .filter(|l| {
                    let l = l.trim_start();
                    l.split_once(": ").is_some_and(|(n, _)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .count();
            assert!(frames >= 3, "expected a backtrace:\n{out}");
            assert!(stderr.starts_with("error: "), "{out}");
        } else {
            assert_clean_failure(&out, 1);
        }
    }
}

// ---------------------------------------------------------------------------
// The exact messages: insta snapshots in tests/it/snapshots/
// ---------------------------------------------------------------------------

/// `slim ARGS` with nothing from the developer's environment that changes
/// what it prints: no `RUST_LOG`, no backtrace, no extra CAs.
fn slim_plain(ctx: &TestContext, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = ctx.command();
    for var in [
        "RUST_LOG",
        "RUST_BACKTRACE",
        "RUST_LIB_BACKTRACE",
        "SSL_CERT_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().expect("running slim");
    if let Some(bytes) = stdin {
        use std::io::Write as _;
        let _ = child.stdin.take().unwrap().write_all(bytes);
    }
    let out = child.wait_with_output().expect("waiting for slim");
    Output::from_std(format!("slim {}", args.join(" ")), out)
}

/// Exit code and stderr with what differs between runs replaced (insta's
/// own `filters` need a crate feature; these are the same regex
/// replacements): the test's temp dir, the harness's runs dir (and the
/// process id in names under it), the checkout, loopback ports and
/// durations. Never digests: they are what
/// most of these messages name, and every input here is deterministic.
fn filtered(ctx: &TestContext, out: &Output) -> String {
    let mut text = format!("exit: {}\n{}", out.code.unwrap_or(-1), out.stderr_str());
    let literal = |text: String, from: &std::path::Path, to: &str| {
        text.replace(&from.display().to_string(), to)
    };
    text = literal(text, ctx.root(), "[CTX]");
    text = literal(text, &crate::harness::registry::runs_dir(), "[RUNS]");
    text = text.replace(
        &format!("multiarch-{}", std::process::id()),
        "multiarch-[PID]",
    );
    text = literal(text, Path::new(env!("CARGO_MANIFEST_DIR")), "[CHECKOUT]");
    for (pattern, to) in [
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        (r"\b\d+(\.\d+)?(ns|µs|ms|s)\b", "[DURATION]"),
    ] {
        text = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&text, to)
            .into_owned();
    }
    text
}

/// Assert a clean failure with exit `code`, then snapshot what it printed.
#[track_caller]
fn assert_message(name: &str, ctx: &TestContext, out: &Output, code: i32) {
    assert_clean_failure(out, code);
    insta::assert_snapshot!(name, filtered(ctx, out));
}

fn hello_tar() -> Vec<u8> {
    tar_of(&[("etc/hello", "hello\n".repeat(500).as_bytes())])
}

/// A valid gzip of one tar entry, `bomb`, of 1 GiB + 1 MiB of zeros: about
/// 1 MiB compressed. Built from deflate blocks, not by compressing 1 GiB:
/// each chunk ends with a full flush (byte-aligned, no back-references across
/// it), so the compressed 1 MiB of zeros can be repeated, and the CRC of the
/// whole is combined from the CRC of one chunk.
fn gzip_bomb() -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1025;
    let deflate = |data: &[u8], flush: FlushCompress| {
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(64 << 10);
        c.compress_vec(data, &mut out, flush).unwrap();
        assert_eq!(c.total_in(), data.len() as u64, "output buffer too small");
        out
    };
    let header = file_header(b"bomb", (CHUNK * CHUNKS) as u64);
    let zeros = vec![0u8; CHUNK];
    let end = [0u8; 1024]; // the end-of-archive marker
    let block = deflate(&zeros, FlushCompress::Full);

    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    gz.extend(deflate(header.as_bytes(), FlushCompress::Full));
    for _ in 0..CHUNKS {
        gz.extend_from_slice(&block);
    }
    gz.extend(deflate(&end, FlushCompress::Finish));
    let mut crc = Crc::new();
    crc.update(header.as_bytes());
    let mut chunk_crc = Crc::new();
    chunk_crc.update(&zeros);
    for _ in 0..CHUNKS {
        crc.combine(&chunk_crc);
    }
    let mut end_crc = Crc::new();
    end_crc.update(&end);
    crc.combine(&end_crc);
    gz.extend(crc.sum().to_le_bytes());
    gz.extend(crc.amount().to_le_bytes());
    gz
}

#[test]
fn message_malformed_reference() {
    let ctx = TestContext::new();
    let out = slim_plain(
        &ctx,
        &["UPPER:case:bad", "-o", &oci_ref(&ctx.path("out"), "v1")],
        None,
    );
    assert_message("malformed_reference", &ctx, &out, 2);
}

#[test]
fn message_unknown_transport() {
    let ctx = TestContext::new();
    let out = slim_plain(
        &ctx,
        &["dir:/some/dir", "-o", &oci_ref(&ctx.path("out"), "v1")],
        None,
    );
    assert_message("unknown_transport", &ctx, &out, 2);
}

#[test]
fn message_missing_tag_on_a_registry() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    push_fixture(reg, "snap/notag:v1");
    let out = slim_plain(
        &ctx,
        &[
            &reg.reference("snap/notag:nope"),
            "-o",
            &oci_ref(&ctx.path("out"), "v1"),
        ],
        None,
    );
    assert_message("missing_tag_on_a_registry", &ctx, &out, 1);
    // The command it suggests works, and lists the tag that does exist.
    let line = out.stderr_str();
    let suggested = line
        .split('`')
        .nth(1)
        .expect("a command in backquotes")
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(suggested[..2], ["skopeo", "list-tags"], "{out}");
    let listed = Skopeo::anonymous().run(&suggested[1..]);
    listed.assert_success();
    assert!(listed.stdout_str().contains("\"v1\""), "{listed}");
}

#[test]
fn message_missing_oci_layout_directory() {
    let ctx = TestContext::new();
    let out = slim_plain(
        &ctx,
        &[
            &oci_ref(&ctx.path("no-such-layout"), "v1"),
            "-o",
            &oci_ref(&ctx.path("out"), "v1"),
        ],
        None,
    );
    assert_message("missing_oci_layout_directory", &ctx, &out, 1);
}

#[test]
fn message_tag_not_in_layout() {
    let ctx = TestContext::new();
    let out = slim_plain(
        &ctx,
        &[
            &oci_ref(&fixture_layout(), "nope"),
            "-o",
            &oci_ref(&ctx.path("out"), "v1"),
        ],
        None,
    );
    assert_message("tag_not_in_layout", &ctx, &out, 1);
}

#[test]
fn message_wrong_credentials() {
    let reg = Registry::shared_basic();
    let ctx = TestContext::new();
    ctx.write_docker_config(reg.addr(), USER, "wrong-password");
    let out = slim_plain(
        &ctx,
        &[&fixture_ref(), "-o", &reg.reference("snap/creds:v1")],
        None,
    );
    assert_message("wrong_credentials", &ctx, &out, 1);
}

#[test]
fn message_digest_mismatch_in_a_layout() {
    let ctx = TestContext::new();
    let (bad, _) = corrupt_layout(&ctx);
    let src = oci_ref(&bad, FIXTURE_TAG);
    let dst = oci_ref(&ctx.path("out"), "v1");
    // Slimming decodes the layer as it streams; the flipped byte breaks the
    // gzip stream first, but the digest is what must be reported.
    let out = slim_plain(&ctx, &[&src, "-o", &dst], None);
    assert_message("digest_mismatch_in_a_layout", &ctx, &out, 1);
    let out = slim_plain(
        &ctx,
        &[&src, "-o", &dst, "--squash", "none", "--profile", "none"],
        None,
    );
    assert_message("digest_mismatch_in_a_layout_faithful_copy", &ctx, &out, 1);
}

#[test]
fn message_truncated_gzip_layer() {
    let ctx = TestContext::new();
    let tar = hello_tar();
    let gz = gzip(&tar);
    // The layer's digest is that of the truncated bytes: only the gzip
    // stream can tell.
    let dir = ctx.path("truncated");
    write_image(
        &dir,
        "v1",
        &[LayerBlob::raw(
            &gz[..gz.len() / 2],
            OCI_LAYER_GZIP,
            &sha256_digest(&tar),
        )],
        json!({"config": {}}),
    );
    let out = slim_plain(
        &ctx,
        &[&oci_ref(&dir, "v1"), "-o", &oci_ref(&ctx.path("out"), "v1")],
        None,
    );
    assert_message("truncated_gzip_layer", &ctx, &out, 1);
}

#[test]
fn message_malformed_tar() {
    let ctx = TestContext::new();
    let junk = "this is not a tar archive\n".repeat(100).into_bytes();
    let dir = ctx.path("junk");
    write_image(
        &dir,
        "v1",
        &[LayerBlob::raw(
            &gzip(&junk),
            OCI_LAYER_GZIP,
            &sha256_digest(&junk),
        )],
        json!({"config": {}}),
    );
    let out = slim_plain(
        &ctx,
        &[&oci_ref(&dir, "v1"), "-o", &oci_ref(&ctx.path("out"), "v1")],
        None,
    );
    assert_message("malformed_tar", &ctx, &out, 1);
}

#[test]
fn message_path_escaping_the_root() {
    let ctx = TestContext::new();
    let tar = tar_of(&[("etc/hello", b"hi\n"), ("../escape", b"out\n")]);
    let dir = ctx.path("escape");
    write_image(
        &dir,
        "v1",
        &[LayerBlob::raw(
            &gzip(&tar),
            OCI_LAYER_GZIP,
            &sha256_digest(&tar),
        )],
        json!({"config": {}}),
    );
    let out = slim_plain(
        &ctx,
        &[&oci_ref(&dir, "v1"), "-o", &oci_ref(&ctx.path("out"), "v1")],
        None,
    );
    assert_message("path_escaping_the_root", &ctx, &out, 1);
}

/// `--max-layer-size` is in GiB; 1 is the smallest bound that is not "no
/// layer at all", so the bomb inflates to just over 1 GiB. slim must refuse
/// it without inflating it (this test would take minutes otherwise).
#[test]
fn message_decompression_bomb() {
    let ctx = TestContext::new();
    let bomb = gzip_bomb();
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let dir = ctx.path("bomb");
    // The diff_id is not the real one (hashing 1 GiB would slow the test);
    // slim refuses the layer before it could compare.
    let placeholder = sha256_digest(b"not the diff_id");
    write_image(
        &dir,
        "v1",
        &[LayerBlob::raw(&bomb, OCI_LAYER_GZIP, &placeholder)],
        json!({"config": {}}),
    );
    let started = std::time::Instant::now();
    let out = slim_plain(
        &ctx,
        &[
            &oci_ref(&dir, "v1"),
            "-o",
            &oci_ref(&ctx.path("out"), "v1"),
            "--max-layer-size",
            "1",
        ],
        None,
    );
    assert_message("decompression_bomb", &ctx, &out, 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_absent(&ctx.path("out"));
}

#[test]
fn message_unknown_layer_media_type() {
    let ctx = TestContext::new();
    let tar = hello_tar();
    let dir = ctx.path("unknown");
    write_image(
        &dir,
        "v1",
        &[LayerBlob::raw(
            &gzip(&tar),
            "application/vnd.example.layer.v1+tar",
            &sha256_digest(&tar),
        )],
        json!({"config": {}}),
    );
    let out = slim_plain(
        &ctx,
        &[&oci_ref(&dir, "v1"), "-o", &oci_ref(&ctx.path("out"), "v1")],
        None,
    );
    assert_message("unknown_layer_media_type", &ctx, &out, 1);
}

/// Slims the fixture with a user profile `file` holding `toml`; the
/// message is snapshotted as `name` (a usage error).
fn assert_profile_message(name: &str, file: &str, toml: &str) {
    let ctx = TestContext::new();
    let profile = ctx.path(file);
    std::fs::write(&profile, toml).unwrap();
    let out = slim_plain(
        &ctx,
        &[
            &fixture_ref(),
            "-o",
            &oci_ref(&ctx.path("out"), "v1"),
            "--profile",
            profile.to_str().unwrap(),
        ],
        None,
    );
    assert_message(name, &ctx, &out, 2);
}

#[test]
fn message_profile_with_an_unknown_key() {
    assert_profile_message(
        "profile_with_an_unknown_key",
        "typo.toml",
        "name = \"t\"\ndescription = \"d\"\n[[rule]]\ncategory = \"docs\"\nremvoe = [\"usr/share/doc/**\"]\n",
    );
}

#[test]
fn message_profile_with_a_bad_glob() {
    assert_profile_message(
        "profile_with_a_bad_glob",
        "glob.toml",
        "name = \"t\"\ndescription = \"d\"\n[[rule]]\ncategory = \"docs\"\nremove = [\"usr/[share\"]\n",
    );
}

#[test]
fn message_platform_matching_nothing() {
    let ctx = TestContext::new();
    let out = slim_plain(
        &ctx,
        &[
            &multiarch_layout().reference,
            "-o",
            &oci_ref(&ctx.path("out"), "v1"),
            "--platform",
            "linux/s390x",
        ],
        None,
    );
    assert_message("platform_matching_nothing", &ctx, &out, 1);
}

#[test]
fn message_report_and_docker_archive_both_on_stdout() {
    let ctx = TestContext::new();
    let out = slim_plain(
        &ctx,
        &[&fixture_ref(), "-o", "docker-archive:-", "--report", "-"],
        None,
    );
    assert_message("report_and_docker_archive_both_on_stdout", &ctx, &out, 2);
}
