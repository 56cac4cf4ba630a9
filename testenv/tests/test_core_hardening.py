"""Core hardening (issue 16) with the real binary, real netns and Debian's reference plugins: per-interface
CNI_ARGS, two Plexus attachments in one container, numeric extremes on teardown, Plexus' own cache files as
untrusted input (foreign records, traversing names, symlinks, FIFOs) and NUL in a delegate type. Each case failed
before the fix (wrong IP/MAC, a destroyed first attachment, SIGILL, an escape, a hang) and checks kernel and disk
state afterwards."""

import json
import os
import stat

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod


def two_bridges(pxenv, names=("pxha", "pxhb")):
    bridges = [pxenv.bridge(), pxenv.bridge()]
    subnets = [pxenv.subnet(), pxenv.subnet()]
    lists = [px.conflist(n, "1.0.0", [px.bridge(b, s, pxenv.data_dir)]) for n, b, s in zip(names, bridges, subnets)]
    return lists, bridges, subnets


def link_facts(ns):
    out = {}
    for l in nl.ip_json("-d", "addr", "show", ns=ns):
        if l["ifname"] != "lo":
            out[l["ifname"]] = (l.get("address"), sorted("%s/%s" % (a["local"], a["prefixlen"])
                                                         for a in l.get("addr_info", []) if a["family"] == "inet"))
    return out


def test_runtime_ip_and_mac_reach_only_the_cluster_network(pxenv):
    """podman --ip/--mac-address: CNI_ARGS IP=/MAC= are for eth0; net1 allocates its own IP and keeps its own MAC."""
    lists, bridges, subnets = two_bridges(pxenv)
    pod = Pod(pxenv)
    ip = subnets[0].replace(".0/24", ".50")
    mac = "02:00:00:aa:bb:cc"
    args = "IgnoreUnknown=1;K8S_POD_NAME=pxpod;IP=%s;MAC=%s" % (ip, mac)
    cfg = pxenv.config("1.0.0", lists)
    r = pod.add(cfg, cni_args=args)
    assert r.code == 0, r
    facts = link_facts(pod.ns)
    assert facts["eth0"] == (mac, [ip + "/24"]), facts
    assert facts["net1"][0] != mac, facts
    assert len(facts["net1"][1]) == 1 and facts["net1"][1][0].startswith(subnets[1].rsplit(".", 2)[0]), facts
    assert pxenv.reservations()["pxha"] == {ip: pod.cid}, pxenv.reservations()
    # The cached args of the secondary network are what its DEL replays: no IP/MAC there either.
    e = pxenv.cache.result_entry("pxhb", pod.cid, "net1")
    assert [k for k, _ in e["cniArgs"]] == ["IgnoreUnknown", "K8S_POD_NAME"], e["cniArgs"]
    assert pod.delete(cfg, cni_args=args).code == 0
    pxenv.assert_clean(netns=[pod.ns], bridges=bridges)


def test_two_plexus_attachments_in_one_container(pxenv):
    """meta1 {A, B} on eth0 and meta2 {C, B} on eth1 in one netns and container: both attach, neither's DEL or
    rollback touches the other (it used to fail with "net1 already exists" and tear down meta1's B)."""
    bridges = [pxenv.bridge() for _ in range(3)]
    subnets = [pxenv.subnet() for _ in range(3)]
    A, B, C = (px.conflist(n, "1.0.0", [px.bridge(b, s, pxenv.data_dir)])
               for n, b, s in zip(("pxma", "pxmb", "pxmc"), bridges, subnets))
    meta1 = pxenv.config("1.0.0", [A, B], name="pxmeta1")
    meta2 = pxenv.config("1.0.0", [C, B], name="pxmeta2")
    pod = Pod(pxenv)
    r1 = pod.add(meta1, ifname="eth0")
    assert r1.code == 0, r1
    before = link_facts(pod.ns)
    r2 = pod.add(meta2, ifname="eth1")
    assert r2.code == 0, r2
    after = link_facts(pod.ns)
    assert sorted(after) == ["eth0", "eth1", "net1", "net2"], after
    assert all(after[k] == v for k, v in before.items()), (before, after)
    res = pxenv.reservations()
    assert sorted(res["pxmb"].values()) == [pod.cid, pod.cid], res   # two B addresses: net1 and net2
    assert {e for e in pxenv.cache.result_files()} == {
        "pxma-%s-eth0" % pod.cid, "pxmb-%s-net1" % pod.cid, "pxmb-%s-net2" % pod.cid, "pxmc-%s-eth1" % pod.cid}
    assert [n["ifName"] for n in pxenv.cache.plan("pxmeta2", pod.cid, "eth1")["networks"]] == ["eth1", "net2"]

    # podman network disconnect: DEL meta2, twice (the second without any record).
    for _ in range(2):
        d = pod.delete(meta2, ifname="eth1")
        assert d.code == 0, d
        assert link_facts(pod.ns) == before
    assert sorted(pxenv.cache.result_files()) == ["pxma-%s-eth0" % pod.cid, "pxmb-%s-net1" % pod.cid]
    assert len(pxenv.reservations()["pxmb"]) == 1

    # A failing third network in meta2 rolls back only meta2's own interfaces.
    bad = px.conflist("pxmfail", "1.0.0", [px.fake(fail={"ADD": {"code": 7, "msg": "injected"}})])
    meta2bad = pxenv.config("1.0.0", [C, B, bad], name="pxmeta2", binDir=pxenv.bin_dir)
    f = pod.run("ADD", meta2bad, ifname="eth1", cni_path=pxenv.bin_dir + ":" + px.DEBIAN_CNI_DIR)
    assert f.code == 1 and f.err_code == 7, f
    assert link_facts(pod.ns) == before
    assert pod.delete(meta1, ifname="eth0").code == 0
    pxenv.assert_clean(netns=[pod.ns], bridges=bridges)


