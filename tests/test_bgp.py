"""BGP with real BIRD 2 in network namespaces: real sessions, real routes, real packets.

Every test builds its own lab (``tests.netns``): a "fabric" namespace with a bridge
(198.18.0.254/24, 2001:db8:ff::fe/64) and host namespaces joined to it by a veth each
(198.18.0.N/24, 2001:db8:ff::N/64). All hosts share one SQLite datastore file in
``tmp_path``. Each host runs ``python -m calico_lib.agent --once`` in its namespace with
``--bird-config``/``--bird-socket`` in the lab's temporary directory (nothing is ever written
to /etc/bird or /run/bird), then its own BIRD started on that config:
``ip netns exec H bird -c H.conf -s H.ctl -P H.pid``. Cleanup (in ``finally``) kills every
BIRD by its pid file, then deletes the namespaces.

The hosts' default routes point at the fabric namespace, which does not forward: a container
on one host reaches a container on another only through routes BGP installed.

Needs root, iproute2, iptables, ipset, ping and bird2.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import calico_lib
from calico_lib import BGPPeer, Endpoint, IPPool, Node
from tests import netns
from tests.netns import OUTSIDE4, OUTSIDE6, REPO_ROOT, Container, Host, Lab

POOL4 = "10.65.0.0/16"
POOL6 = "fd00:65::/64"
TOR_AS = 65000
TOR_PASSWORD = "tor-md5-s3cret"
ESTABLISHED_TIMEOUT = 20.0
ROUTE_TIMEOUT = 10.0

T = TypeVar("T")

pytestmark = pytest.mark.netns


def wait_for(what: str, probe: Callable[[], T], timeout: float,
             diagnostics: Callable[[], str] = lambda: "") -> T:
    """Poll ``probe`` until it returns something truthy; fail with diagnostics at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                                 f"{diagnostics()}")
        time.sleep(0.1)


