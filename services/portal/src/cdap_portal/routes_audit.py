"""Auditors: search the audit log (new entries added live), who consulted a given dossier, the alerts
and what becomes of them, the latest signed checkpoint.

Searches are plain GET forms: a search can be bookmarked and shared between auditors. The first page
of a search follows the audit's live stream through `/audit/flux` (htmx SSE), which relays it with the
auditor's own token. Acknowledging or closing an alert is a confirmed POST, logged by the audit service.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import FormData

from cdap_portal import domain, texts
from cdap_portal.auth import UserApi, Viewer, fresh_session, require
from cdap_portal.clients import ApiError, checked
from cdap_portal.proofs import ProofCheck, check_entry
from cdap_portal.web import CsrfForm, confirmed, field, portal_of, redirect, render

router = APIRouter(tags=["audit"])
Auditor = require("auditor")

CURSOR = re.compile(r"^\d{1,18}$")
PAGE_SIZE = 50


@dataclass(frozen=True)
class EntrySearch:
    """The search form's values, the audit API's parameters they make, and the errors in them."""

    values: dict[str, str]
    params: dict[str, Any]
    errors: dict[str, str]


async def entry_search(
    acteur: str = "", dossier: str = "", type: str = "", du: str = "", au: str = "", trace: str = ""
) -> EntrySearch:
    """FastAPI dependency: the entry search of the page's query (the page and its CSV export share it)."""
    values = {"acteur": acteur.strip(), "dossier": dossier.strip(), "type": type.strip()}
    values |= {"du": du.strip(), "au": au.strip(), "trace": trace.strip().lower()}
    filters = domain.entry_filters(values)
    params: dict[str, Any] = {"order": "desc", "limit": PAGE_SIZE} | filters.params
    return EntrySearch(values, params, filters.errors)


Search = Annotated[EntrySearch, Depends(entry_search)]


async def log_freshness(api: UserApi) -> dict[str, Any] | None:
    """Until when the log is complete (`GET /v1/freshness`), or None when the audit does not say."""
    try:
        return await api.json("audit", "GET", "/v1/freshness")
    except ApiError:
        return None  # the page then says the log's freshness is unknown


async def _page(request: Request, api: UserApi, template: str, status: int = 200, **context: Any) -> Response:
    """An auditor's page: every one says until when the log is complete, and warns while it lags."""
    return render(request, template, status=status, freshness=await log_freshness(api), **context)


@router.get("/audit")
async def entries(
    request: Request, api: UserApi, search: Search, page: str = "", viewer: Viewer = Auditor
) -> Response:
    values, params, errors = search.values, search.params, search.errors
    if CURSOR.fullmatch(page):
        params["cursor"] = page
    if errors:
        return await _page(
            request, api, "audit_entries.html", status=400, values=values, errors=errors, items=[]
        )
    listing = await api.json("audit", "GET", "/v1/entries", params=params)
    query = {k: v for k, v in values.items() if v}
    # Only the first page (newest first) grows at its top as entries arrive.
    live = None if "cursor" in params else "/audit/flux" + (f"?{urlencode(query)}" if query else "")
    return await _page(
        request,
        api,
        "audit_entries.html",
        values=values,
        errors={},
        items=listing.get("items", []),
        next_cursor=listing.get("next_cursor"),
        query=query,
        live_url=live,
    )


STREAMED = ("actor", "dossier", "type", "trace_id", "from", "to")  # the list's filters the stream takes


