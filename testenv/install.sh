#!/bin/bash
# Installs everything Plexus needs to build, test and demo on a fresh Debian 12 machine (run as root).
# Idempotent: already-installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then echo "testenv/install.sh: run as root" >&2; exit 1; fi

PKGS="libcurl4-openssl-dev libmnl-dev containernetworking-plugins iproute2 iptables openssl hyperfine jq time gcc libc6-dev strace"
# shellcheck disable=SC2086
bash testenv/apt-ensure.sh $PKGS

PY="${PYTHON:-python3}"
"$PY" -c 'import pytest' 2>/dev/null || "$PY" -m pip install -q pytest || "$PY" -m pip install -q --break-system-packages pytest
"$PY" -c 'import hypothesis' 2>/dev/null || "$PY" -m pip install -q hypothesis || "$PY" -m pip install -q --break-system-packages hypothesis
"$PY" -c 'import prometheus_client' 2>/dev/null || "$PY" -m pip install -q prometheus-client || \
    "$PY" -m pip install -q --break-system-packages prometheus-client
"$PY" -c 'import kubernetes' 2>/dev/null || "$PY" -m pip install -q kubernetes || "$PY" -m pip install -q --break-system-packages kubernetes || \
    echo "testenv/install.sh: python kubernetes client unavailable; its tests will be skipped" >&2
# Offline Kubernetes OpenAPI schemas (bundled in the package) for the deploy/ manifest checks; pulls in PyYAML.
"$PY" -c 'import kubernetes_validate, yaml' 2>/dev/null || "$PY" -m pip install -q kubernetes-validate || \
    "$PY" -m pip install -q --break-system-packages kubernetes-validate || \
    echo "testenv/install.sh: kubernetes-validate unavailable; the deploy/ schema test will fail" >&2
# grpc_tools.protoc for the fake kubelet (testenv/kubelet/): compiles api.proto at start; pulls in grpcio and protobuf.
"$PY" -c 'import grpc_tools' 2>/dev/null || "$PY" -m pip install -q grpcio-tools || "$PY" -m pip install -q --break-system-packages grpcio-tools

# containerd/runc/grpcio for the CRI end-to-end scenarios.
bash testenv/cri/install.sh
bash testenv/podman/install.sh   # podman 4.3 (CNI backend), runc, busybox-static: tests/test_podman_plexus.py

# Static libstdc++ for the release link (see Package.swift `fastStart`): a directory holding only that archive.
mkdir -p .static
ln -sf "$(gcc -print-file-name=libstdc++.a)" .static/libstdc++.a
echo "testenv/install.sh: ok"
