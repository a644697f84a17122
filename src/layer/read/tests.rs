//! Unit tests of the layer reader: bounds, refusals, and what the index
//! keeps.

use super::*;
use crate::layer::entry::Kind;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn header(name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    h
}

fn index(blob: &[u8], max: u64) -> Result<LayerIndex> {
    let opts = IndexOptions {
        max_uncompressed: max,
        budget: None,
    };
    index_layer(
        io::Cursor::new(blob),
        "layer L",
        None,
        &std::env::temp_dir(),
        &opts,
    )
}

/// The bound holds on the bytes the decoder produces, whatever the tar
/// headers say: here a tiny archive followed by 2 MiB of zero padding.
#[test]
fn a_layer_inflating_past_the_bound_is_refused() {
    let mut tar = header("a", 3).as_bytes().to_vec();
    tar.extend(b"abc");
    tar.resize(2 << 20, 0);
    if let Err(e) = index(&gzip(&tar), 4 << 20) {
        panic!("within the bound: {e:#}");
    }
    let err = format!("{:#}", index(&gzip(&tar), 1 << 20).err().unwrap());
    assert!(
        err.contains("layer L: decompresses to more than 1048576 bytes"),
        "{err}"
    );
}

/// Regression: a bomb was inflated (and spooled) up to the bound before
/// being refused; headers that declare more than the bound are refused
/// at once. The content is absent here, so only the header can tell.
#[test]
fn a_header_declaring_more_than_the_bound_is_refused_before_its_content() {
    let tar = header("big", 2 << 20).as_bytes().to_vec();
    let err = format!("{:#}", index(&gzip(&tar), 1 << 20).err().unwrap());
    assert!(
        err.contains("decompresses to more than 1048576 bytes"),
        "{err}"
    );
    // Within the bound the same layer is an ordinary truncated tar.
    let err = format!("{:#}", index(&gzip(&tar), 4 << 20).err().unwrap());
    assert!(!err.contains("decompresses to more"), "{err}");
}

