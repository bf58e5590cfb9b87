"""calico-agent: keeps this host's dataplane in line with the datastore.

It reconciles at start, then whenever the datastore changes (etcd watch; SQLite event log
polling), collecting a burst of changes into one reconcile, and at least every
``--resync-interval`` seconds, which also repairs tampering (a deleted cali rule or route
comes back). One log line per reconcile says what changed and how long it took.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence

from . import datastore, keys, logsafe, metrics
from .client import Client
from .dataplane.bird import DEFAULT_CONFIG, DEFAULT_SOCKET
from .datastore import open_datastore
from .errors import CalicoError, CompactedError, DatastoreError
from .hostname import resolve_hostname
from .reconcile import DEFAULT_LOCK_FILE, Dataplane, reconcile
from .tunnel_address import ensure_tunnel_address

log = logging.getLogger("calico-agent")
#: the longest wait between reconciles that fail; a datastore that does not answer is
#: retried more often: an attempt costs a refused connection, and the host must catch up
#: within seconds of the datastore's return
MAX_BACKOFF = 30.0
DATASTORE_BACKOFF = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calico-agent", description=__doc__.splitlines()[0])
    datastore.add_arguments(parser)
    parser.add_argument("--hostname", help="this host's name (default: $CALICO_HOSTNAME, "
                        "else the system host name)")
    parser.add_argument("--once", action="store_true", help="reconcile once and exit")
    parser.add_argument("--bird-config", default=DEFAULT_CONFIG, metavar="PATH",
                        help=f"BIRD's config file (default {DEFAULT_CONFIG}); 'none': no BGP")
    parser.add_argument("--bird-socket", default=DEFAULT_SOCKET, metavar="PATH",
                        help=f"BIRD's control socket (default {DEFAULT_SOCKET})")
    parser.add_argument("--lock-file", default=DEFAULT_LOCK_FILE,
                        help=f"host-wide dataplane lock (default {DEFAULT_LOCK_FILE})")
    parser.add_argument("--resync-interval", type=float, default=60.0, metavar="SECONDS",
                        help="full reconcile at least this often (default 60)")
    parser.add_argument("--debounce", type=float, default=0.1, metavar="SECONDS",
                        help="wait this long for more changes before reconciling")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--metrics-address", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics "
                             "([IPV6]:PORT for IPv6), e.g. 127.0.0.1:9091 (default: off)")
    return parser


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.hostname = resolve_hostname(args.hostname)
        # never create the store: on a mistyped path an empty one would unprogram the host
        self.store = open_datastore(**datastore.options(args), create=False)
        self.client = Client(self.store)
        bird = None if args.bird_config == "none" else args.bird_config
        self.dataplane = Dataplane(bird, args.bird_socket)
        self.stopping = False

    def reconcile_once(self, verify: bool = True) -> int:
        # the host's VXLAN tunnel address first: its own record, written by it alone;
        # failing that (but for the datastore), the rest of the dataplane is still kept
        try:
            ensure_tunnel_address(self.client, self.hostname, thorough=verify)
        except DatastoreError:
            raise
        except CalicoError as exc:
            log.error("vxlan: tunnel address not checked: %s", exc)
        report = reconcile(self.store, self.hostname, self.args.lock_file,
                           dataplane=self.dataplane, verify=verify)
        log.info("%s", report.summary())
        return report.revision

    def run(self) -> None:
        """Reconcile, then wait for changes or the resync deadline; repeat until stopped.

        A datastore change reconciles against what this agent applied last (no kernel
        reads when the render is unchanged); the periodic resync reads the kernel and
        repairs whatever differs.
        """
        backoff, verify = 1.0, True
        while not self.stopping:
            try:
                revision = self.reconcile_once(verify)
                backoff = 1.0
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any failure
                limit = DATASTORE_BACKOFF if isinstance(exc, DatastoreError) else MAX_BACKOFF
                backoff = min(backoff, limit)
                if isinstance(exc, CalicoError):
                    log.error("reconcile failed: %s (retrying in %.0fs)", exc, backoff)
                else:  # a bug: keep its traceback, keep the host reconciling
                    log.exception("reconcile crashed (retrying in %.0fs)", backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, limit)
                verify = True
                continue
            verify = self._wait_for_change(revision) == "resync"

    def _wait_for_change(self, revision: int) -> str:
        """Block until the datastore changes ("change") or a resync is due ("resync")."""
        deadline = time.monotonic() + self.args.resync_interval
        try:
            with self.store.watch(keys.ROOT, revision + 1) as watch:
                while not self.stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.debug("periodic resync")
                        return "resync"
                    events = watch.next(min(remaining, 1.0))
                    if events:
                        time.sleep(self.args.debounce)  # let the rest of a burst land
                        watch.next(0)
                        log.debug("%d change(s) from revision %d", len(events),
                                  events[0].revision)
                        return "change"
        except CompactedError:
            return "resync"  # a full reconcile catches up
        except DatastoreError as exc:
            log.error("watching the datastore failed: %s", exc)
            self._sleep(2.0)
        except Exception:  # noqa: BLE001 - never a silent stop: log, resync
            log.exception("watching the datastore crashed")
            self._sleep(2.0)
        return "resync"

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.2, end - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logsafe.configure(args.log_level, "calico-agent")
    try:
        if args.metrics_address:
            metrics.serve(args.metrics_address)
        agent = Agent(args)
        if args.once:
            agent.reconcile_once()
            return 0

        def stop(*_: object) -> None:
            agent.stopping = True
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("started for host %s on %s", agent.hostname, agent.store.url)
        agent.run()
        return 0
    except CalicoError as exc:
        log.error("%s", exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
