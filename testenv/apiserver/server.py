#!/usr/bin/env python3
"""Plexus test API server: a small Kubernetes-API-compatible HTTPS server (Python stdlib only).

It serves just enough of the Kubernetes API for Plexus' tests, for real `kubectl` (v1.27-1.33) and for the
Python `kubernetes` client: discovery, an OpenAPI v3 stub, namespaces, pods (+status), events, CRDs and the
custom resources they define (NetworkAttachmentDefinitions), DRA objects (resource.k8s.io/v1 ResourceClaims
(+status), ResourceSlices, DeviceClasses, ResourceClaimTemplates) with metadata.managedFields and server-side apply,
Table output, watch (bookmarks), list pagination, merge / strategic-merge / JSON patch, resourceVersion conflicts, metav1.Status errors,
bearer-token and client-certificate auth, a JSONL request log and fault injection through an unauthenticated
control API under /_test/.

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
import base64
import bisect
import collections
import copy
import datetime
import hashlib
import http
import json
import os
import posixpath
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
        self.list_continue = None     # Status.metadata.continue (a paginated list whose continue token expired)

    def body(self):
        md = {"continue": self.list_continue} if self.list_continue else {}
        b = {"kind": "Status", "apiVersion": "v1", "metadata": md, "status": "Failure", "message": self.message}
        if self.reason:      # StatusReasonUnknown ("") is omitted, as for errors that are not a metav1.Status
            b["reason"] = self.reason
        if self.details:
            b["details"] = self.details
        b["code"] = self.code
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


# field.ErrorType bodies -> metav1.CauseType, as k8s.io/apimachinery/pkg/util/validation/field renders them
CAUSE_REASONS = (("Required value", "FieldValueRequired"), ("Invalid value", "FieldValueInvalid"),
                 ("Unsupported value", "FieldValueNotSupported"), ("Duplicate value", "FieldValueDuplicate"),
                 ("Too long", "FieldValueTooLong"), ("Too many", "FieldValueTooMany"),
                 ("Forbidden", "FieldValueForbidden"), ("Not found", "FieldValueNotFound"))


def cause_reason(message):
    return next((r for prefix, r in CAUSE_REASONS if message.startswith(prefix)), "FieldValueInvalid")


def invalid_kind(kind, group, name, causes):
    """A 422 Invalid Status. causes: list of (field, message-without-field); the cause reason follows the message
    ("Required value: ..." -> FieldValueRequired, "Too long: ..." -> FieldValueTooLong, ...)."""
    msgs = [f"{f}: {m}" for f, m in causes]
    summary = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    kq = kind + (f".{group}" if group else "")
    d = {"name": name, "kind": kind} if name else {"kind": kind}
    if group:
        d["group"] = group
    d["causes"] = [{"reason": cause_reason(m), "message": m, "field": f} for f, m in causes]
    return ApiError(422, "Invalid", f'{kq} "{name}" is invalid: {summary}', d)


def invalid(res, name, causes):
    """causes: list of (field, message-without-field)"""
    return invalid_kind(res.kind, res.group, name, causes)


def go_value(v):
    """A bad value the way field.Error.ErrorBody prints it: %v for numbers and booleans, %q for strings, JSON
    otherwise."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


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


def managed_signature(obj):
    """metadata.managedFields without the timestamps (what makes two writes differ)."""
    return canon_json([{k: v for k, v in e.items() if k != "time"}
                       for e in ((obj.get("metadata") or {}).get("managedFields") or []) if isinstance(e, dict)])


def strip_volatile(obj):
    o = copy.deepcopy(obj)
    md = o.get("metadata") or {}
    md.pop("resourceVersion", None)
    md.pop("managedFields", None)
    return o


# --------------------------------------------------------------------------------------------- list pagination
# Continue tokens as k8s.io/apiserver/pkg/storage (continue.go) encodes them: base64.RawURLEncoding of
# {"v":"meta.k8s.io/v1","rv":<list RV>,"start":"<key after the last returned item, relative to the list prefix>"}.
# Keys are the etcd key suffixes: "<namespace>/<name>" for namespaced resources, "<name>" otherwise, so a list is
# ordered as the real server orders it.

CONTINUE_EXPIRED = ("The provided continue parameter is too old to display a consistent list result. You can start a "
                    "new list without the continue parameter, or use the continue token in this response to retrieve "
                    "the remainder of the results. Continuing with the provided token results in an inconsistent list "
                    "- objects that were created, modified, or deleted between the time the first chunk was returned "
                    "and now may show up in the list.")


def encode_continue(rv, start):
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_continue(token):
    """(start key relative to the list prefix, rv) like storage.DecodeContinue; 400 BadRequest on a bad token."""
    def bad(detail):
        return bad_request(f"invalid continue token: continue key is not valid{detail}")
    m = re.search(r"[^A-Za-z0-9_-]", token)
    if m:
        raise bad(f": illegal base64 data at input byte {m.start()}")
    if len(token) % 4 == 1:
        raise bad(f": illegal base64 data at input byte {len(token) - 1}")
    try:
        c = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError as e:
        raise bad(f": {e}")
    if not isinstance(c, dict):
        raise bad(": json: cannot unmarshal into Go value of type storage.continueToken")
    if c.get("v") != "meta.k8s.io/v1":
        raise bad(f": server does not recognize this encoded version {c.get('v') or ''}")
    rv, start = c.get("rv"), c.get("start")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv == 0:
        raise bad(": incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    if not isinstance(start, str) or not start:
        raise bad(": encoded start key empty (version meta.k8s.io/v1)")
    key = start if start.startswith("/") else "/" + start
    if key.startswith("//") or posixpath.normpath(key) != key:
        raise bad(f": {start}")
    return key[1:], rv


def store_key(res, ns, name):
    return f"{ns}/{name}" if res.namespaced else name


def bookmark_object(res, rv, annotations=None):
    """The object of a BOOKMARK event: only kind, apiVersion and metadata.resourceVersion carry information. Like
    the real server (which encodes an empty Go object), built-in kinds also have `creationTimestamp: null`, and a
    Pod has `spec: {containers: null}` and `status: {}`."""
    md = {"resourceVersion": str(rv)}
    if not res.custom:
        md["creationTimestamp"] = None
    if annotations:
        md["annotations"] = annotations
    o = {"kind": res.kind, "apiVersion": res.gv, "metadata": md}
    if res.plural == "pods" and not res.group:
        o["spec"], o["status"] = {"containers": None}, {}
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
                  "initContainerStatuses": "name", "reservedFor": "uid", "resourceClaimStatuses": "name"}
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


# --------------------------------------------------------------------------------------------- managed fields (SSA)
# A small port of sigs.k8s.io/structured-merge-diff as the apiserver uses it for server-side apply and for
# metadata.managedFields. A field path is a tuple of fieldsV1 path elements: "f:<field>", 'k:{"key":"value"}' (an
# item of a `+listType=map` list) or "v:<json>" (an item of a `+listType=set` list). Lists not named in the
# resource's list-type table are atomic (one leaf), like most DRA lists. metadata.managedFields entries are
# identified like the real server does: manager + operation + subresource (+ apiVersion for Update).

FIELDS_NODE = ("node",)           # flatten() value of a present map / granular list / list item (not a leaf)
COMMON_LIST_TYPES = {("metadata", "finalizers"): ("set",), ("metadata", "ownerReferences"): ("map", ("uid",))}
MANAGED_META = ("labels", "annotations", "finalizers", "ownerReferences")


class FieldSetError(Exception):
    """The object cannot be turned into a field set (what SMD reports as a typed-conversion error)."""


