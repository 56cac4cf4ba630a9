#if canImport(Glibc)
import Glibc
#endif
internal import CSystemShim

/// A failed system call: which operation, on what, and the errno it returned.
public struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var path: String?
    public var errno: Int32

    public init(_ operation: String, path: String? = nil, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var isNotFound: Bool { errno == ENOENT }

    public var description: String {
        let reason = String(cString: strerror(errno))
        if let path { return "\(operation) \(path): \(reason)" }
        return "\(operation): \(reason)"
    }

    static func last(_ operation: String, path: String? = nil) -> SystemError {
        SystemError(operation, path: path, errno: px_errno())
    }
}

/// Retries a system call interrupted by a signal. Every blocking call in SystemKit goes through here.
@inline(__always)
func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r == -1 && px_errno() == EINTR { continue }
        return r
    }
}
