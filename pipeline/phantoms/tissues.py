"""Tissue classes of the body model and their MR properties at 1.5 T (T1, T2, T2* in ms)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Tissue(IntEnum):
    """Label values of a painted grid (uint8)."""

    AIR = 0
    SUBCUT_FAT = 1
    MUSCLE = 2
    VISCERAL_FAT = 3
    LUNG = 4
    MYOCARDIUM = 5
    HEART_BLOOD = 6
    ASCITES = 7
    BOWEL_GAS = 8
    BOWEL_FLUID = 9
    BOWEL_STOOL = 10
    STOMACH_GAS = 11
    STOMACH_FLUID = 12
    GI_WALL = 13  # wall of stomach and bowel
    PANCREAS = 14
    SPLEEN = 15
    KIDNEY_CORTEX = 16
    KIDNEY_MEDULLA = 17
    LIVER_RIGHT = 18
    LIVER_LEFT = 19
    CAUDATE = 20
    HEPATIC_VEIN = 21
    PORTAL_BRANCH = 22
    BILE_DUCT_INTRA = 23
    BILE_DUCT = 24
    GALLBLADDER = 25
    IVC = 26
    AORTA = 27
    PORTAL_VEIN = 28
    MARROW = 29
    CORTICAL_BONE = 30
    DISC = 31
    CSF = 32
    SPINAL_CORD = 33


N_TISSUES = len(Tissue)

#: Labels that make up the liver mask: the three lobes and what runs inside them.
LIVER_TISSUES: tuple[Tissue, ...] = (
    Tissue.LIVER_RIGHT,
    Tissue.LIVER_LEFT,
    Tissue.CAUDATE,
    Tissue.HEPATIC_VEIN,
    Tissue.PORTAL_BRANCH,
    Tissue.BILE_DUCT_INTRA,
)
LIVER_PARENCHYMA: tuple[Tissue, ...] = (Tissue.LIVER_RIGHT, Tissue.LIVER_LEFT, Tissue.CAUDATE)


@dataclass(frozen=True)
class TissueProperties:
    """Relaxation and diffusion of one tissue.

    ``pd`` relative proton density, ``fat`` fat fraction (signal of the fat component),
    ``adc`` in 1e-6 mm2/s, ``flow`` 0..1 how much a spin-echo flow void darkens it.
    """

    pd: float
    t1: float
    t2: float
    t2s: float
    adc: float
    fat: float = 0.0
    flow: float = 0.0


# Literature-order values at 1.5 T (de Bazelaire 2004, Stanisz 2005), rounded; blood flows.
PROPERTIES: dict[Tissue, TissueProperties] = {
    Tissue.AIR: TissueProperties(0.0, 1000, 1, 1, 0),
    Tissue.SUBCUT_FAT: TissueProperties(0.95, 290, 85, 60, 80, fat=0.92),
    Tissue.MUSCLE: TissueProperties(0.72, 1000, 40, 28, 1400),
    Tissue.VISCERAL_FAT: TissueProperties(0.85, 300, 80, 50, 150, fat=0.85),
    Tissue.LUNG: TissueProperties(0.08, 1200, 30, 2, 2500),
    Tissue.MYOCARDIUM: TissueProperties(0.75, 1000, 50, 35, 1500),
    Tissue.HEART_BLOOD: TissueProperties(0.9, 1450, 250, 180, 2500, flow=0.95),
    Tissue.ASCITES: TissueProperties(0.98, 3200, 1500, 500, 3000),
    Tissue.BOWEL_GAS: TissueProperties(0.0, 1000, 1, 1, 0),
    Tissue.BOWEL_FLUID: TissueProperties(0.95, 2800, 700, 300, 2800),
    Tissue.BOWEL_STOOL: TissueProperties(0.6, 800, 70, 20, 1000, fat=0.15),
    Tissue.STOMACH_GAS: TissueProperties(0.0, 1000, 1, 1, 0),
    Tissue.STOMACH_FLUID: TissueProperties(0.95, 2600, 600, 250, 2800),
    Tissue.GI_WALL: TissueProperties(0.75, 900, 60, 35, 1400),
    Tissue.PANCREAS: TissueProperties(0.75, 580, 46, 30, 1400, fat=0.04),
    Tissue.SPLEEN: TissueProperties(0.82, 1060, 79, 50, 850),
    Tissue.KIDNEY_CORTEX: TissueProperties(0.85, 970, 85, 55, 2100),
    Tissue.KIDNEY_MEDULLA: TissueProperties(0.9, 1400, 95, 55, 1900),
    Tissue.LIVER_RIGHT: TissueProperties(0.72, 586, 46, 28, 1150),
    Tissue.LIVER_LEFT: TissueProperties(0.72, 586, 46, 28, 1150),
    Tissue.CAUDATE: TissueProperties(0.72, 586, 46, 28, 1150),
    Tissue.HEPATIC_VEIN: TissueProperties(0.9, 1450, 250, 150, 2500, flow=0.8),
    Tissue.PORTAL_BRANCH: TissueProperties(0.9, 1450, 250, 150, 2500, flow=0.75),
    Tissue.BILE_DUCT_INTRA: TissueProperties(0.95, 2500, 800, 300, 3000),
    Tissue.BILE_DUCT: TissueProperties(0.95, 2500, 800, 300, 3000),
    Tissue.GALLBLADDER: TissueProperties(0.95, 2200, 900, 300, 3000),
    Tissue.IVC: TissueProperties(0.9, 1450, 250, 150, 2500, flow=0.95),
    Tissue.AORTA: TissueProperties(0.9, 1450, 250, 150, 2500, flow=1.0),
    Tissue.PORTAL_VEIN: TissueProperties(0.9, 1450, 250, 150, 2500, flow=0.85),
    Tissue.MARROW: TissueProperties(0.8, 450, 60, 20, 500, fat=0.5),
    Tissue.CORTICAL_BONE: TissueProperties(0.03, 1000, 5, 1, 300),
    Tissue.DISC: TissueProperties(0.85, 1100, 110, 60, 1800),
    Tissue.CSF: TissueProperties(1.0, 3500, 1800, 600, 3000),
    Tissue.SPINAL_CORD: TissueProperties(0.75, 750, 75, 50, 1000),
}

#: Fat component relaxation (the fat fraction of a tissue relaxes with these).
FAT_T1 = 290.0
FAT_T2 = 85.0
FAT_T2S = 60.0
