"""Core: bad input. Each case must exit 1 with exactly one spec error JSON on stdout (nothing else), the right code,
the offending key/variable named, and nothing executed or written."""

import json
import os
import stat

import pytest

from testenv.lib import plexus as px
from testenv.lib.plexus import Pod

ERROR_KEYS = {"cniVersion", "code", "msg", "details"}


def base_config(pxenv, **over):
    cfg = pxenv.config("1.0.0", [px.conflist("pxok", "1.0.0", [px.fake(recordDir=pxenv.rec_dir)])])
    cfg.update(over)
    return cfg


def evil_setup(pxenv):
    """binDir = <tmp>/bin/sub; <tmp>/bin/evil would record its execution in a marker file."""
    bindir = pxenv.dir("bin/sub")
    evil = os.path.join(os.path.dirname(bindir), "evil")
    marker = os.path.join(pxenv.tmp, "evil-ran")
    with open(evil, "w") as f:
        f.write("#!/bin/sh\necho ran >> %s\necho '{\"cniVersion\":\"1.0.0\"}'\n" % marker)
    os.chmod(evil, stat.S_IRWXU)
    return bindir, marker


# (id, how to build (stdin, env overrides), expected code, words that must appear in msg+details)
def cases():
    def malformed(e):
        return '{"cniVersion": "1.0.0", "name": "pxnet", "type": "plexus", "delegates": [', {}
    def bindir_type(e):
        return base_config(e, binDir=5), {}
    def bindir_list(e):
        return base_config(e, binDir=["/usr/lib/cni"]), {}
    def delegates_type(e):
        return base_config(e, delegates={"type": "bridge"}), {}
    def delegates_string(e):
        return base_config(e, delegates="pxok"), {}
    def delegates_elem(e):
        return base_config(e, delegates=[5]), {}
    def evil_relative(e):
        bindir, _ = evil_setup(e)
        return base_config(e, binDir=bindir, delegates=[px.conflist("pxevil", "1.0.0", [{"type": "../evil"}])]), \
            {"cni_path": bindir}
    def evil_second(e):
        bindir, _ = evil_setup(e)
        ok = px.conflist("pxok", "1.0.0", [px.fake(recordDir=e.rec_dir)])
        return base_config(e, binDir=bindir, delegates=[ok, px.conflist("pxevil", "1.0.0", [
            px.fake(recordDir=e.rec_dir), {"type": "../evil"}])]), {}
    def evil_absolute(e):
        bindir, _ = evil_setup(e)
        return base_config(e, binDir=bindir, delegates=[px.conflist("pxevil", "1.0.0", [
            {"type": os.path.join(os.path.dirname(bindir), "evil")}])]), {}
    def missing_netns(e):
        return base_config(e), {"netns": None}
    def missing_all(e):
        return base_config(e), {"netns": None, "cid": None, "ifname": None}
    def bad_cid_slash(e):
        return base_config(e), {"cid": "pxbad/../id"}
    def bad_cid_dash(e):
        return base_config(e), {"cid": "-pxbad"}
    def bad_cid_space(e):
        return base_config(e), {"cid": "pxbad id"}
    def ifname_long(e):
        return base_config(e), {"ifname": "pxifname0123456789"}
    def ifname_slash(e):
        return base_config(e), {"ifname": "px/eth0"}
    def version_999(e):
        return base_config(e, cniVersion="9.9.9"), {}
    def version_not_string(e):
        return base_config(e, cniVersion=1.0), {}
    def unknown_command(e):
        return base_config(e), {"command": "PXNOPE"}
    def bad_cni_args(e):
        return base_config(e), {"cni_args": "IgnoreUnknown=1;NOEQUALS"}
    def gc_on_100(e):
        return base_config(e), {"command": "GC"}
    def not_object(e):
        return "[1, 2, 3]", {}
    def no_networks(e):
        c = base_config(e)
        del c["delegates"]
        return c, {}
    return [
        ("malformed-json", malformed, 6, []),
        ("binDir-number", bindir_type, 7, ["binDir"]),
        ("binDir-list", bindir_list, 7, ["binDir"]),
        ("delegates-object", delegates_type, 7, ["delegates"]),
        ("delegates-string", delegates_string, 7, ["delegates"]),
        ("delegates-element", delegates_elem, 7, ["delegates"]),
        ("type-dotdot", evil_relative, 7, ["../evil"]),
        ("type-dotdot-in-2nd-network", evil_second, 7, ["../evil"]),
        ("type-absolute", evil_absolute, 7, ["evil"]),
        ("missing-CNI_NETNS", missing_netns, 4, ["CNI_NETNS"]),
        ("missing-all", missing_all, 4, ["CNI_NETNS", "CNI_CONTAINERID", "CNI_IFNAME"]),
        ("cid-slash", bad_cid_slash, 4, ["containerID"]),
        ("cid-leading-dash", bad_cid_dash, 4, ["containerID"]),
        ("cid-space", bad_cid_space, 4, ["containerID"]),
        ("ifname-too-long", ifname_long, 4, ["interface name"]),
        ("ifname-slash", ifname_slash, 4, ["interface name"]),
        ("cniVersion-9.9.9", version_999, 1, ["9.9.9"]),
        ("cniVersion-number", version_not_string, 7, ["cniVersion"]),
        ("unknown-command", unknown_command, 4, ["PXNOPE"]),
        ("CNI_ARGS-syntax", bad_cni_args, 4, ["NOEQUALS"]),
        ("GC-needs-1.1.0", gc_on_100, 1, []),
        ("config-not-object", not_object, 6, []),
        ("no-networks", no_networks, 7, ["delegates", "clusterNetwork"]),
    ]


