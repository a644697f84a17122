//! `slim batch` against real registries: a job over two repositories (OCI
//! and Docker v2s2, several tags, one multi-arch index, one alias) slims
//! every image; a rerun skips them all without reading a layer; a changed
//! tag is redone alone; `--force` redoes them without uploading a blob the
//! destination has; one corrupt image fails alone; shards cover the list
//! exactly once; layers are mounted within a registry; job file mistakes
//! are usage errors; `--dry-run` writes nothing. Judged by the registry's
//! access log and by skopeo.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::harness::fixture::read_blob;
use crate::harness::registry::runs_dir;
use crate::harness::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An OCI layout (tag `v`) holding the fixture with one more config label,
/// so another config and manifest digest over the same layers. Built once
/// per label.
fn variant(label: &str) -> String {
    static MADE: OnceLock<std::sync::Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let mut made = made.lock().unwrap();
    if let Some(r) = made.get(label) {
        return r.clone();
    }
    let dir = runs_dir().join(format!("variant-{}-{label}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let src = fixture_layout();
    let fx = fixture_image();
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    for e in fs::read_dir(src.join("blobs/sha256")).unwrap().flatten() {
        fs::copy(e.path(), dir.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    let put = |bytes: &[u8]| put_blob(&dir, bytes);
    let mut config: Value = serde_json::from_slice(&read_blob(&src, &fx.config_digest)).unwrap();
    config["config"]["Labels"]["dev.test.variant"] = json!(label);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let mut manifest = fx.manifest.clone();
    manifest["config"]["digest"] = json!(put(&config_bytes));
    manifest["config"]["size"] = json!(config_bytes.len());
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    tag_only(&dir, &manifest_bytes, OCI_MANIFEST, "v");
    let r = format!("oci:{}:v", dir.display());
    made.insert(label.to_string(), r.clone());
    r
}

fn push(reg: &Registry, src: &str, repo_tag: &str, extra: &[&str]) {
    reg.skopeo().copy(src, &reg.docker_ref(repo_tag), extra);
}

/// Two source repositories on `reg`: `PREFIX-oci` (v1, v2, multi = a
/// two-platform index, latest = an alias of v1) and `PREFIX-v2s2` (v1, v2,
/// multi = a Docker manifest list).
struct Sources {
    oci: String,
    v2s2: String,
}

impl Sources {
    fn push(reg: &Registry, prefix: &str) -> Sources {
        let s = Sources {
            oci: unique_name(&format!("{prefix}-oci")),
            v2s2: unique_name(&format!("{prefix}-v2s2")),
        };
        push_fixture(reg, &format!("{}:v1", s.oci));
        push_fixture(reg, &format!("{}:latest", s.oci));
        push(reg, &variant("2"), &format!("{}:v2", s.oci), &[]);
        push_fixture_multiarch(reg, &format!("{}:multi", s.oci));
        push_fixture_v2s2(reg, &format!("{}:v1", s.v2s2));
        push(
            reg,
            &variant("2"),
            &format!("{}:v2", s.v2s2),
            &["--format", "v2s2"],
        );
        let m = multiarch_layout_ref();
        push(
            reg,
            &m,
            &format!("{}:multi", s.v2s2),
            &["--all", "--format", "v2s2"],
        );
        s
    }

    /// `^(OCI|V2S2)$`.
    fn regex(&self) -> String {
        format!("^({}|{})$", self.oci, self.v2s2)
    }

    /// Every `repo:tag`.
    fn all(&self) -> Vec<String> {
        let mut v = Vec::new();
        for t in ["latest", "multi", "v1", "v2"] {
            v.push(format!("{}:{t}", self.oci));
        }
        for t in ["multi", "v1", "v2"] {
            v.push(format!("{}:{t}", self.v2s2));
        }
        v
    }
}

fn multiarch_layout_ref() -> String {
    crate::harness::fixture::multiarch_layout()
        .reference
        .clone()
}

/// Writes `jobs.toml` in the context: `[defaults]` lines, then the entries.
fn job_file(ctx: &TestContext, defaults: &str, entries: &str) -> String {
    let path = ctx.path("jobs.toml");
    fs::write(&path, format!("[defaults]\n{defaults}\n\n{entries}")).unwrap();
    path.display().to_string()
}

fn repositories_entry(reg: &Registry, regex: &str, destination: &str, extra: &str) -> String {
    format!(
        "[[repositories]]\nregistry = \"{}\"\nrepository = \"{regex}\"\ndestination = \"{destination}\"\n{extra}\n",
        reg.addr()
    )
}

fn images_entry(source: &str, destination: &str, extra: &str) -> String {
    format!("[[images]]\nsource = \"{source}\"\ndestination = \"{destination}\"\n{extra}\n")
}

/// `slim batch FILE ARGS… --report -`: the output and the parsed report.
fn batch(ctx: &TestContext, file: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let mut all = vec!["batch", file, "--report", "-"];
    all.extend(args);
    let mut envs = vec![("RUST_BACKTRACE", "0")];
    envs.extend(env);
    let out = ctx.slim_with(&all, &envs, None);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{out}"));
    (out, report)
}

/// destination -> the image's report entry.
fn by_destination(report: &Value) -> BTreeMap<String, Value> {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["destination"].as_str().unwrap().to_string(), i.clone()))
        .collect()
}

fn statuses(report: &Value) -> BTreeMap<String, String> {
    by_destination(report)
        .into_iter()
        .map(|(d, i)| (d, i["status"].as_str().unwrap().to_string()))
        .collect()
}

/// Layer digests of an image or index (every platform), through skopeo.
fn layers_of(reg: &Registry, repo: &str, reference: &str) -> Vec<String> {
    let sep = if reference.starts_with("sha256:") {
        "@"
    } else {
        ":"
    };
    let m = reg
        .skopeo()
        .inspect_raw(&reg.docker_ref(&format!("{repo}{sep}{reference}")));
    let mut out = Vec::new();
    if let Some(children) = m["manifests"].as_array() {
        for c in children {
            out.extend(layers_of(reg, repo, c["digest"].as_str().unwrap()));
        }
    }
    for l in m["layers"].as_array().into_iter().flatten() {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

/// Requests since `mark` whose URI mentions one of `repos`.
fn requests_for(reg: &Registry, mark: u64, repos: &[&str]) -> Vec<AccessLogEntry> {
    reg.requests_since(mark)
        .into_iter()
        .filter(|e| {
            repos
                .iter()
                .any(|r| e.uri.starts_with(&format!("/v2/{r}/")))
        })
        .collect()
}

#[test]
fn a_job_slims_every_image_a_rerun_skips_them_and_only_a_changed_tag_is_redone() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let src = Sources::push(reg, "batch/all");
    let dst = unique_name("batch/all-out");
    let explicit = unique_name("batch/all-explicit");
    let file = job_file(
        &ctx,
        "profile = \"auto\"",
        &format!(
            "{}\n{}",
            images_entry(
                &reg.reference(&format!("{}:v1", src.oci)),
                &reg.reference(&format!("{explicit}:v1-slim")),
                "compression = \"zstd\""
            ),
            repositories_entry(
                reg,
                &src.regex(),
                &format!("{{registry}}/{dst}/{{repository}}:{{tag}}"),
                ""
            )
        ),
    );
    let mut expected: BTreeSet<String> = src
        .all()
        .iter()
        .map(|s| reg.reference(&format!("{dst}/{s}")))
        .collect();
    expected.insert(reg.reference(&format!("{explicit}:v1-slim")));

    // First run: everything is slimmed, and skopeo reads every result.
    let (out, report) = batch(&ctx, &file, &[], &[]);
    out.assert_success();
    let st = statuses(&report);
    assert_eq!(
        st.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{out}"
    );
    assert!(st.values().all(|s| s == "slimmed"), "{st:#?}\n{out}");
    assert_eq!(report["totals"]["slimmed"], 8);
    assert!(report["totals"]["saved_bytes"].as_i64().unwrap() > 0);
    assert!(out.stderr_str().contains("[8/8]"), "{out}");
    let images = by_destination(&report);
    for (d, img) in &images {
        let r = format!("docker://{d}");
        let raw = reg.skopeo().inspect_raw(&r);
        assert_eq!(
            reg.skopeo().manifest_digest(&r),
            img["output_digest"].as_str().unwrap(),
            "{d}"
        );
        reg.skopeo().inspect(&r);
        let media = raw["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
        let want = match (d.contains("-v2s2"), d.ends_with(":multi")) {
            _ if d.contains("explicit") => OCI_MANIFEST, // zstd makes OCI
            (false, false) => OCI_MANIFEST,
            (false, true) => OCI_INDEX,
            (true, false) => DOCKER_MANIFEST,
            (true, true) => DOCKER_LIST,
        };
        assert_eq!(media, want, "{d}");
        if !d.ends_with(":multi") && !d.contains("explicit") {
            assert_eq!(
                raw["layers"].as_array().unwrap().len(),
                1,
                "{d} is squashed"
            );
        }
        if d.ends_with(":multi") {
            assert_eq!(img["platforms"].as_array().unwrap().len(), 2, "{d}");
        }
    }
    // The alias was slimmed once and copied: same output as v1.
    let oci = |t: &str| images[&reg.reference(&format!("{dst}/{}:{t}", src.oci))].clone();
    assert_eq!(oci("latest")["output_digest"], oci("v1")["output_digest"]);
    let copied = [oci("latest"), oci("v1")]
        .iter()
        .filter(|i| i["reason"].as_str().unwrap().contains("copied its result"))
        .count();
    assert_eq!(copied, 1, "one of the two aliases is a copy of the other");

    // Rerun: all skipped; no layer read, nothing written.
    let mut layers: BTreeSet<String> = fixture_image().layer_digests.into_iter().collect();
    for d in &expected {
        let (repo, tag) = d
            .strip_prefix(&format!("{}/", reg.addr()))
            .unwrap()
            .rsplit_once(':')
            .unwrap();
        layers.extend(layers_of(reg, repo, tag));
    }
    let out_repos: Vec<String> = vec![
        format!("{dst}/{}", src.oci),
        format!("{dst}/{}", src.v2s2),
        explicit.clone(),
        src.oci.clone(),
        src.v2s2.clone(),
    ];
    let repos: Vec<&str> = out_repos.iter().map(String::as_str).collect();
    let mark = reg.log_mark();
    let (out, report) = batch(&ctx, &file, &[], &[]);
    out.assert_success();
    let st = statuses(&report);
    assert_eq!(st.len(), 8);
    assert!(st.values().all(|s| s == "skipped"), "{st:#?}\n{out}");
    let log = requests_for(reg, mark, &repos);
    let layer_gets: Vec<_> = log
        .iter()
        .filter(|e| {
            e.method == "GET"
                && e.uri.contains("/blobs/")
                && layers.iter().any(|l| e.uri.ends_with(l.as_str()))
        })
        .collect();
    assert!(
        layer_gets.is_empty(),
        "layers read on a rerun: {layer_gets:#?}"
    );
    let writes: Vec<_> = log
        .iter()
        .filter(|e| !matches!(e.method.as_str(), "GET" | "HEAD"))
        .collect();
    assert!(writes.is_empty(), "a rerun wrote: {writes:#?}");

    // One source tag changes: only its image is redone.
    push(
        reg,
        &variant("3"),
        &format!("{}:v2", src.v2s2),
        &["--format", "v2s2"],
    );
    let changed = reg.reference(&format!("{dst}/{}:v2", src.v2s2));
    let (out, report) = batch(&ctx, &file, &[], &[]);
    out.assert_success();
    let images = by_destination(&report);
    for (d, img) in &images {
        let want = if d == &changed { "slimmed" } else { "skipped" };
        assert_eq!(img["status"], want, "{d}\n{out}");
    }
    assert!(
        images[&changed]["reason"]
            .as_str()
            .unwrap()
            .contains("source changed"),
        "{:#}",
        images[&changed]
    );

    // --force redoes all of them, and uploads no blob the destinations
    // have: the outputs are the same bytes.
    let mark = reg.log_mark();
    let (out, report) = batch(&ctx, &file, &["--force"], &[]);
    out.assert_success();
    assert!(statuses(&report).values().all(|s| s == "slimmed"), "{out}");
    let uploads: Vec<_> = requests_for(reg, mark, &repos)
        .into_iter()
        .filter(|e| e.uri.contains("/blobs/uploads/"))
        .collect();
    assert!(
        uploads.is_empty(),
        "--force uploaded blobs again: {uploads:#?}"
    );
}

#[test]
fn one_corrupt_image_fails_alone_and_the_exit_code_says_so() {
    let shared = Registry::shared();
    let bad_reg = Registry::start_plain();
    let ctx = TestContext::new();
    push_fixture(&bad_reg, "broken:v1");
    // Flip a byte in the middle of the biggest layer, in the registry's own
    // storage: the registry serves it, only its digest can tell.
    let fx = fixture_image();
    let layer = fx
        .layer_digests
        .iter()
        .max_by_key(|d| read_blob(&fixture_layout(), d).len())
        .unwrap()
        .clone();
    let hex = layer.strip_prefix("sha256:").unwrap();
    let data: PathBuf = bad_reg.storage_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, bytes).unwrap();

    let good = unique_name("batch/corrupt-good");
    push_fixture(shared, &format!("{good}:a"));
    push_fixture_v2s2(shared, &format!("{good}:b"));
    let out_repo = unique_name("batch/corrupt-out");
    let bad_dst = shared.reference(&format!("{out_repo}/broken:v1"));
    let file = job_file(
        &ctx,
        "profile = \"auto\"",
        &format!(
            "{}\n{}",
            images_entry(&bad_reg.reference("broken:v1"), &bad_dst, ""),
            repositories_entry(
                shared,
                &format!("^{good}$"),
                &format!("{{registry}}/{out_repo}/good:{{tag}}"),
                ""
            )
        ),
    );
    let (out, report) = batch(&ctx, &file, &["--jobs", "2"], &[]);
    out.assert_code(1);
    let images = by_destination(&report);
    assert_eq!(images.len(), 3, "{out}");
    let bad = &images[&bad_dst];
    assert_eq!(bad["status"], "failed");
    let err = bad["error"].as_str().unwrap();
    assert!(err.contains(&layer) && err.contains("broken"), "{err}");
    for t in ["a", "b"] {
        let d = shared.reference(&format!("{out_repo}/good:{t}"));
        assert_eq!(images[&d]["status"], "slimmed", "{d}\n{out}");
        assert!(images[&d]["error"].is_null());
        shared.skopeo().inspect(&format!("docker://{d}"));
    }
    assert_eq!(report["totals"]["failed"], 1);
    assert_eq!(report["totals"]["slimmed"], 2);
    out.assert_stderr_contains("failed: ");
    out.assert_stderr_contains(&layer);
    // The failed destination was never tagged.
    let tags = shared.skopeo().run(&[
        "list-tags",
        "--tls-verify=false",
        &format!(
            "docker://{}",
            shared.reference(&format!("{out_repo}/broken"))
        ),
    ]);
    assert!(
        !tags.success() || !tags.stdout_str().contains("\"v1\""),
        "the corrupt image was tagged:\n{tags}"
    );
}

#[test]
fn shards_slim_every_image_exactly_once_between_them() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let src = Sources::push(reg, "batch/shard");
    let dst = unique_name("batch/shard-out");
    let file = job_file(
        &ctx,
        "profile = \"none\"",
        &repositories_entry(
            reg,
            &src.regex(),
            &format!("{{registry}}/{dst}/{{repository}}:{{tag}}"),
            "",
        ),
    );
    let (out, whole) = batch(&ctx, &file, &["--dry-run"], &[]);
    out.assert_success();
    let all: BTreeSet<String> = statuses(&whole).into_keys().collect();
    assert_eq!(all.len(), 7, "{out}");

    // Three workers at once: two with --shard, one the Kubernetes way.
    let runs: Vec<(Output, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (ctx, file) = (&ctx, &file);
                s.spawn(move || {
                    if i == 1 {
                        let idx = i.to_string();
                        batch(
                            ctx,
                            file,
                            &["--shards", "3"],
                            &[("JOB_COMPLETION_INDEX", &idx)],
                        )
                    } else {
                        batch(ctx, file, &["--shard", &format!("{i}/3")], &[])
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (out, report)) in runs.iter().enumerate() {
        out.assert_success();
        assert_eq!(report["shard"]["index"], i, "{out}");
        assert_eq!(report["shard"]["count"], 3);
        for (d, s) in statuses(report) {
            assert_eq!(s, "slimmed", "{d} in shard {i}\n{out}");
            *seen.entry(d).or_default() += 1;
        }
    }
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), all);
    assert!(seen.values().all(|&n| n == 1), "{seen:#?}");

    // --shards without an index is a usage error.
    let out = ctx.slim_with(
        &["batch", &file, "--shards", "3"],
        &[("RUST_BACKTRACE", "0")],
        None,
    );
    out.assert_code(2);
    out.assert_stderr_contains("JOB_COMPLETION_INDEX");
}

#[test]
fn layers_are_mounted_within_one_registry_not_uploaded() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let src = unique_name("batch/mount-src");
    push_fixture(reg, &format!("{src}:v1"));
    push(reg, &variant("2"), &format!("{src}:v2"), &[]);
    let kept = unique_name("batch/mount-keep");
    let copy = unique_name("batch/mount-copy");
    let fx = fixture_image();
    // The slim entry keeps the base layer; the other is a faithful copy.
    let file = job_file(
        &ctx,
        "profile = \"auto\"",
        &format!(
            "{}\n{}",
            repositories_entry(
                reg,
                &format!("^{src}$"),
                &format!("{{registry}}/{kept}:{{tag}}"),
                "keep-base = \"1\"",
            ),
            images_entry(
                &reg.reference(&format!("{src}:v1")),
                &reg.reference(&format!("{copy}:v1")),
                "squash = \"none\"\nprofile = \"none\"",
            )
        ),
    );

    let mark = reg.log_mark();
    let (out, report) = batch(&ctx, &file, &[], &[]);
    out.assert_success();
    assert!(statuses(&report).values().all(|s| s == "slimmed"), "{out}");
    let log = requests_for(reg, mark, &[kept.as_str(), copy.as_str()]);
    let mounted = |repo: &str, digest: &str| {
        log.iter().any(|e| {
            e.method == "POST"
                && e.status == 201
                && e.uri == format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={src}")
        })
    };
    let uploaded = |repo: &str, digest: &str| {
        log.iter()
            .filter(|e| {
                e.method == "PUT"
                    && e.uri.starts_with(&format!("/v2/{repo}/blobs/uploads/"))
                    && e.uri.contains(&format!("digest={digest}"))
            })
            .count()
    };
    // The kept base layer: mounted into the slim repository, never uploaded.
    let base = &fx.layer_digests[0];
    assert!(mounted(&kept, base), "{:#?}", log);
    assert_eq!(uploaded(&kept, base), 0, "{log:#?}");
    // The faithful copy: every blob mounted, nothing uploaded.
    for d in fx.layer_digests.iter().chain([&fx.config_digest]) {
        assert!(mounted(&copy, d), "{d} not mounted: {log:#?}");
    }
    let uploads = log
        .iter()
        .filter(|e| e.method == "PUT" && e.uri.starts_with(&format!("/v2/{copy}/blobs/")))
        .count();
    assert_eq!(uploads, 0, "{log:#?}");
    assert_eq!(
        reg.skopeo()
            .manifest_digest(&reg.docker_ref(&format!("{copy}:v1"))),
        fx.manifest_digest
    );
    // The slim images keep the base layer as it was.
    for t in ["v1", "v2"] {
        let m = reg
            .skopeo()
            .inspect_raw(&reg.docker_ref(&format!("{kept}:{t}")));
        assert_eq!(m["layers"][0]["digest"], base.as_str(), "{t}");
        assert_eq!(m["layers"].as_array().unwrap().len(), 2, "{t}");
    }
}

#[test]
fn job_file_mistakes_are_usage_errors_naming_the_key() {
    let ctx = TestContext::new();
    let cases = [
        ("[defaults]\nprofle = \"auto\"\n", "profle"),
        (
            "[[images]]\nsource = \"127.0.0.1:9/a:1\"\ndestination = \"127.0.0.1:9/b:1\"\nsqush = \"all\"\n",
            "sqush",
        ),
        (
            "[[repositories]]\nregistry = \"127.0.0.1:9\"\nrepository = \".*\"\ntag = \"x\"\ndestination = \"127.0.0.1:9/{repository}:{tag}\"\n",
            "tag",
        ),
        ("[[image]]\nsource = \"a\"\n", "image"),
    ];
    for (text, key) in cases {
        let path = ctx.path("bad.toml");
        fs::write(&path, text).unwrap();
        let out = ctx.slim_with(
            &["batch", path.to_str().unwrap()],
            &[("RUST_BACKTRACE", "0")],
            None,
        );
        out.assert_code(2);
        out.assert_stderr_contains(&format!("`{key}`"));
        out.assert_stderr_contains("bad.toml");
        assert!(out.stdout.is_empty(), "{out}");
    }
    let out = ctx.slim_with(&["batch", "missing.toml"], &[], None);
    out.assert_code(2);
    out.assert_stderr_contains("missing.toml");
}

#[test]
fn dry_run_lists_the_work_and_skip_decisions_and_writes_nothing() {
    let reg = Registry::shared();
    let ctx = TestContext::new();
    let src = unique_name("batch/dry-src");
    push_fixture(reg, &format!("{src}:done"));
    push_fixture_v2s2(reg, &format!("{src}:todo"));
    let dst = unique_name("batch/dry-out");
    let file = job_file(
        &ctx,
        "profile = \"auto\"",
        &repositories_entry(
            reg,
            &format!("^{src}$"),
            &format!("{{registry}}/{dst}:{{tag}}"),
            "",
        ),
    );
    // Make `done` up to date first, with a job of its own.
    let first = ctx.path("first.toml");
    fs::write(
        &first,
        format!(
            "[defaults]\nprofile = \"auto\"\n{}",
            images_entry(
                &reg.reference(&format!("{src}:done")),
                &reg.reference(&format!("{dst}:done")),
                ""
            )
        ),
    )
    .unwrap();
    batch(&ctx, first.to_str().unwrap(), &[], &[])
        .0
        .assert_success();

    let mark = reg.log_mark();
    let (out, report) = batch(&ctx, &file, &["--dry-run"], &[]);
    out.assert_success();
    assert_eq!(report["dry_run"], true);
    let st = statuses(&report);
    let todo = reg.reference(&format!("{dst}:todo"));
    let done = reg.reference(&format!("{dst}:done"));
    assert_eq!(st[&todo], "planned", "{out}");
    assert_eq!(st[&done], "skipped", "{out}");
    let err = out.stderr_str();
    assert!(
        err.contains(&format!(
            "would slim {} -> {todo}",
            reg.reference(&format!("{src}:todo"))
        )),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "up to date {} -> {done}",
            reg.reference(&format!("{src}:done"))
        )),
        "{out}"
    );
    let log = requests_for(reg, mark, &[src.as_str(), dst.as_str()]);
    let layers = fixture_image().layer_digests;
    assert!(
        log.iter()
            .all(|e| matches!(e.method.as_str(), "GET" | "HEAD")
                && !layers.iter().any(|l| e.uri.ends_with(l.as_str()))),
        "a dry run wrote or read layers: {log:#?}"
    );
    let tags = reg
        .skopeo()
        .run(&["list-tags", "--tls-verify=false", &reg.docker_ref(&dst)]);
    tags.assert_success();
    assert!(!tags.stdout_str().contains("\"todo\""), "{tags}");
}
