#!/bin/bash
# The whole test suite: build, unprivileged Swift unit tests, then the privileged integration tests (real network
# namespaces, Debian's reference CNI plugins, the test API server, containerd's CRI). Run as root (CI is root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash testenv/install.sh
swift build --build-tests 2>&1 | tail -n 3
# PLEXUS_GRPC_LIVE: the gRPC transport tests against a real Python grpcio server (install.sh installs grpcio).
PLEXUS_GRPC_LIVE=1 swift test --skip-build 2>&1 | tee /tmp/plexus-swift-test.log | tail -n 40
PLEXUS_BIN_DIR="$(swift build --show-bin-path)" python3 -m pytest -q -p no:cacheprovider testenv/tests "$@"
