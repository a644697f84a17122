//! One tar header's fields as slim reads them: GNU base-256 numbers, the
//! PAX records carried to the output (and their bounds), the refusal of an
//! entry that would replace the root, and tar errors made one line.

use std::io::{self, Read};

use super::super::entry::PaxRecord;
use super::super::limits::{self, Limits};

/// A numeric header field in GNU base-256 form (first byte with its high
/// bit set), read as Go's archive/tar reads it: two's complement, signed
/// by the next bit. `None` for an octal field (the tar crate reads those)
/// or a value that does not fit an `i64` (the tar crate then fails too).
pub(super) fn signed_field(field: &[u8]) -> Option<i64> {
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
pub(super) fn root_replaced(what: &str, raw_name: &[u8], ty: tar::EntryType) -> anyhow::Error {
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
pub(super) fn tar_error_text(e: &io::Error) -> String {
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

/// An entry's carried records against [`Limits`]: how many, and its xattrs
/// as Linux bounds them (one value, the list of names).
pub(super) fn check_pax(records: &[PaxRecord], limits: &Limits) -> Result<(), String> {
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
pub(super) fn carried_pax<R: Read>(
    e: &mut tar::Entry<'_, R>,
) -> io::Result<Option<Box<[PaxRecord]>>> {
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
