import CNISpec
import Testing
@testable import NetAttach

func object(_ text: String) throws -> JSONObject {
    try #require(try JSON.parse(text).objectValue)
}

@Suite struct CapabilityArgsTests {
    @Test func argsFromElement() throws {
        let elements = try NetworkSelection.parse("""
            [{"name":"a","ips":["10.1.1.5/24"],"mac":"02:00:00:00:00:01","infiniband-guid":"00:11:22:33:44:55:66:77",
              "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"TCP"},
                              {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"10.0.0.1"}],
              "bandwidth":{"egressRate":100,"egressBurst":200},"deviceID":"0000:03:00.1","cni-args":{"x":1}}]
            """, defaultNamespace: "p")
        let args = CapabilityArgs.from(try #require(elements.first))
        #expect(args.serializedForTest == """
            {"ips":["10.1.1.5/24"],"mac":"02:00:00:00:00:01","infinibandGUID":"00:11:22:33:44:55:66:77",\
            "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},\
            {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"10.0.0.1"}],\
            "bandwidth":{"egressRate":100,"egressBurst":200},"deviceID":"0000:03:00.1"}
            """)
    }

    @Test func noRequestsNoArgs() throws {
        let e = try #require(try NetworkSelection.parse("a", defaultNamespace: "p").first)
        #expect(CapabilityArgs.from(e).isEmpty)
    }

    static let conflist = """
        {"cniVersion":"1.0.0","name":"n","plugins":[
          {"type":"macvlan","capabilities":{"ips":true,"mac":false}},
          {"type":"tuning","capabilities":{"mac":true}},
          {"type":"portmap","capabilities":{"portMappings":"true"}}]}
        """

    // (config, capability, declared?)
    static let declares: [(String, String, Bool)] = [
        (conflist, "ips", true),
        (conflist, "mac", true),  // false on one plugin, true on another
        (conflist, "portMappings", false),  // the string "true" is not a declaration
        (conflist, "bandwidth", false),
        (#"{"type":"bridge","capabilities":{"bandwidth":true}}"#, "bandwidth", true),
        (#"{"type":"bridge"}"#, "ips", false),
        (#"{"name":"x","plugins":[]}"#, "ips", false),
        (#"{"name":"x","plugins":"bad","capabilities":{"ips":true}}"#, "ips", false),
    ]

    @Test(arguments: declares)
    func declaration(config: String, capability: String, declared: Bool) throws {
        #expect(CapabilityArgs.declares(capability, in: try object(config)) == declared)
    }

    @Test func undeclaredRequired() throws {
        let args = try object(#"{"ips":["10.0.0.1"],"mac":"02:00:00:00:00:01","bandwidth":{},"deviceID":"x","infinibandGUID":"g"}"#)
        #expect(CapabilityArgs.undeclaredRequiredCapabilities(args, in: try object(Self.conflist))
                == ["bandwidth", "infinibandGUID"])
        #expect(CapabilityArgs.undeclaredRequiredCapabilities(JSONObject(), in: try object(Self.conflist)) == [])
        // deviceID is never required.
        #expect(CapabilityArgs.undeclaredRequiredCapabilities(try object(#"{"deviceID":"x"}"#),
                                                              in: try object(#"{"type":"sriov"}"#)) == [])
    }
}

@Suite struct CNIArgsMergeTests {
    // (config, cni-args, expected)
    static let cases: [(String, String, String)] = [
        // conf without args
        (#"{"type":"macvlan","master":"eth0"}"#, #"{"a":"1"}"#,
         #"{"type":"macvlan","master":"eth0","args":{"cni":{"a":"1"}}}"#),
        // annotation wins over the NAD, other keys are kept in order
        (#"{"type":"macvlan","args":{"labels":[1],"cni":{"a":"nad","b":"nad"}}}"#, #"{"a":"pod","c":true}"#,
         #"{"type":"macvlan","args":{"labels":[1],"cni":{"a":"pod","b":"nad","c":true}}}"#),
        // shallow merge: a nested object is replaced, not merged
        (#"{"type":"x","args":{"cni":{"o":{"k":1,"l":2}}}}"#, #"{"o":{"k":3}}"#,
         #"{"type":"x","args":{"cni":{"o":{"k":3}}}}"#),
        // every plugin of a conflist
        (#"{"name":"n","plugins":[{"type":"a"},{"type":"b","args":{"cni":{"z":0}}}]}"#, #"{"z":1}"#,
         #"{"name":"n","plugins":[{"type":"a","args":{"cni":{"z":1}}},{"type":"b","args":{"cni":{"z":1}}}]}"#),
        // empty cni-args: unchanged
        (#"{"type":"x","args":"weird"}"#, "{}", #"{"type":"x","args":"weird"}"#),
        // numbers stay literal
        (#"{"type":"x","n":1.50}"#, #"{"big":12345678901234567890}"#,
         #"{"type":"x","n":1.50,"args":{"cni":{"big":12345678901234567890}}}"#),
    ]

    @Test(arguments: cases)
    func merges(config: String, cniArgs: String, expected: String) throws {
        let merged = try SelectionCNIArgs.merge(try object(cniArgs), into: try object(config), network: "p/n")
        #expect(merged.serializedForTest == expected)
    }

    static let bad: [String] = [
        #"{"type":"x","args":"weird"}"#,
        #"{"type":"x","args":{"cni":[1]}}"#,
        #"{"plugins":{"type":"x"}}"#,
        #"{"plugins":[1]}"#,
    ]

    @Test(arguments: bad)
    func rejectsUnmergeable(config: String) throws {
        let error = #expect(throws: DelegateConfigError.self) {
            _ = try SelectionCNIArgs.merge(try object(#"{"a":1}"#), into: try object(config), network: "p/n")
        }
        #expect(try #require(error).network == "p/n")
    }
}
