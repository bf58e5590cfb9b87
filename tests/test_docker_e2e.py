"""calico-docker-plugin end to end, with a real dockerd started here (issue 5).

One ``DockerLab`` (``tests.dockerlab``) serves the whole module: a network namespace as the
host, dockerd 20.10 inside it, the busybox image imported locally, the plugin (running in the
same namespace, serving /run/docker/plugins) and a SQLite datastore with the pools below.
Users' commands are run as they would type them: ``docker network create -d calico
--ipam-driver calico-ipam``, ``docker run --net``, ``docker rm``. After every test its
containers are removed; a failure message carries the plugin's log and the host's iptables
and routes. The plugin syncs with Docker every second with a 5 s grace (tests that plant
leaks for ``ipam gc`` turn it off); the lifecycle tests kill it, restart dockerd and
"reboot" the host (see ``DockerLab.reboot``) in this same lab, so they come last.

Needs root, docker.io (dockerd, containerd, runc, docker), busybox-static, iproute2,
iptables and ipset.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import netaddr
import pytest

import calico_lib
from calico_lib import Endpoint, Rule, keys
from calico_lib.plugin.docker_api import DockerAPI
from calico_lib.plugin.driver import host_veth
from tests import dockerlab
from tests.dockerlab import DockerLab

pytestmark = pytest.mark.docker

POOL4, POOL6, SUBNET = "10.65.0.0/16", "fd00:65::/64", "10.66.0.0/24"
NET_A, NET_B = "calnet-a", "calnet-b"
#: --ipv6 --subnet networks, each on pools of its own (the multi-network matrix needs them)
SUBNETS = {"calnet-s1": ("10.67.0.0/24", "fd00:67::/64"),
           "calnet-s2": ("10.68.0.0/24", "fd00:68::/64"),
           "calnet-s3": ("10.69.0.0/24", "fd00:69::/64")}
S1, S2, S3 = SUBNETS
#: the plugin's sync in this module: every second, leaving alone what is younger than 5 s
#: (Docker lists an endpoint within milliseconds of CreateEndpoint, measured)
SYNC_INTERVAL, SYNC_GRACE = 1.0, 5.0
#: a container serving TCP on 80 and 8080 (busybox httpd daemonises), then idling
SERVE = ("sh", "-c", "httpd -p 80 -h /www && httpd -p 8080 -h /www && exec sleep 3600")
#: idles, and exits at once on SIGTERM (a plain sleep as PID 1 ignores it: 10 s per stop)
IDLE = ("sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")


@pytest.fixture(scope="module")
def lab() -> Iterator[DockerLab]:
    reason = dockerlab.missing_requirements()
    if reason:
        pytest.fail(reason, pytrace=False)
    pools = [POOL4, POOL6, SUBNET, *(p for pair in SUBNETS.values() for p in pair)]
    with DockerLab(pools=pools, sync_interval=SYNC_INTERVAL,
                   sync_grace=SYNC_GRACE) as the_lab:
        the_lab.network(NET_A)
        the_lab.network(NET_B)
        for name, (subnet4, subnet6) in SUBNETS.items():
            the_lab.network(name, "--ipv6", "--subnet", subnet4, "--subnet", subnet6)
        yield the_lab


@pytest.fixture(autouse=True)
def clean(lab: DockerLab) -> Iterator[None]:
    """Every test starts and ends with no container."""
    lab.rm_all()
    yield
    lab.rm_all()


@pytest.fixture
def client(lab: DockerLab) -> Iterator[calico_lib.Client]:
    with lab.client() as the_client:
        yield the_client


@pytest.fixture
def no_sync(lab: DockerLab) -> Iterator[None]:
    """The plugin without its Docker sync (a test that plants leaks for `ipam gc`)."""
    lab.restart_plugin(sync_interval=0)
    try:
        yield
    finally:
        lab.restart_plugin()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` every 0.1 s until it holds; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


def datastore(client: calico_lib.Client) -> dict[str, Any]:
    return {kv.key: kv.value for kv in client.store.list("/calico/")}


def allocated(client: calico_lib.Client) -> int:
    return sum(u["allocated"] for u in client.ipam.usage())


def in_net(address: str, cidr: str) -> bool:
    return netaddr.IPAddress(address) in netaddr.IPNetwork(cidr)


def host_links(lab: DockerLab) -> set[str]:
    out = dockerlab.run(["ip", "-n", lab.ns, "-j", "link", "show"]).stdout
    return {link["ifname"] for link in json.loads(out)}


# ------------------------------------------------------------------------------ connectivity


def test_same_network_pings_other_network_does_not(lab: DockerLab) -> None:
    lab.run("a1", NET_A)
    lab.run("a2", NET_A)
    lab.run("b1", NET_B)
    a1, a2, b1 = lab.address("a1", NET_A), lab.address("a2", NET_A), lab.address("b1", NET_B)
    assert len({a1, a2, b1}) == 3 and all(in_net(a, POOL4) for a in (a1, a2, b1))

    # What the container got: its /32, the gateway's connected route, the default route.
    assert f"inet {a1}/32" in lab.exec("a1", "ip", "-4", "addr", "show", "eth0").stdout
    routes = lab.exec("a1", "ip", "-4", "route").stdout
    assert "default via 169.254.1.1 dev eth0" in routes
    assert "169.254.1.1 dev eth0" in routes

    assert lab.ping("a1", a2), lab.diagnostics()
    assert lab.ping("a2", a1), lab.diagnostics()
    assert not lab.ping("a1", b1, count=1, wait=1), lab.diagnostics()
    assert not lab.ping("b1", a1, count=1, wait=1), lab.diagnostics()


def test_profile_rule_opens_exactly_tcp_80(lab: DockerLab, client: calico_lib.Client) -> None:
    web, cli = "calnet-web", "calnet-cli"
    lab.network(web)
    lab.network(cli)
    try:
        lab.run("web1", web, command=SERVE)
        lab.run("web2", web)
        lab.run("cli1", cli, command=SERVE)
        web1, cli1 = lab.address("web1", web), lab.address("cli1", cli)
        # both listeners are up (same-network traffic is open)
        assert lab.tcp("web2", web1, 80) and lab.tcp("web2", web1, 8080), lab.diagnostics()
        assert not lab.tcp("cli1", web1, 80), lab.diagnostics()

        # The web network's profile lets the cli network in on tcp/80.
        client.add_rule(web, "inbound", Rule(action="allow", protocol="tcp", dst_ports=[80],
                                             src_tag=cli))
        lab.agent_once()
        assert lab.tcp("cli1", web1, 80), lab.diagnostics()
        assert not lab.tcp("cli1", web1, 8080), lab.diagnostics()
        assert not lab.ping("cli1", web1, count=1, wait=1), lab.diagnostics()
        # only in that direction: web cannot reach cli's port 80
        assert not lab.tcp("web1", cli1, 80), lab.diagnostics()
        # policy explain, by container names, agrees and names the rule that lets cli in
        said = {port: json.loads(lab.calicoctl(
            "policy", "explain", "--from", "cli1", "--to", "web1", "--port", str(port),
            "--docker-socket", lab.docker_socket, "-o", "json").stdout) for port in (80, 8080)}
        assert said[80]["allowed"] and not said[8080]["allowed"], said
        assert [(s["profile"], s["rule_number"]) for s in said[80]["steps"]
                if s["verdict"] == "allow" and s["stage"] == "inbound"] == [(web, 2)], said
        # a container started after the rule gets it at once (Join programs the firewall)
        lab.run("cli2", cli)
        assert lab.tcp("cli2", web1, 80), lab.diagnostics()
        assert not lab.tcp("cli2", web1, 8080), lab.diagnostics()
    finally:
        lab.rm_all()
        lab.docker("network", "rm", web, cli, check=False)


def test_a_networks_profile_exists_when_network_create_returns(
        lab: DockerLab, client: calico_lib.Client) -> None:
    """Issue 20: `calicoctl profile rule add web ...` right after `docker network create
    ... web` said "not found" until a container joined. Docker names the network to the
    plugin only after CreateNetwork answered; the plugin records the name in its network
    record (hosts write no profile), and the operator's first edit stores the profile."""
    web, shell = "calnet-new", "calnet-new-cli"
    try:
        lab.network(web)
        # at once, in this process: no calicoctl start-up time hides a race
        client.add_rule(web, "inbound", Rule(action="allow", protocol="tcp", dst_ports=[80],
                                             src_tag=shell))
        stored = client.get_profile(web, stored_only=True)
        assert stored.docker_network and stored.tags == [web]
        assert len(stored.inbound_rules) == 2 and len(stored.outbound_rules) == 1
        # the newcomer's sequence, with calicoctl
        lab.network(shell)
        shown = json.loads(lab.calicoctl("profile", "show", shell, "-o", "json").stdout)
        assert shown["name"] == shell and shown["docker_network"], shown
        lab.calicoctl("profile", "rule", "add", shell, "inbound", "allow", "--protocol",
                      "tcp", "--dst-ports", "22")
        assert len(client.get_profile(shell, stored_only=True).inbound_rules) == 2
        # the network's containers are in the stored profile
        lab.run("w1", web)
        assert client.get_endpoint(lab.hostname, lab.endpoint_id("w1", web)).profiles == [web]
    finally:
        lab.rm_all()
        lab.docker("network", "rm", web, shell, check=False)
        for name in (web, shell):
            try:
                client.remove_profile(name, force=True)
            except calico_lib.NotFoundError:
                pass