class Fabric:
    """A lab whose hosts run calico-agent and BIRD, sharing one SQLite datastore."""

    def __init__(self, lab: Lab, client: calico_lib.Client, url: str) -> None:
        self.lab = lab
        self.client = client
        self.url = url
        self.dir = Path(lab.workdir)

    # ------------------------------------------------------------------ hosts

    def host(self, name: str, as_number: int | None = None,
             rr_cluster_id: str | None = None, segment: int = 0,
             subnets: bool = False) -> Host:
        """A host on the lab's segment ``segment`` (``netns.Lab.host``), registered as a
        node; with ``subnets`` its record gives its subnets too."""
        host = self.lab.host(name, segment)
        self.client.add_node(Node(name, host.ipv4, host.ipv6, as_number=as_number,
                                  rr_cluster_id=rr_cluster_id,
                                  ipv4_subnet=host.subnet4 if subnets else None,
                                  ipv6_subnet=host.subnet6 if subnets else None))
        return host

    def conf(self, host: Host) -> Path:
        return self.dir / f"{host.name}.conf"

    def sock(self, host: Host) -> Path:
        return self.dir / f"{host.name}.ctl"

    def pidfile(self, host: Host) -> Path:
        return self.dir / f"{host.name}.pid"

    def agent(self, host: Host) -> str:
        """``calico_lib.agent --once`` in the host's namespace, BIRD files in the lab dir."""
        return self.lab.agent(host, self.url, None, "--bird-config", str(self.conf(host)),
                              "--bird-socket", str(self.sock(host)))

    def workload(self, host: Host, name: str, ipv4: list[str], ipv6: list[str]) -> Container:
        """A container behind a cali veth, registered with its addresses assigned in IPAM."""
        ctr = self.lab.container(host, name, ipv4=ipv4, ipv6=ipv6)
        self.client.add_endpoint(Endpoint(id=ctr.id, host=host.name, interface=ctr.interface,
                                          mac=ctr.mac, ipv4_nets=ipv4, ipv6_nets=ipv6,
                                          profiles=["web"]), assign_addresses=True)
        return ctr

    # ------------------------------------------------------------------ BIRD

    def start(self, host: Host) -> None:
        """The host's BIRD on the config the agent wrote (stopped with the lab)."""
        assert self.conf(host).exists(), "the agent writes the config before BIRD starts"
        self.lab.start_bird(host.ns, self.conf(host), self.sock(host), self.pidfile(host))

    def birdc(self, sock: Path, *args: str) -> str:
        proc = subprocess.run(["birdc", "-s", str(sock), *args], capture_output=True,
                              text=True, timeout=15)
        return proc.stdout

    # ------------------------------------------------------------------ observations

    def status(self, host: Host, *extra: str) -> subprocess.CompletedProcess[str]:
        """``calicoctl node status --bird-socket`` for ``host`` (as a module, like the CLI)."""
        env = dict(os.environ, PYTHONPATH=REPO_ROOT)
        return subprocess.run([sys.executable, "-m", "calico_lib.cli", "node", "status",
                               "--bird-socket", str(self.sock(host)), *extra],
                              capture_output=True, text=True, timeout=30, env=env)

    def sessions(self, host: Host) -> list[dict[str, Any]]:
        proc = self.status(host, "-o", "json")
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout)

    def established(self, host: Host) -> bool:
        sessions = self.sessions(host)
        return bool(sessions) and all(s["info"].startswith("Established") for s in sessions)

    def wait_established(self, *hosts: Host) -> None:
        for host in hosts:
            wait_for(f"every BGP session of {host.name} to be Established",
                     lambda host=host: self.established(host), ESTABLISHED_TIMEOUT,
                     lambda host=host: self.diagnostics(host))

    def route(self, host: Host | str, prefix: str) -> dict[str, Any] | None:
        """The kernel's route to exactly ``prefix`` in the host's main table, or None."""
        ns = host.ns if isinstance(host, Host) else host
        family = "-6" if ":" in prefix else "-4"
        out = self.lab.ip(ns, "-j", family, "route", "show", "exact", prefix)
        routes = json.loads(out) if out.strip() else []
        return routes[0] if routes else None

    def wait_route(self, host: Host, prefix: str, via: str) -> dict[str, Any]:
        """Wait for ``prefix`` via ``via`` installed by BIRD in ``host``'s kernel."""
        def probe() -> dict[str, Any] | None:
            route = self.route(host, prefix)
            if route and route.get("gateway") == via and route.get("protocol") == "bird":
                return route
            return None
        return wait_for(f"{prefix} via {via} (proto bird) on {host.name}", probe,
                        ROUTE_TIMEOUT, lambda: self.diagnostics(host))

    def wait_no_route(self, host: Host, prefix: str) -> None:
        wait_for(f"{prefix} withdrawn on {host.name}", lambda: self.route(host, prefix) is None,
                 ROUTE_TIMEOUT, lambda: self.diagnostics(host))

    def diagnostics(self, host: Host) -> str:
        return "\n".join([
            f"----- birdc show protocols ({host.name})",
            self.birdc(self.sock(host), "show", "protocols").rstrip(),
            f"----- birdc show route ({host.name})",
            self.birdc(self.sock(host), "show", "route").rstrip(),
            f"----- ip route ({host.name})", self.lab.routes(host.ns).rstrip(),
            f"----- ip -6 route ({host.name})", self.lab.routes(host.ns, True).rstrip()])


@pytest.fixture
def fabric(lab: Lab, tmp_path: Path) -> Iterator[Fabric]:
    netns.require("bird", "birdc")
    url = "sqlite:///" + str((tmp_path / "calico.db").resolve())
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool(POOL4, block_size=26))
        client.add_pool(IPPool(POOL6, block_size=122))
        client.add_profile("web")
        yield Fabric(lab, client, url)


def net(address: str, prefix: int) -> str:
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


# ------------------------------------------------------------------------------ tests


