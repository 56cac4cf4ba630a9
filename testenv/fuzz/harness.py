"""Runs one fuzz case against the real ``plexus`` binary in a fresh sandbox and checks every oracle.

A *case* is plain JSON (so a failing one can be saved under ``testenv/fuzz/regressions/`` and replayed):

    {"verb": "DEL",                       # CNI_COMMAND of the main invocation
     "env": {"CNI_CONTAINERID": ..., ...}, # CNI_* variables (absent key: unset); values may hold placeholders
     "stdin": "<config text>",            # lone surrogates U+DC80..U+DCFF stand for raw bytes 0x80..0xFF
     "files": [{"path": "%CNI%/attachments/...", "kind": "file", "content": {...}}, ...],
     "traversal": ["../../x", ...],       # names from seeded files that may form paths outside cniDir
     "bystander": "pxy7",                 # another container whose cache files must stay untouched, or null
     "then": ["CHECK", "DEL"],            # run after a successful ADD, same environment
     "k8s": {"pod": {"namespace": "pxfz-a", "name": "pxfz-pod", "uid": "pxfz-uid", "annotations": {...}},
             "nads": [{"namespace": ..., "name": ..., "config": "<spec.config>" or null, "annotations": {...}}]}}
                                          # optional: objects put into the shared test API server first

Placeholders (``%S%`` sandbox root, ``%CNI%``, ``%CONF%``, ``%BIN%``, ``%REC%``, ``%NS%``) are replaced in every
string before use (with a "k8s" section also ``%KUBECONFIG%``: a JSON kubeconfig of the test API server, token
file auth). The sandbox::

    %S%/r1/r2/r3/r4/r5/{cni,conf,bin}   cniDir, confDir, binDir (plexus-test-delegate + the ``pxsent`` sentinel)
    %S%/r1/r2/r3/r4/r5/evil, %S%/evil, %S%/outside/evil
                                        sentinels: executables that log their exec (any exec is an escape)
    %S%/outside/                        symlink targets, FIFOs, victims of path traversal
    %S%/.px/                            the only place outside cniDir that may change (delegate recordings,
                                        the sentinels' log, logFile, stateDir)
    %S%/ns                              CNI_NETNS: a plain file (the fake delegate never enters it)
    %S%/cwd                             plexus' working directory

Oracles per invocation: no signal and no hang (timeout, or blocked opening a FIFO); exit 0 or 1; on 1 exactly one
CNI error object on stdout with an allowed integer code and string msg; on 0 a JSON object (ADD, VERSION) or
empty/JSON output; no sentinel executed; nothing outside cniDir and .px created, removed or changed; delegates
called only for the invocation's container (ADD/DEL/CHECK), never with data of the bystander container or with
an invalid CNI_IFNAME; the bystander's cache files unchanged; after a successful DEL no cache file of the
attachment left. With a "k8s" section also: after a successful ADD of the case's pod its network-status
annotation is a JSON list; after a successful DEL nothing left in attachments/ and results/ (when no files were
seeded) and no fake-delegate state file in %S%/.px/state.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from urllib.parse import quote

from testenv.lib import plexus as px
from testenv.lib.kubeapi import NAD_GROUP, NAD_PLURAL, NAD_VERSION, KubeAPI

ERROR_KEYS = {"cniVersion", "code", "msg", "details"}
SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 8, 11}   # 1-7 and 11 (SPEC), 8 (libcni ErrInvalidNetNS)
STATUS_CODES = {50, 51}
MARKER = "10.66.6."                         # only the bystander container's files carry it
SENTINEL = "pxsent"                          # binDir/pxsent: no generated type names it exactly
DEEP = "r1/r2/r3/r4/r5"                      # cniDir/results is 7 levels below the sandbox root

DEFAULT_TIMEOUT = float(os.environ.get("PLEXUS_FUZZ_TIMEOUT", "3"))
RECORD_NAME = re.compile(r"^[0-9]+-[0-9]+-[A-Z]+-.*\.json$")   # the fake delegate's <seq>-<pid>-<CMD>-<ifname>.json
FIFO_WAIT = 0.5                              # blocked this long opening a FIFO counts as a hang


class Sandbox:
    def __init__(self, bin_src, parent=None):
        self.root = tempfile.mkdtemp(prefix="pxfz-", dir=parent)
        deep = os.path.join(self.root, DEEP)
        self.cni = os.path.join(deep, "cni")
        self.conf = os.path.join(deep, "conf")
        self.bin = os.path.join(deep, "bin")
        self.allowed = os.path.join(self.root, ".px")
        self.rec = os.path.join(self.allowed, "rec")
        self.exec_log = os.path.join(self.allowed, "exec.log")
        self.outside = os.path.join(self.root, "outside")
        self.ns = os.path.join(self.root, "ns")
        self.cwd = os.path.join(self.root, "cwd")   # plexus' working directory: relative writes land in the snapshot
        for d in (self.cni, self.conf, self.bin, self.rec, self.outside, self.cwd, os.path.join(self.allowed, "log")):
            os.makedirs(d)
        self.subst = [("%CONF%", self.conf), ("%CNI%", self.cni), ("%BIN%", self.bin), ("%REC%", self.rec),
                      ("%NS%", self.ns), ("%S%", self.root)]
        fake = os.path.join(self.bin, px.FAKE)
        try:
            os.link(os.path.join(bin_src, px.FAKE), fake)
        except OSError:
            os.symlink(os.path.join(bin_src, px.FAKE), fake)
        script = "#!/bin/sh\necho \"$0\" >> %s\necho '{\"cniVersion\":\"1.0.0\"}'\n" % self.exec_log
        for p in (os.path.join(self.bin, SENTINEL), os.path.join(deep, "evil"), os.path.join(self.root, "evil"),
                  os.path.join(self.outside, "evil")):
            with open(p, "w") as f:
                f.write(script)
            os.chmod(p, 0o755)
        with open(self.ns, "w"):
            pass
        with open(os.path.join(self.root, "ready"), "w"):
            pass
        kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "x",
                      "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1",
                                                             "insecure-skip-tls-verify": True}}],
                      "users": [{"name": "u", "user": {"token": "pxfuzz"}}],
                      "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}
        with open(os.path.join(self.root, "kubeconfig.json"), "w") as f:
            json.dump(kubeconfig, f)
        with open(os.path.join(self.conf, "pxconf.conflist"), "w") as f:
            json.dump(px.conflist("pxconf", "1.1.0", [px.fake(recordDir=self.rec)]), f)

    def sub(self, s):
        for k, v in self.subst:
            s = s.replace(k, v)
        return s

    def remove(self):
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# Materializing case data
# ----------------------------------------------------------------------------------------------------------------

def text_bytes(s):
    """Case text -> bytes: U+DC80..U+DCFF (Python's surrogateescape) become raw bytes."""
    return s.encode("utf-8", "surrogateescape")


def _dump(sb, obj):
    """JSON text of a case object: strings get the placeholders replaced, ``{"$b64": spec}`` becomes the base64 of
    that spec's bytes, ``{"$raw": text}`` is inserted verbatim (number literals, wrong types)."""
    if isinstance(obj, str):
        return json.dumps(sb.sub(obj))
    if isinstance(obj, list):
        return "[" + ",".join(_dump(sb, v) for v in obj) + "]"
    if isinstance(obj, dict):
        if set(obj) == {"$b64"}:
            return json.dumps(base64.b64encode(render(sb, obj["$b64"])).decode())
        if set(obj) == {"$raw"}:
            return obj["$raw"]
        return "{" + ",".join("%s:%s" % (json.dumps(k), _dump(sb, v)) for k, v in obj.items()) + "}"
    return json.dumps(obj)


def render(sb, content):
    """A content spec -> bytes: {"json": obj} (see ``_dump``), {"text": str}, {"hex": str}; optional
    "truncate": n. A bare JSON value counts as {"json": value}."""
    if isinstance(content, dict) and ("json" in content or "text" in content or "hex" in content):
        if "json" in content:
            data = text_bytes(_dump(sb, content["json"]))
        elif "text" in content:
            data = text_bytes(sb.sub(content["text"]))
        else:
            data = bytes.fromhex(content["hex"])
        n = content.get("truncate")
        return data[:n] if n is not None else data
    return text_bytes(_dump(sb, content))


def materialize(sb, files):
    for f in files:
        p = sb.sub(f["path"])
        os.makedirs(os.path.dirname(p), exist_ok=True)
        kind = f["kind"]
        if os.path.lexists(p):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        if kind == "file":
            with open(p, "wb") as fh:
                fh.write(render(sb, f.get("content", {"text": ""})))
        elif kind == "dir":
            os.makedirs(p)
            for name, content in (f.get("entries") or {}).items():
                with open(os.path.join(p, name), "wb") as fh:
                    fh.write(render(sb, content))
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "symlink":
            os.symlink(sb.sub(f["target"]), p)
        elif kind == "hardlink":
            os.link(sb.sub(f["target"]), p)
        else:
            raise ValueError("unknown file kind %r" % kind)


def plant_victims(sb, case):
    """Files at every path outside cniDir that a traversal name from a seeded file could form, so removing or
    rewriting them shows in the snapshot."""
    names = [sb.sub(t) for t in case.get("traversal") or []]
    if not names:
        return
    env = case.get("env") or {}
    nets = set(names) | {"pxnet", "pxa", "pxb", "pxc", "pxz"}
    cids = set(names) | {env.get("CNI_CONTAINERID", ""), case.get("bystander") or ""}
    ifns = set(names) | {env.get("CNI_IFNAME", ""), "eth0", "net1", "net2", "net3"}
    for sub in ("attachments", "results"):
        for n in nets:
            for c in cids:
                for i in ifns:
                    if ".." not in n + c + i:
                        continue
                    p = os.path.normpath(os.path.join(sb.cni, sub, "%s-%s-%s" % (n, c, i)))
                    if p.startswith(sb.cni + os.sep) or not p.startswith(sb.root + os.sep) or \
                            p.startswith(sb.allowed + os.sep) or "\0" in p:
                        continue
                    try:
                        os.makedirs(os.path.dirname(p), exist_ok=True)
                        if not os.path.lexists(p):
                            with open(p, "w") as fh:
                                fh.write("victim\n")
                    except OSError:
                        pass


# ----------------------------------------------------------------------------------------------------------------
# Snapshots
# ----------------------------------------------------------------------------------------------------------------

def _describe(p):
    st = os.lstat(p)
    m = st.st_mode
    if stat.S_ISLNK(m):
        return ("link", os.readlink(p))
    if stat.S_ISREG(m):
        if st.st_size > 65536:   # the delegate binary: size and mtime suffice
            return ("file", stat.S_IMODE(m), st.st_size, st.st_mtime_ns)
        with open(p, "rb") as f:
            return ("file", stat.S_IMODE(m), hashlib.sha1(f.read()).hexdigest())
    if stat.S_ISDIR(m):
        return ("dir", stat.S_IMODE(m))
    if stat.S_ISFIFO(m):
        return ("fifo", stat.S_IMODE(m))
    return ("other", m)


def snapshot(root, skip):
    """``{path: description}`` of everything under root except the ``skip`` subtrees (no link is followed)."""
    out = {}
    for d, dirs, files in os.walk(root):
        keep = []
        for name in dirs:
            p = os.path.join(d, name)
            if p in skip:
                continue
            out[p] = _describe(p)
            if os.path.islink(p):
                continue
            keep.append(name)
        dirs[:] = keep
        for name in files:
            p = os.path.join(d, name)
            if p not in skip:
                out[p] = _describe(p)
    return out


def describe_paths(paths):
    out = {}
    for p in paths:
        try:
            out[p] = _describe(p)
        except FileNotFoundError:
            out[p] = None
    return out


# ----------------------------------------------------------------------------------------------------------------
# Running plexus
# ----------------------------------------------------------------------------------------------------------------

class Run:
    def __init__(self, verb, code, stdout, stderr, hang=None, seconds=0.0):
        self.verb = verb
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.hang = hang
        self.seconds = seconds


def _blocked_on_fifo(pid):
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/wchan" % (pid, t)) as f:
                if f.read().strip() in ("wait_for_partner", "fifo_open"):
                    return True
        except OSError:
            pass
    return False


def run_plexus(binary, env, stdin, verb, timeout=DEFAULT_TIMEOUT, cwd=None):
    started = time.monotonic()
    p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         cwd=cwd, start_new_session=True)
    hang = None
    blocked_since = None
    while True:
        try:
            out, err = p.communicate(input=stdin, timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            stdin = None
            now = time.monotonic()
            if _blocked_on_fifo(p.pid):
                blocked_since = blocked_since or now
                if now - blocked_since >= FIFO_WAIT:
                    hang = "blocked opening a FIFO for %.1f s" % (now - blocked_since)
            else:
                blocked_since = None
            if now - started >= timeout:
                hang = "no exit within %.1f s" % timeout
            if hang:
                _kill_group(p.pid)
                out, err = p.communicate()
                break
    _kill_group(p.pid)   # delegates plexus may have left behind (same session)
    return Run(verb, p.returncode, out, err, hang, time.monotonic() - started)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------------------------------------------
# Oracles
# ----------------------------------------------------------------------------------------------------------------

def _v(cls, what, detail, step):
    return {"class": cls, "what": what, "detail": detail[:1500], "step": step}


def _no_dup_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate keys %s" % keys)
    return dict(pairs)


def check_output(r, step):
    """Signal, hang, exit code and the shape of stdout."""
    tail = r.stderr.decode("utf-8", "replace")[-600:]
    if r.hang:
        return [_v("hang", r.verb, "%s; stderr: %s" % (r.hang, tail), step)]
    if r.code < 0:
        name = signal.Signals(-r.code).name if -r.code in signal.valid_signals() else str(-r.code)
        return [_v("crash", name, "killed by %s; stderr: %s" % (name, tail), step)]
    if r.code not in (0, 1):
        return [_v("wrong-shape", "exit %d" % r.code, "exit status %d; stdout %r" % (r.code, r.stdout[:300]), step)]
    try:
        text = r.stdout.decode("utf-8")
    except UnicodeDecodeError:
        return [_v("wrong-shape", "stdout not UTF-8", repr(r.stdout[:300]), step)]
    if r.code == 0:
        if not text.strip():
            if r.verb in ("ADD", "VERSION"):
                return [_v("wrong-shape", "empty success output", r.verb, step)]
            return []
        try:
            doc = json.loads(text, object_pairs_hook=_no_dup_keys)
        except ValueError as e:
            return [_v("wrong-shape", "success output not JSON", "%s: %r" % (e, text[:300]), step)]
        if r.verb in ("ADD", "VERSION") and not isinstance(doc, dict):
            return [_v("wrong-shape", "success output not an object", text[:300], step)]
        return []
    try:
        doc = json.loads(text, object_pairs_hook=_no_dup_keys)
    except ValueError as e:
        return [_v("wrong-shape", "error output not one JSON value", "%s: %r" % (e, text[:300]), step)]
    problems = []
    if not isinstance(doc, dict):
        problems.append("not an object")
    else:
        if set(doc) - ERROR_KEYS:
            problems.append("extra keys %s" % sorted(set(doc) - ERROR_KEYS))
        code = doc.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            problems.append("code %r is not an integer" % (code,))
        elif not (code in SPEC_CODES or code >= 100 or (r.verb == "STATUS" and code in STATUS_CODES)):
            problems.append("code %d" % code)
        if not isinstance(doc.get("msg"), str):
            problems.append("msg %r is not a string" % (doc.get("msg"),))
        for k in ("details", "cniVersion"):
            if k in doc and not isinstance(doc[k], str):
                problems.append("%s is not a string" % k)
    if text.count("\n") != 1 or not text.endswith("\n"):
        problems.append("not exactly one line")
    if problems:
        what = problems[0] if not problems[0].startswith("code ") else "error code %s" % _code_class(doc["code"])
        return [_v("wrong-shape", what, "%s: %s" % ("; ".join(problems), text[:600]), step)]
    return []


def _code_class(code):
    if code == 0:
        return "0"
    if code < 0:
        return "negative"
    return "%d" % code if code in (9, 10, 50, 51) else "12-99"


def check_exec(sb, step):
    try:
        with open(sb.exec_log) as f:
            lines = [l.strip() for l in f if l.strip()]
    except FileNotFoundError:
        return []
    os.unlink(sb.exec_log)
    return [_v("escape", "exec %s" % os.path.relpath(l, sb.root), l, step) for l in sorted(set(lines))]


def check_files(sb, before, after, step):
    out = []
    for p in sorted(set(before) | set(after)):
        b, a = before.get(p), after.get(p)
        if b == a:
            continue
        rel = os.path.relpath(p, sb.root)
        how = "created" if b is None else "removed" if a is None else "changed"
        out.append(_v("escape", "file %s outside cniDir" % how, "%s %s: %s -> %s" % (rel, how, b, a), step))
    return out[:5]


def check_delegates(sb, case, verb, seen, step):
    """Delegate calls of this invocation (recordings not yet in ``seen``)."""
    out = []
    env = case.get("env") or {}
    cid = env.get("CNI_CONTAINERID")
    bystander = case.get("bystander")
    for name in os.listdir(sb.rec):   # a delegate killed at its deadline may leave a temp file behind
        if not RECORD_NAME.match(name):
            os.unlink(os.path.join(sb.rec, name))
    for rec in px.read_records(sb.rec):
        if rec["_file"] in seen:
            continue
        seen.add(rec["_file"])
        denv = rec.get("env") or {}
        dcmd = rec["_command"]
        dcid = denv.get("CNI_CONTAINERID", "")
        if verb in ("ADD", "DEL", "CHECK") and dcmd in ("ADD", "DEL", "CHECK") and dcid != cid:
            out.append(_v("foreign", "delegate %s for another container" % dcmd,
                          "%s of container %r during %s of %r" % (dcmd, dcid, verb, cid), step))
        elif bystander and dcid == bystander:
            out.append(_v("foreign", "delegate %s for the bystander container" % dcmd, rec["_file"], step))
        if MARKER in json.dumps(rec.get("stdin")):
            out.append(_v("foreign", "delegate %s got the bystander's data" % dcmd,
                          json.dumps(rec.get("stdin"))[:600], step))
        ifn = denv.get("CNI_IFNAME", "")
        if dcmd in ("ADD", "DEL", "CHECK") and not _valid_ifname(ifn):
            out.append(_v("foreign", "delegate %s with an invalid CNI_IFNAME" % dcmd, repr(ifn), step))
    return out


def _valid_ifname(s):
    return 0 < len(s.encode()) <= 15 and s not in (".", "..") and not any(c in s for c in "/:") and \
        not any(c.isspace() for c in s)


def _valid_id(s):
    return bool(s) and s[0].isascii() and s[0].isalnum() and \
        all(c.isascii() and (c.isalnum() or c in "_.-") for c in s)


def attachment_identity(case):
    """(plexus network name, container, ifname) when all three are valid, else None."""
    try:
        name = json.loads(text_bytes(case["stdin"])).get("name")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    env = case.get("env") or {}
    cid, ifn = env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", "")
    if isinstance(name, str) and _valid_id(name) and _valid_id(cid) and _valid_ifname(ifn):
        return name, cid, ifn
    return None


def owned_results(sb, ident):
    """Paths of well-formed cniCacheV1 files under results/ owned by the attachment ``ident``: valid names that
    match the file name (anything else is corrupt, and corrupt files may stay)."""
    name, cid, ifn = ident
    d = os.path.join(sb.cni, "results")
    out = set()
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for n in names:
        p = os.path.join(d, n)
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        try:
            with open(p, "rb") as f:
                doc = json.loads(f.read())
            ok = doc.get("kind") == "cniCacheV1" and doc.get("containerId") == cid and \
                doc.get("plexusOwner") == {"network": name, "ifName": ifn} and _valid_id(doc["networkName"]) and \
                _valid_ifname(doc["ifName"]) and n == "%s-%s-%s" % (doc["networkName"], cid, doc["ifName"])
            if ok:
                json.loads(base64.b64decode(doc["config"], validate=True))
        except (ValueError, OSError, AttributeError, KeyError, TypeError):
            continue
        if ok:
            out.add(p)
    return out


def check_leftovers(sb, ident, candidates, step):
    name, cid, ifn = ident
    out = []
    rec = px.Cache(sb.cni).plan_path(name, cid, ifn)
    if os.path.lexists(rec):
        out.append(_v("leftover", "attachment record after DEL",
                      "%s (%s)" % (os.path.relpath(rec, sb.cni), _describe(rec)[0]), step))
    left = sorted(p for p in candidates | owned_results(sb, ident) if os.path.lexists(p))
    if left:
        out.append(_v("leftover", "result cache entry after DEL",
                      ", ".join(os.path.relpath(p, sb.cni) for p in left), step))
    return out



# ----------------------------------------------------------------------------------------------------------------
# Kubernetes objects (the "k8s" section)
# ----------------------------------------------------------------------------------------------------------------

STATUS_ANN = "k8s.v1.cni.cncf.io/network-status"
NAD_BASE = "/apis/%s/%s/namespaces/%%s/%s" % (NAD_GROUP, NAD_VERSION, NAD_PLURAL)


class K8sTarget:
    """One test API server (KubeAPI) for many cases: the NAD CRD installed, a JSON kubeconfig with token-file auth,
    and the objects of the previous case removed before the next case's are created."""

    def __init__(self, kube):
        self.kube = kube
        kube.install_nad_crd()
        self.kubeconfig = str(kube.state_dir / "fuzz-kubeconfig.json")
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "fz",
               "clusters": [{"name": "fz", "cluster": {"server": kube.url, "certificate-authority": str(kube.ca_path)}}],
               "users": [{"name": "fz", "user": {"tokenFile": str(kube.token_file)}}],
               "contexts": [{"name": "fz", "context": {"cluster": "fz", "user": "fz"}}]}
        with open(self.kubeconfig, "w") as f:
            json.dump(doc, f)
        self.namespaces = set()
        self.pods = set()
        self.nads = set()

    def _api(self, method, path, body=None):
        st, data = self.kube.api(method, path, body, ok=None)
        if st >= 500 or st == 0:
            raise RuntimeError("test API server: %s %s -> %s: %s" % (method, path, st, data))
        return st

    def _namespace(self, ns):
        if ns not in self.namespaces:
            self.kube.create_namespace(ns)
            self.namespaces.add(ns)

    def apply(self, sb, spec):
        """Deletes the previous case's pod and NADs, creates this case's (placeholders replaced). Returns how many
        objects the server refused (4xx)."""
        for ns, name in sorted(self.pods):
            self._api("DELETE", "/api/v1/namespaces/%s/pods/%s" % (ns, quote(name, safe="")))
        self.pods.clear()
        for ns, name in sorted(self.nads):
            self._api("DELETE", (NAD_BASE % ns) + "/" + quote(name, safe=""))
        self.nads.clear()
        refused = 0
        for nad in spec.get("nads") or []:
            ns, name = nad["namespace"], nad["name"]
            self._namespace(ns)
            obj = {"apiVersion": "%s/%s" % (NAD_GROUP, NAD_VERSION), "kind": "NetworkAttachmentDefinition",
                   "metadata": {"name": name, "namespace": ns}, "spec": {}}
            if nad.get("annotations"):
                obj["metadata"]["annotations"] = {k: sb.sub(v) for k, v in nad["annotations"].items()}
            if nad.get("config") is not None:
                obj["spec"]["config"] = sb.sub(nad["config"])
            st = self._api("POST", NAD_BASE % ns, obj)
            if st == 409:
                st = self._api("PUT", (NAD_BASE % ns) + "/" + quote(name, safe=""), obj)
            if st in (200, 201):
                self.nads.add((ns, name))
            else:
                refused += 1
        pod = spec.get("pod")
        if pod:
            ns, name = pod["namespace"], pod["name"]
            self._namespace(ns)
            md = {"name": name, "namespace": ns}
            if pod.get("uid"):
                md["uid"] = pod["uid"]
            if pod.get("annotations"):
                md["annotations"] = {k: sb.sub(v) for k, v in pod["annotations"].items()}
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": md,
                    "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}}
            st = self._api("POST", "/api/v1/namespaces/%s/pods" % ns, body)
            if st == 201:
                self.pods.add((ns, name))
            else:
                refused += 1
        return refused

    def annotations(self, ns, name):
        st, data = self.kube.api("GET", "/api/v1/namespaces/%s/pods/%s" % (ns, quote(name, safe="")), ok=None)
        if st != 200:
            return None
        return data["metadata"].get("annotations") or {}


