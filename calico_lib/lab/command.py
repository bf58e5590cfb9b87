"""``calicoctl lab up|down|image``: the arguments from calico_lib.cli's parser."""

from __future__ import annotations

import os
import sys
from typing import Any

from .core import Lab

#: a second lab beside the default one (tests of an installed package): Lab's keyword
#: arguments from the environment; unset, the fixed names and subnets apply
ENVIRONMENT = {"CALICO_LAB_PREFIX": "prefix", "CALICO_LAB_SUBNET4": "subnet4",
               "CALICO_LAB_SUBNET6": "subnet6", "CALICO_LAB_STATE_DIR": "state_dir",
               "CALICO_LAB_OUTSIDE_SUBNET4": "outside_subnet4",
               "CALICO_LAB_OUTSIDE_SUBNET6": "outside_subnet6"}


def lab_options() -> dict[str, str]:
    return {key: os.environ[name] for name, key in ENVIRONMENT.items()
            if os.environ.get(name)}


def cli(args: Any) -> int:
    """Run one lab command; a LabError reaches calicoctl's error handling."""
    command = args.lab_command
    options = lab_options()
    try:
        if command == "up":
            lab = Lab(nodes=args.nodes, ipv6=args.ipv6, route_reflectors=args.route_reflectors,
                      fabric=args.fabric, racks=args.racks, **options)
            lab.up(deploy=not args.skip_deploy)
        elif command == "down":
            Lab(**options).down()
        elif command == "image":
            print(Lab(**options).image())
    except KeyboardInterrupt:
        print(f"calicoctl: lab {command} interrupted; `calicoctl lab up` resumes, "
              "`calicoctl lab down` removes what was made", file=sys.stderr)
        return 130
    return 0
