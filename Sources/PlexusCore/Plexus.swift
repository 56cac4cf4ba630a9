import CNIInvoke
import CNISpec
import SystemKit

/// Receives the outcome of a successful ADD before Plexus answers the runtime (network-status, events). A thrown
/// error rolls the whole ADD back.
public protocol AttachmentReporter {
    /// `facts` is the pod's netns as the kernel reports it after the ADD (nil when it could not be read).
    func report(invocation: CNIInvocation, attached: [(network: PlannedNetwork, result: JSON)],
                facts: NetnsSnapshot?) throws(CNIError)
}

/// Reads which interfaces exist in a network namespace (netlink in the real binary, a table in tests).
public protocol InterfaceLister: Sendable {
    /// The link names in the namespace at `netns`; throws when they cannot be read.
    func interfaces(netns: String) throws(CNIError) -> [String]
    /// Starts reading the link names and returns how to wait for them, so ADD can plan meanwhile. The default
    /// reads them when waited for, on the waiting thread.
    func beginListing(netns: String) -> InterfaceListing
}

extension InterfaceLister {
    public func beginListing(netns: String) -> InterfaceListing { listingWhenWaited(netns: netns) }

    /// The listing that reads the link names on the waiting thread, when waited for.
    public func listingWhenWaited(netns: String) -> InterfaceListing {
        InterfaceListing { Result { () throws(CNIError) in try self.interfaces(netns: netns) } }
    }
}

/// Link names being read (see `InterfaceLister.beginListing`); `names()` waits for them.
public struct InterfaceListing {
    let wait: () -> Result<[String], CNIError>

    public init(_ wait: @escaping () -> Result<[String], CNIError>) { self.wait = wait }

    public func names() throws(CNIError) -> [String] { try wait().get() }
}

/// The meta plugin: plans an attachment, records the plan, runs every network's chain, caches each result, rolls
/// back on failure, and tears everything down from the cache on DEL. Dependencies come in through the initializer
/// so every path runs in unit tests with fakes.
public final class Plexus {
    public let config: PlexusConfig
    public let invocation: CNIInvocation
    public let runner: NetworkRunner
    public let planner: any NetworkPlanner
    public let localPlanner: LocalPlanner
    public let reporter: (any AttachmentReporter)?
    public let interfaceLister: (any InterfaceLister)?
    /// Route control and interface facts (default-route, network-status); nil where netlink is unavailable.
    public let routing: (any NetnsRouting)?
    /// Device-plugin allocations for networks with a `resourceName`; asked only when such a network is planned.
    public let deviceSource: (any DeviceSource)?
    /// DRA devices (the pod's ResourceClaims) for networks with a `resourceName`; asked before the kubelet.
    public let claimSource: (any ClaimDeviceSource)?
    /// Builds the writer of claims' `networkData` when an ADD or DEL needs it (never otherwise).
    let makeClaimPublisher: () -> (any ClaimStatusPublisher)?
    public let logger: Logger
    let store: AttachmentStore
    let cache: ResultCache
    let locks: LockSet
    /// How ADD sleeps (milliseconds) while it waits for the readiness indicator file; injected for tests.
    let sleep: (Int) -> Void

    public init(config: PlexusConfig, invocation: CNIInvocation, executor: any PluginExecutor,
                planner: (any NetworkPlanner)? = nil, reporter: (any AttachmentReporter)? = nil,
                interfaceLister: (any InterfaceLister)? = nil, routing: (any NetnsRouting)? = nil,
                deviceSource: (any DeviceSource)? = nil, claimSource: (any ClaimDeviceSource)? = nil,
                makeClaimPublisher: @escaping () -> (any ClaimStatusPublisher)? = { nil }, logger: Logger,
                sleep: @escaping (Int) -> Void = { Clock.sleep(milliseconds: $0) }) {
        self.claimSource = claimSource
        self.makeClaimPublisher = makeClaimPublisher
        self.config = config
        self.invocation = invocation
        self.runner = NetworkRunner(executor: executor, searchPaths: config.searchPaths(cniPath: invocation.cniPath))
        self.localPlanner = LocalPlanner(loader: NetworkLoader(confDir: config.confDir))
        self.planner = planner ?? localPlanner
        self.reporter = reporter
        self.interfaceLister = interfaceLister
        self.routing = routing
        self.deviceSource = deviceSource
        self.logger = logger
        self.store = AttachmentStore(cniDir: config.cniDir)
        self.cache = ResultCache(cniDir: config.cniDir)
        self.locks = LockSet(cniDir: config.cniDir)
        self.sleep = sleep
    }

