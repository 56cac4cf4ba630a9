"""Lifecycle: STATUS and the readiness indicator file.

STATUS answers 50 while the readiness file is missing or the cniDir is unusable, forwards STATUS to the cluster
network's and defaultNetworks' 1.1.0 chains and returns their code as is; ADD waits for the readiness file (and
fails with 11 after readinessTimeoutSeconds); DEL never waits.
"""

import json
import os
import threading
import time

import pytest

from testenv.lib import plexus as px
from testenv.lib.plexus import Pod


def status(pxenv, cfg):
    return pxenv.px.run("STATUS", cfg, ifname=None)


def write_conflist(pxenv, fname, lst):
    path = os.path.join(pxenv.conf_dir, fname)
    with open(path, "w") as f:
        json.dump(lst, f)
    return path


def test_status_follows_readiness_file(pxenv):
    ready = os.path.join(pxenv.tmp, "ready")
    cfg = pxenv.config("1.1.0", [px.conflist("pxst", "1.1.0", [px.fake(recordDir=pxenv.rec_dir)])],
                       readinessindicatorfile=ready)
    r = status(pxenv, cfg)
    assert r.code == 1 and r.out["code"] == 50, r
    assert r.stdout.count("\n") == 1 and r.out["cniVersion"] == "1.1.0"
    assert px.read_records(pxenv.rec_dir, "STATUS") == []   # not ready: delegates are not even asked
    open(ready, "w").close()
    r = status(pxenv, cfg)
    assert r.code == 0 and r.stdout == "", r
    assert len(px.read_records(pxenv.rec_dir, "STATUS")) == 1
    os.unlink(ready)
    r = status(pxenv, cfg)
    assert r.code == 1 and r.out["code"] == 50, r


@pytest.mark.parametrize("code", [50, 51])
def test_status_returns_cluster_network_code(pxenv, code):
    cfg = pxenv.config("1.1.0", [px.conflist("pxst", "1.1.0", [
        px.fake(), px.fake(status={"code": code, "msg": "pxdown %d" % code})])])
    r = status(pxenv, cfg)
    assert r.code == 1 and r.out["code"] == code, r
    assert "pxdown %d" % code in r.out["msg"], r.out


def test_status_forwards_to_default_networks(pxenv):
    write_conflist(pxenv, "10-pxclu.conflist", px.conflist("pxclu", "1.1.0", [px.fake(recordDir=pxenv.rec_dir)]))
    dflt = write_conflist(pxenv, "20-pxdef.conflist", px.conflist("pxdef", "1.1.0", [
        px.fake(recordDir=pxenv.rec_dir, status={"code": 51, "msg": "pxlimited"})]))
    cfg = pxenv.config("1.1.0", None, clusterNetwork="pxclu", defaultNetworks=[dflt])
    r = status(pxenv, cfg)
    assert r.code == 1 and r.out["code"] == 51 and "pxlimited" in r.out["msg"], r
    names = sorted(rec["stdin"]["name"] for rec in px.read_records(pxenv.rec_dir, "STATUS"))
    assert names == ["pxclu", "pxdef"], names
    # healthy default network: STATUS succeeds
    write_conflist(pxenv, "20-pxdef.conflist", px.conflist("pxdef", "1.1.0", [px.fake()]))
    r = status(pxenv, cfg)
    assert r.code == 0, r


def test_status_not_forwarded_below_110_nor_to_secondary_delegates(pxenv):
    b = pxenv.bridge()
    cfg = pxenv.config("1.1.0", [
        px.conflist("pxbr", "1.0.0", [px.bridge(b, pxenv.subnet(), pxenv.data_dir)]),
        # delegates[1:] are not needed by every pod: STATUS does not ask them
        px.conflist("pxsec", "1.1.0", [px.fake(recordDir=pxenv.rec_dir, status={"code": 50})]),
    ])
    r = status(pxenv, cfg)
    assert r.code == 0, r
    assert px.read_records(pxenv.rec_dir, "STATUS") == []


