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

    /// Opens (creating, 0600) and locks `path`, blocking until the lock is granted. The lock file is never
    /// reached through a symlink: whatever is not a regular file at `path` (a planted link pointing outside the
    /// cache, a FIFO) cannot hold a lock of ours, so it is removed and a fresh file created in its place. A
    /// directory there is an error.
    public init(path: String, mode: Mode) throws(SystemError) {
        self.path = path
        try FileSystem.checkPath(path, "open")
        let fd = try FileLock.openRegular(path)
        let op = mode == .shared ? LOCK_SH : LOCK_EX
        if retryingEINTR({ flock(fd, op) }) != 0 {
            let e = SystemError.last("flock", path: path)
            close(fd)
            throw e
        }
        self.fd = fd
    }

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Like `init(path:mode:)` but never waits: nil when another process holds a conflicting lock.
    public static func tryLock(path: String, mode: Mode) throws(SystemError) -> FileLock? {
        try FileSystem.checkPath(path, "open")
        let fd = try openRegular(path)
        let op = (mode == .shared ? LOCK_SH : LOCK_EX) | LOCK_NB
        if retryingEINTR({ flock(fd, op) }) != 0 {
            let busy = px_errno() == EWOULDBLOCK
            let e = SystemError.last("flock", path: path)
            close(fd)
            if busy { return nil }
            throw e
        }
        return FileLock(fd: fd, path: path)
    }

    static func openRegular(_ path: String) throws(SystemError) -> Int32 {
        for _ in 0..<3 {
            let fd = retryingEINTR { px_open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0o600) }
            if fd >= 0 {
                var st = stat()
                if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG {
                    _ = px_set_nonblocking(fd, 0)
                    return fd
                }
                close(fd)
            } else if px_errno() != ELOOP && px_errno() != ENXIO {
                // ELOOP: a symlink; ENXIO: a FIFO without a reader. Anything else is a real failure.
                throw SystemError.last("open", path: path)
            }
            if unlink(path) != 0 && px_errno() != ENOENT {
                throw SystemError("open (not a regular file and cannot be replaced)", path: path, errno: px_errno())
            }
        }
        throw SystemError("open (not a regular file)", path: path, errno: EINVAL)
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
