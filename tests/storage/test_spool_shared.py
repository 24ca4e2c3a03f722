"""A spool shared by several receivers: cleaning up after a crash removes only temporary files
nobody has written to for a while (the others' writes in progress stay)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from storage.spool import Spool


def test_only_old_temporaries_are_removed_from_a_shared_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    folder = tmp_path / "spool" / "1.2.3" / "1.2.3.4"
    folder.mkdir(parents=True)
    old, fresh = folder / ".tmp-old", folder / ".tmp-fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert spool.remove_temporaries(older_than_seconds=120) == 1
    assert not old.exists()
    assert fresh.exists()
    assert spool.remove_temporaries() == 1  # one agent owns the spool: every one goes
    assert not fresh.exists()
