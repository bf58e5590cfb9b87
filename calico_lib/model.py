"""The validated data model.

Every object normalises its fields on construction and raises ``ValidationError``
(one line: the field and what is allowed) on bad input. Objects serialise to plain
JSON-able dicts with ``to_dict`` and back with ``from_dict``, which refuses unknown fields.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import netaddr

from .errors import ValidationError

DEFAULT_AS = 64512
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
HOST_PREFIX = {4: 32, 6: 128}

# Ranges a pool must not touch: the workload gateway lives in link-local space.
RESERVED_NETS = [
    netaddr.IPNetwork(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
              "::/128", "::1/128", "fe80::/10", "ff00::/8")
]

# Every pattern is applied with fullmatch: "$" would also match before a trailing newline.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?")
#: host-side veths are ours only when named cali*: an endpoint on eth0 would get proxy ARP
#: and its routes replaced
IFNAME_RE = re.compile(r"cali[A-Za-z0-9_.-]{1,11}")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_./-]{0,251}[A-Za-z0-9])?")
LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")
DIGITS_RE = re.compile(r"[0-9]{1,10}")
PORT_RANGE_RE = re.compile(r"([0-9]{1,5}) *: *([0-9]{1,5})")
#: ADDR/PREFIX (the address itself is checked by netaddr)
SUBNET_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}")
#: the longest piece of a bad value an error message quotes
SHOW_MAX = 64

PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "sctp")
PORT_PROTOCOLS = {"tcp", "udp", "sctp", 6, 17, 132}
ICMP_PROTOCOLS = {"icmp": 4, "icmpv6": 6, 1: 4, 58: 6}
#: log: logs the packet (kernel log, prefix naming profile and rule) and goes on to the
#: next rule, like Calico's Log action
ACTIONS = ("allow", "deny", "log")
ENDPOINT_STATES = ("active", "inactive")


# --------------------------------------------------------------------------- validators

def _fail(field_name: str, problem: str) -> ValidationError:
    return ValidationError(field_name, problem)


def show(value: Any) -> str:
    """A bad value as an error message quotes it: one line (repr escapes control and
    invisible characters), and no longer than ``SHOW_MAX``."""
    text = repr(value)
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX - 3] + "..."


def printable(field_name: str, value: Any) -> str:
    """``value`` if it is a string of printable characters (no control characters, no
    line or paragraph separators, no invisible format characters); else ValidationError."""
    if not isinstance(value, str):
        raise _fail(field_name, f"{show(value)} is not allowed; use a string")
    if not value.isprintable():
        raise _fail(field_name, f"{show(value)} is not allowed; control and invisible "
                                "characters are refused")
    return value


def parse_network(field_name: str, value: Any, version: int | None = None) -> netaddr.IPNetwork:
    """A CIDR (host bits cleared) or a bare address (as /32 or /128)."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(field_name, f"{show(value)} is not a CIDR; use e.g. 10.0.0.0/16 or "
                                "fd00::/64")
    printable(field_name, value)
    try:
        net = netaddr.IPNetwork(value.strip())
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise _fail(
            field_name, f"{show(value)} is not a CIDR; use e.g. 10.0.0.0/16 or fd00::/64"
        ) from None
    if version is not None and net.version != version:
        raise _fail(field_name, f"{value} is IPv{net.version}; IPv{version} is required here")
    return net.cidr


def parse_address(field_name: str, value: Any, version: int | None = None) -> netaddr.IPAddress:
    if not isinstance(value, str) or not value.strip():
        raise _fail(field_name, f"{show(value)} is not an IP address; use e.g. 10.0.0.1 or "
                                "fd00::1")
    text = printable(field_name, value).strip()
    if "/" in text:  # accept ADDR/PREFIX, as operators often paste it that way
        text = text.split("/", 1)[0]
    try:
        addr = netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise _fail(
            field_name, f"{show(value)} is not an IP address; use e.g. 10.0.0.1 or fd00::1"
        ) from None
    if version is not None and addr.version != version:
        raise _fail(field_name, f"{value} is IPv{addr.version}; IPv{version} is required here")
    return addr


