"""Calico-style routed, policy-enforcing networking for Docker.

The public API: ``connect(url)`` gives a ``Client`` (pools, profiles and rules, nodes,
BGP, endpoints, and ``client.ipam``); the model objects validate their input; every
error is a ``CalicoError`` carrying a one-line message.
"""

from .client import Client, connect
from .datastore import DEFAULT_URL, open_datastore, resolve_url
from .errors import (
    AlreadyExistsError,
    CalicoError,
    CompactedError,
    ConflictError,
    DatastoreError,
    DatastoreUnavailable,
    InUseError,
    NotFoundError,
    PoolExhaustedError,
    ValidationError,
)
from .ipam import IPAM, AssignResult, Problem
from .model import (
    BGPConfig,
    BGPPeer,
    Endpoint,
    IPAMConfig,
    IPPool,
    Node,
    Profile,
    Rule,
)

__version__ = "0.1.0"

__all__ = [
    "IPAM", "AlreadyExistsError", "AssignResult", "BGPConfig", "BGPPeer", "CalicoError",
    "Client", "CompactedError", "ConflictError", "DEFAULT_URL", "DatastoreError",
    "DatastoreUnavailable", "Endpoint", "IPAMConfig", "IPPool", "InUseError", "Node",
    "NotFoundError", "PoolExhaustedError", "Problem", "Profile", "Rule", "ValidationError",
    "connect", "open_datastore", "resolve_url",
]
