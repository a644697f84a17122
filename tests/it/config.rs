//! The project config file: a `slim.toml` in a directory sets the defaults
//! of `slim` run anywhere below it, a flag overrides it, a mistake in it
//! names its line, and the report says which file was used.

use std::path::Path;

use serde_json::Value;

use crate::harness::fixture::image_in_layout;
use crate::harness::*;

/// `slim ARGS` from `dir`, reading config files as a user's shell would.
fn slim_in(ctx: &TestContext, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = ctx.command();
    cmd.current_dir(dir)
        .env_remove("SLIM_NO_CONFIG")
        .env("RUST_BACKTRACE", "0")
        .args(args);
    let out = cmd.output().expect("running slim");
    Output::from_std(format!("slim {}", args.join(" ")), out)
}

/// The layers' media types of the image tagged `tag` in `layout`.
fn layer_types(layout: &Path, tag: &str) -> Vec<String> {
    image_in_layout(layout, tag).manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap_or_default().to_string())
        .collect()
}

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn a_slim_toml_above_the_directory_sets_the_defaults_and_flags_override_it() {
    let ctx = TestContext::new();
    let project = ctx.path("project");
    let sub = project.join("services/api");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        project.join("slim.toml"),
        "# the project's way to slim\nsquash = \"none\"\nprofile = \"none\"\ncompression = \"zstd\"\nreport = \"slim-report.json\"\n",
    )
    .unwrap();
    let layers = fixture_image().layer_digests.len();
    assert!(layers > 1, "the fixture has several layers");
    let out_layout = ctx.path("out");
    let dst = oci_ref(&out_layout, "a");

    // Run from a subdirectory: the file two levels up applies.
    slim_in(&ctx, &sub, &[&fixture_ref(), "-o", &dst]).assert_success();
    assert_eq!(
        layer_types(&out_layout, "a"),
        vec![ZSTD.to_string(); layers]
    );
    // `report` is relative to the file; the report names the file.
    let report: Value =
        serde_json::from_slice(&std::fs::read(project.join("slim-report.json")).unwrap()).unwrap();
    assert_eq!(
        report["config"].as_str(),
        Some(project.join("slim.toml").to_str().unwrap())
    );
    assert_eq!(report["output"]["layers"], layers);

    // Flags win over the file.
    let dst = oci_ref(&out_layout, "b");
    let report_b = ctx.path("b.json");
    slim_in(
        &ctx,
        &sub,
        &[
            &fixture_ref(),
            "-o",
            &dst,
            "--squash",
            "all",
            "--compression",
            "gzip",
            "--report",
            report_b.to_str().unwrap(),
        ],
    )
    .assert_success();
    assert_eq!(layer_types(&out_layout, "b"), vec![GZIP.to_string()]);
    assert!(report_b.is_file());

    // --no-config: the built-in defaults (one squashed layer, the source's gzip).
    let dst = oci_ref(&out_layout, "c");
    slim_in(&ctx, &sub, &[&fixture_ref(), "-o", &dst, "--no-config"]).assert_success();
    assert_eq!(layer_types(&out_layout, "c"), vec![GZIP.to_string()]);

    // Outside the project, nothing applies; --config names a file anywhere.
    let other = ctx.path("other.toml");
    std::fs::write(&other, "compression = \"zstd\"\nsquash = \"all\"\n").unwrap();
    let dst = oci_ref(&out_layout, "d");
    let out = slim_in(
        &ctx,
        &sub,
        &[
            &fixture_ref(),
            "-o",
            &dst,
            "--config",
            other.to_str().unwrap(),
        ],
    );
    out.assert_success();
    assert_eq!(layer_types(&out_layout, "d"), vec![ZSTD.to_string()]);
}

#[test]
fn the_command_s_own_keys_are_named_as_its_flags() {
    let ctx = TestContext::new();
    std::fs::write(
        ctx.path("slim.toml"),
        "profile = \"none\"\nfail-if-savings-below = 99\n",
    )
    .unwrap();
    let dst = oci_ref(&ctx.path("out"), "a");
    let out = slim_in(&ctx, ctx.root(), &[&fixture_ref(), "-o", &dst]);
    out.assert_code(3);
    out.assert_stderr_contains("less than the 99% --fail-if-savings-below asks for");
    let out = slim_in(
        &ctx,
        ctx.root(),
        &[&fixture_ref(), "-o", &dst, "--fail-if-savings-below", "0"],
    );
    out.assert_success();
}

#[test]
fn a_mistake_in_slim_toml_names_the_file_the_line_and_the_key() {
    let ctx = TestContext::new();
    let sub = ctx.path("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    let file = ctx.path(".slim.toml");
    let dst = oci_ref(&ctx.path("out"), "a");
    for (text, line, says) in [
        (
            "profile = \"none\"\n\n# typo below\nsquosh = \"none\"\n",
            4,
            "unknown key `squosh`, expected one of `squash`",
        ),
        (
            "compression = \"lz4\"\n",
            1,
            "compression \"lz4\": use gzip, zstd or none",
        ),
        (
            "profile = \"none\"\nprobe-timeout = \"0s\"\n",
            2,
            "probe-timeout \"0s\": a probe needs a timeout above 0",
        ),
        ("\nplatform = \"linux/amd64\"\n", 2, "write `platforms = "),
        ("jobs = [1, 2]\n", 1, "jobs: takes one value, not a list"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = slim_in(&ctx, &sub, &[&fixture_ref(), "-o", &dst]);
        let error = assert_clean_failure(&out, 2);
        let expected = format!("error: {}, line {line}: ", file.display());
        assert!(error.starts_with(&expected), "{text:?}: {error}");
        assert!(error.contains(says), "{text:?}: {error}");
    }
    // Nothing was written.
    assert!(!ctx.path("out").exists());
}
