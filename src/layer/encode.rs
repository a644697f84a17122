//! Encode: a tar stream to a compressed layer blob, in one pass that yields
//! the diff_id (SHA-256 of the tar), the blob digest and the blob file.
//!
//! Threads: the tar writer runs on its own thread and hashes the tar; the
//! compressor runs on the calling thread and hands blocks to workers (zstd's
//! own workers, or [`ParGzWriter`]'s); the blob is hashed as it is written.
//! A bounded [`pipe`](super::pipe) joins the two sides. An upload can follow
//! the blob file as it grows ([`Growing`]) without slowing the compressor.
//!
//! Determinism: the same tar gives the same blob for any thread count.
//! zstd's multi-threaded mode is reproducible for any worker count >= 1, so
//! one worker is used even for "one thread". gzip is compressed in fixed
//! 1 MiB blocks, each in a single deflate call with the previous block's
//! last 32 KiB as dictionary (as pigz does), so write sizes do not matter
//! (zlib-rs output otherwise depends on them); the gzip header has no name,
//! mtime 0 and OS 255.

use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use flate2::{Compress, FlushCompress, Status};
use tempfile::NamedTempFile;

use super::pipe;
use crate::digest::{Algorithm, Digest, HashingWriter};
use crate::image::media::Compression;
use crate::spool::{Announce, Growing};

pub const GZIP_BLOCK: usize = 1 << 20;
const DICT: usize = 32 << 10;

/// How to compress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    pub compression: Compression,
    pub level: i32,
    /// Worker threads for compression (>= 1).
    pub threads: usize,
}

impl Codec {
    pub fn default_level(c: Compression) -> i32 {
        match c {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }
}

/// A layer blob written to a temp file.
pub struct Encoded {
    pub file: NamedTempFile,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// Runs `produce` (which writes a tar stream) on its own thread and
/// compresses its output into `file`. With `growing`, every byte that
/// reaches the file is announced there, so an upload can read the blob
/// while it is being written, without ever holding the compressor back.
pub fn encode<F>(
    mut file: NamedTempFile,
    codec: Codec,
    growing: Option<&Growing>,
    produce: F,
) -> Result<Encoded>
where
    F: FnOnce(&mut dyn Write) -> Result<()> + Send,
{
    let (writer, mut reader) = pipe::pipe(8);
    let (tar_side, blob_side) = std::thread::scope(|s| {
        let producer = s.spawn(move || -> Result<(Digest, u64)> {
            let mut w = HashingWriter::new(writer, Algorithm::Sha256);
            produce(&mut w)?;
            let (diff_id, size, writer) = w.finish();
            writer.finish().context("the compressor stopped")?;
            Ok((diff_id, size))
        });
        let blob = (|| -> Result<(Digest, u64)> {
            let announce = Announce::new(file.as_file_mut(), growing);
            let sink = HashingWriter::new(
                BufWriter::with_capacity(1 << 20, announce),
                Algorithm::Sha256,
            );
            let sink = compress(&mut reader, sink, codec)?;
            let (digest, size, mut buf) = sink.finish();
            buf.flush()?;
            Ok((digest, size))
        })();
        if blob.is_err() {
            // Unblock the producer: it fails on its next write.
            drop(reader);
        }
        (producer.join().expect("tar writer thread panicked"), blob)
    });
    let result = match (tar_side, blob_side) {
        (Ok((diff_id, uncompressed_size)), Ok((digest, size))) => Ok(Encoded {
            file,
            digest,
            size,
            diff_id,
            uncompressed_size,
        }),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    if let Some(g) = growing {
        g.end(result.is_ok());
    }
    result
}

/// Bytes of input each zstd worker compresses at a time: 2 MiB, not the
/// 8 MiB zstd picks at level 3 (four window sizes); its buffers hold a few
/// jobs in and out per worker, about 40 MB less in all.
const ZSTD_JOB: u32 = 2 << 20;

fn compress<W: Write + Send>(input: &mut pipe::PipeReader, out: W, codec: Codec) -> Result<W> {
    // The tar arrives in whole chunks, handed to the compressor as they
    // are (1 MiB per call, no copy on the way) and then given back.
    fn feed(input: &mut pipe::PipeReader, enc: &mut impl Write) -> Result<()> {
        while let Some(chunk) = input.next_chunk()? {
            enc.write_all(&chunk)?;
            input.recycle(chunk);
        }
        Ok(())
    }
    Ok(match codec.compression {
        Compression::None => {
            let mut out = out;
            feed(input, &mut out)?;
            out
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, codec.level)?;
            enc.multithread(codec.threads.max(1) as u32)?;
            enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
            enc.include_checksum(false)?;
            enc.include_contentsize(false)?;
            feed(input, &mut enc)?;
            enc.finish()?
        }
        Compression::Gzip => {
            let mut enc = ParGzWriter::new(out, codec.level, codec.threads.max(1));
            feed(input, &mut enc)?;
            enc.finish()?
        }
    })
}

struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// Parallel gzip into one gzip member (pigz-style): fixed-size blocks are
/// deflated on worker threads, each primed with the previous block's tail,
/// and written in order.
pub struct ParGzWriter<W: Write> {
    out: Option<W>,
    level: u32,
    block: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    jobs: Option<SyncSender<Job>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    max_pending: usize,
}

impl<W: Write> ParGzWriter<W> {
    pub fn new(mut out: W, level: i32, threads: usize) -> ParGzWriter<W> {
        let (tx, rx) = sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let level = level.clamp(0, 9) as u32;
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock().expect("job queue lock").recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                        let _ = job
                            .reply
                            .send(deflate_block(&job.data, &job.dict, job.last, level));
                    }
                })
            })
            .collect();
        // gzip header: deflate, no flags, mtime 0, no extra flags, OS unknown.
        let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let out_err = out.write_all(&header);
        ParGzWriter {
            out: out_err.ok().map(|_| out),
            level,
            block: Vec::with_capacity(GZIP_BLOCK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            jobs: Some(tx),
            pending: VecDeque::new(),
            workers,
            max_pending: threads * 2 + 1,
        }
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("the gzip output failed earlier"))
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK));
        self.crc.update(&data);
        self.total += data.len() as u64;
        let next_dict = if data.len() >= DICT {
            data[data.len() - DICT..].to_vec()
        } else {
            let mut d = std::mem::take(&mut self.dict);
            d.extend_from_slice(&data);
            let cut = d.len().saturating_sub(DICT);
            d.drain(..cut);
            d
        };
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let (reply, rx) = sync_channel(1);
        self.jobs
            .as_ref()
            .expect("open until finish")
            .send(Job {
                data,
                dict,
                last,
                reply,
            })
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.pending.push_back(rx);
        while self.pending.len() >= self.max_pending {
            self.write_one()?;
        }
        Ok(())
    }

    fn write_one(&mut self) -> io::Result<()> {
        let rx = self.pending.pop_front().expect("pending block");
        let bytes = rx
            .recv()
            .map_err(|_| io::Error::other("a gzip worker stopped"))??;
        self.out()?.write_all(&bytes)
    }

    /// Writes the last block and the trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_one()?;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        let isize = (self.total & 0xffff_ffff) as u32;
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("the gzip output failed earlier"))?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&isize.to_le_bytes())?;
        let _ = self.level;
        Ok(out)
    }
}

