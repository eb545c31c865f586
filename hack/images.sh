#!/usr/bin/env bash
# Builds the two images config/ names from this checkout's release binaries, without Docker or
# a registry, straight into the containerd of a node made by the kube-control-plane kit
# (../shared/kube-control-plane/node.sh), so `kubectl apply -k config/...` runs them as is.
#
#   KAPI_RUN=~/kapi/run-node hack/images.sh [--tag TAG] [--no-build] [--out DIR] [--echo]
#
# What goes where follows the Dockerfile stage by stage: the allocator image (its final stage:
# distroless, non-root) and the publisher image (stage `publisher`: Debian's nftables, iptables
# and OpenSSH client with their libraries and xtables plugins, a `publisher` user 65532). The
# arrays below are the contract with the Dockerfile; `cargo test -p hostport-e2e --test config`
# fails when the two disagree. Files come from this machine (Debian bookworm, like the
# Dockerfile's base): a package's files as `dpkg -L` lists them, each executable's libraries.
# --out DIR keeps the OCI archives (and imports nothing when no node runs). --echo also builds
# `registry.invalid/hostport-echo:1`, the real-node scenarios' pod program (e2e/src/bin/hostport-echo.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

allocator_image=ghcr.io/hostport-allocator/hostport-allocator
allocator_copy=(/usr/local/bin/hostport-controller /usr/local/bin/hostport-webhook)
allocator_user=65532:65532
allocator_entrypoint=/usr/local/bin/hostport-controller
allocator_env=(MALLOC_MMAP_THRESHOLD_=131072)

publisher_image=ghcr.io/hostport-allocator/hostport-publisher
publisher_copy=(/usr/local/bin/hostport-publisher)
publisher_user=
publisher_entrypoint=/usr/local/bin/hostport-publisher
publisher_env=()
publisher_packages=(nftables iptables openssh-client ca-certificates)

tag=0.1.0 build=1 out= echo=
while [ $# -gt 0 ]; do
  case "$1" in
    --echo) echo=1; shift ;;
    --tag) tag=$2; shift 2 ;;
    --no-build) build=; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: hack/images.sh [--tag TAG] [--no-build] [--out DIR] [--echo]" >&2; exit 2 ;;
  esac
done
KIT=${KAPI_KIT:-$(cd .. && pwd)/shared/kube-control-plane}
log() { printf '[images] %s\n' "$*" >&2; }

if [ -n "$build" ]; then
  log "cargo build --release (controller, webhook, publisher)"
  cargo build --release --locked -p hostport-controller -p hostport-webhook -p hostport-publisher \
    --bin hostport-controller --bin hostport-webhook --bin hostport-publisher
  # Standard library only: rustc alone, not a release build of the e2e package's dependencies.
  [ -z "$echo" ] || rustc --edition 2024 -C opt-level=2 -C strip=symbols e2e/src/bin/hostport-echo.rs -o "${CARGO_TARGET_DIR:-target}/release/hostport-echo"
fi
target=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
archives=${out:-$work}
mkdir -p "$archives"

