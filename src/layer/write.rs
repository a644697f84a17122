//! Tar writing for output layers: deterministic headers (ustar, with PAX
//! records for long names and link targets, large numbers and carried
//! xattrs), contents streamed from the spool files.
//!
//! Output is a function of the plan alone: no wall-clock times, no process
//! ids, no user names looked up on this machine.

use std::io::{self, Write};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::entry::{Entry, Kind, OPAQUE, WHITEOUT_PREFIX, split_parent};
use super::plan::{Item, Plan};
use super::read::LayerIndex;

const BLOCK: usize = 512;

/// Writes `plan` as a tar stream (ending with the two zero blocks).
pub fn write_plan<W: Write + ?Sized>(
    out: &mut W,
    plan: &Plan,
    layers: &[Arc<LayerIndex>],
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for item in plan.iter(layers) {
        match item {
            Item::Entry {
                path,
                layer,
                index,
                link_to,
            } => {
                let layer = &layers[layer as usize];
                let e = &layer.entries[index as usize];
                let name = tar_name(&path, e.kind() == Kind::Dir && link_to.is_none());
                match (link_to, e.kind()) {
                    (Some(target), _) => {
                        write_header(out, &name, Kind::Hardlink, Some(&target), e, 0)?
                    }
                    (None, Kind::Hardlink) => {
                        write_header(out, &name, Kind::Hardlink, e.link(), e, 0)?
                    }
                    (None, Kind::File) => {
                        write_header(out, &name, Kind::File, None, e, e.size())?;
                        copy_content(out, layer, e, &mut buf).with_context(|| {
                            format!("writing the content of {}", e.display_path())
                        })?;
                    }
                    (None, k) => write_header(out, &name, k, e.link(), e, 0)?,
                }
            }
            Item::Rewritten {
                path,
                layer,
                index,
                content,
            } => {
                let e = &layers[layer as usize].entries[index as usize];
                let name = tar_name(&path, false);
                write_header(out, &name, Kind::File, None, e, content.len() as u64)?;
                out.write_all(&content)?;
                pad(out, content.len() as u64)?;
            }
            Item::Whiteout(path) => {
                let (dir, base) = split_parent(&path);
                let mut name = Vec::with_capacity(path.len() + 4);
                if !dir.is_empty() {
                    name.extend_from_slice(dir);
                    name.push(b'/');
                }
                name.extend_from_slice(WHITEOUT_PREFIX);
                name.extend_from_slice(base);
                write_marker(out, &name)?;
            }
            Item::Opaque(dir) => {
                let mut name = dir.to_vec();
                if !name.is_empty() {
                    name.push(b'/');
                }
                name.extend_from_slice(OPAQUE);
                write_marker(out, &name)?;
            }
        }
    }
    out.write_all(&[0u8; 2 * BLOCK])?;
    Ok(())
}

/// The name written for a path: the root is `./`, directories end in `/`.
fn tar_name(path: &[u8], dir: bool) -> Vec<u8> {
    if path.is_empty() {
        return b"./".to_vec();
    }
    let mut n = path.to_vec();
    if dir {
        n.push(b'/');
    }
    n
}

fn copy_content<W: Write + ?Sized>(
    out: &mut W,
    layer: &LayerIndex,
    e: &Entry,
    buf: &mut [u8],
) -> io::Result<()> {
    layer.copy_content(e, out, buf)?;
    pad(out, e.size())
}