/// A header with `name` written as raw bytes (so `""`, `.` or `..`
/// survive), of entry type `ty`, linking to `link`.
fn raw_header(name: &[u8], ty: tar::EntryType, size: u64, link: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.as_ustar_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// A tar of raw `(header, content)` pairs, with its end marker.
fn raw_tar(entries: &[(tar::Header, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, content) in entries {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Regression: an entry named `.`, `./`, `/` or the empty name that is
/// not a directory replaced the root in the squash, wiping the tree.
/// umoci refuses such a layer ("refusing to change type of root
/// directory"); so does slim, naming the layer and the entry.
#[test]
fn a_root_entry_that_is_not_a_directory_is_refused() {
    use tar::EntryType as T;
    let file = raw_header(b"etc/passwd", T::Regular, 5, b"");
    for name in [&b"."[..], b"./", b"/", b"", b".//.", b"./."] {
        for (ty, link) in [
            (T::Regular, &b""[..]),
            (T::Symlink, b"/etc"),
            (T::Link, b"etc/passwd"),
            (T::Fifo, b""),
            (T::Char, b""),
        ] {
            let size = if ty == T::Regular { 4 } else { 0 };
            let tar = raw_tar(&[
                (file.clone(), b"root"),
                (raw_header(name, ty, size, link), b"boom"),
            ]);
            let err = match index(&tar, 1 << 30) {
                Ok(_) => panic!("{name:?} as {ty:?} was accepted"),
                Err(e) => format!("{e:#}"),
            };
            let shown = String::from_utf8_lossy(name);
            assert!(
                err.contains("layer L: entry") && err.contains(&format!("{shown:?}")),
                "{name:?} {ty:?}: {err}"
            );
            assert!(err.contains("root"), "{err}");
        }
    }
}

/// A `.`/`./` directory entry is legitimate: it sets the root's
/// metadata (mode, owner, time).
#[test]
fn a_root_directory_entry_sets_the_root_metadata() {
    let mut root = raw_header(b"./", tar::EntryType::Directory, 0, b"");
    root.set_mode(0o700);
    root.set_cksum();
    let ix = index(&raw_tar(&[(root, b"")]), 1 << 30).unwrap();
    assert_eq!(ix.entries.len(), 1);
    assert_eq!(&*ix.entries[0].path, b"");
    assert_eq!(ix.entries[0].kind(), Kind::Dir);
    assert_eq!(ix.entries[0].mode(), 0o700);
}

/// Regression: `.wh.` with an empty name, `.wh..` and `.wh...` became
/// unnormalised paths (`d/`, `d/.`, `d/..`); umoci treats them as
/// whiteouts of the directory itself or of its parent (which can be the
/// root) and then fails. Refused, naming the entry.
#[test]
fn a_whiteout_of_an_empty_dot_or_dotdot_name_is_refused() {
    for name in [
        &b"d/.wh."[..],
        b"d/.wh..",
        b"d/.wh...",
        b".wh.",
        b".wh..",
        b".wh...",
    ] {
        let tar = raw_tar(&[(raw_header(name, tar::EntryType::Regular, 0, b""), b"")]);
        let err = match index(&tar, 1 << 30) {
            Ok(ix) => panic!(
                "{:?} was accepted as {:?}",
                String::from_utf8_lossy(name),
                ix.entries
                    .iter()
                    .map(|e| (e.display_path(), e.kind()))
                    .collect::<Vec<_>>()
            ),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("layer L: entry") && err.contains("whiteout"),
            "{err}"
        );
    }
}

/// A GNU base-256 numeric field of `len` bytes holding `v` (two's
/// complement, as GNU tar and Go write values octal cannot hold).
pub(crate) fn base256(v: i64, len: usize) -> Vec<u8> {
    let mut f = vec![if v < 0 { 0xff } else { 0 }; len];
    f[len - 8..].copy_from_slice(&v.to_be_bytes());
    f[0] |= 0x80;
    f
}

/// Regression: a negative mtime in a GNU base-256 field (how GNU tar and
/// Go's archive/tar write times before 1970) was read as an unsigned
/// number: -1 became 18446744073709551615, which slim then wrote as a PAX
/// record Go's reader refuses ("invalid tar header"), so umoci could not
/// unpack slim's output at all.
#[test]
fn a_negative_base256_mtime_keeps_its_sign() {
    for t in [
        -1i64,
        -1_000_000_000_000,
        -2_208_988_800,
        1_700_000_000,
        1 << 40,
    ] {
        let mut h = raw_header(b"f", tar::EntryType::Regular, 0, b"");
        h.as_old_mut().mtime.copy_from_slice(&base256(t, 12));
        h.set_cksum();
        let ix = index(&raw_tar(&[(h, b"")]), 1 << 30).unwrap();
        assert_eq!(ix.entries[0].mtime(), t);
    }
}

/// A negative uid or gid has no owner to give a file (Go reads it, and
/// chown(-1) means "leave as is"); slim wrote it back as 2^64-1, which
/// Go refuses. Refused, naming the entry.
#[test]
fn a_negative_uid_or_gid_is_refused() {
    for field in ["uid", "gid"] {
        let mut h = raw_header(b"f", tar::EntryType::Regular, 0, b"");
        let bytes = base256(-1, 8);
        match field {
            "uid" => h.as_old_mut().uid.copy_from_slice(&bytes),
            _ => h.as_old_mut().gid.copy_from_slice(&bytes),
        }
        h.set_cksum();
        let err = format!("{:#}", index(&raw_tar(&[(h, b"")]), 1 << 30).err().unwrap());
        assert!(
            err.contains("layer L: entry /f") && err.contains(&format!("negative {field}")),
            "{err}"
        );
    }
}

/// `"%d key=value\n"` records.
fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// A file entry `name` with `content`, preceded by an extension entry
/// of type `ext` (`x` PAX, `L` GNU long name) holding `ext_data`.
fn with_extension(ext: u8, ext_data: &[u8], name: &[u8], content: &[u8]) -> Vec<u8> {
    let ty = tar::EntryType::new(ext);
    let mut h = raw_header(b"././@LongLink", ty, ext_data.len() as u64, b"");
    if ext == b'L' {
        // GNU long names come with GNU headers.
        h.as_mut_bytes()[257..265].copy_from_slice(b"ustar  \0");
        h.set_cksum();
        assert!(h.as_gnu().is_some());
    }
    let mut tar = raw_tar(&[
        (h, ext_data),
        (
            raw_header(name, tar::EntryType::Regular, content.len() as u64, b""),
            content,
        ),
    ]);
    tar.truncate(tar.len() - 1024);
    tar
}

fn end(mut tar: Vec<u8>) -> Vec<u8> {
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

fn index_limited(tar: &[u8], limits: &Limits) -> Result<LayerIndex> {
    let opts = IndexOptions {
        max_uncompressed: 1 << 40,
        budget: None,
    };
    index_layer_with(
        io::Cursor::new(tar),
        "layer L",
        None,
        &std::env::temp_dir(),
        &opts,
        limits,
    )
}

fn refusal(tar: &[u8]) -> String {
    match index_limited(tar, &Limits::default()) {
        Ok(ix) => panic!("accepted ({} entries)", ix.entries.len()),
        Err(e) => format!("{e:#}"),
    }
}

/// Regression: 2,000 files each with 16 xattrs of 64 KiB (a 9.6 MiB
/// layer) made slim keep 2 GiB of PAX records. Linux caps one xattr
/// value at 64 KiB (XATTR_SIZE_MAX) and the list of an inode's xattr
/// names at 64 KiB (XATTR_LIST_MAX): an entry past either cannot be
/// extracted as it says, and is refused, naming the entry and the limit.
#[test]
fn xattrs_past_what_linux_allows_are_refused() {
    let at_limit = vec![b'v'; 64 << 10];
    let ok = end(with_extension(
        b'x',
        &pax_records(&[("SCHILY.xattr.user.big", &at_limit)]),
        b"f",
        b"",
    ));
    index_limited(&ok, &Limits::default()).unwrap();

    let over = vec![b'v'; (64 << 10) + 1];
    let err = refusal(&end(with_extension(
        b'x',
        &pax_records(&[("SCHILY.xattr.user.big", &over)]),
        b"f",
        b"",
    )));
    assert!(
        err.contains("layer L: entry /f")
            && err.contains("xattr user.big")
            && err.contains("64 KiB"),
        "{err}"
    );

    let names: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("SCHILY.xattr.user.{i:0>400}"), b"v".to_vec()))
        .collect();
    let records: Vec<(&str, &[u8])> = names.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    let err = refusal(&end(with_extension(
        b'x',
        &pax_records(&records),
        b"f",
        b"",
    )));
    assert!(
        err.contains("layer L: entry /f") && err.contains("xattr names") && err.contains("64 KiB"),
        "{err}"
    );
}

/// Every record costs the index two allocations: their number per
/// entry is bounded too.
#[test]
fn too_many_pax_records_for_one_entry_are_refused() {
    let keys: Vec<String> = (0..300).map(|i| format!("x.k{i}")).collect();
    let records: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b""[..])).collect();
    let err = refusal(&end(with_extension(
        b'x',
        &pax_records(&records),
        b"f",
        b"",
    )));
    assert!(
        err.contains("layer L: entry /f") && err.contains("300 PAX records") && err.contains("256"),
        "{err}"
    );
}

/// The tar crate reads a PAX header or GNU long name whole into memory,
/// at the size its header declares: one of 1 GiB would be 1 GiB of RAM.
/// They are refused from the header, before they are read.
#[test]
fn oversized_pax_headers_and_long_names_are_refused_before_they_are_read() {
    let big = vec![b'v'; 1 << 20];
    let pax = pax_records(&[("comment", &big)]);
    let err = refusal(&end(with_extension(b'x', &pax, b"f", b"")));
    assert!(
        err.contains("layer L: a PAX header")
            && err.contains(&format!("{} bytes", pax.len()))
            && err.contains("256 KiB"),
        "{err}"
    );
    // A header declaring far more than the stream holds: refused from
    // the declaration alone.
    let mut h = raw_header(b"PaxHeaders.0/f", tar::EntryType::XHeader, 1 << 30, b"");
    h.set_cksum();
    let err = refusal(h.as_bytes());
    assert!(err.contains("1073741824 bytes"), "{err}");

    let long = vec![b'n'; 8 << 10];
    let err = refusal(&end(with_extension(b'L', &long, b"f", b"")));
    assert!(
        err.contains("layer L: a GNU long name") && err.contains("8192 bytes"),
        "{err}"
    );
    // PATH_MAX and its NUL: accepted.
    let mut at_limit = vec![b'n'; 4096];
    at_limit.push(0);
    index_limited(
        &end(with_extension(b'L', &at_limit, b"f", b"")),
        &Limits::default(),
    )
    .unwrap();
}

/// Paths and link targets longer than PATH_MAX (4096) cannot be
/// created; refused.
#[test]
fn paths_and_link_targets_past_path_max_are_refused() {
    let long = "d/".repeat(2100);
    for key in ["path", "linkpath"] {
        let pax = pax_records(&[(key, long.as_bytes())]);
        let mut tar = with_extension(b'x', &pax, b"f", b"");
        if key == "linkpath" {
            // Make the entry a symlink.
            let at = tar.len() - 512;
            let mut h = raw_header(b"f", tar::EntryType::Symlink, 0, b"x");
            h.set_cksum();
            tar[at..].copy_from_slice(h.as_bytes());
        }
        let err = refusal(&end(tar));
        assert!(
            err.contains("4200 bytes") && err.contains("4096"),
            "{key}: {err}"
        );
    }
    let err = refusal(&end(with_extension(b'L', long.as_bytes(), b"f", b"")));
    assert!(err.contains("4200 bytes") && err.contains("4096"), "{err}");
}

/// The index keeps each entry's carried PAX records until the image is
/// written: their total per layer is bounded (64 MiB by default; here
/// 256 KiB), and a layer past it is refused naming the entry.
#[test]
fn pax_records_a_layer_keeps_are_bounded() {
    let limits = Limits {
        layer_pax: 256 << 10,
        ..Limits::default()
    };
    let value = vec![b'v'; 32 << 10];
    let mut tar = Vec::new();
    for i in 0..7 {
        tar.extend(with_extension(
            b'x',
            &pax_records(&[("SCHILY.xattr.user.v", &value)]),
            format!("f{i}").as_bytes(),
            b"",
        ));
    }
    let ix = index_limited(&end(tar.clone()), &limits).unwrap();
    let kept: usize = ix
        .entries
        .iter()
        .flat_map(|e| e.pax().into_iter().flatten())
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(kept <= 256 << 10, "{kept}");
    for i in 7..9 {
        tar.extend(with_extension(
            b'x',
            &pax_records(&[("SCHILY.xattr.user.v", &value)]),
            format!("f{i}").as_bytes(),
            b"",
        ));
    }
    let err = format!("{:#}", index_limited(&end(tar), &limits).err().unwrap());
    assert!(
        err.contains("layer L: entry /f7") && err.contains("256 KiB of PAX records"),
        "{err}"
    );
}

/// An old-GNU sparse entry is expanded into the spool: its logical size
/// counts against the bound, not the few bytes it stores.
#[test]
fn a_sparse_entry_expanding_past_the_bound_is_refused() {
    let mut h = tar::Header::new_gnu();
    h.set_path("sparse").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(512);
    let g = h.as_gnu_mut().unwrap();
    let octal = |v: u64, f: &mut [u8; 12]| {
        let s = format!("{v:011o}\0");
        f.copy_from_slice(s.as_bytes());
    };
    octal((8 << 20) - 512, &mut g.sparse[0].offset);
    octal(512, &mut g.sparse[0].numbytes);
    octal(8 << 20, &mut g.realsize);
    h.set_cksum();
    let tar = end(raw_tar(&[(h, &[7u8; 512])])[..1024].to_vec());
    index(&tar, 16 << 20).unwrap();
    let err = format!("{:#}", index(&tar, 4 << 20).err().unwrap());
    assert!(
        err.contains("decompresses to more than 4194304 bytes"),
        "{err}"
    );
}

#[test]
fn a_garbage_tar_header_is_reported_on_one_line() {
    let junk = "not a tar\n".repeat(100);
    let err = format!(
        "{:#}",
        index(&gzip(junk.as_bytes()), 1 << 30).err().unwrap()
    );
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.contains("layer L: malformed tar header at the start of the layer"),
        "{err}"
    );
}