_SHARED = []


def shared_k8s():
    """A test API server for this process (started on first use, stopped at exit by kubeapi's atexit hook)."""
    if not _SHARED:
        _SHARED.append(K8sTarget(KubeAPI()))
    return _SHARED[0]


def _pod_identity(env):
    args = dict(kv.split("=", 1) for kv in (env.get("CNI_ARGS") or "").split(";") if "=" in kv)
    return args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")


def check_network_status(kube, case, env, step):
    """After a successful ADD of the case's own pod: network-status is a JSON list of objects."""
    pod = case["k8s"].get("pod")
    if not pod or _pod_identity(env) != (pod["namespace"], pod["name"]):
        return []
    ann = kube.annotations(pod["namespace"], pod["name"])
    value = (ann or {}).get(STATUS_ANN)
    try:
        doc = json.loads(value)
        ok = isinstance(doc, list) and doc and all(isinstance(e, dict) for e in doc)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        return [_v("wrong-shape", "network-status not a JSON list after ADD", repr(value)[:600], step)]
    return []


def check_k8s_leftovers(sb, case, step):
    """After a successful DEL: no cache file at all (when none was seeded) and no fake-delegate state file."""
    out = []
    if not case.get("files"):
        left = []
        for sub in ("attachments", "results"):
            d = os.path.join(sb.cni, sub)
            if os.path.isdir(d):
                left += [os.path.join(sub, n) for n in sorted(os.listdir(d))]
        if left:
            out.append(_v("leftover", "cache file after DEL (k8s)", ", ".join(left), step))
    state = os.path.join(sb.allowed, "state")
    if os.path.isdir(state) and os.listdir(state):
        out.append(_v("leftover", "delegate state file after DEL", ", ".join(sorted(os.listdir(state))), step))
    return out

