//! Round trips of the faithful copy (`--squash none --profile none`) between
//! every pair of transports that matters, judged by skopeo and umoci: the
//! manifest digest is the source's (or, where a format cannot keep it, the
//! config and layers are), and `umoci unpack` of the result is the fixture's
//! tree. Also auth, idempotent reruns and retries against flaky servers.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::harness::fixture::{blob_path, read_blob};
use crate::harness::http::{Request, Response, Server};
use crate::harness::*;

/// Blob digests (config and layers) of the fixture.
fn fixture_blobs() -> Vec<String> {
    let fx = fixture_image();
    let mut all = fx.layer_digests.clone();
    all.push(fx.config_digest.clone());
    all
}

/// The (manifest, config, layers) media types of a manifest.
fn media_types(raw: &Value) -> (String, String, Vec<String>) {
    (
        raw["mediaType"].as_str().unwrap_or_default().to_string(),
        raw["config"]["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        raw["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

/// The bytes of one member of a tar file.
fn tar_member(tar_path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(tar_path).ok()?);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.to_string_lossy() == name {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out).ok()?;
            return Some(out);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn registry_to_registry_keeps_digest_and_mounts_every_blob() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let src_repo = unique_name("copy/r2r-src");
    let dst_repo = unique_name("copy/r2r-dst");
    let fx = fixture_image();
    push_fixture(reg, &format!("{src_repo}:v1"));
    let src = reg.docker_ref(&format!("{src_repo}:v1"));

    let mark = reg.log_mark();
    let out = slim_copy(
        &ctx,
        &reg.reference(&format!("{src_repo}:v1")),
        &reg.reference(&format!("{dst_repo}:v1")),
        &[],
    );
    out.assert_success();
    assert!(out.stdout.is_empty(), "stdout stays clean:\n{out}");

    let dst = reg.docker_ref(&format!("{dst_repo}:v1"));
    assert_eq!(manifest_digest_of(&dst), manifest_digest_of(&src));
    assert_eq!(manifest_digest_of(&dst), fx.manifest_digest);

    // Every blob came by a cross-repository mount (201), none by upload.
    let log = reg.requests_since(mark);
    for digest in fixture_blobs() {
        let mount = format!("/v2/{dst_repo}/blobs/uploads/?mount={digest}&from={src_repo}");
        assert!(
            log.iter()
                .any(|e| e.method == "POST" && e.uri == mount && e.status == 201),
            "no successful mount of {digest}:\n{}",
            reg.log_tail(40)
        );
    }
    let uploads = log
        .iter()
        .filter(|e| {
            e.method == "PUT" && e.uri.starts_with(&format!("/v2/{dst_repo}/blobs/uploads/"))
        })
        .count();
    assert_eq!(uploads, 0, "blobs re-uploaded:\n{}", reg.log_tail(40));

    assert_image_is_fixture(&ctx, &reg.skopeo(), &dst);
}

#[test]
fn registry_to_oci_layout_keeps_digest_and_tree() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let repo = unique_name("copy/r2oci");
    push_fixture(reg, &format!("{repo}:v1"));
    let layout = ctx.path("out");

    slim_copy(
        &ctx,
        &reg.reference(&format!("{repo}:v1")),
        &oci_ref(&layout, "v1"),
        &[],
    )
    .assert_success();

    assert_eq!(
        manifest_digest_of(&oci_ref(&layout, "v1")),
        fixture_image().manifest_digest
    );
    assert_eq!(
        manifest_digest_of(&oci_ref(&layout, "v1")),
        manifest_digest_of(&reg.docker_ref(&format!("{repo}:v1")))
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

#[test]
fn oci_layout_to_registry_keeps_digest_and_tree() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let repo = unique_name("copy/oci2r");

    let out = slim_copy(
        &ctx,
        &fixture_ref(),
        &reg.reference(&format!("{repo}:v1")),
        &[],
    );
    out.assert_success();

    let dst = reg.docker_ref(&format!("{repo}:v1"));
    assert_eq!(manifest_digest_of(&dst), manifest_digest_of(&fixture_ref()));
    assert_eq!(skopeo_inspect_raw(&dst), fixture_image().manifest);
    assert_image_is_fixture(&ctx, &reg.skopeo(), &dst);
}

#[test]
fn oci_layout_to_oci_archive_to_registry_keeps_digest_and_tree() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let repo = unique_name("copy/archive2r");
    let archive = ctx.path("image.tar");
    let archive_ref = format!("oci-archive:{}:v1", archive.display());
    let fx = fixture_image();

    slim_copy(&ctx, &fixture_ref(), &archive_ref, &[]).assert_success();
    assert!(archive.is_file());
    assert_eq!(manifest_digest_of(&archive_ref), fx.manifest_digest);
    // No staging leftovers next to the archive.
    let leftovers: Vec<_> = std::fs::read_dir(ctx.root())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".slim"))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    slim_copy(
        &ctx,
        &archive_ref,
        &reg.reference(&format!("{repo}:v1")),
        &[],
    )
    .assert_success();
    let dst = reg.docker_ref(&format!("{repo}:v1"));
    assert_eq!(manifest_digest_of(&dst), fx.manifest_digest);
    assert_image_is_fixture(&ctx, &reg.skopeo(), &dst);
}

