#!/usr/bin/env python3
"""Plexus test API server: a small Kubernetes-API-compatible HTTPS server (Python stdlib only).

It serves just enough of the Kubernetes API for Plexus' tests, for real `kubectl` (v1.27-1.33) and for the
Python `kubernetes` client: discovery, an OpenAPI v3 stub, namespaces, pods (+status), events, CRDs and the
custom resources they define (NetworkAttachmentDefinitions), Table output, watch, merge / strategic-merge /
JSON patch, resourceVersion conflicts, metav1.Status errors, bearer-token and client-certificate auth,
a JSONL request log and fault injection through an unauthenticated control API under /_test/.

Usage: server.py --state-dir DIR [--port 0] [--persist] ...   (see --help and README.md next to this file)

State dir layout (created as needed, reused on restart):
  pki/ca.{crt,key} server.{crt,key} client.{crt,key}   CA, server cert (SAN IP:127.0.0.1, DNS:localhost), admin client cert
  tokens          "token user role" per line; re-read on every request (rotation without restart)
  roles.json      custom roles (PolicyRules) added through PUT /_test/roles
  port, url       written once the socket is bound
  requests.jsonl  request log, one JSON object per request
  data.json       objects + resourceVersion counter (only with --persist)
  server.log      (written by the launcher, not by this program)
"""

import argparse
import collections
import copy
import datetime
import hashlib
import http
import json
import os
import random
import re
import secrets
import select
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
TABLE_CT = "application/json;as=Table;v={v};g=meta.k8s.io"
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# --------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details, self.headers = code, reason, message, details, headers

    def body(self):
        b = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            b["details"] = self.details
        return b


DEFAULT_REASONS = {400: ("BadRequest", "the server rejected our request for an unknown reason"),
                   401: ("Unauthorized", "Unauthorized"),
                   403: ("Forbidden", "forbidden"),
                   404: ("NotFound", "the server could not find the requested resource"),
                   405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
                   409: ("Conflict", "the object has been modified; please apply your changes to the latest version and try again"),
                   410: ("Expired", "the resource version is too old"),
                   415: ("UnsupportedMediaType", "the body of the request was in an unknown format"),
                   422: ("Invalid", "the server rejected our request due to an error in our request"),
                   429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
                   500: ("InternalError", "Internal error occurred: injected fault"),
                   502: ("InternalError", "bad gateway"),
                   503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
                   504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request")}


def details_for(res, name=None):
    d = {"kind": res.plural}
    if name is not None:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    return d


def not_found(res, name):
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', details_for(res, name))


def conflict(res, name):
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again", details_for(res, name))


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


def invalid(res, name, causes):
    """causes: list of (field, message-without-field)"""
    msgs = [f"{f}: {m}" for f, m in causes]
    summary = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    kq = res.kind + (f".{res.group}" if res.group else "")
    d = {"name": name, "kind": res.kind,
         "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]}
    if res.group:
        d["group"] = res.group
    return ApiError(422, "Invalid", f'{kq} "{name}" is invalid: {summary}', d)


# --------------------------------------------------------------------------------------------- helpers


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s):
    try:
        return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    except Exception:
        return None


def human_duration(seconds):
    """Like k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{(s // 60) % 60}m" if (s // 60) % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        return f"{h // (24 * 365)}y{(h // 24) % 365}d"
    return f"{h // (24 * 365)}y"


def age_of(obj):
    t = parse_time((obj.get("metadata") or {}).get("creationTimestamp") or "")
    return "<unknown>" if t is None else human_duration(time.time() - t)


def parse_bool(v):
    return str(v) in ("1", "t", "T", "TRUE", "true", "True")


def dumps(obj):
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def get_path(obj, dotted):
    cur = obj
    for p in dotted.split("."):
        if not p:
            continue
        if isinstance(cur, dict):
            cur = cur.get(p)
        else:
            return None
    return cur


def strip_volatile(obj):
    o = copy.deepcopy(obj)
    md = o.get("metadata") or {}
    md.pop("resourceVersion", None)
    md.pop("managedFields", None)
    return o


# --------------------------------------------------------------------------------------------- selectors


def _split_top(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [t.strip() for t in out if t.strip()]


def _equality_term(term):
    """`k!=v`, `k==v` or `k=v` as (op, key, value); None for anything else."""
    for sep, op in (("!=", "!="), ("==", "="), ("=", "=")):
        if sep in term:
            k, v = term.split(sep, 1)
            return (op, k.strip(), v.strip())
    return None


def parse_label_selector(s):
    reqs = []
    for term in _split_top(s or ""):
        m = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", term)
        if m:
            reqs.append((m.group(2), m.group(1), {v.strip() for v in m.group(3).split(",") if v.strip()}))
        elif term.startswith("!"):
            reqs.append(("!", term[1:].strip(), None))
        else:
            reqs.append(_equality_term(term) or ("exists", term, None))
    return reqs


def label_match(reqs, obj):
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for op, k, v in reqs:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!" and k in labels:
            return False
        if op == "in" and labels.get(k) not in v:
            return False
        if op == "notin" and k in labels and labels[k] in v:
            return False
    return True


def parse_field_selector(s):
    reqs = []
    for term in _split_top(s or ""):
        req = _equality_term(term)
        if req is None:
            raise bad_request(f'invalid selector: \'{s}\'; can\'t understand \'{term}\'')
        reqs.append(req)
    return reqs


def field_match(reqs, obj):
    for op, k, v in reqs:
        val = get_path(obj, k)
        sval = "" if val is None else (str(val).lower() if isinstance(val, bool) else str(val))
        if (op == "=") != (sval == v):
            return False
    return True


# --------------------------------------------------------------------------------------------- patches


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    target = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


SMP_MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
                  "env": "name", "ports": "containerPort", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
                  "imagePullSecrets": "name", "conditions": "type", "ownerReferences": "uid", "podIPs": "ip",
                  "hostIPs": "ip", "hostAliases": "ip", "readinessGates": "conditionType", "resourceClaims": "name",
                  "topologySpreadConstraints": "topologyKey", "containerStatuses": "name",
                  "initContainerStatuses": "name"}
SMP_PRIMITIVE_MERGE = {"finalizers"}


def _strip_directives(v):
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items()
                if not (k == "$patch" or k == "$retainKeys" or k.startswith("$setElementOrder/")
                        or k.startswith("$deleteFromPrimitiveList/"))}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v]
    return v


def strategic_merge(target, patch):
    """Strategic merge patch for the subset of core types the tests need. Returns None for `$patch: delete`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(patch)
    target = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(target.get(field), list):
                target[field] = [x for x in target[field] if x not in (v or [])]
            continue
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict):
            r = strategic_merge(target.get(k), v)
            if r is None:
                target.pop(k, None)
            else:
                target[k] = r
        elif isinstance(v, list):
            target[k] = _smp_list(k, target.get(k) if isinstance(target.get(k), list) else [], v)
        else:
            target[k] = v
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        for k in list(target):
            if k not in retain:
                del target[k]
    return target


def _smp_list(field, cur, patch):
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [_strip_directives(e) for e in patch if not (isinstance(e, dict) and e.get("$patch") == "replace")]
    key = SMP_MERGE_KEYS.get(field)
    if key and all(isinstance(e, dict) for e in patch):
        result = copy.deepcopy(cur)
        for e in patch:
            idx = next((i for i, x in enumerate(result) if isinstance(x, dict) and x.get(key) == e.get(key)), None)
            if e.get("$patch") == "delete":
                if idx is not None:
                    del result[idx]
            elif idx is None:
                result.append(_strip_directives(e))
            else:
                result[idx] = strategic_merge(result[idx], e)
        return result
    if field in SMP_PRIMITIVE_MERGE:
        result = list(cur)
        for e in patch:
            if e not in result:
                result.append(e)
        return result
    return _strip_directives(patch)


class JsonPatchError(Exception):
    pass


def _ptr(path):
    if path == "":
        return []
    if not isinstance(path, str) or not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _walk(doc, toks, path):
    cur = doc
    for t in toks:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list) and t.isdigit() and int(t) < len(cur):
            cur = cur[int(t)]
        else:
            raise JsonPatchError(f'doc is missing path: "{path}"')
    return cur


def _ptr_get(doc, path):
    return _walk(doc, _ptr(path), path)


