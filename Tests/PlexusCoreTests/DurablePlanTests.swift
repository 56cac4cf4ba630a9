import CNIInvoke
import CNISpec
import Synchronization
import SystemKit
import Testing
@testable import PlexusCore

#if canImport(Glibc)
import Glibc
#endif

/// `FileSystem.stageAtomically` / `StagedFile`: the two halves of an atomic write.
@Suite struct StagedFileTests {
    func temporaries(_ dir: TempDir) -> [String] { dir.files("").filter { $0.hasPrefix(".") } }

    @Test func nothingIsVisibleUntilCommitThenTheWholeFileIs() throws {
        let dir = TempDir()
        let path = dir.path + "/record"
        let staged = try FileSystem.stageAtomically(path, Array("plan".utf8), mode: 0o600, durableRename: true)
        #expect(!FileSystem.exists(path))
        #expect(temporaries(dir).count == 1)
        #expect(!staged.isCommitted)

        try staged.commit()
        #expect(staged.isCommitted)
        #expect(try FileSystem.read(path) == Array("plan".utf8))
        var st = stat()
        #expect(lstat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(temporaries(dir).isEmpty)
        // Idempotent: a second commit (a later delegate passing the same gate) changes nothing.
        try staged.commit()
        staged.discard()
        #expect(try FileSystem.read(path) == Array("plan".utf8))
    }

    @Test func commitReplacesTheOldContentAtomically() throws {
        let dir = TempDir()
        let path = dir.path + "/record"
        try FileSystem.writeAtomically(path, Array("old".utf8))
        let staged = try FileSystem.stageAtomically(path, Array("new".utf8))
        #expect(try FileSystem.read(path) == Array("old".utf8))
        try staged.commit()
        #expect(try FileSystem.read(path) == Array("new".utf8))
    }

    @Test func discardRemovesTheTemporaryAndLeavesTheOldFile() throws {
        let dir = TempDir()
        let path = dir.path + "/record"
        try FileSystem.writeAtomically(path, Array("old".utf8))
        let staged = try FileSystem.stageAtomically(path, Array("new".utf8))
        staged.discard()
        #expect(temporaries(dir).isEmpty)
        #expect(try FileSystem.read(path) == Array("old".utf8))
        #expect(throws: SystemError.self) { try staged.commit() }
        #expect(!staged.isCommitted)
    }

    @Test func droppingAnUncommittedFileDiscardsIt() throws {
        let dir = TempDir()
        do {
            let staged = try FileSystem.stageAtomically(dir.path + "/record", Array("x".utf8))
            #expect(temporaries(dir).count == 1)
            _ = staged
        }
        #expect(dir.files("").isEmpty)
    }

    @Test func aFailedCommitCleansUpAndKeepsFailing() throws {
        let dir = TempDir()
        let path = dir.path + "/record"
        let staged = try FileSystem.stageAtomically(path, Array("x".utf8))
        // Something removed the temporary (another process cleaning the directory): the rename cannot happen.
        for t in temporaries(dir) { unlink(dir.path + "/" + t) }
        var first: SystemError?
        do { try staged.commit() } catch { first = error }
        #expect(first != nil)
        #expect(!staged.isCommitted)
        #expect(!FileSystem.exists(path))
        do {
            try staged.commit()
            Issue.record("second commit succeeded")
        } catch {
            #expect(error.description == first?.description)
        }
    }
}

/// `InputGate`: the work before any delegate reads its configuration runs exactly once.
@Suite struct InputGateTests {
    @Test func concurrentPassersRunTheWorkOnceAndAllWaitForIt() throws {
        let runs = Mutex(0)
        let gate = InputGate {
            Clock.sleep(milliseconds: 50)
            runs.withLock { $0 += 1 }
        }
        let outcomes = Parallel.map((0..<8).map { _ in
            { () -> Bool in
                do throws(CNIError) { try gate.pass() } catch { return false }
                // Nobody gets past the gate before the work has finished.
                return runs.withLock { $0 } == 1
            }
        })
        #expect(outcomes == Array(repeating: true, count: 8))
        #expect(runs.withLock { $0 } == 1)
        #expect(gate.hasPassed)
    }

