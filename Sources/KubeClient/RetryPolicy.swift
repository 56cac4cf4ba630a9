#if canImport(Glibc)
import Glibc
#endif
import SystemKit

/// When and how long to retry a Kubernetes API request. All waits and attempts stay inside the caller's overall
/// deadline (monotonic): an attempt's timeout is cut to the time left, and a wait that would end past the deadline
/// is not started (the last error is returned instead).
///
/// Retried: connection failures and attempt timeouts, 429 (honouring `Retry-After`, capped), 500, 502, 503, 504.
/// Never retried: 401 (except one immediate retry after a rotated token file), 403, 404, 409, 422 and any other
/// 4xx, TLS verification failures, configuration errors, unparsable 2xx bodies.
public struct RetryPolicy: Sendable, Equatable {
    /// Total attempts per operation, the first included (1 = no retries).
    public var maxAttempts: Int
    /// Backoff before retry n (n = 1, 2, ...) is `min(maxDelay, baseDelay * 2^(n-1))`, reduced by up to `jitter`
    /// (0...1) of itself at random ("equal jitter" for 0.5: uniformly in [d/2, d]).
    public var baseDelayNanoseconds: Int64
    public var maxDelayNanoseconds: Int64
    public var jitter: Double
    /// Cap on a server's `Retry-After` (header or `details.retryAfterSeconds`).
    public var maxRetryAfterNanoseconds: Int64
    /// Limits of one attempt (further cut to the time left before the deadline).
    public var attemptTimeoutNanoseconds: Int64
    public var connectTimeoutNanoseconds: Int64
    /// An attempt is only started when at least this much time is left before the deadline.
    public var minimumAttemptNanoseconds: Int64
    /// HTTP statuses that are retried.
    public var retryableStatuses: Set<Int>

    public init(
        maxAttempts: Int = 4,
        baseDelayNanoseconds: Int64 = 50_000_000,
        maxDelayNanoseconds: Int64 = 1_000_000_000,
        jitter: Double = 0.5,
        maxRetryAfterNanoseconds: Int64 = 2_000_000_000,
        attemptTimeoutNanoseconds: Int64 = 5_000_000_000,
        connectTimeoutNanoseconds: Int64 = 3_000_000_000,
        minimumAttemptNanoseconds: Int64 = 5_000_000,
        retryableStatuses: Set<Int> = [429, 500, 502, 503, 504]
    ) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelayNanoseconds = max(0, baseDelayNanoseconds)
        self.maxDelayNanoseconds = max(0, maxDelayNanoseconds)
        self.jitter = min(1, max(0, jitter))
        self.maxRetryAfterNanoseconds = max(0, maxRetryAfterNanoseconds)
        self.attemptTimeoutNanoseconds = max(1_000_000, attemptTimeoutNanoseconds)
        self.connectTimeoutNanoseconds = max(1_000_000, connectTimeoutNanoseconds)
        self.minimumAttemptNanoseconds = max(0, minimumAttemptNanoseconds)
        self.retryableStatuses = retryableStatuses
    }

    /// 4 attempts, 50 ms base backoff capped at 1 s with 50 % jitter, Retry-After capped at 2 s, 5 s per attempt.
    public static let `default` = RetryPolicy()

    /// A single attempt (used for best-effort calls such as events).
    public static let singleAttempt = RetryPolicy(maxAttempts: 1)

    /// The backoff before the retry that follows attempt `attempt` (1-based). `random` is in [0, 1).
    public func backoffNanoseconds(afterAttempt attempt: Int, random: Double) -> Int64 {
        let shift = min(max(attempt - 1, 0), 30)
        let (scaled, overflow) = baseDelayNanoseconds.multipliedReportingOverflow(by: Int64(1) << shift)
        let d = overflow ? maxDelayNanoseconds : min(maxDelayNanoseconds, scaled)
        let cut = Double(d) * jitter * min(max(random, 0), 1)
        return d - Int64(cut)
    }

    /// The wait before retrying after `response` (a retryable status): the server's Retry-After (header first, then
    /// the Status body's `details.retryAfterSeconds`) capped at `maxRetryAfter`, else the backoff.
    public func delayNanoseconds(afterAttempt attempt: Int, response: HTTPResponse?, random: Double) -> Int64 {
        if let response {
            let seconds = response.retryAfterSeconds ?? KubeStatus(body: response.body)?.retryAfterSeconds
            if let seconds, seconds >= 0 {
                let ns = seconds > 1_000_000 ? Int64.max : Int64(seconds) * 1_000_000_000
                return min(ns, maxRetryAfterNanoseconds)
            }
        }
        return backoffNanoseconds(afterAttempt: attempt, random: random)
    }
}

/// The monotonic clock and sleep the client uses, injectable so tests run without real waits.
public protocol KubeClock {
    /// Monotonic nanoseconds (same base as `SystemKit.Clock.monotonicNanoseconds()`).
    func now() -> Int64
    func sleep(nanoseconds: Int64)
}

/// The real clock.
public struct SystemKubeClock: KubeClock, Sendable {
    public init() {}
    public func now() -> Int64 { Clock.monotonicNanoseconds() }
    public func sleep(nanoseconds: Int64) {
        guard nanoseconds > 0 else { return }
        var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var rem = timespec()
        while nanosleep(&ts, &rem) != 0 && errno == EINTR { ts = rem }
    }
}

/// Small, fast, seedable generator for backoff jitter (SplitMix64).
public struct JitterSource: Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    /// The next value in [0, 1).
    public mutating func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(UInt64(1) << 53)
    }
}
