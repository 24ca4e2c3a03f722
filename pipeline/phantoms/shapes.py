"""Implicit shapes for the body model: approximate signed distances (mm, negative inside).

Every function takes coordinate arrays that broadcast against each other (see
``SliceGrid.axes``) and returns a float32 array of their broadcast shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Vec3 = tuple[float, float, float]
Radius = F32 | float | np.float32
_EPS = np.float32(1e-6)


def rotation(
    rx_deg: float = 0.0, ry_deg: float = 0.0, rz_deg: float = 0.0
) -> npt.NDArray[np.float64]:
    """Rotation matrix (body to local frame) from angles about x, then y, then z (degrees)."""
    ax, ay, az = np.deg2rad([rx_deg, ry_deg, rz_deg])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    out: npt.NDArray[np.float64] = (r_z @ r_y @ r_x).T
    return out


def local(
    x: F32, y: F32, z: F32, centre: Vec3, rot: npt.NDArray[np.float64] | None = None
) -> tuple[F32, F32, F32]:
    """Coordinates relative to ``centre``, optionally rotated into a local frame."""
    dx = x - np.float32(centre[0])
    dy = y - np.float32(centre[1])
    dz = z - np.float32(centre[2])
    if rot is None:
        return dx, dy, dz
    r = rot.astype(np.float32)
    return (
        r[0, 0] * dx + r[0, 1] * dy + r[0, 2] * dz,
        r[1, 0] * dx + r[1, 1] * dy + r[1, 2] * dz,
        r[2, 0] * dx + r[2, 1] * dy + r[2, 2] * dz,
    )


def ellipsoid_local(dx: F32, dy: F32, dz: F32, rx: Radius, ry: Radius, rz: Radius) -> F32:
    """Approximate distance to an ellipsoid centred at the origin (radii may be arrays).

    ``k0 (k0 - 1) / k1`` with ``k0 = |p / r|``, ``k1 = |p / r^2|`` (exact on the surface); the
    squares are summed in their low-dimensional shapes first, then in place on the full array.
    """
    px, py, pz = np.square(dx / rx), np.square(dy / ry), np.square(dz / rz)
    qx, qy, qz = px / np.square(rx), py / np.square(ry), pz / np.square(rz) + _EPS
    s0 = _sum3(px, py, pz)
    k0 = np.sqrt(s0)
    s0 -= k0
    s1 = _sum3(qx, qy, qz)
    np.sqrt(s1, out=s1)
    s0 /= s1
    return s0


def _sum3(a: F32, b: F32, c: F32) -> F32:
    """a + b + c adding the two smallest first, returning a fresh full-size array."""
    a_, b_, c_ = sorted((a, b, c), key=lambda v: v.size)
    out: F32 = np.add(np.add(a_, b_), c_)
    return out


def ellipsoid(
    x: F32, y: F32, z: F32, centre: Vec3, radii: Vec3, rot: npt.NDArray[np.float64] | None = None
) -> F32:
    """Approximate signed distance to an (optionally rotated) ellipsoid."""
    dx, dy, dz = local(x, y, z, centre, rot)
    return ellipsoid_local(dx, dy, dz, *(np.float32(r) for r in radii))


def ellipsoid_inside(
    x: F32,
    y: F32,
    z: F32,
    centre: Vec3,
    radii: Vec3,
    rot: npt.NDArray[np.float64] | None = None,
    grow: float = 0.0,
) -> npt.NDArray[np.bool_]:
    """Inside test of an ellipsoid whose radii are grown by ``grow`` mm (shrunk if negative).

    Cheaper than the distance: sums of squares in their low-dimensional shapes and a compare.
    """
    dx, dy, dz = local(x, y, z, centre, rot)
    terms = [np.square(d / np.float32(r + grow)) for d, r in zip((dx, dy, dz), radii, strict=True)]
    terms.sort(key=lambda t: t.size)
    q = np.add(terms[0], terms[1])
    out: npt.NDArray[np.bool_] = np.add(q, terms[2]) < 1.0
    return out


def ellipse2d(x: F32, y: F32, centre: tuple[float, float], radii: tuple[float, float]) -> F32:
    """Approximate signed distance to an elliptic cylinder along z."""
    px = (x - np.float32(centre[0])) / np.float32(radii[0])
    py = (y - np.float32(centre[1])) / np.float32(radii[1])
    k0 = np.sqrt(px * px + py * py)
    qx, qy = px / np.float32(radii[0]), py / np.float32(radii[1])
    k1 = np.sqrt(qx * qx + qy * qy) + _EPS
    out: F32 = k0 * (k0 - 1.0) / k1
    return out


def capsule(x: F32, y: F32, z: F32, a: Vec3, b: Vec3, ra: float, rb: float) -> F32:
    """Signed distance to a tube from ``a`` to ``b`` whose radius goes from ``ra`` to ``rb``."""
    ba = np.asarray(b, dtype=np.float32) - np.asarray(a, dtype=np.float32)
    dd = np.float32(ba @ ba)
    px, py, pz = local(x, y, z, a)
    h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / dd, 0.0, 1.0)
    ex, ey, ez = px - ba[0] * h, py - ba[1] * h, pz - ba[2] * h
    out: F32 = np.sqrt(ex * ex + ey * ey + ez * ez) - (np.float32(ra) + np.float32(rb - ra) * h)
    return out


def smooth_min(a: F32, b: F32, k: float) -> F32:
    """Union of two shapes with a fillet of about ``k`` mm (polynomial smooth minimum)."""
    kk = np.float32(k)
    h = np.maximum(kk - np.abs(a - b), 0.0) / kk
    out: F32 = np.minimum(a, b) - h * h * kk * np.float32(0.25)
    return out


@dataclass(frozen=True)
class WaveNoise:
    """Band-limited random field: a sum of plane waves, unit variance, deterministic by its waves.

    Evaluated on separable coordinates (each of x, y, z varies along at most one array axis, as
    ``SliceGrid.axes`` gives them): the sum of products of 1D factors is one real matrix product.
    """

    k: npt.NDArray[np.float64]  # (m, 3) wave vectors, rad/mm
    phase: npt.NDArray[np.float64]  # (m,)

    @classmethod
    def random(cls, rng: np.random.Generator, wavelength_mm: float, m: int = 12) -> WaveNoise:
        d = rng.normal(size=(m, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        lam = wavelength_mm * rng.uniform(0.75, 1.3, size=m)
        return cls(d * (2 * np.pi / lam)[:, None], rng.uniform(0, 2 * np.pi, size=m))

    def __call__(self, x: F32, y: F32, z: F32) -> F32:
        shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
        if len(shape) != 3:
            raise ValueError("WaveNoise needs three 3D coordinate arrays")
        m = len(self.phase)
        factors = [np.ones((shape[d], m), np.complex128) for d in range(3)]
        factors[0] = factors[0] * np.exp(1j * self.phase)[None, :]
        for a, arr in enumerate((x, y, z)):
            axes = [d for d in range(3) if arr.shape[d] > 1]
            if len(axes) > 1:
                raise ValueError("WaveNoise needs coordinates that vary along one axis each")
            d = axes[0] if axes else 0
            v = arr.reshape(-1).astype(np.float64)
            factors[d] = factors[d] * np.exp(1j * np.outer(v, self.k[:, a]))
        f0, f1, f2 = factors
        left = (f0[:, None, :] * f1[None, :, :]).reshape(-1, m)
        lhs = np.concatenate([left.real, left.imag], axis=1).astype(np.float32)
        rhs = np.concatenate([f2.real, -f2.imag], axis=1).astype(np.float32)
        out: F32 = (lhs @ rhs.T).reshape(shape)
        out *= np.float32(np.sqrt(2.0 / m))
        return out
