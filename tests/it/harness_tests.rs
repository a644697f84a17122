//! Self-tests of the harness: the registries, the token issuer, the judges,
//! the fixture and the hostile server work with the real tools, independent
//! of slim. Every test name starts with `harness_` so that
//! `cargo test --test it harness` runs exactly these.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

use crate::harness::registry::parse_access_line;
use crate::harness::*;
use crate::harness::{http, tree};

fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[test]
fn harness_plain_registry_answers_and_takes_a_push() {
    let reg = Registry::shared();
    let ping = http::get(reg.addr(), "/v2/").expect("GET /v2/");
    assert_eq!(ping.status, 200);
    assert_eq!(
        ping.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    let repo = unique_name("harness/plain");
    let fx = fixture_image();
    let digest = push_fixture(reg, &format!("{repo}:v1"));
    // An OCI -> OCI copy keeps the manifest bytes, hence the digest.
    assert_eq!(digest, fx.manifest_digest);

    let r = reg.docker_ref(&format!("{repo}:v1"));
    let raw = skopeo_inspect_raw(&r);
    assert_eq!(raw, fx.manifest);
    assert_eq!(manifest_digest_of(&r), fx.manifest_digest);
    let summary = skopeo_inspect(&r);
    assert_eq!(summary["Digest"], Value::from(fx.manifest_digest.clone()));
    assert_eq!(summary["Layers"].as_array().map(Vec::len), Some(3));
    let config = reg.skopeo().inspect_config(&r);
    assert_eq!(config["config"]["Entrypoint"][0], "/app/run.sh");
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(config["architecture"], "amd64");

    // The access log saw the push: one manifest PUT, and the three layers
    // and the config each either uploaded (PUT …/uploads/…?digest=, 201) or
    // mounted from another repository (POST …/uploads/?mount=, 201): skopeo
    // mounts when its blob-info cache (/var/lib/containers/cache) knows
    // another repository on this registry has the blob.
    assert_eq!(
        reg.count_requests("PUT", &format!("/v2/{repo}/manifests/v1")),
        1
    );
    let landed = reg
        .requests()
        .into_iter()
        .filter(|e| e.uri.contains(&format!("/v2/{repo}/blobs/uploads/")) && e.status == 201)
        .count();
    assert_eq!(landed, 4, "{}", reg.log_tail(40));
    assert!(reg.count_requests("put", &format!("/v2/{repo}/blobs/uploads/")) <= 4);
    assert!(reg.count_requests("GET", "/v2/") >= 1);
    let mark = reg.log_mark();
    skopeo_inspect_raw(&r);
    assert_eq!(
        reg.count_requests_since(mark, "GET", &format!("/v2/{repo}/manifests/v1")),
        1
    );
}

#[test]
fn harness_v2s2_push_converts_media_types() {
    let reg = Registry::shared();
    let repo = unique_name("harness/v2s2");
    let digest = push_fixture_v2s2(reg, &format!("{repo}:v1"));
    let r = reg.docker_ref(&format!("{repo}:v1"));
    let raw = skopeo_inspect_raw(&r);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(manifest_digest_of(&r), digest);
    assert_ne!(digest, fixture_image().manifest_digest);
}

#[test]
fn harness_basic_auth_rejects_anonymous_and_accepts_slim() {
    let reg = Registry::shared_basic();
    let ping = http::get(reg.addr(), "/v2/").expect("GET /v2/");
    assert_eq!(ping.status, 401);
    assert!(
        ping.header("www-authenticate")
            .unwrap_or("")
            .starts_with("Basic "),
        "{:?}",
        ping.headers
    );
    let bad = http::request(
        reg.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &basic_header(USER, "wrong"))],
        &[],
    )
    .expect("GET /v2/");
    assert_eq!(bad.status, 401);
    let good = http::request(
        reg.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &basic_header(USER, PASSWORD))],
        &[],
    )
    .expect("GET /v2/");
    assert_eq!(good.status, 200);

    let repo = unique_name("harness/basic");
    let dst = reg.docker_ref(&format!("{repo}:v1"));
    let anon = Skopeo::anonymous().try_copy(&fixture_ref(), &dst, &[]);
    anon.assert_failure();
    let wrong = Skopeo::with_creds(USER, "wrong").try_copy(&fixture_ref(), &dst, &[]);
    wrong.assert_failure();

    let digest = push_fixture(reg, &format!("{repo}:v1"));
    assert_eq!(digest, fixture_image().manifest_digest);
    assert_eq!(reg.skopeo().manifest_digest(&dst), digest);
    Skopeo::anonymous()
        .run(&["inspect", "--raw", "--tls-verify=false", &dst])
        .assert_failure();
    assert!(reg.requests().iter().any(|e| e.status == 401));
}

