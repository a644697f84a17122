#!/usr/bin/env python3
"""The import graph of src/ between files: prints every cycle (strongly
connected group of files) and every import against the pipeline order.

    usage: bench/imports.py [SRC]    (default: src); exit 1 on a finding

A file's imports are the `crate::`, `super::` and `self::` paths it names
(in `use` lists, nested braces expanded, and inline paths), each resolved
to the file of the longest module prefix that exists. `mod x;` lines are
declarations, not imports. Test modules (`#[cfg(test)] mod tests { .. }`
bodies and files named tests.rs) are left out: tests may reach anywhere.

A file that uses what its own parent module defines (`super::Source` in
transport/registry.rs) is inside that module, not a cycle between stages:
those edges are counted and listed with -v, but are not findings.
"""
import os
import re
import sys

VERBOSE = "-v" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "-v"]
SRC = ARGS[0] if ARGS else "src"

# Pipeline stages, earliest first; a file may import its own stage or an
# earlier one. Stage-neutral helpers (digests, limits, spool, parallel...)
# sit at the bottom.
STAGES = [
    ["digest", "units", "spool", "parallel", "cleanup", "memory"],
    ["reference", "image"],
    ["registry", "decompress", "progress"],
    ["transport"],
    ["layer"],
    ["transform"],
    ["profile"],
    ["stats", "settings", "config", "copy"],
    ["sandbox"],
    ["minimize"],
    ["report", "attach", "batch"],
    ["cli", "main", "lib"],
]
STAGE_OF = {m: i for i, ms in enumerate(STAGES) for m in ms}


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return []
    return rel


def strip_tests(text):
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand(prefix, body):
    """`a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e"""
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    for p in filter(None, parts):
        m = re.match(r"([\w:]*?)::\{(.*)\}$", p, re.S)
        if m:
            yield from expand(prefix + m.group(1).split("::"), m.group(2))
        else:
            yield prefix + p.split(" as ")[0].strip().split("::")


def imports(text):
    text = re.sub(r"//[^\n]*", "", text)
    # `use child::x` names a module this file declares (`mod child;`).
    children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M))
    for m in re.finditer(r"\buse\s+((?:crate|super|self|\w+)(?:::|\s*;)[^;]*);", text, re.S):
        u = re.sub(r"\s+", "", m.group(1))
        first = u.split("::")[0]
        if first not in ("crate", "super", "self"):
            if first not in children:
                continue
            u = "self::" + u
        b = re.match(r"([\w:]*?)::\{(.*)\}$", u)
        if b:
            yield from expand(b.group(1).split("::"), b.group(2))
        else:
            yield u.split("as")[0].split("::") if "::" in u else [u]
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        yield m.group(1).split("::")
    for m in re.finditer(r"(?<![\w:])(\w+)((?:::\w+)+)", text):
        if m.group(1) in children:
            yield ["self", m.group(1)] + m.group(2).split("::")[1:]


files = {}
for root, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs") and n != "tests.rs":
            p = os.path.join(root, n)
            files[tuple(module_of(p))] = p


def resolve(mod, path, is_mod_rs):
    here = list(mod) if is_mod_rs else list(mod[:-1])
    if path[0] == "crate":
        segs = path[1:]
    else:
        base = list(mod)
        segs = list(path)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        segs = base + segs
    del here
    for k in range(len(segs), -1, -1):
        if tuple(segs[:k]) in files:
            return tuple(segs[:k])
    return None


graph = {}
inward = []
for mod, path in files.items():
    is_mod_rs = path.endswith("mod.rs") or not mod
    text = strip_tests(open(path).read())
    deps = set()
    for imp in imports(text):
        target = resolve(mod, imp, is_mod_rs)
        if target is not None and target != mod and target != ():
            if mod[: len(target)] == target:
                inward.append((mod, target))
            else:
                deps.add(target)
    graph[mod] = deps

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)


sys.setrecursionlimit(10000)
for v in graph:
    if v not in index:
        visit(v)

name = lambda m: "/".join(m) or "lib"
found = 0
for comp in sccs:
    found += 1
    print("cycle:", " <-> ".join(sorted(name(m) for m in comp)))
for mod, deps in sorted(graph.items()):
    if not mod:
        continue
    for d in sorted(deps):
        a, b = STAGE_OF.get(mod[0]), STAGE_OF.get(d[0])
        if a is not None and b is not None and b > a:
            found += 1
            print(f"against the pipeline: {name(mod)} imports {name(d)}")
inward = sorted(set(inward))
if VERBOSE:
    for a, b in inward:
        print(f"inside its module: {name(a)} uses {name(b)}")
print(
    f"{len(graph)} files, {sum(map(len, graph.values()))} imports between modules, "
    f"{len(inward)} uses of a parent module's definitions, {found} findings"
)
sys.exit(1 if found else 0)
