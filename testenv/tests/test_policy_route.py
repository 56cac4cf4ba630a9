"""``plexus-policy-route`` as a CNI plugin, run directly (not through Plexus) in real network namespaces.

A pod with eth0 (bridge A, default route) and net1 (bridge B), both from Debian's bridge + host-local, and a peer on
both bridges with a remote address and strict reverse-path filtering (``testenv/lib/policy_route.py``). Without the
finalizer the pod answers net1's traffic out of eth0 and the peer drops it; after ADD each interface's replies
leave by that interface. CHECK, DEL, idempotence and bad input are checked against the kernel's rules and tables.
"""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import policy_route as pr  # noqa: E402

TABLE, PRIORITY = 100, 1000


@pytest.fixture(scope="module")
def pr_session():
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces and links)")
    if not os.access(os.path.join(pr.px.DEBIAN_CNI_DIR, "bridge"), os.X_OK):
        pytest.skip("Debian's CNI plugins are missing (bash testenv/install.sh)")
    if not os.access(pr.binary(), os.X_OK):
        pytest.fail("%s is not built" % pr.binary())
    pr.sweep()
    pr.register()
    yield
    pr.remove_prefix(pr.PREFIX)
    pr.unregister()


def built_topology(tmp_path, **kw):
    """A built Topology, removed afterwards even when the test fails; checks nothing is left."""
    t = pr.Topology(tmp_path / "host-local", **kw)
    try:
        t.build()
        yield t
    finally:
        errors = t.cleanup()
        if errors:
            sys.stderr.write("pxpr cleanup errors: %s\n" % errors)
    assert not os.path.exists(pr.netns_path(t.pod)) and not pr.link_exists(t.bridge_a) and not pr.link_exists(t.bridge_b)


@pytest.fixture
def topo(pr_session, tmp_path):
    yield from built_topology(tmp_path)


def planned_state(topo):
    """The pod's rules pointing at table 100 and that table's routes."""
    rules = [r for r in topo.rules() if r[2] == str(TABLE)]
    return rules, topo.table(TABLE)


def expected_state(topo):
    """What the plan puts there: one rule for net1's address, its subnet route and its default route."""
    net1 = topo.address("net1")
    return ([(PRIORITY, net1, str(TABLE))],
            {("10.231.161.0/24", None, "net1", net1, "link"), ("default", pr.GATEWAY_B, "net1", None, None)})


def add(topo, **options):
    out = topo.finalizer("ADD", pr.policy_config(topo.merged_result(), **options))
    assert out.ok, out
    return out


def test_replies_leave_by_the_interface_they_came_in_on(topo):
    eth0, net1 = topo.address("eth0"), topo.address("net1")
    merged = topo.merged_result()
    assert [i["name"] for i in merged["interfaces"] if i.get("sandbox")] == ["eth0", "net1"]
    assert sorted(i["interface"] for i in merged["ips"]) == [2, 5]

    # (1) Without the finalizer: eth0 answers, net1's answer leaves by eth0 and the peer's strict RPF drops it.
    assert pr.ping(topo.peer, pr.REMOTE, eth0)
    assert not pr.ping(topo.peer, pr.REMOTE, net1)
    assert not pr.ping(topo.pod, net1, pr.REMOTE)

    # (2) After ADD: both, in both directions; the result is the prevResult, unchanged.
    out = add(topo)
    assert out.out == merged, out
    assert out.stdout.count("\n") == 1 and out.stderr == ""
    assert pr.ping(topo.peer, pr.REMOTE, net1)
    assert pr.ping(topo.pod, net1, pr.REMOTE)
    assert pr.ping(topo.peer, pr.REMOTE, eth0)
    assert pr.ping(topo.pod, eth0, pr.REMOTE)
    assert planned_state(topo) == expected_state(topo)
    # eth0 keeps the main table: no rule names its address, the main default route is untouched.
    assert not [r for r in topo.rules() if r[1].startswith(eth0)]
    assert ("default", pr.GATEWAY_A, "eth0", None, None) in topo.table("main")
    kernel_rules = [(0, "all", "local"), (32766, "all", "main"), (32767, "all", "default")]
    assert sorted(topo.rules()) == sorted(kernel_rules + [(PRIORITY, net1, str(TABLE))])


