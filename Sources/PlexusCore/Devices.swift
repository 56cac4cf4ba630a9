import CNIInvoke
import CNISpec
import DeviceInfo
import KubeClient
import SystemKit

/// The device-plugin devices allocated to a pod (the kubelet's PodResources API, or its checkpoint; a table in
/// tests). Only an ADD with a network whose NAD names a `resourceName` calls it.
public protocol DeviceSource {
    /// The pod's devices per resource. `podUID` is needed only for the checkpoint fallback.
    func devices(pod: PodIdentity, podUID: String?, resources: Set<String>) throws(CNIError) -> PodDevices
}

/// PodResources v1 over the kubelet's unix socket (gRPC through libcurl, loaded only here), `Get` then `List`,
/// retried until `podResourcesDeadlineSeconds`; the device-manager checkpoint only when the socket file is absent
/// (as Multus: a socket that exists but does not answer is an error, not a fallback).
public struct KubeletDeviceSource: DeviceSource {
    public let config: PlexusConfig
    public let logger: Logger

    public init(config: PlexusConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    public func devices(pod: PodIdentity, podUID: String?, resources: Set<String>) throws(CNIError) -> PodDevices {
        let started = Clock.monotonicNanoseconds()
        let deadline = Clock.deadline(afterSeconds: config.podResourcesDeadlineSeconds)
        let client = PodResourcesClient(transport: CurlPodResourcesTransport(socketPath: config.podResourcesSocket))
        do {
            let devices = try client.podDevices(namespace: pod.namespace, name: pod.name, wanting: resources, deadline: deadline)
            logger.verbose("kubelet PodResources answered", [("calls", client.callPaths.joined(separator: ",")),
                                                             ("ms", millis(since: started))])
            return devices
        } catch {
            if error.kind != .socketAbsent {
                throw CNIError(error.isTransient ? .tryAgainLater : .internalError,
                               "cannot get the devices of pod \(pod) from the kubelet at \(config.podResourcesSocket)",
                               details: error.description)
            }
        }
        logger.info("kubelet PodResources socket absent, reading the device-manager checkpoint",
                    [("socket", config.podResourcesSocket), ("checkpoint", config.kubeletCheckpoint)])
        let checkpoint: DeviceCheckpoint
        do { checkpoint = try DeviceCheckpoint.read(path: config.kubeletCheckpoint) } catch {
            if error.kind == .notFound {
                throw CNIError(.tryAgainLater,
                               "neither the kubelet PodResources socket \(config.podResourcesSocket) nor the device checkpoint \(config.kubeletCheckpoint) exists: cannot find the devices of pod \(pod)")
            }
            throw CNIError(.internalError, "cannot read the device checkpoint \(config.kubeletCheckpoint)", details: error.description)
        }
        guard let uid = podUID, !uid.isEmpty else {
            throw CNIError(.invalidEnvironment,
                           "the device checkpoint is keyed by pod UID, and CNI_ARGS carries no K8S_POD_UID for pod \(pod)")
        }
        return checkpoint.devices(forPodUID: uid)
    }
}

/// DeviceInfo's transport protocol over KubeClient's libcurl gRPC client.
public final class CurlPodResourcesTransport: PodResourcesTransport {
    public let grpc: any GRPCUnaryTransport

    public init(_ grpc: any GRPCUnaryTransport) { self.grpc = grpc }
    public convenience init(socketPath: String) { self.init(CurlGRPCTransport(socketPath: socketPath)) }

