// plexus-bench: Plexus against the same delegates called directly, interleaved in one process, in real netns.
//
//   swift build -c release --product plexus-bench --product plexus
//   .build/release/plexus-bench [--rounds 30] [--plexus PATH] [--plugins /usr/lib/cni]
//                               [--only core|finalizers|attach] [--baseline PATH-OF-AN-OLDER-PLEXUS]
//
// The finalizers section: the same 2-network pod (cluster network and a second network loaded from files) through
// Plexus without and with one finalizer (plexus-policy-route, next to plexus), the delegates and that finalizer run
// directly, and, with --baseline, an older plexus binary on the pod without finalizers (what the drop-in and
// finalizer lookups cost a pod that uses neither). In the core section --baseline adds that binary as a third side of
// the 1-network pod's rounds (same pod, order rotated), so two builds' overheads come from one interleaved run.
//
// "direct" is this process acting as the runtime: it runs each network's chain itself (libcni semantics, via
// CNIInvoke) with posix_spawn, so the difference is what Plexus adds (its own exec, config, plan, cache, result).
// Prints medians and ratios; never asserts on time. Everything it creates is named pxb* and removed at the end.
import CNIInvoke
import CNISpec
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

var rounds = 30
var plexusPath = ""
var plugins = "/usr/lib/cni"
var only = ""
var baseline = ""
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--rounds": rounds = Int(args.isEmpty ? "" : args.removeFirst()) ?? rounds
    case "--plexus": plexusPath = args.isEmpty ? "" : args.removeFirst()
    case "--plugins": plugins = args.isEmpty ? "" : args.removeFirst()
    case "--only": only = args.isEmpty ? "" : args.removeFirst()
    case "--baseline": baseline = args.isEmpty ? "" : args.removeFirst()
    default: print("usage: plexus-bench [--rounds N] [--plexus PATH] [--plugins DIR] [--only core|finalizers] [--baseline PATH]"); exit(2)
    }
}
if plexusPath.isEmpty {
    plexusPath = FileSystem.directoryName(of: CommandLine.arguments[0]) + "/plexus"
}
ProcessEnvironment.ignoreSIGPIPE()

@MainActor func sh(_ cmd: String) {
    let out = try? Subprocess.run(path: "/bin/sh", arguments: ["sh", "-c", cmd], environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                                  stdin: [], timeoutNanoseconds: 30_000_000_000)
    if let out, out.exitStatus != 0 {
        print("command failed: \(cmd): \(String(decoding: out.stderr, as: UTF8.self))")
    }
}

var template = Array("/tmp/pxbench.XXXXXX".utf8CString)
let tmp = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
@MainActor func cleanup() {
    sh("ip netns del pxbench 2>/dev/null; ip link del pxb-m0 2>/dev/null; ip link del pxb-i0 2>/dev/null; for b in pxbbr0 pxbbr1 pxbbr2; do ip link del $b 2>/dev/null; done; rm -rf \(tmp)")
}
cleanup()
sh("mkdir -p \(tmp) && ip netns add pxbench && ip link add pxb-m0 type veth peer name pxb-m1 && ip link set pxb-m0 up && ip link add pxb-i0 type veth peer name pxb-i1 && ip link set pxb-i0 up")

