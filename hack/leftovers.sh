#!/usr/bin/env bash
# What the scenarios left on a node that runs only them (hack/node-e2e.sh runs this after
# each round): prints each leftover and exits 1 when there is any.
#
# Allowed, because the scenarios install them once and reuse them (like the product's own
# install): the CRDs, config/rbac and the publishers' RBAC, an empty `hostport-system`
# namespace, the client network namespace `hp-e2e-client` and its veth, and the images.
#
#   KUBECONFIG=... hack/leftovers.sh [--since <RFC 3339 time>]
# --since: also fail on image-pull failures reported by the kubelet's Events since then.
set -uo pipefail

kubectl=${KUBECTL:-kubectl}
since=
[ "${1:-}" = --since ] && since=$2
found=0

# leftover WHAT OUTPUT: reports OUTPUT (if any) under WHAT.
leftover() {
  if [ -n "$2" ]; then
    printf 'left: %s\n%s\n' "$1" "$2" | sed '2,$s/^/    /'
    found=1
  fi
}

k() { "$kubectl" "$@" 2>&1; }

leftover "scenario namespaces" "$(k get namespaces -l hostport-e2e/scenario -o name)"
leftover "pods (outside kube-system)" \
  "$(k get pods -A --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name |
     grep -v '^kube-system ')"
for kind in hostportclasses hostportclaims hostports; do
  # No CRD (the installed scenario's `delete -k config/default` removes them): none left.
  "$kubectl" get crd "$kind.hostport.rmb938.com" >/dev/null 2>&1 || continue
  leftover "$kind" "$(k get "$kind.hostport.rmb938.com" -A --no-headers --ignore-not-found)"
done
leftover "webhook configurations" \
  "$(k get mutatingwebhookconfigurations,validatingwebhookconfigurations -o name | grep -i hostport)"
leftover "objects in hostport-system" \
  "$(k -n hostport-system get deployments,daemonsets,replicasets,services,secrets,leases \
      --no-headers --ignore-not-found -o name)"
leftover "scenario nodes" "$(k get nodes -l hostport-e2e/scenario -o name)"

if [ -n "$since" ]; then
  leftover "image-pull failures since $since" \
    "$(k get events -A -o jsonpath='{range .items[*]}{.lastTimestamp}{" "}{.reason}{" "}{.involvedObject.namespace}/{.involvedObject.name}{": "}{.message}{"\n"}{end}' |
       awk -v since="$since" '$1 >= since' |
       grep -E ' (ErrImagePull|ImagePullBackOff|ErrImageNeverPull|InspectFailed) ')"
fi

# The host: our firewall rules, the scenarios' network namespaces, routes and files.
leftover "nftables table inet hostport" "$(nft list table inet hostport 2>/dev/null)"
leftover "iptables chains HOSTPORT-*" "$(iptables-save 2>/dev/null | grep -E '^:HOSTPORT-|-j HOSTPORT-')"
leftover "CNI host-port forwards" "$(iptables-save -t nat 2>/dev/null | grep -E '^-A CNI-DN-')"
leftover "network namespaces" "$(ip netns list | awk '{print $1}' | grep -E '^(hp-e2e-|hplab-)' | grep -vx hp-e2e-client)"
leftover "routes" "$(ip route | grep -E '^(203\.0\.113\.0/24|198\.51\.100\.0/24)')"
leftover "links" "$(ip -o link | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^hp-e2e-' | grep -vx hp-e2e-h)"
leftover "files" "$(ls -d /tmp/hp-e2e-* /tmp/hplab-* 2>/dev/null)"

[ "$found" = 0 ] && echo "nothing of ours is left"
exit "$found"
