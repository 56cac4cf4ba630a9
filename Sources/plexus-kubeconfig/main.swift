// plexus-kubeconfig <path>
//
// Converts a YAML kubeconfig to JSON on stdout: the whole first document, YAML types mapped to JSON types (null,
// booleans, integers and floats as numbers, everything else as strings; anchors/aliases and `<<` merge keys
// resolved; mapping order kept). The plugin reads JSON kubeconfigs itself and runs this converter only for YAML,
// because Yams pulls in Foundation + ICU (~1.5 ms of start-up on every invocation otherwise).
//
// Errors go to stderr with exit status 1. They give positions and problems only, never the document's text,
// which may hold tokens or keys.
import Foundation
import Yams

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("plexus-kubeconfig: \(message)\n".utf8))
    exit(1)
}

let args = CommandLine.arguments
if args.count != 2 || args[1].hasPrefix("-") {
    if args.count == 2 && (args[1] == "-h" || args[1] == "--help") {
        print("usage: plexus-kubeconfig <kubeconfig>\nPrints the kubeconfig (YAML or JSON) as JSON on stdout.")
        exit(0)
    }
    fail("usage: plexus-kubeconfig <kubeconfig>")
}
let path = args[1]

guard let data = FileManager.default.contents(atPath: path) else {
    fail("\(path): cannot read the file")
}
guard let text = String(data: data, encoding: .utf8) else {
    fail("\(path): the file is not UTF-8")
}

func describe(_ error: Error) -> String {
    func at(_ mark: Mark) -> String { "line \(mark.line), column \(mark.column)" }
    func ctx(_ c: YamlError.Context?) -> String { c.map { " (\($0.text) at \(at($0.mark)))" } ?? "" }
    guard let y = error as? YamlError else { return "\(type(of: error))" }
    switch y {
    case .no: return "no error"
    case .memory: return "out of memory"
    case let .reader(problem, offset, _, _):
        return "invalid input: \(problem)" + (offset.map { " at byte \($0)" } ?? "")
    case let .scanner(context, problem, mark, _):
        return "YAML syntax error at \(at(mark)): \(problem)\(ctx(context))"
    case let .parser(context, problem, mark, _):
        return "YAML syntax error at \(at(mark)): \(problem)\(ctx(context))"
    case let .composer(context, problem, mark, _):
        return "YAML structure error at \(at(mark)): \(problem)\(ctx(context))"
    case let .writer(problem), let .emitter(problem), let .representer(problem):
        return problem
    case .dataCouldNotBeDecoded:
        return "the data could not be decoded"
    case let .duplicatedKeysInMapping(duplicates, context):
        return "duplicated keys \(duplicates) at \(at(context.mark))"
    @unknown default:
        return "YAML error"
    }
}

let root: Node
do {
    guard let node = try Yams.compose(yaml: text) else { fail("\(path): the document is empty") }
    root = node
} catch {
    fail("\(path): \(describe(error))")
}

// MARK: - JSON output

struct JSONWriter {
    let path: String
    var out: [UInt8] = []


    mutating func writeString(_ s: String) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(b)
            case 0x0A: out.append(contentsOf: Array("\\n".utf8))
            case 0x0D: out.append(contentsOf: Array("\\r".utf8))
            case 0x09: out.append(contentsOf: Array("\\t".utf8))
            case 0x00..<0x20, 0x7F:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Whether `s` is a JSON number literal (so a YAML int/float can be copied through unchanged).
    func isJSONNumber(_ s: String) -> Bool {
        let b = Array(s.utf8)
        var i = 0
        func digit(_ k: Int) -> Bool { k < b.count && b[k] >= 0x30 && b[k] <= 0x39 }
        if i < b.count && b[i] == UInt8(ascii: "-") { i += 1 }
        guard digit(i) else { return false }
        if b[i] == 0x30 { i += 1 } else { while digit(i) { i += 1 } }
        if i < b.count && b[i] == UInt8(ascii: ".") { i += 1; guard digit(i) else { return false }; while digit(i) { i += 1 } }
        if i < b.count && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E")) {
            i += 1
            if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) { i += 1 }
            guard digit(i) else { return false }
            while digit(i) { i += 1 }
        }
        return i == b.count
    }

    mutating func writeScalar(_ node: Node, _ scalar: Node.Scalar) {
        switch Tag.Name(rawValue: node.tag.rawValue) {
        case .null:
            out.append(contentsOf: Array("null".utf8))
        case .bool:
            if let b = node.bool { out.append(contentsOf: Array((b ? "true" : "false").utf8)) } else { writeString(scalar.string) }
        case .int:
            if isJSONNumber(scalar.string) {
                out.append(contentsOf: Array(scalar.string.utf8))
            } else if let i = node.int {
                out.append(contentsOf: Array(String(i).utf8))  // 0x1F, 0o17, 1_000, +5
            } else {
                writeString(scalar.string)
            }
        case .float:
            if isJSONNumber(scalar.string) {
                out.append(contentsOf: Array(scalar.string.utf8))
            } else if let d = node.float, d.isFinite, isJSONNumber("\(d)") {
                out.append(contentsOf: Array("\(d)".utf8))
            } else {
                writeString(scalar.string)  // .inf, .nan
            }
        default:
            writeString(scalar.string)
        }
    }

    /// Mapping pairs with `<<` merge keys expanded (explicit keys win over merged ones, earlier merges over later).
    func pairs(of mapping: Node.Mapping) -> [(String, Node)] {
        var explicit: [(String, Node)] = []
        var merged: [(String, Node)] = []
        for (key, value) in mapping {
            if key.tag.rawValue == Tag.Name.merge.rawValue {
                let sources: [Node.Mapping]
                switch value {
                case .mapping(let m): sources = [m]
                case .sequence(let s): sources = s.compactMap { $0.mapping }
                default: sources = []
                }
                for m in sources {
                    for (k, v) in pairs(of: m) where !merged.contains(where: { $0.0 == k }) { merged.append((k, v)) }
                }
            } else {
                let k = key.scalar?.string ?? key.string ?? "\(key)"
                if let i = explicit.firstIndex(where: { $0.0 == k }) {
                    explicit[i].1 = value  // last duplicate wins, as in JSON decoders
                } else {
                    explicit.append((k, value))
                }
            }
        }
        return explicit + merged.filter { m in !explicit.contains(where: { $0.0 == m.0 }) }
    }

    mutating func write(_ node: Node, depth: Int) {
        if depth > 256 { fail("\(path): nesting deeper than 256") }
        switch node {
        case .scalar(let s):
            writeScalar(node, s)
        case .sequence(let seq):
            out.append(UInt8(ascii: "["))
            for (i, item) in seq.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                write(item, depth: depth + 1)
            }
            out.append(UInt8(ascii: "]"))
        case .mapping(let m):
            out.append(UInt8(ascii: "{"))
            for (i, (k, v)) in pairs(of: m).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeString(k)
                out.append(UInt8(ascii: ":"))
                write(v, depth: depth + 1)
            }
            out.append(UInt8(ascii: "}"))
        case .alias:
            fail("\(path): unresolved YAML alias")
        }
    }

}

var writer = JSONWriter(path: path)
writer.out.reserveCapacity(text.utf8.count + 256)
writer.write(root, depth: 0)
writer.out.append(0x0A)
FileHandle.standardOutput.write(Data(writer.out))
exit(0)