    var key: AttachmentKey {
        AttachmentKey(network: config.name, containerID: invocation.containerID, ifname: invocation.ifname)
    }

    func fail(_ e: CNIError) -> CNIError { e.prefixed(invocation.subject) }

    func runtimeConf(_ n: PlannedNetwork, netns: String, cniArgs: CNIArgs) -> RuntimeConf {
        RuntimeConf(containerID: invocation.containerID, netns: netns, ifname: n.ifname,
                    cniArgs: Plexus.cniArgs(for: n, runtimeArgs: cniArgs, clusterIfname: invocation.ifname),
                    capabilityArgs: n.capabilityArgs)
    }

    /// `CNI_ARGS` for one delegate network. The runtime's per-interface args (`IP=`, `MAC=`…) are for the interface
    /// it asked for, the cluster network's; every other network gets the rest (its own requests come from its
    /// selection element). Multus forwards them to every delegate, which makes two networks claim one IP or MAC.
    static func cniArgs(for n: PlannedNetwork, runtimeArgs: CNIArgs, clusterIfname: String) -> CNIArgs {
        n.ifname == clusterIfname ? runtimeArgs : runtimeArgs.withoutPerInterfaceKeys
    }

    // MARK: ADD

    public func add() throws(CNIError) -> JSON {
        try waitForReadiness()
        let (lock, gcLock) = try locks.acquire(containerID: invocation.containerID)
        defer { lock.unlock(); gcLock.unlock() }
        // The pod's netns is read (under the lock, like before) while the stale record is looked for and the
        // networks are planned: with the Kubernetes API that hides it completely, and without it mostly.
        var listing = interfaceLister?.beginListing(netns: invocation.netns)

        // A record left by an earlier ADD (rolled back only partly, or never followed by DEL) is torn down first,
        // so its resources cannot leak and its interfaces do not collide with the new ones.
        var recordedDevices: [String: String] = [:]
        if case .record(let stale) = store.read(key) {
            // A retried ADD keeps the devices its earlier attempt chose (when the kubelet still allocates them).
            for n in stale.networks { if let id = n.deviceID { recordedDevices[n.deviceKey] = id } }
            logger.warning("tearing down stale attachment before ADD", [("state", stale.state.rawValue)])
            let failures = teardown(stale)
            if !failures.isEmpty { throw fail(combined(failures, verb: "cleanup of the previous attachment")) }
            // The teardown removed interfaces the listing may have seen: read the netns again.
            _ = listing?.wait()
            listing = interfaceLister?.beginListing(netns: invocation.netns)
        }

        let networks: [PlannedNetwork]
        let routeRequests: [DefaultRouteRequestItem]
        let finalizers: [NetworkConfigList]
        do {
            let planned = try planner.plan(config: config, invocation: invocation)
            try planned.validateUniqueInterfaces()
            networks = try assignDevices(try planned.avoiding(interfacesInUse(netns: listing)), recorded: recordedDevices)
            routeRequests = try Plexus.defaultRouteRequests(networks)
            finalizers = try Finalizers.load(config: config)
        } catch { throw fail(error) }
        if networks.isEmpty { throw fail(CNIError(.invalidNetworkConfig, "no networks to attach")) }

        // The finalizers are planned with the networks, so a DEL after a crash at any point runs them too.
        let record = AttachmentRecord(key: key, netns: invocation.netns, cniArgs: invocation.cniArgs,
                                      pod: invocation.pod?.description, state: .planned, networks: networks,
                                      finalizers: finalizers)
        let staged: StagedFile
        do { staged = try store.stage(record) } catch {
            throw fail(CNIError(.ioFailure, "cannot record attachment plan", details: error.description))
        }
        defer { staged.discard() }
        // The plan becomes durable (fsync, rename, fsync of the directory) while the first delegate starts: the
        // executor passes this gate after spawning that delegate and before writing its stdin, so no delegate can act
        // before the plan that names it is on disk, and the ~1 ms of fsyncs hide behind the delegate's start-up.
        let planRecorded = InputGate { () throws(CNIError) in
            do throws(SystemError) { try staged.commit() } catch {
                throw CNIError(.ioFailure, "cannot record attachment plan", details: error.description)
            }
        }

        var attached: [(network: PlannedNetwork, result: JSON)] = []
        for batch in Plexus.attachBatches(networks, parallel: config.parallelAttach) {
            let jobs: [() -> Result<JSON, CNIError>] = batch.map { i in { self.attachOne(networks[i], planRecorded: planRecorded) } }
            let outcomes = batch.count > 1 ? Parallel.map(jobs) : jobs.map { $0() }
            var failed: Set<Int> = []
            var errors: [CNIError] = []
            for (i, outcome) in zip(batch, outcomes) {
                switch outcome {
                case .success(let result): attached.append((networks[i], result))
                case .failure(let error):
                    failed.insert(i)
                    errors.append(error.prefixed("network \"\(networks[i].displayName)\" (\(networks[i].ifname))"))
                }
            }
            if !failed.isEmpty, let last = batch.last {
                // The rollback rewrites or removes the record, so it goes in place first (a delegate that never
                // started, one not found, did not pass the gate). When it cannot be recorded, no delegate got its
                // configuration and that is the error to report.
                var cause = combined(errors, verb: "ADD")
                do throws(CNIError) { try planRecorded.pass() } catch { cause = error }
                // Everything up to the batch's last network ran (a batch is contiguous): all of it goes.
                throw fail(rollback(record, upTo: last, cause: cause, failed: failed))
            }
        }
        // Passed already by every delegate's execution; an executor that ignores the gate still gets it passed here.
        do { try planRecorded.pass() } catch { throw fail(rollback(record, upTo: networks.count - 1, cause: error)) }

        do { try applyDefaultRoutes(&attached, requests: routeRequests) } catch {
            throw fail(rollback(record, upTo: networks.count - 1, cause: error))
        }

        // After every network (and default-route): the finalizers, with the merged result of all attachments.
        if let failed = runFinalizers(finalizers, attached: attached) {
            throw fail(rollback(record, upTo: networks.count - 1, cause: failed.error,
                                finalizers: Array(finalizers[0...failed.index]), failedFinalizer: failed.index))
        }

        if let reporter {
            // Kernel facts cost a netlink round trip: read them only when a pod's network-status will be written.
            let facts = invocation.pod != nil ? interfaceFacts() : nil
            do {
                try reporter.report(invocation: invocation, attached: attached.filter { !$0.network.isAuxiliary }, facts: facts)
                // Claims' networkData follows network-status' rules: a failure rolls the ADD back.
                try publishClaimStatus(attached, facts: facts)
            } catch {
                throw fail(rollback(record, upTo: networks.count - 1, cause: error, finalizers: finalizers))
            }
        } else {
            do { try publishClaimStatus(attached, facts: nil) } catch {
                throw fail(rollback(record, upTo: networks.count - 1, cause: error, finalizers: finalizers))
            }
        }

        let cluster = attached[0]
        do {
            return try CNIResult.convert(cluster.result, to: config.cniVersion, defaultVersion: cluster.network.list.cniVersion)
        } catch {
            throw fail(rollback(record, upTo: networks.count - 1,
                                cause: error.prefixed("cannot convert the cluster network's result to \(config.cniVersion)"),
                                finalizers: finalizers))
        }
    }

