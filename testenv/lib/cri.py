"""Drive containerd 1.6's CRI (Debian packages) from Python tests.

Two pieces:

* ``Containerd``: starts a PRIVATE containerd (own root, state, sockets, runc root, config.toml, CNI conf dir
  and CNI bin dir, all under a directory the caller gives), imports the project's own pause image, and on
  ``stop()`` tears down everything it created (sandboxes, shims, runc containers, mounts, network namespaces,
  cgroups), by PID and by exact path only.
* ``CRIClient``: a ``runtime.v1.RuntimeService`` client over grpcio on the unix socket.  Protobuf messages are
  hand-encoded with the tiny codec below (no generated code, no .proto); field numbers are those of the
  CRI v1 API (see shared/reference/cri-subset.md §3).

Requires root, the packages from testenv/cri/install.sh, and Python >= 3.8.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

try:
    import grpc
except ImportError:  # pragma: no cover - reported by the caller (tests skip)
    grpc = None

_HERE = os.path.dirname(os.path.abspath(__file__))
_CRI_DIR = os.path.join(os.path.dirname(_HERE), "cri")
sys.path.insert(0, _CRI_DIR)
try:
    import build_pause_image  # noqa: E402  (testenv/cri/build_pause_image.py)
finally:
    try:
        sys.path.remove(_CRI_DIR)
    except ValueError:
        pass

DEFAULT_PAUSE_IMAGE = build_pause_image.DEFAULT_NAME
DEBIAN_CNI_DIR = "/usr/lib/cni"
NETNS_DIR = "/var/run/netns"          # hard-coded in containerd 1.6 (pkg/netns), not configurable
SHIM_SOCKET_DIR = "/run/containerd/s"  # hard-coded in containerd 1.6 runtime v2 shims, not configurable
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --------------------------------------------------------------------------------------------------------------
# Minimal protobuf codec (proto3 wire format: varint = 0, LEN = 2; the CRI subset needs nothing else)
# --------------------------------------------------------------------------------------------------------------

def _varint(n):
    if n < 0:
        n += 1 << 64  # int32/int64 negatives are ten-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire):
    return _varint((field << 3) | wire)


def pb_int(field, value):
    """varint field (int32/int64/uint32/enum); proto3 default 0 is omitted."""
    if not value:
        return b""
    return _key(field, 0) + _varint(int(value))


def pb_bool(field, value):
    return _key(field, 0) + b"\x01" if value else b""


def pb_bytes(field, data, always=False):
    if not data and not always:
        return b""
    return _key(field, 2) + _varint(len(data)) + data


def pb_str(field, s):
    return pb_bytes(field, (s or "").encode("utf-8"))


def pb_msg(field, body, always=True):
    """Embedded message; present (even when empty) unless always=False."""
    if body is None:
        return b""
    return pb_bytes(field, body, always=always)


def pb_map(field, mapping):
    """map<string,string>: one entry message {key=1, value=2} per pair, sorted for determinism."""
    out = b""
    for k in sorted(mapping or {}):
        out += pb_msg(field, pb_str(1, k) + pb_str(2, mapping[k]))
    return out


def pb_decode(buf):
    """Decode one message into {field_number: [values]}; varints as int, LEN as bytes."""
    fields = {}
    i, n = 0, len(buf)
    while i < n:
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _read_varint(buf, i)
        elif wire == 2:
            ln, i = _read_varint(buf, i)
            val = bytes(buf[i:i + ln])
            if len(val) != ln:
                raise ValueError("truncated protobuf field %d" % field)
            i += ln
        elif wire == 1:
            val = bytes(buf[i:i + 8])
            i += 8
        elif wire == 5:
            val = bytes(buf[i:i + 4])
            i += 4
        else:
            raise ValueError("unsupported wire type %d (field %d)" % (wire, field))
        fields.setdefault(field, []).append(val)
    return fields


def _read_varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _f_str(fields, num):
    v = fields.get(num)
    return v[-1].decode("utf-8") if v else ""


def _f_int(fields, num, signed64=False):
    v = fields.get(num)
    if not v:
        return 0
    x = v[-1]
    if signed64 and x >= 1 << 63:
        x -= 1 << 64
    return x


def _f_msg(fields, num):
    v = fields.get(num)
    return pb_decode(v[-1]) if v else {}


def _f_msgs(fields, num):
    return [pb_decode(b) for b in fields.get(num, [])]


def _f_map(fields, num):
    out = {}
    for entry in _f_msgs(fields, num):
        out[_f_str(entry, 1)] = _f_str(entry, 2)
    return out


# --------------------------------------------------------------------------------------------------------------
# CRI messages (runtime.v1)
# --------------------------------------------------------------------------------------------------------------

SANDBOX_STATES = {0: "SANDBOX_READY", 1: "SANDBOX_NOTREADY"}
_STATE_NUM = {v: k for k, v in SANDBOX_STATES.items()}
_PROTO_NUM = {"tcp": 0, "udp": 1, "sctp": 2}
NS_POD, NS_CONTAINER, NS_NODE, NS_TARGET = 0, 1, 2, 3


def _enc_port_mapping(pm):
    if isinstance(pm, (tuple, list)):  # (container_port, host_port[, protocol[, host_ip]])
        pm = dict(zip(("container_port", "host_port", "protocol", "host_ip"), pm))
    proto = pm.get("protocol", "tcp")
    if isinstance(proto, str):
        proto = _PROTO_NUM[proto.lower()]
    return (pb_int(1, proto) + pb_int(2, pm.get("container_port", 0)) + pb_int(3, pm.get("host_port", 0))
            + pb_str(4, pm.get("host_ip", "")))


def _enc_metadata(name, namespace, uid, attempt):
    return pb_str(1, name) + pb_str(2, uid) + pb_str(3, namespace) + pb_int(4, attempt)


def _dec_metadata(f):
    return {"name": _f_str(f, 1), "uid": _f_str(f, 2), "namespace": _f_str(f, 3), "attempt": _f_int(f, 4)}


def encode_run_pod_sandbox(name, namespace, uid, annotations=None, port_mappings=None, labels=None,
                           hostname=None, log_directory="", dns_config=None, attempt=0, cgroup_parent="",
                           network_mode=NS_POD, pid_mode=NS_CONTAINER, sysctls=None, runtime_handler=""):
    """Encode a RunPodSandboxRequest (bytes)."""
    if hostname is None:
        hostname = name if network_mode != NS_NODE else ""
    dns = b""
    if dns_config is not None:
        for s in dns_config.get("servers", []):
            dns += pb_str(1, s)
        for s in dns_config.get("searches", []):
            dns += pb_str(2, s)
        for s in dns_config.get("options", []):
            dns += pb_str(3, s)
    ns_opts = pb_int(1, network_mode) + pb_int(2, pid_mode)  # ipc POD (0) omitted
    linux = (pb_str(1, cgroup_parent)
             + pb_msg(2, pb_msg(1, ns_opts))                    # security_context{namespace_options}
             + pb_map(3, sysctls))
    config = (pb_msg(1, _enc_metadata(name, namespace, uid, attempt))
              + pb_str(2, hostname)
              + pb_str(3, log_directory)
              + (pb_msg(4, dns) if dns_config is not None else b"")
              + b"".join(pb_msg(5, _enc_port_mapping(pm)) for pm in (port_mappings or []))
              + pb_map(6, labels)
              + pb_map(7, annotations)
              + pb_msg(8, linux))
    return pb_msg(1, config) + pb_str(2, runtime_handler)


# --------------------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------------------

class CRIError(RuntimeError):
    """A failed CRI call. ``str(err)`` and ``err.details`` carry the server's message text verbatim."""

    def __init__(self, method, code, details):
        self.method = method
        self.code = code              # grpc.StatusCode (or None for a transport-level surprise)
        self.code_name = getattr(code, "name", str(code))
        self.details = details or ""
        super().__init__("%s failed: %s: %s" % (method, self.code_name, self.details))


