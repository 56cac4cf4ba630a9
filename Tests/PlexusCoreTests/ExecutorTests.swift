import CNIInvoke
import CNISpec
import SystemKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real posix_spawn executor against small shell-script plugins (unprivileged).
@Suite struct ProcessExecutorTests {
    func script(_ dir: TempDir, _ name: String, _ body: String) throws -> String {
        let path = dir.path + "/" + name
        try FileSystem.writeAtomically(path, Array("#!/bin/sh\n\(body)\n".utf8), mode: 0o755)
        return path
    }

    func request(_ path: String, stdin: String = #"{"cniVersion":"1.0.0","name":"n","type":"x"}"#) -> ExecRequest {
        ExecRequest(pluginPath: path, command: "ADD", containerID: "c1", netns: "/ns", ifname: "net1",
                    cniArgs: "A=1;B=2", cniPath: "/a:/b", stdin: Array(stdin.utf8))
    }

    @Test func passesEnvironmentAndStdinAndReturnsStdout() throws {
        let dir = TempDir()
        let p = try script(dir, "echoenv", #"read -r line; echo "$CNI_COMMAND|$CNI_CONTAINERID|$CNI_NETNS|$CNI_IFNAME|$CNI_ARGS|$CNI_PATH|$line|$OUTER""#)
        let exec = ProcessPluginExecutor(baseEnvironment: ["OUTER=kept", "CNI_COMMAND=LEAKED", "PATH=/usr/bin:/bin"], timeoutSeconds: 10)
        let out = String(decoding: try exec.execute(request(p)), as: UTF8.self)
        #expect(out == #"ADD|c1|/ns|net1|A=1;B=2|/a:/b|{"cniVersion":"1.0.0","name":"n","type":"x"}|kept"# + "\n")
    }

    @Test func deadlineKillsAHangingPlugin() throws {
        let dir = TempDir()
        let p = try script(dir, "hang", "exec sleep 30")
        let exec = ProcessPluginExecutor(baseEnvironment: ["PATH=/usr/bin:/bin"], timeoutSeconds: 0.3)
        let start = Clock.monotonicNanoseconds()
        do {
            _ = try exec.execute(request(p))
            Issue.record("hanging plugin returned")
        } catch {
            #expect(error.code == .tryAgainLater)
            #expect(error.msg.contains("timed out"))
        }
        #expect(Clock.monotonicNanoseconds() - start < 5_000_000_000)
    }

    @Test func pluginErrorJSONIsDecoded() throws {
        let dir = TempDir()
        let p = try script(dir, "fail", #"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"try later"}'; exit 1"#)
        let exec = ProcessPluginExecutor(baseEnvironment: [], timeoutSeconds: 10)
        do {
            _ = try exec.execute(request(p))
            Issue.record("failing plugin succeeded")
        } catch {
            #expect(error == CNIError(.tryAgainLater, "busy", details: "try later"))
        }
    }

    @Test func stderrIsSurfacedWhenStdoutIsEmpty() throws {
        let dir = TempDir()
        let p = try script(dir, "crash", "echo 'panic: something broke' >&2; exit 2")
        let exec = ProcessPluginExecutor(baseEnvironment: [], timeoutSeconds: 10)
        do {
            _ = try exec.execute(request(p))
            Issue.record("crashing plugin succeeded")
        } catch {
            #expect(error.msg.contains("panic: something broke"))
            #expect(error.msg.contains("exit status 2"))
        }
    }

    @Test func largeStdinAndStdoutDoNotDeadlock() throws {
        let dir = TempDir()
        let p = try script(dir, "cat", "exec cat")
        let exec = ProcessPluginExecutor(baseEnvironment: ["PATH=/usr/bin:/bin"], timeoutSeconds: 10)
        let big = String(repeating: "x", count: 1 << 20)
        let out = try exec.execute(request(p, stdin: big))
        #expect(out.count == big.utf8.count)
    }

    @Test func findSearchesInOrderAndRejectsPaths() throws {
        let dir = TempDir()
        _ = try script(dir, "plug", "exit 0")
        let exec = ProcessPluginExecutor(baseEnvironment: [], timeoutSeconds: 10)
        #expect(try exec.find("plug", in: ["/nonexistent", dir.path]) == dir.path + "/plug")
        #expect(throws: CNIError.self) { try exec.find("../plug", in: [dir.path]) }
        #expect(throws: CNIError.self) { try exec.find("absent", in: [dir.path]) }
    }
}
