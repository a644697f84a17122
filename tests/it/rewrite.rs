//! The layer rewriter end to end on the fixture image: squash, per-layer
//! rewrite, kept base layers, gzip and zstd, Docker and OCI media types,
//! determinism across runs and thread counts. Judged by umoci (trees) and
//! skopeo (reading and converting what slim wrote), not by slim's code.

use std::path::Path;

use serde_json::Value;

use crate::harness::fixture::read_blob;
use crate::harness::*;

const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `slim SRC -o DST --profile none ARGS…` (no stripping: trees must match).
fn slim(ctx: &TestContext, src: &str, dst: &str, args: &[&str]) -> Output {
    let mut all = vec![src, "-o", dst, "--profile", "none"];
    all.extend(args);
    ctx.slim_with(&all, &[("RUST_BACKTRACE", "0")], None)
}

fn manifest(layout: &Path, tag: &str) -> Value {
    skopeo_inspect_raw(&oci_ref(layout, tag))
}

fn config(layout: &Path, m: &Value) -> Value {
    let d = m["config"]["digest"].as_str().unwrap();
    serde_json::from_slice(&read_blob(layout, d)).unwrap()
}

/// The tree of an image in a layout, through skopeo (which reads zstd) into
/// a gzip layout that umoci unpacks.
fn tree_via_skopeo(ctx: &TestContext, reference: &str) -> Tree {
    let layout = ctx.path(&unique_name("gz"));
    skopeo_copy(
        reference,
        &format!("oci:{}:img", layout.display()),
        &["--dest-compress", "--dest-compress-format", "gzip"],
    );
    tree_of(&ctx.umoci_unpack(&layout, "img"))
}

fn layer_types(m: &Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn squash_all_gives_one_layer_with_the_same_tree() {
    let ctx = TestContext::new();
    let out = ctx.path("out");
    slim(
        &ctx,
        &fixture_ref(),
        &oci_ref(&out, "s"),
        &["--no-hardlink-dedup"],
    )
    .assert_success();
    let m = manifest(&out, "s");
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        layer_types(&m),
        vec![OCI_LAYER_GZIP],
        "gzip source stays gzip"
    );
    assert_same_tree(fixture_tree(), &tree_of(&ctx.umoci_unpack(&out, "s")));

    // The config: one diff_id, history readable and consistent, runtime
    // settings kept.
    let c = config(&out, &m);
    let src_m = fixture_image().manifest;
    let src_c: Value = serde_json::from_slice(&read_blob(
        &fixture_layout(),
        src_m["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(
        c["config"], src_c["config"],
        "entrypoint, env, workdir, labels kept"
    );
    let history = c["history"].as_array().unwrap();
    let non_empty = history
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    assert_eq!(non_empty, 1, "one non-empty history entry per layer");
    assert!(
        history.len() > src_c["history"].as_array().unwrap().len(),
        "original entries kept"
    );
    assert!(history.iter().any(|h| {
        h["comment"]
            .as_str()
            .unwrap_or("")
            .contains("squashed by slim")
    }));
    // The diff_id is the digest of the uncompressed layer.
    let layer = read_blob(&out, m["layers"][0]["digest"].as_str().unwrap());
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut tar).unwrap();
    assert_eq!(
        c["rootfs"]["diff_ids"][0].as_str().unwrap(),
        sha256_digest(&tar)
    );
    // The source is recorded.
    assert_eq!(
        m["annotations"]["dev.slim.source.digest"],
        fixture_image().manifest_digest.as_str()
    );
    // No whiteout remains.
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let p = e.unwrap().path().unwrap().to_string_lossy().into_owned();
        assert!(
            !p.rsplit('/').next().unwrap().starts_with(".wh."),
            "whiteout {p} in a full squash"
        );
    }
}

#[test]
fn same_input_gives_the_same_digests_across_runs_and_thread_counts() {
    let ctx = TestContext::new();
    for compression in ["gzip", "zstd"] {
        let mut digests = Vec::new();
        for (i, threads) in ["1", "2", "2", "4"].iter().enumerate() {
            let out = ctx.path(&format!("{compression}-{i}"));
            slim(
                &ctx,
                &fixture_ref(),
                &oci_ref(&out, "d"),
                &["--compression", compression, "--threads", threads],
            )
            .assert_success();
            digests.push(manifest_digest_of(&oci_ref(&out, "d")));
        }
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "{compression}: {digests:?}"
        );
    }
}

