"""Core: lossless pass-through. Unknown delegate keys (nested objects, a 20-digit integer, 1.50, ...) reach the
delegate with byte-identical values; runtimeConfig reaches only the cluster network and only the plugins that
declare the capability (keys and values as the runtime sent them); CNI_ARGS is forwarded unchanged."""

import json

from testenv.lib import plexus as px
from testenv.lib.plexus import Pod

# Raw JSON text: number literals Python would rewrite (1.50 -> 1.5, 1E+2 -> 100.0, -0.0 -> -0.0 ok) stay as text.
EXTRA_RAW = ('{"nested": {"list": [1, 2.50, {"deep": null, "t": true}], "big": 12345678901234567890,'
             ' "neg": -0, "exp": 1E+2, "small": 0.000001000}, "float": 1.50,'
             ' "unicode": "\\u00fcn\\u00efcode \\u2028 \\"q\\"", "emptyObj": {}, "emptyList": []}')

RUNTIME_CONFIG_RAW = ('{"portMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],'
                      ' "ipRanges": [[{"subnet": "10.231.60.0/24"}]], "bandwidth": {"ingressRate": 1000000},'
                      ' "io.kubernetes.cri.pod-annotations": {"Foo.Example/Key": "QUX", "X": "1.50"}}')

CNI_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=pxns;K8S_POD_NAME=pxpod;K8S_POD_UID=pxuid-1;PXFOO=bar=baz"


def canon(v):
    """Order-preserving canonical text of a literally parsed value."""
    return json.dumps(v, ensure_ascii=False)


def build_stdin(pxenv):
    rec = pxenv.rec_dir
    cluster = px.conflist("pxclu", "1.0.0", [
        px.fake(recordDir=rec, ip="10.231.61.2/24", pxExtra="@EXTRA@",
                capabilities={"portMappings": True, "io.kubernetes.cri.pod-annotations": True, "bandwidth": False}),
        px.fake(recordDir=rec, capabilities={"ipRanges": True}, pxExtra="@EXTRA@"),
        px.fake(recordDir=rec, pxNoCaps=True),
    ])
    second = px.conflist("pxsec", "1.0.0", [
        px.fake(recordDir=rec, ip="10.231.62.2/24", capabilities={"portMappings": True, "ipRanges": True},
                pxExtra="@EXTRA@"),
    ])
    cfg = pxenv.config("1.0.0", [cluster, second], runtimeConfig="@RC@")
    text = json.dumps(cfg).replace('"@EXTRA@"', EXTRA_RAW).replace('"@RC@"', RUNTIME_CONFIG_RAW)
    return text


def plugin_records(pxenv, command):
    """Recordings of ``command`` grouped by (network, plugin position)."""
    out = {}
    for r in px.read_records(pxenv.rec_dir, command=command):
        s = r["stdin"]
        pos = 0 if "pxNoCaps" not in s and s.get("capabilities", {}).get("portMappings") and s["name"] == "pxclu" \
            else 1 if s.get("capabilities", {}).get("ipRanges") and s["name"] == "pxclu" \
            else 2 if "pxNoCaps" in s else 3
        out.setdefault((s["name"], pos), []).append(r)
    return out


