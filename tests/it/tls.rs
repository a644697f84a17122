//! TLS against the real registry: one shared HTTPS registry on this machine's
//! non-loopback address ([`Registry::shared_tls`]), its certificate signed by
//! a CA made for the run. slim must refuse it without that CA (naming the
//! registry and the flags that fix it), trust it with `--ca-cert` or
//! `SSL_CERT_FILE`, and skip verification only for the host named by
//! `--insecure-registry`. skopeo, verifying with `--cert-dir`, judges what
//! slim pushed; what slim reads back must be the same image.

use std::sync::OnceLock;

use crate::harness::*;

/// `slim ARGS` with the environment pinned: no `SSL_CERT_FILE`/`SSL_CERT_DIR`
/// from the developer (they would add CAs), no backtrace, default logging.
fn slim_tls(ctx: &TestContext, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = ctx.command();
    for var in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "RUST_LOG",
        "RUST_LIB_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_BACKTRACE", "0")
        .args(args)
        .envs(env.iter().copied());
    let out = cmd.output().expect("running slim");
    Output::from_std(format!("slim {}", args.join(" ")), out)
}

/// The fixture, pushed once by skopeo (trusting the CA) for tests that pull.
fn pushed_by_skopeo() -> &'static str {
    static REF: OnceLock<String> = OnceLock::new();
    REF.get_or_init(|| {
        let reg = Registry::shared_tls();
        push_fixture(reg, "tls/source:v1");
        reg.reference("tls/source:v1")
    })
}

/// Pushes the fixture to a fresh repository with slim (faithful copy, so
/// the manifest digest is the fixture's), has skopeo check it over verified
/// TLS, reads it back with slim and checks the tree with umoci.
fn round_trip(ctx: &TestContext, flags: &[&str], env: &[(&str, &str)]) {
    let reg = Registry::shared_tls();
    let fixture = fixture_image();
    let target = reg.reference(&format!("{}:v1", unique_name("tls/pushed")));

    let src = fixture_ref();
    let mut args = vec![src.as_str(), "-o", &target];
    args.extend(FAITHFUL);
    args.extend(flags);
    slim_tls(ctx, &args, env).assert_success();
    assert_eq!(
        reg.skopeo().manifest_digest(&format!("docker://{target}")),
        fixture.manifest_digest,
        "skopeo (verifying TLS with the CA) reads another manifest"
    );

    let back = ctx.path(&unique_name("back"));
    let dst = oci_ref(&back, "v1");
    let mut args = vec![target.as_str(), "-o", &dst];
    args.extend(FAITHFUL);
    args.extend(flags);
    slim_tls(ctx, &args, env).assert_success();
    assert_eq!(manifest_digest_of(&dst), fixture.manifest_digest);
    assert_layout_is_fixture(ctx, &back, "v1");
}

/// A refusal for an untrusted certificate: exit 1, one `error:` line that
/// says it is the certificate, names the registry and both ways out; no
/// retries (a certificate does not get better by asking again).
#[track_caller]
fn assert_refused_certificate(out: &Output, host: &str) {
    assert_clean_failure(out, 1);
    let stderr = out.stderr_str();
    for needle in [
        &format!("the TLS certificate of {host} is not trusted"),
        "UnknownIssuer",
        "--ca-cert",
        "SSL_CERT_FILE",
        &format!("--insecure-registry {host}"),
    ] {
        assert!(stderr.contains(needle), "expected {needle:?}:\n{out}");
    }
    assert!(!stderr.contains("retrying"), "retried:\n{out}");
    assert!(!stderr.contains("cannot talk to"), "{out}");
}

#[test]
fn without_the_ca_pull_and_push_fail_naming_the_registry_and_the_fix() {
    let reg = Registry::shared_tls();
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let mut args = vec![pushed_by_skopeo(), "-o"];
    let dst = oci_ref(&layout, "v1");
    args.push(&dst);
    args.extend(FAITHFUL);
    let out = slim_tls(&ctx, &args, &[]);
    assert_refused_certificate(&out, reg.addr());
    assert!(!layout.exists(), "{} was created", layout.display());

    let repo = unique_name("tls/refused");
    let target = reg.reference(&format!("{repo}:v1"));
    let src = fixture_ref();
    let mut args = vec![src.as_str(), "-o", &target];
    args.extend(FAITHFUL);
    let out = slim_tls(&ctx, &args, &[]);
    assert_refused_certificate(&out, reg.addr());
    let judged = reg.skopeo().run(&[
        "inspect",
        "--raw",
        &format!("--cert-dir={}", reg.cert_dir().unwrap().display()),
        &format!("docker://{target}"),
    ]);
    judged.assert_failure();
    assert!(
        judged.stderr_str().contains("manifest unknown"),
        "the tag was written:\n{judged}"
    );
}

