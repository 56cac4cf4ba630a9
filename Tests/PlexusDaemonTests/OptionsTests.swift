import Testing
@testable import PlexusDaemon

private let env = ["NODE_NAME": "node-1"]

private struct NoFile: Error {}

private func parse(_ args: [String], environment: [String: String] = env,
                   files: [String: String] = [:]) throws(DaemonOptions.OptionError) -> DaemonOptions {
    try DaemonOptions.parse(args, environment: environment) { path in
        guard let text = files[path] else { throw NoFile() }
        return Array(text.utf8)
    }
}

private func optionError(_ args: [String], environment: [String: String] = env, files: [String: String] = [:]) -> String? {
    do {
        _ = try parse(args, environment: environment, files: files)
        return nil
    } catch {
        return error.description
    }
}

@Suite struct DaemonOptionsTests {
    @Test func defaultsWithTheNodeNameFromTheEnvironment() throws {
        let o = try parse([])
        var expected = DaemonOptions()
        expected.nodeName = "node-1"
        #expect(o == expected)
        #expect(o.socket == "/run/plexus/plexus.sock")
        #expect(o.kubeconfig == nil)
        #expect(o.metricsAddress == "127.0.0.1:9494")
        #expect(o.maxConcurrent == 16)
        #expect(o.maxQueued == 256)
        #expect(o.drainSeconds == 30)
        #expect(o.watchTimeoutSeconds == 300)
        #expect(o.pageSize == 500)
        #expect(o.logLevel == "info")
        #expect(o.logFile == nil)
        #expect(o.binDir == "/opt/cni/bin")
    }

    @Test func bothFlagForms() throws {
        let o = try parse(["--socket", "/run/x/d.sock", "--max-concurrent=4", "--max-queued", "0", "--drain-seconds=2.5",
                           "--watch-timeout-seconds", "60", "--page-size=100", "--log-level", "debug",
                           "--log-file=/var/log/plexus.log", "--kubeconfig", "/etc/kube/config", "--bin-dir=/usr/libexec/cni",
                           "--metrics-address=unix:/run/plexus/metrics.sock", "--node-name", "node-2"])
        #expect(o.socket == "/run/x/d.sock")
        #expect(o.maxConcurrent == 4)
        #expect(o.maxQueued == 0)
        #expect(o.drainSeconds == 2.5)
        #expect(o.watchTimeoutSeconds == 60)
        #expect(o.pageSize == 100)
        #expect(o.logLevel == "debug")
        #expect(o.logFile == "/var/log/plexus.log")
        #expect(o.kubeconfig == "/etc/kube/config")
        #expect(o.binDir == "/usr/libexec/cni")
        #expect(o.metricsAddress == "unix:/run/plexus/metrics.sock")
        #expect(o.nodeName == "node-2")  // the flag wins over $NODE_NAME

        // Empty values mean none.
        let e = try parse(["--metrics-address=", "--kubeconfig", "", "--log-file="])
        #expect(e.metricsAddress == "")
        #expect(e.kubeconfig == nil)
        #expect(e.logFile == nil)
    }