    @Test func aFailureIsRunOnceAndReturnedToEveryLaterPasser() {
        let runs = Mutex(0)
        let gate = InputGate { () throws(CNIError) in
            runs.withLock { $0 += 1 }
            throw CNIError(.ioFailure, "cannot record attachment plan")
        }
        for _ in 0..<3 {
            do throws(CNIError) {
                try gate.pass()
                Issue.record("gate passed")
            } catch {
                #expect(error == CNIError(.ioFailure, "cannot record attachment plan"))
            }
        }
        #expect(runs.withLock { $0 } == 1)
        #expect(!gate.hasPassed)
    }
}

/// `BackgroundJob`: a closure on a thread of its own, always joined.
@Suite struct BackgroundJobTests {
    @Test func runsOnAnotherThreadAndWaitReturnsItsValue() throws {
        let caller = UInt(pthread_self())
        let made = BackgroundJob(onItsOwnThread: { () -> Bool in UInt(pthread_self()) == caller })
        let job = try #require(made)
        #expect(job.wait() == false)
        // A second wait does not join again and returns the same value.
        #expect(job.wait() == false)
    }

    @Test func aJobNeverWaitedForIsJoinedWhenFreed() {
        let finished = Mutex(false)
        do {
            let job = BackgroundJob(onItsOwnThread: { () -> Int in
                Clock.sleep(milliseconds: 50)
                finished.withLock { $0 = true }
                return 1
            })
            #expect(job != nil)
        }
        #expect(finished.withLock { $0 })
    }
}

/// The process boundary: `beforeInput` / the input gate run after the plugin process exists and before it can read
/// a byte of its configuration.
@Suite struct InputBeforeStdinTests {
    func script(_ dir: TempDir, _ body: String) throws -> String {
        let path = dir.path + "/plugin"
        try FileSystem.writeAtomically(path, Array("#!/bin/sh\n\(body)\n".utf8), mode: 0o755)
        return path
    }

    /// Waits up to 5 s for `path` to exist.
    static func appears(_ path: String) -> Bool {
        for _ in 0..<500 {
            if FileSystem.exists(path) { return true }
            Clock.sleep(milliseconds: 10)
        }
        return false
    }

    @Test func theGateRunsWhileThePluginStartsAndBeforeItReadsItsInput() throws {
        let dir = TempDir()
        // The plugin says it has started, reads its configuration, and checks the gate's marker is already there.
        let p = try script(dir, """
            touch \(dir.path)/started
            IFS= read -r line
            if [ -f \(dir.path)/gate ]; then printf '%s' "$line"; else echo 'input came before the gate' >&2; exit 3; fi
            """)
        let sawStart = Mutex(false)
        let root = dir.path
        let gate = InputGate {
            sawStart.withLock { $0 = InputBeforeStdinTests.appears(root + "/started") }
            // Long enough that a plugin given its input early would have read it and found no marker.
            Clock.sleep(milliseconds: 200)
            _ = try? FileSystem.writeAtomically(root + "/gate", [])
        }
        let exec = ProcessPluginExecutor(baseEnvironment: ["PATH=/usr/bin:/bin"], timeoutSeconds: 10)
        let out = try exec.execute(ExecRequest(pluginPath: p, command: "ADD", cniPath: "/x", stdin: Array("conf\n".utf8),
                                               inputGate: gate))
        #expect(String(decoding: out, as: UTF8.self) == "conf")
        #expect(sawStart.withLock { $0 })
        #expect(gate.hasPassed)
    }

    @Test func aFailedGateWithholdsTheInputKillsThePluginAndIsTheError() throws {
        let dir = TempDir()
        let p = try script(dir, """
            touch \(dir.path)/started
            IFS= read -r line
            printf '%s' "$line" > \(dir.path)/got
            """)
        let root = dir.path
        let gate = InputGate { () throws(CNIError) in
            _ = InputBeforeStdinTests.appears(root + "/started")
            throw CNIError(.ioFailure, "cannot record attachment plan", details: "fsync: EIO")
        }
        let exec = ProcessPluginExecutor(baseEnvironment: ["PATH=/usr/bin:/bin"], timeoutSeconds: 10)
        do {
            _ = try exec.execute(ExecRequest(pluginPath: p, command: "ADD", cniPath: "/x", stdin: Array("secret-config\n".utf8),
                                             inputGate: gate))
            Issue.record("execution succeeded")
        } catch {
            #expect(error == CNIError(.ioFailure, "cannot record attachment plan", details: "fsync: EIO"))
        }
        // The plugin never saw a byte of its configuration (it was killed, or read an empty stdin).
        let got = (try? FileSystem.read(dir.path + "/got")) ?? []
        #expect(got.isEmpty)
    }

