"""CAF instructors and managers: the department's queue as a work list ("À traiter": what awaits the
viewer's own decision, with a count; every request by state; search by organisation, SIRET or person;
business days left), and a request's detail with the decision forms (approve, reject with a reason,
request documents) for whoever may take the decision, each confirmed with its effect first.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cdap_portal import domain, texts
from cdap_portal.auth import UserApi, Viewer, require
from cdap_portal.clients import ApiError
from cdap_portal.routes_requests import (
    MESSAGE_INFOS,
    RequestId,
    new_idempotency_key,
    organisation_names,
    refusal_of,
    request_detail,
)
from cdap_portal.web import CsrfForm, confirmed, field, redirect, render

router = APIRouter(tags=["instruction"])
Approver = require("caf_instructor", "caf_manager")

DECISIONS = {
    "approve": "La demande a été validée.",
    "reject": "La demande a été refusée.",
    "request_documents": "Les pièces ont été demandées au partenaire.",
}


TODO, ALL = "a-traiter", "toutes"

DECISION_TITLES = {
    "approve": "Valider la demande",
    "reject": "Refuser la demande",
    "request_documents": "Demander des pièces",
}


@router.get("/instruction")
async def queue(
    request: Request,
    api: UserApi,
    vue: str = "",
    etat: str = "",
    q: str = "",
    page: str = "",
    viewer: Viewer = Approver,
) -> Response:
    """The work list: by default what awaits this person's decision (their stage, not yet approved by
    them), oldest due date first; `vue=toutes` shows every request of the department, by state."""
    view = ALL if vue == ALL else TODO
    search = q.strip()[:100]
    params = {
        "awaiting_me": "true" if view == TODO else "",
        "state": etat if view == ALL and etat in texts.STATES else "",
        "q": search,
        "cursor": page,
    }
    listing = await api.json(
        "access", "GET", "/v1/access-requests", params={k: v for k, v in params.items() if v}
    )
    items = listing.get("items", [])
    unnamed = (str(r.get("organisation_id", "")) for r in items if not r.get("organisation_name"))
    names = await organisation_names(api, unnamed)
    for r in items:
        r["organisation_name"] = r.get("organisation_name") or names.get(str(r.get("organisation_id", "")))
    todo_count = listing.get("total") if view == TODO else await _todo_count(api)
    return render(
        request,
        "queue.html",
        items=items,
        total=listing.get("total"),
        todo_count=todo_count,
        view=view,
        search=search,
        next_cursor=listing.get("next_cursor"),
        state=params["state"],
    )


async def _todo_count(api: UserApi) -> int | None:
    """How many requests await the viewer's decision (for the tab), or None when it cannot be said."""
    try:
        page = await api.json(
            "access", "GET", "/v1/access-requests", params={"awaiting_me": "true", "limit": 1}
        )
    except ApiError:
        return None
    total = page.get("total")
    return total if isinstance(total, int) else None


def _detail_page(
    request: Request, detail: dict[str, Any], viewer: Viewer, status: int = 200, **context: Any
) -> Response:
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return render(
        request,
        "request_detail.html",
        status=status,
        req=detail,
        mode="caf",
        may_decide=domain.may_decide(detail, viewer),
        decider_role=domain.DECIDER_ROLE.get(str(detail.get("state"))),
        idempotency_key=new_idempotency_key(),
        **context,
    )


@router.get("/instruction/{request_id}")
async def instruction_detail(
    request: Request, api: UserApi, request_id: RequestId, info: str = "", viewer: Viewer = Approver
) -> Response:
    detail = await request_detail(api, request_id)
    return _detail_page(request, detail, viewer, notice=DECISIONS.get(info) or MESSAGE_INFOS.get(info))


@router.post("/instruction/{request_id}/decision")
async def decide(
    request: Request, form: CsrfForm, api: UserApi, request_id: RequestId, viewer: Viewer = Approver
) -> Response:
    decision = field(form, "decision")
    comment = field(form, "comment")
    documents = [line.strip() for line in field(form, "documents").splitlines() if line.strip()]
    values = {"decision": decision, "comment": comment, "documents": field(form, "documents")}
    errors = domain.check_decision(decision, comment, documents)
    detail = await request_detail(api, request_id)
    if errors:
        return _detail_page(request, detail, viewer, status=400, errors=errors, values=values)

    async def act() -> Response:
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
            # The version the person read: a decision on a request changed since is refused (409), not
            # applied.
            headers["If-Match"] = f'"{version}"'
        path = f"/v1/access-requests/{request_id}/decisions"
        response = await api.call("access", "POST", path, json=body, headers=headers)
        if response.is_success:
            return redirect(f"/instruction/{request_id}?info={decision}")
        error = refusal_of(response)
        failure = texts.request_refusal(error.reason, error.status)
        shown = await request_detail(api, request_id)
        return _detail_page(request, shown, viewer, status=error.status, failure=failure, values=values)

    return await confirmed(
        request,
        form,
        DECISION_TITLES[decision],
        domain.decision_effect(detail, decision, comment, documents),
        act,
        back=f"/instruction/{request_id}",
    )
