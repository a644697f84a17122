//! Tests of the rootfs: extraction (whiteouts, hard links, symlinks,
//! xattrs) and the no-escape rule.

use super::*;
use crate::layer::read::{IndexOptions, index_layer};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// One tar entry: `f path content`, `d path`, `l path target`
/// (symlink), `h path target` (hard link), `w path` (raw name, e.g. a
/// `.wh.` whiteout, as an empty file).
fn tar_of(defs: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for def in defs {
        let mut parts = def.splitn(3, ' ');
        let (k, p, rest) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap_or(""),
        );
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match k {
            "f" | "w" => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(rest.len() as u64);
                h.set_path(p).unwrap();
                h.set_cksum();
                b.append(&h, rest.as_bytes()).unwrap();
            }
            "d" => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_path(p).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            "l" | "h" => {
                h.set_entry_type(if k == "l" {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_size(0);
                h.set_path(p).unwrap();
                h.set_link_name(rest).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            other => panic!("unknown kind {other}"),
        }
    }
    b.into_inner().unwrap()
}

fn extract(layers: &[Vec<u8>]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut fs = Rootfs::create(&root).unwrap();
    for (i, l) in layers.iter().enumerate() {
        let idx = index_layer(
            std::io::Cursor::new(l.clone()),
            &format!("layer {i}"),
            None,
            tmp.path(),
            &IndexOptions::default(),
        )
        .unwrap();
        fs.apply(&idx, &format!("layer {i}")).unwrap();
    }
    fs.finish().unwrap();
    (tmp, root)
}

#[test]
fn whiteouts_and_opaque_dirs_hide_only_lower_layers() {
    let (_t, root) = extract(&[
        tar_of(&[
            "d app",
            "f app/keep.txt 1",
            "f app/gone.txt 1",
            "d app/old",
            "f app/old/a 1",
            "f app/old/b 1",
        ]),
        tar_of(&[
            "w app/.wh.gone.txt",
            // The new file comes before the marker in tar order and
            // still stays: the marker hides lower layers only.
            "f app/old/new 2",
            "w app/old/.wh..wh..opq",
        ]),
    ]);
    assert!(root.join("app/keep.txt").exists());
    assert!(!root.join("app/gone.txt").exists());
    assert!(!root.join("app/old/a").exists());
    assert!(!root.join("app/old/b").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("app/old/new")).unwrap(),
        "2"
    );
    assert!(!root.join("app/.wh.gone.txt").exists());
}

#[test]
fn hard_links_share_an_inode_and_symlinks_are_kept_as_links() {
    let (_t, root) = extract(&[tar_of(&[
        "d data",
        "f data/a hello",
        "h data/b data/a",
        "l bin/sh busybox",
    ])]);
    let a = std::fs::metadata(root.join("data/a")).unwrap();
    let b = std::fs::metadata(root.join("data/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    // A parent the layer omitted is made 0755.
    let bin = std::fs::metadata(root.join("bin")).unwrap();
    assert_eq!(bin.permissions().mode() & 0o7777, 0o755);
    assert_eq!(a.permissions().mode() & 0o7777, 0o644);
    assert_eq!(a.mtime(), 1_700_000_000);
}

/// A later entry replaces what was there, of whatever type.
#[test]
fn entries_replace_lower_entries_of_another_type() {
    let (_t, root) = extract(&[
        tar_of(&["d x", "f x/inner 1", "f y 1"]),
        tar_of(&["f x 2", "d y"]),
    ]);
    assert_eq!(std::fs::read_to_string(root.join("x")).unwrap(), "2");
    assert!(root.join("y").is_dir());
}

/// A symlink to `/` or `../..` in one layer, then files written
/// "through" it: they land inside the root, never outside.
#[test]
fn nothing_escapes_the_root_through_symlinks() {
    let (tmp, root) = extract(&[
        tar_of(&[
            "l abs /",
            "l rel ../../../../..",
            "l outside_file /etc/hostname",
        ]),
        tar_of(&[
            "f abs/pwned-abs 1",
            "f rel/pwned-rel 1",
            // Writing over a symlink replaces the link, not its target.
            "f outside_file replaced",
            "h hl outside_file",
        ]),
    ]);
    assert!(root.join("pwned-abs").exists());
    assert!(root.join("pwned-rel").exists());
    assert!(!tmp.path().join("pwned-abs").exists());
    assert!(!tmp.path().join("pwned-rel").exists());
    assert!(!Path::new("/pwned-abs").exists());
    assert!(!Path::new("/pwned-rel").exists());
    assert!(
        std::fs::symlink_metadata(root.join("outside_file"))
            .unwrap()
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("hl")).unwrap(),
        "replaced"
    );
}

/// A hard link "through" a symlink to `/` names the tree's own file,
/// never the host's: here the tree has none, so extraction fails.
#[test]
fn hard_links_never_reach_host_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut fs = Rootfs::create(&root).unwrap();
    for (i, l) in [tar_of(&["l abs /"]), tar_of(&["h stolen abs/etc/hostname"])]
        .iter()
        .enumerate()
    {
        let idx = index_layer(
            std::io::Cursor::new(l.clone()),
            "layer",
            None,
            tmp.path(),
            &IndexOptions::default(),
        )
        .unwrap();
        let r = fs.apply(&idx, "layer");
        if i == 1 {
            let e = format!("{:#}", r.unwrap_err());
            assert!(e.contains("hard link to /abs/etc/hostname"), "{e}");
        }
    }
    assert!(!root.join("stolen").exists());
}

