"""Plexus against an unreliable or changing API server: retries (429 + Retry-After, 503, connection reset), an
unreachable or hanging server (code 11 within apiDeadlineSeconds, nothing attached), token rotation with a
tokenFile kubeconfig, exact request counts per ADD, YAML and JSON kubeconfigs, DEL without the API."""

import json
import os
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib.k8s_scenarios import NETWORKS_ANN, k8s_bins, kenv, kube  # noqa: E402,F401

NS = "pxk-api"
NAD_PATH = "/apis/k8s.cni.cncf.io/v1/namespaces/%s/network-attachment-definitions/" % NS


def _setup(kenv, name="pod", networks="pxk-mv, pxk-br"):
    kenv.install_crd()
    mv_cfg, _ = kenv.macvlan_nad("pxk-mv")
    br_cfg, br, _ = kenv.hostlocal_bridge_nad("pxk-br")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv_cfg)
    kenv.apply_nad_kubectl(NS, "pxk-br", br_cfg)
    pod = kenv.pod(NS, name, {NETWORKS_ANN: networks} if networks else {})
    kenv.kube.clear_requests()
    return pod, br


def _assert_attached_and_delete(kenv, pod, cfg, links=("eth0", "net1", "net2"), bridges=()):
    assert pod.links() == sorted(links)
    assert [e["interface"] for e in pod.status()] == list(links)
    out = pod.delete(cfg)
    assert out.ok, out
    assert kenv.leftovers(pods=[pod], bridges=list(bridges) + [kenv.cluster()["bridge"]]) == []


def _start(r):
    return r["time"] - r["duration_ms"] / 1000.0


# ------------------------------------------------------------------------------------------------ retries

def test_429_with_retry_after_then_success(kenv):
    pod, br = _setup(kenv, "thr")
    kenv.kube.inject(method="GET", path="/pods/thr$", action="status", code=429, retry_after=1, count=1)
    cfg = kenv.config()
    t0 = time.monotonic()
    out = pod.add(cfg)
    took = time.monotonic() - t0
    assert out.ok, out
    gets = kenv.kube.requests(method="GET", path="/pods/thr$")
    assert [g["status"] for g in gets] == [429, 200], gets
    gap = _start(gets[1]) - gets[0]["time"]
    assert gap >= 0.9, "Retry-After: 1 not honoured (retried after %.3f s)" % gap
    assert took >= 0.9
    assert len(kenv.kube.requests()) == 2 + 2 + 1      # 2 + k, plus the retried GET
    _assert_attached_and_delete(kenv, pod, cfg, bridges=[br])


def test_503_then_success(kenv):
    pod, br = _setup(kenv, "unav")
    kenv.kube.inject(method="GET", path=NAD_PATH + "pxk-br$", action="status", code=503, count=1)
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    gets = kenv.kube.requests(method="GET", path="pxk-br$")
    assert [g["status"] for g in gets] == [503, 200], gets
    assert len(kenv.kube.requests()) == 2 + 2 + 1
    _assert_attached_and_delete(kenv, pod, cfg, bridges=[br])


def test_503_on_status_patch_then_success(kenv):
    pod, br = _setup(kenv, "unav2")
    kenv.kube.inject(method="PATCH", path="/status$", action="status", code=503, count=2)
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    patches = kenv.kube.requests(method="PATCH")
    assert [p["status"] for p in patches] == [503, 503, 200], patches
    _assert_attached_and_delete(kenv, pod, cfg, bridges=[br])


def test_connection_reset_then_success(kenv):
    pod, br = _setup(kenv, "rst")
    kenv.kube.inject(method="GET", path=NAD_PATH + "pxk-mv$", action="reset", count=1)
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    gets = kenv.kube.requests(method="GET", path="pxk-mv$")
    assert [g["status"] for g in gets] == [0, 200], gets
    assert gets[0].get("fault") == "reset"
    _assert_attached_and_delete(kenv, pod, cfg, bridges=[br])


def test_persistent_5xx_gives_code_11_and_nothing_attached(kenv):
    pod, br = _setup(kenv, "p5")
    kenv.kube.inject(method="GET", path=NAD_PATH + "pxk-br$", action="status", code=500, count=None)
    out = pod.add(kenv.config(apiDeadlineSeconds=5))
    assert out.err_code == 11, out
    assert NS + "/pxk-br" in out.msg, out
    assert kenv.leftovers(pods=[pod], bridges=[br]) == []
    assert len(kenv.kube.requests(path="pxk-br$")) >= 2, "a 500 was not retried"


