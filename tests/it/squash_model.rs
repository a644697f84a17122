//! The squash against a reference model: random layer stacks (files, dirs,
//! symlinks, hard links, whiteouts, opaque dirs, type changes, overwrites,
//! xattrs, devices, long names) are built as tars in memory and applied in
//! order by a simple extractor written here from the OCI spec's rules; the
//! tree from extracting slim's output must be the same (types, modes,
//! owners, times, link targets, xattrs, contents, hard-link groups).
//!
//! The model applies entries in tar order and lets a whiteout remove only
//! what lower layers made ("whiteout files MUST only apply to resources in
//! lower/parent layers"), independently of how `transform::squash` works.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;

use slim::layer::read::{IndexOptions, LayerIndex, index_layer};
use slim::layer::write::write_plan;
use slim::transform::filter::KeepAll;
use slim::transform::squash::{self, SquashOptions};

// ---------------------------------------------------------------- PRNG --

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------- model --

#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Char(u32, u32),
    Fifo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug)]
struct Inode {
    kind: NodeKind,
    meta: Meta,
}

#[derive(Clone)]
struct Slot {
    inode: Rc<Inode>,
    /// The layer that put this path here (whiteouts act on lower ones).
    layer: usize,
}

/// Per path its kind and metadata, and the hard-link groups.
type View = (
    BTreeMap<String, (NodeKind, Meta)>,
    BTreeSet<BTreeSet<String>>,
);

#[derive(Default, Clone)]
struct Model {
    paths: BTreeMap<String, Slot>,
}

fn is_under(p: &str, dir: &str) -> bool {
    dir.is_empty() || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

impl Model {
    fn remove_lower(&mut self, path: &str, layer: usize, include_self: bool) {
        self.paths.retain(|p, s| {
            let hit = (include_self && p == path) || is_under(p, path);
            !(hit && s.layer < layer)
        });
    }

    /// Applies one tar (already parsed into model entries) as layer `layer`.
    fn apply(&mut self, layer: usize, entries: &[TarEntry]) {
        for e in entries {
            let (dir, base) = match e.path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), e.path.clone()),
            };
            if base == ".wh..wh..opq" {
                self.remove_lower(&dir, layer, false);
                continue;
            }
            if let Some(name) = base.strip_prefix(".wh.") {
                let target = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                self.remove_lower(&target, layer, true);
                continue;
            }
            match &e.kind {
                EKind::Hardlink(target) => {
                    let inode = self
                        .paths
                        .get(target)
                        .expect("generator links to existing files")
                        .inode
                        .clone();
                    self.replace(&e.path, Slot { inode, layer });
                }
                k => {
                    let kind = match k {
                        EKind::File(c) => NodeKind::File(c.clone()),
                        EKind::Dir => NodeKind::Dir,
                        EKind::Symlink(t) => NodeKind::Symlink(t.clone()),
                        EKind::Char(a, b) => NodeKind::Char(*a, *b),
                        EKind::Fifo => NodeKind::Fifo,
                        EKind::Hardlink(_) => unreachable!(),
                    };
                    if kind == NodeKind::Dir
                        && self
                            .paths
                            .get(&e.path)
                            .is_none_or(|existing| existing.inode.kind == NodeKind::Dir)
                    {
                        // Directory over a directory (or over one an earlier
                        // child created implicitly): metadata changes, children stay.
                        let slot = Slot {
                            inode: Rc::new(Inode {
                                kind,
                                meta: e.meta.clone(),
                            }),
                            layer,
                        };
                        self.paths.insert(e.path.clone(), slot);
                        continue;
                    }
                    let slot = Slot {
                        inode: Rc::new(Inode {
                            kind,
                            meta: e.meta.clone(),
                        }),
                        layer,
                    };
                    self.replace(&e.path, slot);
                }
            }
        }
    }

    fn replace(&mut self, path: &str, slot: Slot) {
        self.paths.retain(|p, _| p != path && !is_under(p, path));
        self.paths.insert(path.to_string(), slot);
    }

    /// A comparable view: per path its kind and metadata, plus hard-link
    /// groups as sets of paths.
    fn view(&self) -> View {
        let mut nodes = BTreeMap::new();
        let mut groups: BTreeMap<*const Inode, BTreeSet<String>> = BTreeMap::new();
        for (p, s) in &self.paths {
            nodes.insert(p.clone(), (s.inode.kind.clone(), s.inode.meta.clone()));
            if matches!(s.inode.kind, NodeKind::File(_)) {
                groups
                    .entry(Rc::as_ptr(&s.inode))
                    .or_default()
                    .insert(p.clone());
            }
        }
        let groups = groups.into_values().filter(|g| g.len() > 1).collect();
        (nodes, groups)
    }

    fn kind_of(&self, p: &str) -> Option<&NodeKind> {
        self.paths.get(p).map(|s| &s.inode.kind)
    }
}

