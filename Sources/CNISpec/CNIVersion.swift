/// A CNI specification version (`major.minor.patch`), compared numerically.
///
/// Parsing follows libcni: one to three dot-separated decimal parts, missing parts are zero, and the empty string
/// means 0.1.0. Anything else (`v1.0.0`, `1.1.0.0`, `1.x`) is rejected.
public struct CNIVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int

    public init(_ major: Int, _ minor: Int, _ patch: Int) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    public init?(_ text: String) {
        if text.isEmpty {
            self.init(0, 1, 0)
            return
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 3 else { return nil }
        var nums: [Int] = []
        for p in parts {
            guard !p.isEmpty, p.utf8.count <= 9, p.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int(p) else { return nil }
            nums.append(n)
        }
        while nums.count < 3 { nums.append(0) }
        self.init(nums[0], nums[1], nums[2])
    }

    public var description: String { "\(major).\(minor).\(patch)" }

    public static func < (a: CNIVersion, b: CNIVersion) -> Bool {
        (a.major, a.minor, a.patch) < (b.major, b.minor, b.patch)
    }

    public static let v010 = CNIVersion(0, 1, 0)
    public static let v020 = CNIVersion(0, 2, 0)
    public static let v030 = CNIVersion(0, 3, 0)
    public static let v031 = CNIVersion(0, 3, 1)
    public static let v040 = CNIVersion(0, 4, 0)
    public static let v100 = CNIVersion(1, 0, 0)
    public static let v110 = CNIVersion(1, 1, 0)

    /// The newest version this implementation speaks.
    public static let current = v110

    /// The versions Plexus accepts in its own configuration and reports from VERSION.
    public static let supported: [String] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

    /// The result family a version belongs to.
    public enum ResultFamily: Sendable { case v02x, v04x, v1x }

    public var resultFamily: ResultFamily {
        if self < CNIVersion.v030 { return .v02x }
        if self < CNIVersion.v100 { return .v04x }
        return .v1x
    }

    public var supportsCheck: Bool { self >= CNIVersion.v040 }
    public var supportsPrevResultOnDel: Bool { self >= CNIVersion.v040 }
    public var supportsGCAndStatus: Bool { self >= CNIVersion.v110 }

    /// Selects the version to use from a configuration's `cniVersion` and `cniVersions` as libcni does: entries of
    /// `cniVersions` must all parse, those above `current` are dropped, `cniVersion` joins the candidates when it
    /// is not above `current`, and the highest candidate wins. Without `cniVersions`, `cniVersion` is used as is.
    public static func select(cniVersion: String, cniVersions: [String]?) -> Result<String, CNIError> {
        guard let list = cniVersions else { return .success(cniVersion) }
        var best: CNIVersion?
        var bestText = ""
        for v in list {
            guard let parsed = CNIVersion(v) else {
                return .failure(CNIError(.invalidNetworkConfig, "invalid cniVersions entry", details: v))
            }
            if parsed <= current, best.map({ parsed > $0 }) ?? true {
                best = parsed
                bestText = v
            }
        }
        if let own = CNIVersion(cniVersion), own <= current, best.map({ own > $0 }) ?? true {
            best = own
            bestText = cniVersion
        }
        return .success(best == nil ? cniVersion : bestText)
    }
}
