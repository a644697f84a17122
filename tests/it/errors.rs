//! Bad input: every failure exits 1 (2 for usage errors), prints exactly one
//! `error:` line naming what is wrong (reference, digest or path; the cause
//! chain follows on `Caused by:` lines), never a panic or a backtrace, and
//! leaves the destination as it was: no registry tag, no `index.json`
//! entry, no archive file.

use std::path::Path;

use crate::copy::{biggest_layer, oci_ref, registry_tags, slim_copy, slim_copy_with};
use crate::harness::*;

/// Assert a clean failure with exit `code`; returns the `error:` line.
#[track_caller]
fn assert_clean_failure(out: &Output, code: i32) -> String {
    out.assert_code(code);
    let stderr = out.stderr_str();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one `error:` line:\n{out}");
    for bad in ["panicked", "backtrace", "\n   0: ", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{bad:?} on stderr:\n{out}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout:\n{out}");
    errors[0].to_string()
}

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

/// A copy of the fixture layout with one byte flipped in the middle of its
/// biggest layer; returns the layout and that layer's digest.
fn corrupt_layout(ctx: &TestContext) -> (std::path::PathBuf, String) {
    let dir = ctx.path("corrupt");
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let src = fixture_layout();
    for f in ["index.json", "oci-layout"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    for e in std::fs::read_dir(src.join("blobs").join("sha256"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    let layer = biggest_layer();
    let path = crate::harness::fixture::blob_path(&dir, &layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert_ne!(sha256_digest(&bytes), layer);
    (dir, layer)
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