@router.get("/audit/flux")
async def live_entries(
    request: Request,
    search: Search,
    last_event_id: Annotated[str | None, Header()] = None,
    viewer: Viewer = Auditor,
) -> Response:
    """The audit's live stream of the search's entries, each as a table row (Server-Sent Events for the
    htmx SSE extension); a reconnecting browser's `Last-Event-ID` resumes it with nothing missed."""
    if search.errors:
        return Response(status_code=204)  # an EventSource stops on 204: nothing to follow
    params = {k: v for k, v in search.params.items() if k in STREAMED}
    resume = {"Last-Event-ID": last_event_id} if last_event_id and CURSOR.fullmatch(last_event_id) else {}
    portal = portal_of(request)
    session = await fresh_session(request)
    upstream = await portal.upstreams.open_stream(
        "audit", "/v1/entries/stream", token=session.access_token, params=params, headers=resume
    )
    row = portal.templates.get_template("_audit_entry_row.html")

    async def relay() -> AsyncIterator[str]:
        try:
            async for kind, value in server_sent_events(upstream.aiter_lines()):
                if kind == "entry":
                    html = " ".join(row.render(e=value).split())  # one `data:` line
                    yield f"id: {value['index']}\nevent: entry\ndata: {html}\n\n"
                else:
                    yield f"{value}\n\n"  # `retry:` and heartbeats pass through
        finally:
            await upstream.aclose()

    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)


async def server_sent_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    """The audit stream's events: ("entry", the entry as listed), or ("line", a `retry:` or comment line)."""
    data: list[str] = []
    async for line in lines:
        if line.startswith((":", "retry:")):
            yield "line", line
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield "entry", json.loads("\n".join(data))
            data = []


@router.get("/audit/consultations")
async def consultations(
    request: Request, api: UserApi, numero: str = "", page: str = "", viewer: Viewer = Auditor
) -> Response:
    """Who consulted this dossier: every lookup, granted or refused, newest first."""
    numero = numero.strip()
    if not numero:
        return await _page(request, api, "audit_consultations.html", numero="", errors={}, items=None)
    errors = domain.check_numero(numero)
    if errors:
        return await _page(
            request, api, "audit_consultations.html", status=400, numero=numero, errors=errors, items=None
        )
    params: dict[str, Any] = {"order": "desc", "limit": PAGE_SIZE}
    if CURSOR.fullmatch(page):
        params["cursor"] = page
    listing = await api.json("audit", "GET", f"/v1/dossiers/{numero}/consultations", params=params)
    return await _page(
        request,
        api,
        "audit_consultations.html",
        numero=numero,
        errors={},
        items=listing.get("items", []),
        next_cursor=listing.get("next_cursor"),
    )


ALERT_STATES = {"open": "Ouverte", "acknowledged": "Prise en charge", "closed": "Close"}
# What the alert forms ask the audit service to do, and the page's message after it.
REVIEWS = {"acquittement": "acknowledge", "cloture": "close"}
ALERT_NOTICES = {
    "acquittement": "L'alerte est prise en charge ; l'acquittement est inscrit au journal.",
    "cloture": "L'alerte est close ; la clôture est inscrite au journal.",
    "transition": "L'alerte a changé d'état entre-temps : rien n'a été fait.",
    "commentaire": "Pour prendre une alerte en charge, dites ce qui est fait (commentaire).",
}


@router.get("/audit/alertes")
async def alerts(
    request: Request,
    api: UserApi,
    gravite: str = "",
    etat: str = "",
    page: str = "",
    info: str = "",
    viewer: Viewer = Auditor,
) -> Response:
    """Alerts with their state; open ones can be acknowledged (with a comment) or closed."""
    params: dict[str, Any] = {"order": "desc", "limit": PAGE_SIZE}
    if gravite in texts.SEVERITIES:
        params["severity"] = gravite
    if etat in ALERT_STATES:
        params["state"] = etat
    if CURSOR.fullmatch(page):
        params["cursor"] = page
    listing = await api.json("audit", "GET", "/v1/alerts", params=params)
    return await _page(
        request,
        api,
        "audit_alerts.html",
        items=listing.get("items", []),
        next_cursor=listing.get("next_cursor"),
        severity=params.get("severity", ""),
        state=params.get("state", ""),
        states=ALERT_STATES,
        notice=ALERT_NOTICES.get(info),
        error=info in ("transition", "commentaire"),
    )


