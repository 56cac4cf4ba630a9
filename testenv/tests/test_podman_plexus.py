"""Plexus under podman 4.3 (Debian's package, CNI backend), all podman state private (root only; see
testenv/podman/README.md and testenv/lib/podman.py).

Every podman network is a conflist whose only plugin is ``plexus``, with inline delegates from /usr/lib/cni:

| podman network | delegate (interface) | bridge + host-local subnet | extra |
|---|---|---|---|
| ``pxpm-a`` | ``pxpm-a-c`` (the runtime's ``CNI_IFNAME``) | 10.231.100.0/24 | portmap declaring ``portMappings`` |
|            | ``pxpm-a-s`` (``net1``)                    | 10.231.101.0/24 | portmap too: must NOT get the runtime's mappings |
| ``pxpm-b`` | ``pxpm-b-c`` / ``pxpm-b-s``                | 10.231.102.0/24 / 10.231.103.0/24 | |
| ``pxpm-n`` | ``pxpm-n-c``                               | 10.231.104.0/24 | portmap, but Plexus declares no capability |

Checks are made inside the container (``podman exec ... ip -o addr``), in podman's own view (``inspect``) and on
the host (host-local reservation files, Plexus' cache records, iptables, links). Bridges use ``isGateway: false,
ipMasq: false``, portmap ``snat: false``; ``net.ipv4.ip_forward`` is asserted unchanged, and so are the host paths
podman 4.3 would otherwise write (``/run/netns/netns-*``, ``/var/lib/cni``, ``/var/lib/containers``,
``/dev/shm/libpod_lock``, ``/run/runc``, ``/run/libpod``, ``/run/containers``).
"""

import os
import random
import socket
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs podman, creates netns and links)")

A, B, N = "pxpm-a", "pxpm-b", "pxpm-n"
@pytest.fixture(scope="module")
def pm():
    from testenv.lib import netns as nl
    from testenv.lib import podman as pmlib
    from testenv.lib.cri_plexus import ip_forward
    why = pmlib.ensure_installed()
    if why:
        pytest.skip("podman not installable: " + why)
    lock, swept = pmlib.lock_and_sweep()
    if swept:
        sys.stderr.write("\nremoved leftovers of an earlier podman run: %s\n" % swept)
    forward_before, host_before = ip_forward(), pmlib.host_traces()
    env = pmlib.PodmanEnv()
    try:
        try:
            env.start()
        except RuntimeError as e:
            if "mount namespace" in str(e):
                pytest.skip("cannot create a private mount namespace: %s" % e)
            raise
        env.add_network(A, [("c", 100, True), ("s", 101, True)])     # A is podman's default_network
        env.add_network(B, [("c", 102, False), ("s", 103, False)])
        env.add_network(N, [("c", 104, True)], capabilities=False)
        smoke = env.podman("run", "--rm", "--network", "none", "--cgroup-parent", env.cgroup_parent, pmlib.IMAGE,
                           "true", check=False)
        if smoke.returncode != 0:
            pytest.skip("podman cannot run a container here: %s" % smoke.stderr.strip()[-1000:])
        yield env
    finally:
        problems = env.stop()
        links = nl.host_links_with_prefix(pmlib.PREFIX)
        lock.close()
        assert ip_forward() == forward_before, "net.ipv4.ip_forward changed"
        assert links == [], "pxpm links left on the host: %r" % links
        host_after = pmlib.host_traces(env.container_ids)
        assert host_after == host_before, "podman touched host paths: %r -> %r" % (host_before, host_after)
        assert not problems, "teardown had to force: %r" % problems


@pytest.fixture
def clean(pm):
    """After each test: every container removed through podman (CNI DEL), then nothing may be left."""
    from testenv.lib.cri_plexus import ip_forward
    forward = ip_forward()
    yield pm
    pm.rm_all()
    left = pm.leftovers()
    forced = pm.reset() if left else []
    assert ip_forward() == forward, "net.ipv4.ip_forward changed"
    assert not left, "left after podman rm: %r (forced: %r)\nplexus log:\n%s" % (left, forced, pm.log_tail())


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------

def _delegate(pm, name):
    return next(d for d in pm.delegates if d.name == name)


def _ip(cidr):
    return cidr.split("/")[0]


