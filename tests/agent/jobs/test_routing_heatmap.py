"""Per destination, the heat map burned into the Secondary Capture (send.sc_heatmap)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from agent.jobs.routing import build_objects, plan_outputs
from agent.settings import Destination
from pipeline.heatmap import HeatMap
from pipeline.results import EvaluatedResult
from tests.pipeline.outputs.synthetic_mr import make_mr_series, make_result


def _destination(name: str, **send: bool) -> Destination:
    return Destination(
        name=name, ae_title=name.upper(), host="127.0.0.1", port=104, send={"sc": True, **send}
    )


def test_only_the_destination_that_asks_gets_the_heat_map_sc() -> None:
    plain, heated = _destination("plain"), _destination("heated", sc_heatmap=True)
    no_sc = _destination("nosc", sc=False, sc_heatmap=True)  # sc_heatmap needs sc
    plans = plan_outputs([plain, heated, no_sc])
    assert [(p.sc_heatmap, [d.name for d in p.destinations]) for p in plans] == [
        (False, ["plain", "nosc"]),
        (True, ["heated"]),
    ]
    base = make_result(make_mr_series(10, 64, 64))
    assert isinstance(base, EvaluatedResult)
    cam = np.zeros(base.volume.pixels.shape[1:], dtype=np.float32)
    cam[10:30, 10:30] = 1.0
    result = replace(base, heatmap=HeatMap(cam, "layer3", 1, 0.5))
    built = build_objects(result, [plain, heated])
    scs = {
        p.plan.destinations[0].name: p.obj.dataset
        for p in built
        if p.obj.kind == "sc" and p.plan is not None
    }
    assert "heat map" not in str(scs["plain"].DerivationDescription)
    assert "heat map" in str(scs["heated"].DerivationDescription)
