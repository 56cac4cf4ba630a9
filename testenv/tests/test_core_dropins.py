"""Drop-in plugin directories (libcni 1.3) and Multus' auxiliaryCNIChainName, in real netns with Debian's bridge,
host-local and tuning: the drop-in's sysctl is visible in the pod, `loadOnlyInlinedPlugins` keeps it out, a drop-in
removed between ADD and DEL is still DELed from the cache, a broken drop-in is a clear error that attaches nothing."""

import json
import os
import shutil
import subprocess

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod

SYSCTL = "net.ipv4.conf.eth0.arp_filter"


def sysctl(ns, key):
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", key], check=True, stdout=subprocess.PIPE,
                          text=True).stdout.strip()


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


class Cluster:
    """A bridge cluster network in ``<confDir>/10-cluster.conflist`` named by path, as the installer does."""

    def __init__(self, env, name="pxdrop", **list_extra):
        self.env = env
        self.bridge = env.bridge()
        self.name = name
        self.path = os.path.join(env.conf_dir, "10-cluster.conflist")
        self.dropins = os.path.join(env.conf_dir, name)
        write(self.path, px.conflist(name, "1.0.0", [px.bridge(self.bridge, env.subnet(), env.data_dir)], **list_extra))

    def config(self, **extra):
        return self.env.config("1.0.0", clusterNetwork=self.path, **extra)

    def tuning_dropin(self):
        write(os.path.join(self.dropins, "10-tuning.conf"), {"type": "tuning", "sysctl": {SYSCTL: "1"}})

    def recorder_dropin(self):
        write(os.path.join(self.dropins, "20-record.conf"), px.fake(recordDir=self.env.rec_dir))


def test_cluster_network_drop_ins_run_and_del_replays_them_after_removal(pxenv):
    cl = Cluster(pxenv)
    cl.tuning_dropin()
    cl.recorder_dropin()
    pod = Pod(pxenv)
    cfg = cl.config()
    r = pod.add(cfg)
    assert r.code == 0, r
    assert sysctl(pod.ns, SYSCTL) == "1", "the tuning drop-in did not run"
    adds = px.read_records(pxenv.rec_dir, "ADD")
    assert len(adds) == 1 and adds[0]["stdin"]["name"] == cl.name, adds
    # The drop-in got the chain's prevResult (bridge, then tuning passed it on).
    assert adds[0]["stdin"]["prevResult"]["ips"], adds[0]
    cached = json.loads(px.entry_config(pxenv.cache.result_entry(cl.name, pod.cid, "eth0")))
    assert [p["type"] for p in cached["plugins"]] == ["bridge", "tuning", px.FAKE], cached

    # The drop-ins go away before the DEL: DEL still runs the chain the ADD ran.
    shutil.rmtree(cl.dropins)
    r = pod.delete(cfg)
    assert r.code == 0, r
    dels = px.read_records(pxenv.rec_dir, "DEL")
    assert len(dels) == 1 and dels[0]["env"]["CNI_IFNAME"] == "eth0", dels
    pxenv.assert_clean(netns=[pod.ns], bridges=[cl.bridge])


def test_load_only_inlined_plugins_leaves_the_drop_ins_out(pxenv):
    cl = Cluster(pxenv, loadOnlyInlinedPlugins="true")
    cl.tuning_dropin()
    cl.recorder_dropin()
    pod = Pod(pxenv)
    cfg = cl.config()
    r = pod.add(cfg)
    assert r.code == 0, r
    assert sysctl(pod.ns, SYSCTL) == "0"
    assert px.read_records(pxenv.rec_dir) == []
    cached = json.loads(px.entry_config(pxenv.cache.result_entry(cl.name, pod.cid, "eth0")))
    assert [p["type"] for p in cached["plugins"]] == ["bridge"], cached
    assert pod.delete(cfg).code == 0
    pxenv.assert_clean(netns=[pod.ns], bridges=[cl.bridge])


def test_a_drop_in_added_after_the_add_is_not_run_by_del(pxenv):
    cl = Cluster(pxenv)
    pod = Pod(pxenv)
    cfg = cl.config()
    assert pod.add(cfg).code == 0
    cl.recorder_dropin()
    assert pod.delete(cfg).code == 0
    assert px.read_records(pxenv.rec_dir) == [], "DEL ran a plugin the ADD never ran"
    pxenv.assert_clean(netns=[pod.ns], bridges=[cl.bridge])


def test_broken_drop_ins_are_clear_errors_and_attach_nothing(pxenv):
    cl = Cluster(pxenv)
    cases = [("{not json", 6), ('{"sysctl":{}}', 7), ('{"type":"../../../bin/sh"}', 7), ('["tuning"]', 7)]
    for text, code in cases:
        write(os.path.join(cl.dropins, "50-bad.conf"), text)
        pod = Pod(pxenv)
        r = pod.add(cl.config())
        assert r.code == 1 and r.out["code"] == code, (text, r)
        assert os.path.join(cl.dropins, "50-bad.conf") in r.out["msg"], r.out
        assert "pxns/pxpod" in r.out["msg"], r.out
        assert pod.links() == [], "nothing may be attached"
        # The runtime's DEL of the failed ADD succeeds.
        assert pod.delete(cl.config()).code == 0
        pxenv.assert_clean(netns=[pod.ns], bridges=[cl.bridge])


def test_multus_auxiliary_chain_from_multus_example(pxenv):
    """Multus' e2e (subdirectory-chaining-passthru): `auxiliaryCNIChainName: vendor-cni-chain` and a tuning conf
    `sysctltwiddle.conf` in `<dir of clusterNetwork>/vendor-cni-chain/`, run as the last delegate after passthru."""
    cl = Cluster(pxenv)
    chain = os.path.join(pxenv.conf_dir, "vendor-cni-chain")
    write(os.path.join(chain, "sysctltwiddle.conf"),
          {"cniVersion": "1.0.0", "name": "sysctltwiddle", "type": "tuning", "sysctl": {SYSCTL: "1"}})
    # The shape of Multus' generated 00-multus.conf, with Plexus as the type.
    cfg = {"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "plexus", "logLevel": "debug",
           "logToStderr": True, "binDir": px.DEBIAN_CNI_DIR, "cniDir": pxenv.cni_dir, "confDir": pxenv.conf_dir,
           "clusterNetwork": cl.path, "auxiliaryCNIChainName": "vendor-cni-chain"}
    pod = Pod(pxenv)
    r = pod.add(cfg)
    assert r.code == 0, r
    assert sysctl(pod.ns, SYSCTL) == "1"
    assert pod.links() == ["eth0"], "the auxiliary chain creates no interface"
    # The runtime's result is the cluster network's.
    assert [i["name"] for i in r.out["interfaces"] if i.get("sandbox")] == ["eth0"], r.out
    entry = pxenv.cache.result_entry("vendor-cni-chain", pod.cid, "net1")
    assert [p["type"] for p in json.loads(px.entry_config(entry))["plugins"]] == ["plexus-passthru", "tuning"]
    assert pod.check(cfg).code == 0
    shutil.rmtree(chain)
    assert pod.delete(cfg).code == 0
    pxenv.assert_clean(netns=[pod.ns], bridges=[cl.bridge])
