//! Decode and index one layer: the compressed blob is read once, through the
//! digest check, decompressed on one thread, and parsed as tar on another;
//! file contents go to a spool file and every entry's header to an
//! [`Entry`]. The result lets later stages read any file's bytes at random
//! without decompressing again.
//!
//! Checks on the way: the blob's digest (the caller's verifying reader is
//! drained to its end), the uncompressed content against the diff_id the
//! config names, a bound on the uncompressed size (decompression bombs,
//! sparse files counted at their expanded size), paths that would escape the
//! root, and the bounds of [`Limits`] on what one entry's headers hold and
//! what the index keeps (so memory follows the number of files, not what a
//! layer declares).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sha2::Digest as _;

use super::entry::{self, Entry, Kind, PaxRecord, Whiteout};
use super::limits::{self, HeaderGuard, Limits};
use super::pipe::{self, PipeReader};
use crate::decompress as decode;
use crate::digest::{Algorithm, Digest, HashingReader};
use crate::image::media::Compression;

/// A decoded layer: its entries in tar order and the spool holding their
/// contents.
pub struct LayerIndex {
    pub entries: Vec<Entry>,
    pub spool: Arc<File>,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub compression: Compression,
}

#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// Hash every file's content (for hard-link dedup).
    pub hash_contents: bool,
    /// Refuse layers that decompress to more than this.
    pub max_uncompressed: u64,
    /// What the indexes of the image's layers may hold together (`None`:
    /// unbounded).
    pub budget: Option<std::sync::Arc<limits::IndexBudget>>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            hash_contents: true,
            max_uncompressed: 64 << 30,
            budget: None,
        }
    }
}

/// Decodes and indexes a layer. `raw` yields the blob's bytes and must fail
/// at its end if they do not match the blob digest; `expected_diff_id`, when
/// known, is checked against the uncompressed bytes.
pub fn index_layer(
    raw: impl Read + Send,
    what: &str,
    expected_diff_id: Option<&Digest>,
    spool_dir: &Path,
    opts: &IndexOptions,
) -> Result<LayerIndex> {
    index_layer_with(
        raw,
        what,
        expected_diff_id,
        spool_dir,
        opts,
        &Limits::default(),
    )
}

/// [`index_layer`] within `limits` instead of the defaults.
pub fn index_layer_with(
    mut raw: impl Read + Send,
    what: &str,
    expected_diff_id: Option<&Digest>,
    spool_dir: &Path,
    opts: &IndexOptions,
    limits: &Limits,
) -> Result<LayerIndex> {
    let spool = tempfile::tempfile_in(spool_dir)
        .with_context(|| format!("creating a spool file in {}", spool_dir.display()))?;
    let spool_writer = spool.try_clone()?;
    let (writer, reader) = pipe::pipe(8);
    let max = opts.max_uncompressed;

    let (decoded, parsed) = std::thread::scope(|s| {
        // Decompression (and the blob digest) on this thread; the tar
        // parse, the diff_id and the spool on the other.
        let decoder = s.spawn(move || -> Result<Compression> {
            let (compression, mut dec) = decode::decoder(BufReader::with_capacity(256 << 10, &mut raw))
                .map_err(io_error)?;
            let mut w = writer;
            let mut written = 0u64;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match dec.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // The verifying reader under the decoder failed: that
                    // is the error, not the compression.
                    Err(e) if crate::digest::digest_error_in(&e).is_some() => {
                        return Err(io_error(e));
                    }
                    Err(e) => {
                        drop(dec);
                        // A blob that does not match its digest mostly fails
                        // to decode before its end; read the rest so that the
                        // verifying reader can say so, and report that.
                        if let Err(d) = io::copy(&mut raw, &mut io::sink())
                            && crate::digest::digest_error_in(&d).is_some()
                        {
                            return Err(io_error(d));
                        }
                        return Err(io_error(e)).with_context(|| {
                            format!(
                                "{what}: corrupt {} stream, though the blob matches its digest: the image was stored damaged (build and push it again)",
                                compression.name()
                            )
                        });
                    }
                };
                w.write_all(&buf[..n])
                    .with_context(|| format!("{what}: the tar reader stopped"))?;
                written += n as u64;
                if written > max {
                    return Err(too_big(what, max));
                }
            }
            drop(dec);
            // Trailing bytes after the compressed stream still count for the
            // blob digest: read to the end so the verifying reader checks it.
            io::copy(&mut raw, &mut io::sink()).map_err(io_error)?;
            w.finish().with_context(|| format!("{what}: the tar reader stopped"))?;
            Ok(compression)
        });
        let parser = s.spawn(move || parse_entries(reader, spool_writer, what, opts, limits));
        (
            decoder.join().expect("decoder thread panicked"),
            parser.join().expect("tar parser thread panicked"),
        )
    });
    // When both fail, one stopped because the other did: report the cause.
    let compression = match (decoded, &parsed) {
        (Err(e), Err(_)) if is_broken_pipe(&e) => return parsed.map(|_| unreachable!()),
        (d, _) => d?,
    };
    let (entries, diff_id, uncompressed_size) = parsed?;
    if let Some(expected) = expected_diff_id
        && expected != &diff_id
    {
        bail!(
            "{what}: uncompressed content hashes to {diff_id}, but the image config says {expected} (corrupt layer or config)"
        );
    }
    Ok(LayerIndex {
        entries,
        spool: Arc::new(spool),
        diff_id,
        uncompressed_size,
        compression,
    })
}

