"""Build the wheelhouse of calico_lib for managed hosts, on the controller, once per source.

    build_wheelhouse.py --source DIR --cache DIR --python-version 3.11 --arch x86_64
                        [--glibc 2.36] [-- PIP_ARGS...]

The collection's own copy of calico_lib (DIR holds pyproject.toml and calico_lib/) is built
into a wheel whose version carries a local label made from a hash of the sources
(``0.1.0+g1a2b3c4d5e6f``), so that a host's virtualenv can tell "this exact build is
installed" from ``pip freeze`` alone. Its dependencies are downloaded as binary wheels for
the managed hosts' Python version and architecture (not the controller's), so the hosts
install everything with ``pip install --no-index --find-links`` and need no index.

The result is one tar file, ``CACHE/NAME.tar``, holding the folder ``NAME/`` with the
wheels; NAME names the source hash and the target. A tar that already exists is reused
without running pip. Prints one JSON line: name, archive, version, built (true when it was
built by this run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: what the wheel is built from (relative to --source); everything else is left out
SOURCES = ("pyproject.toml", "LICENSE", "README.md", "calico_lib")
SKIP_DIRS = {"__pycache__"}
PACKAGE = "calico-docker"


def source_files(source: Path) -> list[Path]:
    files = []
    for name in SOURCES:
        path = source / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                files.extend(Path(root) / n for n in sorted(names)
                             if not n.endswith((".pyc", ".pyo")))
    if not (source / "pyproject.toml").is_file():
        raise SystemExit(f"build_wheelhouse: no pyproject.toml in {source}")
    return files


def source_hash(source: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def base_version(pyproject: str) -> str:
    match = re.search(r'(?m)^version\s*=\s*"([^"+]+)', pyproject)
    if not match:
        raise SystemExit("build_wheelhouse: pyproject.toml has no static version")
    return match.group(1)


def platforms(arch: str, glibc: str) -> list[str]:
    """pip --platform tags a host with this glibc runs (manylinux_2_17 .. manylinux_2_N)."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    if major != 2:
        raise SystemExit(f"build_wheelhouse: unexpected glibc version {glibc}")
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}"]


def run(argv: list[str], cwd: str | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"build_wheelhouse: {' '.join(argv)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}")


def build(source: Path, files: list[Path], version: str, target: Path, args) -> None:
    wheels = target
    wheels.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="calico-wheel-") as tmp:
        # Build from a copy: the source may be read-only (an installed collection), and an
        # in-tree build would leave build/ and *.egg-info behind.
        tree = Path(tmp) / "src"
        for path in files:
            dest = tree / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        pyproject = (tree / "pyproject.toml").read_text(encoding="utf-8")
        pyproject = re.sub(r'(?m)^(version\s*=\s*)"[^"]*"', rf'\1"{version}"', pyproject,
                           count=1)
        (tree / "pyproject.toml").write_text(pyproject, encoding="utf-8")
        os.environ["SOURCE_DATE_EPOCH"] = "315532800"  # reproducible zip timestamps
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), *args.pip_args,
             str(tree)])
    platform_args = [a for tag in platforms(args.arch, args.glibc) for a in ("--platform", tag)]
    run([*pip, "download", "--dest", str(wheels), "--find-links", str(wheels),
         "--only-binary=:all:", "--python-version", args.python_version,
         "--implementation", "cp", *platform_args, *args.pip_args,
         f"{PACKAGE}=={version}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--python-version", required=True, help="the hosts' X.Y")
    parser.add_argument("--arch", required=True, help="the hosts' machine, e.g. x86_64")
    parser.add_argument("--glibc", default="2.36", help="the hosts' glibc X.Y")
    parser.add_argument("pip_args", nargs="*", help="extra pip arguments (after --)")
    args = parser.parse_args()
    if not re.fullmatch(r"\d+\.\d+", args.python_version):
        raise SystemExit(f"build_wheelhouse: --python-version {args.python_version!r}: use X.Y")

    source = args.source.resolve()
    files = source_files(source)
    digest = source_hash(source, files)
    version = base_version((source / "pyproject.toml").read_text(encoding="utf-8"))
    version = f"{version}+g{digest}"
    name = f"{PACKAGE}-{version.replace('+', '-')}-py{args.python_version}-{args.arch}"
    if args.pip_args:
        name += "-" + hashlib.sha256("\0".join(args.pip_args).encode()).hexdigest()[:8]
    archive = args.cache / f"{name}.tar"
    built = False
    if not archive.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=args.cache) as tmp:
            target = Path(tmp) / name
            build(source, files, version, target, args)
            partial = Path(tmp) / "partial.tar"
            with tarfile.open(partial, "w") as tar:
                for path in sorted(target.rglob("*")):
                    info = tar.gettarinfo(str(path), str(path.relative_to(tmp)))
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    if info.isfile():
                        with open(path, "rb") as handle:
                            tar.addfile(info, handle)
                    else:
                        tar.addfile(info)
            os.replace(partial, archive)  # atomic: a tar that exists is complete
        built = True
    print(json.dumps({"name": name, "archive": str(archive), "version": version,
                      "built": built}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
