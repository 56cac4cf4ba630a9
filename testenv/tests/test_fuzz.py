"""Property-based fuzzing of the real plexus binary (hypothesis): generated configurations, environments,
pre-seeded cache files, failing delegates, and pod annotations and NADs served by the test API server, each case in
a fresh sandbox (testenv/fuzz/harness.py lists the oracles, testenv/fuzz/model.py what is generated).

* ``test_fuzz[config|env|cache]``: ``PLEXUS_FUZZ_EXAMPLES`` cases in all (default 2100), seeded
  (``PLEXUS_FUZZ_SEED``, default fixed), no example database. Every violation is collected; the test fails at the
  end listing them, and the smallest case per distinct failure goes to ``testenv/.work/fuzz-failures/``.
  ``PLEXUS_FUZZ_SHRINK=1`` lets hypothesis shrink each distinct failure instead (slow, for new regressions).
* ``test_fuzz[k8s]``: ``PLEXUS_FUZZ_K8S_EXAMPLES`` cases (default 350) against one test API server for the module.
* ``test_regression[<file>]``: every ``testenv/fuzz/regressions/*.json`` case, replayed.

Counts go to ``testenv/.work/fuzz-counts.json``; a summary line is printed at the end.
"""

import glob
import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from testenv.fuzz import harness, model
from testenv.lib import plexus as px
from testenv.lib.kubeapi import KubeAPI

WORK = os.path.join(px.REPO, "testenv", ".work")
FAILURES = os.path.join(WORK, "fuzz-failures")
REGRESSIONS = os.path.join(px.REPO, "testenv", "fuzz", "regressions")
TOTAL = int(os.environ.get("PLEXUS_FUZZ_EXAMPLES", "2100"))
SHARES = [("config", 0.40), ("env", 0.15), ("cache", 0.45)]
K8S_TOTAL = int(os.environ.get("PLEXUS_FUZZ_K8S_EXAMPLES", "350"))
FOCUSES = [f for f, _ in SHARES] + ["k8s"]
SEED = int(os.environ.get("PLEXUS_FUZZ_SEED", "20251202"))
SHRINK = os.environ.get("PLEXUS_FUZZ_SHRINK") == "1"

RESULTS = {}


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=px.REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _write_counts():
    keys = [k for k in harness.Tally().counts] + ["distinct_failures", "seconds"]
    total = {k: sum(r.get(k, 0) for r in RESULTS.values()) for k in keys}
    doc = {"binary_dir": px.build_bin_dir(), "commit": _commit(), "seed": SEED, "examples": TOTAL,
           "total": total, "tests": RESULTS}
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, "fuzz-counts.json"), "w") as f:
        json.dump(doc, f, indent=1)
    return total


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    shutil.rmtree(FAILURES, ignore_errors=True)   # only this run's failures
    yield
    if RESULTS:
        total = _write_counts()
        lines = [harness.summary(name, d) for name, d in RESULTS.items()]
        lines.append(harness.summary("total", total) + " (counts: testenv/.work/fuzz-counts.json)")
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        capman = request.config.pluginmanager.get_plugin("capturemanager")
        if tr and capman:
            with capman.global_and_fixture_disabled():
                tr.write("\n" + "\n".join(lines) + "\n")


def _violation_error(case, res):
    """Shrink mode: one exception class per signature, so hypothesis shrinks each distinct failure."""
    sig = harness.signature(res.violations[0], case["verb"])
    cls = _ERRORS.setdefault(sig, type("FuzzViolation", (AssertionError,), {}))
    return cls("%s\n%s" % (sig, json.dumps(case)))


_ERRORS = {}


@pytest.fixture(scope="module")
def fuzz_kube(tmp_path_factory):
    """One test API server (NAD CRD installed) for every k8s case of the module."""
    api = KubeAPI(tmp_path_factory.mktemp("fuzz-kube"))
    try:
        yield harness.K8sTarget(api)
    finally:
        api.close()