#[test]
fn zstd_layers_decompress_to_their_diff_id_and_skopeo_reads_them() {
    let ctx = TestContext::new();
    let out = ctx.path("z");
    slim(
        &ctx,
        &fixture_ref(),
        &oci_ref(&out, "z"),
        &["--compression", "zstd", "--no-hardlink-dedup"],
    )
    .assert_success();
    let m = manifest(&out, "z");
    assert_eq!(layer_types(&m), vec![OCI_LAYER_ZSTD]);
    let blob = read_blob(&out, m["layers"][0]["digest"].as_str().unwrap());
    let tar = zstd_decompress(&blob);
    assert_eq!(
        config(&out, &m)["rootfs"]["diff_ids"][0].as_str().unwrap(),
        sha256_digest(&tar)
    );
    // skopeo accepts it: it converts it back to gzip, and the tree is the fixture's.
    assert_same_tree(fixture_tree(), &tree_via_skopeo(&ctx, &oci_ref(&out, "z")));
}

fn zstd_decompress(blob: &[u8]) -> Vec<u8> {
    zstd::decode_all(blob).expect("a valid zstd stream")
}

#[test]
fn squash_none_with_zstd_keeps_every_layer_and_the_tree() {
    let ctx = TestContext::new();
    let out = ctx.path("n");
    slim(
        &ctx,
        &fixture_ref(),
        &oci_ref(&out, "n"),
        &["--squash", "none", "--compression", "zstd"],
    )
    .assert_success();
    let m = manifest(&out, "n");
    assert_eq!(layer_types(&m).len(), fixture_image().layer_digests.len());
    assert!(layer_types(&m).iter().all(|t| t == OCI_LAYER_ZSTD));
    let c = config(&out, &m);
    assert_eq!(
        c["rootfs"]["diff_ids"].as_array().unwrap().len(),
        fixture_image().layer_digests.len()
    );
    assert_same_tree(fixture_tree(), &tree_via_skopeo(&ctx, &oci_ref(&out, "n")));
}

#[test]
fn keep_base_leaves_the_first_layers_byte_identical() {
    let ctx = TestContext::new();
    let src = fixture_image();
    for keep in ["1", "2"] {
        let out = ctx.path(&format!("k{keep}"));
        slim(
            &ctx,
            &fixture_ref(),
            &oci_ref(&out, "k"),
            &["--keep-base", keep, "--no-hardlink-dedup"],
        )
        .assert_success();
        let m = manifest(&out, "k");
        let n: usize = keep.parse().unwrap();
        let layers: Vec<&str> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(layers.len(), n + 1, "base layers plus one squashed layer");
        assert_eq!(
            &layers[..n],
            &src.layer_digests[..n]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()[..]
        );
        let c = config(&out, &m);
        let src_c: Value =
            serde_json::from_slice(&read_blob(&fixture_layout(), &src.config_digest)).unwrap();
        assert_eq!(
            c["rootfs"]["diff_ids"].as_array().unwrap()[..n],
            src_c["rootfs"]["diff_ids"].as_array().unwrap()[..n]
        );
        assert_same_tree(fixture_tree(), &tree_of(&ctx.umoci_unpack(&out, "k")));
    }
}

#[test]
fn keep_base_by_reference_matches_the_base_image_layers() {
    let ctx = TestContext::new();
    // A base image made of the fixture's first layer.
    let base = ctx.path("base");
    let out = ctx.path("kb");
    // The fixture with its first layer only, as its own image.
    copy_dir(&fixture_layout(), &base);
    let src = fixture_image();
    let mut m = src.manifest.clone();
    let layers = m["layers"].as_array().unwrap()[..1].to_vec();
    m["layers"] = Value::Array(layers);
    let mut c: Value =
        serde_json::from_slice(&read_blob(&fixture_layout(), &src.config_digest)).unwrap();
    let ids = c["rootfs"]["diff_ids"].as_array().unwrap()[..1].to_vec();
    c["rootfs"]["diff_ids"] = Value::Array(ids);
    let c_bytes = serde_json::to_vec(&c).unwrap();
    m["config"]["digest"] = Value::String(put_blob(&base, &c_bytes));
    m["config"]["size"] = Value::from(c_bytes.len());
    let m_digest = tag_only(
        &base,
        &serde_json::to_vec(&m).unwrap(),
        OCI_MANIFEST,
        "only-base",
    );

    slim(
        &ctx,
        &fixture_ref(),
        &oci_ref(&out, "kb"),
        &[
            "--keep-base",
            &oci_ref(&base, "only-base"),
            "--no-hardlink-dedup",
        ],
    )
    .assert_success();
    let m = manifest(&out, "kb");
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        m["layers"][0]["digest"].as_str().unwrap(),
        src.layer_digests[0]
    );
    assert_same_tree(fixture_tree(), &tree_of(&ctx.umoci_unpack(&out, "kb")));
    // The output names the base it shares layers with (OCI's annotations).
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.digest"],
        m_digest.as_str()
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.name"],
        oci_ref(&base, "only-base").as_str()
    );

    // An image not built on that base is refused.
    let other = ctx.path("other");
    let fail = slim(
        &ctx,
        &fixture_ref(),
        &oci_ref(&other, "x"),
        &["--keep-base", &oci_ref(&out, "kb")],
    );
    fail.assert_failure();
    assert!(fail.stderr_str().contains("not built on"), "{fail}");
}

