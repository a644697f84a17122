//! The HTML report in a real browser: headless Chromium opens the page of
//! an analyzed image and of a slim run, with every request sent to a proxy
//! here that answers none (so no network), and the test checks the console
//! stayed silent, the page asked for nothing, and the screenshot is a
//! picture (many colours, no single one filling it). A control page with a
//! console error and a remote image shows the checks can fail.
//! CI installs Debian's `chromium` (.ci/run); without it these tests skip.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::analyze::known_image;
use crate::harness::*;

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        eprintln!("skipped: no chromium on PATH (.ci/run installs it)");
    }
    found
}

/// What the browser did with a page.
struct Rendered {
    console: Vec<String>,
    /// Requests the page made (Chromium's own update and time checks to
    /// its vendor's hosts left out).
    requests: Vec<String>,
    png: Vec<u8>,
    dom: String,
}

/// Hosts Chromium itself calls at start (component updates, time, sign-in)
/// even with background networking off; never the page's. A connection
/// that sends no request line at all is Chromium's own speculative
/// preconnect to the proxy (seen once in a few hundred runs): the page
/// fetched nothing through it.
fn browser_own(request: &str) -> bool {
    if request.is_empty() {
        return true;
    }
    let host = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    ["google.com", "googleapis.com", "gvt1.com", "gstatic.com"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// Renders `page`; without `js`, a copy whose policy forbids every script
/// (headless screenshots fail with scripting switched off in the
/// settings), the refusal left out of the console lines.
fn render(ctx: &TestContext, chromium: &Path, page: &Path, js: bool, name: &str) -> Rendered {
    let copy = ctx.path(&format!("{name}-noscript.html"));
    let page = if js {
        page
    } else {
        let html = std::fs::read_to_string(page).unwrap().replacen(
            "<head>",
            "<head><meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'none'\">",
            1,
        );
        std::fs::write(&copy, html).unwrap();
        &copy
    };
    // The proxy: records the first line of each request, answers nothing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let proxy = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                            .unwrap();
                        let mut line = String::new();
                        let _ = BufReader::new(&s).read_line(&mut line);
                        seen.lock().unwrap().push(line.trim().to_string());
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        })
    };
    let png = ctx.path(&format!("{name}.png"));
    let run = |extra: &[String]| {
        let mut cmd = Command::new("timeout");
        cmd.arg("120").arg(chromium).args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--enable-logging=stderr",
            "--log-level=0",
            "--window-size=1400,1800",
            "--proxy-bypass-list=<-loopback>",
        ]);
        cmd.arg(format!("--proxy-server=http://127.0.0.1:{port}"))
            .arg(format!(
                "--user-data-dir={}",
                ctx.path(&format!("{name}-profile")).display()
            ));
        cmd.args(extra).arg(format!("file://{}", page.display()));
        let out = cmd.output().expect("running chromium");
        assert!(out.status.success(), "chromium: {out:?}");
        out
    };
    let shot = run(&[format!("--screenshot={}", png.display())]);
    let dom = run(&["--dump-dom".to_string()]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    proxy.join().unwrap();
    let console = [&shot, &dom]
        .iter()
        .flat_map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .filter(|l| l.contains(":CONSOLE"))
                .filter(|l| js || !l.contains("Content Security Policy"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let requests = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !browser_own(r))
        .cloned()
        .collect();
    Rendered {
        console,
        requests,
        png: std::fs::read(&png).expect("the screenshot"),
        dom: String::from_utf8_lossy(&dom.stdout).into_owned(),
    }
}

/// Distinct colours of a PNG, and the share of its most common one.
fn colours(png_bytes: &[u8]) -> (usize, f64) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let mut counts = std::collections::HashMap::<[u8; 3], usize>::new();
    let pixels = &buf[..info.buffer_size()];
    for p in pixels.chunks(step) {
        *counts.entry([p[0], p[1], p[2]]).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    let top = counts.values().copied().max().unwrap_or(0);
    (counts.len(), top as f64 / total as f64)
}

fn assert_renders(r: &Rendered, what: &str) {
    assert!(r.console.is_empty(), "{what}: console: {:#?}", r.console);
    assert!(r.requests.is_empty(), "{what}: requests: {:#?}", r.requests);
    let (n, top) = colours(&r.png);
    assert!(
        n >= 40 && top < 0.9,
        "{what}: the screenshot looks blank: {n} colours, the commonest {top:.2}"
    );
}

/// Nothing in the page can make a request by itself.
fn assert_self_contained(html: &str) {
    for needle in ["src=", "href=", "url(", "@import", "<link", "<iframe"] {
        assert!(!html.contains(needle), "{needle} in the page");
    }
}

#[test]
fn the_checks_catch_a_console_error_a_request_and_a_blank_page() {
    let Some(chromium) = chromium() else { return };
    let ctx = TestContext::new();
    let page = ctx.path("control.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><img src=\"http://example.com/x.png\">\
         <script>console.error('control')</script></body></html>",
    )
    .unwrap();
    let r = render(&ctx, &chromium, &page, true, "control");
    assert!(
        r.console.iter().any(|l| l.contains("control")),
        "{:?}",
        r.console
    );
    assert!(
        r.requests.iter().any(|l| l.contains("example.com")),
        "{:?}",
        r.requests
    );
    let (n, top) = colours(&r.png);
    assert!(n < 40 || top >= 0.9, "{n} colours, {top}");
}

#[test]
fn analyze_html_renders_offline_with_and_without_script() {
    let Some(chromium) = chromium() else { return };
    let ctx = TestContext::new();
    let image = known_image(&ctx);
    let page = ctx.path("analyze.html");
    let out = ctx.slim_with(
        &[
            "analyze",
            &image,
            "--profile",
            "base",
            "--html",
            page.to_str().unwrap(),
        ],
        &[("RUST_BACKTRACE", "0")],
        None,
    );
    out.assert_success();
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    // The known image's paths, in the treemap's tooltips and the tables.
    for needle in [
        "/bin/tool · 5.0 KB · kept",
        "/var/log/apt.log",
        "replaced or deleted by layer 3",
        "same as /app/a/copy1.bin",
        "<svg class=\"tm\"",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    let r = render(&ctx, &chromium, &page, true, "analyze");
    assert_renders(&r, "analyze");
    // The script ran to its end (it marks the page first, then wires up
    // zoom and sort; an exception would be on the console).
    assert!(
        r.dom.contains("<html lang=\"en\" class=\"js\">"),
        "{}",
        r.dom
    );
    let off = render(&ctx, &chromium, &page, false, "analyze-nojs");
    assert_renders(&off, "analyze without script");
    assert!(off.dom.contains("<svg class=\"tm\""));
    assert!(!off.dom.contains("class=\"js\""));
}

#[test]
fn slim_run_html_shows_before_and_after() {
    let Some(chromium) = chromium() else { return };
    let ctx = TestContext::new();
    let image = known_image(&ctx);
    let page = ctx.path("run.html");
    let dest = oci_ref(&ctx.path("out"), "slim");
    let out = ctx.slim_with(
        &[
            &image,
            "-o",
            &dest,
            "--profile",
            "base",
            "--html",
            page.to_str().unwrap(),
        ],
        &[("RUST_BACKTRACE", "0")],
        None,
    );
    out.assert_success();
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    for needle in [
        "Before and after",
        "<h3>before: ",
        "<h3>after: ",
        "id=\"tm0a\"",
        "id=\"tm0b\"",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    // After: no removed, shadowed or duplicate bytes left in the treemap.
    let after = &html[html.find("id=\"tm0b\"").unwrap()..];
    let after = &after[..after.find("</svg>").unwrap()];
    for gone in ["apt.log", "(layer 2, shadowed)", "copy2.bin ·"] {
        assert!(!after.contains(gone), "{gone} in the after treemap");
    }
    let r = render(&ctx, &chromium, &page, true, "run");
    assert_renders(&r, "slim run");
}
