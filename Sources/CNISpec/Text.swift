/// Small text rules shared by every module (no I/O).
extension StringProtocol {
    /// Trims ASCII spaces, tabs, CR and LF (on Unicode scalars: "\r\n" is one Character in Swift).
    public var trimmingSpaces: String {
        var scalars = Substring(self).unicodeScalars[...]
        func isSpace(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\r" || c == "\n" }
        while let f = scalars.first, isSpace(f) { scalars.removeFirst() }
        while let l = scalars.last, isSpace(l) { scalars.removeLast() }
        return String(String.UnicodeScalarView(scalars))
    }
}

/// Kubernetes object naming rules (NAD names, namespaces, pod names).
public enum KubernetesNames {
    /// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
    public static func isDNS1123Label(_ s: some StringProtocol) -> Bool {
        let a = Array(s.utf8)
        guard let first = a.first, let last = a.last, a.count <= 63 else { return false }
        func alnum(_ b: UInt8) -> Bool {
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
        }
        guard alnum(first), alnum(last) else { return false }
        return a.allSatisfy { alnum($0) || $0 == UInt8(ascii: "-") }
    }

    /// Dot-separated DNS-1123 labels, at most 253 characters.
    public static func isDNS1123Subdomain(_ s: some StringProtocol) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNS1123Label($0) }
    }
}
