"""Lifecycle: CNI 1.1 GC.

* Two containers x three networks (real bridge 1.0.0 cluster network, two fake 1.1.0 networks with a stateDir):
  the runtime declares only container 1 valid -> container 2's attachments are deleted on every network (state
  files, links, IPs, cache), container 1's are untouched, and every 1.1.0 delegate network gets the GC verb with
  exactly its still-cached attachments.
* The same container ID on two Plexus configurations (different ``name``, ifnames eth0/eth1) sharing one
  delegate network: GC of one never touches the other.
"""

import os

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod


def gc(pxenv, cfg, valid):
    c = dict(cfg)
    c["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": ifn} for cid, ifn in valid]
    return pxenv.px.run("GC", c)


def gc_records(pxenv, network):
    recs = [r for r in px.read_records(pxenv.rec_dir, "GC") if r["stdin"]["name"] == network]
    return [sorted((a["containerID"], a["ifname"]) for a in r["stdin"]["cni.dev/valid-attachments"]) for r in recs]


def state_files(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_gc_deletes_only_invalid_container(pxenv):
    b = pxenv.bridge()
    s1, s2 = pxenv.dir("state1"), pxenv.dir("state2")
    lists = [
        px.conflist("pxgbr", "1.0.0", [px.bridge(b, pxenv.subnet(), pxenv.data_dir)]),
        px.conflist("pxgf1", "1.1.0", [px.fake(recordDir=pxenv.rec_dir, stateDir=s1, ip="10.231.70.2/24")]),
        px.conflist("pxgf2", "1.1.0", [px.fake(recordDir=pxenv.rec_dir, stateDir=s2, ip="10.231.71.2/24")]),
    ]
    cfg = pxenv.config("1.1.0", lists, name="pxgc")
    c1, c2 = Pod(pxenv, "pxpod1"), Pod(pxenv, "pxpod2")
    for p in (c1, c2):
        r = p.add(cfg)
        assert r.code == 0, r
    links2 = px.host_side_interfaces(pxenv.cache.result_entry("pxgbr", c2.cid, "eth0")["result"], b)
    links1 = px.host_side_interfaces(pxenv.cache.result_entry("pxgbr", c1.cid, "eth0")["result"], b)
    assert state_files(s1) == sorted([c1.cid + "-net1", c2.cid + "-net1"])
    assert state_files(s2) == sorted([c1.cid + "-net2", c2.cid + "-net2"])
    # a delegate-level leftover no Plexus attachment knows about: only the delegate GC verb can remove it
    open(os.path.join(s1, "pxghost-net1"), "w").close()
    c1_files = sorted(pxenv.cache.files_of(c1.cid))
    assert len(c1_files) == 4 and len(pxenv.cache.files_of(c2.cid)) == 4
    c1_res = {ip: c for ip, c in pxenv.reservations()["pxgbr"].items() if c == c1.cid}
    assert len(c1_res) == 1 and len(pxenv.reservations()["pxgbr"]) == 2

    r = gc(pxenv, cfg, [(c1.cid, "eth0")])
    assert r.code == 0, r

    # container 2: gone everywhere
    assert pxenv.cache.files_of(c2.cid) == [], pxenv.cache.files_of(c2.cid)
    assert c2.links() == []
    assert not any(nl.link_exists(l) for l in links2), links2
    assert c2.cid not in pxenv.reservations().get("pxgbr", {}).values(), pxenv.reservations()
    # container 1: untouched
    assert sorted(pxenv.cache.files_of(c1.cid)) == c1_files
    assert c1.links() == ["eth0"]
    assert all(nl.link_exists(l) for l in links1)
    assert pxenv.reservations()["pxgbr"] == c1_res
    # the delegates: container 2 DELeted, then GC with exactly container 1's attachment of that network
    assert state_files(s1) == [c1.cid + "-net1"], state_files(s1)
    assert state_files(s2) == [c1.cid + "-net2"], state_files(s2)
    assert gc_records(pxenv, "pxgf1") == [[(c1.cid, "net1")]], gc_records(pxenv, "pxgf1")
    assert gc_records(pxenv, "pxgf2") == [[(c1.cid, "net2")]], gc_records(pxenv, "pxgf2")
    dels = sorted((r["env"]["CNI_CONTAINERID"], r["stdin"]["name"]) for r in px.read_records(pxenv.rec_dir, "DEL"))
    assert dels == [(c2.cid, "pxgf1"), (c2.cid, "pxgf2")], dels

    # GC again with the same valid list: idempotent
    r = gc(pxenv, cfg, [(c1.cid, "eth0")])
    assert r.code == 0, r
    assert sorted(pxenv.cache.files_of(c1.cid)) == c1_files and c1.links() == ["eth0"]

    # GC with an empty valid list removes container 1 as well
    r = gc(pxenv, cfg, [])
    assert r.code == 0, r
    assert state_files(s1) == [] and state_files(s2) == []
    pxenv.assert_clean(netns=[c1.ns, c2.ns], bridges=[b], host_links=links1 + links2)


def test_gc_of_one_plexus_config_never_touches_another(pxenv):
    """Container X attached by Plexus config "pxgca" (eth0) and by "pxgcb" (eth1), in the same cniDir, both using
    the delegate network "pxshared"."""
    shared_state, sb = pxenv.dir("shared"), pxenv.dir("stateb")
    b = pxenv.bridge()
    shared = px.conflist("pxshared", "1.1.0", [px.fake(recordDir=pxenv.rec_dir, stateDir=shared_state,
                                                       ip="10.231.72.2/24")])
    cfg_a = pxenv.config("1.1.0", [shared, px.conflist("pxbra", "1.0.0", [px.bridge(b, pxenv.subnet(), pxenv.data_dir)])],
                         name="pxgca")
    cfg_b = pxenv.config("1.1.0", [shared, px.conflist("pxgfb", "1.1.0", [px.fake(recordDir=pxenv.rec_dir,
                                                                                  stateDir=sb, ip="10.231.73.2/24")])],
                         name="pxgcb")
    x = Pod(pxenv, "pxpodx")
    ra = x.add(cfg_a, ifname="eth0")
    rb = x.add(cfg_b, ifname="eth1")
    assert ra.code == 0 and rb.code == 0, (ra, rb)
    assert state_files(shared_state) == sorted([x.cid + "-eth0", x.cid + "-eth1"])
    # pxgca's bridge holds net1 in the netns, so pxgcb's secondary network moves to net2.
    assert state_files(sb) == [x.cid + "-net2"]
    b_files = sorted([
        "attachments/pxgcb-%s-eth1" % x.cid, "results/pxshared-%s-eth1" % x.cid, "results/pxgfb-%s-net2" % x.cid])
    a_files = sorted([
        "attachments/pxgca-%s-eth0" % x.cid, "results/pxshared-%s-eth0" % x.cid, "results/pxbra-%s-net1" % x.cid])
    assert sorted(pxenv.cache_files()) == sorted(a_files + b_files)
    a_link = px.host_side_interfaces(pxenv.cache.result_entry("pxbra", x.cid, "net1")["result"], b)

    # 1. A's GC listing A's attachment: nothing changes, and "pxshared" is GCed with both live attachments
    r = gc(pxenv, cfg_a, [(x.cid, "eth0")])
    assert r.code == 0, r
    assert sorted(pxenv.cache_files()) == sorted(a_files + b_files)
    assert state_files(shared_state) == sorted([x.cid + "-eth0", x.cid + "-eth1"])
    assert gc_records(pxenv, "pxshared")[-1] == sorted([(x.cid, "eth0"), (x.cid, "eth1")])

    # 2. A's GC naming only B's ifname (not A's attachment): A's attachment goes, B's stays entirely
    r = gc(pxenv, cfg_a, [(x.cid, "eth1")])
    assert r.code == 0, r
    assert sorted(pxenv.cache_files()) == b_files, pxenv.cache_files()
    assert state_files(shared_state) == [x.cid + "-eth1"], state_files(shared_state)
    assert state_files(sb) == [x.cid + "-net2"]
    assert x.links() == [] and not any(nl.link_exists(l) for l in a_link)
    assert pxenv.reservations() == {}
    assert gc_records(pxenv, "pxshared")[-1] == [(x.cid, "eth1")], gc_records(pxenv, "pxshared")
    assert gc_records(pxenv, "pxgfb") == [], "A's GC must not GC B's own networks"

    # 3. A's GC with nothing valid: B still untouched
    r = gc(pxenv, cfg_a, [])
    assert r.code == 0, r
    assert sorted(pxenv.cache_files()) == b_files
    assert state_files(shared_state) == [x.cid + "-eth1"] and state_files(sb) == [x.cid + "-net2"]

    # 4. B's own GC with B's attachment valid keeps it; B's DEL then cleans up
    r = gc(pxenv, cfg_b, [(x.cid, "eth1")])
    assert r.code == 0, r
    assert sorted(pxenv.cache_files()) == b_files
    assert gc_records(pxenv, "pxgfb") == [[(x.cid, "net2")]]
    d = x.delete(cfg_b, ifname="eth1")
    assert d.code == 0, d
    assert state_files(shared_state) == [] and state_files(sb) == []
    pxenv.assert_clean(netns=[x.ns], bridges=[b])


def test_gc_requires_110_and_rejects_bad_valid_list(pxenv):
    cfg = pxenv.config("1.0.0", [px.conflist("pxgf", "1.1.0", [px.fake(recordDir=pxenv.rec_dir)])], name="pxgc")
    r = gc(pxenv, cfg, [])
    assert r.code == 1 and r.out["code"] == 1, r
    cfg["cniVersion"] = "1.1.0"
    c = dict(cfg)
    c["cni.dev/valid-attachments"] = {"containerID": "x"}
    r = pxenv.px.run("GC", c)
    assert r.code == 1 and r.out["code"] == 7 and "valid-attachments" in r.msg, r
    assert px.read_records(pxenv.rec_dir) == []