    /// One network's ADD: device-info, the chain (its first delegate passes `planRecorded` before it reads its
    /// configuration), the cache entry.
    func attachOne(_ n: PlannedNetwork, planRecorded: InputGate) -> Result<JSON, CNIError> {
        let started = Clock.monotonicNanoseconds()
        prepareDeviceInfo(n)
        do throws(CNIError) {
            let result = try runner.add(n.list, runtimeConf(n, netns: invocation.netns, cniArgs: invocation.cniArgs),
                                        inputGate: planRecorded)
            try writeCache(n, result: result, netns: invocation.netns,
                           cniArgs: Plexus.cniArgs(for: n, runtimeArgs: invocation.cniArgs, clusterIfname: invocation.ifname))
            logger.verbose("network added", [("network", n.displayName), ("ifname", n.ifname), ("ms", millis(since: started))])
            return .success(result)
        } catch {
            return .failure(error)
        }
    }

    /// The order networks are attached in, as batches of indices run together: the cluster network alone first
    /// (later networks may build on its interface, as `sbr` or an ipvlan on eth0 would), then every other network at
    /// once (each chain still in order; they share no interface, and IPAM such as host-local locks its own store),
    /// then the auxiliary chain alone, last. Serially (`parallelAttach: false`) every network is its own batch.
    static func attachBatches(_ networks: [PlannedNetwork], parallel: Bool) -> [[Int]] {
        guard parallel, networks.count > 2 else { return networks.indices.map { [$0] } }
        var middle = Array(networks.indices.dropFirst())
        var tail: [[Int]] = []
        if let last = middle.last, networks[last].isAuxiliary {
            middle.removeLast()
            tail = [[last]]
        }
        return [[0]] + (middle.isEmpty ? [] : [middle]) + tail
    }

