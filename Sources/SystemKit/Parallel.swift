#if canImport(Glibc)
import Glibc
#endif

/// Runs synchronous closures on their own POSIX threads and waits for all of them. Used where a CNI invocation
/// waits on several independent child processes (concurrent teardown); no Swift concurrency, no thread hopping.
public enum Parallel {
    /// Runs every closure concurrently (the first on the calling thread) and returns their results in order.
    /// If a thread cannot be created, that closure runs on the calling thread instead.
    public static func map<T>(_ bodies: [() -> T]) -> [T] {
        if bodies.count <= 1 { return bodies.map { $0() } }
        let slots = bodies.map { _ in Slot<T>() }
        var threads: [pthread_t] = []
        var inline: [Int] = []
        for i in 1..<bodies.count {
            let body = bodies[i]
            let slot = slots[i]
            if let tid = Threads.startJoinable({ slot.value = body() }) {
                threads.append(tid)
            } else {
                inline.append(i)
            }
        }
        slots[0].value = bodies[0]()
        for i in inline { slots[i].value = bodies[i]() }
        for t in threads { pthread_join(t, nil) }
        // Every slot is filled by now (joined threads or inline runs); re-running is only a defensive fallback.
        return zip(slots, bodies).map { slot, body in slot.value ?? body() }
    }
}

private final class Slot<T>: @unchecked Sendable {
    var value: T?
    init() {}
}

/// One closure started now on a POSIX thread of its own and joined by `wait`, so the caller can do other work
/// meanwhile (ADD reads the pod's netns while it plans). The closure runs only on that thread, which exists for it
/// alone (it may change the thread's namespace): without a thread there is no job. The thread is always joined,
/// by `wait` or at the latest when the job is freed.
public final class BackgroundJob<T: Sendable>: @unchecked Sendable {
    private let slot = Slot<T>()
    private let thread: pthread_t
    private var joined = false

    public init?(onItsOwnThread body: @escaping @Sendable () -> T) {
        let slot = self.slot
        guard let tid = Threads.startJoinable({ slot.value = body() }) else { return nil }
        thread = tid
    }

    /// The closure's result; the first call joins the thread. Only one thread may call `wait`. (Always a value: a
    /// joined thread has run the closure to its end.)
    public func wait() -> T? {
        if !joined {
            joined = true
            pthread_join(thread, nil)
        }
        return slot.value
    }

    deinit {
        if !joined { pthread_join(thread, nil) }
    }
}

/// Long-lived and per-connection threads of the node daemon.
public enum Threads {
    private final class Body: @unchecked Sendable {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Starts `body` on a new joinable POSIX thread (default attributes); nil when the thread could not be created.
    static func startJoinable(_ body: @escaping () -> Void) -> pthread_t? {
        let job = Unmanaged.passRetained(Body(body))
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<Body>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, job.toOpaque())
        if rc != 0 {
            job.release()
            return nil
        }
        return tid
    }

    /// Starts `body` on a new detached POSIX thread; false when the thread could not be created.
    @discardableResult
    public static func detach(_ body: @escaping @Sendable () -> Void) -> Bool {
        let job = Unmanaged.passRetained(Body(body))
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        // 8 MiB like the main thread: JSON parsing and serialisation recurse up to `JSON.maxDepth`. Only the pages a
        // thread touches count in RSS.
        pthread_attr_setstacksize(&attr, 8 << 20)
        var tid = pthread_t()
        let rc = pthread_create(&tid, &attr, { raw in
            guard let raw else { return nil }
            Unmanaged<Body>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, job.toOpaque())
        if rc != 0 { job.release() }
        return rc == 0
    }
}

/// A counting semaphore (POSIX `sem_t`): the daemon's cap on calls running at once.
public final class CountingSemaphore: @unchecked Sendable {
    private let sem: UnsafeMutablePointer<sem_t>

    public init(_ value: Int) {
        sem = .allocate(capacity: 1)
        sem_init(sem, 0, UInt32(clamping: max(0, value)))
    }

    deinit {
        sem_destroy(sem)
        sem.deallocate()
    }

    public func wait() { while sem_wait(sem) != 0 && errno == EINTR {} }
    public func signal() { sem_post(sem) }
}
