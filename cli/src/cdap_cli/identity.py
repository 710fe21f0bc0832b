"""`cdap identity ...`: bootstrap the first CAF admin, rotate the signing keys.

Both run against identity's database (`CDAP_DATABASE_URL`) with identity's own service functions: the
first admin exists before anyone could call the API, and a key rotation is an operator's act.
"""

from __future__ import annotations

import asyncio
import json

import typer
from sqlalchemy.exc import DBAPIError, ProgrammingError

from cdap_identity import accounts, domain, keystore
from cdap_identity.config import Settings
from cdap_shared.db import create_engine, session_factory

app = typer.Typer(help="The identity service: accounts and signing keys.", no_args_is_help=True)


async def bootstrap_admin(
    settings: Settings, email: str, family: str, given: str, department: str
) -> tuple[str, str]:
    """Create a CAF admin of `department` in identity's database; its id and its activation token."""
    engine = create_engine(settings.database_url, 1)
    try:
        async with session_factory(engine)() as session, session.begin():
            created = await accounts.create_account(
                session,
                email=email,
                family_name=family,
                given_name=given,
                roles=[domain.CAF_ADMIN],
                organisation_id=None,
                department=department,
                activation_hours=settings.activation_hours,
            )
        return created.user.id, created.activation_token
    finally:
        await engine.dispose()


@app.command()
def bootstrap(
    email: str = typer.Option(..., "--email", help="E-mail of the first CAF admin."),
    family_name: str = typer.Option("Admin", "--family-name"),
    given_name: str = typer.Option("CAF", "--given-name"),
    department: str = typer.Option("76", "--department", help="The admin's CAF department."),
    as_json: bool = typer.Option(False, "--json", help="Print {user_id, activation_token} as JSON."),
) -> None:
    """Create the first CAF admin and print its activation token (then POST /v1/activations)."""
    if not domain.valid_department(department):
        raise typer.BadParameter("department must be 01-95 (not 20), 2A, 2B or 971-976")
    settings = Settings()
    try:
        user_id, token = asyncio.run(bootstrap_admin(settings, email, family_name, given_name, department))
    except domain.Refused as exc:
        typer.secho(f"{exc.reason}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    except (ProgrammingError, DBAPIError, OSError) as exc:
        typer.secho(
            "cannot reach the identity database or its tables: run `make migrate` first "
            f"(CDAP_DATABASE_URL={settings.database_url.split('@')[-1]})",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps({"user_id": user_id, "activation_token": token}))
    else:
        typer.echo(
            f"CAF admin {email} created (id {user_id}).\nActivation token: {token}\n"
            "Activate with POST /v1/activations {token, password} or "
            f"{settings.portal_url}/activate?token={token}"
        )


@app.command("rotate-keys")
def rotate_keys() -> None:
    """Make a new signing key; tokens signed by the old one stay valid until they expire."""
    settings = Settings()

    async def run() -> str:
        engine = create_engine(settings.database_url, 1)
        try:
            return (await keystore.rotate(session_factory(engine), settings.access_token_seconds)).kid
        finally:
            await engine.dispose()

    typer.echo(
        f"new signing key {asyncio.run(run())}; "
        f"replicas pick it up within {settings.key_reload_seconds:.0f} s"
    )