def test_docker_options_refused_or_applied(lab: DockerLab, client: calico_lib.Client
                                           ) -> None:
    """Issue 20: options calico networks took and ignored are refused in one line naming
    the option, leaving nothing behind; -o com.docker.network.driver.mtu=N sets the MTU of
    the network's veths."""
    net = "calnet-opt"

    def networks() -> dict[str, Any]:
        return {k: v for k, v in datastore(client).items()
                if k.startswith(keys.DOCKER_NETWORKS)}

    records = networks()
    for extra, said in (
            (["--internal"], "--internal is not supported"),
            (["--subnet", SUBNET, "--gateway", "10.66.0.1"],
             "--gateway '10.66.0.1': not supported"),
            (["--ipam-opt", "x=y"], "--ipam-opt 'x': calico-ipam takes no options"),
            (["--subnet", SUBNET, "--aux-address", "a=10.66.0.9"],
             "--aux-address is not supported"),
            (["-o", "com.docker.network.driver.mtu=100"], "out of range; use 576 to 9000"),
            (["-o", "mtu=1400"], "the MTU is -o com.docker.network.driver.mtu=N")):
        result = lab.network(net, *extra, check=False)
        assert result.returncode != 0 and said in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert net not in lab.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert networks() == records, extra  # no network record
        assert allocated(client) == 0 and client.ipam.pending(lab.hostname) == {}, extra
    lab.network(net, "-o", "com.docker.network.driver.mtu=1400")
    try:
        lab.run("m1", net)
        assert "mtu 1400" in lab.exec("m1", "ip", "link", "show", "eth0").stdout
        veth = host_veth(lab.endpoint_id("m1", net))
        assert json.loads(dockerlab.run(["ip", "-n", lab.ns, "-j", "link", "show", veth]
                                        ).stdout)[0]["mtu"] == 1400
    finally:
        lab.rm_all()
        lab.docker("network", "rm", net, check=False)