    @Test func subprocessReportsWithheldInput() throws {
        let dir = TempDir()
        let p = try script(dir, "cat")
        let calls = Mutex(0)
        let refused = try Subprocess.run(path: p, arguments: [p], environment: [], stdin: Array("data".utf8),
                                         timeoutNanoseconds: 10_000_000_000,
                                         beforeInput: { calls.withLock { $0 += 1 }; return false })
        #expect(refused.inputWithheld)
        #expect(refused.stdout.isEmpty)
        let given = try Subprocess.run(path: p, arguments: [p], environment: [], stdin: Array("data".utf8),
                                       timeoutNanoseconds: 10_000_000_000,
                                       beforeInput: { calls.withLock { $0 += 1 }; return true })
        #expect(!given.inputWithheld && given.exitStatus == 0)
        #expect(given.stdout == Array("data".utf8))
        #expect(calls.withLock { $0 } == 2)
    }
}

/// Watches the attachment plan from inside the delegates' process boundary: before the gate the plan may only be
/// staged, after it the plan must be in place, and no delegate acts first.
final class PlanWatchingExecutor: PluginExecutor, @unchecked Sendable {
    let inner = FakeExecutor()
    let attachments: String
    private let lock = NSLockish()
    /// For each ADD: (record in place before the gate, record in place after it).
    private(set) var adds: [(before: Bool, after: Bool)] = []
    /// Runs before the gate (to sabotage the commit).
    var beforeGate: (() -> Void)?

    init(attachments: String) { self.attachments = attachments }

    func find(_ type: String, in paths: [String]) throws(CNIError) -> String { try inner.find(type, in: paths) }

    func recordInPlace() -> Bool {
        ((try? FileSystem.list(attachments)) ?? []).contains { !$0.hasPrefix(".") }
    }

    func execute(_ r: ExecRequest) throws(CNIError) -> [UInt8] {
        guard r.command == "ADD" else { return try inner.execute(r) }
        let before = recordInPlace()
        beforeGate?()
        let after: Bool
        do throws(CNIError) { try r.inputGate?.pass() } catch {
            lock.lock(); adds.append((before, false)); lock.unlock()
            throw error
        }
        after = recordInPlace()
        lock.lock(); adds.append((before, after)); lock.unlock()
        return try inner.execute(r)
    }
}

@Suite struct DurablePlanTests {
    func plexus(_ cfg: PlexusConfig, _ inv: CNIInvocation, _ exec: PluginExecutor) -> Plexus {
        Plexus(config: cfg, invocation: inv, executor: exec, logger: Logger(level: .panic, toStderr: false), sleep: { _ in })
    }

    @Test func thePlanIsInPlaceBeforeAnyDelegateReadsItsConfiguration() throws {
        let dir = TempDir()
        let exec = PlanWatchingExecutor(attachments: dir.path + "/cache/attachments")
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b"), net("c")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        // The first delegate started while the plan was only staged; every delegate got its input after the commit.
        #expect(exec.adds.map(\.before) == [false, true, true])
        #expect(exec.adds.map(\.after) == [true, true, true])
        #expect(dir.files("cache/attachments").count == 1)
        #expect(!dir.files("cache/attachments").contains { $0.hasPrefix(".") })
    }

    @Test(arguments: [false, true])
    func aPlanThatCannotBeRecordedIsCode74AndNoDelegateGetsItsInput(parallel: Bool) throws {
        let dir = TempDir()
        let attachments = dir.path + "/cache/attachments"
        let exec = PlanWatchingExecutor(attachments: attachments)
        // The staged plan disappears before it is renamed into place.
        exec.beforeGate = {
            for t in ((try? FileSystem.list(attachments)) ?? []) where t.hasPrefix(".") { unlink(attachments + "/" + t) }
        }
        let cfg = try makeConfig(dir, parallel: parallel, delegates: [net("a"), net("b"), net("c")])
        do {
            _ = try plexus(cfg, try invocation("ADD"), exec).add()
            Issue.record("ADD succeeded")
        } catch let e as CNIError {
            #expect(e.code == .ioFailure)
            #expect(e.msg.contains("cannot record attachment plan"))
            #expect(e.msg.contains("pod ns1/pod1"))
        }
        // No delegate ran an ADD (the fake only counts those that got past the gate) and nothing is left behind.
        #expect(!exec.inner.calls.contains { $0.command == "ADD" })
        #expect(exec.inner.live.isEmpty)
        #expect(dir.files("cache/attachments").isEmpty)
        #expect(dir.files("cache/results").isEmpty)
    }
}