def test_mesh_sessions_routes_borrowed_withdrawal_and_packets(fabric: Fabric) -> None:
    a, b, c = (fabric.host(name) for name in ("host-a", "host-b", "host-c"))
    # host-a's endpoint claims 10.65.1.0/26 and fd00:65::1:0/122 for host-a
    ctr_a = fabric.workload(a, "ctr-a", ["10.65.1.10"], ["fd00:65::1:10"])
    ctr_c = fabric.workload(c, "ctr-c", ["10.65.3.10"], ["fd00:65::3:10"])
    # host-b borrows addresses inside host-a's blocks
    fabric.client.ipam.assign_ip("10.65.1.20", "borrowed", b.name)
    fabric.client.ipam.assign_ip("fd00:65::1:20", "borrowed", b.name)
    ctr_b = fabric.lab.container(b, "ctr-b", ipv4=["10.65.1.20"], ipv6=["fd00:65::1:20"])
    fabric.client.add_endpoint(Endpoint(id="borrowed", host=b.name, interface=ctr_b.interface,
                                        mac=ctr_b.mac, ipv4_nets=ctr_b.ipv4,
                                        ipv6_nets=ctr_b.ipv6, profiles=["web"]))
    block_a4, block_a6 = "10.65.1.0/26", "fd00:65::1:0/122"
    block_c4, block_c6 = "10.65.3.0/26", "fd00:65::3:0/122"
    for host in (a, b, c):
        fabric.agent(host)
    assert "route 10.65.1.0/26 blackhole;" in fabric.conf(a).read_text()
    assert "route 10.65.1.20/32 blackhole;" in fabric.conf(b).read_text()
    assert "route fd00:65::1:20/128 blackhole;" in fabric.conf(b).read_text()

    # Local routes and proxy ARP are in place, but no BGP yet: host-c is out of reach.
    assert not fabric.lab.ping(ctr_a.ns, ctr_c.ipv4[0], count=1, wait=0.5)

    fabric.start(a)
    fabric.start(b)
    wait_for("host-a's session with host-b", lambda: all(
        s["info"].startswith("Established") for s in fabric.sessions(a)
        if s["peer"] in (b.ipv4, b.ipv6)), ESTABLISHED_TIMEOUT, lambda: fabric.diagnostics(a))
    down = fabric.status(a)
    assert down.returncode == 1, down.stdout + down.stderr  # host-c's BIRD is not running
    assert {s["peer"] for s in fabric.sessions(a)
            if not s["info"].startswith("Established")} == {c.ipv4, c.ipv6}

    fabric.start(c)
    fabric.wait_established(a, b, c)
    for host in (a, b, c):
        table = fabric.status(host)
        assert table.returncode == 0, table.stdout + table.stderr
        rows = fabric.sessions(host)
        assert len(rows) == 4 and {r["type"] for r in rows} == {"mesh"}
        others = {x for h in (a, b, c) if h is not host for x in (h.ipv4, h.ipv6)}
        assert {r["peer"] for r in rows} == others
        for other in others:
            assert other in table.stdout

    # host-a's block aggregates on host-b and host-c, via host-a, put there by BIRD
    for host in (b, c):
        fabric.wait_route(host, block_a4, a.ipv4)
        fabric.wait_route(host, block_a6, a.ipv6)
    for host in (a, b):
        fabric.wait_route(host, block_c4, c.ipv4)
        fabric.wait_route(host, block_c6, c.ipv6)
    # the borrowed addresses as host routes via host-b (more specific than host-a's block)
    for host in (a, c):
        fabric.wait_route(host, "10.65.1.20/32", b.ipv4)
        fabric.wait_route(host, "fd00:65::1:20/128", b.ipv6)
    # nobody sends a host its own block: its kernel holds the agent's blackhole for it
    own = fabric.route(a, block_a4)
    assert own is not None and own["type"] == "blackhole" and own["protocol"] == "80"

    # Packets, across routes only BGP installed.
    for src, dst in ((ctr_a, ctr_c), (ctr_c, ctr_a), (ctr_c, ctr_b), (ctr_a, ctr_b)):
        for addr in dst.addresses:
            assert fabric.lab.ping(src.ns, addr), \
                f"{src.name} -> {dst.name} {addr}\n{fabric.diagnostics(src.host)}"

    # Withdrawal: the endpoint and host-a's claims go; host-a reconciles.
    fabric.client.remove_endpoint(a.name, ctr_a.id, release_addresses=True)
    fabric.client.ipam.release_host_affinities(a.name)
    fabric.agent(a)
    assert "10.65.1.0/26" not in fabric.conf(a).read_text()
    for host in (b, c):
        fabric.wait_no_route(host, block_a4)
        fabric.wait_no_route(host, block_a6)
    # host-b still owns its borrowed addresses; host-c's block is untouched
    assert fabric.route(c, "10.65.1.20/32") is not None
    assert fabric.route(c, "fd00:65::1:20/128") is not None
    assert fabric.route(b, block_c4) is not None
    assert fabric.lab.ping(ctr_c.ns, ctr_b.ipv4[0])


