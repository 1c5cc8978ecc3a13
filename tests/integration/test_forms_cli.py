"""`mailer forms …` as an operator runs it, against a real Postgres."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg
import pytest

from tests.cli_run import run_cli

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "transactional"
FR = "J'accepte de recevoir l'infolettre du Garage Tremblay par courriel."
EN = "I agree to receive Garage Tremblay's newsletter by email."
IDENTITY = {
    "MAILER_FORMS_BUSINESS_NAME": "Garage Tremblay Automobiles",
    "MAILER_FORMS_POSTAL_ADDRESS": "2450, boulevard Laurier, Québec (Québec)  G1V 2L1",
    "MAILER_FORMS_CONTACT": "+1 418-555-0142",
}


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in IDENTITY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAILER_TRACKER_BASE_URL", "https://t.garage-tremblay.example")


async def add_form(monkeypatch: pytest.MonkeyPatch, db_url: str, *extra: str) -> tuple[int, str]:
    code, out = await run_cli(monkeypatch, db_url, "topics", "add", "service")
    assert code == 0, out
    code, out = await run_cli(monkeypatch, db_url, "topics", "add", "promotions", "--opt-in")
    assert code == 0, out
    return await run_cli(
        monkeypatch,
        db_url,
        "forms",
        "add",
        "infolettre",
        "--source",
        "Site web — infolettre",
        "--topics",
        "service,promotions",
        "--locale",
        "fr,en",
        "--text-fr",
        FR,
        "--text-en",
        EN,
        *extra,
    )


@pytest.mark.usefixtures("identity")
async def test_a_form_is_created_with_version_one_of_each_text_and_its_sha256(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    code, out = await add_form(monkeypatch, db_url)
    assert code == 0, out
    assert "https://t.garage-tremblay.example/s/infolettre" in out
    rows = await conn.fetch("SELECT locale, version, text, sha256 FROM form_texts ORDER BY locale")
    assert [(r["locale"], r["version"], r["text"]) for r in rows] == [("en", 1, EN), ("fr", 1, FR)]
    assert bytes(rows[1]["sha256"]) == hashlib.sha256(FR.encode()).digest()

    code, out = await run_cli(monkeypatch, db_url, "forms", "show", "infolettre")
    assert code == 0, out
    assert hashlib.sha256(FR.encode()).hexdigest() in out
    assert "double opt-in" in out
    assert "service,promotions" in out


@pytest.mark.usefixtures("identity")
async def test_editing_a_consent_text_adds_a_version_and_never_changes_a_recorded_one(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    assert (await add_form(monkeypatch, db_url))[0] == 0
    reworded = FR + " Je peux me désabonner en tout temps."
    code, out = await run_cli(
        monkeypatch, db_url, "forms", "text", "infolettre", "--locale", "fr", reworded
    )
    assert code == 0, out
    assert "version 2" in out
    code, out = await run_cli(
        monkeypatch, db_url, "forms", "text", "infolettre", "--locale", "fr", reworded
    )
    assert code == 0, out
    assert "unchanged" in out
    texts = await conn.fetch(
        "SELECT version, text FROM form_texts WHERE locale = 'fr' ORDER BY version"
    )
    assert [(r["version"], r["text"]) for r in texts] == [(1, FR), (2, reworded)]
    with pytest.raises(asyncpg.RaiseError, match="versioned, never changed"):
        await conn.execute("UPDATE form_texts SET text = 'x' WHERE version = 1")


@pytest.mark.usefixtures("identity")
async def test_forms_add_names_the_bad_option_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    code, out = await add_form(monkeypatch, db_url, "--origin", "https://x.example/path")
    assert code == 2
    assert "--origin" in out
    assert "Traceback" not in out
    code, out = await run_cli(
        monkeypatch, db_url, "forms", "add", "x", "--source", "s", "--locale", "de"
    )
    assert code == 2
    assert "--locale" in out
    assert "'de'" in out
    code, out = await run_cli(
        monkeypatch, db_url, "forms", "add", "x", "--source", "s", "--locale", "fr"
    )
    assert code == 2
    assert "--text-fr" in out
    code, out = await run_cli(
        monkeypatch, db_url, "forms", "add", "x", "--source", "s", "--topics", "nope",
        "--locale", "en", "--text-en", EN,
    )  # fmt: skip
    assert code == 2
    assert "'nope'" in out
    assert (await add_form(monkeypatch, db_url))[0] == 0
    code, out = await add_form(monkeypatch, db_url)
    assert code == 2
    assert "exists already" in out


async def test_a_form_without_the_business_identity_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    code, out = await run_cli(
        monkeypatch, db_url, "forms", "add", "x", "--source", "s", "--text-en", EN
    )
    assert code == 2
    assert "forms.business_name" in out


@pytest.mark.usefixtures("identity")
async def test_list_disable_and_embed(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    assert (await add_form(monkeypatch, db_url, "--origin", "https://www.garage.example"))[0] == 0
    code, out = await run_cli(monkeypatch, db_url, "forms", "embed", "infolettre", "--locale", "fr")
    assert code == 0, out
    assert 'action="https://t.garage-tremblay.example/s/infolettre"' in out
    assert "/s/infolettre/token?locale=fr" in out
    assert 'name="consent" value="yes" required' in out
    assert 'name="website"' in out  # the honeypot
    assert "J&#x27;accepte" in out  # the exact sentence, escaped for HTML
    assert "Garage Tremblay Automobiles" in out

    code, out = await run_cli(monkeypatch, db_url, "forms", "disable", "infolettre")
    assert code == 0, out
    code, out = await run_cli(monkeypatch, db_url, "forms", "list")
    assert code == 0
    assert "infolettre" in out
    assert "disabled" in out
    code, out = await run_cli(monkeypatch, db_url, "forms", "show", "nope")
    assert code == 2
    assert "no form 'nope'" in out


async def test_the_confirmation_template_passes_the_transactional_check(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    # Sender identification (CASL s.6(2)(b)), its basis' footer sentence and the unsubscribe
    # link its basis needs, in both languages.
    monkeypatch.setenv("MAILER_TRANSACTIONAL_TEMPLATES_DIR", str(TEMPLATES))
    code, out = await run_cli(monkeypatch, db_url, "transactional", "check", "signup_confirmation")
    assert code == 0, out
