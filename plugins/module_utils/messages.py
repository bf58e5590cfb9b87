# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
"""One-line failure messages for the calico.docker modules, with the standard library only
(``docker_network`` runs with the managed host's own Python).

Ansible's own argument checks quote a refused value raw: a YAML block scalar's trailing
newline (``state: |``) makes their message two lines, and a control character or a terminal
escape goes to the user's terminal as it is. ``OneLineModule`` escapes every failure message
to one printable line; ``show`` quotes a value as ``calico_lib.model.show`` does (escaped, at
most 64 characters), and ``NAME_RE`` is the model's rule for profile names (Docker network
names become profile names), from ``calico_lib`` when it is importable.
"""

from __future__ import annotations

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.errors import NoLogError

#: the longest failure message a module reports
MAX_MESSAGE = 1024

#: calico_lib.model's rule and quoting, for a host without calico_lib (a unit test keeps
#: them equal to the model's)
FALLBACK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
FALLBACK_SHOW_MAX = 64
NAME_RULE = ("letters, digits, '_', '.', '-', starting with a letter or digit, at most 128 "
             "characters")


def fallback_show(value):
    """``calico_lib.model.show``: one line (repr escapes control and invisible characters),
    at most FALLBACK_SHOW_MAX characters."""
    text = repr(value)
    return text if len(text) <= FALLBACK_SHOW_MAX else text[:FALLBACK_SHOW_MAX - 3] + "..."


try:
    from calico_lib.model import NAME_RE, show
except ImportError:
    NAME_RE, show = FALLBACK_NAME_RE, fallback_show


def one_line(message):
    """``message`` as one printable line (control, separator and invisible characters
    escaped), at most MAX_MESSAGE characters."""
    message = str(message)
    if not message.isprintable():
        message = repr(message)[1:-1]
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "..."


def name_problem(field_name, value):
    """None when ``value`` can be a profile's name (a Docker network's name becomes one);
    else the refusal: one line naming ``field_name``, the value quoted escaped."""
    if isinstance(value, str) and NAME_RE.fullmatch(value):
        return None
    return f"{field_name}: {show(value)} is not allowed; use {NAME_RULE}"


class OneLineModule(AnsibleModule):
    """An AnsibleModule whose every failure message is one printable line, Ansible's own
    argument refusals (``value of state must be one of: ..., got: present\\n``) included."""

    def fail_json(self, msg, **kwargs):
        super().fail_json(one_line(self._argument_refusal(msg)), **kwargs)

    def _argument_refusal(self, msg):
        """``msg``, unless it is the bare first refusal of the arguments that Ansible's
        no_log scan makes of a list element that is not a mapping (``dictionary requested,
        could not parse JSON or key=value``): then the type check's, which names the option."""
        errors = getattr(getattr(self, "validation_result", None), "errors", None)
        if errors and len(errors.errors) > 1 and isinstance(errors.errors[0], NoLogError) \
                and msg == errors.errors[0].msg:
            return errors.errors[1].msg
        return msg
