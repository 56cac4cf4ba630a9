"""Admin CLI: ``plexus inspect`` over a real node cache (real netns, Debian's bridge/host-local) and ``plexus
validate`` over NAD files, a Plexus configuration and a NAD read through the test API server; the CNI hot path is
untouched by either (``plexus`` execs the separate ``plexus-admin`` only without CNI_COMMAND)."""

import json
import os
import subprocess
import time

import pytest

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.k8s_scenarios import k8s_bins, kenv, kube, nad_yaml  # noqa: F401
from testenv.lib.plexus import Pod

ADMIN_BINARIES = ("plexus", "plexus-admin", "plexus-kubeconfig", px.FAKE)


@pytest.fixture(scope="module")
def admin_bins(tmp_path_factory):
    return px.install_binaries(str(tmp_path_factory.mktemp("pxadminbin")), ADMIN_BINARIES)


def admin(bin_dir, *args, timeout=60):
    p = subprocess.run([os.path.join(bin_dir, "plexus")] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, env={"PATH": px.CLEAN_PATH})
    return p.returncode, p.stdout, p.stderr


def two_network_pod(pxenv):
    bridges = [pxenv.bridge(), pxenv.bridge()]
    lists = [px.conflist(n, "1.0.0", [px.bridge(b, pxenv.subnet(), pxenv.data_dir)]) for n, b in zip(("pxia", "pxib"), bridges)]
    cfg = pxenv.config("1.0.0", lists)
    pod = Pod(pxenv)
    r = pod.add(cfg)
    assert r.code == 0, r
    return pod, cfg, bridges


def test_inspect_shows_what_the_kernel_has(pxenv, admin_bins):
    pod, cfg, bridges = two_network_pod(pxenv)
    code, out, err = admin(admin_bins, "inspect", "--cni-dir", pxenv.cni_dir, "--json")
    assert code == 0, err
    report = json.loads(out)
    [a] = report["attachments"]
    assert a["containerID"] == pod.cid and a["pod"] == "pxns/pxpod" and a["podUID"] == pod.cid
    assert a["state"] == "attached" and a["busy"] is False and a["ageSeconds"] >= 0
    kernel = nl.addresses(pod.ns)
    links = {l["ifname"]: l["address"] for l in nl.ip_json("link", "show", ns=pod.ns)}
    for n in a["networks"]:
        assert n["state"] == "attached"
        assert n["ips"] == [x.split("/")[0] for x in kernel[n["interface"]]], (n, kernel)
        assert n["mac"] == links[n["interface"]]
        entry = pxenv.cache.result_entry(n["name"], pod.cid, n["interface"])
        assert n["configDigest"] == "sha256:" + __import__("hashlib").sha256(px.entry_config(entry)).hexdigest()
    assert [n["interface"] for n in a["networks"]] == ["eth0", "net1"]

    code, table, _ = admin(admin_bins, "inspect", "--cni-dir", pxenv.cni_dir)
    assert code == 0
    lines = table.splitlines()
    assert lines[0].split() == ["POD", "CONTAINER", "IFNAME", "STATE", "AGE", "NETWORK", "INTERFACE", "IPS", "MAC", "CONFIG"]
    col = lines[0].index("NETWORK")
    assert [l[col:].split()[0] for l in lines[1:3]] == ["pxia", "pxib"], table

    # --stale: the netns is gone (a crashed runtime), the record is still there.
    nl.ip("netns", "del", pod.ns)
    code, out, _ = admin(admin_bins, "inspect", "--cni-dir", pxenv.cni_dir, "--stale", "--json")
    assert json.loads(out)["attachments"][0]["stale"] is True
    code, table, _ = admin(admin_bins, "inspect", "--cni-dir", pxenv.cni_dir, "--stale")
    assert "stale (netns gone)" in table
    assert pod.delete(cfg, netns="").code == 0
    pxenv.assert_clean(bridges=bridges)


