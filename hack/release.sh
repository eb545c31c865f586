#!/usr/bin/env bash
# The release's files, in one command:
#   hack/release.sh 0.2.0 [dist]
# - dist/install.yaml: everything `kubectl apply -k config/default` installs, its images
#   pinned to the version's tag (kubectl apply -f https://…/install.yaml);
# - dist/hostport-allocator-<version>.tgz: the Helm chart, version and appVersion set,
#   packaged with the Helm v4 SDK (helm-python-sdk from PyPI; no helm binary).
# Needs kubectl and python3 (a virtual environment is made under target/python).
# The release workflow (.github/workflows/release.yaml) runs it and attaches both files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=${1:?usage: hack/release.sh VERSION [DIR]}
dist=${2:-dist}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || {
  echo "version $version is not semver (MAJOR.MINOR.PATCH[-PRE])" >&2; exit 1; }
mkdir -p "$dist"

# A throwaway overlay beside config/ pins the tags (kustomize loads only below its root).
overlay=$(mktemp -d config/.release-XXXXXX)
trap 'rm -rf "$overlay"' EXIT
cat >"$overlay/kustomization.yaml" <<K
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../default
images:
  - name: ghcr.io/hostport-allocator/hostport-allocator
    newTag: "$version"
K
# config/default's order (webhook configurations first) is kept: the overlay sorts the same.
sed -n '/^sortOptions:/,$p' config/default/kustomization.yaml >>"$overlay/kustomization.yaml"
{
  echo "# hostport-allocator $version: kubectl apply --server-side -f install.yaml"
  kubectl kustomize "$overlay"
} >"$dist/install.yaml"

requirements="helm-python-sdk==0.2.2 check-jsonschema==0.39.0"
venv=${HOSTPORT_RELEASE_VENV:-target/python/release}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements
fi
"$venv/bin/python" - "$version" "$dist" <<'PY'
import sys
import helm_python as helm
version, dist = sys.argv[1], sys.argv[2]
report = helm.lint("charts/hostport-allocator", None, strict=True)
if report["errors"]:
    sys.exit(f"helm lint: {report['errors']}")
print(helm.package("charts/hostport-allocator", destination=dist, version=version, app_version=version))
PY
echo "$dist/install.yaml"
