"""Synthetic liver MRI studies (DICOM) with ground truth: tests, demo, benchmarks, training.

See README.md in this folder for the target rule, slice order and vendor conventions.
"""

from pipeline.phantoms.study import generate_study, phantom_axial_t2
from pipeline.phantoms.types import (
    ALL_ROLES,
    TARGET_ROLES,
    VENDORS,
    PhantomSeries,
    PhantomStudy,
    PhantomVolume,
    Vendor,
)
from pipeline.phantoms.writer import SUPPORTED_TRANSFER_SYNTAXES

__all__ = [
    "ALL_ROLES",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "TARGET_ROLES",
    "VENDORS",
    "PhantomSeries",
    "PhantomStudy",
    "PhantomVolume",
    "Vendor",
    "generate_study",
    "phantom_axial_t2",
]
