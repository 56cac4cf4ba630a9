import SystemKit

/// Synchronous rtnetlink requests over one socket: dumps (multi-part, NLMSG_DONE, retried when the kernel flags
/// them interrupted) and acknowledged changes (NLMSG_ERROR with errno 0 or the kernel's error). Replies with
/// another sequence number or port are skipped. Every call is bounded by the session's deadline.
public final class NetlinkSession {
    public let socket: any NetlinkSocket
    /// Monotonic nanoseconds after which no further request starts and no receive loop continues.
    public let deadline: Int64
    private var seq: UInt32
    /// Dumps are retried this often when a change interrupts them (NLM_F_DUMP_INTR), as netlinksafe does.
    public static let dumpAttempts = 5

    public init(socket: any NetlinkSocket, deadline: Int64, firstSequence: UInt32 = 1) {
        self.socket = socket
        self.deadline = deadline
        self.seq = firstSequence
    }

    /// A session on a new socket inside the namespace at `netnsPath`, with `timeoutMilliseconds` in all. The
    /// socket is opened by a short-lived thread of its own, so the calling thread never changes namespace; on a
    /// thread that exists only for this session, `enteringOnThisThread` saves that second thread (the calling thread
    /// enters the namespace for the socket() call and returns).
    public convenience init(netnsPath: String?, timeoutMilliseconds: Int, enteringOnThisThread: Bool = false) throws(NetlinkError) {
        let socket = try MnlSocket(netnsPath: netnsPath, timeoutMilliseconds: timeoutMilliseconds,
                                   enteringOnThisThread: enteringOnThisThread)
        self.init(socket: socket, deadline: Clock.monotonicNanoseconds() + Int64(timeoutMilliseconds) * 1_000_000,
                  firstSequence: UInt32(truncatingIfNeeded: Clock.monotonicNanoseconds() / 1000))
    }

    func nextSequence() -> UInt32 {
        seq &+= 1
        return seq
    }

    func checkDeadline(_ operation: String) throws(NetlinkError) {
        if Clock.monotonicNanoseconds() > deadline {
            throw NetlinkError(operation: operation, errno: 62 /* ETIME */, detail: "netlink deadline passed")
        }
    }

    /// Sends `request` and collects the messages of its dump until NLMSG_DONE.
    public func dump(_ make: (UInt32) -> NetlinkMessage, operation: String) throws(NetlinkError) -> [NetlinkMessage] {
        for _ in 0..<NetlinkSession.dumpAttempts {
            try checkDeadline(operation)
            let request = make(nextSequence())
            try socket.send(request.encoded())
            var messages: [NetlinkMessage] = []
            var interrupted = false
            receiving: while true {
                try checkDeadline(operation)
                for m in try NetlinkMessage.parse(datagram: socket.receive()) {
                    guard m.seq == request.seq, m.pid == 0 || m.pid == socket.portID else { continue }
                    if m.flags & NL.NLM_F_DUMP_INTR != 0 { interrupted = true }
                    switch m.type {
                    case NL.NLMSG_DONE: break receiving
                    case NL.NLMSG_ERROR:
                        let (errno, message) = try m.errorCode()
                        if errno == 0 { break receiving }
                        throw NetlinkError(operation: operation, errno: errno, kernelMessage: message)
                    case NL.NLMSG_NOOP: continue
                    case NL.NLMSG_OVERRUN: throw NetlinkError(operation: operation, detail: "NLMSG_OVERRUN")
                    default: messages.append(m)
                    }
                }
            }
            if !interrupted { return messages }
        }
        throw NetlinkError(operation: operation, detail: "dump interrupted \(NetlinkSession.dumpAttempts) times by concurrent changes")
    }

    /// Sends `request` (which must ask for NLM_F_ACK) and waits for its acknowledgement.
    public func acknowledged(_ make: (UInt32) -> NetlinkMessage, operation: String) throws(NetlinkError) {
        try checkDeadline(operation)
        let request = make(nextSequence())
        try socket.send(request.encoded())
        while true {
            try checkDeadline(operation)
            for m in try NetlinkMessage.parse(datagram: socket.receive())
            where m.seq == request.seq && (m.pid == 0 || m.pid == socket.portID) && m.type == NL.NLMSG_ERROR {
                let (errno, message) = try m.errorCode()
                if errno == 0 { return }
                throw NetlinkError(operation: operation, errno: errno, kernelMessage: message)
            }
        }
    }

    // MARK: rtnetlink operations

    public func links() throws(NetlinkError) -> [Link] {
        var out: [Link] = []
        for m in try dump({ RouteMessages.dumpLinks(seq: $0) }, operation: "dump links") {
            if let l = try RouteReplies.link(m) { out.append(l) }
        }
        return out
    }

    public func addresses(family: UInt8 = NL.AF_UNSPEC) throws(NetlinkError) -> [Address] {
        var out: [Address] = []
        for m in try dump({ RouteMessages.dumpAddresses(family: family, seq: $0) }, operation: "dump addresses") {
            if let a = try RouteReplies.address(m) { out.append(a) }
        }
        return out
    }

    public func routes(family: UInt8) throws(NetlinkError) -> [Route] {
        var out: [Route] = []
        for m in try dump({ RouteMessages.dumpRoutes(family: family, seq: $0) }, operation: "dump routes") {
            if let r = try RouteReplies.route(m) { out.append(r) }
        }
        return out
    }

    /// Makes the route via `gateway` out of `interface` the only main-table default route of the gateway's family:
    /// REPLACE installs it (swapping a default of the same priority in one step), then every other default route of
    /// that family — on any interface, of any priority, multipath ones included — is deleted, and the result is
    /// verified. Routes of the other family are never touched. Returns the routes that were removed.
    @discardableResult
    public func setOnlyDefaultRoute(gateway: [UInt8], interface: Int32) throws(NetlinkError) -> [Route] {
        guard gateway.count == 4 || gateway.count == 16 else {
            throw NetlinkError(operation: "set default route", detail: "a gateway has 4 or 16 bytes, not \(gateway.count)")
        }
        let family = RouteMessages.family(ofAddress: gateway)
        try acknowledged({ RouteMessages.replaceDefault(gateway: gateway, interface: interface, seq: $0) },
                         operation: "replace default route")
        var removed: [Route] = []
        for _ in 0..<3 {
            let others = try routes(family: family).filter { $0.isMainDefault && !($0.outputInterface == interface && $0.gateway == gateway && $0.nextHops.isEmpty) }
            if others.isEmpty {
                let ours = try routes(family: family).contains { $0.isMainDefault && $0.outputInterface == interface && $0.gateway == gateway }
                if !ours { throw NetlinkError(operation: "set default route", detail: "the new default route is gone after removing the others") }
                return removed
            }
            for r in others {
                do {
                    try acknowledged({ RouteMessages.delete(r, seq: $0) }, operation: "delete default route")
                    removed.append(r)
                } catch where error.errno == 3 /* ESRCH: gone already */ {
                    continue
                }
            }
        }
        throw NetlinkError(operation: "set default route", detail: "other default routes keep reappearing")
    }
}

@available(*, unavailable)
extension NetlinkSession: Sendable {}
