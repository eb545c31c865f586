"""Parses PromQL expressions (promql-parser from PyPI: the Rust promql-parser crate, as
Prometheus parses them) and names the metrics each one selects.

Reads a JSON list of expressions on stdin; writes a JSON list, one entry per expression:
{"metrics": [...]} or {"error": "..."}.
"""

import json
import sys

import promql_parser

# The attributes that hold sub-expressions (others hold operators, modifiers, durations).
CHILDREN = ("lhs", "rhs", "expr", "param", "args", "vector_selector")


def selected(node, out):
    if isinstance(node, list):
        for item in node:
            selected(item, out)
        return
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            out.add(node.name)
        return
    for attribute in CHILDREN:
        child = getattr(node, attribute, None)
        if child is not None:
            selected(child, out)


def main():
    results = []
    for expr in json.load(sys.stdin):
        try:
            names = set()
            selected(promql_parser.parse(expr), names)
            results.append({"metrics": sorted(names)})
        except Exception as error:  # the parser's own error type carries the position
            results.append({"error": f"{expr}: {error}"})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
