import CNISpec
@testable import PlexusInstall
import Testing

@Suite struct OptionsTests {
    func parse(_ args: [String], env: [String: String] = [:]) throws -> InstallOptions {
        try InstallOptions.parse(arguments: args, environment: env)
    }

    @Test func defaults() throws {
        let o = try parse([])
        #expect(o.command == .install)
        #expect(o.cniConfDir == "/etc/cni/net.d" && o.cniBinDir == "/opt/cni/bin" && o.hostRoot == "")
        #expect(o.configPath == "/etc/cni/net.d/00-plexus.conflist")
        #expect(o.resolvedKubeconfigPath == "/etc/cni/net.d/plexus.d/plexus.kubeconfig")
        #expect(o.manifestPath == "/etc/cni/net.d/plexus.d/install-manifest.json")
        #expect(o.tokenFile == "/var/run/secrets/kubernetes.io/serviceaccount/token")
        #expect(o.local("/etc/cni/net.d") == "/etc/cni/net.d")
    }

    @Test func flagsBothFormsAndCommand() throws {
        let o = try parse(["uninstall", "--host-root=/host", "--cni-conf-dir", "/etc/cni/net.d/", "--once",
                           "--binaries", "plexus, plexus-kubeconfig", "--interval-ms=250"])
        #expect(o.command == .uninstall)
        #expect(o.hostRoot == "/host" && o.cniConfDir == "/etc/cni/net.d" && o.once)
        #expect(o.binaries == ["plexus", "plexus-kubeconfig"] && o.intervalMilliseconds == 250)
        #expect(o.local("/opt/cni/bin") == "/host/opt/cni/bin")
        #expect(try parse(["--help"]).command == .help)
    }

    @Test func environmentAndFlagsOverrideIt() throws {
        let env = ["PLEXUS_CNI_BIN_DIR": "/var/lib/cni/bin", "PLEXUS_LOG_LEVEL": "info", "PLEXUS_ONCE": "true",
                   "PLEXUS_NAMESPACE_ISOLATION": "true", "PLEXUS_STATE_DIR": ""]
        let o = try parse(["--log-level", "debug"], env: env)
        #expect(o.cniBinDir == "/var/lib/cni/bin" && o.once)
        #expect(o.settings["logLevel"] == .string("debug"))
        #expect(o.settings["namespaceIsolation"] == .bool(true))
        #expect(o.stateDir == nil)
    }

    @Test func settingFlagsBecomeTypedValues() throws {
        let o = try parse(["--namespace-isolation=false", "--global-namespaces", "default,kube-public",
                           "--system-namespaces", "kube-system, ops", "--delegate-timeout-seconds", "12.5",
                           "--readiness-indicator-file", "/run/ready", "--multus-namespace", "plexus"])
        #expect(o.settings["namespaceIsolation"] == .bool(false))
        #expect(o.settings["globalNamespaces"] == .string("default,kube-public"))
        #expect(o.settings["systemNamespaces"] == .array([.string("kube-system"), .string("ops")]))
        #expect(o.settings["delegateTimeoutSeconds"] == .number("12.5"))
        #expect(o.settings["readinessindicatorfile"] == .string("/run/ready"))
        #expect(o.settings["multusNamespace"] == .string("plexus"))
    }

    @Test(arguments: [
        (["--nope"], "unknown option --nope"),
        (["--cni-conf-dir", "relative/dir"], "must be an absolute path"),
        (["--cni-conf-dir"], "needs a value"),
        (["--once=maybe"], "takes true or false"),
        (["--config-name", "00-plexus.conf"], "must end in .conflist"),
        (["--config-name", "a/b.conflist"], "plain file name"),
        (["--log-level", "loud"], "must be one of panic"),
        (["--delegate-timeout-seconds", "-1"], "must be a positive number"),
        (["--api-server", "10.0.0.1:443"], "http(s) URL"),
        (["--interval-ms", "5"], "10 to 3600000"),
        (["frobnicate"], "unexpected argument"),
    ])
    func usageErrors(_ args: [String], _ fragment: String) {
        let e = installError { _ = try parse(args) }
        #expect(e?.exitCode == 2, "\(args)")
        #expect(e?.message.contains(fragment) == true, "\(e?.message ?? "no error") for \(args)")
    }

    @Test func everyOptionHasADistinctEnvironmentName() {
        let names = InstallOptions.allOptions.map(\.environmentName)
        #expect(Set(names).count == names.count)
        #expect(names.contains("PLEXUS_CNI_CONF_DIR") && names.contains("PLEXUS_READINESS_INDICATOR_FILE"))
        #expect(InstallOptions.helpText.contains("--source-bin-dir PATH  [PLEXUS_SOURCE_BIN_DIR]"))
    }
}

@Suite struct SettingsFileTests {
    func parse(_ text: String) throws -> JSONObject {
        try PlexusSettings.parseFile(Array(text.utf8), path: "/etc/plexus/settings.json")
    }

    @Test func knownKeysAreAccepted() throws {
        let o = try parse(#"{"logLevel":"verbose","namespaceIsolation":true,"globalNamespaces":["default"],"logFile":null}"#)
        #expect(o.keys == ["logLevel", "namespaceIsolation", "globalNamespaces", "logFile"])
        let merged = PlexusSettings.merge(file: o, overrides: JSONObject([("logLevel", .string("error"))]))
        #expect(merged.keys == ["logLevel", "namespaceIsolation", "globalNamespaces"])
        #expect(merged["logLevel"] == .string("error"))
    }

    @Test func finalizersAndAuxiliaryChainAreSettings() throws {
        let o = try parse(#"{"finalizers":[{"type":"plexus-policy-route","tableBase":200}],"auxiliaryCNIChainName":"vendor-cni-chain"}"#)
        let merged = PlexusSettings.merge(file: o, overrides: JSONObject())
        #expect(merged["finalizers"]?.serialized() == #"[{"type":"plexus-policy-route","tableBase":200}]"#)
        #expect(merged["auxiliaryCNIChainName"] == .string("vendor-cni-chain"))
    }

    @Test(arguments: [
        (#"{"namespaceIsolaton":true}"#, "unknown setting \"namespaceIsolaton\""),
        (#"{"clusterNetwork":"x"}"#, "generated by the installer"),
        (#"{"namespaceIsolation":"yes"}"#, "must be true or false"),
        (#"{"cniDir":"relative"}"#, "must be an absolute path"),
        (#"{"systemNamespaces":"kube-system"}"#, "a list of strings"),
        (#"{"finalizers":[{"name":"no-type"}]}"#, "a list of plugin objects"),
        (#"{"finalizers":{"type":"x"}}"#, "a list of plugin objects"),
        (#"[1,2]"#, "must hold a JSON object"),
        (#"{"#, "not valid JSON"),
    ])
    func badFilesAreClearErrors(_ text: String, _ fragment: String) {
        let e = installError { _ = try parse(text) }
        #expect(e?.message.contains(fragment) == true, "\(e?.message ?? "no error")")
        #expect(e?.message.contains("/etc/plexus/settings.json") == true)
        #expect(e?.exitCode == 1)
    }
}
