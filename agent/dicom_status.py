"""Named DIMSE status codes the agent answers with (PS3.4 Annex B, PS3.7 Annex C)."""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses."""

    SUCCESS = 0x0000
    #: Refused: out of resources. The PACS should retry later (disk, database trouble).
    OUT_OF_RESOURCES = 0xA700
    #: Error: data set does not match SOP class (or the request's affected SOP instance).
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: cannot understand (malformed data set, invalid UIDs).
    CANNOT_UNDERSTAND = 0xC000
    #: Refused: not authorized (used by STOW-RS mapping).
    NOT_AUTHORIZED = 0x0124


class AssociationReject:
    """A-ASSOCIATE-RJ parameters (PS3.8 9.3.4)."""

    RESULT_PERMANENT = 0x01
    SOURCE_SERVICE_USER = 0x01
    DIAG_NO_REASON = 0x01
    DIAG_CALLING_AE_NOT_RECOGNISED = 0x03
    DIAG_CALLED_AE_NOT_RECOGNISED = 0x07