// ------------------------------------------------------------ tar model --

#[derive(Clone, Debug)]
enum EKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Char(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
struct TarEntry {
    path: String,
    kind: EKind,
    meta: Meta,
}

fn whiteout_entry(path: &str, opaque: bool) -> TarEntry {
    let name = if opaque {
        if path.is_empty() {
            ".wh..wh..opq".to_string()
        } else {
            format!("{path}/.wh..wh..opq")
        }
    } else {
        match path.rsplit_once('/') {
            Some((d, b)) => format!("{d}/.wh.{b}"),
            None => format!(".wh.{path}"),
        }
    };
    TarEntry {
        path: name,
        kind: EKind::File(Vec::new()),
        meta: Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        },
    }
}

fn to_tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.meta.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = e
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), &v[..]))
                .collect();
            b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.meta.mode);
        h.set_uid(e.meta.uid);
        h.set_gid(e.meta.gid);
        h.set_mtime(e.meta.mtime);
        match &e.kind {
            EKind::File(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, &e.path, &c[..]).unwrap();
            }
            EKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty())
                    .unwrap();
            }
            EKind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &e.path, t).unwrap();
            }
            EKind::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &e.path, t).unwrap();
            }
            EKind::Char(ma, mi) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                h.set_size(0);
                b.append_data(&mut h, &e.path, std::io::empty()).unwrap();
            }
            EKind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                b.append_data(&mut h, &e.path, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Parses a tar (slim's output) into model entries, to apply with the model.
fn from_tar(bytes: &[u8]) -> Vec<TarEntry> {
    let mut a = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let h = e.header().clone();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                if let Some(k) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_string(), x.value_bytes().to_vec());
                }
            }
        }
        let meta = Meta {
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            xattrs,
        };
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let kind = match h.entry_type() {
            tar::EntryType::Regular => {
                let mut c = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut c).unwrap();
                EKind::File(c)
            }
            tar::EntryType::Directory => EKind::Dir,
            tar::EntryType::Symlink => EKind::Symlink(link.unwrap()),
            tar::EntryType::Link => {
                EKind::Hardlink(link.unwrap().trim_start_matches("./").to_string())
            }
            tar::EntryType::Char => EKind::Char(
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap(),
            ),
            tar::EntryType::Fifo => EKind::Fifo,
            other => panic!("unexpected entry type {other:?} in slim's output"),
        };
        if path.is_empty() {
            continue;
        }
        out.push(TarEntry { path, kind, meta });
    }
    out
}

// ------------------------------------------------------------ generator --

const NAMES: &[&str] = &["a", "b", "c", "dir", "x.txt"];

fn random_path(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(3) as usize;
    let mut parts: Vec<String> = (0..depth).map(|_| rng.pick(NAMES).to_string()).collect();
    if rng.chance(5) {
        // A name that needs PAX or GNU long names.
        parts.push(format!("long-{}", "n".repeat(90 + rng.below(80) as usize)));
    }
    parts.join("/")
}

fn random_meta(rng: &mut Rng) -> Meta {
    let mut xattrs = BTreeMap::new();
    if rng.chance(15) {
        xattrs.insert(
            "security.capability".to_string(),
            vec![
                1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        );
    }
    if rng.chance(10) {
        xattrs.insert(
            "user.note".to_string(),
            format!("v{}", rng.below(3)).into_bytes(),
        );
    }
    let jitter = rng.below(1000);
    Meta {
        mode: *rng.pick(&[0o644, 0o755, 0o600, 0o4755, 0o2755, 0o1777]),
        uid: *rng.pick(&[0, 0, 1000, 65534, 3_000_000]),
        gid: *rng.pick(&[0, 0, 1000, 100]),
        mtime: *rng.pick(&[0, 1_600_000_000, 1_700_000_000 + jitter]),
        xattrs,
    }
}

fn random_content(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => Vec::new(),
        1 => b"same content\n".to_vec(),
        _ => (0..rng.below(3000)).map(|_| rng.below(256) as u8).collect(),
    }
}