#[test]
fn ca_cert_flag_trusts_the_private_ca() {
    let reg = Registry::shared_tls();
    let ctx = TestContext::new();
    let ca = reg.ca_cert().unwrap();
    round_trip(&ctx, &["--ca-cert", ca.to_str().unwrap()], &[]);
}

#[test]
fn ssl_cert_file_trusts_the_private_ca() {
    let reg = Registry::shared_tls();
    let ctx = TestContext::new();
    let ca = reg.ca_cert().unwrap();
    round_trip(&ctx, &[], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
}

#[test]
fn insecure_registry_skips_verification_for_that_host() {
    let reg = Registry::shared_tls();
    let ctx = TestContext::new();
    round_trip(&ctx, &["--insecure-registry", reg.addr()], &[]);
}

/// `--insecure-registry` is per host: naming another host (another port of
/// the same IP, the bare IP, a DNS name) leaves this one verified.
#[test]
fn insecure_registry_for_another_host_keeps_verification() {
    let reg = Registry::shared_tls();
    let ctx = TestContext::new();
    let (ip, port) = reg.addr().rsplit_once(':').unwrap();
    let other_port = format!("{ip}:{}", if port == "1" { 2 } else { 1 });
    let layout = ctx.path("out");
    let dst = oci_ref(&layout, "v1");
    for other in [other_port.as_str(), ip, "registry.example.com"] {
        let mut args = vec![pushed_by_skopeo(), "-o", &dst];
        args.extend(FAITHFUL);
        args.extend(["--insecure-registry", other]);
        let out = slim_tls(&ctx, &args, &[]);
        assert_refused_certificate(&out, reg.addr());
        assert!(!layout.exists(), "{} was created", layout.display());
    }
}

/// A registry that is not on this machine's loopback gets new layers
/// streamed while they are compressed (the upload follows the growing
/// blob file); what lands must be exactly the image, and a rerun uploads
/// nothing.
#[test]
fn slimmed_layers_stream_to_a_remote_registry_intact() {
    let reg = Registry::shared_tls();
    let ctx = TestContext::new();
    let ca = reg.ca_cert().unwrap();
    let ca = ca.to_str().unwrap();
    let target = reg.reference(&format!("{}:slim", unique_name("tls/stream")));
    for compression in ["gzip", "zstd"] {
        let mark = reg.log_mark();
        let out = slim_tls(
            &ctx,
            &[
                &fixture_ref(),
                "-o",
                &target,
                "--ca-cert",
                ca,
                "--profile",
                "none",
                "--no-hardlink-dedup",
                "--compression",
                compression,
                "-v",
            ],
            &[],
        );
        out.assert_success();
        assert!(
            reg.count_requests_since(mark, "PATCH", "/blobs/uploads/") >= 1,
            "the new layer went up as a streamed PATCH"
        );
        let skopeo = reg.skopeo();
        let m = skopeo.inspect_raw(&format!("docker://{target}"));
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        // Read back through skopeo (converting zstd to gzip for umoci).
        let layout = ctx.path(&unique_name("streamed"));
        skopeo.copy(
            &format!("docker://{target}"),
            &format!("oci:{}:img", layout.display()),
            &["--dest-compress", "--dest-compress-format", "gzip"],
        );
        assert_same_tree(fixture_tree(), &tree_of(&ctx.umoci_unpack(&layout, "img")));
    }
    // The same again: the layer is there, nothing is uploaded.
    let again = slim_tls(
        &ctx,
        &[
            &fixture_ref(),
            "-o",
            &target,
            "--ca-cert",
            ca,
            "--profile",
            "none",
            "--no-hardlink-dedup",
            "--compression",
            "zstd",
        ],
        &[],
    );
    again.assert_success();
    assert!(again.stderr_str().contains("0 blobs written"), "{again}");
}
