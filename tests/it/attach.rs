//! `--attach-report`: the JSON report pushed as an OCI artifact whose
//! subject is the slim image. The Distribution registry 2.8 of the tests
//! has no referrers API, so this is the referrers tag schema: the tag
//! `sha256-<hex>` holds an image index listing the artifact, read, added to
//! and written back. skopeo judges the artifact and the index.

use serde_json::Value;

use crate::harness::*;

const REPORT_TYPE: &str = "application/vnd.slim.report.v1+json";

fn run(ctx: &TestContext, args: &[&str]) -> Output {
    ctx.slim_with(args, &[("RUST_BACKTRACE", "0")], None)
}

#[test]
fn an_attached_report_is_listed_by_the_referrers_tag_and_read_by_analyze() {
    let registry = Registry::shared();
    let src_repo = unique_name("attach-src");
    let dst_repo = unique_name("attach-dst");
    push_fixture(registry, &format!("{src_repo}:v1"));
    let ctx = TestContext::new();
    let dst = registry.reference(&format!("{dst_repo}:v1-slim"));
    let report_file = ctx.path("report.json");
    let out = run(
        &ctx,
        &[
            &registry.reference(&format!("{src_repo}:v1")),
            "-o",
            &dst,
            "--attach-report",
            "--report",
            report_file.to_str().unwrap(),
        ],
    );
    out.assert_success();
    let pushed = manifest_digest_of(&registry.docker_ref(&format!("{dst_repo}:v1-slim")));
    let hex = pushed.strip_prefix("sha256:").unwrap();
    out.assert_stderr_contains(&format!("listed in the referrers tag sha256-{hex}"));
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();

    // The referrers tag: an image index listing one artifact of slim's type.
    let index = skopeo_inspect_raw(&registry.docker_ref(&format!("{dst_repo}:sha256-{hex}")));
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index:#}"
    );
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{index:#}");
    assert_eq!(listed[0]["artifactType"], REPORT_TYPE);
    assert_eq!(
        listed[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let artifact_digest = listed[0]["digest"].as_str().unwrap().to_string();

    // skopeo reads the artifact: its subject is the pushed manifest.
    let artifact =
        skopeo_inspect_raw(&registry.docker_ref(&format!("{dst_repo}@{artifact_digest}")));
    assert_eq!(artifact["artifactType"], REPORT_TYPE);
    assert_eq!(artifact["subject"]["digest"], pushed.as_str());
    assert_eq!(
        artifact["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(artifact["config"]["size"], 2);
    assert_eq!(artifact["layers"][0]["mediaType"], REPORT_TYPE);
    // The layer is the report itself (what --report wrote, byte for byte).
    assert_eq!(
        artifact["layers"][0]["digest"],
        sha256_digest(&std::fs::read(&report_file).unwrap())
    );

    // slim analyze of the slim image: nothing more to remove, and the
    // removed-by-category table read from the attached report.
    let removed = report["removed"]["by_category"].as_object().unwrap();
    assert!(removed.contains_key("man"), "{report:#}");
    // ... and its audit list, path by path (analyze --json shows it below).
    assert!(
        report["removed"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["category"] == "man"
                && p["path"].as_str().unwrap().starts_with("/usr/share/man/")),
        "{report:#}"
    );
    let human = run(&ctx, &["analyze", &dst]);
    human.assert_success();
    let text = human.stdout_str();
    assert!(
        text.contains(&format!(
            "slimmed by slim (report attached as {artifact_digest})"
        )),
        "{text}"
    );
    let section = text.split("slimmed by slim").nth(1).unwrap();
    for (category, count) in removed {
        let line = section
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{category} ")))
            .unwrap_or_else(|| panic!("no {category} row in:\n{section}"));
        let files = count["files"].as_u64().unwrap();
        assert!(line.contains(&format!(" {files} files ")), "{line}");
    }
    let json = run(&ctx, &["analyze", &dst, "--json"]);
    json.assert_success();
    assert_eq!(json.stdout_json()["attached_report"], report);

    // A second run attaches its own report (the same image, another
    // duration): the index is read, added to and written back, and analyze
    // shows the newest. Were the two reports the same bytes, the artifact
    // would be listed once.
    let second_file = ctx.path("second.json");
    let out = run(
        &ctx,
        &[
            &registry.reference(&format!("{src_repo}:v1")),
            "-o",
            &dst,
            "--attach-report",
            "--report",
            second_file.to_str().unwrap(),
        ],
    );
    out.assert_success();
    assert_eq!(
        manifest_digest_of(&registry.docker_ref(&format!("{dst_repo}:v1-slim"))),
        pushed,
        "the same image"
    );
    let index = skopeo_inspect_raw(&registry.docker_ref(&format!("{dst_repo}:sha256-{hex}")));
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed[0]["digest"], artifact_digest.as_str());
    if std::fs::read(&second_file).unwrap() == std::fs::read(&report_file).unwrap() {
        assert_eq!(listed.len(), 1, "{index:#}");
    } else {
        assert_eq!(listed.len(), 2, "{index:#}");
        let newest = listed[1]["digest"].as_str().unwrap();
        assert_eq!(listed[1]["artifactType"], REPORT_TYPE);
        let human = run(&ctx, &["analyze", &dst]);
        assert!(
            human
                .stdout_str()
                .contains(&format!("report attached as {newest}")),
            "{human}"
        );
    }
}

#[test]
fn attach_report_needs_a_registry_destination() {
    let ctx = TestContext::new();
    let dst = oci_ref(&ctx.path("out"), "x");
    let out = run(&ctx, &[&fixture_ref(), "-o", &dst, "--attach-report"]);
    let error = assert_clean_failure(&out, 2);
    assert!(
        error.contains("DEST must be a registry reference"),
        "{error}"
    );
    assert!(!ctx.path("out").exists());
}
