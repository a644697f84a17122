//! Running slim as the tests do, and what every test asserts about a run:
//! the faithful-copy runner, `oci:` references, the fixture's tree as the
//! judge of a round trip, a registry's tags read over raw HTTP, and the
//! clean-failure rule (one `error:` line, no panic, nothing on stdout).

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::context::{Output, TestContext};
use super::fixture::{FIXTURE_TAG, fixture_image, fixture_layout, fixture_ref};
use super::http;
use super::judges::{Skopeo, skopeo_copy};
use super::registry::{Registry, RegistryAuth};
use super::tree::{Tree, assert_same_tree, tree_of};

/// A faithful copy: no squash, no profile.
pub const FAITHFUL: [&str; 4] = ["--squash", "none", "--profile", "none"];

/// What the note says when Docker media types become OCI ones.
pub const CONVERTED_NOTE: &str = "converting Docker v2s2 media types to OCI";

/// `slim SRC -o DST --squash none --profile none EXTRA…`, with
/// `RUST_BACKTRACE=0` so that a failure prints only slim's own lines.
pub fn slim_copy(ctx: &TestContext, src: &str, dst: &str, extra: &[&str]) -> Output {
    slim_copy_with(ctx, src, dst, extra, &[], None)
}

/// [`slim_copy`] with extra environment and optional stdin.
pub fn slim_copy_with(
    ctx: &TestContext,
    src: &str,
    dst: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Output {
    let mut args = vec![src, "-o", dst];
    args.extend(FAITHFUL);
    args.extend(extra);
    let mut envs = vec![("RUST_BACKTRACE", "0")];
    envs.extend(env);
    ctx.slim_with(&args, &envs, stdin)
}

/// The fixture's rootfs as umoci unpacks it, computed once.
pub fn fixture_tree() -> &'static Tree {
    static T: OnceLock<Tree> = OnceLock::new();
    T.get_or_init(|| {
        let ctx = TestContext::new();
        tree_of(&ctx.umoci_unpack(&fixture_layout(), FIXTURE_TAG))
    })
}

/// `oci:PATH:TAG`.
pub fn oci_ref(path: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", path.display())
}

/// Assert that `umoci unpack` of `layout:tag` gives the fixture's tree.
#[track_caller]
pub fn assert_layout_is_fixture(ctx: &TestContext, layout: &Path, tag: &str) {
    let rootfs = ctx.umoci_unpack(layout, tag);
    assert_same_tree(fixture_tree(), &tree_of(&rootfs));
}

/// Assert that the image skopeo reads at `reference` (copied to a fresh
/// layout, then unpacked by umoci) is the fixture's tree.
#[track_caller]
pub fn assert_image_is_fixture(ctx: &TestContext, skopeo: &Skopeo, reference: &str) {
    assert_same_tree(fixture_tree(), &ctx.tree_of_image(skopeo, reference));
}

/// The tags of a registry repository, read over raw HTTP (empty when the
/// repository does not exist), with Basic credentials when given.
pub fn registry_tags(reg: &Registry, repo: &str) -> Vec<String> {
    let auth = reg
        .credentials()
        .filter(|_| reg.auth() == RegistryAuth::Basic)
        .map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let resp = http::request(
        reg.addr(),
        "GET",
        &format!("/v2/{repo}/tags/list"),
        &headers,
        &[],
    )
    .expect("GET tags/list");
    match resp.status {
        404 => Vec::new(),
        200 => {
            let v: Value = serde_json::from_slice(&resp.body).expect("tags JSON");
            v["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        }
        s => panic!("tags/list of {repo}: HTTP {s}: {}", resp.text()),
    }
}

/// The fixture's biggest layer (where a cut or a flipped byte lands well
/// inside the data).
pub fn biggest_layer() -> String {
    let fx = fixture_image();
    fx.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .max_by_key(|l| l["size"].as_u64())
        .and_then(|l| l["digest"].as_str())
        .expect("a layer")
        .to_string()
}

/// `docker-archive:PATH` made by skopeo (not slim) from the fixture.
pub fn skopeo_docker_archive(ctx: &TestContext, name: &str) -> std::path::PathBuf {
    let path = ctx.path(name);
    skopeo_copy(
        &fixture_ref(),
        &format!("docker-archive:{}:demo:latest", path.display()),
        &[],
    );
    path
}

/// Assert a clean failure with exit `code`; returns the `error:` line.
#[track_caller]
pub fn assert_clean_failure(out: &Output, code: i32) -> String {
    out.assert_code(code);
    let stderr = out.stderr_str();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one `error:` line:\n{out}");
    for bad in ["panicked", "backtrace", "\n   0: ", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{bad:?} on stderr:\n{out}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout:\n{out}");
    errors[0].to_string()
}

/// A copy of the fixture layout with one byte flipped in the middle of its
/// biggest layer; returns the layout and that layer's digest.
pub fn corrupt_layout(ctx: &TestContext) -> (std::path::PathBuf, String) {
    let dir = ctx.path("corrupt");
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let src = fixture_layout();
    for f in ["index.json", "oci-layout"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    for e in std::fs::read_dir(src.join("blobs").join("sha256"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    let layer = biggest_layer();
    let path = super::fixture::blob_path(&dir, &layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert_ne!(super::judges::sha256_digest(&bytes), layer);
    (dir, layer)
}
