"""A destination chooses the Key Object Selection like the SC: off unless ``send.kos`` is true."""

from __future__ import annotations

from agent.jobs.routing import wanted_kinds
from agent.settings import load_settings


def _destinations(send: dict[str, bool] | None = None) -> list[dict[str, object]]:
    destination: dict[str, object] = {
        "name": "pacs",
        "ae_title": "PACS",
        "host": "127.0.0.1",
        "port": 4242,
    }
    if send is not None:
        destination["send"] = send
    return [destination]


def test_kos_is_off_by_default() -> None:
    (destination,) = load_settings(None, destinations=_destinations()).destinations
    assert destination.send.kos is False
    assert wanted_kinds(destination, evaluated=True) == {"seg", "sr"}


def test_kos_on_for_an_images_only_viewer() -> None:
    send = {"seg": False, "sr": False, "sc": True, "kos": True}
    (destination,) = load_settings(None, destinations=_destinations(send)).destinations
    assert wanted_kinds(destination, evaluated=True) == {"sc", "kos"}
    # a study that was not evaluated gets its "not evaluated" SR, never a key image
    assert wanted_kinds(destination, evaluated=False) == {"not_evaluated_sr"}
