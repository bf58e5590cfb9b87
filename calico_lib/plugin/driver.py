"""What the calico network driver and the calico-ipam driver do for each Docker call.

Each handler takes the decoded JSON body and returns the JSON answer, or raises
``CalicoError`` (the server turns it into Docker's error form). Every handler is idempotent:
Docker replays calls after restarts.

Docker asks IPAM for an address before it tells the network driver the endpoint id, so an
address is first held by a pending handle of this host (one per request, its time in its
name) and handed to the endpoint's own handle (its id) at CreateEndpoint. CreateEndpoint
takes only this host's pending addresses (or free ones); ReleaseAddress frees only those
and the addresses of this host's ended endpoints. Anything else is refused and logged:
an address is never taken from, or freed under, another endpoint or host.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import netaddr

from .. import keys
from ..client import Client
from ..dataplane.veth import GATEWAY_V4, GATEWAY_V6, container_mac, host_veth, peer_veth
from ..errors import CalicoError, NotFoundError, ValidationError
from ..ipam import interface_owner
from ..model import Endpoint, Profile, parse_address, parse_network, show, validate_name
from ..network_records import MTU_MAX, MTU_MIN, MTU_MIN_V6, NAMING, DockerNetworks, profile_name
from ..records import decode
from .docker_api import DockerAPI, DockerError

ADDRESS_SPACE_LOCAL = "CalicoLocalAddressSpace"
ADDRESS_SPACE_GLOBAL = "CalicoGlobalAddressSpace"
#: options Docker itself puts in CreateNetwork (--internal: refused when true); anything
#: else there is refused
DOCKER_OPTIONS = {"com.docker.network.enable_ipv4", "com.docker.network.enable_ipv6",
                  "com.docker.network.internal", "com.docker.network.generic"}
#: -o com.docker.network.driver.mtu=N: the veth MTU of the network's containers (Docker's
#: own name for it, as its bridge driver takes it)
MTU_OPTION = "com.docker.network.driver.mtu"
#: the -o options calico networks take; any other is refused
GENERIC_OPTIONS = {MTU_OPTION}
#: what the gateway RequestAddress may carry: the gateways RequestPool names and the
#: link-local ones its answer gives (anything else is the user's --gateway)
OWN_GATEWAYS = {"0.0.0.0", "::", GATEWAY_V4, GATEWAY_V6}
#: a new network's name is asked of Docker every NAME_POLL s for NAMING s (Docker answers
#: for it milliseconds after CreateNetwork answered), then every NAME_POLL_SLOW s until
#: NAME_GIVE_UP s; its first CreateEndpoint asks at the latest
NAME_POLL, NAME_POLL_SLOW, NAME_GIVE_UP = 0.005, 0.5, 30.0
#: the PoolIDs RequestPool hands out: the family, and with --subnet the pool
POOL_ID_RE = re.compile(r"calico-v([46])(?::(.+))?")
#: what NetworkIDs and EndpointIDs may be (the model's endpoint id rule): they become keys,
#: interface names and log lines
ID_RULE = "letters, digits, '_', '.', '-', at most 128 characters (Docker's ids are 64 hex " \
          "digits)"
#: unknown option names an error quotes at most
SHOWN_OPTIONS = 5

log = logging.getLogger("calico-docker-plugin")


class DriverError(CalicoError):
    """An error answer to Docker."""


def gateway_route(taken: set[int]) -> str:
    """The connected route to the gateway for a container's next Calico interface.

    Every interface reaches 169.254.1.1 by proxy ARP, but Docker refuses a second connected
    169.254.1.1/32 in one container ("file exists"): the first interface gets the /32, a
    second (`docker network connect`) the /31 that also holds it, and so on. Docker puts
    the default route through the gateway's most specific route: the first interface
    while it is there, the next one after it left.
    """
    for prefix in range(32, 23, -1):
        if prefix not in taken:
            return str(netaddr.IPNetwork(f"{GATEWAY_V4}/{prefix}").cidr)
    raise DriverError("a container can join at most 9 Calico networks")


def next_hop_v4(route: str) -> str:
    """The next hop for the static routes of the interface whose connected gateway route is
    ``route``: the gateway itself for the /32, else an address ``route`` holds and no
    narrower gateway route does (169.254.1.0 for the /31, .2 for the /30, ...). The host
    answers it by proxy ARP like the gateway."""
    net = netaddr.IPNetwork(route)
    if net.prefixlen == 32:
        return GATEWAY_V4
    inner = netaddr.IPNetwork(f"{GATEWAY_V4}/{net.prefixlen + 1}").cidr
    return str(next(a for a in net if a not in inner))


def endpoint_gateway6(endpoint_id: str) -> str:
    """The IPv6 next hop of an endpoint's --subnet routes: a link-local address of its host
    veth, fe80::eeee: and 48 bits of a hash of the id (the gateway fe80::ecee:eeff:feee:eeee
    is on every host veth, so Docker could bind a route through it to any interface)."""
    digest = hashlib.sha256(b"gateway6:" + endpoint_id.encode()).digest()
    suffix = (0xEEEE << 48) | int.from_bytes(digest[:6], "big")
    return str(netaddr.IPAddress((0xFE80 << 112) | suffix, 6))


def _kind(value: Any) -> str:
    """What a JSON value is, for a refusal (the value itself may be large or nested)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def _field(body: dict[str, Any], name: str) -> str:
    """A string field Docker always sends."""
    value = body.get(name)
    if not body:
        # Docker's plugin client resends a call whose connection broke (the plugin was
        # killed or restarted during it), but without its body
        raise DriverError(f"{name}: missing: the request was empty, as Docker resends a "
                          "call the plugin was restarted in the middle of; run the command "
                          "again")
    if value is None or value == "":
        raise DriverError(f"{name}: missing; Docker always sends it")
    if not isinstance(value, str):
        raise DriverError(f"{name}: missing ({_kind(value)} instead of a string); Docker "
                          "always sends it")
    return value


