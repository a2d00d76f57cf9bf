#!/usr/bin/env python3
"""Checks that the runtime crate's imports point one way.

Reads every `crate::...` path outside comments in actors/src (tests modules excluded, since
`#[cfg(test)]` code may reach anywhere), resolves each to the file (module) it names, and reports

* every import circle between files (strongly connected components of the file graph), and
* every import of a higher layer than the importing file's own.

Layers, bottom up: the ground (types.rs, error.rs), state/, dataplane/, time/, checkpoint/,
operators/, runtime/. Exits 1 if it finds anything, so .ci/run fails on a new circle.

Usage: scripts/check-layers.py [SRC_DIR] [-v]   (default: actors/src; -v prints the graph)
"""
import os
import re
import sys

LAYERS = ["(ground)", "state", "dataplane", "time", "checkpoint", "operators", "runtime"]
GROUND = {"types", "error", "lib"}


def modules(root):
    found = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            name = os.path.relpath(path, root)[:-3]
            if name.endswith("/mod") or name == "mod":
                name = name[: -len("/mod")] if "/" in name else ""
            found[name.replace("/", "::")] = path
    return found


def code_of(path):
    text = open(path, encoding="utf-8").read()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    return "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))


def split_top(body):
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return items


def imports(text, mods):
    paths = set()
    for m in re.finditer(r"crate::\{", text):
        depth, k = 0, m.end() - 1
        while k < len(text):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                break
            k += 1
        paths.update(x.strip() for x in split_top(text[m.end() : k]))
    paths.update(m.group(1) for m in re.finditer(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text))
    out = set()
    for p in paths:
        parts = re.split(r"[{ ]", p)[0].rstrip(":").split("::")
        for i in range(len(parts), 0, -1):
            cand = "::".join(parts[:i])
            if cand in mods:
                out.add(cand)
                break
    return out


def layer(module):
    top = module.split("::")[0]
    return "(ground)" if top in GROUND or module == "" else top


def cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "actors", "src")
    mods = modules(root)
    graph = {m: imports(code_of(p), mods) - {m} for m, p in mods.items()}
    problems = 0
    for comp in cycles(graph):
        print("import circle:", " <-> ".join(comp))
        problems += 1
    for m in sorted(graph):
        for d in sorted(graph[m]):
            if layer(d) in LAYERS and layer(m) in LAYERS and LAYERS.index(layer(d)) > LAYERS.index(layer(m)):
                print(f"upward import: {m or 'lib'} ({layer(m)}) -> {d} ({layer(d)})")
                problems += 1
    if "-v" in sys.argv:
        for m in sorted(graph):
            print(f"{m or 'lib'} -> {', '.join(sorted(graph[m]))}")
    print(f"check-layers: {len(mods)} files, {problems} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
