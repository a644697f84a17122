//! Property tests of the layer reader and the squash on hostile input:
//! arbitrary bytes (plain, gzipped, cut from a valid tar) and arbitrary
//! structured tars (random headers and types, PAX records, GNU long names,
//! names with `.`, `..`, `/`, the empty name, whiteouts, very long names,
//! hard and symbolic links, base-256 numbers, sizes that lie). For each:
//! no panic; an error is an error; what is accepted stays within the
//! memory bounds of `layer::limits`; and when the squash (all, none, on a
//! kept base) accepts a stack, its output is a tar slim reads back, with
//! normalised paths.
//!
//! CI runs a hundred or so cases per property (a few seconds). A deeper
//! run (20,000 cases per property: 2.5 minutes in release on 2 shared cores):
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --release --test it fuzz_layers
//! ```
//!
//! A failure prints the minimal input proptest shrank it to.

use std::io::Write;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::Config;

use slim::layer::limits::Limits;
use slim::layer::plan::{Item, Plan};
use slim::layer::read::{IndexOptions, LayerIndex, index_layer};
use slim::layer::write::write_plan;
use slim::transform::filter::KeepAll;
use slim::transform::squash::{self, SquashOptions};

/// `cases` unless `PROPTEST_CASES` says otherwise; no regression files.
fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

fn opts() -> IndexOptions {
    IndexOptions {
        // Small, so that lying sizes meet the bomb check too.
        max_uncompressed: 64 << 20,
        budget: None,
    }
}

