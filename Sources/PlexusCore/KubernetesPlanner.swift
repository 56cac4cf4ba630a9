import CNISpec
import DeviceInfo
import KubeClient
import NetAttach
import SystemKit

/// Plans a pod's attachment from the Kubernetes API: the pod's `k8s.v1.cni.cncf.io/networks` and
/// `v1.multus-cni.io/default-network` annotations and the NetworkAttachmentDefinitions they name.
///
/// Requests per ADD with k NADs: one GET of the pod, one GET per NAD (the reporter then PATCHes network-status
/// once): 2 + k. `clusterNetwork`/`defaultNetworks` given as names are looked up in `confDir` first and only fall
/// back to a NAD in `multusNamespace` when no file declares them, so the usual on-disk cluster network costs no
/// request (Multus asks the API first).
public struct KubernetesPlanner: NetworkPlanner {
    public let api: any KubeAPI
    public let loader: NetworkLoader
    public let logger: Logger
    /// Receives the pod object, for the DRA claim source (no second GET of the pod).
    public let podBox: PodObjectBox?

    public init(api: any KubeAPI, loader: NetworkLoader, logger: Logger, podBox: PodObjectBox? = nil) {
        self.podBox = podBox
        self.api = api
        self.loader = loader
        self.logger = logger
    }

    public static let networksAnnotation = "k8s.v1.cni.cncf.io/networks"
    public static let defaultNetworkAnnotation = "v1.multus-cni.io/default-network"

    public func plan(config: PlexusConfig, invocation: CNIInvocation) throws(CNIError) -> [PlannedNetwork] {
        guard let pod = invocation.pod else {
            return try LocalPlanner(loader: loader).plan(config: config, invocation: invocation)
        }
        // The planning phase's API budget starts now (after any readiness wait).
        api.setDeadline(Clock.deadline(afterSeconds: config.apiDeadlineSeconds))
        let podJSON: JSON
        do { podJSON = try api.getPodForAttachment(namespace: pod.namespace, name: pod.name, expectedUID: pod.uid) } catch {
            throw CNIError(kubeCode(error), "cannot get pod \(pod)", details: error.description)
        }
        podBox?.pod = podJSON
        let metadata = podJSON["metadata"]?.objectValue ?? JSONObject()
        if let expected = pod.uid, let actual = metadata["uid"]?.stringValue, expected != actual {
            throw CNIError(.unknownContainer, "pod \(pod) has UID \(actual), the runtime asked for \(expected) (the pod was recreated)")
        }
        let annotations = metadata["annotations"]?.objectValue ?? JSONObject()
        let isSystemPod = config.systemNamespaces.contains(pod.namespace)

        // Networks from Plexus' configuration: cluster network, remaining inline delegates, defaultNetworks.
        var lists: [NetworkConfigList] = []
        for ref in LocalPlanner.references(config: config, allDelegates: true, defaultNetworks: !isSystemPod) {
            switch ref {
            case .inline(let json, let source): lists.append(try NetworkConfigList(json: json, source: source))
            case .named(let name): lists.append(try resolveConfigured(name, config: config))
            }
        }

        let selection: SelectionPlan
        do {
            selection = try SelectionPlanner.plan(
                SelectionPlanInput(podNamespace: pod.namespace, podName: pod.name,
                                   networksAnnotation: annotations[Self.networksAnnotation]?.stringValue,
                                   defaultNetworkAnnotation: annotations[Self.defaultNetworkAnnotation]?.stringValue),
                config: SelectionPlanConfig(clusterNetworkIfname: invocation.ifname,
                                            precedingNetworkCount: lists.count,
                                            namespaceIsolation: config.namespaceIsolation,
                                            globalNamespaces: config.globalNamespaces,
                                            multusNamespace: config.multusNamespace))
        } catch {
            throw CNIError(.invalidNetworkConfig, "invalid network selection on pod \(pod)", details: error.description)
        }

        var planned = LocalPlanner.assignInterfaces(lists, config: config, invocation: invocation)
        // The pod's default-network override replaces the cluster network (and receives the runtime's runtimeConfig).
        if let override = selection.defaultNetwork, !planned.isEmpty {
            var n = try nadNetwork(override)
            n.ifname = invocation.ifname
            n.ifnameGenerated = false
            n.capabilityArgs = merged(config.runtimeConfig, n.capabilityArgs)
            n.isDefault = true
            planned[0] = n
        }
        for ref in selection.networks {
            planned.append(try nadNetwork(ref))
        }
        return try LocalPlanner.withAuxiliaryChain(planned, config: config)
    }