/// An I/O error from the blob reader as an error: a digest failure the
/// verifying reader raised comes out as that [`crate::digest::DigestError`]
/// (so the message names the blob); anything else stays the `io::Error` it
/// is, which prints the same (an `io::Error` shows its inner error).
fn io_error(e: io::Error) -> anyhow::Error {
    if crate::digest::digest_error_in(&e).is_some() {
        let inner = e.into_inner().expect("checked");
        match inner.downcast::<crate::digest::DigestError>() {
            Ok(d) => anyhow::Error::new(*d),
            Err(other) => anyhow::anyhow!(other),
        }
    } else {
        anyhow::Error::new(e)
    }
}

/// The decompression-bomb refusal, naming the flag that sets the bound.
fn too_big(what: &str, max: u64) -> anyhow::Error {
    let bound = if max >= 1 << 30 && max.is_multiple_of(1 << 30) {
        format!("{} GiB", max >> 30)
    } else {
        format!("{max} bytes")
    };
    anyhow::anyhow!(
        "{what}: decompresses to more than {bound} (--max-layer-size); refusing it as a likely decompression bomb (raise --max-layer-size, in GiB, if the layer really is that big)"
    )
}

/// A numeric header field in GNU base-256 form (first byte with its high
/// bit set), read as Go's archive/tar reads it: two's complement, signed
/// by the next bit. `None` for an octal field (the tar crate reads those)
/// or a value that does not fit an `i64` (the tar crate then fails too).
fn signed_field(field: &[u8]) -> Option<i64> {
    let first = *field.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let inv = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, b) in field.iter().enumerate() {
        let mut c = b ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 != 0 {
            return None;
        }
        x = (x << 8) | u64::from(c);
    }
    if x >> 63 != 0 {
        return None;
    }
    Some(if inv == 0xff { !(x as i64) } else { x as i64 })
}

/// The refusal of an entry that stands for the root but is not a directory
/// (`./` as a file, a symlink, a hard link…): extracted, it would replace
/// the whole tree. umoci refuses it as malicious; containerd skips every
/// root entry. slim refuses it too: no extractor gives it a meaning.
fn root_replaced(what: &str, raw_name: &[u8], ty: tar::EntryType) -> anyhow::Error {
    use tar::EntryType as T;
    let kind = match ty {
        T::Regular | T::Continuous | T::GNUSparse => "regular file".to_string(),
        T::Symlink => "symlink".to_string(),
        T::Link => "hard link".to_string(),
        T::Char => "character device".to_string(),
        T::Block => "block device".to_string(),
        T::Fifo => "fifo".to_string(),
        other => format!("entry of type {:?}", other.as_byte() as char),
    };
    anyhow::anyhow!(
        "{what}: entry {:?} names the image root but is a {kind}, not a directory; extracting it would replace the whole tree (umoci refuses it too); the layer is malformed or malicious",
        String::from_utf8_lossy(raw_name)
    )
}