def test_route_reflector_reflects_between_clients(fabric: Fabric) -> None:
    fabric.client.set_bgp_config(node_to_node_mesh=False)
    rr = fabric.host("rr", rr_cluster_id="1.0.0.1")
    c1, c2 = fabric.host("client-1"), fabric.host("client-2")
    fabric.workload(c1, "ctr-1", ["10.65.2.10"], ["fd00:65::2:10"])
    fabric.workload(c2, "ctr-2", ["10.65.3.10"], ["fd00:65::3:10"])
    for host in (rr, c1, c2):
        fabric.agent(host)
        fabric.start(host)

    reflector = fabric.conf(rr).read_text()
    assert reflector.count("rr cluster id 1.0.0.1;") == 4  # both clients, v4 and v6
    assert reflector.count("rr client;") == 4
    assert "rr " not in fabric.conf(c1).read_text()

    fabric.wait_established(rr, c1, c2)
    assert {s["peer"] for s in fabric.sessions(rr)} == {c1.ipv4, c1.ipv6, c2.ipv4, c2.ipv6}
    for client, other in ((c1, c2), (c2, c1)):
        # a client peers with the reflector only ...
        assert {s["peer"] for s in fabric.sessions(client)} == {rr.ipv4, rr.ipv6}
        # ... and still learns the other client's blocks, with that client as next hop
        block = 2 if other is c1 else 3
        fabric.wait_route(client, f"10.65.{block}.0/26", other.ipv4)
        fabric.wait_route(client, f"fd00:65::{block}:0/122", other.ipv6)
    for prefix, via in (("10.65.2.0/26", c1.ipv4), ("10.65.3.0/26", c2.ipv4)):
        fabric.wait_route(rr, prefix, via)
    detail = fabric.birdc(fabric.sock(c2), "show", "route", "10.65.2.0/26", "all")
    assert "BGP.cluster_list: 1.0.0.1" in detail, detail  # it came through the reflector


TOR_CONF = """\
# A top-of-rack router: peers with every host, learns, announces nothing.
router id {router_id};
protocol device {{ }}
{sessions}
"""

TOR_SESSION = """\
protocol bgp {name} {{
  local {local} as {tor_as};
  neighbor {neighbor} as {host_as};
{password}  ipv{version} {{ import all; export none; }};
}}
"""


