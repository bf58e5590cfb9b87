"""A no-op Ansible run of the collection next to a facts-only play, measured in the same run.

Two network namespaces are the hosts (as in tests/test_playbooks.py: connection local, every
module run inside its namespace through a wrapper interpreter, an SQLite datastore, each
host with a container endpoint). After a first converge with playbooks/site.yml, it times,
alternately, ``ansible-playbook`` of
  * the no-op play: the policy role (pools, BGP settings and peers, profiles, once) and the
    dataplane module on both hosts, changing nothing (tests/playbooks/noop.yml);
  * the baseline: a play that only gathers facts on the same hosts (tests/playbooks/facts.yml).
Each timing is a whole ``ansible-playbook`` process, as an operator sees it. It prints the
median of each and their ratio (target: the no-op run within 2x of the facts-only play).

Run (as root): .venv/bin/python bench/ansible.py [--rounds N] [--pipelining]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import calico_lib  # noqa: E402
from calico_lib import Endpoint  # noqa: E402
from tests.netns import Lab, missing_requirements  # noqa: E402
from tests.playbooks.harness import (  # noqa: E402
    HERE,
    SITE,
    netns_host_vars,
    playbook,
    write_inventory,
)

POLICY = ("-e", f"@{HERE / 'policy.yml'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pipelining", action="store_true",
                        help="run both plays with ansible_pipelining (fewer process spawns)")
    args = parser.parse_args()
    why = missing_requirements()
    if why:
        print(f"bench/ansible.py: {why}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="calico-bench-ansible-") as tmp, Lab() as lab:
        work = Path(tmp)
        url = f"sqlite:///{work}/calico.db"
        hosts = [lab.host("h1"), lab.host("h2")]
        with calico_lib.connect(url) as client:
            for host, profile in zip(hosts, ["frontend", "backend"], strict=True):
                address = f"10.65.{host.index}.1"
                ctr = lab.container(host, f"c{host.index}", ipv4=[address])
                client.add_endpoint(Endpoint(id=ctr.id, host=host.name, interface=ctr.interface,
                                             mac=ctr.mac, ipv4_nets=[address],
                                             profiles=[profile]))
        host_vars = {h.name: netns_host_vars(h.name, h.ns, work, url) for h in hosts}
        for values in host_vars.values():
            values["ansible_pipelining"] = args.pipelining
        inventory = write_inventory(work / "inventory.yml", host_vars)

        converge = playbook(SITE, inventory, *POLICY, workdir=work).check()
        print(f"first converge (site.yml): {converge.seconds:.1f} s, "
              f"changed={converge.changed()}")
        noop_times, facts_times = [], []
        for _ in range(args.rounds):
            noop = playbook(HERE / "noop.yml", inventory, *POLICY, workdir=work).check()
            if noop.changed():
                raise SystemExit(f"the no-op run changed something:\n{noop.output[-4000:]}")
            noop_times.append(noop.seconds)
            facts = playbook(HERE / "facts.yml", inventory, workdir=work).check()
            facts_times.append(facts.seconds)
        modules = sum(n["ok"] for n in noop.recap.values())

    noop_s, facts_s = statistics.median(noop_times), statistics.median(facts_times)
    print(f"{'play':34} {'median s':>9} {'min s':>7} {'max s':>7}")
    print(f"{'no-op: policy role + dataplane':34} {noop_s:9.2f} {min(noop_times):7.2f} "
          f"{max(noop_times):7.2f}")
    print(f"{'facts only':34} {facts_s:9.2f} {min(facts_times):7.2f} {max(facts_times):7.2f}")
    print(f"ratio no-op / facts: {noop_s / facts_s:.2f} (target: <= 2), "
          f"{modules} ok task results per no-op run, 2 hosts, "
          f"pipelining {'on' if args.pipelining else 'off'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
