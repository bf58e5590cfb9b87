"""Every module's RETURN documents what it returns: each module runs (present, absent, check
mode, on an SQLite datastore in tmp_path) and every key of its results is documented, every
key documented ``returned: always`` is there, and so one level down where RETURN says what a
dict (or the dicts of a list) ``contains``.

Ansible's own keys (changed, failed, msg, diff, invocation, warnings, deprecations) are left
out: a module may document ``diff`` but need not. dataplane needs root and a network
namespace, datastore_access a real etcd: their cases are project tests that use ``check``
from here (tests/test_dataplane_module.py, tests/test_datastore_access_module.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (
    COLLECTION,
    client,
    ok,
)
from ansible_collections.calico.docker.tests.unit.plugins.modules.test_docker_network import (
    FakeDocker,
    serve_engine,
)
from calico_lib import Endpoint, IPPool, Node, Profile

ANSIBLE_KEYS = frozenset({"changed", "failed", "msg", "diff", "invocation", "warnings",
                          "deprecations"})
MODULES = sorted(p.stem for p in (COLLECTION / "plugins" / "modules").glob("*.py")
                 if not p.name.startswith("_"))


def module(name: str) -> Any:
    return importlib.import_module(f"ansible_collections.calico.docker.plugins.modules.{name}")


def documented(name: str) -> dict[str, Any]:
    return yaml.safe_load(module(name).RETURN) or {}


def problems(where: str, results: list[Any], doc: dict[str, Any],
             ignore: frozenset[str] = frozenset()) -> list[str]:
    """What ``results`` (dicts, None skipped) return that ``doc`` does not document, and
    what it documents as always returned that one of them lacks."""
    found = []
    for out in results:
        if out is None:
            continue
        assert isinstance(out, dict), f"{where}: {out!r} is not a dict"
        keys = set(out) - ignore
        found += [f"{where}.{k}: returned, not documented" for k in sorted(keys - set(doc))]
        found += [f"{where}.{k}: documented as always returned, missing"
                  for k, spec in doc.items()
                  if spec.get("returned") == "always" and k not in ignore and k not in out]
        for key in sorted(keys & set(doc)):
            contains = doc[key].get("contains")
            if not contains:
                continue
            value = out[key]
            items = value if isinstance(value, list) else [value]
            found += problems(f"{where}.{key}", items, contains)
    return sorted(set(found))


def check(name: str, results: list[dict[str, Any]]) -> None:
    assert results and all(not r.get("failed") for r in results), results
    found = problems(name, results, documented(name), ignore=ANSIBLE_KEYS)
    assert not found, "\n".join(found)


# ------------------------------------------------------------------ one scenario per module

def run_ip_pool(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    mod = module("ip_pool")
    args = {"cidr": "10.65.0.0/16", "datastore": url}
    return [ok(mod, args, check=True), ok(mod, args), ok(mod, dict(args, nat_outgoing=True)),
            ok(mod, dict(args, state="absent")), ok(mod, dict(args, state="absent"))]


def run_node(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    mod = module("node")
    args = {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url}
    return [ok(mod, args, check=True), ok(mod, args), ok(mod, args),
            ok(mod, dict(args, state="absent"))]


def run_profile(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    mod = module("profile")
    args = {"name": "web", "inbound_rules": [{"protocol": "tcp", "dst_ports": [80]}],
            "datastore": url}
    return [ok(mod, args, check=True), ok(mod, args), ok(mod, args),
            ok(mod, {"name": "db", "default_rules": True, "datastore": url}),
            ok(mod, dict(args, state="absent"))]


def run_bgp_config(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    mod = module("bgp_config")
    return [ok(mod, {"datastore": url}), ok(mod, {"as_number": 65001, "datastore": url}),
            ok(mod, {"node_to_node_mesh": False, "datastore": url}, check=True)]


def run_bgp_peer(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    mod = module("bgp_peer")
    args = {"address": "10.0.0.254", "as_number": 65000, "password": "s3cret",
            "datastore": url}
    return [ok(mod, args, check=True), ok(mod, args), ok(mod, dict(args, password="other")),
            ok(mod, dict(args, state="absent")), ok(mod, dict(args, state="absent"))]


def run_bird_config(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    mod = module("bird_config")
    args = {"hostname": "host-1", "path": str(tmp_path / "bird.conf"),
            "socket": str(tmp_path / "no-bird.ctl"), "datastore": url}
    first = ok(mod, args)  # not a node yet: nothing to render
    with client(url) as c:
        c.put_node(Node("host-1", ipv4="10.0.0.1"))
    return [first, ok(mod, args, check=True), ok(mod, args), ok(mod, args)]


def run_calico_info(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    mod = module("calico_info")
    args = {"hostname": "host-1", "bird_socket": str(tmp_path / "no-bird.ctl"),
            "datastore": url}
    with client(url) as c:
        c.add_pool(IPPool("10.65.0.0/16"))
        c.add_profile(Profile.with_default_rules("web"))
        c.put_node(Node("host-1", ipv4="10.0.0.1"))
        c.add_endpoint(Endpoint("e1", "host-1", "cali0000000e1", ipv4_nets=["10.65.0.1"],
                                profiles=["web"]))
        c.add_endpoint(Endpoint("e2", "host-1", "cali0000000e2", ipv4_nets=["10.65.0.2"],
                                profiles=["web"]))
    explain = [{"from": "10.65.0.1", "to": "10.65.0.2", "port": 80},
               {"from": "10.65.0.2", "to": "192.0.2.9"}]
    return [ok(mod, args), ok(mod, dict(args, explain=explain), check=True)]


def run_docker_network(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    mod = module("docker_network")
    fake = FakeDocker()
    with serve_engine(fake, str(tmp_path / "docker.sock")) as host:
        args = {"name": "frontend", "subnet": ["10.65.0.0/16"], "docker_host": host}
        return [ok(mod, args, check=True), ok(mod, args), ok(mod, args),
                ok(mod, dict(args, subnet=[], recreate=True)),
                ok(mod, dict(args, state="absent")), ok(mod, dict(args, state="absent"))]


SCENARIOS: dict[str, Callable[[str, Path], list[dict[str, Any]]]] = {
    "bgp_config": run_bgp_config, "bgp_peer": run_bgp_peer, "bird_config": run_bird_config,
    "docker_network": run_docker_network, "calico_info": run_calico_info, "ip_pool": run_ip_pool,
    "node": run_node, "profile": run_profile,
}
#: the modules whose scenarios need more than a file: project tests (root, etcd)
NEEDS_MORE = {"dataplane", "datastore_access"}


def test_every_module_has_a_scenario() -> None:
    assert sorted(set(SCENARIOS) | NEEDS_MORE) == MODULES


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_return_is_documented(name: str, url: str, tmp_path: Path) -> None:
    check(name, SCENARIOS[name](url, tmp_path))


def test_the_checker_finds_what_is_missing() -> None:
    doc = {"a": {"returned": "always", "type": "dict",
                 "contains": {"b": {"returned": "always"}, "c": {"returned": "success"}}},
           "d": {"returned": "changed"}}
    assert problems("m", [{"a": {"b": 1}, "d": 1}], doc) == []
    assert problems("m", [{"a": {"b": 1}, "changed": True}], doc, ANSIBLE_KEYS) == []
    assert problems("m", [{"a": {"c": 1}, "e": 2}], doc) == [
        "m.a.b: documented as always returned, missing", "m.e: returned, not documented"]
    assert problems("m", [{}], doc) == ["m.a: documented as always returned, missing"]
