"""The home page (what the signed-in person can do, by role) and the pages every State site must have,
linked from the footer and open without signing in."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cdap_portal.auth import CurrentViewer
from cdap_portal.web import render

router = APIRouter(tags=["accueil"])


@router.get("/")
async def home(request: Request, viewer: CurrentViewer) -> Response:
    return render(request, "home.html")


@router.get("/accessibilite")
async def accessibility(request: Request) -> Response:
    """The accessibility statement, with the RGAA conformity state and what the tests measured."""
    return render(request, "accessibilite.html")


@router.get("/mentions-legales")
async def legal_notice(request: Request) -> Response:
    return render(request, "mentions_legales.html")


@router.get("/donnees-personnelles")
async def personal_data(request: Request) -> Response:
    return render(request, "donnees_personnelles.html")
