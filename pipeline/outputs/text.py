"""Plain-language statements and SR context items shared by the SR, not-evaluated SR and SC."""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pipeline.outputs.identity import MANUFACTURER, device_serial_number, device_uid, model_name
from pipeline.results import Classification, ModelInfo

#: TID 1500 row 12: container of free-text / coded qualitative evaluations of the whole report.
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)


def text_item(name: Code | hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    """A TEXT content item in a CONTAINS relationship."""
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def device_observer(model: ModelInfo | None) -> hd.sr.ObserverContext:
    """TID 1002 observer context: the agent running ``model`` as a device (TID 1004)."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(model),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=model_name(model),
            serial_number=device_serial_number(model),
        ),
    )


def device_observation_context(model: ModelInfo | None) -> hd.sr.ObservationContext:
    """TID 1001 observation context whose observer is the agent running ``model`` (TID 1004)."""
    return hd.sr.ObservationContext(observer_device_context=device_observer(model))


def finding_sentence(classification: Classification) -> str:
    """E.g. "Cirrhosis of liver: PRESENT (probability 0.87, threshold 0.50)"."""
    verdict = "PRESENT" if classification.present else "ABSENT"
    return (
        f"Cirrhosis of liver: {verdict} (probability {classification.probability:.2f}, "
        f"threshold {classification.threshold:.2f})"
    )


def slice_sentence(image: Dataset) -> str:
    """Where a reader finds the caudate-level slice: series number, description, image number."""
    series = image.get("SeriesNumber", "?")
    description = str(image.get("SeriesDescription", "") or "")
    instance = image.get("InstanceNumber", "?")
    return f"Caudate-level slice: series {series} '{description}', image {instance}"


def model_sentence(model: ModelInfo) -> str:
    """E.g. "classification model liver-cls 1.2.0 (DEMO)"."""
    demo = " (DEMO)" if model.demo else ""
    return f"{model.task} model {model.name} {model.version}{demo}"


def models_sentence(*models: ModelInfo | None) -> str:
    """The models that made the result, e.g. "Models: classification model x 1.0; ..."."""
    named = [model_sentence(m) for m in models if m is not None]
    return "Models: " + ("; ".join(named) if named else "none")
