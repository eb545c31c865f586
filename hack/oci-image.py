#!/usr/bin/env python3
"""Packs a root filesystem directory into a one-layer OCI image archive.

The kit's image.sh copies files but sets no environment; the Dockerfile's images carry
`ENV MALLOC_MMAP_THRESHOLD_`, so hack/images.sh builds the tree itself and packs it here:

    oci-image.py ROOTFS NAME OUT.tar [--entrypoint PATH] [--user UID:GID] [--env K=V]...

Owners (by number), modes and symlinks are kept as they are in ROOTFS. The archive is what
`image.sh NAME --archive OUT.tar` (or `ctr images import`) takes.
"""
import argparse
import gzip
import hashlib
import io
import json
import tarfile


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_of(rootfs: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
            # Owners by number only (the image's /etc/passwd names them), a fixed time.
            info.uname = info.gname = ""
            info.mtime = 0
            return info

        tar.add(rootfs, arcname=".", recursive=True, filter=numeric)
    return raw.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rootfs")
    parser.add_argument("name")
    parser.add_argument("out")
    parser.add_argument("--entrypoint")
    parser.add_argument("--user")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()

    layer_tar = layer_of(args.rootfs)
    layer = gzip.compress(layer_tar, mtime=0)
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *args.env]
    config = {"Env": env}
    if args.entrypoint:
        config["Entrypoint"] = [args.entrypoint]
    if args.user:
        config["User"] = args.user
    config_blob = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [digest(layer_tar)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config_blob),
                "size": len(config_blob),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest(manifest),
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": args.name,
                        "org.opencontainers.image.ref.name": args.name,
                    },
                }
            ],
        }
    ).encode()
    with tarfile.open(args.out, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for blob in (layer, config_blob, manifest):
            add("blobs/sha256/" + digest(blob)[7:], blob)


if __name__ == "__main__":
    main()
