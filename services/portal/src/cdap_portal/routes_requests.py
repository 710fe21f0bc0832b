"""Partner administrators: the access requests they filed (list, detail with history), a new request for
one of their staff, documents upload when the CAF asks for them, withdrawal; and the document viewer,
which CAF approvers use too.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from cdap_portal import domain, texts
from cdap_portal.auth import UserApi, Viewer, require
from cdap_portal.clients import ApiError
from cdap_portal.web import CsrfForm, field, portal_of, redirect, render
from cdap_shared.bodylimit import UPLOAD_MAX_BODY, max_body
from cdap_shared.clock import civil_today

router = APIRouter(tags=["demandes"])
PartnerAdmin = require("partner_admin")
RequestReader = require("partner_admin", "caf_instructor", "caf_manager", "caf_admin")
MailRecipient = require("partner_admin", "caf_instructor", "caf_manager")
UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# Identity's and access-requests' ids, as the portal's paths carry them (a malformed one is a 422 page).
RequestId = Annotated[str, Path(pattern=UUID)]
DocumentId = Annotated[str, Path(pattern=UUID)]
GrantId = Annotated[str, Path(pattern=UUID)]
AccountId = Annotated[str, Path(pattern=UUID)]
OrganisationId = Annotated[str, Path(pattern=UUID)]

# After a message is posted in a request's thread (partner and CAF pages alike).
MESSAGE_INFOS = {
    "message": "Votre message est envoyé ; il apparaît dans l'historique de la demande.",
    "message-vide": "Le message est vide : rien n'a été envoyé.",
}
INFOS = {
    **MESSAGE_INFOS,
    "deposee": "Votre demande a été déposée. La CAF l'instruira ; vous serez informé par courriel.",
    "pieces": "Les pièces ont été transmises à la CAF.",
    "retiree": "La demande a été retirée.",
}
MAX_FILES = 10


def new_idempotency_key() -> str:
    """One per rendered form: a double click or a resend has one effect (the API deduplicates)."""
    return secrets.token_urlsafe(16)


@router.get("/demandes")
async def my_requests(
    request: Request, api: UserApi, etat: str = "", page: str = "", viewer: Viewer = PartnerAdmin
) -> Response:
    params = {k: v for k, v in {"state": etat, "cursor": page}.items() if v}
    if etat and etat not in texts.STATES:
        params.pop("state")
    listing = await api.json("access", "GET", "/v1/access-requests", params=params)
    return render(
        request,
        "requests.html",
        items=listing.get("items", []),
        next_cursor=listing.get("next_cursor"),
        state=params.get("state", ""),
    )


async def _profiles(api: UserApi) -> dict[str, Any]:
    """The profiles a partner may ask for (access-requests' catalogue), with their labels."""
    try:
        body = await api.json("access", "GET", "/v1/profiles")
    except ApiError:
        return {}
    profiles = body.get("profiles")
    return profiles if isinstance(profiles, dict) else {}


async def _org_department(api: UserApi, viewer: Viewer) -> str:
    if not viewer.org:
        return ""
    try:
        org = await api.json("identity", "GET", f"/v1/organisations/{viewer.org}")
    except ApiError:
        return ""
    return str(org.get("department", ""))


def _form_page(
    request: Request, profiles: dict[str, Any], values: dict[str, str], status: int = 200, **context: Any
) -> Response:
    today = civil_today()
    context.setdefault("errors", {})
    return render(
        request,
        "request_new.html",
        status=status,
        profiles=profiles,
        values=values,
        min_date=(today + timedelta(days=1)).isoformat(),
        max_date=(today + timedelta(days=365)).isoformat(),
        idempotency_key=values.get("idempotency_key") or new_idempotency_key(),
        **context,
    )


@router.get("/demandes/nouvelle")
async def new_request_page(request: Request, api: UserApi, viewer: Viewer = PartnerAdmin) -> Response:
    values = {"department": await _org_department(api, viewer)}
    values["valid_until"] = (civil_today() + timedelta(days=365)).isoformat()
    return _form_page(request, await _profiles(api), values)


FIELDS = ("family_name", "given_name", "email", "job_title", "profile", "department", "justification")


# Which form field a refusal of the API is about, to show the message next to it.
REASON_FIELDS = {
    "unknown_profile": "profile",
    "unknown_department": "department",
    "department_mismatch": "department",
    "end_date_not_in_future": "valid_until",
    "end_date_too_far": "valid_until",
    "beyond_convention": "valid_until",
}


@router.post("/demandes/nouvelle")
async def submit_request(
    request: Request, form: CsrfForm, api: UserApi, viewer: Viewer = PartnerAdmin
) -> Response:
    values = {name: field(form, name) for name in (*FIELDS, "valid_until", "idempotency_key")}
    profiles = await _profiles(api)
    errors = domain.check_request(values, profiles, civil_today())
    if errors:
        return _form_page(request, profiles, values, status=400, errors=errors)
    body = {
        "organisation_id": viewer.org,
        "applicant": {k: values[k] for k in ("family_name", "given_name", "email", "job_title")},
        "profile": values["profile"],
        "department": values["department"],
        "justification": values["justification"],
        "valid_until": values["valid_until"],
    }
    headers = {"Idempotency-Key": values["idempotency_key"]} if values["idempotency_key"] else {}
    response = await api.call("access", "POST", "/v1/access-requests", json=body, headers=headers)
    if response.status_code in (200, 201):
        return redirect(f"/demandes/{response.json()['id']}?info=deposee")
    error = refusal_of(response)
    message = texts.request_refusal(error.reason, error.status)
    where = REASON_FIELDS.get(error.reason or "")
    return _form_page(
        request,
        profiles,
        values,
        status=400 if error.status == 422 else error.status,
        errors={where: message} if where else {},
        failure=None if where else message,
    )


def _error_of(response: Any) -> ApiError:
    """The error in an access-requests answer."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    return ApiError("access", response.status_code, body if isinstance(body, dict) else {})


def refusal_of(response: Any) -> ApiError:
    """The refusal an unsuccessful access-requests answer carries, for the page to say; a server error is
    raised instead (the error page), never shown as a refusal."""
    error = _error_of(response)
    if error.status >= 500:
        raise error
    return error


async def organisation_names(api: UserApi, ids: Iterable[str]) -> dict[str, str]:
    """The organisations' names by id, from identity (one call per organisation, concurrently); an
    organisation identity will not name to this person is left out (the page shows its id)."""
    unique = sorted({i for i in ids if i})

    async def name(organisation_id: str) -> str | None:
        try:
            org = await api.json("identity", "GET", f"/v1/organisations/{organisation_id}")
        except ApiError:
            return None
        return str(org["name"]) if org.get("name") else None

    names = await asyncio.gather(*(name(i) for i in unique))
    return {i: n for i, n in zip(unique, names, strict=True) if n}


async def account_names(api: UserApi, ids: Iterable[str]) -> dict[str, str]:
    """People's names by account id, from identity's account list (one call); an account identity does
    not show to this person (another department's, the CAF's staff for a partner) is left out."""
    unique = sorted({i for i in ids if i})[:100]
    if not unique:
        return {}
    try:
        page = await api.json("identity", "GET", "/v1/users", params={"id": unique, "limit": 100})
    except ApiError:
        return {}
    return {str(u["id"]): str(u["display_name"]) for u in page.get("items", []) if u.get("display_name")}


async def request_detail(api: UserApi, request_id: str) -> dict[str, Any]:
    """The request, with its organisation's name (`organisation_name`: access-requests' projection, else
    identity) and the names of the people in its history (`actor_names`, by account id)."""
    detail = await api.json("access", "GET", f"/v1/access-requests/{request_id}")
    organisation_id = str(detail.get("organisation_id", ""))
    history = detail.get("history") or []
    names, actors = await asyncio.gather(
        organisation_names(api, [] if detail.get("organisation_name") else [organisation_id]),
        account_names(api, (str(h.get("actor") or "") for h in history)),
    )
    detail["organisation_name"] = detail.get("organisation_name") or names.get(organisation_id)
    detail["actor_names"] = actors
    return detail


@router.get("/access-requests/{request_id}")
async def request_link(request_id: RequestId, viewer: Viewer = MailRecipient) -> Response:
    """The address access-requests writes in its mails: the request's page for the recipient's role
    (the CAF queues' mailboxes go to the instruction page, the partner to their request page)."""
    if viewer.has("caf_instructor", "caf_manager"):
        return redirect(f"/instruction/{request_id}")
    return redirect(f"/demandes/{request_id}")


@router.get("/demandes/{request_id}")
async def my_request(
    request: Request, api: UserApi, request_id: RequestId, info: str = "", viewer: Viewer = PartnerAdmin
) -> Response:
    detail = await request_detail(api, request_id)
    return render(request, "request_detail.html", req=detail, mode="partner", notice=INFOS.get(info))


async def _detail_with_error(
    request: Request, api: UserApi, request_id: str, failure: str, status: int, errors: dict[str, str]
) -> Response:
    detail = await request_detail(api, request_id)
    return render(
        request,
        "request_detail.html",
        status=status,
        req=detail,
        mode="partner",
        failure=failure,
        errors=errors,
    )


@router.post("/demandes/{request_id}/pieces", openapi_extra=max_body(UPLOAD_MAX_BODY))
async def upload(
    request: Request, form: CsrfForm, api: UserApi, request_id: RequestId, viewer: Viewer = PartnerAdmin
) -> Response:
    """Send PDF documents; checked here first (PDF, size, count) so a mistake costs no upload."""
    limit = portal_of(request).settings.max_upload_bytes
    uploads = [f for f in form.getlist("documents") if isinstance(f, UploadFile) and f.filename]
    problem = None
    files: list[tuple[str, tuple[str, bytes, str]]] = []
    if not uploads:
        problem = "Choisissez au moins un fichier PDF."
    elif len(uploads) > MAX_FILES:
        problem = texts.REQUEST_REASONS["too_many_files"]
    for upload_file in uploads if problem is None else []:
        content = await upload_file.read(limit + 1)
        if len(content) > limit:
            problem = f"{upload_file.filename} : " + texts.REQUEST_REASONS["document_too_large"]
        elif not content.startswith(b"%PDF-"):
            problem = f"{upload_file.filename} : " + texts.REQUEST_REASONS["not_a_pdf"]
        files.append(("files", (upload_file.filename or "document.pdf", content, "application/pdf")))
    if problem:
        return await _detail_with_error(request, api, request_id, problem, 400, {"documents": problem})
    response = await api.call("access", "POST", f"/v1/access-requests/{request_id}/documents", files=files)
    if response.is_success:
        return redirect(f"/demandes/{request_id}?info=pieces")
    error = refusal_of(response)
    message = texts.request_refusal(error.reason, error.status)
    return await _detail_with_error(request, api, request_id, message, error.status, {"documents": message})


@router.post("/demandes/{request_id}/retrait")
async def withdraw(
    request: Request, form: CsrfForm, api: UserApi, request_id: RequestId, viewer: Viewer = PartnerAdmin
) -> Response:
    comment = field(form, "comment")
    body = {"comment": comment} if comment else None
    response = await api.call("access", "POST", f"/v1/access-requests/{request_id}/withdraw", json=body)
    if response.is_success:
        return redirect(f"/demandes/{request_id}?info=retiree")
    error = refusal_of(response)
    return await _detail_with_error(
        request, api, request_id, texts.request_refusal(error.reason, error.status), error.status, {}
    )


@router.get("/documents/{request_id}/{document_id}")
async def document(
    request: Request,
    api: UserApi,
    request_id: RequestId,
    document_id: DocumentId,
    viewer: Viewer = RequestReader,
) -> Response:
    """The document viewer: the PDF as the service stores it, shown inline, sandboxed, never cached."""
    response = await api.call("access", "GET", f"/v1/access-requests/{request_id}/documents/{document_id}")
    if not response.is_success:
        raise _error_of(response)
    headers = {
        "Content-Disposition": response.headers.get("Content-Disposition", "inline"),
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "private, no-store",
    }
    if "Repr-Digest" in response.headers:
        headers["Repr-Digest"] = response.headers["Repr-Digest"]
    return Response(response.content, media_type="application/pdf", headers=headers)