# ------------------------------------------------------------------------------------------------ unreachable

@pytest.mark.parametrize("deadline", [3])
def test_api_unreachable_on_add(kenv, deadline):
    pod, br = _setup(kenv, "down")
    kenv.kube.stop()
    t0 = time.monotonic()
    out = pod.add(kenv.config(apiDeadlineSeconds=deadline))
    took = time.monotonic() - t0
    assert not out.ok, out
    assert out.err_code == 11, out
    assert "pod" in out.msg and "down" in out.msg, out
    assert took < deadline + 3.0, "ADD took %.2f s with apiDeadlineSeconds=%s" % (took, deadline)
    assert kenv.leftovers(pods=[pod], bridges=[br]) == []


@pytest.mark.parametrize("deadline", [3])
def test_api_hanging_on_add_respects_deadline(kenv, deadline):
    """The server accepts but never answers in time: every attempt is cut to the time left before the deadline."""
    pod, br = _setup(kenv, "hang")
    kenv.kube.inject(method="GET", path=NAD_PATH, action="delay", delay_ms=20000, count=None)
    t0 = time.monotonic()
    out = pod.add(kenv.config(apiDeadlineSeconds=deadline))
    took = time.monotonic() - t0
    assert not out.ok, out
    assert out.err_code == 11, out
    assert took < deadline + 3.0, "ADD took %.2f s with apiDeadlineSeconds=%s" % (took, deadline)
    assert took >= deadline - 0.5, "gave up after %.2f s, before the %s s deadline" % (took, deadline)
    assert kenv.leftovers(pods=[pod], bridges=[br]) == []
    kenv.kube.clear_faults()


@pytest.mark.parametrize("deadline", [3])
def test_status_write_hanging_rolls_back_within_deadline(kenv, deadline):
    """Networks attached, then the network-status PATCH never answers: the ADD fails with code 11 inside the API
    deadline and everything attached so far is rolled back."""
    pod, br = _setup(kenv, "hangp")
    kenv.kube.inject(method="PATCH", path="/status$", action="delay", delay_ms=20000, count=None)
    t0 = time.monotonic()
    out = pod.add(kenv.config(apiDeadlineSeconds=deadline))
    took = time.monotonic() - t0
    assert out.err_code == 11, out
    assert "network-status" in out.msg, out
    assert took < deadline + 3.0, "ADD took %.2f s with apiDeadlineSeconds=%s" % (took, deadline)
    assert kenv.leftovers(pods=[pod], bridges=[br]) == []
    kenv.kube.clear_faults()


def test_slow_delegates_do_not_eat_the_api_deadline(kenv):
    """apiDeadlineSeconds bounds the API work (requests and retries), not the delegates: a delegate that takes longer
    than the deadline must not make the (fast) network-status write fail and roll the ADD back."""
    pod, br = _setup(kenv, "slow", "pxk-slow")
    kenv.apply_nad_kubectl(NS, "pxk-slow", {"cniVersion": "1.0.0", "name": "pxk-slow", "type": "plexus-test-delegate",
                                            "sleepMs": 3000, "ip": "10.231.147.3/24"})
    kenv.kube.clear_requests()
    cfg = kenv.config(apiDeadlineSeconds=2)
    out = pod.add(cfg)
    assert out.ok, out
    assert [r["status"] for r in kenv.kube.requests()] == [200, 200, 200], kenv.kube.requests()
    assert pod.links() == ["eth0"]                     # the fake delegate creates no link
    assert [e["interface"] for e in pod.status()] == ["eth0", "net1"]
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod], bridges=[br]) == []


def test_429_on_status_patch_then_success(kenv):
    pod, br = _setup(kenv, "thrp")
    kenv.kube.inject(method="PATCH", path="/status$", action="status", code=429, retry_after=1, count=1)
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    patches = kenv.kube.requests(method="PATCH")
    assert [p["status"] for p in patches] == [429, 200], patches
    assert _start(patches[1]) - patches[0]["time"] >= 0.9
    _assert_attached_and_delete(kenv, pod, cfg, bridges=[br])


