"""Hostile input on every surface (the integrity issue: "nothing is stored that cannot be
rendered, nothing crashes, every refusal is one line").

Generated adversarial values (hypothesis: control characters, line and paragraph separators,
invisible and format characters, lone surrogates, unicode look-alikes and digits, strings of
200+ characters, YAML-block-scalar values such as ``"web\\n"``, names equal to other objects'
kernel names, and wrong types) are fed to

- the Python API: every model constructor and ``from_dict``, and every ``Client`` write
  method and ``ipam`` assignment and release;
- calicoctl, in process (``cli.main(argv)``): ``pool add``, ``profile add``, ``profile rule
  add``, ``node add``, ``endpoint add``, ``bgp peer add``;
- the Docker plugin's two sockets: a Docker flow whose bodies have hostile fields, any body on
  any call, and Docker networks (the fake Docker API's names) with hostile names;
- the Ansible modules' ``main()``.

Each surface either accepts the input or refuses it with one printable line (naming the field
where the surface promises that); nothing crashes; and whatever was stored still renders: no
unreadable record, ``render_policy`` and ``render_bird`` succeed, every rule, ipset and BIRD
line is printable ASCII, chains fit 28 and sets 31 characters, every kernel name has one owner,
every jump and set a rule names exists (``assert_renders``). ``test_kernel_accepts_...`` runs
rendered text through ``ipset restore``, ``iptables-restore --test``, ``ip6tables-restore
--test`` and ``bird -p`` in a throwaway network namespace.

Known defects (``D1`` ... ``D16``, see ``DEFECTS``) each have an ``xfail(strict=True)``
regression test at the end of this file. The property tests tolerate exactly those defects
where they show (the ``known=`` sets, ``known_defect`` and the predicates named after each
defect) and keep guarding everything else. When a defect is fixed its regression test passes,
which fails the run (strict): then drop the mark and the defect's tolerance.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netaddr
import pytest
from ansible.module_utils import basic
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import calico_lib
from ansible_collections.calico.docker.plugins.modules import (
    bgp_config as bgp_config_module,
)
from ansible_collections.calico.docker.plugins.modules import (
    bgp_peer as bgp_peer_module,
)
from ansible_collections.calico.docker.plugins.modules import (
    bird_config as bird_config_module,
)
from ansible_collections.calico.docker.plugins.modules import (
    calico_info as calico_info_module,
)
from ansible_collections.calico.docker.plugins.modules import (
    dataplane as dataplane_module,
)
from ansible_collections.calico.docker.plugins.modules import (
    docker_network as docker_network_module,
)
from ansible_collections.calico.docker.plugins.modules import (
    ip_pool as ip_pool_module,
)
from ansible_collections.calico.docker.plugins.modules import node as node_module
from ansible_collections.calico.docker.plugins.modules import (
    profile as profile_module,
)
from ansible_collections.calico.docker.tests.unit.plugins.modules import helpers
from calico_lib import cli, keys
from calico_lib.client import Client
from calico_lib.datastore.sqlite import SqliteDatastore
from calico_lib.errors import CalicoError, ValidationError
from calico_lib.model import (
    ACTIONS,
    HOSTNAME_RE,
    IFNAME_RE,
    LABEL_KEY_RE,
    LABEL_VALUE_RE,
    NAME_RE,
    PROTOCOLS,
    AgentConfig,
    BGPConfig,
    BGPPeer,
    Endpoint,
    IPAMConfig,
    IPPool,
    Node,
    Profile,
    Rule,
)
from calico_lib.plugin.driver import Driver, host_veth
from calico_lib.plugin.server import INTERNAL_ERROR, routes
from calico_lib.records import check_records, decode_all
from calico_lib.render import names
from calico_lib.render.bird import render_bird
from calico_lib.render.policy import Policy, RuleRenderer, render_policy
from calico_lib.snapshot import Snapshot, load_snapshot
from tests import netns
from tests.dockerlab import post, serving
from tests.netns import inside
from tests.test_plugin_protocol import (
    EP,
    NET,
    POOL4,
    POOL6,
    SUBNET,
    FakeDocker,
    Plugin,
    Recorder,
    create_endpoint,
    create_network,
    error_message,
    ids,
    join,
    request_address,
    request_pool,
)
from tests.test_plugin_protocol import HOST as DOCKHOST
from tests.test_render_policy import restore_texts

#: what each known defect is (the regression tests at the end show each one)
DEFECTS = {
    "D1": "plugin handlers crash (internal error, no field named) on wrong-typed fields",
    "D2": "plugin refusals echo raw values: several lines, control characters",
    "D3": "an interface already used on the host is stored again (put_endpoint, plugin)",
    "D4": "the plugin stores Docker network records under NetworkIDs with control characters",
    "D5": "BIRD refuses the config of a node or peer at :: or a link-local IPv6 address",
    "D6": "BIRD protocol names collide for IPv6 addresses written with a dotted quad",
    "D7": "one net and one negated net render as `-s A ! -s B`, which iptables refuses",
    "D8": "0.0.0.0 and :: are stored as addresses, and ipset refuses them in a hash:ip set",
    "D9": "calicoctl profile add --tag stores tags unvalidated: an unreadable profile",
    "D10": "calicoctl quotes --rules/--password-file paths raw: errors of several lines",
    "D11": "Client.add_rule stores a rule that is not a Rule unvalidated",
    "D12": "Client write methods crash (TypeError/AttributeError) on wrong-typed arguments",
    "D13": "a bare string where Client expects a list is read character by character",
    "D14": "Ansible argument refusals echo raw values: messages of several lines",
    "D15": "docker_network creates networks whose name can never be a Calico profile",
    "D16": "calicoctl crashes (traceback) on a --password-file that is not UTF-8",
}


def fast(examples: int) -> settings:
    """Deterministic, bounded, no deadline (the kernel tools and sockets vary in speed)."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# =========================================================================== strategies

LINE_BREAKS = ("\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028",
               "\u2029")
INVISIBLE = ("\x00", "\t", "\x1b[2J", "\x7f", "\u200b", "\u200e", "\u202e", "\ufeff",
             "\ud800", "\U000e0001")
#: look-alikes and non-ASCII digits: Cyrillic e, full-width letters, a combining accent,
#: dotted I, eszett, an emoji, Arabic-Indic and full-width digits
LOOKALIKES = ("w\u0435b", "\uff57\uff45\uff42", "web\u0301", "\u0130", "\u00df",
              "\U0001f642", "\u0661\u0660.\u0660.\u0660.\u0661", "\uff11\uff10.65.0.1",
              "\u0666\u0665\u0660\u0660\u0660", "\uff12\uff16")
LONG = "a-profile-name-much-longer-than-any-kernel-name-limit-" + "x" * 12
SEED_NAMES = ("web", "db", LONG)
MISSING = object()


def _kernel_names() -> tuple[str, ...]:
    """Kernel names the seeded objects get: as names of other objects they must not collide."""
    found = {v for k, v in vars(names).items()
             if k.isupper() and isinstance(v, str) and v.startswith("cali")}
    for name in SEED_NAMES:
        found |= {names.profile_inbound(name), names.profile_outbound(name)}
        for v in (4, 6):
            found |= {names.tag_set(name, v), names.temp_set(names.tag_set(name, v))}
    for iface in ("caliweb", host_veth(EP)):
        found |= {names.from_endpoint(iface), names.to_endpoint(iface),
                  names.source_check(iface, 4), names.source_check(iface, 6)}
    for v in (4, 6):
        found |= {s(v) for s in _fixed_set_makers()}
    return tuple(sorted(found))


def _fixed_set_makers() -> list[Callable[[int], str]]:
    return [getattr(names, n) for n in ("all_pools_set", "masq_pools_set", "all_hosts_set")
            if hasattr(names, n)]


KERNEL_NAMES = _kernel_names()
NAME = st.one_of(st.sampled_from(SEED_NAMES + KERNEL_NAMES),
                 st.from_regex(NAME_RE, fullmatch=True))
HOST = st.one_of(st.sampled_from(("h", "h2", "host-1.example")),
                 st.from_regex(HOSTNAME_RE, fullmatch=True))
IFACE = st.one_of(st.sampled_from(("caliweb", "calidb", host_veth(EP))),
                  st.from_regex(IFNAME_RE, fullmatch=True))
HEX_ID = st.binary(min_size=32, max_size=32).map(bytes.hex)
V4 = st.ip_addresses(v=4).map(str)
V6 = st.ip_addresses(v=6).map(str)
SPECIAL_V4 = ("0.0.0.0", "255.255.255.255", "127.0.0.1", "224.0.0.1", "169.254.1.1",
              "10.65.0.1", "10.0.0.2")
SPECIAL_V6 = ("::", "::1", "fe80::1", "ff02::1", "::ffff:10.65.0.1", "::1.0.0.2", "::1:0:0:2",
              "fd00:65::1", "fd00::2")
ADDR4 = st.one_of(V4, st.sampled_from(SPECIAL_V4))
ADDR6 = st.one_of(V6, st.sampled_from(SPECIAL_V6))
ADDRESS = st.one_of(ADDR4, ADDR6)
POOL4_NET, POOL6_NET = netaddr.IPNetwork(POOL4), netaddr.IPNetwork(POOL6)
IN_POOL4 = st.integers(1, POOL4_NET.size - 2).map(lambda i: str(POOL4_NET[i]))
IN_POOL6 = st.integers(1, 2**64 - 1).map(lambda i: str(POOL6_NET[i]))
SPECIAL_CIDRS = ("0.0.0.0/0", "::/0", POOL4, POOL6, "10.0.0.0/8", "10.1.0.0/16", "192.0.2.1",
                 "2001:db8::/32", "10.65.1.0/24", "0.0.0.0/1", "::/1", "10.0.0.0/33")
CIDR = st.one_of(st.tuples(V4, st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
                 st.tuples(V6, st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}"),
                 st.sampled_from(SPECIAL_CIDRS))
POOL_CIDR = st.one_of(
    st.tuples(st.integers(1, 223), st.integers(0, 255), st.integers(8, 26)).map(
        lambda t: f"{t[0]}.{t[1]}.0.0/{t[2]}"),
    st.tuples(st.integers(0, 0xFFFF), st.integers(64, 122)).map(
        lambda t: f"fd00:{t[0]:x}::/{t[1]}"),
    CIDR)
NETS = st.one_of(st.lists(CIDR, min_size=1, max_size=3), CIDR,
                 st.lists(CIDR, min_size=1, max_size=3).map(", ".join))
PORT = st.one_of(st.integers(0, 65535),
                 st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(
                     lambda t: f"{min(t)}:{max(t)}"),
                 st.sampled_from(("80", " 443 ", "1:1024", "0:65535", "179")))
PORTS = st.one_of(st.lists(PORT, min_size=1, max_size=20), PORT,
                  st.lists(PORT.map(str), min_size=1, max_size=4).map(",".join))
PROTOCOL = st.sampled_from(PROTOCOLS + ("TCP", "6", 6, 17, 132, 1, 58, 255))
ASN = st.one_of(st.integers(1, 2**32 - 1), st.sampled_from((64512, "65000", " 65000 ")))
MAC = st.one_of(st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b)),
                st.sampled_from(("EE-EE-EE-EE-EE-EE", "eeee.eeee.eeee", "01:00:5e:00:00:01")))
BOOLISH = st.one_of(st.booleans(), st.sampled_from(("yes", "no", "on", "off", "1", "0", "True")))
LABELS = st.dictionaries(st.from_regex(LABEL_KEY_RE, fullmatch=True),
                         st.from_regex(LABEL_VALUE_RE, fullmatch=True), max_size=3)
PASSWORD = st.from_regex(r"[\x21\x23-\x5b\x5d-\x7e]{1,80}", fullmatch=True)


def _nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