    /// This attachment's identity as recorded in the result cache (`plexusOwner`).
    var owner: CachedAttachment.Owner { .init(network: config.name, ifname: invocation.ifname) }

    /// The interfaces of this container that other attachments hold: other Plexus attachments' records (another
    /// Plexus network the runtime attached to the same container), result-cache entries of this container that
    /// belong to another attachment or to no Plexus attachment at all, and (on ADD) the links that already exist in
    /// the netns (`netns`, the listing ADD started). When the netns cannot be read the check is skipped (the
    /// delegates report a bad netns themselves).
    func interfacesInUse(netns listing: InterfaceListing? = nil,
                         cached: [CachedAttachment]? = nil) -> InterfacesInUse {
        var inUse: InterfacesInUse = [:]
        if let listing {
            do throws(CNIError) {
                for name in try listing.names() { inUse[name] = "an existing interface of the netns" }
            } catch {
                logger.warning("cannot list the netns' interfaces", [("netns", invocation.netns), ("error", error.description)])
            }
        }
        let others = store.others(of: key)
        for r in others.records {
            inUse[r.key.ifname] = "Plexus attachment \(r.key)"
            for n in r.networks { inUse[n.ifname] = "network \"\(n.list.name)\" of Plexus attachment \(r.key)" }
        }
        for e in cached ?? containerEntries() where e.owner != owner {
            let holder = e.owner.map { "Plexus attachment \($0.network)/\(invocation.containerID)/\($0.ifname)" } ?? "a non-Plexus attachment"
            inUse[e.ifname] = "network \"\(e.networkName)\" of \(holder)"
        }
        return inUse
    }

    func writeCache(_ n: PlannedNetwork, result: JSON?, netns: String, cniArgs: CNIArgs) throws(CNIError) {
        let entry = CachedAttachment(containerID: invocation.containerID, networkName: n.list.name, ifname: n.ifname,
                                     config: n.list.bytes, netns: netns, cniArgs: cniArgs,
                                     capabilityArgs: n.capabilityArgs, result: result, owner: owner)
        // One fsync'd write per ADD: the plan (written durably before the first delegate) is what a DEL after a
        // power loss needs, since it names every network. A result only gives DEL its prevResult, and after a power
        // loss the pod's netns is gone and IPAM such as host-local releases by container ID, so a result lost or
        // emptied by a power loss (read as absent) costs nothing; a crash of Plexus itself loses nothing (the page
        // cache holds the renamed file).
        do { try cache.write(entry, durable: false) } catch {
            throw CNIError(.ioFailure, "cannot cache result of network \"\(n.displayName)\"", details: error.description)
        }
    }

