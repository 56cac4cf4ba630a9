#!/bin/bash
# Install what testenv/lib/cri.py needs to drive containerd 1.6's CRI on Debian 12.
# Idempotent; run as root. Does not start any daemon (the tests start a private containerd themselves).
#
#   containerd, runc            the runtime under test (Debian packages; containerd is NOT started here)
#   containernetworking-plugins bridge/host-local/portmap/loopback reference plugins (/usr/lib/cni)
#   iptables                    needed by portmap (and bridge ipMasq, which the tests do not use)
#   iproute2, util-linux        ip / nsenter for inspecting pod network namespaces
#   gcc, libc6-dev              to build the static pause binary (testenv/cri/pause/pause.c)
#   grpcio (python)             CRI client transport (protobuf is hand-encoded, no codegen)
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: must run as root" >&2
    exit 1
fi

PKGS="containerd runc containernetworking-plugins iptables iproute2 util-linux gcc libc6-dev"
# shellcheck disable=SC2086
bash "$(dirname "$0")/../apt-ensure.sh" $PKGS

# The Debian package enables containerd.service; on machines with systemd that would start the host
# containerd on /run/containerd. The tests never use it; we leave the host service alone either way.

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import grpc' 2>/dev/null; then
    if "$PY" -m pip --version >/dev/null 2>&1; then
        # A pyenv/venv python accepts a plain install; Debian's /usr/bin/python3 is "externally managed".
        "$PY" -m pip install -q grpcio \
            || "$PY" -m pip install -q --break-system-packages grpcio \
            || true
    fi
    if ! "$PY" -c 'import grpc' 2>/dev/null; then
        # Fallback for the system python without pip: Debian's own package.
        if [ "$(command -v "$PY")" = /usr/bin/python3 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-grpcio
        fi
    fi
    "$PY" -c 'import grpc' || { echo "install.sh: could not install grpcio for $PY" >&2; exit 1; }
fi

for b in containerd containerd-shim-runc-v2 ctr runc gcc ip nsenter iptables; do
    command -v "$b" >/dev/null || { echo "install.sh: $b missing after install" >&2; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { echo "install.sh: /usr/lib/cni/bridge missing" >&2; exit 1; }
echo "install.sh: ok ($(containerd --version 2>/dev/null | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), grpcio $("$PY" -c 'import grpc; print(grpc.__version__)'))"
