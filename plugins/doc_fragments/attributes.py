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
