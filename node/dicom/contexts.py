"""The presentation contexts pacsnode accepts as an SCP: C-ECHO, and C-STORE of every storage SOP class in the
uncompressed, deflated, RLE, JPEG, JPEG-LS, JPEG 2000 and HTJ2K transfer syntaxes (also the source of the
conformance statement's tables).
"""

from __future__ import annotations

from pydicom import uid
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

TRANSFER_SYNTAXES: list[str] = [
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.RLELossless,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
]


def supported_contexts() -> list[PresentationContext]:
    """Verification plus every storage SOP class, each with all accepted transfer syntaxes."""
    contexts = [build_context(Verification)]
    contexts += [build_context(cx.abstract_syntax, TRANSFER_SYNTAXES) for cx in AllStoragePresentationContexts]
    return contexts