    @Test func configFileWithCamelCaseKeysAndFlagsOverIt() throws {
        let file = #"""
        {"socket":"/run/file/d.sock","maxConcurrent":4,"maxQueued":"8","drainSeconds":1.5,"nodeName":"node-file",
         "metricsAddress":"","logFile":null,"watchTimeoutSeconds":120,"pageSize":50}
        """#
        let o = try parse(["--max-concurrent", "9", "--config", "/etc/plexus/daemon.json"], files: ["/etc/plexus/daemon.json": file])
        #expect(o.socket == "/run/file/d.sock")
        #expect(o.maxConcurrent == 9)  // the command line wins, wherever --config is
        #expect(o.maxQueued == 8)
        #expect(o.drainSeconds == 1.5)
        #expect(o.nodeName == "node-file")  // the file wins over $NODE_NAME
        #expect(o.metricsAddress == "")
        #expect(o.logFile == nil)
        #expect(o.watchTimeoutSeconds == 120)
        #expect(o.pageSize == 50)

        let o2 = try parse(["--config=/c.json", "--node-name=node-flag"], files: ["/c.json": #"{"nodeName":"node-file"}"#])
        #expect(o2.nodeName == "node-flag")

        #expect(DaemonOptions.flagName("maxConcurrent") == "max-concurrent")
        #expect(DaemonOptions.flagName("watchTimeoutSeconds") == "watch-timeout-seconds")
        #expect(DaemonOptions.flagName("socket") == "socket")
    }

    @Test(arguments: [
        ("/missing", "cannot read /missing"),
        ("/bad.json", "is not a JSON object"),
        ("/array.json", "is not a JSON object"),
        ("/bool.json", "must be a string or a number"),
        ("/unknown.json", "unknown option no-such-thing"),
        ("/range.json", "max-concurrent must be an integer"),
    ])
    func badConfigFiles(_ path: String, _ message: String) {
        let files = ["/bad.json": "{not json", "/array.json": "[1]", "/bool.json": #"{"maxConcurrent":true}"#,
                     "/unknown.json": #"{"noSuchThing":"x"}"#, "/range.json": #"{"maxConcurrent":0}"#]
        let e = optionError(["--config", path], files: files)
        #expect(e?.contains(message) == true, "\(e ?? "no error")")
    }

    @Test(arguments: [
        (["--max-concurrent", "0"], "max-concurrent must be an integer in 1...4096"),
        (["--max-concurrent", "4097"], "max-concurrent must be"), (["--max-concurrent", "many"], "max-concurrent must be"),
        (["--max-queued", "-1"], "max-queued must be"),
        (["--drain-seconds", "-1"], "drain-seconds must be"), (["--drain-seconds", "nan"], "drain-seconds must be"),
        (["--drain-seconds", "inf"], "drain-seconds must be"), (["--drain-seconds", "3601"], "drain-seconds must be"),
        (["--watch-timeout-seconds", "0"], "watch-timeout-seconds must be"), (["--page-size", "10001"], "page-size must be"),
        (["--log-level", "loud"], "unknown log level"),
        (["--metrics-address", "nonsense"], "metrics-address must be"),
        (["--metrics-address", "unix:relative.sock"], "metrics-address must be"),
        (["--metrics-address", "host:99999"], "metrics-address must be"),
        (["--node-name", "Node_1"], "node name"), (["--node-name", ""], "node name"),
        (["--socket", "run/plexus.sock"], "socket must be an absolute path"),
        (["--kubeconfig", "kubeconfig"], "kubeconfig must be an absolute path"),
        (["--log-file", "plexus.log"], "log-file must be an absolute path"),
        (["--bin-dir", "bin"], "bin-dir must be an absolute path"),
    ])
    func invalidValues(_ args: [String], _ message: String) {
        let e = optionError(args)
        #expect(e?.contains(message) == true, "\(args): \(e ?? "no error")")
    }

    @Test func unknownFlagsStrayArgumentsMissingValuesAndNoNodeName() {
        #expect(optionError(["--no-such-flag", "1"])?.contains("unknown option no-such-flag") == true)
        #expect(optionError(["positional"])?.contains("unexpected argument positional") == true)
        #expect(optionError(["-s", "/x"])?.contains("unexpected argument -s") == true)
        #expect(optionError(["--socket"])?.contains("--socket needs a value") == true)
        #expect(optionError(["--help"])?.contains("usage: plexus-daemon") == true)
        #expect(optionError(["-h"])?.contains("usage: plexus-daemon") == true)

        // The node name is required.
        #expect(optionError([], environment: [:])?.contains("node name") == true)
        #expect(optionError([], environment: ["NODE_NAME": "not a name"])?.contains("node name") == true)
        #expect(optionError(["--node-name", "n1"], environment: [:]) == nil)
    }
}
