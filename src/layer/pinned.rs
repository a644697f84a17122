//! The bytes of a written layer, pinned: a small plan (files, a directory, a
//! symlink, hard links, an xattr, a long name, whiteout and opaque markers,
//! and one file long enough to span several gzip blocks) is written by
//! [`write_plan`] and compressed by [`encode`], and the
//! digests must be exactly these. Any change to a header, a padding, the
//! gzip framing or the zstd parameters fails here in seconds, long before a
//! round trip through a registry would notice.

use super::shared_path::SharedPath;
use std::sync::Arc;

use super::encode::{Codec, encode};
use super::plan::{Item, Plan};
use super::read::{IndexOptions, LayerIndex, index_layer};
use super::write::write_plan;
use crate::image::media::Compression;

/// A tar, as an image builder would write it.
fn source_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |ty: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h.set_username("app").unwrap();
        h.set_groupname("app").unwrap();
        h
    };
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, "etc/", &b""[..]).unwrap();
    // The PAX header applies to the entry after it.
    b.append_pax_extensions([("SCHILY.xattr.user.note", &b"pinned"[..])])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 6);
    b.append_data(&mut h, "etc/hosts", &b"hosts\n"[..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o755, 4);
    b.append_data(&mut h, "etc/tool", &b"\x7fELF"[..]).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "etc/localtime", "/usr/share/zoneinfo/UTC")
        .unwrap();
    let mut h = header(tar::EntryType::Link, 0o644, 0);
    b.append_link(&mut h, "etc/hosts.bak", "etc/hosts").unwrap();
    let long = format!("opt/{}/data", "deep".repeat(30));
    let mut h = header(tar::EntryType::Regular, 0o600, 3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    // 3.5 MiB, compressible but not trivially: several gzip blocks.
    let big: Vec<u8> = (0..(7usize << 19))
        .map(|i| ((i * 7919) % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let mut h = header(tar::EntryType::Regular, 0o644, big.len() as u64);
    b.append_data(&mut h, "srv/big.bin", &big[..]).unwrap();
    b.into_inner().unwrap()
}

fn layer() -> Arc<LayerIndex> {
    let tar = source_tar();
    let idx = index_layer(
        &tar[..],
        "pinned layer",
        None,
        &std::env::temp_dir(),
        &IndexOptions::default(),
    )
    .unwrap();
    Arc::new(idx)
}

/// Every entry as it is, then what squash adds: a second name for a
/// file as a hard link, a whiteout and an opaque marker.
fn plan(layers: &[Arc<LayerIndex>]) -> Plan {
    let layer = &layers[0];
    let mut items: Vec<Item> = layer
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| Item::Entry {
            path: SharedPath::from(&e.path[..]),
            layer: 0,
            index: i as u32,
            link_to: None,
        })
        .collect();
    let tool = layer
        .entries
        .iter()
        .position(|e| &e.path[..] == b"etc/tool")
        .unwrap();
    items.push(Item::Entry {
        path: SharedPath::from(&b"etc/tool2"[..]),
        layer: 0,
        index: tool as u32,
        link_to: Some(SharedPath::from(&b"etc/tool"[..])),
    });
    items.push(Item::Whiteout(SharedPath::from(&b"etc/motd"[..])));
    items.push(Item::Opaque(SharedPath::from(&b"srv"[..])));
    Plan::from_items(items, layers)
}

/// (blob digest, diff_id) of the plan written with `compression` on
/// `threads` workers.
fn written(compression: Compression, threads: usize) -> (String, String) {
    let layers = [layer()];
    let plan = plan(&layers);
    let codec = Codec {
        compression,
        level: Codec::default_level(compression),
        threads,
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = encode(file, codec, None, |w| write_plan(w, &plan, &layers)).unwrap();
    (out.digest.to_string(), out.diff_id.to_string())
}

const DIFF_ID: &str = "sha256:6a30d932a769fbf210fcde70620b9e20124141ec85a18e262e3abf577e13403d";

#[test]
fn written_layers_have_exactly_these_digests() {
    let gzip = "sha256:1cea37cdfbb20c51e75efac25c800a7cab699f45e0f4c5c760ac8a14f0c5daaf";
    let zstd = "sha256:9fb9a3d35721f97b5a2d1470af8da4a4d2ae97be94f851a51d149f36d0b5234e";
    for (compression, threads, blob) in [
        (Compression::None, 1, DIFF_ID),
        (Compression::Gzip, 1, gzip),
        (Compression::Gzip, 3, gzip),
        (Compression::Zstd, 1, zstd),
        (Compression::Zstd, 3, zstd),
    ] {
        let got = written(compression, threads);
        assert_eq!(
            got,
            (blob.to_string(), DIFF_ID.to_string()),
            "{compression:?} on {threads} thread(s)"
        );
    }
}