# ----------------------------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------------------------

class Outcome:
    def __init__(self):
        self.runs = []
        self.violations = []
        self.delegate_calls = 0
        self.api_rejected = 0      # k8s objects of the case the API server refused (4xx): not a violation


def bystander_paths(sb, case):
    y = case.get("bystander")
    if not y:
        return []
    return sorted(sb.sub(f["path"]) for f in case.get("files") or [] if ("-%s-" % y) in f["path"])


def run_case(case, binary, bin_src, parent=None, timeout=DEFAULT_TIMEOUT, kube=None):
    """``kube``: the K8sTarget for a case with a "k8s" section (default: one shared server for the process)."""
    sb = Sandbox(bin_src, parent)
    try:
        return _run_case(sb, case, binary, timeout, kube)
    finally:
        sb.remove()


def _run_case(sb, case, binary, timeout, kube=None):
    res = Outcome()
    spec = case.get("k8s")
    if spec is not None:
        kube = kube or shared_k8s()
        sb.subst.insert(0, ("%KUBECONFIG%", kube.kubeconfig))
        res.api_rejected = kube.apply(sb, spec)
    materialize(sb, case.get("files") or [])
    plant_victims(sb, case)
    skip = {sb.cni, sb.allowed}
    ident = attachment_identity(case)
    by_paths = bystander_paths(sb, case)
    by_before = describe_paths(by_paths)
    seen = set()
    env = {k: sb.sub(v) for k, v in (case.get("env") or {}).items()}
    stdin = text_bytes(sb.sub(case.get("stdin", "")))
    candidates = set()
    steps = [case["verb"]]
    for i, verb in enumerate(steps):
        step = "main" if i == 0 else "then-%s" % verb
        before = snapshot(sb.root, skip)
        r = run_plexus(binary, px.make_env(verb, extra=env), stdin, verb, timeout, cwd=sb.cwd)
        res.runs.append(r)
        found = check_output(r, step)
        found += check_exec(sb, step)
        found += check_files(sb, before, snapshot(sb.root, skip), step)
        n0 = len(seen)
        found += check_delegates(sb, case, verb, seen, step)
        res.delegate_calls += len(seen) - n0
        changed = [p for p, d in describe_paths(by_paths).items() if d != by_before[p]]
        if changed:
            found.append(_v("foreign", "bystander cache file modified",
                            ", ".join(os.path.relpath(p, sb.cni) for p in changed), step))
            by_before = describe_paths(by_paths)
        if verb == "DEL" and r.code == 0 and ident and not r.hang:
            found += check_leftovers(sb, ident, candidates, step)
        if spec is not None and r.code == 0 and not r.hang:
            if verb == "DEL":
                found += check_k8s_leftovers(sb, case, step)
            elif verb == "ADD" and i == 0:
                found += check_network_status(kube, case, env, step)
        res.violations += found
        if i == 0 and verb == "ADD" and r.code == 0 and ident:
            candidates = owned_results(sb, ident)
            steps += case.get("then") or []
        if r.hang or r.code < 0:
            break
    return res


