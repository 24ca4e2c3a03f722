"""``liver-agent model install / list / use``: bundles are checked and copied into the store with
their SHA-256 (checked here with coreutils ``sha256sum -c``), broken ones are refused with the
reason, and the chosen bundle serves the next job of a running provider without a restart."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import app
from agent.model_provider import ModelProvider
from agent.model_store import ModelStore, serving_bundles
from agent.settings import ModelSettings
from pipeline.bundle import load_bundle, save_bundle
from tests.bundles import write_test_bundles
from tests.cli_output import unwrapped

CLS_NAME = "test-classification-untrained"
pytestmark = pytest.mark.slow  # ResNet50 bundles (94 MB) hashed, copied and loaded


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVER_AGENT_CONFIG", raising=False)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test segmentation bundle and two classifiers (versions 0-test and 1-test)."""
    folder = tmp_path_factory.mktemp("bundles")
    seg, cls = write_test_bundles(folder)
    first = load_bundle(cls)
    manifest = first.manifest.model_dump(mode="json")
    manifest["version"] = "1-test"
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in first.state_dict.items()}
    save_bundle(folder / "cls-v1", manifest, state)
    return {"seg": seg, "cls": cls, "cls_v1": folder / "cls-v1"}


def _config(tmp_path: Path, **model: object) -> Path:
    file = tmp_path / "liver-agent.yaml"
    data = {"model": {"store": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")}}
    data["model"].update({k: str(v) for k, v in model.items()})
    file.write_text(yaml.safe_dump(data))
    return file


def _cli(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_install_copies_the_bundle_with_its_checksums(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    config = _config(tmp_path)
    code, out = _cli("model", "install", bundles["cls"], "--config", config)
    assert code == 0, out
    target = tmp_path / "store" / CLS_NAME / "0-test"
    assert "installed:" in unwrapped(out)
    assert str(target) in unwrapped(out)
    for name in ("manifest.json", "weights.safetensors"):
        source = (bundles["cls"] / name).read_bytes()
        assert (target / name).read_bytes() == source
        assert (
            f"{hashlib.sha256(source).hexdigest()}  {name}" in (target / "SHA256SUMS").read_text()
        )
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=target, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert load_bundle(target).manifest.name == CLS_NAME
    code, out = _cli("model", "install", bundles["cls"], "--config", config)
    assert code == 0
    assert "already installed" in unwrapped(out)
    history = [
        json.loads(line) for line in (tmp_path / "store" / "history.jsonl").read_text().splitlines()
    ]
    assert [h["action"] for h in history] == ["install"]  # the second install changed nothing
    assert history[0]["actor"].startswith("cli:")


def test_a_broken_bundle_is_refused_with_the_reason(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    config = _config(tmp_path)
    damaged = tmp_path / "damaged"
    shutil.copytree(bundles["cls"], damaged)
    weights = damaged / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    code, out = _cli("model", "install", damaged, "--config", config)
    assert code == 1
    text = unwrapped(out)
    assert "cannot be installed" in text
    assert "does not match the manifest" in text
    assert "[bundle_broken]" in text
    assert not (tmp_path / "store" / CLS_NAME).exists()

    (damaged / "manifest.json").unlink()
    code, out = _cli("model", "install", damaged, "--config", config)
    assert code == 1
    assert "manifest.json is missing" in unwrapped(out)

    # same name and version, other weights: refused, the installed one is kept
    assert _cli("model", "install", bundles["cls"], "--config", config)[0] == 0
    impostor = tmp_path / "impostor"
    bundle = load_bundle(bundles["cls_v1"])
    manifest = bundle.manifest.model_dump(mode="json")
    manifest["version"] = "0-test"
    save_bundle(impostor, manifest, bundle.state_dict)
    code, out = _cli("model", "install", impostor, "--config", config)
    assert code == 1
    assert "already installed with other content" in unwrapped(out)
    assert "[bundle_conflict]" in unwrapped(out)
    installed = tmp_path / "store" / CLS_NAME / "0-test" / "weights.safetensors"
    assert installed.read_bytes() == (bundles["cls"] / "weights.safetensors").read_bytes()


def test_use_switches_the_serving_bundle_and_list_shows_it(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    config = _config(tmp_path, classification=bundles["cls"])
    for bundle in (bundles["cls"], bundles["cls_v1"], bundles["seg"]):
        assert _cli("model", "install", bundle, "--config", config)[0] == 0
    code, out = _cli("model", "use", CLS_NAME, "9-test", "--config", config)
    assert code == 1
    assert "9-test is not installed" in unwrapped(out)
    assert "1-test" in unwrapped(out)  # says what is installed

    settings = ModelSettings(store=tmp_path / "store", classification=bundles["cls"])
    assert serving_bundles(settings) == (None, bundles["cls"])  # settings until a choice
    code, out = _cli("model", "use", CLS_NAME, "1-test", "--config", config)
    assert code == 0, out
    assert "classification: test-classification-untrained 1-test" in unwrapped(out)
    assert "no restart needed" in unwrapped(out)
    chosen = tmp_path / "store" / CLS_NAME / "1-test"
    assert serving_bundles(settings) == (None, chosen)

    code, out = _cli("model", "list", "--json", "--config", config)
    assert code == 0
    data = json.loads(out)
    rows = {(m["name"], m["version"]): m for m in data["models"]}
    assert set(rows) == {
        (CLS_NAME, "0-test"),
        (CLS_NAME, "1-test"),
        ("test-segmentation-untrained", "0-test"),
    }
    assert rows[(CLS_NAME, "1-test")]["in_use"] is True
    assert rows[(CLS_NAME, "0-test")]["in_use"] is False
    assert data["in_use"]["classification"]["version"] == "1-test"
    assert data["serving"]["classification"] == str(chosen)
    assert data["serving"]["segmentation"] is None  # DEMO

    code, out = _cli("model", "list", "--config", config)
    assert code == 0
    text = unwrapped(out)
    assert f"{CLS_NAME} 1-test classification yes" in text
    assert f"{CLS_NAME} 0-test classification 20" in text  # created, not in use
    assert "classification: " + str(chosen) + " (from the model store (model use))" in text
    assert "segmentation: DEMO (from the DEMO bundle)" in text

    code, out = _cli("model", "use", "--clear", "classification", "--config", config)
    assert code == 0
    assert "no longer test-classification-untrained 1-test" in unwrapped(out)
    assert serving_bundles(settings) == (None, bundles["cls"])


def test_a_running_provider_serves_the_chosen_bundle_from_the_next_job_on(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "store")
    store.install(bundles["cls_v1"], actor="test")
    settings = ModelSettings(
        store=tmp_path / "store",
        segmentation=bundles["seg"],
        classification=bundles["cls"],
        device="cpu",  # type: ignore[arg-type]
        cache_dir=tmp_path / "cache",
    )
    provider = ModelProvider(settings)
    before = provider.get(timeout=300)
    assert before.classification.info.version == "0-test"
    assert provider.get(timeout=0) is before  # nothing changed: nothing reloaded

    store.use(CLS_NAME, "1-test", actor="test")
    after = provider.get(timeout=0)
    assert after is not before
    assert after.classification.info.version == "1-test"
    assert after.segmentation.info.name == "test-segmentation-untrained"
    # the pair a job started with is untouched: it finishes with the models it had
    assert before.classification.info.version == "0-test"
    assert provider.get(timeout=0) is after

    # a chosen bundle damaged after 'model use' does not load: the current pair keeps serving
    weights = tmp_path / "store" / CLS_NAME / "1-test" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    store.clear("classification", actor="test")
    (tmp_path / "store" / "in-use.json").write_text(
        json.dumps({"classification": {"name": CLS_NAME, "version": "1-test", "at": "x",
                                       "actor": "test"}})
    )  # fmt: skip
    assert provider.get(timeout=0) is after
    assert provider.error is None