fn pad<W: Write + ?Sized>(out: &mut W, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// A whiteout marker: an empty regular file, root-owned, mode 0644, time 0.
fn write_marker<W: Write + ?Sized>(out: &mut W, name: &[u8]) -> Result<()> {
    let e = Entry::new(name, Kind::File, 0o644, 0);
    write_header(out, name, Kind::File, None, &e, 0)
}

/// Largest value an octal field of `len` bytes holds (len-1 digits + NUL).
fn octal_max(len: usize) -> u64 {
    (1u64 << (3 * (len - 1))) - 1
}

fn write_header<W: Write + ?Sized>(
    out: &mut W,
    name: &[u8],
    kind: Kind,
    link: Option<&[u8]>,
    e: &Entry,
    size: u64,
) -> Result<()> {
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    let has = |k: &str| e.pax().into_iter().flatten().any(|(key, _)| &**key == k);
    if name.len() > 100 || !name.is_ascii() {
        pax.push(("path", name.to_vec()));
    }
    if let Some(l) = link
        && (l.len() > 100 || !l.is_ascii())
    {
        pax.push(("linkpath", l.to_vec()));
    }
    if size > octal_max(12) {
        pax.push(("size", size.to_string().into_bytes()));
    }
    if e.uid() > octal_max(8) && !has("uid") {
        pax.push(("uid", e.uid().to_string().into_bytes()));
    }
    if e.gid() > octal_max(8) && !has("gid") {
        pax.push(("gid", e.gid().to_string().into_bytes()));
    }
    // Octal has no sign: a time before 1970 (or past the field) goes in
    // a PAX record, as Go's archive/tar writes it, unless one is carried.
    let mtime_field = e.mtime().clamp(0, octal_max(12) as i64) as u64;
    if i128::from(mtime_field) != i128::from(e.mtime()) && !has("mtime") {
        pax.push(("mtime", e.mtime().to_string().into_bytes()));
    }
    if e.uname().len() > 32 && !has("uname") {
        pax.push(("uname", e.uname().to_vec()));
    }
    if e.gname().len() > 32 && !has("gname") {
        pax.push(("gname", e.gname().to_vec()));
    }
    let carried = e.pax().into_iter().flatten();
    if !pax.is_empty() || e.pax().is_some() {
        let mut records = Vec::new();
        for (k, v) in pax
            .iter()
            .map(|(k, v)| (*k, &v[..]))
            .chain(carried.map(|(k, v)| (&**k, &v[..])))
        {
            records.extend_from_slice(&pax_record(k, v));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(records.len() as u64);
        set_name(&mut h, &pax_header_name(name));
        h.set_cksum();
        out.write_all(h.as_bytes())?;
        out.write_all(&records)?;
        pad(out, records.len() as u64)?;
    }

    let mut h = tar::Header::new_ustar();
    h.set_entry_type(match kind {
        Kind::File | Kind::Whiteout | Kind::Opaque => tar::EntryType::Regular,
        Kind::Dir => tar::EntryType::Directory,
        Kind::Symlink => tar::EntryType::Symlink,
        Kind::Hardlink => tar::EntryType::Link,
        Kind::Char => tar::EntryType::Char,
        Kind::Block => tar::EntryType::Block,
        Kind::Fifo => tar::EntryType::Fifo,
    });
    h.set_mode(e.mode());
    h.set_uid(e.uid().min(octal_max(8)));
    h.set_gid(e.gid().min(octal_max(8)));
    h.set_mtime(mtime_field);
    h.set_size(size.min(octal_max(12)));
    set_name(&mut h, name);
    if let Some(l) = link {
        let field = &mut h.as_ustar_mut().expect("ustar header").linkname;
        let n = l.len().min(100);
        field[..n].copy_from_slice(&l[..n]);
    }
    {
        let u = h.as_ustar_mut().expect("ustar header");
        let n = e.uname().len().min(32);
        u.uname[..n].copy_from_slice(&e.uname()[..n]);
        let n = e.gname().len().min(32);
        u.gname[..n].copy_from_slice(&e.gname()[..n]);
    }
    if matches!(kind, Kind::Char | Kind::Block) {
        let (major, minor) = e.device();
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
    }
    h.set_cksum();
    out.write_all(h.as_bytes())?;
    Ok(())
}

/// Writes the name into the 100-byte field (a longer name is also in PAX).
fn set_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_ustar_mut().expect("ustar header").name;
    let n = name.len().min(100);
    field[..n].copy_from_slice(&name[..n]);
}

/// `dir/PaxHeaders.0/base`, as Go's archive/tar names them: stable, unlike
/// GNU tar's pid-based names.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = split_parent(trimmed);
    let mut out = Vec::new();
    if !dir.is_empty() {
        out.extend_from_slice(dir);
        out.push(b'/');
    }
    out.extend_from_slice(b"PaxHeaders.0/");
    out.extend_from_slice(base);
    out.truncate(100);
    out
}

/// `"%d %s=%s\n"` where the length counts itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(len.to_string().as_bytes());
    r.push(b' ');
    r.extend_from_slice(key.as_bytes());
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mtime: i64, pax: Option<Box<[crate::layer::entry::PaxRecord]>>) -> Entry {
        Entry::with(
            b"f"[..].into(),
            Kind::Fifo,
            0o644,
            mtime,
            0,
            0,
            &Default::default(),
            crate::layer::entry::Extra {
                pax,
                ..Default::default()
            },
        )
    }

    /// (header mtime field, PAX mtime record) of what slim writes.
    fn written(e: &Entry) -> (u64, Option<String>) {
        let mut out = Vec::new();
        write_header(&mut out, b"f", e.kind(), None, e, 0).unwrap();
        out.extend_from_slice(&[0u8; 1024]);
        let mut a = tar::Archive::new(&out[..]);
        let mut ent = a.entries().unwrap().next().unwrap().unwrap();
        let field = ent.header().mtime().unwrap();
        let pax = ent.pax_extensions().unwrap().and_then(|exts| {
            exts.map(|x| x.unwrap())
                .find(|x| x.key() == Ok("mtime"))
                .map(|x| x.value().unwrap().to_string())
        });
        (field, pax)
    }

    /// Negative times keep their sign, as umoci and containerd apply them
    /// (Go's archive/tar reads them): a PAX `mtime` record, the header
    /// field 0 (octal has no sign). Regression: the header field was 2^64-1.
    #[test]
    fn negative_mtimes_are_written_as_signed_pax_records() {
        assert_eq!(written(&entry(-1, None)), (0, Some("-1".into())));
        assert_eq!(
            written(&entry(-1_000_000_000_000, None)),
            (0, Some("-1000000000000".into()))
        );
        // Ordinary times: the header field alone, as before.
        assert_eq!(written(&entry(1_700_000_000, None)), (1_700_000_000, None));
        // Past the octal field: PAX, header field at its maximum, as before.
        assert_eq!(
            written(&entry(1 << 40, None)),
            (octal_max(12), Some((1u64 << 40).to_string()))
        );
        // A carried PAX mtime (fractional, negative) goes out verbatim and
        // is the only one; the header field never goes negative.
        for v in ["-1.5", "1700000000.123", "-1"] {
            let pax = Some(vec![("mtime".into(), v.as_bytes().into())].into_boxed_slice());
            let got = written(&entry(-2, pax));
            assert_eq!(got, (0, Some(v.to_string())), "{v}");
        }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record("path", b"a");
        assert_eq!(r, b"9 path=a\n");
        let long = vec![b'x'; 95];
        let r = pax_record("path", &long);
        let len: usize = std::str::from_utf8(&r[..r.iter().position(|b| *b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, r.len());
    }
}
