//! The command line as CI and people use it: JSON reports that agree with
//! the registry, thresholds and their exit code, the GitHub step summary,
//! pipes, `analyze`, completions and man page, no secrets in the output,
//! and slim's own image having nothing left to strip.

use serde_json::{Value, json};

use crate::harness::*;

fn run(ctx: &TestContext, args: &[&str]) -> Output {
    ctx.slim_with(args, &[("RUST_BACKTRACE", "0")], None)
}

#[test]
fn json_report_has_the_design_fields_and_the_pushed_digest() {
    let registry = Registry::shared();
    let repo = unique_name("report");
    push_fixture(registry, &format!("{repo}:src"));
    let ctx = TestContext::new();
    let dst = registry.reference(&format!("{repo}:slim"));
    let out = run(
        &ctx,
        &[
            &registry.reference(&format!("{repo}:src")),
            "-o",
            &dst,
            "--report",
            "-",
        ],
    );
    out.assert_success();
    let r: Value = out.stdout_json();
    for side in ["source", "output"] {
        for key in [
            "reference",
            "digest",
            "layers",
            "compressed_bytes",
            "uncompressed_bytes",
            "files",
        ] {
            assert!(r[side].get(key).is_some(), "{side}.{key} in {r:#}");
        }
    }
    for key in ["removed", "kept_by_safety", "platforms", "duration_seconds"] {
        assert!(r.get(key).is_some(), "{key} in {r:#}");
    }
    assert!(r["removed"]["by_category"].is_object());
    // The audit list adds up to the counts, category by category.
    let mut listed: std::collections::BTreeMap<String, u64> = Default::default();
    for p in r["removed"]["paths"].as_array().expect("removed.paths") {
        assert!(p["path"].as_str().unwrap().starts_with('/'), "{p}");
        *listed
            .entry(p["category"].as_str().unwrap().to_string())
            .or_default() += p["bytes"].as_u64().unwrap();
    }
    let counted: std::collections::BTreeMap<String, u64> = r["removed"]["by_category"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.clone(), c["bytes"].as_u64().unwrap()))
        .collect();
    assert!(!counted.is_empty(), "{r:#}");
    assert_eq!(listed, counted, "{r:#}");
    assert_eq!(
        r["output"]["digest"].as_str().unwrap(),
        registry
            .skopeo()
            .manifest_digest(&format!("docker://{dst}"))
    );
    assert_eq!(
        r["source"]["digest"].as_str().unwrap(),
        fixture_image().manifest_digest
    );
    assert_eq!(r["output"]["layers"], 1);
    let out_bytes: u64 = registry.skopeo().inspect_raw(&format!("docker://{dst}"))["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(r["output"]["compressed_bytes"].as_u64().unwrap(), out_bytes);
    assert!(r["output"]["files"].as_u64().unwrap() < r["source"]["files"].as_u64().unwrap());
}