def test_check_passes_then_fails_without_the_rule(topo):
    config = pr.policy_config(topo.merged_result())
    add(topo)
    ok = topo.finalizer("CHECK", config)
    assert ok.ok and ok.stdout == "", ok
    net1 = topo.address("net1")
    pr.ip("rule", "del", "from", net1, "lookup", str(TABLE), "priority", str(PRIORITY), ns=topo.pod)
    bad = topo.finalizer("CHECK", config)
    assert bad.code == 1 and bad.err_code == 999, bad
    assert "rule from %s/32 lookup %d priority %d" % (net1, TABLE, PRIORITY) in bad.msg, bad
    assert "route" not in bad.msg.split("missing", 1)[1], "only the rule is missing: %s" % bad.msg
    # A route removed by hand is named too.
    add(topo)
    pr.ip("route", "del", "default", "table", str(TABLE), ns=topo.pod)
    bad = topo.finalizer("CHECK", config)
    assert bad.err_code == 999 and "route default via %s dev net1 table %d" % (pr.GATEWAY_B, TABLE) in bad.msg, bad


def test_del_removes_rules_and_tables_and_is_repeatable(topo):
    config = pr.policy_config(topo.merged_result())
    add(topo)
    # Someone else's rule for the same address (another priority) and another table stay.
    net1 = topo.address("net1")
    pr.ip("rule", "add", "from", net1, "lookup", "300", "priority", "500", ns=topo.pod)
    pr.ip("route", "add", "10.231.168.0/24", "dev", "net1", "table", "300", ns=topo.pod)
    out = topo.finalizer("DEL", config)
    assert out.ok and out.stdout == "", out
    assert planned_state(topo) == ([], set())
    assert (500, net1, "300") in topo.rules()
    assert topo.table(300) == {("10.231.168.0/24", None, "net1", None, "link")}
    again = topo.finalizer("DEL", config)
    assert again.ok and again.stdout == "", again
    # Without a prevResult nothing is known to delete: success, nothing touched.
    add(topo)
    out = topo.finalizer("DEL", pr.policy_config(None))
    assert out.ok and planned_state(topo) == expected_state(topo), out
    # The netns gone (and an empty CNI_NETNS): success.
    pr.ip("netns", "del", topo.pod)
    assert topo.finalizer("DEL", config).ok
    assert topo.finalizer("DEL", config, netns="").ok


def test_repeated_add_is_idempotent(topo):
    add(topo)
    first = (topo.rules(), topo.table(TABLE))
    for _ in range(2):
        add(topo)
    assert (topo.rules(), topo.table(TABLE)) == first
    assert topo.finalizer("CHECK", pr.policy_config(topo.merged_result())).ok
    # A route changed by hand is put back by the next ADD.
    pr.ip("route", "replace", "default", "via", pr.GATEWAY_B, "dev", "net1", "table", str(TABLE), "metric", "0",
          "src", topo.address("net1"), ns=topo.pod)
    add(topo)
    assert planned_state(topo) == expected_state(topo)
    assert pr.ping(topo.peer, pr.REMOTE, topo.address("net1"))


def test_options_and_versions(topo):
    merged = topo.merged_result()
    net1 = topo.address("net1")
    # Another table and priority; a 0.4.0 configuration gets the prevResult in 0.4.0.
    v040 = pr.policy_config(merged, version="0.4.0", tableBase=4000000000, rulePriority=32000)
    out = topo.finalizer("ADD", v040)
    assert out.ok and out.out["cniVersion"] == "0.4.0" and all(i["version"] == "4" for i in out.out["ips"]), out
    assert (32000, net1, "4000000000") in topo.rules()
    assert ("default", pr.GATEWAY_B, "net1", None, None) in topo.table(4000000000)
    assert topo.finalizer("CHECK", v040).ok
    assert topo.finalizer("DEL", v040).ok
    assert topo.table(4000000000) == set() and not [r for r in topo.rules() if r[2] == "4000000000"]
    # Restricted to an interface the pod does not have: nothing to do.
    out = topo.finalizer("ADD", pr.policy_config(merged, interfaces=["net7"]))
    assert out.ok and planned_state(topo) == ([], set()), out
    # CNI_IFNAME=net1 makes eth0 the secondary interface.
    out = topo.finalizer("ADD", pr.policy_config(merged), ifname="net1")
    assert out.ok, out
    assert [r for r in topo.rules() if r[2] == str(TABLE)] == [(PRIORITY, topo.address("eth0"), str(TABLE))]
    assert topo.finalizer("DEL", pr.policy_config(merged), ifname="net1").ok
    assert planned_state(topo) == ([], set())