def _ptr_remove(doc, path):
    toks = _ptr(path)
    if not toks:
        raise JsonPatchError("cannot remove the document root")
    parent = _walk(doc, toks[:-1], path)
    last = toks[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise JsonPatchError(f'doc is missing path: "{path}"')


def _ptr_add(doc, path, value, replace=False):
    toks = _ptr(path)
    if not toks:
        return value
    parent = _walk(doc, toks[:-1], path)
    last = toks[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise JsonPatchError(f'doc is missing key: "{path}"')
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and (int(last) <= len(parent) if not replace else int(last) < len(parent)):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise JsonPatchError(f'doc is missing path: "{path}"')
    else:
        raise JsonPatchError(f'doc is missing path: "{path}"')
    return doc


def json_patch(doc, ops):
    if not isinstance(ops, list):
        raise JsonPatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise JsonPatchError("invalid operation")
        kind, path = op.get("op"), op.get("path")
        if kind == "add":
            doc = _ptr_add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _ptr_remove(doc, path)
        elif kind == "replace":
            doc = _ptr_add(doc, path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "move":
            v = _ptr_remove(doc, op.get("from"))
            doc = _ptr_add(doc, path, v)
        elif kind == "copy":
            doc = _ptr_add(doc, path, copy.deepcopy(_ptr_get(doc, op.get("from"))))
        elif kind == "test":
            if _ptr_get(doc, path) != op.get("value"):
                raise JsonPatchError(f'testing value {path} failed: test failed')
        else:
            raise JsonPatchError(f"Unexpected kind: {kind}")
    return doc


# --------------------------------------------------------------------------------------------- protobuf (kubectl)
# kubectl's typed commands (e.g. `kubectl create namespace`) send application/vnd.kubernetes.protobuf bodies.
# Just enough decoding for Namespace and ConfigMap: runtime.Unknown envelope + ObjectMeta + their fields.


def _pb_fields(buf):
    i, n = 0, len(buf)

    def varint():
        nonlocal i
        shift = val = 0
        while True:
            if i >= n:
                raise ValueError("truncated varint")
            b = buf[i]
            i += 1
            val |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return val
    while i < n:
        key = varint()
        field, wt = key >> 3, key & 7
        if wt == 0:
            yield field, varint()
        elif wt == 2:
            ln = varint()
            if i + ln > n:
                raise ValueError("truncated field")
            yield field, bytes(buf[i:i + ln])
            i += ln
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")


def _pb_map(entries):
    out = {}
    for e in entries:
        kv = dict(_pb_fields(e))
        out[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
    return out


def _pb_object_meta(buf):
    md, labels, annotations, finalizers = {}, [], [], []
    for f, v in _pb_fields(buf):
        if f in (1, 2, 3, 5, 6) and v:
            md[{1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}[f]] = v.decode()
        elif f == 11:
            labels.append(v)
        elif f == 12:
            annotations.append(v)
        elif f == 14:
            finalizers.append(v.decode())
    if labels:
        md["labels"] = _pb_map(labels)
    if annotations:
        md["annotations"] = _pb_map(annotations)
    if finalizers:
        md["finalizers"] = finalizers
    return md


def decode_protobuf(data, res):
    if not data.startswith(b"k8s\x00"):
        raise bad_request("protobuf body without the k8s magic prefix")
    try:
        env = {}
        for f, v in _pb_fields(data[4:]):
            env[f] = v
        tm = dict(_pb_fields(env.get(1, b"")))
        obj = {"apiVersion": tm.get(1, b"").decode(), "kind": tm.get(2, b"").decode(), "metadata": {}}
        if obj["kind"] not in ("Namespace", "ConfigMap"):
            raise ApiError(415, "UnsupportedMediaType", f"the Plexus test server decodes protobuf only for Namespace "
                                                        f"and ConfigMap, not {obj['kind']!r}; send JSON")
        data_entries, bin_entries = [], []
        for f, v in _pb_fields(env.get(2, b"")):
            if f == 1:
                obj["metadata"] = _pb_object_meta(v)
            elif obj["kind"] == "Namespace" and f == 2:
                fins = [x.decode() for ff, x in _pb_fields(v) if ff == 1]
                obj["spec"] = {"finalizers": fins} if fins else {}
            elif obj["kind"] == "ConfigMap" and f == 2:
                data_entries.append(v)
            elif obj["kind"] == "ConfigMap" and f == 3:
                bin_entries.append(v)
            elif obj["kind"] == "ConfigMap" and f == 4:
                obj["immutable"] = bool(v)
        if data_entries:
            obj["data"] = _pb_map(data_entries)
        if bin_entries:
            import base64
            obj["binaryData"] = {k: base64.b64encode(v.encode("latin-1")).decode()
                                 for k, v in ((dict(_pb_fields(e)).get(1, b"").decode(),
                                               dict(_pb_fields(e)).get(2, b"").decode("latin-1")) for e in bin_entries)}
        return obj
    except ValueError as e:
        raise bad_request(f"cannot decode protobuf body: {e}")


# --------------------------------------------------------------------------------------------- schema (CRs)

_TYPES = {"string": (str,), "object": (dict,), "array": (list,), "boolean": (bool,),
          "integer": (int,), "number": (int, float)}


def _type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def schema_check(schema, value, path, errors, unknown, prune):
    """Minimal structural-schema check: types, enum, required, unknown fields (returned / pruned)."""
    if not isinstance(schema, dict):
        return
    t = schema.get("type")
    if value is None:
        if t and not schema.get("nullable"):
            errors.append((path, f'Invalid value: "null": {path} in body must be of type {t}: "null"'))
        return
    if t in _TYPES and (not isinstance(value, _TYPES[t]) or (t in ("integer", "number") and isinstance(value, bool))):
        errors.append((path, f'Invalid value: "{_type_name(value)}": {path} in body must be of type {t}: '
                             f'"{_type_name(value)}"'))
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(e) for e in schema["enum"])
        errors.append((path, f'Unsupported value: {json.dumps(value)}: supported values: {allowed}'))
    if isinstance(value, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        for r in schema.get("required") or []:
            if r not in value:
                errors.append((f"{path}.{r}", "Required value"))
        for k in list(value):
            sub = f"{path}.{k}" if path else k
            if props and k in props:
                schema_check(props[k], value[k], sub, errors, unknown, prune)
            elif isinstance(addl, dict):
                schema_check(addl, value[k], sub, errors, unknown, prune)
            elif preserve or addl is True or schema.get("x-kubernetes-embedded-resource"):
                continue
            else:
                unknown.append(sub)
                if prune:
                    del value[k]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            schema_check(schema["items"], item, f"{path}[{i}]", errors, unknown, prune)


# --------------------------------------------------------------------------------------------- resources


class Resource:
    def __init__(self, group, version, plural, kind, namespaced, singular="", short=(), categories=(),
                 status=False, custom=False, schema=None, columns=None, list_kind=None, crd=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.singular, self.short, self.categories = namespaced, singular, list(short), list(categories)
        self.status, self.custom, self.schema, self.columns = status, custom, schema, columns
        self.list_kind = list_kind or kind + "List"
        self.crd = crd

    @property
    def gv(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self):
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def skey(self):
        return (self.group, self.plural)


def builtin_resources():
    return [
        Resource("", "v1", "namespaces", "Namespace", False, "namespace", ["ns"], status=True),
        Resource("", "v1", "pods", "Pod", True, "pod", ["po"], ["all"], status=True),
        Resource("", "v1", "events", "Event", True, "event", ["ev"]),
        Resource("", "v1", "configmaps", "ConfigMap", True, "configmap", ["cm"]),
        Resource("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ["sa"]),
        Resource("apps", "v1", "daemonsets", "DaemonSet", True, "daemonset", ["ds"], ["all"], status=True),
        Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, "clusterrole"),
        Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False,
                 "clusterrolebinding"),
        Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True, "role"),
        Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, "rolebinding"),
        Resource("events.k8s.io", "v1", "events", "Event", True, "event", ["ev"]),
        Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
                 "customresourcedefinition", ["crd", "crds"], ["api-extensions"], status=True),
    ]


# Authorization. Rules: (api groups, resources, verbs[, resource names]); "*" wildcard. "multus" is a copy of the
# Multus ClusterRole. More roles come from Kubernetes PolicyRules (PUT /_test/roles, or <state-dir>/roles.json at
# start), and the role "rbac" evaluates the ClusterRoleBindings/RoleBindings stored in the server for the user, as
# a real apiserver's RBAC authorizer does (e.g. after `kubectl apply -f deploy/`).
BUILTIN_ROLES = ("admin", "readonly", "multus", "none", "rbac")
ROLES = {
    "admin": [(["*"], ["*"], ["*"])],
    "readonly": [(["*"], ["*"], ["get", "list", "watch"])],
    "multus": [(["k8s.cni.cncf.io"], ["*"], ["*"]),
               ([""], ["pods", "pods/status"], ["get", "list", "update", "watch"]),
               (["", "events.k8s.io"], ["events"], ["create", "patch", "update"])],
    "none": [],
    "rbac": [],
}


def rules_from_policy(rules, where="rules"):
    """Kubernetes PolicyRule objects -> rule tuples. Raises ValueError on anything malformed (nonResourceURLs
    rules are kept out: the server has no non-resource endpoints behind authorization)."""
    if not isinstance(rules, list):
        raise ValueError(f"{where} must be a list of PolicyRules")
    out = []
    for i, r in enumerate(rules):
        if not isinstance(r, dict):
            raise ValueError(f"{where}[{i}] is not an object")
        unknown = set(r) - {"apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"}
        if unknown:
            raise ValueError(f"{where}[{i}] has unknown fields {sorted(unknown)}")
        for f in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            v = r.get(f, [])
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"{where}[{i}].{f} must be a list of strings")
        if not r.get("verbs"):
            raise ValueError(f"{where}[{i}].verbs is required")
        if r.get("nonResourceURLs"):
            continue
        out.append((list(r.get("apiGroups", [])), list(r.get("resources", [])), list(r.get("verbs", [])),
                    list(r.get("resourceNames", []))))
    return out


def rule_allows(rule, verb, group, resource, name=None):
    groups, resources, verbs = rule[0], rule[1], rule[2]
    names = rule[3] if len(rule) > 3 else []
    if names and (name is None or name not in names):
        return False
    return ("*" in groups or group in groups) and ("*" in resources or resource in resources) \
        and ("*" in verbs or verb in verbs)


