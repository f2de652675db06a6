"""Fail when two modules of the package import each other, directly or through others.

A cycle only works by accident of import order (`from pkg import module`), and breaks the day
someone writes `from pkg.module import name`. Uses grimp, the graph behind import-linter.
"""

from __future__ import annotations

import sys

import grimp


def cycles(package: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    graph = grimp.build_graph(package)
    edges = {
        module: sorted(graph.find_modules_directly_imported_by(module) & graph.modules)
        for module in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            module, child = work.pop()
            if child == 0:
                index[module] = low[module] = len(index)
                stack.append(module)
                on_stack.add(module)
            if child < len(edges[module]):
                work.append((module, child + 1))
                target = edges[module][child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            for target in edges[module]:
                if target in on_stack:
                    low[module] = min(low[module], low[target])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


if __name__ == "__main__":
    found = cycles(sys.argv[1] if len(sys.argv) > 1 else "goaltrack")
    for component in found:
        print("import cycle:", " <-> ".join(component))
    print(f"{len(found)} import cycles")
    sys.exit(1 if found else 0)
