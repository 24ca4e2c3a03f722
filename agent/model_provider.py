"""Loads the two networks once per process, in the background, for the workers.

A task without a configured bundle uses its DEMO bundle (built on first use through
:mod:`pipeline.demo_bundles`, the one door to the training code).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ModelUnavailableError
from agent.settings import ModelSettings

if TYPE_CHECKING:
    from pipeline.run import Models

logger = logging.getLogger(__name__)


class ModelProvider:
    """Loads the model bundles on a thread; ``get`` waits for them."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self._models: Models | None = None
        self._error: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._models is not None

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def models(self) -> Models | None:
        return self._models

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
            self._thread.start()

    def bundle_paths(self) -> tuple[Path, Path]:
        """The configured bundles; a task without one gets its DEMO bundle (built on first use)."""
        from pipeline.demo_bundles import bundle_paths

        segmentation, classification = self.settings.segmentation, self.settings.classification
        if segmentation is None or classification is None:
            logger.warning(
                "no %s bundle configured: using the DEMO bundle (synthetic training data, "
                "evaluates only the project's phantom studies); building it on first use under %s",
                " or ".join(
                    task
                    for task, path in (
                        ("segmentation", segmentation),
                        ("classification", classification),
                    )
                    if path is None
                ),
                self.settings.cache_dir,
            )
        return bundle_paths(segmentation, classification, self.settings.cache_dir)

    def _load(self) -> None:
        from pipeline.errors import PipelineError
        from pipeline.run import Models

        try:
            segmentation, classification = self.bundle_paths()
            self._models = Models.load(segmentation, classification, device=self.settings.device)
            logger.info(
                "models loaded: %s %s, %s %s",
                self._models.segmentation.info.name,
                self._models.segmentation.info.version,
                self._models.classification.info.name,
                self._models.classification.info.version,
            )
        except PipelineError as err:
            self._error = f"{err.code}: {err.message}"
            logger.error("cannot load the model bundles: %s", self._error)
        except OSError as err:
            self._error = f"bundle_unreadable: {err}"
            logger.error("cannot load the model bundles: %s", self._error)
        finally:
            self._done.set()

    def get(self, timeout: float | None = None) -> Models:
        """The loaded models; waits for loading. Raises ModelUnavailableError on failure."""
        self.start()
        if not self._done.wait(timeout):
            raise ModelUnavailableError("model_loading", "the model bundles are still loading")
        if self._models is None:
            raise ModelUnavailableError("model_unavailable", self._error or "no models")
        return self._models
