#!/usr/bin/env python3
"""Checks the layering docs/architecture.md promises, from the `use` paths in src/:
no module imports another in a circle; nothing below the domain (store, keys, mail, clock) imports
the domain or anything above it; the domain imports no HTTP, CLI, wiring or adapter module; and
neither http/ nor ops/ touches the store. Exits non-zero, naming each offence."""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
BELOW = ("store", "keys", "mail", "clock")
ABOVE_DOMAIN = ("http", "ops", "server", "config", "outbound", "obs", "fixture", "theme")


def modules():
    found = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            text = re.sub(r"//[^\n]*", "", open(path, encoding="utf-8").read())
            found["::".join(parts)] = text.split("#[cfg(test)]")[0]
    return found


def resolve(names, current, path):
    parts = path.split("::")
    if parts[0] in ("crate", "$crate"):
        base, parts = [], parts[1:]
    elif parts[0] == "super":
        base, parts = (current.split("::")[:-1] if current else []), parts[1:]
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    else:
        return None
    best = None
    for i in range(len(parts) + 1):
        candidate = "::".join(base + parts[:i])
        if candidate in names:
            best = candidate
    return best


def graph(found):
    names = set(found)
    edges = collections.defaultdict(set)
    for module, text in found.items():
        paths = re.findall(r"((?:\$crate|crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", text)
        for prefix, group in re.findall(r"((?:crate|super)(?:::[a-z_]+)*)::\{([^;]*?)\}", text, re.S):
            paths += [prefix + "::" + item.strip().split(" ")[0].split("::{")[0] for item in group.split(",") if item.strip()]
        for path in paths:
            target = resolve(names, module, path)
            related = target is None or target == "" or target == module
            related = related or module.startswith(target + "::") or target.startswith(module + "::")
            if not related:
                edges[module].add(target)
    return edges


def cycles(nodes, edges):
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

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
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def main():
    found = modules()
    edges = graph(found)
    offences = []
    for component in cycles(found, edges):
        offences.append("modules import each other in a circle: " + ", ".join(component))
    for module in sorted(found):
        top = module.split("::")[0]
        for target in sorted(edges[module]):
            target_top = target.split("::")[0]
            if top in BELOW and target_top in ("domain",) + ABOVE_DOMAIN:
                offences.append(f"{module} sits below the domain but imports {target}")
            if top == "domain" and target_top in ABOVE_DOMAIN:
                offences.append(f"{module} is domain logic but imports {target}")
            if top in ("http", "ops") and target_top == "store":
                offences.append(f"{module} touches the store ({target}) instead of going through the domain")
    for offence in offences:
        print("layering:", offence)
    print(f"layering: {len(found)} modules checked, {len(offences)} offence(s)")
    return 1 if offences else 0


if __name__ == "__main__":
    sys.exit(main())
