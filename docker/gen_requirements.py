"""Generate each image's pinned requirement set from requirements.lock, so the images never drift.

For every image below we take a few top-level packages, walk their dependency metadata (as
installed in the venv that `make` built from requirements.lock) and write the closure, pinned to
the lock's versions, to docker/<image>/requirements.txt. Packages listed in `exclude` are left out
of the file (torch: the trainer image installs the CUDA build from PyTorch's index instead), but
their own dependencies are still pinned so the image resolves the same versions we tested.

    .venv/bin/python docker/gen_requirements.py          # rewrite the files
    .venv/bin/python docker/gen_requirements.py --check  # exit 1 if a file is stale (CI / tests)
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_PATH = REPO_ROOT / "requirements.lock"
PYPROJECT_PATH = REPO_ROOT / "pyproject.toml"

# Installer tooling that `pip freeze` leaves out of the lock; a dependency on them is satisfied by
# the image's own pip/setuptools (torch asks for setuptools, for example).
INSTALLER_PACKAGES = frozenset({"pip", "setuptools", "wheel", "distribute"})

# Every image targets Linux x86_64, CPython 3.11 (the lock's platform), whatever machine runs this.
TARGET_ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.7",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.7",
    "python_version": "3.11",
    "sys_platform": "linux",
}


@dataclass(frozen=True)
class ImageSpec:
    """One image's requirement set."""

    name: str
    """Folder under docker/ that receives requirements.txt."""
    roots: tuple[str, ...]
    """Top-level requirements (PEP 508 strings; extras allowed, versions come from the lock)."""
    exclude: frozenset[str] = field(default_factory=frozenset)
    """Canonical names left out of the file (installed another way); their dependencies stay."""
    note: str = ""
    """One line written into the file's header."""


def _project() -> dict:
    return tomllib.loads(PYPROJECT_PATH.read_text())["project"]


def image_specs() -> list[ImageSpec]:
    """The images and their top-level packages; the trainer and Airflow roots come from pyproject.toml."""
    project = _project()
    return [
        ImageSpec(
            name="trainer",
            roots=tuple(project["dependencies"]),
            exclude=frozenset({"torch"}),
            note="torch is not listed: the Dockerfile installs torch==2.13.0 from PyTorch's CUDA wheel index.",
        ),
        ImageSpec(
            name="airflow",
            roots=tuple(project["optional-dependencies"]["airflow"]),
            note="apache-airflow is pinned here too, as the official image's docs ask when adding packages.",
        ),
        ImageSpec(
            name="mlflow",
            roots=("mlflow", "flask-wtf", "psycopg2-binary", "boto3"),
            note="The MLflow tracking server: PostgreSQL backend store, S3 artifact store, the basic-auth app "
            "(mlflow[auth] needs Flask-WTF).",
        ),
    ]


def read_lock(path: Path = LOCK_PATH) -> dict[str, tuple[str, str]]:
    """Map canonical name -> (name as spelled in the lock, pinned version)."""
    pins: dict[str, tuple[str, str]] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version:
            raise ValueError(f"{path}:{lineno}: expected 'name==version', got {raw!r}")
        pins[canonicalize_name(name)] = (name.strip(), version.strip())
    return pins


def _applies(marker: Marker | None, extras: frozenset[str]) -> bool:
    if marker is None:
        return True
    # A marker without `extra` evaluates the same for any value; with extras, any requested one counts.
    return any(marker.evaluate({**TARGET_ENVIRONMENT, "extra": extra}) for extra in (extras or {""}))


def resolve_closure(roots: tuple[str, ...], lock: dict[str, tuple[str, str]]) -> set[str]:
    """Canonical names of the roots and everything they need on the target platform."""
    seen_extras: dict[str, frozenset[str]] = {}
    queue = [Requirement(root) for root in roots]
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        if name in INSTALLER_PACKAGES:
            continue
        if name not in lock:
            raise LookupError(f"{req.name} is needed (via {req}) but is not pinned in {LOCK_PATH.name}")
        extras = frozenset(canonicalize_name(e) for e in req.extras)
        known = seen_extras.get(name)
        if known is not None and extras <= known:
            continue
        seen_extras[name] = (known or frozenset()) | extras
        installed = metadata.distribution(req.name)
        locked_version = lock[name][1]
        if installed.version.split("+", 1)[0] != locked_version.split("+", 1)[0]:
            raise RuntimeError(
                f"{req.name}: the venv has {installed.version} but {LOCK_PATH.name} pins {locked_version}; "
                "rebuild the venv from the lock (make test) before generating"
            )
        for dep in installed.requires or []:
            dep_req = Requirement(dep)
            if _applies(dep_req.marker, seen_extras[name]):
                queue.append(dep_req)
    return set(seen_extras)


def render(spec: ImageSpec, lock: dict[str, tuple[str, str]]) -> str:
    """The requirements.txt text for one image."""
    names = resolve_closure(spec.roots, lock) - spec.exclude
    lines = [
        f"# Generated by docker/gen_requirements.py from requirements.lock for the {spec.name} image. Do not edit.",
        "# Regenerate with: .venv/bin/python docker/gen_requirements.py",
        f"# Top-level: {', '.join(spec.roots)}",
    ]
    if spec.note:
        lines.append(f"# {spec.note}")
    lines += [f"{lock[n][0]}=={lock[n][1]}" for n in sorted(names, key=lambda n: lock[n][0].lower())]
    return "\n".join(lines) + "\n"


def output_path(spec: ImageSpec) -> Path:
    return REPO_ROOT / "docker" / spec.name / "requirements.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files and exit 1 instead of writing")
    args = parser.parse_args(argv)
    lock = read_lock()
    stale = 0
    for spec in image_specs():
        path = output_path(spec)
        text = render(spec, lock)
        current = path.read_text() if path.exists() else ""
        if text == current:
            continue
        if args.check:
            stale += 1
            rel = path.relative_to(REPO_ROOT)
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(rel), f"{rel} (expected)"))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