#[test]
fn multi_arch_report_has_one_object_per_platform() {
    let ctx = TestContext::new();
    let multi = multiarch_layout();
    let report = ctx.path("r.json");
    let out = run(
        &ctx,
        &[
            &multi.reference,
            "-o",
            &oci_ref(&ctx.path("o"), "m"),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    out.assert_success();
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let platforms: Vec<&str> = r["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms.len(), 2, "{r:#}");
    assert!(
        platforms.contains(&"linux/amd64")
            && platforms.iter().any(|p| p.starts_with("linux/arm64")),
        "{platforms:?}"
    );
    assert_eq!(
        r["output"]["digest"].as_str().unwrap(),
        manifest_digest_of(&oci_ref(&ctx.path("o"), "m"))
    );
}

#[test]
fn thresholds_exit_3_with_one_line() {
    let ctx = TestContext::new();
    let out = run(
        &ctx,
        &[
            &fixture_ref(),
            "-o",
            &oci_ref(&ctx.path("a"), "x"),
            "--fail-if-savings-below",
            "95",
        ],
    );
    out.assert_code(3);
    let errors: Vec<String> = out
        .stderr_str()
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert!(errors[0].contains("95%"), "{out}");
    // Met: exit 0.
    run(
        &ctx,
        &[
            &fixture_ref(),
            "-o",
            &oci_ref(&ctx.path("b"), "x"),
            "--fail-if-savings-below",
            "1",
        ],
    )
    .assert_success();
    // Uncompressed layers are larger than the gzip source.
    let out = run(
        &ctx,
        &[
            &fixture_ref(),
            "-o",
            &oci_ref(&ctx.path("c"), "x"),
            "--compression",
            "none",
            "--profile",
            "none",
            "--fail-if-larger",
        ],
    );
    out.assert_code(3);
    assert!(out.stderr_str().contains("larger than the source"), "{out}");
    // A bad percentage is a usage error.
    run(
        &ctx,
        &[
            &fixture_ref(),
            "-o",
            &oci_ref(&ctx.path("d"), "x"),
            "--fail-if-savings-below",
            "120",
        ],
    )
    .assert_code(2);
}

#[test]
fn github_step_summary_gets_a_markdown_table() {
    let ctx = TestContext::new();
    let summary = ctx.path("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let out = ctx.slim_with(
        &[&fixture_ref(), "-o", &oci_ref(&ctx.path("o"), "x")],
        &[("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())],
        None,
    );
    out.assert_success();
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("earlier step\n"), "appended, not replaced");
    assert!(
        md.contains("| compressed |") && md.contains("| files |") && md.contains("smaller"),
        "{md}"
    );
}

#[test]
fn docker_archive_through_pipes_comes_out_smaller_and_loadable() {
    let ctx = TestContext::new();
    let input = ctx.path("in.tar");
    skopeo_copy(
        &fixture_ref(),
        &format!("docker-archive:{}", input.display()),
        &[],
    );
    let bytes = std::fs::read(&input).unwrap();
    let out = ctx.slim_with(
        &["docker-archive:-", "-o", "docker-archive:-"],
        &[],
        Some(&bytes),
    );
    out.assert_success();
    assert!(
        out.stdout.len() < bytes.len(),
        "{} < {}",
        out.stdout.len(),
        bytes.len()
    );
    let output = ctx.path("out.tar");
    std::fs::write(&output, &out.stdout).unwrap();
    let inspected = skopeo_inspect(&format!("docker-archive:{}", output.display()));
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 1);
}

#[test]
fn analyze_reports_layers_waste_and_what_would_go() {
    let ctx = TestContext::new();
    let out = run(&ctx, &["analyze", &fixture_ref(), "--json"]);
    out.assert_success();
    let a = out.stdout_json();
    let img = &a["images"][0];
    assert_eq!(img["layers"].as_array().unwrap().len(), 3);
    assert!(
        img["layers"][1]["created_by"]
            .as_str()
            .unwrap()
            .contains("COPY app")
    );
    // Layer 3 deletes /tmp/build.log and hides /app/data/old: wasted bytes.
    assert!(
        img["wasted"]["shadowed"]["files"].as_u64().unwrap() >= 3,
        "{img:#}"
    );
    assert!(img["wasted"]["bytes"].as_u64().unwrap() > 0);
    let eff = img["efficiency"].as_f64().unwrap();
    assert!(eff > 0.0 && eff < 1.0, "{eff}");
    assert!(
        img["would_remove_by_category"]["man"]["files"]
            .as_u64()
            .unwrap()
            >= 1,
        "{img:#}"
    );
    assert_eq!(img["profiles"], json!(["base", "debian"]));
    // The human form says the same.
    let human = run(&ctx, &["analyze", &fixture_ref()]);
    human.assert_success();
    assert!(
        human.stdout_str().contains("efficiency:") && human.stdout_str().contains("wasted:"),
        "{human}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let ctx = TestContext::new();
    let bash = run(&ctx, &["completions", "bash"]);
    bash.assert_success();
    assert!(bash.stdout_str().contains("--fail-if-savings-below"));
    let man = run(&ctx, &["manpage"]);
    man.assert_success();
    assert!(man.stdout_str().contains(".TH slim 1"));
    let help = run(&ctx, &["--help"]);
    assert!(help.stdout_str().contains("Examples:"), "{help}");
}

#[test]
fn credentials_never_appear_in_any_output() {
    let registry = Registry::shared_basic();
    let repo = unique_name("secret");
    let ctx = TestContext::new();
    ctx.write_docker_config(registry.addr(), USER, PASSWORD);
    let out = ctx.slim_with(
        &[
            &fixture_ref(),
            "-o",
            &registry.reference(&format!("{repo}:x")),
            "-vv",
            "--report",
            "-",
        ],
        &[("RUST_LOG", "debug")],
        None,
    );
    out.assert_success();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{USER}:{PASSWORD}"),
    );
    for text in [out.stdout_str(), out.stderr_str()] {
        assert!(
            !text.contains(PASSWORD) && !text.contains(&basic),
            "a secret leaked:\n{out}"
        );
    }
}

#[test]
fn no_escape_codes_when_not_a_terminal() {
    let ctx = TestContext::new();
    let out = ctx.slim_with(
        &[&fixture_ref(), "-o", &oci_ref(&ctx.path("o"), "x"), "-v"],
        &[],
        None,
    );
    out.assert_success();
    assert!(!out.stderr_str().contains('\x1b'), "{out}");
}

#[test]
fn slims_own_image_has_nothing_left_to_strip() {
    // The image the Dockerfile builds: the binary and a CA bundle on an
    // empty base.
    let ctx = TestContext::new();
    let binary = std::fs::read(SLIM).unwrap();
    let layer = Layer::new()
        .dir("etc")
        .dir("etc/ssl")
        .dir("etc/ssl/certs")
        .file(
            "etc/ssl/certs/ca-certificates.crt",
            0o644,
            b"-----BEGIN CERTIFICATE-----\n",
        )
        .dir("usr")
        .dir("usr/local")
        .dir("usr/local/bin")
        .file("usr/local/bin/slim", 0o755, &binary)
        .finish();
    let src = ctx.path("self");
    write_image(
        &src,
        "slim",
        &[LayerBlob::gzip_tar(&layer)],
        json!({"config": {"Entrypoint": ["/usr/local/bin/slim"], "Env": ["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]}}),
    );
    let out = run(
        &ctx,
        &[
            &oci_ref(&src, "slim"),
            "-o",
            "oci:/nowhere",
            "--dry-run",
            "--report",
            "-",
        ],
    );
    out.assert_success();
    let r = out.stdout_json();
    assert_eq!(r["removed"]["files"], 0, "{r:#}");
}

/// A credential helper on PATH, as `docker login` with a store sets up.
fn credential_helper(ctx: &TestContext, name: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = ctx.path("helpers");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join(format!("docker-credential-{name}"));
    std::fs::write(
        &script,
        format!("#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\necho \"{{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"{USER}\\\",\\\"Secret\\\":\\\"{PASSWORD}\\\"}}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn credentials_come_from_cred_helpers_and_creds_store() {
    let registry = Registry::shared_basic();
    for (i, config) in [
        json!({"credHelpers": {registry.addr(): "slimtest"}}),
        json!({"credsStore": "slimtest"}),
    ]
    .iter()
    .enumerate()
    {
        let ctx = TestContext::new();
        let path = credential_helper(&ctx, "slimtest");
        ctx.write_docker_config_json(config);
        let dst = registry.reference(&format!("{}:x", unique_name(&format!("helper{i}"))));
        let out = ctx.slim_with(
            &[
                &fixture_ref(),
                "-o",
                &dst,
                "--squash",
                "none",
                "--profile",
                "none",
            ],
            &[("PATH", &path)],
            None,
        );
        out.assert_success();
        assert_eq!(
            registry
                .skopeo()
                .manifest_digest(&format!("docker://{dst}")),
            fixture_image().manifest_digest
        );
    }
}

#[test]
fn attestations_in_an_index_are_carried_over_not_slimmed() {
    let ctx = TestContext::new();
    let layout = ctx.path("att");
    // The fixture's blobs, plus an attestation manifest for its amd64 image.
    crate::rewrite::copy_dir(&fixture_layout(), &layout);
    let blobs = layout.join("blobs/sha256");
    let put = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        d
    };
    let fixture = fixture_image();
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document"}"#;
    let statement_digest = put(statement);
    let att_config = serde_json::to_vec(&json!({"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {"type": "layers", "diff_ids": [statement_digest]}})).unwrap();
    let att_config_digest = put(&att_config);
    let att = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": att_config_digest, "size": att_config.len()},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": statement_digest, "size": statement.len(),
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}]
    }))
    .unwrap();
    let att_digest = put(&att);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": fixture.manifest_digest, "size": fixture.manifest_bytes.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": att_digest, "size": att.len(),
             "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.digest": fixture.manifest_digest, "vnd.docker.reference.type": "attestation-manifest"}}
        ]
    }))
    .unwrap();
    let index_digest = put(&index);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "att"}}]})).unwrap(),
    )
    .unwrap();

    let out = ctx.path("out");
    run(&ctx, &[&oci_ref(&layout, "att"), "-o", &oci_ref(&out, "s")]).assert_success();
    let idx = skopeo_inspect_raw(&oci_ref(&out, "s"));
    let entries = idx["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{idx:#}");
    let att_entry = entries
        .iter()
        .find(|e| e["platform"]["os"] == "unknown")
        .expect("attestation kept");
    assert_eq!(
        att_entry["digest"].as_str().unwrap(),
        att_digest,
        "the attestation is byte-identical"
    );
    assert!(
        out.join("blobs/sha256")
            .join(&statement_digest[7..])
            .exists(),
        "its blobs are copied"
    );
    let image_entry = entries
        .iter()
        .find(|e| e["platform"]["os"] == "linux")
        .unwrap();
    assert_ne!(
        image_entry["digest"].as_str().unwrap(),
        fixture.manifest_digest,
        "the image itself was slimmed"
    );
}