def canon_json(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def list_item_element(item, keys, spath):
    if not isinstance(item, dict):
        raise FieldSetError(f".{'.'.join(spath)}: associative list with keys may not have non-map elements")
    key = {k: item[k] for k in keys if k in item and item[k] is not None}
    if not key:
        raise FieldSetError(f".{'.'.join(spath)}: associative list with keys has an element that omits all key "
                            f"fields {json.dumps(list(keys))} (and doesn't have default values for any key fields)")
    return "k:" + canon_json(key)


def _list_item_pe(item, kind, spath):
    return list_item_element(item, kind[1], spath) if kind[0] == "map" else "v:" + canon_json(item)


def flatten_fields(obj, list_types, strict=False):
    """{path: leaf JSON | FIELDS_NODE} for every leaf, map, granular list and list item below the top-level fields
    of obj (the top-level fields themselves - spec, status, metadata - are never members, as in the real server).
    strict: duplicate list-map keys are an error (applied configurations), else the first one wins."""
    out = {}

    def walk(v, path, spath):
        top = len(path) == 1
        if isinstance(v, dict) and (v or top):
            if not top:
                out[path] = FIELDS_NODE
            for k, x in v.items():
                walk(x, path + ("f:" + k,), spath + (k,))
            return
        kind = list_types.get(spath)
        if kind and isinstance(v, list) and v:
            if not top:
                out[path] = FIELDS_NODE
            seen = set()
            for item in v:
                pe = _list_item_pe(item, kind, spath)
                if pe in seen:
                    if strict:
                        raise FieldSetError(f".{'.'.join(spath)}: duplicate entries for key {path_string((pe,))}")
                    continue
                seen.add(pe)
                if kind[0] == "map":
                    out[path + (pe,)] = FIELDS_NODE
                    for k, x in item.items():
                        walk(x, path + (pe, "f:" + k), spath + (k,))
                else:
                    out[path + (pe,)] = canon_json(item)
            return
        out[path] = canon_json(v)

    for k, v in (obj or {}).items():
        walk(v, ("f:" + k,), (k,))
    return out


def applied_field_set(obj, list_types):
    """TypedValue.ToFieldSet() of an applied configuration: leaves, list items and empty maps; a granular list that
    is empty owns nothing."""
    flat = flatten_fields(obj, list_types, strict=True)
    out = set()
    for p, v in flat.items():
        if v is FIELDS_NODE:
            if p[-1][:2] in ("k:", "v:"):
                out.add(p)
        elif not (v == "[]" and list_types.get(tuple(e[2:] for e in p if e.startswith("f:")))):
            out.add(p)
    return out


def compare_fields(old_flat, new_flat):
    """(added, modified, removed) path sets, like typed.Comparison."""
    added = {p for p in new_flat if p not in old_flat}
    removed = {p for p in old_flat if p not in new_flat}
    modified = {p for p in new_flat if p in old_flat and old_flat[p] != new_flat[p]}
    return added, modified, removed


def with_named_parents(paths):
    """The set plus every field ("f:") ancestor, like fieldpath.Set.EnsureNamedFieldsAreMembers()."""
    out = set(paths)
    for p in paths:
        for i in range(1, len(p)):
            if p[i - 1].startswith("f:"):
                out.add(p[:i])
    return out


def path_string(path):
    """fieldpath.Path.String(): .status.devices[device="eth1",driver="d",pool="p"].networkData"""
    out = ""
    for e in path:
        kind, rest = e[:2], e[2:]
        if kind == "f:":
            out += "." + rest
        elif kind == "k:":
            d = json.loads(rest)
            out += "[" + ",".join(f"{k}={json.dumps(d[k])}" for k in sorted(d)) + "]"
        elif kind == "v:":
            out += f"[={rest}]"
        else:
            out += f"[{rest}]"
    return out


def fields_v1(paths):
    """A path set as the nested fieldsV1 JSON ("." marks a member that also has children)."""
    root = {}
    members = set(paths)
    for p in sorted(members):
        node = root
        for e in p:
            node = node.setdefault(e, {})

    def mark(node, prefix):
        for k, child in node.items():
            p = prefix + (k,)
            mark(child, p)
            if p in members and child:
                child["."] = {}
                node[k] = dict(sorted(child.items()))
    mark(root, ())
    return root


def paths_from_fields_v1(tree, prefix=()):
    out = set()
    for k, v in (tree or {}).items():
        if k == ".":
            if prefix:
                out.add(prefix)
            continue
        if k.startswith("k:"):
            k = "k:" + canon_json(json.loads(k[2:]))
        p = prefix + (k,)
        if isinstance(v, dict) and v:
            out |= paths_from_fields_v1(v, p)
        else:
            out.add(p)
    return out


def _find_child(container, pe, spath, list_types):
    """(holder, key-or-index) of the child `pe` of container (whose schema path is spath), or None."""
    if pe.startswith("f:"):
        return (container, pe[2:]) if isinstance(container, dict) and pe[2:] in container else None
    kind = list_types.get(spath)
    if not kind or not isinstance(container, list):
        return None
    for i, item in enumerate(container):
        try:
            if _list_item_pe(item, kind, spath) == pe:
                return (container, i)
        except FieldSetError:
            continue
    return None


def remove_field_paths(obj, paths, list_types):
    """Removes the fields / list items at the given paths; containers emptied by the removal are removed too."""
    for p in sorted(paths, key=len):
        trail, cur, spath = [], obj, ()
        for pe in p:
            hit = _find_child(cur, pe, spath, list_types)
            if hit is None:
                break
            trail.append(hit)
            cur = hit[0][hit[1]]
            if pe.startswith("f:"):
                spath += (pe[2:],)
        else:
            for holder, at in reversed(trail):
                del holder[at]
                if holder or holder is obj:
                    break


def ssa_merge(live, cfg, list_types, spath=()):
    """typed.TypedValue.Merge(): config values win, maps merge, list-maps and sets merge by key (in the order
    structured-merge-diff produces), every other list is atomic."""
    if isinstance(cfg, dict) and isinstance(live, dict):
        out = copy.deepcopy(live)
        for k, v in cfg.items():
            out[k] = ssa_merge(live[k], v, list_types, spath + (k,)) if k in live else copy.deepcopy(v)
        return out
    kind = list_types.get(spath)
    if kind and isinstance(cfg, list) and isinstance(live, list):
        return _merge_list(live, cfg, kind, list_types, spath)
    return copy.deepcopy(cfg)


def _merge_list(live, cfg, kind, list_types, spath):
    lpe = [_list_item_pe(x, kind, spath) for x in live]
    rpe = [_list_item_pe(x, kind, spath) for x in cfg]
    lmap, rmap = {}, {}
    for pe, x in zip(lpe, live):
        lmap.setdefault(pe, x)
    for pe, x in zip(rpe, cfg):
        rmap.setdefault(pe, x)
    shared = iter([pe for pe in rpe if pe in lmap])
    next_shared = next(shared, None)
    merged_rhs, out = set(), []

    def merged(pe):
        if kind[0] == "set":
            return copy.deepcopy(rmap[pe])
        return ssa_merge(lmap[pe], rmap[pe], list_types, spath) if pe in lmap else copy.deepcopy(rmap[pe])
    li = ri = 0
    while li < len(lpe) or ri < len(rpe):
        if li < len(lpe) and ri < len(rpe):
            pe = lpe[li]
            if pe == rpe[ri]:
                merged_rhs.add(pe)
                out.append(merged(pe))
                li, ri = li + 1, ri + 1
                next_shared = next(shared, None)
                continue
            if pe in rmap and next_shared is not None and next_shared != pe:
                li += 1
                continue
        if li < len(lpe):
            pe = lpe[li]
            if pe not in rmap:
                out.append(copy.deepcopy(live[li]))
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
        if ri < len(rpe):
            pe = rpe[ri]
            merged_rhs.add(pe)
            out.append(merged(pe))
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = next(shared, None)
    return out


def field_scope(obj, sub):
    """The part of an object whose fields a request on the resource (sub=None) or its status subresource can own."""
    obj = obj or {}
    if sub == "status":
        return {"status": obj["status"]} if isinstance(obj.get("status"), dict) else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    md = obj.get("metadata") or {}
    meta = {k: md[k] for k in MANAGED_META if k in md}
    if meta:
        out["metadata"] = meta
    return out


def replace_scope(obj, scoped, sub):
    """obj with its field_scope(obj, sub) part replaced by `scoped` (in place)."""
    if sub == "status":
        if "status" in scoped:
            obj["status"] = scoped["status"]
        else:
            obj.pop("status", None)
        return obj
    for k in [k for k in obj if k not in ("apiVersion", "kind", "metadata", "status")]:
        if k not in scoped:
            del obj[k]
    md = obj.setdefault("metadata", {})
    for k in MANAGED_META:
        if k in (scoped.get("metadata") or {}):
            md[k] = scoped["metadata"][k]
        else:
            md.pop(k, None)
    for k, v in scoped.items():
        if k != "metadata":
            obj[k] = v
    return obj


class ManagedFields:
    """The decoded metadata.managedFields of one object: {identity: entry}, entry = dict(manager, operation,
    apiVersion, time, subresource, fields=set of paths)."""

    def __init__(self, entries=None):
        self.entries = collections.OrderedDict()
        for e in entries or []:
            self.entries[self.identity(e)] = e

    @staticmethod
    def identity(e):
        return (e["manager"], e["operation"], e.get("subresource") or "",
                e.get("apiVersion", "") if e["operation"] == "Update" else "")

    @classmethod
    def decode(cls, raw):
        """Raises ValueError for malformed managedFields."""
        if not isinstance(raw, list):
            raise ValueError("managedFields must be a list")
        entries = []
        for e in raw:
            if not isinstance(e, dict) or e.get("operation") not in ("Apply", "Update") or \
                    not isinstance(e.get("manager", ""), str):
                raise ValueError("invalid managedFields entry")
            if e.get("fieldsType", "FieldsV1") != "FieldsV1":
                raise ValueError(f"unsupported fieldsType {e.get('fieldsType')!r}")
            entries.append({"manager": e.get("manager", ""), "operation": e["operation"],
                            "apiVersion": e.get("apiVersion", ""), "time": e.get("time"),
                            "subresource": e.get("subresource", ""),
                            "fields": paths_from_fields_v1(e.get("fieldsV1") or {})})
        return cls(entries)

    @classmethod
    def of(cls, obj):
        try:
            return cls.decode(((obj or {}).get("metadata") or {}).get("managedFields") or [])
        except (ValueError, TypeError, AttributeError):
            return cls()

    def encode(self):
        def order(e):
            t = parse_time(e.get("time") or "") or 0
            return (e["operation"], int(t), e["manager"], e.get("apiVersion", ""), e.get("subresource", ""))
        out = []
        for e in sorted(self.entries.values(), key=order):
            if not e["fields"]:
                continue
            d = {"manager": e["manager"], "operation": e["operation"], "apiVersion": e["apiVersion"]}
            if e.get("time"):
                d["time"] = e["time"]
            d["fieldsType"] = "FieldsV1"
            d["fieldsV1"] = fields_v1(e["fields"])
            if e.get("subresource"):
                d["subresource"] = e["subresource"]
            out.append(d)
        return out

    def drop_empty(self):
        for k in [k for k, e in self.entries.items() if not e["fields"]]:
            del self.entries[k]

    @staticmethod
    def describe(ident):
        """printManager(): "name" for appliers, "name" using group/version for updaters."""
        manager, operation, _, api_version = ident
        return json.dumps(manager) + (f" using {api_version}" if operation == "Update" else "")

    def update(self, manager, api_version, sub, old_scope, new_scope, list_types):
        """Records a create/update/patch by `manager` (metadata.managedFields of an Update operation)."""
        added, modified, removed = compare_fields(flatten_fields(old_scope, list_types),
                                                  flatten_fields(new_scope, list_types))
        changed = added | modified
        me = (manager or "unknown", "Update", sub or "", api_version)
        for ident, e in self.entries.items():
            e["fields"] = e["fields"] - changed - removed if ident != me else e["fields"] - removed
        if changed:
            e = self.entries.setdefault(me, {"manager": me[0], "operation": "Update", "apiVersion": api_version,
                                             "time": None, "subresource": sub or "", "fields": set()})
            e["fields"] |= changed
            e["time"] = now_rfc3339()
        self.drop_empty()

    def apply(self, manager, api_version, sub, live_scope, config_scope, force, list_types):
        """Server-side apply of config_scope by `manager`. Returns the new scope value; raises ApiError 409 with
        FieldManagerConflict causes when another manager owns a field the configuration changes (unless force)."""
        config_fields = applied_field_set(config_scope, list_types)
        merged = ssa_merge(live_scope, config_scope, list_types)
        me = (manager, "Apply", sub or "", "")
        last = self.entries[me]["fields"] if me in self.entries else set()
        owned = set(config_fields)
        for ident, e in self.entries.items():
            if ident != me:
                owned |= e["fields"]
        stale = with_named_parents(last) - with_named_parents(owned)
        remove_field_paths(merged, stale, list_types)
        added, modified, removed = compare_fields(flatten_fields(live_scope, list_types),
                                                  flatten_fields(merged, list_types))
        conflicts = []
        for ident, e in self.entries.items():
            if ident != me:
                for p in sorted(e["fields"] & (added | modified), key=path_string):
                    conflicts.append((ident, p))
        if conflicts and not force:
            raise apply_conflict(conflicts)
        taken = {p for _, p in conflicts}
        for ident, e in self.entries.items():
            if ident != me:
                e["fields"] = e["fields"] - taken - removed
        entry = self.entries.setdefault(me, {"manager": manager, "operation": "Apply", "apiVersion": api_version,
                                             "time": None, "subresource": sub or "", "fields": set()})
        entry["apiVersion"], entry["fields"] = api_version, config_fields
        if added or modified or removed:
            entry["time"] = now_rfc3339()
        self.drop_empty()
        return merged


def apply_conflict(conflicts):
    """merge.Conflicts as the apiserver reports them (internal.NewConflictError)."""
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {ManagedFields.describe(ident)}",
               "field": path_string(p)} for ident, p in conflicts]
    if len(conflicts) == 1:
        ident, p = conflicts[0]
        msg = f"Apply failed with 1 conflict: conflict with {ManagedFields.describe(ident)}: {path_string(p)}"
    else:
        by = collections.OrderedDict()
        for ident, p in sorted(conflicts, key=lambda c: json.dumps(c[0])):
            by.setdefault(ident, []).append(p)
        lines = []
        for ident, paths in by.items():
            lines.append(f"conflicts with {ManagedFields.describe(ident)}:")
            lines += [f"- {path_string(p)}" for p in paths]
        msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", msg, {"causes": causes})


