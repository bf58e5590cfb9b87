"""Stand-in for the get-pip.py script ansible-test bootstraps pip with in the empty
virtualenvs it makes for the sanity tests (``scripts/ansible-test.sh sanity`` puts it where
ansible-test looks for its cached copy).

ansible-test downloads its get-pip.py from a host of its own, outside the package index;
this one gets to the same state with the standard library's ensurepip and then pip itself
from the package index: ``python get_pip.py [pip options] pip==X [packages]
[--no-setuptools] [--no-wheel]`` installs those packages, and setuptools and wheel only when
not told otherwise.
"""

from __future__ import annotations

import subprocess
import sys


def main(argv: list[str]) -> int:
    no_setuptools = "--no-setuptools" in argv
    no_wheel = "--no-wheel" in argv
    args = [a for a in argv if a not in ("--no-setuptools", "--no-wheel")]
    python = sys.executable
    subprocess.run([python, "-m", "ensurepip", "--default-pip"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([python, "-m", "pip", "install", "-q", *args,
                    *([] if no_setuptools else ["setuptools"]),
                    *([] if no_wheel else ["wheel"])], check=True)
    if no_setuptools:  # ensurepip brings setuptools with Python < 3.12
        subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "setuptools"],
                       check=False, stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