fn index(blob: &[u8]) -> anyhow::Result<LayerIndex> {
    index_layer(blob, "layer F", None, &std::env::temp_dir(), &opts())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// What an accepted layer may hold, by `Limits::default()`.
fn assert_within_bounds(ix: &LayerIndex) {
    let limits = Limits::default();
    let mut kept = 0u64;
    for e in &ix.entries {
        assert!(e.path.len() <= limits.name, "path of {}", e.path.len());
        assert!(
            !e.path
                .split(|b| *b == b'/')
                .any(|c| c == b".." || c == b"."),
            "unnormalised path {:?}",
            e.display_path()
        );
        let records = e.pax().unwrap_or_default();
        assert!(records.len() <= limits.pax_records);
        let bytes: u64 = records
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        assert!(bytes <= limits.pax_header, "{bytes} bytes of PAX records");
        for (_, v) in e.xattrs() {
            assert!(v.len() <= limits.xattr_value);
        }
        kept += bytes;
    }
    assert!(kept <= limits.layer_pax);
}

// ------------------------------------------------------ structured tars --

/// A numeric header field: octal text, GNU base-256, or garbage.
#[derive(Clone, Debug)]
enum Num {
    Octal(u64),
    Base256(i64),
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
struct FEntry {
    name: Vec<u8>,
    /// GNU long name (`L`) before the header when the name is long.
    gnu_long: bool,
    ty: u8,
    link: Vec<u8>,
    content: Vec<u8>,
    /// The size field, when it lies about the content.
    size_lie: Option<u64>,
    mode: u32,
    uid: Num,
    mtime: Num,
    pax: Vec<(String, Vec<u8>)>,
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    // Mostly names extraction takes, so that stacks reach the squash; the
    // hostile ones often enough to meet each a few times per run.
    let comp = prop_oneof![
        60 => prop::sample::select(vec!["a", "b", "etc", "dir", "x.txt"]).prop_map(str::to_string),
        6 => prop::sample::select(vec![".", ""]).prop_map(str::to_string),
        1 => Just("..".to_string()),
        6 => prop::sample::select(vec![".wh.a", ".wh.b", ".wh..wh..opq", ".wh..wh.plnk"])
            .prop_map(str::to_string),
        1 => prop::sample::select(vec![".wh.", ".wh..", ".wh..."]).prop_map(str::to_string),
        3 => (1usize..300).prop_map(|n| "n".repeat(n)),
        3 => prop::collection::vec(any::<u8>(), 1..8)
            .prop_map(|b| String::from_utf8_lossy(&b).replace('/', "_")),
    ];
    let lead = prop_oneof![
        30 => Just(""),
        3 => Just("/"),
        3 => Just("./"),
        1 => Just("../"),
    ];
    (
        lead,
        prop_oneof![30 => prop::collection::vec(comp.clone(), 1..5), 1 => prop::collection::vec(comp, 0..2)],
        any::<bool>(),
        prop::option::weighted(0.01, 1usize..1200),
    )
        .prop_map(|(lead, comps, slash, huge)| {
            let mut s = format!("{lead}{}", comps.join("/"));
            if slash {
                s.push('/');
            }
            if let Some(n) = huge {
                s.push_str(&"abcd/".repeat(n));
            }
            s.into_bytes()
        })
}

fn num_strategy(max_octal: u64) -> impl Strategy<Value = Num> {
    prop_oneof![
        60 => (0..=max_octal).prop_map(Num::Octal),
        2 => any::<i64>().prop_map(Num::Base256),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Num::Raw),
    ]
}

fn pax_strategy() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let key = prop::sample::select(vec![
        "path",
        "linkpath",
        "size",
        "mtime",
        "uid",
        "gid",
        "uname",
        "comment",
        "atime",
        "GNU.sparse.name",
        "SCHILY.xattr.user.x",
        "SCHILY.xattr.security.capability",
        "LIBARCHIVE.xattr.user.y",
        "weird key",
    ]);
    let value = prop_oneof![
        12 => prop::collection::vec(any::<u8>(), 0..24),
        2 => prop::sample::select(vec!["-1", "-1.5", "1700000000.123", "18446744073709551616", "0", "12", "x"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => name_strategy(),
        1 => (1usize..(80 << 10)).prop_map(|n| vec![b'v'; n]),
    ];
    prop::collection::vec((key.prop_map(str::to_string), value), 0..3)
}

fn entry_strategy() -> impl Strategy<Value = FEntry> {
    let ty = prop_oneof![
        18 => Just(b'0'),
        12 => Just(b'5'),
        9 => Just(b'2'),
        6 => Just(b'1'),
        2 => prop::sample::select(vec![b'\0', b'3', b'4', b'6', b'7']),
        1 => prop::sample::select(vec![b'S', b'x', b'g', b'L', b'K', b'V', b'M', b'Z']),
    ];
    (
        (name_strategy(), any::<bool>(), ty, name_strategy()),
        (
            prop::collection::vec(any::<u8>(), 0..600),
            prop::option::weighted(0.02, prop_oneof![0u64..2048, Just(1u64 << 40)]),
            prop::sample::select(vec![0o644u32, 0o755, 0o4755, 0o7777, 0]),
        ),
        (
            num_strategy(0o7777777),
            num_strategy(0o77777777777),
            prop::option::weighted(0.3, pax_strategy()).prop_map(Option::unwrap_or_default),
        ),
    )
        .prop_map(
            |((name, gnu_long, ty, link), (content, size_lie, mode), (uid, mtime, pax))| FEntry {
                name,
                gnu_long,
                ty,
                link,
                content,
                size_lie,
                mode,
                uid,
                mtime,
                pax,
            },
        )
}

fn put_num(field: &mut [u8], n: &Num) {
    match n {
        Num::Octal(v) => {
            let s = format!("{v:0width$o}\0", width = field.len() - 1);
            let b = s.as_bytes();
            field.copy_from_slice(&b[b.len() - field.len()..]);
        }
        Num::Base256(v) => {
            let len = field.len();
            field.fill(if *v < 0 { 0xff } else { 0 });
            field[len - 8..].copy_from_slice(&v.to_be_bytes());
            field[0] |= 0x80;
        }
        Num::Raw(b) => {
            let n = b.len().min(field.len());
            field[..n].copy_from_slice(&b[..n]);
        }
    }
}

/// Owner, mode and time fields of a header.
struct Meta<'a> {
    mode: u32,
    uid: &'a Num,
    mtime: &'a Num,
}

const ZERO: Num = Num::Octal(0);
const PLAIN: Meta<'static> = Meta {
    mode: 0o644,
    uid: &ZERO,
    mtime: &ZERO,
};

