// The pod netns over netlink (module Netlink): the socket is opened inside the namespace by a dedicated thread
// (no thread of this process ever enters it), and every call of one invocation shares one session and deadline.
import CNISpec
import Netlink
import PolicyRoute

/// Netlink calls of one invocation share this bound.
let netlinkTimeoutMilliseconds = 5000

/// errno values this file interprets.
enum Errno {
    static let ENOENT: Int32 = 2
    static let ENODEV: Int32 = 19
    static let EINVAL: Int32 = 22
    static let ENETUNREACH: Int32 = 101
}

struct NetlinkPolicyNetns: PolicyNetns {
    func open(_ path: String) throws(CNIError) -> (any PolicyNetnsSession)? {
        do {
            return NetlinkPolicySession(try NetlinkSession(netnsPath: path, timeoutMilliseconds: netlinkTimeoutMilliseconds))
        } catch {
            // ENOENT: the netns file is gone; EINVAL from setns: the path is no longer a namespace (unmounted).
            if error.errno == Errno.ENOENT || (error.errno == Errno.EINVAL && (error.detail ?? "").hasPrefix("setns")) {
                return nil
            }
            throw CNIError(.ioFailure, "cannot open a netlink socket in \(path)", details: error.description)
        }
    }
}

final class NetlinkPolicySession: PolicyNetnsSession {
    let session: NetlinkSession

    init(_ session: NetlinkSession) { self.session = session }

    static func family(_ f: InetFamily) -> UInt8 { f == .ipv4 ? NL.AF_INET : NL.AF_INET6 }

    /// A failed read or change: a kernel refusal of the plan's own values (an address not on the pod, a gateway it
    /// cannot reach) is code 7, anything else code 5.
    static func failure(_ what: String, _ error: NetlinkError) -> CNIError {
        switch error.errno {
        case Errno.EINVAL?, Errno.ENETUNREACH?, Errno.ENODEV?:
            return CNIError(.invalidNetworkConfig, "the kernel refused to \(what)", details: error.description)
        default:
            return CNIError(.ioFailure, "cannot \(what)", details: error.description)
        }
    }

    func interfaceIndices() throws(CNIError) -> [String: Int32] {
        do {
            var out: [String: Int32] = [:]
            for l in try session.links() where out[l.name] == nil { out[l.name] = l.index }
            return out
        } catch {
            throw CNIError(.ioFailure, "cannot list the pod's interfaces", details: error.description)
        }
    }

    func rules(family: InetFamily) throws(CNIError) -> [ObservedRule] {
        let rules: [Rule]
        do { rules = try session.rules(family: NetlinkPolicySession.family(family)) } catch {
            throw CNIError(.ioFailure, "cannot list the pod's \(family) rules", details: error.description)
        }
        return rules.compactMap { r in
            var source: InetPrefix?
            if !r.source.isEmpty {
                guard let a = InetAddress(bytes: r.source), let p = InetPrefix(address: a, length: Int(r.sourceLength)) else { return nil }
                source = p
            }
            return ObservedRule(source: source, table: r.table, priority: r.priority ?? 0,
                                isPlainSourceLookup: r.isPlainSourceLookup)
        }
    }

    func routes(family: InetFamily) throws(CNIError) -> [ObservedRoute] {
        var routes: [Route] = []
        do {
            for m in try session.dump({ RouteMessages.dumpRoutes(family: NetlinkPolicySession.family(family), seq: $0) },
                                      operation: "dump routes") {
                if let r = try RouteReplies.route(m) { routes.append(r) }
            }
        } catch {
            throw CNIError(.ioFailure, "cannot list the pod's \(family) routes", details: error.description)
        }
        return routes.compactMap { r in
            let zero = [UInt8](repeating: 0, count: family.byteCount)
            guard let dst = InetAddress(bytes: r.destination.isEmpty ? zero : r.destination),
                  let prefix = InetPrefix(address: dst, length: Int(r.destinationLength)) else { return nil }
            return ObservedRoute(destination: prefix, table: r.table, outputInterface: r.outputInterface,
                                 gateway: r.gateway.flatMap { InetAddress(bytes: $0) },
                                 preferredSource: r.preferredSource.flatMap { InetAddress(bytes: $0) },
                                 scope: r.scope, type: r.type, isMultipath: r.isMultipath, metric: r.priority,
                                 tos: r.tos, protocolID: r.protocolID)
        }
    }

    static func rule(_ r: PlannedRule) -> Rule {
        Rule(family: family(r.family), sourceLength: UInt8(r.source.length), source: r.source.address.bytes,
             table: r.table, priority: r.priority)
    }

    func addRule(_ rule: PlannedRule) throws(CNIError) {
        do { try session.addRule(NetlinkPolicySession.rule(rule)) } catch {
            throw NetlinkPolicySession.failure("add rule \(rule)", error)
        }
    }

    func deleteRule(_ rule: PlannedRule) throws(CNIError) {
        do { try session.deleteRule(NetlinkPolicySession.rule(rule)) } catch {
            throw CNIError(.ioFailure, "cannot delete rule \(rule)", details: error.description)
        }
    }

    func replaceRoute(_ route: PlannedRoute, interfaceIndex: Int32) throws(CNIError) {
        let r = Route(family: NetlinkPolicySession.family(route.family), destinationLength: UInt8(route.destination.length),
                           destination: route.isDefault ? [] : route.destination.address.bytes, table: route.table,
                           scope: route.scope == .link ? NL.RT_SCOPE_LINK : NL.RT_SCOPE_UNIVERSE,
                           outputInterface: interfaceIndex, gateway: route.gateway?.bytes,
                           preferredSource: route.preferredSource?.bytes)
        do { try session.replaceRoute(r) } catch {
            throw NetlinkPolicySession.failure("install route \(route)", error)
        }
    }

    func deleteRoute(_ route: ObservedRoute) throws(CNIError) {
        let r = Route(family: NetlinkPolicySession.family(route.destination.family),
                           destinationLength: UInt8(route.destination.length),
                           destination: route.destination.length == 0 ? [] : route.destination.address.bytes,
                           tos: route.tos, table: route.table, protocolID: route.protocolID, scope: route.scope,
                           type: route.type, outputInterface: route.outputInterface, gateway: route.gateway?.bytes,
                           priority: route.metric)
        do { try session.deleteRoute(r) } catch {
            throw CNIError(.ioFailure, "cannot delete route \(route.destination) from table \(route.table)", details: error.description)
        }
    }
}