def fake_pod(pxenv, **delegate_keys):
    """A pod on one fake-delegate network (records every call, keeps per-attachment state files)."""
    lst = px.conflist("pxfk", "1.0.0", [px.fake(recordDir=pxenv.rec_dir, stateDir=pxenv.state_dir, **delegate_keys)])
    return Pod(pxenv), pxenv.config("1.0.0", [lst], binDir=pxenv.bin_dir)


def test_huge_timeouts_are_code_7_on_add_and_never_block_teardown(pxenv):
    pod, cfg = fake_pod(pxenv)
    assert pod.add(cfg).code == 0
    for key in ("delegateTimeoutSeconds", "readinessTimeoutSeconds", "apiDeadlineSeconds"):
        for value in ("1e10", "1e400", "-0"):
            text = json.dumps(cfg)[:-1] + ', "%s": %s}' % (key, value)
            a = pod.add(text.encode())
            assert a.code == 1 and a.err_code == 7 and key in a.msg, (key, value, a)
    text = json.dumps(cfg)[:-1] + ', "delegateTimeoutSeconds": 1e400}'
    d = pod.delete(text.encode())
    assert d.code == 0, d    # used to die with SIGILL: the pod could never be deleted
    assert "using its default" in d.stderr
    g = pxenv.px.run("GC", json.dumps(dict(json.loads(json.dumps(cfg)), cniVersion="1.1.0"))[:-1]
                     + ', "delegateTimeoutSeconds": 1e10}')
    assert g.code == 0, g
    assert pxenv.cache_files() == [] and os.listdir(pxenv.state_dir) == []


def test_foreign_record_at_a_containers_path_never_acts_on_the_other(pxenv):
    pod_x, cfg = fake_pod(pxenv)
    pod_y = Pod(pxenv, "pxpody")
    assert pod_x.add(cfg).code == 0 and pod_y.add(cfg).code == 0
    px_path = pxenv.cache.plan_path("pxnet", pod_x.cid, "eth0")
    os.unlink(px_path)
    os.symlink(pxenv.cache.plan_path("pxnet", pod_y.cid, "eth0"), px_path)
    d = pod_x.delete(cfg)
    assert d.code == 0, d
    dels = px.read_records(pxenv.rec_dir, command="DEL")
    assert dels and all(r["env"]["CNI_CONTAINERID"] == pod_x.cid for r in dels), dels
    assert pxenv.cache.files_of(pod_x.cid) == []
    assert len(pxenv.cache.files_of(pod_y.cid)) == 2
    assert os.listdir(pxenv.state_dir) == ["%s-eth0" % pod_y.cid]
    assert pod_y.delete(cfg).code == 0 and pxenv.cache_files() == []


def test_traversing_name_in_a_record_never_writes_outside_cni_dir(pxenv):
    pod, cfg = fake_pod(pxenv, fail={"DEL": {"code": 11, "msg": "DEL fails, so the record is rewritten"}})
    assert pod.add(cfg).code == 0
    p = pxenv.cache.plan_path("pxnet", pod.cid, "eth0")
    rec = pxenv.cache.plan("pxnet", pod.cid, "eth0")
    rec["network"] = "../../../pxescape/x"
    with open(p, "w") as f:
        json.dump(rec, f)
    d = pod.delete(cfg)
    assert d.code == 1 and d.err_code == 11, d
    assert not os.path.exists(os.path.join(pxenv.tmp, "pxescape"))
    assert not os.path.exists(os.path.join(os.path.dirname(pxenv.tmp), "pxescape"))
    # The record left for the retry is this attachment's own, at its own path.
    assert pxenv.cache.plan_files() == ["pxnet-%s-eth0" % pod.cid]
    rec = pxenv.cache.plan("pxnet", pod.cid, "eth0")
    assert rec["network"] == "pxnet" and rec["state"] == "delete-failed", rec
    assert sorted(os.listdir(pxenv.cni_dir)) == ["attachments", "locks", "results"]


