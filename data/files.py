"""Reading data files: UTF-8 text, JSON, and tables (CSV, TSV, JSONL or a JSON array) with named
columns. Every error is a `UserError` that names the file and the line.

Formats, chosen by the file's extension:
- `.csv`: comma-separated with a header row naming each column once; a field may be quoted, a quote
  inside it doubled.
- `.tsv`: the same with tabs (the excel-tab dialect: quoting as in CSV).
- `.jsonl`: one JSON object a line; blank lines are skipped.
- `.json`: one JSON array of objects, on one line or many.
Quoting is strict: a quote that opens a field must close it, so that a stray quote is an error
naming its line instead of a silently merged field.
"""
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from minicore.errors import UserError

KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}


class Row(NamedTuple):
    line: int  # the line the row starts on (1-based)
    values: dict[str, Any]  # column -> value: str for CSV and TSV, any JSON value for JSONL


def where(path, line: int, column: str | None = None) -> str:
    """The culprit's address in an error message: "path, line N[, column 'c']"."""
    return f"{path}, line {line}" + (f", column {column!r}" if column is not None else "")


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, without a leading byte-order mark; bytes that are not UTF-8 are an error
    naming the line."""
    return decode_text(Path(path).read_bytes(), path)


def decode_text(data: bytes, name) -> str:
    """UTF-8 bytes read from `name` (a path, or "<stdin>") -> text, as `read_text`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError("not UTF-8 text", where(name, data.count(b"\n", 0, e.start) + 1),
                        data[e.start:e.end], "save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def read_json(path: str | Path):
    """A JSON file; invalid JSON is an error naming the line."""
    return parse_json(read_text(path), path)


def parse_json(text: str, name):
    """JSON text read from `name` (a path, or "<stdin>"); invalid JSON is an error naming the line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON ({e.msg})", where(name, e.lineno), fix="check that the file is complete "
                        "and was saved as JSON") from None


def read_table(path: str | Path, columns: list[str], kind: str | None = None,
               quoting: int = csv.QUOTE_MINIMAL, text: str | None = None) -> list[Row]:
    """The rows of a CSV, TSV, JSONL or JSON file (`kind` "csv", "tsv", "jsonl" or "json"; default: from
    the extension) that must have `columns`. CSV and TSV need a header naming them (more columns may
    follow); `quoting=csv.QUOTE_NONE` reads quotes as text (files that never quote). `text`: the
    content, already read (from stdin); `path` then only names it in errors."""
    path = Path(path)
    kind = kind or KINDS.get(path.suffix.lower())
    if kind not in KINDS.values():
        raise UserError("unknown table format", str(path), path.suffix,
                        f"name the file with one of the extensions {', '.join(KINDS)}")
    text = read_text(path) if text is None else text
    if kind == "jsonl":
        return _jsonl_rows(path, text, columns)
    if kind == "json":
        return _json_rows(path, text, columns)
    return _csv_rows(path, text, columns, kind, quoting)


def _missing(path, line: int, columns: list[str], present) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise UserError(f"missing column{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}",
                        where(path, line), fix=f"the columns there are {', '.join(map(repr, present))}")


def _csv_rows(path: Path, text: str, columns: list[str], kind: str, quoting: int) -> list[Row]:
    delimiter = "," if kind == "csv" else "\t"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    rows, header, end = [], None, 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields:
                continue
            if header is None:
                header = fields
                _missing(path, start, columns, header)
                _duplicates(path, start, header)
                continue
            if len(fields) != len(header):
                raise UserError(f"expected {len(header)} {kind.upper()} fields (as the header), got {len(fields)}",
                                where(path, start), fix="check the separators and quotes on that line")
            rows.append(Row(start, dict(zip(header, fields))))
    except csv.Error as e:
        raise UserError(f"malformed {kind.upper()} ({e})", where(path, reader.line_num),
                        fix='a field that opens with a quote must close with one; double a quote inside it') from None
    if header is None:
        raise UserError("no header row", str(path), fix="the first line names the columns")
    return rows


def _duplicates(path, line: int, header: list[str]) -> None:
    """A header naming a column twice is an error: a row would keep only the last of the two fields."""
    twice = [name for name, n in Counter(header).items() if n > 1]
    if twice:
        raise UserError(f"the header names the column {twice[0]!r} {header.count(twice[0])} times", where(path, line),
                        fix="give each column its own name")


def _jsonl_rows(path: Path, text: str, columns: list[str]) -> list[Row]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"not valid JSON ({e.msg}, character {e.pos + 1})", where(path, n),
                            fix="write one JSON object a line") from None
        rows.append(_object_row(path, n, value, columns, "write one JSON object a line"))
    return rows


def _json_rows(path: Path, text: str, columns: list[str]) -> list[Row]:
    """The objects of a JSON array, each with the line it starts on."""
    value = parse_json(text, path)
    if not isinstance(value, list):
        raise UserError(f"expected a JSON array of objects, got {type(value).__name__}", str(path),
                        fix="write [{...}, {...}] (or one object a line in a .jsonl file)")
    return [_object_row(path, line, item, columns, "write [{...}, {...}]: an object for each row")
            for line, item in zip(_item_lines(text), value)]


def _object_row(path, line: int, value, columns: list[str], fix: str) -> Row:
    """A JSON value that must be an object holding `columns`, as the row of `line`."""
    if not isinstance(value, dict):
        raise UserError(f"expected a JSON object, got {type(value).__name__}", where(path, line), fix=fix)
    _missing(path, line, columns, value)
    return Row(line, value)


_BETWEEN_ITEMS = re.compile(r"[ \t\n\r,]*")  # JSON whitespace and the commas between an array's items


def _item_lines(text: str) -> Iterator[int]:
    """The line each item of a JSON array starts on (`text` is a valid JSON array)."""
    decoder, line, counted = json.JSONDecoder(), 1, 0
    pos = _BETWEEN_ITEMS.match(text, text.index("[") + 1).end()
    while text[pos] != "]":
        line, counted = line + text.count("\n", counted, pos), pos
        yield line
        pos = _BETWEEN_ITEMS.match(text, decoder.raw_decode(text, pos)[1]).end()


def string_field(path, row: Row, column: str) -> str:
    """A non-empty text value of a row."""
    value = row.values[column]
    if not isinstance(value, str) or not value.strip():
        raise UserError("expected a non-empty string", where(path, row.line, column), value,
                        "give the field a text")
    return value
