import CNISpec
import Foundation
import SystemKit
@testable import KubeClient

/// The Python test API server (testenv/apiserver/server.py), started once per test process as a subprocess the
/// way testenv/lib/kubeapi.py does: `--state-dir D --port 0 --exit-with-parent <our pid> --preinstall-nad-crd`,
/// then wait for `D/port` and `GET /readyz`. Tokens are written to `D/tokens` before start (one per role).
/// The server exits on its own when this process goes away.
final class TestAPIServer: @unchecked Sendable {
    static let repoRoot: String = {
        var p = #filePath
        for _ in 0..<3 { p = FileSystem.directoryName(of: p) }
        return p
    }()
    static let script = repoRoot + "/testenv/apiserver/server.py"
    static var scriptPresent: Bool { FileSystem.exists(script) }

    /// The shared server, or why it could not start.
    static let shared: Result<TestAPIServer, StartError> = {
        do { return .success(try TestAPIServer()) } catch let e as StartError { return .failure(e) } catch {
            return .failure(StartError(message: "\(error)"))
        }
    }()

    struct StartError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// Removed when the test process exits (the server exits with us).
    nonisolated(unsafe) static var stateDirToRemove: String?

    let stateDir: String
    let port: Int
    var url: String { "https://127.0.0.1:\(port)" }
    var caPath: String { stateDir + "/pki/ca.crt" }
    var clientCertPath: String { stateDir + "/pki/client.crt" }
    var clientKeyPath: String { stateDir + "/pki/client.key" }
    let adminToken = "admin-" + TestAPIServer.randomHex()
    let multusToken = "multus-" + TestAPIServer.randomHex()
    let readonlyToken = "viewer-" + TestAPIServer.randomHex()
    private let process: Process

    private init() throws {
        guard TestAPIServer.scriptPresent else { throw StartError(message: "\(TestAPIServer.script) is absent") }
        stateDir = makeTempDir("apiserver")
        TestAPIServer.stateDirToRemove = stateDir
        atexit { if let d = TestAPIServer.stateDirToRemove { removeTree(d) } }
        writeFile(stateDir + "/tokens", "\(adminToken) admin admin\n"
            + "\(multusToken) system:serviceaccount:kube-system:multus multus\n"
            + "\(readonlyToken) viewer readonly\n")
        let log = stateDir + "/server.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", TestAPIServer.script, "--state-dir", stateDir, "--port", "0",
                       "--exit-with-parent", String(getpid()), "--preinstall-nad-crd"]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle(forWritingAtPath: log)
        p.standardError = FileHandle(forWritingAtPath: log)
        try p.run()
        process = p