CASES = cases()


@pytest.mark.parametrize("name,build,code,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(pxenv, name, build, code, words):
    pod = Pod(pxenv)
    stdin, over = build(pxenv)
    command = over.pop("command", "ADD")
    kw = {"cid": pod.cid, "netns": pod.netns_path, "ifname": "eth0", "cni_args": pod.args}
    kw.update(over)
    r = pxenv.px.run(command, stdin, **kw)

    assert r.code == 1, r
    # stdout: exactly one JSON object with the spec's error keys, nothing else
    assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1, r
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict) and set(doc) <= ERROR_KEYS and {"code", "msg"} <= set(doc), doc
    assert doc["code"] == code, r
    text = doc["msg"] + " " + doc.get("details", "")
    for w in words:
        assert w in text, "%r not named in %r" % (w, text)

    # nothing executed, nothing written, nothing in the pod
    assert not os.path.exists(pxenv.rec_dir) or os.listdir(pxenv.rec_dir) == [], os.listdir(pxenv.rec_dir)
    assert not os.path.exists(os.path.join(pxenv.tmp, "evil-ran")), "the ../evil binary was executed"
    assert pxenv.cache_files() == []
    assert pod.links() == []


def test_version(pxenv):
    r = pxenv.px.run("VERSION", "", cid=None, netns=None, ifname=None)
    assert r.code == 0, r
    assert r.out["supportedVersions"] == ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"], r.out
    # with a config on stdin too, and whatever the other variables say
    r = pxenv.px.run("VERSION", '{"cniVersion": "0.4.0"}', cid="-bad/", netns=None, ifname="x" * 20)
    assert r.code == 0 and r.out["supportedVersions"][-1] == "1.1.0" and r.stdout.count("\n") == 1, r


def test_errors_only_on_stdout_logs_only_on_stderr(pxenv):
    """A failing delegate: stdout carries only the error JSON; the debug log goes to stderr."""
    cfg = pxenv.config("1.0.0", [px.conflist("pxfail", "1.0.0", [px.fake(fail={"ADD": {"code": 11, "msg": "pxno"}})])])
    pod = Pod(pxenv)
    r = pod.add(cfg)
    assert r.code == 1 and r.stdout.count("\n") == 1 and json.loads(r.stdout)["code"] == 11, r
    assert "pxno" in r.stderr and "[error]" in r.stderr, r.stderr
    assert pxenv.cache_files() == []
