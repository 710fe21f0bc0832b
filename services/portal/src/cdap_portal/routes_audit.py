"""Auditors: search the audit log, who consulted a given dossier, the alerts, the latest signed checkpoint.

These pages only read (the audit service records nothing for them), so they are plain GET forms: a
search can be bookmarked and shared between auditors.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cdap_portal import texts
from cdap_portal.auth import UserApi, Viewer, require
from cdap_portal.clients import ApiError
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


@router.get("/audit")
async def entries(
    request: Request,
    api: UserApi,
    acteur: str = "",
    dossier: str = "",
    type: str = "",
    du: str = "",
    au: str = "",
    trace: str = "",
    page: str = "",
    viewer: Viewer = Auditor,
) -> Response:
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