/// A lister that reads when the listing begins (as the netlink one does on its own thread), from a script of answers.
final class SnapshotLister: InterfaceLister, @unchecked Sendable {
    private var answers: [[String]]
    private(set) var listings = 0
    init(_ answers: [[String]]) { self.answers = answers }

    func interfaces(netns: String) throws(CNIError) -> [String] {
        listings += 1
        return answers.count > 1 ? answers.removeFirst() : (answers.first ?? [])
    }

    func beginListing(netns: String) -> InterfaceListing {
        let names = Result { () throws(CNIError) in try interfaces(netns: netns) }
        return InterfaceListing { names }
    }
}

@Suite struct NetnsListingTests {
    @Test func aStaleAttachmentTornDownBeforeADDIsNotMistakenForExistingLinks() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b")])
        // ADD 1 sees an empty pod. ADD 2 (same container, no DEL between) first sees the links ADD 1 made; after the
        // stale attachment's teardown the pod is empty again.
        let lister = SnapshotLister([["lo"], ["lo", "eth0", "net1"], ["lo"]])
        func add() throws -> JSON {
            try Plexus(config: cfg, invocation: try invocation("ADD"), executor: exec, interfaceLister: lister,
                       logger: Logger(level: .panic, toStderr: false), sleep: { _ in }).add()
        }
        _ = try add()
        _ = try add()
        #expect(lister.listings == 3)
        #expect(exec.calls.filter { $0.command == "ADD" }.map(\.ifname) == ["eth0", "net1", "eth0", "net1"])
        #expect(exec.live.count == 2)
    }
}

/// Temp files of writes that died before their rename (a SIGKILL between staging the plan and committing it).
@Suite struct AbandonedTemporariesTests {
    /// Far above any pid_max, so never a live process.
    static let deadPid = "999999999"

    @Test func onlyRegularTempFilesOfDeadProcessesAreRemoved() throws {
        let dir = TempDir()
        let keep = ["record", ".record.tmp.\(getpid())", ".record.quarantined.\(Self.deadPid).12345", ".record.tmp.",
                    ".record.tmp.12x", ".notes"]
        for name in keep + [".record.tmp.\(Self.deadPid)", ".other.tmp.\(Self.deadPid)"] {
            try FileSystem.writeAtomically(dir.path + "/" + name, Array("x".utf8))
        }
        #expect(mkdir(dir.path + "/.dir.tmp.\(Self.deadPid)", 0o700) == 0)
        #expect(symlink("/etc/passwd", dir.path + "/.link.tmp.\(Self.deadPid)") == 0)
        let removed = FileSystem.removeAbandonedTemporaries(in: dir.path)
        #expect(removed.sorted() == [".other.tmp.\(Self.deadPid)", ".record.tmp.\(Self.deadPid)"])
        #expect(Set(dir.files("")) == Set(keep + [".dir.tmp.\(Self.deadPid)", ".link.tmp.\(Self.deadPid)"]))
        #expect(FileSystem.exists("/etc/passwd"))
    }

    @Test func gcRemovesTheTempFilesOfADeadADD() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a")])
        _ = try plexus(cfg, try invocation("ADD", cid: "c1"), exec).add()
        // An ADD killed after staging its plan, and a result write killed before its rename.
        let planTemp = dir.path + "/cache/attachments/.pxnet-c2-eth0.tmp.\(Self.deadPid)"
        let resultTemp = dir.path + "/cache/results/.a-c2-eth0.tmp.\(Self.deadPid)"
        try FileSystem.writeAtomically(planTemp, Array("{}".utf8))
        try FileSystem.writeAtomically(resultTemp, Array("{}".utf8))
        let gcText = #"{"cniVersion":"1.1.0","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","confDir":"\#(dir.path)/conf","binDir":"/fake","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],"delegates":[\#(net("a", version: "1.1.0"))]}"#
        try plexus(try PlexusConfig(bytes: Array(gcText.utf8)), try invocation("GC"), exec).gc()
        #expect(!FileSystem.exists(planTemp))
        #expect(!FileSystem.exists(resultTemp))
        // The live attachment is untouched.
        #expect(dir.files("cache/attachments") == ["pxnet-c1-eth0"])
        #expect(exec.live == ["a/c1/eth0"])
    }
}
