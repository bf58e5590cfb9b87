# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations


class ModuleDocFragment:
    """Attributes shared by the calico.docker modules."""

    # Modules that change something: full check mode and diff support.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without
      modifying the target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in
      check mode) when in diff mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
"""

    # Modules that write policy: check mode makes the change on a copy of the datastore.
    POLICY = r"""
attributes:
  check_mode:
    description:
      - Can run in check mode and return changed status prediction without modifying the
        target.
      - The change is made on a copy of the datastore with the same validation as a real
        run (so a change a real run would refuse fails in check mode too); the result's
        RV(dataplane) then says what every host's firewall, routes and BIRD configuration
        would do, and with diff mode the rule lines show in the diff.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in
      check mode) when in diff mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
"""

    # Read-only modules.
    INFO = r"""
attributes:
  check_mode:
    description: Can run in check mode; this module never changes anything.
    support: full
  diff_mode:
    description: This module changes nothing, so it has no diff.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
"""