/// A tar error as one line: the tar crate ends some messages with the raw
/// path bytes of the bad header ("… when getting cksum for <bytes>"), newlines
/// and all, which are garbage when the header is.
fn tar_error_text(e: &io::Error) -> String {
    let mut text = e.to_string();
    if let Some(i) = text.find(" when getting ")
        && let Some(j) = text[i..].find(" for ")
    {
        text.truncate(i + j);
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn parse_entries(
    reader: PipeReader,
    spool: File,
    what: &str,
    opts: &IndexOptions,
    limits: &Limits,
) -> Result<(Vec<Entry>, Digest, u64)> {
    let mut archive = tar::Archive::new(HeaderGuard::new(
        HashingReader::new(reader, Algorithm::Sha256),
        limits,
    ));
    // PAX record bytes the index keeps for this layer.
    let mut kept_pax = 0u64;
    let mut spool = BufWriter::with_capacity(1 << 20, spool);
    let mut offset = 0u64;
    let mut out: Vec<Entry> = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    {
        let entries = archive
            .entries()
            .with_context(|| format!("{what}: not a tar stream"))?;
        // Header sizes declared so far: a layer whose headers promise more
        // than the bound is refused before its contents are inflated.
        let mut declared = 0u64;
        for e in entries {
            let mut e = e.map_err(|err| {
                if let Some(o) = limits::oversized_in(&err) {
                    return anyhow::anyhow!("{what}: {o}");
                }
                let place = match out.last() {
                    Some(last) => format!("after entry {}", entry::display(&last.path)),
                    None => "at the start of the layer".to_string(),
                };
                anyhow::anyhow!(
                    "{what}: malformed tar header {place} ({}); the layer is not a valid tar stream",
                    tar_error_text(&err)
                )
            })?;
            // An old-GNU sparse entry is spooled at its expanded size.
            declared = declared
                .saturating_add(512)
                .saturating_add(e.header().entry_size().unwrap_or(0).max(e.size()));
            if declared > opts.max_uncompressed {
                return Err(too_big(what, opts.max_uncompressed));
            }
            let ty = e.header().entry_type();
            if ty.is_pax_global_extensions() {
                tracing::warn!("{what}: ignoring a global PAX header");
                continue;
            }
            let raw_path = e.path_bytes().into_owned();
            if raw_path.len() > limits.name {
                bail!(
                    "{what}: entry {}…: a path of {} bytes, longer than PATH_MAX ({}); the layer is malformed or malicious",
                    entry::display(&raw_path[..raw_path.len().min(64)]),
                    raw_path.len(),
                    limits.name
                );
            }
            let path =
                entry::normalize(&raw_path).map_err(|err| anyhow::anyhow!("{what}: {err}"))?;
            let shown = entry::display(&path);
            let ctx = || format!("{what}: entry {shown}");
            let h = e.header();
            let mode = h.mode().with_context(ctx)?;
            let uid = h.uid().with_context(ctx)?;
            let gid = h.gid().with_context(ctx)?;
            let old = h.as_old();
            for (name, field) in [("uid", &old.uid[..]), ("gid", &old.gid[..])] {
                if signed_field(field).is_some_and(|v| v < 0) {
                    bail!(
                        "{}: negative {name} in its header; no owner can be given to it (the layer is malformed or malicious)",
                        ctx()
                    );
                }
            }
            let mtime = match signed_field(&old.mtime) {
                Some(t) => t,
                None => i64::try_from(h.mtime().with_context(ctx)?)
                    .with_context(|| format!("{}: mtime out of range", ctx()))?,
            };
            let uname: Box<[u8]> = h.username_bytes().unwrap_or_default().into();
            let gname: Box<[u8]> = h.groupname_bytes().unwrap_or_default().into();
            let dev_major = h.device_major().ok().flatten().unwrap_or(0);
            let dev_minor = h.device_minor().ok().flatten().unwrap_or(0);
            let link_raw = e.link_name_bytes().map(|l| l.into_owned());
            if let Some(l) = &link_raw
                && l.len() > limits.name
            {
                bail!(
                    "{}: a link target of {} bytes, longer than PATH_MAX ({}); the layer is malformed or malicious",
                    ctx(),
                    l.len(),
                    limits.name
                );
            }
            let pax = carried_pax(&mut e).with_context(ctx)?;
            if let Some(records) = &pax {
                check_pax(records, limits).map_err(|why| anyhow::anyhow!("{}: {why}", ctx()))?;
                kept_pax += records
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum::<u64>();
                if kept_pax > limits.layer_pax {
                    bail!(
                        "{}: the layer's entries up to this one carry more than {} of PAX records (xattrs, times), more than slim keeps for one layer; the layer is malformed or malicious",
                        ctx(),
                        limits::size(limits.layer_pax)
                    );
                }
            }

            let whiteout =
                entry::parse_whiteout(&path).map_err(|err| anyhow::anyhow!("{what}: {err}"))?;
            if path.is_empty() && whiteout.is_none() && ty != tar::EntryType::Directory {
                return Err(root_replaced(what, &raw_path, ty));
            }
            let (kind, path, link) = match whiteout {
                Some(Whiteout::Meta) => continue,
                Some(Whiteout::Delete(p)) => (Kind::Whiteout, p, None),
                Some(Whiteout::Opaque(p)) => (Kind::Opaque, p, None),
                None => {
                    use tar::EntryType as T;
                    let kind = match ty {
                        T::Regular | T::Continuous | T::GNUSparse => Kind::File,
                        T::Directory => Kind::Dir,
                        T::Symlink => Kind::Symlink,
                        T::Link => Kind::Hardlink,
                        T::Char => Kind::Char,
                        T::Block => Kind::Block,
                        T::Fifo => Kind::Fifo,
                        other => bail!(
                            "{}: unsupported tar entry type {:?}",
                            ctx(),
                            other.as_byte() as char
                        ),
                    };
                    let link = match kind {
                        Kind::Symlink => {
                            Some(link_raw.clone().unwrap_or_default().into_boxed_slice())
                        }
                        Kind::Hardlink => {
                            let target = link_raw.clone().with_context(|| {
                                format!("{}: hard link without a target", ctx())
                            })?;
                            Some(
                                entry::normalize(&target)
                                    .with_context(|| format!("{}: hard link target", ctx()))?,
                            )
                        }
                        _ => None,
                    };
                    (kind, path, link)
                }
            };

            if let Some(budget) = &opts.budget {
                let names = path.len() + link.as_ref().map_or(0, |l| l.len());
                budget.charge(names as u64).map_err(|e| {
                    anyhow::anyhow!("{what}: at entry {}: {e}", entry::display(&path))
                })?;
            }
            let mut size = 0;
            let start = offset;
            let mut content_hash = None;
            if kind == Kind::File {
                let mut hasher = opts.hash_contents.then(sha2::Sha256::new);
                loop {
                    let n = match e.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => {
                            return Err(err).with_context(|| format!("{}: reading content", ctx()));
                        }
                    };
                    if let Some(h) = hasher.as_mut() {
                        h.update(&buf[..n]);
                    }
                    spool
                        .write_all(&buf[..n])
                        .context("writing the layer spool")?;
                    size += n as u64;
                }
                offset += size;
                content_hash = hasher.map(|h| h.finalize().into());
            }
            out.push(Entry {
                path: path.into(),
                kind,
                link,
                mode,
                uid,
                gid,
                mtime,
                uname,
                gname,
                dev_major,
                dev_minor,
                size,
                offset: start,
                content_hash,
                pax,
            });
        }
    }
    spool.flush().context("writing the layer spool")?;
    // Read what follows the end-of-archive marker, so the decoder side runs
    // to the end of its stream (and its checks).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    let (diff_id, size) = rest.into_inner().finish();
    // The index lives until the image is written: drop the growth slack.
    out.shrink_to_fit();
    Ok((out, diff_id, size))
}

/// An entry's carried records against [`Limits`]: how many, and its xattrs
/// as Linux bounds them (one value, the list of names).
fn check_pax(records: &[PaxRecord], limits: &Limits) -> Result<(), String> {
    if records.len() > limits.pax_records {
        return Err(format!(
            "{} PAX records, more than the {} one entry may carry; the layer is malformed or malicious",
            records.len(),
            limits.pax_records
        ));
    }
    let mut names = 0;
    for (k, v) in records {
        let Some(name) = k.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        if v.len() > limits.xattr_value {
            return Err(format!(
                "xattr {name} of {} bytes, more than Linux allows for one value ({}); the layer is malformed or malicious",
                v.len(),
                limits::size(limits.xattr_value as u64)
            ));
        }
        names += name.len() + 1;
    }
    if names > limits.xattr_names {
        return Err(format!(
            "xattr names of {names} bytes in all, more than Linux lists for one file ({}); the layer is malformed or malicious",
            limits::size(limits.xattr_names as u64)
        ));
    }
    Ok(())
}

/// PAX records to carry over: everything but what slim writes itself
/// (path, linkpath, size) and sparse-file bookkeeping.
fn carried_pax<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Option<Box<[PaxRecord]>>> {
    let Some(exts) = e.pax_extensions()? else {
        return Ok(None);
    };
    let mut out: Vec<PaxRecord> = Vec::new();
    for ext in exts {
        let ext = ext?;
        let Ok(key) = ext.key() else { continue };
        if matches!(key, "path" | "linkpath" | "size") || key.starts_with("GNU.sparse.") {
            continue;
        }
        out.push((key.into(), ext.value_bytes().into()));
    }
    Ok((!out.is_empty()).then(|| out.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            hash_contents: false,
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
        assert_eq!(ix.entries[0].kind, Kind::Dir);
        assert_eq!(ix.entries[0].mode, 0o700);
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
                        .map(|e| (e.display_path(), e.kind))
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
            assert_eq!(ix.entries[0].mtime, t);
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
            hash_contents: false,
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
            err.contains("layer L: entry /f")
                && err.contains("xattr names")
                && err.contains("64 KiB"),
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
            err.contains("layer L: entry /f")
                && err.contains("300 PAX records")
                && err.contains("256"),
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
            .flat_map(|e| e.pax.iter().flatten())
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
}
