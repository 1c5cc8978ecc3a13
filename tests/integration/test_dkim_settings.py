"""DKIM settings: a configured key is read and checked at load, or loading fails naming it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mailer.core.settings import ConfigError, load
from tests.dkim_setup import ed25519_pem, rsa_pem, write_key

RSA_FILE = "MAILER_SENDER_DKIM_KEY_FILE"
RSA_SELECTOR = "MAILER_SENDER_DKIM_SELECTOR"
ED_FILE = "MAILER_SENDER_DKIM_ED25519_KEY_FILE"
ED_SELECTOR = "MAILER_SENDER_DKIM_ED25519_SELECTOR"


def load_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load(environ=environ)
    return str(caught.value)


def test_no_dkim_setting_means_no_key_and_the_relay_signs() -> None:
    assert load(environ={}).dkim_keys == ()


def test_an_rsa_key_and_an_ed25519_key_beside_it_are_loaded_rsa_first(tmp_path: Path) -> None:
    settings = load(
        environ={
            ED_SELECTOR: "ed2024",
            ED_FILE: write_key(tmp_path, "ed.pem", ed25519_pem()),
            RSA_SELECTOR: "s2024",
            RSA_FILE: write_key(tmp_path, "rsa.pem", rsa_pem()),
        }
    )
    assert [(k.selector, k.algorithm) for k in settings.dkim_keys] == [
        ("s2024", "rsa-sha256"),
        ("ed2024", "ed25519-sha256"),
    ]
    assert "PRIVATE" not in repr(settings)
    assert "dkim_keys" not in repr(settings)


def test_the_tracker_which_never_signs_does_not_read_the_dkim_keys(tmp_path: Path) -> None:
    environ = {RSA_SELECTOR: "s2024", RSA_FILE: str(tmp_path / "readable-by-the-worker-only.pem")}
    assert load(environ=environ, dkim_keys=False).dkim_keys == ()


def test_a_key_file_that_does_not_exist_stops_loading_naming_the_variable(tmp_path: Path) -> None:
    message = load_error({RSA_SELECTOR: "s2024", RSA_FILE: str(tmp_path / "missing.pem")})
    assert message.startswith(f"sender.dkim_key_file (from {RSA_FILE}): cannot read ")
    assert "No such file" in message


def test_a_key_file_named_in_the_toml_file_is_named_as_the_toml_setting(tmp_path: Path) -> None:
    toml = tmp_path / "mailer.toml"
    toml.write_text(
        f'[sender]\ndkim_selector = "s2024"\ndkim_key_file = "{tmp_path / "nope.pem"}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"^sender\.dkim_key_file: cannot read "):
        load(toml, environ={})


def test_a_selector_without_a_key_file_and_a_key_file_without_a_selector_are_refused(
    tmp_path: Path,
) -> None:
    message = load_error({RSA_SELECTOR: "s2024"})
    assert message.startswith("sender.dkim_key_file: not set while sender.dkim_selector")
    message = load_error({RSA_FILE: write_key(tmp_path, "rsa.pem", rsa_pem())})
    assert message.startswith(
        f"sender.dkim_selector: not set while sender.dkim_key_file (from {RSA_FILE})"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hello, not a key\n", "is not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "is not a PEM"),
        ("public", "holds a public key"),
        ("encrypted", "is encrypted"),
        ("ed25519", "holds an Ed25519 key, not an RSA private key"),
        ("ec", "holds an EC key (DKIM has no ECDSA), not an RSA private key"),
    ],
)
def test_a_file_that_is_not_an_rsa_private_key_is_refused_with_the_reason(
    tmp_path: Path, content: bytes | str, expected: str
) -> None:
    if content == "public":
        key = serialization.load_pem_private_key(rsa_pem(), password=None)
        data = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif content == "encrypted":
        key = serialization.load_pem_private_key(rsa_pem(), password=None)
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    elif content == "ed25519":
        data = ed25519_pem()
    elif content == "ec":
        data = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    else:
        assert isinstance(content, bytes)
        data = content
    path = write_key(tmp_path, "key.pem", data)
    message = load_error({RSA_SELECTOR: "s2024", RSA_FILE: path})
    assert message.startswith(f"sender.dkim_key_file (from {RSA_FILE}): ")
    assert expected in message


def test_an_rsa_key_in_the_ed25519_setting_is_refused(tmp_path: Path) -> None:
    message = load_error(
        {
            RSA_SELECTOR: "s2024",
            RSA_FILE: write_key(tmp_path, "rsa.pem", rsa_pem()),
            ED_SELECTOR: "ed2024",
            ED_FILE: write_key(tmp_path, "other.pem", rsa_pem(which=1)),
        }
    )
    assert message.startswith(f"sender.dkim_ed25519_key_file (from {ED_FILE}): ")
    assert "holds an RSA key, not an Ed25519 private key" in message


def test_an_ed25519_key_in_dkimpys_base64_seed_format_is_accepted(tmp_path: Path) -> None:
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    settings = load(
        environ={
            RSA_SELECTOR: "s2024",
            RSA_FILE: write_key(tmp_path, "rsa.pem", rsa_pem()),
            ED_SELECTOR: "ed2024",
            ED_FILE: write_key(tmp_path, "ed.key", base64.b64encode(seed) + b"\n"),
        }
    )
    assert [k.algorithm for k in settings.dkim_keys] == ["rsa-sha256", "ed25519-sha256"]


def test_an_ed25519_signature_alone_is_refused(tmp_path: Path) -> None:
    message = load_error({ED_SELECTOR: "ed", ED_FILE: write_key(tmp_path, "e.pem", ed25519_pem())})
    assert message.startswith("sender.dkim_ed25519_selector: an Ed25519 signature goes beside")


def test_one_selector_for_both_keys_is_refused(tmp_path: Path) -> None:
    message = load_error(
        {
            RSA_SELECTOR: "s2024",
            RSA_FILE: write_key(tmp_path, "rsa.pem", rsa_pem()),
            ED_SELECTOR: "s2024",
            ED_FILE: write_key(tmp_path, "ed.pem", ed25519_pem()),
        }
    )
    assert message.startswith("sender.dkim_ed25519_selector: must differ")


@pytest.mark.parametrize("selector", ["has space", "-dash", "a..b", "é"])
def test_a_selector_that_is_not_a_dns_name_is_refused(tmp_path: Path, selector: str) -> None:
    message = load_error(
        {RSA_SELECTOR: selector, RSA_FILE: write_key(tmp_path, "r.pem", rsa_pem())}
    )
    assert message.startswith(f"sender.dkim_selector (from {RSA_SELECTOR}): ")


def test_a_private_key_in_the_toml_file_itself_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "mailer.toml"
    toml.write_text('[sender]\ndkim_private_key = "MII..."\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="secrets are never read from the TOML"):
        load(toml, environ={})
