"""liver-agent: the DICOM and HTTP edges, scheduling, workers, CLI and settings."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("liver-agent")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
