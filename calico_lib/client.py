"""The public Python API: one ``Client`` over a datastore, the layer calicoctl is built on.

    import calico_lib
    with calico_lib.connect("sqlite:////var/lib/calico/calico.db") as client:
        client.add_pool(calico_lib.IPPool("10.65.0.0/16", nat_outgoing=True))
        client.add_profile("frontend")
        addrs = client.ipam.auto_assign("host-1", "endpoint-1", num_ipv4=1)

Every write is one datastore transaction; bad input raises ``ValidationError`` before
anything is written.
"""

from __future__ import annotations

import time
from typing import Any

from . import keys, node_removal
from .datastore import Datastore, open_datastore
from .errors import (
    AlreadyExistsError,
    CalicoError,
    DatastoreError,
    InUseError,
    NotFoundError,
    ValidationError,
)
from .ipam import IPAM, Block, take_interface
from .model import (
    AgentConfig,
    BGPConfig,
    BGPPeer,
    Endpoint,
    IPPool,
    Node,
    Profile,
    Rule,
    parse_address,
    parse_network,
    show,
    validate_hostname,
    validate_name,
)
from .network_records import NAMING, network_names
from .node_removal import NodeHoldings
from .records import Reporter, Unreadable, check_records, decode, decode_all
from .snapshot import DOCKER_LABEL
from .txn import Tx, transact

DIRECTIONS = ("inbound", "outbound")
#: empty blocks deleted per transaction (etcd caps operations per transaction)
BLOCK_BATCH = 40
#: seconds between reads while a new Docker network's name is awaited
NAMING_POLL = 0.02


def connect(url: str | None = None, create: bool = True, etcd_ca: str | None = None,
            etcd_cert: str | None = None, etcd_key: str | None = None,
            etcd_user: str | None = None, etcd_password_file: str | None = None) -> Client:
    """Open a client on the datastore ``url`` (else $CALICO_DATASTORE, calico.conf, default),
    etcd's TLS files and credentials resolved the same way (etcds:// URLs).

    ``create=False`` for read-only use: a missing embedded store is an error, not created.
    """
    return Client(open_datastore(url, create=create, etcd_ca=etcd_ca, etcd_cert=etcd_cert,
                                 etcd_key=etcd_key, etcd_user=etcd_user,
                                 etcd_password_file=etcd_password_file))


