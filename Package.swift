// swift-tools-version:6.0
import PackageDescription

// Link-only flags for the shipped plugin binary: static Swift runtime, static libstdc++/libgcc when
// `.static/libstdc++.a` was prepared by testenv/install.sh, no PIE, and no dynamic symbol table of the program's
// own Swift symbols (the static runtime's link arguments ask for -export-dynamic; its start-up dladdr then scans
// ~4,800 symbols, ~0.1 ms of every invocation, and nothing loads these binaries' symbols dynamically). They live in
// linkerSettings so that they never force a recompile (see shared/reference/swift-performance.md §7.8).
let staticDir = Context.packageDirectory + "/.static"
let fastStart: [LinkerSetting] = [
    .unsafeFlags([
        "-static-stdlib",
        "-L", staticDir,
        "-Xclang-linker", "-static-libgcc",
        "-Xclang-linker", "-no-pie",
        "-Xlinker", "--no-export-dynamic",
    ], .when(platforms: [.linux], configuration: .release)),
]

let package = Package(
    name: "Plexus",
    products: [
        .executable(name: "plexus", targets: ["plexus"]),
        .executable(name: "plexus-kubeconfig", targets: ["plexus-kubeconfig"]),
        .executable(name: "plexus-test-delegate", targets: ["plexus-test-delegate"]),
        .executable(name: "plexus-bench", targets: ["plexus-bench"]),
        .executable(name: "plexus-install", targets: ["plexus-install"]),
        .executable(name: "plexus-admin", targets: ["plexus-admin"]),
        .executable(name: "plexus-passthru", targets: ["plexus-passthru"]),
        .executable(name: "plexus-policy-route", targets: ["plexus-policy-route"]),
        .executable(name: "plexus-daemon", targets: ["plexus-daemon"]),
    ],
    dependencies: [
        // Only the `plexus-kubeconfig` converter links Yams (and with it Foundation + ICU, ~1.5 ms of start-up):
        // the plugin itself stays Foundation-free and reads JSON-form kubeconfigs directly.
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // Only the admin CLI (`plexus inspect|validate`, a separate binary) links swift-argument-parser.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // C shims: each is imported by exactly one Swift wrapper module.
        .target(name: "CSystemShim"),
        .target(name: "CCurlShim", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "CNetlinkShim", linkerSettings: [.linkedLibrary("dl")]),

        // CNI wire model: JSON, versions, configs, results, errors. No I/O.
        .target(name: "CNISpec"),
        // Syscall chokepoint: spawn, atomic files, flock, logging, environment.
        .target(name: "SystemKit", dependencies: ["CSystemShim"]),
        // Delegate runtime: plugin lookup, exec with deadline, conflist ADD/DEL/CHECK/GC/STATUS, libcni result cache.
        .target(name: "CNIInvoke", dependencies: ["CNISpec", "SystemKit"]),
        // NPWG multi-network model: selection annotation, NADs, network-status. No I/O.
        .target(name: "NetAttach", dependencies: ["CNISpec"]),
        // Kubernetes API client over libcurl (loaded lazily with dlopen).
        .target(name: "KubeClient", dependencies: ["CNISpec", "SystemKit", "CCurlShim"]),
        // Netlink over libmnl (loaded lazily with dlopen): links, addresses and routes of a network namespace, and
        // default-route control. libmnl owns the socket; messages are built and parsed in Swift.
        .target(name: "Netlink", dependencies: ["CNetlinkShim", "SystemKit"]),
        // Device-plugin allocations: PodResources v1 protobuf + client (over an injected gRPC transport),
        // the kubelet checkpoint, device picking and device-info files. No C, no I/O beyond file reads.
        .target(name: "DeviceInfo", dependencies: ["CNISpec", "SystemKit"]),
        // The meta plugin: configuration, planning, execution, cache, dispatcher.
        .target(name: "PlexusCore", dependencies: ["CNISpec", "SystemKit", "CNIInvoke", "NetAttach", "KubeClient", "DeviceInfo"]),

        // The node installer run by the DaemonSet: binaries, generated conflist, kubeconfig, watch, uninstall.
        .target(name: "PlexusInstall", dependencies: ["CNISpec", "SystemKit"]),

        // The thin plugin ↔ node daemon protocol and the plugin's client side (sockets only, no Kubernetes).
        .target(name: "DaemonWire", dependencies: ["SystemKit"]),
        // The real I/O of a CNI call (delegates, Kubernetes, netlink), shared by the plugin and the daemon.
        .target(name: "PlexusWiring", dependencies: ["PlexusCore", "CNIInvoke", "CNISpec", "NetAttach", "Netlink", "SystemKit", "DaemonWire"]),
        // The node daemon: watch caches, shared API connection, socket server, metrics.
        .target(name: "PlexusDaemon", dependencies: ["PlexusCore", "PlexusWiring", "KubeClient", "DaemonWire", "CNIInvoke", "CNISpec", "SystemKit"]),
        .executableTarget(name: "plexus-daemon", dependencies: ["PlexusDaemon", "SystemKit"]),

        .executableTarget(name: "plexus", dependencies: ["PlexusCore", "PlexusWiring", "DaemonWire", "SystemKit", "CNISpec"], linkerSettings: fastStart),
        // Admin tools over the node's cache and configurations: inspect, validate.
        .target(name: "PlexusAdmin", dependencies: ["PlexusCore", "CNIInvoke", "CNISpec", "NetAttach", "SystemKit"]),
        .executableTarget(name: "plexus-admin", dependencies: [
            "PlexusAdmin", "PlexusCore", "KubeClient", "CNISpec", "SystemKit", "Yams",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "plexus-install", dependencies: ["PlexusInstall", "SystemKit"], linkerSettings: fastStart),
        .executableTarget(name: "plexus-kubeconfig", dependencies: ["Yams"]),
        .executableTarget(name: "plexus-test-delegate", dependencies: ["CNISpec", "SystemKit"]),
        // The head of an `auxiliaryCNIChainName` chain (Multus' passthru): answers ADD with an empty result.
        .executableTarget(name: "plexus-passthru", dependencies: ["CNISpec", "SystemKit"], linkerSettings: fastStart),
        // A finalizer: source-based policy routing across the pod's interfaces (plan in PolicyRoute, netlink here).
        .target(name: "PolicyRoute", dependencies: ["CNISpec"]),
        .executableTarget(name: "plexus-policy-route", dependencies: ["PolicyRoute", "Netlink", "CNISpec", "SystemKit"],
                          linkerSettings: fastStart),

        .executableTarget(name: "plexus-bench", dependencies: ["CNIInvoke", "CNISpec", "SystemKit"], path: "Benchmarks/plexus-bench"),

        .testTarget(name: "CNISpecTests", dependencies: ["CNISpec"]),
        .testTarget(name: "NetAttachTests", dependencies: ["NetAttach", "CNISpec"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "SystemKit"]),
        .testTarget(name: "KubeClientTests", dependencies: ["KubeClient", "CNISpec", "SystemKit"]),
        // KubeClient only for the opt-in live test of the curl gRPC transport behind PodResourcesClient.
        .testTarget(name: "DeviceInfoTests", dependencies: ["DeviceInfo", "KubeClient", "CNISpec", "SystemKit", "PlexusCore"]),
        .testTarget(name: "PlexusCoreTests", dependencies: ["PlexusCore", "CNIInvoke", "CNISpec", "SystemKit", "KubeClient", "DeviceInfo", "NetAttach"]),
        .testTarget(name: "PlexusInstallTests", dependencies: ["PlexusInstall", "CNISpec", "SystemKit"]),
        .testTarget(name: "PlexusAdminTests", dependencies: ["PlexusAdmin", "PlexusCore", "CNIInvoke", "CNISpec", "SystemKit"]),
        .testTarget(name: "PlexusDaemonTests", dependencies: ["PlexusDaemon", "DaemonWire", "KubeClient", "CNISpec", "SystemKit", "PlexusCore"]),
        .testTarget(name: "PolicyRouteTests", dependencies: ["PolicyRoute", "CNISpec"]),
        .testTarget(name: "IntegrationTests", dependencies: ["CNISpec", "SystemKit"]),
    ],
    swiftLanguageModes: [.v6]
)
