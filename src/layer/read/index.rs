//! Index building: the tar stream parsed entry by entry into [`Entry`]s,
//! each checked against the [`Limits`] and the index budget, file contents
//! appended to the spool (and hashed for dedup), the diff_id computed on the
//! way.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use anyhow::{Context, Result, bail};

use super::super::entry::{self, Entry, Kind, Whiteout};
use super::super::limits::{self, HeaderGuard, Limits};
use super::super::pipe::PipeReader;
use super::super::shared_path::{PathChunks, SharedPath};
use super::header::{carried_pax, check_pax, root_replaced, signed_field, tar_error_text};
use super::{IndexOptions, too_big};
use crate::digest::{Algorithm, Digest, HashingReader};

/// Bytes of content read and spooled at a time.
const SPOOL_PIECE: usize = 128 << 10;

pub(super) fn parse_entries(
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
    // Small contents are gathered into one write; a whole read of a large
    // content (`buf` full) goes to the file without that copy.
    let mut spool = BufWriter::with_capacity(SPOOL_PIECE, spool);
    let mut offset = 0u64;
    let mut out: Vec<Entry> = Vec::new();
    // Paths go to shared chunks; entry i gets its path when its chunk is
    // sealed (until then it holds `placeholder`).
    let mut chunks = PathChunks::default();
    let placeholder = SharedPath::default();
    let mut owners = entry::Owners::default();
    let mut buf = vec![0u8; SPOOL_PIECE];
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
                let place = match chunks.last() {
                    Some(last) => format!("after entry {}", entry::display(last)),
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
            let owner = owners.get(
                uid,
                gid,
                h.username_bytes().unwrap_or_default(),
                h.groupname_bytes().unwrap_or_default(),
            );
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
            if kind == Kind::File {
                loop {
                    let n = match e.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => {
                            return Err(err).with_context(|| format!("{}: reading content", ctx()));
                        }
                    };
                    spool
                        .write_all(&buf[..n])
                        .context("writing the layer spool")?;
                    size += n as u64;
                }
                offset += size;
            }
            chunks.add(&path, &mut |i, p| out[i].path = p);
            out.push(Entry::with(
                placeholder.clone(),
                kind,
                mode,
                mtime,
                size,
                start,
                &owner,
                entry::Extra {
                    link,
                    dev_major,
                    dev_minor,
                    pax,
                    ..Default::default()
                },
            ));
        }
    }
    spool.flush().context("writing the layer spool")?;
    // Read what follows the end-of-archive marker, so the decoder side runs
    // to the end of its stream (and its checks).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    let (diff_id, size) = rest.into_inner().finish();
    // The index lives until the image is written: drop the growth slack.
    chunks.seal(&mut |i, p| out[i].path = p);
    out.shrink_to_fit();
    Ok((out, diff_id, size))
}