#[test]
fn harness_token_auth_issues_tokens_the_registry_accepts() {
    let reg = Registry::shared_token();
    let issuer = reg.token_issuer().expect("token registry has an issuer");

    // The registry points clients at the issuer.
    let ping = http::get(reg.addr(), "/v2/").expect("GET /v2/");
    assert_eq!(ping.status, 401);
    let challenge = ping.header("www-authenticate").unwrap_or("").to_string();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("realm=\"{}\"", issuer.realm())),
        "{challenge}"
    );
    assert!(
        challenge.contains("service=\"slim-test-registry\""),
        "{challenge}"
    );

    // The issuer wants slim/s3cret: anonymous and wrong get 401.
    let before = issuer.tokens_issued();
    let target =
        "/token?service=slim-test-registry&scope=repository%3Aharness%2Ftoken-raw%3Apull%2Cpush";
    let anon = http::get(&issuer.addr(), target).expect("GET /token");
    assert_eq!(anon.status, 401);
    let wrong = http::request(
        &issuer.addr(),
        "GET",
        target,
        &[("Authorization", &basic_header(USER, "nope"))],
        &[],
    )
    .expect("GET /token");
    assert_eq!(wrong.status, 401);
    let ok = http::request(
        &issuer.addr(),
        "GET",
        target,
        &[("Authorization", &basic_header(USER, PASSWORD))],
        &[],
    )
    .expect("GET /token");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(issuer.tokens_issued() > before);
    let body: Value = serde_json::from_slice(&ok.body).expect("token JSON");
    let token = body["token"].as_str().expect("token").to_string();
    assert_eq!(body["access_token"], body["token"]);
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("JWT claims"))
            .expect("base64url"),
    )
    .expect("claims JSON");
    assert_eq!(claims["aud"], "slim-test-registry");
    assert_eq!(claims["access"][0]["name"], "harness/token-raw");
    assert_eq!(
        claims["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );

    // The real registry verifies the signature, x5c chain and claims.
    let bearer = format!("Bearer {token}");
    let v2 = http::request(
        reg.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &bearer)],
        &[],
    )
    .expect("GET /v2/");
    assert_eq!(
        v2.status,
        200,
        "registry rejected our token; log:\n{}",
        reg.log_tail(20)
    );
    let tags = http::request(
        reg.addr(),
        "GET",
        "/v2/harness/token-raw/tags/list",
        &[("Authorization", &bearer)],
        &[],
    )
    .expect("GET tags");
    // Authorized, and the repository does not exist yet.
    assert_eq!(tags.status, 404, "{}", tags.text());
    // Change one signature character well before the end (the last one
    // carries padding bits that decoders ignore).
    let mut forged: Vec<char> = token.chars().collect();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged = format!("Bearer {}", forged.into_iter().collect::<String>());
    let bad = http::request(
        reg.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &forged)],
        &[],
    )
    .expect("GET /v2/");
    assert_eq!(bad.status, 401);

    // skopeo goes through the whole dance.
    let before = issuer.tokens_issued();
    let repo = unique_name("harness/token");
    let digest = push_fixture(reg, &format!("{repo}:v1"));
    assert_eq!(digest, fixture_image().manifest_digest);
    let r = reg.docker_ref(&format!("{repo}:v1"));
    assert_eq!(reg.skopeo().manifest_digest(&r), digest);
    assert!(issuer.tokens_issued() > before, "skopeo got no token");
    assert!(
        issuer.requests().iter().any(|t| t.granted
            && t.scopes
                .iter()
                .any(|s| s == &format!("repository:{repo}:pull,push"))),
        "{:?}",
        issuer.requests()
    );
    Skopeo::anonymous()
        .run(&["inspect", "--raw", "--tls-verify=false", &r])
        .assert_failure();
    assert!(
        issuer
            .requests()
            .iter()
            .any(|t| !t.granted && t.account.is_none())
    );
}

