//! `slim IMAGE -o DEST --minimize` against a real runtime (runc): the
//! fixture's statically linked busybox serving `/app/data` with `httpd`.
//! The trace keeps busybox, its applet links, the file the probe fetched
//! and `/etc` (a safety keep); the rest goes as "not used at run time";
//! the minimized image passes the same probe (the gate) and serves again
//! under `slim run`. Two runs give one digest, and `--write-profile` then
//! `--profile FILE` (no tracing) gives it again. What the trace cannot see
//! (a path only `stat`ed) fails the gate with exit 4 and the `--keep` that
//! brings it back. Root and runc needed, as for the other sandbox tests.

use std::path::Path;

use serde_json::{Value, json};

use crate::harness::fixture::{put_blob, read_blob, tag_only};
use crate::harness::*;
use crate::sandbox::{Sandboxed, setup};

const SERVE: &str = "exec busybox httpd -f -p 8080 -h /app/data";

/// The fixture with `sh -c CMD` as its entrypoint, as `oci:LAYOUT:TAG` in
/// a copy of the fixture layout.
fn image_running(s: &Sandboxed, cmd: &str, tag: &str) -> String {
    image_running_with(s, cmd, tag, &[])
}

/// [`image_running`] with `extra` layers (plain tars) on top.
fn image_running_with(s: &Sandboxed, cmd: &str, tag: &str, extra: &[Vec<u8>]) -> String {
    let layout = s.ctx.path(&format!("layout-{tag}"));
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
    config["config"]["Entrypoint"] = json!(["/bin/sh", "-c", cmd]);
    config["config"]["Cmd"] = Value::Null;
    let mut manifest = image.manifest.clone();
    for tar in extra {
        let layer = LayerBlob::gzip_tar(tar);
        let digest = put_blob(&layout, &layer.blob);
        manifest["layers"].as_array_mut().unwrap().push(json!({
            "mediaType": layer.media_type, "digest": digest, "size": layer.blob.len(),
        }));
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(layer.diff_id));
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(&layout, &config_bytes);
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_bytes.len());
    tag_only(
        &layout,
        &serde_json::to_vec(&manifest).unwrap(),
        &image.media_type,
        tag,
    );
    format!("oci:{}:{tag}", layout.display())
}