def parse_subnet(field_name: str, value: Any, version: int) -> netaddr.IPNetwork:
    """A host's subnet of IP ``version`` in CIDR, ``ADDR/PREFIX`` and nothing else (host
    bits may be set, as in Calico's ``ipv4Address: 10.0.0.1/24``; they are cleared)."""
    example = "10.0.0.0/24" if version == 4 else "2001:db8::/64"
    problem = f"{show(value)} is not a subnet; use a CIDR such as {example}"
    if not isinstance(value, str) or not SUBNET_RE.fullmatch(value):
        raise _fail(field_name, problem)
    text, prefix = value.split("/")
    try:
        addr = netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise _fail(field_name, problem) from None
    if addr.version != version:
        raise _fail(field_name, f"{value} is IPv{addr.version}; IPv{version} is required here")
    if int(prefix) > HOST_PREFIX[version]:
        raise _fail(field_name, f"{value}: /{int(prefix)} is not allowed; use a prefix "
                                f"length 0-{HOST_PREFIX[version]}")
    return netaddr.IPNetwork(f"{addr}/{int(prefix)}").cidr


def validate_name(field_name: str, value: Any, pattern: re.Pattern[str] = NAME_RE,
                  what: str = "letters, digits, '_', '.', '-', starting with a letter or "
                              "digit, at most 128 characters") -> str:
    """``value`` if it is a name (of ``pattern``); else ValidationError naming the field."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(field_name, f"{show(value)} is not allowed; use {what}")
    return value


def routable_address(field_name: str, value: Any, version: int | None = None
                     ) -> netaddr.IPAddress:
    """An address a host, a peer or a container can have: not unspecified (0.0.0.0, ::),
    loopback, link-local or multicast (BIRD refuses such neighbours, ipset such members)."""
    addr = parse_address(field_name, value, version)
    if addr.value == 0 or addr.is_loopback() or addr.is_link_local() or addr.is_multicast() \
            or addr == LIMITED_BROADCAST:
        raise _fail(field_name, f"{addr} is not allowed; use a unicast address (not "
                                "unspecified, loopback, link-local, multicast or broadcast)")
    prefix = value.strip().partition("/")[2]  # ADDR/PREFIX: not the subnet's own address
    if prefix.isdecimal() and int(prefix) <= HOST_PREFIX[addr.version]:
        not_host_address(field_name, addr, netaddr.IPNetwork(f"{addr}/{int(prefix)}").cidr)
    return addr


#: subnets this long or longer hold hosts only (RFC 3021, RFC 6164)
POINT_TO_POINT = {4: 31, 6: 127}
LIMITED_BROADCAST = netaddr.IPAddress("255.255.255.255")


def not_host_address(field_name: str, addr: netaddr.IPAddress, subnet: netaddr.IPNetwork
                     ) -> None:
    """Refuse ``addr`` when it is ``subnet``'s network address (IPv6: its subnet-router
    anycast address) or IPv4 broadcast address: no host, and no BGP peer, has it."""
    if subnet.prefixlen >= POINT_TO_POINT[subnet.version] or addr not in subnet:
        return
    if addr == subnet.network:
        what = "network" if subnet.version == 4 else "subnet-router anycast"
    elif subnet.version == 4 and addr == subnet.broadcast:
        what = "broadcast"
    else:
        return
    raise _fail(field_name, f"{addr} is the {what} address of {subnet}; use the host's own "
                            "address in it")


def validate_hostname(field_name: str, value: Any) -> str:
    """``value`` if it is a host (node) name; else ValidationError naming the field."""
    return validate_name(field_name, value, HOSTNAME_RE,
                         "a host name: letters, digits, '.', '-', '_', at most 253 characters")


def _bool(field_name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
        return False
    raise _fail(field_name, f"{show(value)} is not allowed; use true or false")


def validate_int(field_name: str, value: Any, low: int, high: int) -> int:
    """``value`` (a number, or its digits) if it is within ``low``-``high``."""
    if isinstance(value, bool):
        raise _fail(field_name, f"{show(value)} is not allowed; use a number {low}-{high}")
    if isinstance(value, str) and DIGITS_RE.fullmatch(value.strip(" ")):
        value = int(value.strip(" "))
    if not isinstance(value, int) or not low <= value <= high:
        raise _fail(field_name, f"{show(value)} is not allowed; use a number {low}-{high}")
    return value


def parse_as_number(field_name: str, value: Any) -> int:
    return validate_int(field_name, value, 1, 4294967295)


def _labels(field_name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(field_name, "use a mapping of label names to values")
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.fullmatch(key):
            raise _fail(field_name, f"label name {show(key)} is not allowed; use letters, "
                                    "digits, '_', '.', '/', '-'")
        if not isinstance(val, str) or not LABEL_VALUE_RE.fullmatch(val):
            raise _fail(field_name, f"label {key}={show(val)} is not allowed; use at most 63 "
                                    "letters, digits, '_', '.', '-'")
        out[key] = val
    return dict(sorted(out.items()))


def _str_list(field_name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # "a, b": only spaces are trimmed, never control characters
        return [v.strip(" ") for v in value.split(",") if v.strip(" ")]
    if not isinstance(value, (list, tuple)):
        raise _fail(field_name, f"{show(value)} is not allowed; use a list")
    return list(value)


def _ports(field_name: str, value: Any) -> list[int | str] | None:
    """Ports: numbers 0-65535 and ranges "a:b" (a <= b); a list or a comma-separated string."""
    if value is None:
        return None
    items = _str_list(field_name, value) if not isinstance(value, int) else [value]
    if not items:
        raise _fail(field_name, "empty port list; use numbers 0-65535 and ranges a:b")
    allowed = "use numbers 0-65535 and ranges a:b with a <= b"
    out: list[int | str] = []
    for item in items:
        if isinstance(item, bool):
            raise _fail(field_name, f"{show(item)} is not allowed; {allowed}")
        text = item.strip(" ") if isinstance(item, str) else None
        if isinstance(item, int) or (text is not None and DIGITS_RE.fullmatch(text)):
            port = int(item)
            if not 0 <= port <= 65535:
                raise _fail(field_name, f"{show(item)} is not allowed; {allowed}")
            out.append(port)
            continue
        match = PORT_RANGE_RE.fullmatch(text) if text is not None else None
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if not (0 <= low <= high <= 65535):
                raise _fail(field_name, f"{show(item)} is not allowed; {allowed}")
            out.append(f"{low}:{high}")
            continue
        raise _fail(field_name, f"{show(item)} is not allowed; {allowed}")
    return out


def _protocol(field_name: str, value: Any) -> str | int | None:
    if value is None:
        return None
    if isinstance(value, str) and DIGITS_RE.fullmatch(value.strip(" ")):
        value = int(value.strip(" "))
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= 255:
            return value
    elif isinstance(value, str) and value.lower() in PROTOCOLS:
        return value.lower()
    raise _fail(field_name, f"{show(value)} is not allowed; use tcp, udp, icmp, icmpv6, sctp "
                            "or a protocol number 1-255")


# --------------------------------------------------------------------------- serialisation

T = TypeVar("T", bound="Model")


class Model:
    """Shared JSON round trip: ``to_dict`` gives plain data, ``from_dict`` validates it."""

    #: fields left out of ``to_dict`` when they hold their default (keeps rules short)
    compact: ClassVar[bool] = False
    #: fields ``to_dict`` keeps even when compact
    always: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if self.compact and f.name not in self.always and _is_default(f, value):
                continue
            out[f.name] = value.to_dict() if isinstance(value, Model) else _plain(value)
        return out

    @classmethod
    def from_dict(cls: type[T], data: Any) -> T:
        kind = cls.__name__.lower()
        if not isinstance(data, dict):
            raise _fail(kind, f"{show(data)} is not allowed; use a mapping")
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted((str(k) for k in set(data) - set(names)), key=str)
        if unknown:
            name = unknown[0] if unknown[0].isidentifier() else "field"
            raise _fail(name, f"unknown field {show(unknown[0])} of a {kind}; allowed: "
                        f"{', '.join(names)}")
        for f in fields(cls):  # type: ignore[arg-type]
            if (f.default is MISSING and f.default_factory is MISSING
                    and f.name not in data):
                raise _fail(f.name, f"missing; a {kind} needs it")
        return cls(**data)


def _is_default(f: Any, value: Any) -> bool:
    if f.default is not MISSING:
        return value == f.default
    if f.default_factory is not MISSING:
        return value == f.default_factory()
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- objects

#: a pool's ``vxlan_mode`` values (Calico's Never, Always, CrossSubnet)
VXLAN_MODES = ("never", "always", "cross-subnet")


@dataclass
class IPPool(Model):
    """A range that container addresses are drawn from, carved into blocks.

    ``vxlan_mode`` (as Calico's ``vxlanMode``): ``never`` routes the pool's traffic
    natively between hosts; ``always`` encapsulates it (VXLAN) to the other host's address;
    ``cross-subnet`` only to hosts on another subnet (``Node.ipv4_subnet``). IPv4 pools
    only. Left out of ``to_dict`` when ``never``, so such records read as before."""

    compact: ClassVar[bool] = True  # vxlan_mode only when it encapsulates
    always: ClassVar[tuple[str, ...]] = ("cidr", "block_size", "nat_outgoing", "disabled")

    cidr: str
    block_size: int | None = None
    nat_outgoing: bool = False
    disabled: bool = False
    vxlan_mode: str = "never"

    def __post_init__(self) -> None:
        net = parse_network("cidr", self.cidr)
        for reserved in RESERVED_NETS:
            if reserved.version == net.version and (net in reserved or reserved in net):
                raise _fail("cidr", f"{net} overlaps reserved range {reserved}; use a unicast "
                                    "range outside loopback, link-local and multicast")
        self.cidr = str(net)
        low, high = BLOCK_SIZE_RANGE[net.version]
        if self.block_size is None:
            self.block_size = DEFAULT_BLOCK_SIZE[net.version]
        self.block_size = validate_int("block_size", self.block_size, low, high)
        if net.prefixlen > self.block_size:
            raise _fail("block_size", f"/{self.block_size} blocks do not fit in {net}; use a "
                                      f"block size of {net.prefixlen}-{high}")
        self.nat_outgoing = _bool("nat_outgoing", self.nat_outgoing)
        self.disabled = _bool("disabled", self.disabled)
        if not isinstance(self.vxlan_mode, str) or self.vxlan_mode not in VXLAN_MODES:
            raise _fail("vxlan_mode", f"{show(self.vxlan_mode)} is not allowed; use one of "
                                      + ", ".join(VXLAN_MODES))
        if self.vxlan_mode != "never" and net.version != 4:
            # one VXLAN device per host, over IPv4 (see docs/vxlan.md)
            raise _fail("vxlan_mode", f"{self.vxlan_mode} is for IPv4 pools; IPv6 pools "
                                      "route natively (use never)")

    @property
    def encapsulates(self) -> bool:
        """Whether the pool's traffic between some hosts goes through VXLAN (an IPv4 pool:
        validation refuses another mode for IPv6, so no caller checks the version)."""
        return self.vxlan_mode != "never"  # a disabled pool's containers still talk

    @property
    def network(self) -> netaddr.IPNetwork:
        return netaddr.IPNetwork(self.cidr)

    @property
    def version(self) -> int:
        return self.network.version


@dataclass
class Rule(Model):
    """One firewall rule; every match may be negated with its ``not_`` twin."""

    compact: ClassVar[bool] = True
    always: ClassVar[tuple[str, ...]] = ("action",)

    action: str = "allow"
    protocol: str | int | None = None
    not_protocol: str | int | None = None
    src_net: list[str] = field(default_factory=list)
    not_src_net: list[str] = field(default_factory=list)
    src_tag: str | None = None
    not_src_tag: str | None = None
    src_ports: list[int | str] | None = None
    not_src_ports: list[int | str] | None = None
    dst_net: list[str] = field(default_factory=list)
    not_dst_net: list[str] = field(default_factory=list)
    dst_tag: str | None = None
    not_dst_tag: str | None = None
    dst_ports: list[int | str] | None = None
    not_dst_ports: list[int | str] | None = None
    icmp_type: int | None = None
    not_icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_code: int | None = None
    ip_version: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise _fail("action", f"{show(self.action)} is not allowed; use allow, deny or log")
        self.protocol = _protocol("protocol", self.protocol)
        self.not_protocol = _protocol("not_protocol", self.not_protocol)
        if self.ip_version is not None:
            self.ip_version = validate_int("ip_version", self.ip_version, 4, 6)
            if self.ip_version not in (4, 6):
                raise _fail("ip_version", f"{show(self.ip_version)} is not allowed; use 4 or 6")
        implied = ICMP_PROTOCOLS.get(self.protocol)  # type: ignore[arg-type]
        if implied is not None:
            if self.ip_version not in (None, implied):
                raise _fail("ip_version", f"protocol {self.protocol} is IPv{implied} only; "
                                          f"use ip_version {implied} or leave it out")
            self.ip_version = implied
        for name in ("src_net", "not_src_net", "dst_net", "not_dst_net"):
            nets = [str(parse_network(name, n, self.ip_version))
                    for n in _str_list(name, getattr(self, name))]
            setattr(self, name, nets)
        for name in ("src_tag", "not_src_tag", "dst_tag", "not_dst_tag"):
            if getattr(self, name) is not None:
                validate_name(name, getattr(self, name))
        for name in ("src_ports", "not_src_ports", "dst_ports", "not_dst_ports"):
            ports = _ports(name, getattr(self, name))
            setattr(self, name, ports)
            if ports is not None and self.protocol not in PORT_PROTOCOLS:
                raise _fail(name, "ports need protocol tcp, udp or sctp")
        for name in ("icmp_type", "not_icmp_type", "icmp_code", "not_icmp_code"):
            value = getattr(self, name)
            if value is None:
                continue
            high = 254 if name.endswith("type") else 255
            setattr(self, name, validate_int(name, value, 0, high))
            if implied is None:
                raise _fail(name, "ICMP matches need protocol icmp or icmpv6")
        if self.icmp_code is not None and self.icmp_type is None:
            raise _fail("icmp_code", "an ICMP code needs icmp_type as well")
        if self.not_icmp_code is not None and self.not_icmp_type is None:
            raise _fail("not_icmp_code", "an ICMP code needs not_icmp_type as well")
        self._refuse_contradictions()

    def _refuse_contradictions(self) -> None:
        """A match and its negation that cannot both hold make a rule that never matches
        (or silently drops one of them): refuse it, naming the negated field."""
        if self.protocol is not None and self.not_protocol is not None:
            raise _fail("not_protocol", "use protocol or not_protocol, not both")
        for d in ("src", "dst"):
            tag, not_tag = getattr(self, f"{d}_tag"), getattr(self, f"not_{d}_tag")
            if tag is not None and tag == not_tag:
                raise _fail(f"not_{d}_tag", f"{tag} is also {d}_tag: the rule never matches")
            nets = [netaddr.IPNetwork(n) for n in getattr(self, f"{d}_net")]
            excluded = [netaddr.IPNetwork(n) for n in getattr(self, f"not_{d}_net")]
            for net in nets:
                if any(net.version == x.version and net in x for x in excluded):
                    raise _fail(f"not_{d}_net", f"it excludes all of {d}_net {net}: that part "
                                                "of the rule never matches")
            ports = _port_set(getattr(self, f"{d}_ports"))
            if ports and ports <= _port_set(getattr(self, f"not_{d}_ports")):
                raise _fail(f"not_{d}_ports", f"it excludes every port of {d}_ports: the rule "
                                              "never matches")
        if (self.icmp_type is not None and self.icmp_type == self.not_icmp_type
                and self.not_icmp_code in (None, self.icmp_code)):
            raise _fail("not_icmp_type", "it excludes icmp_type: the rule never matches")
        versions = [{netaddr.IPNetwork(n).version for n in getattr(self, f"{d}_net")}
                    for d in ("src", "dst")]
        if all(versions) and not versions[0] & versions[1]:
            raise _fail("dst_net", "src_net and dst_net share no IP version: the rule never "
                                   "matches")

    def versions(self) -> tuple[int, ...]:
        """The IP versions this rule applies to."""
        return (self.ip_version,) if self.ip_version else (4, 6)

    def tags(self) -> set[str]:
        return {t for t in (self.src_tag, self.not_src_tag, self.dst_tag, self.not_dst_tag) if t}


def _port_set(ports: list[int | str] | None) -> set[int]:
    out: set[int] = set()
    for port in ports or []:
        if isinstance(port, int):
            out.add(port)
        else:
            low, high = (int(p) for p in port.split(":"))
            out.update(range(low, high + 1))
    return out


def _rules(field_name: str, value: Any) -> list[Rule]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise _fail(field_name, "use a list of rules")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, Rule):
            out.append(item)
            continue
        try:
            out.append(Rule.from_dict(item))
        except ValidationError as exc:
            raise _fail(f"{field_name}[{i}].{exc.field}", exc.problem) from None
    return out


@dataclass
class Profile(Model):
    """A group of endpoints and the rules in front of them.

    ``docker_network`` marks the profile of the Docker networks of its name: the plugin
    puts their containers in it. An operator's profile (false) is never joined by naming a
    network after it: a Docker user could otherwise enter any group. A network whose
    profile has no record yet gets the default rules."""

    compact: ClassVar[bool] = True  # docker_network only when set
    always: ClassVar[tuple[str, ...]] = ("name", "tags", "labels", "inbound_rules",
                                         "outbound_rules")

    name: str
    tags: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    inbound_rules: list[Rule] = field(default_factory=list)
    outbound_rules: list[Rule] = field(default_factory=list)
    docker_network: bool = False

    def __post_init__(self) -> None:
        validate_name("name", self.name)
        self.tags = sorted({validate_name("tags", t) for t in _str_list("tags", self.tags)})
        self.labels = _labels("labels", self.labels)
        self.inbound_rules = _rules("inbound_rules", self.inbound_rules)
        self.outbound_rules = _rules("outbound_rules", self.outbound_rules)
        self.docker_network = _bool("docker_network", self.docker_network)

    @classmethod
    def with_default_rules(cls, name: str, docker_network: bool = False) -> Profile:
        """Members reach each other; outbound is open; everything else inbound is dropped."""
        return cls.with_defaults(name, docker_network=docker_network)

    @classmethod
    def with_defaults(cls, name: str, tags: list[str] | None = None,
                      labels: dict[str, str] | None = None, docker_network: bool = False,
                      rules: dict[str, Any] | None = None,
                      default_rules: bool = True) -> Profile:
        """A new profile ``name`` as calicoctl, the profile module and a Docker network
        make it: tagged with its name unless ``tags`` are given, and the default rules
        (``with_default_rules``) unless ``rules`` are given (a mapping with
        ``inbound_rules``/``outbound_rules``, raw or ``Rule``s; a list it leaves out is
        empty) or ``default_rules`` is false (no rules). Checked like a stored record
        (``from_dict``): an unknown field in ``rules`` is refused naming it."""
        validate_name("name", name)
        if rules is None and default_rules:
            rules = {"inbound_rules": [{"action": "allow", "src_tag": name}],
                     "outbound_rules": [{"action": "allow"}]}
        return cls.from_dict({"name": name, "tags": [name] if tags is None else tags,
                              "labels": labels or {}, **(rules or {}),
                              "docker_network": docker_network})


@dataclass
class Endpoint(Model):
    """One container interface: its host-side veth, addresses and profiles."""

    id: str
    host: str
    interface: str
    mac: str | None = None
    ipv4_nets: list[str] = field(default_factory=list)
    ipv6_nets: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    state: str = "active"

    def __post_init__(self) -> None:
        validate_name("id", self.id, what="letters, digits, '_', '.', '-', at most 128 characters")
        validate_hostname("host", self.host)
        validate_name("interface", self.interface, IFNAME_RE,
              "a host-side veth name: 'cali' and 1-11 letters, digits, '_', '.', '-'")
        if self.mac is not None:
            if not isinstance(self.mac, str) or not self.mac.isprintable():
                raise _fail("mac", f"{show(self.mac)} is not a MAC address; use "
                                   "e.g. ee:ee:ee:ee:ee:ee")
            try:
                self.mac = str(netaddr.EUI(self.mac, dialect=netaddr.mac_unix_expanded))
            except (netaddr.AddrFormatError, TypeError, ValueError):
                raise _fail("mac", f"{show(self.mac)} is not a MAC address; use "
                                   "e.g. ee:ee:ee:ee:ee:ee") from None
        for name, version in (("ipv4_nets", 4), ("ipv6_nets", 6)):
            nets = []
            for item in _str_list(name, getattr(self, name)):
                net = netaddr.IPNetwork(f"{routable_address(name, item, version)}/"
                                        f"{HOST_PREFIX[version]}")
                nets.append(str(net))
            setattr(self, name, sorted(set(nets), key=lambda n: netaddr.IPNetwork(n)))
        self.profiles = [validate_name("profiles", p) for p in _str_list("profiles", self.profiles)]
        self.labels = _labels("labels", self.labels)
        if self.state not in ENDPOINT_STATES:
            raise _fail("state", f"{show(self.state)} is not allowed; use active or inactive")

    @property
    def addresses(self) -> list[str]:
        return [n.split("/")[0] for n in self.ipv4_nets + self.ipv6_nets]


@dataclass
class Node(Model):
    """A host that runs containers and BIRD.

    ``ipv4_subnet``/``ipv6_subnet``: the network (CIDR) of the host's interface that holds
    ``ipv4``/``ipv6``, as Calico's ``ipv4Address: 10.0.0.1/24`` gives it. A BGP peer outside
    it is reached through routers (BIRD's ``multihop``); without it (records made before it
    existed) every peer is taken to share the host's subnet. Left out of ``to_dict`` when
    unknown, so such records read and write as before."""

    compact: ClassVar[bool] = True  # the subnets only when known
    always: ClassVar[tuple[str, ...]] = ("name", "ipv4", "ipv6", "as_number", "rr_cluster_id")

    name: str
    ipv4: str | None = None
    ipv6: str | None = None
    as_number: int | None = None
    rr_cluster_id: str | None = None
    ipv4_subnet: str | None = None
    ipv6_subnet: str | None = None
    #: the host's own address on its VXLAN device (``vxlan.calico``), taken by its agent
    #: from a pool that encapsulates (Calico's ``ipv4VXLANTunnelAddr``)
    ipv4_vxlan_tunnel: str | None = None

    def __post_init__(self) -> None:
        validate_hostname("name", self.name)
        if self.ipv4_vxlan_tunnel is not None:
            self.ipv4_vxlan_tunnel = str(routable_address("ipv4_vxlan_tunnel",
                                                          self.ipv4_vxlan_tunnel, 4))
        if self.ipv4 is not None:
            self.ipv4 = str(routable_address("ipv4", self.ipv4, 4))
        if self.ipv6 is not None:
            self.ipv6 = str(routable_address("ipv6", self.ipv6, 6))
        if self.as_number is not None:
            self.as_number = parse_as_number("as_number", self.as_number)
        if self.rr_cluster_id is not None:
            cluster = self.rr_cluster_id
            try:
                if isinstance(cluster, bool) or not isinstance(cluster, (int, str)) or (
                        isinstance(cluster, str) and not cluster.isprintable()):
                    raise ValueError(cluster)
                self.rr_cluster_id = str(netaddr.IPAddress(
                    int(cluster) if DIGITS_RE.fullmatch(str(cluster)) else str(cluster), 4))
            except (netaddr.AddrFormatError, ValueError, TypeError):
                raise _fail("rr_cluster_id", f"{show(cluster)} is not allowed; use a dotted "
                                             "quad such as 224.0.0.1 or a number") from None
        for version in (4, 6):
            name, address = f"ipv{version}_subnet", self.address(version)
            if getattr(self, name) is None:
                continue
            subnet = parse_subnet(name, getattr(self, name), version)
            if address is None:
                raise _fail(name, f"{subnet} is given without ipv{version}; give the node's "
                                  f"IPv{version} address too, or leave the subnet out")
            if netaddr.IPAddress(address) not in subnet:
                around = netaddr.IPNetwork(f"{address}/{24 if version == 4 else 64}").cidr
                raise _fail(name, f"{subnet} does not hold ipv{version} {address}; use the "
                                  "network of the host's interface that holds it, e.g. "
                                  f"{around}")
            not_host_address(f"ipv{version}", netaddr.IPAddress(address), subnet)
            setattr(self, name, str(subnet))

    def address(self, version: int) -> str | None:
        """The node's BGP address of IP ``version`` (4 or 6), or None."""
        return self.ipv4 if version == 4 else self.ipv6

    def subnet(self, version: int) -> netaddr.IPNetwork | None:
        """The host's subnet of IP ``version``, or None when unknown."""
        value = self.ipv4_subnet if version == 4 else self.ipv6_subnet
        return netaddr.IPNetwork(value) if value is not None else None


