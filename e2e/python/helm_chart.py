"""Renders, lints, schema-checks and packages a Helm chart with the Helm v4 SDK
(helm-python-sdk: Helm's Go library through its C ABI; no helm binary, no cluster).

Reads JSON on stdin: {"chart": dir, "values": {...} or null, "namespace": str,
"package_to": dir or null} and writes JSON on stdout:
{"objects": [...], "crds": [...], "notes": str, "lint": {...}, "schema_error": str or null,
"render_error": str or null, "package": path or null}. Rendered manifests come back as
objects (parsed with ruamel.yaml), in template order.
"""

import io
import json
import sys

import helm_python as helm
from ruamel.yaml import YAML


def documents(text):
    yaml = YAML(typ="safe")
    return [d for d in yaml.load_all(io.StringIO(text)) if d is not None]


def main():
    request = json.load(sys.stdin)
    path, values = request["chart"], request.get("values")
    chart = helm.Chart.load(path)
    result = {"objects": [], "crds": [], "notes": "", "schema_error": None,
              "render_error": None, "package": None}
    try:
        chart.validate_schema(values)
    except helm.HelmError as error:
        result["schema_error"] = str(error)
    try:
        rendered = chart.render(values, name="hostport-allocator",
                                namespace=request.get("namespace", "hostport-system"),
                                is_install=True)
        for name in sorted(rendered):
            if name.endswith("NOTES.txt"):
                result["notes"] = rendered[name]
            elif name.endswith((".yaml", ".yml")):
                result["objects"].extend(documents(rendered[name]))
    except helm.HelmError as error:
        result["render_error"] = str(error)
    for crd in chart.crds:
        result["crds"].extend(documents(crd["data"]))
    result["lint"] = helm.lint(path, values, strict=True)
    if request.get("package_to"):
        result["package"] = helm.package(path, destination=request["package_to"])
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
