"""docker/trainer/requirements-gpu.lock (docker/gen_gpu_lock.py) stays in sync with requirements.lock
and is a complete, hashed install of the trainer image with torch's CUDA wheels."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docker"))

from gen_gpu_lock import GPU_LOCK, MAIN_LOCK, TRAINER_REQUIREMENTS, pins  # noqa: E402

# What the GPU image adds to requirements.lock: torch's CUDA runtime (and setuptools, which torch's
# Linux wheel requires but a CPU venv's freeze leaves out).
CUDA_RUNTIME = re.compile(r"^(nvidia-[a-z0-9-]+|cuda-(toolkit|bindings|pathfinder)|triton|setuptools)$")
ENTRY = re.compile(
    r"^(?P<name>[a-z0-9-]+)==(?P<version>\S+) \\\n    --hash=sha256:(?P<sha>[0-9a-f]{64})  # (?P<wheel>\S+\.whl)$",
    re.MULTILINE,
)


def entries() -> list[re.Match[str]]:
    text = GPU_LOCK.read_text()
    found = list(ENTRY.finditer(text))
    assert len(found) == text.count("==") and found, "every pin is `name==version` + one sha256 + its wheel"
    return found


def test_every_pin_has_a_hash_of_a_linux_x86_64_cpython_311_wheel():
    for entry in entries():
        wheel = entry["wheel"]
        python, abi, platform = wheel[:-len(".whl")].split("-")[-3:]
        assert platform == "any" or platform.endswith("x86_64") and "linux" in platform, wheel
        assert "cp311" in python.split(".") or abi == "abi3" or python.startswith(("py3", "py2.py3")), wheel


def test_versions_agree_with_the_main_lock_and_only_the_cuda_runtime_is_added():
    main, gpu = pins(MAIN_LOCK), pins(GPU_LOCK)
    assert {name: (main[name], gpu[name]) for name in gpu.keys() & main.keys() if main[name] != gpu[name]} == {}
    added = sorted(name for name in gpu if name not in main)
    assert all(CUDA_RUNTIME.match(name) for name in added), added
    assert gpu["torch"] == main["torch"] == "2.13.0"
    # The CUDA build: cuDNN, NCCL and cuBLAS wheels ride along with torch.
    assert {"nvidia-cudnn-cu13", "nvidia-nccl-cu13", "nvidia-cublas", "triton"} <= set(gpu)


def test_it_covers_the_whole_trainer_image():
    missing = sorted(set(pins(TRAINER_REQUIREMENTS)) - set(pins(GPU_LOCK)))
    assert missing == [], f"requirements-gpu.lock lacks {missing}: run .venv/bin/python docker/gen_gpu_lock.py"


def test_the_trainer_image_installs_only_from_it_with_hashes_required():
    dockerfile = (REPO / "docker" / "trainer" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements-gpu.lock" in dockerfile
    assert "--index-url" not in dockerfile and "requirements.txt" not in dockerfile.split("# 2.")[0].split("FROM ${PYTHON_IMAGE} AS runtime")[1]