@dataclass
class BGPPeer(Model):
    """A BGP peer of every node (node is None) or of one node (e.g. a top-of-rack router).

    From it a node accepts the pools' blocks (and addresses inside them), plus a default
    route only with ``accept_default_route`` and routes inside ``accept_nets`` (e.g. the
    outside networks the router serves): never anything else."""

    compact: ClassVar[bool] = True
    always: ClassVar[tuple[str, ...]] = ("address", "as_number", "node")

    address: str
    as_number: int
    node: str | None = None
    #: TCP MD5 password of the session (never printed by calicoctl or logged)
    password: str | None = None
    accept_default_route: bool = False
    accept_nets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.address = str(routable_address("address", self.address))
        self.as_number = parse_as_number("as_number", self.as_number)
        if self.node is not None:
            validate_hostname("node", self.node)
        if self.password is not None and (
                not isinstance(self.password, str)
                or not re.fullmatch(r"[\x21-\x7e]{1,80}", self.password)
                or '"' in self.password or "\\" in self.password):
            raise _fail("password", "use 1-80 printable characters without spaces, quotes "
                                    "or backslashes")
        self.accept_default_route = _bool("accept_default_route", self.accept_default_route)
        nets = [parse_network("accept_nets", n) for n in _str_list("accept_nets",
                                                                    self.accept_nets)]
        if any(n.prefixlen == 0 for n in nets):
            raise _fail("accept_nets", "a /0 would accept every route; use "
                                       "accept_default_route for the default route")
        self.accept_nets = [str(n) for n in nets]


@dataclass
class BGPConfig(Model):
    as_number: int = DEFAULT_AS
    node_to_node_mesh: bool = True

    def __post_init__(self) -> None:
        self.as_number = parse_as_number("as_number", self.as_number)
        self.node_to_node_mesh = _bool("node_to_node_mesh", self.node_to_node_mesh)


@dataclass
class IPAMConfig(Model):
    #: never borrow addresses from blocks affine to other hosts
    strict_affinity: bool = False

    def __post_init__(self) -> None:
        self.strict_affinity = _bool("strict_affinity", self.strict_affinity)


ENDPOINT_TO_HOST_ACTIONS = ("accept", "drop")


@dataclass
class AgentConfig(Model):
    """Settings of every host's agent."""

    #: what happens to traffic from a container to its own host once the container's
    #: outbound rules allowed it (DHCP, DNS and IPv6 neighbour discovery always pass)
    default_endpoint_to_host_action: str = "accept"

    def __post_init__(self) -> None:
        if self.default_endpoint_to_host_action not in ENDPOINT_TO_HOST_ACTIONS:
            raise _fail("default_endpoint_to_host_action",
                        f"{show(self.default_endpoint_to_host_action)} is not allowed; use accept "
                        "or drop")
