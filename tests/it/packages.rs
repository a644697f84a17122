//! Scanners stay honest: a Debian package none of whose files remain after
//! the profiles leaves `/var/lib/dpkg/status` (and its `info/` files); a
//! package with a file left stays listed. Judged by the host's
//! `dpkg-query --admindir` on the output unpacked by umoci. The same with
//! `--minimize` is in `minimize.rs`.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::*;

/// A dpkg stanza as dpkg writes it.
pub fn stanza(name: &str, version: &str) -> String {
    format!(
        "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\n\
Maintainer: Nobody <nobody@example.org>\nArchitecture: amd64\nVersion: {version}\n\
Description: {name} for a test\n"
    )
}

/// `dpkg-query -W` over the database under `root`: `name version` lines.
pub fn dpkg_query(root: &Path) -> Vec<String> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version}\\n"])
        .output()
        .expect("running dpkg-query (Debian's dpkg)");
    assert!(
        out.status.success(),
        "dpkg-query: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn packages_the_profiles_emptied_leave_dpkg_status() {
    let ctx = TestContext::new();
    let status = [
        stanza("tool", "1.0-1"),
        stanza("tool-doc", "1.0-1"),
        stanza("libtool-dev", "1.0-1"),
        stanza("merged", "2.0"),
    ]
    .join("\n");
    let layer = Layer::new()
        .dir("usr")
        .dir("usr/bin")
        .symlink("bin", "usr/bin")
        .dir("usr/include")
        .dir("usr/share")
        .dir("usr/share/doc")
        .dir("usr/share/doc/tool")
        .dir("usr/share/doc/tool-doc")
        .dir("usr/share/man")
        .dir("usr/share/man/man1")
        .file("usr/bin/tool", 0o755, b"#!/bin/sh\necho tool\n")
        .file("usr/bin/merged", 0o755, b"#!/bin/sh\necho merged\n")
        .file("usr/share/man/man1/tool.1.gz", 0o644, &[7u8; 300])
        .file("usr/share/doc/tool/copyright", 0o644, b"tool licence\n")
        .file("usr/share/doc/tool-doc/manual.html", 0o644, &[b'm'; 5000])
        .file("usr/share/doc/tool-doc/copyright", 0o644, b"doc licence\n")
        .file("usr/include/tool.h", 0o644, b"int tool(void);\n")
        .dir("var")
        .dir("var/lib")
        .dir("var/lib/dpkg")
        .dir("var/lib/dpkg/info")
        .file("var/lib/dpkg/status", 0o644, status.as_bytes())
        .file(
            "var/lib/dpkg/info/tool.list",
            0o644,
            b"/.\n/usr\n/usr/bin\n/usr/bin/tool\n/usr/share/man/man1/tool.1.gz\n/usr/share/doc/tool/copyright\n",
        )
        .file("var/lib/dpkg/info/tool.md5sums", 0o644, b"0  usr/bin/tool\n")
        .file(
            "var/lib/dpkg/info/tool-doc.list",
            0o644,
            b"/usr/share/doc/tool-doc\n/usr/share/doc/tool-doc/manual.html\n/usr/share/doc/tool-doc/copyright\n",
        )
        .file(
            "var/lib/dpkg/info/libtool-dev.list",
            0o644,
            b"/usr/include\n/usr/include/tool.h\n",
        )
        .file("var/lib/dpkg/info/libtool-dev.postinst", 0o755, b"#!/bin/sh\n")
        // Listed through merged /usr: `/bin` is a link to `usr/bin`.
        .file("var/lib/dpkg/info/merged.list", 0o644, b"/bin\n/bin/merged\n")
        .file("etc/os-release", 0o644, b"ID=debian\n")
        .finish();
    let src = layout_of_tars(&ctx.path("src"), &[layer], "pkgs");
    let out_dir = ctx.path("out");
    let report_path = ctx.path("report.json");
    let out = ctx.slim(&[
        &src,
        "-o",
        &oci_ref(&out_dir, "slim"),
        "--profile",
        "debian",
        "--report",
        report_path.to_str().unwrap(),
    ]);
    out.assert_success();
    out.assert_stderr_contains("2 packages none of whose files remain left the dpkg database");

    let r: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(
        r["removed"]["packages"],
        json!([
            {"manager": "dpkg", "name": "libtool-dev", "architecture": "amd64", "version": "1.0-1"},
            {"manager": "dpkg", "name": "tool-doc", "architecture": "amd64", "version": "1.0-1"},
        ]),
        "{r}"
    );
    let gone = &r["removed"]["by_category"]["package gone"];
    // tool-doc's copyright, libtool-dev's list and postinst, tool-doc's list.
    assert_eq!(gone["files"], 4, "{r}");
    let listed: Vec<&str> = r["removed"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["category"] == "package gone")
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "/usr/share/doc/tool-doc/copyright",
            "/var/lib/dpkg/info/libtool-dev.list",
            "/var/lib/dpkg/info/libtool-dev.postinst",
            "/var/lib/dpkg/info/tool-doc.list",
        ],
        "{r}"
    );

    let root = ctx.umoci_unpack(&out_dir, "slim");
    assert_eq!(dpkg_query(&root), ["merged 2.0", "tool 1.0-1"]);
    for kept in [
        "usr/bin/tool",
        "usr/share/doc/tool/copyright",
        "var/lib/dpkg/info/tool.list",
        "var/lib/dpkg/info/tool.md5sums",
        "var/lib/dpkg/info/merged.list",
    ] {
        assert!(root.join(kept).exists(), "{kept} is gone");
    }
    for gone in [
        "usr/share/doc/tool-doc/copyright",
        "var/lib/dpkg/info/tool-doc.list",
        "var/lib/dpkg/info/libtool-dev.postinst",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is still there");
    }

    // The source, unslimmed, lists all four: the judge sees the difference.
    let all = ctx.path("all");
    ctx.slim(&[&src, "-o", &oci_ref(&all, "x"), "--profile", "none", "-q"])
        .assert_success();
    assert_eq!(
        dpkg_query(&ctx.umoci_unpack(&all, "x")),
        [
            "libtool-dev 1.0-1",
            "merged 2.0",
            "tool 1.0-1",
            "tool-doc 1.0-1"
        ]
    );
}
