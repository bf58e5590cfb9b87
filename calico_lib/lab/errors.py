"""The lab's one error type."""

from __future__ import annotations

from ..errors import CalicoError


class LabError(CalicoError):
    """A lab step failed; ``str()`` names the step and the reason."""

    exit_code = 1

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"lab step '{step}' failed: {reason}")
        self.step = step
        self.reason = reason