#[test]
fn base_image_annotations_go_when_no_base_layer_is_kept() {
    let ctx = TestContext::new();
    // The fixture, its manifest claiming a base image (as BuildKit writes).
    let src = ctx.path("src");
    copy_dir(&fixture_layout(), &src);
    let mut m = fixture_image().manifest.clone();
    m["annotations"] = serde_json::json!({
        "org.opencontainers.image.base.name": "docker.io/library/debian:bookworm",
        "org.opencontainers.image.base.digest": format!("sha256:{}", "a".repeat(64)),
        "org.opencontainers.image.title": "fixture",
    });
    let m_digest = tag_only(
        &src,
        &serde_json::to_vec(&m).unwrap(),
        OCI_MANIFEST,
        "based",
    );

    // Squashed whole: no layer is shared with that base any more.
    let out = ctx.path("out");
    slim(&ctx, &oci_ref(&src, "based"), &oci_ref(&out, "all"), &[]).assert_success();
    let a = &manifest(&out, "all")["annotations"];
    assert!(a.get("org.opencontainers.image.base.name").is_none(), "{a}");
    assert!(
        a.get("org.opencontainers.image.base.digest").is_none(),
        "{a}"
    );
    assert_eq!(
        a["org.opencontainers.image.title"], "fixture",
        "other annotations stay"
    );
    assert_eq!(a["dev.slim.source.digest"], m_digest.as_str());

    // First layer kept: the claim still holds, so it stays as it was.
    slim(
        &ctx,
        &oci_ref(&src, "based"),
        &oci_ref(&out, "kept"),
        &["--keep-base", "1"],
    )
    .assert_success();
    let a = &manifest(&out, "kept")["annotations"];
    assert_eq!(
        a["org.opencontainers.image.base.name"],
        "docker.io/library/debian:bookworm"
    );
}

#[test]
fn docker_images_stay_docker_and_zstd_makes_them_oci() {
    let registry = Registry::shared();
    let repo = unique_name("rw-v2s2");
    push_fixture_v2s2(registry, &format!("{repo}:src"));
    let ctx = TestContext::new();
    let src = registry.reference(&format!("{repo}:src"));

    let gz = registry.reference(&format!("{repo}:gz"));
    slim(&ctx, &src, &gz, &[]).assert_success();
    let m = registry.skopeo().inspect_raw(&format!("docker://{gz}"));
    assert_eq!(m["mediaType"], DOCKER_MANIFEST);
    assert_eq!(layer_types(&m), vec![DOCKER_LAYER_GZIP]);
    let c = registry.skopeo().inspect_config(&format!("docker://{gz}"));
    assert_eq!(
        c["config"]["Labels"]["dev.slim.source.digest"]
            .as_str()
            .map(|s| s.starts_with("sha256:")),
        Some(true)
    );
    assert_same_tree(
        fixture_tree(),
        &ctx.tree_of_image(&registry.skopeo(), &format!("docker://{gz}")),
    );

    let zs = registry.reference(&format!("{repo}:zstd"));
    let out = slim(&ctx, &src, &zs, &["--compression", "zstd"]);
    out.assert_success();
    assert!(
        out.stderr_str()
            .contains("zstd layers need OCI media types"),
        "{out}"
    );
    let m = registry.skopeo().inspect_raw(&format!("docker://{zs}"));
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(layer_types(&m), vec![OCI_LAYER_ZSTD]);

    // Asked for explicitly, Docker format with zstd is a clear error.
    let bad = slim(
        &ctx,
        &src,
        &registry.reference(&format!("{repo}:bad")),
        &["--compression", "zstd", "--format", "docker"],
    );
    bad.assert_failure();
    assert!(bad.stderr_str().contains("zstd"), "{bad}");
}

