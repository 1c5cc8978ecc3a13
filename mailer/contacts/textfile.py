"""A CSV file as records of text: its encoding and delimiter, and every problem
below the CSV level (bytes that are not text, NUL bytes, mixed line endings,
overlong lines and fields, broken quoting) reported with its line.

What offices export: Excel writes `;`-delimited files in French locales (the
comma is their decimal separator) and Windows-1252 text unless asked for "CSV
UTF-8", which adds a byte-order mark. The delimiter is read from the header
line, where no name contains one. The encoding is never guessed between two
8-bit encodings: any byte sequence decodes as latin-1 and nearly any as
cp1252, so a guess would silently store "RenÃ©" or a control character where
the file meant "René" or "’". A file is read as UTF-8 when it decodes as
UTF-8; otherwise it is refused with the line and bytes that do not, and the
option that reads it.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

ENCODINGS = ("utf-8", "utf-8-sig", "cp1252", "latin-1")
# What --delimiter accepts, and the delimiters sniffed from a header line.
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "\\t": "\t", "\t": "\t"}
SNIFFED = (",", ";", "\t")
# One physical line longer than this is not a CSV line (and would otherwise be
# read whole into memory: a file without line breaks is one line).
MAX_LINE = 1 << 20
# csv's own limit on one field (131,072 characters unless raised).
MAX_CSV_FIELD = csv.field_size_limit()

# Bytes the decoder could not read, kept as lone surrogates (errors="surrogateescape").
_UNDECODED = re.compile("[\udc80-\udcff]+")
# C1 control characters: never in real ISO-8859-1 text, but what cp1252's
# punctuation and € become when a cp1252 file is read as latin-1.
_C1 = re.compile("[\x80-\x9f]")
# Shown escaped in messages: control characters, C0 and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_ENDING_NAMES = {"\r\n": "CRLF", "\n": "LF", "\r": "CR"}


class FileError(ValueError):
    """The file as a whole cannot be imported; the message names the file and line."""


@dataclass(frozen=True)
class Dialect:
    """How a file was read, as the import summary states it."""

    encoding: str  # utf-8, utf-8-sig (UTF-8 with a byte-order mark), cp1252 or latin-1
    delimiter: str
    line_ending: str  # CRLF, LF, CR, or "" for a single line without an end

    def describe(self) -> str:
        ends = f", {self.line_ending} line ends" if self.line_ending else ""
        return f"{self.encoding}, {_name(self.delimiter)}-delimited{ends}"


def encoding_option(text: str | None) -> str | None:
    """The --encoding value as one of ENCODINGS (aliases such as windows-1252 accepted)."""
    if text is None:
        return None
    try:
        name = codecs.lookup(text).name
    except LookupError:
        name = text
    found = {"utf-8": "utf-8", "utf-8-sig": "utf-8-sig", "cp1252": "cp1252"}.get(name)
    if found is None and name == "iso8859-1":
        found = "latin-1"
    if found is None:
        raise FileError(f"--encoding: {text!r} is not one of {', '.join(ENCODINGS)}")
    return found


def delimiter_option(text: str | None) -> str | None:
    """The --delimiter value as a character: `,`, `;` or tab."""
    if text is None:
        return None
    if text not in DELIMITERS:
        raise FileError(f"--delimiter: {text!r} is not one of ',', ';', 'tab'")
    return DELIMITERS[text]


class _Hashing(io.RawIOBase):
    """The file's bytes, hashed as they are read: the import records the SHA-256
    without a second pass over a file of a hundred megabytes."""

    def __init__(self, raw: io.FileIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        n = self._raw.readinto(buffer) or 0
        self.digest.update(memoryview(buffer)[:n])
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class CsvRecords:
    """The records of a CSV file, each with the line it starts on.

    Raises FileError, naming the file and line, for anything that is not clean
    CSV text: opened, the encoding and delimiter are settled from the first
    bytes and the header line; iterated, every line is checked as it streams.
    """

    def __init__(
        self, path: Path, *, encoding: str | None = None, delimiter: str | None = None
    ) -> None:
        self.path = path
        self._asked_encoding = encoding_option(encoding)
        self._asked_delimiter = delimiter_option(delimiter)
        self.line = 0  # physical lines read so far
        self._record: list[str] = []  # the physical lines of the record being parsed
        self._ending: str | None = None
        self._ending_line = 0
        self.dialect = Dialect("utf-8", ",", "")

    def __enter__(self) -> CsvRecords:
        try:
            raw = io.FileIO(self.path, "r")
        except OSError as exc:
            raise FileError(f"{self.path}: {exc.strerror}") from None
        self._hashing = _Hashing(raw)
        buffered = io.BufferedReader(self._hashing, 1 << 16)
        try:
            self._codec, encoding = self._choose_encoding(buffered.peek(4096)[:4096])
            self._text = io.TextIOWrapper(
                buffered, encoding=self._codec, errors="surrogateescape", newline=""
            )
            first = self._readline()
            self._reader = csv.reader(
                self._read_lines(first) if first else iter(()),
                delimiter=self._sniff(first),
                strict=True,
            )
        except BaseException:
            buffered.close()
            raise
        self.dialect = Dialect(encoding, self._reader.dialect.delimiter, "")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._text.close()

    @property
    def sha256(self) -> bytes:
        """Hash of the bytes read so far: of the whole file once the records are exhausted."""
        return self._hashing.digest.digest()

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        reader, record = self._reader, self._record
        start = 1
        while True:
            record.clear()
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._malformed(start, str(exc)) from None
            last = record[-1]
            end = last[-1]
            if end == "\n":
                ending = "\r\n" if last[-2:-1] == "\r" else "\n"
            else:
                ending = "\r" if end == "\r" else ""
            if ending != self._ending and ending:
                self._check_ending(ending)
            yield start, fields
            start = self.line + 1  # csv reads no further than the record's last line

    def _choose_encoding(self, head: bytes) -> tuple[str, str]:
        """(Python codec, name reported) from the first bytes and --encoding."""
        asked = self._asked_encoding
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise FileError(
                f"{self.path}: UTF-16 text (Excel's 'Unicode text'): save it as "
                "'CSV UTF-8 (comma delimited)' or 'CSV (semicolon delimited)'"
            )
        if b"\x00" in head:  # before decoding: a binary file is not "not UTF-8"
            at = head.index(b"\x00")
            line = head.count(b"\n", 0, at) + 1
            column = at - (head.rfind(b"\n", 0, at) + 1) + 1
            raise _nul(self.path, line, column)
        bom = head.startswith(codecs.BOM_UTF8)
        if asked in (None, "utf-8", "utf-8-sig"):
            # A byte-order mark is never data in a header: read it as the mark it is.
            return "utf-8-sig", "utf-8-sig" if bom else "utf-8"
        if bom:
            raise FileError(
                f"{self.path}: starts with a UTF-8 byte-order mark but --encoding {asked} was "
                "given: the file is UTF-8 (leave out --encoding)"
            )
        return ("cp1252" if asked == "cp1252" else "latin-1"), str(asked)

    def _read_lines(self, first: str) -> Iterator[str]:
        """The physical lines for csv, from the first one (already read, for sniffing)."""
        record, readline = self._record, self._readline
        record.append(first)
        yield first
        while line := readline():
            record.append(line)
            yield line

    def _readline(self) -> str:
        line = self._text.readline(MAX_LINE)
        if not line:
            return line
        self.line += 1
        if len(line) == MAX_LINE and line[-1] not in "\r\n":
            raise FileError(
                f"{self.path}: line {self.line}: longer than {MAX_LINE:,} characters "
                "without a line break: not a CSV file"
            )
        if "\x00" in line:
            raise _nul(self.path, self.line, line.index("\x00") + 1)
        if not line.isascii():
            self._check_text(line)
        return line

    def _check_text(self, line: str) -> None:
        try:
            line.encode("utf-8")  # fails only on an undecoded byte; 10x a regex search
        except UnicodeEncodeError:
            bad = _UNDECODED.search(line)
        else:
            bad = None
        if bad is not None:
            raw = bad.group().encode("utf-8", "surrogateescape")
            where = f"{self.path}: line {self.line}, character {bad.start() + 1}"
            shown = _shown(line, bad.start())
            listed = " ".join(f"0x{b:02X}" for b in raw[:8])
            if self._codec == "utf-8-sig":
                as_cp1252 = _shown(line, bad.start(), reread="cp1252")
                raise FileError(
                    f"{where}: byte(s) {listed} are not UTF-8 in {shown} (as Windows-1252: "
                    f"{as_cp1252}). Excel and most Windows programs write Windows-1252: "
                    "run again with --encoding cp1252 (or --encoding latin-1 for ISO-8859-1)"
                )
            raise FileError(
                f"{where}: byte(s) {listed} are not characters in {self._codec}, in {shown}: "
                "is the file in another encoding?"
            )
        if self._codec == "latin-1" and (c1 := _C1.search(line)) is not None:
            raise FileError(
                f"{self.path}: line {self.line}, character {c1.start() + 1}: byte "
                f"0x{ord(c1.group()):02X} is a control character in latin-1, in "
                f"{_shown(line, c1.start())}: Windows-1252 punctuation read as latin-1? "
                "Run again with --encoding cp1252"
            )

    def _sniff(self, header: str) -> str:
        if self._asked_delimiter is not None:
            return self._asked_delimiter
        counts = {d: _count_outside_quotes(header, d) for d in SNIFFED}
        most = max(counts.values())
        if most == 0:
            return ","  # one column: any delimiter reads it
        found = [d for d, n in counts.items() if n == most]
        if len(found) > 1:
            shown = ", ".join(f"{n} × {_name(d)}" for d, n in counts.items())
            raise FileError(
                f"{self.path}: line 1: cannot tell the delimiter from the header ({shown}): "
                "pass --delimiter"
            )
        return found[0]

    def _check_ending(self, ending: str) -> None:
        if self._ending is None:
            self._ending, self._ending_line = ending, self.line
            self.dialect = Dialect(
                self.dialect.encoding, self.dialect.delimiter, _ENDING_NAMES[ending]
            )
            return
        raise FileError(
            f"{self.path}: line {self.line}: ends with {_ENDING_NAMES[ending]} where line "
            f"{self._ending_line} ends with {_ENDING_NAMES[self._ending]}: mixed line endings "
            "(were files pasted together?); save the file again from one program"
        )

    def _malformed(self, start: int, reason: str) -> FileError:
        where = f"{self.path}: line {start}"
        if "field larger than field limit" in reason:
            column = _column_of_long_field("".join(self._record), self.dialect.delimiter)
            return FileError(
                f"{where}, column {column}: a field longer than {MAX_CSV_FIELD:,} characters "
                "(the limit): an opening quote without its closing quote?"
            )
        if "unexpected end of data" in reason:
            return FileError(f"{where}: a quoted field starting here is never closed")
        return FileError(f"{where}: malformed CSV ({reason})")


def _nul(path: Path, line: int, character: int) -> FileError:
    return FileError(
        f"{path}: line {line}, character {character}: a NUL byte: not a CSV file "
        "(binary content, UTF-16 text, or a damaged file)"
    )


def _name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else f"'{delimiter}'"


def _count_outside_quotes(line: str, delimiter: str) -> int:
    if '"' not in line:
        return line.count(delimiter)
    count, quoted = 0, False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == delimiter and not quoted:
            count += 1
    return count


def _column_of_long_field(text: str, delimiter: str) -> int:
    """Which field (1-based) of a record's text grows past csv's limit."""
    column, quoted, length = 1, False, 0
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == delimiter and not quoted:
            column, length = column + 1, 0
            continue
        length += 1
        if length > MAX_CSV_FIELD:
            break
    return column


def _shown(line: str, at: int, reread: str | None = None) -> str:
    """Up to 60 characters of a line around position `at`, undecodable bytes as \\xNN."""
    start = max(0, at - 30)
    part = line[start : start + 60].rstrip("\r\n")
    if reread is not None:
        part = part.encode("utf-8", "surrogateescape").decode(reread, "replace")
    shown = _UNDECODED.sub(lambda m: "".join(f"\\x{ord(c) - 0xDC00:02X}" for c in m.group()), part)
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02X}", shown)
    return ("'…" if start else "'") + shown + "'"
