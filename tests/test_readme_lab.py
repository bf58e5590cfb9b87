"""README.md's "Using it", verbatim, on a lab of its own.

The fenced code blocks of README.md's "## Using it" section (up to its first "###") are read
when the tests run, so a change to the README without this test breaks it. The first block
is what a reader types in a lab node's shell (`docker exec -it calico-lab-1 bash`): every
command line runs in a node with ``bash -c``, after the block's earlier lines that only set
variables (``export A=...``, ``db=$(...)``), as one shell session would have them; a line
ending in a backslash goes on. The outcomes the README states: the probe before the rule
finds no answer (it times out), ``profile show`` lists the rule, and the same probe after
it gets the page; every other line succeeds. The second block (undo it) then removes what
the first made, and the pool, the networks, the profile and the container are checked gone.

The lab: one node, ``calico-readme-1`` on ``calico-readme-fabric`` (172.31.247.0/24), IPv4
only (the block uses no IPv6), state in a temporary folder, deployed with playbooks/site.yml
and the roles' defaults, as ``calicoctl lab up`` does; taken down at the end, on failure too.
A few minutes, nearly all of them the deploy (the block itself takes about 40 s). Needs root
and docker.io (the lab starts dockerd when it is not running); the node image is the lab's
(built once).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from calico_lib.lab import Lab, LabError
from tests.labs import deployed_lab

README = Path(__file__).resolve().parent.parent / "README.md"
PREFIX = "calico-readme"
SUBNET4 = "172.31.247.0/24"
NODE = f"{PREFIX}-1"
#: what the block's server answers with (its `echo ... >/index.html`)
PAGE = "hello from db-1"
#: a line that only sets shell variables: kept for the lines after it
SETTING = re.compile(r"(export\s+)?[A-Za-z_][A-Za-z0-9_]*=")


def using_it_blocks(text: str | None = None) -> list[list[str]]:
    """The command lines of each fenced block of README.md's "## Using it" (a line ending
    in a backslash joined with the next; blank lines and comment lines left out)."""
    text = README.read_text() if text is None else text
    start = text.index("\n## Using it\n")
    end = min(i for i in (text.find("\n## ", start + 1), text.find("\n### ", start + 1))
              if i > 0)
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text[start:end], re.S | re.M)
    found = []
    for block in blocks:
        lines: list[str] = []
        pending = ""
        for raw in block.splitlines():
            line = pending + raw
            if line.endswith("\\"):
                pending = line[:-1]
                continue
            pending = ""
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
        found.append(lines)
    return found


def command(line: str) -> str:
    """A line without its trailing comment (for comparing two lines)."""
    return re.sub(r"\s+#.*$", "", line)


def probes(block: list[str]) -> tuple[int, int, int, int]:
    """The indexes of the probe before the rule, the rule, `profile show` and the same
    probe after the rule."""
    rule = next(i for i, line in enumerate(block) if "calicoctl profile rule add" in line)
    show = next(i for i, line in enumerate(block) if "calicoctl profile show" in line)
    wgets = [i for i, line in enumerate(block) if " wget " in line]
    assert len(wgets) == 2, wgets
    before, after = wgets
    return before, rule, show, after


def test_using_it_has_the_commands_the_lab_test_runs() -> None:
    """Pure: the shape the lab test relies on (a quick failure when the README changes)."""
    blocks = using_it_blocks()
    assert len(blocks) == 2, blocks
    run, undo = blocks
    before, rule, show, after = probes(run)
    assert before < rule < show < after
    assert command(run[before]) == command(run[after]), "the same probe before and after"
    assert "<" not in "".join(run + undo), "a placeholder a reader has to fill in"
    assert PAGE in "\n".join(run)
    assert any(SETTING.match(line) for line in run)
    assert any("calicoctl pool remove" in line for line in undo)


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    with deployed_lab(tmp_path, nodes=1, prefix=PREFIX, subnet4=SUBNET4) as the_lab:
        yield the_lab


def run(lab: Lab, settings: list[str], line: str) -> tuple[int, str, float]:
    """``line`` in the node with bash, after the variables ``settings`` set: exit status,
    output (stdout, then stderr) and seconds taken."""
    started = time.monotonic()
    proc = lab.node_exec(NODE, "bash", "-c", "\n".join([*settings, line]), check=False,
                         timeout=120)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def state(lab: Lab) -> dict[str, set[str]]:
    """The node's containers and networks, and the datastore's pools and profiles."""
    script = "\n".join(["docker ps -a --format '{{.Names}}'", "echo @@",
                        "docker network ls --format '{{.Name}}'", "echo @@",
                        "calicoctl pool list -o json", "echo @@",
                        "calicoctl profile list -o json"])
    out = lab.node_exec(NODE, "bash", "-c", script, timeout=60).stdout
    containers, networks, pools, profiles = out.split("@@\n")
    return {"containers": set(containers.split()), "networks": set(networks.split()),
            "pools": {p["cidr"] for p in json.loads(pools)},
            "profiles": {p["name"] for p in json.loads(profiles)}}


def remove(lab: Lab, settings: list[str], made: dict[str, set[str]]) -> None:
    """Remove whatever of ``made`` is left (a failed step's): the lab goes anyway, this is
    for a reader of the log."""
    commands = [*(f"docker rm -f {c}" for c in made["containers"]),
                *(f"docker network rm {n}" for n in made["networks"]),
                *(f"calicoctl profile remove {p}" for p in made["profiles"]),
                *(f"calicoctl pool remove {p}" for p in made["pools"])]
    for line in commands:
        print(f"cleanup: {line}: exit {run(lab, settings, line)[0]}")


@pytest.mark.lab
@pytest.mark.ansible  # `lab up` deploys with site.yml
@pytest.mark.slow
def test_using_it_verbatim_on_a_lab(lab: Lab) -> None:
    steps, undo = using_it_blocks()
    before, rule, show, after = probes(steps)
    settings: list[str] = []
    start = state(lab)
    try:
        for i, line in enumerate(steps):
            if SETTING.match(line):
                settings.append(line)
            code, out, took = run(lab, settings, line)
            print(f"$ {line}\n{out.rstrip()}\n(exit {code}, {took:.1f} s)")
            if i == before:  # dropped: no answer until the timeout ends it
                assert code != 0 and PAGE not in out and took >= 2.5, (line, code, out)
            elif i == after:
                assert code == 0 and out.strip() == PAGE, (line, code, out)
            else:
                assert code == 0, (line, out)
            if i == show:  # the rule the block added, in its own words
                words = command(steps[rule]).split(" inbound ", 1)[1].split()
                values = [w for w in words if not w.startswith("--")]
                assert all(v in out for v in values), (values, out)
        made = {key: now - start[key] for key, now in state(lab).items()}
        assert made["containers"] and made["networks"] and made["pools"] \
            and made["profiles"], made

        for line in undo:  # the README's own undo
            code, out, _ = run(lab, settings, line)
            print(f"$ {line}\n{out.rstrip()}\n(exit {code})")
            assert code == 0, (line, out)
        left = {key: now & made[key] for key, now in state(lab).items()}
        assert not any(left.values()), f"the undo left {left}"
        code, out, _ = run(lab, settings, "calicoctl ipam check")
        assert code == 0 and "IPAM is consistent" in out, out
    finally:
        try:
            remove(lab, settings, {key: now - start[key] for key, now in state(lab).items()})
        except (LabError, ValueError) as exc:
            print(f"cleanup: {exc}")