# Copies $1 (a file or a symlink) to the same path under rootfs $2; an executable or shared
# object brings its libraries along, a symlink through /etc/alternatives points at its target.
add() {
  local src=$1 root=$2 dest=${3:-$1}
  mkdir -p "$root$(dirname "$dest")"
  if [ -L "$src" ]; then
    local to; to=$(readlink "$src")
    case "$to" in /etc/alternatives/*) to=$(readlink -f "$src") ;; esac
    ln -sfn "$to" "$root$dest"
    add_target "$(readlink -f "$src")" "$root"
    return
  fi
  [ -f "$src" ] || return 0
  [ -e "$root$dest" ] || cp -p "$src" "$root$dest"
  if head -c 4 "$src" | grep -q ELF; then
    local lib
    for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*' || true); do
      [ -e "$root$lib" ] || add "$lib" "$root"
    done
  fi
}
add_target() { [ -e "$2$1" ] || add "$1" "$2"; }

# What every image has: Debian's merged /usr (/lib → usr/lib, …, so a library ldd names under
# /lib lands where Debian keeps it), passwd and group, /tmp.
base() {
  local root=$1 passwd=$2 group=$3 dir
  for dir in bin sbin lib lib64; do
    mkdir -p "$root/usr/$dir" && ln -s "usr/$dir" "$root/$dir"
  done
  mkdir -p "$root/etc" "$root/tmp" && chmod 1777 "$root/tmp"
  printf '%s\n' "root:x:0:0:root:/root:/usr/sbin/nologin" "$passwd" >"$root/etc/passwd"
  printf '%s\n' "root:x:0:" "$group" >"$root/etc/group"
}

pack() {
  local root=$1 name=$2 user=$3 entrypoint=$4; shift 4
  local archive="$archives/$(basename "$name").tar" args=()
  [ -z "$user" ] || args+=(--user "$user")
  local env; for env in "$@"; do args+=(--env "$env"); done
  python3 hack/oci-image.py "$root" "$name:$tag" "$archive" --entrypoint "$entrypoint" "${args[@]}"
  log "$name:$tag: $(du -h "$archive" | cut -f1)"
  local socket="${KAPI_RUN:-$HOME/kapi/run}/node/containerd.sock"
  if [ -S "$socket" ]; then
    # The archive names its image (index annotations). Not the kit's `image.sh --archive`:
    # its --index-name fails with containerd 1.6 when the name already exists.
    ctr --address "$socket" -n k8s.io images import --all-platforms "$archive" >/dev/null
    log "$name:$tag imported into the node's containerd"
  elif [ -z "$out" ]; then
    echo "no node containerd under ${KAPI_RUN:-$HOME/kapi/run}: set KAPI_RUN, or --out DIR" >&2
    exit 1
  fi
}

# The allocator image: the Dockerfile's final stage (distroless cc, nonroot).
root="$work/allocator"
base "$root" "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" "nonroot:x:65532:"
mkdir -p "$root/home/nonroot" && chown 65532:65532 "$root/home/nonroot"
add /etc/ssl/certs/ca-certificates.crt "$root"
for dest in "${allocator_copy[@]}"; do add "$target/$(basename "$dest")" "$root" "$dest"; done
pack "$root" "$allocator_image" "$allocator_user" "$allocator_entrypoint" "${allocator_env[@]}"

# The publisher image: the Dockerfile's `publisher` stage (Debian with its packages).
root="$work/publisher"
base "$root" "publisher:x:65532:65532::/home/publisher:/bin/sh" "publisher:x:65532:"
mkdir -p "$root/home/publisher" && chown 65532:65532 "$root/home/publisher"
add /bin/sh "$root"
for package in "${publisher_packages[@]}"; do
  while read -r file; do
    case "$file" in /usr/share/doc/*|/usr/share/man/*|/usr/share/lintian/*|/usr/share/bug/*) continue ;; esac
    [ -d "$file" ] && [ ! -L "$file" ] && continue
    add "$file" "$root"
  done < <(dpkg -L "$package")
done
# Links made by update-alternatives (iptables → xtables-nft-multi, …) and the CA bundle that
# ca-certificates generates: neither is in `dpkg -L`.
for link in /usr/sbin/* /usr/bin/*; do
  [ -L "$link" ] || continue
  case "$(readlink "$link")" in /etc/alternatives/*) ;; *) continue ;; esac
  [ -e "$root$(readlink -f "$link")" ] && ln -sfn "$(readlink -f "$link")" "$root$link"
done
add /etc/ssl/certs/ca-certificates.crt "$root"
for dest in "${publisher_copy[@]}"; do add "$target/$(basename "$dest")" "$root" "$dest"; done
pack "$root" "$publisher_image" "$publisher_user" "$publisher_entrypoint" "${publisher_env[@]}"

if [ -n "$echo" ]; then
  bash "$KIT/image.sh" registry.invalid/hostport-echo:1 --entrypoint /usr/local/bin/hostport-echo \
    "$target/hostport-echo:/usr/local/bin/hostport-echo" >/dev/null
  log "registry.invalid/hostport-echo:1 imported into the node's containerd"
fi