def prefix_from_user_agent(ua):
    """The default field manager of a request without ?fieldManager= (the User-Agent up to the first "/")."""
    out = ""
    for ch in (ua or "").split("/")[0]:
        if ch.isprintable() and len((out + ch).encode()) <= 128:
            out += ch
    return out


def validate_write_options(kind, q, apply=False, require_manager=True):
    """ValidateCreateOptions / ValidateUpdateOptions / ValidatePatchOptions: 422 on a bad fieldManager or force.
    apply: an apply patch (require_manager: the resource serves apply, so ?fieldManager= is required)."""
    errs = []
    fm = q.get("fieldManager", "")
    if kind == "PatchOptions":
        if apply and require_manager and not fm:
            errs.append(("fieldManager", "Required value: is required for apply patch"))
        if not apply and "force" in q:
            errs.append(("force", "Forbidden: may not be specified for non-apply patch"))
    if len(fm.encode()) > 128:
        errs.append(("fieldManager", "Too long: may not be more than 128 bytes"))
    for i, ch in enumerate(fm):
        if not ch.isprintable():
            errs.append(("fieldManager", f"Invalid value: {go_value(fm)}: invalid character U+{ord(ch):04X} "
                                         f"(at position {i})"))
    if errs:
        raise invalid_kind(kind, "meta.k8s.io", "", errs)


def parse_apply_body(raw):
    """An application/apply-patch+yaml body: JSON, or YAML when PyYAML is installed."""
    text = (raw or b"").decode("utf-8", "replace")
    try:
        obj = json.loads(text) if text.strip() else {}
    except ValueError:
        try:
            import yaml
        except ImportError:
            raise bad_request("error decoding YAML: this test server parses YAML apply bodies only with PyYAML "
                              "installed; send the configuration as JSON")
        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise bad_request(f"error decoding YAML: {e}")
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        what = {list: "array", str: "string", bool: "bool"}.get(type(obj), "number")
        raise bad_request("error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                          f"{what} into Go value of type map[string]interface {{}}")
    return obj


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


# --------------------------------------------------------------------------------------------- DRA (resource.k8s.io/v1)
# ResourceClaims (+status), ResourceClaimTemplates, ResourceSlices and DeviceClasses as a 1.34 kube-apiserver
# serves them: the v1 structural schema (unknown fields: 400 with fieldValidation=Strict, else dropped), the
# defaults and JSON round-trip of the Go types, the validation the real server does (422 with the real messages),
# its field selectors, and the list types server-side apply merges by.

DRA_GROUP = "resource.k8s.io"
DRA_FIELD_MANAGER_LISTS = {
    "resourceclaims": {("status", "reservedFor"): ("map", ("uid",)),
                       ("status", "devices"): ("map", ("driver", "device", "pool", "shareID")),
                       ("status", "devices", "conditions"): ("map", ("type",))},
}
AllocatedDeviceStatusMaxConditions = 8
NetworkDeviceDataInterfaceNameMaxLength = 256
NetworkDeviceDataHardwareAddressMaxLength = 128
NetworkDeviceDataMaxIPs = 16
AllocatedDeviceStatusDataMaxLength = 10 * 1024
ResourceClaimReservedForMaxSize = 256
DeviceRequestsMaxSize = 32
AllocationResultsMaxSize = 32
ResourceSliceMaxDevices = 128
DeviceAttributeMaxValueLength = 64
PoolNameMaxLength = 253


def _t(typ):
    return {"type": typ}


def _o(**props):
    return {"type": "object", "properties": props}


def _a(items):
    return {"type": "array", "items": items}


def _m(values):
    return {"type": "object", "additionalProperties": values}


_S, _I, _B = _t("string"), _t("integer"), _t("boolean")
_ANY_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_ANY = {"x-kubernetes-preserve-unknown-fields": True}
_QUANTITY = {"x-kubernetes-int-or-string": True}
_NODE_SELECTOR = _o(nodeSelectorTerms=_a(_o(
    matchExpressions=_a(_o(key=_S, operator=_S, values=_a(_S))),
    matchFields=_a(_o(key=_S, operator=_S, values=_a(_S))))))
_DEVICE_SELECTOR = _o(cel=_o(expression=_S))
_DEVICE_TOLERATION = _o(key=_S, operator=_S, value=_S, effect=_S, tolerationSeconds=_I)
_OPAQUE = _o(driver=_S, parameters=_ANY_OBJECT)
_CAPACITY_REQUIREMENTS = _o(requests=_m(_QUANTITY))
_SUB_REQUEST_FIELDS = dict(deviceClassName=_S, selectors=_a(_DEVICE_SELECTOR), allocationMode=_S, count=_I,
                           tolerations=_a(_DEVICE_TOLERATION), capacity=_CAPACITY_REQUIREMENTS)
_CLAIM_SPEC = _o(devices=_o(
    requests=_a(_o(name=_S, exactly=_o(adminAccess=_B, **_SUB_REQUEST_FIELDS),
                   firstAvailable=_a(_o(name=_S, **_SUB_REQUEST_FIELDS)))),
    constraints=_a(_o(requests=_a(_S), matchAttribute=_S, distinctAttribute=_S)),
    config=_a(_o(requests=_a(_S), opaque=_OPAQUE))))
_CONDITION = _o(type=_S, status=_S, observedGeneration=_I, lastTransitionTime=_S, reason=_S, message=_S)
_CLAIM_STATUS = _o(
    allocation=_o(devices=_o(results=_a(_o(request=_S, driver=_S, pool=_S, device=_S, adminAccess=_B,
                                           tolerations=_a(_DEVICE_TOLERATION), bindingConditions=_a(_S),
                                           bindingFailureConditions=_a(_S), shareID=_S,
                                           consumedCapacity=_m(_QUANTITY))),
                             config=_a(_o(source=_S, requests=_a(_S), opaque=_OPAQUE))),
                  nodeSelector=_NODE_SELECTOR, allocationTimestamp=_S),
    reservedFor=_a(_o(apiGroup=_S, resource=_S, name=_S, uid=_S)),
    devices=_a(_o(driver=_S, pool=_S, device=_S, shareID=_S, conditions=_a(_CONDITION), data=_ANY,
                  networkData=_o(interfaceName=_S, ips=_a(_S), hardwareAddress=_S))))
_COUNTERS = _m(_o(value=_QUANTITY))
_DEVICE = _o(name=_S, attributes=_m(_o(int=_I, bool=_B, string=_S, version=_S)),
             capacity=_m(_o(value=_QUANTITY, requestPolicy=_ANY_OBJECT)),
             consumesCounters=_a(_o(counterSet=_S, counters=_COUNTERS)), nodeName=_S, nodeSelector=_NODE_SELECTOR,
             allNodes=_B, taints=_a(_o(key=_S, value=_S, effect=_S, timeAdded=_S)), bindsToNode=_B,
             bindingConditions=_a(_S), bindingFailureConditions=_a(_S), allowMultipleAllocations=_B)
DRA_SCHEMAS = {
    "resourceclaims": _o(spec=_CLAIM_SPEC, status=_CLAIM_STATUS),
    "resourceclaimtemplates": _o(spec=_o(metadata=_ANY_OBJECT, spec=_CLAIM_SPEC)),
    "resourceslices": _o(spec=_o(driver=_S, pool=_o(name=_S, generation=_I, resourceSliceCount=_I), nodeName=_S,
                                 nodeSelector=_NODE_SELECTOR, allNodes=_B, devices=_a(_DEVICE),
                                 perDeviceNodeSelection=_B,
                                 sharedCounters=_a(_o(name=_S, counters=_COUNTERS)))),
    "deviceclasses": _o(spec=_o(selectors=_a(_DEVICE_SELECTOR), config=_a(_o(opaque=_OPAQUE)),
                                extendedResourceName=_S)),
}
_GO_TYPES = {"string": "string", "integer": "int64", "boolean": "bool", "object": "struct", "array": "slice"}


def structural_check(schema, value, path, unknown, type_errors, prune, keyed=None, spath=()):
    """Walks value against a DRA schema: unknown fields are collected (and pruned), type mismatches collected as
    (path, expected type, value). Paths are dotted with [i] for list items, or - with keyed, a list-type table -
    [key=value,...] for the items of `+listType=map` lists, as structured-merge-diff prints them."""
    t = schema.get("type")
    if value is None:
        return
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            type_errors.append((path, "int-or-string", value))
        return
    if t and (not isinstance(value, _TYPES[t]) or (t in ("integer", "number") and isinstance(value, bool))):
        type_errors.append((path, t, value))
        return
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        props, addl = schema.get("properties"), schema.get("additionalProperties")
        for k in list(value):
            sub = f"{path}.{k}" if path else k
            if props is not None and k in props:
                structural_check(props[k], value[k], sub, unknown, type_errors, prune, keyed, spath + (k,))
            elif isinstance(addl, dict):
                structural_check(addl, value[k], f"{path}[{k}]", unknown, type_errors, prune)
            else:
                unknown.append(sub)
                if prune:
                    del value[k]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        kind = (keyed or {}).get(spath)
        for i, item in enumerate(value):
            at = f"[{i}]"
            if kind:
                try:
                    at = path_string((_list_item_pe(item, kind, spath),))
                except FieldSetError:
                    pass
            structural_check(schema["items"], item, path + at, unknown, type_errors, prune, keyed, spath)


def _json_type(v):
    return {bool: "bool", str: "string", list: "array", dict: "object"}.get(type(v), "number")


def dra_decode_check(res, obj, q):
    """What decoding a request body into the Go type does: 400 on type mismatches, unknown fields 400 with
    fieldValidation=Strict, else dropped (with a Warning header for Warn, the default). Returns warnings."""
    mode = q.get("fieldValidation") or "Warn"
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    unknown, type_errors = [], []
    structural_check(DRA_SCHEMAS[res.plural], body, "", unknown, type_errors, prune=(mode != "Strict"))
    head = f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
    if type_errors:
        path, want, value = type_errors[0]
        raise bad_request(head + f"json: cannot unmarshal {_json_type(value)} into Go struct field {res.kind}.{path} "
                                 f"of type {_GO_TYPES.get(want, 'resource.Quantity')}")
    if unknown and mode == "Strict":
        raise bad_request(head + "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown))
    for k in list(obj):
        if k not in ("apiVersion", "kind", "metadata") and k not in body:
            del obj[k]
    return [f'unknown field "{u}"' for u in unknown] if mode == "Warn" else []


def dra_typed_check(res, cfg):
    """typeConverter.ObjectToTyped() of an applied configuration: returns the error text (SMD's wording) or None."""
    body = {k: v for k, v in cfg.items() if k not in ("apiVersion", "kind", "metadata")}
    unknown, type_errors = [], []
    structural_check(DRA_SCHEMAS[res.plural], body, "", unknown, type_errors, prune=False, keyed=dra_list_types(res))
    if unknown:
        return f".{unknown[0]}: field not declared in schema"
    if type_errors:
        path, want, value = type_errors[0]
        expected = {"string": "string", "integer": "numeric (int or float)", "boolean": "boolean",
                    "object": "map", "array": "list"}.get(want, want)
        return f".{path}: expected {expected}, got {go_value(value)}"
    try:
        applied_field_set(field_scope(cfg, None), dra_list_types(res))
        applied_field_set(field_scope(cfg, "status"), dra_list_types(res))
    except FieldSetError as e:
        return str(e)
    return None


def dra_list_types(res):
    return {**COMMON_LIST_TYPES, **DRA_FIELD_MANAGER_LISTS.get(res.plural, {})}


def _drop_nulls(v):
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v


def _default_request(req):
    """SetDefaults_ExactDeviceRequest / SetDefaults_DeviceSubRequest / SetDefaults_DeviceToleration."""
    if not isinstance(req, dict):
        return
    req.setdefault("allocationMode", "ExactCount")
    if req["allocationMode"] == "ExactCount" and not req.get("count"):
        req["count"] = 1
    for t in req.get("tolerations") or []:
        if isinstance(t, dict):
            t.setdefault("operator", "Equal")


def _normalize_claim_spec(spec):
    devices = spec.setdefault("devices", {})
    if not isinstance(devices, dict):
        return
    devices.setdefault("requests", None)        # `json:"requests"` has no omitempty
    for r in devices.get("requests") or []:
        if isinstance(r, dict):
            _default_request(r.get("exactly"))
            for s in r.get("firstAvailable") or []:
                _default_request(s)


def dra_prepare(res, obj, old, sub):
    """Defaults and the JSON round-trip of the Go types (nulls dropped, non-omitempty fields present), plus the
    strategies' PrepareForCreate (claim status cleared)."""
    for k in [k for k in obj if k not in ("apiVersion", "kind", "metadata")]:
        if obj[k] is None:
            del obj[k]
        else:
            obj[k] = _drop_nulls(obj[k])
    p = res.plural
    if p == "resourceclaims":
        if old is None:
            obj["status"] = {}
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            _normalize_claim_spec(spec)
        status = obj.setdefault("status", {})
        for d in (status.get("devices") or []) if isinstance(status, dict) else []:
            if isinstance(d, dict):
                d.setdefault("conditions", None)   # `json:"conditions"` has no omitempty
                for c in d.get("conditions") or []:
                    if isinstance(c, dict):
                        c.setdefault("message", "")
    elif p == "resourceclaimtemplates":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict) and isinstance(spec.setdefault("spec", {}), dict):
            _normalize_claim_spec(spec["spec"])
    elif p == "resourceslices":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict) and isinstance(spec.get("pool"), dict):
            spec["pool"].setdefault("generation", 0)
    elif p == "deviceclasses":
        obj.setdefault("spec", {})