fn header_block(
    name: &[u8],
    ty: u8,
    size: u64,
    link: &[u8],
    Meta { mode, uid, mtime }: Meta<'_>,
    gnu: bool,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    put_num(&mut h[100..108], &Num::Octal(u64::from(mode & 0o7777777)));
    put_num(&mut h[108..116], uid);
    put_num(&mut h[116..124], &Num::Octal(0));
    if size <= 0o77777777777 {
        put_num(&mut h[124..136], &Num::Octal(size));
    } else {
        put_num(&mut h[124..136], &Num::Base256(size as i64));
    }
    put_num(&mut h[136..148], mtime);
    h[156] = ty;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(if gnu { b"ustar  \0" } else { b"ustar\x0000" });
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// The entries as tar bytes, written by hand so that anything goes.
fn to_tar(entries: &[FEntry], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if !e.pax.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &e.pax {
                let body = k.len() + v.len() + 3;
                let mut len = body + 1;
                while len != body + len.to_string().len() {
                    len = body + len.to_string().len();
                }
                data.extend_from_slice(format!("{len} {k}=").as_bytes());
                data.extend_from_slice(v);
                data.push(b'\n');
            }
            out.extend(header_block(
                b"PaxHeaders.0/x",
                b'x',
                data.len() as u64,
                b"",
                PLAIN,
                false,
            ));
            out.extend(data);
            pad(&mut out);
        }
        if e.gnu_long && e.name.len() > 100 {
            let mut data = e.name.clone();
            data.push(0);
            out.extend(header_block(
                b"././@LongLink",
                b'L',
                data.len() as u64,
                b"",
                PLAIN,
                true,
            ));
            out.extend(data);
            pad(&mut out);
        }
        let size = e.size_lie.unwrap_or(e.content.len() as u64);
        let meta = Meta {
            mode: e.mode,
            uid: &e.uid,
            mtime: &e.mtime,
        };
        out.extend(header_block(&e.name, e.ty, size, &e.link, meta, e.gnu_long));
        out.extend_from_slice(&e.content);
        pad(&mut out);
    }
    if end {
        out.extend_from_slice(&[0u8; 1024]);
    }
    out
}

/// Squash all, on every kept base, and per layer; what is accepted is
/// written, and slim reads its own output back.
fn squash_and_write(idx: &[Arc<LayerIndex>]) {
    for base in 0..idx.len() {
        let opts = SquashOptions {
            base_layers: base,
            hardlink_dedup: base % 2 == 0,
        };
        if let Ok((plan, _)) = squash::squash(idx, opts, &KeepAll) {
            read_back(&plan, idx);
        }
    }
    if let Ok(plans) = squash::per_layer(idx, &KeepAll) {
        for (plan, _) in plans {
            read_back(&plan, idx);
        }
    }
}

fn read_back(plan: &Plan, idx: &[Arc<LayerIndex>]) {
    let mut out = Vec::new();
    match write_plan(&mut out, plan, idx) {
        Ok(()) => {}
        // Refusing to write is fine (a device number no header holds, say);
        // a panic is not.
        Err(_) => return,
    }
    match index(&out) {
        Ok(back) => assert_within_bounds(&back),
        // The tar crate splits PAX records at newlines (Go's reader and
        // the format go by their lengths): a name, link or xattr holding a
        // newline goes out valid but the tar crate cannot read it back.
        Err(e) if format!("{e:#}").contains("malformed pax extension") => {
            assert!(plan_has_a_newline(plan, idx), "{e:#}")
        }
        Err(e) => panic!("slim cannot read its own output: {e:#}"),
    }
}