@MainActor func ipam(_ n: Int) -> String {
    #""ipam":{"type":"host-local","dataDir":"\#(tmp)/ipam","ranges":[[{"subnet":"10.231.\#(200 + n).0/24"}]]}"#
}
let networks: [String] = [
    #"{"cniVersion":"1.0.0","name":"pxb-cluster","plugins":[{"type":"bridge","bridge":"pxbbr0",\#(ipam(0))}]}"#,
    #"{"cniVersion":"1.0.0","name":"pxb-macvlan","plugins":[{"type":"macvlan","master":"pxb-m0","mode":"bridge",\#(ipam(1))}]}"#,
    #"{"cniVersion":"1.0.0","name":"pxb-macvlan2","plugins":[{"type":"macvlan","master":"pxb-i0","mode":"bridge",\#(ipam(2))}]}"#,
    #"{"cniVersion":"1.0.0","name":"pxb-br1","plugins":[{"type":"bridge","bridge":"pxbbr1",\#(ipam(3))}]}"#,
    #"{"cniVersion":"1.0.0","name":"pxb-br2","plugins":[{"type":"bridge","bridge":"pxbbr2",\#(ipam(4))}]}"#,
]
@MainActor func plexusConfig(_ count: Int, parallel: Bool = true) -> [UInt8] {
    Array(#"{"cniVersion":"1.0.0","name":"pxbench","type":"plexus","cniDir":"\#(tmp)/cache","binDir":"\#(plugins)","parallelTeardown":\#(parallel),"delegates":[\#(networks.prefix(count).joined(separator: ","))]}"#.utf8)
}
let lists: [NetworkConfigList] = networks.compactMap { try? NetworkConfigList(bytes: Array($0.utf8), source: "bench") }
if lists.count != networks.count { print("bench network configs do not parse"); exit(1) }
let baseEnv = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
let executor = ProcessPluginExecutor(baseEnvironment: baseEnv, timeoutSeconds: 60)
let runner = NetworkRunner(executor: executor, searchPaths: [plugins])
let netns = "/var/run/netns/pxbench"

struct Sample { var add: [Double] = []; var del: [Double] = [] }
func ms(_ ns: Int64) -> Double { Double(ns) / 1e6 }

/// One plexus run as the runtime would make it: wall time (ms) and peak RSS; any failure ends the benchmark.
@MainActor func spawnPlexus(_ binary: String, _ command: String, cid: String, stdin: [UInt8],
                            cniPath: String = plugins) -> (ms: Double, rssKB: Int) {
    let env = baseEnv + ["CNI_COMMAND=\(command)", "CNI_CONTAINERID=\(cid)", "CNI_NETNS=\(netns)", "CNI_IFNAME=eth0",
                         "CNI_PATH=\(cniPath)", "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p"]
    let t0 = Clock.monotonicNanoseconds()
    let out = try? Subprocess.run(path: binary, arguments: [binary], environment: env, stdin: stdin,
                                  timeoutNanoseconds: 60_000_000_000)
    let dt = ms(Clock.monotonicNanoseconds() - t0)
    if out?.exitStatus != 0 {
        print("\(binary) \(command) failed: \(String(decoding: out?.stdout ?? [], as: UTF8.self))")
        exit(1)
    }
    return (dt, out?.maxRSSKilobytes ?? 0)
}

@MainActor func runPlexus(_ command: String, count: Int, cid: String, parallel: Bool = true,
                           binary: String = plexusPath) -> (Double, Int) {
    spawnPlexus(binary, command, cid: cid, stdin: plexusConfig(count, parallel: parallel))
}

/// The networks' chains run by this process as the runtime would (libcni order): ADD in order, keeping the results
/// in `directResults`; DEL in reverse with them as prevResult. Interface names: eth0, net1, net2…
var directResults: [JSON] = []
@MainActor func directNetworks(_ command: String, _ ls: [NetworkConfigList], cid: String) throws(CNIError) {
    if command == "ADD" {
        directResults = []
        for (i, l) in ls.enumerated() {
            directResults.append(try runner.add(l, RuntimeConf(containerID: cid, netns: netns, ifname: i == 0 ? "eth0" : "net\(i)")))
        }
    } else {
        for (i, l) in ls.enumerated().reversed() {
            try runner.del(l, RuntimeConf(containerID: cid, netns: netns, ifname: i == 0 ? "eth0" : "net\(i)"),
                           prevResult: i < directResults.count ? directResults[i] : nil)
        }
    }
}

@MainActor func runDirect(_ command: String, count: Int, cid: String) -> Double {
    let t0 = Clock.monotonicNanoseconds()
    do { try directNetworks(command, Array(lists.prefix(count)), cid: cid) } catch {
        print("direct \(command) failed: \(error)")
        exit(1)
    }
    return ms(Clock.monotonicNanoseconds() - t0)
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
}
func f(_ x: Double) -> String {
    let r = (x * 100).rounded() / 100
    return String(r)
}

var plexus1 = Sample(), direct1 = Sample(), plexus5 = Sample(), direct5 = Sample(), baseline1 = Sample()
var versionPlexus: [Double] = [], versionBridge: [Double] = []
var delSerial: [Double] = [], delParallel: [Double] = []
let warmup = 3
/// Kernel link deletion finishes asynchronously (RCU): let it settle so one side's teardown does not slow the
/// other side's next ADD, and alternate which side goes first.
@MainActor func settle() { Clock.sleep(milliseconds: 25) }

/// One side of a round: ADD then DEL of the `count`-network pod through a plexus binary, or run directly.
@MainActor func plexusSide(_ count: Int, cid: String, binary: String = plexusPath, into p: inout Sample) {
    settle(); let (a, _) = runPlexus("ADD", count: count, cid: cid, binary: binary)
    settle(); let (dl, _) = runPlexus("DEL", count: count, cid: cid, binary: binary)
    p.add.append(a); p.del.append(dl)
}
@MainActor func directSide(_ count: Int, cid: String, into d: inout Sample) {
    settle(); let a = runDirect("ADD", count: count, cid: cid)
    settle(); let dl = runDirect("DEL", count: count, cid: cid)
    d.add.append(a); d.del.append(dl)
}

@MainActor func pair(_ count: Int, cid: String, plexusFirst: Bool, into p: inout Sample, _ d: inout Sample) {
    if plexusFirst {
        plexusSide(count, cid: cid, into: &p); directSide(count, cid: cid, into: &d)
    } else {
        directSide(count, cid: cid, into: &d); plexusSide(count, cid: cid, into: &p)
    }
}

for round in 0..<(only == "finalizers" || only == "attach" ? 0 : rounds + warmup) {
    let cid = "pxbench\(round)"
    var p1 = Sample(), d1 = Sample(), p5 = Sample(), d5 = Sample(), b1 = Sample()
    if baseline.isEmpty {
        pair(1, cid: cid, plexusFirst: round % 2 == 0, into: &p1, &d1)
    } else {
        // Three sides, order rotated: this plexus, the baseline plexus, the direct delegates.
        for side in [0, 1, 2].map({ ($0 + round) % 3 }) {
            switch side {
            case 0: plexusSide(1, cid: cid, into: &p1)
            case 1: plexusSide(1, cid: cid, binary: baseline, into: &b1)
            default: directSide(1, cid: cid, into: &d1)
            }
        }
    }
    pair(5, cid: cid, plexusFirst: round % 2 == 1, into: &p5, &d5)
    // Teardown of the 1+4-network pod, serial against concurrent (alternating which goes first).
    for parallel in (round % 2 == 0 ? [false, true] : [true, false]) {
        settle(); _ = runPlexus("ADD", count: 5, cid: cid, parallel: parallel)
        settle(); let (d, _) = runPlexus("DEL", count: 5, cid: cid, parallel: parallel)
        if round >= warmup { if parallel { delParallel.append(d) } else { delSerial.append(d) } }
    }
    var vp: [Double] = [], vb: [Double] = []
    for _ in 0..<5 {
        let t0 = Clock.monotonicNanoseconds()
        _ = try? Subprocess.run(path: plexusPath, arguments: [plexusPath], environment: ["CNI_COMMAND=VERSION"], stdin: [],
                                timeoutNanoseconds: 5_000_000_000)
        let t1 = Clock.monotonicNanoseconds()
        _ = try? Subprocess.run(path: plugins + "/bridge", arguments: [plugins + "/bridge"], environment: ["CNI_COMMAND=VERSION"],
                                stdin: Array(#"{"cniVersion":"1.0.0"}"#.utf8), timeoutNanoseconds: 5_000_000_000)
        let t2 = Clock.monotonicNanoseconds()
        vp.append(ms(t1 - t0)); vb.append(ms(t2 - t1))
    }
    if round >= warmup {
        plexus1.add += p1.add; plexus1.del += p1.del; direct1.add += d1.add; direct1.del += d1.del
        baseline1.add += b1.add; baseline1.del += b1.del
        plexus5.add += p5.add; plexus5.del += p5.del; direct5.add += d5.add; direct5.del += d5.del
        versionPlexus += vp; versionBridge += vb
    }
}

// MARK: attach section: a 1+8-network pod, concurrent attach against serial attach and the 9 delegates run serially

var attachParallel: [Double] = [], attachSerial: [Double] = [], attachDirect: [Double] = [], attachDirectParallel: [Double] = []
if only == "attach" {
    sh("for i in 0 1 2 3 4 5 6 7 8; do ip link add pxba$i type bridge && ip link set pxba$i up; done")
    let nine: [String] = (0..<9).map { i in
        #"{"cniVersion":"1.0.0","name":"pxb-a\#(i)","plugins":[{"type":"bridge","bridge":"pxba\#(i)","ipam":{"type":"host-local","dataDir":"\#(tmp)/ipam","ranges":[[{"subnet":"10.231.\#(205 + i).0/24"}]]}}]}"#
    }
    let nineLists = nine.compactMap { try? NetworkConfigList(bytes: Array($0.utf8), source: "bench") }
    func config(parallel: Bool) -> [UInt8] {
        Array(#"{"cniVersion":"1.0.0","name":"pxbench","type":"plexus","cniDir":"\#(tmp)/cache","binDir":"\#(plugins)","parallelAttach":\#(parallel),"delegates":[\#(nine.joined(separator: ","))]}"#.utf8)
    }
    func run(_ command: String, cid: String, parallel: Bool) -> Double {
        spawnPlexus(plexusPath, command, cid: cid, stdin: config(parallel: parallel)).ms
    }
    /// The ceiling on this machine: the cluster network, then the 8 others from 8 threads of this process.
    func directConcurrent(_ command: String, cid: String) -> Double {
        let t0 = Clock.monotonicNanoseconds()
        let rest = Array(nineLists.enumerated().dropFirst())
        let r = runner
        func one(_ i: Int, _ l: NetworkConfigList) -> () -> Bool {
            {
                let rt = RuntimeConf(containerID: cid, netns: netns, ifname: i == 0 ? "eth0" : "net\(i)")
                do throws(CNIError) {
                    if command == "ADD" { _ = try r.add(l, rt) } else { try r.del(l, rt, prevResult: nil) }
                    return true
                } catch { return false }
            }
        }
        var ok = true
        if command == "ADD" { ok = one(0, nineLists[0])() && ok }
        ok = Parallel.map(rest.map { one($0.offset, $0.element) }).allSatisfy { $0 } && ok
        if command == "DEL" { ok = one(0, nineLists[0])() && ok }
        if !ok { print("direct concurrent \(command) failed"); exit(1) }
        return ms(Clock.monotonicNanoseconds() - t0)
    }
    func direct(_ command: String, cid: String) -> Double {
        let t0 = Clock.monotonicNanoseconds()
        do { try directNetworks(command, nineLists, cid: cid) } catch {
            print("direct \(command) of 9 networks failed: \(error)")
            exit(1)
        }
        return ms(Clock.monotonicNanoseconds() - t0)
    }
    for round in 0..<(rounds + warmup) {
        let cid = "pxbenchat\(round)"
        let order = [0, 1, 2, 3].map { ($0 + round) % 4 }
        for side in order {
            settle()
            let add: Double
            switch side {
            case 0: add = run("ADD", cid: cid, parallel: true); settle(); _ = run("DEL", cid: cid, parallel: true)
            case 1: add = run("ADD", cid: cid, parallel: false); settle(); _ = run("DEL", cid: cid, parallel: false)
            case 2: add = direct("ADD", cid: cid); settle(); _ = direct("DEL", cid: cid)
            default: add = directConcurrent("ADD", cid: cid); settle(); _ = directConcurrent("DEL", cid: cid)
            }
            guard round >= warmup else { continue }
            switch side {
            case 0: attachParallel.append(add)
            case 1: attachSerial.append(add)
            case 2: attachDirect.append(add)
            default: attachDirectParallel.append(add)
            }
        }
    }
    sh("for i in 0 1 2 3 4 5 6 7 8; do ip link del pxba$i 2>/dev/null; done")
    let p = median(attachParallel), sr = median(attachSerial), d = median(attachDirect)
    print("plexus-bench: \(rounds) interleaved rounds (+\(warmup) warm-up), real netns, Debian reference plugins from \(plugins)")
    print("attach (pod with 1+8 bridge networks, ADD medians)")
    print("  plexus, concurrent attach      \(f(p)) ms")
    print("  plexus, serial attach          \(f(sr)) ms   concurrent / serial \(f(p / sr))")
    print("  9 delegates run serially       \(f(d)) ms   plexus concurrent / direct serial \(f(p / d))")
    let dc = median(attachDirectParallel)
    print("  9 delegates, 8 concurrently    \(f(dc)) ms   (this machine's ceiling: direct concurrent / direct serial \(f(dc / d)))")
    cleanup()
    exit(0)
}

// MARK: finalizers section

struct FinalizerFigures { var none: [Double] = [], one: [Double] = [], direct: [Double] = [], old: [Double] = [] }
var fin = FinalizerFigures()
let finalizerPath = FileSystem.directoryName(of: plexusPath) + "/plexus-policy-route"
if only != "core" {
    sh("mkdir -p \(tmp)/conf")
    let clusterFile = "\(tmp)/conf/10-cluster.conflist", secondFile = "\(tmp)/conf/20-second.conflist"
    try? FileSystem.writeAtomically(clusterFile, Array(networks[0].utf8), mode: 0o644)
    try? FileSystem.writeAtomically(secondFile, Array(networks[3].utf8), mode: 0o644)
    let finDir = FileSystem.directoryName(of: finalizerPath)
    func config(finalizer: Bool) -> [UInt8] {
        let f = finalizer ? #","finalizers":[{"type":"plexus-policy-route"}]"# : ""
        return Array(#"{"cniVersion":"1.0.0","name":"pxbench","type":"plexus","cniDir":"\#(tmp)/cache","confDir":"\#(tmp)/conf","binDir":"\#(plugins)","clusterNetwork":"\#(clusterFile)","defaultNetworks":["\#(secondFile)"]\#(f)}"#.utf8)
    }
    let pair = [lists[0], lists[3]]
    func run(_ binary: String, _ command: String, cid: String, finalizer: Bool) -> Double {
        spawnPlexus(binary, command, cid: cid, stdin: config(finalizer: finalizer), cniPath: "\(plugins):\(finDir)").ms
    }
    let finalizerList = try? NetworkConfigList(bytes: Array(#"{"cniVersion":"1.0.0","name":"pxbench","plugins":[{"type":"plexus-policy-route"}]}"#.utf8), source: "bench")
    let finRunner = NetworkRunner(executor: executor, searchPaths: [finDir])
    func direct(_ command: String, cid: String) -> Double {
        let t0 = Clock.monotonicNanoseconds()
        do {
            if command == "ADD" {
                try directNetworks(command, pair, cid: cid)
                // The runtime's share of a finalizer: one merge and one exec.
                if let finalizerList {
                    let merged = try CNIResult.merge(directResults.map { ($0, "1.0.0") }, to: "1.0.0")
                    _ = try finRunner.add(finalizerList, RuntimeConf(containerID: cid, netns: netns, ifname: "eth0"), prevResult: merged)
                }
            } else {
                if let finalizerList {
                    let merged = try CNIResult.merge(directResults.map { ($0, "1.0.0") }, to: "1.0.0")
                    try finRunner.del(finalizerList, RuntimeConf(containerID: cid, netns: netns, ifname: "eth0"), prevResult: merged)
                }
                try directNetworks(command, pair, cid: cid)
            }
        } catch {
            print("direct \(command) with finalizer failed: \(error)")
            exit(1)
        }
        return ms(Clock.monotonicNanoseconds() - t0)
    }
    enum Side { case none, one, direct, old }
    var sides: [Side] = [.none, .one, .direct]
    if !baseline.isEmpty { sides.append(.old) }
    for round in 0..<(rounds + warmup) {
        let cid = "pxbenchfin\(round)"
        // Rotate the order every round so no side always follows the same one.
        let order = (0..<sides.count).map { sides[($0 + round) % sides.count] }
        for side in order {
            settle()
            let add: Double
            switch side {
            case .none: add = run(plexusPath, "ADD", cid: cid, finalizer: false); settle(); _ = run(plexusPath, "DEL", cid: cid, finalizer: false)
            case .one: add = run(plexusPath, "ADD", cid: cid, finalizer: true); settle(); _ = run(plexusPath, "DEL", cid: cid, finalizer: true)
            case .old: add = run(baseline, "ADD", cid: cid, finalizer: false); settle(); _ = run(baseline, "DEL", cid: cid, finalizer: false)
            case .direct: add = direct("ADD", cid: cid); settle(); _ = direct("DEL", cid: cid)
            }
            guard round >= warmup else { continue }
            switch side {
            case .none: fin.none.append(add)
            case .one: fin.one.append(add)
            case .direct: fin.direct.append(add)
            case .old: fin.old.append(add)
            }
        }
    }
}

/// Peak RSS through GNU time (ru_maxrss of a posix_spawn child also counts the parent's pages before exec).
@MainActor func peakRSS(_ path: String, env: [String], stdin: [UInt8]) -> String {
    let out = try? Subprocess.run(path: "/usr/bin/time", arguments: ["time", "-f", "%M", path], environment: env, stdin: stdin,
                                  timeoutNanoseconds: 60_000_000_000)
    let text = String(decoding: out?.stderr ?? [], as: UTF8.self)
    return String(text.split(separator: "\n").last ?? "?")
}
let podEnv = baseEnv + ["CNI_CONTAINERID=pxbenchrss", "CNI_NETNS=\(netns)", "CNI_IFNAME=eth0", "CNI_PATH=\(plugins)"]
let rssVersion = peakRSS(plexusPath, env: ["CNI_COMMAND=VERSION"], stdin: [])
let rssBridge = peakRSS(plugins + "/bridge", env: ["CNI_COMMAND=VERSION"], stdin: Array(#"{"cniVersion":"1.0.0"}"#.utf8))
let rssAdd1 = peakRSS(plexusPath, env: podEnv + ["CNI_COMMAND=ADD"], stdin: plexusConfig(1))
let rssDel1 = peakRSS(plexusPath, env: podEnv + ["CNI_COMMAND=DEL"], stdin: plexusConfig(1))
let rssAdd5 = peakRSS(plexusPath, env: podEnv + ["CNI_COMMAND=ADD"], stdin: plexusConfig(5))
let rssDel5 = peakRSS(plexusPath, env: podEnv + ["CNI_COMMAND=DEL"], stdin: plexusConfig(5))
cleanup()

print("plexus-bench: \(rounds) interleaved rounds (+\(warmup) warm-up), real netns, Debian reference plugins from \(plugins)")
if only != "core" {
    let n = median(fin.none), o = median(fin.one), d = median(fin.direct)
    print("finalizers (pod: cluster network + 1 network from files, ADD medians)")
    print("  plexus, no finalizer          \(f(n)) ms")
    print("  plexus, 1 finalizer           \(f(o)) ms   finalizer overhead \(f(o - n)) ms (paired \(f(median(zip(fin.one, fin.none).map { $0 - $1 }))) ms)")
    print("  direct delegates + finalizer  \(f(d)) ms   ratio plexus-with-finalizer / direct \(f(o / d))")
    if !fin.old.isEmpty {
        let b = median(fin.old)
        print("  baseline plexus, no finalizer \(f(b)) ms   new - baseline \(f(n - b)) ms (paired \(f(median(zip(fin.none, fin.old).map { $0 - $1 }))) ms)")
    }
}
if only == "finalizers" {
    cleanup()
    exit(0)
}
print("scenario            plexus ms   direct ms   overhead ms   ratio   paired overhead ms (median of per-round differences)")
for (name, p, d) in [("ADD 1 network", plexus1.add, direct1.add), ("DEL 1 network", plexus1.del, direct1.del),
                     ("ADD 1+4 networks", plexus5.add, direct5.add), ("DEL 1+4 networks", plexus5.del, direct5.del)] {
    let mp = median(p), md = median(d)
    let paired = median(zip(p, d).map { $0 - $1 })
    print("\(name.padding(18))  \(f(mp).padding(10))  \(f(md).padding(10))  \(f(mp - md).padding(12))  \(f(mp / md).padding(6))  \(f(paired))")
}
if !baseline.isEmpty {
    for (name, b, p, d) in [("ADD 1 network", baseline1.add, plexus1.add, direct1.add), ("DEL 1 network", baseline1.del, plexus1.del, direct1.del)] {
        print("\(name.padding(18))  baseline \(f(median(b))) ms, paired overhead \(f(median(zip(b, d).map { $0 - $1 }))) ms; this plexus - baseline paired \(f(median(zip(p, b).map { $0 - $1 }))) ms")
    }
}
print("DEL 1+4 teardown    serial \(f(median(delSerial))) ms  concurrent \(f(median(delParallel))) ms  ratio \(f(median(delParallel) / median(delSerial)))")
let vp = median(versionPlexus), vb = median(versionBridge)
print("VERSION start+exit  plexus \(f(vp)) ms  bridge \(f(vb)) ms  ratio \(f(vp / vb))")
print("peak RSS KB         plexus VERSION \(rssVersion), ADD 1 \(rssAdd1), DEL 1 \(rssDel1), ADD 1+4 \(rssAdd5), DEL 1+4 \(rssDel5); bridge VERSION \(rssBridge)")

extension String {
    func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}