# ---- validation (pkg/apis/resource/validation, with the apimachinery messages)

_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                      "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                      "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                          "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
                          "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(-(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*)?"
                     r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _required(f, detail=""):
    return (f, "Required value" + (f": {detail}" if detail else ""))


def _invalid(f, value, detail):
    return (f, f"Invalid value: {go_value(value)}: {detail}")


def _too_long(f, n):
    return (f, f"Too long: may not be more than {n} bytes")


def _regex_error(msg, fmt, *examples):
    """validation.RegexError"""
    return msg + " (e.g. " + " or ".join(f"'{e}', " for e in examples) + f"regex used for validation is '{fmt}')"


def _dns_label_msgs(value):
    errs = ["must be no more than 63 characters"] if len(value) > 63 else []
    return errs + ([] if DNS1123_LABEL.match(value) else [_DNS1123_LABEL_MSG])


def _dns_subdomain_msgs(value):
    errs = ["must be no more than 253 characters"] if len(value) > 253 else []
    return errs + ([] if DNS1123_SUBDOMAIN.match(value) else [_DNS1123_SUBDOMAIN_MSG])


def _qualified_name_msgs(value):
    """validation.IsQualifiedName"""
    fmt, what = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", ("must consist of alphanumeric characters, '-', '_' or "
                                                            "'.', and must start and end with an alphanumeric "
                                                            "character")
    parts, errs = value.split("/"), []
    if len(parts) > 2:
        return ["a qualified name " + _regex_error(what, fmt, "MyName", "my.name", "123-abc") +
                " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if len(parts) == 2:
        if not parts[0]:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in _dns_subdomain_msgs(parts[0])]
    name = parts[-1]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.match(name):
        errs.append("name part " + _regex_error(what, fmt, "MyName", "my.name", "123-abc"))
    return errs


def _dns_label(value, f):
    return [_invalid(f, value, m) for m in _dns_label_msgs(value)]


def _dns_subdomain(value, f):
    return [_invalid(f, value, m) for m in _dns_subdomain_msgs(value)]


def _str(v):
    return v if isinstance(v, str) else ""


def _driver_name(value, f):
    """ValidateCSIDriverName"""
    value = _str(value)
    errs = [_required(f)] if not value else []
    if len(value) > 63:
        errs.append(_too_long(f, 63))
    for m in _dns_subdomain_msgs(value.lower()) if value else []:
        errs.append(_invalid(f, value, m))
    return errs


def _pool_name(value, f):
    value = _str(value)
    if not value:
        return [_required(f)]
    errs = [_too_long(f, PoolNameMaxLength)] if len(value) > PoolNameMaxLength else []
    for part in value.split("/"):
        errs += _dns_subdomain(part, f)
    return errs


def _device_name(value, f, required=True):
    value = _str(value)
    if not value:
        return [_required(f)] if required else []
    return _dns_label(value, f)


def _shared_device_id(d):
    """structured.SharedDeviceID as json.Marshal prints it in field errors."""
    return {"Driver": _str(d.get("driver")), "Pool": _str(d.get("pool")), "Device": _str(d.get("device")),
            "ShareID": _str(d.get("shareID"))}


def _request_names(spec):
    out = {}
    for r in ((spec.get("devices") or {}).get("requests") or []) if isinstance(spec, dict) else []:
        if isinstance(r, dict):
            out[r.get("name")] = {s.get("name") for s in r.get("firstAvailable") or [] if isinstance(s, dict)}
    return out


def _request_ref(name, f, names):
    name = _str(name)
    segs = name.split("/")
    msg = "must be the name of a request in the claim or the name of a request and a subrequest separated by '/'"
    if len(segs) > 2:
        return [_invalid(f, name, msg)]
    errs = []
    for s in segs:
        errs += _dns_label(s, f) if s else [_required(f)]
    if segs[0] not in names or (len(segs) == 2 and segs[1] not in names[segs[0]]):
        errs.append(_invalid(f, name, msg))
    return errs


def _validate_sub_request(r, f):
    errs = []
    dc = _str(r.get("deviceClassName"))
    errs += [_required(f"{f}.deviceClassName")] if not dc else _dns_subdomain(dc, f"{f}.deviceClassName")
    for i, s in enumerate(r.get("selectors") or []):
        if not isinstance(s, dict) or not isinstance(s.get("cel"), dict):
            errs.append(_required(f"{f}.selectors[{i}].cel"))
        elif not _str(s["cel"].get("expression")):
            errs.append(_required(f"{f}.selectors[{i}].cel.expression"))
    mode, count = r.get("allocationMode"), r.get("count") or 0
    if mode == "All":
        if count:
            errs.append(_invalid(f"{f}.count", count, "must not be specified when allocationMode is 'All'"))
    elif mode == "ExactCount":
        if count <= 0:
            errs.append(_invalid(f"{f}.count", count, "must be greater than zero"))
    else:
        errs.append((f"{f}.allocationMode", f'Unsupported value: {go_value(mode)}: supported values: "All", '
                                            '"ExactCount"'))
    return errs


def validate_claim_spec(spec, f):
    devices = spec.get("devices") if isinstance(spec, dict) else None
    reqs = (devices or {}).get("requests") or []
    if len(reqs) > DeviceRequestsMaxSize:
        return [(f"{f}.devices.requests", f"Too many: {len(reqs)}: must have at most {DeviceRequestsMaxSize} items")]
    errs, seen = [], set()
    for i, r in enumerate(reqs):
        rf = f"{f}.devices.requests[{i}]"
        name = _str(r.get("name"))
        errs += _dns_label(name, f"{rf}.name") if name else [_required(f"{rf}.name")]
        has_exact, has_first = r.get("exactly") is not None, bool(r.get("firstAvailable"))
        if not has_exact and not has_first:
            errs.append(_required(rf, "exactly one of `exactly` or `firstAvailable` is required"))
        elif has_exact and has_first:
            errs.append((rf, "Invalid value: null: exactly one of `exactly` or `firstAvailable` is required, but "
                             "multiple fields are set"))
        elif has_exact:
            errs += _validate_sub_request(r["exactly"], f"{rf}.exactly")
        else:
            subs = set()
            for j, s in enumerate(r["firstAvailable"]):
                sf = f"{rf}.firstAvailable[{j}]"
                sn = _str(s.get("name"))
                errs += _dns_label(sn, f"{sf}.name") if sn else [_required(f"{sf}.name")]
                errs += _validate_sub_request(s, sf)
                if sn in subs:
                    errs.append((sf, f"Duplicate value: {go_value(sn)}"))
                subs.add(sn)
        if name in seen:
            errs.append((rf, f"Duplicate value: {go_value(name)}"))
        seen.add(name)
    names = _request_names(spec)
    for i, c in enumerate((devices or {}).get("constraints") or []):
        for j, n in enumerate(c.get("requests") or []):
            errs += _request_ref(n, f"{f}.devices.constraints[{i}].requests[{j}]", names)
    for i, c in enumerate((devices or {}).get("config") or []):
        for j, n in enumerate(c.get("requests") or []):
            errs += _request_ref(n, f"{f}.devices.config[{i}].requests[{j}]", names)
        if not isinstance(c.get("opaque"), dict):
            errs.append(_required(f"{f}.devices.config[{i}].opaque"))
        else:
            errs += _driver_name(c["opaque"].get("driver"), f"{f}.devices.config[{i}].opaque.driver")
    return errs