fn report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn minimize_keeps_what_httpd_reads_and_the_result_still_serves() {
    let s = setup();
    let src = image_running(&s, SERVE, "httpd");
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:min", out_layout.display());
    let report_path = s.ctx.path("report.json");
    let learned = s.ctx.path("learned.toml");
    let out = s.slim(&[
        &src,
        "-o",
        &dest,
        "--minimize",
        "--probe-http",
        "8080/a",
        "--probe-timeout",
        "20s",
        "--write-profile",
        learned.to_str().unwrap(),
        "--report",
        report_path.to_str().unwrap(),
    ]);
    out.assert_success();
    out.assert_stderr_contains("minimized: traced");
    let r = report(&report_path);
    assert_eq!(r["verify"]["passed"], true, "{r}");
    assert_eq!(r["verify"]["probes"][0]["probe"], "HTTP GET :8080/a", "{r}");
    let m = &r["minimize"];
    assert_eq!(m["rounds"], 2, "{r}");
    assert_eq!(m["traced_platform"], "linux/amd64", "{r}");
    assert_eq!(m["probes"], json!(["HTTP GET :8080/a"]), "{r}");
    let gone = &r["removed"]["by_category"]["not used at run time"];
    assert!(gone["files"].as_u64().unwrap() >= 10, "{r}");
    assert!(gone["bytes"].as_u64().unwrap() > 0, "{r}");
    // Only the minimization's category: the profile replaced the others.
    assert_eq!(
        r["removed"]["by_category"].as_object().unwrap().len(),
        1,
        "{r}"
    );

    let tree = tree_of(&s.ctx.umoci_unpack(&out_layout, "min"));
    let has = |p: &str| tree.contains_key(p);
    // The audit list: each removed path with its category and bytes.
    let listed: std::collections::BTreeMap<&str, (&str, u64)> = r["removed"]["paths"]
        .as_array()
        .unwrap_or_else(|| panic!("no removed.paths: {r}"))
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap(),
                (
                    p["category"].as_str().unwrap(),
                    p["bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let listed_bytes: u64 = listed.values().map(|(_, b)| b).sum();
    assert_eq!(listed_bytes, gone["bytes"].as_u64().unwrap(), "{r}");
    assert!(listed["/app/data/big.txt"].1 > 0, "{r}");
    for kept in [
        "/bin/busybox",
        "/bin/sh",
        "/app/data/a",
        "/etc/passwd",
        "/etc/os-release",
        "/usr/share/doc/busybox-static/copyright",
    ] {
        assert!(has(kept), "{kept} is gone: {:?}", tree.keys());
        assert!(!listed.contains_key(kept), "{kept} is listed as removed");
    }
    for removed in [
        "/app/data/b",
        "/app/data/big.txt",
        "/app/data/old/new.txt",
        "/app/README.md",
        "/app/run.sh",
        "/usr/local/bin/tool",
        "/usr/share/man/man1/busybox.1.gz",
        "/var/lib/apt/lists/lock",
        // Directories with nothing kept in them go too.
        "/app/data/old",
        "/usr/local",
    ] {
        assert!(!has(removed), "{removed} is still there");
        assert_eq!(
            listed.get(removed).map(|l| l.0),
            Some("not used at run time"),
            "{removed} is not in the report's removed paths"
        );
    }

    // The minimized image serves on its own.
    let run = s.slim(&[
        "run",
        &dest,
        "--probe-http",
        "8080/a",
        "--probe-timeout",
        "20s",
    ]);
    run.assert_success();
    assert!(run.stdout_str().contains("passed"), "{run}");

    // Reproducible: a second minimization writes the same image, and the
    // learned profile applied without tracing gives it again.
    let digest = r["output"]["digest"].as_str().unwrap().to_string();
    let again = s.ctx.path("again.json");
    s.slim(&[
        &src,
        "-o",
        &format!("oci:{}:min", s.ctx.path("out2").display()),
        "--minimize",
        "--probe-http",
        "8080/a",
        "--probe-timeout",
        "20s",
        "-q",
        "--report",
        again.to_str().unwrap(),
    ])
    .assert_success();
    assert_eq!(report(&again)["output"]["digest"], json!(digest));
    let text = std::fs::read_to_string(&learned).unwrap();
    assert!(
        text.contains("category = \"not used at run time\""),
        "{text}"
    );
    assert!(text.contains("\"bin/busybox\""), "{text}");
    let applied = s.ctx.path("applied.json");
    s.slim(&[
        &src,
        "-o",
        &format!("oci:{}:min", s.ctx.path("out3").display()),
        "--profile",
        learned.to_str().unwrap(),
        "-q",
        "--report",
        applied.to_str().unwrap(),
    ])
    .assert_success();
    let applied = report(&applied);
    assert_eq!(applied["output"]["digest"], json!(digest), "{applied}");
    assert!(applied.get("minimize").is_none());
}

/// Scanners stay honest: a package whose files the minimization took
/// leaves dpkg's status (judged by the host's `dpkg-query` on the unpacked
/// output); busybox, which still runs, stays listed.
#[test]
fn minimize_drops_packages_whose_files_are_all_gone_from_dpkg_status() {
    use crate::packages::{dpkg_query, stanza};
    let s = setup();
    let status = [
        stanza("busybox-static", "1:1.35.0-4"),
        stanza("tool-extra", "0.1"),
    ]
    .join("\n");
    let db = Layer::new()
        .file("var/lib/dpkg/status", 0o644, status.as_bytes())
        .file(
            "var/lib/dpkg/info/busybox-static.list",
            0o644,
            b"/.\n/bin\n/bin/busybox\n/usr/share/doc/busybox-static\n/usr/share/doc/busybox-static/copyright\n",
        )
        .file(
            "var/lib/dpkg/info/tool-extra.list",
            0o644,
            b"/usr/local\n/usr/local/bin\n/usr/local/bin/tool\n",
        )
        .file("var/lib/dpkg/info/tool-extra.md5sums", 0o644, b"0  usr/local/bin/tool\n")
        .finish();
    let src = image_running_with(&s, SERVE, "dpkg", &[db]);
    let out_layout = s.ctx.path("out");
    let report_path = s.ctx.path("report.json");
    s.slim(&[
        &src,
        "-o",
        &format!("oci:{}:min", out_layout.display()),
        "--minimize",
        "--probe-http",
        "8080/a",
        "--probe-timeout",
        "20s",
        "--report",
        report_path.to_str().unwrap(),
    ])
    .assert_success();
    let r = report(&report_path);
    assert_eq!(
        r["removed"]["packages"],
        json!([{"manager": "dpkg", "name": "tool-extra", "architecture": "amd64", "version": "0.1"}]),
        "{r}"
    );
    let root = s.ctx.umoci_unpack(&out_layout, "min");
    assert_eq!(dpkg_query(&root), ["busybox-static 1:1.35.0-4"]);
    assert!(root.join("var/lib/dpkg/info/busybox-static.list").exists());
    assert!(!root.join("var/lib/dpkg/info/tool-extra.list").exists());
    assert!(!root.join("var/lib/dpkg/info/tool-extra.md5sums").exists());
}

/// `ls FILE` only `lstat`s it, which fanotify does not see: the file is
/// not kept, the gate fails with exit 4, nothing is written, and the
/// error names the `--keep` that brings it back, which then passes.
#[test]
fn what_the_trace_misses_fails_the_gate_with_the_keep_that_fixes_it() {
    let s = setup();
    let src = image_running(&s, SERVE, "httpd");
    let out_layout = s.ctx.path("out");
    let dest = format!("oci:{}:min", out_layout.display());
    let probe = "ls /app/data/old/new.txt";
    let out = s.slim(&[
        &src,
        "-o",
        &dest,
        "--minimize",
        "--probe-cmd",
        probe,
        "--probe-timeout",
        "20s",
    ]);
    let error = assert_clean_failure(&out, 4);
    assert!(error.contains("the slim image fails 1 probe"), "{out}");
    out.assert_stderr_contains("--keep '/app/data/old/new.txt'");
    assert!(!out_layout.exists(), "{out}");
    let out = s.slim(&[
        &src,
        "-o",
        &dest,
        "--minimize",
        "--probe-cmd",
        probe,
        "--probe-timeout",
        "20s",
        "--keep",
        "/app/data/old/new.txt",
    ]);
    out.assert_success();
    let tree = tree_of(&s.ctx.umoci_unpack(&out_layout, "min"));
    assert!(tree.contains_key("/app/data/old/new.txt"));
    assert!(!tree.contains_key("/app/data/big.txt"));
}

/// `--write-profile` needs `--minimize`; probes need `--verify` or
/// `--minimize`.
#[test]
fn write_profile_without_minimize_is_a_usage_error() {
    let ctx = TestContext::new();
    let dest = format!("oci:{}:x", ctx.path("out").display());
    let out = ctx.slim(&[&fixture_ref(), "-o", &dest, "--write-profile", "x.toml"]);
    out.assert_code(2);
    out.assert_stderr_contains("--minimize");
}
