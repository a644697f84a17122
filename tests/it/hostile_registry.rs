//! Registries that misbehave on purpose, and what slim does about them.
//!
//! - Credentials: a registry (or something it points at) sends slim to
//!   another origin — an upload `Location`, a 307 on a blob or manifest, a
//!   `Link` to the next page, a token realm on plain HTTP, a redirect from
//!   the realm. Only the registry's own origin and its realm ever see an
//!   `Authorization` header.
//! - Names: a catalog or tag list naming `../../etc`, `%2e%2e/f`, `a/b?x=y`,
//!   `""`… Each is reported, escaped, and never put into a request path.
//! - Time: `Retry-After: 100000`, manifests and blobs at one byte per
//!   second. Each fails within a minute with default settings, naming what
//!   and where.
//! - Pagination: a `next` link that repeats, or points at another origin,
//!   fails that listing; the rest of a batch goes on.
//! - Faults between slim and a real registry ([`Proxy`]): resets in the
//!   middle of a blob, 5xx and 429 bursts, stalls, a registry restarted in
//!   the middle of a push. Each ends in a complete image (judged by skopeo
//!   and umoci) or a clean failure with nothing tagged; a rerun without
//!   faults completes.
//!
//! The other side is always a real Distribution registry, behind the
//! harness's proxy; only canned listings and the "elsewhere" origins are
//! made up, because hostility is the point.

use std::fs;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::copy::{
    assert_image_is_fixture, assert_layout_is_fixture, biggest_layer, oci_ref, slim_copy,
};
use crate::errors::assert_clean_failure;
use crate::harness::http::Response;
use crate::harness::*;

/// `Basic …` for the harness user.
fn basic_auth() -> String {
    format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")))
}

/// Runs `slim ARGS`, killing it after `limit`; returns what it printed and
/// how long it ran. A killed slim has `code: None`.
fn slim_within(ctx: &TestContext, args: &[&str], limit: Duration) -> (Output, Duration) {
    let mut cmd = ctx.command();
    cmd.args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().expect("running slim");
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        let deadline = started + limit;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return;
            }
        }
        // SAFETY: our own child, still unreaped (wait_with_output below).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("waiting for slim");
    let took = started.elapsed();
    let _ = killer.join();
    (
        Output::from_std(format!("slim {}", args.join(" ")), out),
        took,
    )
}

/// A faithful copy of `src` to `dst` that must end within `limit`.
fn copy_within(ctx: &TestContext, src: &str, dst: &str, limit: Duration) -> (Output, Duration) {
    let mut args = vec![src, "-o", dst];
    args.extend(crate::copy::FAITHFUL);
    slim_within(ctx, &args, limit)
}

/// `[defaults] profile = "none"` and `entries` as `jobs.toml`; runs
/// `slim batch FILE --report -` (killed after `limit`) and parses the report.
fn batch_within(ctx: &TestContext, entries: &str, limit: Duration) -> (Output, Value) {
    let path = ctx.path("jobs.toml");
    fs::write(
        &path,
        format!("[defaults]\nprofile = \"none\"\n\n{entries}"),
    )
    .unwrap();
    let file = path.display().to_string();
    let (out, took) = slim_within(ctx, &["batch", &file, "--report", "-"], limit);
    assert!(
        out.code.is_some(),
        "slim batch ran for {took:?} and was killed:\n{out}"
    );
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{out}"));
    (out, report)
}