def test_status_unusable_cni_dir(pxenv):
    blocker = os.path.join(pxenv.tmp, "notadir")
    open(blocker, "w").close()
    cfg = px.plexus_config("1.1.0", os.path.join(blocker, "cache"), pxenv.conf_dir,
                           [px.conflist("pxst", "1.1.0", [px.fake()])])
    r = status(pxenv, cfg)
    assert r.code == 1 and r.out["code"] == 50, r


def test_status_needs_110(pxenv):
    cfg = pxenv.config("1.0.0", [px.conflist("pxst", "1.1.0", [px.fake()])])
    r = status(pxenv, cfg)
    assert r.code == 1 and r.out["code"] == 1, r


def _networks(pxenv):
    b = pxenv.bridge()
    return b, [px.conflist("pxrbr", "1.0.0", [px.bridge(b, pxenv.subnet(), pxenv.data_dir)]),
               px.conflist("pxrf", "1.0.0", [px.fake(stateDir=pxenv.state_dir)])]


def test_add_waits_for_readiness_file(pxenv):
    ready = os.path.join(pxenv.tmp, "ready")
    b, lists = _networks(pxenv)
    cfg = pxenv.config("1.0.0", lists, readinessindicatorfile=ready, readinessTimeoutSeconds=20)
    pod = Pod(pxenv)
    timer = threading.Timer(0.3, lambda: open(ready, "w").close())
    t0 = time.monotonic()
    timer.start()
    try:
        r = pod.add(cfg)
    finally:
        timer.cancel()
    elapsed = time.monotonic() - t0
    assert r.code == 0, r
    assert elapsed >= 0.3, "ADD did not wait for the readiness file (%.3fs)" % elapsed
    assert elapsed < 10, elapsed
    assert pod.links() == ["eth0"] and len(pxenv.reservations()) == 1
    assert pod.delete(cfg).code == 0
    pxenv.assert_clean(netns=[pod.ns], bridges=[b])


def test_add_times_out_without_readiness_file(pxenv):
    ready = os.path.join(pxenv.tmp, "ready")
    b, lists = _networks(pxenv)
    cfg = pxenv.config("1.0.0", lists, readinessindicatorfile=ready, readinessTimeoutSeconds=0.5)
    pod = Pod(pxenv)
    t0 = time.monotonic()
    r = pod.add(cfg)
    elapsed = time.monotonic() - t0
    assert r.code == 1 and r.out["code"] == 11, r
    assert ready in r.out["msg"], r.out
    assert 0.5 <= elapsed < 10, elapsed
    # nothing attempted: no plan, no delegate ran
    assert pxenv.cache_files() == [] and os.listdir(pxenv.state_dir) == []
    pxenv.assert_clean(netns=[pod.ns], bridges=[b])


def test_del_does_not_wait_for_readiness_file(pxenv):
    ready = os.path.join(pxenv.tmp, "ready")
    open(ready, "w").close()
    b, lists = _networks(pxenv)
    cfg = pxenv.config("1.0.0", lists, readinessindicatorfile=ready, readinessTimeoutSeconds=30)
    pod = Pod(pxenv)
    assert pod.add(cfg).code == 0
    os.unlink(ready)   # the cluster network went away (e.g. its daemon is restarting)
    t0 = time.monotonic()
    d = pod.delete(cfg)
    elapsed = time.monotonic() - t0
    assert d.code == 0, d
    assert elapsed < 5, "DEL waited for the readiness file (%.1fs)" % elapsed
    pxenv.assert_clean(netns=[pod.ns], bridges=[b])
    assert os.listdir(pxenv.state_dir) == []
    # and DEL of a never-added container does not wait either
    t0 = time.monotonic()
    assert Pod(pxenv, "pxother").delete(cfg).code == 0
    assert time.monotonic() - t0 < 5
