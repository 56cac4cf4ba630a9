import CNISpec
import Testing
@testable import KubeClient

private func configError(_ body: () throws(KubeError) -> KubeConfig) -> KubeError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

private let kubeconfigJSON = #"""
{
  "apiVersion": "v1", "kind": "Config",
  "current-context": "multus",
  "clusters": [
    {"name": "other", "cluster": {"server": "https://other:6443", "insecure-skip-tls-verify": true}},
    {"name": "main", "cluster": {"server": "https://10.96.0.1:443/", "certificate-authority": "pki/ca.crt"}}
  ],
  "users": [
    {"name": "multus", "user": {"tokenFile": "token"}},
    {"name": "admin", "user": {"token": "admintoken-xyz", "client-certificate-data": "Q0VSVA==",
                               "client-key-data": "S0VZ"}},
    {"name": "cert", "user": {"client-certificate": "/abs/client.crt", "client-key": "client.key"}}
  ],
  "contexts": [
    {"name": "multus", "context": {"cluster": "main", "user": "multus", "namespace": "kube-system"}},
    {"name": "admin", "context": {"cluster": "main", "user": "admin"}},
    {"name": "insecure", "context": {"cluster": "other", "user": "cert"}},
    {"name": "broken", "context": {"cluster": "missing", "user": "multus"}}
  ]
}
"""#

@Suite struct KubeconfigResolutionTests {
    let path = "/etc/cni/net.d/plexus.d/plexus.kubeconfig"

    func resolve(_ text: String, context: String? = nil) throws(KubeError) -> KubeConfig {
        guard let doc = try? JSON.parse(text) else { fatalError("bad fixture") }
        return try KubeConfig.resolve(document: doc, path: path, context: context)
    }

    @Test func currentContextWithRelativePaths() throws {
        let c = try resolve(kubeconfigJSON)
        #expect(c.server == "https://10.96.0.1:443")
        #expect(c.certificateAuthority == .file("/etc/cni/net.d/plexus.d/pki/ca.crt"))
        #expect(c.tokenFile == "/etc/cni/net.d/plexus.d/token")
        #expect(c.token == nil)
        #expect(c.contextName == "multus")
        #expect(c.origin == path)
        #expect(!c.insecureSkipTLSVerify)
    }

    @Test func contextOverrideWithInlineData() throws {
        let c = try resolve(kubeconfigJSON, context: "admin")
        #expect(c.token == "admintoken-xyz")
        #expect(c.clientCertificate == .data(Array("CERT".utf8)))
        #expect(c.clientKey == .data(Array("KEY".utf8)))
        #expect(!c.description.contains("admintoken-xyz"))
    }

    @Test func insecureOnlyWhenExplicit() throws {
        let c = try resolve(kubeconfigJSON, context: "insecure")
        #expect(c.insecureSkipTLSVerify)
        #expect(c.certificateAuthority == nil)
        #expect(c.clientCertificate == .file("/abs/client.crt"))
        #expect(c.clientKey == .file("/etc/cni/net.d/plexus.d/client.key"))
    }

    @Test func certificateAuthorityDataWinsOverFile() throws {
        let text = #"""
        {"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k"}}],
         "clusters":[{"name":"k","cluster":{"server":"https://k","certificate-authority":"ca.crt",
                      "certificate-authority-data":"LS0tLS1CRUdJTg=="}}]}
        """#
        let c = try resolve(text)
        #expect(c.certificateAuthority == .data(Array("-----BEGIN".utf8)))
        #expect(c.token == nil && c.tokenFile == nil)
    }

    @Test(arguments: [
        ("broken", #"cluster "missing" not found in "clusters""#),
        ("nope", #"context "nope" not found in "contexts""#),
    ])
    func missingEntriesNameThePathAndKey(context: String, expected: String) {
        let e = configError { () throws(KubeError) -> KubeConfig in try resolve(kubeconfigJSON, context: context) }
        #expect(e?.kind == .config)
        #expect(e?.operation == "load kubeconfig \(path)")
        #expect(e?.detail?.contains(expected) == true, "\(String(describing: e))")
    }

    @Test(arguments: [
        (#"{"contexts":[]}"#, #"no "current-context""#),
        (#"{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k"}}],"clusters":[{"name":"k","cluster":{}}]}"#,
         #"cluster "k" has no "server""#),
        (#"{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}],"clusters":[{"name":"k","cluster":{"server":"https://k"}}]}"#,
         #""users" is missing"#),
        (#"{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}],"clusters":[{"name":"k","cluster":{"server":"https://k"}}],"users":[{"name":"u","user":{"exec":{"command":"aws"}}}]}"#,
         #"uses "exec" credentials"#),
        (#"{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k"}}],"clusters":[{"name":"k","cluster":{"server":"https://k","certificate-authority-data":"!!"}}]}"#,
         #""certificate-authority-data" is not valid base64"#),
        (#"{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k"}}],"clusters":[{"name":"k","cluster":{"server":"https://k","certificate-authority":"ca","insecure-skip-tls-verify":true}}]}"#,
         "both a certificate authority and insecure-skip-tls-verify"),
        (#"{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k"}}],"clusters":[{"name":"k","cluster":{"server":"ftp://k"}}]}"#,
         "must be an http(s) URL"),
        (#"["not","a","mapping"]"#, "not a mapping"),
    ])
    func invalidDocuments(text: String, expected: String) {
        let e = configError { () throws(KubeError) -> KubeConfig in try resolve(text) }
        #expect(e?.kind == .config)
        #expect(e?.description.contains(path) == true)
        #expect(e?.detail?.contains(expected) == true, "\(String(describing: e))")
    }

    @Test func loadsJSONFileWithoutConverter() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/kubeconfig", kubeconfigJSON)
        // No search paths and a JSON file: the converter is never needed.
        let c = try KubeConfig.load(kubeconfigPath: dir + "/kubeconfig")
        #expect(c.tokenFile == dir + "/token")
        #expect(c.certificateAuthority == .file(dir + "/pki/ca.crt"))
    }

    @Test func missingKubeconfigFile() {
        let e = configError { () throws(KubeError) -> KubeConfig in try KubeConfig.load(kubeconfigPath: "/nonexistent/kc") }
        #expect(e?.kind == .config)
        #expect(e?.description.contains("/nonexistent/kc") == true)
    }

    @Test func yamlWithoutConverterIsAClearError() throws {
        // Only meaningful when the converter is not next to the test binary; otherwise the YAML path is covered
        // by ConverterTests.
        guard KubeConfig.findConverter() == nil else { return }
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/kc.yaml", "apiVersion: v1\nkind: Config\n")
        let e = configError { () throws(KubeError) -> KubeConfig in try KubeConfig.load(kubeconfigPath: dir + "/kc.yaml") }
        #expect(e?.detail?.contains("plexus-kubeconfig") == true)
    }
}

@Suite struct InClusterTests {
    @Test func inClusterConfiguration() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/token", "sa-token\n")
        writeFile(dir + "/ca.crt", "PEM")
        let env = ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"]
        let c = try KubeConfig.inCluster(environment: env, tokenPath: dir + "/token", caPath: dir + "/ca.crt")
        #expect(c.server == "https://10.96.0.1:443")
        #expect(c.tokenFile == dir + "/token")
        #expect(c.token == nil)  // read per invocation, not at load
        #expect(c.certificateAuthority == .file(dir + "/ca.crt"))
        #expect(c.origin == "in-cluster")

        let v6 = try KubeConfig.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"],
                                          tokenPath: dir + "/token", caPath: dir + "/ca.crt")
        #expect(v6.server == "https://[fd00::1]:443")
    }

    @Test func inClusterErrors() {
        let e1 = configError { () throws(KubeError) -> KubeConfig in try KubeConfig.inCluster(environment: [:]) }
        #expect(e1?.kind == .config)
        #expect(e1?.detail?.contains("KUBERNETES_SERVICE_HOST") == true)
        let e2 = configError { () throws(KubeError) -> KubeConfig in
            try KubeConfig.inCluster(environment: ["KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"],
                                     tokenPath: "/nonexistent/token", caPath: "/nonexistent/ca")
        }
        #expect(e2?.detail?.contains("/nonexistent/token") == true)
    }
}

@Suite struct Base64Tests {
    @Test func roundTrip() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let text = Base64.encode(bytes)
            #expect(Base64.decode(text) == bytes)
        }
        #expect(Base64.decode("aGVs\nbG8=") == Array("hello".utf8))
        #expect(Base64.decode("aGVsbG8") == Array("hello".utf8))
        #expect(Base64.decode("a") == nil)
        #expect(Base64.decode("aGVsbG8=x") == nil)
        #expect(Base64.decode("a*b=") == nil)
    }
}
