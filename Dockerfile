# Plexus image for deploy/30-daemonset.yaml:
#   docker build -t <registry>/plexus:<tag> .
#
# Stage 1 builds the release binaries with the Swift runtime and libstdc++ linked statically, because `plexus` runs
# on the node (exec'ed by the container runtime from /opt/cni/bin), not in this image: it must need nothing there
# but glibc (the builder's, 2.36, or newer) plus, loaded on demand, libcurl.so.4 (Kubernetes API) and libmnl.so.0
# (netlink). SwiftPM builds one --product per invocation, hence one `swift build` per binary (the second reuses the
# first's objects).
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${SWIFT_IMAGE} AS build
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get -q update \
    && apt-get -q install -y --no-install-recommends libcurl4-openssl-dev libmnl-dev libstdc++-12-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .static holds only libstdc++.a, so Package.swift's release link flags pick the static archive (as testenv/install.sh does).
RUN mkdir -p .static \
    && ln -sf "$(clang -print-file-name=libstdc++.a)" .static/libstdc++.a \
    && test -f .static/libstdc++.a
RUN swift build -c release --static-swift-stdlib --product plexus \
    && swift build -c release --static-swift-stdlib --product plexus-install \
    && swift build -c release --static-swift-stdlib --product plexus-admin \
    && swift build -c release --static-swift-stdlib --product plexus-kubeconfig \
    && swift build -c release --static-swift-stdlib --product plexus-passthru \
    && swift build -c release --static-swift-stdlib --product plexus-policy-route \
    && swift build -c release --static-swift-stdlib --product plexus-daemon \
    && mkdir -p /out \
    && for b in plexus plexus-install plexus-admin plexus-kubeconfig plexus-passthru plexus-policy-route plexus-daemon; do cp "$(swift build -c release --show-bin-path)/$b" /out/; done \
    && strip /out/plexus /out/plexus-install /out/plexus-admin /out/plexus-kubeconfig /out/plexus-passthru /out/plexus-policy-route /out/plexus-daemon \
    && ! ldd /out/plexus | grep -Eq 'libswift|libFoundation|libstdc\+\+|libcurl|libmnl' \
    && /out/plexus-install --help > /dev/null

# Stage 2: the installer and the binaries it copies to the node, nothing else.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/plexus-install /usr/local/bin/plexus-install
COPY --from=build /out/plexus /usr/local/lib/plexus/plexus
# `plexus inspect|validate` on the node (plexus-admin) and the YAML converter they and YAML kubeconfigs use.
COPY --from=build /out/plexus-admin /usr/local/lib/plexus/plexus-admin
COPY --from=build /out/plexus-kubeconfig /usr/local/lib/plexus/plexus-kubeconfig
# The head of an auxiliaryCNIChainName chain, and the policy-routing finalizer (both CNI plugins for /opt/cni/bin).
COPY --from=build /out/plexus-passthru /usr/local/lib/plexus/plexus-passthru
COPY --from=build /out/plexus-policy-route /usr/local/lib/plexus/plexus-policy-route
# The node daemon (deploy/optional/daemon.yaml): runs in its own container, never copied to the node.
COPY --from=build /out/plexus-daemon /usr/local/bin/plexus-daemon
COPY README.md /usr/share/doc/plexus/README.md
USER 0
ENTRYPOINT ["/usr/local/bin/plexus-install"]
CMD ["install", "--host-root=/host", "--source-bin-dir=/usr/local/lib/plexus"]