def test_fixed_ip_and_subnet_errors(lab: DockerLab, client: calico_lib.Client) -> None:
    net = "calnet-sub"
    lab.network(net, "--subnet", SUBNET)
    try:
        lab.run("fixed", net, "--ip", "10.66.0.77")
        assert lab.address("fixed", net) == "10.66.0.77"
        lab.run("auto", net)
        assert in_net(lab.address("auto", net), SUBNET)
        assert lab.ping("auto", "10.66.0.77"), lab.diagnostics()
        # the same address again is refused clearly, and nothing leaks
        result = lab.run("again", net, "--ip", "10.66.0.77", check=False)
        assert result.returncode != 0
        # Docker shows the message itself, not a JSON body
        assert "IpamDriver.RequestAddress: ip: 10.66.0.77 is already assigned" in \
            result.stderr, result.stderr
        lab.docker("rm", "-f", "again", check=False)
        assert client.ipam.pending(lab.hostname) == {}
        assert allocated(client) == 2 and client.ipam.check() == []
    finally:
        lab.rm_all()
        lab.docker("network", "rm", net, check=False)

    result = lab.network("calnet-bad", "--subnet", "10.99.0.0/24", check=False)
    assert result.returncode != 0
    assert "IpamDriver.RequestPool: --subnet 10.99.0.0/24 is not a Calico IPv4 pool" in \
        result.stderr, result.stderr
    assert f"pools: {POOL4}, {SUBNET}" in result.stderr, result.stderr

    result = lab.docker("network", "create", "-d", "calico", "calnet-noipam", check=False)
    assert result.returncode != 0 and "--ipam-driver calico-ipam" in result.stderr
    result = lab.network("calnet-opt", "-o", "foo=bar", check=False)
    assert result.returncode != 0 and "unknown option(s) 'foo'" in result.stderr
    names = lab.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not {"calnet-bad", "calnet-noipam", "calnet-opt"} & set(names)
    assert client.ipam.check() == []


def test_ipv6_network_pings_over_ipv6(lab: DockerLab) -> None:
    net = "calnet-v6"
    lab.network(net, "--ipv6")
    try:
        lab.run("six1", net)
        lab.run("six2", net)
        one, two = lab.address("six1", net, v6=True), lab.address("six2", net, v6=True)
        assert in_net(one, POOL6) and in_net(two, POOL6) and one != two
        routes = lab.exec("six1", "ip", "-6", "route").stdout
        assert "default via fe80::ecee:eeff:feee:eeee dev eth0" in routes, routes
        assert lab.ping("six1", two), lab.diagnostics()
        assert lab.ping("six2", one), lab.diagnostics()
        assert lab.ping("six1", lab.address("six2", net)), lab.diagnostics()  # and IPv4
    finally:
        lab.rm_all()
        lab.docker("network", "rm", net, check=False)


# ------------------------------------------------------------------------------ several networks


def addresses_of(lab: DockerLab, container: str, network: str) -> dict[int, str]:
    return {4: lab.address(container, network), 6: lab.address(container, network, v6=True)}


