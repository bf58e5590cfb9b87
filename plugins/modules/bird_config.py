#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: bird_config
short_description: Render, validate, install and load this host's BIRD 2 configuration
version_added: 0.1.0
description:
  - Renders this host's BIRD 2 configuration (IPv4 and IPv6) from the datastore, the same
    text the agent writes, with the node-to-node mesh or route reflectors, global peers, this
    node's own peers, and the host's address blocks.
  - A changed configuration is checked with C(bird -p), moved into place atomically and
    loaded with C(birdc configure); a configuration BIRD refuses is never installed. When
    BIRD is not running, the file is installed for its next start.
  - A host that is not a registered node with an IPv4 address (M(calico.docker.node)) has no
    BGP; the module then changes nothing and warns.
options:
  hostname:
    description: This host's name in the datastore. When not given, E(CALICO_HOSTNAME),
      else the system host name (like the agent).
    type: str
  path:
    description: BIRD's configuration file.
    type: path
    default: /etc/bird/bird.conf
  socket:
    description: BIRD's control socket.
    type: path
    default: /run/bird/bird.ctl
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes
notes:
  - BGP passwords show as C(********) in the diff.
seealso:
  - module: calico.docker.node
  - module: calico.docker.bgp_peer
  - module: calico.docker.calico_info
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Install and load this host's BIRD configuration
  calico.docker.bird_config:

- name: A BIRD with its own paths
  calico.docker.bird_config:
    hostname: host-1
    path: /etc/bird/calico.conf
    socket: /run/bird/calico.ctl
"""

RETURN = r"""
path:
  description: The configuration file.
  returned: always
  type: str
  sample: /etc/bird/bird.conf
hostname:
  description: The host name the configuration was rendered for.
  returned: always
  type: str
  sample: host-1
reloaded:
  description: Whether BIRD took the new configuration (C(birdc configure)).
  returned: always
  type: bool
  sample: true
note:
  description: What else happened, for example that BIRD is not running.
  returned: always
  type: str
  sample: "BIRD is not running (no socket /run/bird/bird.ctl); it loads the config at start"
diff:
  description: The file before and after (passwords masked).
  returned: always
  type: dict
  contains:
    before:
      description: The file's text before the task (empty when there was none).
      type: str
      returned: always
    after:
      description: The file's text after the task.
      type: str
      returned: always
"""

import re

from ansible_collections.calico.docker.plugins.module_utils.calico import (
    MASK,
    calico_module,
    resolve_hostname,
    run,
)

PASSWORD_RE = re.compile(r'^(\s*password\s+)"[^"]*"', re.MULTILINE)


def masked(text):
    return PASSWORD_RE.sub(rf'\1"{MASK}"', text)


def read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def ensure(module, client):
    from calico_lib.dataplane.bird import apply_bird
    from calico_lib.render.bird import render_bird
    from calico_lib.snapshot import load_snapshot

    p = module.params
    hostname = resolve_hostname(p["hostname"])
    text = render_bird(load_snapshot(client.store, hostname))
    before = read(p["path"])
    out = {"path": p["path"], "hostname": hostname, "reloaded": False}
    if text is None:
        note = (f"hostname: {hostname} is not a registered node with an IPv4 address, so it "
                "has no BGP; register it with calico.docker.node")
        module.warn(note)
        return dict(out, changed=False, note=note,
                    diff={"before": masked(before), "after": masked(before)})
    report = apply_bird(text, p["path"], p["socket"], module.check_mode)
    diff = {"before": masked(before), "after": masked(text),
            "before_header": p["path"], "after_header": p["path"]}
    return dict(out, changed=report.changed, reloaded=report.reloaded, note=report.note,
                diff=diff)


def main():
    module = calico_module({
        "hostname": {"type": "str"},
        "path": {"type": "path", "default": "/etc/bird/bird.conf"},
        "socket": {"type": "path", "default": "/run/bird/bird.ctl"},
    })
    run(module, lambda client: ensure(module, client))


if __name__ == "__main__":
    main()