/// Makes sure `path`'s parents exist as directories in the model `view`,
/// emitting directory entries where needed.
fn ensure_parents(
    rng: &mut Rng,
    view: &Model,
    layer_entries: &mut Vec<TarEntry>,
    path: &str,
    made: &mut BTreeSet<String>,
) {
    let parts: Vec<&str> = path.split('/').collect();
    for i in 1..parts.len() {
        let p = parts[..i].join("/");
        let is_dir = made.contains(&p) || matches!(view.kind_of(&p), Some(NodeKind::Dir));
        if !is_dir {
            layer_entries.push(TarEntry {
                path: p.clone(),
                kind: EKind::Dir,
                meta: Meta {
                    mode: 0o755,
                    ..random_meta(rng)
                },
            });
            made.insert(p);
        }
    }
}

/// One random stack of layers, each a list of tar entries.
fn random_stack(rng: &mut Rng) -> Vec<Vec<TarEntry>> {
    let mut model = Model::default();
    let mut layers = Vec::new();
    for li in 0..(1 + rng.below(5) as usize) {
        let mut whiteouts = Vec::new();
        if li > 0 {
            for _ in 0..rng.below(4) {
                let existing: Vec<String> = model.paths.keys().cloned().collect();
                if existing.is_empty() {
                    break;
                }
                let p = rng.pick(&existing).clone();
                let opaque = matches!(model.kind_of(&p), Some(NodeKind::Dir)) && rng.chance(50);
                whiteouts.push(whiteout_entry(&p, opaque));
            }
            if rng.chance(5) {
                whiteouts.push(whiteout_entry("does/not/exist", false));
            }
        }
        // The generator's view: lower content with this layer's whiteouts applied.
        let mut view = model.clone();
        view.apply(li, &whiteouts);
        let mut entries: Vec<TarEntry> = Vec::new();
        let mut made: BTreeSet<String> = BTreeSet::new();
        for _ in 0..(3 + rng.below(15)) {
            let path = random_path(rng);
            let mut scratch = view.clone();
            scratch.apply(li, &entries);
            if matches!(scratch.kind_of(&path), Some(NodeKind::Dir)) && rng.chance(60) {
                // Keep directories mostly directories, so trees grow.
                continue;
            }
            ensure_parents(rng, &scratch, &mut entries, &path, &mut made);
            let meta = random_meta(rng);
            let kind = match rng.below(10) {
                0..=3 => EKind::File(random_content(rng)),
                4 | 5 => EKind::Dir,
                6 => EKind::Symlink(
                    rng.pick(&["../a", "/etc/passwd", "x.txt", "dangling/target"])
                        .to_string(),
                ),
                7 => {
                    let mut s2 = view.clone();
                    s2.apply(li, &entries);
                    let files: Vec<String> = s2
                        .paths
                        .iter()
                        .filter(|(p, s)| {
                            matches!(s.inode.kind, NodeKind::File(_))
                                && **p != path
                                && !is_under(p, &path)
                                && !is_under(&path, p)
                        })
                        .map(|(p, _)| p.clone())
                        .collect();
                    if files.is_empty() {
                        EKind::File(random_content(rng))
                    } else {
                        EKind::Hardlink(rng.pick(&files).clone())
                    }
                }
                8 => EKind::Char(1, 3),
                _ => EKind::Fifo,
            };
            if matches!(kind, EKind::Dir) {
                made.insert(path.clone());
            } else {
                made.retain(|m| m != &path && !is_under(m, &path));
            }
            entries.push(TarEntry { path, kind, meta });
        }
        // Whiteouts act on lower layers wherever they sit in the tar.
        let mut all = entries;
        for w in whiteouts {
            let at = rng.below(all.len() as u64 + 1) as usize;
            all.insert(at, w);
        }
        model.apply(li, &all);
        layers.push(all);
    }
    layers
}

// --------------------------------------------------------------- runner --