def _run(pm, name, *opts):
    """``podman run -d`` that must succeed; on failure the message carries podman's error and Plexus' log."""
    p = pm.run_failing(name, *opts)
    _assert_ok(pm, p, "run " + " ".join(opts))
    return pm.inspect(name)["Id"]


def _assert_ok(pm, p, what):
    cids = [c for c in pm.container_ids if c in p.stderr] or [None]
    assert p.returncode == 0, "podman %s failed (%d): %s\nplexus log:\n%s" % (
        what, p.returncode, p.stderr.strip()[-3000:], pm.log_tail(cids[0]))


def _podman_ok(pm, *args):
    p = pm.podman(*args, check=False)
    _assert_ok(pm, p, " ".join(args))
    return p


def _records(pm, cid):
    """{(plexus network, ifname): [(delegate network, ifname), ...]} from Plexus' attachment records."""
    return {(r["network"], r["ifName"]): [(n["name"], n["ifName"]) for n in r["networks"]]
            for r in pm.attachment_records(cid)}


def _results(pm, cid):
    """{(delegate network, ifname): [ip/nn, ...]} from Plexus' result cache entries."""
    return {(e["networkName"], e["ifName"]): sorted(i["address"] for i in (e.get("result") or {}).get("ips", []))
            for e in pm.result_entries(cid)}


def _interface_on(links, delegate, exclude=()):
    """The one container interface with an address of ``delegate``'s subnet (not in ``exclude``)."""
    names = [n for n, l in links.items() if n not in exclude and any(delegate.has(a) for a in l["ipv4"])]
    assert len(names) == 1, "expected one interface on %s (%s), got %r in %r" % (
        delegate.name, delegate.subnet, names, links)
    return names[0]


def _assert_attached(pm, cid, network, ifname, links):
    """``network`` (a PlexusNetwork) is attached as ``ifname`` (cluster) + one secondary per further delegate:
    kernel, host-local, Plexus' record and result cache agree. Returns {delegate name: container ifname}."""
    cluster = network.cluster
    assert ifname in links, "no %s in the container: %r" % (ifname, links)
    assert [a for a in links[ifname]["ipv4"] if cluster.has(a)] == links[ifname]["ipv4"] != [], \
        "%s should have one address of %s: %r" % (ifname, cluster.subnet, links[ifname])
    names = {cluster.name: ifname}
    for d in network.delegates[1:]:
        names[d.name] = _interface_on(links, d, exclude=(ifname,))
    for d in network.delegates:
        ips = links[names[d.name]]["ipv4"]
        assert d.reservations(cid) == [_ip(a) for a in ips], \
            "host-local %s reservations of the container %r != kernel %r" % (d.name, d.reservations(cid), ips)
    recs = _records(pm, cid)
    assert recs.get((network.name, ifname)) == [(d.name, names[d.name]) for d in network.delegates], \
        "Plexus' attachment record for %s/%s: %r" % (network.name, ifname, recs)
    res = _results(pm, cid)
    for d in network.delegates:
        assert res.get((d.name, names[d.name])) == links[names[d.name]]["ipv4"], \
            "Plexus' cached result of %s (%s) %r != kernel %r" % (
                d.name, names[d.name], res.get((d.name, names[d.name])), links[names[d.name]])
    return names


def _assert_removed(pm, cid, veths, netns):
    pm.podman("rm", "-f", "-t", "0", cid)
    left = pm.leftovers([cid], veths, [netns])
    assert left == {}, "left after podman rm -f: %r\nplexus log:\n%s" % (left, pm.log_tail(cid))


def _run_with_port(pm, name, network):
    """``podman run -p 127.0.0.1:<free port>:8080`` on ``network``: (container id, host port). The host IP keeps
    the DNAT rule (and conmon's port reservation) to the loopback address."""
    from testenv.lib.cri_plexus import iptables_nat
    nat = iptables_nat()
    while True:
        port = random.randint(30000, 32000)
        if ("--dport %d " % port) in nat or ("--dports %d " % port) in nat:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return _run(pm, name, "--network", network, "-p", "127.0.0.1:%d:8080" % port), port


# ----------------------------------------------------------------------------------------------------------------
# 1. run: eth0 from the cluster network, net1 from the secondary
# ----------------------------------------------------------------------------------------------------------------

