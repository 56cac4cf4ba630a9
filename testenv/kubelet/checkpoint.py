"""Writes the kubelet device manager's checkpoint file ``kubelet_internal_checkpoint`` for tests.

Shapes (shared/reference/device-plugins.md §3.2):

* ``"numa"`` (kubelet >= 1.20): ``DeviceIDs`` is an object ``{"<numa node>": [ids]}``, ``"-1"`` = no topology;
* ``"list"`` (kubelet <= 1.19): ``DeviceIDs`` is an array of IDs.

``Checksum`` is computed as the kubelet does: FNV-32a over the go-spew ``%#v`` rendering of ``Data`` (the kubelet's
``checksum.New(cp.Data)`` via ``dump.ForHash``), with the 1.19 type names for the list shape (what its
``checkpointDataV1.checksum()`` reproduces). Checked against checkpoints written by real kubelets (see the tests).

    write_checkpoint(dir, {"6f1c...": {"app": {"intel.com/intel_sriov_netdevice": ["0000:03:02.0"]}}})
    write_checkpoint(dir, {uid: {"app": {res: {0: ["0000:03:02.0"], 1: ["0000:81:02.0"]}}}}, shape="list")
"""

import base64
import json
import os
import tempfile

CHECKPOINT_NAME = "kubelet_internal_checkpoint"
SHAPES = ("numa", "list")
NO_TOPOLOGY = -1


# -- device IDs -------------------------------------------------------------------------------------------------------


def _per_numa(ids, default_numa):
    """{int node: [ids]} from a list (all on `default_numa`) or a {node: [ids]} mapping (keys int or str)."""
    if isinstance(ids, dict):
        out = {}
        for k, v in ids.items():
            node = int(k)
            if isinstance(v, str) or not all(isinstance(i, str) for i in v):
                raise TypeError("device IDs must be lists of strings: %r" % (v,))
            out[node] = list(v)
        return out
    if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
        raise TypeError("device IDs must be a list of strings or a {numa: [ids]} mapping: %r" % (ids,))
    return {int(default_numa): list(ids)}


def _flat(per_numa):
    return [i for node in sorted(per_numa) for i in per_numa[node]]


# -- AllocResp --------------------------------------------------------------------------------------------------------


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def pcidevice_env(resource_name):
    """The SR-IOV device plugin's variable name: PCIDEVICE_<RESOURCE> upper-cased, '.' and '/' -> '_'."""
    return "PCIDEVICE_" + resource_name.upper().replace(".", "_").replace("/", "_")


def alloc_resp(envs):
    """A ``ContainerAllocateResponse`` protobuf with only ``envs`` (field 1, map<string,string>), base64."""
    body = b""
    for k, v in envs.items():
        entry = _len_field(1, k.encode()) + _len_field(2, v.encode())
        body += _len_field(1, entry)
    return base64.b64encode(body).decode()


# -- checksum ---------------------------------------------------------------------------------------------------------


def _fnv32a(data):
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def _spew_strings(v):
    return "<nil>" if v is None else "[" + " ".join(v) + "]"


def _spew_bytes(b64):
    if b64 is None:
        return "<nil>"
    return "[" + " ".join(str(b) for b in base64.b64decode(b64)) + "]"