def subject_matches(subject, user):
    kind, sname = subject.get("kind"), subject.get("name")
    if kind == "ServiceAccount":
        return user == f"system:serviceaccount:{subject.get('namespace', '')}:{sname}"
    if kind == "User":
        return user == sname
    if kind == "Group":
        if sname in ("system:authenticated",):
            return True
        parts = user.split(":")
        return user.startswith("system:serviceaccount:") and len(parts) == 4 and \
            sname in ("system:serviceaccounts", f"system:serviceaccounts:{parts[2]}")
    return False


def rbac_rules(state, user, ns):
    """The rule tuples the stored bindings grant `user` for a request in namespace `ns` (None: cluster scope)."""
    def role_rules(kind, name, binding_ns):
        if kind == "ClusterRole":
            obj = state.objects[("rbac.authorization.k8s.io", "clusterroles")].get((None, name))
        elif kind == "Role":
            obj = state.objects[("rbac.authorization.k8s.io", "roles")].get((binding_ns, name))
        else:
            obj = None
        try:
            return rules_from_policy((obj or {}).get("rules") or [])
        except ValueError:
            return []
    out = []
    with state.lock:
        for b in state.objects[("rbac.authorization.k8s.io", "clusterrolebindings")].values():
            if any(subject_matches(s, user) for s in b.get("subjects") or []):
                ref = b.get("roleRef") or {}
                if ref.get("kind") == "ClusterRole":
                    out += role_rules("ClusterRole", ref.get("name"), None)
        if ns is not None:
            for (bns, _), b in state.objects[("rbac.authorization.k8s.io", "rolebindings")].items():
                if bns == ns and any(subject_matches(s, user) for s in b.get("subjects") or []):
                    ref = b.get("roleRef") or {}
                    out += role_rules(ref.get("kind"), ref.get("name"), bns)
    return out


def role_allows(role, verb, group, resource, name=None, ns=None, user=None, state=None):
    rules = rbac_rules(state, user or "", ns) if role == "rbac" and state is not None else ROLES.get(role, [])
    return any(rule_allows(r, verb, group, resource, name) for r in rules)


def define_roles(roles):
    """Adds or replaces custom roles {name: [PolicyRule, ...]}; builtin role names cannot be redefined."""
    converted = {}
    for name, rules in roles.items():
        if not isinstance(name, str) or not name or name in BUILTIN_ROLES:
            raise ValueError(f"role name {name!r} is empty or builtin")
        converted[name] = rules_from_policy(rules, f"roles[{name!r}]")
    ROLES.update(converted)
    return sorted(converted)


# --------------------------------------------------------------------------------------------- NAD CRD (builtin copy)

NAD_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
    "spec": {
        "group": "k8s.cni.cncf.io",
        "scope": "Namespaced",
        "names": {"plural": "network-attachment-definitions", "singular": "network-attachment-definition",
                  "kind": "NetworkAttachmentDefinition", "shortNames": ["net-attach-def", "nad"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "description": "NetworkAttachmentDefinition is a CRD schema specified by the Network Plumbing "
                               "Working Group to express the intent for attaching pods to one or more logical "
                               "or physical networks. More information available at: "
                               "https://github.com/k8snetworkplumbingwg/multi-net-spec",
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "spec": {"description": "NetworkAttachmentDefinition spec defines the desired state of a "
                                            "network attachment",
                             "type": "object",
                             "properties": {"config": {"description": "NetworkAttachmentDefinition config is a "
                                                                      "JSON-formatted CNI configuration",
                                                       "type": "string"}}}}}},
        }],
    },
}