def reaches(lab: DockerLab, container: str, address: str) -> bool:
    """One ping, one second: for the expected drops of a matrix."""
    return lab.ping(container, address, count=1, wait=1)


def test_network_connect_and_disconnect(lab: DockerLab, client: calico_lib.Client) -> None:
    """`docker network connect S2 c1` failed ("error setting interface routes to
    169.254.1.1/32: file exists"). Now each interface has its own gateway route and each
    --subnet network's peers are reached through its own interface, from its own
    address: c1 is a member of each network through the matching interface only."""
    lab.run("c1", S1)
    lab.docker("network", "connect", S2, "c1")
    for name, network in (("p1", S1), ("p2", S2), ("q1", S3)):
        lab.run(name, network)
    c1 = {S1: addresses_of(lab, "c1", S1), S2: addresses_of(lab, "c1", S2)}
    p1, p2, q1 = (addresses_of(lab, n, net) for n, net in (("p1", S1), ("p2", S2),
                                                           ("q1", S3)))
    assert in_net(c1[S2][4], SUBNETS[S2][0]) and in_net(c1[S2][6], SUBNETS[S2][1])
    routes = lab.exec("c1", "ip", "-4", "route").stdout
    assert "169.254.1.1 dev eth0" in routes and "169.254.1.0/31 dev eth1" in routes, routes
    assert f"{SUBNETS[S2][0]} via 169.254.1.0 dev eth1" in routes, routes
    assert f"{SUBNETS[S2][1]} via fe80::eeee:" in lab.exec("c1", "ip", "-6", "route").stdout

    for v in (4, 6):
        expected = {  # (from, to address): passes
            ("p1", c1[S1][v]): True, ("p2", c1[S2][v]): True,
            ("c1", p1[v]): True, ("c1", p2[v]): True,
            ("p1", c1[S2][v]): False, ("p2", c1[S1][v]): False,
            ("q1", c1[S1][v]): False, ("q1", c1[S2][v]): False, ("c1", q1[v]): False}
        seen = {key: reaches(lab, *key) for key in expected}
        assert seen == expected, f"IPv{v}\n{lab.diagnostics()}"

    endpoint = lab.endpoint_id("c1", S2)
    lab.docker("network", "disconnect", S2, "c1")
    assert "eth1" not in lab.exec("c1", "ip", "link").stdout
    assert host_veth(endpoint) not in host_links(lab)
    assert client.ipam.handle_addresses(endpoint) == []
    held = {a for per in client.ipam.read_state().holdings().values()
            for addrs in per.values() for a in addrs}
    assert not {c1[S2][4], c1[S2][6]} & held
    assert client.ipam.check() == []
    assert not reaches(lab, "p2", c1[S2][4]) and not reaches(lab, "p2", c1[S2][6])
    for v in (4, 6):
        assert lab.ping("p1", c1[S1][v]) and lab.ping("c1", p1[v]), lab.diagnostics()


def test_network_connect_whole_pool_networks(lab: DockerLab) -> None:
    """Whole-pool networks share pools: a second one is reached through the default-route
    interface only (docs/docker.md), but connecting must work."""
    lab.run("w1", NET_A)
    lab.docker("network", "connect", NET_B, "w1")
    lab.run("wb", NET_B)
    routes = lab.exec("w1", "ip", "-4", "route").stdout
    assert "169.254.1.0/31 dev eth1" in routes, routes
    assert lab.ping("wb", lab.address("w1", NET_B)), lab.diagnostics()
    lab.docker("network", "disconnect", NET_B, "w1")
    lab.docker("network", "connect", NET_B, "w1")  # again, into the /31 left free
    assert lab.ping("wb", lab.address("w1", NET_B)), lab.diagnostics()


def test_networks_connected_before_start(lab: DockerLab) -> None:
    """docker create, network connect, start (what compose does): Docker joins both
    networks before the container's namespace exists."""
    lab.docker("create", "--name", "both", "--net", S1, dockerlab.IMAGE, "sleep", "3600")
    lab.docker("network", "connect", S2, "both")
    lab.docker("start", "both")
    lab.run("p1", S1)
    lab.run("p2", S2)
    for network, peer in ((S1, "p1"), (S2, "p2")):
        for address in addresses_of(lab, "both", network).values():
            assert lab.ping(peer, address), lab.diagnostics()


# ------------------------------------------------------------------------------ addresses


