"""Loads the two networks once per process, in the background, for the workers.

A task without a configured bundle uses its DEMO bundle (built on first use through
:mod:`pipeline.demo_bundles`, the one door to the training code). The bundles come from the
model store's choice (``liver-agent model use``) where there is one, else from the settings
(:func:`agent.model_store.serving_bundles`). ``get`` notices a new choice (``in-use.json``
rewritten) and loads the new pair for the job that asks: a running ``serve`` switches models
between jobs, without a restart.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import AgentError, ModelUnavailableError
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
        self._stamp: bytes | None = None  # model store choice the models follow
        self._switch = threading.Lock()

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
        from agent.model_store import serving_bundles
        from pipeline.demo_bundles import bundle_paths

        segmentation, classification = serving_bundles(self.settings)
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
            self._stamp = self._store_stamp()
            segmentation, classification = self.bundle_paths()
            self._models = Models.load(
                segmentation,
                classification,
                device=self.settings.device,
                runtime=self.settings.runtime,
                cache=self.settings.cache_dir,
            )
            logger.info(
                "models loaded: %s %s (%s), %s %s (%s)",
                self._models.segmentation.info.name,
                self._models.segmentation.info.version,
                getattr(self._models.segmentation, "runtime", "?"),
                self._models.classification.info.name,
                self._models.classification.info.version,
                getattr(self._models.classification, "runtime", "?"),
            )
        except PipelineError as err:
            self._error = f"{err.code}: {err.message}"
            logger.error("cannot load the model bundles: %s", self._error)
        except OSError as err:
            self._error = f"bundle_unreadable: {err}"
            logger.error("cannot load the model bundles: %s", self._error)
        except AgentError as err:
            self._error = f"{err.code}: {err.message}"
            logger.error("cannot load the model bundles: %s", self._error)
        finally:
            self._done.set()

    def _store_stamp(self) -> bytes | None:
        from agent.model_store import ModelStore

        return ModelStore(self.settings.store).selection_stamp()

    def _follow_store(self) -> None:
        """Load the pair the model store now chooses, if the choice changed since the models
        were loaded. A pair that does not load leaves the current models serving (logged)."""
        from pipeline.errors import PipelineError
        from pipeline.run import Models

        if self._stamp == self._store_stamp():
            return
        with self._switch:
            stamp = self._store_stamp()
            if stamp == self._stamp:
                return
            try:
                segmentation, classification = self.bundle_paths()
                models = Models.load(
                    segmentation,
                    classification,
                    device=self.settings.device,
                    runtime=self.settings.runtime,
                    cache=self.settings.cache_dir,
                )
            except (PipelineError, AgentError, OSError) as err:
                logger.error("model store choice changed but cannot be loaded: %s", err)
                self._stamp = stamp  # do not retry on every job; the next 'model use' will
                return
            self._models, self._error, self._stamp = models, None, stamp
            logger.info(
                "switched models: %s %s, %s %s",
                models.segmentation.info.name,
                models.segmentation.info.version,
                models.classification.info.name,
                models.classification.info.version,
            )

    def get(self, timeout: float | None = None) -> Models:
        """The loaded models; waits for loading. Raises ModelUnavailableError on failure."""
        self.start()
        if not self._done.wait(timeout):
            raise ModelUnavailableError("model_loading", "the model bundles are still loading")
        self._follow_store()
        if self._models is None:
            raise ModelUnavailableError("model_unavailable", self._error or "no models")
        return self._models