def test_global_peer_learns_pool_routes_only(fabric: Fabric) -> None:
    hosts = [fabric.host(name) for name in ("host-a", "host-b", "host-c")]
    a, b, c = hosts
    fabric.client.add_bgp_peer(BGPPeer(OUTSIDE4, TOR_AS, password=TOR_PASSWORD))
    fabric.client.add_bgp_peer(BGPPeer(OUTSIDE6, TOR_AS))
    fabric.workload(a, "ctr-a", ["10.65.1.10"], ["fd00:65::1:10"])
    fabric.workload(b, "ctr-b", ["10.65.2.10"], ["fd00:65::2:10"])
    fabric.client.ipam.assign_ip("10.65.1.30", "borrowed", c.name)  # inside host-a's block
    ctr_c = fabric.lab.container(c, "ctr-c", ipv4=["10.65.1.30", "192.168.77.5"])
    # an address outside every pool on host-c: routed locally, never advertised
    fabric.client.add_endpoint(Endpoint(id="borrowed", host=c.name, interface=ctr_c.interface,
                                        ipv4_nets=ctr_c.ipv4, profiles=["web"]))

    tor = fabric.lab.outside
    assert tor is not None
    sessions = []
    for host in hosts:
        for version, local, neighbor in ((4, OUTSIDE4, host.ipv4), (6, OUTSIDE6, host.ipv6)):
            sessions.append(TOR_SESSION.format(
                name=f"{host.name.replace('-', '_')}_v{version}", local=local,
                tor_as=TOR_AS, neighbor=neighbor, host_as=64512, version=version,
                password=f'  password "{TOR_PASSWORD}";\n' if version == 4 else ""))
    tor_files = [fabric.dir / f"tor.{ext}" for ext in ("conf", "ctl", "pid")]
    tor_files[0].write_text(TOR_CONF.format(router_id=OUTSIDE4, sessions="".join(sessions)))
    fabric.lab.start_bird(tor, *tor_files)
    for host in hosts:
        fabric.agent(host)
        fabric.start(host)

    fabric.wait_established(a, b, c)  # the mesh and the ToR (global) sessions
    for host in hosts:
        kinds = {(s["type"], s["peer"]) for s in fabric.sessions(host)}
        assert {("global", OUTSIDE4), ("global", OUTSIDE6)} <= kinds

    def tor_prefixes() -> set[str]:
        out = fabric.birdc(tor_files[1], "show", "route")
        return {line.split()[0] for line in out.splitlines()[1:]
                if line and not line[0].isspace() and "/" in line.split()[0]}

    wanted = {"10.65.1.0/26", "10.65.2.0/26", "10.65.1.30/32",
              "fd00:65::1:0/122", "fd00:65::2:0/122"}
    prefixes = wait_for("the ToR to learn the pool routes", lambda: (
        p if wanted <= (p := tor_prefixes()) else None), ROUTE_TIMEOUT,
        lambda: fabric.birdc(tor_files[1], "show", "route"))

    pools = [ipaddress.ip_network(POOL4), ipaddress.ip_network(POOL6)]
    outside = [p for p in prefixes if not any(
        ipaddress.ip_network(p).version == pool.version
        and ipaddress.ip_network(p).subnet_of(pool) for pool in pools)]  # type: ignore[arg-type]
    assert not outside, f"the ToR learned routes outside the pools: {outside}"
    # The hosts did hold routes outside the pools: connected networks, and host-c's
    # out-of-pool address, which BIRD on host-c originates but the export filter stops.
    host_c = fabric.birdc(fabric.sock(c), "show", "route")
    assert "198.18.0.0/24" in host_c and "192.168.77.5/32" in host_c, host_c
    assert "192.168.77.5/32" not in fabric.birdc(fabric.sock(a), "show", "route")
    # the MD5-protected IPv4 session is really up on the ToR side too
    tor_status = fabric.birdc(tor_files[1], "show", "protocols")
    assert tor_status.count("Established") == 6, tor_status


