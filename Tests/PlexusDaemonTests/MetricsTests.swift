import Testing
@testable import PlexusDaemon

private func lines(_ text: String) -> [String] { text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }

@Suite struct MetricsTests {
    @Test func countersWithLabels() {
        let m = Metrics()
        m.declare("x_requests_total", type: "counter", help: "Requests.", labels: ["command", "result"])
        m.add("x_requests_total", ["ADD", "ok"])
        m.add("x_requests_total", ["ADD", "ok"])
        m.add("x_requests_total", ["DEL", "error"], 3)
        m.add("x_requests_total", ["ADD", "error"], 0.5)
        #expect(m.counter("x_requests_total", ["ADD", "ok"]) == 2)
        #expect(m.counter("x_requests_total", ["CHECK", "ok"]) == 0)
        #expect(lines(m.render()) == [
            "# HELP x_requests_total Requests.",
            "# TYPE x_requests_total counter",
            #"x_requests_total{command="ADD",result="error"} 0.5"#,
            #"x_requests_total{command="ADD",result="ok"} 2"#,
            #"x_requests_total{command="DEL",result="error"} 3"#,
            "",
        ])
        // Whole numbers print without a fraction; infinities and NaN as Prometheus spells them.
        #expect(Metrics.number(3) == "3")
        #expect(Metrics.number(0) == "0")
        #expect(Metrics.number(-2) == "-2")
        #expect(Metrics.number(0.125) == "0.125")
        #expect(Metrics.number(.infinity) == "+Inf")
        #expect(Metrics.number(-.infinity) == "-Inf")
        #expect(Metrics.number(.nan) == "NaN")
    }

    @Test func labelValuesAndHelpAreEscaped() {
        let m = Metrics()
        m.declare("x_total", type: "counter", help: "Back\\slash and\nnewline \"quotes\" stay.", labels: ["v"])
        m.add("x_total", ["a\\b\"c\nd"])
        let out = m.render()
        #expect(out.contains(#"# HELP x_total Back\\slash and\nnewline "quotes" stay."# + "\n"))
        #expect(out.contains(#"x_total{v="a\\b\"c\nd"} 1"# + "\n"))
        // HELP, TYPE and one sample: no raw line break leaked.
        #expect(lines(out).count == 4)
    }

    @Test func familiesAreSortedAndUndeclaredOnesIgnored() {
        let m = Metrics()
        m.declare("b_total", type: "counter", help: "B.", labels: [])
        m.declare("a_total", type: "counter", help: "A.", labels: [])
        m.add("b_total")
        m.add("nobody_declared_this_total", ["x"])
        m.observe("nor_this_seconds", [], seconds: 1)
        let out = lines(m.render())
        #expect(out == ["# HELP a_total A.", "# TYPE a_total counter", "# HELP b_total B.", "# TYPE b_total counter", "b_total 1", ""])
        #expect(m.counter("nobody_declared_this_total", ["x"]) == 0)
    }

    @Test func histogramBucketsAreCumulative() {
        let m = Metrics()
        m.declare("x_seconds", type: "histogram", help: "Durations.", labels: ["command"])
        for s in [0.25, 0.5, 100.0] { m.observe("x_seconds", ["ADD"], seconds: s) }
        m.observe("x_seconds", ["DEL"], seconds: 0.004)
        let out = lines(m.render())
        #expect(out.first == "# HELP x_seconds Durations.")
        #expect(out.dropFirst().first == "# TYPE x_seconds histogram")
        let add = out.filter { $0.contains(#"command="ADD""#) }
        var expected: [String] = []
        let counts: [Double: Int] = [0.005: 0, 0.01: 0, 0.025: 0, 0.05: 0, 0.1: 0, 0.25: 1, 0.5: 2, 1: 2, 2.5: 2, 5: 2, 10: 2, 30: 2, 60: 2]
        let le = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60"]
        for (i, b) in Metrics.buckets.enumerated() {
            expected.append(#"x_seconds_bucket{command="ADD",le="\#(le[i])"} \#(counts[b]!)"#)
        }
        expected += [#"x_seconds_bucket{command="ADD",le="+Inf"} 3"#, #"x_seconds_sum{command="ADD"} 100.75"#,
                     #"x_seconds_count{command="ADD"} 3"#]
        #expect(add == expected)
        #expect(out.contains(#"x_seconds_bucket{command="DEL",le="0.005"} 1"#))
        #expect(out.contains(#"x_seconds_bucket{command="DEL",le="+Inf"} 1"#))
        #expect(out.contains(#"x_seconds_count{command="DEL"} 1"#))
        // Bucket counts never decrease.
        let values = add.prefix(14).compactMap { Int($0.split(separator: " ").last ?? "") }
        #expect(values == values.sorted())
    }

    @Test func gaugesAreReadWhenRendered() {
        let m = Metrics()
        let value = Locked(1.0)
        m.gauge("x_inflight", help: "Now.") { [([], value.current)] }
        m.gauge("x_objects", help: "Objects.", labels: ["resource"]) { [(["pods"], 10), (["nads"], 2)] }
        #expect(m.render().contains("x_inflight 1\n"))
        value.withLock { $0 = 4 }
        let out = m.render()
        #expect(out.contains("# HELP x_inflight Now.\n# TYPE x_inflight gauge\nx_inflight 4\n"))
        let objects: String = """
            # TYPE x_objects gauge
            x_objects{resource="pods"} 10
            x_objects{resource="nads"} 2

            """
        #expect(out.contains(objects))
    }

    @Test func daemonFamiliesAreDeclared() {
        let m = Metrics()
        DaemonMetrics.declare(m)
        m.add(DaemonMetrics.rejected, ["busy"])
        let out = m.render()
        for name in [DaemonMetrics.requests, DaemonMetrics.rejected, DaemonMetrics.apiRequests, DaemonMetrics.watchRestarts,
                     DaemonMetrics.cacheLookups, DaemonMetrics.watchEvents, DaemonMetrics.delegateFailures] {
            #expect(out.contains("# TYPE \(name) counter\n"))
        }
        #expect(out.contains("# TYPE \(DaemonMetrics.duration) histogram\n"))
        #expect(out.contains(#"plexus_daemon_rejected_total{reason="busy"} 1"#))
    }
}