def test_concurrent_runs_get_unique_addresses(lab: DockerLab,
                                              client: calico_lib.Client) -> None:
    names = [f"many{i:02d}" for i in range(20)]
    freed = lab.plugin_log_since_start().count("INFO freed")
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda name: lab.run(name, NET_A, check=False), names))
    failed = [(n, r.stderr) for n, r in zip(names, results, strict=True) if r.returncode]
    assert not failed, f"{failed}\n{lab.diagnostics()}"
    addresses = [lab.address(name, NET_A) for name in names]
    assert len(set(addresses)) == 20 and all(in_net(a, POOL4) for a in addresses)
    assert allocated(client) == 20 and client.ipam.check() == []
    for name, address in zip(names, addresses, strict=True):  # each under its endpoint
        assert client.ipam.handle_addresses(lab.endpoint_id(name, NET_A)) == [address]
    assert lab.ping(names[0], addresses[-1]), lab.diagnostics()
    assert lab.ping(names[-1], addresses[0]), lab.diagnostics()
    # the sync (every second, 5 s grace) ran all along and freed nothing being created
    lab.wait_for_sync(2)
    assert lab.plugin_log_since_start().count("INFO freed") == freed
    assert allocated(client) == 20


def test_docker_rm_frees_everything(lab: DockerLab, client: calico_lib.Client) -> None:
    for name in ("rm1", "rm2", "rm3"):
        lab.run(name, NET_B)
    endpoints = {lab.endpoint_id(name, NET_B) for name in ("rm1", "rm2", "rm3")}
    assert {e.id for e in client.list_endpoints(lab.hostname)} == endpoints
    assert {host_veth(e) for e in endpoints} <= host_links(lab)
    assert allocated(client) == 3

    lab.docker("rm", "-f", "rm1", "rm2", "rm3")
    assert allocated(client) == 0
    assert client.list_endpoints(lab.hostname) == []
    assert not {host_veth(e) for e in endpoints} & host_links(lab)
    assert client.ipam.check() == []
    check = lab.calicoctl("ipam", "check")
    assert "IPAM is consistent" in check.stdout


def test_plugin_killed_and_restarted(lab: DockerLab, client: calico_lib.Client) -> None:
    """kill -9 of the plugin while Docker holds endpoints: containers keep working, the
    restarted plugin's sync frees none of them, and Docker's calls replayed for an
    existing endpoint change nothing."""
    lab.run("live1", S1)
    lab.run("live2", S1)
    live1, live2 = lab.address("live1", S1), lab.address("live2", S1)
    before = datastore(client)
    assert lab.kill_plugin(signal.SIGKILL) == -signal.SIGKILL
    try:
        assert lab.ping("live1", live2), lab.diagnostics()  # the kernel keeps forwarding
    finally:
        lab.start_plugin()
    lab.wait_for_sync(2)
    assert "freed" not in lab.plugin_log_since_start()
    assert datastore(client) == before
    assert lab.ping("live2", live1), lab.diagnostics()

    # replays, as Docker sends them
    endpoint_id, network_id = lab.endpoint_id("live1", S1), lab.network_id(S1)
    sandbox = lab.inspect("live1")["NetworkSettings"]["SandboxKey"]
    create = {"NetworkID": network_id, "EndpointID": endpoint_id, "Options": {},
              "Interface": {"Address": f"{live1}/32", "MacAddress": "",
                            "AddressIPv6": f"{lab.address('live1', S1, v6=True)}/128"}}
    join = {"NetworkID": network_id, "EndpointID": endpoint_id, "SandboxKey": sandbox,
            "Options": {}}
    for path, body in (("/NetworkDriver.CreateEndpoint", create),
                       ("/NetworkDriver.Join", join)):
        answers = [dockerlab.post(lab.plugin_socket(), path, body) for _ in range(2)]
        assert answers[0][0] == 200 and answers[0] == answers[1], answers
    assert datastore(client) == before
    assert host_veth(endpoint_id) in host_links(lab)
    assert lab.ping("live2", live1) and lab.ping("live1", live2), lab.diagnostics()

    lab.run("late", S1)
    late = lab.address("late", S1)
    assert late not in (live1, live2)
    assert lab.ping("late", live1), lab.diagnostics()
    assert lab.ping("live1", late), lab.diagnostics()
    lab.docker("rm", "-f", "late")
    assert allocated(client) == 4 and client.ipam.check() == []  # two, both families


def leak(lab: DockerLab, client: calico_lib.Client, network: str, age: float = 0,
         address: str = "") -> tuple[str, str]:
    """An endpoint this host's plugin made (64 hex, labelled with its Docker network) that
    Docker no longer has, e.g. removed while the plugin was down; (its id, its address:
    ``address``, else any). ``age``: how many seconds ago it was made."""
    leaked = secrets.token_hex(32)
    if address:
        client.ipam.assign_ip(address, leaked, lab.hostname)
    else:
        address = client.ipam.auto_assign(lab.hostname, leaked, num_ipv4=1).ipv4[0]
    record = json.loads(client.store.get(keys.handle(leaked)).value)
    record.update(host=lab.hostname, created=int(time.time() - age))
    client.store.put(keys.handle(leaked), json.dumps(record))
    client.put_endpoint(Endpoint(id=leaked, host=lab.hostname, interface=host_veth(leaked),
                                 ipv4_nets=[address], profiles=[network],
                                 labels={"docker-network": lab.network_id(network)[:63]}))
    return leaked, address


