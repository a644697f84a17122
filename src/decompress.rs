//! Decompression by magic: a blob (gzip, zstd or plain) to its bytes.
//! Stage-neutral: the layer decoder (`layer::read`) and the docker-archive
//! source (which must know whether a layer file is compressed) both use it.
//!
//! The compression is detected from the first bytes (gzip `1f 8b`, zstd
//! `28 b5 2f fd`); a media type that disagrees with the bytes is logged, and
//! the bytes win, as containerd and containers/image do.

use std::io::{self, BufRead, Read};

use crate::image::media::Compression;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The compression of a stream from its first bytes.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `r` in the decoder its first bytes call for.
pub fn decoder<'a, R: BufRead + Send + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let head = r.fill_buf()?;
    let c = sniff(head);
    let out: Box<dyn Read + Send + 'a> = match c {
        // Multi-member: pigz and parallel gzip writers emit several members.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    };
    Ok((c, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decodes_by_magic() {
        let data = b"hello tar".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        for (bytes, kind) in [
            (gz, Compression::Gzip),
            (zs, Compression::Zstd),
            (data.clone(), Compression::None),
        ] {
            let (c, mut r) = decoder(io::BufReader::new(&bytes[..])).unwrap();
            assert_eq!(c, kind);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&b"x".repeat(10000)).unwrap();
        let gz = gz.finish().unwrap();
        let cut = &gz[..gz.len() / 2];
        let (_, mut r) = decoder(io::BufReader::new(cut)).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