/// A `docker save` archive stores layers uncompressed (by diff_id), so the
/// manifest digest cannot survive; what must survive is the config (same
/// digest) and the layer contents (same diff_ids, same tree).
#[test]
fn registry_to_docker_archive_loads_in_skopeo() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let repo = unique_name("copy/r2docker");
    push_fixture(reg, &format!("{repo}:v1"));
    let archive = ctx.path("saved.tar");
    let fx = fixture_image();

    let out = slim_copy(
        &ctx,
        &reg.reference(&format!("{repo}:v1")),
        &format!(
            "docker-archive:{}:example.com/team/demo:v1",
            archive.display()
        ),
        &[],
    );
    out.assert_success();

    let aref = format!("docker-archive:{}", archive.display());
    let summary = skopeo_inspect(&aref);
    assert_eq!(summary["Layers"].as_array().map(Vec::len), Some(3));
    // skopeo 1.9 does not report an archive's RepoTags; read them.
    let manifest_json = tar_member(&archive, "manifest.json").expect("manifest.json");
    let entries: Value = serde_json::from_slice(&manifest_json).unwrap();
    assert_eq!(entries[0]["RepoTags"], json!(["example.com/team/demo:v1"]));
    let raw = skopeo_inspect_raw(&aref);
    assert_eq!(raw["config"]["digest"], fx.config_digest);
    let config = Skopeo::anonymous().inspect_config(&aref);
    let source_config: Value =
        serde_json::from_slice(&read_blob(&fixture_layout(), &fx.config_digest)).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        source_config["rootfs"]["diff_ids"]
    );

    // skopeo can load it, and it is the fixture.
    assert_image_is_fixture(&ctx, &Skopeo::anonymous(), &aref);
}

/// `docker load` refuses a RepoTag without a tag, and skopeo cannot find
/// the image by name in such an archive: a bare name means `:latest`.
#[test]
fn docker_archive_named_without_a_tag_is_found_as_latest() {
    let ctx = TestContext::new();
    let archive = ctx.path("named.tar");

    slim_copy(
        &ctx,
        &fixture_ref(),
        &format!("docker-archive:{}:demo", archive.display()),
        &[],
    )
    .assert_success();

    let by_name = format!("docker-archive:{}:demo:latest", archive.display());
    assert_eq!(
        skopeo_inspect_raw(&by_name)["config"]["digest"],
        fixture_image().config_digest
    );
    let entries: Value =
        serde_json::from_slice(&tar_member(&archive, "manifest.json").unwrap()).unwrap();
    assert_eq!(entries[0]["RepoTags"], json!(["demo:latest"]));
}