@pytest.mark.parametrize("focus", FOCUSES)
def test_fuzz(focus, px_bin_dir, tmp_path, request):
    n = K8S_TOTAL if focus == "k8s" else max(1, round(TOTAL * dict(SHARES)[focus]))
    kube = request.getfixturevalue("fuzz_kube") if focus == "k8s" else None
    binary = os.path.join(px_bin_dir, "plexus")
    tally = harness.Tally()

    @seed(SEED + FOCUSES.index(focus))
    @settings(max_examples=n, database=None, deadline=None, derandomize=False, print_blob=False,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink] if SHRINK else [Phase.explicit, Phase.generate])
    @given(model.cases(focus))
    def prop(case):
        res = harness.run_case(case, binary, px_bin_dir, parent=str(tmp_path), kube=kube)
        tally.add(case, res)
        if SHRINK and res.violations:
            raise _violation_error(case, res)

    try:
        prop()
    finally:
        RESULTS[focus] = tally.as_dict()
        _write_counts()
        saved = tally.save_failures(FAILURES)
    lines = ["%s  (%s)" % (sig, os.path.relpath(p, px.REPO)) for sig, p in zip(sorted(tally.failures), saved)]
    if tally.failures:
        pytest.fail("%s\n%d distinct failures (smallest case each):\n  %s" % (
            harness.summary(focus, RESULTS[focus]), len(lines), "\n  ".join(lines)), pytrace=False)


def _regressions():
    return sorted(glob.glob(os.path.join(REGRESSIONS, "*.json")))


@pytest.mark.parametrize("path", _regressions(), ids=[os.path.basename(p)[:-5] for p in _regressions()])
def test_regression(path, px_bin_dir, tmp_path, request):
    with open(path) as f:
        doc = json.load(f)
    kube = request.getfixturevalue("fuzz_kube") if "k8s" in doc["case"] else None
    res = harness.run_case(doc["case"], os.path.join(px_bin_dir, "plexus"), px_bin_dir, parent=str(tmp_path),
                           kube=kube)
    found = ["%s: %s" % (harness.signature(v, doc["case"]["verb"]), v["detail"][:300]) for v in res.violations]
    if found:
        pytest.fail("%s\n%s" % (doc.get("description", ""), "\n".join(found)), pytrace=False)


def test_harness_clean_lifecycle_has_no_violations(px_bin_dir, tmp_path):
    """The oracles on a plain ADD -> CHECK -> DEL with two delegates: no violation, every delegate recorded."""
    nets = [px.conf("pxa", "1.1.0", px.fake(recordDir="%REC%")),
            px.conflist("pxb", "1.0.0", [px.fake(recordDir="%REC%"), px.fake(recordDir="%REC%")])]
    case = {"verb": "ADD", "env": {"CNI_CONTAINERID": "pxc1", "CNI_NETNS": "%NS%", "CNI_IFNAME": "eth0",
                                   "CNI_PATH": "%BIN%", "CNI_ARGS": model.POD_ARGS},
            "stdin": model.to_json(model.plexus_config("1.1.0", nets)), "then": ["CHECK", "DEL"]}
    res = harness.run_case(case, os.path.join(px_bin_dir, "plexus"), px_bin_dir, parent=str(tmp_path))
    assert [(r.verb, r.code) for r in res.runs] == [("ADD", 0), ("CHECK", 0), ("DEL", 0)], res.runs[0].stderr
    assert res.violations == [] and res.delegate_calls == 9, (res.violations, res.delegate_calls)