    /// A `clusterNetwork`/`defaultNetworks` entry: a path, a network name in `confDir`, or else a NAD of that name
    /// in `multusNamespace`.
    func resolveConfigured(_ reference: String, config: PlexusConfig) throws(CNIError) -> NetworkConfigList {
        if reference.contains("/") { return try loader.load(reference: reference) }
        if let list = try loader.find(name: reference) { return list }
        let ref = NetworkReference(namespace: config.multusNamespace, name: reference, ifname: "net0",
                                   ifnameRequested: false, index: 0, isDefaultNetwork: false,
                                   request: NetworkSelectionElement(name: reference, namespace: config.multusNamespace))
        return try nadNetwork(ref).list
    }

    /// Fetches the NAD a reference names and turns it into the delegate network with the per-network requests.
    func nadNetwork(_ ref: NetworkReference) throws(CNIError) -> PlannedNetwork {
        let nadJSON: JSON
        do { nadJSON = try api.getNetworkAttachmentDefinition(namespace: ref.namespace, name: ref.name) } catch {
            if error.kind == .notFound {
                throw CNIError(.invalidNetworkConfig, "NetworkAttachmentDefinition \(ref.qualifiedName) not found",
                               details: error.description)
            }
            throw CNIError(kubeCode(error), "cannot get NetworkAttachmentDefinition \(ref.qualifiedName)", details: error.description)
        }
        let delegate: DelegateConfig
        do { delegate = try NetworkAttachmentDefinition(json: nadJSON).delegateConfig() } catch {
            throw CNIError(.invalidNetworkConfig, "invalid NetworkAttachmentDefinition \(ref.qualifiedName)", details: error.description)
        }
        var object: JSONObject
        switch delegate.source {
        case .inline(let config, _):
            object = config
        case .loadFromConfDir(let name):
            guard let list = try loader.find(name: name) else {
                throw CNIError(.invalidNetworkConfig,
                               "NetworkAttachmentDefinition \(ref.qualifiedName) has no spec.config and no file in \(loader.confDir) declares network \"\(name)\"")
            }
            object = list.raw
        }
        if let cniArgs = ref.request.cniArgs {
            do { object = try SelectionCNIArgs.merge(cniArgs, into: object, network: ref.qualifiedName) } catch {
                throw CNIError(.invalidNetworkConfig, "cannot apply cni-args", details: error.description)
            }
        }
        let caps = CapabilityArgs.from(ref.request)
        let missing = CapabilityArgs.undeclaredRequiredCapabilities(caps, in: object)
        if !missing.isEmpty {
            throw CNIError(.invalidNetworkConfig,
                           "network \(ref.qualifiedName) was asked for \(missing.joined(separator: ", ")) but none of its plugins declares the capability")
        }
        let list = try NetworkConfigList(json: .object(object), source: "NetworkAttachmentDefinition \(ref.qualifiedName)")
        return PlannedNetwork(list: list, ifname: ref.ifname, capabilityArgs: caps, displayName: ref.qualifiedName,
                              isDefault: ref.isDefaultNetwork, resourceName: delegate.resourceName,
                              defaultRoute: ref.request.defaultRoute, ifnameGenerated: !ref.ifnameRequested)
    }

    func merged(_ a: JSONObject, _ b: JSONObject) -> JSONObject {
        var out = a
        for m in b.members { out[m.key] = m.value }
        return out
    }
}

/// Maps API failures to CNI codes: transient ones (unreachable, timeouts, throttling, 5xx) are "try again later".
func kubeCode(_ e: KubeError) -> CNIError.Code {
    switch e.kind {
    case .unreachable, .timeout, .tooManyRequests, .server: return .tryAgainLater
    case .notFound: return .unknownContainer
    // A pod namespace or name from CNI_ARGS that no API object can have (`K8S_POD_NAMESPACE=../..`).
    case .invalidArgument: return .invalidEnvironment
    default: return .internalError
    }
}

