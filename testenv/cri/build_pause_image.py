#!/usr/bin/env python3
"""Build the sandbox ("pause") image for the CRI test environment without any registry.

Compiles testenv/cri/pause/pause.c statically and packs it into a single-layer OCI image-layout
archive (oci-layout, index.json, blobs/sha256/{manifest,config,layer}) that
`ctr -n k8s.io images import` accepts.  Stdlib only; the output is deterministic for a given binary.

Usage: build_pause_image.py [--out ARCHIVE] [--name IMAGE_REF] [--cc gcc] [--workdir DIR]
"""

import argparse
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PAUSE_SRC = os.path.join(HERE, "pause", "pause.c")
DEFAULT_NAME = "localhost/plexus-pause:1.0"

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def goarch():
    m = platform.machine()
    return _GOARCH.get(m, m)


def compile_pause(out_path, cc="gcc"):
    subprocess.run([cc, "-static", "-O2", "-s", "-Wall", "-Werror", "-o", out_path, PAUSE_SRC],
                   check=True)
    return out_path


def _tar_bytes(entries):
    """entries: list of (name, bytes, mode). Deterministic ustar/pax tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = mode
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.type = tarfile.REGTYPE
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_archive(pause_binary, out_path, name=DEFAULT_NAME):
    with open(pause_binary, "rb") as f:
        binary = f.read()
    layer = _tar_bytes([("pause", binary, 0o755)])
    layer_digest = _digest(layer)
    arch = goarch()
    config = _json({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "Env": ["PATH=/bin:/"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "testenv/cri/build_pause_image.py", "created": "1970-01-01T00:00:00Z"}],
        "created": "1970-01-01T00:00:00Z",
    })
    config_digest = _digest(config)
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    })
    manifest_digest = _digest(manifest)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = _json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag},
        }],
    })
    entries = [("oci-layout", _json({"imageLayoutVersion": "1.0.0"}), 0o644),
               ("index.json", index, 0o644)]
    for blob in (layer, config, manifest):
        entries.append(("blobs/sha256/" + _digest(blob).split(":", 1)[1], blob, 0o644))
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_tar_bytes(entries))
    os.replace(tmp, out_path)
    return {"archive": out_path, "name": name, "manifest": manifest_digest}


def build(out_path, name=DEFAULT_NAME, cc="gcc", workdir=None):
    """Compile pause.c and write the OCI archive to out_path. Returns a dict (archive, name, manifest)."""
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        binary = compile_pause(os.path.join(d, "pause"), cc=cc)
        return build_archive(binary, out_path, name=name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="plexus-pause-oci.tar")
    ap.add_argument("--name", default=DEFAULT_NAME)
    ap.add_argument("--cc", default="gcc")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    info = build(os.path.abspath(args.out), name=args.name, cc=args.cc, workdir=args.workdir)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