#[test]
fn registry_to_registry_squash_is_readable_by_skopeo_and_umoci() {
    let registry = Registry::shared();
    let repo = unique_name("rw-oci");
    push_fixture(registry, &format!("{repo}:src"));
    let ctx = TestContext::new();
    let dst = registry.reference(&format!("{repo}:slim"));
    slim(
        &ctx,
        &registry.reference(&format!("{repo}:src")),
        &dst,
        &["--no-hardlink-dedup"],
    )
    .assert_success();
    let inspected = registry.skopeo().inspect(&format!("docker://{dst}"));
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 1);
    assert_same_tree(
        fixture_tree(),
        &ctx.tree_of_image(&registry.skopeo(), &format!("docker://{dst}")),
    );
    // A second run writes no blob: they are there already.
    let again = slim(
        &ctx,
        &registry.reference(&format!("{repo}:src")),
        &dst,
        &["--no-hardlink-dedup"],
    );
    again.assert_success();
    assert!(again.stderr_str().contains("0 blobs written"), "{again}");
}

#[test]
fn a_layer_repeated_in_the_stack_is_written_once() {
    let ctx = TestContext::new();
    let src = fixture_image();
    // An image whose stack repeats the fixture's last layer.
    let layout = ctx.path("rep");
    copy_dir(&fixture_layout(), &layout);
    let mut m = src.manifest.clone();
    let mut c: Value =
        serde_json::from_slice(&read_blob(&fixture_layout(), &src.config_digest)).unwrap();
    let last = m["layers"].as_array().unwrap().last().unwrap().clone();
    m["layers"].as_array_mut().unwrap().push(last);
    let last_id = c["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    c["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(last_id);
    c["history"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"created_by": "repeat"}));
    let put = |bytes: &[u8]| {
        let d = sha256_digest(bytes);
        std::fs::write(layout.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        d
    };
    let c_bytes = serde_json::to_vec(&c).unwrap();
    m["config"]["digest"] = Value::String(put(&c_bytes));
    m["config"]["size"] = Value::from(c_bytes.len());
    let m_bytes = serde_json::to_vec(&m).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": put(&m_bytes), "size": m_bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "rep"}}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let out = ctx.path("rep-out");
    slim(
        &ctx,
        &oci_ref(&layout, "rep"),
        &oci_ref(&out, "r"),
        &["--squash", "none"],
    )
    .assert_success();
    let m = manifest(&out, "r");
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), 4);
    // The repeated layer: identical input and nothing above it changes it
    // except the repeat itself, so the two rewritten layers share one blob
    // only if their contents are equal; either way every blob exists once.
    let blobs = std::fs::read_dir(out.join("blobs/sha256")).unwrap().count();
    let unique: std::collections::BTreeSet<&&str> = layers.iter().collect();
    assert_eq!(
        blobs,
        unique.len() + 2,
        "each layer blob once, plus config and manifest"
    );
    assert_same_tree(fixture_tree(), &tree_of(&ctx.umoci_unpack(&out, "r")));
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

#[test]
fn hardlink_dedup_links_identical_files_and_keeps_the_content() {
    let ctx = TestContext::new();
    let out = ctx.path("dd");
    slim(&ctx, &fixture_ref(), &oci_ref(&out, "d"), &[]).assert_success();
    let tree = tree_of(&ctx.umoci_unpack(&out, "d"));
    let want = fixture_tree();
    assert_eq!(
        tree.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (p, n) in want {
        assert_eq!(
            (
                tree[p].kind,
                tree[p].mode,
                tree[p].uid,
                &tree[p].sha256,
                &tree[p].xattrs
            ),
            (n.kind, n.mode, n.uid, &n.sha256, &n.xattrs),
            "{p}"
        );
    }
    // Everything in a hard-link group has the same content.
    for n in tree.values() {
        for other in &n.hardlinks {
            assert_eq!(tree[other].sha256, n.sha256);
        }
    }
}