class CRIClient:
    """runtime.v1.RuntimeService over a unix socket, with hand-encoded protobuf.

    All methods raise ``CRIError`` on a non-OK status; its message contains the server's text.
    """

    SERVICE = "/runtime.v1.RuntimeService/"

    def __init__(self, socket_path, timeout=120.0, log_root=None, cgroup_parent=""):
        if grpc is None:
            raise RuntimeError("python module grpc missing: run testenv/cri/install.sh")
        self.socket_path = socket_path
        self.timeout = timeout
        self.log_root = log_root            # default parent of per-pod log directories
        self.cgroup_parent = cgroup_parent  # default LinuxPodSandboxConfig.cgroup_parent
        self.netns_seen = set()             # netns paths observed via pod_sandbox_status (for cleanup)
        self._channel = grpc.insecure_channel(
            "unix://" + socket_path,
            options=[("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 64 << 20),
                     # containerd restarts in tests: reconnect fast instead of grpc's default 1 s+ backoff
                     ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                     ("grpc.max_reconnect_backoff_ms", 500)])
        self._stubs = {}

    def close(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, method, request, timeout=None):
        """Raw unary call: request bytes -> response {field: [values]}."""
        stub = self._stubs.get(method)
        if stub is None:
            stub = self._channel.unary_unary(self.SERVICE + method)  # bytes in, bytes out
            self._stubs[method] = stub
        try:
            resp = stub(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise CRIError(method, code, details) from None
        return pb_decode(resp)

    # -- RPCs ---------------------------------------------------------------------------------------------

    def version(self, timeout=None):
        f = self.call("Version", pb_str(1, "v1"), timeout=timeout)
        return {"version": _f_str(f, 1), "runtime_name": _f_str(f, 2), "runtime_version": _f_str(f, 3),
                "runtime_api_version": _f_str(f, 4)}

    def status(self, verbose=False, timeout=None):
        """-> {"conditions": {type: {"status": bool, "reason": str, "message": str}}, "info": {k: json|str}}"""
        f = self.call("Status", pb_bool(1, verbose), timeout=timeout)
        conds = {}
        for c in _f_msgs(_f_msg(f, 1), 1):
            conds[_f_str(c, 1)] = {"status": bool(_f_int(c, 2)), "reason": _f_str(c, 3),
                                   "message": _f_str(c, 4)}
        return {"conditions": conds, "info": {k: _maybe_json(v) for k, v in _f_map(f, 2).items()}}

    def run_pod_sandbox(self, name, namespace, uid, annotations=None, port_mappings=None, labels=None,
                        hostname=None, log_directory=None, dns_config=None, attempt=0, cgroup_parent=None,
                        network_mode=NS_POD, pid_mode=NS_CONTAINER, sysctls=None, runtime_handler="",
                        timeout=None):
        """RunPodSandbox -> 64-hex sandbox id.

        port_mappings: list of dicts {container_port, host_port, protocol ("tcp"/"udp"/"sctp"), host_ip}
        or tuples in that order. dns_config: {"servers": [...], "searches": [...], "options": [...]}.
        The CNI ADD happens inside this call; a CNI failure raises CRIError whose text includes the
        plugin's msg/details.
        """
        if log_directory is None:
            log_directory = (os.path.join(self.log_root, "%s_%s_%s" % (namespace, name, uid))
                             if self.log_root else "")
        if cgroup_parent is None:
            cgroup_parent = self.cgroup_parent
        req = encode_run_pod_sandbox(name, namespace, uid, annotations=annotations,
                                     port_mappings=port_mappings, labels=labels, hostname=hostname,
                                     log_directory=log_directory, dns_config=dns_config, attempt=attempt,
                                     cgroup_parent=cgroup_parent, network_mode=network_mode,
                                     pid_mode=pid_mode, sysctls=sysctls, runtime_handler=runtime_handler)
        f = self.call("RunPodSandbox", req, timeout=timeout)
        return _f_str(f, 1)

    def pod_sandbox_status(self, sandbox_id, verbose=True, timeout=None):
        """PodSandboxStatus -> dict with keys:

        id, name, namespace, uid, attempt, state ("SANDBOX_READY"/"SANDBOX_NOTREADY"), created_at (ns),
        ip (primary pod IP, "" if none), additional_ips [str], ips ([ip] + additional_ips),
        labels, annotations, runtime_handler, and when verbose: netns (path or ""), pid, cni_result (dict or
        None), info (the parsed verbose info JSON).
        """
        f = self.call("PodSandboxStatus", pb_str(1, sandbox_id) + pb_bool(2, verbose), timeout=timeout)
        st = _f_msg(f, 1)
        net = _f_msg(st, 5)
        ip = _f_str(net, 1)
        extra = [_f_str(p, 1) for p in _f_msgs(net, 2)]
        out = {"id": _f_str(st, 1), "state": SANDBOX_STATES.get(_f_int(st, 3), str(_f_int(st, 3))),
               "created_at": _f_int(st, 4, signed64=True), "ip": ip, "additional_ips": extra,
               "ips": ([ip] if ip else []) + extra, "labels": _f_map(st, 7), "annotations": _f_map(st, 8),
               "runtime_handler": _f_str(st, 9)}
        out.update(_dec_metadata(_f_msg(st, 2)))
        info = {k: _maybe_json(v) for k, v in _f_map(f, 2).items()}
        doc = info.get("info") if isinstance(info.get("info"), dict) else {}
        out["info"] = doc
        out["pid"] = doc.get("pid", 0)
        out["cni_result"] = doc.get("cniResult")
        out["netns"] = _netns_from_info(doc)
        if out["netns"]:
            self.netns_seen.add(out["netns"])
        return out

    def stop_pod_sandbox(self, sandbox_id, timeout=None):
        self.call("StopPodSandbox", pb_str(1, sandbox_id), timeout=timeout)

    def remove_pod_sandbox(self, sandbox_id, timeout=None):
        self.call("RemovePodSandbox", pb_str(1, sandbox_id), timeout=timeout)

    def list_pod_sandbox(self, sandbox_id=None, state=None, label_selector=None, timeout=None):
        """ListPodSandbox -> [ {id, name, namespace, uid, attempt, state, created_at, labels, annotations,
        runtime_handler} ]; optional filter by id, state ("SANDBOX_READY"/"SANDBOX_NOTREADY") and labels."""
        flt = pb_str(1, sandbox_id)
        if state is not None:
            num = _STATE_NUM[state] if isinstance(state, str) else int(state)
            flt += pb_msg(2, pb_int(1, num))
        flt += pb_map(3, label_selector)
        req = pb_msg(1, flt) if flt else b""
        f = self.call("ListPodSandbox", req, timeout=timeout)
        items = []
        for it in _f_msgs(f, 1):
            d = {"id": _f_str(it, 1), "state": SANDBOX_STATES.get(_f_int(it, 3), str(_f_int(it, 3))),
                 "created_at": _f_int(it, 4, signed64=True), "labels": _f_map(it, 5),
                 "annotations": _f_map(it, 6), "runtime_handler": _f_str(it, 7)}
            d.update(_dec_metadata(_f_msg(it, 2)))
            items.append(d)
        return items

    # -- helpers --------------------------------------------------------------------------------------------

    def teardown_pod(self, sandbox_id):
        """Stop then Remove one sandbox (what the kubelet does on pod deletion)."""
        self.stop_pod_sandbox(sandbox_id)
        self.remove_pod_sandbox(sandbox_id)

    def teardown_all(self, retries=3):
        """Stop and remove every sandbox; returns the list of errors (empty on success)."""
        errors = []
        for _ in range(retries):
            errors = []
            try:
                items = self.list_pod_sandbox(timeout=30)
            except CRIError as e:
                return [e]
            if not items:
                return []
            for it in items:
                try:
                    self.pod_sandbox_status(it["id"], timeout=30)  # records the netns path for cleanup
                except CRIError:
                    pass
                try:
                    self.teardown_pod(it["id"])
                except CRIError as e:
                    errors.append(e)
            if not errors:
                return []
            time.sleep(0.5)
        return errors


def _maybe_json(s):
    try:
        return json.loads(s)
    except (ValueError, TypeError):
        return s


def _netns_from_info(doc):
    try:
        for ns in doc["runtimeSpec"]["linux"]["namespaces"]:
            if ns.get("type") == "network":
                return ns.get("path", "")
    except (KeyError, TypeError):
        pass
    try:
        for itf in (doc.get("cniResult") or {}).get("Interfaces", {}).values():
            if itf.get("Sandbox"):
                return itf["Sandbox"]
    except AttributeError:
        pass
    return ""


# --------------------------------------------------------------------------------------------------------------
# Private containerd
# --------------------------------------------------------------------------------------------------------------

def _toml_str(s):
    return json.dumps(str(s))  # TOML basic strings accept JSON escapes for our paths


class Containerd:
    """A private containerd 1.6 with the CRI plugin, for tests.

    Layout under ``workdir`` (created if missing; the caller owns it):
        containerd/config.toml, containerd.sock(+.ttrpc), containerd.log, containerd.pid
        containerd/root, containerd/state, containerd/runc (runc --root), containerd/opt
        net.d/   CNI conf dir  (max_conf_num = 1: only the first file by name is used)
        cni-bin/ CNI bin dir   (``loopback`` is linked in at start; add plugins with add_cni_plugin)
        pod-logs/ log directories given to sandboxes
        pause-oci.tar (unless pause_archive is given)

    Host paths containerd 1.6 still uses and cannot be moved (cleaned by stop()): /var/run/netns/cni-*
    (netns files of our sandboxes), /run/containerd/s/<hash> (shim sockets), /var/lib/cni/results
    (libcni cache), cgroups under ``cgroup_parent`` (default /pxcri-<id>).
    """

    def __init__(self, workdir, sandbox_image=DEFAULT_PAUSE_IMAGE, pause_archive=None, snapshotter="overlayfs",
                 cni_conf_dir=None, cni_bin_dir=None, max_conf_num=1, log_level="info", cgroup_parent=None,
                 extra_cri_toml="", start_timeout=30.0):
        self.workdir = os.path.abspath(workdir)
        self.dir = os.path.join(self.workdir, "containerd")
        self.config_path = os.path.join(self.dir, "config.toml")
        self.socket = os.path.join(self.dir, "containerd.sock")
        self.log_path = os.path.join(self.dir, "containerd.log")
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.runc_root = os.path.join(self.dir, "runc")
        self.conf_dir = cni_conf_dir or os.path.join(self.workdir, "net.d")
        self.bin_dir = cni_bin_dir or os.path.join(self.workdir, "cni-bin")
        self.log_root = os.path.join(self.workdir, "pod-logs")
        self.sandbox_image = sandbox_image
        self.pause_archive = pause_archive
        self.snapshotter = snapshotter
        self.max_conf_num = max_conf_num
        self.log_level = log_level
        self.cgroup_parent = cgroup_parent or "/pxcri-%d-%x" % (os.getpid(), int(time.time() * 1000) & 0xFFFFFF)
        self.extra_cri_toml = extra_cri_toml
        self.start_timeout = start_timeout
        self.proc = None
        self.pid = None
        self._clients = []
        self._created_host_dirs = []

    # -- config ---------------------------------------------------------------------------------------------

    def render_config(self):
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return "\n".join([
            "# generated by testenv/lib/cri.py",
            "version = 2",
            "root = %s" % _toml_str(self.root),
            "state = %s" % _toml_str(self.state),
            "oom_score = 0",
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
            ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
            "[grpc]",
            "  address = %s" % _toml_str(self.socket),
            "[ttrpc]",
            "  address = %s" % _toml_str(self.socket + ".ttrpc"),
            "[debug]",
            "  level = %s" % _toml_str(self.log_level),
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            "  path = %s" % _toml_str(os.path.join(self.dir, "opt")),
            "[%s]" % cri,
            "  sandbox_image = %s" % _toml_str(self.sandbox_image),
            "  disable_apparmor = true",
            "  restrict_oom_score_adj = true",
            "  disable_tcp_service = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  enable_selinux = false",
            "  disable_cgroup = false",
            "  tolerate_missing_hugetlb_controller = true",
            "  disable_hugetlb_controller = true",
            "  enable_unprivileged_ports = false",
            "  enable_unprivileged_icmp = false",
            self.extra_cri_toml,
            "  [%s.containerd]" % cri,
            "    snapshotter = %s" % _toml_str(self.snapshotter),
            '    default_runtime_name = "runc"',
            "    [%s.containerd.runtimes.runc]" % cri,
            '      runtime_type = "io.containerd.runc.v2"',
            "      [%s.containerd.runtimes.runc.options]" % cri,
            "        Root = %s" % _toml_str(self.runc_root),
            "        SystemdCgroup = false",
            "  [%s.cni]" % cri,
            "    bin_dir = %s" % _toml_str(self.bin_dir),
            "    conf_dir = %s" % _toml_str(self.conf_dir),
            "    max_conf_num = %d" % self.max_conf_num,
            '    conf_template = ""',
            '    ip_pref = ""',
            "",
        ])

    # -- CNI setup ------------------------------------------------------------------------------------------

    def add_cni_plugin(self, src, name=None, copy=False):
        """Make plugin ``src`` (a path, or a bare name looked up in /usr/lib/cni) available as ``name`` in
        the private bin dir (symlink by default)."""
        if os.sep not in src:
            src = os.path.join(DEBIAN_CNI_DIR, src)
        if not os.access(src, os.X_OK):
            raise FileNotFoundError("CNI plugin %s not found or not executable" % src)
        os.makedirs(self.bin_dir, exist_ok=True)
        dst = os.path.join(self.bin_dir, name or os.path.basename(src))
        tmp = dst + ".tmp-%d" % os.getpid()
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if copy:
            shutil.copy2(src, tmp)
        else:
            os.symlink(os.path.abspath(src), tmp)
        os.replace(tmp, dst)
        return dst

    def set_cni_config(self, conflist, filename=None, wait=True, timeout=15.0):
        """Make ``conflist`` (dict or JSON text) containerd's only CNI config: removes every other file from
        the conf dir, writes atomically, and (wait=True) polls CRI Status until containerd has loaded it."""
        text = conflist if isinstance(conflist, str) else json.dumps(conflist, indent=2, sort_keys=True)
        doc = json.loads(text)
        name = doc["name"]
        filename = filename or "10-%s.conflist" % name
        os.makedirs(self.conf_dir, exist_ok=True)
        for f in os.listdir(self.conf_dir):
            if f != filename:
                os.unlink(os.path.join(self.conf_dir, f))
        path = os.path.join(self.conf_dir, filename)
        tmp = os.path.join(self.conf_dir, ".%s.tmp" % filename)  # extension ignored by containerd
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
        if wait:
            self.wait_cni_config(text, timeout=timeout)
        return path

    def clear_cni_config(self):
        if os.path.isdir(self.conf_dir):
            for f in os.listdir(self.conf_dir):
                os.unlink(os.path.join(self.conf_dir, f))

    def loaded_cni_networks(self):
        """[(name, ifname, source_text)] of the networks containerd's CRI currently has loaded."""
        info = self.client().status(verbose=True)["info"]
        cfg = info.get("cniconfig") or {}
        out = []
        for net in cfg.get("Networks") or []:
            c = net.get("Config") or {}
            out.append((c.get("Name"), net.get("IFName"), c.get("Source")))
        return out

    def wait_cni_config(self, text, timeout=15.0):
        name = json.loads(text)["name"]
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.loaded_cni_networks()
            for n, ifname, source in last:
                if n == name and ifname == "eth0" and _same_json(source, text):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("containerd did not load CNI config %r within %.0fs; loaded: %r; log tail:\n%s"
                                   % (name, timeout, [(n, i) for n, i, _ in last], self.log_tail()))
            time.sleep(0.05)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self):
        """Create the directories, write config.toml, launch containerd, wait for the CRI, import the pause
        image. Returns self. On failure everything is torn down again and the error re-raised."""
        if self.proc is not None:
            raise RuntimeError("already started")
        for d in (self.dir, self.root, self.state, self.runc_root, self.conf_dir, self.bin_dir, self.log_root):
            os.makedirs(d, exist_ok=True)
        if len(self.socket + ".ttrpc") > 100:
            raise ValueError("workdir too long for a unix socket path: %s" % self.socket)
        # loopback is mandatory: containerd always attaches its built-in cni-loopback network.
        if not os.path.exists(os.path.join(self.bin_dir, "loopback")):
            self.add_cni_plugin("loopback")
        # containerd 1.6 shims put their sockets in /run/containerd/s/ whatever the config says; remember
        # whether we are the ones creating those directories so stop() can remove them again when empty.
        self._created_host_dirs = [d for d in (SHIM_SOCKET_DIR, os.path.dirname(SHIM_SOCKET_DIR))
                                   if not os.path.exists(d)]
        try:
            self._launch()
            self.import_pause_image()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self):
        with open(self.config_path, "w") as f:
            f.write(self.render_config())
        for p in (self.socket, self.socket + ".ttrpc"):
            if os.path.exists(p):
                os.unlink(p)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["containerd", "--config", self.config_path], cwd=self.dir, env=_clean_env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.pid = self.proc.pid
        with open(os.path.join(self.dir, "containerd.pid"), "w") as f:
            f.write("%d\n" % self.pid)
        self._wait_ready()

    def kill(self, sig=signal.SIGKILL):
        """Kill the containerd daemon only (by PID); shims and sandboxes keep running, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def restart(self, sig=signal.SIGTERM):
        """Stop the daemon (by PID, leaving shims and sandboxes running) and launch it again on the same
        state; containerd recovers its sandboxes. Clients stay usable (grpc reconnects)."""
        self.kill(sig)
        self._launch()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("containerd exited with %s during start; log tail:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            if os.path.exists(self.socket):
                try:
                    self.client().version(timeout=2)
                    return
                except CRIError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError("containerd CRI not ready after %.0fs; log tail:\n%s"
                                   % (self.start_timeout, self.log_tail()))
            time.sleep(0.05)

    def ctr(self, *args, check=True, timeout=120):
        """Run ``ctr -a <our socket> -n k8s.io ARGS`` and return the CompletedProcess."""
        return subprocess.run(["ctr", "-a", self.socket, "-n", "k8s.io"] + list(args), env=_clean_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, check=check,
                              timeout=timeout)

    def import_pause_image(self):
        archive = self.pause_archive
        if archive is None:
            archive = os.path.join(self.workdir, "pause-oci.tar")
            if not os.path.exists(archive):
                build_pause_image.build(archive, name=self.sandbox_image, workdir=self.workdir)
        try:
            self.ctr("images", "import", "--snapshotter", self.snapshotter, archive)
        except subprocess.CalledProcessError as e:
            raise RuntimeError("ctr images import failed: %s %s" % (e.stdout, e.stderr)) from None
        # The CRI plugin learns about images through events; wait until it sees the sandbox image.
        deadline = time.monotonic() + 10
        while True:
            out = self.ctr("images", "ls", "-q").stdout.split()
            if self.sandbox_image in out:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("sandbox image %s not present after import (have %r)"
                                   % (self.sandbox_image, out))
            time.sleep(0.05)

    def client(self, **kw):
        """A CRIClient on this containerd (cached default client when no keyword is given)."""
        if not kw and self._clients:
            return self._clients[0]
        kw.setdefault("log_root", self.log_root)
        kw.setdefault("cgroup_parent", self.cgroup_parent)
        c = CRIClient(self.socket, **kw)
        self._clients.append(c)
        return c

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def stop(self, remove_state=True):
        """Tear down: remove all sandboxes via CRI, stop containerd (SIGTERM, then SIGKILL, by PID), then
        clean leftovers: runc containers under our runc root, shims bound to our socket, mounts under our
        dir, netns files our sandboxes used, our cgroups. Returns a list of problems found (empty = clean)."""
        problems = []
        netns = set()
        if self.proc is not None and self.proc.poll() is not None and os.path.isdir(self.state):
            # containerd died under us: relaunch it on the same state so that sandboxes get a proper CNI DEL.
            problems.append("containerd had exited with %s before stop()" % self.proc.returncode)
            try:
                self._launch()
            except Exception as e:  # noqa: BLE001
                problems.append("relaunch for cleanup failed: %r" % e)
        if self.running():
            try:
                c = self.client()
                errs = c.teardown_all()
                problems += ["teardown: %s" % e for e in errs]
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                problems.append("teardown: %r" % e)
        for c in self._clients:
            netns |= c.netns_seen
            c.close()
        self._clients = []
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    problems.append("containerd did not exit on SIGTERM; killed")
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            self.proc = None
        leftover_ids = self._runc_container_ids()
        problems += self._kill_runc_containers()
        problems += self._kill_shims()
        problems += self._remove_cni_cache(leftover_ids)
        problems += self._cleanup_netns(netns)
        problems += self._unmount_under(self.dir)
        problems += self._remove_cgroups()
        for d in self._created_host_dirs:  # deepest first; only if empty (another containerd may use it)
            try:
                os.rmdir(d)
            except OSError:
                pass
        if remove_state:
            for d in (self.root, self.state, self.runc_root, os.path.join(self.dir, "opt")):
                shutil.rmtree(d, ignore_errors=True)
            for p in (self.socket, self.socket + ".ttrpc"):
                if os.path.exists(p):
                    os.unlink(p)
        return problems

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- leftovers ------------------------------------------------------------------------------------------

    def _runc_container_ids(self):
        """[(runc root, container id)] of containers under our private runc root."""
        out = []
        if not os.path.isdir(self.runc_root):
            return out
        for ns_dir in sorted(os.listdir(self.runc_root)):
            root = os.path.join(self.runc_root, ns_dir)
            try:
                r = subprocess.run(["runc", "--root", root, "list", "-q"], capture_output=True, text=True,
                                   timeout=30, env=_clean_env())
            except (OSError, subprocess.TimeoutExpired):
                continue
            out += [(root, cid) for cid in r.stdout.split()]
        return out

    def _kill_runc_containers(self):
        problems = []
        for root, cid in self._runc_container_ids():
            problems.append("leftover runc container %s" % cid)
            subprocess.run(["runc", "--root", root, "delete", "-f", cid], capture_output=True, timeout=30,
                           env=_clean_env())
        return problems

    @staticmethod
    def _remove_cni_cache(ids):
        """Last resort when no CNI DEL could run: drop libcni's cached results of these sandbox ids."""
        problems = []
        d = "/var/lib/cni/results"
        if not ids or not os.path.isdir(d):
            return problems
        for f in os.listdir(d):
            if any("-%s-" % cid in f for _, cid in ids):
                problems.append("leftover libcni cache %s" % f)
                os.unlink(os.path.join(d, f))
        return problems

    def shim_pids(self):
        """PIDs of containerd shims started by OUR containerd (their argv has ``-address <our socket>``)."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if not argv or not os.path.basename(argv[0]).startswith(b"containerd-shim"):
                continue
            for i, a in enumerate(argv[:-1]):
                if a == b"-address" and argv[i + 1] == self.socket.encode():
                    pids.append(int(d))
        return pids

    def _kill_shims(self):
        problems = []
        pids = self.shim_pids()
        sockets = _listening_unix_paths(pids, prefix=SHIM_SOCKET_DIR + "/")
        for pid in pids:
            problems.append("leftover shim pid %d" % pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists("/proc/%d" % p)]
            time.sleep(0.05)
        for path in sockets:  # a SIGKILLed shim leaves its socket file behind
            try:
                os.unlink(path)
            except OSError:
                pass
        return problems

    def _cleanup_netns(self, seen):
        problems = []
        for path in sorted(seen):
            if os.path.dirname(path) not in (NETNS_DIR, "/run/netns"):
                continue
            if os.path.exists(path):
                problems.append("leftover netns %s" % path)
                subprocess.run(["umount", "-l", path], capture_output=True)
                try:
                    os.unlink(path)
                except OSError:
                    pass
        return problems

    def _unmount_under(self, top):
        problems = []
        prefix = top.rstrip("/") + "/"
        for mp in sorted(_mountpoints(), key=len, reverse=True):
            if mp.startswith(prefix):
                problems.append("leftover mount %s" % mp)
                r = subprocess.run(["umount", mp], capture_output=True)
                if r.returncode != 0:
                    subprocess.run(["umount", "-l", mp], capture_output=True)
        return problems

    def cgroup_dirs(self):
        """Existing cgroup directories (one per mounted hierarchy) of our cgroup parent."""
        rel = self.cgroup_parent.strip("/")
        if not rel:
            return []
        return [d for d in (os.path.join(base, rel) for base in _cgroup_mounts()) if os.path.isdir(d)]

    def _remove_cgroups(self):
        problems = []
        for top in self.cgroup_dirs():
            for dirpath, dirnames, _ in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
                try:
                    os.rmdir(dirpath)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        problems.append("cgroup %s: %s" % (dirpath, e))
        return problems


def _same_json(a, b):
    try:
        return json.loads(a) == json.loads(b)
    except (ValueError, TypeError):
        return False


def _clean_env():
    return {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8"}


def _listening_unix_paths(pids, prefix):
    """Paths (under ``prefix``) of unix sockets held open by the given processes."""
    inodes = set()
    for pid in pids:
        fd_dir = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(fd_dir):
                try:
                    link = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    paths = []
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[6] in inodes and parts[7].startswith(prefix):
                    paths.append(parts[7])
    except OSError:
        pass
    return sorted(set(paths))


def _mountpoints():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            out.append(mp.encode().decode("unicode_escape"))  # \040 etc.
    return out


def _cgroup_mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1] in ("cgroup", "cgroup2"):
                out.append(parts[4])
    return out


def netns_exec(netns_path, *cmd, check=True):
    """Run a command inside a network namespace (nsenter --net=PATH) and return its stdout."""
    r = subprocess.run(["nsenter", "--net=" + netns_path, "--"] + list(cmd), capture_output=True, text=True,
                       check=False, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("%s in %s failed (%d): %s" % (" ".join(cmd), netns_path, r.returncode, r.stderr))
    return r.stdout


_INSTALL_SH = os.path.join(_CRI_DIR, "install.sh")
_BASE_TOOLS = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "gcc", "nsenter", "iptables")
_BASE_PLUGINS = ("bridge", "host-local", "portmap", "loopback")


def missing_dependencies(extra_tools=(), extra_plugins=()):
    """What a CRI test needs and this machine lacks (grpcio, binaries, reference plugins): an empty list when ready."""
    missing = []
    try:
        import grpc  # noqa: F401
    except ImportError:
        missing.append("python grpcio")
    missing += [t for t in _BASE_TOOLS + tuple(extra_tools) if not shutil.which(t)]
    missing += ["/usr/lib/cni/" + p for p in _BASE_PLUGINS + tuple(extra_plugins)
                if not os.access("/usr/lib/cni/" + p, os.X_OK)]
    return missing


def ensure_installed(extra_tools=(), extra_plugins=()):
    """Runs testenv/cri/install.sh if anything is missing. Returns None when ready, else why it is not."""
    global grpc
    if not missing_dependencies(extra_tools, extra_plugins):
        if grpc is None:
            import grpc as _grpc
            grpc = _grpc
        return None
    r = subprocess.run(["bash", _INSTALL_SH], capture_output=True, text=True)
    still = missing_dependencies(extra_tools, extra_plugins)
    if r.returncode != 0 or still:
        return "missing %s; install.sh said: %s" % (still, r.stderr[-2000:] or r.stdout[-2000:])
    import grpc as _grpc  # installed just now
    grpc = _grpc
    return None
