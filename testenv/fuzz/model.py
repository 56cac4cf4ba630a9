"""Hypothesis strategies for Plexus fuzz cases (the case format and the oracles are in ``harness.py``).

``cases(focus)`` draws one case; ``focus`` chooses what is mutated hardest:

* ``config``: the stdin configuration: numeric extremes and wrong types for the timeouts, NUL/control
  characters/``..``/``/`` in names, types and versions, wrong-typed keys, failing delegates (any code, any
  verb), malformed JSON text; every verb.
* ``env``: the CNI_* variables (weird container IDs, interface names, netns paths, CNI_ARGS, CNI_PATH, unset
  variables, unknown commands) around a valid configuration.
* ``cache``: files pre-seeded in cniDir (attachments/, results/, locks/): valid, foreign (another container's),
  traversal names, wrong kind, truncated, random bytes, symlinks (outside, dangling, FIFO, loop), FIFOs,
  directories, hard links; DEL, ADD, CHECK, GC and STATUS over them, next to a bystander container whose files
  must stay untouched.
* ``k8s``: a pod on the test API server with generated ``k8s.v1.cni.cncf.io/networks`` (shorthand and JSON form:
  odd names, namespaces and interfaces, ips, mac, default-route, cni-args, portMappings, bandwidth,
  infiniband-guid, deviceID, extreme numbers, huge arrays, deep nesting, invalid JSON, wrong types) and
  ``v1.multus-cni.io/default-network`` annotations, and NetworkAttachmentDefinitions with generated
  ``spec.config`` (valid fake delegates, missing or evil types, non-JSON, empty, huge) and resourceName
  annotations; ADD (then DEL) through a kubeconfig pointing at the server.

Alternatives are listed benign first, and optional features are off at the low end of their draw, so hypothesis'
shrinking (``PLEXUS_FUZZ_SHRINK=1``) walks towards the smallest failing case.
"""

import json

from hypothesis import strategies as st

from testenv.fuzz.harness import SENTINEL
from testenv.lib import plexus as px

FAKE = px.FAKE
VERSIONS = ["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0", "0.2.0", "0.1.0"]


class Lit(str):
    """Raw JSON text (number literals exactly as written, lone surrogate escapes, ...)."""