def signature(v, verb):
    return "%s: %s [%s %s]" % (v["class"], v["what"], verb, v["step"])


CLASSES = ("crash", "hang", "wrong-shape", "escape", "foreign", "leftover")
COUNT_KEYS = {"crash": "crashes", "hang": "hangs", "wrong-shape": "wrong_shape", "escape": "escapes",
              "foreign": "foreign", "leftover": "leftovers"}


class Tally:
    """Counts over many cases, and the smallest failing case per violation signature."""

    def __init__(self):
        self.counts = {"cases": 0, "invocations": 0, "failed_cases": 0, "delegate_calls": 0, "api_rejected": 0}
        self.counts.update({v: 0 for v in COUNT_KEYS.values()})
        self.exits = {}
        self.error_codes = {}
        self.failures = {}     # signature -> (size, case, violation)
        self.started = time.monotonic()

    def add(self, case, res):
        c = self.counts
        c["cases"] += 1
        c["invocations"] += len(res.runs)
        c["delegate_calls"] += res.delegate_calls
        c["api_rejected"] += res.api_rejected
        for r in res.runs:
            key = "hang" if r.hang else str(r.code)
            self.exits[key] = self.exits.get(key, 0) + 1
            if r.code == 1:
                try:
                    code = str(json.loads(r.stdout).get("code"))
                except (ValueError, AttributeError):
                    code = "?"
                self.error_codes[code] = self.error_codes.get(code, 0) + 1
        if res.violations:
            c["failed_cases"] += 1
        for cls in {v["class"] for v in res.violations}:
            c[COUNT_KEYS[cls]] += 1
        size = len(json.dumps(case))
        for v in res.violations:
            sig = signature(v, case["verb"])
            if sig not in self.failures or size < self.failures[sig][0]:
                self.failures[sig] = (size, case, v)

    def as_dict(self):
        d = dict(self.counts)
        d["distinct_failures"] = len(self.failures)
        d["seconds"] = round(time.monotonic() - self.started, 1)
        d["exit_status"] = dict(sorted(self.exits.items()))
        d["error_codes"] = dict(sorted(self.error_codes.items(), key=lambda kv: (len(kv[0]), kv[0])))
        d["failures"] = sorted(self.failures)
        return d

    def save_failures(self, directory):
        """One JSON file per distinct failure (the smallest case seen), ready to copy to regressions/."""
        os.makedirs(directory, exist_ok=True)
        paths = []
        for sig, (_, case, v) in sorted(self.failures.items()):
            slug = "".join(ch if ch.isalnum() else "-" for ch in sig.lower()).strip("-")
            while "--" in slug:
                slug = slug.replace("--", "-")
            p = os.path.join(directory, slug[:120] + ".json")
            with open(p, "w") as f:
                json.dump({"signature": sig, "violation": v, "case": case}, f, indent=1)
            paths.append(p)
        return paths


