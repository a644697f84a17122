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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

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
    args.extend(FAITHFUL);
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

/// A registry that takes a request and never answers it (not even the
/// status line) is given up after the 30 s silence limit.
#[test]
fn a_registry_that_never_answers_fails_within_a_minute() {
    let (_reg, front) = seeded_front("demo:v1");
    let pause = Duration::from_secs(120);
    front.on("GET", "/manifests/", None, Action::Silent { pause });
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
    for needle in [front.addr().as_str(), "stalled", "nothing moved for 30 s"] {
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

// ---------------------------------------------------------------------------
// 5. Faults between slim and a real registry
// ---------------------------------------------------------------------------

/// How a run with faults must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ends {
    /// The whole image, verified by skopeo and umoci.
    Complete,
    /// Exit 1, one `error:` line, nothing tagged at the destination.
    CleanFailure,
}

/// A real registry (holding the fixture as `src:v1`) behind the proxy.
struct Bench {
    proxy: Arc<Proxy>,
    /// Every registry that served behind the proxy, the current one last:
    /// a restart adds one on the same storage (the earlier ones are kept,
    /// killed, because their directory holds that storage).
    regs: Arc<Mutex<Vec<Arc<Registry>>>>,
    ctx: TestContext,
}

impl Bench {
    fn new() -> Bench {
        let reg = Arc::new(Registry::start_plain());
        seed(&reg, "src:v1");
        Bench {
            proxy: Arc::new(Proxy::start(reg.addr())),
            regs: Arc::new(Mutex::new(vec![reg])),
            ctx: TestContext::new(),
        }
    }

    fn registry(&self) -> Arc<Registry> {
        self.regs.lock().unwrap().last().unwrap().clone()
    }

    /// An action that restarts the registry on its storage (the proxy
    /// answers 502 while it is down), then drops the request that hit it.
    fn restart(&self) -> Action {
        let (regs, proxy) = (self.regs.clone(), Arc::downgrade(&self.proxy));
        Action::Hook(Arc::new(move || {
            let old = regs.lock().unwrap().last().unwrap().clone();
            let proxy = proxy.upgrade().expect("the proxy");
            proxy.set_upstream(None);
            old.kill();
            let storage = old.storage_dir().display().to_string();
            let new = Arc::new(Registry::start(
                RegistryConfig::anonymous()
                    .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &storage),
            ));
            proxy.set_upstream(Some(new.addr()));
            regs.lock().unwrap().push(new);
        }))
    }

    /// slim pushes the fixture to `PROXY/dst:v1`.
    fn push(&self) -> Output {
        slim_copy(
            &self.ctx,
            &fixture_ref(),
            &self.proxy.reference("dst:v1"),
            &[],
        )
    }

    /// slim pulls `PROXY/src:v1` into a new layout `layout`.
    fn pull(&self, layout: &str) -> Output {
        slim_copy(
            &self.ctx,
            &self.proxy.reference("src:v1"),
            &oci_ref(&self.ctx.path(layout), "v1"),
            &[],
        )
    }

    #[track_caller]
    fn judge_push(&self, out: &Output, ends: Ends) {
        let reg = self.registry();
        match ends {
            Ends::Complete => {
                out.assert_success();
                assert_image_is_fixture(&self.ctx, &reg.skopeo(), &reg.docker_ref("dst:v1"));
            }
            Ends::CleanFailure => {
                assert_clean_failure(out, 1);
                let tags = registry_tags(&reg, "dst");
                assert!(!tags.iter().any(|t| t == "v1"), "dst:v1 was tagged:\n{out}");
            }
        }
    }

    #[track_caller]
    fn judge_pull(&self, out: &Output, layout: &str, ends: Ends) {
        let layout = self.ctx.path(layout);
        match ends {
            Ends::Complete => {
                out.assert_success();
                assert_layout_is_fixture(&self.ctx, &layout, "v1");
            }
            Ends::CleanFailure => {
                assert_clean_failure(out, 1);
                assert!(
                    !layout.join("index.json").exists(),
                    "the layout was written:\n{out}"
                );
            }
        }
    }

    /// Runs a push with the faults the proxy has, judges it, then a push
    /// without faults, which must complete. Returns the faulty run.
    #[track_caller]
    fn push_then_rerun(&self, ends: Ends) -> Output {
        let out = self.push();
        self.judge_push(&out, ends);
        self.proxy.clear_rules();
        self.judge_push(&self.push(), Ends::Complete);
        out
    }

    /// [`Bench::push_then_rerun`] for a pull.
    #[track_caller]
    fn pull_then_rerun(&self, ends: Ends) -> Output {
        let out = self.pull("out");
        self.judge_pull(&out, "out", ends);
        self.proxy.clear_rules();
        self.judge_pull(&self.pull("rerun"), "rerun", Ends::Complete);
        out
    }
}

