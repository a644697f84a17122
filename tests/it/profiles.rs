//! Profiles end to end: safety keeps on a real ELF program and a script
//! with an `env` shebang, user profile errors, `--dry-run`, and the
//! fixture with the default profile. Trees are judged with umoci.

use std::path::Path;

use serde_json::json;

use crate::harness::*;

/// The shared libraries `ldd` says a host program needs (real paths).
fn ldd(program: &str) -> Vec<String> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .expect("ldd runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

fn host(path: &str) -> Vec<u8> {
    std::fs::read(std::fs::canonicalize(path).unwrap()).unwrap()
}

#[test]
fn safety_keeps_the_entrypoint_its_interpreter_and_shared_libraries() {
    let ctx = TestContext::new();
    // A program with real DT_NEEDED entries, its libraries where ld.so.conf
    // points, and a library nothing needs.
    let libs = ldd("/bin/ls");
    assert!(
        libs.iter().any(|l| l.contains("libc.so")),
        "ldd /bin/ls: {libs:?}"
    );
    let mut layer = Layer::new()
        .dir("etc")
        .dir("etc/ld.so.conf.d")
        .file(
            "etc/ld.so.conf",
            0o644,
            b"include /etc/ld.so.conf.d/*.conf\n",
        )
        .file(
            "etc/ld.so.conf.d/multiarch.conf",
            0o644,
            b"/usr/lib/x86_64-linux-gnu\n",
        )
        .dir("usr")
        .dir("usr/bin")
        .dir("usr/lib")
        .dir("usr/lib/x86_64-linux-gnu")
        .symlink("lib64", "usr/lib/x86_64-linux-gnu")
        .file("usr/bin/env", 0o755, &host("/usr/bin/env"))
        .file("usr/bin/python3.11", 0o755, &host("/bin/true"))
        .symlink("usr/bin/python3", "python3.11")
        .file("usr/bin/unused-tool", 0o755, &host("/bin/true"))
        .dir("opt")
        .dir("opt/tool")
        .dir("opt/tool/bin")
        .file("opt/tool/bin/tool", 0o755, &host("/bin/ls"))
        .file(
            "usr/lib/x86_64-linux-gnu/libunused.so.1",
            0o644,
            &host(&ldd("/bin/ls")[0]),
        )
        .dir("app")
        .file(
            "app/run.py",
            0o755,
            b"#!/usr/bin/env python3\nprint('hi')\n",
        )
        .file("app/notes.txt", 0o644, b"not needed\n");
    let mut names = Vec::new();
    for lib in &libs {
        let name = Path::new(lib)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("ld-linux") {
            layer = layer.file(
                &format!("usr/lib/x86_64-linux-gnu/{name}"),
                0o755,
                &host(lib),
            );
        } else {
            layer = layer.file(
                &format!("usr/lib/x86_64-linux-gnu/{name}"),
                0o644,
                &host(lib),
            );
        }
        names.push(name);
    }
    let src = ctx.path("src");
    let config = json!({"config": {
        "Entrypoint": ["/app/run.py"],
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "WorkingDir": "/app"}});
    write_image(&src, "app", &[LayerBlob::gzip_tar(&layer.finish())], config);
    // A profile that would take it all.
    let profile = ctx.path("strip.toml");
    std::fs::write(
        &profile,
        "name = \"strip\"\ndescription = \"removes programs and libraries\"\n\
         [[rule]]\ncategory = \"libs\"\nremove = [\"usr/lib/**\"]\n\
         [[rule]]\ncategory = \"programs\"\nremove = [\"usr/bin/**\", \"app/**\"]\n",
    )
    .unwrap();
    let out = ctx.path("out");
    let run = ctx.slim(&[
        &oci_ref(&src, "app"),
        "-o",
        &oci_ref(&out, "s"),
        "--profile",
        profile.to_str().unwrap(),
        "-v",
    ]);
    run.assert_success();
    let root = ctx.umoci_unpack(&out, "s");
    let tree = tree_of(&root);
    for kept in [
        "app/run.py",
        "usr/bin/env",
        "usr/bin/python3",
        "usr/bin/python3.11",
        "opt/tool/bin/tool",
    ] {
        assert!(
            tree.contains_key(&format!("/{kept}")) || tree.contains_key(kept),
            "{kept} kept:\n{run}"
        );
    }
    for name in &names {
        let p = format!("usr/lib/x86_64-linux-gnu/{name}");
        assert!(
            tree.keys().any(|k| k.trim_start_matches('/') == p),
            "{p} (needed by /bin/ls) kept:\n{run}"
        );
    }
    for gone in [
        "usr/lib/x86_64-linux-gnu/libunused.so.1",
        "usr/bin/unused-tool",
        "app/notes.txt",
    ] {
        assert!(
            !tree.keys().any(|k| k.trim_start_matches('/') == gone),
            "{gone} removed:\n{run}"
        );
    }
    // The report says what safety saved, and why.
    let err = run.stderr_str();
    assert!(err.contains("kept by safety"), "{run}");
    assert!(err.contains("interpreter of /app/run.py"), "{run}");
    assert!(
        err.contains("shared library needed by /opt/tool/bin/tool"),
        "{run}"
    );
    assert!(err.contains("entrypoint program /app/run.py"), "{run}");
}

#[test]
fn a_profile_file_with_an_unknown_key_or_a_bad_glob_is_named() {
    let ctx = TestContext::new();
    let bad_key = ctx.path("typo.toml");
    std::fs::write(
        &bad_key,
        "name = \"t\"\ndescription = \"d\"\n[[rule]]\ncategory = \"c\"\nremvoe = [\"x\"]\n",
    )
    .unwrap();
    let out = ctx.slim(&[
        &fixture_ref(),
        "-o",
        &oci_ref(&ctx.path("o"), "x"),
        "--profile",
        bad_key.to_str().unwrap(),
    ]);
    out.assert_code(2);
    let err = out.stderr_str();
    assert!(err.contains("typo.toml") && err.contains("remvoe"), "{out}");
    assert!(!ctx.path("o").join("index.json").exists());

    let bad_glob = ctx.path("glob.toml");
    std::fs::write(
        &bad_glob,
        "name = \"t\"\ndescription = \"d\"\n[[rule]]\ncategory = \"c\"\nremove = [\"usr/[lib\"]\n",
    )
    .unwrap();
    let out = ctx.slim(&[
        &fixture_ref(),
        "-o",
        &oci_ref(&ctx.path("o"), "x"),
        "--profile",
        bad_glob.to_str().unwrap(),
    ]);
    out.assert_code(2);
    assert!(
        out.stderr_str().contains("usr/[lib") && out.stderr_str().contains("glob.toml"),
        "{out}"
    );

    let out = ctx.slim(&[
        &fixture_ref(),
        "-o",
        &oci_ref(&ctx.path("o"), "x"),
        "--profile",
        "nosuch",
    ]);
    out.assert_code(2);
    assert!(
        out.stderr_str().contains("unknown profile \"nosuch\""),
        "{out}"
    );
}

#[test]
fn dry_run_lists_removals_and_writes_nothing() {
    let ctx = TestContext::new();
    let out_dir = ctx.path("never");
    let out = ctx.slim(&[
        &fixture_ref(),
        "-o",
        &oci_ref(&out_dir, "x"),
        "--dry-run",
        "-v",
    ]);
    out.assert_success();
    assert!(!out_dir.exists(), "a dry run writes nothing");
    let err = out.stderr_str();
    assert!(err.contains("dry run"), "{out}");
    assert!(err.contains("would remove"), "{out}");
    assert!(
        err.contains("remove /usr/share/man/man1/busybox.1.gz  (man)"),
        "{out}"
    );
    assert!(err.contains("profiles: base, debian"), "{out}");
}

#[test]
fn default_profile_strips_the_fixture_and_keeps_what_runs() {
    let ctx = TestContext::new();
    let out = ctx.path("slim");
    let run = ctx.slim(&[&fixture_ref(), "-o", &oci_ref(&out, "s")]);
    run.assert_success();
    let tree = tree_of(&ctx.umoci_unpack(&out, "s"));
    let has = |p: &str| tree.keys().any(|k| k.trim_start_matches('/') == p);
    assert!(!has("usr/share/man/man1/busybox.1.gz"));
    assert!(has("usr/share/man/man1"), "man directories stay");
    assert!(has("usr/share/doc/busybox-static/copyright"));
    assert!(!has("usr/share/doc/busybox-static/changelog.Debian.gz"));
    assert!(!has("usr/share/locale/de/LC_MESSAGES/x.mo"));
    assert!(has("app/run.sh") && has("bin/busybox") && has("etc/os-release"));
    // Source size vs output size: smaller.
    let src_size: u64 = fixture_image().manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    let m = skopeo_inspect_raw(&oci_ref(&out, "s"));
    let out_size: u64 = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(out_size < src_size, "{out_size} < {src_size}");
}

/// `--verify`'s static check of the entrypoint names a `DT_NEEDED` library
/// the original resolves and the slim image lacks (read from the program's
/// dynamic segment, not from the whole file).
#[test]
fn verify_names_a_shared_library_the_entrypoint_needs_and_the_slim_image_lacks() {
    let ctx = TestContext::new();
    let mut layer = Layer::new()
        .dir("usr")
        .dir("usr/bin")
        .dir("usr/lib")
        .dir("usr/lib/x86_64-linux-gnu")
        .symlink("lib64", "usr/lib/x86_64-linux-gnu")
        .file("usr/bin/ls", 0o755, &host("/bin/ls"));
    for lib in ldd("/bin/ls") {
        let name = Path::new(&lib).file_name().unwrap().to_string_lossy();
        layer = layer.file(
            &format!("usr/lib/x86_64-linux-gnu/{name}"),
            0o755,
            &host(&lib),
        );
    }
    let src = ctx.path("src");
    let config = json!({"config": {"Entrypoint": ["/usr/bin/ls", "/"]}});
    write_image(&src, "app", &[LayerBlob::gzip_tar(&layer.finish())], config);
    let out = ctx.path("out");
    let args = [
        &oci_ref(&src, "app"),
        "-o",
        &oci_ref(&out, "s"),
        "--verify",
        "--profile",
        "none",
    ];
    ctx.slim(&args).assert_success();
    let mut broken = args.to_vec();
    broken.extend([
        "--remove",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "--no-safety-keeps",
    ]);
    let run = ctx.slim(&broken);
    run.assert_code(4);
    run.assert_stderr_contains(
        "/usr/bin/ls needs /usr/lib/x86_64-linux-gnu/libc.so.6, which the slim image lacks",
    );
}
