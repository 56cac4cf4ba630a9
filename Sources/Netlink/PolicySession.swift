// Source-based policy routing over one session: FIB rules and the routes of one table. Each change is idempotent
// where the kernel allows it: an existing rule, a missing rule and a missing route are reported, not thrown.

/// errno values the kernel answers rule and route changes with.
enum PolicyErrno {
    static let ENOENT: Int32 = 2
    static let ESRCH: Int32 = 3
    static let EEXIST: Int32 = 17
}

extension NetlinkSession {
    /// Every FIB rule of `family` (AF_INET or AF_INET6; AF_UNSPEC for both).
    public func rules(family: UInt8) throws(NetlinkError) -> [Rule] {
        var out: [Rule] = []
        for m in try dump({ RuleMessages.dump(family: family, seq: $0) }, operation: "dump rules") {
            if let r = try RuleReplies.rule(m) { out.append(r) }
        }
        return out
    }

    /// Adds `rule` unless an identical one exists (CREATE|EXCL). Returns false when the kernel already had it.
    @discardableResult
    public func addRule(_ rule: Rule) throws(NetlinkError) -> Bool {
        do {
            try acknowledged({ RuleMessages.add(rule, seq: $0) }, operation: "add rule")
            return true
        } catch where error.errno == PolicyErrno.EEXIST {
            return false
        }
    }

    /// Deletes the first rule matching `rule`'s selectors, table and priority. Returns false when there was none.
    @discardableResult
    public func deleteRule(_ rule: Rule) throws(NetlinkError) -> Bool {
        do {
            try acknowledged({ RuleMessages.delete(rule, seq: $0) }, operation: "delete rule")
            return true
        } catch where error.errno == PolicyErrno.ENOENT {
            return false
        }
    }

    /// The routes of `family` in `table`. The kernel filters dumps only on sockets with NETLINK_GET_STRICT_CHK, so
    /// the whole family is dumped and filtered here.
    public func routes(family: UInt8, table: UInt32) throws(NetlinkError) -> [Route] {
        var out: [Route] = []
        for m in try dump({ RouteMessages.dumpRoutes(family: family, seq: $0) }, operation: "dump routes of table \(table)") {
            if let r = try RouteReplies.route(m), r.table == table { out.append(r) }
        }
        return out
    }

    /// Installs `route` in its table, replacing the route of the same destination there (CREATE|REPLACE).
    public func replaceRoute(_ route: Route) throws(NetlinkError) {
        try acknowledged({ TableRouteMessages.replace(route, seq: $0) }, operation: "replace route in table \(route.table)")
    }

    /// Deletes `route` (as dumped). Returns false when it was gone already (ESRCH).
    @discardableResult
    public func deleteRoute(_ route: Route) throws(NetlinkError) -> Bool {
        do {
            try acknowledged({ TableRouteMessages.delete(route, seq: $0) }, operation: "delete route in table \(route.table)")
            return true
        } catch where error.errno == PolicyErrno.ESRCH {
            return false
        }
    }
}
