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

from cdap_access.domain import ActivePdfContent, NotAPdf, UnreadablePdf

MAGIC = b"%PDF-"
# Action types a viewer runs or opens on its own, and the keys that hold JavaScript.
ACTIVE_ACTIONS = frozenset({"/JavaScript", "/Launch", "/ImportData", "/SubmitForm"})
ACTIVE_KEYS = frozenset({"/JS", "/JavaScript"})

logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings repeat what the refusal says


def check(content: bytes, name: str) -> None:
    """Raise the domain's refusal unless `content` (the file `name`) is a PDF that parses, has a page
    and holds no active content."""
    if not content.startswith(MAGIC):
        raise NotAPdf("not_a_pdf", f"{name} is not a PDF document.")
    unreadable = UnreadablePdf(
        "unreadable_pdf", f"{name} cannot be read as a PDF (damaged, encrypted or no page)."
    )
    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted or len(reader.pages) == 0:  # encrypted: nothing inside can be inspected
            raise unreadable
        active = _carries_active_content(reader.trailer)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise unreadable from exc
    if active:
        raise ActivePdfContent("active_pdf_content", f"{name} contains JavaScript or actions that run.")


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
