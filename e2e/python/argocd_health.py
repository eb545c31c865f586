"""Runs Argo CD health scripts with Lua 5.1 (Argo CD's gopher-lua speaks 5.1) through lupa.

Reads JSON on stdin: {"scripts": {kind: lua source}, "cases": [{"kind": ..., "object": {...}}]}
and writes JSON on stdout: [{"status": ..., "message": ...}, ...], one per case, in order.
Each script sees the object as the global `obj` and returns its `hs` table, as in Argo CD.
"""

import json
import sys

from lupa import lua51


def run(script, obj):
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(script)
    return {"status": hs["status"], "message": hs["message"]}


def main():
    request = json.load(sys.stdin)
    results = [run(request["scripts"][case["kind"]], case["object"]) for case in request["cases"]]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
