"""Random split of cases (patients) into training, validation and test parts, by seed."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pipeline.bundle import Split
from pipeline.training.data import natural_key

FRACTIONS = (0.70, 0.15, 0.15)


def split_cases(
    case_ids: Sequence[str], seed: int, fractions: tuple[float, float, float] = FRACTIONS
) -> Split:
    """Split case identifiers by patient, 70/15/15 by default, reproducibly from ``seed``.

    With three or more cases validation and test get at least one case each (test rounded
    up, validation rounded to nearest: 15 cases give 10/2/3); two cases give one training and
    one test case and no validation; one case is training only.

    Returns
    -------
    Split
        The identifiers of each part, each part in natural order.
    """
    ids = sorted(set(case_ids), key=natural_key)
    if len(ids) != len(case_ids):
        raise ValueError("case identifiers must be unique")
    random.Random(seed).shuffle(ids)  # noqa: S311 (a reproducible split, not a secret)
    n = len(ids)
    if n >= 3:
        n_test = max(1, math.ceil(fractions[2] * n - 1e-9))
        n_val = max(1, round(fractions[1] * n))
        n_test = min(n_test, n - 2)
        n_val = min(n_val, n - 1 - n_test)
    elif n == 2:
        n_test, n_val = 1, 0
    else:
        n_test, n_val = 0, 0
    test, val, train = ids[:n_test], ids[n_test : n_test + n_val], ids[n_test + n_val :]
    return Split(
        train=sorted(train, key=natural_key),
        val=sorted(val, key=natural_key),
        test=sorted(test, key=natural_key),
    )