/// `source -> status` of every image in a batch report.
fn statuses(report: &Value) -> Vec<(String, String)> {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["source"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every `listing_errors[].error` of a batch report.
fn listing_errors(report: &Value) -> Vec<String> {
    report["listing_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e.as_str()
                .map_or_else(|| e["error"].as_str().unwrap().to_string(), str::to_string)
        })
        .collect()
}

/// Pushes the fixture to `reg` as `repo_tag` with skopeo.
fn seed(reg: &Registry, repo_tag: &str) {
    reg.skopeo()
        .copy(&fixture_ref(), &reg.docker_ref(repo_tag), &[]);
}

/// Panics naming every request in `seen` that carried credentials.
#[track_caller]
fn assert_no_credentials(origin: &str, seen: &[http::Request]) {
    let leaked: Vec<String> = seen
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .map(|r| {
            format!(
                "{} {} ({})",
                r.method,
                r.target,
                r.header("authorization").unwrap_or("")
            )
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "credentials reached {origin}, which is not the registry:\n{}",
        leaked.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 1. Credentials stay with their origin
// ---------------------------------------------------------------------------

/// The registry answers the upload POST (and a mount) with a `Location` on
/// another port. slim sends the blob there, but not the registry's
/// credentials: not with the streamed PATCH, the final PUT, or the DELETE
/// that cancels a mount's session.
#[test]
fn upload_locations_on_another_origin_get_no_credentials() {
    let reg = Registry::start_basic();
    seed(&reg, "src:v1");
    // Another origin that can reach the registry by itself, as a pre-signed
    // upload URL would.
    let elsewhere = Proxy::start(reg.addr());
    elsewhere.set_upstream_auth(Some(basic_auth()));
    let front = Proxy::start(reg.addr());
    front.point_locations_at(Some(&elsewhere.addr()));
    let cancel = format!("{}/v2/dst/blobs/uploads/cancel-me", elsewhere.url());
    front.on(
        "POST",
        "mount=",
        None,
        Action::respond(move |_| Response::new(202).header("Location", cancel.clone())),
    );
    let ctx = TestContext::new();
    ctx.write_docker_config(&front.addr(), USER, PASSWORD);

    let out = slim_copy(
        &ctx,
        &front.reference("src:v1"),
        &front.reference("dst:v1"),
        &[],
    );
    out.assert_success();
    assert!(
        !front.requests_with_credentials().is_empty(),
        "slim never authenticated to the registry itself"
    );
    let seen = elsewhere.requests();
    for (method, what) in [("DELETE", "cancel-me"), ("PUT", "digest=")] {
        assert!(
            seen.iter()
                .any(|r| r.method == method && r.target.contains(what)),
            "no {method} …{what}… reached the other origin: {:?}",
            seen.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>()
        );
    }
    assert_no_credentials(&elsewhere.addr(), &seen);
    assert_image_is_fixture(&ctx, &reg.skopeo(), &reg.docker_ref("dst:v1"));
}

/// Blob and manifest GETs answered with 307 to another origin are followed
/// there without credentials (slim follows redirects itself).
#[test]
fn redirected_reads_reach_another_origin_without_credentials() {
    let reg = Registry::start_basic();
    seed(&reg, "src:v1");
    let elsewhere = Proxy::start(reg.addr());
    elsewhere.set_upstream_auth(Some(basic_auth()));
    let front = Proxy::start(reg.addr());
    let blobs = front.on(
        "GET",
        "/blobs/",
        None,
        Action::redirect_to(&elsewhere.url()),
    );
    let manifests = front.on(
        "GET",
        "/manifests/",
        None,
        Action::redirect_to(&elsewhere.url()),
    );
    let ctx = TestContext::new();
    ctx.write_docker_config(&front.addr(), USER, PASSWORD);
    let layout = ctx.path("out");

    let out = slim_copy(
        &ctx,
        &front.reference("src:v1"),
        &oci_ref(&layout, "v1"),
        &[],
    );
    out.assert_success();
    assert!(
        blobs.get() > 0 && manifests.get() > 0,
        "nothing was redirected"
    );
    assert_no_credentials(&elsewhere.addr(), &elsewhere.requests());
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

/// A redirect target that answers 401 with a Bearer challenge of its own
/// does not become the registry's token realm: slim's credentials for the
/// registry never reach it.
#[test]
fn a_redirect_target_cannot_choose_where_credentials_go() {
    let reg = Registry::start_basic();
    seed(&reg, "src:v1");
    let evil = Proxy::start_detached();
    let realm = format!("{}/token", evil.url());
    evil.on(
        "*",
        "/token",
        None,
        Action::respond(|_| Response::new(200).json(&json!({"token": "stolen"}))),
    );
    evil.on(
        "*",
        "/v2/",
        None,
        Action::respond(move |_| {
            Response::new(401).header("WWW-Authenticate", format!("Bearer realm=\"{realm}\""))
        }),
    );
    let front = Proxy::start(reg.addr());
    front.on("GET", "/blobs/", None, Action::redirect_to(&evil.url()));
    let ctx = TestContext::new();
    ctx.write_docker_config(&front.addr(), USER, PASSWORD);
    let layout = ctx.path("out");

    let (out, _) = copy_within(
        &ctx,
        &front.reference("src:v1"),
        &oci_ref(&layout, "v1"),
        Duration::from_secs(120),
    );
    assert_clean_failure(&out, 1);
    assert_no_credentials(&evil.addr(), &evil.requests());
    assert!(!layout.join("index.json").exists());
}

/// An HTTPS registry whose token realm is plain HTTP: the password is not
/// sent over it, and the error says why.
#[test]
fn an_https_registry_never_sends_credentials_to_a_plain_http_realm() {
    let reg = Registry::start(RegistryConfig::token().tls(true));
    let issuer = reg.token_issuer().expect("token registry");
    assert!(issuer.realm().starts_with("http://"));
    let ctx = TestContext::new();
    ctx.write_docker_config(reg.addr(), USER, PASSWORD);
    let ca = reg.ca_cert().unwrap().display().to_string();

    let (out, _) = slim_within(
        &ctx,
        &[
            &fixture_ref(),
            "-o",
            &reg.reference("x:v1"),
            "--squash",
            "none",
            "--profile",
            "none",
            "--ca-cert",
            &ca,
        ],
        Duration::from_secs(120),
    );
    let sent: Vec<_> = issuer
        .requests()
        .into_iter()
        .filter(|r| r.account.is_some())
        .collect();
    assert!(
        sent.is_empty(),
        "credentials went to {}: {sent:?}\n{out}",
        issuer.realm()
    );
    let line = assert_clean_failure(&out, 1);
    assert!(line.contains(&reg.reference("x:v1")), "{out}");
    assert!(out.stderr_str().contains(&issuer.realm()), "{out}");
    assert!(out.stderr_str().contains("plain HTTP"), "{out}");
}

/// The token realm redirects to another origin: the redirected request
/// carries no credentials (that origin authenticates slim by other means
/// here, so the push still works).
#[test]
fn a_redirect_from_the_token_realm_carries_no_credentials() {
    let realm = Proxy::start_detached();
    let elsewhere = Proxy::start_detached();
    realm.on("*", "/token", None, Action::redirect_to(&elsewhere.url()));
    let reg = Registry::start(RegistryConfig::token().env(
        "REGISTRY_AUTH_TOKEN_REALM",
        &format!("{}/token", realm.url()),
    ));
    elsewhere.set_upstream(Some(&reg.token_issuer().unwrap().addr()));
    elsewhere.set_upstream_auth(Some(basic_auth()));
    let ctx = TestContext::new();
    ctx.write_docker_config(reg.addr(), USER, PASSWORD);

    let out = slim_copy(&ctx, &fixture_ref(), &reg.reference("x:v1"), &[]);
    out.assert_success();
    assert!(
        !realm.requests_with_credentials().is_empty(),
        "the realm itself gets them"
    );
    assert!(
        !elsewhere.requests().is_empty(),
        "the redirect was not followed"
    );
    assert_no_credentials(&elsewhere.addr(), &elsewhere.requests());
}

// ---------------------------------------------------------------------------
// 2. Names from listings
// ---------------------------------------------------------------------------

fn bad_repositories() -> Vec<String> {
    let mut v: Vec<String> = [
        "../../etc",
        "%2e%2e/f",
        "a/b?x=y",
        "",
        "UPPER",
        "a//b",
        "-lead",
        "a/../b",
        "a#frag",
        "a b",
        "a/",
        "\u{1b}[31mred",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a".repeat(256));
    v
}

fn bad_tags() -> Vec<String> {
    let mut v: Vec<String> = [
        "../../../v2/x",
        "%2e%2e",
        "v1?x=y",
        "",
        "-lead",
        ".lead",
        "a/b",
        "v1#x",
        "\u{1b}[2J",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("t".repeat(129));
    v
}

/// A catalog and a tag list full of names outside the Distribution grammar:
/// each is reported (escaped) and skipped; no request path is made of one;
/// the one good image is slimmed.
#[test]
fn names_from_a_hostile_catalog_are_checked_before_use() {
    let reg = Registry::start_plain();
    seed(&reg, "good:v1");
    let front = Proxy::start(reg.addr());
    let mut repos = bad_repositories();
    repos.push("good".into());
    let mut tags = bad_tags();
    tags.push("v1".into());
    front.on(
        "GET",
        "/v2/_catalog",
        None,
        Action::respond(move |_| Response::new(200).json(&json!({"repositories": repos}))),
    );
    front.on(
        "GET",
        "/v2/good/tags/list",
        None,
        Action::respond(move |_| Response::new(200).json(&json!({"name": "good", "tags": tags}))),
    );
    let ctx = TestContext::new();
    let entry = format!(
        "[[repositories]]\nregistry = \"{}\"\nrepository = \".*\"\ndestination = \"{{registry}}/out/{{repository}}:{{tag}}\"\n",
        front.addr()
    );

    let (out, report) = batch_within(&ctx, &entry, Duration::from_secs(120));
    assert_eq!(
        statuses(&report),
        vec![(front.reference("good:v1"), "slimmed".to_string())],
        "{out}"
    );
    let stray: Vec<String> = front
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .filter(|t| {
            let path = t.split('?').next().unwrap();
            !(path == "/v2/"
                || path == "/v2/_catalog"
                || path.starts_with("/v2/good/")
                || path.starts_with("/v2/out/good/"))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "requests made of bad names: {stray:#?}\n{out}"
    );
    let errors = listing_errors(&report).join("\n");
    for name in bad_repositories().iter().chain(bad_tags().iter()) {
        let shown = format!("{name:?}");
        let shown = if shown.len() > 100 {
            shown[..60].to_string()
        } else {
            shown
        };
        assert!(
            errors.contains(&shown),
            "{shown} not reported in:\n{errors}"
        );
    }
    for stream in [out.stdout_str(), out.stderr_str()] {
        assert!(
            !stream.contains('\u{1b}'),
            "a raw escape sequence was printed:\n{out}"
        );
    }
    out.assert_code(1);
}

// ---------------------------------------------------------------------------
// 3. Time is bounded (default settings)
// ---------------------------------------------------------------------------

/// The registry in front of which the timing tests put their fault.
fn seeded_front(repo_tag: &str) -> (Registry, Proxy) {
    let reg = Registry::start_plain();
    seed(&reg, repo_tag);
    let front = Proxy::start(reg.addr());
    (reg, front)
}

#[test]
fn retry_after_beyond_the_cap_fails_at_once_saying_what_was_asked() {
    let (_reg, front) = seeded_front("demo:v1");
    front.on(
        "GET",
        "/manifests/",
        None,
        Action::fail(429, Some("100000")),
    );
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let (out, took) = copy_within(
        &ctx,
        &front.reference("demo:v1"),
        &oci_ref(&layout, "v1"),
        Duration::from_secs(90),
    );
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{out}");
    let line = assert_clean_failure(&out, 1);
    assert!(line.contains(&front.reference("demo:v1")), "{out}");
    for needle in ["100000", &front.addr(), "Retry-After"] {
        assert!(out.stderr_str().contains(needle), "no {needle:?}:\n{out}");
    }
}

#[test]
fn a_short_retry_after_is_honoured() {
    let (_reg, front) = seeded_front("demo:v1");
    let hits = front.on("GET", "/manifests/", Some(2), Action::fail(503, Some("1")));
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let started = Instant::now();
    let out = slim_copy(
        &ctx,
        &front.reference("demo:v1"),
        &oci_ref(&layout, "v1"),
        &[],
    );
    out.assert_success();
    assert_eq!(hits.get(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was not honoured"
    );
    assert_layout_is_fixture(&ctx, &layout, "v1");
}

#[test]
fn a_manifest_at_one_byte_per_second_fails_within_a_minute() {
    let (_reg, front) = seeded_front("demo:v1");
    front.on(
        "GET",
        "/manifests/",
        None,
        Action::Drip { bytes_per_sec: 1 },
    );
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let (out, took) = copy_within(
        &ctx,
        &front.reference("demo:v1"),
        &oci_ref(&layout, "v1"),
        Duration::from_secs(90),
    );
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{out}");
    let line = assert_clean_failure(&out, 1);
    assert!(line.contains(&front.reference("demo:v1")), "{out}");
    assert!(
        out.stderr_str()
            .contains(&format!("{}/demo:v1", front.addr())),
        "{out}"
    );
}

#[test]
fn a_blob_at_one_byte_per_second_fails_within_a_minute_naming_it() {
    let (_reg, front) = seeded_front("demo:v1");
    let layer = biggest_layer();
    front.on(
        "GET",
        &format!("/blobs/{layer}"),
        None,
        Action::Drip { bytes_per_sec: 1 },
    );
    let ctx = TestContext::new();
    let layout = ctx.path("out");

    let (out, took) = copy_within(
        &ctx,
        &front.reference("demo:v1"),
        &oci_ref(&layout, "v1"),
        Duration::from_secs(90),
    );
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{out}");
    assert_clean_failure(&out, 1);
    for needle in [layer.as_str(), &front.addr()] {
        assert!(out.stderr_str().contains(needle), "no {needle:?}:\n{out}");
    }
}

// ---------------------------------------------------------------------------
// 4. Pagination
// ---------------------------------------------------------------------------

/// `[[images]]` (must still be slimmed) plus a `[[repositories]]` walk of
/// `front`.
fn listing_job(front: &Proxy) -> String {
    format!(
        "[[images]]\nsource = \"{0}\"\ndestination = \"{1}\"\n\n\
         [[repositories]]\nregistry = \"{2}\"\nrepository = \"^(good|other)$\"\n\
         destination = \"{{registry}}/walked/{{repository}}:{{tag}}\"\n",
        front.reference("good:v1"),
        front.reference("good:v1-slim"),
        front.addr()
    )
}

#[test]
fn a_catalog_whose_next_link_repeats_fails_that_listing_and_the_rest_goes_on() {
    let (_reg, front) = seeded_front("good:v1");
    front.on(
        "GET",
        "/v2/_catalog",
        None,
        Action::respond(|_| {
            Response::new(200)
                .header("Link", "</v2/_catalog?last=good&n=1000>; rel=\"next\"")
                .json(&json!({"repositories": ["good"]}))
        }),
    );
    let ctx = TestContext::new();

    let (out, report) = batch_within(&ctx, &listing_job(&front), Duration::from_secs(60));
    out.assert_code(1);
    assert_eq!(
        statuses(&report),
        vec![(front.reference("good:v1"), "slimmed".to_string())],
        "{out}"
    );
    let errors = listing_errors(&report);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&front.addr()) && errors[0].contains("repeat"),
        "{errors:?}"
    );
}

#[test]
fn a_next_link_to_another_origin_fails_that_listing() {
    let (_reg, front) = seeded_front("good:v1");
    let elsewhere = Proxy::start_detached();
    let link = format!(
        "<{}/v2/_catalog?last=good&n=1000>; rel=\"next\"",
        elsewhere.url()
    );
    front.on(
        "GET",
        "/v2/_catalog",
        None,
        Action::respond(move |_| {
            Response::new(200)
                .header("Link", link.clone())
                .json(&json!({"repositories": ["good"]}))
        }),
    );
    let ctx = TestContext::new();
    ctx.write_docker_config(&front.addr(), USER, PASSWORD);

    let (out, report) = batch_within(&ctx, &listing_job(&front), Duration::from_secs(60));
    out.assert_code(1);
    let errors = listing_errors(&report);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&front.addr()) && errors[0].contains(&elsewhere.addr()),
        "{errors:?}"
    );
    assert!(elsewhere.requests().is_empty(), "slim followed the link");
}

/// An absolute `next` link on the registry's own origin, and a relative
/// one without a leading slash, are both followed.
#[test]
fn absolute_and_relative_next_links_on_the_registry_are_followed() {
    let (reg, front) = seeded_front("good:v1");
    seed(&reg, "other:v1");
    let page2 = format!(
        "<{}/v2/_catalog?last=good&n=1000>; rel=\"next\"",
        front.url()
    );
    front.on(
        "GET",
        "last=other",
        None,
        Action::respond(|_| Response::new(200).json(&json!({"repositories": []}))),
    );
    front.on(
        "GET",
        "last=good",
        None,
        Action::respond(|_| {
            Response::new(200)
                .header("Link", "<_catalog?last=other&n=1000>; rel=\"next\"")
                .json(&json!({"repositories": ["other"]}))
        }),
    );
    front.on(
        "GET",
        "/v2/_catalog",
        None,
        Action::respond(move |_| {
            Response::new(200)
                .header("Link", page2.clone())
                .json(&json!({"repositories": ["good"]}))
        }),
    );
    let ctx = TestContext::new();

    let (out, report) = batch_within(&ctx, &listing_job(&front), Duration::from_secs(120));
    out.assert_success();
    let mut got = statuses(&report);
    got.sort();
    assert_eq!(
        got,
        vec![
            (front.reference("good:v1"), "slimmed".to_string()),
            (front.reference("good:v1"), "slimmed".to_string()),
            (front.reference("other:v1"), "slimmed".to_string()),
        ],
        "{out}"
    );
}
