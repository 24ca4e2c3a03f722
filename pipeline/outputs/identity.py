"""The identity every result object shares: the equipment that made it (manufacturer, model,
software versions, contributing equipment), the new series it opens (number, description, UIDs),
and the patient/study attributes copied from the source (PS3.3 C.7.1.1, C.7.2.1, C.7.3.1,
C.7.5.1, C.12.1)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipeline.errors import PipelineError
from pipeline.results import ModelInfo

logger = logging.getLogger(__name__)

MANUFACTURER = "liver-agent"
RESEARCH_USE_ONLY = "RESEARCH USE ONLY"

#: Series numbers of the result series, chosen far from the scanners' usual 1..~100 (and 1000s).
SERIES_NUMBERS: dict[str, int] = {
    "seg": 9901,
    "sr": 9902,
    "not_evaluated_sr": 9902,
    "sc": 9903,
    "kos": 9904,
}

#: Series Description label of each kind, shown after "AI Liver".
SERIES_LABELS: dict[str, str] = {
    "seg": "SEG",
    "sr": "SR",
    "not_evaluated_sr": "SR - NOT EVALUATED",
    "sc": "SC",
    "kos": "KEY IMAGE",
}

#: Patient (C.7.1.1) and General Study (C.7.2.1) attributes copied from the source to every output.
#: All are Type 2 in the IODs we write: an attribute the source lacks is written empty.
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)

#: Optional patient/study attributes copied when the source has them.
OPTIONAL_PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "IssuerOfPatientID",
    "StudyDescription",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
)


def agent_version() -> str:
    """Return the installed liver-agent version (``"0+unknown"`` when not installed)."""
    try:
        return metadata.version("liver-agent")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def series_description(kind_label: str, *, demo: bool) -> str:
    """Series Description of a result series, e.g. ``"DEMO AI Liver SEG - RESEARCH USE ONLY"``.

    Parameters
    ----------
    kind_label
        Short object name shown after "AI Liver" ("SEG", "SR", "SC", "SR - NOT EVALUATED").
    demo
        Whether a demo bundle made the result: the description then starts with "DEMO ".
    """
    text = f"AI Liver {kind_label} - {RESEARCH_USE_ONLY}"
    return f"DEMO {text}" if demo else text


def is_demo(*models: ModelInfo | None) -> bool:
    """True when any of the models comes from a demo bundle."""
    return any(m is not None and m.demo for m in models)


def software_versions(model: ModelInfo | None, software_version: str) -> list[str]:
    """Software Versions (0018,1020) values: the bundle version, then the liver-agent version."""
    agent = f"{MANUFACTURER} {software_version}"
    return [f"{model.name} {model.version}", agent] if model is not None else [agent]


def model_name(model: ModelInfo | None) -> str:
    """Manufacturer's Model Name of an output: the bundle name (``liver-agent`` without one)."""
    return model.name if model is not None else MANUFACTURER


def device_serial_number(model: ModelInfo | None) -> str:
    """Device Serial Number: the first 16 hex digits of the bundle's weights checksum."""
    if model is None or not model.sha256:
        return "none"
    return model.sha256[:16]


def device_uid(model: ModelInfo | None) -> str:
    """A UID for the device (TID 1004) that is stable for one bundle name, version and checksum."""
    sources = [MANUFACTURER]
    if model is not None:
        sources += [model.name, model.version, model.sha256]
    return str(generate_uid(entropy_srcs=sources))


def algorithm_parameters(model: ModelInfo, extra: Iterable[str] = ()) -> list[str]:
    """TID 4019 Algorithm Parameters: architecture, extra settings, DEMO MODEL for demo bundles."""
    params = [f"architecture={model.architecture}", *extra]
    if model.demo:
        params.append("DEMO MODEL (trained on synthetic phantoms)")
    return params


