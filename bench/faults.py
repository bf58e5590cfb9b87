"""Fault campaign: what crashes, restarts and outages leave behind, on a lab of its own.

It brings up a 3-node lab (``calico_lib.lab.Lab``) beside any other: node containers
``calico-faults-1..N`` on ``calico-faults-fabric`` (172.31.253.0/24), state in
/var/lib/calico-lab-calico-faults, deployed with playbooks/site.yml and the roles' defaults
(etcd on node 1 over TLS, the plugin's Docker sync every 10 s with a 30 s grace, the agent's
60 s resync). Every node runs two resident workloads (``--restart always``, serving tcp/80),
one on each Calico network (frontend, backend). Then it runs each fault, waits for the lab
to converge, and prints a table:

  plugin-kill   kill -9 of the plugin (random node, every 1-3 s) during create/delete
                cycles on every node (``docker run`` + ``docker rm -f``, 200 in all);
                systemd restarts it after 1 s; the fault ends when the cycles are done and
                every plugin runs
  agent-kill    kill -9 of the agent (random node, every 0.5-2 s) during 40 policy changes
                (backend lets frontend in on tcp/80, then not, ...; ends with it allowed,
                which the matrix then expects); systemd restarts it after 2 s
  dockerd       ``systemctl restart docker`` on node 2, with its residents and two
                containers without a restart policy running
  node-restart  ``docker restart`` of node 3 (systemd, dockerd, BIRD, agent and plugin all
                restart; its residents come back by their restart policy, two other
                containers made just before do not); the fault ends when the node's
                systemd reports it booted
  etcd-node-restart  the same for node 1, which runs etcd: its agent and plugin start
                before etcd answers, and the other nodes lose the datastore meanwhile
  etcd-outage   etcd stopped for 30 s (``systemctl stop etcd`` on node 1) while nodes 2
                and 3 create and delete containers: creates fail with a clear error (the
                first is shown), traffic between the residents must keep flowing (probed
                during the outage)
  bird-kill     kill -9 of BIRD on node 2; systemd starts it again at once
                (``Restart=on-abort``), which ends the fault. The sessions have graceful
                restart on, so the other nodes keep its routes meanwhile (reported, with
                the probes made while it restarts)
  bird-stop     ``systemctl stop bird`` on node 2 for 10 s: a clean stop ends the sessions,
                so the other nodes withdraw its routes (how fast is reported); the fault
                ends when it is started again

What is measured (tests/faultcheck.py defines it exactly): check rounds run back to back
from the end of the fault (the last kill's daemon active again; the restart done; the
node booted; etcd started; BIRD active again). One round asks every node for its facts
(Docker's endpoints, the datastore's, ipsets, routes, a check-mode reconcile, and once
``ipam check``) and probes the matrix between the residents (ping and tcp/80).

  converged  seconds from the end of the fault to the end of the first round that found
             every node's dataplane right: routes to every live container on every node,
             every network's ipset exactly its live members (no stale member), iptables
             and ipsets what the datastore says, every BGP session Established, every
             probe as expected. A round takes about 1.5 s (a probe process serves in each
             node; a dropped probe waits 1 s), so the figure is an upper bound with that
             resolution; a line per change of what is wrong shows the rounds.
  leaked     ``ipam check`` findings (allocations without an endpoint, pending addresses
             older than the sync's grace + 2 intervals, records that disagree) in the last
             round, when the records are clean or the time is up;
  duplicate  an address on two live containers or two endpoint records;
  stale      endpoint records of a node that its Docker does not list;
  orphans    host-side cali interfaces without an endpoint record;
  clean      seconds until leaked, duplicate, stale and orphans were all 0.

Goal: 0 leaked, 0 duplicate, 0 stale, 0 orphans after convergence, and convergence within
5 s of the fault's end. The exit status is 1 when a goal is missed.

Run as root (a few minutes; the first run builds the node image, about 90 s):
    .venv/bin/python bench/faults.py [--short] [--keep] [--faults plugin-kill,dockerd,...]
--short runs fewer cycles (30) and changes (10) and a 10 s outage; --keep leaves the lab up
(--skip-up then reuses it as it is), otherwise it is taken down at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import select
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calico_lib.lab import Lab, LabError  # noqa: E402
from calico_lib.plugin.server import build_parser as plugin_parser  # noqa: E402
from tests import faultcheck  # noqa: E402
from tests.faultcheck import Probe, Resident, Verdict  # noqa: E402

PREFIX = "calico-faults"
SUBNET4 = "172.31.253.0/24"
SUBNET6 = "fd7a:ca1:1ad::/64"
PYTHON = "/opt/calico/venv/bin/python"
LOCK_FILE = "/run/calico/dataplane.lock"
NETWORKS = ("frontend", "backend")
IMAGE = "busybox"
#: residents serve tcp/80 (busybox httpd daemonises) and stop at once on SIGTERM
SERVE = "httpd -p 80 -h /www; trap 'exit 0' TERM; while true; do sleep 1; done"
IDLE = "trap 'exit 0' TERM; while true; do sleep 1; done"
GOAL = 5.0
#: the plugin's sync defaults, which the lab runs with
_DEFAULTS = plugin_parser().parse_args([])
SYNC_INTERVAL = float(_DEFAULTS.docker_sync_interval)
SYNC_GRACE = float(_DEFAULTS.docker_sync_grace)
#: a pending address older than this was never used: the sync should have freed it
LEAK_GRACE = SYNC_GRACE + 2 * SYNC_INTERVAL
FAULTS = ("plugin-kill", "agent-kill", "dockerd", "node-restart", "etcd-node-restart",
          "etcd-outage", "bird-kill", "bird-stop")
BIRD_SOCKET = "/run/bird/bird.ctl"
OPERATOR = "/etc/calico/pki/operator"
#: the policy fault's rule, as the profile's inbound rule it adds
OPEN_80 = {"action": "allow", "protocol": "tcp", "dst_ports": [80], "src_tag": "frontend"}

# Toggles the backend profile's extra rule N times (operator credentials, on node 1), a
# random 0.2-0.6 s apart, ending with it present ("on") or not; one line per change.
TOGGLE = r"""
import json, random, sys, time
from dataclasses import replace
from calico_lib import Profile, Rule, connect
import os
count, rule, last = int(sys.argv[1]), Rule(**json.loads(sys.argv[2])), sys.argv[3] == "on"
operator = sys.argv[4]  # the operator's certificate, key and etcd password (the policy role's)
auth = {"etcd_user": "calico-operator", "etcd_password_file": operator + "-password"} \
    if os.path.exists(operator + "-password") else {}