def test_dangling_lock_symlink_is_never_followed(pxenv):
    pod, cfg = fake_pod(pxenv)
    locks = os.path.join(pxenv.cni_dir, "locks")
    os.makedirs(locks)
    target = os.path.join(pxenv.tmp, "outside", "created-by-plexus")
    os.makedirs(os.path.dirname(target))
    os.symlink(target, os.path.join(locks, "gc"))
    assert pod.add(cfg).code == 0
    assert not os.path.exists(target)
    assert stat.S_ISREG(os.lstat(os.path.join(locks, "gc")).st_mode)
    assert pod.delete(cfg).code == 0


def test_record_replaced_by_a_symlink_to_a_fifo_does_not_block_del(pxenv):
    pod, cfg = fake_pod(pxenv)
    assert pod.add(cfg).code == 0
    fifo = os.path.join(pxenv.tmp, "pxfifo")
    os.mkfifo(fifo)
    p = pxenv.cache.plan_path("pxnet", pod.cid, "eth0")
    os.unlink(p)
    os.symlink(fifo, p)
    rp = pxenv.cache.result_path("pxfk", pod.cid, "eth0")
    os.unlink(rp)
    os.mkfifo(rp)
    d = pod.run("DEL", cfg, timeout=20)    # used to block forever
    assert d.code == 0, d
    assert "not a regular file" in d.stderr or "Too many levels" in d.stderr, d.stderr
    assert pxenv.cache.files_of(pod.cid) == [] and os.listdir(pxenv.state_dir) == []


def test_nul_in_a_delegate_type_never_runs_the_truncated_name(pxenv):
    pod = Pod(pxenv)
    marker = os.path.join(pxenv.tmp, "evil-ran")
    bindir = pxenv.dir("evilbin")
    with open(os.path.join(bindir, "evil"), "w") as f:
        f.write("#!/bin/sh\necho ran >> %s\necho '{\"cniVersion\":\"1.0.0\"}'\n" % marker)
    os.chmod(os.path.join(bindir, "evil"), stat.S_IRWXU)
    cfg = pxenv.config("1.0.0", [{"cniVersion": "1.0.0", "name": "pxevil", "type": "evil\u0000"}], binDir=bindir)
    conf_file = os.path.join(pxenv.conf_dir, "pxevil2.conf")
    with open(conf_file, "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "pxevil2", "type": "evil\u0000.x"}, f)
    for c in (cfg, pxenv.config("1.0.0", clusterNetwork=conf_file, binDir=bindir)):
        r = pod.run("ADD", c, cni_path=bindir)
        assert r.code == 1 and r.err_code == 7, r
        assert "\\x0" in r.msg and "control" in r.msg, r
        # DEL never fails because a configured network cannot be loaded; it just has nothing to run.
        d = pod.run("DEL", c, cni_path=bindir)
        assert d.code == 0 and "control characters" in d.stderr, d
    assert not os.path.exists(marker)


def test_delegate_with_an_invalid_error_code_gives_a_valid_cni_error(pxenv):
    for code in (0, -1, 42):
        pod, cfg = fake_pod(pxenv, fail={"ADD": {"code": code, "msg": "odd failure"}})
        r = pod.add(cfg)
        assert r.code == 1 and r.err_code == 999, r
        assert ("code %d" % code) in r.out["details"] and "odd failure" in r.out["details"], r
        assert pod.delete(cfg).code == 0
    assert pxenv.cache_files() == []


def test_links_that_already_exist_in_the_netns_are_never_reused_or_deleted(pxenv):
    """A link named net1 already in the pod (another runtime network, a leftover): the secondary network is attached
    as net2, and a runtime ifname that exists fails with code 7 before any delegate runs, so no rollback can delete
    the existing link."""
    lists, bridges, _ = two_bridges(pxenv)
    pod = Pod(pxenv)
    nl.ip("link", "add", "net1", "type", "veth", "peer", "name", "pxpeer1", ns=pod.ns)
    cfg = pxenv.config("1.0.0", lists)
    r = pod.add(cfg)
    assert r.code == 0, r
    assert pod.links() == ["eth0", "net1", "net2", "pxpeer1"], pod.links()
    assert [n["ifName"] for n in pxenv.cache.plan("pxnet", pod.cid, "eth0")["networks"]] == ["eth0", "net2"]
    assert pod.delete(cfg).code == 0
    assert pod.links() == ["net1", "pxpeer1"]

    taken = pod.add(cfg, ifname="pxpeer1")
    assert taken.code == 1 and taken.err_code == 7 and "existing interface" in taken.msg, taken
    assert pod.links() == ["net1", "pxpeer1"]
    pxenv.assert_clean(bridges=bridges)
