#!/usr/bin/env python3
"""Lists which files of one module folder depend on which, and fails if they form a cycle.

    scripts/import-graph.py src/device [src/fleet ...]

A file depends on a sibling when it names it in a path (`use super::core::Device`,
`crate::device::gate::Gate`, `super::resume::stored(..)`; in `mod.rs`, `self::core` or a child
module's name) or names an item `mod.rs` defines or re-exports (`use super::Issued`: then it
depends on `mod.rs`, which depends on every child). Steps of one type spread over files (methods
of `impl ... Device<..>` in several files) also depend on each other through calls, which no
`use` shows: `self.connect(..)` in one file calling the `fn connect` another file defines counts
as an edge too ("calls"). Comments are ignored. Exit status 1 if any folder has a cycle.
"""

import pathlib
import re
import sys

USE = re.compile(r"\buse\s+([^;]+);", re.S)
IMPL = re.compile(r"\bimpl\b[^{;]*?\bfor\b[^{;]*\{|\bimpl\b[^{;]*\{")
FN = re.compile(r"\bfn\s+(\w+)")
CALL = re.compile(r"\bself\s*\.\s*(\w+)\s*(?:::<[^>]*>)?\s*\(")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def expand(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [p for part in parts if part for p in expand(head + part)]


def module_path(folder):
    rel = folder.resolve().relative_to(src_root(folder).resolve())
    return "crate::" + "::".join(rel.parts)


def src_root(folder):
    for parent in [folder, *folder.parents]:
        if (parent / "lib.rs").exists() or (parent / "main.rs").exists():
            return parent
    sys.exit(f"{folder}: no lib.rs or main.rs above it")


def nodes_of(folder):
    """File name -> source, for the files of `folder` (a sub-folder module is one node). Both
    layouts count: a module's root as `x/mod.rs` or as `x.rs` beside the folder `x/`."""
    nodes = {}
    root = folder.with_suffix(".rs")
    if not (folder / "mod.rs").exists() and root.exists():
        nodes["mod"] = strip_comments(root.read_text())
    if (folder / "lib.rs").exists():
        root = folder / "lib.rs"
        nodes["mod"] = strip_comments(root.read_text())
    for f in sorted(folder.iterdir()):
        if f.suffix == ".rs" and not (folder / f.stem).is_dir() and f != root:
            nodes[f.stem] = strip_comments(f.read_text())
        elif f.is_dir() and ((f / "mod.rs").exists() or f.with_suffix(".rs").exists()):
            files = sorted(f.rglob("*.rs"))
            if f.with_suffix(".rs").exists():
                files.append(f.with_suffix(".rs"))
            nodes[f.name + "/"] = "\n".join(as_seen_from_parent(p, f) for p in files)
    return nodes


def as_seen_from_parent(path, sub):
    """A file of sub-folder module `sub`, its `super::` paths rewritten as seen from `sub`'s
    parent: those that reach the parent become one `super::`, those that stay inside `sub` are
    its own business and name no sibling."""
    if path == sub.with_suffix(".rs"):
        depth = 0
    else:
        rel = path.relative_to(sub)
        depth = len(rel.parts) - 1 + (0 if path.name == "mod.rs" else 1)

    def rewrite(m):
        n = m.group(0).count("super::")
        return "super::" if n == depth + 1 else "own::" if n <= depth else m.group(0)

    return re.sub(r"(?:\bsuper::)+", rewrite, strip_comments(path.read_text()))


def path_edges(name, text, modules, absolute):
    """Siblings `name` names in its paths."""
    prefixes = [absolute + "::"]
    if name == "mod":
        prefixes.append("self::")
    else:
        prefixes.append("super::")
    paths = [p for tree in USE.findall(text) for p in expand(tree)]
    if name == "mod":
        # `mod.rs` names its children without a prefix (`cohorts::plan(..)`).
        paths += re.findall(r"(?<![:\w])(\w+)::", text)
    for prefix in prefixes:
        paths += [prefix + m for m in re.findall(re.escape(prefix) + r"(\w+)", text)]
    found = set()
    for p in paths:
        for prefix in prefixes:
            if p.startswith(prefix):
                first = p[len(prefix) :].split("::")[0]
                target = modules.get(first, "mod" if name != "mod" else None)
                if first not in ("self", "super", "*") and target and target != name:
                    found.add(target)
        if name == "mod" and p.split("::")[0] in modules:
            found.add(modules[p.split("::")[0]])
    return found


def impl_methods(text):
    """Names of the functions defined in the file's `impl` blocks."""
    names = set()
    for m in IMPL.finditer(text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += text[i] == "{"
            depth -= text[i] == "}"
            i += 1
        # Only the block's own functions, not a trait impl's (they are called through the trait).
        if " for " not in m.group(0):
            names |= set(FN.findall(text[m.end() : i]))
    return names


def graph(folder):
    nodes = nodes_of(folder)
    modules = {n.rstrip("/"): n for n in nodes}
    absolute = module_path(folder)
    edges = {n: {} for n in nodes}
    for name, text in nodes.items():
        for t in path_edges(name, text, modules, absolute):
            edges[name][t] = "use"
    defined = {}
    for name, text in nodes.items():
        for f in impl_methods(text):
            defined.setdefault(f, set()).add(name)
    for name, text in nodes.items():
        for called in set(CALL.findall(text)):
            owners = defined.get(called, set())
            if name in owners:
                continue
            for owner in owners:
                edges[name].setdefault(owner, "calls")
    return edges


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in edges:
        if v not in index:
            visit(v)
    return out


def layers(edges):
    """Each file's height: leaves 0, others one above the highest file they depend on."""
    height = {}

    def h(v):
        if v not in height:
            height[v] = 0
            height[v] = 1 + max((h(w) for w in edges[v]), default=-1)
        return height[v]

    for v in edges:
        h(v)
    return height


def main():
    failed = False
    for arg in sys.argv[1:] or ["src/device"]:
        folder = pathlib.Path(arg)
        edges = graph(folder)
        count = sum(len(e) for e in edges.values())
        print(f"{folder}: {len(edges)} files, {count} edges")
        for name in sorted(edges):
            targets = ", ".join(
                t + ("" if kind == "use" else " (calls)") for t, kind in sorted(edges[name].items())
            )
            print(f"  {name} -> {targets or '-'}")
        found = cycles(edges)
        if found:
            failed = True
            for c in found:
                print(f"  CYCLE: {' <-> '.join(c)}")
        else:
            height = layers(edges)
            order = sorted(edges, key=lambda v: (height[v], v))
            by_layer = {}
            for v in order:
                by_layer.setdefault(height[v], []).append(v)
            print("  no cycle; layers from the leaves up:")
            for level, names in sorted(by_layer.items()):
                print(f"    {level}: {' '.join(names)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