#[test]
fn harness_token_issuer_accepts_oauth2_password_grant() {
    let reg = Registry::shared_token();
    let issuer = reg.token_issuer().expect("issuer");
    let form = "grant_type=password&username=slim&password=s3cret&service=slim-test-registry\
                &scope=repository%3Ax%3Apull&client_id=harness";
    let resp = http::request(
        &issuer.addr(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .expect("POST /token");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let bad = http::request(
        &issuer.addr(),
        "POST",
        "/token",
        &[],
        b"grant_type=password&username=slim&password=x",
    )
    .expect("POST /token");
    assert_eq!(bad.status, 401);
}

#[test]
fn harness_fixture_unpacks_to_the_documented_tree() {
    let ctx = TestContext::new();
    let rootfs = ctx.umoci_unpack(&fixture_layout(), FIXTURE_TAG);
    let tree = tree_of(&rootfs);

    let tool = &tree["/usr/local/bin/tool"];
    assert_eq!(tool.kind, Kind::File);
    assert_eq!(tool.mode, 0o4755, "setuid bit kept");
    let a = &tree["/app/data/a"];
    let pair: BTreeSet<String> = ["/app/data/a".to_string(), "/app/data/b".to_string()].into();
    assert_eq!(a.hardlinks, pair);
    assert_eq!(tree["/app/data/b"].hardlinks, pair);
    assert_eq!(a.sha256, tree["/app/data/b"].sha256);
    assert!(!tree.contains_key("/tmp/build.log"), "whiteout applied");
    assert_eq!(tree["/tmp"].mode, 0o1777);
    let old: Vec<&String> = tree
        .keys()
        .filter(|p| p.starts_with("/app/data/old/"))
        .collect();
    assert_eq!(old, ["/app/data/old/new.txt"], "opaque whiteout applied");
    let readme = std::fs::read_to_string(rootfs.join("app/README.md")).unwrap();
    assert!(readme.contains("Version 2"), "{readme}");
    assert_eq!(tree["/bin/sh"].kind, Kind::Symlink);
    assert_eq!(tree["/bin/sh"].target.as_deref(), Some("busybox"));
    assert_eq!(tree["/app/run.sh"].mode, 0o755);
    if is_root() {
        assert_eq!(
            (tree["/app/data/big.txt"].uid, tree["/app/data/big.txt"].gid),
            (1000, 1000)
        );
        assert!(
            tree["/usr/local/bin/netd"]
                .xattrs
                .contains_key("security.capability")
        );
    }
    for p in [
        "/usr/share/doc/busybox-static/copyright",
        "/usr/share/doc/busybox-static/changelog.Debian.gz",
        "/usr/share/man/man1/busybox.1.gz",
        "/usr/share/locale/de/LC_MESSAGES/x.mo",
        "/var/cache/apt/archives/partial/hello_2.10-3_amd64.deb",
        "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
        "/app/tests/test_app.sh",
        "/etc/os-release",
    ] {
        assert!(tree.contains_key(p), "{p} missing");
    }
}

#[test]
fn harness_registry_round_trip_keeps_the_tree() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let expected = tree_of(&ctx.umoci_unpack(&fixture_layout(), FIXTURE_TAG));
    let repo = unique_name("harness/roundtrip");
    push_fixture(reg, &format!("{repo}:oci"));
    push_fixture_v2s2(reg, &format!("{repo}:v2s2"));
    for tag in ["oci", "v2s2"] {
        let actual = ctx.tree_of_image(&reg.skopeo(), &reg.docker_ref(&format!("{repo}:{tag}")));
        assert_same_tree(&expected, &actual);
    }
}

#[test]
fn harness_assert_same_tree_shows_the_differences() {
    let ctx = TestContext::new();
    let expected = tree_of(&ctx.umoci_unpack(&fixture_layout(), FIXTURE_TAG));
    let mut actual = expected.clone();
    actual.remove("/app/run.sh");
    actual.get_mut("/usr/local/bin/tool").unwrap().mode = 0o755;
    actual.get_mut("/app/data/b").unwrap().hardlinks.clear();
    let mut extra = expected["/etc/passwd"].clone();
    extra.sha256 = Some("sha256:00".into());
    actual.insert("/etc/extra".into(), extra);
    let diff = diff_trees(&expected, &actual, Default::default());
    assert_eq!(diff.len(), 4, "{diff:#?}");
    let msg = std::panic::catch_unwind(|| assert_same_tree(&expected, &actual))
        .expect_err("trees differ")
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(msg.contains("- /app/run.sh"), "{msg}");
    assert!(msg.contains("+ /etc/extra"), "{msg}");
    assert!(
        msg.contains("~ /usr/local/bin/tool: mode 4755 != 0755"),
        "{msg}"
    );
    assert!(msg.contains("~ /app/data/b: hardlinks"), "{msg}");
    // mtimes are ignored unless asked for.
    let mut touched = expected.clone();
    touched.get_mut("/etc/passwd").unwrap().mtime += 1;
    assert_same_tree(&expected, &touched);
    assert_eq!(
        diff_trees(&expected, &touched, tree::CompareOptions { mtime: true }).len(),
        1
    );
}

#[test]
fn harness_multiarch_index_pushes_with_both_platforms() {
    let reg = Registry::shared();
    let m = multiarch_layout();
    let repo = unique_name("harness/multi");
    let digest = push_fixture_multiarch(reg, &format!("{repo}:v1"));
    assert_eq!(digest, m.index_digest);
    let r = reg.docker_ref(&format!("{repo}:v1"));
    let index = skopeo_inspect_raw(&r);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["platform"]["architecture"].as_str().unwrap().to_string(),
                d["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        [
            ("amd64".to_string(), m.amd64_digest.clone()),
            ("arm64".to_string(), m.arm64_digest.clone())
        ]
    );
    assert_eq!(manifest_digest_of(&r), m.index_digest);
    let arm = reg
        .skopeo()
        .inspect_config(&reg.docker_ref(&format!("{repo}@{}", m.arm64_digest)));
    assert_eq!(arm["architecture"], "arm64");
}