def gc_docker(lab: DockerLab, *extra: str, socket: str = "", check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    return lab.calicoctl("ipam", "gc", "--docker", "--docker-socket",
                         socket or lab.docker_socket, "--hostname", lab.hostname, *extra,
                         check=check)


@pytest.mark.usefixtures("no_sync")
def test_ipam_gc_docker_frees_only_what_docker_forgot(lab: DockerLab,
                                                     client: calico_lib.Client) -> None:
    lab.run("keep1", NET_A)
    lab.run("keep2", NET_A)
    keep1 = lab.address("keep1", NET_A)
    kept_endpoint = lab.endpoint_id("keep1", NET_A)
    leaked, address = leak(lab, client, NET_A, age=3600)
    young, young_address = leak(lab, client, NET_A)  # may be one Docker is creating now
    # A pending address Docker asked for an hour ago and never used or gave back.
    client.ipam.clock = lambda: time.time() - 3600
    stale = client.ipam.auto_assign(lab.hostname, client.ipam.new_pending_handle(),
                                    num_ipv4=1).ipv4[0]
    client.ipam.clock = time.time
    # Not Docker's: another tool's handle is left alone.
    other = client.ipam.auto_assign(lab.hostname, "not-docker", num_ipv4=1).ipv4[0]
    assert allocated(client) == 6
    leaked_key = f"/calico/v1/endpoints/{lab.hostname}/{leaked}"

    try:
        # --dry-run says what it would free and frees nothing
        before = client.store.revision()
        dry = gc_docker(lab, "--dry-run").stdout.splitlines()
        assert sorted(seconds(dry)) == sorted([
            f"would release handle {leaked}: {address} (Docker has no such endpoint); would "
            f"remove endpoint {leaked_key}",
            f"would release handle {pending_of(client, lab.hostname, stale)}: {stale} "
            "(pending for N s)"]), dry
        assert client.store.revision() == before

        result = gc_docker(lab)
        assert sorted(seconds(result.stdout.splitlines())) == sorted(
            line.replace("would release", "released").replace(
                f"would remove endpoint {leaked_key}", f"endpoint {leaked_key} removed")
            for line in seconds(dry)), result.stdout
        check_gc_docker_result(lab, client, leaked, kept_endpoint, keep1, other, young,
                               young_address)
    finally:
        client.ipam.release_handle("not-docker")
        client.ipam.release_handle(young)
        client.store.delete(f"/calico/v1/endpoints/{lab.hostname}/{young}")


def seconds(lines: list[str]) -> list[str]:
    """``lines`` with ages ("for 3601 s") made comparable."""
    return [re.sub(r"for \d+ s", "for N s", line) for line in lines]


def check_gc_docker_result(lab: DockerLab, client: calico_lib.Client, leaked: str,
                           kept_endpoint: str, keep1: str, other: str, young: str,
                           young_address: str) -> None:
    assert client.ipam.handle_addresses(leaked) == []
    assert leaked not in {e.id for e in client.list_endpoints(lab.hostname)}
    assert client.ipam.handle_addresses(kept_endpoint) == [keep1]
    assert client.ipam.handle_addresses("not-docker") == [other]
    assert client.ipam.handle_addresses(young) == [young_address]
    assert allocated(client) == 4
    assert lab.ping("keep2", keep1), lab.diagnostics()
    # a second run finds nothing more; with no grace the young leak goes too
    assert gc_docker(lab).stdout == ""
    assert gc_docker(lab, "--grace", "0").stdout.split()[:3] == [
        "released", "handle", young + ":"]
    client.ipam.release_handle("not-docker")
    assert allocated(client) == 2 and client.ipam.check() == []


def pending_of(client: calico_lib.Client, host: str, address: str) -> str:
    """The pending handle of ``host`` that holds ``address``."""
    [handle] = [h for h, addrs in client.ipam.pending(host).items() if address in addrs]
    return handle


@pytest.mark.usefixtures("no_sync")
def test_ipam_gc_docker_aborts_on_any_docker_error(lab: DockerLab,
                                                   client: calico_lib.Client) -> None:
    """Docker answered 500 for one network; gc took it for "no containers" and removed
    live endpoints and their addresses."""
    lab.run("live1", NET_A)
    lab.run("live2", NET_B)
    leaked, _ = leak(lab, client, NET_A, age=3600)  # something gc would otherwise free
    live = {name: lab.endpoint_id(name, net) for name, net in (("live1", NET_A),
                                                              ("live2", NET_B))}
    net_a = lab.network_id(NET_A)
    before = {kv.key: kv.value for kv in client.store.list("/calico/")}
    for faults in ({f"/networks/{net_a}": 500}, {"/networks": 503}):
        with dockerlab.FaultyDocker(lab.docker_socket, faults) as proxy:
            result = gc_docker(lab, socket=proxy.path, check=False)
        [path] = faults
        assert result.returncode == 1, result
        assert result.stdout == "", result.stdout
        [line] = result.stderr.splitlines()
        assert f"GET {path}" in line and f"HTTP {faults[path]}" in line, line
        assert "nothing was released" in line, line
        assert {kv.key: kv.value for kv in client.store.list("/calico/")} == before
    missing = gc_docker(lab, socket=f"{lab.workdir}/no-such.sock", check=False)
    assert missing.returncode == 1 and "cannot reach Docker" in missing.stderr
    assert {kv.key: kv.value for kv in client.store.list("/calico/")} == before
    for name, endpoint_id in live.items():
        assert client.ipam.handle_addresses(endpoint_id) != [], name
    assert lab.ping("live1", lab.address("live1", NET_A)), lab.diagnostics()
    # the same run through a healthy Docker frees the leak and no live endpoint
    freed = gc_docker(lab, "--grace", "0").stdout
    assert leaked in freed and not any(e in freed for e in live.values()), freed
    assert client.ipam.check() == []


def test_release_address_of_a_live_container_is_refused(lab: DockerLab,
                                                        client: calico_lib.Client) -> None:
    """A ReleaseAddress that is not this host's to make (a replay after a restart, another
    host's Docker) freed a running container's address, which was then given out again."""
    lab.run("owner", NET_A)
    address = lab.address("owner", NET_A)
    endpoint_id = lab.endpoint_id("owner", NET_A)
    status, answer = dockerlab.post(lab.plugin_socket("calico-ipam.sock"),
                                    "/IpamDriver.ReleaseAddress",
                                    {"PoolID": "calico-v4", "Address": address})
    assert status == 500 and address in answer["Err"] and endpoint_id in answer["Err"], answer
    assert client.ipam.handle_addresses(endpoint_id) == [address]
    assert any("ReleaseAddress" in line and address in line and "WARNING" in line
               for line in lab.log().splitlines()), lab.tail("plugin.log")
    # Many new containers later, none was given the owner's address.
    names = [f"new{i}" for i in range(5)]
    for name in names:
        lab.run(name, NET_A)
    assert address not in {lab.address(name, NET_A) for name in names}
    assert lab.ping(names[0], address), lab.diagnostics()
    assert client.ipam.check() == []


# ------------------------------------------------------------------------------ sync with Docker


def in_sync(lab: DockerLab, client: calico_lib.Client) -> bool:
    """This host's endpoints are exactly Docker's, and IPAM is consistent."""
    docker = DockerAPI(lab.docker_socket).endpoint_ids()
    mine = {e.id for e in client.list_endpoints(lab.hostname)}
    return mine == docker and client.ipam.check() == []


@pytest.mark.parametrize("how", ["restart", "reboot"])
def test_docker_restart_keeps_policy_and_leaks_nothing(lab: DockerLab,
                                                       client: calico_lib.Client,
                                                       how: str) -> None:
    """``restart``: dockerd stops the containers and starts those with --restart always.
    ``reboot``: everything dies at once; at boot Docker hands back the addresses of the
    endpoints it lost (no DeleteEndpoint), which the plugin refuses while their records
    exist: the records stayed "active" in their profiles' sets until `ipam gc --docker`.
    Now the plugin's sync frees them within its interval and grace."""
    lab.run("always1", S1, "--restart", "always", command=IDLE)
    lab.run("peer1", S1, "--restart", "always", command=IDLE)
    lab.run("other3", S3, "--restart", "always", command=IDLE)
    lab.run("once1", S1, command=IDLE)
    old = {name: lab.endpoint_id(name, net) for name, net in (
        ("always1", S1), ("peer1", S1), ("other3", S3), ("once1", S1))}
    made = time.monotonic()
    if how == "restart":
        lab.restart_dockerd()
    else:
        lab.reboot()
    took = wait_until(lambda: in_sync(lab, client), SYNC_GRACE + SYNC_INTERVAL + 10,
                      f"after the {how}: this host's endpoints are Docker's")
    print(f"{how}: in sync {took:.1f} s after dockerd answered, "
          f"{time.monotonic() - made:.1f} s after the endpoints were made")
    assert "running" not in lab.inspect("once1")["State"]["Status"]
    assert all(client.ipam.handle_addresses(e) == [] for e in old.values())
    assert allocated(client) == 6  # 3 containers, both families (other3: IPv4 too)
    if how == "reboot":
        assert "IpamDriver.ReleaseAddress failed" in lab.plugin_log_since_start()
        assert "Docker has no such endpoint" in lab.plugin_log_since_start()

    always = addresses_of(lab, "always1", S1)
    for v in (4, 6):
        assert lab.ping("peer1", always[v]) and lab.ping("always1", lab.address(
            "peer1", S1, v6=v == 6)), lab.diagnostics()
        assert not reaches(lab, "other3", always[v]), lab.diagnostics()
    assert "169.254.1.1 dev eth0" in lab.exec("always1", "ip", "-4", "route").stdout


def test_sync_frees_an_endpoint_docker_forgot(lab: DockerLab,
                                              client: calico_lib.Client) -> None:
    """An endpoint record Docker no longer has kept its address in its network's set on
    every host; the container later given that address was let in as a member of the
    old network. Two networks on one pool: the old one's stale endpoint holds X."""
    old, new = "calnet-old", "calnet-new"
    subnet = SUBNETS[S3][0]
    lab.network(old, "--subnet", subnet)
    lab.network(new, "--subnet", subnet)
    try:
        lab.run("oldpeer", old, command=SERVE)
        lab.run("newpeer", new, command=SERVE)
        x = str(netaddr.IPNetwork(subnet)[200])
        # made just now: the sync leaves it alone for SYNC_GRACE seconds
        made = time.monotonic()
        leaked, _ = leak(lab, client, old, address=x)
        # the address is taken: Docker cannot give it out
        assert lab.run("newx", new, "--ip", x, check=False).returncode != 0
        lab.docker("rm", "-f", "newx", check=False)
        lab.agent_once()  # as every host's agent would: X is a member of the old network
        assert client.ipam.handle_addresses(leaked) == [x]

        wait_until(lambda: client.ipam.handle_addresses(leaked) == [],
                   SYNC_GRACE + SYNC_INTERVAL + 5, "the stale endpoint freed")
        took = time.monotonic() - made
        print(f"stale endpoint freed {took:.1f} s after it was written")
        assert took >= SYNC_GRACE - 1  # not before its grace (whole seconds are stored)
        assert leaked not in {e.id for e in client.list_endpoints(lab.hostname)}
        assert client.ipam.check() == []
        lab.run("newx", new, "--ip", x, command=SERVE)
        assert lab.address("newx", new) == x
        oldpeer, newpeer = lab.address("oldpeer", old), lab.address("newpeer", new)
        assert lab.tcp("newx", newpeer, 80) and lab.tcp("newpeer", x, 80), lab.diagnostics()
        assert not lab.tcp("newx", oldpeer, 80), lab.diagnostics()  # not the old network's
        assert not lab.tcp("oldpeer", x, 80), lab.diagnostics()
    finally:
        lab.rm_all()
        lab.docker("network", "rm", old, new, check=False)


def test_sync_changes_nothing_while_docker_errs(lab: DockerLab,
                                               client: calico_lib.Client) -> None:
    """Docker answering 500 (one network) or 503 (the list) must not read as "no
    endpoints": the sync retries and changes nothing until Docker answers everything."""
    lab.run("live1", NET_A)
    lab.run("live2", NET_A)
    live = {name: lab.endpoint_id(name, NET_A) for name in ("live1", "live2")}
    net_a = lab.network_id(NET_A)
    with dockerlab.FaultyDocker(lab.docker_socket, {f"/networks/{net_a}": 500}) as proxy:
        lab.restart_plugin(docker_socket=proxy.path)
        try:
            leaked, _ = leak(lab, client, NET_A, age=3600)  # what a sync would free
            before = datastore(client)
            for faults in ({f"/networks/{net_a}": 500}, {"/networks": 503}):
                proxy.faults = dict(faults)
                goal = lab.plugin_log_since_start().count("syncing with Docker:") + 3
                wait_until(lambda goal=goal: lab.plugin_log_since_start().count(
                    "syncing with Docker:") >= goal, 15, "three failed passes")
                [path] = faults
                text = lab.plugin_log_since_start()
                assert f"GET {path}: HTTP {faults[path]}" in text, lab.tail("plugin.log")
                assert "nothing was changed" in text
                assert datastore(client) == before
            proxy.faults = {}  # Docker answers again: the leak goes, nothing else
            wait_until(lambda: client.ipam.handle_addresses(leaked) == [],
                       SYNC_INTERVAL + 5, "the leak freed once Docker answers")
        finally:
            lab.restart_plugin()
    assert all(client.ipam.handle_addresses(e) != [] for e in live.values())
    assert client.ipam.check() == []
    assert lab.ping("live1", lab.address("live2", NET_A)), lab.diagnostics()


def test_lab_leaves_no_pending_addresses(lab: DockerLab, client: calico_lib.Client) -> None:
    """After all of the above (containers removed by ``clean``): nothing is held."""
    lab.rm_all()
    assert allocated(client) == 0
    assert client.ipam.check() == []
    assert client.list_endpoints(lab.hostname) == []


def test_plugin_logged_no_internal_error(lab: DockerLab) -> None:
    text = lab.log("plugin.log")
    assert "Traceback" not in text and " crashed" not in text, lab.tail("plugin.log", 80)
