"""``liver-agent model install BUNDLE``, ``model list``, ``model use NAME VERSION`` and
``model use --clear TASK``: the agent's model store (:mod:`agent.model_store`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agent.cli._common import ConfigOption, JsonOption, console, fail, print_json, settings_or_exit
from agent.cli.model import model_app
from agent.deployment import cli_actor
from agent.model_store import ModelStore, ModelStoreError, serving_bundles
from agent.settings import Settings

RESTART_NOTE = (
    "a running 'liver-agent serve' loads it before its next job (no restart needed); jobs "
    "already running finish with the models they started with"
)


class Task(StrEnum):
    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"


def _store(config: Path | None) -> tuple[ModelStore, Settings]:
    settings = settings_or_exit(config)
    return ModelStore(settings.model.store), settings


def register(app: typer.Typer) -> None:
    """Add ``model install``, ``model list`` and ``model use`` to the ``model`` group."""

    @model_app.command(
        "install",
        help="Check a bundle (manifest, SHA-256 of its weights, weights fit the network) and "
        "copy it into the model store (settings model.store) with a SHA256SUMS file. A broken "
        "bundle is refused with the reason; the same bundle twice is kept once.",
    )
    def model_install(
        bundle_dir: Annotated[Path, typer.Argument(help="bundle folder")],
        as_json: JsonOption = False,
        config: ConfigOption = None,
    ) -> None:
        store, _ = _store(config)
        try:
            model, new = store.install(bundle_dir, actor=cli_actor())
        except ModelStoreError as err:
            fail(escape(f"{err.message} [{err.code}]"))
        if as_json:
            print_json({**model.to_json(), "installed": new})
            return
        state = "installed" if new else "already installed"
        console.print(
            f"{state}: {escape(model.name)} {escape(model.version)} ({model.task}"
            f"{', DEMO' if model.demo else ''}) in {escape(str(model.path))}\n"
            f"  weights sha256 {model.weights_sha256}\n"
            f"  serve it with: liver-agent model use {escape(model.name)} "
            f"{escape(model.version)}",
            highlight=False,
        )

    @model_app.command("list", help="The bundles in the model store, and which ones serve.")
    def model_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
        store, settings = _store(config)
        try:
            in_use = store.in_use()
            serving = serving_bundles(settings.model)
        except ModelStoreError as err:
            fail(escape(f"{err.message} [{err.code}]"))
        models = store.installed()
        serving_paths = {p for p in serving if p is not None}
        if as_json:
            print_json(
                {
                    "store": str(store.root),
                    "models": [{**m.to_json(), "in_use": m.path in serving_paths} for m in models],
                    "in_use": {
                        task: {"name": c.name, "version": c.version, "at": c.at, "by": c.actor}
                        for task, c in in_use.items()
                    },
                    "serving": {
                        "segmentation": str(serving[0]) if serving[0] else None,
                        "classification": str(serving[1]) if serving[1] else None,
                    },
                }
            )
            return
        table = Table(title=f"model store {store.root}")
        for column in ("name", "version", "task", "in use", "created", "test acc.", "sha256"):
            table.add_column(column, no_wrap=True)
        for m in models:
            accuracy = m.metrics.get("test_accuracy")
            table.add_row(
                escape(m.name) + (" [bold red]DEMO[/]" if m.demo else ""),
                escape(m.version),
                m.task,
                "yes" if m.path in serving_paths else "",
                m.created[:19],
                "" if accuracy is None else f"{accuracy:.3f}",
                m.weights_sha256[:12] if m.problem is None else escape(m.problem),
            )
        console.print(table)
        for task, path in zip(("segmentation", "classification"), serving, strict=True):
            where = (
                "model store (model use)"
                if task in in_use
                else ("settings" if path is not None else "DEMO bundle")
            )
            console.print(
                f"{task}: {escape(str(path)) if path else 'DEMO'} (from the {where})",
                highlight=False,
            )

    @model_app.command(
        "use",
        help="Make the installed bundle NAME VERSION serve its task (segmentation or "
        "classification); it wins over the settings. --clear TASK goes back to the settings "
        "(else DEMO) for that task. " + RESTART_NOTE.capitalize() + ".",
    )
    def model_use(
        name: Annotated[str | None, typer.Argument(help="bundle name (manifest 'name')")] = None,
        version: Annotated[str | None, typer.Argument(help="bundle version")] = None,
        clear: Annotated[
            Task | None, typer.Option("--clear", help="forget the store's choice for this task")
        ] = None,
        config: ConfigOption = None,
    ) -> None:
        store, _ = _store(config)
        if clear is not None:
            if name is not None:
                fail("give either NAME VERSION or --clear TASK")
            previous = store.clear(clear.value, actor=cli_actor())
            console.print(
                f"{clear.value}: "
                + (
                    f"no longer {escape(previous.name)} {escape(previous.version)}; the settings "
                    "(else DEMO) serve it; " + RESTART_NOTE
                    if previous
                    else "the model store had no choice; nothing changed"
                ),
                highlight=False,
            )
            return
        if name is None or version is None:
            fail("give NAME VERSION of an installed bundle (see 'liver-agent model list')")
        try:
            model, previous = store.use(name, version, actor=cli_actor())
        except ModelStoreError as err:
            fail(escape(f"{err.message} [{err.code}]"))
        before = f" (was {escape(previous.name)} {escape(previous.version)})" if previous else ""
        console.print(
            f"{model.task}: {escape(model.name)} {escape(model.version)}{before}; {RESTART_NOTE}",
            highlight=False,
        )
