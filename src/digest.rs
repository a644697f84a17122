//! Content digests (`sha256:…`, `sha512:…`) and the readers/writers that
//! compute and verify them while bytes stream through.
//!
//! Every digest slim reads from anywhere (a manifest, an index.json, a
//! `docker save` manifest, a registry header) is parsed into [`Digest`] and
//! every blob is read through a [`VerifyingReader`]: content is untrusted
//! until its last byte has been hashed and matched (OCI image spec,
//! "Descriptors", digests section).

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm slim can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A parsed, well-formed content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("malformed digest {value:?} (expected sha256:<64 hex digits>)")]
    Malformed { value: String },
    #[error(
        "unsupported digest algorithm {algorithm:?} in {value:?} (slim verifies sha256 and sha512)"
    )]
    Unsupported { algorithm: String, value: String },
    /// `what` says what was checked; when it names the expected digest
    /// already (`blob D from …`, see `names_expected`), the message does not
    /// say it again.
    #[error(
        "{what}: digest mismatch: {}content hashes to {found} (the source is corrupt or was tampered with)",
        if *.names_expected { String::new() } else { format!("expected {}, ", .expected) }
    )]
    Mismatch {
        what: String,
        expected: Digest,
        found: Digest,
        names_expected: bool,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {found}{more} (truncated or corrupt blob)", more = if *.found > *.expected { " or more" } else { "" })]
    Size {
        what: String,
        expected: u64,
        found: u64,
    },
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, as used in file names (`blobs/sha256/<hex>`).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// Checks `bytes` against this digest, naming `what` in the error; the
    /// error says which digest was expected (`what` does not name it:
    /// `manifest of r:tag`).
    pub fn verify(&self, what: &str, bytes: &[u8]) -> Result<(), DigestError> {
        self.check(what, bytes, false)
    }

    /// [`Digest::verify`] for a `what` that names this digest already
    /// (`manifest D of r`), so the error does not say it twice.
    pub fn verify_named(&self, what: &str, bytes: &[u8]) -> Result<(), DigestError> {
        self.check(what, bytes, true)
    }

    fn check(&self, what: &str, bytes: &[u8], names_expected: bool) -> Result<(), DigestError> {
        let found = Digest::of(self.algorithm, bytes);
        if &found == self {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                what: what.to_string(),
                expected: self.clone(),
                found,
                names_expected,
            })
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let malformed = || DigestError::Malformed {
            value: value.to_string(),
        };
        let (alg, hex) = value.split_once(':').ok_or_else(malformed)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                if other.is_empty()
                    || !other
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
                {
                    return Err(malformed());
                }
                return Err(DigestError::Unsupported {
                    algorithm: other.to_string(),
                    value: value.to_string(),
                });
            }
        };
        // Lower-case hex only: the OCI spec's encoded part for sha256/sha512.
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(malformed());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hash for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

/// Reads through `inner`, hashing every byte, and fails the read that reaches
/// the end if the content does not match the expected digest and size.
///
/// `what` names the content with its digest (`blob D from …`): a mismatch
/// says what the content hashed to, not the digest again.
///
/// A reader that yields more bytes than the expected size fails as soon as it
/// does, so a hostile source cannot make slim read without bound.
pub struct VerifyingReader<R> {
    inner: R,
    what: String,
    expected: Digest,
    expected_size: Option<u64>,
    hasher: Option<Hasher>,
    read: u64,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(
        inner: R,
        what: impl Into<String>,
        expected: Digest,
        expected_size: Option<u64>,
    ) -> Self {
        VerifyingReader {
            hasher: Some(Hasher::new(expected.algorithm())),
            inner,
            what: what.into(),
            expected,
            expected_size,
            read: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    fn fail(&self, e: DigestError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let Some(hasher) = self.hasher.as_mut() else {
            // Verified already: stay at end of stream.
            return Ok(0);
        };
        let n = self.inner.read(buf)?;
        if n > 0 {
            hasher.update(&buf[..n]);
            self.read += n as u64;
            if let Some(size) = self.expected_size
                && self.read > size
            {
                return Err(self.fail(DigestError::Size {
                    what: self.what.clone(),
                    expected: size,
                    found: self.read,
                }));
            }
            return Ok(n);
        }
        if let Some(size) = self.expected_size
            && self.read != size
        {
            return Err(self.fail(DigestError::Size {
                what: self.what.clone(),
                expected: size,
                found: self.read,
            }));
        }
        let found = self.hasher.take().expect("hasher present").finish();
        if found != self.expected {
            return Err(self.fail(DigestError::Mismatch {
                what: self.what.clone(),
                expected: self.expected.clone(),
                found,
                names_expected: true,
            }));
        }
        Ok(0)
    }
}

/// Writes through to `inner`, hashing and counting every byte.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W, algorithm: Algorithm) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(algorithm),
            written: 0,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (self.hasher.finish(), self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads through to `inner`, hashing and counting every byte.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(algorithm),
            read: 0,
        }
    }

    /// The digest and size of everything read.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Finds a [`DigestError`] carried inside an `io::Error` (as a
/// [`VerifyingReader`] reports it), so callers can report it as such.
pub fn digest_error_in(e: &io::Error) -> Option<&DigestError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<DigestError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::sha256_of(b""), d);
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
        assert!(matches!(
            "md5:0123".parse::<Digest>(),
            Err(DigestError::Unsupported { .. })
        ));
        assert!("nocolon".parse::<Digest>().is_err());
    }

    /// A mismatch says which digest was expected only when `what` does not
    /// name it already: the message never says a digest twice.
    #[test]
    fn a_mismatch_names_the_expected_digest_once() {
        let good = Digest::sha256_of(b"hello");
        let plain = good.verify("manifest of r/x:v1", b"hellO").unwrap_err();
        assert!(
            plain.to_string().contains(&format!("expected {good}, ")),
            "{plain}"
        );
        let what = format!("manifest {good} of r/x");
        let named = good.verify_named(&what, b"hellO").unwrap_err();
        assert_eq!(
            named.to_string().matches(&good.to_string()).count(),
            1,
            "{named}"
        );
        let err = VerifyingReader::new(&b"hellO"[..], format!("blob {good}"), good.clone(), None)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(
            err.to_string().matches(&good.to_string()).count(),
            1,
            "{err}"
        );
    }

    #[test]
    fn verifying_reader_accepts_good_and_rejects_bad() {
        let good = Digest::sha256_of(b"hello");
        let mut out = Vec::new();
        VerifyingReader::new(&b"hello"[..], "blob", good.clone(), Some(5))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello");

        let err = VerifyingReader::new(&b"hellO"[..], "blob", good.clone(), Some(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            digest_error_in(&err),
            Some(DigestError::Mismatch { .. })
        ));

        let err = VerifyingReader::new(&b"hell"[..], "blob", good.clone(), Some(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            digest_error_in(&err),
            Some(DigestError::Size { found: 4, .. })
        ));

        let err = VerifyingReader::new(&b"hello world"[..], "blob", good, Some(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            digest_error_in(&err),
            Some(DigestError::Size { .. })
        ));
    }
}
