"""Document upload (PDF, size, content check, SHA-256) and the approvers' document viewer."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable

import pytest

from .conftest import PDF, Service, assert_problem, pdf_file

pytestmark = pytest.mark.stack


async def _awaiting_documents(svc: Service) -> str:
    request_id = await svc.submit()
    r = await svc.decide(request_id, svc.instructor(), "request_documents", documents=["convention signée"])
    assert r.status_code == 200
    return request_id


async def test_an_upload_is_stored_with_its_hash_and_shown_to_the_approvers(svc: Service) -> None:
    request_id = await _awaiting_documents(svc)
    second = PDF + b"% bulletin\n"
    r = await svc.upload(request_id, [("Convention signée.pdf", PDF), ("../../etc/bulletin.pdf", second)])
    assert r.status_code == 201, r.text
    listed = r.json()["documents"]
    assert [d["filename"] for d in listed] == ["Convention signée.pdf", "bulletin.pdf"]
    assert [d["sha256"] for d in listed] == [
        hashlib.sha256(PDF).hexdigest(),
        hashlib.sha256(second).hexdigest(),
    ]
    assert r.json()["state"] == "submitted"

    detail = await svc.get(request_id)
    assert [d["id"] for d in detail["documents"]] == [d["id"] for d in listed]
    assert detail["history"][-1]["action"] == "documents_received"
    assert detail["history"][-1]["documents"] == ["Convention signée.pdf", "bulletin.pdf"]

    url = f"/v1/access-requests/{request_id}/documents/{listed[0]['id']}"
    for headers in (svc.instructor(), svc.manager(), svc.partner()):
        r = await svc.client.get(url, headers=headers)
        assert r.status_code == 200 and r.content == PDF
        assert r.headers["content-type"] == "application/pdf"
        assert (
            r.headers["repr-digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(PDF).digest()).decode()}:"
        )
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "filename*=UTF-8''Convention%20sign%C3%A9e.pdf" in r.headers["content-disposition"]
    for headers in (svc.instructor("i27", department="27"), svc.partner("p27", org="org-27")):
        assert_problem(await svc.client.get(url, headers=headers), 403)
    missing = f"/v1/access-requests/{request_id}/documents/01a21c0d-0000-7000-8000-000000000000"
    assert_problem(await svc.client.get(missing, headers=svc.instructor()), 404, "unknown_document")


async def test_documents_may_also_be_sent_before_being_asked(svc: Service) -> None:
    request_id = await svc.submit()
    r = await svc.upload(request_id)
    assert (r.status_code, r.json()["state"]) == (201, "submitted")
    assert (await svc.outbox())[-1].type == "access.request.documents_received"


@pytest.mark.parametrize(
    ("files", "status", "reason"),
    [
        ([("scan.pdf", b"GIF89a not a pdf")], 415, "not_a_pdf"),
        ([("fake.pdf", b"<html>%PDF-1.4</html>")], 415, "not_a_pdf"),
        ([("empty.pdf", b"")], 415, "not_a_pdf"),
        ([("ok.pdf", PDF), ("bad.pdf", b"MZ\x90\x00")], 415, "not_a_pdf"),
        # `%PDF-` then something else: it must parse as a PDF (pypdf), with a page
        ([("page.pdf", b"%PDF-1.4\n<html><script>alert(1)</script></html>\n%%EOF\n")], 422, "unreadable_pdf"),
        ([("exe.pdf", b"%PDF-1.4\nMZ\x90\x00" + b"\x00" * 64)], 422, "unreadable_pdf"),
        (
            [
                (
                    "nopage.pdf",
                    b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
                )
            ],
            422,
            "unreadable_pdf",
        ),
        # and nothing in it may run
        (
            [("js.pdf", pdf_file(b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >>"))],
            422,
            "active_pdf_content",
        ),
        (
            [("aa.pdf", pdf_file(b"", b"/AA << /O 4 0 R >>", b"<< /S /Launch /F (calc.exe) >>"))],
            422,
            "active_pdf_content",
        ),
        (
            [
                (
                    "names.pdf",
                    pdf_file(
                        b"/Names << /JavaScript 4 0 R >>",
                        b"",
                        b"<< /Names [(a) 5 0 R] >>",
                        b"<< /S /JavaScript /JS (1) >>",
                    ),
                )
            ],
            422,
            "active_pdf_content",
        ),
        ([("huge.pdf", PDF + b"0" * 5000)], 413, "document_too_large"),
        ([(f"f{i}.pdf", PDF) for i in range(11)], 422, "too_many_files"),
    ],
)
async def test_invalid_uploads_are_refused_and_change_nothing(
    service_factory: Callable[..., Awaitable[Service]],
    files: list[tuple[str, bytes]],
    status: int,
    reason: str,
) -> None:
    svc = await service_factory(max_document_bytes=4096)
    await svc.organisation()
    request_id = await _awaiting_documents(svc)
    before = await svc.snapshot(request_id)
    assert_problem(await svc.upload(request_id, files), status, reason)
    assert await svc.snapshot(request_id) == before


async def test_the_default_limit_is_ten_megabytes(svc: Service) -> None:
    request_id = await _awaiting_documents(svc)
    before = await svc.snapshot(request_id)
    oversized = PDF + b"0" * (10 * 1024 * 1024)
    assert_problem(await svc.upload(request_id, [("big.pdf", oversized)]), 413, "document_too_large")
    assert await svc.snapshot(request_id) == before
    exactly = PDF + b"0" * (10 * 1024 * 1024 - len(PDF))
    assert (await svc.upload(request_id, [("max.pdf", exactly)])).status_code == 201


async def test_an_upload_without_a_file_or_by_someone_else_is_refused(svc: Service) -> None:
    request_id = await _awaiting_documents(svc)
    before = await svc.snapshot(request_id)
    url = f"/v1/access-requests/{request_id}/documents"
    assert_problem(await svc.client.post(url, headers=svc.partner()), 422)
    assert_problem(await svc.client.post(url, data={"note": "x"}, headers=svc.partner()), 422)
    assert_problem(await svc.upload(request_id, headers=svc.instructor()), 403, "role_not_allowed")
    assert_problem(
        await svc.upload(request_id, headers=svc.partner("p27", org="org-27")), 403, "not_your_organisation"
    )
    assert await svc.snapshot(request_id) == before


async def test_no_upload_once_the_request_is_closed(svc: Service) -> None:
    request_id = await _awaiting_documents(svc)
    await svc.client.post(f"/v1/access-requests/{request_id}/withdraw", headers=svc.partner())
    before = await svc.snapshot(request_id)
    assert_problem(await svc.upload(request_id), 409, "request_closed")
    assert await svc.snapshot(request_id) == before