#[test]
fn docker_archive_to_oci_layout_converts_and_unpacks() {
    let ctx = TestContext::new();
    let archive = skopeo_docker_archive(&ctx, "in.tar");
    let layout = ctx.path("out");
    let fx = fixture_image();

    let out = slim_copy(
        &ctx,
        &format!("docker-archive:{}", archive.display()),
        &oci_ref(&layout, "v1"),
        &[],
    );
    out.assert_success().assert_stderr_contains("note:");
    out.assert_stderr_contains(CONVERTED_NOTE);

    let raw = skopeo_inspect_raw(&oci_ref(&layout, "v1"));
    let (mt, config_mt, layer_mts) = media_types(&raw);
    assert_eq!(mt, OCI_MANIFEST);
    assert_eq!(config_mt, OCI_CONFIG);
    assert_eq!(layer_mts.len(), 3);
    assert!(
        layer_mts
            .iter()
            .all(|m| m.starts_with("application/vnd.oci.image.layer.v1.tar")),
        "{layer_mts:?}"
    );
    // The config blob itself is not touched by a media-type conversion.
    assert_eq!(raw["config"]["digest"], fx.config_digest);
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

/// A docker archive holds uncompressed layers and no registry manifest, so
/// no manifest in it has the source's digest: the summary must not say so,
/// and a digest it prints must be one skopeo finds in the archive.
#[test]
fn docker_archive_summary_does_not_claim_the_source_manifest_digest() {
    let ctx = TestContext::new();
    let archive = ctx.path("saved.tar");
    let out = slim_copy(
        &ctx,
        &fixture_ref(),
        &format!("docker-archive:{}", archive.display()),
        &[],
    );
    out.assert_success();
    let in_archive = manifest_digest_of(&format!("docker-archive:{}", archive.display()));
    assert_ne!(in_archive, fixture_image().manifest_digest);
    let stderr = out.stderr_str();
    assert!(
        !stderr.contains("same manifest digest as the source"),
        "{out}"
    );
    assert!(
        !stderr.contains(&fixture_image().manifest_digest),
        "the summary names the source manifest digest, which the archive does not hold (skopeo: {in_archive}):\n{out}"
    );
}

#[test]
fn docker_archive_from_stdin_to_oci_layout() {
    let ctx = TestContext::new();
    let archive = skopeo_docker_archive(&ctx, "in.tar");
    let bytes = std::fs::read(&archive).unwrap();
    let layout = ctx.path("out");

    let out = slim_copy_with(
        &ctx,
        "docker-archive:-",
        &oci_ref(&layout, "v1"),
        &[],
        &[],
        Some(&bytes),
    );
    out.assert_success();
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(
        skopeo_inspect_raw(&oci_ref(&layout, "v1"))["config"]["digest"],
        fixture_image().config_digest
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

#[test]
fn docker_archive_to_stdout_is_a_loadable_archive_and_nothing_else() {
    let ctx = TestContext::new();
    let out = slim_copy(&ctx, &fixture_ref(), "docker-archive:-", &[]);
    out.assert_success();
    // Human output went to stderr; stdout is the tar and nothing else: it
    // starts with a member header and ends with the two zero blocks.
    assert!(!out.stderr.is_empty(), "{out}");
    let len = out.stdout.len();
    assert!(
        len >= 1024 && len.is_multiple_of(512) && out.stdout[len - 1024..].iter().all(|&b| b == 0),
        "stdout is not just a tar ({len} bytes)"
    );
    let saved = ctx.path("stdout.tar");
    std::fs::write(&saved, &out.stdout).unwrap();
    let names: Vec<String> = tar::Archive::new(&out.stdout[..])
        .entries()
        .expect("stdout is a tar")
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    let aref = format!("docker-archive:{}", saved.display());
    assert_eq!(
        skopeo_inspect_raw(&aref)["config"]["digest"],
        fixture_image().config_digest
    );
    assert_image_is_fixture(&ctx, &Skopeo::anonymous(), &aref);

    // And stdin to stdout, piped straight through.
    let again = slim_copy_with(
        &ctx,
        "docker-archive:-",
        "docker-archive:-",
        &[],
        &[],
        Some(&out.stdout),
    );
    again.assert_success();
    let piped = ctx.path("piped.tar");
    std::fs::write(&piped, &again.stdout).unwrap();
    assert_image_is_fixture(
        &ctx,
        &Skopeo::anonymous(),
        &format!("docker-archive:{}", piped.display()),
    );
}

#[test]
fn docker_v2s2_registry_to_registry_keeps_media_types_and_digest() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let src_repo = unique_name("copy/v2s2-src");
    let dst_repo = unique_name("copy/v2s2-dst");
    let digest = push_fixture_v2s2(reg, &format!("{src_repo}:v1"));

    let out = slim_copy(
        &ctx,
        &reg.reference(&format!("{src_repo}:v1")),
        &reg.reference(&format!("{dst_repo}:v1")),
        &[],
    );
    out.assert_success();
    assert!(!out.stderr_str().contains(CONVERTED_NOTE), "{out}");

    let dst = reg.docker_ref(&format!("{dst_repo}:v1"));
    assert_eq!(manifest_digest_of(&dst), digest);
    let (mt, config_mt, layer_mts) = media_types(&skopeo_inspect_raw(&dst));
    assert_eq!(mt, DOCKER_MANIFEST);
    assert_eq!(config_mt, DOCKER_CONFIG);
    assert_eq!(layer_mts, vec![DOCKER_LAYER_GZIP; 3]);
    assert_image_is_fixture(&ctx, &reg.skopeo(), &dst);
}

#[test]
fn docker_v2s2_to_oci_layout_converts_media_types_with_a_note() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let repo = unique_name("copy/v2s2-oci");
    let digest = push_fixture_v2s2(reg, &format!("{repo}:v1"));
    let layout = ctx.path("out");

    let out = slim_copy(
        &ctx,
        &reg.reference(&format!("{repo}:v1")),
        &oci_ref(&layout, "v1"),
        &[],
    );
    out.assert_success();
    let note_lines: Vec<String> = out
        .stderr_str()
        .lines()
        .filter(|l| l.starts_with("note:") && l.contains(CONVERTED_NOTE))
        .map(str::to_string)
        .collect();
    assert_eq!(note_lines.len(), 1, "one conversion note:\n{out}");

    let lref = oci_ref(&layout, "v1");
    let raw = skopeo_inspect_raw(&lref);
    let (mt, config_mt, layer_mts) = media_types(&raw);
    assert_eq!(mt, OCI_MANIFEST);
    assert_eq!(config_mt, OCI_CONFIG);
    assert_eq!(layer_mts, vec![OCI_LAYER_GZIP; 3]);
    assert_ne!(
        manifest_digest_of(&lref),
        digest,
        "conversion changes the digest"
    );
    // Same blobs, only the labels changed.
    let src_raw = skopeo_inspect_raw(&reg.docker_ref(&format!("{repo}:v1")));
    assert_eq!(raw["config"]["digest"], src_raw["config"]["digest"]);
    let digests = |v: &Value| -> Vec<Value> {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect()
    };
    assert_eq!(digests(&raw), digests(&src_raw));
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

fn index_platforms(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .expect("an index")
        .iter()
        .map(|d| {
            (
                d["platform"]["architecture"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn multiarch_index_keeps_every_platform_and_its_digest() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let m = multiarch_layout();
    let first = unique_name("copy/multi-a");
    let second = unique_name("copy/multi-b");

    // oci index -> registry -> registry.
    slim_copy(
        &ctx,
        &m.reference,
        &reg.reference(&format!("{first}:v1")),
        &[],
    )
    .assert_success();
    let out = slim_copy(
        &ctx,
        &reg.reference(&format!("{first}:v1")),
        &reg.reference(&format!("{second}:v1")),
        &[],
    );
    out.assert_success();

    for repo in [&first, &second] {
        let r = reg.docker_ref(&format!("{repo}:v1"));
        assert_eq!(manifest_digest_of(&r), m.index_digest, "{repo}");
        let index = skopeo_inspect_raw(&r);
        assert_eq!(index["mediaType"], OCI_INDEX);
        assert_eq!(
            index_platforms(&index),
            vec![
                ("amd64".to_string(), m.amd64_digest.clone()),
                ("arm64".to_string(), m.arm64_digest.clone())
            ]
        );
    }
    let arm = reg.docker_ref(&format!("{second}@{}", m.arm64_digest));
    assert_eq!(manifest_digest_of(&arm), m.arm64_digest);
    assert_eq!(reg.skopeo().inspect_config(&arm)["architecture"], "arm64");
    let amd = reg.docker_ref(&format!("{second}:v1"));
    assert_image_is_fixture(&ctx, &reg.skopeo(), &amd);
    let arm_tree = tree_of(&ctx.unpack_image(
        &reg.skopeo(),
        &reg.docker_ref(&format!("{second}:v1")),
        &["--override-arch", "arm64", "--override-variant", "v8"],
    ));
    assert_same_tree(fixture_tree(), &arm_tree);
}

#[test]
fn platform_flag_selects_one_entry_of_an_index() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let m = multiarch_layout();
    let repo = unique_name("copy/multi-arm");

    slim_copy(
        &ctx,
        &m.reference,
        &reg.reference(&format!("{repo}:v1")),
        &["--platform", "linux/arm64"],
    )
    .assert_success();

    let r = reg.docker_ref(&format!("{repo}:v1"));
    let index = skopeo_inspect_raw(&r);
    assert_eq!(index["mediaType"], OCI_INDEX);
    assert_eq!(
        index_platforms(&index),
        vec![("arm64".to_string(), m.arm64_digest.clone())]
    );
    assert_eq!(index["manifests"][0]["platform"]["variant"], "v8");
    assert_ne!(manifest_digest_of(&r), m.index_digest, "a new index");
    assert_eq!(
        manifest_digest_of(&reg.docker_ref(&format!("{repo}@{}", m.arm64_digest))),
        m.arm64_digest
    );
    // The amd64 manifest was not copied.
    let amd = reg.skopeo().run(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &reg.docker_ref(&format!("{repo}@{}", m.amd64_digest)),
    ]);
    amd.assert_failure();

    // Same into an OCI layout.
    let layout = ctx.path("arm");
    slim_copy(
        &ctx,
        &m.reference,
        &oci_ref(&layout, "v1"),
        &["--platform", "linux/arm64"],
    )
    .assert_success();
    let lindex = skopeo_inspect_raw(&oci_ref(&layout, "v1"));
    assert_eq!(
        index_platforms(&lindex),
        vec![("arm64".to_string(), m.arm64_digest.clone())]
    );
    assert!(
        !blob_path(&layout, &m.amd64_digest).exists(),
        "amd64 manifest written"
    );
}

#[test]
fn docker_archive_from_an_index_takes_the_chosen_platform() {
    let ctx = TestContext::new();
    let m = multiarch_layout();
    // The index's arm64 entry -> its manifest -> its config digest.
    let arm_manifest: Value =
        serde_json::from_slice(&read_blob(&m.layout, &m.arm64_digest)).unwrap();
    let arm_config_digest = arm_manifest["config"]["digest"].clone();

    let archive = ctx.path("arm.tar");
    let out = slim_copy(
        &ctx,
        &m.reference,
        &format!("docker-archive:{}", archive.display()),
        &["--platform", "linux/arm64"],
    );
    out.assert_success();
    let aref = format!("docker-archive:{}", archive.display());
    let config = Skopeo::anonymous().inspect_config(&aref);
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["variant"], "v8");
    assert_eq!(
        skopeo_inspect_raw(&aref)["config"]["digest"],
        arm_config_digest
    );
    assert_image_is_fixture(&ctx, &Skopeo::anonymous(), &aref);

    // Without --platform: the host's, and a note saying so.
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let host_archive = ctx.path("host.tar");
    let out = slim_copy(
        &ctx,
        &m.reference,
        &format!("docker-archive:{}", host_archive.display()),
        &[],
    );
    if host_arch == "amd64" || host_arch == "arm64" {
        out.assert_success()
            .assert_stderr_contains(&format!("writing linux/{host_arch}"));
        let config = Skopeo::anonymous()
            .inspect_config(&format!("docker-archive:{}", host_archive.display()));
        assert_eq!(config["architecture"], host_arch);
    } else {
        // No platform of the index is the host's: say how to choose.
        out.assert_code(1).assert_stderr_contains("--platform");
        assert!(!host_archive.exists());
    }
}

// ---------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------

#[test]
fn basic_auth_with_credentials_in_docker_config() {
    let reg = Registry::shared_basic();
    let ctx = TestContext::new();
    ctx.write_docker_config(reg.addr(), USER, PASSWORD);
    let src_repo = unique_name("copy/basic-src");
    let dst_repo = unique_name("copy/basic-dst");

    slim_copy(
        &ctx,
        &fixture_ref(),
        &reg.reference(&format!("{src_repo}:v1")),
        &[],
    )
    .assert_success();
    // Pull and push with the same credentials.
    slim_copy(
        &ctx,
        &reg.reference(&format!("{src_repo}:v1")),
        &reg.reference(&format!("{dst_repo}:v1")),
        &[],
    )
    .assert_success();

    let dst = reg.docker_ref(&format!("{dst_repo}:v1"));
    assert_eq!(
        reg.skopeo().manifest_digest(&dst),
        fixture_image().manifest_digest
    );
    assert_image_is_fixture(&ctx, &reg.skopeo(), &dst);
}

#[test]
fn basic_auth_with_registry_auth_file_takes_precedence() {
    let reg = Registry::shared_basic();
    let ctx = TestContext::new();
    // docker config says something wrong; REGISTRY_AUTH_FILE is read first.
    ctx.write_docker_config(reg.addr(), USER, "not-the-password");
    let auth_file = ctx.path("auth.json");
    std::fs::write(
        &auth_file,
        serde_json::to_vec(&json!({"auths": {reg.addr(): {
            "auth": STANDARD.encode(format!("{USER}:{PASSWORD}"))
        }}}))
        .unwrap(),
    )
    .unwrap();
    let repo = unique_name("copy/authfile");

    let out = slim_copy_with(
        &ctx,
        &fixture_ref(),
        &reg.reference(&format!("{repo}:v1")),
        &[],
        &[("REGISTRY_AUTH_FILE", &auth_file.display().to_string())],
        None,
    );
    out.assert_success();
    assert_eq!(
        reg.skopeo()
            .manifest_digest(&reg.docker_ref(&format!("{repo}:v1"))),
        fixture_image().manifest_digest
    );
}

#[test]
fn token_auth_succeeds_and_caches_tokens() {
    let reg = Registry::shared_token();
    let issuer = reg.token_issuer().expect("issuer");
    let ctx = TestContext::new();
    ctx.write_docker_config(reg.addr(), USER, PASSWORD);
    let src_repo = unique_name("copy/token-src");
    let dst_repo = unique_name("copy/token-dst");

    slim_copy(
        &ctx,
        &fixture_ref(),
        &reg.reference(&format!("{src_repo}:v1")),
        &[],
    )
    .assert_success();
    slim_copy(
        &ctx,
        &reg.reference(&format!("{src_repo}:v1")),
        &reg.reference(&format!("{dst_repo}:v1")),
        &[],
    )
    .assert_success();

    // Tokens are per scope and cached: one per scope and run (push to the
    // first repository; then pull from it, push to the second and mount
    // between them), far fewer than the blob requests they authorised.
    // Counted before skopeo asks for its own, and only for this test's
    // repositories (the issuer is shared).
    let mine = |scope: &str| {
        let repo = scope.split(':').nth(1).unwrap_or_default();
        repo == src_repo || repo == dst_repo
    };
    let granted = issuer
        .requests()
        .iter()
        .filter(|t| t.granted && t.scopes.iter().any(|s| mine(s)))
        .count();
    let blob_requests = reg
        .requests()
        .iter()
        .filter(|e| {
            (e.uri.starts_with(&format!("/v2/{src_repo}/blobs/"))
                || e.uri.starts_with(&format!("/v2/{dst_repo}/blobs/")))
                && e.user_agent.starts_with("slim/")
        })
        .count();
    assert!(granted >= 1, "slim never asked for a token");
    assert!(
        granted <= 4 && granted < blob_requests,
        "{granted} tokens for {blob_requests} blob requests: {:#?}",
        issuer.requests()
    );

    let dst = reg.docker_ref(&format!("{dst_repo}:v1"));
    assert_eq!(
        reg.skopeo().manifest_digest(&dst),
        fixture_image().manifest_digest
    );
    assert_image_is_fixture(&ctx, &reg.skopeo(), &dst);
}

// ---------------------------------------------------------------------------
// Reruns
// ---------------------------------------------------------------------------

#[test]
fn rerun_to_a_registry_uploads_no_blob() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let repo = unique_name("copy/rerun");
    let dst = reg.reference(&format!("{repo}:v1"));

    slim_copy(&ctx, &fixture_ref(), &dst, &[]).assert_success();
    let first = reg.requests();
    let upload_requests = |log: &[AccessLogEntry]| {
        log.iter()
            .filter(|e| {
                e.uri.starts_with(&format!("/v2/{repo}/blobs/uploads/"))
                    && (e.method == "PUT" || e.method == "POST")
            })
            .count()
    };
    assert!(upload_requests(&first) >= 4, "the first run uploads");

    let mark = reg.log_mark();
    slim_copy(&ctx, &fixture_ref(), &dst, &[]).assert_success();
    let second = reg.requests_since(mark);
    assert_eq!(upload_requests(&second), 0, "{second:#?}");
    // It looked (HEAD, found) instead.
    let heads = second
        .iter()
        .filter(|e| {
            e.method == "HEAD"
                && e.uri.starts_with(&format!("/v2/{repo}/blobs/"))
                && e.status == 200
        })
        .count();
    assert_eq!(heads, 4, "{second:#?}");
    assert_eq!(
        manifest_digest_of(&reg.docker_ref(&format!("{repo}:v1"))),
        fixture_image().manifest_digest
    );
}

/// (inode, mtime in ns) of every blob file in a layout.
fn blob_stamps(layout: &Path) -> BTreeMap<String, (u64, i64)> {
    std::fs::read_dir(layout.join("blobs").join("sha256"))
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
            )
        })
        .collect()
}

