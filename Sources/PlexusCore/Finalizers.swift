import CNIInvoke
import CNISpec
import SystemKit

/// Finalizers: plugins that run once per pod after every network of the pod is attached (the CNI maintainers'
/// FINALIZE idea, container-level). Each gets CNI_COMMAND=ADD, the pod's netns, the cluster network's CNI_IFNAME
/// and the runtime's CNI_ARGS, and as `prevResult` the merged result of all the pod's attachments; what it prints is
/// never returned to the runtime. DEL runs them first, in reverse order, from the attachment record; CHECK after the
/// networks' CHECKs; GC and STATUS reach them like any delegate.
///
/// Sources, in run order: the configuration's `finalizers` list, then `<baseDirectory>/_finalize.d/*.conf` in
/// lexical order (so a drop-in such as `99-istio.conf` runs last). Each becomes a one-plugin list named by its own
/// `name` (else Plexus' network name) with its own `cniVersion` (else Plexus').
public enum Finalizers {
    public static let directoryName = "_finalize.d"

    public static func directory(config: PlexusConfig) -> String { config.baseDirectory + "/" + directoryName }

    /// The finalizers for an ADD (or for GC, STATUS and a DEL without a record), in run order.
    public static func load(config: PlexusConfig) throws(CNIError) -> [NetworkConfigList] {
        var out: [NetworkConfigList] = []
        for (i, plugin) in config.finalizers.enumerated() {
            out.append(try list(plugin, config: config, source: "finalizers[\(i)]"))
        }
        for file in try PluginConfFiles.load(directory: directory(config: config)) {
            out.append(try list(file.plugin, config: config, source: file.path))
        }
        return out
    }

    static func list(_ plugin: JSONObject, config: PlexusConfig, source: String) throws(CNIError) -> NetworkConfigList {
        var o = JSONObject()
        let version = plugin["cniVersion"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? config.cniVersion
        o["cniVersion"] = .string(version)
        o["name"] = plugin["name"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }.map(JSON.string) ?? .string(config.name)
        o["plugins"] = .array([.object(plugin)])
        do { return try NetworkConfigList(json: .object(o), source: source) } catch {
            throw error.prefixed("finalizer \(source)")
        }
    }

    /// The result a finalizer gets: every attachment's result merged (cluster network first), in its version.
    static func mergedResult(_ results: [(network: PlannedNetwork, result: JSON)], for finalizer: NetworkConfigList) throws(CNIError) -> JSON {
        try CNIResult.merge(results.map { ($0.result, $0.network.list.cniVersion) }, to: finalizer.cniVersion)
    }
}

extension Plexus {
    /// The finalizers' parameters: the pod's netns, the cluster network's interface, the runtime's whole CNI_ARGS
    /// and runtimeConfig.
    func finalizerRuntimeConf(netns: String, cniArgs: CNIArgs) -> RuntimeConf {
        RuntimeConf(containerID: invocation.containerID, netns: netns, ifname: invocation.ifname, cniArgs: cniArgs,
                    capabilityArgs: config.runtimeConfig)
    }

    /// Runs every finalizer's ADD in order. On failure returns the index that failed and its error.
    func runFinalizers(_ finalizers: [NetworkConfigList],
                       attached: [(network: PlannedNetwork, result: JSON)]) -> (index: Int, error: CNIError)? {
        let rt = finalizerRuntimeConf(netns: invocation.netns, cniArgs: invocation.cniArgs)
        for (i, f) in finalizers.enumerated() {
            let started = Clock.monotonicNanoseconds()
            do {
                let merged = try Finalizers.mergedResult(attached, for: f)
                let out = try runner.add(f, rt, prevResult: merged)
                // A finalizer may not change what the runtime gets: anything it adds is logged and dropped.
                // Compared as results, not bytes: key order and number spelling are not changes.
                let given = try? CNIResult.parse(merged, defaultVersion: f.cniVersion)
                if (try? CNIResult.parse(out, defaultVersion: f.cniVersion)) != given {
                    logger.verbose("ignoring what a finalizer changed in its result", [("finalizer", f.pluginType(0))])
                }
                logger.verbose("finalizer added", [("finalizer", f.pluginType(0)), ("ms", millis(since: started))])
            } catch {
                return (i, error.prefixed("finalizer \"\(f.pluginType(0))\" (\(f.name))"))
            }
        }
        return nil
    }

    /// CHECK of every finalizer (those ≥ 0.4.0 without `disableCheck`), after the networks' CHECKs.
    func checkFinalizers(_ record: AttachmentRecord) throws(CNIError) {
        guard !record.finalizers.isEmpty else { return }
        let results = cachedResults(record)
        let rt = finalizerRuntimeConf(netns: invocation.netns, cniArgs: invocation.cniArgs)
        for f in record.finalizers where f.version.supportsCheck {
            do {
                try runner.check(f, rt, prevResult: try Finalizers.mergedResult(results, for: f))
            } catch {
                throw error.prefixed("finalizer \"\(f.pluginType(0))\" (\(f.name))")
            }
        }
    }

    /// The cached results of the record's networks that have one, in the record's (attachment) order (CHECK).
    func cachedResults(_ record: AttachmentRecord) -> [(network: PlannedNetwork, result: JSON)] {
        record.networks.compactMap { n in
            guard case .entry(let e) = cache.read(network: n.list.name, containerID: record.key.containerID, ifname: n.ifname),
                  let result = e.result else { return nil }
            return (n, result)
        }
    }

    /// DEL of the record's finalizers in reverse order, before any network is deleted, each with the merged result
    /// of `results`, the networks still cached, which teardown has just read (none when they are already gone: DEL
    /// must work without it). Continues past failures; returns the finalizers whose DEL failed (to keep in the
    /// record) and the errors. The indices in `bestEffort` (a finalizer whose ADD failed) only log a failure that is
    /// not transient.
    func teardownFinalizers(_ record: AttachmentRecord, results: [(network: PlannedNetwork, result: JSON)],
                            bestEffort: Set<Int> = []) -> (remaining: [NetworkConfigList], failures: [CNIError]) {
        guard !record.finalizers.isEmpty else { return ([], []) }
        let rt = RuntimeConf(containerID: record.key.containerID, netns: record.netns, ifname: record.key.ifname,
                             cniArgs: record.cniArgs, capabilityArgs: config.runtimeConfig)
        var remaining: [NetworkConfigList] = []
        var failures: [CNIError] = []
        for (i, f) in record.finalizers.enumerated().reversed() {
            let prev = results.isEmpty ? nil : try? Finalizers.mergedResult(results, for: f)
            do throws(CNIError) { try runner.del(f, rt, prevResult: prev) } catch {
                if bestEffort.contains(i) && error.code != .tryAgainLater {
                    logger.warning("best-effort DEL of the finalizer whose ADD failed also failed",
                                   [("finalizer", f.pluginType(0)), ("error", error.description)])
                    continue
                }
                failures.append(error.prefixed("finalizer \"\(f.pluginType(0))\" (\(f.name))"))
                remaining.insert(f, at: 0)
            }
        }
        return (remaining, failures)
    }
}
