"""What an uploaded document must be: a PDF that parses, has pages, and carries nothing that runs.

Approvers open these files; a file that only starts with `%PDF-` may be HTML or an executable, and a
real PDF may carry JavaScript or a launch action. `pypdf` parses it; every object reachable from the
trailer is then looked at, so an action hidden in a page, an annotation or a name tree is found too.
"""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader
from pypdf.errors import PyPdfError
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, NameObject, PdfObject

MAGIC = b"%PDF-"
# Action types a viewer runs or opens on its own, and the keys that hold JavaScript.
ACTIVE_ACTIONS = frozenset({"/JavaScript", "/Launch", "/ImportData", "/SubmitForm"})
ACTIVE_KEYS = frozenset({"/JS", "/JavaScript"})

logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings repeat what the refusal says


class Unacceptable(Exception):
    """The document is refused; `reason` says why (machine-readable)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check(content: bytes) -> None:
    """Raise `Unacceptable` unless `content` is a PDF that parses, has a page and holds no active content."""
    if not content.startswith(MAGIC):
        raise Unacceptable("not_a_pdf")
    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:  # nothing inside can be inspected
            raise Unacceptable("unreadable_pdf")
        if len(reader.pages) == 0:
            raise Unacceptable("unreadable_pdf")
        active = _carries_active_content(reader.trailer)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Unacceptable("unreadable_pdf") from exc
    if active:
        raise Unacceptable("active_pdf_content")


def _carries_active_content(root: PdfObject) -> bool:
    """Walk every object reachable from `root` (each indirect object once)."""
    seen: set[tuple[int, int]] = set()
    pending: list[PdfObject] = [root]
    while pending:
        item = pending.pop()
        if isinstance(item, IndirectObject):
            ref = (item.idnum, item.generation)
            if ref in seen:
                continue
            seen.add(ref)
            resolved = item.get_object()
            if resolved is None:  # a dangling reference: nothing there
                continue
            item = resolved
        if isinstance(item, DictionaryObject):
            if ACTIVE_KEYS & set(item.keys()):
                return True
            action = item.get("/S")
            if isinstance(action, NameObject) and action in ACTIVE_ACTIONS:
                return True
            pending.extend(item.values())
        elif isinstance(item, ArrayObject):
            pending.extend(item)
    return False
