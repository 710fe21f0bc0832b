"""Auditors: search the audit log, who consulted a given dossier, the alerts, the latest signed checkpoint.

These pages only read (the audit service records nothing for them), so they are plain GET forms: a
search can be bookmarked and shared between auditors.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from cdap_portal import texts
from cdap_portal.auth import UserApi, Viewer, require
from cdap_portal.clients import ApiError
from cdap_portal.proofs import ProofCheck, check_entry
from cdap_portal.web import render

router = APIRouter(tags=["audit"])
Auditor = require("auditor")

NUMERO = re.compile(r"^\d{7}$")
TRACE = re.compile(r"^[0-9a-f]{32}$")
TYPE = re.compile(r"^[a-z]+(\.[a-z_]+)+$")
CURSOR = re.compile(r"^\d{1,18}$")
PAGE_SIZE = 50


def _moment(value: str) -> datetime | None:
    """A `datetime-local` (or date) field, read as Paris time."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=texts.PARIS)


@dataclass(frozen=True)
class EntrySearch:
    """The search form's values, the audit API's parameters they make, and the errors in them."""

    values: dict[str, str]
    params: dict[str, Any]
    errors: dict[str, str]


def entry_search(
    acteur: str = "", dossier: str = "", type: str = "", du: str = "", au: str = "", trace: str = ""
) -> EntrySearch:
    """FastAPI dependency: the entry search of the page's query (the page and its CSV export share it)."""
    values = {"acteur": acteur.strip(), "dossier": dossier.strip(), "type": type.strip()}
    values |= {"du": du.strip(), "au": au.strip(), "trace": trace.strip().lower()}
    errors: dict[str, str] = {}
    params: dict[str, Any] = {"order": "desc", "limit": PAGE_SIZE}
    if values["acteur"]:
        params["actor"] = values["acteur"][:200]
    checks = (
        ("dossier", NUMERO, "dossier", "Le numéro allocataire comporte 7 chiffres."),
        ("type", TYPE, "type", "Type d'événement invalide."),
        ("trace", TRACE, "trace_id", "L'identifiant de trace comporte 32 caractères hexadécimaux."),
    )
    for name, pattern, param, message in checks:
        if values[name]:
            if pattern.fullmatch(values[name]):
                params[param] = values[name]
            else:
                errors[name] = message
    for name, param in (("du", "from"), ("au", "to")):
        if values[name]:
            moment = _moment(values[name])
            if moment is None:
                errors[name] = "Date invalide."
            else:
                params[param] = moment.isoformat()
    return EntrySearch(values, params, errors)


Search = Annotated[EntrySearch, Depends(entry_search)]


@router.get("/audit")
async def entries(
    request: Request, api: UserApi, search: Search, page: str = "", viewer: Viewer = Auditor
) -> Response:
    values, params, errors = search.values, search.params, search.errors
    if CURSOR.fullmatch(page):
        params["cursor"] = page
    if errors:
        return render(request, "audit_entries.html", status=400, values=values, errors=errors, items=[])
    listing = await api.json("audit", "GET", "/v1/entries", params=params)
    return render(
        request,
        "audit_entries.html",
        values=values,
        errors={},
        items=listing.get("items", []),
        next_cursor=listing.get("next_cursor"),
        query={k: v for k, v in values.items() if v},
    )


@router.get("/audit/consultations")
async def consultations(
    request: Request, api: UserApi, numero: str = "", page: str = "", viewer: Viewer = Auditor
) -> Response:
    """Who consulted this dossier: every lookup, granted or refused, newest first."""
    numero = numero.strip()
    if not numero:
        return render(request, "audit_consultations.html", numero="", errors={}, items=None)
    if not NUMERO.fullmatch(numero):
        errors = {"numero": "Le numéro allocataire comporte 7 chiffres."}
        return render(
            request, "audit_consultations.html", status=400, numero=numero, errors=errors, items=None
        )
    params: dict[str, Any] = {"order": "desc", "limit": PAGE_SIZE}
    if CURSOR.fullmatch(page):
        params["cursor"] = page
    listing = await api.json("audit", "GET", f"/v1/dossiers/{numero}/consultations", params=params)
    return render(
        request,
        "audit_consultations.html",
        numero=numero,
        errors={},
        items=listing.get("items", []),
        next_cursor=listing.get("next_cursor"),
    )


@router.get("/audit/alertes")
async def alerts(
    request: Request, api: UserApi, gravite: str = "", page: str = "", viewer: Viewer = Auditor
) -> Response:
    params: dict[str, Any] = {"order": "desc", "limit": PAGE_SIZE}
    if gravite in texts.SEVERITIES:
        params["severity"] = gravite
    if CURSOR.fullmatch(page):
        params["cursor"] = page
    listing = await api.json("audit", "GET", "/v1/alerts", params=params)
    return render(
        request,
        "audit_alerts.html",
        items=listing.get("items", []),
        next_cursor=listing.get("next_cursor"),
        severity=params.get("severity", ""),
    )


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
    return render(request, "audit_checkpoint.html", checkpoint=body)


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
    return render(
        request,
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
        return render(
            request, "audit_entries.html", status=400, values=search.values, errors=search.errors, items=[]
        )
    params = {k: v for k, v in search.params.items() if k != "limit"}
    return _csv(await _all_items(api, "/v1/entries", params), "cdap-audit-entrees.csv")


@router.get("/audit/consultations.csv")
async def export_consultations(
    request: Request, api: UserApi, numero: str = "", viewer: Viewer = Auditor
) -> Response:
    """Every recorded consultation of one dossier, newest first, as CSV."""
    numero = numero.strip()
    if not NUMERO.fullmatch(numero):
        errors = {"numero": "Le numéro allocataire comporte 7 chiffres."}
        return render(
            request, "audit_consultations.html", status=400, numero=numero, errors=errors, items=None
        )
    items = await _all_items(api, f"/v1/dossiers/{numero}/consultations", {"order": "desc"})
    return _csv(items, f"cdap-consultations-{numero}.csv")