impl<W: Write> Drop for ParGzWriter<W> {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (GZIP_BLOCK - self.block.len()).min(data.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == GZIP_BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One raw-deflate block: sync-flushed (byte-aligned, not final) unless it is
/// the last one.
fn deflate_block(data: &[u8], dict: &[u8], last: bool, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            _ if done_input && !last && out.len() < out.capacity() => break,
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial.
        (0..n)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    fn gz(data: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), 6, threads);
        for chunk in data.chunks(write_size) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn par_gzip_round_trips_and_is_deterministic() {
        let data = sample(3 * GZIP_BLOCK + 12345);
        let a = gz(&data, 1, 4096);
        let b = gz(&data, 2, 1 << 20);
        let c = gz(&data, 3, 777);
        assert_eq!(a, b);
        assert_eq!(a, c);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        // GNU gzip's reader checks CRC and size too.
        let empty = gz(&[], 2, 10);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    /// `data` through a pipe written `piece` bytes at a time, compressed.
    fn piped(data: &[u8], piece: usize, codec: Codec) -> Vec<u8> {
        let (mut w, mut r) = pipe::pipe(2);
        std::thread::scope(|s| {
            s.spawn(move || {
                for p in data.chunks(piece) {
                    w.write_all(p).unwrap();
                }
                w.finish().unwrap();
            });
            compress(&mut r, Vec::new(), codec).unwrap()
        })
    }

    /// slim's zstd settings (jobs of [`ZSTD_JOB`]) give the same bytes on
    /// any number of workers and for any write sizes of the tar side, over
    /// several jobs, and read back.
    #[test]
    fn zstd_is_the_same_for_any_worker_count() {
        let data = sample(7 * ZSTD_JOB as usize / 2 + 4321);
        let z = |threads, piece| {
            let codec = Codec {
                compression: Compression::Zstd,
                level: 3,
                threads,
            };
            piped(&data, piece, codec)
        };
        let one = z(1, 1 << 20);
        assert_eq!(one, z(2, 1 << 20));
        assert_eq!(one, z(3, 8192));
        assert_eq!(one, z(2, 777));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
        // Once through zstd's own streaming writer, as a reference.
        let mut plain = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        plain.multithread(1).unwrap();
        plain
            .set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))
            .unwrap();
        plain.include_checksum(false).unwrap();
        plain.include_contentsize(false).unwrap();
        for p in data.chunks(8192) {
            plain.write_all(p).unwrap();
        }
        assert_eq!(one, plain.finish().unwrap());
    }

    /// Every codec carries the bytes across a pipe whole, whatever the
    /// pieces they were written in.
    #[test]
    fn every_codec_reads_the_whole_pipe() {
        let data = sample(3 * pipe::CHUNK + 999);
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let codec = Codec {
                compression,
                level: Codec::default_level(compression),
                threads: 2,
            };
            let out = piped(&data, 100_003, codec);
            let back = match compression {
                Compression::None => out,
                Compression::Gzip => {
                    let mut v = Vec::new();
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                Compression::Zstd => zstd::decode_all(&out[..]).unwrap(),
            };
            assert_eq!(back, data, "{compression:?}");
        }
    }
}
