#!/usr/bin/env python3
"""Finds dependency cycles in the shared crate from its `use` lines and inline paths.

Two rules (issue 13):
  * no cycle among the `service::*` modules;
  * no cycle between the `domain::*` modules and `error`.

A module is a file under shared/src (a directory's submodules count as their parent: the
`domain/structured/*.rs` files are `domain::structured`). References are `crate::a::b`,
`super::x` and `self::x` paths anywhere outside `#[cfg(test)]` modules, and grouped
`use crate::{a::b, c::d}` imports. Prints every cycle found; exits 1 if there is one.

    python3 infra/check_modules.py [shared/src]
"""

import pathlib
import re
import sys

SRC = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "shared/src")

# Back edges the check must catch, proven on a copy of the tree each run.
SELF_TEST = [
    ("service/metering.rs", "use super::chat::ChatService;"),
    ("domain/usage.rs", "use crate::error::GatewayError;"),
]


def module_of(path: pathlib.Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def unit(module: tuple) -> str:
    """The node a module counts as: `service::chat`, `domain::structured`, `error`."""
    if not module:
        return "crate"
    if module[0] in ("service", "domain", "adapters", "ports", "wire", "config") and len(module) > 1:
        return "::".join(module[:2])
    return module[0]


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod ... { ... }` blocks (brace-matched) and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_groups(text: str) -> list:
    """`use crate::{a::b, c::{d, e}}` → ['crate::a::b', 'crate::c::d', 'crate::c::e'] (roughly:
    the first segment after each brace is what matters)."""
    paths = []
    for m in re.finditer(r"\b(crate|super|self)::\{", text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        inner = text[m.end() : j - 1]
        # Top-level items of the group: split on commas at depth 0.
        level, item = 0, ""
        for ch in inner:
            if ch == "{":
                level += 1
            elif ch == "}":
                level -= 1
            if ch == "," and level == 0:
                paths.append(f"{m.group(1)}::{item.strip()}")
                item = ""
            else:
                item += ch
        if item.strip():
            paths.append(f"{m.group(1)}::{item.strip()}")
    return paths


def references(module: tuple, text: str) -> set:
    found = set()
    paths = re.findall(r"\b(?:crate|super|self)(?:::[A-Za-z_]\w*)+", text) + expand_groups(text)
    for path in paths:
        segs = [s.strip() for s in path.split("::") if s.strip()]
        head, rest = segs[0], segs[1:]
        if head == "crate":
            target = rest
        else:
            # `super` in a file module is its parent; in mod.rs the module itself is the parent
            # of its children, which `module` already accounts for.
            base = list(module)
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
            target = base + segs
        target = [t for t in target if re.match(r"^[a-z_][a-z0-9_]*$", t)]
        if target:
            found.add(unit(tuple(target)))
    return found


def graph(src: pathlib.Path) -> dict:
    global SRC
    SRC = src
    edges = {}
    for path in sorted(SRC.rglob("*.rs")):
        module = module_of(path)
        src = unit(module)
        refs = references(module, strip_tests(path.read_text()))
        edges.setdefault(src, set()).update(r for r in refs if r != src)
    return edges


def cycles(edges: dict, nodes: set) -> list:
    """Strongly connected components of more than one node in the subgraph on `nodes`."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in nodes:
                continue
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

    sys.setrecursionlimit(10_000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def violations(edges: dict) -> list:
    service = {n for n in edges if n.startswith("service::")}
    domain_error = {n for n in edges if n.startswith("domain::")} | {"error"}
    found = []
    for title, nodes, keep in [
        ("service::*", service, lambda comp: True),
        ("domain::* and error", domain_error, lambda comp: "error" in comp),
    ]:
        for comp in cycles(edges, nodes):
            if keep(comp):
                inner = {n: sorted(edges[n] & set(comp)) for n in comp}
                found.append(
                    f"cycle among {title}: "
                    + "; ".join(f"{n} -> {', '.join(t)}" for n, t in inner.items())
                )
    return found


def main() -> int:
    import shutil
    import tempfile

    src = SRC
    found = violations(graph(src))
    for line in found:
        print(line)
    if not found:
        print("no cycle among service::*, none between domain::* and error")
    # The check proves itself: each back edge added to a copy of the tree must be reported.
    for path, line in SELF_TEST:
        with tempfile.TemporaryDirectory() as tmp:
            copy = pathlib.Path(tmp) / "src"
            shutil.copytree(src, copy)
            with open(copy / path, "a") as f:
                f.write(f"\n{line}\n")
            if not violations(graph(copy)):
                print(f"self-test failed: `{line}` in {path} was not reported as a cycle")
                return 1
    print(f"self-test: {len(SELF_TEST)} added back edges reported")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
