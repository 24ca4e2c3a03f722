"""The pipeline's exceptions. Each carries a short machine code that lands in the job row."""

from __future__ import annotations


class PipelineError(Exception):
    """A pipeline stage could not produce its result.

    Parameters
    ----------
    code
        Short machine-readable code (``unreadable_pixel_data``), stored on the job.
    message
        A sentence for an admin or a radiologist ("no axial T2-weighted series in the study").
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotEvaluatedError(PipelineError):
    """The study cannot be evaluated (no eligible series, liver not covered, ...).

    Not a fault of the agent: the job ends ``not_evaluated`` and a "not evaluated" SR says why.
    """


class BundleError(PipelineError):
    """A model bundle is missing, incomplete, or does not match its checksums."""
