//! `slim IMAGE -o DEST --verify` against a real runtime (runc): the probes
//! pass on the fixture served by `busybox httpd` and the destination holds
//! the image; an over-stripped image fails with exit 4 naming the probe and
//! what is missing, and the destination is untouched (layout and registry);
//! a probe the original fails is exit 2; without probe flags the default
//! probes (entrypoint static check, ExposedPorts) run. After each run:
//! nothing left (the sandbox tests' checks).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::fixture::{image_in_layout, put_blob, read_blob, tag_only};
use crate::harness::*;
use crate::sandbox::{HTTPD, Sandboxed, setup};

/// The fixture with `sh -c HTTPD` as its entrypoint and `8080/tcp`
/// exposed, as `oci:LAYOUT:httpd` in a copy of the fixture layout.
fn httpd_image(s: &Sandboxed) -> (PathBuf, String) {
    httpd_image_serving(s, HTTPD, "httpd-layout")
}

/// The fixture with `sh -c SCRIPT` as its entrypoint and `8080/tcp`
/// exposed, as `oci:LAYOUT:httpd` in a copy of the fixture layout at `dir`.
fn httpd_image_serving(s: &Sandboxed, script: &str, dir: &str) -> (PathBuf, String) {
    let layout = s.ctx.path(dir);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture_layout())
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    let image = fixture_image();
    let mut config: Value =
        serde_json::from_slice(&read_blob(&layout, &image.config_digest)).unwrap();
    config["config"]["Entrypoint"] = json!(["/bin/sh", "-c", script]);
    config["config"]["ExposedPorts"] = json!({"8080/tcp": {}});
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(&layout, &config_bytes);
    let mut manifest = image.manifest.clone();
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_bytes.len());
    tag_only(
        &layout,
        &serde_json::to_vec(&manifest).unwrap(),
        &image.media_type,
        "httpd",
    );
    let reference = format!("oci:{}:httpd", layout.display());
    (layout, reference)
}

