"""Podman for the container tests: build the image with deploy/build-image.sh, run containers on
the host's network, say why containers cannot run here (the tests then skip)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "deploy" / "build-image.sh"
# the same defaults as deploy/build-image.sh (crun fails on hybrid cgroups; podman's default
# ulimits are above what a process without CAP_SYS_RESOURCE may set)
FLAGS = shlex.split(os.environ.get("PODMAN_FLAGS", "--runtime runc --cgroup-manager cgroupfs"))
ULIMITS = shlex.split(
    os.environ.get("PODMAN_ULIMITS", "--ulimit nofile=4096:4096 --ulimit nproc=4096:4096")
)
BASE_IMAGE = "localhost/liver-agent-base:bookworm-python3"  # what build-image.sh bootstraps


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``podman FLAGS ARGS``; on failure with ``check`` raise with its output."""
    result = subprocess.run(
        ["podman", *FLAGS, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n"
            + result.stdout[-3000:]
            + result.stderr[-3000:]
        )
    return result


def missing_requirement() -> str | None:
    """Why podman cannot build the image here before anything is built, or None.

    Podman installed, its storage usable, and a base image to build from (bootstrapping one
    needs root and debootstrap).
    """
    if shutil.which("podman") is None:
        return "podman is not installed (make system-packages installs podman, runc, debootstrap)"
    info = podman("info", check=False, timeout=60)
    if info.returncode != 0:
        return f"`podman info` fails: {info.stderr.strip()[-500:]}"
    if os.environ.get("LIVER_AGENT_BASE_IMAGE"):
        return None
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return None
    if os.geteuid() != 0:
        return f"no base image {BASE_IMAGE}, and bootstrapping one with debootstrap needs root"
    if shutil.which("debootstrap") is None:
        return f"no base image {BASE_IMAGE}, and debootstrap is not installed to bootstrap one"
    return None


def base_image() -> str:
    """The base image, bootstrapped by ``build-image.sh --base-only`` when missing."""
    return _build_script("--base-only").strip().splitlines()[-1]


def cannot_start_containers(image: str) -> str | None:
    """Why podman cannot start a container from ``image`` here, or None when it can."""
    started = podman("run", *ULIMITS, "--rm", "--network", "none", image, "true", check=False)
    if started.returncode != 0:
        return f"podman cannot start a container here: {started.stderr.strip()[-500:]}"
    return None


def build_image(tag: str) -> str:
    """Build ``tag`` with deploy/build-image.sh (podman's layer cache makes a rebuild quick);
    return the script's output."""
    return _build_script(tag)


def _build_script(*args: str) -> str:
    result = subprocess.run(
        [str(BUILD_SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} {' '.join(args)} exited {result.returncode}:\n"
            + result.stdout[-6000:]
            + result.stderr[-6000:]
        )
    return result.stdout
