#if canImport(Glibc)
import Glibc
#endif
internal import CSystemShim

/// An advisory `flock(2)` lock on a file, held until `unlock()` or deinit. Cross-process: every plugin process
/// that touches the same cache entry takes the same lock file.
public final class FileLock {
    public enum Mode: Sendable { case shared, exclusive }

    private var fd: Int32
    public let path: String

    /// Opens (creating, 0600) and locks `path`, blocking until the lock is granted.
    public init(path: String, mode: Mode) throws(SystemError) {
        self.path = path
        let fd = retryingEINTR { px_open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        if fd < 0 { throw SystemError.last("open", path: path) }
        let op = mode == .shared ? LOCK_SH : LOCK_EX
        if retryingEINTR({ flock(fd, op) }) != 0 {
            let e = SystemError.last("flock", path: path)
            close(fd)
            throw e
        }
        self.fd = fd
    }

    public func unlock() {
        if fd >= 0 {
            _ = flock(fd, LOCK_UN)
            close(fd)
            fd = -1
        }
    }

    deinit { unlock() }
}