#[test]
fn a_push_rides_out_a_503_burst() {
    let b = Bench::new();
    let hits = b
        .proxy
        .on("*", "/v2/dst/", Some(4), Action::fail(503, None));
    b.push_then_rerun(Ends::Complete);
    assert_eq!(hits.get(), 4);
}

#[test]
fn a_push_rides_out_500s_on_its_uploads() {
    let b = Bench::new();
    let hits = b
        .proxy
        .on("PUT", "/blobs/uploads/", Some(2), Action::fail(500, None));
    b.push_then_rerun(Ends::Complete);
    assert_eq!(hits.get(), 2);
}

#[test]
fn a_push_honours_a_short_retry_after_on_its_manifest() {
    let b = Bench::new();
    let hits = b
        .proxy
        .on("PUT", "/manifests/", Some(2), Action::fail(429, Some("1")));
    b.push_then_rerun(Ends::Complete);
    assert_eq!(hits.get(), 2);
}

#[test]
fn a_push_survives_connections_reset_in_the_middle_of_uploads() {
    let b = Bench::new();
    let patch = b.proxy.on(
        "PATCH",
        "/blobs/uploads/",
        Some(1),
        Action::ResetReading(300_000),
    );
    let put = b.proxy.on(
        "PUT",
        "/blobs/uploads/",
        Some(1),
        Action::ResetReading(300_000),
    );
    b.push_then_rerun(Ends::Complete);
    assert_eq!((patch.get(), put.get()), (1, 1));
}

#[test]
fn a_push_survives_the_registry_restarting_in_the_middle() {
    let b = Bench::new();
    let hits = b.proxy.on("PATCH", "/blobs/uploads/", Some(1), b.restart());
    b.push_then_rerun(Ends::Complete);
    assert_eq!(hits.get(), 1);
    assert_eq!(b.regs.lock().unwrap().len(), 2, "no restart");
}

#[test]
fn a_push_whose_manifest_always_fails_leaves_no_tag() {
    let b = Bench::new();
    b.proxy
        .on("PUT", "/manifests/", None, Action::fail(503, None));
    let out = b.push_then_rerun(Ends::CleanFailure);
    let stderr = out.stderr_str();
    assert!(
        stderr.contains("503") && stderr.contains("after 5 attempts"),
        "{out}"
    );
}

