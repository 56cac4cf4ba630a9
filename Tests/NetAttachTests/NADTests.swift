import CNISpec
import Testing
@testable import NetAttach

/// Wraps `config` (a JSON value: string, null, or absent when nil) in a NAD object.
func nadJSON(name: String = "macvlan-conf", namespace: String = "net", config: JSON?,
             annotations: String = "{}") throws -> JSON {
    var spec = JSONObject()
    if let config { spec["config"] = config }
    var meta = JSONObject()
    meta["name"] = .string(name)
    meta["namespace"] = .string(namespace)
    meta["annotations"] = try JSON.parse(annotations)
    var obj = JSONObject()
    obj["apiVersion"] = .string("k8s.cni.cncf.io/v1")
    obj["kind"] = .string("NetworkAttachmentDefinition")
    obj["metadata"] = .object(meta)
    obj["spec"] = .object(spec)
    return .object(obj)
}

@Suite struct NADConversionTests {
    // (spec.config, expected delegate config, kind)
    static let inline: [(String, String, DelegateConfigKind)] = [
        // name injected (appended) when missing, everything else kept in order, numbers literal
        (#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mtu":1500,"x":1.50,"ipam":{"type":"static"}}"#,
         #"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mtu":1500,"x":1.50,"ipam":{"type":"static"},"name":"macvlan-conf"}"#,
         .conf),
        // empty and null names are replaced in place
        (#"{"cniVersion":"1.0.0","name":"","type":"macvlan"}"#,
         #"{"cniVersion":"1.0.0","name":"macvlan-conf","type":"macvlan"}"#, .conf),
        (#"{"name":null,"type":"macvlan"}"#, #"{"name":"macvlan-conf","type":"macvlan"}"#, .conf),
        // an existing name is kept even when it differs from the NAD name (NPWG §3.4.3 "should" match)
        (#"{"name":"other","type":"macvlan"}"#, #"{"name":"other","type":"macvlan"}"#, .conf),
        // conflist with plugin-specific keys preserved losslessly
        (#"{"cniVersion":"1.0.0","plugins":[{"type":"calico","datastore_type":"kubernetes","kubeconfig":"/k"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
         #"{"cniVersion":"1.0.0","plugins":[{"type":"calico","datastore_type":"kubernetes","kubeconfig":"/k"},{"type":"portmap","capabilities":{"portMappings":true}}],"name":"macvlan-conf"}"#,
         .confList),
        // type wins over plugins (Multus)
        (#"{"type":"bridge","plugins":[]}"#, #"{"type":"bridge","plugins":[],"name":"macvlan-conf"}"#, .conf),
    ]

    @Test(arguments: inline)
    func convertsInlineConfig(config: String, expected: String, kind: DelegateConfigKind) throws {
        let nad = try NetworkAttachmentDefinition(json: try nadJSON(config: .string(config)))
        let delegate = try nad.delegateConfig()
        #expect(delegate.network == "net/macvlan-conf")
        guard case .inline(let obj, let k) = delegate.source else {
            Issue.record("expected inline config, got \(delegate.source)")
            return
        }
        #expect(obj.serializedForTest == expected)
        #expect(k == kind)
        #expect(delegate.resourceName == nil)
    }

    @Test(arguments: [nil, JSON.null, .string(""), .string("  \n")])
    func missingConfigLoadsFromConfDir(config: JSON?) throws {
        let nad = try NetworkAttachmentDefinition(json: try nadJSON(config: config))
        #expect(try nad.delegateConfig().source == .loadFromConfDir(networkName: "macvlan-conf"))
    }

    @Test func specAbsentLoadsFromConfDir() throws {
        let json = try JSON.parse(#"{"metadata":{"name":"calico","namespace":"kube-system"}}"#)
        let d = try NetworkAttachmentDefinition(json: json).delegateConfig()
        #expect(d == DelegateConfig(network: "kube-system/calico", source: .loadFromConfDir(networkName: "calico"),
                                    resourceName: nil))
    }

    @Test func resourceNameIsCarried() throws {
        let json = try nadJSON(
            config: .string(#"{"type":"sriov"}"#),
            annotations: #"{"k8s.v1.cni.cncf.io/resourceName":"intel.com/sriov_netdevice","other":"x"}"#)
        #expect(try NetworkAttachmentDefinition(json: json).delegateConfig().resourceName == "intel.com/sriov_netdevice")
        let fromFile = try nadJSON(config: nil, annotations: #"{"k8s.v1.cni.cncf.io/resourceName":"r/x"}"#)
        let d = try NetworkAttachmentDefinition(json: fromFile).delegateConfig()
        #expect(d.resourceName == "r/x")
        #expect(d.source == .loadFromConfDir(networkName: "macvlan-conf"))
    }

    // (spec.config, fragment of the reason)
    static let invalid: [(String, String)] = [
        (#"{"type":"../../bin/sh"}"#, "path traversal"),
        (#"{"type":"/usr/bin/evil"}"#, "path traversal"),
        (#"{"type":"a\\b"}"#, "path traversal"),
        (#"{"type":"x..y"}"#, "path traversal"),
        (#"{"plugins":[{"type":"bridge"},{"type":"../x"}]}"#, "plugins[1].type"),
        (#"{"plugins":[]}"#, "\"plugins\" is empty"),
        (#"{"plugins":[{"type":""}]}"#, "plugins[0] has no \"type\""),
        (#"{"plugins":[{"name":"x"}]}"#, "plugins[0] has no \"type\""),
        (#"{"plugins":["bridge"]}"#, "plugins[0] is a string"),
        (#"{"plugins":{"type":"x"}}"#, "not a list"),
        (#"{"cniVersion":"1.0.0"}"#, "neither \"type\" nor \"plugins\""),
        (#"{"type":5}"#, "type is a number"),
        (#"{"name":7,"type":"x"}"#, "\"name\" is a number"),
        (#"["type"]"#, "must be a JSON object"),
        (#"{"type":"x""#, "not valid JSON"),
    ]

    @Test(arguments: invalid)
    func rejects(config: String, fragment: String) throws {
        let nad = try NetworkAttachmentDefinition(json: try nadJSON(config: .string(config)))
        let error = #expect(throws: DelegateConfigError.self) { _ = try nad.delegateConfig() }
        let e = try #require(error)
        #expect(e.network == "net/macvlan-conf")
        #expect(e.description.contains("net/macvlan-conf"))
        #expect(e.reason.contains(fragment), "\(e.reason)")
    }

    static let badObjects: [String] = [
        #"[]"#,
        #"{"spec":{"config":"{}"}}"#,
        #"{"metadata":{"name":""}}"#,
        #"{"metadata":{"name":"a"},"spec":{"config":{"type":"x"}}}"#,
        #"{"metadata":{"name":"a"},"spec":"x"}"#,
    ]

    @Test(arguments: badObjects)
    func rejectsMalformedObject(text: String) throws {
        #expect(throws: DelegateConfigError.self) { _ = try NetworkAttachmentDefinition(json: try JSON.parse(text)) }
    }

    @Test func validatesFileConfigs() throws {
        #expect(try NetworkAttachmentDefinition.validateDelegateConfig(try object(#"{"type":"bridge"}"#), network: "f")
                == .conf)
        #expect(throws: DelegateConfigError(network: "f", reason: "type \"../x\" is not a plain plugin name (path traversal)")) {
            _ = try NetworkAttachmentDefinition.validateDelegateConfig(try object(#"{"type":"../x"}"#), network: "f")
        }
    }
}
