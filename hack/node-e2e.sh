#!/usr/bin/env bash
# Every end-to-end scenario on a real node, ROUNDS times in a row (default 2), each round
# followed by hack/leftovers.sh: a round that fails or leaves anything of ours fails the run.
# Needs a cluster whose node has the images (`hack/images.sh --echo`) and root on this machine
# (the node scenarios make network namespaces); the README's "Run everything on a real node".
#
#   E2E_KUBECONFIG=~/kapi/run-node/admin.kubeconfig KUBECTL=~/kapi/bin/kubectl hack/node-e2e.sh
#
# Per round: the scenario files (E2E_RBAC=1, pods that really run), then `on_a_node`, then
# `installed` and `helm_installed` on their own (they install config/default and the Helm
# chart's default render; the others run their own binaries).
# Logs: target/node-e2e/round-N.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

: "${E2E_KUBECONFIG:?set E2E_KUBECONFIG to the kubeconfig of the cluster with the node}"
export E2E_NODE=1 E2E_RBAC=1 KUBECONFIG=$E2E_KUBECONFIG
export E2E_POD_IMAGE=${E2E_POD_IMAGE:-registry.invalid/hostport-echo:1}
rounds=${ROUNDS:-2}
scenarios=(controller robustness webhook tenant webhook_http self_signed rbac one_file access
           pod_claims router_publisher books claims_win passthrough blocks host_network
           status_conventions argocd_health plugin)
logs=target/node-e2e
mkdir -p "$logs"

# Built once, before the clock of the first round starts.
cargo test -p hostport-e2e --no-run "${scenarios[@]/#/--test=}" --test=on_a_node \
  --test=installed --test=helm_installed >/dev/null 2>&1 || { echo "the scenarios do not build" >&2; exit 1; }

# The images the scenarios run, in the node's containerd. The kubelet's image garbage
# collection removes unused ones (the kit's pause image included) whenever the disk is over
# 85 % used (its default imageGCHighThresholdPercent), which on a shared disk happens: say so
# instead of failing with ErrImageNeverPull.
images_present() {
  local socket=${KAPI_RUN:-$HOME/kapi/run-node}/node/containerd.sock missing=
  [ -S "$socket" ] || return 0
  local have; have=$(ctr --address "$socket" -n k8s.io images ls -q 2>/dev/null)
  for image in registry.invalid/kapi-pause:1 "$E2E_POD_IMAGE" \
      ghcr.io/hostport-allocator/hostport-allocator:0.1.0 \
      ghcr.io/hostport-allocator/hostport-publisher:0.1.0; do
    grep -qx "$image" <<<"$have" || missing="$missing $image"
  done
  [ -z "$missing" ] && return 0
  echo "missing from the node:$missing (the kubelet's image GC removes unused images when the disk is over 85 % used: free disk, then hack/images.sh --echo; the kit's node.sh re-imports its pause image)" >&2
  return 1
}

failed=0
for round in $(seq "$rounds"); do
  images_present || { failed=1; break; }
  log=$logs/round-$round.log
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  started=$SECONDS
  ok=1
  {
    cargo test -p hostport-e2e --no-fail-fast "${scenarios[@]/#/--test=}" || ok=0
    cargo test -p hostport-e2e --test on_a_node || ok=0
    cargo test -p hostport-e2e --test installed || ok=0
    cargo test -p hostport-e2e --test helm_installed || ok=0
  } >"$log" 2>&1
  passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
  failures=$(grep -oE '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
  echo "round $round: $passed passed, $failures failed in $((SECONDS - started)) s (log: $log)"
  [ "$ok" = 1 ] || { grep -E '^test .* FAILED$|^---- ' "$log" | sort -u; failed=1; }
  hack/leftovers.sh --since "$since" || failed=1
done
exit "$failed"
