"""Prometheus metrics of the agent and the Docker plugin (off unless an address is given).

Every metric is defined here, once, in prometheus_client's default registry (which also
carries its process_* and python_* series); the code where an event happens counts it.
Names follow Felix's where it has one (``felix_int_dataplane_apply_time_seconds`` ->
``calico_agent_apply_time_seconds``, ``felix_iptables_restore_calls`` ->
``calico_agent_iptables_restore_calls_total``, ...); see docs/observability.md.

The ``calico_agent_*`` dataplane series move in whichever process applies the dataplane:
the agent, and the plugin too (its background programmer runs the same reconcile at Join).
The ``calico_plugin_*`` series move in the plugin only; ``calico_ipam_*`` wherever the
library assigns addresses (the plugin, at RequestAddress).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from .errors import CalicoError, ValidationError

if TYPE_CHECKING:
    from .render.policy import Table
    from .snapshot import Snapshot

OPTION = "--metrics-address"

# ------------------------------------------------------------------ dataplane (calico_agent_*)

#: Felix: felix_int_dataplane_apply_time_seconds. Seconds one reconcile's apply took (a
#: no-op that trusted its memory included: the count is the number of reconciles).
APPLY_TIME = Histogram(
    "calico_agent_apply_time_seconds", "Seconds one reconcile took to apply the dataplane.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

#: Felix: felix_iptables_restore_calls / felix_iptables_restore_errors (by IP version here)
IPTABLES_RESTORE_CALLS = Counter(
    "calico_agent_iptables_restore_calls", "iptables-restore and ip6tables-restore runs.",
    ["ip_version"])
IPTABLES_RESTORE_ERRORS = Counter(
    "calico_agent_iptables_restore_errors",
    "iptables-restore and ip6tables-restore runs that failed (the kernel kept its rules).",
    ["ip_version"])

#: Felix: felix_ipset_calls / felix_ipset_errors (every ipset run: save and restore)
IPSET_CALLS = Counter("calico_agent_ipset_calls", "ipset runs.")
IPSET_ERRORS = Counter("calico_agent_ipset_errors", "ipset runs that failed.")

#: Felix: felix_iptables_rules / felix_iptables_chains. Our part of each table after the
#: last apply that wrote it: rules in cali chains plus the hook rules that jump to them.
IPTABLES_RULES = Gauge(
    "calico_agent_iptables_rules", "Rules programmed in cali chains and their hooks.",
    ["ip_version", "table"])
IPTABLES_CHAINS = Gauge(
    "calico_agent_iptables_chains", "cali chains programmed.", ["ip_version", "table"])

#: Felix: felix_active_local_endpoints
ACTIVE_LOCAL_ENDPOINTS = Gauge(
    "calico_agent_active_local_endpoints", "Endpoints of this host in the last apply.")
#: Felix: felix_active_local_policies (a profile is this project's unit of policy): the
#: profiles named by this host's endpoints that exist
ACTIVE_LOCAL_PROFILES = Gauge(
    "calico_agent_active_local_profiles", "Profiles in use by endpoints of this host.")

#: Felix: felix_resyncs_started. Applies that read the kernel instead of trusting the
#: memory of the last apply: the first one, the periodic resync, and any after a failure.
RESYNCS_STARTED = Counter(
    "calico_agent_resyncs_started", "Applies that read and repaired the whole dataplane.")

# -------------------------------------------------------------------- the Docker plugin

#: no Felix counterpart. ``call`` is the URL path without its slash, as Docker names the
#: call (NetworkDriver.Join, IpamDriver.RequestAddress, Plugin.Activate); unknown paths
#: are not counted (their names come from the caller).
PLUGIN_REQUEST_DURATION = Histogram(
    "calico_plugin_request_duration_seconds", "Seconds the plugin took to answer a call.",
    ["call"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
PLUGIN_REQUEST_ERRORS = Counter(
    "calico_plugin_request_errors", "Calls the plugin answered with an error.", ["call"])

# ----------------------------------------------------------------------------- IPAM

#: no Felix counterpart; in addresses (one call may assign several)
IPAM_ASSIGNMENTS = Counter(
    "calico_ipam_assignments", "Addresses assigned.", ["ip_version"])
IPAM_ASSIGNMENT_FAILURES = Counter(
    "calico_ipam_assignment_failures",
    "Addresses asked for but not assigned (pool exhausted, address taken, datastore "
    "failure).", ["ip_version"])

#: the command runner counts a run of these (by the command's base name): calls, errors
COMMANDS: dict[str, tuple[Counter, Counter]] = {
    "iptables-restore": (IPTABLES_RESTORE_CALLS.labels("4"),
                         IPTABLES_RESTORE_ERRORS.labels("4")),
    "ip6tables-restore": (IPTABLES_RESTORE_CALLS.labels("6"),
                          IPTABLES_RESTORE_ERRORS.labels("6")),
    "ipset": (IPSET_CALLS, IPSET_ERRORS),
}
for _version in ("4", "6"):  # present at 0 from the start, as rate() needs
    IPAM_ASSIGNMENTS.labels(_version)
    IPAM_ASSIGNMENT_FAILURES.labels(_version)


def programmed(table: Table) -> None:
    """Set the rule and chain gauges of ``table``, just applied."""
    labels = (str(table.version), table.name)
    IPTABLES_CHAINS.labels(*labels).set(len(table.chains))
    IPTABLES_RULES.labels(*labels).set(sum(map(len, table.chains.values()))
                                       + len(table.hooks))


def active(snapshot: Snapshot) -> None:
    """Set the active endpoint and profile gauges from the snapshot just applied."""
    local = snapshot.local_endpoints
    ACTIVE_LOCAL_ENDPOINTS.set(len(local))
    ACTIVE_LOCAL_PROFILES.set(len({p for ep in local for p in ep.profiles
                                   if p in snapshot.profiles}))


def ipam_assignment(wanted: dict[int, int], ok: bool) -> None:
    """Count an assignment of ``wanted`` addresses (IP version -> how many), done or not."""
    counter = IPAM_ASSIGNMENTS if ok else IPAM_ASSIGNMENT_FAILURES
    for version, count in wanted.items():
        if count:
            counter.labels(str(version)).inc(count)


def plugin_calls(calls: Iterable[str]) -> None:
    """Make each call's series exist (at 0) before its first request."""
    for call in calls:
        PLUGIN_REQUEST_DURATION.labels(call)
        PLUGIN_REQUEST_ERRORS.labels(call)


_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); ValidationError naming the option."""
    usage = "use HOST:PORT or [IPV6]:PORT, e.g. 127.0.0.1:9091"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port:
        raise ValidationError(OPTION, f"{address!r} has no port; {usage}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ipv6(host):
            raise ValidationError(OPTION, f"{host!r} in brackets is not an IPv6 address")
    elif ":" in host:
        raise ValidationError(OPTION, f"{address!r}: put an IPv6 address in brackets; {usage}")
    elif not _HOST_RE.fullmatch(host):
        raise ValidationError(OPTION, f"{host!r} is not an IP address or host name; {usage}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValidationError(OPTION, f"port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def serve(address: str) -> None:
    """Serve every metric as Prometheus text at ``http://address/metrics`` from a daemon
    thread; CalicoError (naming the option) when the address is bad or taken."""
    host, port = parse_address(address)
    # Felix has no *_created series; prometheus_client would add one per counter
    prometheus_client.disable_created_metrics()
    try:
        prometheus_client.start_http_server(port, addr=host)
    except OSError as exc:
        raise CalicoError(f"{OPTION}: cannot listen on {address}: "
                          f"{exc.strerror or exc}") from None
