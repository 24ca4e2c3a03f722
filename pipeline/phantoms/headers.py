"""DICOM headers of a phantom study: MR Image IOD (PS3.3 A.4) per study, series and image."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from pipeline.demo_scope import mark_phantom
from pipeline.phantoms.acquisition import Stack
from pipeline.phantoms.protocols import Protocol
from pipeline.phantoms.types import Vendor
from pipeline.phantoms.writer import InstanceElements, ds_str, numbers, text

_EQUIPMENT = {
    "siemens": (
        "SIEMENS",
        {1.5: "Aera", 3.0: "Skyra"},
        "syngo MR E11",
        "MRC{n:05d}",
        "Body",
        "BO1,2;SP3-5",
    ),
    "ge": (
        "GE MEDICAL SYSTEMS",
        {1.5: "SIGNA Artist", 3.0: "DISCOVERY MR750"},
        "27\\LX\\MR Software release:DV26.0_R03_1831.b",
        "GEMR{n:03d}",
        "BODY",
        "GEM Body",
    ),
    "philips": (
        "Philips Medical Systems",
        {1.5: "Ingenia", 3.0: "Ingenia"},
        "5.6.1\\5.6.1.2",
        "PHILIPS-{n:04X}",
        "B",
        "dS Torso",
    ),
}
_STUDY_DESCRIPTION = {
    "siemens": "Abdomen^Liver",
    "ge": "MRI ABDOMEN LIVER W WO CONTRAST",
    "philips": "MR Liver",
}
_BODY_PART = {"siemens": "ABDOMEN", "ge": "LIVER", "philips": "ABDOMEN"}
_AGENTS = ("Gadovist 1.0 mmol/ml", "Dotarem 0.5 mmol/ml", "MultiHance 0.5 mmol/ml")
# Private b-value elements: (group, creator, element offset, VR)
_PRIVATE_B = {
    "siemens": (0x0019, "SIEMENS MR HEADER", 0x0C, "IS"),
    "ge": (0x0043, "GEMS_PARM_01", 0x39, "IS"),
    "philips": (0x2001, "Philips Imaging DD 001", 0x03, "FL"),
}


def uid(*parts: object) -> str:
    """A UID derived from ``parts`` (pydicom root): the same parts give the same UID."""
    return str(generate_uid(entropy_srcs=["liver-agent-phantom/1", *(str(p) for p in parts)]))


@dataclass(frozen=True)
class StudyContext:
    """Study-level facts shared by every series."""

    vendor: Vendor
    field_t: float
    start: datetime
    study_uid: str
    frame_of_reference_uid: str
    key: tuple[object, ...]  # UID entropy of this study
    base: Dataset  # patient, study, equipment, frame of reference


def manufacturer_of(vendor: str) -> str:
    """The Manufacturer (0008,0070) a phantom of ``vendor`` is written with."""
    return _EQUIPMENT[vendor][0]


def study_context(
    vendor: Vendor,
    key: tuple[object, ...],
    seed: int,
    rng: np.random.Generator,
    field_t: float,
    contrast: bool,
) -> StudyContext:
    """Patient, study and equipment attributes (obviously fake patient, deterministic by seed)."""
    prng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A71]))
    start = datetime(2016, 1, 4, 7, 30) + timedelta(
        days=int(rng.integers(0, 3000)), minutes=int(rng.integers(0, 600))
    )
    age = int(prng.integers(30, 82))
    birth = start - timedelta(days=age * 365 + int(prng.integers(0, 360)))
    sex = "M" if prng.uniform() < 0.55 else "F"
    maker, models, software, station, _, _ = _EQUIPMENT[vendor]
    study_uid = uid(*key, "study")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    ds.InstanceCreationDate = start.strftime("%Y%m%d")
    ds.StudyDate = start.strftime("%Y%m%d")
    ds.StudyTime = start.strftime("%H%M%S")
    ds.AccessionNumber = f"PH{seed % 10**8:08d}"
    ds.Modality = "MR"
    ds.Manufacturer = maker
    ds.InstitutionName = "PHANTOM HOSPITAL"
    ds.ReferringPhysicianName = "REFERRER^PHANTOM"
    ds.StationName = station.format(n=int(rng.integers(1, 60000)))
    ds.StudyDescription = (
        _STUDY_DESCRIPTION[vendor]
        if contrast
        else _STUDY_DESCRIPTION[vendor].replace(" W WO CONTRAST", "")
    )
    ds.ManufacturerModelName = models[field_t]
    ds.PatientName = f"PHANTOM^SEED{seed}"
    ds.PatientID = f"PH-{seed:06d}"
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientSize = ds_str(round(float(prng.uniform(1.55, 1.95)), 2))
    ds.PatientWeight = ds_str(round(float(prng.uniform(50, 110)), 1))
    ds.BodyPartExamined = _BODY_PART[vendor]
    ds.MagneticFieldStrength = ds_str(field_t)
    ds.DeviceSerialNumber = str(int(rng.integers(10000, 99999)))
    ds.SoftwareVersions = software.split("\\") if "\\" in software else software
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.StudyID = str(int(rng.integers(1000, 99999)))
    for_uid = uid(*key, "frame-of-reference")
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    mark_phantom(ds)  # every instance says it is a synthetic phantom (pipeline.demo_scope)
    return StudyContext(vendor, field_t, start, study_uid, for_uid, key, ds)


def series_template(
    ctx: StudyContext,
    proto: Protocol,
    stack: Stack,
    series_uid: str,
    t0: datetime,
    window: tuple[float, float],
    n_images: int,
    agent_time: datetime | None,
    agent: str,
) -> Dataset:
    """Everything constant within one series (no per-image elements, no pixel data)."""
    ds = Dataset()
    ds.update(ctx.base)
    grid = stack.grid
    c = proto.contrasts[0]
    ds.ImageType = list(proto.image_type)
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = t0.strftime("%Y%m%d")
    ds.SeriesTime = t0.strftime("%H%M%S.%f")[:13]
    ds.SeriesDescription = proto.description
    ds.ScanningSequence = list(proto.scanning_sequence)
    ds.SequenceVariant = list(proto.sequence_variant)
    ds.ScanOptions = (
        list(proto.scan_options)
        if len(proto.scan_options) > 1
        else (proto.scan_options[0] if proto.scan_options else "")
    )
    ds.MRAcquisitionType = proto.acquisition
    if len(proto.sequence_names) == 1:
        ds.SequenceName = proto.sequence_names[0]
    ds.AngioFlag = "N"
    ds.SliceThickness = ds_str(grid.thickness)
    ds.RepetitionTime = ds_str(c.tr)
    if len(proto.contrasts) == 1 or proto.role in ("dwi",):
        ds.EchoTime = ds_str(c.te)
    ds.NumberOfAverages = ds_str(proto.averages)
    ds.ImagingFrequency = ds_str(round(42.577478 * ctx.field_t, 6))
    ds.ImagedNucleus = "1H"
    if len(proto.contrasts) == 1:
        ds.EchoNumbers = "1"
    if grid.shape[0] > 1 and proto.role != "localizer":
        ds.SpacingBetweenSlices = ds_str(grid.spacing)
    ds.NumberOfPhaseEncodingSteps = str(int(grid.rows * 0.8))
    ds.EchoTrainLength = str(proto.echo_train_length)
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = ds_str(
        round(100.0 * grid.rows * grid.pixel_spacing[0] / (grid.columns * grid.pixel_spacing[1]), 4)
    )
    ds.PixelBandwidth = ds_str(proto.bandwidth)
    ds.ProtocolName = proto.protocol_name
    if proto.post_contrast and agent_time is not None:
        ds.ContrastBolusAgent = agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = ds_str(7.5)
        ds.ContrastBolusStartTime = agent_time.strftime("%H%M%S")
        ds.ContrastBolusTotalDose = ds_str(7.5)
        ds.ContrastBolusIngredient = "GADOLINIUM"
    _, _, _, _, tx_coil, rx_coil = _EQUIPMENT[ctx.vendor]
    ds.TransmitCoilName = tx_coil
    ds.ReceiveCoilName = rx_coil
    ds.AcquisitionMatrix = [0, grid.columns, int(grid.rows * 0.8), 0]
    ds.InPlanePhaseEncodingDirection = proto.phase_encoding
    ds.FlipAngle = ds_str(c.flip)
    ds.VariableFlipAngleFlag = "N"
    ds.SAR = ds_str(0.8)
    ds.dBdt = ds_str(0.0)
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = str(proto.series_number)
    ds.AcquisitionNumber = "1"
    ds.ImagesInAcquisition = str(n_images)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.rows
    ds.Columns = grid.columns
    ds.PixelSpacing = [ds_str(grid.pixel_spacing[0]), ds_str(grid.pixel_spacing[1])]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ds_str(round(window[0]))
    ds.WindowWidth = ds_str(max(1.0, round(window[1])))
    if proto.derived:
        ds.DerivationDescription = "Apparent diffusion coefficient, log-linear fit of trace images"
        ds.ImageComments = "ADC in 1e-6 mm2/s"
    if proto.role == "dwi":
        group, creator, _, _ = _PRIVATE_B[ctx.vendor]
        ds.add_new((group << 16) | 0x0010, "LO", creator)
    if ctx.vendor == "ge":
        ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
        ds.add_new(0x0019109C, "LO", proto.private)
        ds.add_new(0x0019109E, "LO", proto.private)
    return ds


def instance(
    ctx: StudyContext,
    proto: Protocol,
    stack: Stack,
    k: int,
    number: int,
    series_uid: str,
    when: datetime,
) -> InstanceElements:
    """The elements of one image: slice k of ``stack``, InstanceNumber ``number``."""
    grid = stack.grid
    sop = uid(*ctx.key, series_uid, "instance", number)
    pos = grid.positions[k]
    centre = (
        pos
        + np.asarray(grid.row_cosine) * grid.pixel_spacing[1] * (grid.columns - 1) / 2
        + np.asarray(grid.column_cosine) * grid.pixel_spacing[0] * (grid.rows - 1) / 2
    )
    items: list[tuple[int, str, bytes]] = [
        (0x00080018, "UI", text(sop)),
        (0x00080032, "TM", text(when.strftime("%H%M%S.%f")[:13])),
        (0x00080033, "TM", text(when.strftime("%H%M%S.%f")[:13])),
        (0x00200013, "IS", text(str(number))),
        (0x00200032, "DS", numbers(pos)),
        (0x00200037, "DS", numbers((*grid.row_cosine, *grid.column_cosine))),
        (0x00201041, "DS", numbers([float(np.dot(centre, grid.normal))])),
    ]
    c = stack.contrast
    if len(proto.contrasts) > 1 and proto.role != "dwi":
        items.append((0x00180081, "DS", numbers([c.te])))
        items.append((0x00180086, "IS", text(str(stack.volume_index + 1))))
    if proto.b_values:
        b = float(c.b_value) if proto.role == "dwi" else float(proto.b_values[-1])
        if len(proto.sequence_names) > 1:
            items.append((0x00180024, "SH", text(proto.sequence_names[stack.volume_index])))
        if proto.role == "dwi":
            items.append((0x00189087, "FD", struct.pack("<d", b)))
            group, _, offset, vr = _PRIVATE_B[ctx.vendor]
            tag = (group << 16) | 0x1000 | offset
            if vr == "FL":
                items.append((tag, "FL", struct.pack("<f", b)))
            elif ctx.vendor == "ge":
                items.append((tag, "IS", text(f"{int(b)}\\8\\0\\0")))
            else:
                items.append((tag, "IS", text(str(int(b)))))
    return InstanceElements(sop, tuple(items))