/// The registry takes the commit of a streamed upload and never answers:
/// slim gives up on it after the silence limit and uploads the blob again.
#[test]
fn a_push_whose_commit_is_never_answered_uploads_again() {
    let b = Bench::new();
    let hits = b.proxy.on(
        "PUT",
        "digest=",
        Some(1),
        Action::Silent {
            pause: Duration::from_secs(150),
        },
    );
    let started = Instant::now();
    b.push_then_rerun(Ends::Complete);
    assert_eq!(hits.get(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_pull_resumes_a_blob_after_a_reset() {
    let b = Bench::new();
    let layer = biggest_layer();
    let target = format!("/blobs/{layer}");
    b.proxy
        .on("GET", &target, Some(1), Action::ResetAfter(500_000));
    b.pull_then_rerun(Ends::Complete);
    let resumed = b
        .proxy
        .requests()
        .iter()
        .any(|r| r.target.contains(&target) && r.header("range").is_some());
    assert!(resumed, "no Range request after the reset");
}

/// Every connection breaks after 1 KB: resumed until the attempts run out.
#[test]
fn a_pull_whose_blob_keeps_breaking_fails_cleanly_naming_it() {
    let b = Bench::new();
    let layer = biggest_layer();
    b.proxy.on(
        "GET",
        &format!("/blobs/{layer}"),
        None,
        Action::ResetAfter(1000),
    );
    let out = b.pull_then_rerun(Ends::CleanFailure);
    for needle in [layer.as_str(), "kept breaking; gave up after 5 attempts"] {
        assert!(out.stderr_str().contains(needle), "no {needle:?}:\n{out}");
    }
}

#[test]
fn a_pull_rides_out_a_503_burst() {
    let b = Bench::new();
    let hits = b
        .proxy
        .on("GET", "/v2/src/", Some(4), Action::fail(503, None));
    b.pull_then_rerun(Ends::Complete);
    assert_eq!(hits.get(), 4);
}

#[test]
fn a_pull_honours_a_short_retry_after_on_its_blobs() {
    let b = Bench::new();
    let hits = b
        .proxy
        .on("GET", "/blobs/", Some(2), Action::fail(429, Some("1")));
    b.pull_then_rerun(Ends::Complete);
    assert_eq!(hits.get(), 2);
}

#[test]
fn a_pull_waits_out_a_short_stall() {
    let b = Bench::new();
    let layer = biggest_layer();
    let pause = Duration::from_secs(3);
    b.proxy.on(
        "GET",
        &format!("/blobs/{layer}"),
        Some(1),
        Action::StallAfter {
            after: 100_000,
            pause,
        },
    );
    let out = b.pull("out");
    b.judge_pull(&out, "out", Ends::Complete);
    let gets = b
        .proxy
        .requests()
        .iter()
        .filter(|r| r.target.contains(&layer))
        .count();
    assert_eq!(gets, 1, "the stalled download was retried");
}

/// A blob that stalls for good after more than 1 MiB is resumed.
#[test]
fn a_pull_resumes_a_blob_that_stalls_after_real_progress() {
    let b = Bench::new();
    let layer = biggest_layer();
    let target = format!("/blobs/{layer}");
    let stall = Action::StallAfter {
        after: 1_050_000,
        pause: Duration::from_secs(90),
    };
    b.proxy.on("GET", &target, Some(1), stall);
    b.pull_then_rerun(Ends::Complete);
    let resumed = b
        .proxy
        .requests()
        .iter()
        .any(|r| r.target.contains(&target) && r.header("range") == Some("bytes=1050000-"));
    assert!(resumed, "no Range request from where it stalled");
}

/// One that stalls before real progress is not retried: a clean failure.
#[test]
fn a_pull_whose_blob_stalls_early_fails_cleanly_naming_it() {
    let b = Bench::new();
    let layer = biggest_layer();
    let stall = Action::StallAfter {
        after: 100_000,
        pause: Duration::from_secs(90),
    };
    b.proxy.on("GET", &format!("/blobs/{layer}"), None, stall);
    let started = Instant::now();
    let out = b.pull("out");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    b.judge_pull(&out, "out", Ends::CleanFailure);
    for needle in [layer.as_str(), &b.proxy.addr(), "stalled"] {
        assert!(out.stderr_str().contains(needle), "no {needle:?}:\n{out}");
    }
    b.proxy.clear_rules();
    b.judge_pull(&b.pull("rerun"), "rerun", Ends::Complete);
}

#[test]
fn a_pull_survives_the_registry_restarting_in_the_middle() {
    let b = Bench::new();
    let hits = b.proxy.on("GET", "/blobs/", Some(1), b.restart());
    b.pull_then_rerun(Ends::Complete);
    assert_eq!(hits.get(), 1);
    assert_eq!(b.regs.lock().unwrap().len(), 2, "no restart");
}