def test_reload_as_unprivileged_bird_and_refused_config(fabric: Fabric) -> None:
    """Debian's BIRD runs as user bird: a rewritten config is root:bird 0640 whatever the
    file it replaces was (0644 would show the MD5 passwords to every user; BIRD must still
    read it at `birdc configure`). A config BIRD refuses at `birdc configure` is taken back
    and the error raised; a BIRD that does not answer leaves the new config in place for
    its next start."""
    import pwd

    from calico_lib.dataplane.bird import BirdConfigError, apply_bird

    bird_user = pwd.getpwnam("bird")
    ns = fabric.lab.host("bird-user").ns
    workdir = Path(tempfile.mkdtemp(prefix="calt-bird-"))  # one that user bird may enter
    try:
        os.chown(workdir, bird_user.pw_uid, bird_user.pw_gid)
        workdir.chmod(0o750)
        conf, sock, pidfile = (workdir / f"bird.{ext}" for ext in ("conf", "ctl", "pid"))
        conf.write_text("router id 10.0.0.1;\nprotocol device { }\n")
        os.chown(conf, bird_user.pw_uid, bird_user.pw_gid)
        conf.chmod(0o644)  # as an earlier version could leave it: readable by everyone
        fabric.lab.start_bird(ns, conf, sock, pidfile, "-u", "bird", "-g", "bird")

        report = apply_bird("router id 10.0.0.2;\nprotocol device { }\n", str(conf), str(sock))
        assert report.reloaded, report.summary()
        st = conf.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, bird_user.pw_gid, 0o640)
        assert "Router ID is 10.0.0.2" in fabric.birdc(sock, "show", "status")

        # the folder becomes closed to BIRD: the next config is refused at `birdc
        # configure`, the running one is put back, and the reason is in the error
        os.chown(workdir, 0, 0)
        workdir.chmod(0o700)
        with pytest.raises(BirdConfigError, match="Permission denied"):
            apply_bird("router id 10.0.0.3;\nprotocol device { }\n", str(conf), str(sock))
        assert "10.0.0.2" in conf.read_text()
        assert "Router ID is 10.0.0.2" in fabric.birdc(sock, "show", "status")

        fabric.lab.stop_birds()
        sock.touch()  # a stale socket: nobody answers
        report = apply_bird("router id 10.0.0.4;\nprotocol device { }\n", str(conf), str(sock))
        assert report.written and not report.reloaded
        assert "did not answer" in report.note
        assert "10.0.0.4" in conf.read_text()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


ROGUE_CONF = """\
# A BGP speaker in a workload that tries to pass for its host (the second audit's attack).
router id {router_id};
protocol device {{ }}
protocol static {{
  ipv4;
  route 0.0.0.0/0 blackhole;
  route 203.0.113.0/24 blackhole;
  route {victim}/32 blackhole;
}}
protocol bgp hijack {{
  local as 64512;
  neighbor {peer} as 64512;
  graceful restart on;
  ipv4 {{ import none; export all; }};
}}
"""


def test_workload_cannot_take_over_its_hosts_bgp_session(fabric: Fabric) -> None:
    """Before: with a --nat-outgoing pool, a workload's connection to another node's port
    179 was masqueraded to its host's address, the peer's BIRD took it for the mesh
    neighbour (graceful restart let it replace the session), imported everything and
    installed a default route, a foreign prefix and a container's /32."""
    fabric.client.update_pool(POOL4, nat_outgoing=True)
    a, b = fabric.host("host-a"), fabric.host("host-b")
    rogue = fabric.workload(a, "rogue", ["10.65.1.10"], ["fd00:65::1:10"])
    victim = fabric.workload(b, "victim", ["10.65.2.10"], ["fd00:65::2:10"])
    for host in (a, b):
        fabric.agent(host)
        fabric.start(host)
    fabric.wait_established(a, b)
    fabric.wait_route(b, "10.65.1.0/26", a.ipv4)
    since = {s["name"]: s["since"] for s in fabric.sessions(b)}

    files = [fabric.dir / f"rogue.{ext}" for ext in ("conf", "ctl", "pid")]
    files[0].write_text(ROGUE_CONF.format(router_id=a.ipv4, peer=b.ipv4,
                                          victim=victim.ipv4[0]))
    fabric.lab.start_bird(rogue.ns, *files)
    time.sleep(8)  # BIRD retries a refused connection within a few seconds

    attempt = fabric.birdc(files[1], "show", "protocols", "all", "hijack")
    assert "Established" not in attempt, attempt
    for prefix in ("0.0.0.0/0", "203.0.113.0/24", f"{victim.ipv4[0]}/32"):
        route = fabric.route(b, prefix)
        assert route is None or route.get("protocol") != "bird", (prefix, route)
    # the real session never went down, and traffic between the hosts still flows
    assert fabric.established(b)
    assert {s["name"]: s["since"] for s in fabric.sessions(b)} == since
    fabric.wait_route(b, "10.65.1.0/26", a.ipv4)
    assert fabric.lab.ping(victim.ns, rogue.ipv4[0])
    # the workload never reached port 179 of its own host or the other one
    for host in (a, b):
        assert fabric.lab.connect(rogue.ns, host.ipv4, 179, timeout=1.0) is None