@pytest.mark.parametrize("config, code", [
    (b"{not json", 6),
    ({"cniVersion": "1.0.0", "type": pr.BINARY}, 7),                       # no prevResult on ADD
    ({"cniVersion": "0.2.0", "type": pr.BINARY, "prevResult": {}}, 1),
    ({"tableBase": 254}, 7),
    ({"tableBase": 252}, None),                                           # 252 itself is fine
    ({"tableBase": "100"}, 7),
    ({"rulePriority": 32001}, 7),
    ({"interfaces": []}, 7),
    ({"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/x"}],
                     "ips": [{"address": "10.231.161.9", "interface": 0}]}}, 7),
    ({"prevResult": {"cniVersion": "1.0.0", "interfaces": [], "ips": [{"address": "10.231.161.9/24", "interface": 3}]}}, 7),
])
def test_bad_config_is_a_cni_error(topo, config, code):
    if isinstance(config, dict) and "type" not in config:
        base = pr.policy_config(topo.merged_result())
        base.update(config)
        config = base
    out = topo.finalizer("ADD", config)
    if code is None:
        assert out.ok, out
        assert topo.finalizer("DEL", config).ok
        return
    assert out.code == 1 and out.err_code == code and out.out.get("msg"), out
    assert set(out.out) <= {"cniVersion", "code", "msg", "details"}, out
    assert planned_state(topo) == ([], set()), "nothing is installed on error"


def test_add_into_a_missing_netns_and_interface(topo):
    merged = topo.merged_result()
    out = topo.finalizer("ADD", pr.policy_config(merged), netns="/var/run/netns/%snone" % pr.PREFIX)
    assert out.err_code == 4, out
    # prevResult names an interface the pod does not have.
    pr.ip("link", "set", "net1", "down", ns=topo.pod)
    pr.ip("link", "set", "net1", "name", "net9", ns=topo.pod)
    out = topo.finalizer("ADD", pr.policy_config(merged))
    assert out.err_code == 7 and "net1" in out.msg, out
    assert planned_state(topo) == ([], set())
    pr.ip("link", "set", "net9", "name", "net1", ns=topo.pod)
    pr.ip("link", "set", "net1", "up", ns=topo.pod)


