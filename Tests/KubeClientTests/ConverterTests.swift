import CNISpec
import SystemKit
import Testing
@testable import KubeClient

/// The `plexus-kubeconfig` YAML → JSON converter, run as the built executable (next to the test binary in the
/// scratch path's debug directory).
@Suite struct ConverterTests {
    static let searchPaths = [TestAPIServer.repoRoot + "/.build-kube/debug", TestAPIServer.repoRoot + "/.build/debug"]

    func converter() throws -> String {
        try #require(KubeConfig.findConverter(searchPaths: Self.searchPaths),
                     "plexus-kubeconfig must be built (swift build --build-tests builds it)")
    }

    func run(_ yaml: String) throws -> ProcessOutput {
        let dir = makeTempDir("conv")
        defer { removeTree(dir) }
        writeFile(dir + "/kc.yaml", yaml)
        let exe = try converter()
        return try Subprocess.run(path: exe, arguments: [exe, dir + "/kc.yaml"], environment: [], stdin: [],
                                  timeoutNanoseconds: 20_000_000_000)
    }

    @Test func convertsTheWholeDocumentWithYAMLTypes() throws {
        let out = try run("""
            apiVersion: v1
            kind: Config
            current-context: multus
            clusters:
            - name: local
              cluster: &c
                server: "https://127.0.0.1:6443"
                insecure-skip-tls-verify: false
                certificate-authority-data: LS0tLS1CRUdJTg==
            - name: copy
              cluster:
                <<: *c
                server: https://copy
                insecure-skip-tls-verify: true
            contexts:
            - {name: multus, context: {cluster: local, user: multus}}
            users:
            - name: multus
              user:
                token: abc.def
                n: 0x1F
                f: 1.50
                none: ~
                'yes': yes
                multi: |
                  line1
                  line2
            preferences: {}
            """)
        #expect(out.exitStatus == 0, "\(String(decoding: out.stderr, as: UTF8.self))")
        let json = try JSON.parse(out.stdout)
        #expect(json.objectValue?.keys == ["apiVersion", "kind", "current-context", "clusters", "contexts", "users",
                                           "preferences"])
        let clusters = json["clusters"]?.arrayValue ?? []
        #expect(clusters.first?["cluster"]?["insecure-skip-tls-verify"] == .bool(false))
        #expect(clusters.first?["cluster"]?["certificate-authority-data"]?.stringValue == "LS0tLS1CRUdJTg==")
        #expect(clusters.last?["cluster"]?["server"]?.stringValue == "https://copy")
        #expect(clusters.last?["cluster"]?["insecure-skip-tls-verify"] == .bool(true))
        let user = json["users"]?.arrayValue?.first?["user"]
        #expect(user?["token"]?.stringValue == "abc.def")
        #expect(user?["n"] == .number("31"))
        #expect(user?["f"] == .number("1.50"))
        #expect(user?["none"] == .null)
        #expect(user?["yes"] == .bool(true))
        #expect(user?["multi"]?.stringValue == "line1\nline2\n")
        #expect(json["preferences"] == .object(JSONObject()))

        // And the resolver accepts it.
        let cfg = try KubeConfig.resolve(document: json, path: "/x/kc.yaml")
        #expect(cfg.server == "https://127.0.0.1:6443")
        #expect(cfg.token == "abc.def")
        #expect(cfg.certificateAuthority == .data(Array("-----BEGIN".utf8)))
    }

    @Test func errorsGivePositionsButNeverContent() throws {
        let out = try run("users:\n- name: u\n  user:\n    token: supersecret-value: [\n")
        #expect(out.exitStatus == 1)
        let err = String(decoding: out.stderr, as: UTF8.self)
        #expect(err.contains("line "), "\(err)")
        #expect(!err.contains("supersecret"))
        #expect(out.stdout.isEmpty)
    }

    @Test func missingFileAndUsage() throws {
        let exe = try converter()
        let r1 = try Subprocess.run(path: exe, arguments: [exe, "/nonexistent/kc"], environment: [], stdin: [],
                                    timeoutNanoseconds: 20_000_000_000)
        #expect(r1.exitStatus == 1)
        #expect(String(decoding: r1.stderr, as: UTF8.self).contains("/nonexistent/kc"))
        let r2 = try Subprocess.run(path: exe, arguments: [exe], environment: [], stdin: [],
                                    timeoutNanoseconds: 20_000_000_000)
        #expect(r2.exitStatus == 1)
    }

    @Test func loadRunsTheConverterForYAML() throws {
        _ = try converter()
        let dir = makeTempDir("convload")
        defer { removeTree(dir) }
        writeFile(dir + "/kc", """
            clusters: [{name: k, cluster: {server: "https://k:6443", certificate-authority: pki/ca.crt}}]
            users: [{name: u, user: {tokenFile: token}}]
            contexts:
            - name: a
              context: {cluster: k, user: u}
            - name: b
              context: {cluster: k}
            current-context: a
            """)
        let a = try KubeConfig.load(kubeconfigPath: dir + "/kc", converterSearchPaths: Self.searchPaths)
        #expect(a.server == "https://k:6443")
        #expect(a.certificateAuthority == .file(dir + "/pki/ca.crt"))
        #expect(a.tokenFile == dir + "/token")
        let b = try KubeConfig.load(kubeconfigPath: dir + "/kc", context: "b", converterSearchPaths: Self.searchPaths)
        #expect(b.tokenFile == nil)
        #expect(b.contextName == "b")
    }
}