def test_harness_seeded_record_is_plexus_format(px_bin_dir, tmp_path):
    """A record and result built by model.py are read by plexus DEL (their delegates get DEL), and the seeded
    bystander is left alone: the cache seeds exercise the real read path, not just the corrupt-file path."""
    nets = [px.conf("pxa", "1.1.0", px.fake(recordDir="%REC%"))]
    rec = model.record("pxnet", "pxc1", "eth0", nets, "eth0")
    rec["networks"][0]["config"] = {"$b64": {"text": model.list_text(
        dict(nets[0], plugins=[dict(nets[0], recordDir="%REC%", marker="pxseeded")]))}}
    case = {"verb": "DEL", "env": {"CNI_CONTAINERID": "pxc1", "CNI_NETNS": "%NS%", "CNI_IFNAME": "eth0"},
            "stdin": model.to_json(model.plexus_config("1.1.0", nets)), "bystander": "pxy1",
            "files": [{"path": "%CNI%/attachments/pxnet-pxc1-eth0", "kind": "file", "content": rec},
                      {"path": "%CNI%/results/pxa-pxc1-eth0", "kind": "file",
                       "content": model.cache_entry(nets[0], "pxc1", "eth0", ("pxnet", "eth0"))},
                      {"path": "%CNI%/attachments/pxnet-pxy1-eth0", "kind": "file",
                       "content": model.record("pxnet", "pxy1", "eth0", nets, "eth0", marker=True)}]}
    sb = harness.Sandbox(px_bin_dir, str(tmp_path))
    try:
        res = harness._run_case(sb, case, os.path.join(px_bin_dir, "plexus"), harness.DEFAULT_TIMEOUT)
        calls = px.read_records(sb.rec)
        assert [r.code for r in res.runs] == [0] and res.violations == [], (res.violations, res.runs[0].stderr)
        assert [(c["_command"], c["stdin"].get("marker")) for c in calls] == [("DEL", "pxseeded")], calls
        assert "10.99.0.2/24" in json.dumps(calls[0]["stdin"]["prevResult"]), calls[0]["stdin"]
        assert not os.path.exists(os.path.join(sb.cni, "results", "pxa-pxc1-eth0"))
        assert os.path.exists(os.path.join(sb.cni, "attachments", "pxnet-pxy1-eth0"))
    finally:
        sb.remove()


def test_harness_k8s_lifecycle_has_no_violations(px_bin_dir, tmp_path, fuzz_kube):
    """A "k8s" case: the pod's JSON-form selection of a NAD served by the test API server is attached (cluster
    network + NAD, both with state files), network-status is written, and DEL leaves no cache or state file."""
    nad = model.to_json(px.conf("pxn-a", "1.0.0", px.fake(recordDir="%REC%", stateDir="%S%/.px/state")))
    case = {"verb": "ADD", "env": model.k8s_env_plain("pxc1", "eth0", "pxfz-a"),
            "stdin": model.to_json(dict(model.plexus_config("1.1.0", [px.conf("pxcluster", "1.1.0", px.fake(
                recordDir="%REC%", stateDir="%S%/.px/state"))]), kubeconfig="%KUBECONFIG%")),
            "then": ["CHECK", "DEL"],
            "k8s": {"pod": {"namespace": "pxfz-a", "name": model.K8S_POD, "uid": model.K8S_UID,
                            "annotations": {model.NETWORKS_ANN: '[{"name":"pxn-a","interface":"net7"}]'}},
                    "nads": [{"namespace": "pxfz-a", "name": "pxn-a", "config": nad}]}}
    res = harness.run_case(case, os.path.join(px_bin_dir, "plexus"), px_bin_dir, parent=str(tmp_path), kube=fuzz_kube)
    assert [(r.verb, r.code) for r in res.runs] == [("ADD", 0), ("CHECK", 0), ("DEL", 0)], res.runs[0].stdout
    assert res.violations == [] and res.delegate_calls == 6, (res.violations, res.delegate_calls)
    status = json.loads(fuzz_kube.annotations("pxfz-a", model.K8S_POD)[harness.STATUS_ANN])
    assert [(e["name"], e.get("interface")) for e in status] == [("pxcluster", "eth0"), ("pxfz-a/pxn-a", "net7")], status
