"""Reading data files: UTF-8 text, JSON, and tables (CSV, TSV or JSONL) with named columns. Every error
is a `UserError` that names the file and the line.

Formats, chosen by the file's extension:
- `.csv`: comma-separated with a header row; a field may be quoted, a quote inside it doubled.
- `.tsv`: the same with tabs (the excel-tab dialect: quoting as in CSV).
- `.jsonl`: one JSON object a line; blank lines are skipped.
Quoting is strict: a quote that opens a field must close it, so that a stray quote is an error
naming its line instead of a silently merged field.
"""
import csv
import io
import json
from pathlib import Path
from typing import Any, NamedTuple

from minicore.errors import UserError

KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}


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
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON ({e.msg})", where(path, e.lineno), fix="check that the file is complete "
                        "and was saved as JSON") from None


def read_table(path: str | Path, columns: list[str], kind: str | None = None,
               quoting: int = csv.QUOTE_MINIMAL, text: str | None = None) -> list[Row]:
    """The rows of a CSV, TSV or JSONL file (`kind` "csv", "tsv" or "jsonl"; default: from the
    extension) that must have `columns`. CSV and TSV need a header naming them (more columns may
    follow); `quoting=csv.QUOTE_NONE` reads quotes as text (files that never quote). `text`: the
    content, already read (from stdin); `path` then only names it in errors."""
    path = Path(path)
    kind = kind or KINDS.get(path.suffix.lower())
    if kind not in KINDS.values():
        raise UserError("unknown table format", str(path), path.suffix,
                        f"name the file with one of the extensions {', '.join(KINDS)}")
    text = read_text(path) if text is None else text
    return _jsonl_rows(path, text, columns) if kind == "jsonl" else _csv_rows(path, text, columns, kind, quoting)


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
        if not isinstance(value, dict):
            raise UserError(f"expected a JSON object, got {type(value).__name__}", where(path, n),
                            fix="write one JSON object a line")
        _missing(path, n, columns, value)
        rows.append(Row(n, value))
    return rows


def string_field(path, row: Row, column: str) -> str:
    """A non-empty text value of a row."""
    value = row.values[column]
    if not isinstance(value, str) or not value.strip():
        raise UserError("expected a non-empty string", where(path, row.line, column), value,
                        "give the field a text")
    return value
