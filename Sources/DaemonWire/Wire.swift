import SystemKit

/// The thin plugin ↔ node daemon protocol on the daemon's unix socket. One connection carries one CNI call:
///
/// 1. plugin → daemon: `PXD1`, u32 length + the environment (`KEY=VALUE` entries, each NUL-terminated),
///    u32 length + stdin (all lengths big-endian);
/// 2. daemon → plugin: `A` (admitted: it will run the call) or `B` (busy: run it yourself);
/// 3. plugin → daemon: `G` (go). Only now does the daemon start. A plugin that gave up waiting for `A` never sends
///    `G`, so the daemon drops the call and the two can never both run it;
/// 4. daemon → plugin: `PXR1`, i32 exit code, u32 length + stdout, which the plugin relays byte for byte.
public enum DaemonWire {
    public static let requestMagic: [UInt8] = Array("PXD1".utf8)
    public static let responseMagic: [UInt8] = Array("PXR1".utf8)
    public static let admitted: UInt8 = UInt8(ascii: "A")
    public static let busy: UInt8 = UInt8(ascii: "B")
    public static let go: UInt8 = UInt8(ascii: "G")
    public static let maxEnvironmentBytes = 1 << 20
    public static let maxStdinBytes = 16 << 20
    public static let maxStdoutBytes = 64 << 20

    static func u32(_ v: Int) -> [UInt8] {
        let x = UInt32(truncatingIfNeeded: v)
        return [UInt8(x >> 24), UInt8((x >> 16) & 0xFF), UInt8((x >> 8) & 0xFF), UInt8(x & 0xFF)]
    }

    static func decodeU32(_ b: [UInt8]) -> Int {
        guard b.count == 4 else { return 0 }
        return Int(b[0]) << 24 | Int(b[1]) << 16 | Int(b[2]) << 8 | Int(b[3])
    }

    /// The request frame of step 1.
    public static func encodeRequest(environment: [String], stdin: [UInt8]) -> [UInt8] {
        var env: [UInt8] = []
        for e in environment where !e.utf8.contains(0) {
            env += Array(e.utf8)
            env.append(0)
        }
        return requestMagic + u32(env.count) + env + u32(stdin.count) + stdin
    }

    public static func encodeResponse(exitCode: Int32, stdout: [UInt8]) -> [UInt8] {
        responseMagic + u32(Int(UInt32(bitPattern: exitCode))) + u32(stdout.count) + stdout
    }

    /// Why a frame could not be read.
    public struct FrameError: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// Reads step 1 before `deadline`.
    public static func readRequest(_ s: borrowing StreamSocket, deadline: Int64) throws(FrameError) -> (environment: [String], stdin: [UInt8]) {
        do {
            guard try s.read(exactly: 4, deadline: deadline) == requestMagic else { throw FrameError("not a plexus request") }
            let envLen = decodeU32(try s.read(exactly: 4, deadline: deadline))
            guard envLen <= maxEnvironmentBytes else { throw FrameError("environment of \(envLen) bytes is too large") }
            let env = try s.read(exactly: envLen, deadline: deadline)
            let inLen = decodeU32(try s.read(exactly: 4, deadline: deadline))
            guard inLen <= maxStdinBytes else { throw FrameError("stdin of \(inLen) bytes is too large") }
            let stdin = try s.read(exactly: inLen, deadline: deadline)
            let entries = env.split(separator: 0, omittingEmptySubsequences: true).map { String(decoding: $0, as: UTF8.self) }
            return (entries, stdin)
        } catch let e as FrameError {
            throw e
        } catch {
            throw FrameError("cannot read the request: \(error)")
        }
    }

    /// Reads step 4 before `deadline`.
    static func readResponse(_ s: borrowing StreamSocket, deadline: Int64) throws(SystemError) -> (exitCode: Int32, stdout: [UInt8])? {
        guard try s.read(exactly: 4, deadline: deadline) == responseMagic else { return nil }
        let code = Int32(bitPattern: UInt32(truncatingIfNeeded: decodeU32(try s.read(exactly: 4, deadline: deadline))))
        let len = decodeU32(try s.read(exactly: 4, deadline: deadline))
        guard len <= maxStdoutBytes else { return nil }
        return (code, try s.read(exactly: len, deadline: deadline))
    }
}

/// The thin plugin's side.
public enum DaemonClient {
    public enum Outcome: Equatable {
        /// The daemon ran the call: relay this.
        case answered(stdout: [UInt8], exitCode: Int32)
        /// Nobody ran the call (no socket, refused, busy, no `A` in time): run it locally.
        case unavailable(String)
        /// The daemon started the call and then went away (killed mid-ADD): do not run it again; the runtime's DEL
        /// cleans up from the cache.
        case lost(String)
    }

    /// Sends one call to the daemon at `socketPath`. `admitMilliseconds` bounds connecting, sending and the wait for
    /// `A`; `resultMilliseconds` bounds the wait for the result once the daemon runs the call.
    public static func forward(socketPath: String, environment: [String], stdin: [UInt8],
                               admitMilliseconds: Int, resultMilliseconds: Int) -> Outcome {
        let started = Clock.monotonicNanoseconds()
        let admitDeadline = started + Int64(admitMilliseconds) * 1_000_000
        let s: StreamSocket
        do { s = try StreamSocket.connect(unixPath: socketPath, timeoutMilliseconds: admitMilliseconds) } catch {
            return .unavailable(error.description)
        }
        do {
            try s.write(DaemonWire.encodeRequest(environment: environment, stdin: stdin), deadline: admitDeadline)
            let answer = try s.read(exactly: 1, deadline: admitDeadline)
            guard answer == [DaemonWire.admitted] else {
                return .unavailable(answer == [DaemonWire.busy] ? "the daemon is at its queue limit" : "unexpected answer")
            }
            try s.write([DaemonWire.go], deadline: admitDeadline + 1_000_000_000)
        } catch {
            return .unavailable(error.description)
        }
        do {
            let deadline = Clock.monotonicNanoseconds() + Int64(resultMilliseconds) * 1_000_000
            guard let r = try DaemonWire.readResponse(s, deadline: deadline) else { return .lost("the daemon sent a malformed result") }
            return .answered(stdout: r.stdout, exitCode: r.exitCode)
        } catch {
            return .lost(error.description)
        }
    }
}
