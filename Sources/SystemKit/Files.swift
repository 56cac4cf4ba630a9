#if canImport(Glibc)
import Glibc
#endif
internal import CSystemShim
import Synchronization

/// File-system primitives for everything Plexus persists. Writes are atomic (temp file in the same directory,
/// fsync, rename, fsync of the directory) so a crash or reboot never leaves a half-written file behind.
///
/// Every path crosses into C here. A path with a NUL byte would be cut short at the C boundary (`"bin/evil\0x"`
/// would name `bin/evil`), so each primitive refuses one with `EINVAL` instead of acting on another file.
public enum FileSystem {
    /// The default bound on a file read into memory.
    public static let defaultReadLimit = 64 << 20

    /// Whether `s` can cross the C boundary unchanged (no NUL byte).
    public static func isCSafe(_ s: String) -> Bool { !s.utf8.contains(0) }

    static func checkPath(_ path: String, _ operation: String) throws(SystemError) {
        if !isCSafe(path) { throw SystemError(operation, path: printable(path), errno: EINVAL) }
    }

    /// `path` with NUL and control bytes made visible, for messages.
    static func printable(_ path: String) -> String {
        var out = ""
        for u in path.unicodeScalars {
            if u.value < 0x20 || u.value == 0x7F { out += "\\x" + String(u.value, radix: 16) } else { out.unicodeScalars.append(u) }
        }
        return out
    }

    /// Reads a whole regular file (a symlink to one is followed: kubeconfigs and projected tokens are symlinks).
    /// Anything that is not a regular file (FIFO, device, directory) is refused without blocking on it, and at
    /// most `limit` bytes are read. Throws `SystemError` (check `isNotFound`).
    public static func read(_ path: String, limit: Int = defaultReadLimit) throws(SystemError) -> [UInt8] {
        try readRegular(path, followLinks: true, limit: limit)
    }

    /// Reads a file Plexus itself wrote (cache, records): like `read`, but a symlink is refused too (`ELOOP`), so a
    /// planted link can neither redirect the read nor make it block on a FIFO.
    public static func readOwnFile(_ path: String, limit: Int = 16 << 20) throws(SystemError) -> [UInt8] {
        try readRegular(path, followLinks: false, limit: limit)
    }

    static func readRegular(_ path: String, followLinks: Bool, limit: Int) throws(SystemError) -> [UInt8] {
        try checkPath(path, "open")
        // O_NONBLOCK: opening a FIFO for reading must not wait for a writer; the type check below refuses it.
        var flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
        if !followLinks { flags |= O_NOFOLLOW }
        let fd = retryingEINTR { px_open(path, flags, 0) }
        if fd < 0 { throw SystemError.last("open", path: path) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw SystemError.last("fstat", path: path) }
        if (st.st_mode & S_IFMT) != S_IFREG { throw SystemError("open (not a regular file)", path: path, errno: EINVAL) }
        if st.st_size > limit { throw SystemError("read", path: path, errno: EFBIG) }
        _ = px_set_nonblocking(fd, 0)
        return try readAll(fd: fd, path: path, limit: limit)
    }