/// Writes the pod's `k8s.v1.cni.cncf.io/network-status` once, after every network is attached, through the
/// `pods/status` subresource: a JSON merge patch, or — when the role grants `update` but not `patch` on
/// `pods/status`, as Multus' ClusterRole does — a read-modify-write PUT with conflict retries. "Pod not found" is
/// tolerated (the pod is being deleted); any other failure fails (and so rolls back) the ADD. The write gets its own
/// API deadline, so slow delegates never eat the budget of the status write.
public struct NetworkStatusReporter: AttachmentReporter {
    public let api: any KubeAPI
    public let logger: Logger
    public let deadlineSeconds: Double
    public static let annotation = "k8s.v1.cni.cncf.io/network-status"

    public init(api: any KubeAPI, logger: Logger, deadlineSeconds: Double) {
        self.api = api
        self.logger = logger
        self.deadlineSeconds = deadlineSeconds
    }

    public func report(invocation: CNIInvocation, attached: [(network: PlannedNetwork, result: JSON)],
                       facts: NetnsSnapshot?) throws(CNIError) {
        guard let pod = invocation.pod else { return }
        var inputs: [AttachmentStatusInput] = []
        for (n, result) in attached {
            let canonical = try? CNIResult.convert(result, to: "1.1.0", defaultVersion: n.list.cniVersion)
            // mac, mtu, ips and gateways as the kernel has them once every network (and default-route) is in place.
            inputs.append(AttachmentStatusInput(networkName: n.displayName, requestedIfname: n.ifname, isDefault: n.isDefault,
                                                result: canonical?.objectValue,
                                                deviceInfo: n.deviceInfoFile.flatMap { try? DeviceInfoPaths.readFile($0)?.json },
                                                kernel: facts?.interfaces[n.ifname]))
        }
        let value = NetworkStatus.annotationValue(for: inputs)
        api.setDeadline(Clock.deadline(afterSeconds: deadlineSeconds))
        do {
            _ = try api.patchPodAnnotations(namespace: pod.namespace, name: pod.name, annotations: [Self.annotation: value])
        } catch {
            switch error.kind {
            case .notFound:
                logger.warning("pod gone before network-status could be written", [("pod", pod.description)])
            case .forbidden:
                logger.info("patch of pods/status forbidden, writing network-status with update", [("pod", pod.description)])
                try replace(pod: pod, value: value)
            default:
                throw CNIError(kubeCode(error), "cannot write network-status of pod \(pod)", details: error.description)
            }
        }
    }

    /// GET, set the annotation, PUT `pods/status`; a 409 (the pod changed in between) starts over, three times.
    func replace(pod: PodIdentity, value: String) throws(CNIError) {
        var lastError: KubeError?
        for _ in 0..<3 {
            do {
                let current = try api.getPod(namespace: pod.namespace, name: pod.name)
                guard var object = current.objectValue, var metadata = object["metadata"]?.objectValue else {
                    throw CNIError(.internalError, "pod \(pod) as returned by the API has no metadata")
                }
                var annotations = metadata["annotations"]?.objectValue ?? JSONObject()
                annotations[Self.annotation] = .string(value)
                metadata["annotations"] = .object(annotations)
                object["metadata"] = .object(metadata)
                _ = try api.replacePodStatus(namespace: pod.namespace, name: pod.name, pod: .object(object))
                return
            } catch let error as KubeError {
                if error.kind == .notFound {
                    logger.warning("pod gone before network-status could be written", [("pod", pod.description)])
                    return
                }
                if error.kind != .conflict {
                    throw CNIError(kubeCode(error), "cannot write network-status of pod \(pod)", details: error.description)
                }
                lastError = error
            } catch let error as CNIError {
                throw error
            } catch {
                throw CNIError(.internalError, "cannot write network-status of pod \(pod)", details: "\(error)")
            }
        }
        throw CNIError(.tryAgainLater, "cannot write network-status of pod \(pod): it kept changing",
                       details: lastError?.description ?? "")
    }
}