def _validate_conditions(conds, f):
    errs, seen = [], set()
    for i, c in enumerate(conds):
        cf = f"{f}[{i}]"
        t = _str(c.get("type"))
        if t in seen:
            errs.append((f"{cf}.type", f"Duplicate value: {go_value(t)}"))
        seen.add(t)
        for m in _qualified_name_msgs(t):
            errs.append(_invalid(f"{cf}.type", t, m))
        if c.get("status") not in ("False", "True", "Unknown"):
            errs.append((f"{cf}.status", f'Unsupported value: {go_value(_str(c.get("status")))}: supported values: '
                                         '"False", "True", "Unknown"'))
        if isinstance(c.get("observedGeneration"), int) and c["observedGeneration"] < 0:
            errs.append(_invalid(f"{cf}.observedGeneration", c["observedGeneration"],
                                 "must be greater than or equal to zero"))
        if not c.get("lastTransitionTime") or parse_time(c["lastTransitionTime"]) is None:
            errs.append(_required(f"{cf}.lastTransitionTime"))
        reason = _str(c.get("reason"))
        if not reason:
            errs.append(_required(f"{cf}.reason"))
        else:
            if not _CONDITION_REASON.match(reason):
                errs.append(_invalid(f"{cf}.reason", reason, _regex_error(
                    "a condition reason must start with alphabetic character, optionally followed by a string of "
                    "alphanumeric characters or '_,:', and must end with an alphanumeric character or '_'",
                    "[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?", "my_name", "MY_NAME", "MyName", "ReasonA,ReasonB",
                    "ReasonA:ReasonB")))
            if len(reason) > 1024:
                errs.append(_too_long(f"{cf}.reason", 1024))
        if len(_str(c.get("message"))) > 32 * 1024:
            errs.append(_too_long(f"{cf}.message", 32 * 1024))
    return errs


def _valid_interface_address(value):
    """validation.IsValidInterfaceAddress: None when valid, else the error detail."""
    import ipaddress
    try:
        iface = ipaddress.ip_interface(value) if "/" in value else None
    except ValueError:
        iface = None
    if iface is None:
        return "must be a valid address in CIDR form, (e.g. 10.9.8.7/24 or 2001:db8::1/64)"
    canonical = f"{iface.ip}/{iface.network.prefixlen}"
    if value != canonical:
        return f'must be in canonical form ("{canonical}")'
    return None


def _validate_device_status(d, f, allocated):
    errs = []
    errs += _driver_name(d.get("driver"), f"{f}.driver")
    errs += _pool_name(d.get("pool"), f"{f}.pool")
    errs += _device_name(d.get("device"), f"{f}.device")
    if d.get("shareID") is not None and not _UUID.match(_str(d.get("shareID"))):
        errs.append(_invalid(f"{f}.shareID", d.get("shareID"), "uid must be in RFC 4122 normalized form, "
                                                             "`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with lowercase "
                                                             "hexadecimal characters"))
    sid = _shared_device_id(d)
    if canon_json(sid) not in allocated:
        errs.append(_invalid(f, sid, "must be an allocated device in the claim"))
    conds = d.get("conditions") or []
    if len(conds) > AllocatedDeviceStatusMaxConditions:
        errs.append((f"{f}.conditions", f"Too many: {len(conds)}: must have at most "
                                        f"{AllocatedDeviceStatusMaxConditions} items"))
    errs += _validate_conditions(conds, f"{f}.conditions")
    if "data" in d:
        raw = json.dumps(d["data"], separators=(",", ":"))
        if len(raw) > AllocatedDeviceStatusDataMaxLength:
            errs.append(_too_long(f"{f}.data", AllocatedDeviceStatusDataMaxLength))
        elif not isinstance(d["data"], dict):
            errs.append(_invalid(f"{f}.data", "<value omitted>", "must be a valid JSON object"))
    nd = d.get("networkData")
    if isinstance(nd, dict):
        nf = f"{f}.networkData"
        if len(_str(nd.get("interfaceName")).encode()) > NetworkDeviceDataInterfaceNameMaxLength:
            errs.append(_too_long(f"{nf}.interfaceName", NetworkDeviceDataInterfaceNameMaxLength))
        if len(_str(nd.get("hardwareAddress")).encode()) > NetworkDeviceDataHardwareAddressMaxLength:
            errs.append(_too_long(f"{nf}.hardwareAddress", NetworkDeviceDataHardwareAddressMaxLength))
        ips = nd.get("ips") or []
        if len(ips) > NetworkDeviceDataMaxIPs:
            errs.append((f"{nf}.ips", f"Too many: {len(ips)}: must have at most {NetworkDeviceDataMaxIPs} items"))
        else:
            seen = set()
            for i, ip in enumerate(ips):
                problem = _valid_interface_address(_str(ip))
                if problem:
                    errs.append(_invalid(f"{nf}.ips[{i}]", ip, problem))
                if ip in seen:
                    errs.append((f"{nf}.ips[{i}]", f"Duplicate value: {go_value(ip)}"))
                seen.add(ip)
    return errs


def validate_claim_status(status, old_status, deleted, spec):
    """validateResourceClaimStatusUpdate"""
    status, old_status = status or {}, old_status or {}
    errs = []
    reserved = status.get("reservedFor") or []
    if len(reserved) > ResourceClaimReservedForMaxSize:
        errs.append(("status.reservedFor", f"Too many: {len(reserved)}: must have at most "
                                           f"{ResourceClaimReservedForMaxSize} items"))
    else:
        uids = set()
        for i, r in enumerate(reserved):
            for k in ("resource", "name", "uid"):
                if not _str(r.get(k)):
                    errs.append(_required(f"status.reservedFor[{i}].{k}"))
            if r.get("uid") in uids:
                errs.append((f"status.reservedFor[{i}]", f"Duplicate value: {go_value(r.get('uid'))}"))
            uids.add(r.get("uid"))
    alloc = status.get("allocation")
    allocated = set()
    for r in ((alloc or {}).get("devices") or {}).get("results") or []:
        if isinstance(r, dict):
            allocated.add(canon_json(_shared_device_id(r)))
    seen = set()
    for i, d in enumerate(status.get("devices") or []):
        errs += _validate_device_status(d, f"status.devices[{i}]", allocated)
        sid = canon_json(_shared_device_id(d))
        if sid in seen:
            errs.append((f"status.devices[{i}]", f"Duplicate value: {go_value(_shared_device_id(d))}"))
        seen.add(sid)
    if reserved:
        if alloc is None:
            errs.append(("status.reservedFor", "Forbidden: may not be specified when `allocated` is not set"))
        elif deleted:
            old_uids = {r.get("uid") for r in old_status.get("reservedFor") or []}
            if any(r.get("uid") not in old_uids for r in reserved):
                errs.append(("status.reservedFor", "Forbidden: new entries may not be added while "
                                                   "`deallocationRequested` or `deletionTimestamp` are set"))
    old_alloc = old_status.get("allocation")
    if old_alloc is not None and alloc is not None:
        if canon_json(old_alloc) != canon_json(alloc):
            errs.append(_invalid("status.allocation", alloc, "field is immutable"))
    elif alloc is not None:
        results = (alloc.get("devices") or {}).get("results") or []
        if len(results) > AllocationResultsMaxSize:
            errs.append(("status.allocation.devices.results", f"Too many: {len(results)}: must have at most "
                                                              f"{AllocationResultsMaxSize} items"))
        names = _request_names(spec)
        for i, r in enumerate(results):
            rf = f"status.allocation.devices.results[{i}]"
            errs += _request_ref(r.get("request"), f"{rf}.request", names)
            errs += _driver_name(r.get("driver"), f"{rf}.driver")
            errs += _pool_name(r.get("pool"), f"{rf}.pool")
            errs += _device_name(r.get("device"), f"{rf}.device")
    return errs


def _validate_attribute(a, f):
    errs, n = [], 0
    for k in ("int", "bool", "string", "version"):
        if k in a:
            n += 1
    if "string" in a and len(_str(a["string"]).encode()) > DeviceAttributeMaxValueLength:
        errs.append(_too_long(f"{f}.string", DeviceAttributeMaxValueLength))
    if "version" in a:
        if not _SEMVER.match(_str(a["version"])):
            errs.append(_invalid(f"{f}.version", a["version"],
                                 "must be a string compatible with semver.org spec 2.0.0"))
        if len(_str(a["version"]).encode()) > DeviceAttributeMaxValueLength:
            errs.append(_too_long(f"{f}.version", DeviceAttributeMaxValueLength))
    if n == 0:
        errs.append(_invalid(f, "", "exactly one value must be specified"))
    elif n > 1:
        errs.append(_invalid(f, a, "exactly one value must be specified"))
    return errs


def _validate_qualified_name(name, f):
    parts = name.split("/")
    errs = []
    if len(parts) > 2:
        return [_invalid(f, name, "must not contain more than one slash")]
    ident = parts[-1]
    if len(parts) == 2:
        if not parts[0]:
            errs.append(_invalid(f, "", "the domain must not be empty"))
        else:
            errs += _driver_name(parts[0], f)
        if not ident:
            errs.append(_invalid(f, "", "the name must not be empty"))
            return errs
    if len(ident) > 32:
        errs.append(_too_long(f, 32))
    if not _C_IDENTIFIER.match(ident):
        errs.append(_invalid(f, ident, _regex_error("a valid C identifier must start with alphabetic character or "
                                                    "'_', followed by a string of alphanumeric characters or '_'",
                                                    "[A-Za-z_][A-Za-z0-9_]*", "my_name", "MY_NAME", "MyName")))
    return errs