    /// Deletes networks `0...index` in reverse order and returns the error to report. The network whose ADD
    /// failed gets a best-effort DEL (its delegate may have allocated before failing, but a delegate that cannot
    /// even DEL what it failed to create — macvlan without its master — must not make the pod undeletable); a
    /// transient failure (code 11) of that DEL is still recorded and retried.
    /// When the DEL of a network that *was* added fails, the record is kept as `rollback-failed` with the networks
    /// that still need a DEL, so the runtime's DEL retries exactly those.
    /// `failed` are the networks whose ADD failed (several when a batch ran concurrently). `finalizers` are those
    /// whose ADD ran (DELed first, in reverse); `failedFinalizer` (an index into them) gets a best-effort DEL like a
    /// failed network.
    func rollback(_ record: AttachmentRecord, upTo index: Int, cause: CNIError, failed: Set<Int> = [],
                  finalizers: [NetworkConfigList] = [], failedFinalizer: Int? = nil) -> CNIError {
        logger.error("ADD failed, rolling back", [("error", cause.description)])
        let subset = AttachmentRecord(key: record.key, netns: record.netns, cniArgs: record.cniArgs, pod: record.pod,
                                      state: .rollbackFailed, networks: Array(record.networks[0...index]),
                                      finalizers: finalizers)
        let bestEffort = Set(failed.map { record.networks[$0].ifname })
        let failures = teardown(subset, bestEffort: bestEffort, bestEffortFinalizers: failedFinalizer.map { [$0] } ?? [])
        if failures.isEmpty { return cause }
        return CNIError(cause.code, "\(cause.msg); rollback incomplete, a DEL will retry: \(failures.map(\.description).joined(separator: "; "))",
                        details: cause.details)
    }

    // MARK: DEL

    public func del() throws(CNIError) {
        let (lock, gcLock) = try locks.acquire(containerID: invocation.containerID)
        defer { lock.unlock(); gcLock.unlock() }
        let started = Clock.monotonicNanoseconds()

        var record: AttachmentRecord
        var bestEffort: Set<String> = []
        var bestEffortFinalizers: Set<Int> = []
        switch store.read(key) {
        case .record(let r):
            record = r
            // Result entries this attachment owns that the record does not list (left by an ADD that followed an
            // unreadable record, or by a record rewritten with fewer networks) are deleted too: nothing this
            // attachment created may outlive its DEL. Only names the record does not account for are read (the
            // teardown reads the listed ones), so a DEL from the cache costs one directory listing more.
            let listed = Set(r.networks.map { cache.path(network: $0.list.name, containerID: r.key.containerID, ifname: $0.ifname) })
            for n in ownedNetworks(in: containerEntries(excluding: listed)) {
                logger.warning("deleting a cached network the attachment record does not list", [("network", n.list.name), ("ifname", n.ifname)])
                record.networks.append(n)
            }
        case .corrupt(let why):
            logger.error("attachment record unreadable, deleting from the result cache and configuration", [("reason", why)])
            (record, bestEffort, bestEffortFinalizers) = try reconstructRecord()
        case .absent:
            (record, bestEffort, bestEffortFinalizers) = try reconstructRecord()
        }
        // The runtime's netns wins (it may be empty on containerd's second DEL); the cached one is only used by GC.
        record.netns = invocation.netns
        let failures = teardown(record, bestEffort: bestEffort, bestEffortFinalizers: bestEffortFinalizers)
        logger.info("DEL done", [("networks", String(record.networks.count)), ("ms", millis(since: started))])
        if !failures.isEmpty { throw fail(combined(failures, verb: "DEL")) }
    }