        // PKI generation (openssl) takes a moment on the first start.
        let deadline = Clock.monotonicNanoseconds() + 60_000_000_000
        var port = 0
        while Clock.monotonicNanoseconds() < deadline {
            if !p.isRunning { break }
            if port == 0, let text = try? FileSystem.readString(stateDir + "/port"), let n = Int(text.trimmingSpaces) {
                port = n
            }
            if port != 0 {
                let t = CurlTransport(config: KubeConfig(server: "https://127.0.0.1:\(port)",
                                                         certificateAuthority: .file(stateDir + "/pki/ca.crt")))
                if let r = try? t.send(HTTPRequest(method: "GET", path: "/readyz", timeoutNanoseconds: 2_000_000_000)),
                   r.status == 200 {
                    self.port = port
                    return
                }
            }
            Clock.sleep(milliseconds: 50)
        }
        let logText = (try? FileSystem.readString(log)) ?? ""
        if p.isRunning { p.terminate() }
        throw StartError(message: "test API server did not become ready; log:\n\(logText.suffix(3000))")
    }

    static func randomHex() -> String {
        var g = SystemRandomNumberGenerator()
        return String(g.next() as UInt64, radix: 16) + String(g.next() as UInt64, radix: 16)
    }

    // MARK: Clients

    func config(token: String? = nil, tokenFile: String? = nil, caData: Bool = false) -> KubeConfig {
        let ca: PEMSource = caData ? .data(Array((try? FileSystem.read(caPath)) ?? [])) : .file(caPath)
        return KubeConfig(server: url, certificateAuthority: ca, token: token, tokenFile: tokenFile, origin: "test")
    }

    func client(_ config: KubeConfig, deadlineIn ns: Int64 = 20_000_000_000,
                policy: RetryPolicy = .default) -> (KubeHTTPClient, CurlTransport) {
        let t = CurlTransport(config: config, userAgent: "plexus-kubeclient-tests")
        let c = KubeHTTPClient(config: config, transport: t, deadline: Clock.monotonicNanoseconds() + ns,
                               retryPolicy: policy)
        return (c, t)
    }

    /// A raw admin request (test set-up), failing loudly on a transport error.
    @discardableResult
    func api(_ method: String, _ path: String, _ body: String? = nil, token: String? = nil,
             contentType: String = "application/json") throws -> HTTPResponse {
        let t = CurlTransport(config: config(token: nil))
        var headers = [HTTPHeader("Accept", "application/json")]
        if let tok = token ?? (path.hasPrefix("/_test/") ? nil : adminToken) {
            headers.append(HTTPHeader("Authorization", "Bearer " + tok))
        }
        if body != nil { headers.append(HTTPHeader("Content-Type", contentType)) }
        return try t.send(HTTPRequest(method: method, path: path, headers: headers, body: body.map { Array($0.utf8) }))
    }

    func createNamespace(_ ns: String) throws {
        let r = try api("POST", "/api/v1/namespaces", #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"\#(ns)"}}"#)
        guard r.status == 201 || r.status == 409 else { throw StartError(message: "create namespace: \(r.status)") }
    }

    func createPod(_ ns: String, _ name: String, uid: String, annotations: [String: String] = [:]) throws {
        try createNamespace(ns)
        var ann = JSONObject()
        for (k, v) in annotations.sorted(by: { $0.key < $1.key }) { ann[k] = .string(v) }
        let pod = JSON.object(JSONObject([
            ("apiVersion", .string("v1")), ("kind", .string("Pod")),
            ("metadata", .object(JSONObject([("name", .string(name)), ("namespace", .string(ns)),
                                             ("uid", .string(uid)), ("annotations", .object(ann))]))),
            ("spec", .object(JSONObject([("containers", .array([.object(JSONObject([
                ("name", .string("main")), ("image", .string("registry.k8s.io/pause:3.10"))]))]))]))),
        ]))
        let r = try api("POST", "/api/v1/namespaces/\(ns)/pods", pod.serialized())
        guard r.status == 201 else {
            throw StartError(message: "create pod: \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
    }

    func createNAD(_ ns: String, _ name: String, config: String) throws {
        try createNamespace(ns)
        let nad = JSON.object(JSONObject([
            ("apiVersion", .string("k8s.cni.cncf.io/v1")), ("kind", .string("NetworkAttachmentDefinition")),
            ("metadata", .object(JSONObject([("name", .string(name)), ("namespace", .string(ns))]))),
            ("spec", .object(JSONObject([("config", .string(config))]))),
        ]))
        let r = try api("POST", "/apis/k8s.cni.cncf.io/v1/namespaces/\(ns)/network-attachment-definitions",
                        nad.serialized())
        guard r.status == 201 else {
            throw StartError(message: "create NAD: \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
    }

    /// Adds a fault rule (see k8s-test-apiserver.md §6; server: POST /_test/faults).
    func inject(_ rule: String) throws {
        let r = try api("POST", "/_test/faults", rule)
        guard r.status == 201 else { throw StartError(message: "inject: \(r.status)") }
    }

    /// Logged requests whose path contains `pathPart` (and method, if given).
    func loggedRequests(method: String? = nil, pathContains pathPart: String) throws -> [JSON] {
        let r = try api("GET", "/_test/requests")
        let items = (try JSON.parse(r.body))["items"]?.arrayValue ?? []
        return items.filter {
            ($0["path"]?.stringValue?.contains(pathPart) ?? false) && (method == nil || $0["method"]?.stringValue == method)
        }
    }
}