def test_del_without_api_pod_or_nad(kenv):
    """DEL is cache-driven: pod deleted, NADs deleted, then server stopped -- DEL still frees everything."""
    pod, br = _setup(kenv, "del")
    cfg = kenv.config()
    assert pod.add(cfg).ok
    kenv.kube.delete_pod(NS, "del")
    kenv.kube.delete_nad(NS, "pxk-mv")
    kenv.kube.delete_nad(NS, "pxk-br")
    kenv.kube.clear_requests()
    out = pod.delete(cfg)
    assert out.ok, out
    assert kenv.kube.requests() == [], "DEL used the API"
    assert pod.add(cfg).err_code is not None      # the pod is gone: a new ADD cannot plan
    kenv.kube.stop()
    assert kenv.leftovers(pods=[pod], bridges=[br]) == []
    # DEL again (idempotent) with the server down
    out = pod.delete(cfg)
    assert out.ok, out


# ------------------------------------------------------------------------------------------------ tokens

def test_token_rotation_between_two_adds(kenv):
    kube = kenv.kube
    pod1, br = _setup(kenv, "tok1")
    pod2 = kenv.pod(NS, "tok2", {NETWORKS_ANN: "pxk-mv, pxk-br"})
    with open(kenv.kubeconfig) as f:
        assert "tokenFile" in f.read()
    cfg = kenv.config()
    kube.clear_requests()
    out = pod1.add(cfg)
    assert out.ok, out
    old = kube.token
    new = kube.rotate_token()
    assert new != old
    st, _ = kube.api("GET", "/api/v1/namespaces/%s/pods/tok1" % NS, token=old, ok=None)
    assert st == 401, "the old token still works: the rotation did not take effect"
    since = kube.requests()[-1]["seq"]
    out = pod2.add(cfg)
    assert out.ok, out
    second = kube.requests(since=since)
    assert len(second) == 2 + 2, second
    assert all(r["status"] in (200, 201) for r in second), second
    assert pod2.status() is not None and len(pod2.status()) == 3
    for p in (pod1, pod2):
        assert p.delete(cfg).ok
    assert kenv.leftovers(pods=[pod1, pod2], bridges=[br]) == []


def test_token_rotated_during_an_add(kenv):
    """The token file changes while an ADD is in flight: the next request gets 401, Plexus re-reads the token
    file and retries once, and the ADD succeeds."""
    kube = kenv.kube
    pod, br = _setup(kenv, "tokmid")
    kube.inject(method="GET", path=NAD_PATH + "pxk-br$", action="delay", delay_ms=1500, count=1)
    cfg = kenv.config()
    proc = kenv.px.popen("ADD", cfg, pod.cid, pod.netns_path, cni_args=pod.cni_args)
    kenv.procs.append(proc)
    deadline = time.monotonic() + 10
    while not kube.requests(method="GET", path="pxk-mv$") and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)                    # inside the delayed GET of pxk-br
    kube.rotate_token()
    proc.stdin = None                  # popen() already wrote and closed it
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, (stdout, stderr)
    reqs = kube.requests()
    print([(r["method"], r["path"].rsplit("/", 1)[-1], r["status"]) for r in reqs])
    assert reqs[-1]["method"] == "PATCH" and reqs[-1]["status"] == 200, reqs
    assert any(r["status"] == 401 for r in reqs), "the rotation happened after the ADD's requests (test timing)"
    assert pod.status() is not None
    _assert_attached_and_delete(kenv, pod, cfg, bridges=[br])


# ------------------------------------------------------------------------------------------------ request counts

@pytest.mark.parametrize("k", [0, 1, 2])
def test_requests_per_add_are_2_plus_k(kenv, k):
    networks = ["pxk-mv", "pxk-br"][:k]
    pod, br = _setup(kenv, "cnt%d" % k, ", ".join(networks))
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    reqs = kenv.kube.requests()
    assert len(reqs) == 2 + k, [(r["method"], r["path"]) for r in reqs]
    assert [r["method"] for r in reqs] == ["GET"] * (1 + k) + ["PATCH"]
    assert reqs[-1]["path"].endswith("/pods/cnt%d/status" % k)
    assert all(r["user_agent"].startswith("plexus") for r in reqs), reqs
    links = ["eth0"] + ["net%d" % (i + 1) for i in range(k)]
    _assert_attached_and_delete(kenv, pod, cfg, links=links, bridges=[br])
    assert len(kenv.kube.requests()) == 2 + k, "DEL made API requests"


