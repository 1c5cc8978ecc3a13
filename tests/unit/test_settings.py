from __future__ import annotations

from pathlib import Path

import pytest

from mailer.core.settings import ConfigError, load


def test_embedded_defaults_load_without_any_file_or_environment() -> None:
    settings = load(environ={})
    assert settings.engine.batch_size == 500
    assert settings.all_relays()[0].host == "127.0.0.1"


def test_the_example_file_documents_exactly_the_embedded_defaults() -> None:
    example = Path(__file__).parents[2] / "config" / "mailer.example.toml"
    assert load(example, environ={}) == load(environ={})


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[engine]\nbatch_size = 100\n")
    env = {"MAILER_ENGINE_BATCH_SIZE": "250", "DATABASE_URL": "postgresql://db/x"}
    settings = load(path, environ=env)
    assert settings.engine.batch_size == 250
    assert settings.database.url == "postgresql://db/x"


@pytest.mark.parametrize(
    ("toml", "env", "named"),
    [
        ("[engine]\nbatch_size = 'many'\n", {}, "engine.batch_size"),
        ("[engine]\nbatchsize = 5\n", {}, "engine.batchsize: unknown setting"),
        ("[enigne]\n", {}, "enigne: unknown section"),
        ("[smtp]\ntls = 'maybe'\n", {}, "smtp.tls"),
        ("", {"MAILER_THROTTLE_GLOBAL_RATE": "fast"}, "MAILER_THROTTLE_GLOBAL_RATE"),
        ("[throttle.domains.'gmail.com']\nrate = -1\n", {}, "throttle.domains.gmail.com.rate"),
        ("[database]\nurl = 'mysql://x'\n", {}, "database.url"),
        ("[engine\n", {}, "m.toml"),
        ("[smtp]\nhelo_name = 'mta 1'\n", {}, "smtp.helo_name"),
        ("", {"MAILER_SMTP_HELO_NAME": "-mta.example.com"}, "smtp.helo_name"),
        ("[[relays]]\nname = 'b'\nhelo_name = '[::1]'\n", {}, "relays.b.helo_name"),
        ("[sender]\ndomain = 'mail_er.example'\n", {}, "sender.domain"),
        ("[tracker]\ndb_timeout_ms = 0\n", {}, "tracker.db_timeout_ms"),
        # The server must give up on a statement before the tracker stops waiting for it.
        ("[tracker]\ndb_statement_timeout_ms = 2000\n", {}, "tracker.db_statement_timeout_ms"),
    ],
)
def test_a_bad_setting_fails_at_start_naming_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], named: str
) -> None:
    path = tmp_path / "m.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(path, environ=env)


def test_a_secret_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[smtp]\npassword = 'hunter2'\n")
    with pytest.raises(ConfigError, match=r"smtp\.password: secrets are never read"):
        load(path, environ={})


def test_secrets_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    # 32-byte secrets: a shorter one is refused (tokens.py)
    first = "1:c3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3M="
    second = "2:eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg="
    keys.write_text(first + "\n")
    path = tmp_path / "m.toml"
    path.write_text(f"[tokens]\nkeys_file = '{keys}'\n")
    assert load(path, environ={}).require_token_keys() == first
    assert load(environ={"MAILER_TOKEN_KEYS": second}).require_token_keys() == second
    with pytest.raises(ConfigError, match=r"tokens\.keys: not set"):
        load(environ={}).require_token_keys()


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load(tmp_path / "nope.toml", environ={})
