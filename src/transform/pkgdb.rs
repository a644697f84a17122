//! Package databases, read as text: dpkg's `var/lib/dpkg/status` (with its
//! `info/<package>.list` file lists and `diversions`) and apk's
//! `lib/apk/db/installed`. Scanners (Trivy, Grype, Syft) report what these
//! files list, so a package none of whose files remain must leave them; the
//! squash stage decides which ([`super::squash`]), this module only parses
//! and rewrites.
//!
//! Both formats are stanzas of `Key: value` (dpkg) or `K:value` (apk) lines
//! separated by blank lines; a stanza is dropped whole, with the blank line
//! after it, and every other byte stays as it was.

use std::collections::HashMap;
use std::ops::Range;

use serde::Serialize;

/// dpkg's database.
pub const DPKG_STATUS: &[u8] = b"var/lib/dpkg/status";
pub const DPKG_INFO: &[u8] = b"var/lib/dpkg/info";
pub const DPKG_DIVERSIONS: &[u8] = b"var/lib/dpkg/diversions";
/// apk's database.
pub const APK_INSTALLED: &[u8] = b"lib/apk/db/installed";

/// Largest database file or file list read; a larger one is left alone
/// (its packages all stay listed).
pub const MAX_DB_BYTES: usize = 64 << 20;

/// Where a package's documentation and licence live: files there do not
/// keep a package installed (the licence safety keep saves every
/// `copyright` file), and they go with a package that is gone.
pub const DOC_DIRS: &[&[u8]] = &[
    b"usr/share/doc/",
    b"usr/share/doc-base/",
    b"usr/share/lintian/",
    b"usr/share/man/",
    b"usr/share/info/",
    b"usr/share/bug/",
    b"usr/share/licenses/",
];

pub fn is_doc(path: &[u8]) -> bool {
    DOC_DIRS.iter().any(|d| path.starts_with(d))
}

/// A package that left a database because none of its files remain.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GonePackage {
    /// `dpkg` or `apk`.
    pub manager: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    pub version: String,
}

/// One package of a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub architecture: String,
    pub version: String,
    /// dpkg's state word (`installed`, `config-files`, …); empty for apk.
    pub state: String,
    /// The stanza's bytes, with the blank lines that follow it.
    pub span: Range<usize>,
    /// apk: the files it installed (root-relative); dpkg keeps them in
    /// `info/<package>.list` instead.
    pub files: Vec<Vec<u8>>,
}

/// The stanzas of a database file: (span, lines without their newline).
fn stanzas(text: &[u8]) -> Vec<(Range<usize>, Vec<&[u8]>)> {
    let mut out: Vec<(Range<usize>, Vec<&[u8]>)> = Vec::new();
    let mut open: Option<(usize, Vec<&[u8]>)> = None;
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |i| pos + i + 1);
        let line = &text[pos..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.iter().all(|b| *b == b' ' || *b == b'\t') {
            // A blank line closes the open stanza and belongs to it.
            if let Some((start, lines)) = open.take() {
                out.push((start..end, lines));
            } else if let Some(last) = out.last_mut() {
                last.0.end = end;
            }
        } else {
            open.get_or_insert_with(|| (pos, Vec::new()))
                .1
                .push(content);
        }
        pos = end;
    }
    if let Some((start, lines)) = open {
        out.push((start..text.len(), lines));
    }
    out
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).trim().to_string()
}

/// The packages of dpkg's `status` file.
pub fn dpkg_records(status: &[u8]) -> Vec<Record> {
    stanzas(status)
        .into_iter()
        .filter_map(|(span, lines)| {
            let mut r = Record {
                name: String::new(),
                architecture: String::new(),
                version: String::new(),
                state: String::new(),
                span,
                files: Vec::new(),
            };
            for l in lines {
                if l.starts_with(b" ") || l.starts_with(b"\t") {
                    continue;
                }
                let Some(colon) = l.iter().position(|b| *b == b':') else {
                    continue;
                };
                let value = text(&l[colon + 1..]);
                match &l[..colon] {
                    b"Package" => r.name = value,
                    b"Architecture" => r.architecture = value,
                    b"Version" => r.version = value,
                    b"Status" => {
                        r.state = value.split_whitespace().nth(2).unwrap_or("").to_string()
                    }
                    _ => {}
                }
            }
            (!r.name.is_empty()).then_some(r)
        })
        .collect()
}