# --------------------------------------------------------------------------------------------- state


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = int(time.time() * 1000)
        self.resources = {}          # (group, version, plural) -> Resource
        self.objects = collections.defaultdict(dict)   # (group, plural) -> {(ns, name): obj}
        self.history = collections.deque(maxlen=max(args.history, 1))
        self.floor = self.rv         # watches from an RV below this get 410 Expired
        self.data_path = os.path.join(args.state_dir, "data.json")
        self.tokens_path = args.tokens_file or os.path.join(args.state_dir, "tokens")
        self._tok_cache = (None, {})
        self.roles_path = os.path.join(args.state_dir, "roles.json")
        self.load_roles()
        for r in builtin_resources():
            self.resources[(r.group, r.version, r.plural)] = r
        loaded = args.persist and self.load()
        if not loaded:
            for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
                self.create(self.res("", "v1", "namespaces"), None, {"metadata": {"name": ns}}, {})
            for path in args.preinstall_crd or []:
                self.create(self.res("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None,
                            load_manifest(path), {})
            if args.preinstall_nad_crd and not self.objects[("apiextensions.k8s.io", "customresourcedefinitions")]:
                self.create(self.res("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None,
                            copy.deepcopy(NAD_CRD), {})

    # ---- persistence
    def load(self):
        try:
            with open(self.data_path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return False
        self.rv = max(self.rv, int(data.get("rv", 0)))
        self.floor = self.rv
        items = data.get("objects", [])
        crd_key = ["apiextensions.k8s.io", "customresourcedefinitions"]
        for g, p, obj in sorted(items, key=lambda i: [i[0], i[1]] != crd_key):
            md = obj["metadata"]
            self.objects[(g, p)][(md.get("namespace"), md["name"])] = obj
            if [g, p] == crd_key:
                self.register_crd(obj)
        return True

    def save(self):
        if not self.args.persist:
            return
        items = [[g, p, o] for (g, p), objs in self.objects.items() for o in objs.values()]
        tmp = self.data_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"rv": self.rv, "objects": items}, f)
        os.replace(tmp, self.data_path)

    # ---- tokens
    def tokens(self):
        try:
            st = os.stat(self.tokens_path)
        except OSError:
            return {}
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._tok_cache[0] == key:
            return self._tok_cache[1]
        toks = {}
        try:
            with open(self.tokens_path) as f:
                for line in f:
                    parts = line.split()
                    if not parts or parts[0].startswith("#"):
                        continue
                    toks[parts[0]] = (parts[1] if len(parts) > 1 else "admin", parts[2] if len(parts) > 2 else "admin")
        except OSError:
            return {}
        self._tok_cache = (key, toks)
        return toks

    def write_tokens(self, entries):
        lines = [f"{e['token']} {e.get('user', 'admin')} {e.get('role', 'admin')}\n" for e in entries]
        tmp = self.tokens_path + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(lines)
        os.replace(tmp, self.tokens_path)

    # ---- custom roles (PolicyRules), kept in <state-dir>/roles.json across restarts
    def load_roles(self):
        self.custom_roles = {}
        try:
            with open(self.roles_path) as f:
                roles = json.load(f).get("roles") or {}
        except (OSError, ValueError, AttributeError):
            return
        self.add_roles(roles, save=False)

    def add_roles(self, roles, save=True):
        names = define_roles(roles)
        self.custom_roles.update({n: roles[n] for n in names})
        if save:
            tmp = self.roles_path + f".tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump({"roles": self.custom_roles}, f)
            os.replace(tmp, self.roles_path)
        return names

    # ---- registry
    def res(self, group, version, plural):
        return self.resources.get((group, version, plural))

    def resources_in(self, group, version):
        return [r for (g, v, _), r in sorted(self.resources.items()) if g == group and v == version]

    def groups(self):
        """Ordered {group: [versions]} excluding the core group."""
        out = collections.OrderedDict()
        for (g, v, _) in sorted(self.resources):
            if g and v not in out.setdefault(g, []):
                out[g].append(v)
        return out

    def register_crd(self, crd):
        name = crd["metadata"]["name"]
        self.unregister_crd(name)
        spec = crd["spec"]
        names = spec["names"]
        for ver in spec["versions"]:
            if not ver.get("served"):
                continue
            r = Resource(spec["group"], ver["name"], names["plural"], names["kind"], spec["scope"] == "Namespaced",
                         names.get("singular") or names["kind"].lower(), names.get("shortNames") or [],
                         names.get("categories") or [], status="status" in (ver.get("subresources") or {}),
                         custom=True, schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
                         columns=ver.get("additionalPrinterColumns"), list_kind=names.get("listKind"), crd=name)
            self.resources[(r.group, r.version, r.plural)] = r

    def unregister_crd(self, name):
        for k in [k for k, r in self.resources.items() if r.crd == name]:
            del self.resources[k]

    # ---- bookkeeping
    def bump(self):
        self.rv += 1
        return str(self.rv)

    def emit(self, typ, res, obj):
        if len(self.history) == self.history.maxlen:
            self.floor = self.history[0][0]
        self.history.append((int(obj["metadata"]["resourceVersion"]), typ, res.skey, copy.deepcopy(obj)))
        self.cond.notify_all()

    def out(self, res, obj, in_list=False):
        o = copy.deepcopy(obj)
        if in_list and not res.custom:
            o.pop("apiVersion", None)
            o.pop("kind", None)
        else:
            o["apiVersion"], o["kind"] = res.gv, res.kind
        return o

    def ns_exists(self, ns):
        return (None, ns) in self.objects[("", "namespaces")]

    # ---- validation
    def validate(self, res, obj, q):
        """Returns warnings; raises ApiError on invalid objects."""
        md = obj.get("metadata")
        name = md.get("name", "")
        for f in ("annotations", "labels"):
            m = md.get(f)
            if m is None:
                continue
            if not isinstance(m, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
                raise bad_request(f"{res.kind} in version \"{res.version}\" cannot be handled as a {res.kind}: "
                                  f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{f} of type "
                                  "map[string]string")
        rx, what = (DNS1123_LABEL, "RFC 1123 label") if res.plural == "namespaces" else (DNS1123_SUBDOMAIN, "RFC 1123 subdomain")
        if not rx.match(name) or len(name) > (63 if res.plural == "namespaces" else 253):
            raise invalid(res, name, [("metadata.name", f'Invalid value: "{name}": a lowercase {what} must consist '
                                       "of lower case alphanumeric characters, '-' or '.', and must start and end "
                                       "with an alphanumeric character")])
        warnings = []
        if res.custom and res.schema:
            errors, unknown = [], []
            mode = q.get("fieldValidation") or "Warn"   # the real default
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            props = dict(res.schema.get("properties") or {})
            for k in ("apiVersion", "kind", "metadata"):
                props.pop(k, None)
            root = dict(res.schema, properties=props)
            schema_check(root, body, "", errors, unknown, prune=(mode != "Strict"))
            if unknown and mode == "Strict":
                raise bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                  "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown))
            for k in list(obj):
                if k not in ("apiVersion", "kind", "metadata") and k not in body:
                    del obj[k]
            if errors:
                raise invalid(res, name, errors)
            if unknown and mode == "Warn":
                warnings = [f'unknown field "{u}"' for u in unknown]
        if res.plural == "pods" and not res.group:
            ctrs = (obj.get("spec") or {}).get("containers")
            if not isinstance(ctrs, list) or not ctrs:
                raise invalid(res, name, [("spec.containers", "Required value")])
            for i, c in enumerate(ctrs):
                for f in ("name", "image"):
                    if not isinstance(c, dict) or not c.get(f):
                        raise invalid(res, name, [(f"spec.containers[{i}].{f}", "Required value")])
        if res.plural == "events" and not res.group:
            io_ns = (obj.get("involvedObject") or {}).get("namespace")
            if io_ns and io_ns != md.get("namespace"):
                raise invalid(res, name, [("involvedObject.namespace",
                                           f'Invalid value: "{io_ns}": does not match event.namespace')])
        if res.plural == "customresourcedefinitions":
            self.validate_crd(res, obj)
        return warnings

    def validate_crd(self, res, crd):
        name = crd["metadata"]["name"]
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        errs = []
        if not spec.get("group"):
            errs.append(("spec.group", "Required value"))
        if not names.get("plural"):
            errs.append(("spec.names.plural", "Required value"))
        if not names.get("kind"):
            errs.append(("spec.names.kind", "Required value"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            errs.append(("spec.scope", f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"'))
        if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
            errs.append(("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
        vers = spec.get("versions")
        if not isinstance(vers, list) or not vers:
            errs.append(("spec.versions", "Invalid value: null: must have exactly one version marked as storage version"))
        else:
            if sum(1 for v in vers if isinstance(v, dict) and v.get("storage")) != 1:
                errs.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
            for i, v in enumerate(vers):
                if not isinstance(v, dict) or not v.get("name"):
                    errs.append((f"spec.versions[{i}].name", "Required value"))
                elif not ((v.get("schema") or {}).get("openAPIV3Schema")):
                    errs.append((f"spec.versions[{i}].schema.openAPIV3Schema", "Required value: schemas are required"))
        if errs:
            raise invalid(res, name, errs)

    # ---- CRUD
    def _defaults_on_create(self, res, obj):
        md = obj["metadata"]
        if res.custom or res.plural == "customresourcedefinitions":
            md["generation"] = 1
        if res.plural == "namespaces" and not res.group:
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
        elif res.plural == "pods" and not res.group:
            spec = obj["spec"]
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("schedulerName", "default-scheduler")
            # test-server convenience: a status supplied on create is kept (a real apiserver resets it)
            if not obj.get("status"):
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif res.plural == "customresourcedefinitions":
            self._crd_status(obj, None)
        elif res.status:
            obj.pop("status", None)

    def _crd_status(self, crd, old):
        names = crd["spec"]["names"]
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
        storage = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
        prev = (old or {}).get("status") or {}
        stored = list(prev.get("storedVersions") or [])
        for s in storage:
            if s not in stored:
                stored.append(s)
        ts = now_rfc3339()
        conds = prev.get("conditions") or [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": ts, "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": ts, "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"}]
        crd["status"] = {"acceptedNames": copy.deepcopy(names), "storedVersions": stored, "conditions": conds}

    def check_body_header(self, res, obj):
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if kind and kind != res.kind:
            raise bad_request(f'the kind in the data ({kind}) does not match the expected kind ({res.kind})')
        if av and av != res.gv:
            raise bad_request(f'the API version in the data ({av}) does not match the expected API version ({res.gv})')
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise bad_request("metadata must be an object")
        return md

    def create(self, res, ns, obj, q):
        md = self.check_body_header(res, obj)
        dry = q.get("dryRun") == "All"
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        name = md.get("name") or ""
        if not name:
            raise invalid(res, "", [("metadata.name", "Required value: name or generateName is required")])
        if res.namespaced:
            if md.get("namespace") and md["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        obj["apiVersion"], obj["kind"] = res.gv, res.kind
        warnings = self.validate(res, obj, q)
        with self.lock:
            if res.namespaced and not self.ns_exists(ns):
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
            store = self.objects[res.skey]
            if (md.get("namespace"), name) in store:
                raise ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', details_for(res, name))
            md["uid"] = md.get("uid") or str(uuid.uuid4())   # test-server convenience: a supplied uid is kept
            md["creationTimestamp"] = now_rfc3339()
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation", "managedFields", "selfLink"):
                md.pop(k, None)
            self._defaults_on_create(res, obj)
            if dry:
                md["resourceVersion"] = str(self.rv)
                return self.out(res, obj), warnings
            md["resourceVersion"] = self.bump()
            store[(md.get("namespace"), name)] = obj
            if res.plural == "customresourcedefinitions":
                self.register_crd(obj)
            self.emit("ADDED", res, obj)
            self.save()
            return self.out(res, obj), warnings

    def get(self, res, ns, name):
        with self.lock:
            obj = self.objects[res.skey].get((ns if res.namespaced else None, name))
            if obj is None:
                raise not_found(res, name)
            return obj

    def list(self, res, ns, q):
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"))
        with self.lock:
            items = [o for (ons, _), o in sorted(self.objects[res.skey].items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
                     if (ns is None or ons == ns) and label_match(lsel, o) and field_match(fsel, o)]
            return [copy.deepcopy(o) for o in items], str(self.rv)

    def update(self, res, ns, name, body, sub, q, patch_base=None):
        """PUT semantics (also used by PATCH with the patched object). Returns (status code, object, warnings)."""
        md = self.check_body_header(res, body)
        dry = q.get("dryRun") == "All"
        with self.lock:
            cur = self.get(res, ns, name)
            cmd = cur["metadata"]
            if md.get("name") and md["name"] != name:
                raise bad_request(f"the name of the object ({md['name']}) does not match the name on the URL ({name})")
            if res.namespaced and md.get("namespace") and md["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            if md.get("resourceVersion") and md["resourceVersion"] != cmd["resourceVersion"]:
                raise conflict(res, name)
            if md.get("uid") and md["uid"] != cmd["uid"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                               f'Precondition failed: UID in precondition: {md["uid"]}, UID in object meta: {cmd["uid"]}',
                               details_for(res, name))
            new = copy.deepcopy(body)
            if sub == "status":
                st = new.get("status")
                labels, annotations = md.get("labels"), md.get("annotations")
                new = copy.deepcopy(cur)
                if st is None:
                    new.pop("status", None)
                else:
                    new["status"] = st
                if res.plural == "pods" and not res.group:
                    # podStatusStrategy: labels and annotations are taken from the request
                    for f, v in (("labels", labels), ("annotations", annotations)):
                        if v is None:
                            new["metadata"].pop(f, None)
                        else:
                            new["metadata"][f] = v
            elif res.status:
                if "status" in cur:
                    new["status"] = copy.deepcopy(cur["status"])
                else:
                    new.pop("status", None)
            nmd = new.setdefault("metadata", {})
            nmd["name"] = name
            if res.namespaced:
                nmd["namespace"] = ns
            for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in cmd:
                    nmd[k] = cmd[k]
                else:
                    nmd.pop(k, None)
            nmd["resourceVersion"] = cmd["resourceVersion"]
            new["apiVersion"], new["kind"] = res.gv, res.kind
            warnings = self.validate(res, new, q)
            if res.plural == "customresourcedefinitions":
                self._crd_status(new, cur)
            if res.custom or res.plural == "customresourcedefinitions":
                def spec_of(o):
                    return {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}
                if spec_of(new) != spec_of(cur):
                    nmd["generation"] = cmd.get("generation", 1) + 1
            if strip_volatile(new) == strip_volatile(cur):
                return 200, self.out(res, cur), warnings
            if dry:
                return 200, self.out(res, new), warnings
            nmd["resourceVersion"] = self.bump()
            self.objects[res.skey][(ns if res.namespaced else None, name)] = new
            if res.plural == "customresourcedefinitions":
                self.register_crd(new)
            self.emit("MODIFIED", res, new)
            if nmd.get("deletionTimestamp") and not nmd.get("finalizers"):
                self._remove(res, ns, name)
            self.save()
            return 200, self.out(res, new), warnings

    def patch(self, res, ns, name, raw, ctype, sub, q):
        ctype = (ctype or "").split(";")[0].strip().lower()
        accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        if ctype == "application/strategic-merge-patch+json" and res.custom:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: {accepted}")
        if ctype == "application/apply-patch+yaml":
            raise ApiError(415, "UnsupportedMediaType", "server-side apply is not supported by the Plexus test server")
        if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                         "application/json-patch+json"):
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"application/json-patch+json, application/merge-patch+json, "
                           f"application/strategic-merge-patch+json, application/apply-patch+yaml")
        try:
            p = json.loads(raw or b"null")
        except ValueError as e:
            raise bad_request(f"error decoding patch: {e}")
        with self.lock:
            cur = self.out(res, self.get(res, ns, name))
            try:
                if ctype == "application/json-patch+json":
                    new = json_patch(cur, p)
                elif not isinstance(p, dict):
                    raise bad_request("the patch must be a JSON object")
                elif ctype == "application/merge-patch+json":
                    new = merge_patch(cur, p)
                else:
                    new = strategic_merge(cur, p)
            except JsonPatchError as e:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}")
            if not isinstance(new, dict):
                raise bad_request("the patched object is not a JSON object")
            nrv = (new.get("metadata") or {}).get("resourceVersion")
            if nrv and nrv != cur["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            return self.update(res, ns, name, new, sub, q)

    def _remove(self, res, ns, name):
        key = (ns if res.namespaced else None, name)
        obj = self.objects[res.skey].pop(key, None)
        if obj is None:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self.bump()
        self.emit("DELETED", res, obj)
        if res.plural == "namespaces" and not res.group:
            for skey, objs in list(self.objects.items()):
                for (ons, oname) in [k for k in objs if k[0] == name]:
                    r = self.any_res(skey)
                    if r:
                        self._remove(r, ons, oname)
                    else:
                        objs.pop((ons, oname), None)
        if res.plural == "customresourcedefinitions":
            spec = obj["spec"]
            r = self.any_res((spec["group"], spec["names"]["plural"]))
            if r:
                for (ons, oname) in list(self.objects[r.skey]):
                    self._remove(r, ons, oname)
            self.objects.pop((spec["group"], spec["names"]["plural"]), None)
            self.unregister_crd(name)
        return obj

    def any_res(self, skey):
        for r in self.resources.values():
            if r.skey == skey:
                return r
        return None

    def delete(self, res, ns, name, opts, q):
        dry = q.get("dryRun") == "All" or "All" in (opts.get("dryRun") or [])
        grace = q.get("gracePeriodSeconds", opts.get("gracePeriodSeconds"))
        with self.lock:
            cur = self.get(res, ns, name)
            cmd = cur["metadata"]
            pre = opts.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != cmd["uid"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                               f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: {cmd["uid"]}',
                               details_for(res, name))
            if pre.get("resourceVersion") and pre["resourceVersion"] != cmd["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                               f'Precondition failed: ResourceVersion in precondition: {pre["resourceVersion"]}, '
                               f'ResourceVersion in object meta: {cmd["resourceVersion"]}', details_for(res, name))
            if dry:
                return self.out(res, cur)
            graceful = (res.plural == "pods" and not res.group and self.args.pod_grace > 0
                        and (cur.get("spec") or {}).get("nodeName") and str(grace) != "0")
            if cmd.get("finalizers") or graceful:
                if not cmd.get("deletionTimestamp"):
                    new = copy.deepcopy(cur)
                    new["metadata"]["deletionTimestamp"] = now_rfc3339()
                    new["metadata"]["deletionGracePeriodSeconds"] = int(grace) if grace not in (None, "") else 30
                    new["metadata"]["resourceVersion"] = self.bump()
                    self.objects[res.skey][(ns if res.namespaced else None, name)] = new
                    self.emit("MODIFIED", res, new)
                    self.save()
                    cur = new
                    if graceful and not cmd.get("finalizers"):
                        t = threading.Timer(self.args.pod_grace, self._delayed_remove, (res, ns, name, cur["metadata"]["uid"]))
                        t.daemon = True
                        t.start()
                return self.out(res, cur)
            obj = self._remove(res, ns, name)
            self.save()
            if res.plural == "namespaces" and not res.group:
                obj["status"] = {"phase": "Terminating"}
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            if res.custom:
                return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": dict(details_for(res, name), uid=obj["metadata"]["uid"])}
            return self.out(res, obj)

    def _delayed_remove(self, res, ns, name, uid):
        with self.lock:
            cur = self.objects[res.skey].get((ns, name))
            if cur and cur["metadata"]["uid"] == uid:
                self._remove(res, ns, name)
                self.save()

    # ---- discovery / openapi
    def version(self):
        minor = str(self.args.minor)
        return {"major": "1", "minor": minor, "gitVersion": f"v1.{minor}.0-plexus-test",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.4", "compiler": "gc",
                "platform": "linux/amd64"}

    def resource_list(self, group, version):
        rl = []
        for r in self.resources_in(group, version):
            e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                 "verbs": ALL_VERBS}
            if r.short:
                e["shortNames"] = r.short
            if r.categories:
                e["categories"] = r.categories
            rl.append(e)
            if r.status:
                rl.append({"name": r.plural + "/status", "singularName": "", "namespaced": r.namespaced,
                           "kind": r.kind, "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version,
                "resources": rl}

    def api_group(self, g, versions):
        vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": vs, "preferredVersion": vs[0]}

    def openapi_doc(self, key):
        if key == "api/v1":
            group, version = "", "v1"
        else:
            parts = key.split("/")
            if len(parts) != 3 or parts[0] != "apis":
                return None
            group, version = parts[1], parts[2]
        rs = self.resources_in(group, version)
        if not rs and key != "api/v1":
            return None
        paths = {}
        prefix = f"/apis/{group}/{version}" if group else "/api/v1"
        for r in rs:
            p = f"{prefix}/namespaces/{{namespace}}/{r.plural}/{{name}}" if r.namespaced else f"{prefix}/{r.plural}/{{name}}"
            gvk = {"group": r.group, "version": r.version, "kind": r.kind}
            paths[p] = {"patch": {"operationId": f"patch{r.kind}", "x-kubernetes-action": "patch",
                                  "x-kubernetes-group-version-kind": gvk,
                                  "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                                                 {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                                                 {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}],
                                  "responses": {"200": {"description": "OK"}}}}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": f"v1.{self.args.minor}.0"},
                "components": {"schemas": {}}, "paths": paths}

    def openapi_index(self):
        keys = ["api/v1"] + [f"apis/{g}/{v}" for g, vs in self.groups().items() for v in vs]
        idx = {}
        for k in keys:
            h = hashlib.sha512(json.dumps(self.openapi_doc(k), sort_keys=True).encode()).hexdigest().upper()
            idx[k] = {"serverRelativeURL": f"/openapi/v3/{k}?hash={h}"}
        return {"paths": idx}

    # ---- tables
    def table(self, res, objs, rv, tv, include="Metadata", with_defs=True):
        cols = [("Name", "string", "name", "Name must be unique within a namespace.", 0)]
        now = time.time()
        if res.plural == "pods" and not res.group:
            cols += [("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
                     ("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
                     ("Restarts", "string", "", "The number of times the containers in this pod have been restarted.", 0),
                     ("Age", "string", "", "CreationTimestamp", 0),
                     ("IP", "string", "", "IP address allocated to the pod.", 1),
                     ("Node", "string", "", "Name of the node assigned to this pod.", 1)]

            def cells(o):
                st, sp = o.get("status") or {}, o.get("spec") or {}
                css = st.get("containerStatuses") or []
                ready = sum(1 for c in css if c.get("ready"))
                phase = "Terminating" if o["metadata"].get("deletionTimestamp") else (st.get("reason") or st.get("phase") or "Pending")
                return [o["metadata"]["name"], f"{ready}/{len(sp.get('containers') or [])}", phase,
                        str(sum(int(c.get("restartCount") or 0) for c in css)), age_of(o),
                        st.get("podIP") or "<none>", sp.get("nodeName") or "<none>"]
        elif res.plural == "namespaces" and not res.group:
            cols += [("Status", "string", "", "The status of the namespace", 0), ("Age", "string", "", "CreationTimestamp", 0)]

            def cells(o):
                return [o["metadata"]["name"], (o.get("status") or {}).get("phase", "Active"), age_of(o)]
        elif res.plural == "events":
            cols = [("Last Seen", "string", "", "Time of the last occurrence", 0),
                    ("Type", "string", "", "Type of the event", 0), ("Reason", "string", "", "Reason", 0),
                    ("Object", "string", "", "Involved object", 0), ("Message", "string", "", "Message", 0)]

            def cells(o):
                io = o.get("involvedObject") or o.get("regarding") or {}
                last = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp") or ""
                t = parse_time(last)
                return [human_duration(now - t) if t else "<unknown>", o.get("type", ""), o.get("reason", ""),
                        f"{(io.get('kind') or '').lower()}/{io.get('name', '')}", o.get("message") or o.get("note", "")]
        elif res.plural == "customresourcedefinitions":
            cols += [("Created At", "date", "", "CreationTimestamp", 0)]

            def cells(o):
                return [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")]
        else:
            extra = list(res.columns or [])
            if not extra:
                extra = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
            for c in extra:
                cols.append((c["name"], "string" if c.get("type") == "date" else c.get("type", "string"),
                             c.get("format", ""), c.get("description", ""), c.get("priority", 0)))

            def cells(o):
                row = [o["metadata"]["name"]]
                for c in extra:
                    v = get_path(o, c.get("jsonPath", "").lstrip("."))
                    if c.get("type") == "date" and isinstance(v, str):
                        t = parse_time(v)
                        v = human_duration(now - t) if t else v
                    row.append(v if v is None or isinstance(v, (int, float, bool)) else str(v))
                return row
        t = {"kind": "Table", "apiVersion": f"meta.k8s.io/{tv}", "metadata": {"resourceVersion": rv}}
        if with_defs:
            t["columnDefinitions"] = [{"name": n, "type": ty, "format": f, "description": d, "priority": p}
                                      for n, ty, f, d, p in cols]
        else:
            t["columnDefinitions"] = None
        rows = []
        for o in objs:
            row = {"cells": cells(o)}
            if include == "Object":
                row["object"] = self.out(res, o)
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": copy.deepcopy(o["metadata"])}
            rows.append(row)
        t["rows"] = rows
        return t


def load_manifest(path):
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError:
        import yaml  # optional, only for YAML manifests given to --preinstall-crd
        return yaml.safe_load(text)


# --------------------------------------------------------------------------------------------- faults


class Faults:
    ACTIONS = (None, "delay", "status", "reset", "close", "truncate")

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.next_id = 1

    def add(self, spec):
        if not isinstance(spec, dict):
            raise bad_request("a fault rule must be a JSON object")
        action = spec.get("action")
        if action not in self.ACTIONS:
            raise bad_request(f"unknown action {action!r}; use one of delay, status, reset, close, truncate")
        if action == "status" and not isinstance(spec.get("code"), int):
            raise bad_request("action status needs an integer code")
        methods = spec.get("method") or "*"
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",")]
        try:
            rule = {"id": 0, "methods": [m.upper() for m in methods],
                    "path_re": re.compile(spec["path"]) if spec.get("path") else None,
                    "query_re": re.compile(spec["query"]) if spec.get("query") else None,
                    "ua_re": re.compile(spec["user_agent"]) if spec.get("user_agent") else None,
                    "spec": spec, "seen": 0, "fired": 0}
        except re.error as e:
            raise bad_request(f"bad regular expression: {e}")
        with self.lock:
            rule["id"] = self.next_id
            self.next_id += 1
            self.rules.append(rule)
        return rule["id"]

    def describe(self):
        with self.lock:
            out = []
            for r in self.rules:
                cnt = r["spec"].get("count")
                out.append(dict(r["spec"], id=r["id"], seen=r["seen"], fired=r["fired"],
                                remaining=None if cnt is None else max(cnt - r["fired"], 0)))
            return out

    def remove(self, rid=None):
        with self.lock:
            self.rules = [] if rid is None else [r for r in self.rules if r["id"] != rid]

    def match(self, method, path, query, ua):
        """Returns (delay seconds, terminal rule spec or None, [ids fired])."""
        delay, terminal, fired = 0.0, None, []
        with self.lock:
            for r in self.rules:
                s = r["spec"]
                if "*" not in r["methods"] and method not in r["methods"]:
                    continue
                if r["path_re"] and not r["path_re"].search(path):
                    continue
                if s.get("path_prefix") and not path.startswith(s["path_prefix"]):
                    continue
                if r["query_re"] and not r["query_re"].search(query):
                    continue
                if r["ua_re"] and not r["ua_re"].search(ua):
                    continue
                r["seen"] += 1
                if r["seen"] <= int(s.get("skip") or 0):
                    continue
                if s.get("count") is not None and r["fired"] >= int(s["count"]):
                    continue
                r["fired"] += 1
                fired.append(r["id"])
                delay += float(s.get("delay_ms") or 0) / 1000.0
                if s.get("action") not in (None, "delay"):
                    terminal = dict(s, id=r["id"])
                    break
        return delay, terminal, fired


# --------------------------------------------------------------------------------------------- request log


class RequestLog:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.path = path
        self.seq = 0
        self.items = []
        try:   # continue the sequence of a previous run (restart with the same state dir)
            with open(path, "rb") as f:
                f.seek(max(os.path.getsize(path) - 65536, 0))
                tail = [ln for ln in f.read().splitlines() if ln.strip()]
            self.seq = int(json.loads(tail[-1])["seq"]) if tail else 0
        except (OSError, ValueError, KeyError, IndexError):
            pass
        self.f = open(path, "a", buffering=1)

    def add(self, entry):
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            self.items.append(entry)
            if len(self.items) > 100000:
                del self.items[:50000]
            self.f.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self.f.flush()

    def since(self, seq):
        with self.lock:
            return [e for e in self.items if e["seq"] > seq], self.seq

    def clear(self):
        with self.lock:
            self.items = []
            self.f.truncate(0)
            self.f.seek(0)


# --------------------------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "plexus-test-apiserver/1"
    sys_version = ""
    timeout = 600   # idle keep-alive timeout

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        srv = self.server
        with srv.conn_lock:
            srv.conn_seq += 1
            self.conn_id = srv.conn_seq
        self.cert_user = None
        try:
            pc = self.connection.getpeercert()
        except Exception:
            pc = None
        if pc:
            subj = {k: v for rdn in pc.get("subject", ()) for k, v in rdn}
            cn, org = subj.get("commonName", ""), subj.get("organizationName", "")
            role = "admin" if org == "system:masters" else (org if org in ROLES else "none")
            self.cert_user = (cn, role)

    def finish(self):
        try:
            super().finish()
        except Exception:
            pass

    def do_GET(self):
        self.handle_any()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # ---- plumbing
    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def log_req(self, status, **extra):
        if self.logged or self.is_control:
            return
        self.logged = True
        e = {"ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "time": time.time(), "method": self.command, "path": self.url_path, "query": self.url_query,
             "status": status, "user_agent": self.headers.get("User-Agent", ""), "user": self.user_name,
             "accept": self.headers.get("Accept", ""), "content_type": self.headers.get("Content-Type", ""),
             "conn": self.conn_id, "duration_ms": round((time.monotonic() - self.t0) * 1000, 3)}
        if self.fault_ids:
            e["faults"] = self.fault_ids
        if self.server.args.log_bodies and self.body:
            try:
                e["body"] = json.loads(self.body)
            except ValueError:
                e["body"] = self.body[:65536].decode("utf-8", "replace")
        e.update(extra)
        self.server.reqlog.add(e)

    def head_bytes(self, code, headers):
        lines = [f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase if code in http.HTTPStatus._value2member_map_ else 'Status'}",
                 f"Date: {self.date_time_string()}", "Cache-Control: no-cache, private",
                 f"Audit-Id: {uuid.uuid4()}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send_bytes(self, code, body, ctype="application/json", headers=None, **logextra):
        self.log_req(code, **logextra)
        hs = [("Content-Type", ctype), ("Content-Length", str(len(body)))] + list(headers or [])
        data = self.head_bytes(code, hs) + (body if self.command != "HEAD" else b"")
        self.wfile.write(data)

    def send_obj(self, code, obj, ctype="application/json", headers=None):
        self.send_bytes(code, dumps(obj), ctype, headers)

    def send_error_obj(self, err):
        hs = [(k, str(v)) for k, v in (err.headers or {}).items()]
        self.send_obj(err.code, err.body(), headers=hs)

    # ---- main dispatch
    def handle_any(self):
        self.t0 = time.monotonic()
        self.logged, self.user_name, self.fault_ids, self.body = False, None, None, b""
        u = urlsplit(self.path)
        self.url_path, self.url_query = u.path, u.query
        self.is_control = u.path.startswith("/_test/") or u.path == "/_test"
        q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        try:
            self.body = self.read_body()
        except Exception:
            self.close_connection = True
            return self.send_error_obj(bad_request("could not read the request body"))
        try:
            if self.is_control:
                return self.control(u.path, q)
            delay, rule, fired = self.server.faults.match(self.command, u.path, u.query,
                                                           self.headers.get("User-Agent", ""))
            self.fault_ids = fired or None
            if delay:
                time.sleep(delay)
            if rule:
                return self.apply_fault(rule)
            self.route(u.path, q)
        except ApiError as e:
            self.send_error_obj(e)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # pragma: no cover - bug in the fake server
            traceback.print_exc()
            sys.stderr.flush()
            if not self.logged:
                self.send_error_obj(ApiError(500, "InternalError", f"Internal error occurred: {type(e).__name__}: {e}"))

    def apply_fault(self, rule):
        action = rule["action"]
        if action == "status":
            code = int(rule["code"])
            reason, msg = DEFAULT_REASONS.get(code, ("InternalError", f"injected status {code}"))
            reason, msg = rule.get("reason", reason), rule.get("message", msg)
            headers = [(k, str(v)) for k, v in (rule.get("headers") or {}).items()]
            details = {}
            if rule.get("retry_after") is not None:
                headers.append(("Retry-After", str(rule["retry_after"])))
                details["retryAfterSeconds"] = int(rule["retry_after"])
            if "body" in rule:
                b = rule["body"]
                body = b.encode() if isinstance(b, str) else dumps(b)
                return self.send_bytes(code, body, rule.get("content_type", "application/json"), headers,
                                       fault=action)
            err = ApiError(code, reason, msg, details or None)
            return self.send_bytes(code, dumps(err.body()), rule.get("content_type", "application/json"), headers,
                                   fault=action)
        self.close_connection = True
        if action == "truncate":
            self.log_req(200, fault=action)
            body = b'{"kind":"Status","apiVe'
            self.wfile.write(self.head_bytes(200, [("Content-Type", "application/json"),
                                                   ("Content-Length", "4096")]) + body)
        else:
            self.log_req(0, fault=action)
        try:
            if action == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    def authenticate(self):
        hdr = self.headers.get("Authorization") or ""
        if hdr[:7].lower() == "bearer ":
            u = self.server.state.tokens().get(hdr[7:].strip())
            if u:
                return u
        if self.cert_user:
            return self.cert_user
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def wants_table(self):
        for part in (self.headers.get("Accept") or "").split(","):
            bits = [b.strip() for b in part.split(";")]
            params = dict(b.split("=", 1) for b in bits[1:] if "=" in b)
            if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
                return params["v"] if self.server.args.table else None
            if bits[0] in ("application/json", "*/*", "application/*") and "as" not in params:
                return None
        return None

    def route(self, path, q):
        st = self.server.state
        if path in ("/healthz", "/livez", "/readyz"):
            return self.send_bytes(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return self.send_obj(200, st.version())
        user, role = self.authenticate()
        self.user_name = user
        segs = [unquote(s) for s in path.split("/") if s]
        if self.command not in ("GET", "HEAD") and (not segs or segs[0] not in ("api", "apis")):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if not segs:
            return self.send_obj(200, {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/openapi/v3", "/version"]})
        if segs[0] == "openapi":
            return self.route_openapi(segs)
        with st.lock:
            if segs == ["api"]:
                port = self.server.server_address[1]
                return self.send_obj(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}]})
            if segs == ["apis"]:
                return self.send_obj(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                           "groups": [st.api_group(g, vs) for g, vs in st.groups().items()]})
            if segs[0] == "apis" and len(segs) == 2:
                vs = st.groups().get(segs[1])
                if not vs:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return self.send_obj(200, st.api_group(segs[1], vs))
            if segs[0] == "api" and len(segs) >= 2:
                group, version, rest = "", segs[1], segs[2:]
            elif segs[0] == "apis" and len(segs) >= 3:
                group, version, rest = segs[1], segs[2], segs[3:]
            else:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if not st.resources_in(group, version):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if not rest:
                if self.command not in ("GET", "HEAD"):
                    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
                return self.send_obj(200, st.resource_list(group, version))
            ns = None
            if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
                ns, rest = rest[1], rest[2:]
            if len(rest) > 3:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
            res = st.res(group, version, plural)
            if res is None or (ns is not None and not res.namespaced) or (res.namespaced and name and ns is None):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if sub is not None and not (sub == "status" and res.status):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
        m = self.command
        if name is None:
            verb = {"GET": "watch" if parse_bool(q.get("watch", "")) else "list", "HEAD": "list", "POST": "create",
                    "DELETE": "deletecollection"}.get(m)
        else:
            verb = {"GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(m)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        rname = res.plural + (f"/{sub}" if sub else "")
        if not role_allows(role, verb, group, rname, name=name, ns=ns, user=user, state=st):
            who = f'{res.qualified} "{name}"' if name else res.qualified
            where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
            raise ApiError(403, "Forbidden", f'{who} is forbidden: User "{user}" cannot {verb} resource "{rname}" in '
                                             f'API group "{group}" {where}', details_for(res, name))
        self.serve_resource(res, verb, ns, name, sub, q)

    def route_openapi(self, segs):
        st = self.server.state
        mode = self.server.args.openapi
        if segs == ["openapi", "v2"]:
            if not self.server.args.openapi_v2_pb:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            ver = f"v1.{self.server.args.minor}.0".encode()
            info = b"\x0a\x0aKubernetes\x12" + bytes([len(ver)]) + ver
            doc = b"\x0a\x032.0\x12" + bytes([len(info)]) + info + b"\x42\x00"
            return self.send_bytes(200, doc, "application/octet-stream")
        if mode == "none" or len(segs) < 2 or segs[1] != "v3":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        with st.lock:
            if len(segs) == 2:
                return self.send_obj(200, st.openapi_index())
            doc = st.openapi_doc("/".join(segs[2:]))
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self.send_obj(200, doc)

    def parse_json_body(self, res):
        ct = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        if ct == "application/vnd.kubernetes.protobuf":
            return decode_protobuf(self.body, res)
        if ct not in ("application/json", "*/*", "", "application/x-www-form-urlencoded", "text/plain"):
            raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                                                        f'accepted media types include: application/json, application/yaml')
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise bad_request(f"couldn't get version/kind; json parse error: {e}")

    def serve_resource(self, res, verb, ns, name, sub, q):
        st = self.server.state
        tv = self.wants_table()
        include = q.get("includeObject", "Metadata")
        if verb == "get":
            obj = st.get(res, ns, name)
            if tv:
                return self.send_obj(200, st.table(res, [obj], obj["metadata"]["resourceVersion"], tv, include),
                                     TABLE_CT.format(v=tv))
            return self.send_obj(200, st.out(res, obj))
        if verb == "list":
            items, rv = st.list(res, ns, q)
            if tv:
                return self.send_obj(200, st.table(res, items, rv, tv, include), TABLE_CT.format(v=tv))
            return self.send_obj(200, {"kind": res.list_kind, "apiVersion": res.gv, "metadata": {"resourceVersion": rv},
                                       "items": [st.out(res, o, in_list=True) for o in items]})
        if verb == "watch":
            return self.watch(res, ns, q, tv, include)
        if verb == "create":
            obj, warn = st.create(res, ns, self.parse_json_body(res), q)
            return self.send_obj(201, obj, headers=self.warning_headers(warn))
        if verb == "update":
            code, obj, warn = st.update(res, ns, name, self.parse_json_body(res), sub, q)
            return self.send_obj(code, obj, headers=self.warning_headers(warn))
        if verb == "patch":
            code, obj, warn = st.patch(res, ns, name, self.body, self.headers.get("Content-Type"), sub, q)
            return self.send_obj(code, obj, headers=self.warning_headers(warn))
        if verb == "delete":
            opts = json.loads(self.body) if self.body.strip() else {}
            return self.send_obj(200, st.delete(res, ns, name, opts if isinstance(opts, dict) else {}, q))
        if verb == "deletecollection":
            items, _ = st.list(res, ns, q)
            for o in items:
                try:
                    st.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], {}, q)
                except ApiError:
                    pass
            return self.send_obj(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @staticmethod
    def warning_headers(warnings):
        return [("Warning", f'299 - "{w}"') for w in warnings or []]

    # ---- watch
    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def client_gone(self):
        try:
            if self.connection.pending():
                return False
            r, _, _ = select.select([self.connection], [], [], 0)
            if r:
                return self.connection.recv(1) == b""
        except (OSError, ValueError, ssl.SSLError):
            return True
        return False

    def watch(self, res, ns, q, tv, include):
        st = self.server.state
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"))
        rvq = q.get("resourceVersion", "")
        try:
            timeout = float(q.get("timeoutSeconds") or self.server.args.watch_timeout)
        except ValueError:
            raise bad_request("invalid timeoutSeconds")
        timeout = min(timeout, self.server.args.watch_timeout)
        deadline = time.monotonic() + timeout
        send_initial = parse_bool(q.get("sendInitialEvents", ""))

        def matches(o):
            return (ns is None or o["metadata"].get("namespace") == ns) and label_match(lsel, o) and field_match(fsel, o)

        with st.lock:
            initial, expired = [], False
            if rvq in ("", "0") or send_initial:
                initial = [o for (ons, _), o in sorted(st.objects[res.skey].items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
                           if matches(o)]
                initial = [copy.deepcopy(o) for o in initial]
                last = st.rv
            else:
                try:
                    last = int(rvq)
                except ValueError:
                    raise bad_request(f"invalid resourceVersion {rvq!r}")
                expired = last < st.floor
        ct = TABLE_CT.format(v=tv) if tv else "application/json"
        self.log_req(200, watch=True)
        self.wfile.write(self.head_bytes(200, [("Content-Type", ct), ("Transfer-Encoding", "chunked")]))
        first = [True]

        def send(typ, obj):
            if tv and typ != "ERROR" and typ != "BOOKMARK":
                o = st.table(res, [obj], obj["metadata"]["resourceVersion"], tv, include, with_defs=first[0])
                first[0] = False
            elif typ in ("ERROR", "BOOKMARK"):
                o = obj
            else:
                o = st.out(res, obj)
            self.write_chunk(dumps({"type": typ, "object": o}))

        try:
            if expired:
                send("ERROR", ApiError(410, "Expired", f"too old resource version: {rvq} ({st.floor})").body())
            else:
                for o in initial:
                    send("ADDED", o)
                if send_initial:
                    send("BOOKMARK", {"kind": res.kind, "apiVersion": res.gv, "metadata": {
                        "resourceVersion": str(last), "annotations": {"k8s.io/initial-events-end": "true"}}})
                while time.monotonic() < deadline:
                    with st.cond:
                        if last < st.floor:
                            evs, gone = [], True
                        else:
                            gone = False
                            evs = [(rv, t, o) for rv, t, skey, o in st.history if rv > last and skey == res.skey]
                            if not evs:
                                st.cond.wait(min(1.0, max(deadline - time.monotonic(), 0.01)))
                    if gone:
                        send("ERROR", ApiError(410, "Expired", f"too old resource version: {last} ({st.floor})").body())
                        break
                    for rv, t, o in evs:
                        last = rv
                        if matches(o):
                            send(t, o)
                    if not evs and self.client_gone():
                        break
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, ssl.SSLError):
            pass
        self.close_connection = True

    # ---- control API (unauthenticated, loopback only, never logged nor faulted)
    def control(self, path, q):
        srv = self.server
        m = self.command
        parts = [p for p in path.split("/") if p][1:]

        def body():
            try:
                return json.loads(self.body or b"null")
            except ValueError:
                raise bad_request("invalid JSON")
        if parts == ["ping"]:
            return self.send_obj(200, {"ok": True, "pid": os.getpid(), "port": srv.server_address[1]})
        if parts == ["requests"]:
            if m == "GET":
                items, seq = srv.reqlog.since(int(q.get("since") or 0))
                return self.send_obj(200, {"items": items, "last": seq})
            if m == "DELETE":
                srv.reqlog.clear()
                return self.send_obj(200, {"ok": True})
        if parts and parts[0] == "faults":
            if len(parts) == 1 and m == "GET":
                return self.send_obj(200, {"items": srv.faults.describe()})
            if len(parts) == 1 and m == "POST":
                b = body()
                specs = b if isinstance(b, list) else (b.get("rules") if isinstance(b, dict) and "rules" in b else [b])
                return self.send_obj(201, {"ids": [srv.faults.add(s) for s in specs]})
            if m == "DELETE":
                srv.faults.remove(int(parts[1]) if len(parts) > 1 else None)
                return self.send_obj(200, {"ok": True})
        if parts == ["tokens"]:
            if m == "GET":
                toks = srv.state.tokens()
                return self.send_obj(200, {"tokens": [{"token": t, "user": u, "role": r} for t, (u, r) in toks.items()]})
            if m in ("PUT", "POST"):
                b = body()
                entries = b.get("tokens") if isinstance(b, dict) else None
                if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("token") for e in entries):
                    raise bad_request('expected {"tokens":[{"token":..,"user":..,"role":..}]}')
                for e in entries:
                    if e.get("role", "admin") not in ROLES:
                        raise bad_request(f"unknown role {e.get('role')!r}; roles: {', '.join(ROLES)}")
                srv.state.write_tokens(entries)
                return self.send_obj(200, {"ok": True})
        if parts == ["roles"]:
            if m == "GET":
                return self.send_obj(200, {"roles": srv.state.custom_roles})
            if m in ("PUT", "POST"):
                b = body()
                roles = b.get("roles") if isinstance(b, dict) else None
                if not isinstance(roles, dict):
                    raise bad_request('expected {"roles":{"<name>":[<PolicyRule>, ...]}}')
                try:
                    names = srv.state.add_roles(roles)
                except ValueError as e:
                    raise bad_request(str(e))
                return self.send_obj(200, {"ok": True, "roles": names})
        if parts == ["reload-cert"] and m == "POST":
            b = body() or {}
            srv.ctx.load_cert_chain(b["cert"], b["key"])
            return self.send_obj(200, {"ok": True})
        if parts == ["objects"] and m == "GET":
            with srv.state.lock:
                return self.send_obj(200, {"rv": srv.state.rv, "items": [
                    o for objs in srv.state.objects.values() for o in objs.values()]})
        raise ApiError(404, "NotFound", f"unknown control endpoint {m} {path}")


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, ctx, state, args):
        self.ctx, self.state, self.args = ctx, state, args
        self.faults = Faults()
        self.reqlog = RequestLog(os.path.join(args.state_dir, "requests.jsonl"))
        self.conn_lock = threading.Lock()
        self.conn_seq = 0
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def finish_request(self, request, client_address):
        # TLS handshake in the worker thread, so one stalled client cannot block accept()
        request.settimeout(15)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
        except (OSError, ssl.SSLError, ValueError):
            try:
                request.close()
            except OSError:
                pass
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass


# --------------------------------------------------------------------------------------------- PKI


def _openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr}")


def issue_cert(pki, name, subject, ext_lines, days=825):
    """Issue <pki>/<name>.{crt,key} signed by <pki>/ca.{crt,key}."""
    key, csr, crt = (os.path.join(pki, f"{name}.{e}") for e in ("key", "csr", "crt"))
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", subject)
    with tempfile.NamedTemporaryFile("w", suffix=".cnf", delete=False) as ext:
        ext.write("\n".join(ext_lines) + "\n")
    try:
        _openssl("x509", "-req", "-in", csr, "-CA", os.path.join(pki, "ca.crt"), "-CAkey", os.path.join(pki, "ca.key"),
                 "-set_serial", "0x" + secrets.token_hex(16), "-days", str(days), "-sha256", "-out", crt,
                 "-extfile", ext.name)
    finally:
        os.unlink(ext.name)
        os.unlink(csr)
    os.chmod(key, 0o600)
    return crt, key


def ensure_pki(pki):
    os.makedirs(pki, exist_ok=True)
    ca = os.path.join(pki, "ca.crt")
    if not os.path.exists(ca):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", os.path.join(pki, "ca.key"), "-out", ca + ".tmp", "-days", "3650", "-sha256",
                 "-subj", "/CN=plexus-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
        os.replace(ca + ".tmp", ca)
    if not os.path.exists(os.path.join(pki, "server.crt")):
        issue_cert(pki, "server", "/CN=127.0.0.1",
                   ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                    "extendedKeyUsage=serverAuth",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc"])
    if not os.path.exists(os.path.join(pki, "client.crt")):
        issue_client_cert(pki, "client", "plexus-admin", "system:masters")


def issue_client_cert(pki, name, cn, org):
    subj = f"/O={org}/CN={cn}" if org else f"/CN={cn}"
    return issue_cert(pki, name, subj, ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
                                        "extendedKeyUsage=clientAuth"])


# --------------------------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokens-file", help="default: <state-dir>/tokens")
    ap.add_argument("--minor", type=int, default=32, help="/version minor (selects the kubectl dispatcher's binary)")
    ap.add_argument("--persist", action="store_true", help="keep objects in <state-dir>/data.json across restarts")
    ap.add_argument("--no-table", dest="table", action="store_false", help="no server-side Table output")
    ap.add_argument("--openapi", choices=["full", "none"], default="full")
    ap.add_argument("--openapi-v2-pb", action="store_true", help="serve a protobuf /openapi/v2 stub (kubectl <=1.27)")
    ap.add_argument("--public-version", action="store_true", help="(always on) /version needs no auth")
    ap.add_argument("--pod-grace", type=float, default=0.0,
                    help="pods with spec.nodeName stay Terminating this many seconds on delete")
    ap.add_argument("--watch-timeout", type=float, default=1800.0)
    ap.add_argument("--history", type=int, default=1000, help="watch event history size")
    ap.add_argument("--preinstall-crd", action="append", help="CRD manifest (JSON, or YAML if PyYAML is present)")
    ap.add_argument("--preinstall-nad-crd", action="store_true", help="start with the NAD CRD installed")
    ap.add_argument("--log-bodies", action="store_true")
    ap.add_argument("--exit-with-parent", type=int, default=0, help="exit when this parent pid goes away")
    ap.add_argument("--issue-client-cert", nargs=3, metavar=("NAME", "CN", "ORG"),
                    help="only issue <state-dir>/pki/NAME.{crt,key} (ORG = role: system:masters|readonly|multus) and exit")
    args = ap.parse_args(argv)
    os.makedirs(args.state_dir, exist_ok=True)
    pki = os.path.join(args.state_dir, "pki")
    ensure_pki(pki)
    if args.issue_client_cert:
        crt, key = issue_client_cert(pki, *args.issue_client_cert)
        print(json.dumps({"cert": crt, "key": key}))
        return 0
    state = State(args)
    if not os.path.exists(state.tokens_path):
        state.write_tokens([{"token": secrets.token_hex(16), "user": "admin", "role": "admin"}])

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.path.join(pki, "server.crt"), os.path.join(pki, "server.key"))
    ctx.load_verify_locations(os.path.join(pki, "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])

    srv = TLSServer((args.host, args.port), ctx, state, args)
    port = srv.server_address[1]
    for fname, content in (("port", str(port)), ("url", f"https://{args.host}:{port}")):
        tmp = os.path.join(args.state_dir, fname + ".tmp")
        with open(tmp, "w") as f:
            f.write(content + "\n")
        os.replace(tmp, os.path.join(args.state_dir, fname))
    print(f"PLEXUS_APISERVER_PORT={port}", flush=True)

    if args.exit_with_parent:
        def watch_parent():
            while True:
                time.sleep(0.5)
                if os.getppid() != args.exit_with_parent:
                    os._exit(0)
        threading.Thread(target=watch_parent, daemon=True).start()
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