def summary(name, d):
    return ("fuzz %s: %d cases (%d invocations, %d delegate calls) in %.0f s: crashes=%d hangs=%d wrong-shape=%d "
            "escapes=%d foreign=%d leftovers=%d; %d distinct failures" % (
                name, d["cases"], d["invocations"], d["delegate_calls"], d["seconds"], d["crashes"], d["hangs"],
                d["wrong_shape"], d["escapes"], d["foreign"], d["leftovers"], d["distinct_failures"]))


def main(argv):
    """``python3 -m testenv.fuzz.harness CASE.json...``: replays cases and prints every invocation and violation."""
    bin_dir = px.build_bin_dir()
    for path in argv:
        with open(path) as f:
            doc = json.load(f)
        case = doc.get("case", doc)
        res = run_case(case, os.path.join(bin_dir, "plexus"), bin_dir)
        print("== %s" % path)
        for r in res.runs:
            print("  %s exit=%s hang=%s %.3fs stdout=%s" % (r.verb, r.code, r.hang, r.seconds,
                                                          r.stdout.decode("utf-8", "replace").strip()[:400]))
        for v in res.violations:
            print("  VIOLATION %s: %s" % (signature(v, case["verb"]), v["detail"][:400]))
        if not res.violations:
            print("  ok")


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
