import CNIInvoke
import CNISpec
import SystemKit

/// CNI 1.1 GC and STATUS for the meta plugin.
extension Plexus {
    /// GC (spec 1.1, `cni.dev/valid-attachments`):
    /// 1. Plexus attachments of this configuration that the runtime no longer lists are torn down like a DEL
    ///    (cached config and prevResult), then their records and cache entries are removed.
    /// 2. Result-cache entries this configuration owns without a readable record are handled the same way.
    /// 3. Every delegate network this configuration uses gets the GC verb with exactly that network's valid
    ///    attachments: every cached attachment of that network name that is still alive, whoever owns it (another
    ///    Plexus configuration, the same container on another network), so nothing alive is ever collected.
    /// 4. Every configured finalizer gets GC with the runtime's valid attachments.
    /// 5. Temp files of cache writes that died before their rename (`.<name>.tmp.<pid>`) are removed: every writer
    ///    holds the GC lock shared, so under it exclusively none is in progress.
    /// Errors of one network never stop the others; all are reported.
    public func gc() throws(CNIError) {
        let gcLock = try locks.acquireExclusiveGC()
        defer { gcLock.unlock() }
        let validList = config.validAttachments ?? []
        if config.validAttachments == nil {
            logger.warning("GC without cni.dev/valid-attachments: every cached attachment of this network is stale")
        }
        let valid = Set(validList.map { AttachmentKey(network: config.name, containerID: $0.containerID, ifname: $0.ifname) })
        var failures: [CNIError] = []

        let (records, corruptRecords) = store.list(network: config.name)
        var liveKeys = Set<AttachmentKey>()
        for r in records {
            if valid.contains(r.key) { liveKeys.insert(r.key); continue }
            logger.info("GC: deleting stale attachment", [("attachment", r.key.description)])
            failures += teardown(r).map { $0.prefixed("container \(r.key.containerID) (\(r.key.ifname))") }
        }

        let (entries, corruptEntries) = cache.list()
        for c in corruptEntries { logger.error("GC: ignoring unreadable result cache file", [("reason", c.description)]) }
        for (_, e) in entries {
            guard let owner = e.owner, owner.network == config.name else { continue }
            let ownerKey = AttachmentKey(network: config.name, containerID: e.containerID, ifname: owner.ifname)
            if valid.contains(ownerKey) || liveKeys.contains(ownerKey) { continue }
            if records.contains(where: { $0.key == ownerKey }) { continue }  // already handled in step 1
            guard let list = try? NetworkConfigList(bytes: e.config, source: "cached config") else { continue }
            let rt = RuntimeConf(containerID: e.containerID, netns: e.netns, ifname: e.ifname, cniArgs: e.cniArgs,
                                 capabilityArgs: e.capabilityArgs)
            do {
                try runner.del(list, rt, prevResult: e.result)
                try? cache.remove(network: e.networkName, containerID: e.containerID, ifname: e.ifname)
            } catch {
                failures.append(error.prefixed("container \(e.containerID) network \"\(e.networkName)\" (\(e.ifname))"))
            }
        }
        // Unreadable records: keep those named like a valid attachment, drop the rest (their delegate attachments
        // were collected through the result cache above).
        let validFiles = Set(valid.map { store.path($0) })
        for c in corruptRecords where !validFiles.contains(c.path) { try? FileSystem.remove(c.path) }

        // Delegate GC, per delegate network name.
        var lists: [String: NetworkConfigList] = [:]
        var order: [String] = []
        func consider(_ l: NetworkConfigList) {
            if lists[l.name] == nil { order.append(l.name) }
            lists[l.name] = l
        }
        if let configured = try? localPlanner.configuredNetworks(config: config) { configured.forEach(consider) }
        let remaining = cache.list().entries
        for (_, e) in remaining where e.owner?.network == config.name {
            if lists[e.networkName] == nil, let l = try? NetworkConfigList(bytes: e.config, source: "cached config") { consider(l) }
        }
        for name in order {
            guard let list = lists[name] else { continue }
            let alive = remaining.filter { $0.entry.networkName == name }.map { (containerID: $0.entry.containerID, ifname: $0.entry.ifname) }
            failures += runner.gc(list, valid: alive).map { $0.prefixed("GC of network \"\(name)\"") }
        }
        // Finalizers are per attachment: their valid attachments are the runtime's (the pod's cluster interface).
        do {
            for f in try Finalizers.load(config: config) {
                failures += runner.gc(f, valid: validList).map { $0.prefixed("GC of finalizer \"\(f.pluginType(0))\"") }
            }
        } catch {
            failures.append(error.prefixed("GC of the finalizers"))
        }
        for directory in [store.directory, cache.directory] {
            for name in FileSystem.removeAbandonedTemporaries(in: directory) {
                logger.info("GC: removed an abandoned temp file", [("file", directory + "/" + name)])
            }
        }
        if !failures.isEmpty { throw combined(failures, verb: "GC") }
    }

    /// STATUS: unavailable (50) while the readiness indicator file is missing or the cache directory is unusable;
    /// otherwise the cluster network's and `defaultNetworks`' chains, then the finalizers, are asked (those ≥ 1.1.0)
    /// and the first error is returned with its own code.
    public func status() throws(CNIError) {
        if let file = config.readinessIndicatorFile, !FileSystem.exists(file) {
            throw CNIError(.notAvailable, "readiness indicator file \(file) is missing", details: config.name)
        }
        do { try FileSystem.makeDirectories(config.cniDir, mode: 0o700) } catch {
            throw CNIError(.notAvailable, "cache directory is unusable", details: error.description)
        }
        if !FileSystem.isWritableDirectory(config.cniDir) {
            throw CNIError(.notAvailable, "cache directory is not writable", details: config.cniDir)
        }
        let lists: [NetworkConfigList]
        do {
            let required = try localPlanner.requiredNetworks(config: config)
            lists = required.lists
            for name in required.unresolved {
                logger.verbose("STATUS not forwarded to a network resolved through the API", [("network", name)])
            }
        } catch {
            throw CNIError(.notAvailable, "cannot load the cluster network: \(error.msg)", details: error.details)
        }
        for list in lists {
            do { try runner.status(list) } catch { throw error.prefixed("network \"\(list.name)\"") }
        }
        // Every pod's ADD runs the finalizers: one that is not ready makes Plexus not ready.
        let finalizers: [NetworkConfigList]
        do { finalizers = try Finalizers.load(config: config) } catch {
            throw CNIError(.notAvailable, "cannot load the finalizers: \(error.msg)", details: error.details)
        }
        for f in finalizers {
            do { try runner.status(f) } catch { throw error.prefixed("finalizer \"\(f.pluginType(0))\"") }
        }
    }
}