    /// Without a readable record: the delegate attachments the result cache attributes to this attachment plus
    /// the networks of the current configuration (what a runtime would DEL), so a wiped or corrupt cache never turns
    /// into leaked IPs. Networks known only from the configuration are torn down best-effort (their DEL failures
    /// are logged, not returned): nothing shows they were ever added, and after a complete DEL or rollback —
    /// containerd's second DEL, the DEL that follows a failed ADD — a delegate that cannot DEL must not fail the
    /// runtime's DEL forever. The configuration's finalizers are DELed the same way (best effort, first).
    func reconstructRecord() throws(CNIError) -> (AttachmentRecord, bestEffort: Set<String>, bestEffortFinalizers: Set<Int>) {
        let cached = containerEntries()
        var networks = ownedNetworks(in: cached)
        // Add the networks of the current configuration that the cache does not account for (a result file may be
        // corrupt too), so nothing Plexus' own configuration attaches can be skipped.
        var bestEffort: Set<String> = []
        // A configured network whose interface another attachment of the container holds was never ours under
        // that name (its ADD moved to a free `net<k>`, or it is the other attachment's): a DEL of it would tear
        // the other attachment down.
        let inUse = interfacesInUse(cached: cached)
        do {
            for n in try localPlanner.plan(config: config, invocation: invocation)
            where !networks.contains(where: { $0.ifname == n.ifname && $0.list.name == n.list.name }) && inUse[n.ifname] == nil {
                networks.append(n)
                bestEffort.insert(n.ifname)
            }
        } catch {
            // Nothing on disk shows these networks were ever added (containerd's second DEL, a DEL after a complete
            // rollback): failing here would fail that DEL forever, e.g. when `clusterNetwork` names a NAD that only
            // the API knows. Log it and delete what the cache knows.
            logger.error("cannot load the configured networks for DEL", [("error", error.description)])
        }
        // Cluster network (the runtime's ifname) first, then net1, net2…, so teardown runs in reverse ADD order.
        networks.sort { a, b in
            if a.ifname == invocation.ifname { return b.ifname != invocation.ifname }
            if b.ifname == invocation.ifname { return false }
            return a.ifname.count != b.ifname.count ? a.ifname.count < b.ifname.count : a.ifname < b.ifname
        }
        var finalizers: [NetworkConfigList] = []
        do { finalizers = try Finalizers.load(config: config) } catch {
            logger.error("cannot load the configured finalizers for DEL", [("error", error.description)])
        }
        return (AttachmentRecord(key: key, netns: invocation.netns, cniArgs: invocation.cniArgs,
                                 pod: invocation.pod?.description, state: .deleteFailed, networks: networks,
                                 finalizers: finalizers),
                bestEffort, Set(finalizers.indices))
    }

    /// This container's readable result entries (unreadable ones are logged), minus the paths in `excluding`.
    func containerEntries(excluding: Set<String> = []) -> [CachedAttachment] {
        let (entries, corrupt) = cache.list(containerID: invocation.containerID, excluding: excluding)
        for c in corrupt { logger.error("ignoring unreadable result cache file", [("reason", c.description)]) }
        return entries.map(\.entry)
    }

    /// The entries this attachment owns, as networks to tear down (DEL only).
    func ownedNetworks(in entries: [CachedAttachment]) -> [PlannedNetwork] {
        var networks: [PlannedNetwork] = []
        for e in entries where e.owner == owner {
            guard let list = try? NetworkConfigList(bytes: e.config, source: "cached config") else {
                // Its DEL can never be replayed (nor GCed): it goes with the attachment that owns it, logged.
                logger.error("removing a cached network whose configuration does not parse", [("network", e.networkName), ("ifname", e.ifname)])
                try? cache.remove(network: e.networkName, containerID: e.containerID, ifname: e.ifname)
                continue
            }
            networks.append(PlannedNetwork(list: list, ifname: e.ifname, capabilityArgs: e.capabilityArgs))
        }
        return networks
    }