fn plan_has_a_newline(plan: &Plan, idx: &[Arc<LayerIndex>]) -> bool {
    plan.iter(idx).any(|item| match item {
        Item::Entry {
            path,
            layer,
            index,
            link_to,
        } => {
            let e = &idx[layer as usize].entries[index as usize];
            let nl = |b: &[u8]| b.contains(&b'\n');
            nl(&path)
                || link_to.as_deref().is_some_and(nl)
                || e.link().is_some_and(nl)
                || e.pax().into_iter().flatten().any(|(_, v)| nl(v))
        }
        Item::Rewritten {
            path, layer, index, ..
        } => {
            let e = &idx[layer as usize].entries[index as usize];
            path.contains(&b'\n')
                || e.pax()
                    .into_iter()
                    .flatten()
                    .any(|(_, v)| v.contains(&b'\n'))
        }
        Item::Whiteout(p) | Item::Opaque(p) => p.contains(&b'\n'),
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary bytes, plain or gzipped: an error or an index, never a
    /// panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_layer_reader(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        zipped in any::<bool>(),
    ) {
        let blob = if zipped { gzip(&bytes) } else { bytes };
        if let Ok(ix) = index(&blob) {
            assert_within_bounds(&ix);
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Arbitrary structured tars, whole or cut short, with bytes flipped:
    /// the reader and every squash mode return errors or bounded results.
    #[test]
    fn arbitrary_structured_tars_never_panic_the_reader_or_the_squash(
        layers in prop::collection::vec(prop::collection::vec(entry_strategy(), 0..10), 1..4),
        cut in prop::option::weighted(0.15, any::<prop::sample::Index>()),
        flip in prop::option::weighted(0.15, (any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut idx = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let mut tar = to_tar(l, true);
            if i == 0 {
                if let Some(at) = cut {
                    tar.truncate(at.index(tar.len() + 1));
                }
                if let Some((at, b)) = flip && !tar.is_empty() {
                    let at = at.index(tar.len());
                    tar[at] ^= b | 1;
                }
            }
            match index(&tar) {
                Ok(ix) => {
                    assert_within_bounds(&ix);
                    idx.push(Arc::new(ix));
                }
                Err(e) => {
                    // One line, naming the layer.
                    let text = format!("{e:#}");
                    prop_assert!(text.contains("layer F"), "{}", text);
                }
            }
        }
        squash_and_write(&idx);
    }

    /// Valid tars the tar crate writes (GNU long names, PAX xattrs and
    /// times within the bounds, links) are never refused: the header guard
    /// keeps step with the tar reader.
    #[test]
    fn valid_tars_within_the_bounds_are_always_read(
        files in prop::collection::vec(
            (
                prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "dir"]), 1..4),
                1usize..250,
                prop::collection::vec(any::<u8>(), 0..1500),
                0usize..3,
                any::<bool>(),
            ),
            1..12,
        ),
    ) {
        let mut b = tar::Builder::new(Vec::new());
        for (i, (dirs, name_len, content, xattrs, big)) in files.iter().enumerate() {
            let path = format!("{}/{i}-{}", dirs.join("/"), "n".repeat(*name_len));
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            if *xattrs > 0 {
                let value = vec![b'v'; if *big { 64 << 10 } else { 20 }];
                let recs: Vec<(String, Vec<u8>)> = (0..*xattrs)
                    .map(|k| (format!("SCHILY.xattr.user.k{k}"), value.clone()))
                    .chain([("mtime".to_string(), b"1700000000.5".to_vec())])
                    .collect();
                b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), &v[..]))).unwrap();
            }
            if i % 4 == 3 {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &path, "x".repeat(*name_len)).unwrap();
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, &path, &content[..]).unwrap();
            }
        }
        let tar = b.into_inner().unwrap();
        let ix = index(&tar).unwrap_or_else(|e| panic!("refused: {e:#}"));
        prop_assert_eq!(ix.entries.len(), files.len());
        assert_within_bounds(&ix);
    }
}