def validate_slice_spec(spec, old_spec):
    errs = []
    spec = spec if isinstance(spec, dict) else {}
    errs += _driver_name(spec.get("driver"), "spec.driver")
    pool = spec.get("pool") if isinstance(spec.get("pool"), dict) else {}
    errs += _pool_name(pool.get("name"), "spec.pool.name")
    if (pool.get("resourceSliceCount") or 0) <= 0:
        errs.append(_invalid("spec.pool.resourceSliceCount", pool.get("resourceSliceCount") or 0,
                             "must be greater than zero"))
    if (pool.get("generation") or 0) < 0:
        errs.append(_invalid("spec.pool.generation", pool["generation"], "must be greater than or equal to zero"))
    if old_spec is not None:
        for f, new, old in (("spec.pool.name", pool.get("name"), (old_spec.get("pool") or {}).get("name")),
                            ("spec.driver", spec.get("driver"), old_spec.get("driver")),
                            ("spec.nodeName", spec.get("nodeName"), old_spec.get("nodeName"))):
            if new != old:
                errs.append(_invalid(f, new, "field is immutable"))
    set_fields = []
    if "nodeName" in spec:
        if spec["nodeName"]:
            set_fields.append("`nodeName`")
            errs += _dns_subdomain(_str(spec["nodeName"]), "spec.nodeName")
        else:
            errs.append(_invalid("spec.nodeName", spec["nodeName"],
                                 "must be either unset or set to a non-empty string"))
    if "nodeSelector" in spec:
        set_fields.append("`nodeSelector`")
        if len((spec["nodeSelector"] or {}).get("nodeSelectorTerms") or []) != 1:
            errs.append(_invalid("spec.nodeSelector.nodeSelectorTerms",
                                 (spec["nodeSelector"] or {}).get("nodeSelectorTerms"),
                                 "must have exactly one node selector term"))
    for k in ("allNodes", "perDeviceNodeSelection"):
        if k in spec:
            if spec[k] is True:
                set_fields.append(f"`{k}`")
            else:
                errs.append(_invalid(f"spec.{k}", spec[k], "must be either unset or set to true"))
    which = "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required"
    if not set_fields:
        errs.append(_required("spec", which))
    elif len(set_fields) > 1:
        errs.append(_invalid("spec", "{" + ", ".join(set_fields) + "}", which + ", but multiple fields are set"))
    if spec.get("sharedCounters") is not None and spec.get("devices") is not None:
        errs.append(_invalid("spec", "", "only one of `sharedCounters` or `devices` is allowed"))
    devices = spec.get("devices") or []
    if len(devices) > ResourceSliceMaxDevices:
        errs.append(("spec.devices", f"Too many: {len(devices)}: must have at most {ResourceSliceMaxDevices} items"))
        return errs
    names = set()
    for i, d in enumerate(devices):
        df = f"spec.devices[{i}]"
        errs += _device_name(d.get("name"), f"{df}.name")
        for key in sorted(d.get("attributes") or {}):
            errs += _validate_qualified_name(key, f"{df}.attributes")
            errs += _validate_attribute(d["attributes"][key], f"{df}.attributes[{key}]")
        for key in sorted(d.get("capacity") or {}):
            errs += _validate_qualified_name(key, f"{df}.capacity")
        if d.get("name") in names:
            errs.append((df, f"Duplicate value: {go_value(d.get('name'))}"))
        names.add(d.get("name"))
        if not spec.get("perDeviceNodeSelection") and any(k in d for k in ("nodeName", "nodeSelector", "allNodes")):
            errs.append((df, "Invalid value: null: `nodeName`, `nodeSelector` and `allNodes` can only be set if "
                             "`perDeviceNodeSelection` is set to true in the ResourceSlice spec"))
    return errs


def validate_class_spec(spec):
    errs = []
    for i, s in enumerate((spec or {}).get("selectors") or []):
        if not isinstance(s.get("cel"), dict):
            errs.append(_required(f"spec.selectors[{i}].cel"))
        elif not _str(s["cel"].get("expression")):
            errs.append(_required(f"spec.selectors[{i}].cel.expression"))
    for i, c in enumerate((spec or {}).get("config") or []):
        if not isinstance(c.get("opaque"), dict):
            errs.append(_required(f"spec.config[{i}].opaque"))
        else:
            errs += _driver_name(c["opaque"].get("driver"), f"spec.config[{i}].opaque.driver")
    return errs


def dra_validate(res, obj, old, sub):
    """The resource's Validate / ValidateUpdate (status: ValidateResourceClaimStatusUpdate); raises 422."""
    p, errs = res.plural, []
    if p == "resourceclaims":
        if sub == "status":
            errs = validate_claim_status(obj.get("status"), (old or {}).get("status"),
                                         bool(obj["metadata"].get("deletionTimestamp")), obj.get("spec"))
        elif old is None:
            errs = validate_claim_spec(obj.get("spec"), "spec")
        elif canon_json(obj.get("spec")) != canon_json(old.get("spec")):
            errs = [_invalid("spec", obj.get("spec"), "field is immutable")]
    elif p == "resourceclaimtemplates":
        if old is None:
            errs = validate_claim_spec((obj.get("spec") or {}).get("spec"), "spec.spec")
        elif canon_json(obj.get("spec")) != canon_json(old.get("spec")):
            errs = [_invalid("spec", obj.get("spec"), "field is immutable")]
    elif p == "resourceslices":
        errs = validate_slice_spec(obj.get("spec"), (old or {}).get("spec") if old else None)
    elif p == "deviceclasses":
        errs = validate_class_spec(obj.get("spec"))
    if errs:
        raise invalid(res, obj["metadata"].get("name", ""), errs)


def dra_selectable_fields(res, minor):
    """The field selectors the real server converts for the kind (the others are 400 BadRequest)."""
    if res.plural == "resourceslices":
        fields = ["metadata.name", "spec.nodeName", "spec.driver"]
        if minor >= 37:            # the pool-name selector is new in Kubernetes 1.37
            fields.append("spec.pool.name")
        return fields, (lambda k: f"field label not supported for {res.gv}, Kind={res.kind}: {k}")
    return ["metadata.name", "metadata.namespace"], \
        (lambda k: f'"{k}" is not a known field selector: only "metadata.name", "metadata.namespace"')


def claim_state(o):
    """resourceClaimState() of the kubectl printers."""
    st = o.get("status") or {}
    deleted = bool(o["metadata"].get("deletionTimestamp"))
    states = ["deleted"] if deleted else []
    if st.get("allocation") is None:
        if not deleted:
            states.append("pending")
    else:
        states.append("allocated")
        if st.get("reservedFor"):
            states.append("reserved")
    return ",".join(states)


# --------------------------------------------------------------------------------------------- resources


