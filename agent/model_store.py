"""The agent's model store (settings ``model.store``): installed bundles and which one serves.

Layout::

    <store>/<name>/<version>/manifest.json, weights.safetensors, SHA256SUMS
    <store>/in-use.json      the bundle serving each task, chosen with ``model use``
    <store>/history.jsonl    every install and switch, appended (who, when, what)

``install`` checks a bundle (manifest, checksums, weights) before copying it, copies it into a
temporary folder, checks the copy again and renames it into place, so a half-copied bundle is
never seen. ``SHA256SUMS`` (``sha256sum -c`` format) holds the checksum of each file.

Which bundle serves a task: the store's choice (``in-use.json``) when there is one, else the
settings (``model.segmentation`` / ``model.classification``), else the DEMO bundle. A running
``serve`` compares ``in-use.json`` before each job and loads the newly chosen pair for the next
job (:class:`agent.model_provider.ModelProvider`); no restart is needed and no job is lost: a
job already running finishes with the models it started with, and each job records the model
that made its result.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.settings import ModelSettings

logger = logging.getLogger(__name__)

IN_USE = "in-use.json"
HISTORY = "history.jsonl"
SUMS = "SHA256SUMS"
TASKS = ("segmentation", "classification")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class ModelStoreError(AgentError):
    """A store operation refused: ``bundle_broken``, ``bundle_name_invalid``,
    ``bundle_conflict``, ``model_not_installed``, ``store_unreadable``."""


@dataclass(frozen=True)
class InstalledModel:
    """One bundle in the store."""

    name: str
    version: str
    task: str
    demo: bool
    path: Path
    weights_sha256: str
    created: str
    metrics: dict[str, float]
    problem: str | None = None  # why the entry cannot be used (unreadable manifest)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "demo": self.demo,
            "path": str(self.path),
            "weights_sha256": self.weights_sha256,
            "created": self.created,
            "metrics": self.metrics,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class InUse:
    """The store's choice for one task: who chose it and when."""

    task: str
    name: str
    version: str
    at: str
    actor: str


