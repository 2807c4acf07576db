"""One reader for every file the user gives: templates, class names, manifests, queries, model files, results stores.

Text is read as UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one); anything else is one
error naming the file, the line and byte, and saying to save the file as UTF-8. Structured files (JSON, JSONL,
CSV/TSV, YAML, TOML, parquet) are checked against a declared :class:`Shape` (a pydantic type), so a wrong value is
one error naming the file, the line or row, and the field. Every error is a :class:`~cliplab.errors.ParameterError`
(or the subclass the caller chooses) of the parameter that named the file: each door spells it its own way (the CLI
as one ``error:`` line, exit code 2; Python as the exception).

File names that are not UTF-8 (bytes kept by Python as surrogate escapes, ``'caf\\udce9.jpg'``) are kept exactly in
memory; :func:`printable` spells them for people and for the files cliplab writes: each byte that is not UTF-8 as
``\\xNN`` (``caf\\xe9.jpg``), the spelling of Python's ``backslashreplace``.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Union

from pydantic import AfterValidator, Discriminator, StringConstraints, Tag, TypeAdapter, ValidationError

from cliplab.errors import CliplabError, ParameterError

# ---- spelling file names that are not UTF-8 -------------------------------------------------------------------

ESCAPE = "cliplab-escape"  # codec error handler: a surrogate-escaped byte as \xNN, any other character as \uXXXX


def _escape(exc: UnicodeError):
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for ch in exc.object[exc.start:exc.end]:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out), exc.end


codecs.register_error(ESCAPE, _escape)
_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe to write as UTF-8: each byte of a file name that is not UTF-8 as ``\\xNN``, any other lone
    surrogate as ``\\udNNN``; every other text (and anything that is not text) unchanged."""
    if not isinstance(text, str) or not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", ESCAPE).decode("utf-8")


def printable_value(value: Any) -> Any:
    """``value`` with every string in it (dict keys too, in lists, tuples and dicts) made :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_value(k): printable_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(printable_value(v) for v in value)
    return value


# ---- shapes --------------------------------------------------------------------------------------------------

def _characters(text: str) -> str:
    """Text that is characters: a lone surrogate escape (JSON's ``"\\ud800"``) is not one, and no tokenizer, UTF-8
    file or table can take it."""
    bad = _SURROGATE.search(text)
    if bad:
        raise ValueError(f"holds {printable(bad.group())}, a lone surrogate escape, which is not a character")
    return text


def _file_name(text: str) -> str:
    if "\0" in text:
        raise ValueError("holds a NUL byte, which no file name can")
    return text


Str = Annotated[str, AfterValidator(_characters)]  # text for people and the text tower
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_characters)]
# paths may hold surrogate escapes (JSON written by Python names a file whose name is not UTF-8 that way), not NULs
PathText = Annotated[str, AfterValidator(_file_name)]
FileName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_file_name)]


def json_kind(value: Any) -> str:
    """The JSON word for a value's type: object, list, text, number, true/false, null."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def one_of(description: str, **kinds) -> Any:
    """A shape that is one of several by the JSON kind of the value (``list=list[str], object=dict[str, str]``);
    a value of another kind is the error 'should be ``description``'."""
    tagged = tuple(Annotated[t, Tag(f"<{k}>")] for k, t in kinds.items())
    return Annotated[Union[tagged], Discriminator(lambda v: f"<{json_kind(v)}>", custom_error_type="kind",
                                                  custom_error_message=f"should be {description}")]


class Shape:
    """A declared shape: a pydantic type and the words that describe it in errors ('a list of templates')."""

    def __init__(self, tp: Any, description: str):
        self.tp, self.description = tp, description
        self._one = self._many = None

    def _adapter(self, many: bool) -> TypeAdapter:
        if self._one is None:  # built on first use: declaring shapes costs no import time
            self._one, self._many = TypeAdapter(self.tp), TypeAdapter(list[self.tp])
        return self._many if many else self._one

    def validate(self, value: Any, file: "UserFile", place: str | None = None) -> Any:
        """``value`` as the shape, or the error naming the file, ``place`` and the field."""
        try:
            return self._adapter(False).validate_python(value)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            text = describe_errors(errors) + ("" if errors[0]["type"] == "kind" else f"; expected {self.description}")
            raise file.fail(text, place) from None

    def validate_many(self, values: list, file: "UserFile", places: list[str]) -> list:
        """Every value (a row, a line) as the shape; an error names the first wrong one's place (``places[i]``)."""
        try:
            return self._adapter(True).validate_python(values)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            first = errors[0]["loc"][0]
            same = [{**e, "loc": e["loc"][1:]} for e in errors if e["loc"][:1] == (first,)]
            more = len({e["loc"][0] for e in errors}) - 1
            text = describe_errors(same) + (f" (and {more} more {'rows' if more > 1 else 'row'} like it)"
                                            if more else "")
            raise file.fail(text, places[first]) from None


_PLAIN = {
    "string_type": "should be text", "list_type": "should be a list", "dict_type": "should be an object",
    "model_type": "should be an object", "model_attributes_type": "should be an object",
    "int_type": "should be a whole number", "int_parsing": "should be a whole number",
    "int_from_float": "should be a whole number", "float_type": "should be a number",
    "float_parsing": "should be a number", "bool_type": "should be true or false",
    "bool_parsing": "should be true or false", "missing": "is missing", "extra_forbidden": "is not a known field",
    "string_too_short": "should not be empty", "too_short": "should not be empty",
    "finite_number": "should be a finite number",
}


def _field(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, str) and part.startswith("<") and part.endswith(">"):
            continue  # the tag of a one_of branch
        if part == "[key]":
            text = f"the key {text}"
        elif isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(printable(part), ensure_ascii=False)}]"
    return text