#[test]
fn harness_private_registry_takes_config_tweaks_and_dies_on_drop() {
    let reg = Registry::start(RegistryConfig::anonymous().read_only(true));
    let out = Skopeo::anonymous().try_copy(&fixture_ref(), &reg.docker_ref("ro:v1"), &[]);
    out.assert_failure();
    assert!(reg.count_requests("POST", "/v2/ro/blobs/uploads/") >= 1);
    assert!(
        reg.requests().iter().any(|e| e.status == 405),
        "{}",
        reg.log_tail(10)
    );
    let addr = reg.addr().to_string();
    let dir = reg.dir().to_path_buf();
    drop(reg);
    assert!(
        http::get(&addr, "/v2/").is_err(),
        "registry still answers after drop"
    );
    assert!(!dir.exists(), "private registry dir removed on drop");
}

#[test]
fn harness_access_log_lines_parse() {
    let line = r#"127.0.0.1 - - [25/Nov/2026:22:13:01 +0000] "HEAD /v2/demo/blobs/sha256:78 HTTP/1.1" 404 157 "" "skopeo/1.9.3""#;
    let e = parse_access_line(line).expect("combined log line");
    assert_eq!(e.method, "HEAD");
    assert_eq!(e.uri, "/v2/demo/blobs/sha256:78");
    assert_eq!(e.status, 404);
    assert_eq!(e.user_agent, "skopeo/1.9.3");
    let logrus = r#"time="2026-11-25T22:13:01Z" level=info msg="response completed" http.request.method=GET http.request.uri=/v2/ http.response.status=200"#;
    assert_eq!(parse_access_line(logrus), None);
}

#[test]
fn harness_rfc3339_formats_utc() {
    assert_eq!(crate::harness::token::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        crate::harness::token::rfc3339(1_704_067_200),
        "2024-01-01T00:00:00Z"
    );
    assert_eq!(
        crate::harness::token::rfc3339(951_827_696),
        "2000-02-29T12:34:56Z"
    );
}

