"""The ``liver-agent`` command line: one typer app; each area registers its commands."""

from __future__ import annotations

import importlib
import os

# Before torch is imported: OpenMP threads that spin while idle steal the CPU from the
# agent's own threads (DICOM, HTTP) and from each other on small machines; measured on
# 2 cores: a pipeline run took 7.9 s spinning against 1.1 s passive.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from agent.cli._common import app

# Each module adds its commands to ``app`` in a ``register(app)`` function.
_COMMAND_MODULES = (
    "agent.cli.config_db",
    "agent.cli.phantom",
    "agent.cli.select",
    "agent.cli.model",
    "agent.cli.model_mode",
    "agent.cli.model_store",
    "agent.cli.run",
    "agent.cli.serve",
    "agent.cli.dicom",
    "agent.cli.jobs",
    "agent.cli.admin",
    "agent.cli.demo",
    "agent.cli.chaos",
    "agent.cli.feedback",
    "agent.cli.monitoring",
    "agent.cli.cohort",
    "agent.cli.request",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console entry point."""
    app()


__all__ = ["app", "main", "typer"]
