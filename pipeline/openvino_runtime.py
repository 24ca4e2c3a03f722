"""Run a bundle's network with OpenVINO on the CPU (the ``openvino`` runtime of the models).

The PyTorch network is converted when the model is loaded (``openvino.convert_model`` traces it
once, about 2.5 s a network on 2 cores; a dynamic batch dimension) and compiled for the CPU with
bfloat16 inference precision where the bundle asks for bfloat16 and the processor runs it
natively (AVX512-BF16 or AMX), else float32. With a ``cache`` folder the converted model is kept
there under the SHA-256 of the bundle's weights, the input shape and the OpenVINO version, so
that the next load reads it in about 0.1 s; a changed bundle has other weights and so another
entry, and a damaged entry is converted again.

Parity with the float32 PyTorch output is measured by ``bench/inference.py`` and checked by
tests/pipeline/test_openvino_runtime.py: in float32 mask Dice >= 0.999 and probability within
0.01; in bfloat16 no further from float32 than PyTorch's own bfloat16 autocast.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.jit._trace import TracerWarning

logger = logging.getLogger(__name__)


def openvino_available() -> bool:
    """Whether the ``openvino`` package imports here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoNetwork:
    """A compiled OpenVINO model with the call signature of the PyTorch network it came from.

    Parameters
    ----------
    network
        The PyTorch module (eval mode, float32 weights).
    example
        One input batch of the right channels and size (the batch dimension is made dynamic).
    bfloat16
        Compile with bfloat16 inference precision (only where the CPU supports it).
    threads
        CPU threads for inference (the agent's torch thread count).
    cache
        Folder for converted models (``None``: convert on every load).
    weights_sha256
        The bundle's weights checksum, the cache key (required with ``cache``).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        example: torch.Tensor,
        *,
        bfloat16: bool,
        threads: int,
        cache: Path | None = None,
        weights_sha256: str = "",
    ) -> None:
        import openvino as ov

        core = ov.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.precision = "bf16" if bfloat16 and "BF16" in capabilities else "f32"
        shape = [-1, *example.shape[1:]]
        entry = None
        if cache is not None and weights_sha256:
            dims = "x".join(str(d) for d in example.shape[1:])
            version = ov.__version__.split("-")[0]
            entry = cache / "openvino" / f"{weights_sha256[:32]}-{dims}-{version}" / "model.xml"
        model = None
        if entry is not None and entry.is_file():
            try:
                model = core.read_model(str(entry))
            except (RuntimeError, OSError) as err:  # a damaged entry: convert again
                logger.warning("openvino cache entry %s unreadable (%s); converting", entry, err)
                shutil.rmtree(entry.parent, ignore_errors=True)
        if model is None:
            # OpenVINO traces the module with torch.jit.trace, which PyTorch now calls
            # deprecated in a warning each time: not news for the agent's log
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", TracerWarning)
                model = ov.convert_model(network.eval(), example_input=example, input=[shape])
            if entry is not None:
                _save_atomically(ov, model, entry)
        self._compiled: Any = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": self.precision,
                "INFERENCE_NUM_THREADS": max(1, threads),
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self._local = threading.local()
        logger.info("openvino model compiled: %s, %d threads", self.precision, threads)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        # one infer request per thread: a request is not safe to share between threads
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        result = request.infer({0: array})
        return torch.from_numpy(np.array(result[0], dtype=np.float32, copy=True))


def _save_atomically(ov: Any, model: Any, entry: Path) -> None:
    """Write the converted model into a temporary folder beside ``entry``'s and rename it into
    place, so that a reader never sees half a model (a lost race leaves the other's copy)."""
    try:
        entry.parent.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=entry.parent.parent))
        ov.save_model(model, str(staging / entry.name), compress_to_fp16=False)
        try:
            os.rename(staging, entry.parent)
        except OSError:  # another process was first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as err:
        logger.warning("openvino cache %s not writable (%s); converting on every load", entry, err)