def _id(body: dict[str, Any], name: str) -> str:
    """A NetworkID or EndpointID, checked before it becomes a key, a name or a log line."""
    return validate_name(name, _field(body, name), what=ID_RULE)


#: the JSON types of the body fields the driver reads, and how a refusal names them
_TYPES: dict[type, str] = {str: "a string", dict: "an object", list: "a list",
                           bool: "true or false"}


def _typed(body: dict[str, Any], name: str, kind: type, default: Any = None,
           label: str | None = None) -> Any:
    """An optional field of ``body`` of JSON type ``kind`` (null: ``default``); any other
    type is refused naming the field (``label``, else ``name``)."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise DriverError(f"{label or name}: {_kind(value)} is not allowed; use "
                          f"{_TYPES[kind]}")
    return value


def _text(body: dict[str, Any], name: str, default: str | None = "",
          label: str | None = None) -> Any:
    return _typed(body, name, str, default, label)


def _mapping(body: dict[str, Any], name: str, label: str | None = None) -> dict[str, Any]:
    return _typed(body, name, dict, {}, label)  # type: ignore[no-any-return]


def _list(body: dict[str, Any], name: str, label: str | None = None) -> list[Any]:
    return _typed(body, name, list, [], label)  # type: ignore[no-any-return]


def _strip(address: str | None) -> str | None:
    return address.split("/", 1)[0] if address else None


def _names(names: list[str]) -> str:
    """Option names for a refusal: quoted, at most SHOWN_OPTIONS of them."""
    named = ", ".join(show(k) for k in names[:SHOWN_OPTIONS])
    more = f" and {len(names) - SHOWN_OPTIONS} more" if len(names) > SHOWN_OPTIONS else ""
    return named + more


def _network_mtu(generic: dict[str, Any], ipv6: bool) -> int | None:
    """-o com.docker.network.driver.mtu=N, checked: MTU_MIN (MTU_MIN_V6 on a network with
    IPv6) to MTU_MAX."""
    value = generic.get(MTU_OPTION)
    if value is None:
        return None
    low = MTU_MIN_V6 if ipv6 else MTU_MIN
    allowed = f"use {low} to {MTU_MAX}" + (" (IPv6 needs 1280 at least)" if ipv6 else "")
    text = value.strip() if isinstance(value, str) else None
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 5:
        raise DriverError(f"-o {MTU_OPTION}={show(value)}: not a number; {allowed}")
    mtu = int(text)
    if not low <= mtu <= MTU_MAX:
        raise DriverError(f"-o {MTU_OPTION}={mtu}: out of range; {allowed}")
    return mtu


class Driver:
    def __init__(self, client: Client, hostname: str, docker: DockerAPI,
                 reconcile: Callable[[], Any] | None = None,
                 create_veth: Callable[..., bool] | None = None,
                 delete_veth: Callable[[str], bool] | None = None,
                 gateway_prefixes: Callable[[str, str], set[int] | None] | None = None,
                 add_address: Callable[[str, str], bool] | None = None,
                 forgotten: Callable[..., None] | None = None,
                 add_routes: Callable[[str, list[str]], Any] | None = None,
                 veth_mtu: Callable[[str | None], int] | None = None) -> None:
        self.client = client
        self.hostname = hostname
        self.docker = docker
        # The dataplane hooks are injected so protocol tests can run without root.
        # ``reconcile`` asks for this host's rules to be programmed; the server's runs in
        # the background, so no call waits for it (an interface without its rules yet is
        # dropped by the dispatch chains, never let through).
        self.reconcile = reconcile or (lambda: None)
        self.add_routes = add_routes or (lambda interface, nets: None)
        self.create_veth = create_veth or (lambda host, peer, mac, mtu=None: True)
        # the MTU of a veth whose traffic may be encapsulated, from this host's address
        self.veth_mtu = veth_mtu or (lambda address: 1450)
        self.delete_veth = delete_veth or (lambda host: True)
        self.gateway_prefixes = gateway_prefixes or (lambda sandbox, gateway: set())
        self.add_address = add_address or (lambda interface, address: True)
        # told what Docker is done with but this call could not free (the Docker sync
        # frees it at its next pass: Syncer.forgotten(endpoint_id=, address=))
        self.forgotten = forgotten or (lambda **_: None)
        # SandboxKey -> endpoint id -> the gateway route prefix its Join answered: Docker
        # joins every network of a container it starts before the namespace exists
        # (`docker create`, `network connect`, `start`; compose does that)
        self._given: dict[str, dict[str, int]] = {}
        self._given_lock = threading.Lock()
        # network id -> (its record's creation time, when asking began): the networks whose
        # names are being learnt from Docker, by one thread while there are any
        self._naming: dict[str, tuple[float, float]] = {}
        self._naming_lock = threading.Lock()
        self._naming_wake = threading.Event()
        self._naming_thread: threading.Thread | None = None

    @property
    def networks(self) -> DockerNetworks:
        """This host's records of its Docker networks."""
        return DockerNetworks(self.client.store, self.hostname)

    # ------------------------------------------------------------------ IPAM driver

    def ipam_capabilities(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"RequiresMACAddress": False}

    def address_spaces(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE_LOCAL,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE_GLOBAL}

    def request_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        version = 6 if _typed(body, "V6", bool, False) else 4
        if _text(body, "SubPool"):
            raise DriverError("SubPool: --ip-range is not supported: Calico assigns from "
                              "whole pools")
        ipam_options = _mapping(body, "Options")
        if ipam_options:
            raise DriverError(f"--ipam-opt {_names(sorted(ipam_options))}: calico-ipam takes "
                              "no options (it assigns from Calico's pools, chosen with "
                              "--subnet); drop --ipam-opt")
        wanted = _text(body, "Pool")
        pools = [p for p in self.client.list_pools() if p.version == version]
        gateway = "0.0.0.0/0" if version == 4 else "::/0"
        if not wanted:
            if not any(not p.disabled for p in pools):
                raise DriverError(f"no enabled IPv{version} pool: add one with "
                                  f"`calicoctl pool add CIDR`")
            return {"PoolID": f"calico-v{version}", "Pool": gateway,
                    "Data": {"com.docker.network.gateway": gateway}}
        net = str(parse_network("--subnet", wanted))  # what Docker's user gave
        if net not in {p.cidr for p in pools}:
            known = ", ".join(p.cidr for p in pools) or "none"
            raise DriverError(f"--subnet {net} is not a Calico IPv{version} pool; use one "
                              f"of the pools: {known}")
        return {"PoolID": f"calico-v{version}:{net}", "Pool": net,
                "Data": {"com.docker.network.gateway": gateway}}

    def release_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    def request_address(self, body: dict[str, Any]) -> dict[str, Any]:
        pool_id = _field(body, "PoolID")
        match = POOL_ID_RE.fullmatch(pool_id)
        if match is None:
            raise DriverError(f"PoolID: {show(pool_id)} was not made by calico-ipam; use a "
                              "network created with --ipam-driver calico-ipam")
        version = int(match.group(1))
        subnet = match.group(2) and str(parse_network("PoolID", match.group(2), version))
        options = _mapping(body, "Options")
        wanted = _text(body, "Address")
        only = [subnet] if subnet else None
        if options.get("RequestAddressType") == "com.docker.network.gateway":
            # Docker asks for a gateway when the pool named none (ours always names one),
            # and for the address of --gateway: a calico network's gateway is link-local
            if wanted and _strip(wanted) not in OWN_GATEWAYS:
                raise DriverError(f"--gateway {show(wanted)}: not supported: a calico "
                                  f"network's gateway is {GATEWAY_V4} (IPv6 {GATEWAY_V6}) on "
                                  "every host, never an address of the pool; drop --gateway")
            return {"Address": f"{GATEWAY_V4}/32" if version == 4 else f"{GATEWAY_V6}/128",
                    "Data": {}}
        handle = self.client.ipam.new_pending_handle()
        prefix = 32 if version == 4 else 128
        if wanted:
            addr = parse_address("Address", wanted)
            if addr.version != version:
                raise DriverError(f"Address: {addr} is IPv{addr.version}; this network's "
                                  f"pool is IPv{version}")
            if subnet and addr not in netaddr.IPNetwork(subnet):
                raise DriverError(f"Address: {addr} is outside the network's subnet {subnet}")
            self.client.ipam.assign_ip(str(addr), handle, self.hostname)
            return {"Address": f"{addr}/{prefix}", "Data": {}}
        only = only or self._shared_pools(version)
        result = self.client.ipam.auto_assign(self.hostname, handle,
                                              num_ipv4=1 if version == 4 else 0,
                                              num_ipv6=1 if version == 6 else 0, pools=only)
        return {"Address": f"{result.addresses[0]}/{prefix}", "Data": {}}

    def _shared_pools(self, version: int) -> list[str] | None:
        """The pools a network without --subnet assigns from: the enabled ones no --subnet
        network (of any host) was created on, so that in a container on both, a --subnet
        network's route to its pool leads only to its own peers; every pool when that
        leaves none."""
        dedicated = self.networks.dedicated_pools()
        shared = [p.cidr for p in self.client.list_pools()
                  if p.version == version and not p.disabled and p.cidr not in dedicated]
        return shared or None

    def release_address(self, body: dict[str, Any]) -> dict[str, Any]:
        address = _strip(_field(body, "Address"))
        if address in ("0.0.0.0", "::", GATEWAY_V4, GATEWAY_V6):
            return {}  # the gateway RequestPool named: never allocated
        # Freed only from this host's pending handles and ended endpoints; anything else
        # is refused (InUseError: the server answers with it and logs it).
        try:
            owner = self.client.ipam.release_for_host(address, self.hostname)
        except CalicoError:
            # at boot Docker hands back the addresses of the endpoints it lost, whose
            # records still hold them; or the datastore is away: the sync checks with
            # Docker and frees what it no longer has
            try:
                self.forgotten(address=str(netaddr.IPAddress(address)))
            except (netaddr.AddrFormatError, TypeError, ValueError):
                pass  # not an address: refused, nothing to free
            raise
        if owner is not None:
            log.info("released %s (handle %s)", address, owner)
        return {}

    # ------------------------------------------------------------------ network driver

    def capabilities(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"Scope": "local", "ConnectivityScope": "global"}

    def create_network(self, body: dict[str, Any]) -> dict[str, Any]:
        network_id = _id(body, "NetworkID")
        options = _mapping(body, "Options")
        generic = _mapping(options, "com.docker.network.generic",
                           label="Options.com.docker.network.generic")
        unknown = sorted(k for k in options if k not in DOCKER_OPTIONS)
        unknown += sorted(k for k in generic if k not in GENERIC_OPTIONS)
        if unknown:
            hint = f" (the MTU is -o {MTU_OPTION}=N)" if "mtu" in unknown else ""
            raise DriverError(f"Options: unknown option(s) {_names(unknown)}: calico networks "
                              f"take only -o {MTU_OPTION}=N{hint}")
        if _typed(options, "com.docker.network.internal", bool, False,
                  label="Options.com.docker.network.internal"):
            raise DriverError("--internal is not supported: calico networks cannot keep "
                              "their containers from other hosts and the outside yet; drop "
                              "--internal, and limit what the containers reach with their "
                              "profile's outbound rules")
        pools, ipv6 = [], False
        for name in ("IPv4Data", "IPv6Data"):
            for i, data in enumerate(_list(body, name)):
                label = f"{name}[{i}]"
                if not isinstance(data, dict):
                    raise DriverError(f"{label}: {_kind(data)} is not allowed; use an object")
                space = _text(data, "AddressSpace", label=f"{label}.AddressSpace")
                if space not in (ADDRESS_SPACE_LOCAL, ADDRESS_SPACE_GLOBAL):
                    raise DriverError(f"{label}.AddressSpace: {show(space)} is not Calico's: "
                                      "calico networks need Calico's IPAM; create the "
                                      "network with --ipam-driver calico-ipam")
                if _mapping(data, "AuxAddresses", label=f"{label}.AuxAddresses"):
                    raise DriverError("--aux-address is not supported: calico-ipam gives "
                                      "a pool's addresses to containers only; drop "
                                      "--aux-address")
                pool = _text(data, "Pool", None, label=f"{label}.Pool")
                pools.append(None if pool is None else str(parse_network(f"{label}.Pool",
                                                                         pool)))
                ipv6 = ipv6 or name == "IPv6Data"
        ipv6 = ipv6 or bool(options.get("com.docker.network.enable_ipv6"))
        mtu = _network_mtu(generic, ipv6)
        created = self.networks.create(
            network_id, bool(options.get("com.docker.network.enable_ipv6")), pools, mtu)
        if created is not None:  # its name is not known yet
            self._learn_name(network_id, created)
        return {}

    def delete_network(self, body: dict[str, Any]) -> dict[str, Any]:
        network_id = _id(body, "NetworkID")
        with self._naming_lock:
            self._naming.pop(network_id, None)
        self.networks.delete(network_id)
        return {}

    # ------------------------------------------------------------------ network names

    def _learn_name(self, network_id: str, created: float) -> None:
        """Learn the network's name from Docker as soon as Docker has it, and record it: its
        profile then exists for operators (``Client.get_profile``) before any container
        joined. Docker passes no name to CreateNetwork and answers for the network only once
        it stored it, after CreateNetwork answered: one thread asks for every network still
        unnamed."""
        with self._naming_lock:
            if self._naming.get(network_id, (None,))[0] != created:  # not a replay's
                self._naming[network_id] = (created, time.monotonic())
            self._naming_wake.set()
            if self._naming_thread is None:
                self._naming_thread = threading.Thread(target=self._name_networks,
                                                       name="network-names", daemon=True)
                self._naming_thread.start()

    def _name_networks(self) -> None:
        while True:
            with self._naming_lock:
                if not self._naming:
                    self._naming_thread = None
                    return
                self._naming_wake.clear()
                pending = list(self._naming.items())
            now = time.monotonic()
            for network_id, (created, since) in pending:
                try:
                    done = self._try_name(network_id, created)
                except Exception:  # noqa: BLE001 - the thread must go on for the others
                    log.exception("learning the name of network %s crashed", network_id[:12])
                    done = True
                if done or now - since > NAME_GIVE_UP:
                    with self._naming_lock:
                        if self._naming.get(network_id) == (created, since):
                            del self._naming[network_id]
            young = any(now - since < NAMING for _, (_, since) in pending)
            self._naming_wake.wait(NAME_POLL if young else NAME_POLL_SLOW)

    def _try_name(self, network_id: str, created: float) -> bool:
        """One attempt: True when done (recorded, or never to be: its record went, or the
        name cannot name a profile), False to ask again."""
        try:
            name = self.docker.network_name(network_id)
        except DockerError:
            return False  # not stored by Docker yet (404), or Docker away
        if not name:
            return False
        if not profile_name(name):
            log.warning("network %s: its name %s cannot name a profile; its containers will "
                        "be refused", network_id[:12], show(name))
            return True
        try:
            if self.networks.learnt(network_id, created, name):
                log.info("network %s is %s (its profile: %s)", network_id[:12], name, name)
        except CalicoError as exc:
            log.warning("network %s: cannot record its name %s: %s (retrying)",
                        network_id[:12], name, exc)
            return False
        return True

    def _profile_for(self, network_id: str) -> str:
        """The profile of a network: named after the network's name in Docker.

        The plugin writes no profile (hosts may not write policy): a network whose profile
        has no record gets the default rules from every host's snapshot. A profile of
        that name that an operator made for other uses is refused, never joined."""
        name = self.networks.name(network_id)
        if not name:
            try:
                name = self.docker.network_name(network_id)
            except DockerError as exc:
                raise DriverError(f"cannot learn the name of network {network_id[:12]}: "
                                  f"{exc}") from None
            if not name:
                raise DriverError(f"cannot learn the name of network {network_id[:12]} from "
                                  f"Docker at {self.docker.socket_path}")
            # the profile its network gets (a name that can be a profile's, or refused)
            Profile.with_defaults(name, docker_network=True)
            self.networks.set_name(network_id, name)
        existing = self.client.store.get(keys.profile(name))
        if existing is not None:
            try:
                profile = decode(existing, Profile)
            except CalicoError as exc:
                raise DriverError(f"network {name}: its profile cannot be read ({exc})"
                                  ) from None
            if not profile.docker_network:
                raise DriverError(
                    f"network {name}: profile {name} is an operator's profile, not a Docker "
                    "network's; its group is not joined by naming a network after it. Name "
                    f"the network otherwise, or mark the profile (calicoctl profile add "
                    f"{name} --docker-network, Ansible profile docker_network: true)")
        return name

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        network_id, endpoint_id = _id(body, "NetworkID"), _id(body, "EndpointID")
        interface = _mapping(body, "Interface")
        found = {}
        for name, version in (("Address", 4), ("AddressIPv6", 6)):
            address = _text(interface, name, label=f"Interface.{name}")
            if address:
                found[version] = str(parse_address(f"Interface.{name}", address, version))
        if not found:
            raise DriverError("Interface: no address; the network must use --ipam-driver "
                              "calico-ipam")
        addresses = list(found.values())
        mac = _text(interface, "MacAddress", label="Interface.MacAddress") or \
            container_mac(endpoint_id)
        profile = self._profile_for(network_id)
        endpoint = Endpoint(
            id=endpoint_id, host=self.hostname, interface=host_veth(endpoint_id), mac=mac,
            ipv4_nets=[found[4]] if 4 in found else [],
            ipv6_nets=[found[6]] if 6 in found else [], profiles=[profile],
            labels={"docker-network": network_id[:63]})
        # One transaction: the addresses go from this host's pending handles to the
        # endpoint's own handle (its id) and the endpoint record is written; an address
        # held by anything else, or a host veth name another endpoint of this host has
        # (ids alike in their first 11 characters), is refused and nothing changes.
        self.client.ipam.claim(addresses, endpoint_id, self.hostname, endpoint)
        # its chains are programmed while Docker prepares the Join (they name an
        # interface that does not exist yet: harmless)
        self.reconcile()
        # Docker gave the addresses; it expects an empty Interface back in that case.
        return {"Interface": {}} if interface else {"Interface": {"MacAddress": mac}}

    def endpoint_info(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"Value": {}}

    def delete_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = _id(body, "EndpointID")
        self._forget(endpoint_id)
        # Docker does not Leave a Join that failed after the veth was made (the plugin was
        # killed during it, and Docker's retry came without its body): the veth goes here
        self.delete_own_veth(endpoint_id, "DeleteEndpoint")
        # the record and the addresses go together: no moment where either is left alone
        try:
            ended = self.client.ipam.end_endpoint(self.hostname, endpoint_id)
        except CalicoError:
            self.forgotten(endpoint_id=endpoint_id)  # Docker deletes it all the same
            raise
        if ended is None:
            log.warning("DeleteEndpoint %s: its handle belongs to another host; its "
                        "addresses were left alone", endpoint_id[:12])
        self.reconcile()
        return {}

    def join(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint_id, network_id = _id(body, "EndpointID"), _id(body, "NetworkID")
        sandbox = _text(body, "SandboxKey")
        try:
            endpoint = self.client.get_endpoint(self.hostname, endpoint_id)
        except (NotFoundError, ValidationError):
            raise DriverError(f"EndpointID: endpoint {endpoint_id[:12]} is unknown: "
                              "CreateEndpoint first") from None
        subnets = self._subnets(network_id)
        # Docker binds a next-hop route to the interface of its next hop's most specific
        # route, so each interface's routes go through a next hop only it has a connected
        # route to: IPv4 the gateway address its own gateway route holds alone, IPv6 a
        # link-local address of this endpoint's host veth.
        hop6 = endpoint_gateway6(endpoint_id) if endpoint.ipv6_nets and any(
            ":" in s for s in subnets) else None
        routes: list[dict[str, Any]] = []
        hop4 = GATEWAY_V4
        if endpoint.ipv4_nets:
            connected = self._gateway_route_for(sandbox, endpoint_id)
            routes.append({"Destination": connected, "RouteType": 1, "NextHop": ""})
            hop4 = next_hop_v4(connected)
        if hop6:
            routes.append({"Destination": f"{hop6}/128", "RouteType": 1, "NextHop": ""})
        for subnet in subnets:  # a --subnet network's peers: through its own interface
            if ":" not in subnet and endpoint.ipv4_nets:
                routes.append({"Destination": subnet, "RouteType": 0, "NextHop": hop4})
            elif ":" in subnet and hop6:
                routes.append({"Destination": subnet, "RouteType": 0, "NextHop": hop6})

        created = self.create_veth(endpoint.interface, peer_veth(endpoint_id), endpoint.mac,
                                   mtu=self._mtu(network_id))
        try:
            if hop6:
                self.add_address(endpoint.interface, hop6)
            # the container's routes now; its rules follow in the background (until they
            # are in, the dispatch chains drop its traffic both ways)
            self.add_routes(endpoint.interface, endpoint.ipv4_nets + endpoint.ipv6_nets)
            self.reconcile()
        except CalicoError:
            self._forget(endpoint_id)
            if created:  # Docker will not Leave a failed Join: leave nothing behind
                self.delete_veth(endpoint.interface)
            raise
        answer: dict[str, Any] = {
            "InterfaceName": {"SrcName": peer_veth(endpoint_id), "DstPrefix": "eth"},
            "StaticRoutes": routes,
        }
        if endpoint.ipv4_nets:
            answer["Gateway"] = GATEWAY_V4
        if endpoint.ipv6_nets:
            answer["GatewayIPv6"] = GATEWAY_V6
        return answer

    def _mtu(self, network_id: str) -> int | None:
        """The veth MTU: the lower of the network's (-o com.docker.network.driver.mtu) and,
        while a pool encapsulates, the uplink's minus the VXLAN overhead, so that a
        container's packets fit the tunnel whole (the kernel's default when neither
        applies)."""
        mtus = [m for m in (self.networks.mtu(network_id),) if m is not None]
        if any(p.encapsulates for p in self.client.list_pools()):
            try:
                address = self.client.get_node(self.hostname).ipv4
            except NotFoundError:
                address = None
            mtus.append(self.veth_mtu(address))
        return min(mtus) if mtus else None

    def _gateway_route_for(self, sandbox: str, endpoint_id: str) -> str:
        """The connected gateway route of this endpoint's interface: what its Join got
        before (a replay gets the same answer), else the next one free in the container,
        counting the routes its namespace has and those given to its other endpoints."""
        with self._given_lock:
            given = self._given.get(sandbox, {}).get(endpoint_id)
        if given is not None:
            return str(netaddr.IPNetwork(f"{GATEWAY_V4}/{given}").cidr)
        seen = self._gateway_prefixes(sandbox)  # netlink in a child: not under the lock
        if seen is None:  # normal for `docker run`: runc makes the namespace after Join
            log.debug("Join %s: no network namespace at %s yet", endpoint_id[:12],
                      sandbox or "(no SandboxKey)")
        if not sandbox:  # nothing to count answers by
            return gateway_route(seen or set())
        with self._given_lock:
            others = self._given.setdefault(sandbox, {})
            route = gateway_route((seen or set()) | set(others.values()))
            others[endpoint_id] = netaddr.IPNetwork(route).prefixlen
        return route

    def _forget(self, endpoint_id: str) -> None:
        """The endpoint left its container: its gateway route is free again."""
        with self._given_lock:
            for sandbox, given in list(self._given.items()):
                if given.pop(endpoint_id, None) is not None and not given:
                    del self._given[sandbox]

    def _gateway_prefixes(self, sandbox: str) -> set[int] | None:
        """The gateway routes the container already has (see ``gateway_route``). Docker
        mounts the namespace at SandboxKey in its own mount namespace: a plugin in another
        one that does not receive Docker's mounts (a private root, ``ip netns exec``) sees
        an empty file there, so the path is also read as dockerd sees it."""
        taken = self.gateway_prefixes(sandbox, GATEWAY_V4)
        if taken is None and sandbox.startswith("/"):
            pid = self.docker.daemon_pid()
            if pid is not None:
                taken = self.gateway_prefixes(f"/proc/{pid}/root{sandbox}", GATEWAY_V4)
        return taken

    def _subnets(self, network_id: str) -> list[str]:
        """The pools a network was created on with --subnet (none for a whole-pool one)."""
        return self.networks.subnets(network_id)

    def leave(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = _id(body, "EndpointID")
        self._forget(endpoint_id)
        self.delete_own_veth(endpoint_id, "Leave", datastore_away=True)
        return {}

    def delete_own_veth(self, endpoint_id: str, call: str, datastore_away: bool = False
                        ) -> None:
        """Delete the endpoint's host veth, never that of another endpoint of this host (a
        refused CreateEndpoint of an id alike in its first 11 characters). When the
        datastore cannot say whose it is, ``datastore_away`` decides."""
        interface = host_veth(endpoint_id)
        try:
            owner = interface_owner(self.client.store, self.hostname, interface)
        except CalicoError as exc:
            log.warning("%s %s: cannot read the interface index: %s", call, endpoint_id[:12],
                        exc)
            if not datastore_away:
                return
            owner = None  # Leave: the veth goes as it always did
        if owner not in (None, endpoint_id):
            log.warning("%s %s: %s is endpoint %s's; left alone", call, endpoint_id[:12],
                        interface, owner[:12])
            return
        if self.delete_veth(interface) and call != "Leave":
            log.info("%s %s: deleted %s (no Leave came for it)", call, endpoint_id[:12],
                     interface)

    def nothing(self, body: dict[str, Any]) -> dict[str, Any]:
        """DiscoverNew/Delete, Program/RevokeExternalConnectivity: nothing to do."""
        return {}
