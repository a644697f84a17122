//! What an ELF file needs from the tree it runs in: its interpreter
//! (`PT_INTERP`), its `DT_NEEDED` libraries and its search paths
//! (`DT_RPATH`, `DT_RUNPATH`), read through ranged reads of the header,
//! the program headers, the dynamic segment and the few strings it names.
//! goblin's `Elf::parse` wants the whole file in memory (a 100 MB
//! `libnode.so` is 100 MB of RSS); this reads a few kilobytes of it.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::Elf;
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD, ProgramHeader};

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
pub type ReadAt<'a> = dyn Fn(u64, usize) -> Option<Vec<u8>> + 'a;

const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// Bounds for hostile files: a dynamic segment of real programs holds tens
/// of entries, a path string a few hundred bytes.
const MAX_DYNAMIC: u64 = 1 << 20;
const MAX_STRING: usize = 64 << 10;
const MAX_INTERP: u64 = 4096;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dependencies {
    /// `e_machine` (`EM_X86_64`, `EM_AARCH64`, ...).
    pub machine: u16,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpaths: Vec<String>,
    pub runpaths: Vec<String>,
}

/// The dependencies of the ELF file `read` reads, or `None` if it is not
/// one (or its headers do not hold together). A file without a dynamic
/// segment (static) has none but its machine.
pub fn dependencies(read: &ReadAt<'_>) -> Option<Dependencies> {
    let head = read(0, 64)?;
    if !head.starts_with(b"\x7fELF") {
        return None;
    }
    let h = Elf::parse_header(&head).ok()?;
    let ctx = Ctx::new(h.container().ok()?, h.endianness().ok()?);
    let phnum = usize::from(h.e_phnum);
    let phsize = ProgramHeader::size(ctx);
    if usize::from(h.e_phentsize) != phsize {
        return None;
    }
    let table = read(h.e_phoff, phnum * phsize)?;
    let phs = ProgramHeader::parse(&table, 0, phnum, ctx).ok()?;
    let mut deps = Dependencies {
        machine: h.e_machine,
        ..Dependencies::default()
    };
    if let Some(p) = phs.iter().find(|p| p.p_type == PT_INTERP) {
        let bytes = read(p.p_offset, p.p_filesz.min(MAX_INTERP) as usize)?;
        let name = bytes.split(|b| *b == 0).next().unwrap_or_default();
        if !name.is_empty() {
            deps.interpreter = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    let Some(dynamic) = phs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return Some(deps);
    };
    let bytes = read(dynamic.p_offset, dynamic.p_filesz.min(MAX_DYNAMIC) as usize)?;
    let entries = dyn_entries(&bytes, ctx);
    let strtab = entries
        .iter()
        .find(|(tag, _)| *tag == DT_STRTAB)
        .and_then(|(_, addr)| file_offset(&phs, *addr))?;
    let strsz = entries
        .iter()
        .find(|(tag, _)| *tag == DT_STRSZ)
        .map_or(u64::MAX, |(_, n)| *n);
    let string = |at: u64| -> Option<String> {
        if at >= strsz {
            return None;
        }
        let len = (strsz - at).min(MAX_STRING as u64) as usize;
        let bytes = read(strtab.checked_add(at)?, len)?;
        let s = bytes.split(|b| *b == 0).next()?;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    for (tag, val) in &entries {
        let list = match *tag {
            DT_NEEDED => &mut deps.needed,
            DT_RPATH => &mut deps.rpaths,
            DT_RUNPATH => &mut deps.runpaths,
            _ => continue,
        };
        if let Some(s) = string(*val).filter(|s| !s.is_empty()) {
            list.push(s);
        }
    }
    Some(deps)
}

/// A [`ReadAt`] over a file: up to `len` bytes at `offset`.
pub fn read_file_at(file: &std::fs::File, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match file.read_at(&mut buf[n..], offset.checked_add(n as u64)?) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(n);
    Some(buf)
}

/// `(d_tag, d_val)` pairs up to `DT_NULL`.
fn dyn_entries(bytes: &[u8], ctx: Ctx) -> Vec<(u64, u64)> {
    let word = match ctx.container {
        Container::Big => 8,
        Container::Little => 4,
    };
    let num = |b: &[u8]| -> u64 {
        let mut v = [0u8; 8];
        match ctx.le {
            Endian::Little => {
                v[..word].copy_from_slice(b);
                u64::from_le_bytes(v)
            }
            Endian::Big => {
                v[8 - word..].copy_from_slice(b);
                u64::from_be_bytes(v)
            }
        }
    };
    let mut out = Vec::new();
    for e in bytes.chunks_exact(2 * word) {
        let (tag, val) = (num(&e[..word]), num(&e[word..]));
        if tag == DT_NULL {
            break;
        }
        out.push((tag, val));
    }
    out
}

/// The file offset of virtual address `addr`, through the `PT_LOAD`
/// segment that maps it.
fn file_offset(phs: &[ProgramHeader], addr: u64) -> Option<u64> {
    phs.iter()
        .filter(|p| p.p_type == PT_LOAD)
        .find(|p| addr >= p.p_vaddr && addr - p.p_vaddr < p.p_filesz)
        .and_then(|p| p.p_offset.checked_add(addr - p.p_vaddr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(bytes: &[u8]) -> Option<Dependencies> {
        dependencies(&|off, len| {
            let start = usize::try_from(off).ok()?.min(bytes.len());
            Some(bytes[start..bytes.len().min(start.saturating_add(len))].to_vec())
        })
    }

    /// The ELF files of the host (the test binary's own interpreter and
    /// libraries): the ranged reader agrees with goblin's whole-file parse.
    #[test]
    fn agrees_with_a_whole_file_parse_on_the_hosts_libraries() {
        let mut checked = 0;
        let candidates = [
            std::env::current_exe().unwrap(),
            "/bin/sh".into(),
            "/usr/bin/env".into(),
            "/lib/x86_64-linux-gnu/libc.so.6".into(),
            "/lib/aarch64-linux-gnu/libc.so.6".into(),
            "/usr/lib/x86_64-linux-gnu/libz.so.1".into(),
            "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
        ];
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let elf = Elf::parse(&bytes).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let ours = dependencies(&|off, len| read_file_at(&file, off, len)).unwrap();
            assert_eq!(from(&bytes).as_ref(), Some(&ours));
            let theirs = Dependencies {
                machine: elf.header.e_machine,
                interpreter: elf.interpreter.map(str::to_string),
                needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
                rpaths: elf.rpaths.iter().map(|s| s.to_string()).collect(),
                runpaths: elf.runpaths.iter().map(|s| s.to_string()).collect(),
            };
            assert_eq!(ours, theirs, "{}", path.display());
            checked += 1;
        }
        assert!(checked >= 3, "only {checked} host ELF files found");
    }

    #[test]
    fn not_elf_and_truncated_files_are_none() {
        assert_eq!(from(b"#!/bin/sh\n"), None);
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(from(&exe[..40]), None);
        // Program headers cut off: nothing is invented.
        let h = Elf::parse_header(&exe).unwrap();
        assert_eq!(from(&exe[..h.e_phoff as usize + 10]), None);
    }

    #[test]
    fn hostile_offsets_do_not_panic() {
        let mut exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // e_phoff (64-bit little-endian) pointed past the end of the file.
        exe[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(from(&exe), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(300))]
        /// Bytes of the headers, the program headers and the dynamic
        /// segment changed at random: an answer or `None`, never a panic,
        /// and no read larger than the bounds.
        #[test]
        fn corrupted_headers_never_panic(
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..24),
            in_head in proptest::bool::ANY,
        ) {
            // A small dynamic program (the test binary itself is tens of MB).
            static ELF: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let elf = ELF.get_or_init(|| {
                ["/usr/bin/env", "/bin/sh", "/bin/true"]
                    .iter()
                    .find_map(|p| std::fs::read(p).ok())
                    .unwrap_or_else(|| std::fs::read(std::env::current_exe().unwrap()).unwrap())
            });
            let mut exe = elf.clone();
            // Half the cases hit the headers, the rest anywhere.
            let span = if in_head { exe.len().min(4096) } else { exe.len() };
            for (at, b) in edits {
                let at = at % span;
                exe[at] = b;
            }
            let largest = std::cell::Cell::new(0usize);
            let _ = dependencies(&|off, len| {
                largest.set(largest.get().max(len));
                let start = usize::try_from(off).ok()?.min(exe.len());
                Some(exe[start..exe.len().min(start.saturating_add(len))].to_vec())
            });
            proptest::prop_assert!(largest.get() <= (MAX_DYNAMIC as usize).max(65535 * 56));
        }
    }
}
