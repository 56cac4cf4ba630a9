/// A minimal protobuf (proto3) wire codec: exactly what the kubelet PodResources messages need
/// (device-plugins.md §2.5). No reflection, no generated code, no Foundation.
///
/// Decoding is strict about bounds and never traps: every length is checked against the bytes left in the
/// enclosing message, varints longer than 10 bytes (or overflowing 64 bits) are rejected, wire types 3/4 (groups)
/// and 6/7 are rejected, field number 0 and numbers above 2^29-1 are rejected, nesting is capped at
/// `Protobuf.maxDepth` and a message at `Protobuf.maxMessageBytes`. Every loop consumes at least one byte per
/// iteration, so no input can make a decoder spin.

/// Why protobuf bytes could not be decoded.
public struct ProtobufError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The input ends inside a varint, a fixed-size value or a length-delimited payload.
        case truncated
        /// A varint longer than 10 bytes, or one whose value does not fit in 64 bits.
        case malformedVarint
        /// A length-delimited field claims more bytes than are left in its message.
        case lengthOutOfBounds(declared: UInt64, available: Int)
        /// Wire type 3/4 (obsolete groups), 6 or 7.
        case invalidWireType(UInt8)
        /// Field number 0 or above 2^29-1.
        case invalidFieldNumber(UInt64)
        /// A known field arrived with another wire type than its declaration's.
        case wrongWireType(field: Int, expected: Protobuf.WireType, actual: Protobuf.WireType)
        /// A string field is not valid UTF-8.
        case invalidUTF8(field: Int)
        /// Messages nested deeper than `Protobuf.maxDepth`.
        case tooDeep(Int)
        /// A message larger than the accepted maximum.
        case tooLarge(Int, limit: Int)
    }

    public var kind: Kind
    /// Byte offset in the outermost buffer where the problem was found.
    public var offset: Int
    /// The message being decoded (`ListPodResourcesResponse`, `ContainerDevices`, ...), when known.
    public var message: String?

    public init(_ kind: Kind, offset: Int, message: String? = nil) {
        self.kind = kind
        self.offset = offset
        self.message = message
    }

    public var description: String {
        var s = "invalid protobuf"
        if let message { s += " \(message)" }
        s += " at byte \(offset): "
        switch kind {
        case .truncated: s += "truncated input"
        case .malformedVarint: s += "malformed varint"
        case .lengthOutOfBounds(let declared, let available):
            s += "length \(declared) exceeds the \(available) bytes left"
        case .invalidWireType(let t): s += "invalid wire type \(t)"
        case .invalidFieldNumber(let n): s += "invalid field number \(n)"
        case .wrongWireType(let field, let expected, let actual):
            s += "field \(field) has wire type \(actual.rawValue), expected \(expected.rawValue)"
        case .invalidUTF8(let field): s += "field \(field) is not valid UTF-8"
        case .tooDeep(let depth): s += "messages nested deeper than \(depth)"
        case .tooLarge(let size, let limit): s += "message of \(size) bytes exceeds the limit of \(limit)"
        }
        return s
    }
}

public enum Protobuf {
    /// Wire types that proto3 still uses (3 and 4, groups, are rejected).
    public enum WireType: UInt8, Sendable, Equatable {
        case varint = 0
        case fixed64 = 1
        case lengthDelimited = 2
        case fixed32 = 5
    }

    /// Deepest nesting of embedded messages a decoder may enter (the PodResources messages need 6).
    public static let maxDepth = 32
    /// Largest message accepted (Multus' gRPC client limit).
    public static let maxMessageBytes = 16 << 20
    /// Largest valid field number.
    public static let maxFieldNumber: UInt64 = (1 << 29) - 1
}

/// One field key read from the wire.
public struct ProtobufField: Sendable, Equatable {
    public var number: Int
    public var wireType: Protobuf.WireType
}

/// Reads fields from one message: a window `[position, end)` over a shared byte buffer. Nested messages are read
/// with `nested(_:)`, which shares the buffer (no copies) and counts the depth.
public struct ProtobufReader {
    public let bytes: [UInt8]
    public private(set) var position: Int
    public let end: Int
    public let depth: Int
    /// Name of the message being read, for error messages.
    public var messageName: String?

    /// A reader over a whole buffer (the outermost message). Throws when it exceeds `limit`.
    public init(_ bytes: [UInt8], limit: Int = Protobuf.maxMessageBytes, messageName: String? = nil) throws(ProtobufError) {
        if bytes.count > limit {
            throw ProtobufError(.tooLarge(bytes.count, limit: limit), offset: 0, message: messageName)
        }
        self.bytes = bytes
        self.position = 0
        self.end = bytes.count
        self.depth = 0
        self.messageName = messageName
    }

    private init(bytes: [UInt8], range: Range<Int>, depth: Int, messageName: String?) {
        self.bytes = bytes
        self.position = range.lowerBound
        self.end = range.upperBound
        self.depth = depth
        self.messageName = messageName
    }

    public var isAtEnd: Bool { position >= end }

    func fail(_ kind: ProtobufError.Kind, at offset: Int? = nil) -> ProtobufError {
        ProtobufError(kind, offset: offset ?? position, message: messageName)
    }

    /// A reader for the embedded message occupying `range` (from `readLengthDelimited`).
    public func nested(_ range: Range<Int>, messageName: String? = nil) throws(ProtobufError) -> ProtobufReader {
        let d = depth + 1
        if d > Protobuf.maxDepth {
            throw ProtobufError(.tooDeep(Protobuf.maxDepth), offset: range.lowerBound, message: messageName ?? self.messageName)
        }
        guard range.lowerBound >= 0, range.upperBound <= end, range.lowerBound <= range.upperBound else {
            throw fail(.truncated, at: range.lowerBound)
        }
        return ProtobufReader(bytes: bytes, range: range, depth: d, messageName: messageName)
    }