/// A whiteout through a symlinked parent removes inside the root only.
#[test]
fn whiteouts_through_symlinks_stay_inside() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("victim"), b"x").unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let (_t, root) = extract(&[
        tar_of(&[&format!("l link {target}")]),
        tar_of(&["w link/.wh.victim", "w link/.wh..wh..opq"]),
    ]);
    assert!(outside.path().join("victim").exists());
    assert!(std::fs::symlink_metadata(root.join("link")).is_ok());
}

/// Xattrs come from PAX `SCHILY.xattr.*` records; setuid survives the
/// chown that comes before the chmod; owners are set.
#[test]
fn xattrs_modes_and_owners_are_applied() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.user.slim", &b"kept"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o4755);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_size(2);
    h.set_path("usr/bin/tool").unwrap();
    h.set_cksum();
    b.append(&h, &b"#!"[..]).unwrap();
    let (_t, root) = extract(&[b.into_inner().unwrap()]);
    let p = root.join("usr/bin/tool");
    let mut buf = [0u8; 16];
    let n = rfs::getxattr(&p, "user.slim", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"kept");
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
    }
}

#[test]
fn missing_names_the_end_of_a_symlink_chain_and_a_script_interpreter() {
    let (_t, root) = extract(&[tar_of(&[
        "l bin/sh busybox",
        "f app/run.sh #!/bin/sh\necho hi\n",
        "f bin/real 1",
    ])]);
    let fs = Rootfs::open(&root).unwrap();
    assert_eq!(fs.missing("/bin/real"), None);
    assert_eq!(
        fs.missing("/bin/sh").unwrap(),
        "the image has no /bin/busybox (what /bin/sh links to)"
    );
    assert_eq!(
        fs.missing("/app/run.sh").unwrap(),
        "/app/run.sh is a script for /bin/sh, but the image has no /bin/busybox (what /bin/sh links to)"
    );
    assert_eq!(fs.missing("/nope").unwrap(), "the image has no /nope");
}

/// A dynamic executable without its loader: named, since exec would
/// only say "no such file or directory".
#[test]
fn missing_names_a_dynamic_executables_elf_interpreter() {
    let host = std::fs::read("/bin/ls").unwrap();
    let interp = elf_interpreter(&host[..host.len().min(64 << 10)]).expect("/bin/ls is dynamic");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(host.len() as u64);
    h.set_path("bin/ls").unwrap();
    h.set_cksum();
    b.append(&h, &host[..]).unwrap();
    let (_t, root) = extract(&[b.into_inner().unwrap()]);
    let fs = Rootfs::open(&root).unwrap();
    assert_eq!(
        fs.missing("/bin/ls").unwrap(),
        format!("/bin/ls needs the ELF interpreter {interp}, but the image has no {interp}")
    );
}