AlertId = Annotated[str, Path(pattern=r"^[0-9A-Za-z-]{1,64}$")]


@router.post("/audit/alertes/{alert_id}/acquittement")
async def acknowledge_alert(
    request: Request, form: CsrfForm, api: UserApi, alert_id: AlertId, viewer: Viewer = Auditor
) -> Response:
    """Take an alert in hand, saying what is done (a comment is required), once confirmed."""
    if not field(form, "commentaire"):
        return redirect("/audit/alertes?info=commentaire")
    return await _confirmed_review(request, form, api, alert_id, "acquittement")


@router.post("/audit/alertes/{alert_id}/cloture")
async def close_alert(
    request: Request, form: CsrfForm, api: UserApi, alert_id: AlertId, viewer: Viewer = Auditor
) -> Response:
    """Close an alert, once confirmed."""
    return await _confirmed_review(request, form, api, alert_id, "cloture")


# What the confirmation page of each review says: its title and its effect.
REVIEW_CONFIRMATIONS = {
    "acquittement": (
        "Prendre l'alerte en charge",
        "L'alerte passe à « prise en charge » avec votre commentaire ; votre nom et l'heure sont inscrits "
        "au journal d'audit.",
    ),
    "cloture": (
        "Clore l'alerte",
        "L'alerte est close : elle ne pourra plus être prise en charge. La clôture est inscrite au "
        "journal d'audit.",
    ),
}


async def _confirmed_review(
    request: Request, form: FormData, api: UserApi, alert_id: str, review: str
) -> Response:
    """The review (`acquittement` or `cloture`) sent to the audit service once the auditor confirms it;
    a change meanwhile (409) is said, not an error."""
    title, effect = REVIEW_CONFIRMATIONS[review]

    async def send() -> Response:
        response = await api.call(
            "audit",
            "POST",
            f"/v1/alerts/{alert_id}/{REVIEWS[review]}",
            json={"comment": field(form, "commentaire") or None},
        )
        if response.status_code == 409:
            return redirect("/audit/alertes?info=transition")
        checked("audit", response)
        return redirect(f"/audit/alertes?info={review}")

    return await confirmed(request, form, title, effect, send, back="/audit/alertes")


@router.get("/audit/point-de-controle")
async def checkpoint(request: Request, api: UserApi, viewer: Viewer = Auditor) -> Response:
    """The latest signed checkpoint (tree size, root hash, signed note) to note down or compare."""
    try:
        body: dict[str, Any] | None = await api.json(
            "audit", "GET", "/v1/checkpoints/latest", headers={"Accept": "application/json"}
        )
    except ApiError as exc:
        if exc.status != 404:  # 404: nothing signed yet, which the page says
            raise
        body = None
    return await _page(request, api, "audit_checkpoint.html", checkpoint=body)


# ------------------------------------------------------------------------------- one entry, its proof

PROOF_OUTCOMES = {
    "verified": "Entrée vérifiée : elle figure dans l'arbre signé par le dernier point de contrôle.",
    "pending": "Entrée pas encore couverte : elle est postérieure au dernier point de contrôle signé ; "
    "revenez après le prochain.",
    "failed": "Vérification impossible : le journal ne correspond pas à ce qui a été signé. Signalez-le.",
}


async def _proof_material(api: UserApi, index: int) -> dict[str, Any]:
    """The entry, the latest signed checkpoint, the log's verifier key and the inclusion proof."""
    entry = await api.json("audit", "GET", f"/v1/entries/{index}")
    try:
        checkpoint = await api.json(
            "audit", "GET", "/v1/checkpoints/latest", headers={"Accept": "application/json"}
        )
    except ApiError as exc:
        if exc.status != 404:  # 404: nothing signed yet
            raise
        checkpoint = {}
    key = (
        await api.call("audit", "GET", "/v1/checkpoints/key", headers={"Accept": "text/plain"})
    ).text.strip()
    size = int(checkpoint.get("tree_size") or 0)
    proof = None
    if index < size:
        body = await api.json(
            "audit", "GET", "/v1/proofs/inclusion", params={"index": index, "tree_size": size}
        )
        proof = body.get("hashes")
    return {"entry": entry, "checkpoint": checkpoint, "verifier_key": key, "inclusion_proof": proof}


