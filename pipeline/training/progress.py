"""Rich progress bars for training: one for epochs, one for the batches of the current epoch."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """Epoch and batch bars with the loss and the validation metric; silent when disabled."""

    def __init__(self, epochs: int, *, enabled: bool, title: str, console: Console | None = None):
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
            transient=False,
        )
        self._epochs = self._progress.add_task(title, total=epochs, info="")
        self._batches: TaskID | None = None

    def __enter__(self) -> TrainProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def start_epoch(self, epoch: int, batches: int) -> None:
        if self._batches is not None:
            self._progress.remove_task(self._batches)
        self._batches = self._progress.add_task(f"  epoch {epoch}", total=batches, info="")

    def batch(self, loss: float) -> None:
        if self._batches is not None:
            self._progress.update(self._batches, advance=1, info=f"loss {loss:.4f}")

    def end_epoch(self, info: str) -> None:
        self._progress.update(self._epochs, advance=1, info=info)
        if self.enabled and not self._progress.console.is_terminal:
            # Live bars do not render into a log file: one line per epoch instead.
            done = int(self._progress.tasks[self._epochs].completed)
            self._progress.console.print(f"epoch {done}: {info}", highlight=False)

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message, highlight=False)
