//! Hostile layers: entries a careless squash reads differently from a real
//! extractor. Each case is built as raw tar bytes, unpacked from the source
//! by umoci (the judge) and squashed by slim; either both trees are the
//! same, or slim refuses the image as umoci does, naming the layer and the
//! entry, and writes nothing.

use std::path::Path;

use crate::harness::*;

/// One tar entry, written with raw headers so that names like `./` or the
/// empty name reach the reader as they are.
#[derive(Clone, Copy)]
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Sym(&'a str, &'a str),
    Link(&'a str, &'a str),
}

fn header(name: &str, ty: tar::EntryType, size: u64, link: &str) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let u = h.as_ustar_mut().unwrap();
    u.name[..name.len()].copy_from_slice(name.as_bytes());
    u.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(if ty.is_dir() { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn tar(entries: &[E<'_>]) -> Vec<u8> {
    use tar::EntryType as T;
    let mut out = Vec::new();
    for e in entries {
        let (h, content): (tar::Header, &[u8]) = match *e {
            E::Dir(n) => (header(n, T::Directory, 0, ""), b""),
            E::File(n, c) => (header(n, T::Regular, c.len() as u64, ""), c),
            E::Sym(n, t) => (header(n, T::Symlink, 0, t), b""),
            E::Link(n, t) => (header(n, T::Link, 0, t), b""),
        };
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn layout(ctx: &TestContext, name: &str, layers: &[&[E<'_>]]) -> (std::path::PathBuf, String) {
    let dir = ctx.path(name);
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| tar(l)).collect();
    let reference = layout_of_tars(&dir, &tars, "v1");
    (dir, reference)
}

fn slim(ctx: &TestContext, src: &str, out: &Path) -> Output {
    ctx.slim_with(
        &[
            src,
            "-o",
            &format!("oci:{}:v1", out.display()),
            "--profile",
            "none",
            "--no-hardlink-dedup",
        ],
        &[("RUST_BACKTRACE", "0")],
        None,
    )
}

/// umoci refuses the source; slim refuses it too, with one error naming
/// the layer and each of `needles`, and writes nothing.
#[track_caller]
fn both_refuse(ctx: &TestContext, layers: &[&[E<'_>]], umoci_says: &str, needles: &[&str]) {
    let (dir, src) = layout(ctx, "src", layers);
    let judged = umoci_try_unpack(&dir, "v1", &ctx.path("bundle"));
    judged.assert_failure();
    judged.assert_stderr_contains(umoci_says);
    let out_dir = ctx.path("out");
    let out = slim(ctx, &src, &out_dir);
    let error = crate::errors::assert_clean_failure(&out, 1);
    let stderr = out.stderr_str();
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in:\n{out}");
    }
    assert!(error.starts_with("error: "), "{out}");
    assert!(!out_dir.exists(), "{} was written", out_dir.display());
}

/// umoci's unpack of the source and of slim's squash are the same tree.
#[track_caller]
fn same_as_umoci(ctx: &TestContext, layers: &[&[E<'_>]]) -> Tree {
    let (dir, src) = layout(ctx, "src", layers);
    let want = tree_of(&ctx.umoci_unpack(&dir, "v1"));
    let out_dir = ctx.path("out");
    slim(ctx, &src, &out_dir).assert_success();
    let got = tree_of(&ctx.umoci_unpack(&out_dir, "v1"));
    assert_same_tree(&want, &got);
    got
}

#[test]
fn a_root_entry_that_is_a_file_is_refused_as_umoci_refuses_it() {
    for root in [
        E::File("./", b"boom"),
        E::File(".", b"boom"),
        E::Sym(".", "/etc"),
        E::Link("./", "etc/passwd"),
    ] {
        let ctx = TestContext::new();
        let name = match root {
            E::File(n, _) | E::Sym(n, _) | E::Link(n, _) | E::Dir(n) => n,
        };
        both_refuse(
            &ctx,
            &[
                &[E::Dir("etc/"), E::File("etc/passwd", b"root:x:0:0\n")],
                &[E::File("etc/hostname", b"h\n"), root],
            ],
            "refusing to change type of root directory",
            &["layer 2/2", &format!("entry {name:?}"), "image root"],
        );
    }
}

#[test]
fn a_root_directory_entry_keeps_the_tree() {
    let ctx = TestContext::new();
    let tree = same_as_umoci(
        &ctx,
        &[
            &[
                E::Dir("./"),
                E::Dir("etc/"),
                E::File("etc/passwd", b"root\n"),
            ],
            &[E::Dir("./"), E::File("etc/hostname", b"h\n")],
        ],
    );
    assert!(tree.contains_key("/etc/passwd"), "{tree:?}");
}

/// A GNU base-256 numeric field of `len` bytes holding `v`.
fn base256(v: i64, len: usize) -> Vec<u8> {
    let mut f = vec![if v < 0 { 0xff } else { 0 }; len];
    f[len - 8..].copy_from_slice(&v.to_be_bytes());
    f[0] |= 0x80;
    f
}

/// A file entry with its mtime in a base-256 header field and, if given,
/// PAX records before it.
fn timed_file(name: &str, mtime: Option<i64>, pax: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    if !pax.is_empty() {
        let mut records = Vec::new();
        for (k, v) in pax {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while len != body.len() + len.to_string().len() {
                len = body.len() + len.to_string().len();
            }
            records.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        let mut h = header(
            &format!("PaxHeaders.0/{name}"),
            tar::EntryType::XHeader,
            records.len() as u64,
            "",
        );
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&records);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    let mut h = header(name, tar::EntryType::Regular, name.len() as u64, "");
    if let Some(t) = mtime {
        h.as_old_mut().mtime.copy_from_slice(&base256(t, 12));
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// Regression: a time before 1970 in a GNU base-256 header field came out
/// as 2^64-1 (about 1.8e19), a PAX record Go's reader refuses, so umoci
/// could not unpack slim's output. Negative times keep their sign (as
/// umoci and containerd apply them); PAX times, fractional or negative,
/// go out verbatim.
#[test]
fn negative_and_fractional_mtimes_come_out_as_umoci_applies_them() {
    let ctx = TestContext::new();
    let mut layer = Vec::new();
    layer.extend(timed_file("gnu-minus-one", Some(-1), &[]));
    layer.extend(timed_file("gnu-minus-1e12", Some(-1_000_000_000_000), &[]));
    layer.extend(timed_file("gnu-1900", Some(-2_208_988_800), &[]));
    layer.extend(timed_file("pax-minus-one", None, &[("mtime", "-1")]));
    layer.extend(timed_file("pax-minus-1.5", None, &[("mtime", "-1.5")]));
    layer.extend(timed_file(
        "pax-fraction",
        None,
        &[("mtime", "1700000000.123")],
    ));
    layer.extend(timed_file("both", Some(-5), &[("mtime", "-7")]));
    layer.extend_from_slice(&[0u8; 1024]);
    let dir = ctx.path("src");
    let src = layout_of_tars(&dir, &[layer], "v1");
    let want = tree_of(&ctx.umoci_unpack(&dir, "v1"));
    let out_dir = ctx.path("out");
    slim(&ctx, &src, &out_dir).assert_success();
    let got = tree_of(&ctx.umoci_unpack(&out_dir, "v1"));
    crate::harness::tree::assert_same_tree_with(
        &want,
        &got,
        crate::harness::tree::CompareOptions { mtime: true },
    );
    assert_eq!(got["/gnu-minus-one"].mtime, -1);
    assert_eq!(got["/pax-minus-one"].mtime, -1);
    assert_eq!(got["/both"].mtime, -7);
}