#: wrong types that JSON can carry (plugin bodies, module arguments, rule files)
JSON_WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.integers(20, 80).map(_nested))
#: and Python's own (the Python API)
PY_WRONG = st.one_of(JSON_WRONG, st.sampled_from(
    (b"web", ("web",), frozenset({"web"}), object(), 1j, Ellipsis, float("nan"), 10**30)))
JSON_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def hostile(base: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """Strings made from plausible values: a trailing newline (YAML block scalars keep it),
    control, separator and invisible characters inside or in front, padding, 200+
    characters, look-alikes, other objects' kernel names, any text."""
    text = base.map(str)
    odd = st.sampled_from(LINE_BREAKS + INVISIBLE)
    return st.one_of(
        text.map(lambda s: s + "\n"),
        st.tuples(text, odd, text).map(lambda t: t[0] + t[1] + t[2]),
        st.tuples(odd, text).map(lambda t: t[0] + t[1]),
        text.map(lambda s: f" {s} "),
        text.map(lambda s: (s or "x") * (200 // max(len(s), 1) + 1)),
        st.sampled_from(LOOKALIKES + KERNEL_NAMES),
        st.text(max_size=8),
        st.text(st.characters(categories=("Cc", "Cf", "Zl", "Zp", "Zs", "Mn")), min_size=1,
                max_size=4),
    )


def field(valid: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any] = JSON_WRONG,
          bad_every: int = 4) -> st.SearchStrategy[Any]:
    """Mostly ``valid``; one draw in ``bad_every + 1`` a hostile string or a wrong type."""
    bad = st.one_of(hostile(valid), wrong)
    return st.integers(0, bad_every).flatmap(lambda i: bad if i == 0 else valid)


def _subset(values: dict[str, st.SearchStrategy[Any]], most: int) -> st.SearchStrategy[dict]:
    return st.lists(st.sampled_from(sorted(values)), max_size=most, unique=True).flatmap(
        lambda ks: st.fixed_dictionaries({k: values[k] for k in ks}))


NET_KEYS = ("src_net", "not_src_net", "dst_net", "not_dst_net")
TAG_KEYS = ("src_tag", "not_src_tag", "dst_tag", "not_dst_tag")
PORT_KEYS = ("src_ports", "not_src_ports", "dst_ports", "not_dst_ports")


def rule_kwargs(wrong: st.SearchStrategy[Any], bad_every: int = 4,
                unknown: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """A coherent rule (ports, ICMP, nets, tags, a negated protocol) plus up to two more
    fields, each of them hostile now and then; with ``unknown``, sometimes a field no rule
    has."""
    values: dict[str, st.SearchStrategy[Any]] = {
        "action": st.sampled_from(ACTIONS), "protocol": PROTOCOL, "not_protocol": PROTOCOL,
        "icmp_type": st.integers(0, 255), "not_icmp_type": st.integers(0, 255),
        "icmp_code": st.integers(0, 256), "not_icmp_code": st.integers(0, 256),
        "ip_version": st.sampled_from((4, 6, "4", "6"))}
    values.update({k: NETS for k in NET_KEYS})
    values.update({k: NAME for k in TAG_KEYS})
    values.update({k: PORTS for k in PORT_KEYS})
    coherent = st.one_of(
        st.fixed_dictionaries(
            {"protocol": st.sampled_from(("tcp", "udp", "sctp", 6, 17, 132)), "dst_ports": PORTS},
            optional={"src_ports": PORTS, "not_dst_ports": PORTS, "not_src_ports": PORTS}),
        st.fixed_dictionaries(
            {"protocol": st.sampled_from(("icmp", "icmpv6", 1, 58))},
            optional={"icmp_type": st.integers(0, 254), "icmp_code": st.integers(0, 255),
                      "not_icmp_type": st.integers(0, 254)}),
        st.fixed_dictionaries({}, optional={**{k: NETS for k in NET_KEYS},
                                            "ip_version": st.sampled_from((4, 6))}),
        st.fixed_dictionaries({}, optional={k: NAME for k in TAG_KEYS}),
        st.fixed_dictionaries({"not_protocol": PROTOCOL}),
        st.just({}))
    extra = st.integers(0, 2).flatmap(lambda i: _subset(
        {k: field(v, wrong, bad_every) for k, v in values.items()}, 2) if i == 0 else st.just({}))
    odd_key = st.just({})
    if unknown:
        odd_key = st.integers(0, 9).flatmap(lambda i: st.dictionaries(
            st.one_of(st.sampled_from(("colour", "Src_Net", "src-net", "not_action")),
                      hostile(st.just("action"))), JSON_WRONG, min_size=1, max_size=1)
            if i == 0 else st.just({}))
    return st.tuples(st.sampled_from(ACTIONS), coherent, extra, odd_key).map(
        lambda t: {"action": t[0], **t[1], **t[2], **t[3]})


def profile_kwargs(wrong: st.SearchStrategy[Any], bad_every: int = 4,
                   name: st.SearchStrategy[Any] = NAME) -> st.SearchStrategy[dict]:
    rules = st.lists(rule_kwargs(wrong, bad_every * 2), max_size=4)
    optional = {
        "tags": field(st.one_of(st.lists(NAME, max_size=3), NAME), wrong, bad_every),
        "labels": field(LABELS, wrong, bad_every),
        "inbound_rules": field(rules, wrong, bad_every),
        "outbound_rules": field(rules, wrong, bad_every)}
    if "docker_network" in Profile.__dataclass_fields__:  # added while this file was written
        optional["docker_network"] = field(BOOLISH, wrong, bad_every)
    return st.fixed_dictionaries({"name": field(name, wrong, bad_every)}, optional=optional)


def endpoint_kwargs(wrong: st.SearchStrategy[Any], bad_every: int = 4,
                    host: st.SearchStrategy[Any] = HOST,
                    profiles: st.SearchStrategy[Any] = NAME) -> st.SearchStrategy[dict]:
    def f(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return field(valid, wrong, bad_every)
    return st.fixed_dictionaries(
        {"id": f(st.one_of(NAME, HEX_ID)), "host": f(host), "interface": f(IFACE)},
        optional={"mac": f(MAC),
                  "ipv4_nets": f(st.lists(st.one_of(IN_POOL4, ADDR4), max_size=3)),
                  "ipv6_nets": f(st.lists(st.one_of(IN_POOL6, ADDR6), max_size=2)),
                  "profiles": f(st.lists(st.one_of(st.sampled_from(SEED_NAMES), profiles),
                                         max_size=2)),
                  "labels": f(LABELS), "state": f(st.sampled_from(("active", "inactive")))})


def node_kwargs(wrong: st.SearchStrategy[Any], bad_every: int = 4) -> st.SearchStrategy[dict]:
    def f(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return field(valid, wrong, bad_every)
    return st.fixed_dictionaries({"name": f(HOST)}, optional={
        "ipv4": f(ADDR4), "ipv6": f(ADDR6), "as_number": f(ASN),
        "rr_cluster_id": f(st.one_of(V4, st.integers(0, 2**32 - 1))),
        "ipv4_subnet": f(CIDR), "ipv6_subnet": f(CIDR)})


def peer_kwargs(wrong: st.SearchStrategy[Any], bad_every: int = 4) -> st.SearchStrategy[dict]:
    def f(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return field(valid, wrong, bad_every)
    optional = {"node": f(st.one_of(st.none(), st.just("h"), HOST)),
                "password": f(st.one_of(st.none(), PASSWORD))}
    if "accept_nets" in BGPPeer.__dataclass_fields__:  # added while this file was written
        optional["accept_default_route"] = f(BOOLISH)
        optional["accept_nets"] = f(st.lists(CIDR, max_size=2))
    return st.fixed_dictionaries({"address": f(ADDRESS), "as_number": f(ASN)},
                                 optional=optional)


def pool_kwargs(wrong: st.SearchStrategy[Any], bad_every: int = 4) -> st.SearchStrategy[dict]:
    def f(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return field(valid, wrong, bad_every)
    return st.fixed_dictionaries({"cidr": f(POOL_CIDR)}, optional={
        "block_size": f(st.one_of(st.none(), st.integers(16, 130))),
        "nat_outgoing": f(BOOLISH), "disabled": f(BOOLISH)})


MODEL_KWARGS: dict[type, st.SearchStrategy[dict]] = {
    IPPool: pool_kwargs(PY_WRONG), Rule: rule_kwargs(PY_WRONG), Profile: profile_kwargs(PY_WRONG),
    Endpoint: endpoint_kwargs(PY_WRONG), Node: node_kwargs(PY_WRONG),
    BGPPeer: peer_kwargs(PY_WRONG),
    BGPConfig: st.fixed_dictionaries({}, optional={"as_number": field(ASN, PY_WRONG),
                                                   "node_to_node_mesh": field(BOOLISH, PY_WRONG)}),
    IPAMConfig: st.fixed_dictionaries({}, optional={"strict_affinity": field(BOOLISH, PY_WRONG)}),
    AgentConfig: st.fixed_dictionaries({}, optional={
        "default_endpoint_to_host_action": field(st.sampled_from(("accept", "drop")), PY_WRONG)}),
}


# ============================================================================ checkers


def utf8(value: Any) -> bool:
    """No lone surrogates anywhere in ``value``: text UTF-8 (and so files, and Ansible's
    module arguments, which Ansible itself cannot log otherwise) can carry."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def one_line(message: Any) -> bool:
    """A refusal as users see it: one non-empty line of printable characters (no line or
    paragraph separators, no terminal escapes, no invisible characters)."""
    return isinstance(message, str) and bool(message.strip()) and message.isprintable()


#: "field: ..." or "kind name: ..." ("node n1: not found", "inbound_rules[0].action: ...")
FIELD_FIRST = re.compile(r"[^\W\d][\w.\[\]]*( [^:]+)?: ")


def assert_refusal(exc: CalicoError) -> None:
    message = str(exc)
    assert one_line(message), f"{type(exc).__name__} of several lines: {message!r}"
    assert FIELD_FIRST.match(message), f"no field first: {message!r}"
    if isinstance(exc, ValidationError):
        assert message.startswith(f"{exc.field}: "), message


def attempt(call: Callable[[], Any]) -> CalicoError | None:
    """Run ``call``: None when it succeeded, the refusal when it raised a CalicoError (which
    must be one line naming the field); anything else propagates and fails the test."""
    try:
        call()
    except CalicoError as exc:
        assert_refusal(exc)
        return exc
    return None


def ascii_line(text: str) -> bool:
    """Printable ASCII, spaces included: what kernel tools and BIRD read as one line."""
    return text.isascii() and text.isprintable()


@dataclass
class Rendered:
    host: str
    snapshot: Snapshot
    policy: Policy
    bird: str | None


BUILTIN_TARGETS = {"ACCEPT", "DROP", "RETURN", "MARK", "MASQUERADE", "REJECT", "LOG"}
#: a log rule's prefix: profile (or its start and a hash), direction, number; iptables
#: takes at most 29 characters
LOG_PREFIX = re.compile(r'--log-prefix "(cali:[A-Za-z0-9_.~-]+:(in|out):[0-9]+ )"')


def assert_renders(store: Any, known: Iterable[str] = (), hosts: Iterable[str] = ()
                   ) -> list[Rendered]:
    """What ``store`` holds renders for every host it names: no unreadable record, every
    key printable, policy and BIRD config rendered, names and lines fit for the kernel, every
    kernel name owned by one object. ``known``: the defects tolerated (see ``DEFECTS``)."""
    known = frozenset(known)
    kvs = store.list(keys.ROOT)
    records = {kv.key: kv.value for kv in kvs}
    for key in records:
        assert key.isprintable(), f"stored key {key!r}"
    unreadable = check_records(kvs)
    assert unreadable == [], [str(item) for item in unreadable]
    nodes, _ = decode_all([kv for kv in kvs if kv.key.startswith(keys.NODES)], Node)
    endpoints, _ = decode_all([kv for kv in kvs if kv.key.startswith(keys.ENDPOINTS)], Endpoint)
    every = sorted({"h", *hosts, *(n.name for n in nodes), *(e.host for e in endpoints)})
    out = []
    for host in every:
        snapshot = load_snapshot(store, host)
        assert snapshot.unreadable == (), [f"{host}: {item}" for item in snapshot.unreadable]
        policy = render_policy(snapshot)
        bird = render_bird(snapshot)
        _check_policy(snapshot, policy, known)
        _check_bird(snapshot, bird, known)
        out.append(Rendered(host, snapshot, policy, bird))
    return out


def _check_policy(snapshot: Snapshot, policy: Policy, known: frozenset[str]) -> None:
    rules = [r for p in snapshot.profiles.values() for r in p.inbound_rules + p.outbound_rules]
    for table in policy.tables:
        for chain, specs in table.chains.items():
            assert chain.startswith("cali") and len(chain) <= names.CHAIN_MAX, chain
            assert ascii_line(chain), repr(chain)
            for spec in specs:
                assert ascii_line(spec), f"{chain}: {spec!r}"
                tokens = spec.split()
                for flag in ("-s", "-d", "-p", "-i", "-o"):
                    assert tokens.count(flag) <= 1, (
                        f"{chain}: {spec} (iptables takes one {flag})")
                for i, token in enumerate(tokens[:-1]):
                    if token in ("-j", "-g"):
                        target = tokens[i + 1]
                        assert target in table.chains or target in BUILTIN_TARGETS, (
                            f"{chain}: {spec}: no chain {target}")
                    if token == "--log-prefix":
                        prefix = LOG_PREFIX.search(spec)
                        assert prefix and len(prefix.group(1)) <= names.LOG_PREFIX_MAX, (
                            f"{chain}: {spec}: log prefix")
                    if token == "--match-set":
                        used = policy.ipsets.get(tokens[i + 1])
                        assert used is not None and used.version == table.version, (
                            f"{chain}: {spec}: no IPv{table.version} set {tokens[i + 1]}")
    for name, ipset in policy.ipsets.items():
        assert name == ipset.name and name.startswith("cali"), name
        assert len(name) <= names.IPSET_MAX, name
    for _, text in restore_texts(policy):  # what the agent writes
        for line in text.splitlines():
            assert ascii_line(line), repr(line)
    _check_owners(snapshot, policy, rules)


def _check_owners(snapshot: Snapshot, policy: Policy, rules: list[Rule]) -> None:
    """Every kernel name (chain, set, temporary set, host veth) has one owner."""
    chains: dict[str, set[Any]] = defaultdict(set)
    sets: dict[str, set[Any]] = defaultdict(set)
    for key, value in vars(names).items():
        if key.isupper() and isinstance(value, str) and value.startswith("cali"):
            chains[value].add(("fixed", value))
    for name in snapshot.profiles:
        chains[names.profile_inbound(name)].add(("profile", name))
        chains[names.profile_outbound(name)].add(("profile", name))
    tags = {t for p in snapshot.profiles.values() for t in p.tags}
    tags |= {t for r in rules for t in r.tags()}
    for version in (4, 6):
        for tag in tags:
            sets[names.tag_set(tag, version)].add(("tag", tag))
        for make in _fixed_set_makers():
            sets[make(version)].add(("fixed", make(version)))
    interfaces: dict[str, set[str]] = defaultdict(set)
    for ep in snapshot.local_endpoints:
        interfaces[ep.interface].add(ep.id)
        owner = ("endpoint", ep.id)
        chains[names.from_endpoint(ep.interface)].add(owner)
        chains[names.to_endpoint(ep.interface)].add(owner)
        for version in (4, 6):
            chains[names.source_check(ep.interface, version)].add(owner)
    for name, ipset in policy.ipsets.items():
        if name not in sets:
            sets[name].add(("content", ipset.kind, ipset.members))
    for name in list(sets):
        sets[names.temp_set(name)].add(("temp", name))
    for kind, owners in (("chain", chains), ("set", sets), ("interface", interfaces)):
        shared = {n: o for n, o in owners.items() if len(o) > 1}
        assert not shared, f"{kind} names with several owners: {shared}"


def _check_bird(snapshot: Snapshot, text: str | None, known: frozenset[str]) -> None:
    me = snapshot.nodes.get(snapshot.hostname)
    assert (text is None) == (me is None or me.ipv4 is None)
    if text is None:
        return
    for line in text.splitlines():
        assert ascii_line(line), repr(line)
    protocols = re.findall(r"^protocol bgp (\S+) \{", text, re.M)
    duplicates = {p for p in protocols if protocols.count(p) > 1}
    assert not duplicates, duplicates


# ------------------------------------------------------------------ the kernel's verdict


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Callable[[Rendered], list[str]]]:
    """``check(rendered)``: what the kernel tools and BIRD say about a rendering (empty when
    they accept it all), in a throwaway network namespace deleted afterwards."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in (
            "ip", "ipset", "iptables-restore", "ip6tables-restore", "bird")):
        pytest.fail("needs root, ip, ipset, iptables-restore, ip6tables-restore and bird",
                    pytrace=False)
    namespace = f"calt-hi-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)

    def check(rendered: Rendered) -> list[str]:
        problems = []
        with inside(namespace):
            try:
                (_, sets), *tables = restore_texts(rendered.policy)
                proc = _tool(["ipset", "restore"], sets)
                if proc.returncode:
                    problems.append(f"ipset restore: {proc.stderr.strip()}")
                for table, (tool, text) in zip(rendered.policy.tables, tables, strict=True):
                    tool = f"{tool}-restore"
                    proc = _tool([tool, "--test"], text)
                    if proc.returncode:
                        problems.append(f"{tool} {table.name}: {proc.stderr.strip()} "
                                        f"{_failed_line(proc.stderr, text)}")
            finally:  # only the sets made here, and only in the namespace
                for name in rendered.policy.ipsets:
                    subprocess.run(["ipset", "destroy", name], capture_output=True)
        if rendered.bird is not None:
            path = tmp_path / "bird.conf"
            path.write_text(rendered.bird)
            proc = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True,
                                  text=True, timeout=30)
            if proc.returncode:
                problems.append(f"bird -p: {proc.stderr.strip()}")
        return problems

    try:
        yield check
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def _tool(argv: list[str], text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=text, capture_output=True, text=True, timeout=30)


def _failed_line(stderr: str, text: str) -> str:
    match = re.search(r"line:? (\d+)", stderr)
    lines = text.splitlines()
    if match and 0 < int(match.group(1)) <= len(lines):
        return repr(lines[int(match.group(1)) - 1])
    return ""


# ============================================================================ the stores


def seed(client: Client) -> None:
    """Pools, the operator's profiles (default rules; "db" with its own), this host's node
    and one endpoint: what hostile input meets."""
    for cidr in (POOL4, POOL6):
        client.add_pool(IPPool(cidr, nat_outgoing=True))
    client.add_profile("web")
    client.add_profile(LONG)
    client.add_profile(Profile("db", tags=["db"], inbound_rules=[
        Rule(action="allow", protocol="tcp", src_tag="web", dst_ports=[5432])]))
    client.add_node(Node("h", ipv4="10.0.0.1", ipv6="fd00::1"))
    client.add_endpoint(Endpoint("e1", "h", "caliweb", ipv4_nets=["10.65.0.1"],
                                 ipv6_nets=["fd00:65::1"], profiles=["web"]),
                        assign_addresses=True)


def memory_client() -> Client:
    client = Client(SqliteDatastore.in_memory())
    seed(client)
    return client


class Stores:
    """A fresh seeded SQLite store per example (examples never see each other's state)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def new(self, subnet: bool = False) -> str:
        """A copy of a seeded store (copying is much faster than seeding each time)."""
        self.count += 1
        template = self.root / ("seeded-subnet.db" if subnet else "seeded.db")
        if not template.exists():
            with calico_lib.connect(f"sqlite:///{template.resolve()}") as client:
                seed(client)  # closing it checkpoints the WAL: the file is the whole store
                if subnet:
                    client.add_pool(IPPool(SUBNET))
        target = self.root / f"store-{self.count}.db"
        shutil.copyfile(template, target)
        return f"sqlite:///{target.resolve()}"

    def file(self, content: str | bytes) -> str:
        self.count += 1
        path = self.root / f"file-{self.count}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        return str(path)


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stores:
    for name in ("CALICO_DATASTORE", "CALICO_HOSTNAME", "CALICO_BGP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return Stores(tmp_path)


def renders(url: str, known: Iterable[str] = ()) -> list[Rendered]:
    with calico_lib.connect(url) as client:
        return assert_renders(client.store, known)


# ========================================================================== Python API


@pytest.mark.slow
@pytest.mark.parametrize("cls", list(MODEL_KWARGS), ids=lambda c: c.__name__)
@fast(80)
@given(data=st.data())
def test_model_constructors_refuse_in_one_line_or_round_trip(cls: type, data: Any) -> None:
    """Every model: a ValidationError naming the field, or an object whose stored form (its
    dict through JSON) reads back as the same object."""
    kwargs = data.draw(MODEL_KWARGS[cls], label="kwargs")
    try:
        obj = cls(**kwargs)
    except ValidationError as exc:
        assert_refusal(exc)
        return
    stored = json.loads(json.dumps(obj.to_dict()))
    assert cls.from_dict(stored) == obj
    if cls is Rule:  # alone, it renders to printable specs for both IP versions
        for version in (4, 6):
            for spec in RuleRenderer(version, {}, {}).render(obj):
                assert ascii_line(spec), repr(spec)


FROM_DICT = {IPPool: pool_kwargs(JSON_WRONG), Rule: rule_kwargs(JSON_WRONG, unknown=True),
             Profile: profile_kwargs(JSON_WRONG), Endpoint: endpoint_kwargs(JSON_WRONG),
             Node: node_kwargs(JSON_WRONG), BGPPeer: peer_kwargs(JSON_WRONG)}


@pytest.mark.slow
@pytest.mark.parametrize("cls", list(FROM_DICT), ids=lambda c: c.__name__)
@fast(60)
@given(data=st.data())
def test_from_dict_refuses_any_record_in_one_line(cls: type, data: Any) -> None:
    """What readers decode from the datastore: unknown fields (hostile names too), missing
    ones, values of any type, records that are not mappings."""
    record = data.draw(st.one_of(
        FROM_DICT[cls],
        st.tuples(FROM_DICT[cls], st.dictionaries(st.one_of(st.text(max_size=6),
                                                            hostile(st.just("name"))),
                                                  JSON_ANY, min_size=1, max_size=2)).map(
            lambda t: {**t[0], **t[1]}),
        FROM_DICT[cls].flatmap(lambda d: st.sets(st.sampled_from(sorted(d) or ["x"])).map(
            lambda drop: {k: v for k, v in d.items() if k not in drop})),
        JSON_ANY), label="record")
    record = json.loads(json.dumps(record))
    try:
        obj = cls.from_dict(record)
    except ValidationError as exc:
        assert_refusal(exc)
        return
    assert cls.from_dict(json.loads(json.dumps(obj.to_dict()))) == obj


def _draw(data: Any, strategy: st.SearchStrategy[Any], label: str) -> Any:
    return data.draw(strategy, label=label)


def api_add_pool(c: Client, data: Any) -> None:
    c.add_pool(IPPool(**_draw(data, MODEL_KWARGS[IPPool], "pool")))


def api_add_profile(c: Client, data: Any) -> None:
    if _draw(data, st.booleans(), "by name"):
        c.add_profile(_draw(data, st.one_of(NAME, hostile(NAME)), "name"))
    else:
        c.add_profile(Profile(**_draw(data, MODEL_KWARGS[Profile], "profile")))


def api_put_profile(c: Client, data: Any) -> None:
    c.put_profile(Profile(**_draw(data, MODEL_KWARGS[Profile], "profile")))


def api_add_rule(c: Client, data: Any) -> None:
    profile = _draw(data, field(st.sampled_from(SEED_NAMES), PY_WRONG), "profile")
    direction = _draw(data, field(st.sampled_from(("inbound", "outbound")), PY_WRONG),
                      "direction")
    position = _draw(data, st.one_of(st.none(), st.integers(-3, 8), PY_WRONG), "position")
    c.add_rule(profile, direction, Rule(**_draw(data, MODEL_KWARGS[Rule], "rule")), position)


def api_add_node(c: Client, data: Any) -> None:
    c.add_node(Node(**_draw(data, MODEL_KWARGS[Node], "node")))


def api_put_node(c: Client, data: Any) -> None:
    c.put_node(Node(**_draw(data, MODEL_KWARGS[Node], "node")))


def api_add_bgp_peer(c: Client, data: Any) -> None:
    c.add_bgp_peer(BGPPeer(**_draw(data, MODEL_KWARGS[BGPPeer], "peer")))


def api_put_bgp_peer(c: Client, data: Any) -> None:
    c.put_bgp_peer(BGPPeer(**_draw(data, MODEL_KWARGS[BGPPeer], "peer")))


def api_add_endpoint(c: Client, data: Any) -> None:
    endpoint = Endpoint(**_draw(data, MODEL_KWARGS[Endpoint], "endpoint"))
    c.add_endpoint(endpoint, assign_addresses=_draw(data, st.booleans(), "assign"))


def api_put_endpoint(c: Client, data: Any) -> None:
    c.put_endpoint(Endpoint(**_draw(data, MODEL_KWARGS[Endpoint], "endpoint")))


def api_set_bgp_config(c: Client, data: Any) -> None:
    c.set_bgp_config(**_draw(data, MODEL_KWARGS[BGPConfig], "settings"))


def api_set_agent_config(c: Client, data: Any) -> None:
    c.set_agent_config(_draw(data, field(st.sampled_from(("accept", "drop")), PY_WRONG),
                             "action"))


def api_ipam_set_config(c: Client, data: Any) -> None:
    c.ipam.set_config(IPAMConfig(**_draw(data, MODEL_KWARGS[IPAMConfig], "settings")))


def api_auto_assign(c: Client, data: Any) -> None:
    host = _draw(data, field(HOST, PY_WRONG), "host")
    handle = _draw(data, field(st.one_of(NAME, HEX_ID), PY_WRONG), "handle")
    num4 = _draw(data, field(st.integers(0, 3), PY_WRONG), "num_ipv4")
    num6 = _draw(data, field(st.integers(0, 3), PY_WRONG), "num_ipv6")
    pools = _draw(data, st.one_of(st.none(), st.lists(field(st.sampled_from((POOL4, POOL6)),
                                                            PY_WRONG), max_size=2)), "pools")
    c.ipam.auto_assign(host, handle, num4, num6, pools=pools)


def api_assign_ip(c: Client, data: Any) -> None:
    address = _draw(data, field(st.one_of(IN_POOL4, IN_POOL6, ADDRESS), PY_WRONG), "address")
    handle = _draw(data, field(st.one_of(NAME, HEX_ID), PY_WRONG), "handle")
    c.ipam.assign_ip(address, handle, _draw(data, field(HOST, PY_WRONG), "host"))


def api_release_ips(c: Client, data: Any) -> None:
    addresses = st.lists(field(st.one_of(IN_POOL4, st.just("10.65.0.1"), ADDRESS), PY_WRONG),
                         max_size=3)
    c.ipam.release_ips(_draw(data, addresses, "addresses"))


API_CALLS = {f.__name__: f for f in (
    api_add_pool, api_add_profile, api_put_profile, api_add_rule, api_add_node, api_put_node,
    api_add_bgp_peer, api_put_bgp_peer, api_add_endpoint, api_put_endpoint, api_set_bgp_config,
    api_set_agent_config, api_ipam_set_config, api_auto_assign, api_assign_ip, api_release_ips)}


@pytest.mark.slow
@fast(150)
@given(data=st.data())
def test_python_api_refuses_in_one_line_or_stores_what_renders(data: Any) -> None:
    """A few Client writes in a row on a seeded store: each one either raises a CalicoError
    naming the field in one line, or leaves a store that renders."""
    client = memory_client()
    for _ in range(data.draw(st.integers(1, 4), label="writes")):
        name = data.draw(st.sampled_from(sorted(API_CALLS)), label="call")
        refused = attempt(lambda name=name: API_CALLS[name](client, data))
        event(f"{name}: {'refused' if refused else 'stored'}")
        if refused is None:
            assert_renders(client.store)


# ----------------------------------------------------------------- the kernel's verdict


#: profile names the kernel scenario's endpoints pick from: ordinary, long (hashed kernel
#: names) and equal to other objects' kernel names
KERNEL_PROFILES = st.sampled_from(("web", "db", LONG, "p-1", "p.2", LONG + "-2") + tuple(
    n for n in KERNEL_NAMES if NAME_RE.fullmatch(n))[:8])


def kernel_endpoint(profiles: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": HEX_ID, "host": st.just("h"), "interface": IFACE,
         "ipv4_nets": st.lists(st.one_of(IN_POOL4, ADDR4), max_size=3),
         "ipv6_nets": st.lists(st.one_of(IN_POOL6, ADDR6), max_size=2),
         "profiles": st.lists(st.sampled_from(profiles), min_size=1, max_size=3)},
        optional={"mac": MAC, "state": st.sampled_from(("active", "inactive"))})


def _valid(cls: type, kwargs: dict[str, Any]) -> Any:
    """``cls(**kwargs)``, or None when it is refused."""
    try:
        return cls(**kwargs)
    except ValidationError:
        return None


@pytest.mark.netns
@fast(20)
@given(data=st.data())
def test_kernel_accepts_what_the_api_stored(kernel: Callable[[Rendered], list[str]],
                                            data: Any) -> None:
    """Profiles of generated rules (those the API accepts), this host's endpoints in them,
    nodes and peers; then ipset, iptables, ip6tables and BIRD take the rendering whole.
    Objects a known defect (D5-D8) makes unrenderable are left out: their tests are below."""
    client = memory_client()
    rule = rule_kwargs(PY_WRONG, 30)
    profiles = data.draw(st.lists(KERNEL_PROFILES, min_size=1, max_size=3, unique=True),
                         label="profiles")
    for name in profiles:
        lists = {key: [r for r in (_valid(Rule, kw) for kw in data.draw(
            st.lists(rule, min_size=2, max_size=8), label=key)) if r]
            for key in ("inbound_rules", "outbound_rules")}
        tags = data.draw(st.lists(st.one_of(KERNEL_PROFILES, NAME), max_size=2), label="tags")
        attempt(lambda name=name, tags=tags, lists=lists: client.put_profile(
            Profile(name, tags=[name, *tags], **lists)))
    for cls, kwargs, most in (
            (Endpoint, kernel_endpoint(profiles + ["web", "nosuch"]), 4),
            (Node, node_kwargs(PY_WRONG, 30), 2), (BGPPeer, peer_kwargs(PY_WRONG, 30), 2)):
        for obj in (_valid(cls, kw) for kw in data.draw(st.lists(
                kwargs, min_size=cls is Endpoint, max_size=most), label=cls.__name__)):
            write = {Endpoint: client.add_endpoint, Node: client.put_node,
                     BGPPeer: client.put_bgp_peer}[cls]
            if obj is not None:
                attempt(lambda write=write, obj=obj: write(obj))
    for rendered in assert_renders(client.store):
        if rendered.host == "h":
            specs = sum(len(specs) for t in rendered.policy.tables for c, specs in
                        t.chains.items() if c.startswith(("cali-pi-", "cali-po-")))
            event(f"profile rules rendered: {_bucket(specs)}")
            assert kernel(rendered) == []


def _bucket(count: int) -> str:
    return next(f"<= {b}" for b in (0, 10, 30, 100, 300, 10**9) if count <= b)


# ============================================================================= calicoctl


WARNING = "calicoctl: warning: "


def without_warnings(err: str) -> str:
    """stderr without calicoctl's warnings (--password is visible in `ps`): a refusal is the
    one line left."""
    return "".join(line for line in err.splitlines(keepends=True)
                   if not line.startswith(WARNING))


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's refusals and --help
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


CLI_WRONG = st.sampled_from(("", " ", "-", "--", "-x", "abc", "1.5", "-1", "0x10", "1e3", "NaN",
                             "[1]", "{}", "null", "true", "None", "\u0663"))


def cli_value(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    return field(valid.map(str), CLI_WRONG, 5)


def _flags(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    out: list[str] = []
    for flag, value in pairs:
        if value is MISSING:
            continue
        if value is True and flag in SWITCHES:
            out.append(flag)
        elif value is not False:
            out += [flag, str(value)]
    return out


SWITCHES = {"--nat-outgoing", "--disabled", "--docker-network"}


def _optional(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(MISSING), cli_value(valid))


def cli_pool_add(data: Any, stores: Stores) -> list[str]:
    return ["pool", "add", data.draw(cli_value(POOL_CIDR), label="cidr")] + _flags([
        ("--nat-outgoing", data.draw(st.booleans())), ("--disabled", data.draw(st.booleans())),
        ("--block-size", data.draw(_optional(st.integers(16, 130)), label="block size"))])


def cli_profile_add(data: Any, stores: Stores) -> list[str]:
    argv = ["profile", "add", data.draw(cli_value(NAME), label="name")]
    for tag in data.draw(st.lists(cli_value(NAME), max_size=2), label="tags"):
        argv += ["--tag", tag]
    for label in data.draw(st.lists(st.one_of(
            st.tuples(cli_value(st.from_regex(LABEL_KEY_RE, fullmatch=True)),
                      cli_value(st.from_regex(LABEL_VALUE_RE, fullmatch=True))).map("=".join),
            cli_value(st.just("tier"))), max_size=2), label="labels"):
        argv += ["--label", label]
    rules = data.draw(st.one_of(
        st.just(MISSING),
        st.fixed_dictionaries({}, optional={
            "inbound_rules": st.lists(rule_kwargs(JSON_WRONG, 8), max_size=3),
            "outbound_rules": st.lists(rule_kwargs(JSON_WRONG, 8), max_size=3)}).map(
            lambda d: stores.file(json.dumps(d))),
        JSON_ANY.map(lambda v: stores.file(json.dumps(v))),
        st.binary(max_size=20).map(stores.file),
        hostile(st.just("/nonexistent/rules.json"))), label="rules")
    return argv + _flags([("--rules", rules),
                          ("--docker-network", data.draw(st.booleans(), label="docker"))])


RULE_FLAG_FIELDS = tuple(f"{n}{k}" for k in cli.RULE_FIELDS for n in ("", "not_"))


def cli_rule_add(data: Any, stores: Stores) -> list[str]:
    rule = data.draw(rule_kwargs(JSON_WRONG, 6), label="rule")
    argv = ["profile", "rule", "add",
            data.draw(cli_value(st.sampled_from(SEED_NAMES)), label="profile"),
            data.draw(cli_value(st.sampled_from(("inbound", "outbound"))), label="direction"),
            data.draw(cli_value(st.just(rule.pop("action", "allow"))), label="action")]
    argv += _flags([("--position", data.draw(_optional(st.integers(0, 5)), label="position"))])
    version = rule.pop("ip_version", MISSING)
    if version is not MISSING:
        argv += ["--ip-version", str(version)]
    for key, value in rule.items():
        flag = "--" + key.replace("_", "-")
        if key not in RULE_FLAG_FIELDS:
            continue
        if key.endswith("_net") and isinstance(value, list):
            for net in value:
                argv += [flag, str(net)]
        elif isinstance(value, list):
            argv += [flag, ",".join(map(str, value))]
        else:
            argv += [flag, str(value)]
    return argv


def cli_node_add(data: Any, stores: Stores) -> list[str]:
    return ["node", "add", data.draw(cli_value(HOST), label="name")] + _flags([
        ("--ip", data.draw(_optional(ADDR4), label="ip")),
        ("--ip6", data.draw(_optional(ADDR6), label="ip6")),
        ("--as", data.draw(_optional(ASN), label="as")),
        ("--rr-cluster-id", data.draw(_optional(V4), label="rr cluster id"))])


def cli_endpoint_add(data: Any, stores: Stores) -> list[str]:
    argv = ["endpoint", "add", "--host", data.draw(cli_value(HOST), label="host"),
            "--interface", data.draw(cli_value(IFACE), label="interface")]
    for address in data.draw(st.lists(cli_value(st.one_of(IN_POOL4, IN_POOL6, ADDRESS)),
                                      max_size=3), label="ips"):
        argv += ["--ip", address]
    for profile in data.draw(st.lists(cli_value(st.sampled_from(SEED_NAMES)), min_size=1,
                                      max_size=2), label="profiles"):
        argv += ["--profile", profile]
    return argv + _flags([("--mac", data.draw(_optional(MAC), label="mac")),
                          ("--id", data.draw(_optional(st.one_of(NAME, HEX_ID)), label="id")),
                          ("--label", data.draw(_optional(st.just("a=b")), label="label"))])


def cli_peer_add(data: Any, stores: Stores) -> list[str]:
    argv = ["bgp", "peer", "add", data.draw(cli_value(ADDRESS), label="address"),
            "--as", data.draw(cli_value(ASN), label="as")]
    argv += _flags([("--node", data.draw(_optional(st.just("h")), label="node"))])
    secret = data.draw(st.one_of(
        st.just([]), cli_value(PASSWORD).map(lambda p: ["--password", p]),
        st.one_of(PASSWORD.map(lambda p: p + "\n"), hostile(PASSWORD), st.just("")).filter(
            utf8).map(lambda p: ["--password-file", stores.file(p)]),  # D16: other bytes
        hostile(st.just("/nonexistent/secret")).map(lambda p: ["--password-file", p])),
        label="password")
    return argv + secret


CLI_COMMANDS = {f.__name__: f for f in (cli_pool_add, cli_profile_add, cli_rule_add,
                                        cli_node_add, cli_endpoint_add, cli_peer_add)}


def _raw_path_echo(err: str, argv: list[str]) -> bool:
    """D10: a --rules or --password-file path quoted raw in the error."""
    return any(flag in ("--rules", "--password-file") and not value.isprintable()
               and value in err for flag, value in zip(argv, argv[1:], strict=False))


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(CLI_COMMANDS))
@fast(40)
@given(data=st.data())
def test_calicoctl_exits_0_or_2_with_one_line_or_stores_what_renders(
        stores: Stores, capsys: pytest.CaptureFixture[str], command: str, data: Any) -> None:
    url = stores.new()
    argv = CLI_COMMANDS[command](data, stores)
    assume(all(utf8(a) and "\x00" not in a for a in argv))  # what an OS's argv can hold
    argv = ["--datastore", url] + argv if data.draw(st.booleans()) else argv + [
        "--datastore", url]
    code, out, err = run_cli(argv, capsys)
    event(f"exit {code}")
    assert "Traceback" not in err, err
    assert code in (0, 2), (argv, code, err)  # 1 only for operational failures: none here
    if code == 2:
        assert out == "", out
        err = without_warnings(err)
        assert err.startswith("calicoctl: ") and err.endswith("\n"), err
        assert one_line(err[:-1]) or _raw_path_echo(err, argv), repr(err)
        return
    assert without_warnings(err) == "", err
    renders(url)


# ====================================================================== the plugin sockets


@dataclass
class Sockets:
    """The plugin serving both sockets on a fake Docker; ``reset()`` gives it a fresh seeded
    store (hypothesis examples never see each other's state)."""

    plugin: Plugin
    driver: Driver
    stores: Stores

    def reset(self) -> None:
        self.plugin.client.close()
        client = calico_lib.connect(self.stores.new(subnet=True))
        self.plugin.client = self.driver.client = client
        self.plugin.docker.names.clear()
        self.plugin.docker.names.update({NET: "net1"})
        self.plugin.hooks.calls.clear()

    def call(self, kind: str, method: str, body: Any = None, raw: bytes | None = None
             ) -> tuple[int, Any]:
        path = f"/{method}" if "." in method else (
            f"/NetworkDriver.{method}" if kind == "net" else f"/IpamDriver.{method}")
        sock = self.plugin.socket("calico.sock" if kind == "net" else "calico-ipam.sock")
        return post(sock, path, body, raw=raw)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sockets]:
    """One plugin for the module (stopping one takes half a second)."""
    stores = Stores(tmp_path_factory.mktemp("plugin"))
    client = calico_lib.connect(stores.new(subnet=True))
    docker, hooks = FakeDocker(), Recorder()
    driver = Driver(client, DOCKHOST, docker, reconcile=hooks.reconcile,  # type: ignore[arg-type]
                    create_veth=hooks.create_veth, delete_veth=hooks.delete_veth)
    with serving(driver, "calico-hostile-") as (socket_dir, _):
        sockets = Sockets(Plugin(client, docker, hooks, socket_dir), driver, stores)
        try:
            yield sockets
        finally:
            sockets.plugin.client.close()


@pytest.fixture
def sockets(served: Sockets) -> Sockets:
    """The module's plugin on a fresh seeded store."""
    served.reset()
    return served


INTERNALS = re.compile(r"Traceback|File \"|object has no attribute|is not iterable|unhashable|"
                       r"NoneType|\b(Type|Key|Attribute|Index|Value)Error\b")


def check_answer(s: Sockets, kind: str, method: str, body: Any, status: int, answer: Any
                 ) -> None:
    """200, or an error status with one line in the socket's error field(s): no internal
    text, no crash (INTERNAL_ERROR)."""
    assert status == 200 or 400 <= status < 600, (method, status, answer)
    assert isinstance(answer, dict), (method, status, answer)
    if status == 200:
        assert "Err" not in answer and "Error" not in answer, (method, answer)
        return
    message = error_message(kind, answer)
    assert not INTERNALS.search(message), (method, message)
    assert message != INTERNAL_ERROR, f"{method} crashed on {body!r}"
    assert one_line(message), (method, body, message)


def mutate(value: Any, rate: int = 4) -> st.SearchStrategy[Any]:
    """``value`` with, at each field, one chance in ``rate`` of being left out or made
    hostile (nested mappings and lists too)."""
    if isinstance(value, dict):
        def one(item: Any) -> st.SearchStrategy[Any]:
            inner = mutate(item, rate)
            bad = st.one_of(st.just(MISSING), hostile(st.just(item)), JSON_WRONG)
            return st.integers(0, rate).flatmap(lambda i: bad if i == 0 else inner)
        return st.fixed_dictionaries({k: one(v) for k, v in value.items()}).map(
            lambda d: {k: v for k, v in d.items() if v is not MISSING})
    if isinstance(value, list):
        return st.tuples(*(mutate(v, rate) for v in value)).map(list)
    return st.just(value)


def body_of(data: Any, template: Any, label: str) -> Any:
    """Three bodies in four as Docker sends them; else hostile fields, or any JSON at all."""
    return data.draw(st.integers(0, 7).flatmap(
        lambda i: JSON_ANY if i == 0 else mutate(template) if i == 1 else st.just(template)),
        label=label)


NETWORK_NAMES = st.integers(0, 3).flatmap(lambda i: st.one_of(
    hostile(NAME), st.sampled_from(("web\n", "x" * 200, "n\u00e9t", "a\x00b", "net\u2028two",
                                    LONG + "\n"))) if i == 0 else st.one_of(
    NAME, st.sampled_from(SEED_NAMES + KERNEL_NAMES)))


@pytest.mark.slow
@fast(40)
@given(data=st.data())
def test_plugin_docker_flow_with_hostile_fields(sockets: Sockets, data: Any) -> None:
    """Docker's calls for one container in order, each body sometimes with hostile fields or
    any JSON, the network named anything (NetworkIDs and EndpointIDs too): every answer is
    200 or one line in the right field; what a 200 stored renders; the plugin keeps
    answering."""
    s = sockets
    s.reset()
    net_id = data.draw(field(HEX_ID, bad_every=6), label="NetworkID")
    ep_id = data.draw(field(HEX_ID, bad_every=6), label="EndpointID")
    if isinstance(net_id, str):
        s.plugin.docker.names[net_id] = data.draw(NETWORK_NAMES, label="network name")
    v6 = data.draw(st.booleans(), label="v6")
    state: dict[str, Any] = {"pool4": "calico-v4", "pool6": "calico-v6", "a4": "", "a6": ""}

    def call(kind: str, method: str, template: Any) -> tuple[int, Any]:
        body = body_of(data, template, method)
        status, answer = s.call(kind, method, body)
        event(f"{method}: {status}")
        check_answer(s, kind, method, body, status, answer)
        if status == 200 and method in WRITES:
            assert_renders(s.plugin.client.store, hosts=[DOCKHOST])
        if status == 200 and method == "CreateEndpoint":  # in the profile of its network,
            endpoint = s.plugin.client.get_endpoint(DOCKHOST, body["EndpointID"])  # as named
            assert endpoint.profiles == [s.plugin.docker.names[body["NetworkID"]]]  # in Docker
        return status, answer

    for kind, method in (("ipam", "GetCapabilities"), ("ipam", "GetDefaultAddressSpaces"),
                         ("net", "GetCapabilities")):
        call(kind, method, {})
    for version in (4, 6) if v6 else (4,):
        status, answer = call("ipam", "RequestPool", request_pool("", version == 6))
        if status == 200 and isinstance(answer.get("PoolID"), str):
            state[f"pool{version}"] = answer["PoolID"]
        status, answer = call("ipam", "RequestAddress", request_address(state[f"pool{version}"]))
        if status == 200 and isinstance(answer.get("Address"), str):
            state[f"a{version}"] = answer["Address"]
    call("net", "CreateNetwork", create_network(net_id, v6))
    call("net", "CreateEndpoint", create_endpoint(net_id, ep_id, state["a4"], state["a6"]))
    call("net", "Join", join(net_id, ep_id))
    for method in ("EndpointOperInfo", "ProgramExternalConnectivity", "DiscoverNew",
                   "RevokeExternalConnectivity", "DiscoverDelete", "Leave", "DeleteEndpoint"):
        call("net", method, ids(net_id, ep_id))
    for version in (4, 6) if v6 else (4,):
        call("ipam", "ReleaseAddress", {"PoolID": state[f"pool{version}"],
                                        "Address": state[f"a{version}"]})
        call("ipam", "ReleasePool", {"PoolID": state[f"pool{version}"]})
    call("net", "DeleteNetwork", {"NetworkID": net_id})
    assert s.plugin.alive()
    assert s.call("ipam", "Plugin.Activate") == (200, {"Implements": ["IpamDriver"]})


WRITES = {"RequestAddress", "ReleaseAddress", "CreateNetwork", "DeleteNetwork",
          "CreateEndpoint", "DeleteEndpoint", "Join"}
PATHS = sorted((("net" if name == "calico.sock" else "ipam"), path[1:])
               for name, (handlers, _) in routes(Driver(None, DOCKHOST, None)).items()  # type: ignore[arg-type]
               for path in handlers)


@pytest.mark.slow
@fast(100)
@given(data=st.data())
def test_plugin_answers_any_body_on_any_call(sockets: Sockets, data: Any) -> None:
    """Any JSON (or bytes that are not JSON, or bodies nested too deep or too big) on every
    call of both sockets."""
    s = sockets
    kind, method = data.draw(st.sampled_from(PATHS), label="call")
    raw = data.draw(st.one_of(
        st.none(), st.none(), st.binary(max_size=40),
        st.sampled_from((b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b'"just a string"',
                         b"{" + b'"k":"v",' * 10 + b"}",
                         b'{"NetworkID": "' + b"a" * 500_000 + b'"}'))), label="raw")
    body = None if raw is not None else data.draw(st.one_of(
        JSON_ANY, st.dictionaries(st.sampled_from(("NetworkID", "EndpointID", "PoolID",
                                                   "Address", "Pool", "Options", "Interface",
                                                   "V6", "IPv4Data")),
                                  st.one_of(JSON_ANY, hostile(HEX_ID)), max_size=5)),
        label="body")
    status, answer = s.call(kind, method, body, raw=raw)
    check_answer(s, kind, method, body, status, answer)
    if status == 200:
        assert_renders(s.plugin.client.store, hosts=[DOCKHOST])
    assert s.plugin.alive()


def _plugin_endpoint(s: Sockets, network_name: str, number: int) -> tuple[int, Any]:
    """Create a network named ``network_name`` in Docker and an endpoint on it."""
    net_id = f"{number:064x}"
    ep_id = f"{number:011x}" + uuid.uuid4().hex
    s.plugin.docker.names[net_id] = network_name
    assert s.call("net", "CreateNetwork", create_network(net_id))[0] == 200
    status, answer = s.call("ipam", "RequestAddress", request_address("calico-v4"))
    assert status == 200, answer
    return s.call("net", "CreateEndpoint", create_endpoint(net_id, ep_id, answer["Address"]))


HOSTILE_NETWORK_NAMES = [
    "web\n", "web\r\n", "\nweb", "we\x00b", "web\x1b[2J", "web\u2028", "web\u200b",
    "w\u0435b", "\uff57\uff45\uff42", "\U0001f642", "n" * 129, "x" * 200, " web", "-web",
    "_" + names.digest("web", 10), "web name"]


@pytest.mark.parametrize("name", HOSTILE_NETWORK_NAMES, ids=repr)
def test_plugin_refuses_networks_named_what_no_profile_can_be(sockets: Sockets,
                                                              name: str) -> None:
    """Docker users choose network names: control characters, separators, invisible and
    non-ASCII characters, 200 characters are refused at CreateEndpoint in one line naming
    the name; nothing but the network's own record is stored."""
    s = sockets
    before = {kv.key for kv in s.plugin.client.store.list(keys.ROOT)}
    status, answer = _plugin_endpoint(s, name, 1)
    assert status == 500, answer
    message = error_message("net", answer)
    assert one_line(message) and message.startswith("name: "), message
    after = {kv.key for kv in s.plugin.client.store.list(keys.ROOT)}
    assert {k for k in after - before if not k.startswith(keys.DOCKER_NETWORKS)} <= {
        k for k in after if k.startswith(keys.HANDLES) or k.startswith(keys.BLOCKS)
        or k.startswith(keys.AFFINITIES)}  # the address RequestAddress held, pending
    assert not [k for k in after if k.startswith(keys.ENDPOINTS) and k not in before]
    assert_renders(s.plugin.client.store, hosts=[DOCKHOST])


def test_plugin_network_named_after_an_operators_profile_is_refused(sockets: Sockets) -> None:
    """A Docker network named like the operator's profile "db" (second audit): its container
    is refused in one line naming the network (a Docker user must not enter the operator's
    group by naming a network after it); "db" stays as it was."""
    s = sockets
    before = s.plugin.client.get_profile("db")
    status, answer = _plugin_endpoint(s, "db", 2)
    assert status == 500, answer
    message = error_message("net", answer)
    assert one_line(message) and "db" in message, message
    assert s.plugin.client.get_profile("db") == before
    assert s.plugin.client.list_endpoints(DOCKHOST) == []
    assert_renders(s.plugin.client.store, hosts=[DOCKHOST])


@pytest.mark.netns
def test_plugin_network_named_after_a_marked_profile_joins_it_unchanged(
        sockets: Sockets, kernel: Callable[[Rendered], list[str]]) -> None:
    """Once the operator marks "db" as a Docker network's profile, the network's containers
    join it and its rules stay the operator's (not reset to the defaults)."""
    s = sockets
    marked = s.plugin.client.get_profile("db")
    marked.docker_network = True
    s.plugin.client.put_profile(Profile.from_dict(marked.to_dict()))
    before = s.plugin.client.get_profile("db")
    status, answer = _plugin_endpoint(s, "db", 3)
    assert status == 200, answer
    assert s.plugin.client.get_profile("db") == before
    [endpoint] = s.plugin.client.list_endpoints(DOCKHOST)
    assert endpoint.profiles == ["db"]
    for rendered in assert_renders(s.plugin.client.store, hosts=[DOCKHOST]):
        if rendered.host == DOCKHOST:
            assert rendered.snapshot.profiles["db"] == before
            assert kernel(rendered) == []


@pytest.mark.netns
def test_plugin_networks_named_like_other_objects_kernel_names_get_their_own(
        sockets: Sockets, kernel: Callable[[Rendered], list[str]]) -> None:
    """Networks named exactly like other objects' kernel names (the long profile's hashed
    chains, a tag's set, an endpoint's chains, the fixed chains and sets, a temporary set)
    each get kernel names of their own, and the kernel takes them all."""
    s = sockets
    taken = sorted(n for n in KERNEL_NAMES if NAME_RE.fullmatch(n))
    assert names.profile_inbound(LONG) in taken  # the hashed one: cali-pi-_...
    for number, name in enumerate(taken, 10):
        status, answer = _plugin_endpoint(s, name, number)
        assert status == 200, (name, answer)
    for rendered in assert_renders(s.plugin.client.store, hosts=[DOCKHOST]):
        assert set(rendered.snapshot.profiles) >= set(taken)
        if rendered.host == DOCKHOST:
            assert kernel(rendered) == []


# ======================================================================= Ansible modules



@pytest.fixture
def modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """exit_json / fail_json raise (as in tests/unit/plugins/modules) instead of exiting."""
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", helpers.exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", helpers.fail_json)


STATE = st.sampled_from(("present", "absent"))


def _module_options() -> dict[str, tuple[Any, st.SearchStrategy[dict]]]:
    def f(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return field(valid, JSON_WRONG, 4)
    rules = st.lists(rule_kwargs(JSON_WRONG, 8), max_size=3)
    return {
        "ip_pool": (ip_pool_module, st.fixed_dictionaries({"cidr": f(POOL_CIDR)}, optional={
            "nat_outgoing": f(st.booleans()), "disabled": f(st.booleans()),
            "block_size": f(st.integers(16, 130)), "state": f(STATE)})),
        "profile": (profile_module, st.fixed_dictionaries({"name": f(NAME)}, optional={
            "tags": f(st.lists(NAME, max_size=3)), "labels": f(LABELS),
            "inbound_rules": f(rules), "outbound_rules": f(rules),
            "default_rules": f(st.booleans()), "state": f(STATE),
            "docker_network": f(st.booleans())})),
        "node": (node_module, st.fixed_dictionaries({"name": f(HOST)}, optional={
            "ipv4": f(ADDR4), "ipv6": f(ADDR6), "as_number": f(ASN),
            "rr_cluster_id": f(V4), "ipv4_subnet": f(CIDR), "ipv6_subnet": f(CIDR),
            "state": f(STATE)})),
        "bgp_peer": (bgp_peer_module, st.fixed_dictionaries(
            {"address": f(ADDRESS), "as_number": f(ASN)}, optional={
                "node": f(st.just("h")), "password": f(PASSWORD), "state": f(STATE)})),
        "bgp_config": (bgp_config_module, st.fixed_dictionaries({}, optional={
            "as_number": f(ASN), "node_to_node_mesh": f(st.booleans())})),
        "calico_info": (calico_info_module, st.fixed_dictionaries(
            {}, optional={"hostname": f(HOST)})),
        "bird_config": (bird_config_module, st.fixed_dictionaries(
            {"hostname": f(st.sampled_from(("h", "h2")))})),
    }


MODULE_OPTIONS = _module_options()


def assert_module_refusal(out: dict[str, Any]) -> None:
    message = out["msg"]
    assert isinstance(message, str) and message.strip(), out
    assert one_line(message), repr(message)
    assert "Traceback" not in message and "exception" not in out, out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODULE_OPTIONS))
@fast(40)
@given(data=st.data())
def test_modules_fail_in_one_line_or_store_what_renders(modules: None, stores: Stores,
                                                         name: str, data: Any) -> None:
    module, options = MODULE_OPTIONS[name]
    url = stores.new()
    args = dict(data.draw(options.filter(utf8), label="options"), datastore=url)
    if name == "bird_config":
        args.update(path=str(stores.root / "bird" / "bird.conf"),
                    socket=str(stores.root / "no-such-bird.ctl"))
    if name == "calico_info":
        args["bird_socket"] = str(stores.root / "no-such-bird.ctl")
    out = helpers.call(module, args, check=data.draw(st.booleans(), label="check mode"))
    event("failed" if out.get("failed") else "changed" if out.get("changed") else "ok")
    if out.get("failed"):
        assert_module_refusal(out)
        return
    renders(url)


@pytest.fixture
def fake_docker(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """The Docker Engine API of tests/unit/plugins/modules/test_docker_network on a unix
    socket."""
    from ansible_collections.calico.docker.tests.unit.plugins.modules.test_docker_network import (  # noqa: E501
        FakeDocker as FakeEngine,
    )
    from ansible_collections.calico.docker.tests.unit.plugins.modules.test_docker_network import (  # noqa: E501
        serve_engine,
    )

    fake = FakeEngine()
    with serve_engine(fake, str(tmp_path / "docker.sock")) as url:
        yield fake, url


@fast(50)
@given(data=st.data())
def test_docker_network_module_fails_in_one_line(modules: None, fake_docker: tuple[Any, str],
                                                 data: Any) -> None:
    fake, url = fake_docker
    fake.networks.clear()
    fake.add("web")
    args = data.draw(st.fixed_dictionaries({"name": field(NETWORK_NAMES)}, optional={
        "subnet": field(st.lists(CIDR, max_size=2)), "ipv6": field(st.booleans()),
        "recreate": field(st.booleans()), "state": field(STATE),
        "docker_host": field(st.just(url))}).filter(utf8), label="options")
    args.setdefault("docker_host", url)
    out = helpers.call(docker_network_module, args, check=data.draw(st.booleans()))
    if out.get("failed"):
        message = out["msg"]
        assert one_line(message), repr(message)


@pytest.mark.netns
@fast(6)
@given(data=st.data())
def test_dataplane_module_in_a_namespace(modules: None, stores: Stores, data: Any) -> None:
    """The module that writes the kernel, in a throwaway namespace: a hostile host name is
    refused in one line; a good one reconciles."""
    url = stores.new()
    hostname = data.draw(field(st.sampled_from(("h", "h2")), JSON_WRONG, 2).filter(utf8),
                         label="hostname")
    with netns.namespace("calt-hd") as namespace, inside(namespace):
        out = helpers.call(dataplane_module, {
            "hostname": hostname, "datastore": url,
            "lock_file": str(stores.root / "dataplane.lock")},
            check=data.draw(st.booleans(), label="check mode"))
    if out.get("failed"):
        assert_module_refusal(out)
    else:  # the name given, or (none given: empty, false) this machine's
        Node(out["hostname"])


# ============================================================ the audits' explicit cases


ANY_NET_RULES = [
    {"action": "allow", "src_net": ["0.0.0.0/0", "10.0.0.0/8"]},
    {"action": "allow", "src_net": ["0.0.0.0/0", "::/0"], "protocol": "tcp", "dst_ports": [80]},
    {"action": "deny", "not_dst_net": ["::/0", "fd00::/8"]},
    {"action": "deny", "not_src_net": ["0.0.0.0/0"], "dst_net": ["10.65.0.0/16", "fd00::/8"]},
    {"action": "allow", "dst_net": ["::/0"], "not_src_net": ["10.0.0.0/8", "10.1.0.0/16"]},
    {"action": "allow", "src_net": "0.0.0.0/0, 192.0.2.0/24", "not_src_net": ["::/0"]},
]


@pytest.mark.netns
def test_any_net_in_a_cidr_list_is_stored_and_rendered_on_every_surface(
        stores: Stores, capsys: pytest.CaptureFixture[str], modules: None,
        kernel: Callable[[Rendered], list[str]]) -> None:
    """0.0.0.0/0 and ::/0 inside CIDR lists (second audit), through the API, calicoctl and
    the profile module: stored, rendered, taken by the kernel."""
    url = stores.new()
    with calico_lib.connect(url) as client:
        for rule in ANY_NET_RULES:
            client.add_rule("web", "inbound", Rule(**rule))
    code, _, err = run_cli(["profile", "rule", "add", "web", "outbound", "allow", "--src-net",
                            "0.0.0.0/0", "--src-net", "10.0.0.0/8", "--not-dst-net", "::/0",
                            "--not-dst-net", "fd00::/8", "--datastore", url], capsys)
    assert code == 0, err
    out = helpers.call(profile_module, {"name": "db", "inbound_rules": ANY_NET_RULES,
                                        "datastore": url})
    assert not out.get("failed"), out
    with calico_lib.connect(url) as client:
        client.add_endpoint(Endpoint("e2", "h", "calidb", ipv4_nets=["10.65.0.2"],
                                     ipv6_nets=["fd00:65::2"], profiles=["db", "web"]))
    for rendered in renders(url):
        if rendered.host == "h":
            assert kernel(rendered) == []


CONTRADICTIONS = [
    ({"protocol": "tcp", "not_protocol": "udp"}, "not_protocol"),
    ({"protocol": 6, "not_protocol": 6}, "not_protocol"),
    ({"src_tag": "web", "not_src_tag": "web"}, "not_src_tag"),
    ({"dst_tag": LONG, "not_dst_tag": LONG}, "not_dst_tag"),
    ({"src_net": ["10.1.0.0/16"], "not_src_net": ["10.0.0.0/8"]}, "not_src_net"),
    ({"dst_net": ["fd00::/64"], "not_dst_net": ["::/0"]}, "not_dst_net"),
    ({"protocol": "tcp", "dst_ports": [80], "not_dst_ports": ["1:1024"]}, "not_dst_ports"),
    ({"protocol": "icmp", "icmp_type": 8, "not_icmp_type": 8}, "not_icmp_type"),
    ({"src_net": ["10.0.0.0/8"], "dst_net": ["fd00::/8"]}, "dst_net"),
]


@pytest.mark.parametrize("rule, field_name", CONTRADICTIONS,
                         ids=[f for _, f in CONTRADICTIONS])
def test_contradictory_matches_are_refused_on_every_surface(
        stores: Stores, capsys: pytest.CaptureFixture[str], modules: None,
        rule: dict[str, Any], field_name: str) -> None:
    """A match and its negation (second audit): refused by the API, calicoctl and the profile
    module in one line naming the negated field; nothing stored."""
    url = stores.new()
    with calico_lib.connect(url) as client:
        before = client.get_profile("web")
        with pytest.raises(ValidationError) as info:
            client.add_rule("web", "inbound", Rule(action="allow", **rule))
        assert_refusal(info.value)
        assert info.value.field == field_name
    argv = ["profile", "rule", "add", "web", "inbound", "allow", "--datastore", url]
    for key, value in rule.items():
        for item in value if isinstance(value, list) else [value]:
            argv += ["--" + key.replace("_", "-"), str(item)]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and one_line(err[:-1]), err
    assert err.startswith(f"calicoctl: {field_name}: "), err
    msg = helpers.failed(profile_module, {"name": "web", "datastore": url,
                                          "inbound_rules": [dict(rule, action="allow")]})
    assert msg.startswith(f"inbound_rules[0].{field_name}: ") and one_line(msg), msg
    with calico_lib.connect(url) as client:
        assert client.get_profile("web") == before


NEWLINE_CASES = {  # each a name ending in a newline, as a YAML block scalar ("|") gives it
    "profile name": (lambda c: c.add_profile("web2\n"), "name"),
    "tag": (lambda c: c.put_profile(Profile("web2", tags=["web\n"])), "tags"),
    "rule tag": (lambda c: c.add_rule("web", "inbound", Rule(src_tag="web\n")), "src_tag"),
    "rule profile": (lambda c: c.add_rule("web\n", "inbound", Rule()), "profile"),
    "direction": (lambda c: c.add_rule("web", "inbound\n", Rule()), "direction"),
    "action": (lambda c: c.add_rule("web", "inbound", Rule(action="allow\n")), "action"),
    "protocol": (lambda c: Rule(protocol="tcp\n"), "protocol"),
    "ports": (lambda c: Rule(protocol="tcp", dst_ports="80\n"), "dst_ports"),
    "net": (lambda c: Rule(src_net=["10.0.0.0/8\n"]), "src_net"),
    "node": (lambda c: c.add_node(Node("n1\n")), "name"),
    "node address": (lambda c: c.add_node(Node("n1", ipv4="10.0.0.9\n")), "ipv4"),
    "as number": (lambda c: c.set_bgp_config(as_number="65000\n"), "as_number"),
    "peer": (lambda c: c.add_bgp_peer(BGPPeer("10.0.0.9\n", 65000)), "address"),
    "password": (lambda c: c.add_bgp_peer(BGPPeer("10.0.0.9", 65000, password="pw\n")),
                 "password"),
    "endpoint id": (lambda c: c.add_endpoint(Endpoint("e9\n", "h", "calie9")), "id"),
    "endpoint host": (lambda c: c.add_endpoint(Endpoint("e9", "h\n", "calie9")), "host"),
    "interface": (lambda c: c.add_endpoint(Endpoint("e9", "h", "calie9\n")), "interface"),
    "pool": (lambda c: c.add_pool(IPPool("10.70.0.0/16\n")), "cidr"),
    "agent action": (lambda c: c.set_agent_config("drop\n"), "default_endpoint_to_host_action"),
    "handle": (lambda c: c.ipam.auto_assign("h", "hd\n", 1), "handle"),
    "address": (lambda c: c.ipam.assign_ip("10.65.0.9\n", "hd", "h"), "ip"),
}


@pytest.mark.parametrize("case", sorted(NEWLINE_CASES))
def test_names_ending_in_a_newline_are_refused_by_the_api(case: str) -> None:
    client = memory_client()
    before = {kv.key: kv.value for kv in client.store.list(keys.ROOT)}
    call, field_name = NEWLINE_CASES[case]
    with pytest.raises(ValidationError) as info:
        call(client)
    assert_refusal(info.value)
    assert info.value.field == field_name
    assert {kv.key: kv.value for kv in client.store.list(keys.ROOT)} == before


NEWLINE_ARGV = [
    ["pool", "add", "10.70.0.0/16\n"], ["profile", "add", "web2\n"],
    ["profile", "add", "web2", "--label", "tier=web\n"],
    ["profile", "rule", "add", "web\n", "inbound", "allow"],
    ["profile", "rule", "add", "web", "inbound", "allow", "--src-tag", "db\n"],
    ["profile", "rule", "add", "web", "inbound", "allow", "--protocol", "tcp\n"],
    ["node", "add", "n1\n"], ["node", "add", "n1", "--ip", "10.0.0.9\n"],
    ["node", "add", "n1", "--as", "65000\n"], ["bgp", "peer", "add", "10.0.0.9\n", "--as", "1"],
    ["bgp", "peer", "add", "10.0.0.9", "--as", "1", "--node", "h\n"],
    ["bgp", "peer", "add", "10.0.0.9", "--as", "1", "--password", "pw\n"],
    ["endpoint", "add", "--host", "h\n", "--interface", "calie9", "--profile", "web"],
    ["endpoint", "add", "--host", "h", "--interface", "calie9\n", "--profile", "web"],
    ["endpoint", "add", "--host", "h", "--interface", "calie9", "--profile", "web\n"],
    ["endpoint", "add", "--host", "h", "--interface", "calie9", "--profile", "web", "--ip",
     "10.65.0.9\n"],
]


@pytest.mark.parametrize("argv", NEWLINE_ARGV, ids=" ".join)
def test_names_ending_in_a_newline_are_refused_by_calicoctl(
        stores: Stores, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    url = stores.new()
    code, out, err = run_cli(argv + ["--datastore", url], capsys)
    assert code == 2 and out == "", (code, out, err)
    err = without_warnings(err)
    assert err.startswith("calicoctl: ") and one_line(err[:-1]), repr(err)
    renders(url)


NEWLINE_MODULE_ARGS = [
    ("ip_pool", {"cidr": "10.70.0.0/16\n"}), ("profile", {"name": "web2\n"}),
    ("profile", {"name": "web", "tags": ["web\n"]}),
    ("profile", {"name": "web", "labels": {"tier": "web\n"}}),
    ("profile", {"name": "web", "inbound_rules": [{"action": "allow", "src_tag": "db\n"}]}),
    ("profile", {"name": "web", "inbound_rules": [{"action": "allow\n"}]}),
    ("node", {"name": "n1\n"}), ("node", {"name": "n1", "ipv6": "fd00::9\n"}),
    ("node", {"name": "n1", "rr_cluster_id": "1.2.3.4\n"}),
    ("bgp_peer", {"address": "10.0.0.9\n", "as_number": 1}),
    ("bgp_peer", {"address": "10.0.0.9", "as_number": 1, "node": "h\n"}),
    ("bgp_peer", {"address": "10.0.0.9", "as_number": 1, "password": "pw\n"}),
    ("calico_info", {"hostname": "h\n"}), ("bird_config", {"hostname": "h\n"}),
]


@pytest.mark.parametrize("name, args", NEWLINE_MODULE_ARGS,
                         ids=[f"{n}-{next(iter(a.values()))!r}" for n, a in NEWLINE_MODULE_ARGS])
def test_names_ending_in_a_newline_are_refused_by_the_modules(
        stores: Stores, modules: None, name: str, args: dict[str, Any]) -> None:
    url = stores.new()
    message = helpers.failed(MODULE_OPTIONS[name][0], dict(args, datastore=url))
    assert one_line(message) and FIELD_FIRST.match(message), message
    renders(url)


@pytest.mark.parametrize("body", [
    {"NetworkID": NET, "EndpointID": EP + "\n"}, {"NetworkID": NET, "EndpointID": "web\n"},
    {"NetworkID": NET + "\n", "EndpointID": EP}])
def test_plugin_refuses_ids_ending_in_a_newline(sockets: Sockets, body: dict[str, str]) -> None:
    s = sockets
    status, answer = s.call("ipam", "RequestAddress", request_address("calico-v4"))
    status, answer = s.call("net", "CreateEndpoint", dict(
        create_endpoint(body["NetworkID"], body["EndpointID"], answer["Address"])))
    assert status == 500 and one_line(error_message("net", answer)), answer
    status, answer = s.call("net", "Join", join(body["NetworkID"], body["EndpointID"]))
    assert status == 500
    assert_renders(s.plugin.client.store, hosts=[DOCKHOST])


# ============================================== regressions of the defects found (xfail)


def xfail(defect: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"{defect}: {DEFECTS[defect]}")


@pytest.mark.parametrize("method, body", [
    ("RequestPool", {"Pool": 5}),
    ("RequestAddress", {"PoolID": "calico-v4", "Options": "x"}),
    ("RequestAddress", {"PoolID": "calico-v4:zzz", "Address": "10.65.0.5"}),
    ("CreateNetwork", {"NetworkID": "n1", "Options": {"com.docker.network.generic": 5}}),
    ("CreateNetwork", {"NetworkID": "n1", "IPv4Data": "ab"}),
    ("CreateNetwork", {"NetworkID": "n1", "IPv4Data": [1]}),
    ("CreateNetwork", {"NetworkID": "n1", "IPv4Data": [{"AddressSpace": []}]}),
    ("CreateEndpoint", {"NetworkID": NET, "EndpointID": EP, "Interface": "x"}),
    ("CreateEndpoint", {"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": 5}}),
], ids=lambda v: v if isinstance(v, str) else json.dumps(v)[:40])
def test_d1_plugin_refuses_wrong_types_naming_the_field(sockets: Sockets, method: str,
                                                        body: dict[str, Any]) -> None:
    s = sockets
    kind = "ipam" if method.startswith(("Request", "Release")) else "net"
    status, answer = s.call(kind, method, body)
    message = error_message(kind, answer)
    assert status == 500 and message != INTERNAL_ERROR, message


@pytest.mark.netns
def test_d1_leave_refuses_an_endpoint_id_no_veth_name_can_hold() -> None:
    """Leave turns any EndpointID into a veth name for the kernel: with the real dataplane
    hook a lone surrogate raises UnicodeEncodeError (the answer: internal error)."""
    from calico_lib.dataplane.veth import delete_veth

    with netns.namespace("calt-hl") as namespace, inside(namespace):
        driver = Driver(memory_client(), DOCKHOST, FakeDocker(),  # type: ignore[arg-type]
                        delete_veth=delete_veth)
        attempt(lambda: driver.leave({"EndpointID": "\ud800"}))


@pytest.mark.parametrize("kind, method, body", [
    ("net", "Join", {"NetworkID": NET, "EndpointID": "e1\nforged log line"}),
    ("net", "Join", {"NetworkID": NET, "EndpointID": "\ud800"}),
    ("net", "CreateEndpoint", {"NetworkID": "no\nsuch", "EndpointID": EP,
                               "Interface": {"Address": "10.65.0.9"}}),
    ("ipam", "RequestPool", {"Pool": "10.99.0.0/16\n"}),
    ("net", "CreateNetwork", {"NetworkID": "n1", "Options": {"x\ny": 1}}),
    ("net", "NetworkDriver.Join\x1b[2J", {}),
], ids=["join-newline", "join-surrogate", "network-id", "pool", "option", "path"])
def test_d2_plugin_refusals_are_one_printable_line(sockets: Sockets, kind: str, method: str,
                                                   body: dict[str, Any]) -> None:
    s = sockets
    status, answer = s.call(kind, method, body)
    assert status >= 400
    assert one_line(error_message(kind, answer)), answer


def test_d3_plugin_refuses_an_endpoint_whose_veth_name_is_taken(sockets: Sockets) -> None:
    """Endpoint ids sharing their first 11 characters share the host veth name: the second
    is stored and the host's snapshot drops the first, working one."""
    s = sockets
    for suffix, address in (("1", "10.65.0.10"), (".2", "10.65.0.11")):
        s.call("net", "CreateEndpoint", create_endpoint(NET, "aaaaaaaaaaa" + suffix, address))
    assert load_snapshot(s.plugin.client.store, DOCKHOST).unreadable == ()


def test_d3_put_endpoint_refuses_an_interface_in_use() -> None:
    client = memory_client()
    with pytest.raises(CalicoError):
        client.put_endpoint(Endpoint("e0", "h", "caliweb", ipv4_nets=["10.65.0.2"]))
    assert load_snapshot(client.store, "h").unreadable == ()


def test_d4_plugin_stores_no_key_with_control_characters(sockets: Sockets) -> None:
    s = sockets
    s.call("net", "CreateNetwork", create_network("n\n1"))
    stored = [kv.key for kv in s.plugin.client.store.list(keys.DOCKER_NETWORKS)]
    assert all(map(str.isprintable, stored)), stored


@pytest.mark.parametrize("make", [lambda: Node("n2", ipv4="10.0.0.2", ipv6="::"),
                                  lambda: Node("n2", ipv4="10.0.0.2", ipv6="fe80::1"),
                                  lambda: BGPPeer("::", 65000),
                                  lambda: BGPPeer("fe80::1", 65000)],
                         ids=["node-unspecified", "node-link-local", "peer-unspecified",
                              "peer-link-local"])
def test_d5_nodes_and_peers_bird_would_refuse_are_refused(make: Callable[[], Any]) -> None:
    """D5 (fixed): BIRD refused the whole config for a neighbour at :: or a link-local
    address; the model refuses such addresses in one line."""
    with pytest.raises(ValidationError) as info:
        make()
    assert one_line(str(info.value)) and "unicast" in str(info.value)


@pytest.mark.netns
def test_d6_bird_protocol_names_are_distinct(kernel: Callable[[Rendered], list[str]]) -> None:
    client = memory_client()
    client.add_node(Node("n2", ipv4="10.0.0.2", ipv6="::1.0.0.2"))
    client.add_node(Node("n3", ipv4="10.0.0.3", ipv6="::1:0:0:2"))
    [rendered] = [r for r in assert_renders(client.store) if r.host == "h"]
    assert kernel(rendered) == []


@pytest.mark.netns
@pytest.mark.parametrize("rule", [
    Rule(src_net=["10.0.0.0/8"], not_src_net=["10.1.0.0/16"]),
    Rule(action="deny", dst_net=["fd00::/8"], not_dst_net=["fd00:1::/32"]),
], ids=["src", "dst"])
def test_d7_a_net_and_a_negated_net_render_for_iptables(
        rule: Rule, kernel: Callable[[Rendered], list[str]]) -> None:
    client = memory_client()
    client.add_rule("web", "inbound", rule)
    [rendered] = [r for r in assert_renders(client.store) if r.host == "h"]
    assert kernel(rendered) == []


@pytest.mark.netns
@pytest.mark.parametrize("write", [
    lambda c: c.add_endpoint(Endpoint("e2", "h", "calie2", ipv4_nets=["0.0.0.0"],
                                      profiles=["web"])),
    lambda c: c.add_endpoint(Endpoint("e2", "h", "calie2", ipv6_nets=["::"], profiles=["web"])),
    lambda c: c.add_node(Node("n2", ipv4="0.0.0.0")),
    lambda c: c.add_bgp_peer(BGPPeer("0.0.0.0", 65000)),
], ids=["endpoint-v4", "endpoint-v6", "node", "peer"])
def test_d8_unspecified_addresses_are_refused_or_rendered(
        write: Callable[[Client], Any], kernel: Callable[[Rendered], list[str]]) -> None:
    client = memory_client()
    try:
        write(client)
    except ValidationError:
        return
    [rendered] = [r for r in assert_renders(client.store) if r.host == "h"]
    assert kernel(rendered) == []


def test_d9_calicoctl_profile_add_validates_tags(stores: Stores,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = stores.new()
    code, _, err = run_cli(["profile", "add", "web2", "--tag", "db\n", "--datastore", url],
                           capsys)
    assert code == 2, "stored a profile whose record cannot be read"
    renders(url)


def test_d9_client_writes_revalidate_objects_changed_after_construction() -> None:
    """The root of D9: a model object changed after construction is written unvalidated."""
    client = memory_client()
    profile = Profile("web2")
    profile.tags = ["db\n"]
    try:
        client.add_profile(profile)
    except ValidationError:
        pass
    assert client.check_records() == []


@pytest.mark.parametrize("argv", [
    ["profile", "add", "web2", "--rules", "/nonexistent\nforged"],
    ["bgp", "peer", "add", "10.0.0.9", "--as", "1", "--password-file", "/nonexistent\nforged"],
], ids=["rules", "password-file"])
def test_d10_calicoctl_quotes_paths_on_one_line(stores: Stores,
                                                capsys: pytest.CaptureFixture[str],
                                                argv: list[str]) -> None:
    code, _, err = run_cli(argv + ["--datastore", stores.new()], capsys)
    assert code == 2 and one_line(err[:-1]), repr(err)


@pytest.mark.parametrize("rule", [{"action": "allow", "src_net": "garbage"}, "allow"],
                         ids=["dict", "str"])
def test_d11_add_rule_refuses_what_is_not_a_rule(rule: Any) -> None:
    client = memory_client()
    try:
        client.add_rule("web", "inbound", rule)
    except ValidationError:
        pass
    assert client.check_records() == []


@pytest.mark.parametrize("call", [
    lambda c: c.add_pool("10.70.0.0/16"), lambda c: c.add_profile(5),
    lambda c: c.put_profile({"name": "x"}), lambda c: c.add_node("n2"),
    lambda c: c.add_bgp_peer("10.0.0.9"), lambda c: c.add_endpoint("e2"),
    lambda c: c.add_rule("web", "inbound", Rule(), position="1"),
    lambda c: c.add_rule("web", "inbound", Rule(), position=0.5),
    lambda c: c.ipam.release_ips(5), lambda c: c.ipam.auto_assign("h", "hd", 1, pools=5),
], ids=["add_pool", "add_profile", "put_profile", "add_node", "add_bgp_peer", "add_endpoint",
        "position-str", "position-float", "release_ips", "auto_assign-pools"])
def test_d12_client_refuses_wrong_argument_types_naming_them(call: Callable[[Client], Any]
                                                             ) -> None:
    assert isinstance(attempt(lambda: call(memory_client())), ValidationError)


@pytest.mark.parametrize("call", [
    lambda c: c.ipam.release_ips("10.65.0.1"),
    lambda c: c.ipam.auto_assign("h", "hd", 1, pools=POOL4)], ids=["release_ips", "pools"])
def test_d13_a_bare_string_is_one_value_not_its_characters(call: Callable[[Client], Any]
                                                           ) -> None:
    refused = attempt(lambda: call(memory_client()))
    assert refused is None or "'1'" not in str(refused), str(refused)


@pytest.mark.parametrize("name, args", [
    ("profile", {"name": "web", "state": "present\n"}),
    ("bgp_config", {"node_to_node_mesh": "maybe\n"}),
    ("profile", {"name": "web", "colour\nforged": 1}),
], ids=["choices", "bool", "unsupported"])
def test_d14_module_argument_refusals_are_one_line(stores: Stores, modules: None, name: str,
                                                   args: dict[str, Any]) -> None:
    out = helpers.call(MODULE_OPTIONS[name][0], dict(args, datastore=stores.new()))
    assert out.get("failed") and one_line(out["msg"]), repr(out.get("msg"))


@pytest.mark.parametrize("name", ["web\n", "x" * 200, "web name"], ids=repr)
def test_d15_docker_network_refuses_names_that_cannot_be_profiles(
        modules: None, fake_docker: tuple[Any, str], name: str) -> None:
    fake, url = fake_docker
    out = helpers.call(docker_network_module, {"name": name, "docker_host": url})
    assert out.get("failed") and one_line(out["msg"]), out
    assert fake.writes() == []


def test_d15_docker_network_quotes_docker_host_on_one_line(modules: None) -> None:
    out = helpers.call(docker_network_module, {"name": "web",
                                               "docker_host": "unix:///nonexistent\nforged"})
    assert out.get("failed") and one_line(out["msg"]), repr(out["msg"])


def test_d16_calicoctl_refuses_a_password_file_that_is_not_utf8(
        stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    path = stores.file(b"pass\xed\xa0\x80word\n")
    code, _, err = run_cli(["bgp", "peer", "add", "10.0.0.9", "--as", "1", "--password-file",
                            path, "--datastore", stores.new()], capsys)
    assert code == 2 and one_line(without_warnings(err)[:-1]), repr(err)