def to_json(v):
    """Serializes like json.dumps, but ``Lit`` values go in verbatim and NUL/control characters are escaped."""
    if isinstance(v, Lit):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join("%s:%s" % (json.dumps(k), to_json(x)) for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(to_json(x) for x in v) + "]"
    return json.dumps(v)


def trav(k, tail="outside/v"):
    return "../" * k + tail


EXTREME = ["1e10", "1e400", "9.3e9", "1E+10", "1e19", "1e300", "1.7976931348623157e308", "9223372036854775807",
           "9223372036854775808", "18446744073709551616", "1" + "0" * 30, "1" + "0" * 400]
TINY = ["0.05", "-0", "-0.0", "0", "0.0", "1e-400", "4.9e-324", "-1", "-1e400", "-9223372036854775808", "1e-3"]
LEGIT = ["5", "30", "2.5", "1e2", "9.2e9"]
NON_NUMBER = ['"5"', '"1e10"', "true", "false", "[]", "{}", "[5]", '"\\u0000"']
BAD_TOKEN = ["NaN", "Infinity", "-Infinity", "0x10", "01", "+1", ".5", "5.", "1e", "--1", "1_000"]
# Values after which a missing readiness file or an unreachable API server cannot legitimately make plexus wait.
NO_WAIT = set(EXTREME) | set(TINY) | set(NON_NUMBER) | set(BAD_TOKEN)
NUMBERS = [Lit(x) for x in LEGIT + EXTREME + TINY + NON_NUMBER + BAD_TOKEN + ["null"]]

WEIRD_STR = ["", ".", "..", "../x", trav(7), "a/b", "/abs", "x\u0000", "\u0000", "pxnet\u0000/../x", "a\nb", "a\tb",
             "\u001f", "\u007f", "\u00e9", "\U0001f600", "x" * 300, "-x", "_x", "a b", "a:b", "%", "pxnet\u2028"]
SURROGATES = [Lit('"\\ud800"'), Lit('"a\\udc00"'), Lit('"\\ud83d"'), Lit('"\\udfff\\ud800"')]
NON_STR = [Lit("5"), Lit("null"), Lit("true"), Lit("[]"), Lit("{}"), Lit("1e400")]
WEIRD_VERSIONS = ["", "9.9.9", "1.1", "1.1.0.0", "01.1.0", "1.1.0\u0000", "1.1.0 ", "v1.1.0", "../1.1.0", "0.0.0",
                  "1.10.0", "99999999999.0.0", "1.1.0\n", "\u0661.\u0661.\u0660", "1.1.-0", "1e0.1.0"]
EVIL_TYPES = [SENTINEL + "\u0000", SENTINEL + "\u0000x", FAKE + "\u0000/../../evil", "../evil",
              "../../../../../../evil", "%S%/outside/evil", "/evil", ".", "..", "", SENTINEL + "/", SENTINEL + "\\",
              " " + SENTINEL, SENTINEL + "\n", "evil", FAKE + "\u0000", Lit("5"), Lit("null")]
CODES = ["11", "7", "0", "-1", "42", "9", "99", "100", "999", "2147483648", "9223372036854775807",
         "-9223372036854775808", "1e30", "1.5", '"7"', "null", "4", "1", "8", "12"]
MSGS = ["pxboom", "", Lit("5"), "a\u0000b", "\u001b[31mred", "x" * 2000, "\u00e9\U0001f600", Lit('"\\ud800"')]
POD_ARGS = px.POD_ARGS % ("pxpod", "pxuid")


def chance(draw, p):
    """True with probability ~p; False at the shrink end."""
    return draw(st.integers(0, 999)) >= 1000 - int(p * 1000)


def pick(draw, options):
    return draw(st.sampled_from(options))


def some(draw, options, p, default):
    return pick(draw, options) if chance(draw, p) else default


# ----------------------------------------------------------------------------------------------------------------
# Delegate networks (plexus-test-delegate chains)
# ----------------------------------------------------------------------------------------------------------------

def plugin(draw, weird, fail_p):
    p = {"type": some(draw, EVIL_TYPES, 0.12 if weird else 0.0, FAKE), "recordDir": "%REC%"}
    if chance(draw, fail_p):
        verbs = draw(st.lists(st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS"]), min_size=1, max_size=2,
                              unique=True))
        fail = {}
        for v in verbs:
            codes = CODES + (["50", "51"] if v == "STATUS" else [])
            spec = {"code": Lit(pick(draw, codes)), "msg": pick(draw, MSGS)}
            if chance(draw, 0.2):
                spec["details"] = pick(draw, MSGS)
            fail[v] = spec
        p["fail"] = fail
    if chance(draw, 0.08 if weird else 0.03):
        p["status"] = {"code": Lit(pick(draw, ["50", "51", "0", "-1", "42", "7", "999"])), "msg": "pxdown"}
    if chance(draw, 0.08 if weird else 0.0):
        p["resultVersion"] = pick(draw, VERSIONS + ["9.9.9", "", "0.0.1", "1.1.0\u0000"])
    if chance(draw, 0.08 if weird else 0.0):
        p["ip"] = pick(draw, ["10.99.0.2/24", "garbage", "10.1.1.1/33", "::1/128", "", "10.99.0.2",
                              "999.1.1.1/8", "fe80::1%eth0/64"])
    if chance(draw, 0.1):
        p["stateDir"] = "%S%/.px/state"
    if chance(draw, 0.05 if weird else 0.0):
        p["capabilities"] = pick(draw, [{"portMappings": True}, Lit("5"), {"mac": Lit("1e400")}])
    return p


def network(draw, i, version, weird, fail_p):
    name = ["pxa", "pxb", "pxc"][i]
    if weird and chance(draw, 0.12):
        name = pick(draw, WEIRD_STR + NON_STR + SURROGATES)
    v = version
    if chance(draw, 0.2):
        v = pick(draw, VERSIONS)
    if weird and chance(draw, 0.08):
        v = pick(draw, WEIRD_VERSIONS + NON_STR)
    plugins = [plugin(draw, weird, fail_p) for _ in range(2 if chance(draw, 0.2) else 1)]
    if len(plugins) == 1 and chance(draw, 0.5):
        conf = {"cniVersion": v, "name": name}
        conf.update(plugins[0])
        return conf
    lst = {"cniVersion": v, "name": name, "plugins": plugins}
    if weird and chance(draw, 0.1):
        lst[pick(draw, ["disableCheck", "disableGC", "cniVersions"])] = pick(
            draw, [True, "TRUE", Lit("5"), ["1.1.0", "9.9.9"], [Lit("5")], "1.0.0"])
    return lst


def networks(draw, version, weird, fail_p):
    return [network(draw, i, version, weird, fail_p) for i in range(draw(st.integers(1, 3)))]


def plexus_config(version, delegates):
    return {"cniVersion": version, "name": "pxnet", "type": "plexus", "cniDir": "%CNI%", "confDir": "%CONF%",
            "binDir": "%BIN%", "logLevel": "debug", "delegates": delegates}


# ----------------------------------------------------------------------------------------------------------------
# Configuration mutations
# ----------------------------------------------------------------------------------------------------------------

# Weighted: the numeric settings (and the waits they bound) come up most.
CONFIG_MUTATIONS = ["number"] * 4 + ["str"] * 2 + ["readiness"] * 2 + ["kubeconfig"] * 2 + [
    "version", "delegates", "networks", "path-types", "log", "gc-list", "misc", "finalizers", "delete"]


def mutate_config(draw, cfg):
    for _ in range(draw(st.integers(0, 3))):
        m = pick(draw, CONFIG_MUTATIONS)
        if m == "number":
            cfg[pick(draw, ["delegateTimeoutSeconds", "readinessTimeoutSeconds", "apiDeadlineSeconds"])] = \
                pick(draw, NUMBERS)
        elif m == "str":
            cfg[pick(draw, ["name", "cniVersion", "type"])] = pick(draw, WEIRD_STR + NON_STR + SURROGATES)
        elif m == "version":
            cfg["cniVersion"] = pick(draw, WEIRD_VERSIONS)
        elif m == "delegates":
            cfg["delegates"] = pick(draw, [Lit("{}"), "pxa", [Lit("5")], [], [{}], Lit("null"), [{"type": FAKE}],
                                           [{"name": "pxa"}], [{"name": "pxa", "plugins": []}]])
        elif m == "networks":
            if chance(draw, 0.5):
                cfg["clusterNetwork"] = pick(draw, ["pxconf", "../outside/x", "", Lit("5"), "pxconf\u0000",
                                                    "/nonexistent", "%CONF%/pxconf.conflist", "%CONF%"])
            else:
                cfg["defaultNetworks"] = pick(draw, [["pxconf"], ["../x"], [Lit("5")], "pxconf", ["pxconf\u0000"],
                                                     ["pxconf", "pxconf"]])
        elif m == "path-types":   # wrong types for paths (null or "" would select the host's defaults)
            cfg[pick(draw, ["cniDir", "confDir", "binDir", "logFile", "kubeconfig", "readinessindicatorfile"])] = \
                pick(draw, [Lit("5"), Lit("true"), Lit("[]"), Lit("{}"), Lit("1e400")])
        elif m == "readiness":
            cfg["readinessindicatorfile"] = pick(draw, ["%S%/ready", "%S%/.px/missing"])
            cfg["readinessTimeoutSeconds"] = pick(draw, NUMBERS)
        elif m == "kubeconfig":
            cfg["kubeconfig"] = pick(draw, ["%S%/kubeconfig.json", "%S%/.px/nokube.json", "%S%/ns"])
            cfg["apiDeadlineSeconds"] = pick(draw, NUMBERS)
        elif m == "log":
            k = pick(draw, ["logLevel", "logToStderr", "logFile"])
            cfg[k] = pick(draw, {"logLevel": ["verbose", "info", "nope", Lit("5"), "\u0000"],
                                 "logToStderr": [False, "yes", Lit("5")],
                                 "logFile": ["%S%/.px/log/plexus.log", "%S%/.px/log", "%S%/.px/log/\u0000x"]}[k])
        elif m == "gc-list":
            cfg[pick(draw, ["cni.dev/valid-attachments", "cni.dev/attachments"])] = pick(draw, [
                [], [{"containerID": "pxc1", "ifname": "eth0"}], "x", [Lit("5")], [{}],
                [{"containerID": Lit("5"), "ifname": "eth0"}], [{"containerID": "../x", "ifname": "../y"}]])
        elif m == "misc":
            k = pick(draw, ["prevResult", "runtimeConfig", "capabilities", "parallelTeardown", "namespaceIsolation",
                            "globalNamespaces", "systemNamespaces", "multusNamespace"])
            cfg[k] = pick(draw, [Lit("5"), {"cniVersion": "9.9.9", "ips": "x"}, {"portMappings": True},
                                 {"portMappings": [{"hostPort": Lit("1e400")}]}, False, "no", "a,,b", ["x", Lit("5")],
                                 ""])
        elif m == "finalizers":
            if chance(draw, 0.7):
                cfg["finalizers"] = pick(draw, [
                    [{"type": FAKE, "name": "pxfin"}], [{"type": FAKE}, {"type": FAKE, "name": "pxfin2"}],
                    [{"type": FAKE, "fail": {"ADD": {"code": 7, "msg": "pxfinbad"}}}],
                    [{"type": FAKE, "fail": {"DEL": {"code": 11, "msg": "pxfinbusy"}}}],
                    [{"type": FAKE, "cniVersion": "9.9.9"}], [{"type": FAKE, "name": "../x"}], [{"type": "../x"}],
                    [{"type": ""}], [{"type": "pxfin\u0000"}], [{"name": "no-type"}], [Lit("5")], "x", Lit("{}")])
            else:
                cfg["auxiliaryCNIChainName"] = pick(draw, ["pxaux", "../x", "", Lit("5"), "pxaux\u0000", "/abs"])
        else:   # "delete"
            cfg.pop(pick(draw, ["name", "cniVersion", "type", "delegates"]), None)
    return cfg


def make_safe(cfg):
    """No legitimate long wait: a missing readiness file or a reachable-looking kubeconfig only with a timeout
    that must end the wait at once (tiny, extreme, or invalid)."""
    if cfg.get("readinessindicatorfile") == "%S%/.px/missing" and cfg.get("readinessTimeoutSeconds") not in NO_WAIT:
        cfg["readinessindicatorfile"] = "%S%/ready"
    if cfg.get("kubeconfig") == "%S%/kubeconfig.json" and cfg.get("apiDeadlineSeconds") not in NO_WAIT:
        cfg["apiDeadlineSeconds"] = Lit("0.05")
    return cfg


def mutate_text(draw, text):
    m = draw(st.integers(0, 6))
    if m == 0:
        return text[:draw(st.integers(0, max(0, len(text) - 1)))]
    if m == 1:
        i = draw(st.integers(0, len(text)))
        return text[:i] + pick(draw, ["\udcff", "\udcc0\udc80", "\udced\udca0\udc80"]) + text[i:]
    if m == 2:
        return "\ufeff" + text
    if m == 3:
        return text + pick(draw, [" x", "\n{}", "\u0000", "]"])
    if m == 4:
        return pick(draw, ["", "[]", "5", "null", '"x"', "{}", "[" * 300, "{" * 100000, "\u0000"])
    return text[:-1] + pick(draw, [',"name":"../x"}', ',"delegateTimeoutSeconds":1e400}', ',"delegates":5}',
                                   ',"cniVersion":"9.9.9"}', ',"":1}'])


# ----------------------------------------------------------------------------------------------------------------
# Pre-seeded cache files
# ----------------------------------------------------------------------------------------------------------------

def bucket(cid):
    """LockSet.bucket: FNV-1a over the UTF-8 bytes, modulo 128."""
    h = 2166136261
    for b in cid.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % 128


def list_text(net, marker=False):
    """The network's list object (a conf is up-converted), as JSON text with placeholders."""
    plugins = [dict(p) for p in net.get("plugins", [net])]
    if marker:
        for p in plugins:
            p["ip"] = "10.66.6.6/24"
    return to_json({"cniVersion": net.get("cniVersion", ""), "name": net.get("name", ""), "plugins": plugins})


def ifname_of(i, ifname):
    return ifname if i == 0 else "net%d" % i


def record(net_name, cid, ifn, nets, ifname, marker=False, evil=False):
    entries = []
    for i, n in enumerate(nets):
        text = list_text(n, marker)
        if evil:
            text = text.replace(json.dumps(FAKE), json.dumps(SENTINEL + "\u0000"), 1)
        e = {"name": n["name"], "ifName": ifname_of(i, ifname), "display": n["name"], "config": {"$b64": {"text": text}}}
        if i == 0:
            e["default"] = True
        entries.append(e)
    return {"kind": "plexusAttachmentV1", "network": net_name, "containerId": cid, "ifName": ifn, "netns": "%NS%",
            "cniArgs": [], "state": "planned", "networks": entries}


def cache_entry(net, cid, ifn, owner, marker=False, evil=False):
    text = list_text(net, marker)
    if evil:
        text = text.replace(json.dumps(FAKE), json.dumps(SENTINEL + "\u0000"), 1)
    ip = "10.66.6.6/24" if marker else "10.99.0.2/24"
    return {"kind": "cniCacheV1", "containerId": cid, "config": {"$b64": {"text": text}}, "ifName": ifn,
            "networkName": net["name"], "netns": "%NS%",
            "result": {"cniVersion": "1.0.0", "interfaces": [{"name": ifn, "sandbox": "%NS%"}],
                       "ips": [{"address": ip, "interface": 0}]},
            "plexusOwner": {"network": owner[0], "ifName": owner[1]}}


# Weighted towards the kinds that name other paths or containers.
FILE_KINDS = ["own"] * 2 + ["own-traversal"] * 4 + ["foreign-copy"] * 2 + [
    "own-evil", "foreign-symlink", "wrong-kind", "wrong-version", "wrong-shape", "truncated", "random", "empty", "null", "deep",
    "symlink-outside", "symlink-dangling", "symlink-dangling-deep", "symlink-fifo", "symlink-dir", "symlink-loop",
    "fifo", "dir", "hardlink"]
LOCK_KINDS = ["symlink-dangling", "symlink-dangling-deep", "symlink-fifo", "symlink-outside", "symlink-dir", "fifo",
              "dir", "random", "hardlink", "symlink-loop"]
DIR_KINDS = ["random", "symlink-dangling", "fifo", "symlink-outside"]


def seed_file(draw, files, traversal, path, kind, own, foreign, n):
    """Appends the files for one seed at ``path`` (own/foreign: content builders for this slot)."""
    out = "%%S%%/outside/t%d" % n
    if kind == "own":
        files.append({"path": path, "kind": "file", "content": own()})
    elif kind == "own-evil":
        files.append({"path": path, "kind": "file", "content": own(evil=True)})
    elif kind == "own-traversal":
        doc = own()
        name = trav(draw(st.integers(1, 7)), pick(draw, ["outside/v", "v", "r1/v"]))
        traversal.append(name)
        keys = [k for k in ("network", "networkName", "containerId", "ifName") if k in doc]
        field = pick(draw, keys + ["nested"])
        if field != "nested":
            doc[field] = name
        elif "networks" in doc:
            doc["networks"][draw(st.integers(0, len(doc["networks"]) - 1))]["ifName"] = name
        else:
            doc["plexusOwner"]["ifName"] = name
        files.append({"path": path, "kind": "file", "content": doc})
    elif kind == "foreign-copy":
        files.append({"path": path, "kind": "file", "content": foreign()})
    elif kind == "foreign-symlink":
        files.append({"path": out, "kind": "file", "content": foreign()})
        files.append({"path": path, "kind": "symlink", "target": out})
    elif kind == "wrong-kind":
        doc = own()
        doc["kind"] = pick(draw, ["plexusAttachmentV2", "cniCacheV1", "plexusAttachmentV1", "", {"$raw": "5"}])
        files.append({"path": path, "kind": "file", "content": doc})
    elif kind == "wrong-version":   # the cached list's (or result's) cniVersion
        doc = own()
        v = pick(draw, ["9.9.9", "", "0.0.1", "1.1.0\u0000", "\u00001.0.0"])
        if "networks" in doc:
            net = doc["networks"][0]
            net["config"] = {"$b64": {"text": net["config"]["$b64"]["text"].replace(
                '"cniVersion":', '"cniVersion":%s,"x":' % json.dumps(v), 1)}}
        else:
            doc["result"]["cniVersion"] = v
        files.append({"path": path, "kind": "file", "content": doc})
    elif kind == "wrong-shape":
        doc = own()
        k = pick(draw, sorted(doc))
        doc[k] = pick(draw, [{"$raw": "5"}, {"$raw": "null"}, "!!!", {"$b64": {"text": "garbage"}},
                             [{"$raw": "1e400"}], "bogus"])
        files.append({"path": path, "kind": "file", "content": doc})
    elif kind == "truncated":
        c = {"json": own(), "truncate": draw(st.integers(0, 400))}
        files.append({"path": path, "kind": "file", "content": c})
    elif kind == "random":
        files.append({"path": path, "kind": "file", "content": {"hex": draw(st.binary(max_size=48)).hex()}})
    elif kind == "empty":
        files.append({"path": path, "kind": "file", "content": {"text": ""}})
    elif kind == "null":
        files.append({"path": path, "kind": "file", "content": {"text": pick(draw, ["null", "[]", "5", '"x"'])}})
    elif kind == "deep":
        files.append({"path": path, "kind": "file", "content": {"text": "[" * 300}})
    elif kind == "symlink-outside":
        files.append({"path": out, "kind": "file", "content": {"text": "outside\n"}})
        files.append({"path": path, "kind": "symlink", "target": out})
    elif kind == "symlink-dangling":
        files.append({"path": path, "kind": "symlink", "target": "%%S%%/outside/absent%d" % n})
    elif kind == "symlink-dangling-deep":
        files.append({"path": path, "kind": "symlink", "target": "%%S%%/outside/nodir%d/absent" % n})
    elif kind == "symlink-fifo":
        files.append({"path": out, "kind": "fifo"})
        files.append({"path": path, "kind": "symlink", "target": out})
    elif kind == "symlink-dir":
        files.append({"path": out, "kind": "dir"})
        files.append({"path": path, "kind": "symlink", "target": out})
    elif kind == "symlink-loop":
        files.append({"path": path, "kind": "symlink", "target": path})
    elif kind == "fifo":
        files.append({"path": path, "kind": "fifo"})
    elif kind == "dir":
        files.append({"path": path, "kind": "dir", "entries": {"x": {"text": "x"}} if chance(draw, 0.5) else {}})
    elif kind == "hardlink":
        files.append({"path": out, "kind": "file", "content": own() if own else {"text": ""}})
        files.append({"path": path, "kind": "hardlink", "target": out})


def cache_seeds(draw, cid, ifname, nets, verb, cfg):
    files, traversal = [], []
    y = "pxy%d" % draw(st.integers(0, 9))
    owner = ("pxnet", ifname)
    slots = ["record"] * 4 + ["result:%d" % i for i in range(len(nets))] + ["result-other", "lock-gc", "lock-bucket",
                                                                            "dir"]
    used = set()
    for n in range(draw(st.integers(1, 4))):
        slot = pick(draw, slots)
        if slot == "dir":
            slot = "dir:" + pick(draw, ["attachments", "results", "locks"])
        if slot in used:
            continue
        used.add(slot)
        if slot == "record":
            path = "%%CNI%%/attachments/pxnet-%s-%s" % (cid, ifname)

            def own(evil=False):
                return record("pxnet", cid, ifname, nets, ifname, evil=evil)

            def foreign():
                return record("pxnet", y, "eth0", nets, "eth0", marker=True)
            seed_file(draw, files, traversal, path, pick(draw, FILE_KINDS), own, foreign, n)
        elif slot.startswith("result"):
            if slot == "result-other":
                net, ifn = {"cniVersion": "1.0.0", "name": "pxz", "type": FAKE, "recordDir": "%REC%"}, ifname
            else:
                i = int(slot.split(":")[1])
                net, ifn = nets[i], ifname_of(i, ifname)
            path = "%%CNI%%/results/%s-%s-%s" % (net["name"], cid, ifn)

            def own(evil=False, net=net, ifn=ifn):
                return cache_entry(net, cid, ifn, owner, evil=evil)

            def foreign(net=net):
                return cache_entry(net, y, "eth0", ("pxnet", "eth0"), marker=True)
            seed_file(draw, files, traversal, path, pick(draw, FILE_KINDS), own, foreign, n)
        elif slot.startswith("lock"):
            name = "gc" if slot == "lock-gc" else "container-%d" % bucket(cid)
            seed_file(draw, files, traversal, "%%CNI%%/locks/%s" % name, pick(draw, LOCK_KINDS), None, None, n)
        else:
            seed_file(draw, files, traversal, "%%CNI%%/%s" % slot.split(":")[1], pick(draw, DIR_KINDS), None, None, n)
    for d in (s.split(":")[1] for s in used if s.startswith("dir:")):   # that directory is now a file or link
        files = [f for f in files if not f["path"].startswith("%%CNI%%/%s/" % d)]
    bystander = None
    if not any(s.startswith("dir:") for s in used):
        bystander = y
        files.insert(0, {"path": "%%CNI%%/attachments/pxnet-%s-eth0" % y, "kind": "file",
                         "content": record("pxnet", y, "eth0", nets, "eth0", marker=True)})
        for i, net in enumerate(nets):
            files.insert(1, {"path": "%%CNI%%/results/%s-%s-%s" % (net["name"], y, ifname_of(i, "eth0")),
                             "kind": "file", "content": cache_entry(net, y, ifname_of(i, "eth0"),
                                                                    ("pxnet", "eth0"), marker=True)})
    if verb == "GC":
        valid = ([{"containerID": y, "ifname": "eth0"}] if bystander else []) + \
            ([{"containerID": cid, "ifname": ifname}] if chance(draw, 0.3) else [])
        cfg["cni.dev/valid-attachments"] = valid
    return files, traversal, bystander


# ----------------------------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------------------------

CIDS = ["-x", "a/b", "..", ".", "a b", "\u00e91", "x" * 256, "x" * 5000, "a\u0001b", "a\nb", "a:b", "", "_a",
        "A.b-c_d", "%S%", trav(7), "pxc1\u00a0"]
IFNAMES = ["", ".", "..", "a/b", "x" * 16, "x" * 15, "\u00e9", "a\tb", "a:b", "-", "net1", "net0", "eth0 ", "\u00a0",
           "../x", "a\u2028b", "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"]
NETNS = ["%NS%", "", "/nonexistent", "relative", "%S%/outside", "/proc/self/ns/net", "x" * 5000]
CNI_ARGS = [POD_ARGS, "", "NOEQ", ";;;", "=", "IgnoreUnknown=1", "IgnoreUnknown=1;K8S_POD_NAMESPACE=../..;K8S_POD_NAME=../x",
            "a=b=c", "K=" + "v" * 5000, "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=", "K8S_POD_NAMESPACE=\u0001;K8S_POD_NAME=p"]
CNI_PATHS = ["%BIN%", "", ":", "%BIN%:/nonexistent", "/nonexistent", "%BIN%/", "%BIN%/../bin"]
COMMANDS = ["", "add", "ADD ", " ADD", "VERSION\n", "PXNOPE", "DEL\u0001", "ADD;DEL", "\u00e9"]


def base_env(draw, cid, ifname):
    env = {"CNI_CONTAINERID": cid, "CNI_NETNS": "%NS%", "CNI_IFNAME": ifname, "CNI_PATH": "%BIN%"}
    if chance(draw, 0.5):
        env["CNI_ARGS"] = POD_ARGS
    return env


def mutate_env(draw, env):
    for _ in range(draw(st.integers(1, 3))):
        k = pick(draw, ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH"])
        if chance(draw, 0.15):
            env.pop(k, None)
            continue
        env[k] = pick(draw, {"CNI_CONTAINERID": CIDS, "CNI_IFNAME": IFNAMES, "CNI_NETNS": NETNS,
                             "CNI_ARGS": CNI_ARGS, "CNI_PATH": CNI_PATHS}[k])
    return env



# ----------------------------------------------------------------------------------------------------------------
# Kubernetes: pod annotations and NetworkAttachmentDefinitions
# ----------------------------------------------------------------------------------------------------------------

K8S_NS = ["pxfz-a", "pxfz-b"]
K8S_POD = "pxfz-pod"
K8S_UID = "pxfz-uid"
NAD_NAMES = ["pxn-a", "pxn-b", "pxn-c"]
NETWORKS_ANN = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NET_ANN = "v1.multus-cni.io/default-network"
RESOURCE_ANN = "k8s.v1.cni.cncf.io/resourceName"
WEIRD_NAMES = ["pxconf", "missing", "", "PXN-A", "pxn_a", "-pxn", "pxn-a.", "x" * 64, "a/b", "../pxn-a", "pxn-a\u0001",
               "\u00e9", " pxn-a", "pxn-a "]
WEIRD_NS = ["default", "kube-system", "", "PXFZ", "x" * 64, "..", "a.b", "pxfz-a\u0001", "nope"]
GOOD_IFACES = ["net1", "net5", "eth1", "x" * 15]
IFACES = ["net1", "net5", "eth1", "eth0", "x" * 15, "x" * 16, "a/b", "..", ".", "", "a\u0001", "\u001f", "\u007f",
          "a b", "a:b", "\u00e9", "net0", "lo"]
GOOD_IPS = ["10.1.1.5/24", "fd00::5/64"]
IPS = ["10.1.1.5/24", "10.1.1.5", "fd00::5/64", "garbage", "10.1.1.5/33", "", "1.2.3.4.5", "::", "10.1.1.256"]
MACS = ["02:00:00:00:00:05", "02-00-00-00-00-05", "zz:zz", "", "02:00:00:00:00:05:06", "02:00:00:00:00"]
GUIDS = ["c2:11:22:33:44:55:66:77", "c2:11:22:33:44:55:66", "", "zz"]
GWS = ["10.1.1.1", "fd00::1", "garbage", "10.1.1.1/24", ""]
ODD = [Lit("5"), Lit("1e400"), Lit("-1e400"), Lit("null"), Lit("true"), Lit("[]"), Lit("{}"), Lit("1" + "0" * 400),
       Lit('"\\u0000"'), Lit('"\\ud800"'), "x", Lit("-0"), Lit("4.9e-324")]
PORTS = [Lit("80"), Lit("0"), Lit("65536"), Lit("-1"), Lit("1e400"), Lit("80.5"), "80", Lit("null"),
         Lit("9223372036854775808")]


def odd_or(draw, options, p=0.15):
    return pick(draw, ODD) if chance(draw, p) else pick(draw, options)


def port_mapping(draw):
    pm = {}
    for k in ("hostPort", "containerPort"):
        if not chance(draw, 0.1):
            pm[k] = pick(draw, PORTS)
    if chance(draw, 0.5):
        pm["protocol"] = odd_or(draw, ["tcp", "udp", "sctp", "TCP", "icmp", ""])
    if chance(draw, 0.3):
        pm["hostIP"] = odd_or(draw, ["0.0.0.0", "::", "garbage", "10.1.1.1/24"])
    return pm


def bandwidth(draw):
    bw = {}
    for k in ("ingressRate", "ingressBurst", "egressRate", "egressBurst"):
        if chance(draw, 0.5):
            bw[k] = pick(draw, [Lit("1000"), Lit("0"), Lit("-5"), Lit("1e400"), Lit("1.5"), "1000",
                                Lit("9223372036854775807"), Lit("18446744073709551616"), Lit("null")])
    return bw


def cni_args_value(draw):
    if chance(draw, 0.2):
        return pick(draw, [Lit("5"), Lit("[]"), "x", Lit("null"), Lit("true"), Lit("1e400")])
    args = {}
    for _ in range(draw(st.integers(0, 3))):
        k = pick(draw, ["foo", "cniVersion", "name", "type", "plugins", "", "recordDir", "stateDir", "fail"])
        args[k] = pick(draw, ODD + ["bar", SENTINEL, "../evil", "%S%/outside", {"ADD": {"code": Lit("7")}},
                                    [Lit("1"), {"a": Lit("1e400")}]])
    return args


ELEMENT_KEYS = ["namespace", "interface", "ips", "mac", "default-route", "cni-args", "portMappings", "bandwidth",
                "infiniband-guid", "deviceID", "interfaceRequest", "ipam-claim-reference", "unknown"]


def element(draw, namespaces):
    """One JSON-form selection element."""
    e = {}
    if not chance(draw, 0.05):
        e["name"] = pick(draw, WEIRD_NAMES) if chance(draw, 0.15) else \
            (pick(draw, ODD) if chance(draw, 0.04) else pick(draw, NAD_NAMES))
    for k in ELEMENT_KEYS:
        if not chance(draw, 0.12):
            continue
        if k == "namespace":
            v = odd_or(draw, WEIRD_NS if chance(draw, 0.3) else namespaces, 0.1)
        elif k in ("interface", "interfaceRequest"):
            v = odd_or(draw, IFACES if chance(draw, 0.4) else GOOD_IFACES, 0.1)
        elif k == "ips":
            v = pick(draw, ODD) if chance(draw, 0.15) else \
                [odd_or(draw, IPS if chance(draw, 0.4) else GOOD_IPS, 0.1) for _ in range(draw(st.integers(0, 3)))]
        elif k == "mac":
            v = odd_or(draw, MACS if chance(draw, 0.4) else MACS[:1])
        elif k == "infiniband-guid":
            v = odd_or(draw, GUIDS)
        elif k == "default-route":
            v = pick(draw, ODD) if chance(draw, 0.15) else \
                [odd_or(draw, GWS, 0.1) for _ in range(draw(st.integers(0, 3)))]
        elif k == "cni-args":
            v = cni_args_value(draw)
        elif k == "portMappings":
            v = pick(draw, ODD) if chance(draw, 0.15) else \
                [port_mapping(draw) if not chance(draw, 0.1) else pick(draw, ODD) for _ in range(draw(st.integers(0, 2)))]
        elif k == "bandwidth":
            v = pick(draw, ODD) if chance(draw, 0.15) else bandwidth(draw)
        elif k == "deviceID":
            v = odd_or(draw, ["0000:00:01.0", "", "x" * 300, "a\u0001b"])
        elif k == "ipam-claim-reference":
            v = odd_or(draw, ["claim", ""])
        else:
            v = pick(draw, ODD + ["x"])
        e[k if k != "unknown" else pick(draw, ["foo", "", "Name", "name "])] = v
    return e


def shorthand(draw, namespaces):
    items = []
    for _ in range(draw(st.integers(1, 4))):
        name = pick(draw, WEIRD_NAMES) if chance(draw, 0.15) else pick(draw, NAD_NAMES)
        item = name
        if chance(draw, 0.3):
            item = pick(draw, WEIRD_NS if chance(draw, 0.3) else namespaces) + "/" + item
        if chance(draw, 0.3):
            item += "@" + pick(draw, IFACES if chance(draw, 0.3) else GOOD_IFACES)
        if chance(draw, 0.08):
            item = pick(draw, ["a/b/c", "a@b@c", "@net1", "/pxn-a", "pxn-a@", " ", "", "pxn-a@net1@net2",
                               "pxfz-a/", "\u0000"])
        items.append(item)
    sep = pick(draw, [",", ", ", ",,", " , "]) if chance(draw, 0.15) else ","
    return sep.join(items)


HUGE_ANN = [
    "[" + ",".join(["5"] * 20000) + "]",
    "[" + ",".join(['{"name":"pxn-a","interface":"net1"}'] * 3000) + "]",
    "[" + ",".join(['{"name":"pxn-a","namespace":"%s"}' % ("x" * 64)] * 3000) + "]",
    "[" * 100000 + "]" * 100000,
    "[" * 600 + "]" * 600,
    '[{"name":"pxn-a","cni-args":' + '{"a":' * 600 + "1" + "}" * 600 + "}]",
    '[{"name":"' + "x" * 200000 + '"}]',
    ",".join(["pxn-a"] * 20000),
]
BAD_JSON = ["[", "[{", '[{"name":"pxn-a"}', '[{"name":"pxn-a",}]', "[]", "{}", '{"name":"pxn-a"}', "null", "5",
            '"pxn-a"', "[1e400]", '[{"name":"pxn-a"}] x', '[{"name":"pxn-a","name":"pxn-b"}]', "[\"\\ud800\"]",
            '[{"name":"\\u0000"}]', "\ufeff[]", "[{\"name\":\"pxn-a\"}]\u0000", " ", "", "\t[]\n", "[null]",
            '[{"name":"pxn-a","interface":"net1"},{"name":"pxn-b","interface":"net1"}]',
            '[{"name":"pxn-a","interface":"eth0"}]',
            '[{"name":"pxn-a","default-route":["10.1.1.1"]},{"name":"pxn-b","default-route":["10.2.2.2"]}]']


def networks_annotation(draw, namespaces):
    form = draw(st.integers(0, 9))
    if form <= 3:
        return shorthand(draw, namespaces)
    if form <= 7:
        return to_json([element(draw, namespaces) if not chance(draw, 0.05) else pick(draw, ODD)
                        for _ in range(draw(st.integers(0, 4)))])
    if form == 8:
        return pick(draw, BAD_JSON)
    return pick(draw, HUGE_ANN)


def default_network_annotation(draw, namespaces):
    return pick(draw, [pick(draw, NAD_NAMES), pick(draw, namespaces) + "/" + pick(draw, NAD_NAMES),
                       pick(draw, NAD_NAMES) + "@net1", "pxn-a,pxn-b", '[{"name":"pxn-a"}]',
                       '[{"name":"pxn-a"},{"name":"pxn-b"}]', '[{"name":"pxn-a","interface":"net3"}]', "[]", "",
                       pick(draw, WEIRD_NAMES), "[", '{"name":"pxn-a"}'])


def nad_config(draw, name):
    kind = draw(st.integers(0, 19))
    if kind <= 11:   # a valid fake delegate (conf or list), maybe failing, maybe declaring capabilities
        plugins = []
        for _ in range(2 if chance(draw, 0.15) else 1):
            p = {"type": FAKE, "recordDir": "%REC%"}
            if chance(draw, 0.5):
                p["stateDir"] = "%S%/.px/state"
            if chance(draw, 0.3):
                p["capabilities"] = {c: True for c in draw(st.lists(st.sampled_from(
                    ["ips", "mac", "portMappings", "bandwidth", "infinibandGUID", "deviceID", "cniArgs"]),
                    max_size=4, unique=True))}
            if chance(draw, 0.15):
                p["fail"] = {pick(draw, ["ADD", "DEL", "CHECK"]): {"code": Lit(pick(draw, CODES)),
                                                                    "msg": pick(draw, MSGS)}}
            plugins.append(p)
        v = pick(draw, VERSIONS) if chance(draw, 0.3) else "1.0.0"
        nm = name if not chance(draw, 0.1) else pick(draw, ["other", "", "pxnet", "pxconf"])
        if len(plugins) == 1 and chance(draw, 0.5):
            return to_json(dict({"cniVersion": v, "name": nm}, **plugins[0]))
        return to_json({"cniVersion": v, "name": nm, "plugins": plugins})
    if kind == 12:
        return to_json({"cniVersion": "1.0.0", "name": name, "recordDir": "%REC%"})   # missing type
    if kind == 13:
        return to_json({"cniVersion": "1.0.0", "name": name, "type": pick(draw, EVIL_TYPES), "recordDir": "%REC%"})
    if kind == 14:
        return None   # no spec.config: loaded from confDir by name
    if kind == 15:
        return pick(draw, ["", " ", "not json", "{", "[]", "null", "5", '"x"', "{}", "\u0000", "\ufeff{}"])
    if kind == 16:
        return to_json({"cniVersion": "1.0.0", "name": name, "type": FAKE, "recordDir": "%REC%",
                        "pad": "x" * 300000})
    if kind == 17:
        return to_json({"cniVersion": "1.0.0", "name": name, "plugins": pick(draw, [[], Lit("5"), [Lit("5")], [{}]])})
    if kind == 18:
        return '{"cniVersion":"1.0.0","name":"%s","type":"%s","recordDir":"%%REC%%","x":%s}' % (
            name, FAKE, "[" * 400 + "]" * 400)
    return to_json({"cniVersion": pick(draw, WEIRD_VERSIONS + ["1.0.0"]), "name": pick(draw, WEIRD_STR + [name]),
                    "type": FAKE, "recordDir": "%REC%", "delegateTimeoutSeconds": pick(draw, NUMBERS)})


def k8s_section(draw, ns):
    namespaces = [ns] + [n for n in K8S_NS if n != ns]
    nads = []
    for nm in NAD_NAMES + ["pxconf"]:   # most selections find their NADs (a missing one is a plain code 7)
        for nns in namespaces:
            present = not chance(draw, 0.15) if (nns == ns and nm != "pxconf") else chance(draw, 0.2)
            if not present:
                continue
            nad = {"namespace": nns, "name": nm, "config": nad_config(draw, nm)}
            if chance(draw, 0.2):
                nad["annotations"] = {RESOURCE_ANN: pick(draw, ["intel.com/sriov", "", "x" * 300, "a\u0001b",
                                                                "../x", "intel.com/sriov\u0000"])}
            nads.append(nad)
    ann = {}
    if not chance(draw, 0.08):
        ann[NETWORKS_ANN] = networks_annotation(draw, namespaces)
    if chance(draw, 0.15):
        ann[DEFAULT_NET_ANN] = default_network_annotation(draw, namespaces)
    pod = {"namespace": ns, "name": K8S_POD, "uid": K8S_UID, "annotations": ann}
    return {"pod": pod, "nads": nads}


def k8s_config(draw, version):
    cfg = plexus_config(version, [px.conf("pxcluster", version, px.fake(recordDir="%REC%", stateDir="%S%/.px/state"))
                                  if chance(draw, 0.5) else
                                  px.conf("pxcluster", version, px.fake(recordDir="%REC%"))])
    cfg["kubeconfig"] = "%KUBECONFIG%"
    cfg["apiDeadlineSeconds"] = Lit("1")   # well under the 3 s hang timeout, even with thousands of NAD GETs
    for _ in range(draw(st.integers(0, 2))):
        k = pick(draw, ["namespaceIsolation", "globalNamespaces", "multusNamespace", "defaultNetworks",
                        "systemNamespaces", "capabilities", "runtimeConfig"])
        cfg[k] = {"namespaceIsolation": pick(draw, [True, False]),
                  "globalNamespaces": pick(draw, ["pxfz-b", "pxfz-a,pxfz-b", ""]),
                  "multusNamespace": pick(draw, K8S_NS + ["nope"]),
                  "defaultNetworks": pick(draw, [["pxn-a"], ["pxn-b", "pxn-c"], ["pxconf"], ["missing"]]),
                  "systemNamespaces": pick(draw, [["pxfz-a"], []]),
                  "capabilities": {"portMappings": True, "bandwidth": True},
                  "runtimeConfig": {"portMappings": [{"hostPort": Lit("8080"), "containerPort": Lit("80"),
                                                      "protocol": "tcp"}]}}[k]
    if "defaultNetworks" in cfg and "multusNamespace" not in cfg and not chance(draw, 0.3):
        cfg["multusNamespace"] = K8S_NS[0]   # where the NADs are (the default, kube-system, has none)
    return cfg


def k8s_env_plain(cid, ifname, ns):
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s" % (ns, K8S_POD, cid)
    return {"CNI_CONTAINERID": cid, "CNI_NETNS": "%NS%", "CNI_IFNAME": ifname, "CNI_PATH": "%BIN%", "CNI_ARGS": args}


def k8s_env(draw, cid, ifname, ns):
    env = k8s_env_plain(cid, ifname, ns)
    args = env["CNI_ARGS"]
    if chance(draw, 0.5):
        args += ";K8S_POD_UID=" + (K8S_UID if not chance(draw, 0.1) else "other-uid")
    if chance(draw, 0.05):
        args = pick(draw, ["IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=nopod" % ns,
                           "IgnoreUnknown=1;K8S_POD_NAMESPACE=pxfz-none;K8S_POD_NAME=%s" % K8S_POD,
                           "IgnoreUnknown=1;K8S_POD_NAMESPACE=../..;K8S_POD_NAME=../x",
                           "IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s%%2F..%%2Fx" % (ns, K8S_POD)])
    env["CNI_ARGS"] = args
    return env


def k8s_case(draw):
    verb = pick(draw, ["ADD"] * 9 + ["DEL", "CHECK"])
    version = "1.1.0" if not chance(draw, 0.3) else pick(draw, VERSIONS[:4])
    cid = "pxc%d" % draw(st.integers(0, 999))
    ifname = "eth0" if not chance(draw, 0.1) else pick(draw, ["net1", "e", "x" * 15])
    ns = K8S_NS[0] if not chance(draw, 0.2) else K8S_NS[1]
    then = []
    if verb == "ADD":
        then = ["CHECK", "DEL"] if chance(draw, 0.2) else ["DEL"]
    return {"focus": "k8s", "verb": verb, "env": k8s_env(draw, cid, ifname, ns),
            "stdin": to_json(k8s_config(draw, version)), "files": [], "traversal": [], "bystander": None,
            "then": then, "k8s": k8s_section(draw, ns)}

# ----------------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------------

VERBS = {
    "config": ["ADD"] * 7 + ["DEL"] * 4 + ["CHECK"] * 2 + ["GC"] * 3 + ["STATUS"] * 3 + ["VERSION"],
    "env": ["ADD"] * 4 + ["DEL"] * 3 + ["CHECK"] * 2 + ["GC", "STATUS", "VERSION"],
    "cache": ["DEL"] * 8 + ["ADD"] * 5 + ["CHECK"] * 3 + ["GC"] * 3 + ["STATUS"],
}


@st.composite
def cases(draw, focus):
    if focus == "k8s":
        return k8s_case(draw)
    verb = pick(draw, VERBS[focus])
    version = "1.1.0" if not chance(draw, 0.3) else pick(draw, VERSIONS)
    cid = "pxc%d" % draw(st.integers(0, 999))
    ifname = "eth0" if not chance(draw, 0.1) else pick(draw, ["net9", "e", "x" * 15])
    weird = focus == "config"
    nets = networks(draw, version, weird, {"config": 0.3, "env": 0.1, "cache": 0.15}[focus])
    cfg = plexus_config(version, nets)
    env = base_env(draw, cid, ifname)
    files, traversal, bystander = [], [], None
    if focus == "config":
        mutate_config(draw, cfg)
    elif focus == "env":
        mutate_env(draw, env)
        if chance(draw, 0.15):
            verb = pick(draw, COMMANDS)
    else:
        files, traversal, bystander = cache_seeds(draw, cid, ifname, nets, verb, cfg)
    make_safe(cfg)
    text = to_json(cfg)
    if focus == "config" and chance(draw, 0.12):
        text = mutate_text(draw, text)
    then = []
    if verb == "ADD":
        then = ["CHECK", "DEL"] if chance(draw, 0.3) else ["DEL"]
    return {"focus": focus, "verb": verb, "env": env, "stdin": text, "files": files, "traversal": traversal,
            "bystander": bystander, "then": then}
