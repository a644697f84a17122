//! The command line as CI and people use it: JSON reports that agree with
//! the registry, thresholds and their exit code, the GitHub step summary,
//! pipes, `analyze`, completions and man page, no secrets in the output,
//! and slim's own image having nothing left to strip.

use serde_json::{Value, json};

use crate::copy::oci_ref;
use crate::harness::*;
use crate::profiles::{Layer, write_layout};

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
    write_layout(
        &src,
        "slim",
        &[layer],
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
