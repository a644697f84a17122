//! `slim analyze` per path: the largest directories and files, every
//! wasted path, every path the profiles would remove, and the complete
//! listing, on an image built here whose contents are known exactly.

use serde_json::{Value, json};

use crate::harness::*;

/// Three layers with known waste:
/// 1. `/bin/tool` (5000 B), `/var/log/apt.log` (300 B, the `logs` rule),
///    `/tmp/notes` (50 B, the `tmp` rule);
/// 2. `/app/data.bin` (4000 B), two identical 2000-byte files in `/app/a`
///    and `/app/b`, `/tmp/build.log` (700 B), `/app/old.txt` (100 B);
/// 3. deletes `/tmp/build.log`, rewrites `/app/old.txt` (10 B), adds the
///    symlink `/app/link`.
pub fn known_image(ctx: &TestContext) -> String {
    let same = vec![b'd'; 2000];
    let l1 = Layer::new()
        .dir("bin")
        .file("bin/tool", 0o755, &[b't'; 5000])
        .dir("var")
        .dir("var/log")
        .file("var/log/apt.log", 0o644, &[b'l'; 300])
        .dir("tmp")
        .file("tmp/notes", 0o644, &[b'n'; 50])
        .finish();
    let l2 = Layer::new()
        .dir("app")
        .file("app/data.bin", 0o644, &[b'x'; 4000])
        .dir("app/a")
        .file("app/a/copy1.bin", 0o644, &same)
        .dir("app/b")
        .file("app/b/copy2.bin", 0o644, &same)
        .file("tmp/build.log", 0o644, &[b'b'; 700])
        .file("app/old.txt", 0o644, &[b'o'; 100])
        .finish();
    let l3 = Layer::new()
        .file("tmp/.wh.build.log", 0o644, b"")
        .file("app/old.txt", 0o600, b"0123456789")
        .symlink("app/link", "data.bin")
        .finish();
    layout_of_tars(&ctx.path("known"), &[l1, l2, l3], "v1")
}

fn analyze(ctx: &TestContext, args: &[&str]) -> Value {
    let out = ctx.slim_with(args, &[("RUST_BACKTRACE", "0")], None);
    out.assert_success();
    out.stdout_json()
}

#[test]
fn analyze_json_lists_the_known_paths_exactly() {
    let ctx = TestContext::new();
    let image = known_image(&ctx);
    let a = analyze(
        &ctx,
        &[
            "analyze",
            &image,
            "--json",
            "--profile",
            "base",
            "--top",
            "3",
        ],
    );
    let img = &a["images"][0];
    assert_eq!(
        img["top_files"],
        json!([
            {"path": "/bin/tool", "bytes": 5000, "files": 1, "layer": 1, "class": "kept"},
            {"path": "/app/data.bin", "bytes": 4000, "files": 1, "layer": 2, "class": "kept"},
            {"path": "/app/a/copy1.bin", "bytes": 2000, "files": 1, "layer": 2, "class": "kept"},
        ]),
        "{img:#}"
    );
    // /app: data.bin, both copies, old.txt (10 B now) and the link.
    assert_eq!(
        img["top_dirs"],
        json!([
            {"path": "/app", "bytes": 8010, "files": 5},
            {"path": "/bin", "bytes": 5000, "files": 1},
            {"path": "/app/a", "bytes": 2000, "files": 1},
        ])
    );
    assert_eq!(
        img["wasted"]["shadowed_paths"],
        json!([
            {"path": "/tmp/build.log", "layer": 2, "bytes": 700, "by_layer": 3},
            {"path": "/app/old.txt", "layer": 2, "bytes": 100, "by_layer": 3},
        ])
    );
    assert_eq!(img["wasted"]["shadowed"], json!({"files": 2, "bytes": 800}));
    assert_eq!(
        img["wasted"]["duplicate_paths"],
        json!([
            {"path": "/app/b/copy2.bin", "layer": 2, "bytes": 2000, "same_as": "/app/a/copy1.bin"},
        ])
    );
    assert_eq!(
        img["wasted"]["duplicates"],
        json!({"files": 1, "bytes": 2000})
    );
    assert_eq!(
        img["would_remove_paths"],
        json!([
            {"path": "/tmp/notes", "category": "tmp", "bytes": 50},
            {"path": "/var/log/apt.log", "category": "logs", "bytes": 300},
        ])
    );
    assert_eq!(img["would_remove"], json!({"files": 2, "bytes": 350}));
    // Without --files, no listing.
    assert!(img.get("files").is_none());
}

#[test]
fn analyze_files_lists_every_path_with_its_layer() {
    let ctx = TestContext::new();
    let image = known_image(&ctx);
    let a = analyze(&ctx, &["analyze", &image, "--json", "--files"]);
    let files = a["images"][0]["files"].as_array().expect("files").clone();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/app",
            "/app/a",
            "/app/a/copy1.bin",
            "/app/b",
            "/app/b/copy2.bin",
            "/app/data.bin",
            "/app/link",
            "/app/old.txt",
            "/bin",
            "/bin/tool",
            "/tmp",
            "/tmp/notes",
            "/var",
            "/var/log",
            "/var/log/apt.log",
        ]
    );
    let of = |p: &str| files.iter().find(|f| f["path"] == p).unwrap().clone();
    assert_eq!(
        of("/app/old.txt"),
        json!({"path": "/app/old.txt", "type": "file", "size": 10, "mode": "0600", "layer": 3})
    );
    assert_eq!(
        of("/app/link"),
        json!({"path": "/app/link", "type": "symlink", "size": 0, "mode": "0777", "layer": 3, "target": "data.bin"})
    );
    assert_eq!(
        of("/bin/tool"),
        json!({"path": "/bin/tool", "type": "file", "size": 5000, "mode": "0755", "layer": 1})
    );
    assert_eq!(
        of("/app"),
        json!({"path": "/app", "type": "dir", "size": 0, "mode": "0755", "layer": 2})
    );
    // The text form lists the same paths.
    let out = ctx.slim_with(
        &["analyze", &image, "--files"],
        &[("RUST_BACKTRACE", "0")],
        None,
    );
    out.assert_success();
    let text = out.stdout_str();
    assert!(
        text.contains("0777  symlink             0     3  /app/link -> data.bin"),
        "{text}"
    );
}