    /// DELs every network of `record` in reverse order with its cached result, continuing past failures. Cache
    /// entries go only after their DEL succeeded; the record goes when everything succeeded, otherwise it is
    /// rewritten with the networks still to delete. Returns the failures.
    /// The record's finalizers are DELed first (in reverse), while the networks' cached results still exist.
    func teardown(_ record: AttachmentRecord, bestEffort: Set<String> = [], bestEffortFinalizers: Set<Int> = []) -> [CNIError] {
        let recordOwner = CachedAttachment.Owner(network: record.key.network, ifname: record.key.ifname)
        var order: [PlannedNetwork] = []
        var prevs: [JSON?] = []
        for n in record.networks.reversed() {
            switch cache.read(network: n.list.name, containerID: record.key.containerID, ifname: n.ifname) {
            case .entry(let e) where e.owner != nil && e.owner != recordOwner:
                // Another Plexus attachment of this container holds this delegate attachment: it is not ours to
                // delete (nor its cache entry).
                logger.error("not deleting a delegate attachment that belongs to another attachment",
                             [("network", n.displayName), ("ifname", n.ifname),
                              ("owner", e.owner.map { "\($0.network)/\($0.ifname)" } ?? "")])
                continue
            case .entry(let e): prevs.append(e.result)
            case .corrupt(let why):
                logger.error("ignoring unreadable result cache file", [("reason", why)])
                prevs.append(nil)
            case .absent: prevs.append(nil)
            }
            order.append(n)
        }
        // Before any network goes: the finalizers (with the results just read, in attachment order), then the
        // claims' network data.
        let cached = zip(order, prevs).reversed().compactMap { n, prev in prev.map { (network: n, result: $0) } }
        let finalized = teardownFinalizers(record, results: cached, bestEffort: bestEffortFinalizers)
        unpublishClaimStatus(record.networks)
        let runner = self.runner
        let jobs: [() -> CNIError?] = zip(order, prevs).map { n, prev in
            {
                let rt = RuntimeConf(containerID: record.key.containerID, netns: record.netns, ifname: n.ifname,
                                     cniArgs: Plexus.cniArgs(for: n, runtimeArgs: record.cniArgs, clusterIfname: record.key.ifname),
                                     capabilityArgs: n.capabilityArgs)
                do throws(CNIError) { try runner.del(n.list, rt, prevResult: prev) } catch { return error }
                return nil
            }
        }
        // Networks are independent, so their chains may be torn down at once (each chain stays in reverse order).
        let outcomes = config.parallelTeardown ? Parallel.map(jobs) : jobs.map { $0() }
        var failures = finalized.failures
        var remaining: [PlannedNetwork] = []
        for (n, outcome) in zip(order, outcomes) {
            // A transient failure ("try again later", 11) is never dropped, best effort or not: the resources may
            // well exist and a retried DEL will free them.
            if let error = outcome, bestEffort.contains(n.ifname), error.code != .tryAgainLater {
                logger.warning("best-effort DEL of the network whose ADD failed also failed",
                               [("network", n.displayName), ("error", error.description)])
                try? cache.remove(network: n.list.name, containerID: record.key.containerID, ifname: n.ifname)
                removeDeviceInfo(n)
            } else if let error = outcome {
                failures.append(error.prefixed("network \"\(n.displayName)\" (\(n.ifname))"))
                remaining.insert(n, at: 0)
            } else {
                try? cache.remove(network: n.list.name, containerID: record.key.containerID, ifname: n.ifname)
                removeDeviceInfo(n)
            }
        }
        if remaining.isEmpty && finalized.remaining.isEmpty {
            do { try store.remove(record.key) } catch {
                logger.error("cannot remove attachment record", [("error", error.description)])
            }
        } else {
            var left = record
            left.networks = remaining
            left.finalizers = finalized.remaining
            if left.state != .rollbackFailed { left.state = .deleteFailed }
            do { try store.write(left) } catch {
                logger.error("cannot record networks left to delete", [("error", error.description)])
            }
        }
        return failures
    }

    func combined(_ failures: [CNIError], verb: String) -> CNIError {
        if failures.count == 1, let only = failures.first { return only }
        let code = failures.first?.code ?? .internalError
        return CNIError(code, "\(verb) failed for \(failures.count) networks: " + failures.map(\.description).joined(separator: "; "))
    }

    // MARK: CHECK

