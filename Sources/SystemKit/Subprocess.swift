#if canImport(Glibc)
import Glibc
#endif
internal import CSystemShim

/// The outcome of running a child process to completion.
public struct ProcessOutput: Sendable {
    /// Exit status, or `128 + signal` when the child was killed by a signal.
    public var exitStatus: Int32
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    /// True when the deadline expired and the child was killed.
    public var timedOut: Bool
    /// The child's peak resident set size in KiB (`ru_maxrss`).
    public var maxRSSKilobytes: Int = 0
    /// True when `beforeInput` refused: the child got no stdin and was killed.
    public var inputWithheld = false
}

/// Runs child processes with `posix_spawn` (never `Foundation.Process`, which costs ~50 ms per child here):
/// SIGPIPE reset in the child, close-on-exec pipes, stdin written and stdout/stderr drained with `poll` so neither
/// side can block the other, and a deadline after which the child is killed.
public enum Subprocess {
    /// Runs `path` with `arguments` (argv[0] included) and environment entries `KEY=VALUE`. `beforeInput` runs
    /// once the child exists (it has exec'd) and before any of `stdin` is written, so its work overlaps the child's
    /// start-up; when it returns false the child gets no input (its stdin is closed), is killed and reaped, and the
    /// output says `inputWithheld`.
    public static func run(
        path: String, arguments: [String], environment: [String], stdin: [UInt8],
        timeoutNanoseconds: Int64, beforeInput: (() -> Bool)? = nil
    ) throws(SystemError) -> ProcessOutput {
        // A NUL byte would cut the path, an argument or an environment entry short at the C boundary.
        guard FileSystem.isCSafe(path), arguments.allSatisfy(FileSystem.isCSafe), environment.allSatisfy(FileSystem.isCSafe) else {
            throw SystemError("spawn (NUL byte in path, argument or environment)", path: FileSystem.printable(path), errno: EINVAL)
        }
        // A child that exits before reading all of its stdin must fail our write with EPIPE, not kill this process
        // (the plugin's main ignores SIGPIPE too; this covers every other caller, such as the test runner).
        ProcessEnvironment.ignoreSIGPIPE()
        var pid: pid_t = 0
        var inFD: Int32 = -1, outFD: Int32 = -1, errFD: Int32 = -1
        let rc = withCStrings(arguments) { argv in
            withCStrings(environment) { envp in
                px_spawn(path, argv, envp, &pid, &inFD, &outFD, &errFD)
            }
        }
        if rc != 0 { throw SystemError("spawn", path: path, errno: rc) }
        _ = px_set_nonblocking(inFD, 1)
        var out: [UInt8] = [], err: [UInt8] = []
        var written = 0
        var withheld = false
        if let beforeInput, !beforeInput() {
            withheld = true
            close(inFD)
            inFD = -1
            kill(pid, SIGKILL)
        }
        if stdin.isEmpty && inFD >= 0 { close(inFD); inFD = -1 }
        let deadline = Clock.deadline(afterNanoseconds: timeoutNanoseconds)
        var timedOut = false
        var buf = [UInt8](repeating: 0, count: 16384)
        while outFD >= 0 || errFD >= 0 || inFD >= 0 {
            var fds: [pollfd] = []
            if inFD >= 0 { fds.append(pollfd(fd: inFD, events: Int16(POLLOUT), revents: 0)) }
            if outFD >= 0 { fds.append(pollfd(fd: outFD, events: Int16(POLLIN), revents: 0)) }
            if errFD >= 0 { fds.append(pollfd(fd: errFD, events: Int16(POLLIN), revents: 0)) }
            let remaining = deadline - px_monotonic_ns()
            if remaining <= 0 { timedOut = true; break }
            let ms = Int32(min(remaining / 1_000_000 + 1, 60_000))
            let n = poll(&fds, nfds_t(fds.count), ms)
            if n < 0 {
                if px_errno() == EINTR { continue }
                break
            }
            for p in fds where p.revents != 0 {
                if p.fd == inFD {
                    let w = stdin.withUnsafeBytes { b in write(inFD, b.baseAddress! + written, b.count - written) }
                    if w > 0 { written += w }
                    if w < 0 && px_errno() != EAGAIN && px_errno() != EINTR { close(inFD); inFD = -1; continue }
                    if written >= stdin.count { close(inFD); inFD = -1 }
                } else {
                    let r = buf.withUnsafeMutableBytes { b in read(p.fd, b.baseAddress, b.count) }
                    if r > 0 {
                        if p.fd == outFD { out.append(contentsOf: buf[0..<r]) } else { err.append(contentsOf: buf[0..<r]) }
                    } else if r == 0 || (px_errno() != EINTR && px_errno() != EAGAIN) {
                        close(p.fd)
                        if p.fd == outFD { outFD = -1 } else { errFD = -1 }
                    }
                }
            }
        }
        for fd in [inFD, outFD, errFD] where fd >= 0 { close(fd) }
        if timedOut { kill(pid, SIGKILL) }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 {
            if px_errno() != EINTR { break }
        }
        let exit: Int32
        if (status & 0x7f) == 0 {
            exit = (status >> 8) & 0xff
        } else {
            exit = 128 + (status & 0x7f)
        }
        return ProcessOutput(exitStatus: exit, stdout: out, stderr: err, timedOut: timedOut, maxRSSKilobytes: Int(usage.ru_maxrss),
                             inputWithheld: withheld)
    }

