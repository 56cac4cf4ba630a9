import Testing
@testable import CNISpec

@Suite struct VersionTests {
    @Test(arguments: [
        ("1.1.0", "1.1.0"), ("1.1", "1.1.0"), ("1", "1.0.0"), ("", "0.1.0"), ("0.3.1", "0.3.1"), ("1.10.0", "1.10.0"),
    ])
    func parses(_ text: String, _ expected: String) {
        #expect(CNIVersion(text)?.description == expected)
    }

    @Test(arguments: ["v1.0.0", "1.1.0.0", "1.x", "1..0", "-1", " 1"])
    func rejects(_ text: String) { #expect(CNIVersion(text) == nil) }

    @Test func comparesNumerically() throws {
        #expect(try #require(CNIVersion("1.10.0")) > #require(CNIVersion("1.9.0")))
        #expect(try #require(CNIVersion("1.1.0")) == #require(CNIVersion("1.1")))
    }

    @Test func selectsHighestSupportedLikeLibcni() throws {
        #expect(try CNIVersion.select(cniVersion: "1.0.0", cniVersions: ["0.4.0", "1.1.0", "2.0.0"]).get() == "1.1.0")
        #expect(try CNIVersion.select(cniVersion: "9.9.9", cniVersions: nil).get() == "9.9.9")
        #expect(try CNIVersion.select(cniVersion: "0.3.1", cniVersions: ["0.2.0"]).get() == "0.3.1")
        #expect(throws: CNIError.self) { try CNIVersion.select(cniVersion: "1.0.0", cniVersions: ["bogus"]).get() }
    }
}

@Suite struct ValidationTests {
    @Test(arguments: ["_abc", "-x", "a b", "a/b", "a:b", "é1", ""])
    func invalidContainerIDs(_ id: String) {
        #expect(throws: CNIError.self) { try CNIValidation.validateContainerID(id) }
        do { try CNIValidation.validateContainerID(id) } catch { #expect(error.code == .invalidEnvironment) }
    }

    @Test(arguments: ["x..y", "A.b-c_d", "abc", "0123456789abcdef"])
    func validContainerIDs(_ id: String) throws { try CNIValidation.validateContainerID(id) }

    @Test(arguments: [
        ("", "interface name is empty"), ("1234567890123456", "interface name is too long"), (".", "interface name is . or .."),
        ("..", "interface name is . or .."), ("a/b", "interface name contains / or : or whitespace characters"),
        ("a:b", "interface name contains / or : or whitespace characters"), ("a b", "interface name contains / or : or whitespace characters"),
        ("a\tb", "interface name contains / or : or whitespace characters"),
    ])
    func invalidInterfaceNames(_ name: String, _ msg: String) {
        do {
            try CNIValidation.validateInterfaceName(name)
            Issue.record("accepted \(name)")
        } catch {
            #expect(error.code == .invalidEnvironment)
            #expect(error.msg == msg)
        }
    }

    @Test(arguments: ["123456789012345", "eth0", "ä", "net-1@x"])
    func validInterfaceNames(_ name: String) throws { try CNIValidation.validateInterfaceName(name) }

    @Test(arguments: ["../bridge", "/usr/bin/x", "a/b", "..", "a\\b", ""])
    func pluginTypesCannotBePaths(_ type: String) {
        #expect(throws: CNIError.self) { try CNIValidation.validatePluginType(type) }
    }

    @Test func cniArgsParseInAnyOrder() throws {
        let a = try CNIArgs(parsing: "K8S_POD_NAME=p;IgnoreUnknown=1;;K8S_POD_NAMESPACE=ns;EMPTY=")
        #expect(a["K8S_POD_NAME"] == "p")
        #expect(a["K8S_POD_NAMESPACE"] == "ns")
        #expect(a["EMPTY"] == "")
        #expect(a.encoded == "K8S_POD_NAME=p;IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;EMPTY=")
        #expect(CNIArgs(json: a.json) == a)
        #expect(throws: CNIError.self) { try CNIArgs(parsing: "novalue") }
    }

    @Test func errorJSONShape() {
        let e = CNIError(.invalidNetworkConfig, "Invalid Configuration", details: "details")
        #expect(e.json(cniVersion: "1.1.0").serialized() == #"{"cniVersion":"1.1.0","code":7,"msg":"Invalid Configuration","details":"details"}"#)
        #expect(CNIError.decode(e.json(cniVersion: nil)) == e)
    }
}
