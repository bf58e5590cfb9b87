"""The Docker plugin's wire protocol over real unix sockets, without dockerd (issue 5).

Each test serves a real ``Driver`` with ``serve()`` on ``calico.sock`` and
``calico-ipam.sock`` in a fresh directory, on a SQLite datastore in ``tmp_path``, with a fake
Docker API (network id -> name) and dataplane hooks that only record their calls, so no root
is needed. Requests are shaped exactly as Docker 20.10 sends them (recorded from a real
dockerd driving the plugin: empty Host, ``Accept: application/vnd.docker.plugins.v1.2+json``,
no Content-Type, compact JSON with a trailing newline, no body for argument-less calls), and
the bodies below are those recorded bodies.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import netaddr
import pytest

import calico_lib
from calico_lib import Endpoint, IPPool, keys
from calico_lib.ipam import GRACE
from calico_lib.network_records import NAMING, DockerNetworks
from calico_lib.plugin.docker_api import DockerError
from calico_lib.plugin.driver import (
    GATEWAY_V6,
    Driver,
    container_mac,
    endpoint_gateway6,
    next_hop_v4,
)
from calico_lib.plugin.server import MAX_BODY
from tests.dockerlab import DOCKER_ACCEPT, post, serving

HOST = "dockhost"
POOL4, POOL6, SUBNET = "10.65.0.0/16", "fd00:65::/64", "10.66.0.0/24"
NET = "dd7eac083bb0ee09adddb5a28ad4ee49ef71ba6871d0318d131bce5bb7e52edc"
NET6 = "387e9982da4d78478f4f13b5e2251ea4341b92143f608b5e54b02ac92a1e7b72"
EP = "64b85db5a7cb9264dca35580aa3195fdc82dfb9c7f4fe4c1ae289c7761b5b549"
EP6 = "c04c49ec382d389f047ba1d459ca897c70c3c39670070d0087ce96ac4acd70f8"
NET_S = "5ab1e0c4f1a3d8b2e7c9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f"  # --subnet
NET_T = "6bc2f1d5a2b4e9c3f8d0a1b2c3d4e5f6071829304a5b6c7d8e9f0a1b2c3d4e5f"  # --subnet, v6
PORTS = {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
         "com.docker.network.portmap": [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "",
                                         "HostPort": 8080, "HostPortEnd": 8080}]}
NO_PORTS = {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}


# ------------------------------------------------------------------------------ fixtures


class FakeDocker:
    """The part of DockerAPI the driver uses: network id -> name. With ``stored`` a set, it
    answers as dockerd does for the networks in it only, 404 for the others: Docker stores a
    network, and answers for it, only after CreateNetwork answered."""

    socket_path = "/nonexistent/docker.sock"

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.lookups: list[str] = []
        self.stored: set[str] | None = None

    def network_name(self, network_id: str) -> str | None:
        self.lookups.append(network_id)
        if self.stored is not None and network_id not in self.stored:
            raise DockerError(f"docker: GET /networks/{network_id}: HTTP 404: network "
                              f"{network_id} not found")
        return self.names.get(network_id)

    def endpoint_ids(self) -> set[str] | None:
        return set()

    def daemon_pid(self) -> int | None:
        return None


@dataclass
class Recorder:
    """No-op dataplane hooks that remember what they were asked, in order. ``namespaces``
    plays the containers' network namespaces: path -> the gateway route prefixes in it
    (a path not in it is no namespace, as SandboxKey is while runc has not made it)."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    namespaces: dict[str, set[int]] = field(default_factory=dict)

    def gateway_prefixes(self, sandbox: str, gateway: str) -> set[int] | None:
        assert gateway == "169.254.1.1"
        found = self.namespaces.get(sandbox)
        return None if found is None else set(found)

    def add_address(self, interface: str, address: str) -> bool:
        with self.lock:
            self.calls.append(("add_address", interface, address))
        return True

    def create_veth(self, host: str, peer: str, mac: str | None, mtu: int | None = None
                    ) -> bool:
        with self.lock:
            self.calls.append(("create_veth", host, peer, mac)
                              + ((mtu,) if mtu is not None else ()))
        return True

    def delete_veth(self, host: str) -> bool:
        with self.lock:
            self.calls.append(("delete_veth", host))
        return True

    def reconcile(self) -> None:
        with self.lock:
            self.calls.append(("reconcile",))


