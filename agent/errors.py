"""The agent's exception family; each error carries a short machine code for the job row."""

from __future__ import annotations


class AgentError(Exception):
    """Base of the agent's errors: a machine ``code`` and a sentence an admin can act on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class IngestError(AgentError):
    """An instance could not be taken in; ``status`` is the DICOM status to answer with."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(code, message)
        self.status = status


class ExportError(AgentError):
    """A result could not be delivered to a destination."""


class ModelUnavailableError(AgentError):
    """The model bundles could not be loaded (or built)."""


class HttpConfigError(AgentError):
    """The HTTP server cannot start as configured (exposure without a token, port in use)."""


class RetrieveError(AgentError):
    """A study could not be found or retrieved from a source (cohorts, on-demand requests)."""
