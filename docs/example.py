#!/usr/bin/env python3
"""Set up a small Calico network with the Python API, then check IPAM.

Usage: python docs/example.py [DATASTORE_URL]

DATASTORE_URL is ``sqlite:////absolute/path.db`` or ``etcd://host:port``; without it the
usual resolution applies ($CALICO_DATASTORE, /etc/calico/calico.conf, the default SQLite
file). Running the script again is fine: what already exists is left as it is.
"""

from __future__ import annotations

import sys

import calico_lib
from calico_lib import (
    AlreadyExistsError,
    BGPPeer,
    CalicoError,
    Endpoint,
    IPPool,
    Node,
    Profile,
    Rule,
)

HOST = "host-1"
ENDPOINT_ID = "example-web-1"  # the endpoint id is also its IPAM handle
PROFILE = "web"


def add_pools(client: calico_lib.Client) -> None:
    for pool in (IPPool("10.65.0.0/16", nat_outgoing=True), IPPool("fd00:65::/64")):
        try:
            client.add_pool(pool)
            print(f"pool {pool.cidr}: added (blocks of /{pool.block_size})")
        except AlreadyExistsError:
            print(f"pool {pool.cidr}: already there")


def add_profile(client: calico_lib.Client) -> None:
    # The default rules (members reach each other, outbound open) plus web traffic
    # from the documentation network.
    profile = Profile.with_default_rules(PROFILE)
    profile.inbound_rules.append(
        Rule(action="allow", protocol="tcp", src_net=["192.0.2.0/24"], dst_ports=[80]))
    changed = client.put_profile(profile)  # create or replace: safe to run again
    print(f"profile {PROFILE}: {'written' if changed else 'unchanged'}, "
          f"{len(profile.inbound_rules)} inbound rule(s)")


def add_node_and_peer(client: calico_lib.Client) -> None:
    client.put_node(Node(HOST, ipv4="192.0.2.11", ipv6="2001:db8::11"))
    print(f"node {HOST}: 192.0.2.11, 2001:db8::11")
    peer = BGPPeer("192.0.2.1", as_number=65000)  # a peer of every node
    try:
        client.add_bgp_peer(peer)
        print(f"global BGP peer {peer.address} (AS {peer.as_number}): added")
    except AlreadyExistsError:
        print(f"global BGP peer {peer.address}: already there")


def add_endpoint(client: calico_lib.Client) -> Endpoint:
    addresses = client.ipam.handle_addresses(ENDPOINT_ID)
    if not addresses:  # assign only once per handle
        addresses = client.ipam.auto_assign(HOST, ENDPOINT_ID, num_ipv4=1,
                                            num_ipv6=1).addresses
    endpoint = Endpoint(
        id=ENDPOINT_ID, host=HOST, interface="cali0",
        ipv4_nets=[a for a in addresses if ":" not in a],
        ipv6_nets=[a for a in addresses if ":" in a],
        profiles=[PROFILE])
    client.put_endpoint(endpoint)
    print(f"endpoint {endpoint.id} on {endpoint.host}: "
          f"{', '.join(endpoint.ipv4_nets + endpoint.ipv6_nets)}")
    return endpoint


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else calico_lib.resolve_url()
    print(f"datastore: {url}")
    try:
        with calico_lib.connect(url) as client:
            add_pools(client)
            add_profile(client)
            add_node_and_peer(client)
            add_endpoint(client)
            problems = client.ipam.check()
    except CalicoError as exc:  # every error is one line naming the field
        print(f"example: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, calico_lib.ValidationError) else 1
    for problem in problems:
        print(f"IPAM problem: {problem}", file=sys.stderr)
    print("IPAM is consistent" if not problems else f"{len(problems)} IPAM problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