def test_unknown_keys_runtime_config_and_cni_args_pass_through(pxenv):
    stdin = build_stdin(pxenv)
    extra = px.loads_literal(EXTRA_RAW)
    rc = px.loads_literal(RUNTIME_CONFIG_RAW)
    pod = Pod(pxenv)

    r = pod.add(stdin, cni_args=CNI_ARGS)
    assert r.code == 0, r
    recs = plugin_records(pxenv, "ADD")
    assert sorted(recs) == [("pxclu", 0), ("pxclu", 1), ("pxclu", 2), ("pxsec", 3)], sorted(recs)
    assert all(len(v) == 1 for v in recs.values()), recs

    a = recs[("pxclu", 0)][0]
    b = recs[("pxclu", 1)][0]
    c = recs[("pxclu", 2)][0]
    d = recs[("pxsec", 3)][0]

    # unknown keys: identical literals (20-digit integer, 1.50, 1E+2, -0, nested order)
    for rec in (a, b, d):
        assert canon(rec["stdin"]["pxExtra"]) == canon(extra), rec["stdin"]["pxExtra"]
    assert a["stdin"]["pxExtra"]["nested"]["big"] == "12345678901234567890"
    assert a["stdin"]["pxExtra"]["float"] == "1.50"

    # runtimeConfig: cluster network only, filtered per plugin by declared (true) capabilities
    assert canon(a["stdin"]["runtimeConfig"]) == canon(
        {"portMappings": rc["portMappings"], "io.kubernetes.cri.pod-annotations": rc["io.kubernetes.cri.pod-annotations"]}
    ), a["stdin"]["runtimeConfig"]
    assert a["stdin"]["runtimeConfig"]["portMappings"][0]["HostPort"] == "8080"
    assert canon(b["stdin"]["runtimeConfig"]) == canon({"ipRanges": rc["ipRanges"]}), b["stdin"]["runtimeConfig"]
    assert "runtimeConfig" not in c["stdin"], c["stdin"]
    assert "runtimeConfig" not in d["stdin"], "a non-cluster network got runtimeConfig: %s" % d["stdin"]

    # CNI_ARGS forwarded unchanged to every delegate; per-network ifname; same netns and container
    for rec, ifname in ((a, "eth0"), (b, "eth0"), (c, "eth0"), (d, "net1")):
        env = rec["env"]
        assert env["CNI_ARGS"] == CNI_ARGS, env
        assert env["CNI_IFNAME"] == ifname and env["CNI_CONTAINERID"] == pod.cid, env
        assert env["CNI_NETNS"] == pod.netns_path, env
        assert env["CNI_COMMAND"] == "ADD"

    # the cache holds the exact literals too (it is what DEL replays)
    for net, ifname in (("pxclu", "eth0"), ("pxsec", "net1")):
        raw = px.entry_config(pxenv.cache.result_entry(net, pod.cid, ifname)).decode()
        assert "12345678901234567890" in raw and "1.50" in raw and "1E+2" in raw, raw

    # DEL replays the same values and the cluster network's capability args
    dl = pod.delete(stdin, cni_args=CNI_ARGS)
    assert dl.code == 0, dl
    drecs = plugin_records(pxenv, "DEL")
    assert sorted(drecs) == sorted(recs), sorted(drecs)
    assert canon(drecs[("pxclu", 0)][0]["stdin"]["runtimeConfig"]) == canon(a["stdin"]["runtimeConfig"])
    assert canon(drecs[("pxclu", 0)][0]["stdin"]["pxExtra"]) == canon(extra)
    assert "runtimeConfig" not in drecs[("pxsec", 3)][0]["stdin"]
    for recs_ in drecs.values():
        assert recs_[0]["env"]["CNI_ARGS"] == CNI_ARGS
    assert pxenv.cache_files() == []


def test_single_conf_file_cluster_network_passes_unknown_keys(pxenv):
    """clusterNetwork by name from confDir (a .conf file): unknown keys and literals survive the up-conversion."""
    conf_text = ('{"cniVersion": "1.0.0", "name": "pxfile", "type": "plexus-test-delegate", "recordDir": %s,'
                 ' "pxExtra": %s}' % (json.dumps(pxenv.rec_dir), EXTRA_RAW))
    with open(pxenv.conf_dir + "/10-pxfile.conf", "w") as f:
        f.write(conf_text)
    cfg = pxenv.config("1.0.0", None, clusterNetwork="pxfile")
    pod = Pod(pxenv)
    r = pod.add(cfg)
    assert r.code == 0, r
    recs = px.read_records(pxenv.rec_dir, command="ADD")
    assert len(recs) == 1
    assert canon(recs[0]["stdin"]["pxExtra"]) == canon(px.loads_literal(EXTRA_RAW))
    assert pod.delete(cfg).code == 0
    assert pxenv.cache_files() == []