client = connect(etcd_cert=operator + ".crt", etcd_key=operator + ".key", **auth)
base = Profile.with_default_rules("backend", docker_network=True)
for i in range(count):
    on = ((count - 1 - i) % 2 == 0) == last
    client.put_profile(replace(base, inbound_rules=base.inbound_rules + ([rule] if on else [])))
    print("on" if on else "off", flush=True)
    time.sleep(random.uniform(0.2, 0.6))
"""


class NodeProber:
    """HOST_PROBE serving in one node (``docker exec -i``): one line in, that moment's
    facts out. Started again when it ended (the node restarted) or did not answer."""

    def __init__(self, lab: Lab, node: str) -> None:
        self.lab, self.node = lab, node
        self.proc: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen[str]:
        args = faultcheck.probe_args(self.node, LOCK_FILE, grace=LEAK_GRACE,
                                     bird_socket=BIRD_SOCKET, serve=True)
        return subprocess.Popen(["docker", "exec", "-i", self.node, PYTHON, "-c",
                                 faultcheck.HOST_PROBE, args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                env=self.lab.docker_env())

    def ask(self, ipam: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start()
            proc = self.proc
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"ipam": ipam}) + "\n")
                proc.stdin.flush()
                ready = select.select([proc.stdout], [], [], timeout)[0]
                line = proc.stdout.readline() if ready else ""
            except OSError as exc:
                line, ready = "", [str(exc)]
            if not line:
                self.close()
                return {"errors": [f"probe: {'ended' if ready else 'no answer'}"]}
            try:
                return dict(json.loads(line))
            except ValueError:
                return {"errors": [f"probe: not JSON: {line[:200]}"]}

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass
class Result:
    fault: str
    cycles: str = "-"
    leaked: int = 0
    duplicate: int = 0
    stale: int = 0
    orphans: int = 0
    converged: float | None = None
    clean: float | None = None
    notes: list[str] = field(default_factory=list)
    problems: str = ""

    @property
    def ok(self) -> bool:
        return (self.converged is not None and self.converged <= GOAL
                and self.clean is not None
                and not (self.leaked or self.duplicate or self.stale or self.orphans))


class Campaign:
    def __init__(self, lab: Lab, args: argparse.Namespace) -> None:
        self.lab, self.args = lab, args
        self.nodes = [s.name for s in lab.node_specs()]
        self.fabric = {s.name: s.ip4 for s in lab.node_specs()}
        self.residents = [Resident(f"res-{net[:2]}-{i}", node, net)
                          for i, node in enumerate(self.nodes, 1) for net in NETWORKS]
        self.rng = random.Random(args.seed)
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.matrix_pool = ThreadPoolExecutor(max_workers=1)  # never waits on self.pool
        self._last_facts: dict[str, dict[str, Any]] = {}
        self.probers = {node: NodeProber(lab, node) for node in self.nodes}

    def close(self) -> None:
        for prober in self.probers.values():
            prober.close()
        self.pool.shutdown(wait=False)
        self.matrix_pool.shutdown(wait=False)

    # ---------------------------------------------------------------- node commands

    def sh(self, node: str, script: str, timeout: float = 120.0
           ) -> tuple[int, str, str]:
        try:
            proc = self.lab.node_exec(node, "sh", "-c", script, check=False, timeout=timeout)
        except LabError as exc:
            return 124, "", str(exc)
        return proc.returncode, proc.stdout, proc.stderr

    def each(self, fn: Callable[[str], Any], nodes: Sequence[str] | None = None
             ) -> dict[str, Any]:
        nodes = self.nodes if nodes is None else list(nodes)
        return dict(zip(nodes, self.pool.map(fn, nodes), strict=True))

    def systemctl(self, node: str, *args: str) -> str:
        return self.sh(node, "systemctl " + " ".join(map(shlex.quote, args)), timeout=60)[1]

    def wait_active(self, node: str, unit: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.systemctl(node, "is-active", unit).strip() == "active":
                return True
            time.sleep(0.2)
        return False

    def run_container(self, node: str, name: str, network: str, command: str,
                      restart: bool = False) -> tuple[int, str]:
        flags = "--restart always " if restart else ""
        code, out, err = self.sh(node, f"docker run -d --name {name} --net {network} "
                                       f"{flags}{IMAGE} sh -c {shlex.quote(command)}")
        return code, (err or out).strip()

    def remove_extras(self) -> None:
        """Every container but the residents, on every node."""
        keep = " ".join(r.name for r in self.residents)
        script = ("for c in $(docker ps -a --format '{{.Names}}'); do case \" " + keep
                  + " \" in *\" $c \"*) ;; *) docker rm -f $c >/dev/null 2>&1;; esac; done")
        self.each(lambda node: self.sh(node, script))

    # ---------------------------------------------------------------- one check round

    def facts(self, ipam_node: str | None = None) -> dict[str, dict[str, Any]]:
        ipam_node = ipam_node or self.nodes[0]
        return self.each(lambda node: self.probers[node].ask(ipam=node == ipam_node))

    def run_probes(self, probes: Sequence[Probe]) -> dict[str, bool]:
        by_node: dict[str, dict[str, list[Probe]]] = {}
        for p in probes:
            by_node.setdefault(p.host, {}).setdefault(p.src, []).append(p)

        def one(node: str) -> dict[str, bool]:
            parts = [f"docker exec {src} sh -c {shlex.quote(faultcheck.probe_script(mine))} &"
                     for src, mine in by_node[node].items()]
            _, out, _ = self.sh(node, "\n".join([*parts, "wait"]), timeout=60)
            return faultcheck.parse_probe_output(out)
        results: dict[str, bool] = {}
        for part in self.each(one, list(by_node)).values():
            results.update(part)
        return results

    def round(self, allowed: frozenset[tuple[str, str, str]] = frozenset(),
              ipam_node: str | None = None) -> Verdict:
        """Facts and the matrix at once, the matrix with the addresses the previous round
        saw; when the residents' addresses changed, the matrix again with the new ones."""
        probes = faultcheck.matrix(self.residents, self._last_facts, allowed) \
            if self._last_facts else []
        matrix = self.matrix_pool.submit(self.run_probes, probes)
        facts = self.facts(ipam_node)
        results = matrix.result()
        current = faultcheck.matrix(self.residents, facts, allowed)
        if [(p.src, p.address, p.kind) for p in current] != \
                [(p.src, p.address, p.kind) for p in probes]:
            probes, results = current, self.run_probes(current)
        v = faultcheck.verdict(facts, self.fabric, results, probes, hosts=self.nodes)
        if not probes:
            v.matrix.append("no resident to probe from")
        missing = {(r.name, r.network) for r in self.residents} - {
            (e["container"], e["network"]) for f in facts.values() for e in f.get("docker", [])}
        v.matrix += [f"{name} ({net}) is not running" for name, net in sorted(missing)]
        self._last_facts = facts
        return v

    def converge(self, result: Result, since: float,
                 allowed: frozenset[tuple[str, str, str]] = frozenset(),
                 ipam_node: str | None = None) -> Verdict:
        """Rounds until the dataplane is right and the records are clean (or the time is
        up); fills in ``result``."""
        timeout = self.args.timeout
        last, shown = Verdict(), ""
        while True:
            began = time.monotonic()
            last = self.round(allowed, ipam_node)
            now = time.monotonic()
            if last.counts() != shown:  # a line whenever what is wrong changes
                shown = last.counts()
                first = last.problems(limit=1).splitlines()[:1]
                self.say(f"    {began - since:5.1f}-{now - since:5.1f} s: {shown}"
                         + (f" ({first[0][:110]})" if first and last.counts() != "all right"
                            else ""))
            if last.converged and result.converged is None:
                result.converged = now - since
                self.say(f"    dataplane right after {result.converged:.1f} s")
            if last.converged and last.clean:
                result.clean = now - since
                break
            if now - since > timeout:
                self.say(f"    not right after {timeout:.0f} s:\n"
                         + _indent(last.problems(), 6))
                result.problems = last.problems()
                break
        result.leaked, result.duplicate = len(last.leaked), len(last.duplicates)
        result.stale, result.orphans = len(last.stale), len(last.orphans)
        if result.clean is not None and result.clean - (result.converged or 0) > 0.5:
            self.say(f"    records clean after {result.clean:.1f} s")
        return last

    def say(self, text: str) -> None:
        print(text, flush=True)

    # ---------------------------------------------------------------- setup

    def prepare(self) -> None:
        self.say("==> residents: two per node (frontend, backend), --restart always")
        self.remove_extras()

        def start(node: str) -> None:
            for r in self.residents:
                if r.host == node:
                    code, out, err = self.sh(node, f"docker inspect -f '{{{{.State.Running}}}}' "
                                                   f"{r.name}")
                    if out.strip() != "true":
                        self.sh(node, f"docker rm -f {r.name} >/dev/null 2>&1")
                        code, msg = self.run_container(node, r.name, r.network, SERVE,
                                                       restart=True)
                        if code:
                            raise SystemExit(f"{r.name} on {node}: {msg}")
        self.each(start)
        result = Result("(start)")
        self.converge(result, time.monotonic())
        if result.converged is None:
            raise SystemExit("the lab is not right before any fault:\n" + result.problems)

    # ---------------------------------------------------------------- the faults

    def cycles(self, node: str, count: int, tag: str, out: list[str]) -> None:
        """``count`` create/delete cycles on ``node`` (one shell loop in the node), one
        output line per step into ``out``."""
        script = (
            f"i=0; while [ $i -lt {count} ]; do n={tag}-$i; "
            "if [ $((i % 2)) = 0 ]; then net=frontend; else net=backend; fi; "
            f"if m=$(docker run -d --name $n --net $net {IMAGE} sh -c "
            f"{shlex.quote(IDLE)} 2>&1); then echo \"create ok\"; "
            "else echo \"create fail $(echo $m | tr '\\n' ' ')\"; fi; "
            "if m=$(docker rm -f $n 2>&1); then echo \"delete ok\"; "
            "else echo \"delete fail $(echo $m | tr '\\n' ' ')\"; fi; "
            "i=$((i + 1)); done")
        _, text, err = self.sh(node, script, timeout=max(600.0, count * 20.0))
        out.extend(text.splitlines())
        if err.strip():
            out.append("shell " + err.strip().splitlines()[-1])

    def plugin_kill(self) -> Result:
        count = self.args.cycles
        per_node = math.ceil(count / len(self.nodes))
        lines: list[str] = []
        workers = [threading.Thread(target=self.cycles, args=(node, per_node, "fk", lines))
                   for node in self.nodes]
        for w in workers:
            w.start()
        kills = 0
        while any(w.is_alive() for w in workers):
            time.sleep(self.rng.uniform(1.0, 3.0))
            if not any(w.is_alive() for w in workers):
                break
            node = self.rng.choice(self.nodes)
            self.systemctl(node, "kill", "-s", "KILL", "calico-docker-plugin.service")
            kills += 1
        for w in workers:
            w.join()
        back = self.each(lambda n: self.wait_active(n, "calico-docker-plugin.service"))
        since = time.monotonic()
        result = Result("plugin kill -9 during create/delete")
        self._cycle_notes(result, lines, per_node * len(self.nodes))
        result.notes.insert(0, f"{kills} kills")
        if not all(back.values()):
            result.notes.append("plugin not restarted on "
                                + ", ".join(n for n, ok in back.items() if not ok))
        self.converge(result, since)
        return result

    def _cycle_notes(self, result: Result, lines: list[str], planned: int) -> None:
        created = sum(1 for line in lines if line.startswith("create"))
        failed = [line[len("create fail "):] for line in lines if line.startswith("create fail")]
        result.cycles = f"{created}" if created == planned else f"{created}/{planned}"
        if failed:
            result.notes.append(f"{len(failed)} creates failed: " + _first(failed))
        bad_deletes = [line for line in lines if line.startswith(("delete fail", "shell"))]
        if bad_deletes:
            result.notes.append(f"{len(bad_deletes)} deletes failed: " + _first(bad_deletes))

    def agent_kill(self) -> Result:
        changes = self.args.changes
        out: list[str] = []

        def toggle() -> None:
            code, text, err = self.sh(self.nodes[0], self.toggle(changes, "on"),
                                      timeout=600)
            out.extend(text.splitlines())
            if code:
                out.append("error " + (err.strip().splitlines() or ["?"])[-1])

        worker = threading.Thread(target=toggle)
        worker.start()
        kills = 0
        while worker.is_alive():
            time.sleep(self.rng.uniform(0.5, 2.0))
            if not worker.is_alive():
                break
            self.systemctl(self.rng.choice(self.nodes), "kill", "-s", "KILL",
                           "calico-agent.service")
            kills += 1
        worker.join()
        self.each(lambda n: self.wait_active(n, "calico-agent.service"))
        since = time.monotonic()
        result = Result("agent kill -9 during policy changes")
        done = [line for line in out if line in ("on", "off")]
        result.cycles = str(len(done)) if len(done) == changes else f"{len(done)}/{changes}"
        result.notes.append(f"{kills} kills")
        result.notes += [line for line in out if line.startswith("error")]
        self.converge(result, since, allowed=frozenset({("frontend", "backend", "tcp/80")}))
        # back to the default rules; not part of the figures, but checked
        self.sh(self.nodes[0], self.toggle(1, "off"))
        after = Result("policy back to defaults")
        self.converge(after, time.monotonic())
        if not after.ok:
            result.notes.append("after the default rules were back: " + (after.problems
                                                                         or "slow"))
        return result

    @staticmethod
    def toggle(count: int, last: str) -> str:
        return f"{PYTHON} -c {shlex.quote(TOGGLE)} {count} " \
            f"{shlex.quote(json.dumps(OPEN_80))} {last} {OPERATOR}"

    def dockerd_restart(self) -> Result:
        node = self.nodes[1 % len(self.nodes)]
        for i, net in enumerate(NETWORKS):
            self.run_container(node, f"once-{i}", net, IDLE)
        code, _, err = self.sh(node, "systemctl restart docker", timeout=180)
        since = time.monotonic()
        result = Result(f"dockerd restart ({node})", cycles="1")
        if code:
            result.notes.append(f"systemctl restart docker: {err.strip()[-200:]}")
        self.converge(result, since)
        return result

    def node_restart(self) -> Result:
        return self.restart_node(self.nodes[-1], "node restart")

    def etcd_node_restart(self) -> Result:
        """The node that runs etcd: its agent and plugin start before etcd answers, and
        every other node loses the datastore until it does."""
        return self.restart_node(self.nodes[0], "etcd's node restart")

    def restart_node(self, node: str, what: str) -> Result:
        for i, net in enumerate(NETWORKS):
            self.run_container(node, f"once-{i}", net, IDLE)
        started = time.monotonic()
        self.lab.docker("restart", node, timeout=180)
        restarted = time.monotonic()
        booted = False
        while time.monotonic() - restarted < 180:
            state = self.sh(node, "systemctl is-system-running", timeout=20)[1].strip()
            if state in ("running", "degraded"):
                booted = True
                break
            time.sleep(0.2)
        since = time.monotonic()
        result = Result(f"{what} ({node})", cycles="1")
        result.notes.append(f"docker restart {restarted - started:.1f} s, boot "
                            f"{since - restarted:.1f} s" + ("" if booted else " (not booted)"))
        if state == "degraded":
            failed = self.sh(node, "systemctl list-units --failed --plain --no-legend")[1]
            result.notes.append("failed units: " + " ".join(
                line.split()[0] for line in failed.splitlines() if line.strip()))
        self.converge(result, since)
        return result

    def etcd_outage(self) -> Result:
        etcd_node = self.nodes[0]
        others = self.nodes[1:] or self.nodes
        for node in others:  # deleted during the outage
            for i, net in enumerate(NETWORKS):
                self.run_container(node, f"pre-{i}", net, IDLE)
        self.round()  # the addresses the probes during the outage use
        lines: list[str] = []
        stop = threading.Event()

        def cycles(node: str) -> None:
            self.sh(node, "docker rm -f pre-0 pre-1 >/dev/null 2>&1")
            i = 0
            while not stop.is_set():
                code, msg = self.run_container(node, f"eo-{i}", NETWORKS[i % 2], IDLE)
                lines.append("create ok" if code == 0 else "create fail " + msg.replace(
                    "\n", " "))
                code, _, err = self.sh(node, f"docker rm -f eo-{i}")
                lines.append("delete ok" if code == 0 else "delete fail " + err.strip())
                i += 1

        self.systemctl(etcd_node, "stop", "etcd")
        stopped = time.monotonic()
        workers = [threading.Thread(target=cycles, args=(node,)) for node in others]
        for w in workers:
            w.start()
        time.sleep(min(5.0, self.args.outage / 2))
        probes = faultcheck.matrix(self.residents, self._last_facts)
        results = self.run_probes(probes)
        wrong = [p for p in probes if results.get(p.key) != p.expected]
        time.sleep(max(0.0, self.args.outage - (time.monotonic() - stopped)))
        stop.set()
        for w in workers:
            w.join()
        self.systemctl(etcd_node, "start", "etcd")
        since = time.monotonic()
        result = Result(f"etcd stopped {self.args.outage:.0f} s during create/delete")
        created = [line for line in lines if line.startswith("create")]
        result.cycles = str(len(created))
        ok = sum(1 for line in created if line == "create ok")
        failed = [line[len("create fail "):] for line in created if line != "create ok"]
        result.notes.append(f"{ok} created, {len(failed)} refused"
                            + (": " + _first(failed) if failed else ""))
        result.notes.append(f"traffic during the outage: {len(probes) - len(wrong)}/"
                            f"{len(probes)} probes as expected")
        if wrong:
            result.problems = "during the outage: " + "; ".join(
                f"{p.kind} {p.src} -> {p.address}" for p in wrong[:5])
        self.converge(result, since)
        if wrong:
            result.converged = None  # traffic must not stop: a missed goal
        return result

    def bird_routes(self, via: str, nodes: Sequence[str]) -> int:
        """Routes BIRD learned through ``via`` on ``nodes``, in all."""
        def count(peer: str) -> int:
            out = self.sh(peer, "ip -4 route show proto bird", timeout=20)[1]
            return sum(1 for line in out.splitlines() if f"via {via} " in line + " ")
        return sum(self.each(count, nodes).values())

    def bird_kill(self) -> Result:
        """kill -9; systemd starts BIRD again (Restart=on-abort): the end of the fault. The
        sessions have graceful restart on (as Calico's): the peers keep its routes, marked
        stale, while it is away. Traffic meanwhile is reported, not a goal."""
        node = self.nodes[1 % len(self.nodes)]
        via, others = self.fabric[node], [n for n in self.nodes if n != node]
        pid = self.systemctl(node, "show", "-p", "MainPID", "--value", "bird").strip()
        had = self.bird_routes(via, others)
        probes = faultcheck.matrix(self.residents, self._last_facts)
        seen: dict[str, Any] = {}

        def meanwhile() -> None:  # the first seconds after the kill
            time.sleep(0.5)
            seen["kept"] = self.bird_routes(via, others)
            seen["results"] = self.run_probes(probes)

        killed = time.monotonic()
        self.systemctl(node, "kill", "-s", "KILL", "bird.service")
        watcher = threading.Thread(target=meanwhile)
        watcher.start()
        by_systemd = True
        while self.systemctl(node, "show", "-p", "MainPID", "--value",
                             "bird").strip() in ("", "0", pid):
            if time.monotonic() - killed > 10:
                by_systemd = False
                self.systemctl(node, "start", "bird")
                break
            time.sleep(0.05)
        since = time.monotonic()
        watcher.join()
        wrong = [p for p in probes if seen["results"].get(p.key) != p.expected]
        result = Result(f"BIRD kill -9 ({node})", cycles="1")
        result.notes.append(
            f"BIRD running again {since - killed:.1f} s after the kill"
            + ("" if by_systemd else " (started by hand: systemd did not)")
            + f"; meanwhile the others kept {seen['kept']}/{had} routes via it (graceful "
            f"restart), {len(probes) - len(wrong)}/{len(probes)} probes as expected"
            + (" (" + "; ".join(f"{p.kind} {p.src} -> {p.address}" for p in wrong[:3])
               + ")" if wrong else ""))
        self.converge(result, since)
        return result

    def bird_stop(self) -> Result:
        """``systemctl stop bird`` (a clean stop: BIRD ends its sessions, so the peers
        withdraw its routes at once), down for --bird-down seconds, then started again."""
        node = self.nodes[1 % len(self.nodes)]
        via, others = self.fabric[node], [n for n in self.nodes if n != node]
        had = self.bird_routes(via, others)
        stopped = time.monotonic()
        self.systemctl(node, "stop", "bird")
        withdrawn = None
        while time.monotonic() - stopped < max(30.0, self.args.bird_down):
            if self.bird_routes(via, others) == 0:
                withdrawn = time.monotonic() - stopped
                break
            time.sleep(0.1)
        time.sleep(max(0.0, self.args.bird_down - (time.monotonic() - stopped)))
        self.systemctl(node, "start", "bird")
        since = time.monotonic()
        result = Result(f"BIRD stopped {self.args.bird_down:.0f} s ({node})", cycles="1")
        result.notes.append(f"{had} routes via {node} on the others, " + (
            f"withdrawn {withdrawn:.1f} s after the stop" if withdrawn is not None
            else "NOT withdrawn"))
        self.converge(result, since)
        if withdrawn is None:
            result.problems = "the routes were not withdrawn"
            result.converged = None
        return result


