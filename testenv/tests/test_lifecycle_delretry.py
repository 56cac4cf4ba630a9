"""Lifecycle: a DEL that fails on some networks continues past them (reverse order), reports all failures, keeps
the plan and result cache of exactly the failed networks, and a retried DEL finishes the job."""

import os
import stat

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod


def flaky_plugin(pxenv):
    """``pxflaky``: refuses DEL while <tmp>/flaky-flag exists (logging the refusal), else behaves as the fake."""
    bindir = pxenv.dir("flakybin")
    flag = os.path.join(pxenv.tmp, "flaky-flag")
    log = os.path.join(pxenv.tmp, "flaky-log")
    script = os.path.join(bindir, "pxflaky")
    with open(script, "w") as f:
        f.write('#!/bin/sh\n'
                'if [ "$CNI_COMMAND" = DEL ] && [ -e %s ]; then\n'
                '  cat >/dev/null\n'
                '  echo "$CNI_IFNAME" >> %s\n'
                '  echo \'{"cniVersion":"1.0.0","code":11,"msg":"pxflaky refuses DEL"}\'\n'
                '  exit 1\n'
                'fi\n'
                'exec %s\n' % (flag, log, os.path.join(pxenv.bin_dir, px.FAKE)))
    os.chmod(script, stat.S_IRWXU)
    return bindir, flag, log


def test_failed_del_keeps_only_failed_networks_and_retry_finishes(pxenv):
    bindir, flag, log = flaky_plugin(pxenv)
    b0, b1 = pxenv.bridge(), pxenv.bridge()
    rec = pxenv.rec_dir
    lists = [
        px.conflist("pxd0", "1.0.0", [px.fake(recordDir=rec), px.bridge(b0, pxenv.subnet(), pxenv.data_dir)]),
        px.conflist("pxd1", "1.0.0", [px.bridge(b1, pxenv.subnet(), pxenv.data_dir), {"type": "pxflaky"}]),
        px.conflist("pxd2", "1.0.0", [px.fake(recordDir=rec, stateDir=pxenv.state_dir), {"type": "pxflaky"}]),
    ]
    cfg = pxenv.config("1.0.0", lists)
    pod = Pod(pxenv)
    cni_path = bindir + ":" + pxenv.bin_dir
    a = pod.add(cfg, cni_path=cni_path)
    assert a.code == 0, a
    host0 = px.host_side_interfaces(pxenv.cache.result_entry("pxd0", pod.cid, "eth0")["result"], b0)
    host1 = px.host_side_interfaces(pxenv.cache.result_entry("pxd1", pod.cid, "net1")["result"], b1)

    open(flag, "w").close()
    d = pod.delete(cfg, cni_path=cni_path)
    assert d.code == 1 and d.out["code"] == 11, d
    assert 'network "pxd1"' in d.out["msg"] and 'network "pxd2"' in d.out["msg"], d.out
    assert 'network "pxd0"' not in d.out["msg"], d.out
    # both refused, eth0 deleted (networks are torn down concurrently: no order across networks, only within a chain)
    assert sorted(open(log).read().split()) == ["net1", "net2"]
    assert [r["env"]["CNI_IFNAME"] for r in px.read_records(rec, "DEL")] == ["eth0"]
    # eth0 is gone for good; net1/net2 kept with their resources, plan and cache
    assert pod.links() == ["net1"], pod.links()
    assert not any(nl.link_exists(l) for l in host0)
    assert sorted(pxenv.reservations()) == ["pxd1"], pxenv.reservations()
    assert os.listdir(pxenv.state_dir) == [pod.cid + "-net2"]
    assert sorted(pxenv.cache.result_files()) == sorted(["pxd1-%s-net1" % pod.cid, "pxd2-%s-net2" % pod.cid])
    plan = pxenv.cache.plan("pxnet", pod.cid, "eth0")
    assert [(n["name"], n["ifName"]) for n in plan["networks"]] == [("pxd1", "net1"), ("pxd2", "net2")], plan

    # still failing: same answer, nothing lost
    d = pod.delete(cfg, cni_path=cni_path)
    assert d.code == 1, d
    assert sorted(pxenv.reservations()) == ["pxd1"]

    os.unlink(flag)
    d = pod.delete(cfg, cni_path=cni_path)
    assert d.code == 0, d
    assert os.listdir(pxenv.state_dir) == []
    pxenv.assert_clean(netns=[pod.ns], bridges=[b0, b1], host_links=host0 + host1)
