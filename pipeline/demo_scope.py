"""Where the DEMO networks may speak: the marker the phantom generator writes into every instance
of a phantom study, and the rule that keeps DEMO bundles to such studies.

The marker is a private data element block (PS3.5 7.8.1): private creator
``LIVER-AGENT PHANTOM`` reserves a block in group 0009, and its element ``xx01`` (LO) holds
:data:`PHANTOM_MARKER_VALUE`. A private block is the standard place for an implementation's own
data; it survives C-STORE, STOW-RS and Orthanc unchanged, and a PACS or anonymiser that strips
private elements makes the study "not a phantom", which fails safe (the DEMO networks then say
nothing). A study counts as a phantom only when every instance of the chosen series and the
study's reference header carry the marker.

A DEMO segmentation bundle evaluates phantom studies only: any other study is not evaluated
(:data:`DEMO_SEGMENTATION_REFUSED`). A DEMO classifier paired with a real segmentation bundle:
the segmentation (SEG, liver measurements) still goes out, but there is no cirrhosis finding
(:func:`demo_finding_withheld` says why, and the SR and SC say so in words).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

PHANTOM_PRIVATE_GROUP = 0x0009
PHANTOM_PRIVATE_CREATOR = "LIVER-AGENT PHANTOM"
PHANTOM_MARKER_OFFSET = 0x01
PHANTOM_MARKER_VALUE = "SYNTHETIC PHANTOM liver-agent/1"

DEMO_SEGMENTATION_REFUSED = "demo_model_real_study"
"""Reason code of a study a DEMO segmentation bundle refuses (not one of the project's phantoms)."""

HOW_TO_GET_A_REAL_MODEL = (
    "build a real segmentation model with `liver-agent model build-chaos --data DIR --out DIR` "
    "(CHAOS data, research use only) or install your site's bundle, and set "
    "model.segmentation (and model.classification) in the settings"
)


def mark_phantom(ds: Dataset) -> None:
    """Write the phantom marker (private block ``LIVER-AGENT PHANTOM``, group 0009) in ``ds``."""
    block = ds.private_block(PHANTOM_PRIVATE_GROUP, PHANTOM_PRIVATE_CREATOR, create=True)
    block.add_new(PHANTOM_MARKER_OFFSET, "LO", PHANTOM_MARKER_VALUE)


def is_phantom(ds: Dataset) -> bool:
    """Whether ``ds`` carries the phantom marker (explicit or implicit VR, any block slot)."""
    try:
        block = ds.private_block(PHANTOM_PRIVATE_GROUP, PHANTOM_PRIVATE_CREATOR)
        value = block[PHANTOM_MARKER_OFFSET].value
    except (KeyError, ValueError):
        return False
    if isinstance(value, bytes):  # implicit VR: an unknown private element reads as UN bytes
        value = value.decode("ascii", errors="replace")
    return str(value).strip(" \0") == PHANTOM_MARKER_VALUE


def is_phantom_study(reference: Dataset, series: Sequence[Dataset]) -> bool:
    """Whether the study is one of the project's phantoms: the reference header and every
    instance of the chosen series carry the marker."""
    return bool(series) and is_phantom(reference) and all(is_phantom(h) for h in series)


def demo_segmentation_refusal() -> str:
    """The "not evaluated" reason of a real study sent to a DEMO segmentation bundle."""
    return (
        "the DEMO segmentation model was trained on synthetic phantoms and evaluates only the "
        "project's own phantom studies; this study is not one, so no result is given. To "
        f"evaluate real studies, {HOW_TO_GET_A_REAL_MODEL}"
    )


def demo_finding_withheld() -> str:
    """Why a DEMO classifier gives no cirrhosis finding on a real study."""
    return (
        "no cirrhosis finding: the classification model is a DEMO model trained on synthetic "
        "phantoms and gives findings only on the project's own phantom studies. Install a "
        "classification bundle trained on labelled data of your site and set "
        "model.classification in the settings"
    )