    /// Runs CHECK on every cached network's chain (not only the cluster network), honouring `disableCheck`; the
    /// auxiliary chain is skipped.
    /// Networks whose configuration predates CHECK (< 0.4.0) are skipped.
    public func check() throws(CNIError) {
        let (lock, gcLock) = try locks.acquire(containerID: invocation.containerID)
        defer { lock.unlock(); gcLock.unlock() }
        let record: AttachmentRecord
        switch store.read(key) {
        case .record(let r): record = r
        case .corrupt(let why):
            throw fail(CNIError(.ioFailure, "attachment record unreadable", details: why))
        case .absent:
            throw fail(CNIError(.unknownContainer, "no attachment was added for this container"))
        }
        for n in record.networks {
            // The auxiliary chain runs on a `net<i>` that names no interface (Multus' behaviour): a chained plugin's
            // CHECK (tuning looks the link up) can only fail there, so it is skipped like a `disableCheck` list.
            if n.isAuxiliary {
                logger.verbose("skipping CHECK for the auxiliary chain", [("network", n.displayName)])
                continue
            }
            guard n.list.version.supportsCheck else {
                logger.verbose("skipping CHECK for a network below 0.4.0", [("network", n.displayName)])
                continue
            }
            var prev: JSON?
            if case .entry(let e) = cache.read(network: n.list.name, containerID: invocation.containerID, ifname: n.ifname) {
                prev = e.result
            }
            do {
                try runner.check(n.list, runtimeConf(n, netns: invocation.netns, cniArgs: invocation.cniArgs), prevResult: prev)
            } catch {
                throw fail(error.prefixed("network \"\(n.displayName)\" (\(n.ifname))"))
            }
        }
        do { try checkDefaultRoutes(record.networks) } catch { throw fail(error) }
        do { try checkFinalizers(record) } catch { throw fail(error) }
    }

    // MARK: readiness

    func waitForReadiness() throws(CNIError) {
        guard let file = config.readinessIndicatorFile else { return }
        let deadline = Clock.deadline(afterSeconds: config.readinessTimeoutSeconds)
        while !FileSystem.exists(file) {
            if Clock.monotonicNanoseconds() >= deadline {
                throw fail(CNIError(.tryAgainLater, "readiness indicator file \(file) did not appear within \(config.readinessTimeoutSeconds) s"))
            }
            sleep(100)
        }
    }
}

func millis(since start: Int64) -> String {
    let us = (Clock.monotonicNanoseconds() - start) / 1000
    return "\(us / 1000).\(String(us % 1000 / 100))"
}

/// Cross-process locks under `<cniDir>/locks/`: one of 128 fixed bucket files per container ID (a bounded set,
/// unlike one file per container) taken exclusively by ADD/DEL/CHECK, and the GC lock taken shared by them and
/// exclusively by GC.
public struct LockSet: Sendable {
    public let directory: String

    public init(cniDir: String) { directory = cniDir + "/locks" }

    /// The lock file a container's ADD, DEL and CHECK hold exclusively.
    public func bucketPath(_ containerID: String) -> String { directory + "/container-\(LockSet.bucket(containerID))" }

    /// The lock file GC holds exclusively and every other verb shared.
    public var gcPath: String { directory + "/gc" }

    public static func bucket(_ containerID: String) -> Int {
        var h: UInt32 = 2166136261
        for b in containerID.utf8 { h = (h ^ UInt32(b)) &* 16777619 }
        return Int(h % 128)
    }

    func prepare() throws(CNIError) {
        // Lock files hold no data: whatever stands at locks/ that is not a real directory (a planted symlink would
        // put every lock file outside the cache) is replaced, so a DEL never fails on it.
        do { try FileSystem.makeOwnDirectory(directory, mode: 0o700, replacingOther: true) } catch {
            throw CNIError(.ioFailure, "cannot create lock directory", details: error.description)
        }
    }

    /// The GC lock (shared) and the container's bucket lock (exclusive), in that order, always.
    func acquire(containerID: String) throws(CNIError) -> (FileLock, FileLock) {
        try prepare()
        do {
            let gc = try FileLock(path: gcPath, mode: .shared)
            let own = try FileLock(path: bucketPath(containerID), mode: .exclusive)
            return (own, gc)
        } catch {
            throw CNIError(.ioFailure, "cannot lock the attachment cache", details: error.description)
        }
    }

    func acquireExclusiveGC() throws(CNIError) -> FileLock {
        try prepare()
        do { return try FileLock(path: gcPath, mode: .exclusive) } catch {
            throw CNIError(.ioFailure, "cannot lock the attachment cache for GC", details: error.description)
        }
    }
}