def test_run_cluster_and_secondary(clean):
    pm = clean
    net = pm.networks[A]
    cid = _run(pm, "pxpm-run", "--network", A)
    links = pm.container_links(cid)
    assert sorted(links) == ["eth0", "net1"], links
    names = _assert_attached(pm, cid, net, "eth0", links)
    assert names == {"pxpm-a-c": "eth0", "pxpm-a-s": "net1"}
    # podman got the cluster network's result back from Plexus
    st = pm.inspect(cid)["NetworkSettings"]
    assert sorted(st["Networks"]) == [A]
    assert st["Networks"][A]["IPAddress"] == _ip(links["eth0"]["ipv4"][0])
    assert st["Networks"][A]["MacAddress"] == links["eth0"]["mac"]
    # the record's netns is podman's, and podman's own libcni cache has the one Plexus attachment
    rec = pm.attachment_records(cid)
    assert [r["netns"] for r in rec] == [st["SandboxKey"]]
    assert pm.libcni_cache(cid) == ["%s-%s-eth0" % (A, cid)]
    for d in net.delegates:
        assert len(d.ports()) == 1, (d.bridge, d.ports())
    _assert_removed(pm, cid, pm.host_veths(cid), st["SandboxKey"])


# ----------------------------------------------------------------------------------------------------------------
# 2. --ip and --mac-address: per-interface CNI_ARGS belong to the cluster network only
# ----------------------------------------------------------------------------------------------------------------

def test_static_ip_goes_to_the_cluster_network(clean):
    pm = clean
    net = pm.networks[A]
    cid = _run(pm, "pxpm-ip", "--network", A, "--ip", "10.231.100.50")
    links = pm.container_links(cid)
    assert links["eth0"]["ipv4"] == ["10.231.100.50/24"], links
    names = _assert_attached(pm, cid, net, "eth0", links)
    # the secondary allocated from its own pool
    assert len(links[names["pxpm-a-s"]]["ipv4"]) == 1
    assert pm.inspect(cid)["NetworkSettings"]["Networks"][A]["IPAddress"] == "10.231.100.50"
    _assert_removed(pm, cid, pm.host_veths(cid), pm.netns_path(cid))


def test_static_mac_goes_to_the_cluster_network(clean):
    pm = clean
    mac = "02:00:0a:e7:64:%02x" % random.randint(1, 254)
    cid = _run(pm, "pxpm-mac", "--network", A, "--mac-address", mac)
    links = pm.container_links(cid)
    _assert_attached(pm, cid, pm.networks[A], "eth0", links)
    assert links["eth0"]["mac"] == mac, links
    assert links["net1"]["mac"] != mac, "net1 got the MAC asked for eth0: %r" % links
    assert pm.inspect(cid)["NetworkSettings"]["Networks"][A]["MacAddress"] == mac
    _assert_removed(pm, cid, pm.host_veths(cid), pm.netns_path(cid))


# ----------------------------------------------------------------------------------------------------------------
# 3. -p: podman's portMappings reach portmap only through Plexus' capability, on the cluster network only
# ----------------------------------------------------------------------------------------------------------------

def _nat_rules_of(cid):
    from testenv.lib.cri_plexus import iptables_nat
    nat = iptables_nat().splitlines()
    chains = {l.split(" -j ")[-1].split()[0] for l in nat if cid in l and " -j CNI-DN-" in l}
    return [l for l in nat if cid in l or any(l.startswith("-A %s " % c) for c in chains)]


