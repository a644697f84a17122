#!/usr/bin/env python3
"""Print an unpacked rootfs as sorted lines: path, type, mode, uid, gid,
link target or content sha256, xattrs. Two trees are equal when these
listings are. Hard links show as the same content; mtimes are left out."""
import hashlib
import os
import stat
import sys


def describe(root, rel):
    p = os.path.join(root, rel) if rel else root
    st = os.lstat(p)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        kind, extra = "l", os.readlink(p)
    elif stat.S_ISDIR(st.st_mode):
        kind, extra = "d", ""
    elif stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        kind, extra = "f", h.hexdigest()
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        extra = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
    elif stat.S_ISFIFO(st.st_mode):
        kind, extra = "p", ""
    else:
        kind, extra = "s", ""
    try:
        xattrs = sorted(os.listxattr(p, follow_symlinks=False))
        xa = ",".join(f"{k}={os.getxattr(p, k, follow_symlinks=False).hex()}" for k in xattrs)
    except OSError:
        xa = ""
    return f"/{rel}\t{kind}\t{mode:o}\t{st.st_uid}\t{st.st_gid}\t{extra}\t{xa}"


def main():
    root = sys.argv[1]
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in dirnames + filenames:
            lines.append(describe(root, os.path.join(rel_dir, name)))
    lines.sort()
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
