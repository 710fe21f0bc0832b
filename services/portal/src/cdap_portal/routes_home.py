"""The home page: what the signed-in person can do, by role."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cdap_portal.auth import CurrentViewer
from cdap_portal.web import render

router = APIRouter(tags=["accueil"])


@router.get("/")
async def home(request: Request, viewer: CurrentViewer) -> Response:
    return render(request, "home.html")