@router.get("/audit/entrees/{index}")
async def entry_page(
    request: Request, api: UserApi, index: int = Path(ge=0, le=10**15), viewer: Viewer = Auditor
) -> Response:
    """One entry, its inclusion proof checked here against the latest signed checkpoint."""
    material = await _proof_material(api, index)
    checkpoint = material["checkpoint"]
    result = (
        check_entry(
            material["entry"],
            index,
            str(checkpoint["note"]),
            material["verifier_key"],
            material["inclusion_proof"],
        )
        if checkpoint.get("note")
        else ProofCheck("pending", "no checkpoint signed yet")
    )
    return await _page(
        request,
        api,
        "audit_entry.html",
        status=200,
        e=material["entry"],
        checkpoint=checkpoint,
        result=result,
        outcome_text=PROOF_OUTCOMES[result.outcome],
    )


@router.get("/audit/entrees/{index}/preuve.json")
async def entry_proof(
    request: Request, api: UserApi, index: int = Path(ge=0, le=10**15), viewer: Viewer = Auditor
) -> Response:
    """Everything needed to check the entry elsewhere: the entry, the signed note, the key, the proof."""
    material = await _proof_material(api, index)
    return Response(
        json.dumps(material, ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="cdap-audit-entree-{index}-preuve.json"'},
    )


# ------------------------------------------------------------------------------------------ CSV exports

CSV_COLUMNS = (
    "index", "time", "type", "actor", "organisation_id", "profile", "subject", "decision", "reason", "motif",
    "sections", "trace_id", "event_id",
)  # fmt: skip
EXPORT_LIMIT = 10_000


async def _all_items(api: UserApi, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a listing, page by page, up to EXPORT_LIMIT."""
    items: list[dict[str, Any]] = []
    params = {**params, "limit": 1000}
    while len(items) < EXPORT_LIMIT:
        page = await api.json("audit", "GET", path, params=params)
        items += page.get("items", [])
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    return items[:EXPORT_LIMIT]


def _csv(items: list[dict[str, Any]], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for item in items:
        row = [item.get(c) for c in CSV_COLUMNS]
        writer.writerow(["|".join(v) if isinstance(v, list) else "" if v is None else v for v in row])
    return Response(
        "\ufeff" + out.getvalue(),  # the BOM lets spreadsheet software read the accents as UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/audit/export.csv")
async def export_entries(
    request: Request, api: UserApi, search: Search, viewer: Viewer = Auditor
) -> Response:
    """The entries of a search (the same filters as the page), newest first, as CSV."""
    if search.errors:
        return await _page(
            request,
            api,
            "audit_entries.html",
            status=400,
            values=search.values,
            errors=search.errors,
            items=[],
        )
    params = {k: v for k, v in search.params.items() if k != "limit"}
    return _csv(await _all_items(api, "/v1/entries", params), "cdap-audit-entrees.csv")


@router.get("/audit/consultations.csv")
async def export_consultations(
    request: Request, api: UserApi, numero: str = "", viewer: Viewer = Auditor
) -> Response:
    """Every recorded consultation of one dossier, newest first, as CSV."""
    numero = numero.strip()
    errors = domain.check_numero(numero)
    if errors:
        return await _page(
            request, api, "audit_consultations.html", status=400, numero=numero, errors=errors, items=None
        )
    items = await _all_items(api, f"/v1/dossiers/{numero}/consultations", {"order": "desc"})
    return _csv(items, f"cdap-consultations-{numero}.csv")