def spew_dump(data):
    """go-spew ``%#v`` (SortKeys) of the kubelet's ``checkpointData`` as Go would hold ``data`` (the JSON ``Data``
    object) after json.Unmarshal: strings raw, []byte as decimal bytes, maps with sorted keys, null as <nil>."""
    entries = data.get("PodDeviceEntries")
    parts = []
    for e in entries or ():
        ids = e.get("DeviceIDs")
        if isinstance(ids, dict):
            ids_s = "(checkpoint.DevicesPerNUMA)" + ("map[" + " ".join(
                "%d:%s" % (k, _spew_strings(v)) for k, v in sorted((int(k), v) for k, v in ids.items())) + "]")
        elif ids is None:
            ids_s = "(checkpoint.DevicesPerNUMA)<nil>"
        else:
            ids_s = "([]string)" + _spew_strings(ids)
        parts.append("{PodUID:(string)%s ContainerName:(string)%s ResourceName:(string)%s DeviceIDs:%s "
                     "AllocResp:([]uint8)%s}" % (e.get("PodUID", ""), e.get("ContainerName", ""),
                                                 e.get("ResourceName", ""), ids_s, _spew_bytes(e.get("AllocResp"))))
    ents = "<nil>" if entries is None else "[" + " ".join(parts) + "]"
    reg = data.get("RegisteredDevices")
    reg_s = "<nil>" if reg is None else "map[" + " ".join(
        "%s:%s" % (k, _spew_strings(reg[k])) for k in sorted(reg)) + "]"
    return ("(checkpoint.checkpointData){PodDeviceEntries:([]checkpoint.PodDevicesEntry)%s "
            "RegisteredDevices:(map[string][]string)%s}" % (ents, reg_s))


def checksum(data):
    """The kubelet's Checksum of a JSON ``Data`` object (either shape)."""
    return _fnv32a(spew_dump(data).encode("utf-8"))


def verify_checksum(doc):
    """Whether a parsed checkpoint document's Checksum matches its Data."""
    return doc.get("Checksum") == checksum(doc["Data"])


# -- building and writing ---------------------------------------------------------------------------------------------


def checkpoint_doc(pods, shape="numa", registered_devices=None, with_alloc_resp=True, default_numa=NO_TOPOLOGY,
                   boot_id=None):
    """The checkpoint as a dict.

    ``pods``: ``{pod_uid: {container_name: {resource_name: ids}}}`` where ``ids`` is a list (all on
    ``default_numa``, -1 = no topology) or ``{numa_node: [ids]}``. In the list shape the nodes are flattened.
    ``registered_devices``: ``{resource: [ids]}``; default: every ID used, per resource, sorted.
    ``with_alloc_resp``: an SR-IOV-style ``AllocResp`` (env ``PCIDEVICE_<RESOURCE>=id,id``), else null.
    ``boot_id``: newer kubelets add ``BootID`` beside ``Data`` (outside the checksum); omitted when None.
    """
    if shape not in SHAPES:
        raise ValueError("shape must be one of %s" % ", ".join(SHAPES))
    entries = []
    used = {}
    for uid, containers in pods.items():
        for cname, resources in containers.items():
            for res, ids in resources.items():
                per_numa = _per_numa(ids, default_numa)
                flat = _flat(per_numa)
                used.setdefault(res, set()).update(flat)
                if shape == "numa":
                    # encoding/json writes map keys sorted as strings ("-1" < "0" < "1" < "10" < "2").
                    dev = {str(k): per_numa[k] for k in sorted(per_numa, key=str)}
                else:
                    dev = flat
                entries.append({
                    "PodUID": uid,
                    "ContainerName": cname,
                    "ResourceName": res,
                    "DeviceIDs": dev,
                    "AllocResp": alloc_resp({pcidevice_env(res): ",".join(flat)}) if with_alloc_resp else None,
                })
    if registered_devices is None:
        registered_devices = {r: sorted(ids) for r, ids in used.items()}
    data = {"PodDeviceEntries": entries,
            "RegisteredDevices": {k: list(registered_devices[k]) for k in sorted(registered_devices)}}
    doc = {"Data": data, "Checksum": checksum(data)}
    if boot_id:
        doc["BootID"] = boot_id
    return doc


def write_checkpoint(directory, pods, shape="numa", filename=CHECKPOINT_NAME, **kwargs):
    """Writes ``<directory>/kubelet_internal_checkpoint`` (mode 0600, atomically) as the kubelet does (compact
    JSON); returns its path. Keyword arguments as for ``checkpoint_doc``."""
    doc = checkpoint_doc(pods, shape=shape, **kwargs)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, filename)
    fd, tmp = tempfile.mkstemp(prefix="." + filename + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_checkpoint(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
