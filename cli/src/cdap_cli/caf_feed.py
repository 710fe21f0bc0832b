"""Synthetic French dossiers for the CAF feed (`cdap dossiers generate`): valid NIR keys, coherent
households and amounts. Faker (fr_FR) fills pools of names and places once; dossiers are then drawn
from the pools, so a million of them take minutes, not hours.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from faker import Faker
from stdnum.fr import nir

from cdap_shared import events as ev
from cdap_shared.envelope import KAFKA_HEADERS

SOURCE = "/caf/core"
HEADERS = [(k, v.encode()) for k, v in KAFKA_HEADERS.items()]
PRESTATIONS = ("AF", "ALF", "APL", "ALS", "PAJE", "RSA", "PPA", "AAH", "CF", "ASF")


def nir_key(body: str) -> str:
    """The two-digit key of a 13-character NIR body (python-stdnum; Corsica's 2A/2B count as 19/18)."""
    return str(nir.calc_check_digits(body))


@dataclass
class Pools:
    family_names: list[str]
    male_names: list[str]
    female_names: list[str]
    streets: list[str]
    cities: list[str]


def build_pools(seed: int, size: int = 2000) -> Pools:
    faker = Faker("fr_FR")
    faker.seed_instance(seed)
    return Pools(
        family_names=[faker.last_name() for _ in range(size)],
        male_names=[faker.first_name_male() for _ in range(size // 4)],
        female_names=[faker.first_name_female() for _ in range(size // 4)],
        streets=[faker.street_address() for _ in range(size)],
        cities=[faker.city() for _ in range(size // 2)],
    )


def _birth(rng: random.Random, min_age: int, max_age: int, today: date) -> date:
    return today - timedelta(days=rng.randint(min_age * 365, max_age * 365))


def make_dossier(
    rng: random.Random,
    pools: Pools,
    numero: str,
    department: str,
    *,
    landlords: list[str] = (),  # type: ignore[assignment]
    rsa_referents: list[str] = (),  # type: ignore[assignment]
    today: date | None = None,
) -> ev.DossierUpserted:
    """One coherent dossier: an allocataire, maybe a partner and children, their rights and payments."""
    today = today or date.today()
    female = rng.random() < 0.55
    family = rng.choice(pools.family_names)
    given = rng.choice(pools.female_names if female else pools.male_names)
    birth = _birth(rng, 19, 70, today)
    dept_code = department if len(department) == 2 else department[:2]
    commune, order = rng.randint(1, 999), rng.randint(1, 999)
    body = f"{2 if female else 1}{birth.year % 100:02d}{birth.month:02d}{dept_code}{commune:03d}{order:03d}"
    nir = body + nir_key(body)
    members: list[dict[str, Any]] = [
        {"role": "allocataire", "family_name": family, "given_name": given, "birth_date": birth.isoformat()}
    ]
    if rng.random() < 0.5:
        members.append(
            {
                "role": "conjoint",
                "family_name": family,
                "given_name": rng.choice(pools.male_names if female else pools.female_names),
                "birth_date": _birth(rng, 19, 70, today).isoformat(),
            }
        )
    for _ in range(rng.choice((0, 0, 1, 1, 2, 2, 3, 4))):
        members.append(
            {
                "role": "enfant",
                "family_name": family,
                "given_name": rng.choice(pools.female_names + pools.male_names),
                "birth_date": _birth(rng, 0, 19, today).isoformat(),
            }
        )
    children = sum(1 for m in members if m["role"] == "enfant")
    monthly = rng.choice((0, 0, 600, 900, 1200, 1500, 1900, 2400, 3100)) + rng.randint(0, 300)
    parts = (
        1
        + (len(members) > 1 and members[1]["role"] == "conjoint")
        + 0.5 * min(children, 2)
        + max(children - 2, 0)
    )
    qf: int | str = round(monthly / parts) if monthly else "non connu"
    rights: list[dict[str, Any]] = []
    if children >= 2:
        rights.append({"prestation": "AF", "monthly_amount": round(141.99 * (children - 1), 2)})
    housing_aid = rng.random() < 0.6
    landlord = rng.choice(landlords) if housing_aid and landlords and rng.random() < 0.7 else None
    if housing_aid:
        rights.append(
            {"prestation": rng.choice(("APL", "ALF", "ALS")), "monthly_amount": rng.randint(80, 450)}
        )
    on_rsa = monthly < 700 and rng.random() < 0.8
    referent = rng.choice(rsa_referents) if on_rsa and rsa_referents else None
    if on_rsa:
        rights.append({"prestation": "RSA", "monthly_amount": round(646.52 * parts - monthly * 0.38, 2)})
    start = today.replace(day=1)
    for right in rights:
        right |= {
            "from": (start - timedelta(days=rng.randint(30, 900))).replace(day=1).isoformat(),
            "to": None,
        }
    postal = f"{dept_code}{rng.randint(0, 999):03d}"
    phone = f"0{rng.choice((6, 7))} " + " ".join(f"{rng.randint(0, 99):02d}" for _ in range(4))
    sections: dict[str, Any] = {
        "identite": {
            "family_name": family,
            "given_name": given,
            "birth_date": birth.isoformat(),
            "sex": "F" if female else "M",
        },
        "adresse": {
            "line": rng.choice(pools.streets),
            "postal_code": postal,
            "city": rng.choice(pools.cities),
        },
        "contact": {"telephone": phone, "email": f"{given}.{family}@example.fr".lower().replace(" ", "")},
        "foyer": {"members": members, "children": children},
        "ressources": {"monthly_income": monthly, "reference_year": today.year - 1},
        "droits": rights,
        "paiements": [
            {
                "date": (start - timedelta(days=30 * i - 5)).isoformat(),
                "amount": round(sum(float(r["monthly_amount"]) for r in rights), 2),
                "payee": "bailleur" if landlord else "allocataire",
            }
            for i in range(3)
        ]
        if rights
        else [],
        "quotient_familial": {"month": start.isoformat()[:7], "value": qf},
        "logement": {
            "status": "locataire" if housing_aid else rng.choice(("proprietaire", "heberge")),
            "aid_paid_to": "bailleur" if landlord else ("allocataire" if housing_aid else None),
            "landlord_siret": landlord,
            "rent": rng.randint(300, 900) if housing_aid else None,
        },
        "rsa": {"referent_siret": referent, "status": "droit_ouvert" if on_rsa else "sans_droit"},
    }
    return ev.DossierUpserted(
        numero=numero,
        nir=nir,
        department=department,
        version=1,
        opposition=rng.random() < 0.03,
        landlord_siret=landlord,
        rsa_referent_siret=referent,
        sections=sections,
    )


async def publish(
    count: int,
    *,
    bootstrap: str,
    topic: str | None = None,
    department: str = "76",
    seed: int = 1,
    start: int = 1_000_000,
    landlords: list[str] = (),  # type: ignore[assignment]
    rsa_referents: list[str] = (),  # type: ignore[assignment]
    progress: Any = None,
) -> int:
    """Publish `count` dossiers numbered from `start` (key = numero); returns how many were acknowledged.
    Logs in as the CAF feed (`cdap-caf-feed`, which may write only `caf.dossiers`) unless
    `CDAP_KAFKA_USERNAME` says otherwise; publishes to `caf.dossiers` (with `CDAP_TOPIC_PREFIX`) unless
    `topic` says otherwise."""
    from cdap_shared.kafka_access import CAF_FEED, log_in_as
    from cdap_shared.relay import make_producer
    from cdap_shared.topics import named

    destination = topic or named("caf.dossiers")
    rng = random.Random(seed)
    pools = build_pools(seed)
    producer = make_producer(
        bootstrap, log_in_as(CAF_FEED), linger_ms=20, compression_type="lz4" if _has_lz4() else None
    )
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for i in range(count):
            numero = f"{start + i:07d}"
            data = make_dossier(
                rng, pools, numero, department, landlords=landlords, rsa_referents=rsa_referents
            )
            event = ev.make_event("caf.dossier.upserted", source=SOURCE, subject=numero, data=data)
            pending.append(
                await producer.send(destination, event.to_bytes(), key=numero.encode(), headers=HEADERS)
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending.clear()
                if progress:
                    progress(sent)
        await asyncio.gather(*pending)
        sent += len(pending)
        if progress:
            progress(sent)
    finally:
        await producer.stop()
    return sent


def _has_lz4() -> bool:
    try:
        import lz4  # noqa: F401
    except ImportError:
        return False
    return True