# ------------------------------------------------------------------------------------------------ kubeconfigs

def _json_kubeconfig(kube, path, token_file=True, embed_ca=False):
    import base64
    cluster = {"server": kube.url}
    if embed_ca:
        cluster["certificate-authority-data"] = base64.b64encode(kube.ca_path.read_bytes()).decode()
    else:
        cluster["certificate-authority"] = str(kube.ca_path)
    user = {"tokenFile": str(kube.token_file)} if token_file else {"token": kube.token}
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "px",
           "clusters": [{"name": "c", "cluster": cluster}], "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "px", "context": {"cluster": "c", "user": "u"}}]}
    with open(path, "w") as f:
        json.dump(doc, f)
    return str(path)


@pytest.mark.parametrize("kind", ["yaml-tokenfile", "yaml-token-embedded-ca", "yaml-client-cert", "json-tokenfile",
                                  "json-token-embedded-ca", "json-relative-paths"])
def test_yaml_and_json_kubeconfigs(kenv, kind):
    kube = kenv.kube
    pod, br = _setup(kenv, "kc")
    path = os.path.join(kenv.tmp, "kc-" + kind)
    if kind == "yaml-tokenfile":
        kc = str(kube.write_kubeconfig(path, use_token_file=True))
    elif kind == "yaml-token-embedded-ca":
        kc = str(kube.write_kubeconfig(path, token=kube.token, embed_ca=True))
    elif kind == "yaml-client-cert":
        kc = str(kube.write_kubeconfig(path, client_cert=True))
    elif kind == "json-tokenfile":
        kc = _json_kubeconfig(kube, path)
    elif kind == "json-relative-paths":
        # certificate-authority and tokenFile relative to the kubeconfig's directory (as client-go resolves them)
        import shutil
        d = os.path.join(kenv.tmp, "kcdir")
        os.makedirs(os.path.join(d, "sub"))
        shutil.copy(kube.ca_path, os.path.join(d, "sub", "ca.crt"))
        shutil.copy(kube.token_file, os.path.join(d, "tok"))
        kc = os.path.join(d, "config.json")
        with open(kc, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "px",
                       "clusters": [{"name": "c", "cluster": {"server": kube.url, "certificate-authority": "sub/ca.crt"}}],
                       "users": [{"name": "u", "user": {"tokenFile": "tok"}}],
                       "contexts": [{"name": "px", "context": {"cluster": "c", "user": "u"}}]}, f)
    else:
        kc = _json_kubeconfig(kube, path, token_file=False, embed_ca=True)
    with open(kc) as f:
        text = f.read()
    assert text.lstrip().startswith("{") == kind.startswith("json")
    cfg = kenv.config(kubeconfig=kc)
    out = pod.add(cfg)
    assert out.ok, out
    reqs = kube.requests()
    assert len(reqs) == 4, reqs
    assert {r["user"] for r in reqs} == {"plexus-admin" if kind == "yaml-client-cert" else "admin"}, reqs
    _assert_attached_and_delete(kenv, pod, cfg, bridges=[br])


def test_yaml_kubeconfig_needs_the_converter(kenv, tmp_path):
    """Without plexus-kubeconfig next to plexus (or in binDir) a YAML kubeconfig is a clear config error; a JSON
    one still works."""
    import shutil
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy2(os.path.join(kenv.bin_dir, "plexus"), lone / "plexus")
    from testenv.lib.plexus import Plexus
    runner = Plexus(str(lone))
    pod, br = _setup(kenv, "noconv")
    cfg = kenv.config()
    out = runner.run("ADD", cfg, pod.cid, pod.netns_path, cni_args=pod.cni_args)
    assert out.err_code == 7, out
    assert "plexus-kubeconfig" in out.msg, out
    assert kenv.leftovers(pods=[pod], bridges=[br]) == []
    cfg = kenv.config(kubeconfig=_json_kubeconfig(kenv.kube, tmp_path / "kc.json"))
    out = runner.run("ADD", cfg, pod.cid, pod.netns_path, cni_args=pod.cni_args)
    assert out.ok, out
    _assert_attached_and_delete(kenv, pod, cfg, bridges=[br])