    /// Replaces this process with `path` (execve). Returns only on failure, with the error.
    public static func exec(path: String, arguments: [String], environment: [String]) -> SystemError {
        guard FileSystem.isCSafe(path), arguments.allSatisfy(FileSystem.isCSafe), environment.allSatisfy(FileSystem.isCSafe) else {
            return SystemError("exec (NUL byte in path, argument or environment)", path: FileSystem.printable(path), errno: EINVAL)
        }
        withCStrings(arguments) { argv in
            withCStrings(environment) { envp in _ = execve(path, argv, envp) }
        }
        return SystemError.last("exec", path: path)
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var ptrs: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        ptrs.append(nil)
        defer { for p in ptrs { free(p) } }
        return ptrs.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// Process-wide facts read once at start-up.
public enum ProcessEnvironment {
    /// The process environment as `KEY=VALUE` entries, in order.
    public static func entries() -> [String] {
        var result: [String] = []
        guard var p = px_environ() else { return result }
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    /// The environment as a dictionary (the last entry for a key wins).
    public static func dictionary(_ entries: [String] = entries()) -> [String: String] {
        var d: [String: String] = [:]
        d.reserveCapacity(entries.count)
        for e in entries {
            if let eq = e.utf8.firstIndex(of: UInt8(ascii: "=")) {
                d[String(e[..<eq])] = String(e[e.utf8.index(after: eq)...])
            }
        }
        return d
    }

    public static func ignoreSIGPIPE() { px_ignore_sigpipe() }

    /// This process' executable (`/proc/self/exe`), or nil when it cannot be read.
    public static func executablePath() -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Monotonic and wall clocks.
public enum Clock {
    public static func monotonicNanoseconds() -> Int64 { Int64(px_monotonic_ns()) }

    /// The longest interval a deadline may span (about 292 years would overflow `Int64` nanoseconds; a century is
    /// "never" for a CNI call and leaves room for the additions below).
    public static let maximumIntervalNanoseconds: Int64 = 100 * 365 * 86_400 * 1_000_000_000

    /// `seconds` as nanoseconds without trapping: nil for NaN, infinities and negative values; values beyond
    /// `maximumIntervalNanoseconds` are clamped to it.
    public static func nanoseconds(seconds: Double) -> Int64? {
        guard seconds.isFinite, seconds >= 0 else { return nil }
        let ns = seconds * 1e9
        if ns >= Double(maximumIntervalNanoseconds) { return maximumIntervalNanoseconds }
        return Int64(ns)
    }

    /// The monotonic instant `nanoseconds` from now, saturating instead of overflowing.
    public static func deadline(afterNanoseconds nanoseconds: Int64) -> Int64 {
        let (sum, overflow) = monotonicNanoseconds().addingReportingOverflow(max(0, nanoseconds))
        return overflow ? Int64.max : sum
    }

    /// The monotonic instant `seconds` from now (see `nanoseconds(seconds:)`; an invalid value means now).
    public static func deadline(afterSeconds seconds: Double) -> Int64 {
        deadline(afterNanoseconds: nanoseconds(seconds: seconds) ?? 0)
    }

    /// RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-22T20:27:40.123Z`.
    public static func timestamp() -> String {
        var sec: Int64 = 0
        var nsec: Int = 0
        px_realtime(&sec, &nsec)
        var t = time_t(sec)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        func pad(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return "\(pad(tmv.tm_year + 1900, 4))-\(pad(tmv.tm_mon + 1, 2))-\(pad(tmv.tm_mday, 2))T"
            + "\(pad(tmv.tm_hour, 2)):\(pad(tmv.tm_min, 2)):\(pad(tmv.tm_sec, 2)).\(pad(Int32(nsec / 1_000_000), 3))Z"
    }

    public static func sleep(milliseconds: Int) {
        var ts = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var rem = timespec()
        while nanosleep(&ts, &rem) != 0 && px_errno() == EINTR { ts = rem }
    }
}