def test_version(pr_session):
    out = pr.cni(pr.binary(), "VERSION", b"", None, None, None)
    assert out.ok and out.out == {"cniVersion": "1.1.0",
                                  "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}, out


@pytest.fixture
def topo6(pr_session, tmp_path):
    yield from built_topology(tmp_path, dual_stack=True)


def test_dual_stack_secondary_interface(topo6):
    t = topo6
    net1, net1_6 = t.address("net1"), t.address("net1", 6)
    # Without the finalizer the pod has no IPv6 default route: net1's address cannot reach the remote.
    assert not pr.ping(t.pod, net1_6, pr.REMOTE6)
    assert pr.ping(t.peer, pr.GATEWAY_B6, net1_6), "the link itself works"
    config = pr.policy_config(t.merged_result())
    out = t.finalizer("ADD", config)
    assert out.ok, out
    assert pr.ping(t.pod, net1_6, pr.REMOTE6) and pr.ping(t.peer, pr.REMOTE6, net1_6)
    assert pr.ping(t.peer, pr.REMOTE, net1)
    assert (PRIORITY, net1_6, str(TABLE)) in t.rules6()
    v6 = {(r[0], r[1], r[2], r[3]) for r in t.table(TABLE, "-6")}
    assert v6 == {("fd31:16:1::/64", None, "net1", net1_6), ("default", pr.GATEWAY_B6, "net1", None)}, v6
    assert t.finalizer("CHECK", config).ok
    pr.ip("-6", "route", "del", "default", "table", str(TABLE), ns=t.pod)
    bad = t.finalizer("CHECK", config)
    assert bad.err_code == 999 and "route default via %s dev net1 table %d" % (pr.GATEWAY_B6, TABLE) in bad.msg, bad
    assert t.finalizer("ADD", config).ok and t.finalizer("CHECK", config).ok
    assert t.finalizer("DEL", config).ok
    assert not [r for r in t.rules6() if r[2] == str(TABLE)] and t.table(TABLE, "-6") == set()
    assert planned_state(t) == ([], set())
    assert not pr.ping(t.pod, net1_6, pr.REMOTE6)


def test_through_plexus_as_a_finalizer(pr_session, tmp_path):
    """The same pod attached by Plexus (eth0 and net1 as its networks): without the finalizer net1's replies leave by
    eth0 and are dropped; with `finalizers: [{"type": "plexus-policy-route"}]` Plexus runs it after both networks
    with their merged result, traffic works both ways on both interfaces, CHECK passes, and DEL removes the rules
    before the interfaces."""
    t = pr.Topology(tmp_path / "host-local")
    plexus = pr.px.Plexus(pr.px.build_bin_dir())
    cid = t.cid
    try:
        t.build(attach=False)
        eth0_conf, net1_conf = t.plexus_networks()
        base = pr.px.plexus_config("1.0.0", str(tmp_path / "cache"), str(tmp_path / "conf"), [eth0_conf, net1_conf])

        def addresses():
            return {n: a for n, a in pr.px.nl.addresses(t.pod).items() if n != "lo"}

        r = plexus.add(base, cid, t.pod)
        assert r.ok, r
        eth0, net1 = addresses()["eth0"][0].split("/")[0], addresses()["net1"][0].split("/")[0]
        assert pr.ping(t.peer, pr.REMOTE, eth0) and not pr.ping(t.peer, pr.REMOTE, net1)
        assert plexus.delete(base, cid, t.pod).ok

        cfg = dict(base, finalizers=[{"type": "plexus-policy-route"}])
        r = plexus.add(cfg, cid, t.pod)
        assert r.ok, r
        # The runtime still gets the cluster network's result only.
        assert [i["name"] for i in r.out["interfaces"] if i.get("sandbox")] == ["eth0"], r.out
        eth0, net1 = addresses()["eth0"][0].split("/")[0], addresses()["net1"][0].split("/")[0]
        for ns, src, dst in ((t.peer, pr.REMOTE, net1), (t.pod, net1, pr.REMOTE),
                             (t.peer, pr.REMOTE, eth0), (t.pod, eth0, pr.REMOTE)):
            assert pr.ping(ns, src, dst), (ns, src, dst)
        assert [r for r in t.rules() if r[2] == str(TABLE)] == [(PRIORITY, net1, str(TABLE))]
        assert ("default", pr.GATEWAY_B, "net1", None, None) in t.table(TABLE)
        assert plexus.check(cfg, cid, t.pod).ok
        # CHECK reaches the finalizer: a rule deleted by hand fails it.
        pr.ip("rule", "del", "from", net1, "lookup", str(TABLE), "priority", str(PRIORITY), ns=t.pod)
        bad = plexus.check(cfg, cid, t.pod)
        assert bad.code == 1 and "plexus-policy-route" in bad.msg, bad
        assert plexus.add(cfg, cid, t.pod).ok, "a repeated ADD tears down and re-attaches"
        r = plexus.delete(cfg, cid, t.pod)
        assert r.ok, r
        assert [r for r in t.rules() if r[2] == str(TABLE)] == [] and t.table(TABLE) == set()
        assert sorted(addresses()) == [], "the interfaces are gone"
        assert not os.listdir(str(tmp_path / "cache" / "results"))
    finally:
        errors = t.cleanup()
        if errors:
            sys.stderr.write("pxpr cleanup errors: %s\n" % errors)
