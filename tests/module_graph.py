#!/usr/bin/env python3
"""The import graph of the crate's top-level modules, checked.

Reads every `.rs` file under `src/`, takes the paths it names through
`crate::` (`use crate::a::b;`, `use crate::{a, b::c};`, `crate::a::f()` in
code) and `super::` chains that climb to the crate root, and draws an edge
from the file's top-level module (`src/a.rs`, `src/a/...`) to each other
top-level module it names. Comment lines are skipped.

Inside the folders named in INNER (the engine, `store/`), it draws the same
graph between the files of the folder: an edge from `store/a.rs` to
`store/b.rs` for every `super::b`, `super::{b, ..}` or `crate::store::b`
it names, and for every name it takes from the folder's `mod.rs` that
`mod.rs` re-exports from `b` (`pub use b::{X, ..}`), so that going
through a re-export does not hide an edge. `super::` paths inside a
file's own inline modules (`mod tests { use super::*; }`) name the file
itself and draw no edge.

Fails (exit 1) when:
- the top-level modules form a cycle (each cycle is printed with the files
  and paths that make it);
- two of the areas (`api`, `stream`, `ingest`, `console`) import each other;
- the storage engine (`store`) imports any other module;
- the files of a folder of INNER form a cycle.

`--self-test` runs the check on small trees made up here, some of them with
a cycle, and fails unless the check tells them apart.
"""

import os
import re
import sys
import tempfile

AREAS = {"api", "stream", "ingest", "console"}
BOTTOM = "store"
INNER = ("store",)

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def top_modules(src):
    """The names of the top-level modules: files and folders of src/."""
    mods = set()
    for entry in os.listdir(src):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            mods.add(entry[:-3])
        elif os.path.isdir(path):
            mods.add(entry)
    return mods


def module_of(src, path):
    """(top-level module, depth of the file's module below the root)."""
    rel = os.path.relpath(path, src).split(os.sep)
    if rel[-1] == "mod.rs":
        rel = rel[:-1]
    else:
        rel[-1] = rel[-1][:-3]
    return rel[0], len(rel)


def brace_items(text, start):
    """The first identifier of each item of the `{...}` group at `start`."""
    depth, item, names = 0, "", []
    for ch in text[start:]:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and ch == ",":
            names.append(item)
            item = ""
        elif depth >= 1:
            item += ch
    names.append(item)
    out = []
    for n in names:
        m = IDENT.match(n.strip())
        if m:
            out.append(m.group(0))
    return out


def code_of(path):
    with open(path, encoding="utf-8") as f:
        lines = [l for l in f if not l.lstrip().startswith("//")]
    return "".join(lines)


def named_modules(code, depth):
    """(module, the path that names it) for every path to the crate root."""
    for m in re.finditer(r"\bcrate::", code):
        rest = m.end()
        if code.startswith("{", rest):
            for name in brace_items(code, rest):
                yield name, "crate::{" + name + "}"
        else:
            i = IDENT.match(code, rest)
            if i:
                yield i.group(0), code[m.start():i.end()]
    for m in re.finditer(r"\b(?:super::){2,}", code):
        ups = m.group(0).count("super::")
        i = IDENT.match(code, m.end())
        if i and ups >= depth:
            yield i.group(0), code[m.start():i.end()]


def edges(src):
    """{(from, to): [(file, path), ...]} between top-level modules."""
    mods = top_modules(src)
    out = {}
    for root, _, files in os.walk(src):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            if os.path.dirname(path) == src and f in ("lib.rs", "main.rs"):
                continue
            me, depth = module_of(src, path)
            for name, how in named_modules(code_of(path), depth):
                if name in mods and name != me:
                    out.setdefault((me, name), []).append(
                        (os.path.relpath(path, os.path.dirname(src)), how))
    return out


def cycles(nodes, es):
    """Strongly connected components of more than one module (Tarjan)."""
    succ = {n: sorted({b for (a, b) in es if a == n}) for n in nodes}
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
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
                comps.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return comps


def inner_modules(folder):
    """The names of the modules a folder holds: its files but mod.rs."""
    return {e[:-3] for e in os.listdir(folder)
            if e.endswith(".rs") and e != "mod.rs"}


def reexports(folder):
    """{name: the file's module it comes from} for the `pub use` items of
    the folder's mod.rs."""
    out = {}
    code = code_of(os.path.join(folder, "mod.rs"))
    for m in re.finditer(r"\bpub use ([A-Za-z_][A-Za-z0-9_]*)::", code):
        if code.startswith("{", m.end()):
            names = brace_items(code, m.end())
        else:
            i = IDENT.match(code, m.end())
            names = [i.group(0)] if i else []
        for name in names:
            out[name] = m.group(1)
    return out


def file_scope(code):
    """The code outside the file's own inline modules (`mod x { .. }`),
    where `super::` is the folder. Braces in strings are rare enough in
    this crate to be ignored."""
    spans, depth, opened = [], 0, None
    for m in re.finditer(r"\bmod\s+[A-Za-z_][A-Za-z0-9_]*\s*\{|[{}]", code):
        if m.group(0) == "}":
            depth -= 1
            if opened is not None and depth == opened[1]:
                spans.append((opened[0], m.end()))
                opened = None
            continue
        if opened is None and m.group(0) != "{":
            opened = (m.start(), depth)
        depth += 1
    kept, at = [], 0
    for start, end in spans:
        kept.append(code[at:start])
        at = end
    kept.append(code[at:])
    return "".join(kept)


