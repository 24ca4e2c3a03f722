"""``deploy/liver-agent.example.yaml`` loads, says the defaults, and shows every option of the
settings model (so it cannot fall behind ``agent/settings.py``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from agent.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "liver-agent.example.yaml"
# a commented-out option: "#" in column 0, then YAML ("#destinations:", "#  - name: pacs")
COMMENTED_OPTION = re.compile(r"^#(?:| {2,})(?:- )?[a-z_][a-z0-9_-]*:")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LIVER_AGENT"):
            monkeypatch.delenv(name)


def switched_on(text: str) -> str:
    """The example with every commented-out option uncommented."""
    return "\n".join(
        line[1:] if COMMENTED_OPTION.match(line) else line for line in text.splitlines()
    )


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``)."""
    candidates = [annotation, *get_args(annotation)]
    if get_origin(annotation) is list:
        candidates = list(get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def missing_options(model: type[BaseModel], data: Any, where: str = "") -> list[str]:
    """Fields of ``model`` (recursively, list items included) that ``data`` does not set."""
    items = data if isinstance(data, list) else [data]
    mappings = [item for item in items if isinstance(item, dict)]
    missing = []
    for name, info in model.model_fields.items():
        path = f"{where}{name}"
        present = [m[name] for m in mappings if name in m]
        if not present:
            missing.append(path)
            continue
        sub = _model_of(info.annotation)
        if sub is not None:
            values = [v for p in present for v in (p if isinstance(p, list) else [p])]
            missing += missing_options(sub, values, f"{path}.")
    return missing


def test_example_loads_and_states_the_defaults(tmp_path: Path) -> None:
    loaded = load_settings(EXAMPLE)
    defaults = load_settings(None)
    assert loaded.model_dump() == defaults.model_dump()


def test_every_option_is_shown(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    data = yaml.safe_load(switched_on(text))
    assert missing_options(Settings, data) == []
    # with the examples switched on the file is still valid settings
    on = tmp_path / "all-options.yaml"
    on.write_text(switched_on(text))
    settings = load_settings(on)
    assert [d.name for d in settings.destinations] == ["pacs", "dicomweb", "orthanc-web"]
    assert settings.dicom.allowed_callers[0].ae_title == "ORTHANC"
    assert str(settings.model.cache_dir) == "/var/cache/liver-agent"


def test_the_coverage_check_notices_a_missing_option() -> None:
    data = yaml.safe_load(switched_on(EXAMPLE.read_text()))
    del data["completion"]["quiet_seconds"]
    del data["destinations"][0]["send"]["sc"]
    assert missing_options(Settings, data) == ["completion.quiet_seconds", "destinations.send.sc"]