class Client:
    def __init__(self, store: Datastore) -> None:
        self.store = store
        self.ipam = IPAM(store)
        self.records = Reporter()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- generic helpers

    def _get(self, key: str, cls: type, what: str) -> Any:
        kv = self.store.get(key)
        if kv is None:
            raise NotFoundError(f"{what}: not found")
        return decode(kv, cls)

    def _list(self, prefix: str, cls: type) -> list[Any]:
        """Every readable record under ``prefix``; unreadable ones are logged and left out
        (``calicoctl datastore check`` lists them)."""
        good, bad = decode_all(self.store.list(prefix), cls)
        self.records.report(bad)
        return good

    def _create(self, key: str, obj: Any, what: str) -> None:
        def write(tx: Tx) -> None:
            if tx.get(key) is not None:
                raise AlreadyExistsError(f"{what}: already exists")
            tx.put(key, obj.to_dict())
        transact(self.store, write)

    def _replace(self, key: str, obj: Any) -> bool:
        """Create or replace; True when something changed."""
        def write(tx: Tx) -> bool:
            if tx.get(key) == obj.to_dict():
                return False
            tx.put(key, obj.to_dict())
            return True
        return transact(self.store, write)

    def _remove(self, key: str, what: str) -> None:
        if not self.store.delete(key):
            raise NotFoundError(f"{what}: not found")

    # ---------------------------------------------------------------- pools

    def add_pool(self, pool: IPPool) -> IPPool:
        """Add a pool; overlapping an existing pool is refused."""
        pool = valid(pool, IPPool, "pool")
        def write(tx: Tx) -> IPPool:
            tx.guard(keys.POOLS_GUARD)
            for _, data in tx.list(keys.POOLS):
                other = IPPool.from_dict(data)
                if other.cidr == pool.cidr:
                    raise AlreadyExistsError(f"cidr: pool {pool.cidr} already exists")
                if other.version == pool.version and (
                        pool.network in other.network or other.network in pool.network):
                    raise ValidationError("cidr", f"{pool.cidr} overlaps pool {other.cidr}; "
                                                  "pools must not overlap")
            tx.put(keys.pool(pool.cidr), pool.to_dict())
            tx.put(keys.POOLS_GUARD, {"changed": pool.cidr})
            return pool
        return transact(self.store, write)

    def get_pool(self, cidr: str) -> IPPool:
        net = parse_network("cidr", cidr)
        return self._get(keys.pool(str(net)), IPPool, f"cidr: pool {net}")

    def list_pools(self) -> list[IPPool]:
        pools = self._list(keys.POOLS, IPPool)
        return sorted(pools, key=lambda p: (p.version, p.network))

    def update_pool(self, cidr: str, nat_outgoing: bool | None = None,
                    disabled: bool | None = None, vxlan_mode: str | None = None) -> IPPool:
        """Change a pool's flags and its ``vxlan_mode`` (its CIDR and block size are fixed
        once blocks exist); None leaves one as it is."""
        net = str(parse_network("cidr", cidr))

        def write(tx: Tx) -> IPPool:
            data = tx.get(keys.pool(net))
            if data is None:
                raise NotFoundError(f"cidr: pool {net} not found")
            if nat_outgoing is not None:
                data["nat_outgoing"] = nat_outgoing
            if disabled is not None:
                data["disabled"] = disabled
            if vxlan_mode is not None:
                data["vxlan_mode"] = vxlan_mode
            pool = IPPool.from_dict(data)
            tx.put(keys.pool(net), pool.to_dict())
            tx.put(keys.POOLS_GUARD, {"changed": net})
            return pool
        return transact(self.store, write)

    def remove_pool(self, cidr: str) -> None:
        """Remove a pool and its empty blocks; refused while addresses are assigned in it.

        The pool is disabled first (assignments guard on their pool, so none can race the
        removal), its empty blocks are deleted in batches, then the pool itself.
        """
        net = parse_network("cidr", cidr)
        pool = self.get_pool(str(net))
        self._refuse_if_used(net)  # read-only first: a refused removal writes nothing
        if not pool.disabled:
            self.update_pool(pool.cidr, disabled=True)
        try:
            while True:
                def clean(tx: Tx) -> int:
                    empty = []
                    for key, data in tx.list(keys.BLOCKS):
                        block = Block.load(data)
                        if block.network not in net:
                            continue
                        if block.allocations:
                            raise InUseError(f"cidr: pool {net} still has addresses assigned "
                                             f"(block {block.cidr}); release them first")
                        empty.append((key, block))
                    for key, block in empty[:BLOCK_BATCH]:
                        tx.guard(key)
                        tx.delete(key)
                        if block.affinity:
                            tx.delete(keys.affinity(block.affinity, block.cidr))
                    return len(empty)
                if not transact(self.store, clean):
                    break
        except CalicoError:  # in use, or the datastore failed: the pool as it was
            if not pool.disabled:
                try:
                    self.update_pool(pool.cidr, disabled=False)
                except CalicoError:
                    pass  # the first error is the one to report
            raise

        def drop(tx: Tx) -> None:
            if tx.get(keys.pool(str(net))) is None:
                raise NotFoundError(f"cidr: pool {net} not found")
            tx.delete(keys.pool(str(net)))
            tx.put(keys.POOLS_GUARD, {"changed": str(net)})
        transact(self.store, drop)

    def _refuse_if_used(self, net: Any) -> None:
        for block in self.ipam.blocks():
            if block.network in net and block.allocations:
                raise InUseError(f"cidr: pool {net} still has addresses assigned (block "
                                 f"{block.cidr}); release them first")

    # ---------------------------------------------------------------- profiles and rules

    def add_profile(self, profile: Profile | str) -> Profile:
        """Add a profile; a bare name gets the default rules (members talk, outbound open)."""
        if isinstance(profile, str):
            profile = Profile.with_default_rules(profile)
        profile = valid(profile, Profile, "profile")
        self._create(keys.profile(profile.name), profile, f"profile {profile.name}")
        return profile

    def put_profile(self, profile: Profile) -> bool:
        """Create or replace a profile; True when it changed."""
        profile = valid(profile, Profile, "profile")
        return self._replace(keys.profile(profile.name), profile)

    def get_profile(self, name: str, stored_only: bool = False) -> Profile:
        """A profile; a Docker network's profile that has no record yet is its default
        (unless ``stored_only``), from the network's creation on."""
        validate_name("name", name)
        try:
            return self._get(keys.profile(name), Profile, f"profile {name}")
        except NotFoundError:
            if not stored_only and name in self._network_profile_names(wanted=name):
                return Profile.with_default_rules(name, docker_network=True)
            raise

    def list_profiles(self) -> list[Profile]:
        """Every profile, with the Docker networks' profiles that have no record yet."""
        stored = {p.name: p for p in self._list(keys.PROFILES, Profile)}
        for name in self._network_profile_names(wanted=True) - set(stored):
            stored[name] = Profile.with_default_rules(name, docker_network=True)
        return [stored[n] for n in sorted(stored)]

    def _network_profile_names(self, wanted: str | bool = False) -> set[str]:
        """The profiles of Docker networks: the ones their endpoints name, and the names of
        the networks the hosts' plugins recorded (a network's profile exists from its
        creation on; hosts write no profile).

        Docker tells the plugin a network's name only after CreateNetwork answered, and the
        plugin records it milliseconds later. So while a network created in the last
        ``NAMING`` seconds is unnamed, this waits for it (at most that long): for
        ``wanted``'s name when it is not found yet, or (True) for every such network."""
        endpoints = {p for e in self._list(keys.ENDPOINTS, Endpoint)
                     if DOCKER_LABEL in e.labels for p in e.profiles}
        deadline = time.monotonic() + NAMING
        while True:
            names, naming = network_names(self.store.list(keys.DOCKER_NETWORKS), time.time())
            names |= endpoints
            found = wanted is False or (isinstance(wanted, str) and wanted in names)
            if found or not naming or time.monotonic() >= deadline:
                return names
            time.sleep(NAMING_POLL)

    def remove_profile(self, name: str, force: bool = False) -> None:
        """Remove a profile; refused while endpoints use it (their traffic would all be
        dropped, and the next container of its network would recreate it with the default
        rules) unless ``force``."""
        validate_name("name", name)
        if not force:
            users = [e for e in self.list_endpoints() if name in e.profiles]
            if users:
                shown = ", ".join(f"{e.id[:12]} on {e.host}" for e in users[:5])
                more = f" and {len(users) - 5} more" if len(users) > 5 else ""
                raise InUseError(f"name: profile {name} is used by endpoint(s) {shown}{more}; "
                                 "remove them first or force the removal")
        self._remove(keys.profile(name), f"profile {name}")

    def add_rule(self, profile: str, direction: str, rule: Rule,
                 position: int | None = None) -> Profile:
        """Insert ``rule`` at 0-based ``position`` (default: append) of a rule list."""
        attr = _direction(direction)
        rule = valid(rule, Rule, "rule")
        if position is not None and (isinstance(position, bool)
                                     or not isinstance(position, int)):
            raise ValidationError("position", f"{show(position)} is not allowed; use a "
                                              "number")

        network = self._network_profile(profile)

        def write(tx: Tx) -> Profile:
            current = self._tx_profile(tx, profile, network)
            rules = getattr(current, attr)
            if position is not None and not 0 <= position <= len(rules):
                raise ValidationError("position", f"{position} is out of range; use 0-"
                                                  f"{len(rules)}")
            rules.insert(len(rules) if position is None else position, rule)
            tx.put(keys.profile(profile), current.to_dict())
            return current
        return transact(self.store, write)

    def remove_rule(self, profile: str, direction: str, index: int) -> Profile:
        """Remove the rule at 0-based ``index`` of a rule list."""
        attr = _direction(direction)
        network = self._network_profile(profile)

        def write(tx: Tx) -> Profile:
            current = self._tx_profile(tx, profile, network)
            rules = getattr(current, attr)
            if not 0 <= index < len(rules):
                raise ValidationError("index", f"{index} is out of range; the profile has "
                                               f"{len(rules)} {direction} rule(s)")
            del rules[index]
            tx.put(keys.profile(profile), current.to_dict())
            return current
        return transact(self.store, write)

    def _network_profile(self, name: str) -> bool:
        """Before editing profile ``name``: whether, having no record, it is a Docker
        network's (see ``_network_profile_names``: a network created a moment ago is given
        the time to be named)."""
        validate_name("profile", name)
        if self.store.get(keys.profile(name)) is not None:
            return False
        return name in self._network_profile_names(wanted=name)

    def _tx_profile(self, tx: Tx, name: str, network: bool) -> Profile:
        """The profile to edit; a Docker network's profile without a record (``network``,
        or endpoints name it) starts from its default rules (editing it is the operator's
        explicit act: the record is the operator's write, never a host's)."""
        validate_name("profile", name)
        data = tx.get(keys.profile(name))
        if data is not None:
            return Profile.from_dict(data)
        if network:
            return Profile.with_default_rules(name, docker_network=True)
        for _, record in tx.list(keys.ENDPOINTS):
            if (isinstance(record, dict) and DOCKER_LABEL in (record.get("labels") or {})
                    and name in (record.get("profiles") or [])):
                return Profile.with_default_rules(name, docker_network=True)
        raise NotFoundError(f"profile {name}: not found")

    # ---------------------------------------------------------------- nodes and BGP

    def add_node(self, node: Node) -> Node:
        """Add a node; its BGP addresses must be its own (BIRD refuses two peers on one)."""
        node = valid(node, Node, "node")
        def write(tx: Tx) -> Node:
            if tx.get(keys.node(node.name)) is not None:
                raise AlreadyExistsError(f"node {node.name}: already exists")
            self._put_node(tx, node)
            return node
        return transact(self.store, write)

    def put_node(self, node: Node) -> bool:
        """Create or replace a node; True when it changed."""
        node = valid(node, Node, "node")
        def write(tx: Tx) -> bool:
            if tx.get(keys.node(node.name)) == node.to_dict():
                return False
            self._put_node(tx, node)
            return True
        return transact(self.store, write)

    def update_node(self, name: str, **changes: Any) -> Node:
        """Change some fields of an existing node (a field given None is cleared), keeping
        the others and the node's own BGP peers, e.g. ``update_node("host-1",
        ipv4_subnet="10.0.0.0/24")``; checked whole, like a new record."""
        validate_hostname("name", name)
        if "name" in changes:
            raise ValidationError("name", "a node keeps its name; add a node of the new "
                                          "name and remove this one")

        def write(tx: Tx) -> Node:
            data = tx.get(keys.node(name))
            if data is None:
                raise NotFoundError(f"node {name}: not found")
            node = Node.from_dict({**data, **changes})
            self._put_node(tx, node)
            return node
        return transact(self.store, write)

    def _put_node(self, tx: Tx, node: Node) -> None:
        # Every node write rewrites the guard, so two nodes written at once with one
        # address cannot both pass the check.
        tx.guard(keys.NODES_GUARD)
        for key, data in tx.list(keys.NODES):
            if key == keys.node(node.name):
                continue
            other = data.get("name") if isinstance(data, dict) else None
            for field_name in ("ipv4", "ipv6"):
                address = getattr(node, field_name)
                if address and isinstance(data, dict) and data.get(field_name) == address:
                    raise ValidationError(field_name, f"{address} is already node {other}'s "
                                                      "BGP address; every node needs its own")
        tx.put(keys.node(node.name), node.to_dict())
        tx.put(keys.NODES_GUARD, {"changed": node.name})

    def get_node(self, name: str) -> Node:
        validate_hostname("name", name)
        return self._get(keys.node(name), Node, f"node {name}")

    def list_nodes(self) -> list[Node]:
        return self._list(keys.NODES, Node)

    def node_holdings(self, name: str) -> NodeHoldings:
        """What ``remove_node`` would remove (``calico_lib.node_removal``)."""
        return node_removal.holdings(self.store, name)

    def remove_node(self, name: str) -> NodeHoldings:
        """Remove a host from the cluster, as Calico's ``calicoctl delete node``: its
        endpoints, the addresses they and its pending and tunnel handles hold, its block
        claims, Docker network records and interface index, then its node record and own
        BGP peers (last: an interrupted removal is finished by running it again). Stop the
        host's daemons first. Returns what was removed."""
        return node_removal.remove(self.store, name)

    def get_bgp_config(self) -> BGPConfig:
        return self._setting(keys.BGP_CONFIG, BGPConfig)

    def set_bgp_config(self, as_number: int | None = None,
                       node_to_node_mesh: bool | None = None) -> BGPConfig:
        def write(tx: Tx) -> BGPConfig:
            data = _readable(tx, keys.BGP_CONFIG, BGPConfig)
            if as_number is not None:
                data["as_number"] = as_number
            if node_to_node_mesh is not None:
                data["node_to_node_mesh"] = node_to_node_mesh
            config = BGPConfig.from_dict(data)
            tx.put(keys.BGP_CONFIG, config.to_dict())
            return config
        return transact(self.store, write)

    def add_bgp_peer(self, peer: BGPPeer) -> BGPPeer:
        """Add a peer of every node, or (``peer.node``) of one existing node."""
        peer = valid(peer, BGPPeer, "peer")
        def write(tx: Tx) -> BGPPeer:
            if peer.node is not None and tx.get(keys.node(peer.node)) is None:
                raise NotFoundError(f"node {peer.node}: not found; add the node first")
            if tx.get(keys.peer(peer.address, peer.node)) is not None:
                scope = f"node {peer.node}" if peer.node else "global"
                raise AlreadyExistsError(f"address: {scope} BGP peer {peer.address} "
                                         "already exists")
            tx.put(keys.peer(peer.address, peer.node), peer.to_dict())
            return peer
        return transact(self.store, write)

    def put_bgp_peer(self, peer: BGPPeer) -> bool:
        """Create or replace a peer (its node must exist); True when it changed."""
        peer = valid(peer, BGPPeer, "peer")
        def write(tx: Tx) -> bool:
            if peer.node is not None and tx.get(keys.node(peer.node)) is None:
                raise NotFoundError(f"node {peer.node}: not found; add the node first")
            key = keys.peer(peer.address, peer.node)
            if tx.get(key) == peer.to_dict():
                return False
            tx.put(key, peer.to_dict())
            return True
        return transact(self.store, write)

    def remove_bgp_peer(self, address: str, node: str | None = None) -> None:
        addr = str(parse_address("address", address))
        if node is not None:
            validate_hostname("node", node)
        scope = f"node {node}" if node else "global"
        self._remove(keys.peer(addr, node), f"{scope} BGP peer {addr}")

    def list_bgp_peers(self, node: str | None = None) -> list[BGPPeer]:
        """Global peers, plus every node's own peers (or just ``node``'s)."""
        peers = self._list(keys.GLOBAL_PEERS, BGPPeer)
        if node is None:
            return peers + self._list(keys.NODE_PEERS, BGPPeer)
        validate_hostname("node", node)
        return peers + self._list(f"{keys.NODE_PEERS}{node}/", BGPPeer)

    # ---------------------------------------------------------------- endpoints

    def add_endpoint(self, endpoint: Endpoint, assign_addresses: bool = False) -> Endpoint:
        """Record an endpoint; with ``assign_addresses`` its addresses are first assigned
        in IPAM under the endpoint id (they must lie in a pool and be free). Its interface
        must not be another endpoint's on the same host."""
        endpoint = valid(endpoint, Endpoint, "endpoint")
        key = keys.endpoint(endpoint.host, endpoint.id)
        what = f"endpoint {endpoint.id} on {endpoint.host}"

        def create(tx: Tx) -> None:  # the interface is taken in the same transaction
            if tx.get(key) is not None:
                raise AlreadyExistsError(f"{what}: already exists")
            take_interface(tx, endpoint, rebuild=True)
            tx.put(key, endpoint.to_dict())

        if self.store.get(key) is not None:
            raise AlreadyExistsError(f"{what}: already exists")
        if not assign_addresses:
            transact(self.store, create)
            return endpoint
        held = set(self.ipam.handle_addresses(endpoint.id))  # assigned for it beforehand
        assigned: list[str] = []
        try:
            for address in endpoint.addresses:
                if address not in held:
                    assigned.append(self.ipam.assign_ip(address, endpoint.id, endpoint.host))
            transact(self.store, create)
        except BaseException:
            self.ipam.release_ips(assigned)  # undo: nothing is left half-applied
            raise
        return endpoint

    def put_endpoint(self, endpoint: Endpoint) -> bool:
        """Create or replace an endpoint; True when it changed. Its interface must not be
        another endpoint's on the same host (AlreadyExistsError), checked in the same
        transaction as the write (see ``ipam.take_interface``)."""
        endpoint = valid(endpoint, Endpoint, "endpoint")
        key = keys.endpoint(endpoint.host, endpoint.id)

        def write(tx: Tx) -> bool:
            if tx.get(key) == endpoint.to_dict():
                return False
            take_interface(tx, endpoint, rebuild=True)
            tx.put(key, endpoint.to_dict())
            return True
        return transact(self.store, write)

    def get_endpoint(self, host: str, endpoint_id: str) -> Endpoint:
        validate_hostname("host", host)
        validate_name("id", endpoint_id)
        return self._get(keys.endpoint(host, endpoint_id), Endpoint,
                         f"endpoint {endpoint_id} on {host}")

    def list_endpoints(self, host: str | None = None) -> list[Endpoint]:
        if host is None:
            return self._list(keys.ENDPOINTS, Endpoint)
        validate_hostname("host", host)
        return self._list(keys.endpoints(host), Endpoint)

    def remove_endpoint(self, host: str, endpoint_id: str,
                        release_addresses: bool = False) -> None:
        """Remove an endpoint; with ``release_addresses`` also free its IPAM handle."""
        validate_hostname("host", host)
        validate_name("id", endpoint_id)
        self._remove(keys.endpoint(host, endpoint_id), f"endpoint {endpoint_id} on {host}")
        if release_addresses:
            self.ipam.release_handle(endpoint_id)

    # ---------------------------------------------------------------- agent settings

    def get_agent_config(self) -> AgentConfig:
        return self._setting(keys.AGENT_CONFIG, AgentConfig)

    def set_agent_config(self, default_endpoint_to_host_action: str | None = None
                         ) -> AgentConfig:
        def write(tx: Tx) -> AgentConfig:
            data = _readable(tx, keys.AGENT_CONFIG, AgentConfig)
            if default_endpoint_to_host_action is not None:
                data["default_endpoint_to_host_action"] = default_endpoint_to_host_action
            config = AgentConfig.from_dict(data)
            tx.put(keys.AGENT_CONFIG, config.to_dict())
            return config
        return transact(self.store, write)

    def _setting(self, key: str, cls: type) -> Any:
        """A settings record, or its defaults when it is absent or unreadable (as every
        host's agent reads it; the unreadable record is logged)."""
        kv = self.store.get(key)
        if kv is None:
            return cls()
        good, bad = decode_all([kv], cls)
        self.records.report(bad)
        return good[0] if good else cls()

    # ---------------------------------------------------------------- observing

    def explain(self, source: str, destination: str, protocol: str | int | None = None,
                port: int | None = None, **packet: Any) -> Any:
        """Would the first packet from ``source`` to ``destination`` (addresses or
        endpoint ids) pass, and which rule decides? An ``explain.Explanation``; ``packet``
        takes ``src_port``, ``icmp_type``, ``icmp_code`` and ``ip_version``."""
        from .explain import explain

        return explain(self.store, source, destination, protocol, port, **packet)

    def profile_counters(self, name: str, hostname: str) -> Any:
        """Packets and bytes per rule of profile ``name`` in this host's kernel (its
        name is ``hostname``): a ``counters.ProfileCounters``."""
        from .counters import profile_counters

        return profile_counters(self.store, hostname, name)

    # ---------------------------------------------------------------- checks

    def check_records(self) -> list[Unreadable]:
        """Every record (pools, profiles, nodes, peers, endpoints, settings) that readers
        skip because it cannot be read; IPAM records are checked by ``ipam.check``."""
        return check_records(self.store.list(keys.ROOT))


def valid(obj: Any, cls: type, field_name: str) -> Any:
    """``obj``, a ``cls``, checked whole again: a field may have been set after it was made
    (``profile.tags = ["db\n"]`` must not reach the store). Anything else is refused
    (``cls.from_dict`` reads a mapping)."""
    if not isinstance(obj, cls):
        raise ValidationError(field_name, f"{show(obj)} is not allowed; use a "
                                          f"{cls.__name__}")
    return cls.from_dict(obj.to_dict())


def _readable(tx: Tx, key: str, cls: type) -> dict[str, Any]:
    """A settings record's data to update: the defaults instead of one that cannot be
    read (what every host uses meanwhile), so setting a value repairs it."""
    try:
        data = tx.get(key)  # guarded even when it cannot be decoded
        return cls.from_dict(data).to_dict() if data is not None else cls().to_dict()
    except (ValidationError, DatastoreError):
        return cls().to_dict()


def _direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValidationError("direction", f"{direction!r} is not allowed; use inbound or "
                                           "outbound")
    return f"{direction}_rules"
