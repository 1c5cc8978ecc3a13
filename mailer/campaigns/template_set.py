"""A campaign template's files, read once from `templates/`: what a template version stores.

A `TemplateSet` is every file a campaign template needs (itself, its locale variants, the
layouts it extends and the parts it includes). It is stored and hashed as one version, so an
archived message is re-rendered from exactly the files it was sent with (mailer.compliance).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["LOCALE_VARIANT", "TemplateFileError", "TemplateSet"]

# A referenced template name: relative, no "..", no backslashes, no absolute paths.
_REFERENCE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# What follows a template's name in a locale variant's file name: `.fr.html`, `.fr.txt`.
LOCALE_VARIANT = re.compile(r"\.([a-z]{2})\.(html|txt)")


class TemplateFileError(ValueError):
    """A template file is missing or invalid; the message names the file (and line)."""


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """The files one campaign template needs, {filename: source}; stored as a template version."""

    name: str
    files: Mapping[str, str]

    @classmethod
    def load(cls, templates_dir: Path, name: str) -> TemplateSet:
        """Read `<name>.html`, its .txt and locale variants, and every template they reference."""
        if not _TEMPLATE_NAME.fullmatch(name):
            raise TemplateFileError(f"{name!r}: not a template name ([a-z0-9_-], no suffix)")
        main = f"{name}.html"
        if not (templates_dir / main).is_file():
            raise TemplateFileError(f"{templates_dir / main}: template not found")
        wanted = [main]
        for path in sorted(templates_dir.glob(f"{name}.*")):
            rest = path.name[len(name) :]
            if rest == ".txt" or LOCALE_VARIANT.fullmatch(rest):
                wanted.append(path.name)
        files: dict[str, str] = {}
        parser = ImmutableSandboxedEnvironment()  # parsing only, to find references
        while wanted:
            filename = wanted.pop()
            if filename in files:
                continue
            path = templates_dir / filename
            try:
                # read_text translates CRLF to LF, so the stored version never depends on it.
                source = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise TemplateFileError(f"{path}: {exc.strerror}") from None
            files[filename] = source
            wanted.extend(_references(parser, filename, source))
        return cls(name, dict(sorted(files.items())))

    def canonical_json(self) -> bytes:
        """The files as canonical JSON (sorted keys, no spaces, UTF-8): what the hash covers."""
        return json.dumps(
            dict(self.files), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")

    def sha256(self) -> str:
        """Hex SHA-256 of canonical_json(): template_versions.sha256."""
        return hashlib.sha256(self.canonical_json()).hexdigest()


def _references(parser: ImmutableSandboxedEnvironment, filename: str, source: str) -> list[str]:
    try:
        ast = parser.parse(source, name=filename)
    except TemplateSyntaxError as exc:
        raise TemplateFileError(f"{filename}:{exc.lineno}: {exc.message}") from None
    names: list[str] = []
    for ref in meta.find_referenced_templates(ast):
        # A stored version must be complete, so every dependency has to be known up front.
        if ref is None:
            raise TemplateFileError(f"{filename}: extends/include with a computed name")
        if not _REFERENCE.fullmatch(ref) or ".." in ref.split("/"):
            raise TemplateFileError(f"{filename}: template name {ref!r} is not allowed")
        names.append(ref)
    return names