@dataclass
class Plugin:
    client: calico_lib.Client
    docker: FakeDocker
    hooks: Recorder
    socket_dir: str

    def socket(self, name: str) -> str:
        return os.path.join(self.socket_dir, name)

    def net(self, method: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return post(self.socket("calico.sock"), f"/NetworkDriver.{method}", body, **kw)

    def ipam(self, method: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return post(self.socket("calico-ipam.sock"), f"/IpamDriver.{method}", body, **kw)

    def ok(self, kind: str, method: str, body: Any = None, replay: bool = True) -> Any:
        """Call, expect 200; with ``replay`` call again and expect the very same answer and
        a consistent IPAM after each (Docker replays calls after restarts)."""
        call = self.net if kind == "net" else self.ipam
        status, answer = call(method, body)
        assert status == 200, (method, answer)
        assert self.client.ipam.check() == [], method
        if replay:
            again = call(method, body)
            assert again == (200, answer), f"{method} replayed: {again} != {answer}"
            assert self.client.ipam.check() == [], f"{method} replayed"
        return answer

    def error(self, kind: str, method: str, body: Any = None) -> str:
        """Call, expect a 500 with the socket's error field; returns the message."""
        call = self.net if kind == "net" else self.ipam
        status, answer = call(method, body)
        assert status == 500 and isinstance(answer, dict), (method, status, answer)
        return error_message(kind, answer)

    def pending(self) -> list[str]:
        """Every address held by a pending handle of this host."""
        return [a for addrs in self.client.ipam.pending(HOST).values() for a in addrs]

    def allocated(self) -> int:
        return sum(u["allocated"] for u in self.client.ipam.usage())

    def alive(self) -> bool:
        status, answer = post(self.socket("calico.sock"), "/Plugin.Activate")
        return status == 200 and answer == {"Implements": ["NetworkDriver"]}


def error_message(kind: str, answer: Any) -> str:
    """The message of an error answer: in "Err" on the network socket; in "Error" (the
    IPAM API's field) and "Err" (the one Docker's plugin client shows) on the IPAM socket."""
    assert isinstance(answer, dict), answer
    if kind == "net":
        assert list(answer) == ["Err"], answer
        return answer["Err"]
    assert sorted(answer) == ["Err", "Error"] and answer["Err"] == answer["Error"], answer
    return answer["Error"]


@pytest.fixture
def plugin(tmp_path) -> Iterator[Plugin]:
    client = calico_lib.connect("sqlite:///" + str((tmp_path / "calico.db").resolve()))
    for cidr in (POOL4, POOL6, SUBNET):
        client.add_pool(IPPool(cidr))
    docker, hooks = FakeDocker(), Recorder()
    docker.names.update({NET: "net1", NET6: "net6", NET_S: "net-s", NET_T: "net-t"})
    driver = Driver(client, HOST, docker, reconcile=hooks.reconcile,  # type: ignore[arg-type]
                    create_veth=hooks.create_veth, delete_veth=hooks.delete_veth,
                    gateway_prefixes=hooks.gateway_prefixes, add_address=hooks.add_address)
    with client, serving(driver, "calico-proto-") as (socket_dir, _):
        yield Plugin(client, docker, hooks, socket_dir)


# ------------------------------------------------------------------------------ bodies


def request_pool(pool: str = "", v6: bool = False) -> dict[str, Any]:
    return {"AddressSpace": "CalicoLocalAddressSpace", "Pool": pool, "SubPool": "",
            "Options": {}, "V6": v6}


def request_address(pool_id: str, address: str = "") -> dict[str, Any]:
    return {"PoolID": pool_id, "Address": address, "Options": None}


def create_network(network_id: str, ipv6: bool = False, generic: dict[str, str] | None = None,
                   space: str = "CalicoLocalAddressSpace") -> dict[str, Any]:
    v4 = [{"AddressSpace": space, "Gateway": "0.0.0.0/0", "Pool": "0.0.0.0/0"}]
    v6 = [{"AddressSpace": space, "Gateway": "::/0", "Pool": "::/0"}] if ipv6 else []
    return {"NetworkID": network_id,
            "Options": {"com.docker.network.enable_ipv6": ipv6,
                        "com.docker.network.generic": generic or {}},
            "IPv4Data": v4, "IPv6Data": v6}


def create_endpoint(network_id: str, endpoint_id: str, address: str, address6: str = "",
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"NetworkID": network_id, "EndpointID": endpoint_id,
            "Interface": {"Address": address, "AddressIPv6": address6, "MacAddress": ""},
            "Options": PORTS if options is None else options}


SANDBOX = "/var/run/docker/netns/562084fcd28c"


def join(network_id: str, endpoint_id: str, sandbox: str = SANDBOX) -> dict[str, Any]:
    return {"NetworkID": network_id, "EndpointID": endpoint_id, "SandboxKey": sandbox,
            "Options": PORTS}


def ids(network_id: str, endpoint_id: str) -> dict[str, str]:
    return {"NetworkID": network_id, "EndpointID": endpoint_id}


def network_record(plugin: Plugin, network_id: str) -> dict[str, Any] | None:
    kv = plugin.client.store.get(keys.docker_network(HOST, network_id))
    return None if kv is None else json.loads(kv.value)


def named(plugin: Plugin, network_id: str, timeout: float = 5.0) -> str:
    """The name the plugin recorded for the network (it learns it from Docker in the
    background after CreateNetwork), waited for."""
    deadline = time.monotonic() + timeout
    while not (network_record(plugin, network_id) or {}).get("name"):
        assert time.monotonic() < deadline, network_record(plugin, network_id)
        time.sleep(0.005)
    return (network_record(plugin, network_id) or {})["name"]


# ------------------------------------------------------------------------------ handshake


def test_activate_and_capabilities_on_both_sockets(plugin: Plugin) -> None:
    assert post(plugin.socket("calico.sock"), "/Plugin.Activate") == (
        200, {"Implements": ["NetworkDriver"]})
    assert post(plugin.socket("calico-ipam.sock"), "/Plugin.Activate") == (
        200, {"Implements": ["IpamDriver"]})
    assert plugin.net("GetCapabilities") == (
        200, {"Scope": "local", "ConnectivityScope": "global"})
    assert plugin.ipam("GetCapabilities") == (200, {"RequiresMACAddress": False})
    assert plugin.ipam("GetDefaultAddressSpaces") == (
        200, {"LocalDefaultAddressSpace": "CalicoLocalAddressSpace",
              "GlobalDefaultAddressSpace": "CalicoGlobalAddressSpace"})
    # The Accept header is not filtered on: any value, or none, gets the same answer.
    for accept in ("application/json", "text/plain", ""):
        assert post(plugin.socket("calico.sock"), "/Plugin.Activate",
                    headers={"Accept": accept})[0] == 200
    # Each socket serves only its own calls.
    status, answer = post(plugin.socket("calico.sock"), "/IpamDriver.GetCapabilities")
    assert status == 404 and "unknown call" in error_message("net", answer)
    status, answer = post(plugin.socket("calico-ipam.sock"), "/NetworkDriver.Join", {})
    assert status == 404 and "unknown call" in error_message("ipam", answer)


def test_answers_carry_docker_content_type(plugin: Plugin) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(plugin.socket("calico.sock"))
    with sock:
        sock.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nUser-Agent: "
                     b"Go-http-client/1.1\r\nContent-Length: 0\r\nAccept: "
                     + DOCKER_ACCEPT.encode() + b"\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert headers["content-type"] == DOCKER_ACCEPT


def test_sockets_are_root_only(plugin: Plugin) -> None:
    for name in ("calico.sock", "calico-ipam.sock"):
        mode = os.stat(plugin.socket(name)).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600, f"{name}: {oct(stat.S_IMODE(mode))}"


# ------------------------------------------------------------------------------ lifecycle


def test_ipv4_lifecycle_with_replays(plugin: Plugin) -> None:
    """docker network create / run / rm / network rm, every call sent twice."""
    assert plugin.ok("ipam", "RequestPool", request_pool()) == {
        "PoolID": "calico-v4", "Pool": "0.0.0.0/0",
        "Data": {"com.docker.network.gateway": "0.0.0.0/0"}}
    assert plugin.ok("net", "CreateNetwork", create_network(NET)) == {}
    assert plugin.allocated() == 0  # a network holds no address (the gateway is link-local)
    assert named(plugin, NET) == "net1"  # learnt from Docker once it answers for it
    plugin.docker.lookups.clear()

    # RequestAddress is the one call not replayed here: Docker does not pass the endpoint
    # to IPAM, so a second identical request is a second container asking.
    answer = plugin.ok("ipam", "RequestAddress", request_address("calico-v4"), replay=False)
    assert set(answer) == {"Address", "Data"}
    address, prefix = answer["Address"].split("/")
    assert prefix == "32" and netaddr.IPAddress(address) in netaddr.IPNetwork(POOL4)
    assert plugin.pending() == [address]  # held by this host's pending handle until ...

    assert plugin.ok("net", "CreateEndpoint",
                     create_endpoint(NET, EP, answer["Address"])) == {"Interface": {}}
    # ... CreateEndpoint hands it to the endpoint's own handle (its id).
    assert plugin.pending() == []
    assert plugin.client.ipam.handle_addresses(EP) == [address]
    endpoint = plugin.client.get_endpoint(HOST, EP)
    assert endpoint.interface == "cali" + EP[:11]
    assert endpoint.ipv4_nets == [f"{address}/32"] and endpoint.ipv6_nets == []
    assert endpoint.profiles == ["net1"]  # named after the network's name in Docker
    assert endpoint.labels == {"docker-network": NET[:63]}
    assert endpoint.mac == container_mac(EP)
    profile = plugin.client.get_profile("net1")
    assert profile.tags == ["net1"] and len(profile.inbound_rules) == 1
    assert plugin.docker.lookups == []  # learnt at CreateNetwork, then remembered

    plugin.hooks.calls.clear()
    answer = plugin.ok("net", "Join", join(NET, EP))
    assert answer == {
        "InterfaceName": {"SrcName": "tmp" + EP[:11], "DstPrefix": "eth"},
        "Gateway": "169.254.1.1",
        "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1, "NextHop": ""}]}
    # The veth exists and the dataplane is programmed before Join answers.
    assert plugin.hooks.calls[:2] == [("create_veth", "cali" + EP[:11], "tmp" + EP[:11],
                                       container_mac(EP)), ("reconcile",)]
    assert plugin.ok("net", "ProgramExternalConnectivity",
                     {**ids(NET, EP), "Options": PORTS}) == {}
    assert plugin.ok("net", "EndpointOperInfo", ids(NET, EP)) == {"Value": {}}
    assert plugin.ok("net", "DiscoverNew", {"DiscoveryType": 1, "DiscoveryData": {}}) == {}
    assert plugin.ok("net", "DiscoverDelete", {"DiscoveryType": 1,
                                               "DiscoveryData": {}}) == {}

    # docker rm
    plugin.hooks.calls.clear()
    assert plugin.ok("net", "RevokeExternalConnectivity", ids(NET, EP)) == {}
    assert plugin.ok("net", "Leave", ids(NET, EP)) == {}
    assert ("delete_veth", "cali" + EP[:11]) in plugin.hooks.calls
    assert plugin.ok("net", "DeleteEndpoint", ids(NET, EP)) == {}
    assert plugin.client.list_endpoints(HOST) == []
    assert plugin.ok("ipam", "ReleaseAddress", {"PoolID": "calico-v4",
                                                "Address": address}) == {}
    assert plugin.allocated() == 0

    # docker network rm: the gateway RequestPool named comes back although never requested.
    assert plugin.ok("ipam", "ReleaseAddress", {"PoolID": "calico-v4",
                                                "Address": "0.0.0.0"}) == {}
    assert plugin.ok("ipam", "ReleaseAddress", {"PoolID": "calico-v4",
                                                "Address": "0.0.0.0/0"}) == {}
    assert plugin.ok("ipam", "ReleasePool", {"PoolID": "calico-v4"}) == {}
    assert plugin.ok("net", "DeleteNetwork", {"NetworkID": NET}) == {}
    assert plugin.allocated() == 0 and plugin.client.ipam.check() == []


def test_ipv6_lifecycle(plugin: Plugin) -> None:
    assert plugin.ok("ipam", "RequestPool", request_pool(v6=True)) == {
        "PoolID": "calico-v6", "Pool": "::/0", "Data": {"com.docker.network.gateway": "::/0"}}
    assert plugin.ok("net", "CreateNetwork", create_network(NET6, ipv6=True)) == {}
    v4 = plugin.ok("ipam", "RequestAddress", request_address("calico-v4"), replay=False)
    v6 = plugin.ok("ipam", "RequestAddress", request_address("calico-v6"), replay=False)
    address6, prefix = v6["Address"].split("/")
    assert prefix == "128" and netaddr.IPAddress(address6) in netaddr.IPNetwork(POOL6)
    assert sorted(plugin.pending()) == sorted([v4["Address"][:-3], address6])
    plugin.ok("net", "CreateEndpoint",
              create_endpoint(NET6, EP6, v4["Address"], v6["Address"], NO_PORTS))
    assert plugin.pending() == []
    assert sorted(plugin.client.ipam.handle_addresses(EP6)) == sorted(
        [v4["Address"][:-3], address6])
    assert plugin.client.get_endpoint(HOST, EP6).ipv6_nets == [f"{address6}/128"]
    answer = plugin.ok("net", "Join", join(NET6, EP6))
    assert answer["GatewayIPv6"] == GATEWAY_V6 == "fe80::ecee:eeff:feee:eeee"
    assert answer["Gateway"] == "169.254.1.1"
    plugin.ok("net", "Leave", ids(NET6, EP6))
    plugin.ok("net", "DeleteEndpoint", ids(NET6, EP6))
    for pool_id, address in (("calico-v4", v4["Address"][:-3]), ("calico-v6", address6),
                             ("calico-v4", "0.0.0.0"), ("calico-v6", "::")):
        plugin.ok("ipam", "ReleaseAddress", {"PoolID": pool_id, "Address": address})
    plugin.ok("ipam", "ReleasePool", {"PoolID": "calico-v6"})
    plugin.ok("net", "DeleteNetwork", {"NetworkID": NET6})
    assert plugin.allocated() == 0


def test_release_of_unallocated_addresses_is_quiet(plugin: Plugin) -> None:
    for address in ("10.65.3.3", "fd00:65::99", "169.254.1.1", "::/0", "192.0.2.1"):
        assert plugin.ipam("ReleaseAddress", {"PoolID": "calico-v4",
                                              "Address": address}) == (200, {}), address
    assert plugin.client.ipam.check() == []


def test_create_network_accepts_every_option_docker_sends(plugin: Plugin) -> None:
    body = create_network(NET)
    body["Options"].update({"com.docker.network.enable_ipv4": True,
                            "com.docker.network.internal": False})
    assert plugin.ok("net", "CreateNetwork", body) == {}


# ------------------------------------------------------------------------------ refusals


def test_fixed_address_twice_is_refused_clearly(plugin: Plugin) -> None:
    """--subnet POOL then docker run --ip: exactly that address, once."""
    assert plugin.ok("ipam", "RequestPool", request_pool(SUBNET)) == {
        "PoolID": f"calico-v4:{SUBNET}", "Pool": SUBNET,
        "Data": {"com.docker.network.gateway": "0.0.0.0/0"}}
    assert plugin.ipam("RequestAddress", request_address(f"calico-v4:{SUBNET}",
                                                         "10.66.0.77")) == (
        200, {"Address": "10.66.0.77/32", "Data": {}})
    message = plugin.error("ipam", "RequestAddress",
                           request_address(f"calico-v4:{SUBNET}", "10.66.0.77"))
    assert "10.66.0.77" in message and "already assigned" in message
    # still refused once it belongs to its endpoint
    plugin.ok("net", "CreateEndpoint", create_endpoint(NET, EP, "10.66.0.77/32"))
    message = plugin.error("ipam", "RequestAddress",
                           request_address(f"calico-v4:{SUBNET}", "10.66.0.77"))
    assert "10.66.0.77" in message and "already assigned" in message
    assert plugin.client.ipam.handle_addresses(EP) == ["10.66.0.77"]
    # auto-assignment on a --subnet network stays inside that pool
    status, answer = plugin.ipam("RequestAddress", request_address(f"calico-v4:{SUBNET}"))
    assert status == 200
    assert netaddr.IPAddress(answer["Address"][:-3]) in netaddr.IPNetwork(SUBNET)
    assert plugin.client.ipam.check() == []


def test_unknown_subnet_lists_the_pools(plugin: Plugin) -> None:
    message = plugin.error("ipam", "RequestPool", request_pool("10.99.0.0/24"))
    assert "10.99.0.0/24" in message
    assert POOL4 in message and SUBNET in message
    message = plugin.error("ipam", "RequestPool", request_pool("fd00:99::/64", v6=True))
    assert "fd00:99::/64" in message and POOL6 in message
    assert "CIDR" in plugin.error("ipam", "RequestPool", request_pool("not-a-cidr"))
    assert "--ip-range" in plugin.error("ipam", "RequestPool",
                                        {**request_pool(POOL4), "SubPool": "10.65.1.0/24"})


def test_unknown_generic_options_are_named(plugin: Plugin) -> None:
    message = plugin.error("net", "CreateNetwork",
                           create_network(NET, generic={"foo": "bar", "mtu": "1400"}))
    assert "foo" in message and "mtu" in message
    body = create_network(NET)
    body["Options"]["com.example.unknown"] = "x"
    assert "com.example.unknown" in plugin.error("net", "CreateNetwork", body)
    assert plugin.client.store.get(keys.docker_network(HOST, NET)) is None  # nothing recorded
    assert plugin.ok("net", "CreateNetwork", create_network(NET)) == {}


def test_default_ipam_is_refused_naming_calico_ipam(plugin: Plugin) -> None:
    # docker network create -d calico NAME (no --ipam-driver): Docker's own IPAM answered.
    body = {"NetworkID": NET,
            "Options": {"com.docker.network.enable_ipv6": False,
                        "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "172.17.0.1/16",
                          "Pool": "172.17.0.0/16"}], "IPv6Data": []}
    assert "--ipam-driver calico-ipam" in plugin.error("net", "CreateNetwork", body)
    # and an endpoint without an address from it is refused the same way
    message = plugin.error("net", "CreateEndpoint", create_endpoint(NET, EP, ""))
    assert "calico-ipam" in message


def test_foreign_pool_id_and_unknown_endpoint(plugin: Plugin) -> None:
    assert "calico-ipam" in plugin.error("ipam", "RequestAddress",
                                         request_address("LocalDefault/172.17.0.0/16"))
    assert "CreateEndpoint" in plugin.error("net", "Join", join(NET, EP))
    del plugin.docker.names[NET]  # Docker cannot name the network
    message = plugin.error("net", "CreateEndpoint", create_endpoint(NET, EP, "10.65.9.9/32"))
    assert NET[:12] in message


# ------------------------------------------------------------------------------ bad requests


@pytest.mark.parametrize(("kind", "method", "body"), [
    ("net", "CreateNetwork", {}),
    ("net", "CreateEndpoint", {"NetworkID": NET}),
    ("net", "Join", {"NetworkID": NET}),
    ("net", "Leave", {}),
    ("net", "DeleteEndpoint", {"NetworkID": NET, "EndpointID": ""}),
    ("net", "DeleteNetwork", {"NetworkID": 5}),
    ("ipam", "RequestAddress", {"Address": ""}),
    ("ipam", "ReleaseAddress", {"PoolID": "calico-v4"}),
])
def test_missing_fields_are_named(plugin: Plugin, kind: str, method: str,
                                  body: dict[str, Any]) -> None:
    message = plugin.error(kind, method, body)
    assert "missing" in message
    assert plugin.alive()


def test_malformed_requests_get_error_answers(plugin: Plugin) -> None:
    sock = plugin.socket("calico.sock")
    ipam = plugin.socket("calico-ipam.sock")
    cases = [
        (sock, "/NetworkDriver.CreateNetwork", b"{not json", 400),
        (ipam, "/IpamDriver.RequestPool", b"[1, 2, 3]", 400),
        (ipam, "/IpamDriver.RequestAddress", b'"a string"', 400),
        (sock, "/NetworkDriver.Join", b"\xff\xfe\x00", 400),
        (sock, "/NetworkDriver.Nope", b"{}", 404),
        (ipam, "/Plugin.Nope", b"{}", 404),
        # wrong types where objects are expected: an error answer, not a crash
        (sock, "/NetworkDriver.CreateNetwork", b'{"NetworkID": "n", "Options": 5}', 500),
        (sock, "/NetworkDriver.CreateEndpoint",
         b'{"NetworkID": "n", "EndpointID": "e", "Interface": "x"}', 500),
        (ipam, "/IpamDriver.RequestAddress", b'{"PoolID": "calico-v4", "Options": ["x"]}',
         500),
    ]
    for path, call, raw, expected in cases:
        status, answer = post(path, call, raw=raw)
        assert status == expected, (call, raw, status, answer)
        assert error_message("net" if path == sock else "ipam", answer), (call, answer)
        assert plugin.alive()
    # oversized, negative and nonsense Content-Length
    for path, kind in ((sock, "net"), (ipam, "ipam")):
        for length in (str(MAX_BODY + 1), str(10**12), "-5", "many"):
            status, answer = post(path, "/Plugin.Activate", raw=b"{}",
                                  headers={"Content-Length": length})
            assert status == 400 and error_message(kind, answer), (length, answer)
            assert plugin.alive()
    assert plugin.client.store.list(keys.DOCKER_NETWORKS) == []


def test_a_client_that_hangs_up_does_not_stop_the_server(plugin: Plugin, capsys) -> None:
    for data in (b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
                 b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n",
                 b"GARBAGE\r\n\r\n", b"", b"POST /x HTTP/1.1\r\n"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(plugin.socket("calico.sock"))
        sock.sendall(data)
        sock.close()
    assert plugin.alive()
    time.sleep(0.2)  # let the handlers of the hung-up calls finish
    assert plugin.alive()
    assert "Traceback" not in capsys.readouterr().err  # a hang-up is no error to report


def test_get_and_keepalive(plugin: Plugin) -> None:
    """Several calls on one connection (Go's client keeps it alive), then a GET."""
    import http.client

    conn = http.client.HTTPConnection("localhost")
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(plugin.socket("calico-ipam.sock"))
    try:
        for _ in range(3):
            conn.request("POST", "/IpamDriver.GetCapabilities", body=b"",
                         headers={"Accept": DOCKER_ACCEPT})
            reply = conn.getresponse()
            assert reply.status == 200 and reply.read() == b'{"RequiresMACAddress": false}'
        conn.request("GET", "/Plugin.Activate")
        reply = conn.getresponse()
        reply.read()
        assert reply.status >= 400
    finally:
        conn.close()
    assert plugin.alive()


# ------------------------------------------------------------------------------ concurrency


def test_concurrent_request_address_gives_unique_addresses(plugin: Plugin) -> None:
    def ask(_: int) -> tuple[int, Any]:
        return plugin.ipam("RequestAddress", request_address("calico-v4"))

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(ask, range(50)))
    assert all(status == 200 for status, _ in answers), answers
    addresses = [answer["Address"] for _, answer in answers]
    assert len(set(addresses)) == 50
    assert sorted(plugin.pending()) == sorted(a[:-3] for a in addresses)
    assert plugin.client.ipam.check() == []


def test_concurrent_endpoint_lifecycles(plugin: Plugin) -> None:
    """20 containers created and removed at once: every address ends up free again."""
    def lifecycle(n: int) -> str:
        endpoint_id = f"{n:02x}" * 32  # a host veth name of its own
        status, answer = plugin.ipam("RequestAddress", request_address("calico-v4"))
        assert status == 200, answer
        address = answer["Address"]
        for kind, method, body in (
                ("net", "CreateEndpoint", create_endpoint(NET, endpoint_id, address)),
                ("net", "Join", join(NET, endpoint_id, f"/var/run/docker/netns/{n:012x}")),
                ("net", "Leave", ids(NET, endpoint_id)),
                ("net", "DeleteEndpoint", ids(NET, endpoint_id)),
                ("ipam", "ReleaseAddress", {"PoolID": "calico-v4",
                                            "Address": address[:-3]})):
            status, answer = getattr(plugin, kind)(method, body)
            assert status == 200, (method, answer)
        return address

    plugin.ok("net", "CreateNetwork", create_network(NET))
    with ThreadPoolExecutor(max_workers=20) as pool:
        addresses = list(pool.map(lifecycle, range(1, 21)))
    assert len(addresses) == 20
    assert plugin.allocated() == 0
    assert plugin.client.ipam.check() == []
    assert plugin.client.list_endpoints(HOST) == []


# ------------------------------------------------------------------------------ ownership
# (integrity issue) An address changes owner only from this host's pending handle to the
# endpoint that Docker creates with it; ReleaseAddress frees only this host's pending
# addresses and those of its ended endpoints. Everything else is refused and logged.

OTHER = "otherhost"
EP2 = "2f1c3bd2cbfd0d4b3a3c8a9f8e0b6e2d9c7a5b3f1e0d2c4b6a8f0e2d4c6b8a0f"


def started(plugin: Plugin, endpoint_id: str, pool_id: str = "calico-v4") -> str:
    """RequestAddress + CreateEndpoint, as `docker run` does; the address."""
    status, answer = plugin.ipam("RequestAddress", request_address(pool_id))
    assert status == 200, answer
    plugin.ok("net", "CreateEndpoint", create_endpoint(NET, endpoint_id, answer["Address"]))
    return answer["Address"].split("/")[0]


def test_create_endpoint_never_takes_another_endpoints_address(plugin: Plugin,
                                                               caplog) -> None:
    address = started(plugin, EP)
    message = plugin.error("net", "CreateEndpoint", create_endpoint(NET, EP2, f"{address}/32"))
    assert address in message and EP in message, message
    assert plugin.client.ipam.handle_addresses(EP) == [address]
    assert [e.id for e in plugin.client.list_endpoints(HOST)] == [EP]
    assert any(address in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records), "the refusal is logged"
    assert plugin.client.ipam.check() == []


def test_create_endpoint_never_takes_other_hosts_or_handles_addresses(plugin: Plugin) -> None:
    ipam = plugin.client.ipam
    # another host's pending address (its older one-per-host form too) ...
    theirs = ipam.auto_assign(OTHER, f"docker-pending.{OTHER}", num_ipv4=1).ipv4[0]
    # ... and a handle of this host that is not pending (an operator's assignment)
    manual = ipam.auto_assign(HOST, "manual", num_ipv4=1).ipv4[0]
    for address, owner in ((theirs, f"docker-pending.{OTHER}"), (manual, "manual")):
        message = plugin.error("net", "CreateEndpoint",
                               create_endpoint(NET, EP, f"{address}/32"))
        assert address in message and owner in message, message
        assert ipam.handle_addresses(owner) == [address]
    assert plugin.client.list_endpoints(HOST) == []
    assert ipam.handle_addresses(EP) == []
    # All or nothing: a good pending address next to a refused one stays pending.
    status, answer = plugin.ipam("RequestAddress", request_address("calico-v4"))
    assert status == 200
    mine = answer["Address"].split("/")[0]
    theirs6 = ipam.auto_assign(OTHER, "theirs6", num_ipv6=1).ipv6[0]
    body = create_endpoint(NET6, EP, answer["Address"], f"{theirs6}/128", NO_PORTS)
    assert theirs6 in plugin.error("net", "CreateEndpoint", body)
    assert plugin.pending() == [mine] and ipam.handle_addresses(EP) == []
    assert plugin.client.list_endpoints(HOST) == []
    # the same call with only the pending address goes through, and replays
    for _ in range(2):
        assert plugin.net("CreateEndpoint", create_endpoint(NET, EP, answer["Address"]))[0] \
            == 200
    assert ipam.handle_addresses(EP) == [mine] and plugin.pending() == []


def test_release_address_frees_only_pending_and_ended(plugin: Plugin, caplog) -> None:
    ipam = plugin.client.ipam
    live = started(plugin, EP)
    # a live endpoint's address: refused, logged, still held (Docker never does this; a
    # replay after a restart or another host's confusion must not free it)
    message = plugin.error("ipam", "ReleaseAddress", {"PoolID": "calico-v4", "Address": live})
    assert live in message and EP in message, message
    assert ipam.handle_addresses(EP) == [live]
    assert any(live in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    # another host's addresses: refused
    theirs = ipam.auto_assign(OTHER, "their-endpoint", num_ipv4=1).ipv4[0]
    plugin.client.put_endpoint(Endpoint(id="their-endpoint", host=OTHER,
                                        interface="calitheir1", ipv4_nets=[theirs]))
    pending = ipam.auto_assign(OTHER, f"docker-pending.{OTHER}", num_ipv4=1).ipv4[0]
    for address in (theirs, pending):
        assert address in plugin.error("ipam", "ReleaseAddress",
                                       {"PoolID": "calico-v4", "Address": address})
    assert ipam.handle_addresses("their-endpoint") == [theirs]
    # this host's pending address: freed (Docker gives it back when a start fails)
    status, answer = plugin.ipam("RequestAddress", request_address("calico-v4"))
    assert status == 200
    plugin.ok("ipam", "ReleaseAddress", {"PoolID": "calico-v4",
                                         "Address": answer["Address"].split("/")[0]})
    assert plugin.pending() == []
    # an ended endpoint's address (its record gone, its handle left): freed
    plugin.client.store.delete(keys.endpoint(HOST, EP))
    status, _ = plugin.ipam("ReleaseAddress", {"PoolID": "calico-v4", "Address": live})
    assert status == 200 and ipam.handle_addresses(EP) == []
    assert plugin.allocated() == 2  # the other host's two


def test_request_address_refuses_wrong_family_or_outside_the_subnet(plugin: Plugin) -> None:
    cases = [("calico-v4", "fd00:65::5", "IPv6"),
             ("calico-v6", "10.65.0.5", "IPv4"),
             (f"calico-v4:{SUBNET}", "10.65.0.5", SUBNET),
             (f"calico-v4:{SUBNET}", "fd00:65::6", "IPv6")]
    for pool_id, address, word in cases:
        message = plugin.error("ipam", "RequestAddress", request_address(pool_id, address))
        assert "Address" in message and address in message and word in message, message
    assert plugin.allocated() == 0
    for pool_id in ("calico-v4x", "calico-v5", "calico-v4:"):
        assert "calico-ipam" in plugin.error("ipam", "RequestAddress",
                                             request_address(pool_id))
    assert plugin.ipam("RequestAddress", request_address(f"calico-v4:{SUBNET}",
                                                         "10.66.0.9"))[0] == 200


def test_each_request_has_its_own_pending_handle_with_host_and_time(plugin: Plugin) -> None:
    plugin.client.ipam.clock = lambda: 1_800_000_000.5
    first = plugin.ipam("RequestAddress", request_address("calico-v4"))[1]["Address"]
    second = plugin.ipam("RequestAddress", request_address("calico-v6"))[1]["Address"]
    records = [json.loads(kv.value) for kv in plugin.client.store.list(keys.HANDLES)]
    assert len(records) == 2, records  # one pending handle per request
    for record in records:
        assert record["handle"].startswith("docker-pending.1800000000."), record
        assert record["host"] == HOST and record["created"] == 1_800_000_000, record
    assert sorted(plugin.pending()) == sorted([first.split("/")[0], second.split("/")[0]])
    plugin.ok("net", "CreateEndpoint",
              create_endpoint(NET6, EP6, first, second, NO_PORTS))
    record = json.loads(plugin.client.store.get(keys.handle(EP6)).value)
    assert record["host"] == HOST and record["created"] == 1_800_000_000


def test_pending_addresses_age_into_findings_and_repairs(plugin: Plugin) -> None:
    ipam = plugin.client.ipam
    now = 1_800_000_000.0
    ipam.clock = lambda: now
    address = plugin.ipam("RequestAddress", request_address("calico-v4"))[1]["Address"]
    assert ipam.check() == []  # fresh: Docker is about to create the endpoint
    ipam.clock = lambda: now + GRACE + 1
    [problem] = ipam.check()
    assert problem.kind == "stale-pending" and problem.subject.startswith(
        keys.handle("docker-pending."))
    assert address.split("/")[0] in problem.detail
    from calico_lib.ipam_check import audit, repair
    outcomes = repair(audit(ipam))
    assert [o.result for o in outcomes] == ["repaired"]
    assert ipam.check() == [] and plugin.allocated() == 0
    # Docker's ReleaseAddress of it afterwards is quiet
    plugin.ok("ipam", "ReleaseAddress", {"PoolID": "calico-v4",
                                         "Address": address.split("/")[0]})


# ------------------------------------------------------------------------------ several networks
# `docker network connect` (issue: "error setting interface routes to 169.254.1.1/32: file
# exists"): each Calico interface of a container gets its own connected route to the
# gateway, and a --subnet network's routes go through a next hop only that interface has a
# connected route to (Docker binds a next-hop route to the interface of the next hop's
# most specific route).

SUBNET6 = "fd00:66::/64"
EP_A, EP_B, EP_C = (f"{n:x}" * 64 for n in (10, 11, 12))


def subnet_network(network_id: str, subnet: str, subnet6: str = "") -> dict[str, Any]:
    """CreateNetwork of ``docker network create --subnet S [--ipv6 --subnet S6]``."""
    body = create_network(network_id, ipv6=bool(subnet6))
    body["IPv4Data"][0].update(Pool=subnet)
    if subnet6:
        body["IPv6Data"][0].update(Pool=subnet6)
    return body


def endpoint_on(plugin: Plugin, network_id: str, endpoint_id: str, pool_id: str,
                pool_id6: str = "") -> None:
    """RequestAddress (both families with ``pool_id6``) and CreateEndpoint."""
    address = plugin.ipam("RequestAddress", request_address(pool_id))[1]["Address"]
    address6 = plugin.ipam("RequestAddress", request_address(pool_id6))[1]["Address"] \
        if pool_id6 else ""
    plugin.ok("net", "CreateEndpoint",
              create_endpoint(network_id, endpoint_id, address, address6), replay=False)


def gateway(prefix: int) -> dict[str, Any]:
    return {"Destination": str(netaddr.IPNetwork(f"169.254.1.1/{prefix}").cidr),
            "RouteType": 1, "NextHop": ""}


def test_next_hop_is_held_by_its_own_gateway_route_alone() -> None:
    assert [next_hop_v4(str(netaddr.IPNetwork(f"169.254.1.1/{p}").cidr))
            for p in (32, 31, 30, 29, 24)] == [
        "169.254.1.1", "169.254.1.0", "169.254.1.2", "169.254.1.4", "169.254.1.128"]
    hop6 = endpoint_gateway6(EP)
    assert netaddr.IPAddress(hop6) in netaddr.IPNetwork("fe80::/64") and hop6 != GATEWAY_V6
    assert hop6 == endpoint_gateway6(EP) != endpoint_gateway6(EP2)


def test_each_interface_gets_its_own_gateway_route(plugin: Plugin) -> None:
    """docker run --net S, then docker network connect: /32, then /31, then /30; each
    --subnet network's route through its interface's own next hop; a replay answers the
    same; an interface that left frees its route."""
    plugin.ok("net", "CreateNetwork", subnet_network(NET_S, SUBNET))
    plugin.ok("net", "CreateNetwork", create_network(NET))
    endpoint_on(plugin, NET_S, EP_A, f"calico-v4:{SUBNET}")
    endpoint_on(plugin, NET, EP_B, "calico-v4")
    endpoint_on(plugin, NET, EP_C, "calico-v4")
    # the first Join comes before runc made the namespace
    first = plugin.ok("net", "Join", join(NET_S, EP_A))
    assert first["StaticRoutes"] == [
        gateway(32), {"Destination": SUBNET, "RouteType": 0, "NextHop": "169.254.1.1"}]
    plugin.hooks.namespaces[SANDBOX] = {32}  # Docker moved it in, with its route
    second = plugin.ok("net", "Join", join(NET, EP_B))  # and replayed: the same answer
    assert second["StaticRoutes"] == [gateway(31)]  # a whole-pool network: no more
    assert second["Gateway"] == "169.254.1.1"
    plugin.hooks.namespaces[SANDBOX] = {32, 31}
    plugin.ok("net", "Leave", ids(NET, EP_B))
    plugin.hooks.namespaces[SANDBOX] = {32}
    assert plugin.ok("net", "Join", join(NET, EP_C))["StaticRoutes"] == [gateway(31)]
    plugin.hooks.namespaces[SANDBOX] = {32, 31}
    # a --subnet network on the third interface: its route goes via 169.254.1.2, which
    # only 169.254.1.0/30 holds
    plugin.ok("net", "Leave", ids(NET_S, EP_A))
    plugin.ok("net", "DeleteEndpoint", ids(NET_S, EP_A))
    endpoint_on(plugin, NET_S, EP_A, f"calico-v4:{SUBNET}")
    third = plugin.ok("net", "Join", join(NET_S, EP_A))
    assert third["StaticRoutes"] == [
        gateway(30), {"Destination": SUBNET, "RouteType": 0, "NextHop": "169.254.1.2"}]


def test_every_network_joined_before_the_namespace_exists(plugin: Plugin) -> None:
    """docker create --net S; docker network connect T; docker start (compose does this):
    Docker joins both before runc makes the namespace, so the plugin counts its own
    answers for the sandbox."""
    plugin.client.add_pool(IPPool(SUBNET6))
    plugin.ok("net", "CreateNetwork", subnet_network(NET_S, SUBNET))
    plugin.ok("net", "CreateNetwork", subnet_network(NET_T, "10.67.7.0/24", SUBNET6))
    plugin.client.add_pool(IPPool("10.67.7.0/24"))
    endpoint_on(plugin, NET_S, EP_A, f"calico-v4:{SUBNET}")
    endpoint_on(plugin, NET_T, EP_B, "calico-v4:10.67.7.0/24", f"calico-v6:{SUBNET6}")
    a = plugin.ok("net", "Join", join(NET_S, EP_A))
    plugin.hooks.calls.clear()
    b = plugin.ok("net", "Join", join(NET_T, EP_B))
    assert [r["Destination"] for r in a["StaticRoutes"]] == ["169.254.1.1/32", SUBNET]
    hop6 = endpoint_gateway6(EP_B)
    assert b["StaticRoutes"] == [
        gateway(31),
        {"Destination": f"{hop6}/128", "RouteType": 1, "NextHop": ""},
        {"Destination": "10.67.7.0/24", "RouteType": 0, "NextHop": "169.254.1.0"},
        {"Destination": SUBNET6, "RouteType": 0, "NextHop": hop6}]
    assert b["GatewayIPv6"] == GATEWAY_V6  # the default route: any host veth answers it
    # the host veth holds the IPv6 next hop before Join answers (and again on a replay)
    assert plugin.hooks.calls[:3] == [
        ("create_veth", "cali" + EP_B[:11], "tmp" + EP_B[:11], container_mac(EP_B)),
        ("add_address", "cali" + EP_B[:11], hop6), ("reconcile",)]
    # another container's sandbox starts from the /32 again
    endpoint_on(plugin, NET_S, EP_C, f"calico-v4:{SUBNET}")
    other = plugin.ok("net", "Join", join(NET_S, EP_C, "/var/run/docker/netns/0123456789ab"))
    assert other["StaticRoutes"][0] == gateway(32)


def test_namespace_is_read_as_dockerd_sees_it(plugin: Plugin) -> None:
    """A plugin whose mount namespace does not receive Docker's mounts sees an empty file
    at SandboxKey: it reads /proc/<dockerd>/root/<SandboxKey> instead."""
    plugin.docker.daemon_pid = lambda: 4242  # type: ignore[method-assign]
    plugin.hooks.namespaces["/proc/4242/root" + SANDBOX] = {32}
    plugin.ok("net", "CreateNetwork", create_network(NET))
    endpoint_on(plugin, NET, EP_B, "calico-v4")
    assert plugin.ok("net", "Join", join(NET, EP_B))["StaticRoutes"] == [gateway(31)]


def test_at_most_nine_calico_interfaces(plugin: Plugin) -> None:
    plugin.hooks.namespaces[SANDBOX] = set(range(24, 33))
    plugin.ok("net", "CreateNetwork", create_network(NET))
    endpoint_on(plugin, NET, EP_B, "calico-v4")
    assert "at most 9 Calico networks" in plugin.error("net", "Join", join(NET, EP_B))
    assert not any(call[0] == "create_veth" for call in plugin.hooks.calls)


def test_whole_pool_networks_keep_out_of_subnet_networks_pools(plugin: Plugin) -> None:
    """A whole-pool network's address inside a --subnet network's pool would be routed,
    in a container on both, through the --subnet network's interface."""
    plugin.ok("net", "CreateNetwork", subnet_network(NET_S, SUBNET))
    got = [plugin.ipam("RequestAddress", request_address("calico-v4"))[1]["Address"]
           for _ in range(70)]  # more than a block: new blocks come from POOL4 too
    assert all(netaddr.IPAddress(a[:-3]) in netaddr.IPNetwork(POOL4) for a in got), got
    # with no other pool left, whole-pool networks share the --subnet network's pool
    plugin.client.update_pool(POOL4, disabled=True)
    address = plugin.ipam("RequestAddress", request_address("calico-v4"))[1]["Address"]
    assert netaddr.IPAddress(address[:-3]) in netaddr.IPNetwork(SUBNET)


def test_network_named_like_an_operators_profile_is_refused(plugin: Plugin) -> None:
    """Before: the plugin found the profile existed and used it, so any Docker user who
    named a network `db` became a member of the operator's `db` group and was let in by
    every rule written for it. A network's profile is its own (default rules, no record
    needed); an operator's profile is joined only when the operator marks it."""
    plugin.client.add_profile(calico_lib.Profile("db", tags=["db"]))  # the operator's
    plugin.docker.names[NET] = "db"
    plugin.ok("net", "CreateNetwork", create_network(NET))
    address = plugin.ok("ipam", "RequestAddress", request_address("calico-v4"),
                        replay=False)["Address"]
    message = plugin.error("net", "CreateEndpoint", create_endpoint(NET, EP, address))
    assert "operator's profile" in message and "\n" not in message
    assert plugin.client.list_endpoints() == []
    # the operator marks it as the profile of Docker networks named db: now it is joined
    profile = plugin.client.get_profile("db")
    profile.docker_network = True
    plugin.client.put_profile(profile)
    plugin.ok("net", "CreateEndpoint", create_endpoint(NET, EP, address), replay=False)
    assert plugin.client.get_endpoint(HOST, EP).profiles == ["db"]


def test_the_plugin_writes_no_profile(plugin: Plugin) -> None:
    """Hosts may not write policy: a network's profile without a record is its default,
    in the snapshot every host renders and in the API."""
    plugin.docker.names[NET] = "fresh"
    plugin.ok("net", "CreateNetwork", create_network(NET))
    address = plugin.ok("ipam", "RequestAddress", request_address("calico-v4"),
                        replay=False)["Address"]
    plugin.ok("net", "CreateEndpoint", create_endpoint(NET, EP, address), replay=False)
    assert plugin.client.store.get(keys.profile("fresh")) is None
    from calico_lib.snapshot import load_snapshot

    profile = load_snapshot(plugin.client.store, HOST).profiles["fresh"]
    assert profile.docker_network and profile.tags == ["fresh"]
    assert plugin.client.get_profile("fresh") == profile
    # editing it is the operator's explicit act: it starts from the defaults
    plugin.client.add_rule("fresh", "inbound", calico_lib.Rule(protocol="tcp", dst_ports=[80]))
    stored = plugin.client.get_profile("fresh")
    assert stored.docker_network and len(stored.inbound_rules) == 2


# ------------------------------------------------------------------------------ issue 20
# A newcomer's first hour: `calicoctl profile rule add web ...` right after `docker network
# create ... web` said "profile web: not found" (a network's profile appeared with its first
# container: Docker passes no name to CreateNetwork, and the clients knew network profiles
# from endpoints only). Hosts may not write profiles: the plugin records the name in its own
# network record once Docker answers for the network, and the clients take a network record
# that names a network as its profile's, at its default rules until an operator edits it.

WEB_RULE = calico_lib.Rule(protocol="tcp", dst_ports=[80])


def test_a_networks_profile_exists_once_docker_network_create_returned(plugin: Plugin
                                                                       ) -> None:
    plugin.docker.stored = set()  # Docker stores the network once CreateNetwork answered,
    plugin.docker.names[NET] = "web"
    assert plugin.ok("net", "CreateNetwork", create_network(NET), replay=False) == {}
    plugin.docker.stored.add(NET)  # ... then answers `docker network create`
    default = calico_lib.Profile.with_default_rules("web", docker_network=True)
    assert plugin.client.get_profile("web") == default  # calicoctl profile show web
    assert "web" in [p.name for p in plugin.client.list_profiles()]
    assert plugin.client.store.get(keys.profile("web")) is None  # no host wrote a profile
    # calicoctl profile rule add web inbound allow tcp 80: the operator's write stores it,
    # from the default rules
    plugin.client.add_rule("web", "inbound", WEB_RULE)
    stored = plugin.client.get_profile("web", stored_only=True)
    assert stored.docker_network and stored.tags == ["web"]
    assert stored.inbound_rules == [*default.inbound_rules, WEB_RULE]
    assert stored.outbound_rules == default.outbound_rules
    # the network's first container is in that profile
    address = plugin.ok("ipam", "RequestAddress", request_address("calico-v4"),
                        replay=False)["Address"]
    plugin.ok("net", "CreateEndpoint", create_endpoint(NET, EP, address), replay=False)
    assert plugin.client.get_endpoint(HOST, EP).profiles == ["web"]
    assert plugin.client.get_profile("web") == stored


def test_a_profile_asked_for_while_its_network_is_named_is_waited_for(plugin: Plugin
                                                                      ) -> None:
    """The plugin learns the name milliseconds after `docker network create` returned; an
    operator's command in that window waits for it (at most NAMING s), not "not found"."""
    plugin.docker.stored = set()
    plugin.docker.names[NET] = "web"
    plugin.ok("net", "CreateNetwork", create_network(NET), replay=False)
    threading.Timer(0.3, plugin.docker.stored.add, [NET]).start()  # a slow Docker
    started = time.monotonic()
    plugin.client.add_rule("web", "inbound", WEB_RULE)
    assert 0.25 < time.monotonic() - started < NAMING
    assert plugin.client.get_profile("web", stored_only=True).inbound_rules[-1] == WEB_RULE
    # a profile no network has: not found at once when every network is named ...
    started = time.monotonic()
    with pytest.raises(calico_lib.NotFoundError, match="profile nosuch: not found"):
        plugin.client.get_profile("nosuch")
    assert time.monotonic() - started < 0.5
    # ... and after NAMING s at most while one created a moment ago is not
    plugin.ok("net", "CreateNetwork", create_network(NET6), replay=False)
    started = time.monotonic()
    with pytest.raises(calico_lib.NotFoundError, match="profile nosuch: not found"):
        plugin.client.add_rule("nosuch", "inbound", WEB_RULE)
    assert NAMING - 0.5 < time.monotonic() - started < NAMING + 1
    plugin.ok("net", "DeleteNetwork", {"NetworkID": NET6})


def test_a_networks_name_survives_replays_and_goes_with_it(plugin: Plugin) -> None:
    plugin.ok("net", "CreateNetwork", create_network(NET))  # sent twice
    assert named(plugin, NET) == "net1"
    record = network_record(plugin, NET)
    plugin.docker.lookups.clear()
    plugin.ok("net", "CreateNetwork", create_network(NET))  # Docker replays after restarts
    assert network_record(plugin, NET) == record and plugin.docker.lookups == []
    assert plugin.client.get_profile("net1").docker_network
    # docker network rm: its profile, which had no record, is gone with it
    plugin.ok("net", "DeleteNetwork", {"NetworkID": NET})
    with pytest.raises(calico_lib.NotFoundError):
        plugin.client.get_profile("net1")
    # a network Docker never stored (its creation failed after CreateNetwork answered):
    # Docker deletes it; a name learnt late never brings its record back
    plugin.docker.stored = set()
    plugin.ok("net", "CreateNetwork", create_network(NET6), replay=False)
    created = network_record(plugin, NET6)["created"]  # type: ignore[index]
    plugin.ok("net", "DeleteNetwork", {"NetworkID": NET6})
    assert DockerNetworks(plugin.client.store, HOST).learnt(NET6, created, "net6") is False
    assert network_record(plugin, NET6) is None


# ------------------------------------------------------------------------------ options
# Docker options calico networks took and ignored (issue 20): --internal (a container on
# it reached another node's address), --gateway, --ipam-opt, --aux-address. Each is now
# refused in one line naming it, before anything is recorded or assigned; the MTU is an
# option (-o com.docker.network.driver.mtu=N). The bodies are what dockerd 20.10 sent.

GATEWAY_REQUEST = {"RequestAddressType": "com.docker.network.gateway"}


def nothing_recorded(plugin: Plugin) -> bool:
    return (plugin.client.store.list(keys.DOCKER_NETWORKS) == [] and plugin.allocated() == 0
            and plugin.pending() == [] and plugin.client.ipam.check() == [])


def test_internal_is_refused(plugin: Plugin) -> None:
    body = create_network(NET)
    body["Options"]["com.docker.network.internal"] = True  # docker network create --internal
    message = plugin.error("net", "CreateNetwork", body)
    assert message.startswith("--internal is not supported") and "\n" not in message
    assert "drop --internal" in message
    assert nothing_recorded(plugin)
    body["Options"]["com.docker.network.internal"] = False  # as Docker sends it without
    assert plugin.ok("net", "CreateNetwork", body) == {}


def test_gateway_is_refused(plugin: Plugin) -> None:
    """--gateway: Docker asks calico-ipam for that address as the gateway."""
    pool_id = plugin.ok("ipam", "RequestPool", request_pool(SUBNET))["PoolID"]
    body = {"PoolID": pool_id, "Address": "10.66.0.1", "Options": GATEWAY_REQUEST}
    message = plugin.error("ipam", "RequestAddress", body)
    assert message.startswith("--gateway '10.66.0.1': not supported") and "\n" not in message
    assert "169.254.1.1" in message and "drop --gateway" in message
    assert nothing_recorded(plugin)
    # the gateway of a pool that named none is still the link-local one
    for address in ("", "0.0.0.0", "169.254.1.1"):
        assert plugin.ok("ipam", "RequestAddress", {**body, "Address": address}) == {
            "Address": "169.254.1.1/32", "Data": {}}
    assert plugin.ok("ipam", "RequestAddress", {
        "PoolID": "calico-v6", "Address": "", "Options": GATEWAY_REQUEST}) == {
        "Address": f"{GATEWAY_V6}/128", "Data": {}}
    assert "--gateway 'fd00:65::1'" in plugin.error("ipam", "RequestAddress", {
        "PoolID": "calico-v6", "Address": "fd00:65::1", "Options": GATEWAY_REQUEST})
    assert nothing_recorded(plugin)


def test_ipam_options_are_refused(plugin: Plugin) -> None:
    message = plugin.error("ipam", "RequestPool", {**request_pool(), "Options": {"x": "y"}})
    assert message.startswith("--ipam-opt 'x': calico-ipam takes no options")
    assert "drop --ipam-opt" in message and "\n" not in message
    assert "'a', 'b'" in plugin.error("ipam", "RequestPool", {
        **request_pool(SUBNET), "Options": {"b": "1", "a": "2"}})
    assert "Options" in plugin.error("ipam", "RequestPool", {**request_pool(),
                                                             "Options": ["x"]})
    assert nothing_recorded(plugin)
    assert plugin.ok("ipam", "RequestPool", {**request_pool(), "Options": None})["PoolID"] \
        == "calico-v4"


def test_aux_addresses_are_refused(plugin: Plugin) -> None:
    """--aux-address: Docker reserves it (RequestAddress), then CreateNetwork carries it;
    refused there, Docker hands it back (ReleaseAddress), and nothing is left."""
    pool_id = plugin.ok("ipam", "RequestPool", request_pool(SUBNET))["PoolID"]
    assert plugin.ok("ipam", "RequestAddress", request_address(pool_id, "10.66.0.9"),
                     replay=False)["Address"] == "10.66.0.9/32"
    body = subnet_network(NET, SUBNET)
    body["IPv4Data"][0]["AuxAddresses"] = {"a": "10.66.0.9/32"}
    message = plugin.error("net", "CreateNetwork", body)
    assert message.startswith("--aux-address is not supported") and "\n" not in message
    assert plugin.ok("ipam", "ReleaseAddress", {"PoolID": pool_id, "Address": "10.66.0.9"}) == {}
    assert nothing_recorded(plugin)


def mtu(value: str) -> dict[str, str]:
    return {"com.docker.network.driver.mtu": value}


def veth_mtus(plugin: Plugin) -> dict[str, int | None]:
    """host veth -> the MTU its create_veth call asked for (None: the kernel's)."""
    return {c[1]: (c[4] if len(c) > 4 else None) for c in plugin.hooks.calls
            if c[0] == "create_veth"}


def test_mtu_option_sets_the_veth_mtu(plugin: Plugin) -> None:
    """-o com.docker.network.driver.mtu=N: the veths of the network's containers; while a
    pool encapsulates, the lower of it and the VXLAN-lowered MTU (1450 here)."""
    networks = {NET: mtu("1400"), NET_S: mtu("9000"), NET_T: {}}
    for network_id, generic in networks.items():
        plugin.ok("net", "CreateNetwork", create_network(network_id, generic=generic))
    assert [(network_record(plugin, n) or {}).get("mtu") for n in networks] == [
        1400, 9000, None]
    for step, vxlan in enumerate(("never", "always")):
        plugin.client.update_pool(POOL4, vxlan_mode=vxlan)
        plugin.hooks.calls.clear()
        for network_id, endpoint_id in zip(networks, (EP_A, EP_B, EP_C), strict=True):
            endpoint = f"{step}{endpoint_id[1:]}"
            endpoint_on(plugin, network_id, endpoint, "calico-v4")
            plugin.ok("net", "Join", join(network_id, endpoint, f"/run/netns/{endpoint}"),
                      replay=False)
        assert list(veth_mtus(plugin).values()) == (
            [1400, 9000, None] if vxlan == "never" else [1400, 1450, 1450])
    # a network with IPv6 may have 1280
    plugin.ok("net", "CreateNetwork", create_network(NET6, ipv6=True, generic=mtu("1280")))


@pytest.mark.parametrize(("generic", "ipv6", "said"), [
    (mtu("abc"), False, "-o com.docker.network.driver.mtu='abc': not a number; use 576 to "
                        "9000"),
    (mtu("-1"), False, "not a number"),
    (mtu("1e3"), False, "not a number"),
    (mtu("575"), False, "-o com.docker.network.driver.mtu=575: out of range; use 576 to 9000"),
    (mtu("9001"), False, "out of range; use 576 to 9000"),
    (mtu("1279"), True, "out of range; use 1280 to 9000 (IPv6 needs 1280 at least)"),
    (mtu("99999999999999999999"), False, "not a number"),
    ({"mtu": "1400"}, False, "unknown option(s) 'mtu': calico networks take only -o "
                             "com.docker.network.driver.mtu=N (the MTU is -o "
                             "com.docker.network.driver.mtu=N)"),
], ids=["word", "negative", "float", "low", "high", "low-v6", "huge", "short-name"])
def test_bad_mtus_are_refused(plugin: Plugin, generic: dict[str, str], ipv6: bool,
                              said: str) -> None:
    message = plugin.error("net", "CreateNetwork", create_network(NET, ipv6, generic))
    assert said in message and "\n" not in message
    assert nothing_recorded(plugin)


# ------------------------------------------------------------------------------ hostile bodies
# (hostile input issue) Every field the driver reads is type-checked and every id checked
# against the model's rule before it becomes a key, an interface name or a log line; the
# refusal is one line naming the field. tests/test_hostile_input.py generates such bodies;
# these are the cases it does not pin.


@pytest.mark.parametrize(("kind", "method", "body", "field"), [
    ("ipam", "RequestPool", {"Pool": "", "V6": "yes"}, "V6"),
    ("ipam", "RequestPool", {"Pool": ["10.65.0.0/16"]}, "Pool"),
    ("ipam", "RequestPool", {"Pool": "", "SubPool": 5}, "SubPool"),
    ("ipam", "RequestAddress", {"PoolID": "calico-v4", "Address": 5}, "Address"),
    ("ipam", "RequestAddress", {"PoolID": "calico-v4:10.66.0.0/24\x1b[2J"}, "PoolID"),
    ("ipam", "RequestAddress", {"PoolID": "calico-v6:10.66.0.0/24", "Address": "x"},
     "PoolID"),
    ("net", "CreateNetwork", {"NetworkID": NET, "Options": [1]}, "Options"),
    ("net", "CreateNetwork", {"NetworkID": NET, "IPv6Data": {"Pool": "::/0"}}, "IPv6Data"),
    ("net", "CreateNetwork", {"NetworkID": NET, "IPv4Data": [
        {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "x\ny"}]}, "IPv4Data[0].Pool"),
    ("net", "CreateEndpoint", {"NetworkID": NET, "EndpointID": EP,
                               "Interface": {"Address": "fd00:65::5"}}, "Interface.Address"),
    ("net", "CreateEndpoint", {"NetworkID": NET, "EndpointID": EP,
                               "Interface": {"Address": "10.65.0.5", "MacAddress": []}},
     "Interface.MacAddress"),
    ("net", "Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": 5}, "SandboxKey"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_wrong_types_are_refused_naming_the_field(plugin: Plugin, kind: str, method: str,
                                                  body: dict[str, Any], field: str) -> None:
    message = plugin.error(kind, method, body)
    assert message.startswith(f"{field}: ") and message.isprintable(), message
    assert plugin.client.store.list(keys.DOCKER_NETWORKS) == []
    assert plugin.client.list_endpoints() == []


HOSTILE_IDS = ["n\n1", "e1\nforged log line", "\ud800", "x" * 129, "-lead", "a/b", "a b",
               "\u0661\u0662"]
ID_CALLS = [("CreateNetwork", "NetworkID"), ("DeleteNetwork", "NetworkID"),
            ("CreateEndpoint", "NetworkID"), ("CreateEndpoint", "EndpointID"),
            ("Join", "NetworkID"), ("Join", "EndpointID"), ("Leave", "EndpointID"),
            ("DeleteEndpoint", "EndpointID")]


@pytest.mark.parametrize(("method", "field"), ID_CALLS, ids="-".join)
def test_ids_are_checked_in_every_call(plugin: Plugin, method: str, field: str) -> None:
    """An id that is not one (a newline, a lone surrogate, 129 characters, a slash) is
    refused in one line naming it, quoted escaped and short; nothing is stored or deleted
    under it and no veth is touched."""
    for bad in HOSTILE_IDS:
        body = {**create_network(NET), **create_endpoint(NET, EP, "10.65.0.9"),
                **join(NET, EP), field: bad}
        message = plugin.error("net", method, body)
        assert message.startswith(f"{field}: ") and message.isprintable(), message
        assert "at most 128 characters" in message and len(message) < 200, message
    assert plugin.client.store.list(keys.DOCKER_NETWORKS) == []
    assert plugin.client.list_endpoints() == []
    assert plugin.hooks.calls == []


def test_refusals_quote_what_docker_users_typed(plugin: Plugin) -> None:
    message = plugin.error("ipam", "RequestPool", request_pool("10.99.0.0/16\n"))
    assert message == ("--subnet: '10.99.0.0/16\\n' is not allowed; control and invisible "
                       "characters are refused")
    message = plugin.error("net", "CreateNetwork", create_network(NET, generic={
        f"opt{n}\n": "x" for n in range(8)}))
    assert message.startswith("Options: unknown option(s) 'opt0\\n', ") and \
        message.isprintable() and "and 3 more" in message, message
    status, answer = post(plugin.socket("calico.sock"), "/NetworkDriver.Join\x1b[2J" + "x" * 200)
    assert status == 404 and answer["Err"].startswith("path: unknown call '/NetworkDriver.")
    assert answer["Err"].isprintable() and len(answer["Err"]) < 100, answer


# ------------------------------------------------------------------------------ host veths
# (hostile input issue, D3) The host veth is `cali` + the first 11 characters of the
# endpoint id: two endpoints of one host with ids alike in those would share it (the host's
# snapshot then kept one, and Leave of either deleted the other's veth). The second is
# refused at CreateEndpoint, in the transaction that writes the endpoint.

EP_LIKE = EP[:11] + "f" * 53  # another id, the same host veth name


def test_an_endpoint_whose_veth_name_is_taken_is_refused(plugin: Plugin) -> None:
    first = started(plugin, EP)
    status, answer = plugin.ipam("RequestAddress", request_address("calico-v4"))
    second = answer["Address"]
    message = plugin.error("net", "CreateEndpoint", create_endpoint(NET, EP_LIKE, second))
    assert message == (f"interface: cali{EP[:11]} is endpoint {EP}'s on {HOST}; every "
                       "endpoint of a host needs its own (Docker plugin: ids alike in their "
                       "first 11 characters)")
    assert [e.id for e in plugin.client.list_endpoints(HOST)] == [EP]
    assert plugin.pending() == [second.split("/")[0]]  # nothing taken: Docker releases it
    assert plugin.client.ipam.handle_addresses(EP) == [first]
    # Leave of the refused id leaves the other's veth alone; its own Leave deletes it
    plugin.hooks.calls.clear()
    plugin.ok("net", "Leave", ids(NET, EP_LIKE))
    assert plugin.hooks.calls == []
    plugin.ok("net", "Join", join(NET, EP), replay=False)
    plugin.ok("net", "Leave", ids(NET, EP))
    assert ("delete_veth", f"cali{EP[:11]}") in plugin.hooks.calls
    # once the first ended, its name is free again (its index entry is stale, not binding)
    plugin.ok("net", "DeleteEndpoint", ids(NET, EP))
    plugin.ok("net", "CreateEndpoint", create_endpoint(NET, EP_LIKE, second))
    assert [e.id for e in plugin.client.list_endpoints(HOST)] == [EP_LIKE]


@pytest.mark.parametrize(("kind", "method", "field"), [
    ("net", "Join", "EndpointID"), ("net", "CreateEndpoint", "NetworkID"),
    ("net", "DeleteEndpoint", "EndpointID"), ("ipam", "RequestAddress", "PoolID")])
def test_a_call_resent_without_its_body_says_so(plugin: Plugin, kind: str, method: str,
                                                field: str) -> None:
    """(fault campaign) Docker's plugin client resends a call whose connection broke (the
    plugin was killed during it) without its body: "EndpointID: missing; Docker always
    sends it" read like a Docker bug. The answer says what happened and what to do."""
    message = plugin.error(kind, method, None)
    assert message == (f"{field}: missing: the request was empty, as Docker resends a call "
                       "the plugin was restarted in the middle of; run the command again")
    assert plugin.client.list_endpoints() == [] and plugin.hooks.calls == []


def test_delete_endpoint_removes_the_veth_a_failed_join_left(plugin: Plugin) -> None:
    """(fault campaign) The plugin killed during Join after it made the veth: Docker's
    resent Join fails (no body) and Docker deletes the endpoint without a Leave, which left
    the veth behind for good. DeleteEndpoint deletes it, never another endpoint's."""
    started(plugin, EP)
    plugin.hooks.calls.clear()
    plugin.ok("net", "DeleteEndpoint", ids(NET, EP_LIKE), replay=False)  # not EP's veth
    assert plugin.hooks.calls == [("reconcile",)]
    plugin.error("net", "Join", None)
    plugin.ok("net", "DeleteEndpoint", ids(NET, EP), replay=False)
    assert plugin.hooks.calls[1:] == [("delete_veth", f"cali{EP[:11]}"), ("reconcile",)]
    assert plugin.client.list_endpoints() == []


def test_concurrent_endpoints_never_share_a_veth_name(plugin: Plugin) -> None:
    """Twelve CreateEndpoints at once whose ids share their first 11 characters: exactly
    one is stored, the others are refused naming it; the rest of the store is consistent."""
    plugin.ok("net", "CreateNetwork", create_network(NET))
    addresses = []
    for _ in range(12):
        status, answer = plugin.ipam("RequestAddress", request_address("calico-v4"))
        assert status == 200
        addresses.append(answer["Address"])
    endpoint_ids = [EP[:11] + f"{n:053x}" for n in range(12)]

    def create(n: int) -> tuple[int, Any]:
        return plugin.net("CreateEndpoint", create_endpoint(NET, endpoint_ids[n],
                                                            addresses[n]))

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(create, range(12)))
    assert sorted(status for status, _ in answers) == [200] + [500] * 11, answers
    [stored] = plugin.client.list_endpoints(HOST)
    for status, answer in answers:
        if status == 500:
            assert answer["Err"].startswith(f"interface: cali{EP[:11]} is endpoint "
                                            f"{stored.id}'s"), answer
    assert plugin.client.ipam.check() == []
    from calico_lib.snapshot import load_snapshot

    assert load_snapshot(plugin.client.store, HOST).unreadable == ()


def test_put_endpoint_refuses_an_interface_in_use(plugin: Plugin) -> None:
    """The Client API too, against endpoints written with or without the index (an
    operator's `calicoctl endpoint add`); moving an endpoint to another interface frees
    its old one."""
    client = plugin.client
    client.add_endpoint(Endpoint("e1", HOST, "caliweb"))  # no index entry
    with pytest.raises(calico_lib.AlreadyExistsError, match="interface: caliweb is endpoint "
                       f"e1's on {HOST}"):
        client.put_endpoint(Endpoint("e0", HOST, "caliweb"))
    assert client.put_endpoint(Endpoint("e2", HOST, "calidb")) is True
    with pytest.raises(calico_lib.AlreadyExistsError, match="endpoint e2's"):
        client.put_endpoint(Endpoint("e3", HOST, "calidb"))
    assert client.put_endpoint(Endpoint("e2", HOST, "calidb2")) is True
    assert client.put_endpoint(Endpoint("e3", HOST, "calidb")) is True
    assert client.put_endpoint(Endpoint("e3", HOST, "calidb")) is False
    assert client.put_endpoint(Endpoint("e1", OTHER, "caliweb")) is True  # another host's
    assert sorted((e.host, e.id, e.interface) for e in client.list_endpoints()) == [
        (HOST, "e1", "caliweb"), (HOST, "e2", "calidb2"), (HOST, "e3", "calidb"),
        (OTHER, "e1", "caliweb")]


def test_the_interface_index_is_rebuilt_when_it_grows(plugin: Plugin) -> None:
    """Ended endpoints leave their entries in the host's index; it is rebuilt from the
    endpoint records before it holds more than twice them plus INTERFACE_INDEX_SLACK, so
    it stays small however many containers come and go; an unreadable index is rebuilt."""
    from calico_lib.ipam import INTERFACE_INDEX_SLACK

    ipam = plugin.client.ipam

    def index() -> dict[str, Any]:
        return json.loads(plugin.client.store.get(keys.interface_index(HOST)).value)

    ipam.claim([], "keep", HOST, Endpoint("keep", HOST, "calikeep"))
    for n in range(INTERFACE_INDEX_SLACK + 10):
        endpoint_id = f"e{n}"
        ipam.claim([], endpoint_id, HOST, Endpoint(endpoint_id, HOST, f"cali{endpoint_id}"))
        ipam.end_endpoint(HOST, endpoint_id)
        assert len(index()["interfaces"]) <= 2 * index()["listed"] + INTERFACE_INDEX_SLACK + 1
    assert len(index()["interfaces"]) < INTERFACE_INDEX_SLACK
    assert index()["interfaces"]["calikeep"] == "keep"
    plugin.client.store.put(keys.interface_index(HOST), "{not json")
    with pytest.raises(calico_lib.AlreadyExistsError, match="endpoint keep's"):
        ipam.claim([], "other", HOST, Endpoint("other", HOST, "calikeep"))
    ipam.claim([], "other", HOST, Endpoint("other", HOST, "caliother"))
    assert index() == {"interfaces": {"calikeep": "keep", "caliother": "other"}, "listed": 1}