    public func unaryCall(path: String, message: [UInt8], timeoutNanoseconds: Int64) throws(PodResourcesCallError) -> [UInt8] {
        do { return try grpc.call(path: path, message: message, timeoutNanoseconds: timeoutNanoseconds) } catch {
            let kind: PodResourcesCallError.Kind
            switch error.kind {
            case .status(let c): kind = .status(c)
            case .socketAbsent: kind = .socketAbsent
            // A kubelet without Get answers UNIMPLEMENTED before reading the request and resets the stream; libcurl
            // 7.88.1 (Debian 12) may then report only the reset (CURLE_HTTP2_STREAM, no headers delivered). For Get
            // that is read as UNIMPLEMENTED, so the client falls back to List, which every kubelet serves.
            case .connection where error.curlCode == 92 && path == PodResourcesMethod.get:
                kind = .status(12)
            case .connection: kind = .connection
            case .timeout: kind = .timeout
            case .invalidResponse: kind = .invalidResponse
            case .setup: kind = .setup
            }
            throw PodResourcesCallError(kind, error.message)
        }
    }
}

extension PlannedNetwork {
    /// The device Plexus picked for this network (`runtimeConfig.deviceID`), from its recorded capability arguments.
    public var deviceID: String? { capabilityArgs["deviceID"]?.stringValue }
    /// The device-info file Plexus keeps for this attachment (`runtimeConfig.CNIDeviceInfoFile`).
    public var deviceInfoFile: String? { capabilityArgs["CNIDeviceInfoFile"]?.stringValue }
    /// Identifies the network among the pod's attachments for recorded device picks.
    var deviceKey: String { "\(displayName) (\(ifname))" }
}

extension Plexus {
    var deviceInfoPaths: DeviceInfoPaths { DeviceInfoPaths(baseDirectory: config.deviceInfoDir) }