def sibling_names(code, folder_name):
    """(name, the path that names it) for every path into the folder:
    `super::` outside inline modules, `crate::<folder>::` anywhere."""
    for text, pat in ((file_scope(code), r"(?<![\w:])super::"),
                      (code, r"\bcrate::" + folder_name + "::")):
        for m in re.finditer(pat, text):
            rest = m.end()
            if text.startswith("{", rest):
                for name in brace_items(text, rest):
                    yield name, m.group(0) + "{" + name + "}"
            else:
                i = IDENT.match(text, rest)
                if i:
                    yield i.group(0), text[m.start():i.end()]


def inner_edges(folder):
    """{(from, to): [(file, path), ...]} between the files of `folder`."""
    mods = inner_modules(folder)
    again = reexports(folder)
    name = os.path.basename(folder)
    out = {}
    for me in sorted(mods):
        path = os.path.join(folder, me + ".rs")
        for n, how in sibling_names(code_of(path), name):
            to = n if n in mods else again.get(n)
            if to != n:
                how += f" (re-exported from {to} by mod.rs)"
            if to and to != me:
                out.setdefault((me, to), []).append(
                    (os.path.relpath(path, os.path.dirname(folder)), how))
    return out


def cycle_report(nodes, es, what):
    """One problem per cycle of the graph, with an edge of each pair."""
    problems = []
    for comp in cycles(nodes, es):
        lines = [f"cycle between {what}" + ", ".join(comp) + ":"]
        for (a, b), where in sorted(es.items()):
            if a in comp and b in comp:
                f, how = where[0]
                more = f" (and {len(where) - 1} more)" if len(where) > 1 else ""
                lines.append(f"  {a} -> {b}: {f}: {how}{more}")
        problems.append("\n".join(lines))
    return problems


def check(src, out=sys.stdout):
    """Prints what is wrong with the graph of `src`; True if nothing."""
    es = edges(src)
    nodes = top_modules(src)
    problems = cycle_report(nodes, es, "")
    inner = []
    for name in INNER:
        folder = os.path.join(src, name)
        if os.path.isfile(os.path.join(folder, "mod.rs")):
            ies = inner_edges(folder)
            problems += cycle_report(inner_modules(folder), ies,
                                     f"files of {name}/: ")
            inner.append(f"{name}/: {len(inner_modules(folder))} files, "
                         f"{len(ies)} edges")
    for (a, b), where in sorted(es.items()):
        f, how = where[0]
        if a in AREAS and b in AREAS:
            problems.append(f"area {a} imports area {b}: {f}: {how}")
        if a == BOTTOM:
            problems.append(f"{BOTTOM} imports {b}: {f}: {how}")
    for p in problems:
        print(p, file=out)
    if not problems:
        print(f"module graph of {src}: {len(nodes)} top-level modules, "
              f"{len(es)} edges; " + "; ".join(inner + [""]) + "no cycle",
              file=out)
    return not problems


def self_test():
    trees = {
        "acyclic": {
            "lib.rs": "pub mod a; pub mod b; pub mod c;",
            "a.rs": "use crate::{b, c::X};\n",
            "b/mod.rs": "pub mod x;\nuse crate::c;\n",
            "b/x.rs": "// use crate::a; (a comment)\nfn f() { crate::c::g(); }\n",
            "c.rs": "pub fn g() {}\n",
            # `super::x` in y's tests is y's own `x`, not the file x.rs.
            "store/mod.rs": "mod x; mod y;\npub use y::Thing;\n",
            "store/x.rs": "use super::{y, Thing};\n"
                          "fn h() { crate::store::y::g(); }\n",
            "store/y.rs": "// use super::x;\npub struct Thing;\n"
                          "pub fn g() { let s = format!(\"{}\", 1); }\n"
                          "fn x() {}\n#[cfg(test)]\nmod tests {\n"
                          "    use super::*;\n"
                          "    fn t() { if true { super::x(); } }\n}\n",
        },
        "cycle": {
            "lib.rs": "pub mod a; pub mod b; pub mod c;",
            "a.rs": "use crate::b;\n",
            "b/mod.rs": "pub mod x;\n",
            "b/x.rs": "fn f() { super::super::c::g(); }\n",
            "c.rs": "use crate::{\n    x::Y,\n    a::Z,\n};\n",
        },
        "areas": {
            "lib.rs": "pub mod api; pub mod console;",
            "api.rs": "use crate::console::Console;\n",
            "console.rs": "",
        },
        # c -> a only through the re-export in mod.rs.
        "store-cycle": {
            "lib.rs": "pub mod store;",
            "store/mod.rs": "mod a; mod b; mod c;\npub use a::Thing;\n",
            "store/a.rs": "use super::{b::X, c};\npub struct Thing;\n",
            "store/b.rs": "pub struct X;\nfn f() { crate::store::c::g(); }\n",
            "store/c.rs": "pub fn g() {}\nfn h(_: super::Thing) {}\n",
        },
    }
    ok = True
    for name, files in trees.items():
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "src")
            for rel, text in files.items():
                p = os.path.join(src, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "w") as f:
                    f.write(text)
            with open(os.devnull, "w") as null:
                passed = check(src, null)
            want = name == "acyclic"
            if passed != want:
                print(f"self-test {name}: check said {passed}, expected {want}")
                ok = False
    print("self-test: " + ("passed" if ok else "FAILED"))
    return ok


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(0 if self_test() else 1)
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    sys.exit(0 if check(os.path.normpath(src)) else 1)
