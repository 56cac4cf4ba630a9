// The pod netns over netlink (module Netlink, libmnl loaded only when an ADD or CHECK asks): the interface names
// the ADD must not collide with, interface facts for network-status, and default-route control.
import CNISpec
import NetAttach
import Netlink
import PlexusCore
import SystemKit

/// Netlink calls of one invocation share this bound (each opens its own socket in the pod's netns).
let netlinkTimeoutMilliseconds = 5000

public struct NetlinkNetns: InterfaceLister, NetnsRouting {
    public init() {}

    func session(_ netns: String) throws(NetlinkError) -> NetlinkSession {
        try NetlinkSession(netnsPath: netns, timeoutMilliseconds: netlinkTimeoutMilliseconds)
    }

    public func interfaces(netns: String) throws(CNIError) -> [String] {
        do { return try session(netns).links().map(\.name) } catch {
            throw CNIError(.ioFailure, "cannot list the interfaces of \(netns)", details: error.description)
        }
    }

    /// The listing on a thread of its own, which enters the netns itself for the socket (one thread, not two).
    /// Without a thread the listing happens when waited for, as `interfaces(netns:)`.
    public func beginListing(netns: String) -> InterfaceListing {
        guard let job = BackgroundJob(onItsOwnThread: { () -> Result<[String], CNIError> in
            do throws(NetlinkError) {
                let s = try NetlinkSession(netnsPath: netns, timeoutMilliseconds: netlinkTimeoutMilliseconds,
                                           enteringOnThisThread: true)
                return .success(try s.links().map(\.name))
            } catch {
                return .failure(CNIError(.ioFailure, "cannot list the interfaces of \(netns)", details: error.description))
            }
        }) else {
            return listingWhenWaited(netns: netns)
        }
        return InterfaceListing { job.wait() ?? .failure(CNIError(.internalError, "the netns listing thread returned nothing")) }
    }

    public func snapshot(netns: String) throws(CNIError) -> NetnsSnapshot {
        do {
            let s = try session(netns)
            let links = try s.links()
            let addresses = try s.addresses()
            let routes = try s.routes(family: NL.AF_INET) + s.routes(family: NL.AF_INET6)
            return NetlinkNetns.snapshot(links: links, addresses: addresses, routes: routes)
        } catch {
            throw CNIError(.ioFailure, "cannot read the interfaces and routes of \(netns)", details: error.description)
        }
    }

    static func snapshot(links: [Link], addresses: [Address], routes: [Route]) -> NetnsSnapshot {
        let names = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        var defaults: [DefaultRouteFact] = []
        for r in routes where r.isMainDefault {
            let family: AddressFamily = r.family == NL.AF_INET ? .ipv4 : .ipv6
            let hops = r.nextHops.isEmpty ? [(interface: r.outputInterface ?? 0, gateway: r.gateway)] : r.nextHops
            for hop in hops {
                defaults.append(DefaultRouteFact(family: family, interfaces: [names[hop.interface] ?? "#\(hop.interface)"],
                                                 gateway: hop.gateway.flatMap { IPAddress(bytes: $0)?.description }))
            }
        }
        var interfaces: [String: InterfaceFacts] = [:]
        for l in links {
            let ips = addresses.filter { $0.index == l.index && $0.scope == NL.RT_SCOPE_UNIVERSE }
                .compactMap { IPAddress(bytes: $0.address)?.description }
            let gateways = AddressFamily.allCases.flatMap { f in
                defaults.filter { $0.family == f && $0.interfaces == [l.name] }.compactMap(\.gateway)
            }
            interfaces[l.name] = InterfaceFacts(name: l.name, mac: mac(l.hardwareAddress), mtu: l.mtu.map { Int($0) },
                                                ips: ips, defaultGateways: gateways)
        }
        return NetnsSnapshot(interfaces: interfaces, defaultRoutes: defaults)
    }

    static func mac(_ b: [UInt8]) -> String? {
        guard b.count == 6 else { return nil }
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for (i, x) in b.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ":")) }
            out.append(hex[Int(x >> 4)])
            out.append(hex[Int(x & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public func setDefaultRoute(netns: String, ifname: String, gateway: IPAddress) throws(CNIError) {
        do {
            let s = try session(netns)
            guard let link = try s.links().first(where: { $0.name == ifname }) else {
                throw CNIError(.internalError, "interface \(ifname) is not in the pod's netns")
            }
            try s.setOnlyDefaultRoute(gateway: gateway.bytes, interface: link.index)
        } catch let error as NetlinkError {
            // ENETUNREACH: the kernel has no route to the gateway through that interface (not on its subnet).
            if error.errno == 101 {
                throw CNIError(.invalidNetworkConfig, "gateway \(gateway) is not reachable through \(ifname) (not on its subnets)",
                               details: error.description)
            }
            throw CNIError(.internalError, "cannot set the default route via \(gateway) dev \(ifname)", details: error.description)
        } catch let error as CNIError {
            throw error
        } catch {
            throw CNIError(.internalError, "cannot set the default route via \(gateway) dev \(ifname)", details: "\(error)")
        }
    }
}
