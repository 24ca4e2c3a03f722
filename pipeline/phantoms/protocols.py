"""What each vendor calls each series of a liver exam and how it acquires it (sequence headers).

Naming follows the vendors' own protocol trees as seen in the field (Siemens ``t2_haste_tra_mbh``,
GE ``Ax SSFSE T2``, Philips ``T2W_SPAIR``); timing and flip angles are typical 1.5 T / 3 T values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.phantoms.contrast import Contrast
from pipeline.phantoms.types import ALL_ROLES, Vendor

DYNAMIC_PHASES = {
    "dyn_pre": "pre",
    "dyn_arterial": "arterial",
    "dyn_portal": "portal",
    "dyn_delayed": "delayed",
}


@dataclass(frozen=True)
class Protocol:
    """Header values of one series that do not depend on its geometry."""

    role: str
    description: str
    protocol_name: str
    sequence_names: tuple[str, ...]  # one per volume (echo / b-value), or one for all
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    acquisition: str  # MRAcquisitionType 2D / 3D
    image_type: tuple[str, ...]
    contrasts: tuple[Contrast, ...]  # one per volume
    echo_train_length: int
    snr: float  # liver signal over noise sigma
    b_values: tuple[float, ...] = ()
    series_number: int = 0
    post_contrast: bool = False
    derived: bool = False
    phase_encoding: str = "COL"
    averages: float = 1.0
    bandwidth: float = 500.0
    private: str = ""  # vendor pulse-sequence name for GE's private block


_NAMES: dict[str, dict[str, tuple[str, str, str]]] = {
    # role: (SeriesDescription, ProtocolName, SequenceName)
    "siemens": {
        "localizer": ("localizer", "localizer", "*fl2d1"),
        "cor_t2": ("t2_haste_cor_mbh", "t2_haste_cor_mbh", "*h2d1_{m}"),
        "ax_t2": ("t2_haste_tra_mbh", "t2_haste_tra_mbh", "*h2d1_{m}"),
        "ax_t2_fs": ("t2_tse_fs_tra_trig", "t2_tse_fs_tra_trig", "*tse2d1_17"),
        "t1_in_opp": ("t1_fl2d_opp-in_tra_bh", "t1_fl2d_opp-in_tra_bh", "*fl2d2"),
        "t2star": ("t2_fl2d_tra_bh_hemo", "t2_fl2d_tra_bh_hemo", "*fl2d1"),
        "mrcp": ("t2_haste_cor_MRCP_thick_slab", "t2_haste_cor_MRCP_thick_slab", "*h2d1_{m}"),
        "dwi": ("ep2d_diff_b50_400_800_tra_TRACEW", "ep2d_diff_b50_400_800_tra", "*ep_b{b}t"),
        "adc": ("ep2d_diff_b50_400_800_tra_ADC", "ep2d_diff_b50_400_800_tra", "*ep_b50_800"),
        "dyn_pre": ("t1_vibe_fs_tra_bh_pre", "t1_vibe_fs_tra_bh", "*fl3d1"),
        "dyn_arterial": ("t1_vibe_fs_tra_bh_arterial", "t1_vibe_fs_tra_bh", "*fl3d1"),
        "dyn_portal": ("t1_vibe_fs_tra_bh_portal", "t1_vibe_fs_tra_bh", "*fl3d1"),
        "dyn_delayed": ("t1_vibe_fs_tra_bh_delayed", "t1_vibe_fs_tra_bh", "*fl3d1"),
    },
    "ge": {
        "localizer": ("3-Plane Loc", "3-Plane Loc", "fgre"),
        "cor_t2": ("Cor SSFSE", "Cor SSFSE", "ssfse"),
        "ax_t2": ("Ax SSFSE T2", "Ax SSFSE T2", "ssfse"),
        "ax_t2_fs": ("Ax T2 FRFSE FS RTr", "Ax T2 FRFSE FS RTr", "frfse"),
        "t1_in_opp": ("Ax DUAL ECHO", "Ax DUAL ECHO", "fspgr"),
        "t2star": ("Ax T2* GRE", "Ax T2* GRE", "fgre"),
        "mrcp": ("Cor SSFSE MRCP Thick Slab", "Cor SSFSE MRCP Thick Slab", "ssfse"),
        "dwi": ("Ax DWI b50 400 800", "Ax DWI b50 400 800", "epi2"),
        "adc": ("Apparent Diffusion Coefficient (mm2/s)", "Ax DWI b50 400 800", "epi2"),
        "dyn_pre": ("Ax LAVA Pre", "Ax LAVA Multiphase", "efgre3d"),
        "dyn_arterial": ("Ax LAVA Arterial", "Ax LAVA Multiphase", "efgre3d"),
        "dyn_portal": ("Ax LAVA Portal Venous", "Ax LAVA Multiphase", "efgre3d"),
        "dyn_delayed": ("Ax LAVA 3 min Delay", "Ax LAVA Multiphase", "efgre3d"),
    },
    "philips": {
        "localizer": ("Survey_BH", "Survey_BH", "B-TFE"),
        "cor_t2": ("T2W_SSh_COR", "T2W_SSh_COR", "TSE"),
        "ax_t2": ("T2W_SSh_TRA", "T2W_SSh_TRA", "TSE"),
        "ax_t2_fs": ("T2W_SPAIR", "T2W_SPAIR", "TSE"),
        "t1_in_opp": ("T1W_FFE_IP_OP", "T1W_FFE_IP_OP", "FFE"),
        "t2star": ("T2*W_FFE_BH", "T2*W_FFE_BH", "FFE"),
        "mrcp": ("MRCP_SSh_thick_slab", "MRCP_SSh_thick_slab", "TSE"),
        "dwi": ("DWI_b50_400_800", "DWI_b50_400_800", "DwiSE"),
        "adc": ("dADC_DWI_b50_400_800", "DWI_b50_400_800", "DwiSE"),
        "dyn_pre": ("eTHRIVE_pre", "eTHRIVE_BH_dyn", "T1TFE"),
        "dyn_arterial": ("eTHRIVE_arterial", "eTHRIVE_BH_dyn", "T1TFE"),
        "dyn_portal": ("eTHRIVE_portal", "eTHRIVE_BH_dyn", "T1TFE"),
        "dyn_delayed": ("eTHRIVE_delayed", "eTHRIVE_BH_dyn", "T1TFE"),
    },
}

_IMAGE_TYPE: dict[str, dict[str, tuple[str, ...]]] = {
    "siemens": {
        "default": ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"),
        "3d": ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS3D"),
        "dwi": ("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW", "NORM", "DIS2D"),
        "adc": ("DERIVED", "PRIMARY", "DIFFUSION", "ADC", "NORM", "DIS2D"),
        "localizer": ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"),
    },
    "ge": {
        "default": ("ORIGINAL", "PRIMARY", "OTHER"),
        "3d": ("ORIGINAL", "PRIMARY", "OTHER"),
        "dwi": ("ORIGINAL", "PRIMARY", "OTHER"),
        "adc": ("DERIVED", "PRIMARY", "ADC"),
        "localizer": ("ORIGINAL", "PRIMARY", "LOCALIZER"),
    },
    "philips": {
        "default": ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE"),
        "gre": ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
        "3d": ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
        "dwi": ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE"),
        "adc": ("DERIVED", "PRIMARY", "ADC", "ADC"),
        "localizer": ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
    },
}


def _image_type(vendor: str, role: str) -> tuple[str, ...]:
    table = _IMAGE_TYPE[vendor]
    if role in ("localizer", "dwi", "adc"):
        return table[role]
    if role.startswith("dyn_"):
        return table["3d"]
    if role in ("t1_in_opp", "t2star"):
        return table.get("gre", table["default"])
    return table["default"]


def series_numbers(vendor: Vendor, roles: tuple[str, ...]) -> dict[str, int]:
    """SeriesNumber per role as each vendor counts: 1, 2, ... (Siemens, GE), 101, 201, ...
    (Philips); a derived ADC series follows its DWI (Siemens n+1, Philips n+1, GE 100 n)."""
    out: dict[str, int] = {}
    k = 0
    for role in roles:
        if role == "adc" and "dwi" in out:
            dwi = out["dwi"]
            out[role] = dwi * 100 if vendor == "ge" else dwi + 1
            if vendor == "siemens":
                k += 1
            continue
        k += 1
        out[role] = k * 100 + 1 if vendor == "philips" else k
    return out


def protocol(
    vendor: Vendor, role: str, field_t: float, rows: int, rng: np.random.Generator
) -> Protocol:
    """The acquisition of one role by one vendor at ``field_t`` tesla (1.5 or 3)."""
    if role not in ALL_ROLES:
        raise ValueError(f"unknown series role {role!r}; choose from {', '.join(ALL_ROLES)}")
    desc, proto, seq = _NAMES[vendor][role]
    hi = field_t > 2.0
    it = _image_type(vendor, role)

    def u(a: float, b: float) -> float:
        return round(float(rng.uniform(a, b)), 1)

    gre_seq, se_seq, ep_seq = ("GR",), ("SE",), ("EP",)
    if role == "localizer":
        if vendor == "philips":
            c = Contrast("ssfp", te=1.6, tr=3.3, flip=60.0)
            ss, sv = gre_seq, ("SS",)
        else:
            c = Contrast(
                "gre",
                te=5.0 if vendor == "siemens" else 1.6,
                tr=8.6 if vendor == "siemens" else 4.9,
                flip=20.0,
            )
            ss, sv = gre_seq, ("SP",)
        return Protocol(role, desc, proto, (seq,), ss, sv, (), "2D", it, (c,), 1, u(14, 20))
    if role in ("cor_t2", "ax_t2", "mrcp"):
        te = {"siemens": 92.0, "ge": 84.0, "philips": 80.0}[vendor]
        etl = {"siemens": 128, "ge": 100, "philips": 90}[vendor]
        fat_sat = 1.0
        opts: tuple[str, ...] = ("PFP",) if vendor != "ge" else ("FAST_GEMS", "SS_GEMS", "PFP")
        tr = u(1100, 1600)
        if role == "mrcp":
            te, tr, fat_sat, etl = (
                float(rng.choice([740.0, 760.0, 800.0])),
                u(4000, 4800),
                0.05,
                240,
            )
            opts = (*opts, "FS")
        flip = 160.0 if vendor == "siemens" else 90.0
        c = Contrast("se", te=te, tr=tr, flip=flip, fat_sat=fat_sat, single_shot=True)
        return Protocol(
            role,
            desc,
            proto,
            (seq.format(m=rows),),
            se_seq,
            ("SK", "SP", "OSP"),
            opts,
            "2D",
            it,
            (c,),
            etl,
            u(14, 28),
            bandwidth=u(600, 800),
            private="ssfse",
        )
    if role == "ax_t2_fs":
        te = {"siemens": 87.0, "ge": 85.0, "philips": 80.0}[vendor]
        etl = {"siemens": 17, "ge": 20, "philips": 25}[vendor]
        c = Contrast(
            "se",
            te=te,
            tr=u(2800, 4500),
            flip=150.0 if vendor == "siemens" else 90.0,
            fat_sat=0.05 if vendor == "philips" else 0.08,
        )
        opts = ("FS", "PFP") if vendor != "ge" else ("FAST_GEMS", "FS", "RG")
        return Protocol(
            role,
            desc,
            proto,
            (seq,),
            se_seq,
            ("SK", "SP", "OSP"),
            opts,
            "2D",
            it,
            (c,),
            etl,
            u(10, 20),
            averages=2.0,
            bandwidth=u(200, 300),
            private="frfse",
        )
    if role == "t1_in_opp":
        te_op, te_in = (1.23, 2.46) if hi else (2.38, 4.76)
        tr, flip = u(140, 190), 70.0
        cs: tuple[Contrast, ...] = (
            Contrast("gre", te=te_op, tr=tr, flip=flip, opposed=True, inflow=0.4),
            Contrast("gre", te=te_in, tr=tr, flip=flip, inflow=0.4),
        )
        return Protocol(
            role,
            desc,
            proto,
            (seq,),
            gre_seq,
            ("SP",),
            (),
            "2D",
            it,
            cs,
            2,
            u(15, 25),
            bandwidth=u(400, 500),
            private="fspgr",
        )
    if role == "t2star":
        c = Contrast("gre", te=4.9 if hi else 9.5, tr=u(150, 220), flip=20.0, inflow=0.3)
        return Protocol(
            role,
            desc,
            proto,
            (seq,),
            gre_seq,
            ("SP",),
            (),
            "2D",
            it,
            (c,),
            1,
            u(12, 20),
            bandwidth=u(200, 300),
            private="fgre",
        )
    if role in ("dwi", "adc"):
        bs = (50.0, 400.0, 800.0)
        te = (55.0 if hi else 64.0) + {"siemens": 0.0, "ge": 6.0, "philips": -2.0}[vendor]
        tr = u(4500, 6500)
        cs = tuple(Contrast("dwi", te=te, tr=tr, fat_sat=0.03, b_value=b) for b in bs)
        names = tuple(seq.format(b=int(b)) for b in bs) if role == "dwi" else (seq,)
        opts = ("PFP", "FS") if vendor != "ge" else ("EPI_GEMS", "FS")
        etl = {"siemens": 96, "ge": 1, "philips": 63}[vendor]
        return Protocol(
            role,
            desc,
            proto,
            names,
            ep_seq,
            ("SK", "SP"),
            opts,
            "2D",
            it,
            cs if role == "dwi" else cs[:1],
            etl,
            u(14, 20),
            b_values=bs,
            derived=role == "adc",
            averages=3.0,
            bandwidth=u(1500, 2200),
            private="epi2",
        )
    if role in DYNAMIC_PHASES:
        phase = DYNAMIC_PHASES[role]
        c = Contrast(
            "gre",
            te=1.2 if hi else 2.1,
            tr=u(3.8, 4.6),
            flip=float(rng.choice([10.0, 12.0])),
            fat_sat=0.08,
            phase=phase,
        )
        opts = ("PFP", "FS") if vendor != "ge" else ("FAST_GEMS", "ACC_GEMS", "FS")
        variant = ("SP", "MP") if vendor == "philips" else ("SP", "OSP")
        return Protocol(
            role,
            desc,
            proto,
            (seq,),
            gre_seq,
            variant,
            opts,
            "3D",
            it,
            (c,),
            1,
            u(18, 30),
            post_contrast=phase != "pre",
            bandwidth=u(400, 600),
            private="efgre3d",
        )
    raise ValueError(f"no protocol for role {role!r}")  # pragma: no cover - ALL_ROLES is complete


def with_number(p: Protocol, number: int) -> Protocol:
    return replace(p, series_number=number)
