import Synchronization

/// The daemon's Prometheus metrics, rendered in the text exposition format (version 0.0.4). Counters and
/// histograms are kept here; gauges (cache sizes, in-flight calls) are read when scraped.
public final class Metrics: Sendable {
    /// Seconds; the CNI calls of interest take 5 ms to a few seconds.
    public static let buckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    struct Histogram {
        var counts: [UInt64] = Array(repeating: 0, count: Metrics.buckets.count)
        var sum = 0.0
        var count: UInt64 = 0
    }

    struct Family {
        var help: String
        var type: String
        var counters: [[String]: Double] = [:]
        var histograms: [[String]: Histogram] = [:]
        var labelNames: [String]
    }

    private let families: Mutex<[String: Family]>
    private let gauges: Mutex<[(name: String, help: String, labels: [String], read: @Sendable () -> [([String], Double)])]>

    public init() {
        families = Mutex([:])
        gauges = Mutex([])
    }

    /// Declares a counter or histogram family (help text and label names); must precede `add`/`observe`.
    public func declare(_ name: String, type: String, help: String, labels: [String]) {
        families.withLock { $0[name] = Family(help: help, type: type, labelNames: labels) }
    }

    /// A gauge family read at scrape time.
    public func gauge(_ name: String, help: String, labels: [String] = [], read: @escaping @Sendable () -> [([String], Double)]) {
        gauges.withLock { $0.append((name, help, labels, read)) }
    }

    public func add(_ name: String, _ labels: [String] = [], _ value: Double = 1) {
        families.withLock { f in f[name]?.counters[labels, default: 0] += value }
    }

    public func observe(_ name: String, _ labels: [String], seconds: Double) {
        families.withLock { f in
            guard f[name] != nil else { return }
            var h = f[name]?.histograms[labels] ?? Histogram()
            for (i, b) in Metrics.buckets.enumerated() where seconds <= b { h.counts[i] += 1 }
            h.sum += seconds
            h.count += 1
            f[name]?.histograms[labels] = h
        }
    }

    /// The current value of a counter (tests, logs).
    public func counter(_ name: String, _ labels: [String] = []) -> Double {
        families.withLock { $0[name]?.counters[labels] ?? 0 }
    }

    public func render() -> String {
        var out = ""
        let snapshot = families.withLock { $0 }
        for name in snapshot.keys.sorted() {
            guard let f = snapshot[name] else { continue }
            out += "# HELP \(name) \(Self.escapeHelp(f.help))\n# TYPE \(name) \(f.type)\n"
            for labels in f.counters.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                out += name + Self.labelSet(f.labelNames, labels) + " " + Self.number(f.counters[labels] ?? 0) + "\n"
            }
            for labels in f.histograms.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                guard let h = f.histograms[labels] else { continue }
                for (i, b) in Metrics.buckets.enumerated() {
                    out += name + "_bucket" + Self.labelSet(f.labelNames + ["le"], labels + [Self.number(b)]) + " \(h.counts[i])\n"
                }
                out += name + "_bucket" + Self.labelSet(f.labelNames + ["le"], labels + ["+Inf"]) + " \(h.count)\n"
                out += name + "_sum" + Self.labelSet(f.labelNames, labels) + " " + Self.number(h.sum) + "\n"
                out += name + "_count" + Self.labelSet(f.labelNames, labels) + " \(h.count)\n"
            }
        }
        let readers = gauges.withLock { $0 }
        for g in readers {
            out += "# HELP \(g.name) \(Self.escapeHelp(g.help))\n# TYPE \(g.name) gauge\n"
            for (labels, v) in g.read() { out += g.name + Self.labelSet(g.labels, labels) + " " + Self.number(v) + "\n" }
        }
        return out
    }

    static func labelSet(_ names: [String], _ values: [String]) -> String {
        if names.isEmpty { return "" }
        var parts: [String] = []
        for (i, n) in names.enumerated() {
            let v = i < values.count ? values[i] : ""
            parts.append("\(n)=\"\(escapeLabel(v))\"")
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// Label values escape backslash, double quote and newline; HELP text only backslash and newline.
    static func escapeLabel(_ s: String) -> String { escape(s, quote: true) }
    static func escapeHelp(_ s: String) -> String { escape(s, quote: false) }

    static func escape(_ s: String, quote: Bool) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"" where quote: out += "\\\""
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}
