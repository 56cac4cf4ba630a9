#if canImport(Glibc)
import Glibc
#endif

/// Waits for SIGTERM/SIGINT without a signal handler: the signals are blocked and taken with `sigtimedwait`, which
/// doubles as the watch loop's sleep. A signal that arrives while the installer is busy stays pending and ends
/// the next wait. Works as PID 1 in a container too (no default action is involved).
public struct SignalWaiter: Sendable {
    public static let stopSignals: [Int32] = [SIGTERM, SIGINT]

    public init() {}

    /// Blocks the stop signals for this thread (call before starting work).
    public func block() {
        var set = SignalWaiter.set()
        _ = pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Waits up to `milliseconds`; returns the stop signal received, or nil after the timeout.
    public func wait(milliseconds: Int) -> Int32? {
        var set = SignalWaiter.set()
        var ts = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        let start = Clock.monotonicNanoseconds()
        while true {
            let sig = sigtimedwait(&set, nil, &ts)
            if sig > 0 { return sig }
            if errno != EINTR { return nil }
            // Interrupted by another signal: wait out the rest.
            let left = milliseconds - Int((Clock.monotonicNanoseconds() - start) / 1_000_000)
            if left <= 0 { return nil }
            ts = timespec(tv_sec: left / 1000, tv_nsec: (left % 1000) * 1_000_000)
        }
    }

    public static func name(_ sig: Int32) -> String {
        switch sig {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        default: return "signal \(sig)"
        }
    }

    private static func set() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in stopSignals { sigaddset(&set, s) }
        return set
    }
}