class Resource:
    def __init__(self, group, version, plural, kind, namespaced, singular="", short=(), categories=(),
                 status=False, custom=False, schema=None, columns=None, list_kind=None, crd=None, managed=False,
                 generation=False):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.singular, self.short, self.categories = namespaced, singular, list(short), list(categories)
        self.status, self.custom, self.schema, self.columns = status, custom, schema, columns
        self.list_kind = list_kind or kind + "List"
        self.crd = crd
        self.managed = managed          # metadata.managedFields tracked, server-side apply served
        self.generation = generation    # metadata.generation starts at 1 and counts spec changes

    @property
    def dra(self):
        return self.group == DRA_GROUP and not self.custom

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
        Resource(DRA_GROUP, "v1", "deviceclasses", "DeviceClass", False, "deviceclass", managed=True,
                 generation=True),
        Resource(DRA_GROUP, "v1", "resourceclaims", "ResourceClaim", True, "resourceclaim", status=True,
                 managed=True),
        Resource(DRA_GROUP, "v1", "resourceclaimtemplates", "ResourceClaimTemplate", True, "resourceclaimtemplate",
                 managed=True),
        Resource(DRA_GROUP, "v1", "resourceslices", "ResourceSlice", False, "resourceslice", managed=True,
                 generation=True),
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
        self.floor = self.rv         # watches (and continue tokens) from an RV below this get 410 Expired
        self.skey_floors = {}        # (group, plural) -> RV of its newest event dropped from the history
        self.snapshots = collections.OrderedDict()   # (skey, rv) -> (sorted keys, objects): paginated lists
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
            dropped = self.history[0]
            self.skey_floors[dropped[2]] = dropped[0]
        self.history.append((int(obj["metadata"]["resourceVersion"]), typ, res.skey, copy.deepcopy(obj)))
        self.cond.notify_all()

    def watch_floor(self, skey):
        """A watch of this resource from an RV below this is 410 Expired: the history no longer has all of the
        resource's later events (one --history buffer for all resources; like the real per-resource watch caches,
        events of other resources dropped from it do not expire a watch), or the RV is from before a compaction."""
        return max(self.floor, self.skey_floors.get(skey, 0))

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
    def validate(self, res, obj, q, old=None, sub=None):
        """Returns warnings; raises ApiError on invalid objects. old: the stored object on updates; sub: "status"
        for the status subresource."""
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
        if res.dra:
            warnings += dra_decode_check(res, obj, q)
            dra_prepare(res, obj, old, sub)
            dra_validate(res, obj, old, sub)
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
        if res.custom or res.plural == "customresourcedefinitions" or res.generation:
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
        elif res.status and not res.dra:
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

    def create(self, res, ns, obj, q, manager=None, managed=None, bulk=False):
        """manager: the request's field manager; managed: the ManagedFields to record instead of an Update entry
        (server-side apply creating the object). bulk: POST /_test/bulk (no save, returns None)."""
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
            if res.managed:
                if managed is None:
                    managed = ManagedFields()
                    managed.update(manager, res.gv, None, {}, field_scope(obj, None), self.list_types(res))
                md["managedFields"] = managed.encode()
                if not md["managedFields"]:
                    del md["managedFields"]
            if dry:
                md["resourceVersion"] = str(self.rv)
                return self.out(res, obj), warnings
            md["resourceVersion"] = self.bump()
            store[(md.get("namespace"), name)] = obj
            if res.plural == "customresourcedefinitions":
                self.register_crd(obj)
            self.emit("ADDED", res, obj)
            if bulk:
                return None
            self.save()
            return self.out(res, obj), warnings

    def get(self, res, ns, name):
        with self.lock:
            obj = self.objects[res.skey].get((ns if res.namespaced else None, name))
            if obj is None:
                raise not_found(res, name)
            return obj

    def list_types(self, res):
        """The `+listType=map|set` lists of the resource (server-side apply merges them by key)."""
        return dra_list_types(res) if res.dra else COMMON_LIST_TYPES

    def check_field_selector(self, res, reqs):
        """The real server converts field selectors per kind and rejects the ones it cannot (400); done for the
        DRA kinds, the other resources accept any path."""
        if not res.dra:
            return
        allowed, message = dra_selectable_fields(res, self.args.minor)
        for _, k, _ in reqs:
            if k not in allowed:
                raise bad_request(message(k))

    def list(self, res, ns, q):
        """All matching objects (no pagination) and the list RV."""
        items, rv, _, _ = self.list_page(res, ns, {k: v for k, v in q.items() if k not in ("limit", "continue")})
        return [copy.deepcopy(o) for o in items], rv

    def _snapshot(self, skey):
        """(sorted store keys, objects) of one resource at the current RV. Stored objects are replaced, never
        changed in place, so a snapshot is a consistent view for the continue pages of a list."""
        cached = self.snapshots.get((skey, self.rv))
        if cached is not None:
            self.snapshots.move_to_end((skey, self.rv))
            return cached
        res = self.any_res(skey)
        rows = sorted(((store_key(res, ons, name) if res else name, o)
                       for (ons, name), o in self.objects[skey].items()), key=lambda r: r[0])
        snap = ([k for k, _ in rows], [o for _, o in rows])
        self.snapshots[(skey, self.rv)] = snap
        while len(self.snapshots) > 64:
            self.snapshots.popitem(last=False)
        return snap

    def list_page(self, res, ns, q):
        """A list request with `limit` / `continue` as the real server (etcd3 store) serves it. Returns (items,
        list RV, continue token or "", remainingItemCount or None). The continue pages are served from the
        snapshot of the first page (a consistent list at its RV); a token whose RV is below the compacted floor
        is 410 Expired (with a token to continue inconsistently at the latest RV, rv -1); resourceVersion=0 is
        served "from the watch cache", which ignores limit (unless --paginate-rv0)."""
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"))
        self.check_field_selector(res, fsel)
        limit_s, cont = q.get("limit", ""), q.get("continue", "")
        rvq, rvm = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
        try:
            limit = int(limit_s) if limit_s else 0
        except ValueError:
            raise bad_request(f'strconv.ParseInt: parsing "{limit_s}": invalid syntax')
        start = ""
        if cont:
            if rvm:
                raise invalid_kind("ListOptions", "meta.k8s.io", "", [
                    ("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden when continue is provided")])
            if rvq not in ("", "0"):
                raise bad_request("specifying resource version is not allowed when using continue")
            start, crv = decode_continue(cont)
        elif rvq == "0" and not self.args.paginate_rv0:
            limit = 0
        prefix = f"{ns}/" if res.namespaced and ns is not None else ""
        with self.lock:
            if cont and crv != -1:
                snap = self.snapshots.get((res.skey, crv)) if crv >= self.floor else None
                if snap is None:      # compacted (or the snapshot is gone, which a compaction would also do)
                    raise self._continue_expired(start)
                rv = crv
            else:
                snap, rv = self._snapshot(res.skey), self.rv
            keys, objs = snap
            n = len(keys)
            j = bisect.bisect_left(keys, prefix + start)
            items, last_key, more = [], None, False
            while j < n and keys[j].startswith(prefix):
                if limit > 0 and len(items) >= limit:
                    more = True
                    break
                o = objs[j]
                if label_match(lsel, o) and field_match(fsel, o):
                    items.append(o)
                last_key = keys[j]
                j += 1
            token, remaining = "", None
            if more:
                token = encode_continue(rv, last_key[len(prefix):] + "\x00")
                if not lsel and not fsel:
                    hi = bisect.bisect_left(keys, prefix[:-1] + "0") if prefix else n
                    remaining = hi - j
            return items, str(rv), token, remaining

    def _continue_expired(self, start):
        e = ApiError(410, "Expired", CONTINUE_EXPIRED)
        e.list_continue = encode_continue(-1, start)
        return e

    def res_for_kind(self, api_version, kind):
        for r in self.resources.values():
            if r.gv == api_version and r.kind == kind:
                return r
        return None

    def compact(self):
        """Compacts the watch history at the current RV: the RV moves on by one (an RV no object has), the floor
        becomes that RV and the history is dropped, so every open watch (its last RV is below the floor) gets a 410
        ERROR event and a watch or a continue token from an older RV gets 410."""
        with self.lock:
            self.rv += 1
            self.floor = self.rv
            self.history.clear()
            self.skey_floors.clear()
            self.snapshots.clear()
            self.cond.notify_all()
            self.save()
            return self.floor

    def bulk_create(self, objects, create_namespaces=True):
        """Creates many objects as POSTs would (RVs, uid, creationTimestamp, defaults, validation, ADDED events),
        under one lock hold and with one save. A namespaced object without metadata.namespace goes to "default";
        missing namespaces are created unless create_namespaces is false (then 404 as for a POST)."""
        counts, errors, namespaces = collections.Counter(), [], 0
        ns_res = self.res("", "v1", "namespaces")
        with self.lock:
            for i, obj in enumerate(objects):
                try:
                    if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
                        raise bad_request("the object must be a JSON object with a metadata object")
                    av, kind = obj.get("apiVersion"), obj.get("kind")
                    res = self.res_for_kind(av, kind)
                    if res is None:
                        raise ApiError(404, "NotFound", f'no matches for kind "{kind}" in version "{av}"')
                    ns = None
                    if res.namespaced:
                        ns = (obj.get("metadata") or {}).get("namespace") or "default"
                        if create_namespaces and not self.ns_exists(ns):
                            self.create(ns_res, None, {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": ns}}, {}, bulk=True)
                            namespaces += 1
                    self.create(res, ns, obj, {}, bulk=True)
                    counts[res.plural if not res.group else f"{res.plural}.{res.group}"] += 1
                except ApiError as e:
                    errors.append({"index": i, "code": e.code, "reason": e.reason or "", "message": e.message})
            self.save()
            return {"created": sum(counts.values()), "namespacesCreated": namespaces, "byResource": dict(counts),
                    "errors": errors, "resourceVersion": str(self.rv), "floor": str(self.floor),
                    "watchFloors": {f"{p}.{g}" if g else p: str(self.watch_floor((g, p))) for g, p in self.skey_floors}}

    def update(self, res, ns, name, body, sub, q, patch_base=None, manager=None):
        """PUT semantics (also used by PATCH with the patched object). Returns (status code, object, warnings).
        manager: the field manager recorded in metadata.managedFields (managed resources only)."""
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
            warnings = self.validate(res, new, q, old=cur, sub=sub)
            if res.plural == "customresourcedefinitions":
                self._crd_status(new, cur)
            if res.custom or res.plural == "customresourcedefinitions" or res.generation:
                def spec_of(o):
                    return {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}
                if spec_of(new) != spec_of(cur):
                    nmd["generation"] = cmd.get("generation", 1) + 1
            if res.managed:
                self._track_update(res, cur, new, md, sub, manager)
            if strip_volatile(new) == strip_volatile(cur) and managed_signature(new) == managed_signature(cur):
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

    def patch(self, res, ns, name, raw, ctype, sub, q, manager=None):
        ctype = (ctype or "").split(";")[0].strip().lower()
        accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        if ctype == "application/strategic-merge-patch+json" and res.custom:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: {accepted}")
        if ctype == "application/apply-patch+yaml":
            if res.managed:
                return self.apply(res, ns, name, raw, sub, q)
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
            return self.update(res, ns, name, new, sub, q, manager=manager)

    def _track_update(self, res, cur, new, body_md, sub, manager):
        """metadata.managedFields of `new` after an update/patch by `manager`. On the main resource a request may
        replace the managed fields (an empty list resets them); on a subresource the stored ones are kept."""
        managed = ManagedFields.of(cur)
        if not sub and isinstance(body_md, dict) and "managedFields" in body_md:
            given = body_md["managedFields"]
            if given == [] or given == [{}]:
                managed = ManagedFields()
            else:
                try:
                    decoded = ManagedFields.decode(given)
                    if decoded.entries:
                        managed = decoded
                except (ValueError, TypeError, AttributeError):
                    pass
        managed.update(manager, res.gv, sub, field_scope(cur, sub), field_scope(new, sub), self.list_types(res))
        self._set_managed(new, managed)

    @staticmethod
    def _set_managed(obj, managed):
        encoded = managed.encode()
        if encoded:
            obj["metadata"]["managedFields"] = encoded
        else:
            obj["metadata"].pop("managedFields", None)

    def apply(self, res, ns, name, raw, sub, q):
        """Server-side apply (PATCH application/apply-patch+yaml) on the resource or its status subresource.
        Returns (status code, object, warnings); 201 when the apply created the object."""
        manager, force = q.get("fieldManager", ""), parse_bool(q.get("force", ""))
        cfg = parse_apply_body(raw)
        api_version = cfg.get("apiVersion") if isinstance(cfg.get("apiVersion"), str) else ""
        if api_version != res.gv:
            raise bad_request(f"Incorrect version specified in apply patch. Specified patch version: {api_version}, "
                              f"expected: {res.gv}")
        md = cfg.get("metadata")
        if md is None:
            md = cfg["metadata"] = {}
        if not isinstance(md, dict):
            raise bad_request("error decoding YAML: metadata must be an object")
        if md.get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil")
        kind = cfg.get("kind") if isinstance(cfg.get("kind"), str) else ""
        gvk = f"{res.group}/{res.version}, Kind={kind}"
        where = f"{md.get('namespace') or ''}/{md.get('name') or ''}; {gvk}"
        problem = f"no corresponding type for {gvk}" if kind != res.kind else (
            dra_typed_check(res, cfg) if res.dra else None)
        if problem:        # a plain error in the real server: 500 without a reason
            raise ApiError(500, None, f"failed to create typed patch object ({where}): {problem}")
        lt = self.list_types(res)
        with self.lock:
            cur = self.objects[res.skey].get((ns if res.namespaced else None, name))
            if cur is None:
                if sub:
                    raise not_found(res, name)
                if md.get("uid"):
                    raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": uid '
                                   f'mismatch: the provided object specified uid {md["uid"]}, and no existing object '
                                   "was found", details_for(res, name))
                managed = ManagedFields()
                scope = managed.apply(manager, res.gv, None, {}, field_scope(cfg, None), force, lt)
                self._check_applied_name(res, ns, name, md.get("name") or "", md.get("namespace"))
                obj = replace_scope({"apiVersion": res.gv, "kind": res.kind, "metadata": {"name": name}}, scope, None)
                if res.namespaced:
                    obj["metadata"]["namespace"] = ns
                created, warnings = self.create(res, ns, obj, q, managed=managed)
                return 201, created, warnings
            cmd = cur["metadata"]
            if md.get("resourceVersion") and md["resourceVersion"] != cmd["resourceVersion"]:
                raise conflict(res, name)
            if md.get("uid") and md["uid"] != cmd["uid"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                               f'Precondition failed: UID in precondition: {md["uid"]}, UID in object meta: '
                               f'{cmd["uid"]}', details_for(res, name))
            managed = ManagedFields.of(cur)
            scope = managed.apply(manager, res.gv, sub, field_scope(cur, sub), field_scope(cfg, sub), force, lt)
            self._check_applied_name(res, ns, name, md.get("name") or name, md.get("namespace"))
            new = replace_scope(copy.deepcopy(cur), scope, sub)
            warnings = self.validate(res, new, q, old=cur, sub=sub)
            if res.generation:
                def spec_of(o):
                    return {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}
                if spec_of(new) != spec_of(cur):
                    new["metadata"]["generation"] = cmd.get("generation", 1) + 1
            self._set_managed(new, managed)
            if strip_volatile(new) == strip_volatile(cur) and managed_signature(new) == managed_signature(cur):
                return 200, self.out(res, cur), warnings
            if q.get("dryRun") == "All":
                return 200, self.out(res, new), warnings
            new["metadata"]["resourceVersion"] = self.bump()
            self.objects[res.skey][(ns if res.namespaced else None, name)] = new
            self.emit("MODIFIED", res, new)
            self.save()
            return 200, self.out(res, new), warnings

    @staticmethod
    def _check_applied_name(res, ns, name, obj_name, obj_ns):
        """checkName() on the applied object: 400 when its name or namespace differ from the URL's."""
        if obj_name != name:
            raise bad_request(f"the name of the object ({obj_name}) does not match the name on the URL ({name})")
        if res.namespaced and obj_ns and obj_ns != ns:
            raise bad_request(f"the namespace of the object ({obj_ns}) does not match the namespace on the URL ({ns})")

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
        elif res.dra and res.plural == "resourceclaims":
            cols += [("State", "string", "", "A summary of the current state (allocated, pending, reserved, etc.).", 0),
                     ("Age", "string", "", "CreationTimestamp", 0)]

            def cells(o):
                return [o["metadata"]["name"], claim_state(o), age_of(o)]
        elif res.dra and res.plural == "resourceslices":
            cols += [("Node", "string", "", "NodeName identifies the node which provides the resources in this "
                                            "pool.", 0),
                     ("Driver", "string", "", "Driver identifies the DRA driver providing the capacity "
                                              "information.", 0),
                     ("Pool", "string", "", "Name is used to identify the pool.", 0),
                     ("Age", "string", "", "CreationTimestamp", 0)]

            def cells(o):
                sp = o.get("spec") or {}
                return [o["metadata"]["name"], sp.get("nodeName") or "", sp.get("driver") or "",
                        (sp.get("pool") or {}).get("name") or "", age_of(o)]
        elif res.dra:
            cols += [("Age", "string", "", "CreationTimestamp", 0)]

            def cells(o):
                return [o["metadata"]["name"], age_of(o)]
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
            items, rv, token, remaining = st.list_page(res, ns, q)
            lmd = {"resourceVersion": rv}
            if token:
                lmd["continue"] = token
            if remaining is not None:
                lmd["remainingItemCount"] = remaining
            if tv:
                t = st.table(res, items, rv, tv, include)
                t["metadata"] = lmd
                return self.send_obj(200, t, TABLE_CT.format(v=tv))
            return self.send_obj(200, {"kind": res.list_kind, "apiVersion": res.gv, "metadata": lmd,
                                       "items": [st.out(res, o, in_list=True) for o in items]})
        if verb == "watch":
            return self.watch(res, ns, q, tv, include)
        manager = q.get("fieldManager") or prefix_from_user_agent(self.headers.get("User-Agent", ""))
        if verb == "create":
            validate_write_options("CreateOptions", q)
            obj, warn = st.create(res, ns, self.parse_json_body(res), q, manager=manager)
            return self.send_obj(201, obj, headers=self.warning_headers(warn))
        if verb == "update":
            validate_write_options("UpdateOptions", q)
            code, obj, warn = st.update(res, ns, name, self.parse_json_body(res), sub, q, manager=manager)
            return self.send_obj(code, obj, headers=self.warning_headers(warn))
        if verb == "patch":
            ctype = self.headers.get("Content-Type")
            applying = (ctype or "").split(";")[0].strip().lower() == "application/apply-patch+yaml"
            validate_write_options("PatchOptions", q, apply=applying, require_manager=res.managed)
            code, obj, warn = st.patch(res, ns, name, self.body, ctype, sub, q, manager=manager)
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
        """RFC 7234 warn-text is a quoted-string: quotes and backslashes are escaped (as the apiserver does)."""
        return [("Warning", '299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"')
                for w in warnings or []]

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
        """A chunked watch. Events are ADDED/MODIFIED/DELETED (Tables with a Table Accept header), BOOKMARK
        (sendInitialEvents' initial-events-end, and every --bookmark-interval seconds with allowWatchBookmarks=true:
        the RV the watch has reached, the global RV when nothing of this resource changed) and ERROR (410 Expired
        when the history is too old or was compacted). Ends at timeoutSeconds (terminating chunk) or, without the
        terminating chunk, when POST /_test/drop-watches cuts the connection."""
        st = self.server.state
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"))
        st.check_field_selector(res, fsel)
        rvq = q.get("resourceVersion", "")
        try:
            timeout = float(q.get("timeoutSeconds") or self.server.args.watch_timeout)
        except ValueError:
            raise bad_request("invalid timeoutSeconds")
        timeout = min(timeout, self.server.args.watch_timeout)
        deadline = time.monotonic() + timeout
        send_initial = parse_bool(q.get("sendInitialEvents", ""))
        interval = self.server.args.bookmark_interval if parse_bool(q.get("allowWatchBookmarks", "")) else 0

        def matches(o):
            return (ns is None or o["metadata"].get("namespace") == ns) and label_match(lsel, o) and field_match(fsel, o)

        with st.lock:
            initial, expired = [], False
            if rvq in ("", "0") or send_initial:
                # stored objects are replaced on every write, never changed in place: no copies needed
                initial = [o for (ons, _), o in sorted(st.objects[res.skey].items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
                           if matches(o)]
                last = st.rv
            else:
                try:
                    last = int(rvq)
                except ValueError:
                    raise bad_request(f"invalid resourceVersion {rvq!r}")
                expired = last < st.watch_floor(res.skey)
        ct = TABLE_CT.format(v=tv) if tv else "application/json"
        self.log_req(200, watch=True)
        self.wfile.write(self.head_bytes(200, [("Content-Type", ct), ("Transfer-Encoding", "chunked")]))
        first = [True]
        buf, buffered = [], [0]

        def flush():
            if buf:
                data = b"".join(buf)
                buf.clear()
                buffered[0] = 0
                self.wfile.write(data)

        def send(typ, obj):
            if tv and typ != "ERROR" and typ != "BOOKMARK":
                o = st.table(res, [obj], obj["metadata"]["resourceVersion"], tv, include, with_defs=first[0])
                first[0] = False
            elif typ in ("ERROR", "BOOKMARK"):
                o = obj
            else:
                o = dict(obj)           # st.out() without the deep copy: only serialised
                o["apiVersion"], o["kind"] = res.gv, res.kind
            data = dumps({"type": typ, "object": o})
            buf.append(b"%x\r\n%s\r\n" % (len(data), data))   # one event per chunk, written in batches
            buffered[0] += len(data)
            if buffered[0] >= 65536:
                flush()

        self.watch_dropped = False
        self.server.register_watch(self, True)
        try:
            if expired:
                send("ERROR", ApiError(410, "Expired", f"too old resource version: {rvq} ({st.watch_floor(res.skey)})").body())
            else:
                for o in initial:
                    send("ADDED", o)
                initial = None
                if send_initial:
                    send("BOOKMARK", bookmark_object(res, last, {"k8s.io/initial-events-end": "true"}))
                flush()
                next_bm = time.monotonic() + interval if interval > 0 else None
                while not self.watch_dropped and time.monotonic() < deadline:
                    with st.cond:
                        floor = st.watch_floor(res.skey)
                        gone = last < floor
                        evs = [] if gone else [(rv, t, o) for rv, t, skey, o in st.history
                                               if rv > last and skey == res.skey]
                        passed = st.rv      # every event up to here is in evs (bump and emit share the lock)
                    if gone:
                        send("ERROR", ApiError(410, "Expired", f"too old resource version: {last} ({floor})").body())
                        break
                    for rv, t, o in evs:
                        last = rv
                        if matches(o):
                            send(t, o)
                    last = max(last, passed)
                    now = time.monotonic()
                    if next_bm is not None and now >= next_bm:
                        send("BOOKMARK", bookmark_object(res, last))
                        next_bm = max(next_bm + interval, now + interval / 2)
                    flush()
                    if evs:
                        continue
                    if self.client_gone():
                        break
                    wait = min(1.0, deadline - now)
                    if next_bm is not None:
                        wait = min(wait, next_bm - now)
                    with st.cond:
                        if st.rv == passed and not self.watch_dropped and wait > 0:
                            st.cond.wait(wait)
            if not self.watch_dropped:
                flush()
                self.wfile.write(b"0\r\n\r\n")
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.server.register_watch(self, False)
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
        if parts == ["compact"] and m == "POST":
            floor = srv.state.compact()
            return self.send_obj(200, {"floor": str(floor), "resourceVersion": str(srv.state.rv)})
        if parts == ["bulk"] and m == "POST":
            b = body()
            objs = b.get("objects") if isinstance(b, dict) else None
            if not isinstance(objs, list):
                raise bad_request('expected {"objects":[<object>, ...]}')
            t0 = time.monotonic()
            out = srv.state.bulk_create(objs, create_namespaces=b.get("createNamespaces", True) is not False)
            out["seconds"] = round(time.monotonic() - t0, 3)
            return self.send_obj(200, out)
        if parts == ["drop-watches"] and m == "POST":
            return self.send_obj(200, {"dropped": srv.drop_watches()})
        if parts == ["watches"] and m == "GET":
            with srv.watch_lock:
                items = [{"path": h.url_path, "query": h.url_query, "conn": h.conn_id} for h in srv.watchers]
            return self.send_obj(200, {"count": len(items), "items": items})
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
        self.watch_lock = threading.Lock()
        self.watchers = set()        # handlers serving a watch (POST /_test/drop-watches cuts them)
        super().__init__(addr, Handler)

    def register_watch(self, handler, on):
        with self.watch_lock:
            (self.watchers.add if on else self.watchers.discard)(handler)

    def drop_watches(self):
        """Cuts every open watch connection (TCP FIN at once, no terminating chunk, no TLS close_notify), as an
        apiserver restart or a network cut would. The shutdown goes through a dup of the socket's fd, so the
        SSLSocket the watch thread is using is left alone; that thread sees the flag within a second."""
        with self.watch_lock:
            handlers = list(self.watchers)
        for h in handlers:
            h.watch_dropped = True
            try:
                s = socket.fromfd(h.connection.fileno(), h.connection.family, socket.SOCK_STREAM)
                try:
                    s.shutdown(socket.SHUT_RDWR)
                finally:
                    s.close()
            except (OSError, ValueError):
                pass
        with self.state.cond:
            self.state.cond.notify_all()
        return len(handlers)

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
    ap.add_argument("--bookmark-interval", type=float, default=1.0, metavar="SECONDS",
                    help="BOOKMARK events this often on watches with allowWatchBookmarks=true (0: never; the real "
                         "server sends one about every minute)")
    ap.add_argument("--paginate-rv0", action="store_true",
                    help="honour limit on resourceVersion=0 lists too (the real watch cache ignores it)")
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