def _sha256_file(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(file: Path, text: str) -> None:
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(file)
    _fsync_dir(file.parent)


class ModelStore:
    """The bundles under ``root`` and the choice of the serving ones."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- reading -------------------------------------------------------------------------

    def folder(self, name: str, version: str) -> Path:
        """Where bundle ``name`` ``version`` lives (refuses names that are not path-safe)."""
        for label, value in (("name", name), ("version", version)):
            if not _PART.match(value) or value in (".", ".."):
                raise ModelStoreError(
                    "bundle_name_invalid",
                    f"bundle {label} {value!r} cannot name a folder in the model store (letters, "
                    "digits and . _ + - only, up to 128 characters)",
                )
        return self.root / name / version

    def installed(self) -> list[InstalledModel]:
        """Every bundle in the store, by name and version (manifests read, weights not)."""
        from pipeline.bundle import MANIFEST, WEIGHTS, read_manifest
        from pipeline.errors import PipelineError

        found: list[InstalledModel] = []
        if not self.root.is_dir():
            return found
        for manifest_file in sorted(self.root.glob(f"*/*/{MANIFEST}")):
            folder = manifest_file.parent
            try:
                m = read_manifest(folder)
            except PipelineError as err:
                found.append(
                    InstalledModel(
                        folder.parent.name,
                        folder.name,
                        "?",
                        False,
                        folder,
                        "",
                        "",
                        {},
                        problem=f"{err.message} [{err.code}]",
                    )
                )
                continue
            found.append(
                InstalledModel(
                    name=m.name,
                    version=m.version,
                    task=m.task,
                    demo=m.demo,
                    path=folder,
                    weights_sha256=m.weights.get(WEIGHTS, ""),
                    created=m.created,
                    metrics=dict(m.training.metrics),
                )
            )
        return found

    def find(self, name: str, version: str) -> InstalledModel:
        """The installed bundle ``name`` ``version``; ``model_not_installed`` otherwise."""
        folder = self.folder(name, version)
        for model in self.installed():
            if model.path == folder:
                return model
        known = sorted({f"{m.name} {m.version}" for m in self.installed()})
        raise ModelStoreError(
            "model_not_installed",
            f"{name} {version} is not installed in {self.root} (installed: "
            f"{', '.join(known) or 'none'}); install it with 'liver-agent model install BUNDLE'",
        )

    def in_use(self) -> dict[str, InUse]:
        """The store's choice per task (empty when ``model use`` was never run)."""
        file = self.root / IN_USE
        if not file.is_file():
            return {}
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            return {task: InUse(task=task, **data[task]) for task in TASKS if task in data}
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ModelStoreError(
                "store_unreadable", f"{file} is damaged ({err}); run 'liver-agent model use' again"
            ) from err

    def selection_stamp(self) -> bytes | None:
        """The content of ``in-use.json`` (a few hundred bytes, read before each job): it
        changes with every choice; None without one."""
        try:
            return (self.root / IN_USE).read_bytes()
        except FileNotFoundError:
            return None

    # -- changing ------------------------------------------------------------------------

    def install(self, bundle_dir: Path, *, actor: str) -> tuple[InstalledModel, bool]:
        """Check and copy a bundle into the store; returns it and whether it was new.

        The same bundle installed twice is kept once. Another bundle with the same name and
        version is refused (``bundle_conflict``): give it another version.

        Raises
        ------
        ModelStoreError
            ``bundle_broken`` (the bundle does not load: missing files, a bad manifest field,
            a checksum mismatch, weights that do not fit), ``bundle_conflict``,
            ``bundle_name_invalid``.
        """
        from pipeline.bundle import MANIFEST, load_bundle
        from pipeline.errors import PipelineError

        try:
            bundle = load_bundle(bundle_dir)
        except PipelineError as err:
            raise ModelStoreError(
                "bundle_broken", f"{bundle_dir} cannot be installed: {err.message} [{err.code}]"
            ) from err
        m = bundle.manifest
        target = self.folder(m.name, m.version)
        files = [MANIFEST, *m.weights]
        sums = {f: _sha256_file(bundle_dir / f) for f in files}
        if target.exists():
            existing = self._read_sums(target)
            if existing == sums:
                return self.find(m.name, m.version), False
            raise ModelStoreError(
                "bundle_conflict",
                f"{m.name} {m.version} is already installed with other content; give the new "
                "bundle another version (train with --version) instead of replacing one that "
                "jobs may have used",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".install-{m.version}.", dir=target.parent))
        try:
            for f in files:
                shutil.copyfile(bundle_dir / f, tmp / f)
                with (tmp / f).open("rb") as fh:
                    os.fsync(fh.fileno())
            copied = {f: _sha256_file(tmp / f) for f in files}
            if copied != sums:
                raise ModelStoreError(
                    "bundle_broken", f"{bundle_dir}: the copy differs from the source; try again"
                )
            (tmp / SUMS).write_text(
                "".join(f"{digest}  {f}\n" for f, digest in sums.items()), encoding="utf-8"
            )
            load_bundle(tmp)  # the copy loads, checksums and all
            tmp.rename(target)
            _fsync_dir(target.parent)
        except PipelineError as err:
            raise ModelStoreError(
                "bundle_broken", f"the copy of {bundle_dir} does not load: {err.message}"
            ) from err
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._log(
            {
                "action": "install",
                "name": m.name,
                "version": m.version,
                "actor": actor,
                "task": m.task,
                "weights_sha256": sums[files[1]] if len(files) > 1 else "",
            }
        )
        logger.info("installed bundle %s %s (%s) in %s", m.name, m.version, m.task, target)
        return self.find(m.name, m.version), True

    def use(self, name: str, version: str, *, actor: str) -> tuple[InstalledModel, InUse | None]:
        """Make the installed bundle ``name`` ``version`` serve its task; returns it and the
        choice it replaced (None when the task followed the settings).

        Raises
        ------
        ModelStoreError
            ``model_not_installed``, ``bundle_broken`` (it no longer loads).
        """
        from pipeline.bundle import load_bundle
        from pipeline.errors import PipelineError

        model = self.find(name, version)
        try:
            load_bundle(model.path)
        except PipelineError as err:
            raise ModelStoreError(
                "bundle_broken",
                f"{name} {version} in the store does not load: {err.message} [{err.code}]; "
                "install it again under another version",
            ) from err
        current = self.in_use()
        previous = current.get(model.task)
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        choice = InUse(task=model.task, name=name, version=version, at=at, actor=actor)
        current[model.task] = choice
        self._write_in_use(current)
        self._log(
            {"action": "use", "name": name, "version": version, "task": model.task, "actor": actor}
        )
        logger.info("model use: %s %s serves %s", name, version, model.task)
        return model, previous

    def clear(self, task: str, *, actor: str) -> InUse | None:
        """Forget the store's choice for ``task`` (the settings, else DEMO, serve it again)."""
        current = self.in_use()
        previous = current.pop(task, None)
        if previous is not None:
            self._write_in_use(current)
            self._log({"action": "clear", "task": task, "actor": actor})
        return previous

    def _write_in_use(self, choices: dict[str, InUse]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {
            task: {"name": c.name, "version": c.version, "at": c.at, "actor": c.actor}
            for task, c in choices.items()
        }
        _write_atomic(self.root / IN_USE, json.dumps(data, indent=2) + "\n")

    def _read_sums(self, folder: Path) -> dict[str, str] | None:
        try:
            lines = (folder / SUMS).read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        sums = {}
        for line in lines:
            digest, _, name = line.partition("  ")
            sums[name] = digest
        return sums

    def _log(self, entry: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        entry = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **entry}
        with (self.root / HISTORY).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def serving_bundles(settings: ModelSettings) -> tuple[Path | None, Path | None]:
    """The segmentation and classification bundle folders to serve: the store's choice per
    task, else the settings; None where neither names one (the DEMO bundle then serves).

    Raises
    ------
    ModelStoreError
        ``store_unreadable`` (a damaged ``in-use.json``).
    """
    store = ModelStore(settings.store)
    chosen = store.in_use()
    paths: dict[str, Path | None] = {
        "segmentation": settings.segmentation,
        "classification": settings.classification,
    }
    for task, choice in chosen.items():
        paths[task] = store.folder(choice.name, choice.version)
    return paths["segmentation"], paths["classification"]