fn index_tags(layout: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(layout.join("index.json")) else {
        return Vec::new();
    };
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

const OVER_STRIP: [&str; 3] = ["--remove", "/bin/busybox", "--no-safety-keeps"];

#[test]
fn verify_http_passes_and_writes_into_a_layout_and_a_registry() {
    let s = setup();
    let (_, src) = httpd_image(&s);
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:slim", out_layout.display());
    let report = s.ctx.path("report.json");
    let summary = s.ctx.path("summary.md");
    let out = s.slim_env(
        &[
            &src,
            "-o",
            &dest,
            "--verify",
            "--probe-http",
            "8080/",
            "--probe-timeout",
            "20s",
            "--report",
            report.to_str().unwrap(),
        ],
        &[("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())],
    );
    out.assert_success();
    assert_eq!(index_tags(&out_layout), vec!["slim"]);
    // The CI summary has the runtime rows and the probe's verdicts.
    let md = std::fs::read_to_string(&summary).unwrap();
    for row in [
        "| time to ready | ",
        "| peak memory | ",
        "| latency median | ",
        "| latency p95 | ",
        "| HTTP GET :8080/ | pass ",
    ] {
        assert!(md.contains(row), "{row}: {md}");
    }
    assert!(!md.contains("FAIL"), "{md}");
    out.assert_stderr_contains("time to ready");
    out.assert_stderr_contains("peak memory");
    out.assert_stderr_contains("latency median");
    out.assert_stderr_contains("latency p95");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let v = &r["verify"];
    assert_eq!(v["passed"], true, "{r}");
    assert_eq!(v["default_probes"], false, "{r}");
    let p = &v["probes"][0];
    assert_eq!(p["probe"], "HTTP GET :8080/", "{r}");
    for side in ["original", "slim"] {
        assert_eq!(p[side]["passed"], true, "{r}");
        assert!(p[side]["time_to_ready"].as_f64().is_some(), "{r}");
        // --probe-requests' default: 20 timed answers.
        assert_eq!(p[side]["requests"], 20, "{r}");
        let (median, p95) = (
            p[side]["latency_median"].as_f64().unwrap(),
            p[side]["latency_p95"].as_f64().unwrap(),
        );
        assert!(median > 0.0 && median <= p95 && p95 < 5.0, "{r}");
        assert!(
            p[side]["peak_memory"].as_u64().is_some_and(|m| m > 0),
            "{r}"
        );
    }
    // The digest the user sees is the image slim verified, and the same a
    // run without --verify writes.
    let digest = r["output"]["digest"].as_str().unwrap().to_string();
    let plain = s.ctx.path("plain");
    let report2 = s.ctx.path("report2.json");
    s.slim(&[
        &src,
        "-o",
        &format!("oci:{}:slim", plain.display()),
        "--report",
        report2.to_str().unwrap(),
        "-q",
    ])
    .assert_success();
    let r2: Value = serde_json::from_slice(&std::fs::read(&report2).unwrap()).unwrap();
    assert_eq!(r2["output"]["digest"].as_str(), Some(digest.as_str()));
    assert!(r2.get("verify").is_none());

    // Into the registry, from the registry.
    let registry = Registry::shared();
    let repo = unique_name("verify");
    registry
        .skopeo()
        .copy(&src, &registry.docker_ref(&format!("{repo}:src")), &[]);
    let out = s.slim(&[
        &registry.reference(&format!("{repo}:src")),
        "-o",
        &registry.reference(&format!("{repo}:slim")),
        "--verify",
        "--probe-http",
        "8080/",
        "--probe-timeout",
        "20s",
        "-q",
    ]);
    out.assert_success();
    let mut tags = registry_tags(registry, &repo);
    tags.sort();
    assert_eq!(tags, vec!["slim", "src"]);
}

#[test]
fn an_over_stripped_image_fails_verify_with_exit_4_and_writes_nothing() {
    let s = setup();
    let (_, src) = httpd_image(&s);
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:slim", out_layout.display());
    let report = s.ctx.path("report.json");
    let report_path = report.to_str().unwrap();
    let summary = s.ctx.path("summary.md");
    let summary_path = summary.to_str().unwrap();
    let mut args = vec![
        src.as_str(),
        "-o",
        &dest,
        "--verify",
        "--probe-http",
        "8080/",
        "--probe-timeout",
        "10s",
        "--report",
        report_path,
    ];
    args.extend(OVER_STRIP);
    let out = s.slim_env(&args, &[("GITHUB_STEP_SUMMARY", summary_path)]);
    let error = assert_clean_failure(&out, 4);
    assert!(error.contains("the slim image fails 1 probe"), "{out}");
    out.assert_stderr_contains("probe HTTP GET :8080/");
    out.assert_stderr_contains("/bin/busybox");
    assert!(index_tags(&out_layout).is_empty(), "{out}");
    assert!(!out_layout.exists(), "the destination was created: {out}");
    // The report and the CI summary say what failed, with the sizes the
    // slim image had and no output digest (nothing was written).
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verify"]["passed"], false, "{r}");
    let p = &r["verify"]["probes"][0];
    assert_eq!(p["probe"], "HTTP GET :8080/", "{r}");
    assert_eq!(p["original"]["passed"], true, "{r}");
    assert_eq!(p["slim"]["passed"], false, "{r}");
    assert!(r["output"]["digest"].is_null(), "{r}");
    assert!(
        r["output"]["compressed_bytes"].as_u64().unwrap()
            < r["source"]["compressed_bytes"].as_u64().unwrap(),
        "{r}"
    );
    assert!(r["removed"]["files"].as_u64().unwrap() > 0, "{r}");
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("| HTTP GET :8080/ | pass "), "{md}");
    assert!(md.contains("**FAIL**"), "{md}");
    assert!(md.contains("**Verification failed**"), "{md}");

    let registry = Registry::shared();
    let repo = unique_name("verify-broken");
    registry
        .skopeo()
        .copy(&src, &registry.docker_ref(&format!("{repo}:src")), &[]);
    let dest = registry.reference(&format!("{repo}:slim"));
    let src_ref = registry.reference(&format!("{repo}:src"));
    let mut args = vec![
        src_ref.as_str(),
        "-o",
        &dest,
        "--verify",
        "--probe-http",
        "8080/",
        "--probe-timeout",
        "10s",
    ];
    args.extend(OVER_STRIP);
    let out = s.slim(&args);
    assert_clean_failure(&out, 4);
    assert_eq!(registry_tags(registry, &repo), vec!["src"]);
}

/// `--probe-http-expect same`: the slim image must answer with the
/// original's status and body. The image serves its own `/app/README.md`;
/// removing it leaves a 200 with an empty body, which `ok` accepts and
/// `same` does not.
#[test]
fn probe_http_expect_same_compares_the_answers() {
    let s = setup();
    let serve = "mkdir -p /tmp/www && cat /app/README.md > /tmp/www/index.html; exec busybox httpd -f -p 8080 -h /tmp/www";
    let (_, src) = httpd_image_serving(&s, serve, "readme-layout");
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:slim", out_layout.display());
    let report = s.ctx.path("report.json");
    let same = [
        "--verify",
        "--probe-http",
        "8080/",
        "--probe-http-expect",
        "same",
        "--probe-timeout",
        "20s",
        "--probe-requests",
        "2",
    ];
    let mut args = vec![
        src.as_str(),
        "-o",
        &dest,
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend(same);
    s.slim(&args).assert_success();
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let p = &r["verify"]["probes"][0];
    let readme = fixture_tree()["/app/README.md"].size;
    for side in ["original", "slim"] {
        assert_eq!(p[side]["answer"]["status"], 200, "{r}");
        assert_eq!(p[side]["answer"]["bytes"], readme, "{r}");
    }
    assert_eq!(p["original"]["answer"], p["slim"]["answer"], "{r}");
    assert_eq!(index_tags(&out_layout), vec!["slim"]);

    // Without its README the slim image still answers 200: `ok` passes...
    let gone = s.ctx.path("gone");
    let dest = format!("oci:{}:slim", gone.display());
    let remove = ["--remove", "/app/README.md"];
    let mut args = vec![src.as_str(), "-o", &dest, "--dry-run"];
    args.extend(remove);
    args.extend([
        "--verify",
        "--probe-http",
        "8080/",
        "--probe-timeout",
        "20s",
    ]);
    s.slim(&args).assert_success();
    // ...and `same` fails it, saying how the answers differ.
    let mut args = vec![src.as_str(), "-o", &dest];
    args.extend(remove);
    args.extend(same);
    let out = s.slim(&args);
    assert_clean_failure(&out, 4);
    out.assert_stderr_contains("answers differently from the original");
    out.assert_stderr_contains(&format!(
        "a 0-byte body \"\" where the original gives a {readme}-byte body"
    ));
    out.assert_stderr_contains("missing: /app/README.md");
    assert!(!gone.exists(), "{out}");

    // Nothing to compare with: `slim run` and a run without --verify refuse it.
    let out = s.slim(&[
        "run",
        &src,
        "--probe-http",
        "8080/",
        "--probe-http-expect",
        "same",
    ]);
    assert_clean_failure(&out, 2);
    out.assert_stderr_contains("--verify");
    let out = s.slim(&[&src, "-o", &dest, "--probe-http-expect", "same"]);
    assert_clean_failure(&out, 2);
    assert!(!gone.exists(), "{out}");
}

#[test]
fn a_probe_that_fails_on_the_original_is_a_usage_error() {
    let s = setup();
    let (_, src) = httpd_image(&s);
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:slim", out_layout.display());
    let out = s.slim(&[
        &src,
        "-o",
        &dest,
        "--verify",
        "--probe-cmd",
        "echo nope; exit 3",
    ]);
    let error = assert_clean_failure(&out, 2);
    assert!(error.contains("on the original image"), "{out}");
    out.assert_stderr_contains("probe command \"echo nope; exit 3\": exited 3");
    out.assert_stderr_contains("| nope");
    assert!(!out_layout.exists(), "{out}");

    let out = s.slim(&[
        &src,
        "-o",
        &dest,
        "--verify",
        "--probe-http",
        "8080/missing",
        "--probe-timeout",
        "10s",
    ]);
    assert_clean_failure(&out, 2);
    out.assert_stderr_contains("404");
    assert!(!out_layout.exists(), "{out}");

    // Probe flags without --verify: said so.
    let out = s.slim(&[&src, "-o", &dest, "--probe-tcp", "8080"]);
    assert_clean_failure(&out, 2);
    assert!(!out_layout.exists(), "{out}");
}

#[test]
fn default_probes_check_the_entrypoint_and_the_exposed_ports() {
    let s = setup();
    let (_, src) = httpd_image(&s);
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:slim", out_layout.display());
    let report = s.ctx.path("report.json");
    let out = s.slim(&[
        &src,
        "-o",
        &dest,
        "--verify",
        "--report",
        report.to_str().unwrap(),
    ]);
    out.assert_success();
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verify"]["default_probes"], true, "{r}");
    let names: Vec<&str> = r["verify"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["probe"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["entrypoint resolves (static check)", "TCP :8080"],
        "{r}"
    );
    assert_eq!(index_tags(&out_layout), vec!["slim"]);

    // The fixture as committed (its entrypoint exits at once): the static
    // check, over-stripped: exit 4 naming the missing program.
    let broken = s.ctx.path("broken");
    let dest = format!("oci:{}:slim", broken.display());
    let fixture = fixture_ref();
    let mut args = vec![fixture.as_str(), "-o", &dest, "--verify"];
    args.extend(OVER_STRIP);
    let out = s.slim(&args);
    assert_clean_failure(&out, 4);
    out.assert_stderr_contains("entrypoint resolves (static check)");
    out.assert_stderr_contains(
        "/app/run.sh is a script for /bin/sh, but the image has no /bin/busybox",
    );
    assert!(!broken.exists(), "{out}");
}

/// `--dry-run --verify`: the probes run on both images, nothing is written.
#[test]
fn dry_run_verify_probes_and_writes_nothing() {
    let s = setup();
    let (_, src) = httpd_image(&s);
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:slim", out_layout.display());
    let out = s.slim(&[
        &src,
        "-o",
        &dest,
        "--dry-run",
        "--verify",
        "--probe-tcp",
        "8080",
        "--probe-timeout",
        "20s",
    ]);
    out.assert_success();
    out.assert_stderr_contains("TCP :8080: original ready in");
    assert!(!out_layout.exists(), "{out}");
    let mut args = vec![
        src.as_str(),
        "-o",
        &dest,
        "--dry-run",
        "--verify",
        "--probe-tcp",
        "8080",
        "--probe-timeout",
        "10s",
    ];
    args.extend(OVER_STRIP);
    assert_clean_failure(&s.slim(&args), 4);
    assert!(!out_layout.exists());
}

/// Job-file keys `verify`, `probe-http`: in one batch, the image that
/// passes is written, the over-stripped one fails alone (nothing written
/// for it) with its verify object in the report, and the batch exits 4.
#[test]
fn batch_verify_fails_only_the_image_that_breaks() {
    let s = setup();
    let (_, src) = httpd_image(&s);
    let registry = Registry::shared();
    let repo = unique_name("verify-batch");
    registry
        .skopeo()
        .copy(&src, &registry.docker_ref(&format!("{repo}:src")), &[]);
    let source = registry.reference(&format!("{repo}:src"));
    let good = registry.reference(&format!("{repo}:good"));
    let broken = registry.reference(&format!("{repo}:broken"));
    let job = s.ctx.path("jobs.toml");
    std::fs::write(
        &job,
        format!(
            "[defaults]\nverify = true\nprobe-http = [\"8080/\"]\nprobe-requests = 3\n\
             probe-timeout = \"20s\"\nprobe-http-expect = \"same\"\nrun-memory = \"256m\"\n\n\
             [[images]]\nsource = \"{source}\"\ndestination = \"{good}\"\n\n\
             [[images]]\nsource = \"{source}\"\ndestination = \"{broken}\"\n\
             remove = [\"/bin/busybox\"]\nsafety-keeps = false\n"
        ),
    )
    .unwrap();
    let out = s.slim(&["batch", job.to_str().unwrap(), "--report", "-"]);
    out.assert_code(4);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = report["images"].as_array().unwrap();
    let find = |d: &str| images.iter().find(|i| i["destination"] == d).unwrap();
    let g = find(&good);
    assert_eq!(g["status"], "slimmed", "{report}");
    assert_eq!(g["verify"]["passed"], true, "{report}");
    // probe-requests and probe-http-expect applied: 3 timed answers, and
    // the answers kept and equal.
    let p = &g["verify"]["probes"][0];
    assert_eq!(p["slim"]["requests"], 3, "{report}");
    assert_eq!(p["original"]["answer"]["status"], 200, "{report}");
    assert_eq!(p["original"]["answer"], p["slim"]["answer"], "{report}");
    let b = find(&broken);
    assert_eq!(b["status"], "failed", "{report}");
    assert_eq!(b["verify"]["passed"], false, "{report}");
    assert!(
        b["error"].as_str().unwrap().contains("/bin/busybox"),
        "{report}"
    );
    let mut tags = registry_tags(registry, &repo);
    tags.sort();
    assert_eq!(tags, vec!["good", "src"]);

    // The probe keys need verify = true.
    std::fs::write(
        &job,
        format!(
            "[[images]]\nsource = \"{source}\"\ndestination = \"{good}\"\nprobe-tcp = [8080]\n"
        ),
    )
    .unwrap();
    let out = s.slim(&["batch", job.to_str().unwrap()]);
    out.assert_code(2);
    out.assert_stderr_contains("verify = true");
}

/// A multi-arch index: the probes run for this machine's platform; the
/// other platform gets the static check and a note. Over-stripped, the
/// other platform's static check fails too, named with its platform. An
/// image of no platform this machine runs is checked statically only.
#[test]
fn other_platforms_get_the_static_check_and_a_note() {
    let s = setup();
    let m = multiarch_layout();
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:slim", out_layout.display());
    let report = s.ctx.path("report.json");
    let out = s.slim(&[
        &m.reference,
        "-o",
        &dest,
        "--verify",
        "--probe-cmd",
        "test -x /bin/busybox",
        "--report",
        report.to_str().unwrap(),
    ]);
    out.assert_success();
    out.assert_stderr_contains(
        "note: linux/arm64/v8: not this machine's platform (linux/amd64): the static check only",
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let names: Vec<&str> = r["verify"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["probe"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "command \"test -x /bin/busybox\"",
            "entrypoint resolves (static check, linux/arm64/v8)"
        ],
        "{r}"
    );
    assert_eq!(r["verify"]["notes"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(index_tags(&out_layout), vec!["slim"]);

    // Over-stripped: both platforms fail, each named.
    let broken = s.ctx.path("broken");
    let dest = format!("oci:{}:slim", broken.display());
    let mut args = vec![
        m.reference.as_str(),
        "-o",
        &dest,
        "--verify",
        "--probe-cmd",
        "test -x /bin/busybox",
    ];
    args.extend(OVER_STRIP);
    let out = s.slim(&args);
    assert_clean_failure(&out, 4);
    out.assert_stderr_contains("probe command \"test -x /bin/busybox\"");
    assert!(!broken.exists(), "{out}");
    // Only the other platform, over-stripped: its static check fails.
    let mut args = vec![
        m.reference.as_str(),
        "-o",
        &dest,
        "--verify",
        "--platform",
        "linux/arm64/v8",
    ];
    args.extend(OVER_STRIP);
    let out = s.slim(&args);
    assert_clean_failure(&out, 4);
    out.assert_stderr_contains("probe entrypoint resolves (static check, linux/arm64/v8)");
    out.assert_stderr_contains("/bin/busybox");
    assert!(!broken.exists(), "{out}");
    // ...and not over-stripped it passes, saying no probe ran here.
    let out = s.slim(&[
        &m.reference,
        "-o",
        &dest,
        "--verify",
        "--platform",
        "linux/arm64/v8",
    ]);
    out.assert_success();
    out.assert_stderr_contains("no platform of the image runs on this machine");
    assert_eq!(index_tags(&broken), vec!["slim"]);
}

/// A Docker v2s2 image stays one through the verify gate into a registry
/// (as it does without --verify), and is converted for an OCI layout.
#[test]
fn a_v2s2_image_keeps_its_media_types_through_the_gate() {
    let s = setup();
    let registry = Registry::shared();
    let repo = unique_name("verify-v2s2");
    push_fixture_v2s2(registry, &format!("{repo}:src"));
    let src = registry.reference(&format!("{repo}:src"));
    let plain = registry.reference(&format!("{repo}:plain"));
    let verified = registry.reference(&format!("{repo}:verified"));
    s.slim(&[&src, "-o", &plain, "-q"]).assert_success();
    s.slim(&[&src, "-o", &verified, "--verify", "-q"])
        .assert_success();
    let skopeo = registry.skopeo();
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    let plain_m = skopeo.inspect_raw(&registry.docker_ref(&format!("{repo}:plain")));
    let verified_m = skopeo.inspect_raw(&registry.docker_ref(&format!("{repo}:verified")));
    assert_eq!(plain_m["mediaType"], docker, "{plain_m}");
    assert_eq!(verified_m, plain_m, "the gate changed the image");

    let out_layout = s.ctx.path("out");
    s.slim(&[
        &src,
        "-o",
        &format!("oci:{}:slim", out_layout.display()),
        "--verify",
        "-q",
    ])
    .assert_success();
    let m = image_in_layout(&out_layout, "slim");
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
}
