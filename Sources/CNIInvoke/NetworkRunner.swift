import CNISpec

/// The attachment parameters of one network operation (libcni's `RuntimeConf`).
public struct RuntimeConf: Sendable, Equatable {
    public var containerID: String
    public var netns: String
    public var ifname: String
    public var cniArgs: CNIArgs
    /// Capability arguments; each plugin receives the keys it declares in `capabilities`.
    public var capabilityArgs: JSONObject

    public init(containerID: String, netns: String, ifname: String, cniArgs: CNIArgs = CNIArgs(),
                capabilityArgs: JSONObject = JSONObject()) {
        self.containerID = containerID
        self.netns = netns
        self.ifname = ifname
        self.cniArgs = cniArgs
        self.capabilityArgs = capabilityArgs
    }
}

/// Executes a network configuration list the way the spec's "runtime obligations" (and libcni) describe:
/// ADD in order with `prevResult` chaining, DEL in reverse with the cached result, CHECK in order, GC on every
/// plugin collecting errors, STATUS on every plugin returning the first error unchanged.
public struct NetworkRunner: Sendable {
    public var executor: any PluginExecutor
    /// Where delegate binaries are looked up, in order (Plexus: `binDir` then `CNI_PATH`).
    public var searchPaths: [String]

    public init(executor: any PluginExecutor, searchPaths: [String]) {
        self.executor = executor
        self.searchPaths = searchPaths
    }

    var cniPathEnv: String { searchPaths.joined(separator: ":") }

    func exec(_ list: NetworkConfigList, plugin index: Int, command: String, rt: RuntimeConf?, stdin: [UInt8],
              inputGate: InputGate? = nil) throws(CNIError) -> [UInt8] {
        let type = list.pluginType(index)
        let path: String
        do { path = try executor.find(type, in: searchPaths) } catch {
            throw error.prefixed("plugin type=\"\(type)\" name=\"\(list.name)\" (\(command.lowercased()))")
        }
        let req = ExecRequest(pluginPath: path, command: command, containerID: rt?.containerID ?? "",
                              netns: rt?.netns ?? "", ifname: rt?.ifname ?? "", cniArgs: rt?.cniArgs.encoded ?? "",
                              cniPath: cniPathEnv, stdin: stdin, inputGate: inputGate)
        do { return try executor.execute(req) } catch {
            throw error.prefixed("plugin type=\"\(type)\" name=\"\(list.name)\" failed (\(command.lowercased()))")
        }
    }

    /// Parses a plugin's ADD output, stamping the list version on a result without one (libcni
    /// `fixupResultVersion`); an empty or `null` output becomes an empty result.
    static func parseResult(_ bytes: [UInt8], list: NetworkConfigList) throws(CNIError) -> JSON {
        var text = bytes
        while let last = text.last, last == 0x20 || last == 0x0A || last == 0x0D || last == 0x09 { text.removeLast() }
        var json: JSON
        if text.isEmpty { json = .null } else {
            do { json = try JSON.parse(text) } catch {
                throw CNIError(.decodingFailure, "cannot parse result of network \"\(list.name)\"", details: error.description)
            }
        }
        if json.isNull { json = .object(JSONObject()) }
        guard var o = json.objectValue else {
            throw CNIError(.decodingFailure, "result of network \"\(list.name)\" is not a JSON object")
        }
        if (o["cniVersion"]?.stringValue ?? "").isEmpty { o["cniVersion"] = .string(list.cniVersion) }
        return .object(o)
    }

    /// ADD: plugins in order; each later plugin gets the previous result (converted to the list version, so a
    /// delegate's older result never fails the next plugin's prevResult parsing). Returns the last plugin's result
    /// in the version it emitted. `prevResult` is what the first plugin gets (a finalizer's merged result).
    /// `inputGate` goes with every plugin's execution (it runs once, before the first plugin reads its input).
    public func add(_ list: NetworkConfigList, _ rt: RuntimeConf, prevResult: JSON? = nil,
                    inputGate: InputGate? = nil) throws(CNIError) -> JSON {
        var prev: JSON? = prevResult
        for i in list.plugins.indices {
            var prevForPlugin: JSON?
            if let prev {
                prevForPlugin = try CNIResult.convert(prev, to: list.cniVersion, defaultVersion: list.cniVersion)
            }
            let stdin = list.request(plugin: i, prevResult: prevForPlugin, capabilityArgs: rt.capabilityArgs)
            let out = try exec(list, plugin: i, command: "ADD", rt: rt, stdin: stdin, inputGate: inputGate)
            prev = try NetworkRunner.parseResult(out, list: list)
        }
        return prev ?? .object(JSONObject([("cniVersion", .string(list.cniVersion))]))
    }

    /// DEL: plugins in reverse order with the final ADD result as `prevResult` (for lists ≥ 0.4.0; a result that
    /// cannot be converted is dropped, as libcni does). Halts on the first error.
    public func del(_ list: NetworkConfigList, _ rt: RuntimeConf, prevResult: JSON?) throws(CNIError) {
        var prev: JSON?
        if let prevResult, list.version.supportsPrevResultOnDel {
            prev = try? CNIResult.convert(prevResult, to: list.cniVersion, defaultVersion: list.cniVersion)
        }
        for i in list.plugins.indices.reversed() {
            let stdin = list.request(plugin: i, prevResult: prev, capabilityArgs: rt.capabilityArgs)
            _ = try exec(list, plugin: i, command: "DEL", rt: rt, stdin: stdin)
        }
    }

    /// CHECK: refused for lists below 0.4.0; a no-op with `disableCheck`; plugins in order with the cached result.
    public func check(_ list: NetworkConfigList, _ rt: RuntimeConf, prevResult: JSON?) throws(CNIError) {
        guard list.version.supportsCheck else {
            throw CNIError(.incompatibleVersion, "configuration version \"\(list.cniVersion)\" does not support the CHECK command",
                           details: list.name)
        }
        if list.disableCheck { return }
        var prev: JSON?
        if let prevResult { prev = try CNIResult.convert(prevResult, to: list.cniVersion, defaultVersion: list.cniVersion) }
        for i in list.plugins.indices {
            let stdin = list.request(plugin: i, prevResult: prev, capabilityArgs: rt.capabilityArgs)
            _ = try exec(list, plugin: i, command: "CHECK", rt: rt, stdin: stdin)
        }
    }

    /// GC verb on every plugin (lists ≥ 1.1.0 without `disableGC`), with exactly `valid` as the valid attachments.
    /// Errors are collected; every plugin is called.
    public func gc(_ list: NetworkConfigList, valid: [(containerID: String, ifname: String)]) -> [CNIError] {
        guard list.version.supportsGCAndStatus, !list.disableGC else { return [] }
        var errors: [CNIError] = []
        for i in list.plugins.indices {
            do {
                _ = try exec(list, plugin: i, command: "GC", rt: nil, stdin: list.gcRequest(plugin: i, validAttachments: valid))
            } catch {
                errors.append(error)
            }
        }
        return errors
    }

    /// STATUS on every plugin of a list ≥ 1.1.0; the first error is returned with the plugin's own code (50/51).
    public func status(_ list: NetworkConfigList) throws(CNIError) {
        guard list.version.supportsGCAndStatus else { return }
        for i in list.plugins.indices {
            _ = try exec(list, plugin: i, command: "STATUS", rt: nil, stdin: list.statusRequest(plugin: i))
        }
    }
}