def _shown(value: Any) -> str:
    try:
        text = json.dumps(printable_value(value), ensure_ascii=False, allow_nan=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = printable(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def got(value: Any) -> str:
    """A value as an error shows it: ``null``, ``a list``, ``an object``, ``number 5``, ``text "x"``."""
    if value is None:
        return "null"
    if isinstance(value, (dict, list, tuple)):
        return "an object" if isinstance(value, dict) else "a list"
    return f"{json_kind(value)} {_shown(value)}"


def describe_errors(errors: list[dict]) -> str:
    """The first of pydantic's errors as words: where (the field), what is wrong, and what was there."""
    err = errors[0]
    where = _field(err["loc"])
    kind = err["type"]
    if kind in _PLAIN:
        what = _PLAIN[kind]
    elif kind == "value_error":
        what = re.sub(r"^Value error, ", "", err["msg"])
    else:
        what = re.sub(r"^Input should be", "should be", err["msg"])
        what = what[:1].lower() + what[1:]
    if kind not in ("missing", "extra_forbidden", "value_error") and "input" in err:
        what += f" (got {got(err['input'])})"
    text = f"field {where}: {what}" if where else what
    more = len(errors) - 1
    return text + (f" (and {more} more {'problems' if more > 1 else 'problem'} there)" if more else "")


class FileError(CliplabError):
    """A file that cannot be read as what it should be, when no parameter named it (a file of a results folder)."""


# ---- reading ------------------------------------------------------------------------------------------------

LINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, as an editor counts (\n, \r\n and \r end lines)
    text: str  # stripped


@dataclass
class Records:
    """Rows of a table file (CSV/TSV, JSONL, parquet) as dicts, with the place of each (``line 3``,
    ``row 2 (line 3)``) and the columns in order of first appearance."""

    file: "UserFile"
    rows: list[dict]
    places: list[str]
    columns: list[str] = field(default_factory=list)

    def validate(self, shape: Shape) -> list:
        """Every row as ``shape``; an error names the file, the row and the field."""
        return shape.validate_many(self.rows, self.file, self.places)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(key)
    return out


TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
DATA_SUFFIXES = (".json", ".yaml", ".yml", ".toml")
UTF8_ADVICE = "save it as UTF-8 (in Excel: 'CSV UTF-8'; or: iconv -f latin1 -t utf-8 FILE > NEW)"


@dataclass(frozen=True)
class UserFile:
    """A file the user named through parameter ``param``: read it, check it, and name it in every error.

    ``value`` is the user's value when it is not the file itself (a folder, a spec with ``#options``); ``error`` is
    the error class (``DatasetParameterError`` for dataset files; without ``param``, a :class:`FileError`);
    ``location`` and ``opener`` read a file of another file system (fsspec: ``opener(path)`` gives a binary file,
    ``location`` is the URL shown)."""

    path: str | os.PathLike
    param: str | None
    value: Any = None
    error: type = ParameterError
    location: str | None = None
    opener: Callable[[Any], Any] | None = None

    @property
    def where(self) -> str:
        """The file as people read it."""
        return printable(self.location if self.location is not None else str(self.path))

    @property
    def suffix(self) -> str:
        return os.path.splitext(str(self.path))[1].lower()

    def fail(self, message: str, place: str | None = None) -> ParameterError:
        """The error to raise: the parameter, the user's value, the file (when the value is not the file), the
        place in it (``line 3``) and ``message``."""
        message = re.sub(r"\s*\n\s*", " ", message)  # one line, whatever a parser's own message holds
        parts = [] if self.value is None else [self.where]
        if place:
            parts.append(place)
        value = self.where if self.value is None else printable(str(self.value))
        if self.param is None:
            return FileError(": ".join([value, *parts, message]))
        return self.error(self.param, value, ": ".join([*parts, message]), quote=False)

    # -- bytes and text
    def read_bytes(self) -> bytes:
        """The file's bytes; a missing, unreadable file or a folder is the parameter's error."""
        try:
            if self.opener is not None:
                with self.opener(self.path) as fh:
                    return fh.read()
            with open(self.path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise self.fail("file not found") from None
        except IsADirectoryError:
            raise self.fail("is a folder; give a file") from None
        except PermissionError:
            raise self.fail("no permission to read it") from None
        except OSError as exc:
            raise self.fail(f"cannot be read ({printable(exc.strerror or str(exc))})") from None

    def decode(self, data: bytes) -> str:
        """``data`` as text: UTF-8, byte-order marks at its start dropped; anything else is an error naming line and byte."""
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not data.startswith(codecs.BOM_UTF8):
            raise self.fail(f"is UTF-16 text (its first bytes say so); cliplab reads UTF-8: {UTF8_ADVICE}")
        start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        try:
            text = data[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            at = start + exc.start
            line = data.count(b"\n", 0, at) + 1
            column = at - (data.rfind(b"\n", 0, at) + 1) + 1
            guess = " (Latin-1 / Windows-1252 text?)" if data[at] >= 0xA0 else ""
            raise self.fail(f"byte {column} (0x{data[at]:02x}, byte {at + 1} of the file) is not UTF-8 text"
                            f"{guess}; cliplab reads UTF-8: {UTF8_ADVICE}", f"line {line}") from None
        nul = text.find("\0")
        if nul >= 0:
            line = text.count("\n", 0, nul) + 1
            raise self.fail("holds a NUL byte: not a UTF-8 text file (UTF-16 without a byte-order mark, or a binary "
                            f"file?); {UTF8_ADVICE}", f"line {line}")
        # a file saved twice with a mark keeps a second one at its start: invisible, never meant as text
        return text.lstrip("\ufeff")

    def text(self) -> str:
        """The file as text (see :meth:`decode`)."""
        return self.decode(self.read_bytes())

    def lines(self, what: str, comments: bool = True, text: str | None = None) -> list[Line]:
        """The non-blank lines, stripped (without ``#`` comment lines when ``comments``); none is the error
        'has no ``what``'."""
        text = self.text() if text is None else text
        out = [Line(n, s) for n, raw in enumerate(LINE.split(text), 1) if (s := raw.strip())
               and not (comments and s.startswith("#"))]
        if not out:
            raise self.fail(f"has no {what} (only blank lines{' and # comments' if comments else ''})"
                            if text.strip() else f"is empty: it should list {what}")
        return out

    # -- structured files
    def parse_json(self, text: str, place: str | None = None) -> Any:
        """JSON text as Python values; a syntax error names its line and column, a key given twice is an error."""
        try:
            return json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}" if place is None else f"{place}, column {exc.colno}"
            raise self.fail(f"invalid JSON ({exc.msg})", where) from None
        except _DuplicateKey as exc:
            raise self.fail(f"the key {json.dumps(printable(exc.args[0]), ensure_ascii=False)} is given twice in "
                            "one object", place) from None
        except RecursionError:
            raise self.fail("invalid JSON (nested too deeply)", place) from None

    def json(self, shape: Shape) -> Any:
        """A JSON file as ``shape``."""
        return shape.validate(self.parse_json(self.text()), self)

    def data(self, shape: Shape) -> Any:
        """A JSON, YAML or TOML file (by suffix) as ``shape``."""
        suffix = self.suffix
        if suffix == ".json":
            return self.json(shape)
        text = self.text()
        if suffix in (".yaml", ".yml"):
            import yaml

            try:
                value = yaml.safe_load(text)
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                raise self.fail(f"invalid YAML ({exc.problem or exc.context})",
                                f"line {mark.line + 1}, column {mark.column + 1}" if mark else None) from None
            except (yaml.YAMLError, RecursionError, ValueError) as exc:
                raise self.fail(f"invalid YAML ({printable(str(exc))})") from None
        elif suffix == ".toml":
            try:
                value = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise self.fail(f"invalid TOML ({printable(str(exc))})") from None
            except RecursionError:
                raise self.fail("invalid TOML (nested too deeply)") from None
        else:
            raise self.fail(f"cannot read {suffix or 'a file without extension'}; use "
                            f"{', '.join(DATA_SUFFIXES)}")
        return shape.validate(value, self)

    def jsonl(self, text: str | None = None) -> Records:
        """A JSONL file: one JSON object per non-blank line."""
        text = self.text() if text is None else text
        rows, places = [], []
        for n, line in enumerate(LINE.split(text), 1):
            if line.strip():
                place = f"line {n}"
                value = self.parse_json(line, place)
                if not isinstance(value, dict):
                    raise self.fail(f"should be a JSON object (one record per line), not {got(value)}", place)
                rows.append(value)
                places.append(place)
        return Records(self, rows, places, list(dict.fromkeys(k for r in rows for k in r)))

    def csv(self, delimiter: str = ",", text: str | None = None) -> Records:
        """A CSV (TSV) file with a header row: every row a dict of its texts by column name."""
        text = self.text() if text is None else text
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows, places, header = [], [], None
        try:
            for values in reader:
                if not values or (len(values) == 1 and not values[0].strip()):
                    continue
                if header is None:
                    header = [v.strip() for v in values]
                    named = [h for h in header if h]
                    twice = next((h for h in named if named.count(h) > 1), None)
                    if twice is not None:
                        raise self.fail(f"column {twice!r} appears twice in the header row",
                                        f"line {reader.line_num}")
                    continue
                place = f"row {len(rows) + 1} (line {reader.line_num})"
                if len(values) != len(header):
                    raise self.fail(f"has {len(values)} fields, the header row has {len(header)}"
                                    f" (a {'tab' if delimiter == chr(9) else 'comma'} inside a value needs quotes)"
                                    if len(values) > len(header) else f"has {len(values)} fields, the header row "
                                    f"has {len(header)}", place)
                rows.append({h: v for h, v in zip(header, values) if h})
                places.append(place)
        except csv.Error as exc:
            raise self.fail(f"invalid {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})",
                            f"line {reader.line_num}") from None
        if header is None:
            raise self.fail("is empty: it needs a header row naming the columns")
        return Records(self, rows, places, [h for h in header if h])

    def parquet(self) -> Records:
        """A parquet file's rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if self.opener is not None:
                with self.opener(self.path) as fh:
                    table = pq.read_table(fh)
            else:
                table = pq.read_table(self.path)
            rows = table.to_pylist()
        except FileNotFoundError:
            raise self.fail("file not found") from None
        except IsADirectoryError:
            raise self.fail("is a folder; give a file") from None
        except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise self.fail(f"not a readable parquet file, it may be truncated or damaged ({printable(str(exc))})"
                            ) from None
        return Records(self, rows, [f"row {i + 1}" for i in range(len(rows))], list(table.column_names))

    def table(self) -> Records:
        """A CSV, TSV, JSONL or parquet file (by suffix) as rows."""
        suffix = self.suffix
        if suffix == ".parquet":
            return self.parquet()
        if suffix in (".csv", ".tsv"):
            return self.csv("\t" if suffix == ".tsv" else ",")
        if suffix in (".jsonl", ".ndjson"):
            return self.jsonl()
        raise self.fail(f"cannot read {suffix or 'a file without extension'}; use {', '.join(TABLE_SUFFIXES)}")

