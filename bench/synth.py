#!/usr/bin/env python3
"""bench/synth.py -- synthetic images for slim's scale benchmarks.

    bench/synth.py files  DIR [N]     an OCI layout (tag `latest`) of N small
                                      files (default 1,000,000) in 3 layers,
                                      with whiteouts, an opaque directory,
                                      hard links and duplicate contents
    bench/synth.py big    DIR [GIB]   an OCI layout of one layer holding one
                                      GIB-GiB file (default 10) of
                                      compressible, non-repeating data

Layers are gzip (level 1) written by streaming, so memory stays small. The
output is deterministic (fixed mtimes, seeded contents). Not committed:
generated when measured (bench/scale.sh).
"""

import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

MTIME = 1700000000


def blob_writer(layout):
    """A function that moves a finished temp file into the layout's blobs."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(path, digest):
        os.replace(path, os.path.join(blobs, digest))

    return blobs, put


class HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def write_layer(layout, fill):
    """Runs fill(tar) into a gzip layer; returns (descriptor, diff_id)."""
    blobs, put = blob_writer(layout)
    tmp = os.path.join(blobs, ".tmp")
    with open(tmp, "wb") as raw:
        outer = HashingFile(raw)
        with gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=1, mtime=0) as gz:
            inner = HashingFile(gz)
            with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                fill(tar)
    digest = outer.h.hexdigest()
    put(tmp, digest)
    desc = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": "sha256:" + digest,
        "size": outer.n,
    }
    return desc, "sha256:" + inner.h.hexdigest()


def put_json(layout, value):
    blobs, _ = blob_writer(layout)
    data = json.dumps(value, sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def finish(layout, layers, diff_ids):
    config = put_json(
        layout,
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "bench/synth.py"} for _ in layers],
        },
    )
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = put_json(
        layout,
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        },
    )
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [manifest]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


def header(name, kind=tarfile.REGTYPE, size=0, mode=0o644, link=""):
    t = tarfile.TarInfo(name)
    t.type, t.size, t.mode, t.mtime, t.linkname = kind, size, mode, MTIME, link
    t.uname = t.gname = "root"
    return t


def content(i):
    """Small contents, one in 16 a duplicate of another file's."""
    key = i - (i % 16 == 0) * 8
    return (b"file %d\n" % key) * (1 + key % 7)


def dirs_of(tar, names, made):
    for n in names:
        parts = n.split("/")[:-1]
        for k in range(1, len(parts) + 1):
            d = "/".join(parts[:k])
            if d not in made:
                made.add(d)
                tar.addfile(header(d, tarfile.DIRTYPE, mode=0o755))


def files(layout, n):
    per_dir = 1000
    base = int(n * 0.6)
    second = int(n * 0.3)
    third = n - base - second

    def name(layer, i):
        return "data/l%d/d%05d/f%07d.txt" % (layer, i // per_dir, i)

    def fill(layer, count, extra=None):
        def run(tar):
            made = set()
            for i in range(count):
                p = name(layer, i)
                dirs_of(tar, [p], made)
                if i % 100 == 99:
                    # A hard link to the file before it.
                    tar.addfile(header(p, tarfile.LNKTYPE, link=name(layer, i - 1)))
                    continue
                data = content(i + layer * 10_000_000)
                tar.addfile(header(p, size=len(data)), io.BytesIO(data))
            if extra:
                extra(tar, made)

        return run

    def deletions(tar, made):
        # Whiteouts of one file in 10 of layer 1, and layer 1's last
        # directory made opaque.
        for i in range(0, base, 10):
            p = name(1, i)
            d, f = p.rsplit("/", 1)
            tar.addfile(header(d + "/.wh." + f))
        last = name(1, base - 1).rsplit("/", 1)[0]
        dirs_of(tar, [last + "/x"], made)
        tar.addfile(header(last + "/.wh..wh..opq"))

    def overwrites(tar, made):
        # Layer 2's first 1,000 files written again.
        for i in range(min(1000, second)):
            p = name(2, i)
            data = b"overwritten %d\n" % i
            tar.addfile(header(p, size=len(data)), io.BytesIO(data))

    layers, diff_ids = [], []
    for layer, count, extra in ((1, base, None), (2, second, deletions), (3, third, overwrites)):
        d, diff = write_layer(layout, fill(layer, count, extra))
        layers.append(d)
        diff_ids.append(diff)
    finish(layout, layers, diff_ids)


def big(layout, gib):
    size = gib << 30

    class Data(io.RawIOBase):
        """1 MiB blocks of a quarter seeded random bytes, three quarters
        zeros: compresses about 4:1, never repeats."""

        def __init__(self):
            self.left, self.buf = size, b""
            self.rng = random.Random(1)

        def readable(self):
            return True

        def readinto(self, b):
            if self.left == 0:
                return 0
            if not self.buf:
                self.buf = self.rng.randbytes(256 << 10) + bytes(768 << 10)
            n = min(len(b), self.left, len(self.buf))
            b[:n] = self.buf[:n]
            self.buf = self.buf[n:]
            self.left -= n
            return n

    def fill(tar):
        tar.addfile(header("data", tarfile.DIRTYPE, mode=0o755))
        tar.addfile(header("data/big.bin", size=size), io.BufferedReader(Data(), 1 << 20))

    d, diff = write_layer(layout, fill)
    finish(layout, [d], [diff])


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("files", "big"):
        sys.exit(__doc__)
    layout = sys.argv[2]
    if os.path.exists(layout):
        sys.exit(f"{layout} exists; choose a new directory")
    os.makedirs(layout)
    if sys.argv[1] == "files":
        files(layout, int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000)
    else:
        big(layout, int(sys.argv[3]) if len(sys.argv) > 3 else 10)


if __name__ == "__main__":
    main()