#[test]
fn harness_context_writes_docker_config() {
    let ctx = TestContext::new();
    ctx.write_docker_config("127.0.0.1:5000", USER, PASSWORD);
    ctx.write_docker_config("127.0.0.1:5001", "other", "pw");
    let config: Value = serde_json::from_slice(
        &std::fs::read(ctx.docker_config_dir().join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["auths"]["127.0.0.1:5000"]["auth"],
        STANDARD.encode("slim:s3cret")
    );
    assert_eq!(
        config["auths"]["127.0.0.1:5001"]["auth"],
        STANDARD.encode("other:pw")
    );
    assert!(ctx.path("x").starts_with(ctx.root()));
    let cmd = ctx.command();
    let envs: Vec<_> = cmd.get_envs().collect();
    assert!(envs.iter().any(|(k, v)| *k == "NO_COLOR" && v.is_some()));
    assert!(
        envs.iter()
            .any(|(k, v)| *k == "DOCKER_CONFIG" && *v == Some(ctx.docker_config_dir().as_os_str()))
    );
}

#[test]
fn harness_output_assertions_show_both_streams() {
    let out = Output::from_std(
        "sh -c …".into(),
        std::process::Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .output()
            .unwrap(),
    );
    out.assert_failure()
        .assert_code(3)
        .assert_stderr_contains("err");
    let msg = std::panic::catch_unwind(|| {
        out.assert_success();
    })
    .expect_err("exit 3 is no success")
    .downcast::<String>()
    .map(|s| *s)
    .unwrap_or_default();
    assert!(
        msg.contains("out") && msg.contains("err") && msg.contains("exit code: 3"),
        "{msg}"
    );
}

fn blob_url(digest: &str) -> String {
    format!("/v2/demo/blobs/{digest}")
}

#[test]
fn harness_hostile_serves_the_fixture_when_behaving() {
    let h = Hostile::start();
    let fx = fixture_image();
    let ping = http::get(&h.addr(), "/v2/").unwrap();
    assert_eq!(ping.status, 200);
    let m = http::get(&h.addr(), "/v2/demo/manifests/latest").unwrap();
    assert_eq!(m.status, 200);
    assert_eq!(sha256_digest(&m.body), fx.manifest_digest);
    assert_eq!(
        m.header("docker-content-digest"),
        Some(fx.manifest_digest.as_str())
    );
    assert_eq!(
        m.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    let by_digest = http::get(
        &h.addr(),
        &format!("/v2/other/manifests/{}", fx.manifest_digest),
    )
    .unwrap();
    assert_eq!(by_digest.body, m.body);
    assert_eq!(
        http::get(&h.addr(), "/v2/demo/manifests/nope")
            .unwrap()
            .status,
        404
    );
    for d in fx.layer_digests.iter().chain([&fx.config_digest]) {
        let b = http::get(&h.addr(), &blob_url(d)).unwrap();
        assert_eq!(b.status, 200);
        assert!(b.complete);
        assert_eq!(&sha256_digest(&b.body), d);
        let head = http::request(&h.addr(), "HEAD", &blob_url(d), &[], &[]).unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length(), Some(b.body.len()));
        assert!(head.body.is_empty());
    }
    assert_eq!(
        http::get(&h.addr(), "/v2/demo/blobs/sha256:0000")
            .unwrap()
            .status,
        404
    );
    assert_eq!(h.count("GET", "/v2/demo/blobs/"), 5);
    assert_eq!(h.count("HEAD", "/blobs/"), 4);
    assert_eq!(h.count("get", "/manifests/"), 3);

    // skopeo can pull it, and the tree is the fixture's.
    let ctx = TestContext::new();
    let pulled = tree_of(&ctx.unpack_image(
        &Skopeo::anonymous(),
        &format!("docker://{}", h.reference("demo:latest")),
        &[],
    ));
    let expected = tree_of(&ctx.umoci_unpack(&fixture_layout(), FIXTURE_TAG));
    assert_same_tree(&expected, &pulled);
}

#[test]
fn harness_hostile_faults_are_observable() {
    let h = Hostile::start();
    let fx = fixture_image();
    let layer = fx.layer_digests[0].clone();
    let url = blob_url(&layer);
    let good = http::get(&h.addr(), &url).unwrap();

    h.set_fault(Fault::CorruptBlob(None));
    let bad = http::get(&h.addr(), &url).unwrap();
    assert_eq!(bad.status, 200);
    assert!(bad.complete);
    assert_eq!(bad.body.len(), good.body.len());
    assert_ne!(sha256_digest(&bad.body), layer);
    assert_eq!(bad.header("docker-content-digest"), Some(layer.as_str()));

    h.set_fault(Fault::CorruptBlob(Some(fx.config_digest.clone())));
    assert_eq!(
        sha256_digest(&http::get(&h.addr(), &url).unwrap().body),
        layer,
        "only the config is corrupt"
    );

    h.set_fault(Fault::TruncatedBlob(None));
    let short = http::get(&h.addr(), &url).unwrap();
    assert_eq!(short.status, 200);
    assert!(!short.complete);
    assert_eq!(short.content_length(), Some(good.body.len()));
    assert!(short.body.len() < good.body.len());

    h.set_fault(Fault::FailFirst {
        status: 429,
        count: 2,
        retry_after: Some(1),
    });
    assert_eq!(
        http::get(&h.addr(), "/v2/").unwrap().status,
        200,
        "ping is never failed"
    );
    for _ in 0..2 {
        let r = http::get(&h.addr(), &url).unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(http::get(&h.addr(), &url).unwrap().status, 200);

    h.set_fault(Fault::FailFirst {
        status: 500,
        count: 1,
        retry_after: None,
    });
    let r = http::get(&h.addr(), "/v2/demo/manifests/latest").unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(
        http::get(&h.addr(), "/v2/demo/manifests/latest")
            .unwrap()
            .status,
        200
    );

    h.set_fault(Fault::ManifestNotJson);
    let m = http::get(&h.addr(), "/v2/demo/manifests/latest").unwrap();
    assert_eq!(m.status, 200);
    assert!(serde_json::from_slice::<Value>(&m.body).is_err());

    h.set_fault(Fault::ManifestDigestMismatch);
    let m = http::get(
        &h.addr(),
        &format!("/v2/demo/manifests/{}", fx.manifest_digest),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&m.body).expect("still JSON");
    assert_eq!(v, fx.manifest);
    assert_ne!(sha256_digest(&m.body), fx.manifest_digest);

    // An independent client notices: skopeo refuses the corrupt layer.
    h.set_fault(Fault::CorruptBlob(Some(layer.clone())));
    let ctx = TestContext::new();
    let out = Skopeo::anonymous().try_copy(
        &format!("docker://{}", h.reference("demo:latest")),
        &format!("oci:{}:x", ctx.path("pulled").display()),
        &[],
    );
    out.assert_failure();
    assert!(
        out.stderr_str()
            .to_lowercase()
            .contains("digest did not match"),
        "{out}"
    );

    h.clear_requests();
    h.set_fault(Fault::None);
    http::request(&h.addr(), "GET", &url, &[("Range", "bytes=0-9")], &[]).unwrap();
    let reqs = h.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, url);
    assert!(
        reqs[0]
            .headers
            .iter()
            .any(|(k, v)| k == "range" && v == "bytes=0-9")
    );
}

#[test]
fn harness_registry_that_cannot_start_panics_with_its_log() {
    let msg = std::panic::catch_unwind(|| {
        Registry::start(RegistryConfig::anonymous().extra_yaml("bogus: ["));
    })
    .expect_err("a broken config cannot start")
    .downcast::<String>()
    .map(|s| *s)
    .unwrap_or_default();
    assert!(
        msg.contains("docker-registry exited before answering"),
        "{msg}"
    );
    assert!(
        msg.contains("configuration error"),
        "log tail is shown: {msg}"
    );
}

#[test]
fn harness_registry_allows_deletes() {
    let reg = Registry::shared();
    let repo = unique_name("harness/delete");
    let digest = push_fixture(reg, &format!("{repo}:v1"));
    let target = format!("/v2/{repo}/manifests/{digest}");
    let del = http::request(reg.addr(), "DELETE", &target, &[], &[]).expect("DELETE manifest");
    assert_eq!(del.status, 202, "{}", del.text());
    let gone = http::request(reg.addr(), "HEAD", &target, &[], &[]).expect("HEAD manifest");
    assert_eq!(gone.status, 404);
    assert_eq!(reg.count_requests("DELETE", &target), 1);
}

/// The TLS registry listens on a non-loopback address with a certificate
/// for that IP that only its own CA vouches for: skopeo verifying with the
/// system roots refuses it, with `--cert-dir` it works (so the TLS tests'
/// refusals are about trust, not a broken server).
#[test]
fn harness_tls_registry_is_trusted_through_its_ca_only() {
    let reg = Registry::shared_tls();
    let ip: std::net::Ipv4Addr = reg.addr().rsplit_once(':').unwrap().0.parse().unwrap();
    assert!(!ip.is_loopback(), "{ip}");
    assert!(reg.url().starts_with("https://"), "{}", reg.url());
    let ca = std::fs::read_to_string(reg.ca_cert().unwrap()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    let repo = unique_name("harness/tls");
    let digest = push_fixture(reg, &format!("{repo}:v1"));
    assert_eq!(digest, fixture_image().manifest_digest);
    let target = reg.docker_ref(&format!("{repo}:v1"));

    let verified_by_system = Skopeo::anonymous().run(&["inspect", "--raw", &target]);
    verified_by_system.assert_failure();
    assert!(
        verified_by_system
            .stderr_str()
            .contains("certificate signed by unknown authority"),
        "{verified_by_system}"
    );
    assert_eq!(reg.skopeo().manifest_digest(&target), digest);
}