#[test]
fn rerun_to_an_oci_layout_rewrites_no_blob() {
    let ctx = TestContext::new();
    let layout = ctx.path("out");
    let dst = oci_ref(&layout, "v1");

    slim_copy(&ctx, &fixture_ref(), &dst, &[]).assert_success();
    let before = blob_stamps(&layout);
    assert_eq!(before.len(), 5, "manifest, config and three layers");
    let index_before = std::fs::read(layout.join("index.json")).unwrap();

    slim_copy(&ctx, &fixture_ref(), &dst, &[]).assert_success();
    assert_eq!(blob_stamps(&layout), before, "blobs were rewritten");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        index,
        serde_json::from_slice::<Value>(&index_before).unwrap()
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

// ---------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------

#[test]
fn retries_503_and_succeeds() {
    let h = Hostile::start();
    h.set_fault(Fault::FailFirst {
        status: 503,
        count: 2,
        retry_after: None,
    });
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let out = slim_copy(
        &ctx,
        &h.reference("demo:latest"),
        &oci_ref(&layout, "v1"),
        &[],
    );
    out.assert_success();
    // The first two requests (both for the manifest) failed; the third got it.
    assert_eq!(
        h.count("GET", "/manifests/latest"),
        3,
        "{:#?}",
        h.requests()
    );
    assert_eq!(
        manifest_digest_of(&oci_ref(&layout, "v1")),
        fixture_image().manifest_digest
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

#[test]
fn retries_429_after_the_retry_after_delay() {
    let h = Hostile::start();
    h.set_fault(Fault::FailFirst {
        status: 429,
        count: 2,
        retry_after: Some(1),
    });
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let started = Instant::now();
    let out = slim_copy(
        &ctx,
        &h.reference("demo:latest"),
        &oci_ref(&layout, "v1"),
        &[],
    );
    let took = started.elapsed();
    out.assert_success();
    // Two waits of Retry-After: 1 s (the default backoff would be 0.5 + 1 s).
    assert!(took >= Duration::from_millis(1950), "took {took:?}:\n{out}");
    assert_eq!(h.count("GET", "/manifests/latest"), 3);
    assert_eq!(
        manifest_digest_of(&oci_ref(&layout, "v1")),
        fixture_image().manifest_digest
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

/// Serves the fixture like the hostile server, but cuts the body of one
/// blob short on its first GETs (the i-th at `cuts[i]` of what it sends, then
/// the connection closes); later GETs get the whole blob, or the rest of it
/// when they ask with `Range: bytes=N-` and `ranges` is on.
struct Flaky {
    server: Server,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Flaky {
    fn start(flaky_digest: &str, ranges: bool, cuts: &[f64]) -> Flaky {
        let fx = fixture_image();
        let layout = fixture_layout();
        let mut blobs = std::collections::HashMap::new();
        for d in fixture_blobs() {
            blobs.insert(d.clone(), read_blob(&layout, &d));
        }
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let flaky_gets = AtomicUsize::new(0);
        let cuts = cuts.to_vec();
        let flaky = flaky_digest.to_string();
        let seen = requests.clone();
        let server = Server::start("flaky", move |req| {
            seen.lock().unwrap().push(req.clone());
            let path = req.path();
            let base = |status| {
                Response::new(status).header("Docker-Distribution-Api-Version", "registry/2.0")
            };
            if path == "/v2/" {
                return base(200).json(&json!({}));
            }
            if let Some((_, reference)) = path.rsplit_once("/manifests/") {
                if reference != "latest" && reference != fx.manifest_digest {
                    return base(404).json(&json!({"errors": [{"code": "MANIFEST_UNKNOWN"}]}));
                }
                return base(200)
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Docker-Content-Digest", fx.manifest_digest.clone())
                    .body(fx.manifest_bytes.clone());
            }
            let Some((_, digest)) = path.rsplit_once("/blobs/") else {
                return base(404);
            };
            let Some(bytes) = blobs.get(digest) else {
                return base(404).json(&json!({"errors": [{"code": "BLOB_UNKNOWN"}]}));
            };
            let from = req
                .header("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            let mut resp = match from {
                Some(n) if ranges && n < bytes.len() => base(206)
                    .header(
                        "Content-Range",
                        format!("bytes {n}-{}/{}", bytes.len() - 1, bytes.len()),
                    )
                    .body(bytes[n..].to_vec()),
                _ => base(200).body(bytes.clone()),
            }
            .header("Content-Type", "application/octet-stream")
            .header("Docker-Content-Digest", digest.to_string());
            if req.method == "GET" && digest == flaky {
                let i = flaky_gets.fetch_add(1, Ordering::SeqCst);
                if let Some(fraction) = cuts.get(i) {
                    resp.truncate_at = Some((resp.body.len() as f64 * fraction) as usize);
                }
            }
            resp
        });
        Flaky { server, requests }
    }

    fn reference(&self) -> String {
        format!("{}/demo:latest", self.server.addr())
    }

    /// The GETs of one blob, with their Range header.
    fn blob_gets(&self, digest: &str) -> Vec<Option<String>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "GET" && r.path().ends_with(&format!("/blobs/{digest}")))
            .map(|r| r.header("range").map(str::to_string))
            .collect()
    }
}

#[test]
fn blob_cut_short_once_is_resumed_with_a_range_request() {
    let fx = fixture_image();
    let layer = biggest_layer();
    let size = read_blob(&fixture_layout(), &layer).len();
    let server = Flaky::start(&layer, true, &[0.5]);
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let out = slim_copy(&ctx, &server.reference(), &oci_ref(&layout, "v1"), &[]);
    out.assert_success();

    let gets = server.blob_gets(&layer);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0], None);
    let resumed_at: usize = gets[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("second GET is not a resume: {:?}", gets[1]));
    assert!(
        resumed_at > 0 && resumed_at <= size / 2,
        "{resumed_at} of {size}"
    );
    assert_eq!(
        sha256_digest(&std::fs::read(blob_path(&layout, &layer)).unwrap()),
        layer
    );
    assert_eq!(
        manifest_digest_of(&oci_ref(&layout, "v1")),
        fx.manifest_digest
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

#[test]
fn blob_cut_short_once_from_a_server_without_ranges_is_fetched_again() {
    let layer = biggest_layer();
    let server = Flaky::start(&layer, false, &[0.5]);
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let out = slim_copy(&ctx, &server.reference(), &oci_ref(&layout, "v1"), &[]);
    out.assert_success();
    assert_eq!(server.blob_gets(&layer).len(), 2);
    assert_eq!(
        sha256_digest(&std::fs::read(blob_path(&layout, &layer)).unwrap()),
        layer
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

/// Without Range support a resume re-reads the blob from the start and skips
/// what it has; a connection that breaks again during that skip is one more
/// broken transfer to retry, not the end.
#[test]
fn blob_cut_short_twice_from_a_server_without_ranges_is_fetched_again() {
    let layer = biggest_layer();
    // The second cut lands before the point the first one reached.
    let server = Flaky::start(&layer, false, &[0.5, 0.25]);
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let out = slim_copy(&ctx, &server.reference(), &oci_ref(&layout, "v1"), &[]);
    out.assert_success();
    assert_eq!(server.blob_gets(&layer).len(), 3);
    assert_eq!(
        sha256_digest(&std::fs::read(blob_path(&layout, &layer)).unwrap()),
        layer
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}