def test_inspect_reports_a_corrupt_cache_and_does_not_wait_for_a_running_add(pxenv, admin_bins):
    pause = os.path.join(pxenv.tmp, "pause")
    lst = px.conflist("pxslow", "1.0.0", [px.fake(pauseFile=pause, stateDir=pxenv.state_dir)])
    cfg = pxenv.config("1.0.0", [lst], binDir=pxenv.bin_dir)
    pod = Pod(pxenv)
    p = pxenv.px.popen("ADD", cfg, pod.cid, pod.netns_path, cni_args=pod.args)
    pxenv.procs.append(p)
    deadline = time.time() + 20
    while not os.path.exists(pause + ".started") and time.time() < deadline:
        time.sleep(0.02)
    assert os.path.exists(pause + ".started")
    os.makedirs(os.path.join(pxenv.cni_dir, "results"), exist_ok=True)    # made by the first cached result
    with open(os.path.join(pxenv.cni_dir, "results", "pxjunk-x1-eth0"), "w") as f:
        f.write("{not json")
    os.mkfifo(os.path.join(pxenv.cni_dir, "attachments", "pxnet-x2-eth0"))
    started = time.time()
    code, out, err = admin(admin_bins, "inspect", "--cni-dir", pxenv.cni_dir, "--json", timeout=20)
    assert code == 0, err
    assert time.time() - started < 10, "inspect waited for the ADD"
    report = json.loads(out)
    [a] = report["attachments"]
    assert a["busy"] is True and a["state"] == "partial" and a["networks"][0]["state"] == "pending", a
    assert sorted(os.path.basename(u["path"]) for u in report["unreadableFiles"]) == ["pxjunk-x1-eth0", "pxnet-x2-eth0"]
    open(pause + ".release", "w").close()
    assert p.wait(timeout=30) == 0
    os.unlink(os.path.join(pxenv.cni_dir, "results", "pxjunk-x1-eth0"))
    os.unlink(os.path.join(pxenv.cni_dir, "attachments", "pxnet-x2-eth0"))
    assert json.loads(admin(admin_bins, "inspect", "--cni-dir", pxenv.cni_dir, "--json")[1])["attachments"][0]["state"] == "attached"
    assert pod.delete(cfg).code == 0


def test_inspect_of_a_missing_cache_is_an_error(pxenv, admin_bins):
    code, _, err = admin(admin_bins, "inspect", "--cni-dir", os.path.join(pxenv.tmp, "nope"))
    assert code == 1 and "no cache directory" in err
    assert not os.path.exists(os.path.join(pxenv.tmp, "nope"))


def test_validate_files(pxenv, admin_bins):
    good = os.path.join(pxenv.tmp, "good.yaml")
    with open(good, "w") as f:
        f.write(nad_yaml("default", "pxgood", {"cniVersion": "1.0.0", "name": "pxgood", "type": "bridge", "bridge": "pxx"}))
    bad = os.path.join(pxenv.tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write(nad_yaml("default", "Px_Bad", {"cniVersion": "1.1.0", "name": "pxbad", "plugins": [
            {"type": "bridge"}, {"type": "../../bin/sh"}, {"type": "pxnosuch"}]}))
    code, out, err = admin(admin_bins, "validate", "--bin-dir", px.DEBIAN_CNI_DIR, good)
    assert code == 0 and out.strip() == good + ": ok", (out, err)
    code, out, err = admin(admin_bins, "validate", "--bin-dir", px.DEBIAN_CNI_DIR, "--json", good, bad)
    assert code == 1, (out, err)
    docs = json.loads(out.splitlines()[0])
    assert docs[0]["findings"] == []
    paths = {f["path"]: f["message"] for f in docs[1]["findings"]}
    assert "/metadata/name" in paths
    assert "does not support cniVersion 1.1.0" in paths["/spec/config/plugins/0/type"]   # Debian's bridge stops at 1.0.0
    assert "path components" in paths["/spec/config/plugins/1/type"]
    assert "not found" in paths["/spec/config/plugins/2/type"]

    # A whole Plexus configuration, as the installer writes it.
    conf = os.path.join(pxenv.tmp, "00-plexus.conflist")
    plexus = pxenv.config("1.0.0", [px.conflist("pxk8s", "1.0.0", [px.bridge("pxx", "10.231.99.0/24", pxenv.data_dir)])],
                          delegateTimeoutSeconds=1e10)
    with open(conf, "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "plexus", "plugins": [plexus]}, f)
    code, out, _ = admin(admin_bins, "validate", conf)
    assert code == 1 and conf + ": error: /plugins/0/delegateTimeoutSeconds:" in out, out


def test_validate_a_nad_from_the_api(kenv):
    kenv.install_crd()
    kenv.kube.apply_nad("default", "pxapinad", {"cniVersion": "1.0.0", "name": "pxapinad", "type": "pxnosuch"})
    code, out, err = admin(kenv.bin_dir, "validate", "--name", "default/pxapinad", "--kubeconfig", kenv.kubeconfig,
                           "--bin-dir", px.DEBIAN_CNI_DIR)
    assert code == 1 and "nad default/pxapinad: error: /spec/config/type: plugin \"pxnosuch\" not found" in out, (out, err)
    code, out, _ = admin(kenv.bin_dir, "validate", "--name", "default/pxmissing", "--kubeconfig", kenv.kubeconfig)
    assert code == 1 and "not found" in out.lower(), out


def test_the_cni_hot_path_never_runs_the_admin_binary(pxenv, admin_bins):
    """With CNI_COMMAND set, `plexus inspect` is a CNI call like any other (its argv is ignored)."""
    env = {"PATH": px.CLEAN_PATH, "CNI_COMMAND": "VERSION"}
    p = subprocess.run([os.path.join(admin_bins, "plexus"), "inspect"], env=env, stdout=subprocess.PIPE, text=True, timeout=10)
    assert p.returncode == 0 and json.loads(p.stdout)["supportedVersions"], p.stdout
