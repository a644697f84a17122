//! `slim batch --metrics-file` and `--pushgateway`: the metrics of a run,
//! pushed to a real Prometheus Pushgateway (grouped by job and shard) and
//! read back from it, match the batch report; a textfile says the same.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::harness::pushgateway::{Pushgateway, Sample, parse_samples};
use crate::harness::*;

fn job_file(ctx: &TestContext, entries: &[(String, String)]) -> String {
    let mut text = String::from("[defaults]\nprofile = \"auto\"\n\n");
    for (src, dst) in entries {
        text.push_str(&format!(
            "[[images]]\nsource = \"{src}\"\ndestination = \"{dst}\"\n\n"
        ));
    }
    let path = ctx.path("jobs.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The samples of one group (`job`, `shard`), by name and the labels that
/// are not the grouping ones (`status="slimmed"`, `le="5"`).
fn group(samples: &[Sample], job: &str, shard: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter(|s| {
            s.labels.get("job").map(String::as_str) == Some(job)
                && s.labels.get("shard").map(String::as_str) == Some(shard)
                && s.name.starts_with("slim_batch_")
        })
        .map(|s| (key(s, &["job", "shard", "instance"]), s.value))
        .collect()
}

fn key(s: &Sample, grouping: &[&str]) -> String {
    let rest: Vec<String> = s
        .labels
        .iter()
        .filter(|(k, _)| !grouping.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if rest.is_empty() {
        s.name.clone()
    } else {
        format!("{}{{{}}}", s.name, rest.join(","))
    }
}

/// What the report says the metrics must be.
fn assert_metrics_match(m: &BTreeMap<String, f64>, report: &Value) {
    let images = report["images"].as_array().unwrap();
    let count = |status: &str| images.iter().filter(|i| i["status"] == status).count() as f64;
    for status in ["slimmed", "skipped", "failed"] {
        assert_eq!(
            m[&format!("slim_batch_images{{status={status}}}")],
            count(status),
            "{status}: {m:#?}"
        );
    }
    let t = &report["totals"];
    assert_eq!(
        m["slim_batch_source_bytes"],
        t["source_compressed_bytes"].as_f64().unwrap()
    );
    assert_eq!(
        m["slim_batch_output_bytes"],
        t["output_compressed_bytes"].as_f64().unwrap()
    );
    assert_eq!(
        m["slim_batch_saved_bytes"],
        t["saved_bytes"].as_f64().unwrap()
    );
    assert_eq!(m["slim_batch_retries"], 0.0, "a healthy registry");
    assert_eq!(
        m["slim_batch_duration_seconds"],
        report["duration_seconds"].as_f64().unwrap()
    );
    let durations: Vec<f64> = images
        .iter()
        .map(|i| i["duration_seconds"].as_f64().unwrap())
        .collect();
    let h = "slim_batch_image_duration_seconds";
    assert_eq!(m[&format!("{h}_count")], durations.len() as f64);
    let sum: f64 = durations.iter().sum();
    assert!((m[&format!("{h}_sum")] - sum).abs() < 1e-6, "{m:#?}");
    assert_eq!(m[&format!("{h}_bucket{{le=+Inf}}")], durations.len() as f64);
    for le in ["0.5", "5", "60"] {
        let bound: f64 = le.parse().unwrap();
        let n = durations.iter().filter(|d| **d <= bound).count() as f64;
        assert_eq!(m[&format!("{h}_bucket{{le={le}}}")], n, "le={le}");
    }
}

#[test]
fn batch_metrics_pushed_to_a_pushgateway_match_the_report() {
    let pg = Pushgateway::start();
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let src = unique_name("metrics-src");
    let dst = unique_name("metrics-dst");
    push_fixture(reg, &format!("{src}:a"));
    push_fixture_v2s2(reg, &format!("{src}:b"));
    let entries = vec![
        (
            reg.reference(&format!("{src}:a")),
            reg.reference(&format!("{dst}:a")),
        ),
        (
            reg.reference(&format!("{src}:b")),
            reg.reference(&format!("{dst}:b")),
        ),
        // No such source: this image fails, the others go on.
        (
            reg.reference(&format!("{src}:missing")),
            reg.reference(&format!("{dst}:c")),
        ),
    ];
    let file = job_file(&ctx, &entries);
    let metrics_file = ctx.path("textfile/slim.prom");
    std::fs::create_dir_all(metrics_file.parent().unwrap()).unwrap();
    let run = || {
        let out = ctx.slim_with(
            &[
                "batch",
                &file,
                "--shard",
                "0/1",
                "--report",
                "-",
                "--metrics-file",
                metrics_file.to_str().unwrap(),
                "--pushgateway",
                &pg.url(),
            ],
            &[("RUST_BACKTRACE", "0")],
            None,
        );
        out.assert_code(1);
        let report: Value = serde_json::from_slice(&out.stdout).expect("the JSON report");
        report
    };

    let report = run();
    assert_eq!(report["totals"]["slimmed"], 2, "{report:#}");
    assert_eq!(report["totals"]["failed"], 1);
    let pushed = group(&pg.samples(), "slim-batch", "0");
    assert_metrics_match(&pushed, &report);
    assert!(pushed["slim_batch_saved_bytes"] > 0.0);
    // The textfile holds the same samples.
    let file_samples = parse_samples(&std::fs::read_to_string(&metrics_file).unwrap());
    let from_file: BTreeMap<String, f64> = file_samples
        .iter()
        .map(|s| (key(s, &[]), s.value))
        .collect();
    assert_eq!(from_file, pushed);

    // A rerun: the group is replaced by this run's numbers.
    let report = run();
    assert_eq!(report["totals"]["skipped"], 2, "{report:#}");
    let pushed = group(&pg.samples(), "slim-batch", "0");
    assert_metrics_match(&pushed, &report);
    assert_eq!(pushed["slim_batch_saved_bytes"], 0.0);
}

#[test]
fn a_bad_pushgateway_url_is_a_usage_error() {
    let ctx = TestContext::new();
    let file = job_file(
        &ctx,
        &[("127.0.0.1:1/a:b".to_string(), "127.0.0.1:1/c:d".to_string())],
    );
    let out = ctx.slim(&["batch", &file, "--pushgateway", "ftp://example"]);
    let error = assert_clean_failure(&out, 2);
    assert!(error.contains("is not an http(s) URL"), "{error}");
}
