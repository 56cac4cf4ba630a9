#!/bin/bash
# Install what testenv/lib/podman.py needs: Debian 12's podman 4.3 (CNI backend) with runc, and a static busybox
# for the locally built container image. Idempotent; run as root. Starts nothing and writes no podman or CNI
# configuration (the tests use a private containers.conf/storage.conf and a private CNI config dir).
#
#   podman, runc                  the runtime under test (runc: crun fails on hybrid cgroups, see README.md)
#   busybox-static                the only binary of the test image (no registry pulls)
#   containernetworking-plugins   bridge/host-local/portmap reference plugins (/usr/lib/cni)
#   iptables, iproute2, util-linux  portmap's DNAT rules; ip/nsenter to inspect the container's netns
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then echo "testenv/podman/install.sh: run as root" >&2; exit 1; fi

PKGS="podman runc busybox-static containernetworking-plugins iptables iproute2 util-linux"
# shellcheck disable=SC2086
bash "$(dirname "$0")/../apt-ensure.sh" $PKGS

for b in podman runc conmon busybox ip nsenter iptables; do
    command -v "$b" >/dev/null || { echo "podman/install.sh: $b missing after install" >&2; exit 1; }
done
for p in bridge host-local portmap loopback; do
    [ -x "/usr/lib/cni/$p" ] || { echo "podman/install.sh: /usr/lib/cni/$p missing" >&2; exit 1; }
done
echo "podman/install.sh: ok ($(podman --version), runc $(runc --version | awk 'NR==1{print $3}'))"
