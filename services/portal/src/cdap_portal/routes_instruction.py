"""CAF instructors and managers: the department's queue (oldest due date first, overdue highlighted,
filter by state) and a request's detail with the decision forms (approve, reject with a reason,
request documents).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from cdap_portal import texts
from cdap_portal.auth import UserApi, Viewer, require
from cdap_portal.routes_requests import (
    MESSAGE_INFOS,
    UUID,
    _error_of,
    new_idempotency_key,
    organisation_names,
    request_detail,
)
from cdap_portal.web import CsrfForm, field, redirect, render

router = APIRouter(tags=["instruction"])
Approver = require("caf_instructor", "caf_manager")

DECISIONS = {
    "approve": "La demande a été validée.",
    "reject": "La demande a été refusée.",
    "request_documents": "Les pièces ont été demandées au partenaire.",
}


@router.get("/instruction")
async def queue(
    request: Request, api: UserApi, etat: str = "", page: str = "", viewer: Viewer = Approver
) -> Response:
    params = {"state": etat if etat in texts.STATES else "", "cursor": page}
    listing = await api.json(
        "access", "GET", "/v1/access-requests", params={k: v for k, v in params.items() if v}
    )
    items = listing.get("items", [])
    return render(
        request,
        "queue.html",
        items=items,
        organisations=await organisation_names(api, (str(r.get("organisation_id", "")) for r in items)),
        next_cursor=listing.get("next_cursor"),
        state=params["state"],
    )


def _detail_page(request: Request, detail: dict[str, Any], status: int = 200, **context: Any) -> Response:
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return render(
        request,
        "request_detail.html",
        status=status,
        req=detail,
        mode="caf",
        idempotency_key=new_idempotency_key(),
        **context,
    )


@router.get("/instruction/{request_id}")
async def instruction_detail(
    request: Request,
    api: UserApi,
    request_id: str = Path(pattern=UUID),
    info: str = "",
    viewer: Viewer = Approver,
) -> Response:
    detail = await request_detail(api, request_id)
    return _detail_page(request, detail, notice=DECISIONS.get(info) or MESSAGE_INFOS.get(info))


@router.post("/instruction/{request_id}/decision")
async def decide(
    request: Request,
    form: CsrfForm,
    api: UserApi,
    request_id: str = Path(pattern=UUID),
    viewer: Viewer = Approver,
) -> Response:
    decision = field(form, "decision")
    comment = field(form, "comment")
    documents = [line.strip() for line in field(form, "documents").splitlines() if line.strip()]
    values = {"decision": decision, "comment": comment, "documents": field(form, "documents")}
    errors: dict[str, str] = {}
    if decision not in DECISIONS:
        errors["decision"] = "Choisissez une décision."
    elif decision == "reject" and not comment:
        errors[f"comment-{decision}"] = texts.REQUEST_REASONS["comment_required"]
    elif decision == "request_documents" and not documents:
        errors["documents"] = texts.REQUEST_REASONS["documents_required"]
    if errors:
        detail = await request_detail(api, request_id)
        return _detail_page(request, detail, status=400, errors=errors, values=values)
    body: dict[str, Any] = {"decision": decision}
    if comment:
        body["comment"] = comment
    if documents:
        body["documents"] = documents[:20]
    headers = {}
    if field(form, "idempotency_key"):
        headers["Idempotency-Key"] = field(form, "idempotency_key", 200)
    version = field(form, "version")
    if version.isdigit():
        # The version the person read: a decision on a request changed since is refused (409), not applied.
        headers["If-Match"] = f'"{version}"'
    response = await api.call(
        "access", "POST", f"/v1/access-requests/{request_id}/decisions", json=body, headers=headers
    )
    if response.is_success:
        return redirect(f"/instruction/{request_id}?info={decision}")
    error = _error_of(response)
    if error.status >= 500:
        raise error
    detail = await request_detail(api, request_id)
    return _detail_page(
        request,
        detail,
        status=error.status,
        failure=texts.request_refusal(error.reason, error.status),
        values=values,
    )