@Suite struct LinkageTests {
    /// The binary must not link libcurl (it is dlopen()ed on the first API request only).
    @Test func libcurlIsNotANeededLibrary() throws {
        guard FileSystem.exists("/usr/bin/readelf"), let exe = ProcessEnvironment.executablePath() else { return }
        let out = try Subprocess.run(path: "/usr/bin/readelf", arguments: ["readelf", "-d", exe], environment: [],
                                     stdin: [], timeoutNanoseconds: 20_000_000_000)
        let text = String(decoding: out.stdout, as: UTF8.self)
        #expect(text.contains("NEEDED"), "readelf output: \(text.prefix(200))")
        #expect(!text.contains("libcurl"))
    }
}

/// The converted-kubeconfig cache that keeps the converter off the ADD path while the YAML is unchanged.
@Suite struct ConversionCacheTests {
    func yaml(_ server: String) -> String {
        """
        apiVersion: v1
        kind: Config
        current-context: c
        clusters:
        - name: k
          cluster:
            server: \(server)
            insecure-skip-tls-verify: true
        users:
        - name: u
          user:
            token: abc
        contexts:
        - name: c
          context: {cluster: k, user: u}
        """
    }

    @Test func reusesTheConversionUntilTheFileChanges() throws {
        let dir = makeTempDir("convcache")
        defer { removeTree(dir) }
        let kc = dir + "/kc.yaml"
        writeFile(kc, yaml("https://first:6443"))
        let first = try KubeConfig.load(kubeconfigPath: kc, converterSearchPaths: ConverterTests.searchPaths,
                                        conversionCacheDir: dir + "/cache")
        #expect(first.server == "https://first:6443")
        let files = try FileSystem.list(dir + "/cache")
        #expect(files.count == 1)
        let cacheFile = dir + "/cache/" + (files.first ?? "")
        // Prove the second load reads the cache: doctor the cached document.
        let cached = try FileSystem.readString(cacheFile).replacingFirst("https://first:6443", with: "https://from-cache:6443")
        try FileSystem.writeAtomically(cacheFile, Array(cached.utf8))
        let second = try KubeConfig.load(kubeconfigPath: kc, converterSearchPaths: ConverterTests.searchPaths,
                                         conversionCacheDir: dir + "/cache")
        #expect(second.server == "https://from-cache:6443")
        // A changed kubeconfig is converted again, and the cache stays one file.
        writeFile(kc, yaml("https://second:6443"))
        let third = try KubeConfig.load(kubeconfigPath: kc, converterSearchPaths: ConverterTests.searchPaths,
                                        conversionCacheDir: dir + "/cache")
        #expect(third.server == "https://second:6443")
        #expect(try FileSystem.list(dir + "/cache").count == 1)
        // A corrupt cache file is ignored.
        try FileSystem.writeAtomically(cacheFile, Array("{broken".utf8))
        let fourth = try KubeConfig.load(kubeconfigPath: kc, converterSearchPaths: ConverterTests.searchPaths,
                                         conversionCacheDir: dir + "/cache")
        #expect(fourth.server == "https://second:6443")
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let r = range(of: target) else { return self }
        return replacingCharacters(in: r, with: replacement)
    }
}