def test_port_mapping_through_plexus_capability(clean):
    from testenv.lib.cri_plexus import iptables_nat
    pm = clean
    cid, port = _run_with_port(pm, "pxpm-port", A)
    links = pm.container_links(cid)
    _assert_attached(pm, cid, pm.networks[A], "eth0", links)
    rules = _nat_rules_of(cid)
    named = [l for l in rules if "dnat name:" in l]
    assert len(named) == 1 and 'dnat name: \\"pxpm-a-c\\"' in named[0], \
        "expected one portmap rule, of the cluster delegate pxpm-a-c:\n%s" % "\n".join(rules)
    dnat = [l for l in rules if "--to-destination" in l]
    assert len(dnat) == 1, "\n".join(rules)
    assert "-d 127.0.0.1/32" in dnat[0] and "--dport %d " % port in dnat[0], dnat[0]
    assert dnat[0].endswith("--to-destination %s:8080" % _ip(links["eth0"]["ipv4"][0])), dnat[0]
    # Plexus passed the mappings to the cluster delegate only (the secondary's portmap declares them too)
    caps = {e["networkName"]: e.get("capabilityArgs") or {} for e in pm.result_entries(cid)}
    want = [{"hostPort": port, "containerPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"}]
    assert caps["pxpm-a-c"].get("portMappings") == want, caps
    assert "portMappings" not in caps["pxpm-a-s"], caps
    veths, netns = pm.host_veths(cid), pm.netns_path(cid)

    # without the capability declared on the plexus plugin, podman sends no mappings: no rule at all
    cid2, _ = _run_with_port(pm, "pxpm-nocap", N)
    assert sorted(pm.container_links(cid2)) == ["eth0"]
    assert _nat_rules_of(cid2) == [], "portmap ran without Plexus declaring portMappings"
    assert [e.get("capabilityArgs") or {} for e in pm.result_entries(cid2)] == [{}]

    _assert_removed(pm, cid, veths, netns)
    nat = iptables_nat()
    assert cid not in nat and ("--dport %d " % port) not in nat, "portmap rules left:\n%s" % nat


# ----------------------------------------------------------------------------------------------------------------
# 4. two Plexus networks on one container
# ----------------------------------------------------------------------------------------------------------------

def _cluster_ifnames(pm, links, nets):
    """{podman network: the runtime's CNI_IFNAME for it}, found by the cluster delegate's subnet: podman 4.3 hands
    out eth0, eth1, ... in Go map order for ``--network a,b``, so either network may get eth0."""
    ifs = {n: _interface_on(links, pm.networks[n].cluster) for n in nets}
    assert sorted(ifs.values()) == ["eth%d" % i for i in range(len(nets))], (ifs, links)
    return ifs


def _assert_two_networks(pm, cid, links):
    """A and B both attached, each as its eth<i> plus its own secondary; returns ({A's}, {B's} delegate->ifname)
    and {network: eth<i>}."""
    ifs = _cluster_ifnames(pm, links, (A, B))
    a = _assert_attached(pm, cid, pm.networks[A], ifs[A], links)
    b = _assert_attached(pm, cid, pm.networks[B], ifs[B], links)
    assert len(links) == 4 and len(set(a.values()) | set(b.values())) == 4, (a, b, links)
    assert sorted(_records(pm, cid)) == sorted(ifs.items())
    assert len(pm.result_entries(cid)) == 4
    return a, b, ifs


def test_two_plexus_networks(clean):
    pm = clean
    cid = _run(pm, "pxpm-two", "--network", "%s,%s" % (A, B))
    links = pm.container_links(cid)
    _a, _b, ifs = _assert_two_networks(pm, cid, links)
    st = pm.inspect(cid)["NetworkSettings"]
    assert sorted(st["Networks"]) == [A, B]
    for net in (A, B):
        assert st["Networks"][net]["IPAddress"] == _ip(links[ifs[net]]["ipv4"][0]), (net, st["Networks"][net])
    assert pm.libcni_cache(cid) == sorted("%s-%s-%s" % (n, cid, i) for n, i in ifs.items())
    _assert_removed(pm, cid, pm.host_veths(cid), st["SandboxKey"])


def test_network_connect_disconnect(clean):
    pm = clean
    cid = _run(pm, "pxpm-conn", "--network", A)
    before = pm.container_links(cid)
    a = _assert_attached(pm, cid, pm.networks[A], "eth0", before)
    a_files = sorted(f for f in pm.cache.files_of(cid))

    p = pm.podman("network", "connect", B, cid, check=False)
    links = pm.container_links(cid)
    # whether or not the second attachment succeeded, the first one must be untouched
    assert {n: links.get(n) for n in before} == before, \
        "connect of %s (exit %d) changed the first attachment: %r -> %r" % (B, p.returncode, before, links)
    assert _records(pm, cid).get((A, "eth0")) == [(d.name, a[d.name]) for d in pm.networks[A].delegates]
    _assert_ok(pm, p, "network connect %s %s" % (B, cid))
    a2, _b, ifs = _assert_two_networks(pm, cid, links)
    assert a2 == a and ifs == {A: "eth0", B: "eth1"}
    veths_b = pm.host_veths(cid, pm.networks[B].delegates)

    _podman_ok(pm, "network", "disconnect", B, cid)
    assert pm.container_links(cid) == before, "disconnect did not restore the first attachment alone"
    assert _assert_attached(pm, cid, pm.networks[A], "eth0", before) == a
    assert sorted(pm.cache.files_of(cid)) == a_files
    for d in pm.networks[B].delegates:
        assert d.reservations(cid) == [], d.name
    from testenv.lib import netns as nl
    assert nl.links_left(veths_b) == [], "host veths of %s left after disconnect" % B
    _assert_removed(pm, cid, pm.host_veths(cid), pm.netns_path(cid))