def algorithm_identification(
    model: ModelInfo, extra_parameters: Iterable[str] = ()
) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification of a bundle: name, version, AI family."""
    return hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.version,
        parameters=algorithm_parameters(model, extra_parameters),
        family=codes.DCM.ArtificialIntelligence,
        manufacturer=MANUFACTURER,
    )


def contributing_equipment(
    models: Iterable[ModelInfo | None], software_version: str
) -> list[hd.ContributingEquipment]:
    """Contributing Equipment Sequence items naming each model bundle that made the object.

    The purpose is DCM 109102 "Processing Equipment" (CID 7005): the agent processed the source
    images into new instances; "Modifying Equipment" (109103) is for equipment that changed an
    existing instance. highdicom adds the acquisition equipment and itself after these.
    """
    items: list[hd.ContributingEquipment] = []
    seen: set[tuple[str, str]] = set()
    for model in models:
        if model is None or (model.name, model.version) in seen:
            continue
        seen.add((model.name, model.version))
        description = f"{model.task} model {model.name} {model.version}"
        if model.demo:
            description = f"DEMO {description}"
        items.append(
            hd.ContributingEquipment(
                manufacturer=MANUFACTURER,
                purpose_of_reference=codes.DCM.ProcessingEquipment,
                manufacturer_model_name=model.name,
                software_versions=software_versions(model, software_version),
                device_serial_number=device_serial_number(model),
                contribution_description=f"{description} - {RESEARCH_USE_ONLY}",
            )
        )
    return items


def with_patient_study(dataset: Dataset, reference: Dataset) -> Dataset:
    """A copy of ``dataset`` (sharing its elements) whose patient/study attributes all exist.

    highdicom reads the patient and study attributes of new objects from their source or evidence
    datasets, and fails on one that is missing; a Type 2 attribute absent from both ``dataset`` and
    ``reference`` is set empty.
    """
    # a new Dataset over the same elements: copy.copy(Dataset) would share (and so change) the
    # source's element dictionary
    out = Dataset({tag: dataset.get_item(tag) for tag in dataset.keys()})  # noqa: SIM118
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        out.file_meta = meta
    for keyword in PATIENT_STUDY_KEYWORDS + OPTIONAL_PATIENT_STUDY_KEYWORDS:
        if keyword in out:
            continue
        if keyword in reference:
            setattr(out, keyword, reference[keyword].value)
        elif keyword in PATIENT_STUDY_KEYWORDS:
            setattr(out, keyword, "")
    return out


def stamp_identity(
    dataset: Dataset,
    reference: Dataset,
    *,
    model: ModelInfo | None,
    software_version: str,
) -> None:
    """Set the equipment attributes and check the patient/study attributes of an output in place.

    Raises
    ------
    PipelineError
        ``output_encoding`` when the study UID of the object differs from the reference's.
    """
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword not in dataset:
            value = reference[keyword].value if keyword in reference else ""
            setattr(dataset, keyword, value)
    if str(dataset.StudyInstanceUID) != str(reference.StudyInstanceUID):
        raise PipelineError(
            "output_encoding",
            "a result object was built for another study than the one analysed; "
            "this is a bug in liver-agent, please report it",
        )
    dataset.Manufacturer = MANUFACTURER
    dataset.ManufacturerModelName = model_name(model)
    dataset.SoftwareVersions = software_versions(model, software_version)
    dataset.DeviceSerialNumber = device_serial_number(model)


def _new_uid() -> str:
    return str(generate_uid())


@dataclass(frozen=True)
class ResultIdentity:
    """Who made one result object and the new series it opens, set once for every builder.

    highdicom's ``SOPClass`` writes the modules all objects share (General Series, General
    Equipment, SOP Common, Contributing Equipment) from one set of constructor arguments; this
    object is that set, so the SEG, SR, SC, KOS and "not evaluated" SR builders pass
    ``**identity.sop_arguments()`` instead of repeating ten arguments each, and
    :meth:`stamp` finishes what highdicom leaves out.

    Attributes
    ----------
    kind
        The output kind (a key of :data:`SERIES_NUMBERS`): series number and description.
    device
        The model whose bundle is named as the device (Manufacturer's Model Name, Device Serial
        Number, first Software Versions value); None names liver-agent alone.
    models
        Every model that contributed: one Contributing Equipment item each, and "DEMO" leads the
        series description when any of them is a demo bundle.
    software_version
        The liver-agent version.
    series_instance_uid, sop_instance_uid
        Fresh UIDs of the new series and instance.
    """

    kind: str
    device: ModelInfo | None
    models: tuple[ModelInfo | None, ...]
    software_version: str
    series_instance_uid: str = field(default_factory=_new_uid)
    sop_instance_uid: str = field(default_factory=_new_uid)

    def __post_init__(self) -> None:
        if self.kind not in SERIES_NUMBERS:
            raise ValueError(f"kind must be one of {sorted(SERIES_NUMBERS)}, not {self.kind!r}")

    @property
    def demo(self) -> bool:
        """True when a demo bundle contributed."""
        return is_demo(*self.models)

    @property
    def series_number(self) -> int:
        return SERIES_NUMBERS[self.kind]

    @property
    def series_description(self) -> str:
        """E.g. ``"DEMO AI Liver SR - RESEARCH USE ONLY"``."""
        return series_description(SERIES_LABELS[self.kind], demo=self.demo)

    def sop_arguments(self) -> dict[str, Any]:
        """Keyword arguments of a highdicom SOP class constructor: series, instance, equipment.

        Software Versions gets the bundle version here (highdicom takes one value) and both
        values in :meth:`stamp`.
        """
        return {
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "sop_instance_uid": self.sop_instance_uid,
            "instance_number": 1,
            "manufacturer": MANUFACTURER,
            "manufacturer_model_name": model_name(self.device),
            "software_versions": software_versions(self.device, self.software_version)[0],
            "device_serial_number": device_serial_number(self.device),
            "series_description": self.series_description,
            "contributing_equipment": contributing_equipment(self.models, self.software_version),
        }

    def stamp(self, dataset: Dataset, reference: Dataset) -> None:
        """Set the equipment attributes and check the patient/study ones of a built object.

        Raises
        ------
        PipelineError
            ``output_encoding`` when the object belongs to another study than ``reference``.
        """
        stamp_identity(
            dataset, reference, model=self.device, software_version=self.software_version
        )