    /// A varint (at most 10 bytes; the 10th may only carry the 64th bit).
    public mutating func readVarint() throws(ProtobufError) -> UInt64 {
        let start = position
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw fail(.truncated, at: start) }
            let b = bytes[position]
            position += 1
            if shift == 63 && b > 1 { throw fail(.malformedVarint, at: start) }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw fail(.malformedVarint, at: start) }
        }
    }

    /// The next field key, or nil at the end of the message.
    public mutating func nextField() throws(ProtobufError) -> ProtobufField? {
        guard position < end else { return nil }
        let start = position
        let key = try readVarint()
        if key > UInt64(UInt32.max) { throw fail(.invalidFieldNumber(key >> 3), at: start) }
        let number = key >> 3
        let rawType = UInt8(key & 7)
        guard let type = Protobuf.WireType(rawValue: rawType) else { throw fail(.invalidWireType(rawType), at: start) }
        if number == 0 || number > Protobuf.maxFieldNumber { throw fail(.invalidFieldNumber(number), at: start) }
        return ProtobufField(number: Int(number), wireType: type)
    }

    /// The payload range of a length-delimited field whose key was just read.
    public mutating func readLengthDelimited() throws(ProtobufError) -> Range<Int> {
        let start = position
        let n = try readVarint()
        let available = end - position
        guard n <= UInt64(available) else { throw fail(.lengthOutOfBounds(declared: n, available: available), at: start) }
        let lower = position
        position += Int(n)
        return lower..<position
    }

    public mutating func readFixed64() throws(ProtobufError) -> UInt64 {
        guard end - position >= 8 else { throw fail(.truncated) }
        var v: UInt64 = 0
        for k in 0..<8 { v |= UInt64(bytes[position + k]) << (8 * UInt64(k)) }
        position += 8
        return v
    }

    public mutating func readFixed32() throws(ProtobufError) -> UInt32 {
        guard end - position >= 4 else { throw fail(.truncated) }
        var v: UInt32 = 0
        for k in 0..<4 { v |= UInt32(bytes[position + k]) << (8 * UInt32(k)) }
        position += 4
        return v
    }

    /// Skips the value of a field this decoder does not know (any wire type). Nothing is recursed into.
    public mutating func skip(_ field: ProtobufField) throws(ProtobufError) {
        switch field.wireType {
        case .varint: _ = try readVarint()
        case .fixed64: _ = try readFixed64()
        case .lengthDelimited: _ = try readLengthDelimited()
        case .fixed32: _ = try readFixed32()
        }
    }

    /// Throws unless `field` has the wire type its declaration needs.
    public func expect(_ field: ProtobufField, _ type: Protobuf.WireType) throws(ProtobufError) {
        if field.wireType != type {
            throw fail(.wrongWireType(field: field.number, expected: type, actual: field.wireType))
        }
    }

    /// A string field (key already read): its bytes must be valid UTF-8.
    public mutating func readString(_ field: ProtobufField) throws(ProtobufError) -> String {
        try expect(field, .lengthDelimited)
        let range = try readLengthDelimited()
        guard let s = String(validating: bytes[range], as: UTF8.self) else {
            throw fail(.invalidUTF8(field: field.number), at: range.lowerBound)
        }
        return s
    }

    /// An int64 field (key already read): a varint, two's complement for negatives.
    public mutating func readInt64(_ field: ProtobufField) throws(ProtobufError) -> Int64 {
        try expect(field, .varint)
        return Int64(bitPattern: try readVarint())
    }

    /// An embedded message field (key already read): a reader over its payload.
    public mutating func readMessage(_ field: ProtobufField, messageName: String? = nil) throws(ProtobufError) -> ProtobufReader {
        try expect(field, .lengthDelimited)
        let range = try readLengthDelimited()
        return try nested(range, messageName: messageName)
    }
}

/// Appends protobuf fields to a byte buffer.
public struct ProtobufWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func writeVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    public mutating func writeKey(_ number: Int, _ type: Protobuf.WireType) {
        writeVarint(UInt64(UInt32(truncatingIfNeeded: number)) << 3 | UInt64(type.rawValue))
    }

    /// A length-delimited field (string bytes, bytes, embedded message), always written.
    public mutating func writeBytes(_ number: Int, _ payload: [UInt8]) {
        writeKey(number, .lengthDelimited)
        writeVarint(UInt64(payload.count))
        bytes.append(contentsOf: payload)
    }

    /// A singular proto3 string: omitted when empty (the default value).
    public mutating func writeString(_ number: Int, _ value: String) {
        if value.isEmpty { return }
        writeBytes(number, Array(value.utf8))
    }

    /// One element of a repeated string field: always written, even when empty.
    public mutating func writeRepeatedString(_ number: Int, _ value: String) {
        writeBytes(number, Array(value.utf8))
    }

    /// A singular proto3 int64: omitted when 0.
    public mutating func writeInt64(_ number: Int, _ value: Int64) {
        if value == 0 { return }
        writeKey(number, .varint)
        writeVarint(UInt64(bitPattern: value))
    }

    /// An embedded message (written even when empty: presence matters for messages).
    public mutating func writeMessage(_ number: Int, _ message: [UInt8]) {
        writeBytes(number, message)
    }
}