fn index(tars: &[Vec<u8>], rng: &mut Rng) -> Vec<Arc<LayerIndex>> {
    let dir = std::env::temp_dir();
    tars.iter()
        .enumerate()
        .map(|(i, t)| {
            let blob = if rng.chance(50) {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(t).unwrap();
                gz.finish().unwrap()
            } else {
                t.clone()
            };
            Arc::new(
                index_layer(
                    &blob[..],
                    &format!("layer {i}"),
                    None,
                    &dir,
                    &IndexOptions::default(),
                )
                .unwrap(),
            )
        })
        .collect()
}

fn expected(layers: &[Vec<TarEntry>]) -> Model {
    let mut m = Model::default();
    for (i, l) in layers.iter().enumerate() {
        m.apply(i, l);
    }
    m
}

fn assert_same(seed: u64, what: &str, want: &Model, got: &Model, layers: &[Vec<TarEntry>]) {
    let (wn, wg) = want.view();
    let (gn, gg) = got.view();
    if wn != gn || wg != gg {
        let mut diffs = Vec::new();
        for p in wn.keys().chain(gn.keys()).collect::<BTreeSet<_>>() {
            if wn.get(p) != gn.get(p) {
                diffs.push(format!(
                    "  {p}: want {:?}\n       got  {:?}",
                    wn.get(p),
                    gn.get(p)
                ));
            }
        }
        let mut shown = String::new();
        for (i, l) in layers.iter().enumerate() {
            shown.push_str(&format!("layer {i}:\n"));
            for e in l {
                let k = match &e.kind {
                    EKind::File(c) => format!("file({}b)", c.len()),
                    EKind::Dir => "dir".into(),
                    EKind::Symlink(t) => format!("symlink->{t}"),
                    EKind::Hardlink(t) => format!("hardlink->{t}"),
                    EKind::Char(..) => "char".into(),
                    EKind::Fifo => "fifo".into(),
                };
                shown.push_str(&format!("  {} {k} mode={:o}\n", e.path, e.meta.mode));
            }
        }
        panic!(
            "seed {seed} ({what}): trees differ\n{}\nhard links want {wg:?}\n           got  {gg:?}\n{shown}",
            diffs
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Seeds per test; `SLIM_MODEL_SEEDS=5000` for a deeper run.
fn seeds() -> u64 {
    std::env::var("SLIM_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn squash_all_equals_applying_layers_in_order() {
    for seed in 1..=seeds() {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let layers = random_stack(&mut rng);
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| to_tar(l)).collect();
        let idx = index(&tars, &mut rng);
        let opts = SquashOptions {
            base_layers: 0,
            hardlink_dedup: false,
        };
        let (plan, _) = squash::squash(&idx, opts, &KeepAll).unwrap();
        let mut out = Vec::new();
        write_plan(&mut out, &plan, &idx).unwrap();
        let out_entries = from_tar(&out);
        assert!(
            !out_entries
                .iter()
                .any(|e| e.path.rsplit('/').next().unwrap().starts_with(".wh.")),
            "seed {seed}: a whiteout remains in a full squash"
        );
        // Sorted, each directory before its children.
        let paths: Vec<&str> = out_entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(paths, sorted, "seed {seed}: output not sorted");
        let mut got = Model::default();
        got.apply(0, &out_entries);
        assert_same(seed, "squash all", &expected(&layers), &got, &layers);
    }
}

#[test]
fn squash_on_kept_base_layers_equals_the_original_stack() {
    for seed in 1..=seeds() {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
        let layers = random_stack(&mut rng);
        if layers.len() < 2 {
            continue;
        }
        let keep = 1 + rng.below(layers.len() as u64 - 1) as usize;
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| to_tar(l)).collect();
        let idx = index(&tars, &mut rng);
        let opts = SquashOptions {
            base_layers: keep,
            hardlink_dedup: false,
        };
        let (plan, _) = squash::squash(&idx, opts, &KeepAll).unwrap();
        let mut out = Vec::new();
        write_plan(&mut out, &plan, &idx).unwrap();
        let mut got = Model::default();
        for (i, l) in layers[..keep].iter().enumerate() {
            got.apply(i, l);
        }
        got.apply(keep, &from_tar(&out));
        assert_same(
            seed,
            &format!("keep-base {keep}"),
            &expected(&layers),
            &got,
            &layers,
        );
    }
}

#[test]
fn squash_none_keeps_the_stack_meaning() {
    for seed in 1..=seeds() {
        let mut rng = Rng(seed.wrapping_mul(0x94D0_49BB_1331_11EB) | 1);
        let layers = random_stack(&mut rng);
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| to_tar(l)).collect();
        let idx = index(&tars, &mut rng);
        let plans = squash::per_layer(&idx, &KeepAll).unwrap();
        assert_eq!(plans.len(), layers.len());
        let mut got = Model::default();
        for (i, (plan, _)) in plans.iter().enumerate() {
            let mut out = Vec::new();
            write_plan(&mut out, plan, &idx).unwrap();
            let entries = from_tar(&out);
            let mut probe = got.clone();
            for (k, e) in entries.iter().enumerate() {
                if let EKind::Hardlink(t) = &e.kind {
                    let mut p2 = probe.clone();
                    p2.apply(i, &entries[..k]);
                    assert!(
                        p2.paths
                            .get(t)
                            .is_some_and(|s| matches!(s.inode.kind, NodeKind::File(_))),
                        "seed {seed}: output layer {i} links {} to {t}, which is not a file there; output: {:?}\nlayers: {:#?}",
                        e.path,
                        entries
                            .iter()
                            .map(|e| (&e.path, &e.kind))
                            .map(|(p, k)| format!(
                                "{p} {}",
                                match k {
                                    EKind::File(c) => format!("file {}", c.len()),
                                    EKind::Hardlink(t) => format!("link {t}"),
                                    EKind::Dir => "dir".into(),
                                    _ => "other".into(),
                                }
                            ))
                            .collect::<Vec<_>>(),
                        layers
                            .iter()
                            .map(|l| l
                                .iter()
                                .map(|e| format!(
                                    "{} {}",
                                    e.path,
                                    match &e.kind {
                                        EKind::File(c) => format!("file {}", c.len()),
                                        EKind::Hardlink(t) => format!("link {t}"),
                                        EKind::Dir => "dir".into(),
                                        _ => "other".into(),
                                    }
                                ))
                                .collect::<Vec<_>>())
                            .collect::<Vec<_>>()
                    );
                }
            }
            probe.apply(i, &entries);
            got.apply(i, &entries);
        }
        assert_same(seed, "squash none", &expected(&layers), &got, &layers);
    }
}

#[test]
fn hardlink_dedup_links_identical_files_and_keeps_contents() {
    for seed in 1..=100u64 {
        let mut rng = Rng(seed.wrapping_mul(0xA076_1D64_78BD_642F) | 1);
        let layers = random_stack(&mut rng);
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| to_tar(l)).collect();
        let idx = index(&tars, &mut rng);
        let opts = SquashOptions {
            base_layers: 0,
            hardlink_dedup: true,
        };
        let (plan, stats) = squash::squash(&idx, opts, &KeepAll).unwrap();
        let mut out = Vec::new();
        write_plan(&mut out, &plan, &idx).unwrap();
        let mut got = Model::default();
        got.apply(0, &from_tar(&out));
        let (want_nodes, _) = expected(&layers).view();
        let (got_nodes, groups) = got.view();
        // Same paths, kinds and contents; identical files share an inode.
        assert_eq!(
            want_nodes.keys().collect::<Vec<_>>(),
            got_nodes.keys().collect::<Vec<_>>(),
            "seed {seed}"
        );
        for (p, (k, m)) in &want_nodes {
            let (gk, gm) = &got_nodes[p];
            assert_eq!(k, gk, "seed {seed}: {p}");
            assert_eq!(
                (m.mode, m.uid, m.gid, &m.xattrs),
                (gm.mode, gm.uid, gm.gid, &gm.xattrs),
                "seed {seed}: {p}"
            );
        }
        for g in &groups {
            let first = &got_nodes[g.iter().next().unwrap()];
            assert!(
                g.iter().all(|p| got_nodes[p].0 == first.0),
                "seed {seed}: a hard-link group mixes contents"
            );
        }
        let linked_paths: usize = groups.iter().map(|g| g.len() - 1).sum();
        assert!(
            linked_paths as u64 >= stats.hardlinked.files,
            "seed {seed}: stats claim more links than exist"
        );
    }
}