    /// Gives every network with a `resourceName` one device of that resource allocated to the pod, distinct from
    /// the other networks' (recorded picks of an earlier ADD of this attachment are kept when still allocated), and
    /// injects it as Multus does: `deviceID` and `pciBusID` in the first plugin's configuration (the exact bytes
    /// DEL replays), `runtimeConfig.deviceID` and `runtimeConfig.CNIDeviceInfoFile` for plugins that declare them.
    /// Networks without a resource are returned unchanged and nothing is asked of the kubelet.
    func assignDevices(_ networks: [PlannedNetwork], recorded: [String: String]) throws(CNIError) -> [PlannedNetwork] {
        let wanting = networks.filter { $0.resourceName != nil }
        guard !wanting.isEmpty else { return networks }
        let names = wanting.map { "\"\($0.displayName)\" (\($0.resourceName ?? ""))" }.joined(separator: ", ")
        guard let pod = invocation.pod else {
            throw CNIError(.invalidEnvironment, "networks \(names) need device-plugin devices, but CNI_ARGS names no pod (K8S_POD_NAMESPACE, K8S_POD_NAME)")
        }
        let resources = Set(wanting.compactMap(\.resourceName))
        // DRA first: resources the pod's claims provide are not asked of the kubelet; the rest are.
        let claimDevices: [DRA.NetworkDevice]
        do { claimDevices = try claimSource?.networkDevices(resources: resources) ?? [] } catch {
            throw error.prefixed("devices for networks \(names)")
        }
        var claimByDevice: [String: DRA.NetworkDevice] = [:]
        for d in claimDevices { claimByDevice[d.resourceName + "\u{0}" + d.deviceID] = d }
        let fromPlugins = resources.subtracting(claimDevices.map(\.resourceName))
        var pairs = claimDevices.map { (resourceName: $0.resourceName, deviceIDs: [$0.deviceID]) }
        if !fromPlugins.isEmpty {
            guard let deviceSource else {
                throw CNIError(.internalError, "networks \(names) need device-plugin devices, but this build of Plexus cannot read them")
            }
            let plugin = try deviceSource.devices(pod: pod, podUID: invocation.cniArgs["K8S_POD_UID"], resources: fromPlugins)
            for r in plugin.resourceNames where fromPlugins.contains(r) { pairs.append((r, plugin.deviceIDs(for: r))) }
        }
        let devices = PodDevices(pairs)
        let requests = wanting.map { DeviceRequest(networkKey: $0.deviceKey, resourceName: $0.resourceName ?? "") }
        let picks: [DevicePick]
        do { picks = try DevicePicker.pick(requests, from: devices, recorded: recorded) } catch {
            throw CNIError(.invalidNetworkConfig, "not enough devices for networks \(error.unassignedNetworks.map { "\"\($0)\"" }.joined(separator: ", "))",
                           details: error.description)
        }
        var byKey: [String: String] = [:]
        for p in picks { byKey[p.networkKey] = p.deviceID }
        var out: [PlannedNetwork] = []
        for n in networks {
            guard n.resourceName != nil, let id = byKey[n.deviceKey] else {
                out.append(n)
                continue
            }
            let file: String
            do { file = try deviceInfoPaths.cniFilePath(networkName: n.displayName, containerID: invocation.containerID, ifName: n.ifname) } catch {
                throw CNIError(.invalidNetworkConfig, "network \"\(n.displayName)\": no device-info file name", details: error.description)
            }
            var assigned = try Plexus.injecting(deviceID: id, infoFile: file, into: n)
            if let claimed = claimByDevice[(n.resourceName ?? "") + "\u{0}" + id] {
                assigned.claimDevice = ClaimDeviceRecord(device: claimed, published: config.draPublishNetworkData)
            }
            out.append(assigned)
            logger.info("device assigned", [("network", n.displayName), ("ifname", n.ifname),
                                            ("resource", n.resourceName ?? ""), ("deviceID", id),
                                            ("claim", assigned.claimDevice.map { $0.device.claim.id } ?? "")])
        }
        return out
    }

    static func injecting(deviceID: String, infoFile: String, into n: PlannedNetwork) throws(CNIError) -> PlannedNetwork {
        var raw = n.list.raw
        var plugins = raw["plugins"]?.arrayValue ?? []
        guard case .object(var first)? = plugins.first else {
            throw CNIError(.invalidNetworkConfig, "network \"\(n.displayName)\" has no plugin to give device \(deviceID)")
        }
        first["deviceID"] = .string(deviceID)
        first["pciBusID"] = .string(deviceID)
        plugins[0] = .object(first)
        raw["plugins"] = .array(plugins)
        var out = n
        out.list = try NetworkConfigList(json: .object(raw), source: "network \"\(n.displayName)\" with device \(deviceID)")
        out.capabilityArgs["deviceID"] = .string(deviceID)
        out.capabilityArgs["CNIDeviceInfoFile"] = .string(infoFile)
        return out
    }

    /// Before a device-backed network's ADD: the device plugin's device-info file, when it wrote one, is copied to
    /// the attachment's own file (atomically, replacing a stale one); without one, a stale file is removed. Errors
    /// are logged: device-info is informative, the delegate does not need it.
    func prepareDeviceInfo(_ n: PlannedNetwork) {
        guard let id = n.deviceID, let resource = n.resourceName, let file = n.deviceInfoFile else { return }
        do {
            if let doc = try deviceInfoPaths.readDPFile(resourceName: resource, deviceID: id) {
                try FileSystem.makeDirectories(deviceInfoPaths.cniDirectory, mode: 0o755)
                try FileSystem.writeAtomically(file, doc.serializedBytes(), mode: 0o644)
            } else {
                try FileSystem.remove(file)
            }
        } catch {
            logger.warning("cannot prepare the device-info file", [("network", n.displayName), ("file", file), ("error", "\(error)")])
        }
    }

    /// After a network's DEL: its device-info file goes. The path comes from a cache file, so it must name a file
    /// directly in Plexus' own `cni/` directory.
    func removeDeviceInfo(_ n: PlannedNetwork) {
        guard let file = n.deviceInfoFile else { return }
        guard isOwnDeviceInfoFile(file) else {
            logger.error("not removing a device-info file outside the device-info directory", [("file", file)])
            return
        }
        do { try FileSystem.remove(file) } catch {
            logger.warning("cannot remove the device-info file", [("file", file), ("error", error.description)])
        }
    }

    func isOwnDeviceInfoFile(_ path: String) -> Bool {
        let dir = deviceInfoPaths.cniDirectory + "/"
        guard path.hasPrefix(dir) else { return false }
        let name = path.dropFirst(dir.count)
        return !name.isEmpty && !name.contains("/") && name != "." && name != ".." && !name.utf8.contains(0)
    }
}