# ----------------------------------------------------------------------------------------------------------------
# 5. network reload (DEL + ADD, the cluster interfaces with their IP= and MAC= as CNI_ARGS) and restart
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("networks", [A, "%s,%s" % (A, B)], ids=["one", "two"])
def test_network_reload_keeps_interfaces(clean, networks):
    pm = clean
    nets = networks.split(",")
    cid = _run(pm, "pxpm-reload", "--network", networks)
    before = pm.container_links(cid)
    ifs = _cluster_ifnames(pm, before, nets)
    for net in nets:
        _assert_attached(pm, cid, pm.networks[net], ifs[net], before)

    p = _podman_ok(pm, "network", "reload", cid)
    assert p.stdout.split() == [cid], p.stdout
    after = pm.container_links(cid)
    assert sorted(after) == sorted(before), "reload changed the interfaces: %r -> %r" % (before, after)
    for ifname in ifs.values():
        # podman re-sends each cluster interface's IP and MAC (CNI_ARGS IP=, MAC=): they stay
        assert after[ifname] == before[ifname], (ifname, before[ifname], after[ifname])
    for net in nets:
        _assert_attached(pm, cid, pm.networks[net], ifs[net], after)
    macs = [l["mac"] for l in after.values()]
    assert len(set(macs)) == len(macs), "two interfaces share a MAC after reload: %r" % after
    for d in pm.delegates:
        assert len(d.ports()) == (1 if d.name.rsplit("-", 1)[0] in nets else 0), (d.bridge, d.ports())
    _assert_removed(pm, cid, pm.host_veths(cid), pm.netns_path(cid))


def test_restart(clean):
    pm = clean
    cid = _run(pm, "pxpm-restart", "--network", A)
    old_netns, old_veths = pm.netns_path(cid), pm.host_veths(cid)
    _assert_attached(pm, cid, pm.networks[A], "eth0", pm.container_links(cid))

    _podman_ok(pm, "restart", "-t", "0", cid)
    netns = pm.netns_path(cid)
    links = pm.container_links(cid)
    assert sorted(links) == ["eth0", "net1"], links
    _assert_attached(pm, cid, pm.networks[A], "eth0", links)
    assert [r["netns"] for r in pm.attachment_records(cid)] == [netns]
    from testenv.lib import netns as nl
    assert nl.links_left(sorted(set(old_veths) - set(pm.host_veths(cid)))) == []
    if netns != old_netns:
        assert not os.path.exists(pm.ns.path(old_netns)), "old netns %s left after restart" % old_netns
    assert pm.netns_files() == [os.path.basename(netns)]
    assert pm.libcni_cache(cid) == ["%s-%s-eth0" % (A, cid)]
    _assert_removed(pm, cid, pm.host_veths(cid), netns)


# ----------------------------------------------------------------------------------------------------------------
# 6. rm -f of a running container leaves nothing
# ----------------------------------------------------------------------------------------------------------------

def test_rm_force_leaves_nothing(clean):
    pm = clean
    cid, _ = _run_with_port(pm, "pxpm-rm", A)
    netns, veths = pm.netns_path(cid), pm.host_veths(cid)
    assert len(veths) == 2 and _nat_rules_of(cid) and pm.cache.files_of(cid) and pm.runc_containers() == [cid]
    _assert_removed(pm, cid, veths, netns)
    assert pm.leftovers() == {}
    assert pm.cache.plan_files() == [] and pm.cache.result_files() == []
    assert pm.netns_files() == [] and pm.libcni_cache() == [] and pm.runc_containers() == []