TOR_ANNOUNCING = """\
# A top-of-rack router that announces more than the nodes should take.
router id {router_id};
protocol device {{ }}
protocol static {{
  ipv4;
  route 0.0.0.0/0 blackhole;
  route 198.51.100.0/24 blackhole;
  route 203.0.113.0/24 blackhole;
  route 10.65.9.0/26 blackhole;
  route 10.65.0.0/16 blackhole;
}}
{sessions}
"""


def test_nodes_import_only_what_each_peer_may_send(fabric: Fabric) -> None:
    """Calico nodes take only the pools' blocks (and addresses inside them) from a peer,
    plus a default route and the nets it is configured to accept from a global peer."""
    a, b = fabric.host("host-a"), fabric.host("host-b")
    fabric.client.add_bgp_peer(BGPPeer(OUTSIDE4, TOR_AS, accept_default_route=True,
                                       accept_nets=["198.51.100.0/24"]))
    fabric.client.add_bgp_peer(BGPPeer(OUTSIDE4, TOR_AS, node=b.name))  # b: pools only
    fabric.client.remove_bgp_peer(OUTSIDE4)
    fabric.client.add_bgp_peer(BGPPeer(OUTSIDE4, TOR_AS, node=a.name,
                                       accept_default_route=True,
                                       accept_nets=["198.51.100.0/24"]))
    tor = fabric.lab.outside
    assert tor is not None
    sessions = "".join(
        "protocol bgp {n} {{\n  local {l} as {t};\n  neighbor {h} as 64512;\n"
        "  ipv4 {{ import all; export all; }};\n}}\n".format(
            n=host.name.replace("-", "_"), l=OUTSIDE4, t=TOR_AS, h=host.ipv4)
        for host in (a, b))
    files = [fabric.dir / f"tor.{ext}" for ext in ("conf", "ctl", "pid")]
    files[0].write_text(TOR_ANNOUNCING.format(router_id=OUTSIDE4, sessions=sessions))
    fabric.lab.start_bird(tor, *files)
    for host in (a, b):
        fabric.agent(host)
        fabric.start(host)
    fabric.wait_established(a, b)

    def from_bird(host: Host) -> set[str]:
        routes = json.loads(fabric.lab.ip(host.ns, "-j", "route", "show", "proto", "bird")
                            or "[]")
        return {r["dst"] for r in routes}

    # a block of the pools is taken from anyone; a default route and 198.51.100.0/24 only
    # from the peer configured to send them; a foreign prefix and the pool aggregate never
    wait_for("host-a's imports", lambda: from_bird(a) == {"default", "198.51.100.0/24",
                                                          "10.65.9.0/26"},
             ROUTE_TIMEOUT, lambda: fabric.diagnostics(a))
    wait_for("host-b's imports", lambda: from_bird(b) == {"10.65.9.0/26"},
             ROUTE_TIMEOUT, lambda: fabric.diagnostics(b))