def _first(items: list[str]) -> str:
    text = re.sub(r"\s+", " ", items[0]).strip()
    text = text.replace("docker: Error response from daemon: ", "")
    text = text.split(" Run 'docker run --help'")[0]
    return f'"{text[:160]}"' + (f" (+{len(set(items)) - 1} other messages)"
                                if len(set(items)) > 1 else "")


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def table(results: Sequence[Result]) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    header = ["fault", "cycles", "leaked", "dup", "stale", "orphans", "converged s",
              "clean s", "goal"]
    rows = [[r.fault, r.cycles, str(r.leaked), str(r.duplicate), str(r.stale),
             str(r.orphans), seconds(r.converged), seconds(r.clean),
             "met" if r.ok else "MISSED"] for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        for note in r.notes:
            lines.append(f"  {r.fault}: {note}")
        if r.problems and not r.ok:
            lines.append(f"  {r.fault}: left: " + r.problems.replace("\n", "; ")[:400])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        help="30 cycles, 10 policy changes, a 10 s etcd outage")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--skip-up", action="store_true",
                        help="use the lab as it is (a kept one) without `lab up`")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"which, in order (default: {','.join(FAULTS)})")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--outage", type=float, default=30.0,
                        help="seconds etcd stays stopped (default 30)")
    parser.add_argument("--bird-down", type=float, default=10.0,
                        help="seconds BIRD stays stopped in bird-stop (default 10)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for convergence after each fault")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.short:
        args.cycles, args.changes, args.outage = 30, 10, 10.0
    chosen = [f.strip() for f in args.faults.split(",") if f.strip()]
    if unknown := [f for f in chosen if f not in FAULTS]:
        parser.error(f"--faults: unknown {', '.join(unknown)}; use {', '.join(FAULTS)}")

    lab = Lab(nodes=args.nodes, prefix=PREFIX, subnet4=SUBNET4, subnet6=SUBNET6)
    started = time.monotonic()
    results: list[Result] = []
    campaign: Campaign | None = None
    try:
        if not args.skip_up:
            lab.up()
        campaign = Campaign(lab, args)
        campaign.prepare()
        run = {"plugin-kill": campaign.plugin_kill, "agent-kill": campaign.agent_kill,
               "dockerd": campaign.dockerd_restart, "node-restart": campaign.node_restart,
               "etcd-node-restart": campaign.etcd_node_restart,
               "etcd-outage": campaign.etcd_outage, "bird-kill": campaign.bird_kill,
               "bird-stop": campaign.bird_stop}
        for name in chosen:
            print(f"==> fault: {name}", flush=True)
            t0 = time.monotonic()
            result = run[name]()
            results.append(result)
            print(f"    {'met' if result.ok else 'MISSED'} ({time.monotonic() - t0:.0f} s)",
                  flush=True)
            campaign.remove_extras()
    except LabError as exc:
        print(f"faults: {exc}", file=sys.stderr)
        return 2
    finally:
        if campaign is not None:
            campaign.close()
        if results:
            print(f"\nFault campaign on {args.nodes} nodes ({time.monotonic() - started:.0f} s; "
                  f"plugin sync every {SYNC_INTERVAL:.0f} s, grace {SYNC_GRACE:.0f} s; goal: "
                  f"0 leaked/dup/stale/orphans, converged <= {GOAL:.0f} s)\n")
            print(table(results))
        if not args.keep:
            try:
                lab.down()
            except LabError as exc:
                print(f"faults: taking the lab down: {exc}", file=sys.stderr)
    return 0 if results and all(r.ok for r in results) and len(results) == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