/// The packages of apk's `installed` file, with their files.
pub fn apk_records(installed: &[u8]) -> Vec<Record> {
    stanzas(installed)
        .into_iter()
        .filter_map(|(span, lines)| {
            let mut r = Record {
                name: String::new(),
                architecture: String::new(),
                version: String::new(),
                state: String::new(),
                span,
                files: Vec::new(),
            };
            let mut dir: &[u8] = b"";
            for l in lines {
                let (key, value) = match l {
                    [k, b':', v @ ..] => (*k, v),
                    _ => continue,
                };
                match key {
                    b'P' => r.name = text(value),
                    b'V' => r.version = text(value),
                    b'A' => r.architecture = text(value),
                    b'F' => dir = trim_slashes(value),
                    b'R' => {
                        let mut p = dir.to_vec();
                        if !p.is_empty() {
                            p.push(b'/');
                        }
                        p.extend_from_slice(value);
                        r.files.push(p);
                    }
                    _ => {}
                }
            }
            (!r.name.is_empty()).then_some(r)
        })
        .collect()
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let start = p.iter().position(|b| *b != b'/').unwrap_or(p.len());
    let end = p.iter().rposition(|b| *b != b'/').map_or(start, |i| i + 1);
    &p[start..end.max(start)]
}

/// `text` without the given spans (sorted, not overlapping).
pub fn without(text: &[u8], drop: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut pos = 0;
    for r in drop {
        out.extend_from_slice(&text[pos..r.start]);
        pos = r.end;
    }
    out.extend_from_slice(&text[pos..]);
    out
}

/// The paths of a dpkg file list (`info/<package>.list`), root-relative;
/// the root itself (`/.`) and blank lines left out.
pub fn list_paths(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|b| *b == b'\n')
        .map(|l| trim_slashes(l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|p| !p.is_empty() && *p != b".")
}

/// dpkg's `diversions`: diverted path -> (where it is now, the package
/// that diverted it), root-relative.
pub fn diversions(text: &[u8]) -> HashMap<Vec<u8>, (Vec<u8>, Vec<u8>)> {
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    lines
        .chunks_exact(3)
        .map(|c| {
            (
                trim_slashes(c[0]).to_vec(),
                (trim_slashes(c[1]).to_vec(), c[2].trim_ascii().to_vec()),
            )
        })
        .collect()
}

/// The package a file of dpkg's `info/` directory belongs to:
/// `libc6:amd64.list` -> `libc6:amd64` (the part before the last dot; a
/// package name may hold dots, an info file's suffix never does).
pub fn info_owner(file_name: &[u8]) -> Option<&[u8]> {
    let dot = file_name.iter().rposition(|b| *b == b'.')?;
    (dot > 0).then(|| &file_name[..dot])
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &[u8] = b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nDescription: GNU C Library\n continued line\n .\n\nPackage: gcc-12\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.2.0-14\n\n\nPackage: old\nStatus: deinstall ok config-files\nVersion: 1\n";

    #[test]
    fn dpkg_stanzas_are_read_with_their_spans() {
        let r = dpkg_records(STATUS);
        let names: Vec<_> = r
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.architecture.as_str(),
                    r.version.as_str(),
                    r.state.as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("libc6", "amd64", "2.36-9", "installed"),
                ("gcc-12", "amd64", "12.2.0-14", "installed"),
                ("old", "", "1", "config-files"),
            ]
        );
        // Spans tile the file: dropping one leaves the others intact.
        let kept = without(STATUS, std::slice::from_ref(&r[1].span));
        assert_eq!(
            kept,
            b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nDescription: GNU C Library\n continued line\n .\n\nPackage: old\nStatus: deinstall ok config-files\nVersion: 1\n"
        );
        let names: Vec<_> = dpkg_records(&kept).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["libc6", "old"]);
        let last = without(STATUS, std::slice::from_ref(&r[2].span));
        assert!(last.ends_with(b"Version: 12.2.0-14\n\n\n"), "{last:?}");
    }

    #[test]
    fn apk_stanzas_carry_their_files() {
        let db = b"C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nF:lib\nR:ld-musl-x86_64.so.1\nR:libc.musl-x86_64.so.1\n\nP:busybox\nV:1.36\nF:bin\nR:busybox\nF:etc/\nR:securetty\n";
        let r = apk_records(db);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "musl");
        assert_eq!(
            r[0].files,
            [
                b"lib/ld-musl-x86_64.so.1".to_vec(),
                b"lib/libc.musl-x86_64.so.1".to_vec()
            ]
        );
        assert_eq!(
            r[1].files,
            [b"bin/busybox".to_vec(), b"etc/securetty".to_vec()]
        );
        assert_eq!(without(db, &[r[0].span.clone()]), &db[r[1].span.start..]);
    }

    #[test]
    fn lists_diversions_and_info_names() {
        let paths: Vec<_> = list_paths(b"/.\n/usr\n/usr/bin/ls\n\n").collect();
        assert_eq!(paths, [&b"usr"[..], b"usr/bin/ls"]);
        let d = diversions(b"/usr/bin/x\n/usr/bin/x.real\nother\n");
        assert_eq!(
            d.get(&b"usr/bin/x"[..]),
            Some(&(b"usr/bin/x.real".to_vec(), b"other".to_vec()))
        );
        assert_eq!(info_owner(b"libc6:amd64.list"), Some(&b"libc6:amd64"[..]));
        assert_eq!(info_owner(b"python3.11.md5sums"), Some(&b"python3.11"[..]));
        assert_eq!(info_owner(b"format"), None);
    }
}