    /// Reads from `fd` until EOF, at most `limit` bytes.
    public static func readAll(fd: Int32, path: String = "<fd>", limit: Int = defaultReadLimit) throws(SystemError) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { buf in retryingEINTR { Glibc.read(fd, buf.baseAddress, buf.count) } }
            if n < 0 { throw SystemError.last("read", path: path) }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
            if out.count > limit { throw SystemError("read", path: path, errno: EFBIG) }
        }
    }

    public static func readString(_ path: String) throws(SystemError) -> String {
        String(decoding: try read(path), as: UTF8.self)
    }

    /// Writes `bytes` to `path` atomically with the given mode: temp file, fsync, rename. With `durableRename` the
    /// directory is fsynced too, so the rename itself survives a power loss (costs about 1 ms here); without it
    /// the rename reaches the disk with the file system's next journal commit. The temp file is created
    /// exclusively and never through a symlink; the rename replaces a link at `path` rather than following it.
    /// `durable: false` skips the file's fsync too: the rename is still atomic for every reader and survives a
    /// crash of the process, but after a power loss the file may be missing or empty (readers must tolerate that).
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: UInt32 = 0o600,
                                       durableRename: Bool = false, durable: Bool = true) throws(SystemError) {
        try stageAtomically(path, bytes, mode: mode, durableRename: durableRename, durable: durable).commit()
    }

    /// The first half of `writeAtomically` (same parameters): `bytes` written to the exclusive temp file beside
    /// `path`, not yet fsynced or renamed. Nobody sees the new content until `commit`; `discard` (or dropping the
    /// last reference without committing) removes the temp file. A caller uses this to do other work while the disk
    /// is busy, as long as nothing that work does depends on the file being in place yet.
    public static func stageAtomically(_ path: String, _ bytes: [UInt8], mode: UInt32 = 0o600,
                                       durableRename: Bool = false, durable: Bool = true) throws(SystemError) -> StagedFile {
        try checkPath(path, "open")
        let dir = directoryName(of: path)
        let tmp = "\(dir)/.\(baseName(of: path))\(temporaryMarker)\(getpid())"
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        var fd = retryingEINTR { px_open(tmp, flags, Int32(mode)) }
        if fd < 0 && px_errno() == EEXIST {
            // Left by a crashed process with our pid, or planted: it is ours to replace, never to follow.
            unlink(tmp)
            fd = retryingEINTR { px_open(tmp, flags, Int32(mode)) }
        }
        if fd < 0 { throw SystemError.last("open", path: tmp) }
        do throws(SystemError) {
            try writeAll(fd: fd, bytes, path: tmp)
            if fchmod(fd, mode_t(mode)) != 0 { throw SystemError.last("fchmod", path: tmp) }
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        return StagedFile(path: path, temporary: tmp, fd: fd, durable: durable, durableRename: durableRename)
    }

    public static func writeAll(fd: Int32, _ bytes: [UInt8], path: String = "<fd>") throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { buf in
                retryingEINTR { write(fd, buf.baseAddress! + offset, buf.count - offset) }
            }
            if n < 0 { throw SystemError.last("write", path: path) }
            offset += n
        }
    }

    /// fsync of a directory, so a rename in it is durable. Best effort: failures are ignored.
    public static func syncDirectory(_ dir: String) {
        guard isCSafe(dir) else { return }
        let fd = px_open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    /// Removes a file (a symlink itself, never its target). A missing file is not an error.
    public static func remove(_ path: String) throws(SystemError) {
        try checkPath(path, "unlink")
        if unlink(path) != 0 && px_errno() != ENOENT { throw SystemError.last("unlink", path: path) }
    }

    /// Clears the name of a file Plexus owns: whatever stands there goes (a file, link, FIFO, or an empty
    /// directory put where a file belongs); a missing entry is fine. A directory with content is never deleted:
    /// it is moved aside (see `quarantine`), so the name is free again and nothing in it is lost.
    /// Removes `path` when it is a unix socket (never another kind of file); errors are ignored.
    public static func removeSocket(_ path: String) {
        guard isCSafe(path) else { return }
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
    }

    public static func removeOwnEntry(_ path: String) throws(SystemError) {
        try checkPath(path, "unlink")
        if unlink(path) == 0 || px_errno() == ENOENT { return }
        if px_errno() == EISDIR || px_errno() == EPERM {
            if rmdir(path) == 0 || px_errno() == ENOENT { return }
            if px_errno() == ENOTEMPTY || px_errno() == EEXIST { _ = try quarantine(path); return }
            throw SystemError.last("rmdir", path: path)
        }
        throw SystemError.last("unlink", path: path)
    }

    /// The marker in the name of a file being written (`.<name>.tmp.<pid>`, see `stageAtomically`).
    public static let temporaryMarker = ".tmp."

    /// Removes the temp files in `directory` that a writer left when it died between writing and renaming (a
    /// SIGKILL, an OOM kill, a power loss): regular files named `.<name>.tmp.<pid>` whose process no longer exists.
    /// Only for a caller that excludes every writer of the directory (a lock they all take), since a live writer's
    /// pid may also be reused. Quarantined entries and everything else are left alone. Returns the names removed.
    public static func removeAbandonedTemporaries(in directory: String) -> [String] {
        guard let names = try? list(directory) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix(".") {
            guard let lastDot = name.utf8.lastIndex(of: UInt8(ascii: ".")),
                  name[..<lastDot].hasSuffix(String(temporaryMarker.dropLast())) else { continue }
            let pidText = name.utf8[name.utf8.index(after: lastDot)...]
            guard !pidText.isEmpty, pidText.count <= 10, pidText.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let pid = Int32(String(decoding: pidText, as: UTF8.self)), pid > 0 else { continue }
            // A pid that is still running is left (its owner, or whoever reused the pid, is not ours to judge).
            if kill(pid, 0) == 0 || px_errno() == EPERM { continue }
            let path = directory + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            if unlink(path) == 0 { removed.append(name) }
        }
        return removed
    }

    /// The marker in the name of an entry moved aside by `quarantine`.
    public static let quarantineMarker = ".quarantined."

    /// Renames `path` to a hidden name beside it (`.<name>.quarantined.<pid>.<ns>`), which Plexus' readers skip and
    /// `plexus inspect` reports. Returns the new path.
    public static func quarantine(_ path: String) throws(SystemError) -> String {
        try checkPath(path, "rename")
        let aside = "\(directoryName(of: path))/.\(baseName(of: path))\(quarantineMarker)\(getpid()).\(px_monotonic_ns())"
        if rename(path, aside) != 0 { throw SystemError.last("rename", path: path) }
        return aside
    }

    /// Creates a directory and its parents with `mode` (existing directories are left as they are).
    public static func makeDirectories(_ path: String, mode: UInt32 = 0o700) throws(SystemError) {
        try checkPath(path, "mkdir")
        if isDirectory(path) { return }
        let parent = directoryName(of: path)
        if parent != path && !parent.isEmpty && parent != "/" { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode_t(mode)) != 0 && px_errno() != EEXIST { throw SystemError.last("mkdir", path: path) }
    }

    /// A directory Plexus owns inside its cache (`attachments/`, `results/`, `locks/`): created with `mode` (and
    /// its parents) when missing; refused when something else — a symlink, which would redirect every file in it,
    /// or a file — stands there. With `replacingOther` such a non-directory is removed (never followed) and the
    /// directory created in its place: for directories whose content is disposable, like lock files.
    public static func makeOwnDirectory(_ path: String, mode: UInt32 = 0o700, replacingOther: Bool = false) throws(SystemError) {
        try checkPath(path, "mkdir")
        var st = stat()
        if lstat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR { return }
            if !replacingOther || unlink(path) != 0 {
                throw SystemError("mkdir (exists and is not a directory)", path: path, errno: ENOTDIR)
            }
        }
        let parent = directoryName(of: path)
        if parent != path && !parent.isEmpty && parent != "/" { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode_t(mode)) != 0 && px_errno() != EEXIST { throw SystemError.last("mkdir", path: path) }
        if lstat(path, &st) != 0 || (st.st_mode & S_IFMT) != S_IFDIR {
            throw SystemError("mkdir (exists and is not a directory)", path: path, errno: ENOTDIR)
        }
    }

    /// Whether `path` is a real directory (not a symlink to one).
    public static func isOwnDirectory(_ path: String) -> Bool {
        guard isCSafe(path) else { return false }
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Names in a directory (no `.`/`..`), sorted bytewise. Throws when the directory cannot be opened.
    public static func list(_ path: String) throws(SystemError) -> [String] {
        try checkPath(path, "opendir")
        guard let d = opendir(path) else { throw SystemError.last("opendir", path: path) }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    public static func exists(_ path: String) -> Bool { isCSafe(path) && access(path, F_OK) == 0 }

    /// The modification time of `path` itself (a symlink is not followed), in seconds since the epoch.
    public static func modificationTime(_ path: String) -> Int64? {
        guard isCSafe(path) else { return nil }
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return Int64(st.st_mtim.tv_sec)
    }

    /// The wall clock in seconds since the epoch.
    public static func now() -> Int64 { Int64(time(nil)) }

    public static func isDirectory(_ path: String) -> Bool {
        guard isCSafe(path) else { return false }
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func isRegularFile(_ path: String) -> Bool {
        guard isCSafe(path) else { return false }
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Whether `path` can be created, written and removed in: used by readiness checks.
    public static func isWritableDirectory(_ path: String) -> Bool {
        isDirectory(path) && access(path, W_OK | X_OK) == 0
    }

    public static func directoryName(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return "." }
        if slash == path.utf8.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func baseName(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return String(path[path.utf8.index(after: slash)...])
    }
}

/// A file written beside its final name by `FileSystem.stageAtomically` and not yet renamed into place. Thread-safe:
/// `commit` and `discard` serialise, and only the first of them acts.
public final class StagedFile: Sendable {
    public let path: String
    let temporary: String
    let durable: Bool, durableRename: Bool
    enum State { case staged(fd: Int32), committed, failed(SystemError), discarded }
    let state: Mutex<State>

    init(path: String, temporary: String, fd: Int32, durable: Bool, durableRename: Bool) {
        self.path = path
        self.temporary = temporary
        self.durable = durable
        self.durableRename = durableRename
        state = Mutex(.staged(fd: fd))
    }

    /// fsync (unless staged with `durable: false`), rename over `path`, and (when staged with `durableRename`) fsync
    /// of the directory: the rest of `writeAtomically`. On failure the temp file is removed. Calling it again
    /// returns the first outcome.
    public func commit() throws(SystemError) {
        try state.withLock { (state: inout State) throws(SystemError) in
            switch state {
            case .committed: return
            case .failed(let e): throw e
            case .discarded: throw SystemError("rename (staged file discarded)", path: temporary, errno: ENOENT)
            case .staged(let fd):
                do throws(SystemError) {
                    try finish(fd: fd)
                    state = .committed
                } catch {
                    state = .failed(error)
                    throw error
                }
            }
        }
    }

    private func finish(fd: Int32) throws(SystemError) {
        var ok = false
        defer { if !ok { unlink(temporary) } }
        do {
            defer { close(fd) }
            if durable, retryingEINTR({ fsync(fd) }) != 0 { throw SystemError.last("fsync", path: temporary) }
        }
        if rename(temporary, path) != 0 {
            // A directory where the file belongs (tampering) would refuse the rename forever: clear the name once.
            guard px_errno() == EISDIR || px_errno() == ENOTEMPTY || px_errno() == EEXIST else { throw SystemError.last("rename", path: path) }
            try FileSystem.removeOwnEntry(path)
            if rename(temporary, path) != 0 { throw SystemError.last("rename", path: path) }
        }
        ok = true
        if durableRename { FileSystem.syncDirectory(FileSystem.directoryName(of: path)) }
    }

    /// Removes the temp file of a file not committed; nothing after a commit.
    public func discard() {
        state.withLock { state in
            if case .staged(let fd) = state {
                close(fd)
                unlink(temporary)
                state = .discarded
            }
        }
    }

    /// Whether `commit` has succeeded.
    public var isCommitted: Bool { state.withLock { if case .committed = $0 { true } else { false } } }

    deinit { discard() }
}
