"""Property tests of data loading (`nncift.data.load_items`) on random files.

Random records of every schema the loader accepts (alpaca, dolly, prompt/response,
prompt/completion, OpenAI messages, ShareGPT conversations, explicit --prompt-field /
--response-field / --id-field), written as jsonl, json, csv or parquet with random text
(odd unicode, empty, very long), random encodings (UTF-8, UTF-8 with BOM, UTF-16,
Latin-1), random line endings, blank lines, a truncated last line, random nulls, nesting,
missing and extra keys. The property: the file either loads exactly as the schema table in
`nncift.data` says (ids, prompts, responses and records round-trip) or is refused with an
`InputError` whose message is one non-empty line; never any other exception.

The expected result is computed here from the documented rules, written independently of
the loader's code (see `_expected`).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from nncift.data import load_items
from nncift.errors import InputError
from props import bounded, texts

FORMATS = ("jsonl", "json", "csv", "parquet")
#: schema -> (required text fields, optional text field joined into the prompt)
FLAT: dict[str, tuple[tuple[str, str], str | None]] = {
    "alpaca": (("instruction", "output"), "input"),
    "dolly": (("instruction", "response"), "context"),
    "prompt-response": (("prompt", "response"), None),
    "prompt-completion": (("prompt", "completion"), None),
    # Columns the loader knows nothing about, mapped with prompt_field / response_field.
    "fields": (("question", "answer"), None),
}
#: schema -> (list key, role key, text key, user roles, assistant roles, roles to draw)
CHAT: dict[str, tuple[str, str, str, set[str], set[str], list[Any]]] = {
    "openai-chat": (
        "messages",
        "role",
        "content",
        {"user"},
        {"assistant"},
        ["system", "user", "assistant", "tool", "User", "ASSISTANT", "System"],
    ),
    "sharegpt": (
        "conversations",
        "from",
        "value",
        {"human", "user"},
        {"gpt", "assistant", "chatgpt"},
        ["system", "human", "gpt", "user", "assistant", "chatgpt", "Human", "GPT", "bing"],
    ),
}
#: Keys no schema reads (none of them is a schema field, an id or a wrapper key like "data").
EXTRA_KEYS = ("meta", "source", "score", "tags", "notes")
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "latin-1")
#: What a broken file breaks: a field of some records, the ids, the encoding, the last
#: line, or the `limit` argument.
FAULTS = ("records", "ids", "encoding", "truncate", "limit")
EOLS = ("\n", "\r\n", "\r")


# ----------------------------------------------------------------------- strategies


#: Text with something that is not whitespace (a prompt the loader must accept).
prompts = texts.map(lambda s: s if s.strip() else s + "q")


@st.composite
def _value(draw: st.DrawFn, rich: bool, faulty: bool, prompt: bool = False) -> Any:
    """A value for a text field. Without faults: text (non-blank for a prompt) or, in JSON
    formats, sometimes a number. With faults, also null, and in JSON formats booleans and
    nested lists / objects (csv and parquet cells are strings or null)."""
    k = draw(st.integers(0, 19))
    if k < 16 or (not rich and not faulty):
        return draw(prompts if prompt else texts)
    if rich and k < 18:
        return draw(
            st.one_of(
                st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False)
            )
        )
    if not faulty:
        return draw(prompts if prompt else texts)
    if k < 19 or not rich:
        return None
    return draw(
        st.one_of(
            st.booleans(),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
        )
    )


@st.composite
def _turns(draw: st.DrawFn, schema: str, rich: bool, faulty: bool) -> Any:
    _, role_key, text_key, user, assistant, roles = CHAT[schema]

    def turn(role: Any) -> dict[str, Any]:
        return {role_key: role, text_key: draw(_value(rich, faulty))}

    if faulty:
        # Anything: random roles (maybe no user turn, or no reply after it), malformed turns,
        # or no list at all.
        if rich and draw(st.integers(0, 9)) == 0:
            return draw(st.one_of(st.none(), texts, st.integers(), st.just({})))
        out: list[Any] = []
        for _ in range(draw(st.integers(0, 5))):
            if rich and draw(st.integers(0, 9)) == 0:
                # A key missing, a null role, or not an object at all.
                bad = [{role_key: "user"}, {text_key: "x"}, {role_key: None, text_key: "x"}]
                out.append(draw(st.sampled_from([*bad, "user: x"])))
            else:
                out.append(turn(draw(st.sampled_from(roles))))
        return out
    # A well-formed conversation: system / other turns, a user turn, other non-assistant
    # turns, the reply, then anything.
    others = [r for r in roles if r.lower() not in user | assistant]
    users = [r for r in roles if r.lower() in user]
    replies = [r for r in roles if r.lower() in assistant]
    out = [turn(draw(st.sampled_from(others))) for _ in range(draw(st.integers(0, 2)))]
    out.append({role_key: draw(st.sampled_from(users)), text_key: draw(_value(rich, False, True))})
    out += [turn(draw(st.sampled_from(others))) for _ in range(draw(st.integers(0, 1)))]
    out.append(turn(draw(st.sampled_from(replies))))
    out += [turn(draw(st.sampled_from(roles))) for _ in range(draw(st.integers(0, 2)))]
    return out


@st.composite
def _record(draw: st.DrawFn, schema: str, rich: bool, faulty: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    if schema in FLAT:
        (prompt_key, response_key), optional = FLAT[schema]
        rec[prompt_key] = draw(_value(rich, faulty, prompt=True))
        rec[response_key] = draw(_value(rich, faulty))
        if optional is not None and draw(st.booleans()):
            rec[optional] = draw(_value(rich, faulty))
    else:
        rec[CHAT[schema][0]] = draw(_turns(schema, rich, faulty))
    for key in draw(st.lists(st.sampled_from(EXTRA_KEYS), unique=True, max_size=2)):
        # Extra keys hold anything (nested, null) in JSON; strings or null in csv / parquet.
        rec[key] = draw(
            st.recursive(
                st.none() | texts | st.integers(),
                lambda x: (
                    st.lists(x, max_size=2) | st.dictionaries(st.text(max_size=3), x, max_size=2)
                ),
                max_leaves=4,
            )
            if rich
            else st.none() | st.text(max_size=5)
        )
    if faulty and rec and draw(st.integers(0, 9)) == 0:
        del rec[draw(st.sampled_from(sorted(rec)))]  # a missing key (maybe a required one)
    return rec


@st.composite
def _case(draw: st.DrawFn) -> dict[str, Any]:
    fmt = draw(st.sampled_from(FORMATS))
    rich = fmt in ("jsonl", "json")
    # Half the files break one or two rules (in the records, the ids, the encoding, the
    # last line, the limit); the other half must load.
    faults = draw(st.sets(st.sampled_from(FAULTS), max_size=2)) if draw(st.booleans()) else set()
    faulty = "records" in faults
    schemas = list(FLAT) + (list(CHAT) if fmt != "csv" else [])  # csv cannot nest turns
    schema = draw(st.sampled_from(schemas))
    n = draw(st.integers(1, 6))
    records = [draw(_record(schema, rich, faulty and draw(st.booleans()))) for _ in range(n)]

    # Ids: none (content hashes), an "id" column, or a column named with id_field.
    id_key = draw(st.sampled_from([None, "id", "uid"]))
    if id_key is not None:
        id_values = (
            st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 10**6))
            if rich
            else st.text(min_size=1, max_size=8)
        )
        ids = draw(st.lists(id_values, min_size=n, max_size=n, unique_by=str))
        for rec, item_id in zip(records, ids, strict=True):
            rec[id_key] = item_id
        for rec in records if "ids" in faults else []:
            fault = draw(st.integers(0, 14))
            if fault == 0:
                rec[id_key] = None
            elif fault == 1:
                del rec[id_key]
            elif fault == 2:
                rec[id_key] = records[0].get(id_key)  # a duplicate id
    if n > 1 and draw(st.integers(0, 9)) == 0:
        records[-1] = dict(records[0])  # an exact duplicate (content and id): dedupe or refuse

    if schema == "fields":
        prompt_field, response_field = "question", "answer"
    elif schema in FLAT and draw(st.integers(0, 9)) == 0:
        prompt_field, response_field = FLAT[schema][0]  # explicit flags on a known schema
    else:
        prompt_field = response_field = None
    limit = None
    if draw(st.integers(0, 3)) == 0:
        limit = draw(st.integers(1, 8))
    if "limit" in faults:
        limit = draw(st.integers(-2, 0))
    encodings = ENCODINGS[2:] if "encoding" in faults else ENCODINGS[:2]
    return {
        "fmt": fmt,
        "schema": schema,
        "records": records,
        "prompt_field": prompt_field,
        "response_field": response_field,
        "id_field": "uid" if id_key == "uid" else draw(st.sampled_from([None, None, "id"])),
        "dedupe": draw(st.booleans()),
        "limit": limit,
        "encoding": draw(st.sampled_from(encodings)) if fmt != "parquet" else "binary",
        "eol": draw(st.sampled_from(EOLS)),
        "ensure_ascii": draw(st.booleans()),
        "indent": draw(st.sampled_from([None, 1, 2])),
        "wrap": draw(st.sampled_from([None, "data", "items", "examples", "rows", "jsonl"])),
        "blank_lines": draw(
            st.lists(
                st.tuples(st.integers(0, n), st.sampled_from(["", " ", "\t", "  \t "])),
                max_size=3,
            )
        ),
        "trailing_eol": draw(st.booleans()),
        "truncate": draw(st.floats(0.0, 0.99)) if "truncate" in faults else None,
        "quote_all": draw(st.booleans()),
    }


# ----------------------------------------------------------------------- writing


def _csv_cell(value: Any, quote_all: bool) -> str:
    if value is None:
        return ""  # an empty, unquoted cell: null
    s = str(value)
    if quote_all or s == "" or any(c in s for c in ',"\r\n'):
        return '"' + s.replace('"', '""') + '"'  # a quoted "" is the empty string
    return s


def _keys(records: list[dict[str, Any]]) -> list[str]:
    """Every key of the records, in order of first appearance (a csv / parquet header)."""
    return list(dict.fromkeys(k for rec in records for k in rec))


def _lines(case: dict[str, Any]) -> list[str]:
    """The file's lines for the text formats, blank lines included, nothing truncated."""
    records = case["records"]
    if case["fmt"] == "csv":
        cols = _keys(records)
        lines = [",".join(_csv_cell(c, case["quote_all"]) for c in cols)]
        return lines + [
            ",".join(_csv_cell(r.get(c), case["quote_all"]) for c in cols) for r in records
        ]
    if case["fmt"] == "jsonl" or case["wrap"] == "jsonl":
        lines = [json.dumps(r, ensure_ascii=case["ensure_ascii"]) for r in records]
        for pos, blank in sorted(case["blank_lines"], reverse=True):
            lines.insert(pos, blank)
        return lines
    doc: Any = records if case["wrap"] is None else {case["wrap"]: records}
    # Strings carry their newlines escaped, so every raw "\n" is layout: any EOL works.
    return json.dumps(doc, ensure_ascii=case["ensure_ascii"], indent=case["indent"]).split("\n")


def _last_record_line(lines: list[str]) -> int:
    """Index of the last line that is not blank (the last record, or the closing bracket)."""
    return max(i for i, line in enumerate(lines) if line.strip())


def _file_text(case: dict[str, Any]) -> str:
    """The file's content for the text formats (before encoding), truncation included:
    the last record's line loses its tail (blank lines after it stay)."""
    lines = _lines(case)
    if case["truncate"] is not None:
        i = _last_record_line(lines)
        lines[i] = lines[i][: int(len(lines[i]) * case["truncate"])]
    eol = case["eol"]
    return eol.join(lines) + (eol if case["trailing_eol"] else "")


def _write(case: dict[str, Any], path: Path) -> bytes | None:
    """Write the case's file; returns its text as UTF-8 bytes when the encoding is a
    faithful one (UTF-8, with or without BOM, or ASCII-only Latin-1), else None."""
    if case["fmt"] == "parquet":
        pl.DataFrame(_as_parquet(case["records"]), infer_schema_length=None).write_parquet(path)
        if case["truncate"] is not None:
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * case["truncate"])])
        return b""
    text = _file_text(case)
    enc = case["encoding"]
    data = text.encode(enc, errors="replace") if enc == "latin-1" else text.encode(enc)
    path.write_bytes(data)
    if enc in ("utf-8", "utf-8-sig") or (enc == "latin-1" and text.isascii()):
        return text.encode()
    return None


def _as_parquet(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as a parquet file holds them: one column per key (null where a record has
    no such key), and the turns of a conversation as structs with every turn key."""
    cols = _keys(records)
    out = [{c: r.get(c) for c in cols} for r in records]
    for key, *_ in CHAT.values():
        turns = [t for r in out if isinstance(r.get(key), list) for t in r[key]]
        tkeys = _keys(turns)
        for r in out:
            if isinstance(r.get(key), list):
                r[key] = [{k: t.get(k) for k in tkeys} for t in r[key]]
    return out


# ----------------------------------------------------------------------- expected result


class _Refused(Exception):
    """The documented rules say the loader must refuse this input."""


def _as_text(value: Any) -> str:
    # docs: a text field may be a string, a number (its str()) or null (empty).
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Refused
    return value if isinstance(value, str) else str(value)


def _paragraphs(*parts: str) -> str:
    # The prompt is the non-blank parts (instruction, input / system, user) joined by "\n\n".
    return "\n\n".join(p for p in parts if p.strip())


def _chat(
    turns: Any, role_key: str, text_key: str, user: set[str], assistant: set[str]
) -> tuple[str, str]:
    """System + first user turn, and the first assistant reply after it; every turn up to
    that reply must be an object with both keys and text."""
    if not isinstance(turns, list):
        raise _Refused
    roles = []
    for turn in turns:
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            break
        roles.append(str(turn[role_key]).lower())
    first_user = next((i for i, r in enumerate(roles) if r in user), None)
    if first_user is None:
        raise _Refused
    answer = next((i for i in range(first_user + 1, len(roles)) if roles[i] in assistant), None)
    if answer is None:
        raise _Refused
    texts_ = [_as_text(t[text_key]) for t in turns[: answer + 1]]
    systems = [i for i in range(first_user) if roles[i] == "system"]
    system = texts_[systems[-1]] if systems else ""
    return _paragraphs(system, texts_[first_user]), texts_[answer]


def _detect(keys: set[str]) -> str:
    order = [
        ("alpaca", {"instruction", "output"}),
        ("dolly", {"instruction", "response"}),
        ("prompt-response", {"prompt", "response"}),
        ("prompt-completion", {"prompt", "completion"}),
        ("openai-chat", {"messages"}),
        ("sharegpt", {"conversations"}),
    ]
    for name, need in order:
        if need <= keys:
            return name
    raise _Refused


def _expected(
    records: list[dict[str, Any]], case: dict[str, Any]
) -> tuple[list[int], list[str], list[str], list[str]]:
    """(kept record indices, ids, prompts, responses) by the documented rules, or _Refused."""
    limit = case["limit"]
    if limit is not None:
        if limit < 1:
            raise _Refused
        records = records[:limit]
    if not records:
        raise _Refused
    pf, rf = case["prompt_field"], case["response_field"]
    if pf is not None:
        required: tuple[str, ...] = (pf, rf)
        schema = "fields"
    else:
        schema = _detect(set(records[0]))
        required = FLAT[schema][0] if schema in FLAT else (CHAT[schema][0],)
    id_key = case["id_field"] or ("id" if "id" in records[0] else None)
    kept: list[int] = []
    ids: list[str] = []
    prompts: list[str] = []
    responses: list[str] = []
    for i, rec in enumerate(records):
        if any(f not in rec or rec[f] is None for f in required):
            raise _Refused
        if schema == "fields":
            prompt, response = _as_text(rec[pf]), _as_text(rec[rf])
        elif schema in FLAT:
            (instr, out), optional = FLAT[schema]
            extra = _as_text(rec.get(optional)) if optional else ""
            prompt, response = _paragraphs(_as_text(rec[instr]), extra), _as_text(rec[out])
        else:
            key, role_key, text_key, user, assistant, _ = CHAT[schema]
            prompt, response = _chat(rec[key], role_key, text_key, user, assistant)
        if not prompt.strip():
            raise _Refused
        if id_key is not None:
            if rec.get(id_key) is None:
                raise _Refused
            item_id = str(rec[id_key])
        else:
            digest = hashlib.sha256((prompt + "\0" + response).encode())
            item_id = digest.hexdigest()[:16]
        if item_id in ids:
            if case["dedupe"] and id_key is None:
                continue
            raise _Refused
        kept.append(i)
        ids.append(item_id)
        prompts.append(prompt)
        responses.append(response)
    return kept, ids, prompts, responses


def _as_read(case: dict[str, Any]) -> list[dict[str, Any]]:
    """The records as the file format gives them back."""
    records = case["records"]
    if case["fmt"] == "csv":
        cols = _keys(records)
        return [{c: r.get(c) for c in cols} for r in records]  # no such key: an empty cell
    if case["fmt"] == "parquet":
        return _as_parquet(records)
    return records


def _truncation_drops_last_record(case: dict[str, Any]) -> bool:
    """True when the truncation cut the whole last record line of a line-based file (so
    the file is simply one record shorter)."""
    if case["truncate"] is None:
        return False
    if case["fmt"] in ("csv", "jsonl") or (case["fmt"] == "json" and case["wrap"] == "jsonl"):
        lines = _lines(case)
        return int(len(lines[_last_record_line(lines)]) * case["truncate"]) == 0
    return False


# ----------------------------------------------------------------------- the properties


def _load(case: dict[str, Any], path: Path) -> Any:
    return load_items(
        path,
        prompt_field=case["prompt_field"],
        response_field=case["response_field"],
        id_field=case["id_field"],
        dedupe=case["dedupe"],
        limit=case["limit"],
    )


def _assert_clean_refusal(exc: InputError) -> None:
    msg = str(exc)
    assert msg.strip(), "an InputError without a message"
    assert "\n" not in msg.strip(), f"a multi-line error message: {msg!r}"


@bounded(250)
@given(case=_case())
def test_any_file_loads_exactly_or_is_refused_with_input_error(
    case: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("p") / f"pool.{case['fmt']}"
    faithful = _write(case, path)
    items = None
    try:
        items = _load(case, path)
    except InputError as exc:
        _assert_clean_refusal(exc)
    event(f"{case['fmt']} {'loaded' if items is not None else 'refused'}")
    # Any other exception fails the test: that is the property.

    records = _as_read(case)
    if case["truncate"] is not None:
        if not _truncation_drops_last_record(case):
            # A cut-off last record is malformed, except in csv, where a row cut between
            # cells still parses (with nulls): there only the records before it are checked.
            if case["fmt"] != "csv":
                assert items is None, "a truncated file loaded"
            return
        records = records[:-1]
    if faithful is None:
        # UTF-16, or Latin-1 with non-ASCII text: refused, unless the bytes happen to be
        # valid UTF-8 too (then they are read as UTF-8, which is all a loader can do).
        if case["encoding"] == "utf-16":
            assert items is None, "a UTF-16 file was read as UTF-8"
        return
    if case["fmt"] == "json" and case["wrap"] == "jsonl" and len(records) < 2:
        # One JSON-lines record in a .json file is a lone object, not a list: refused.
        assert items is None
        return
    try:
        kept, ids, prompts, responses = _expected(records, case)
    except _Refused:
        assert items is None, f"loaded a file the rules refuse: {records!r}"
        return
    assert items is not None, f"refused a valid file: {case!r}"
    assert items.ids == ids
    assert items.prompts == prompts
    assert items.responses == responses
    assert items.records == [records[i] for i in kept]


@st.composite
def _damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid small file of some format with random bytes overwritten, inserted or cut,
    or plain random bytes."""
    fmt = draw(st.sampled_from(FORMATS))
    if draw(st.integers(0, 4)) == 0:
        return fmt, draw(st.binary(max_size=200))
    records = [{"instruction": f"do {i}", "output": f"done, {i}"} for i in range(3)]
    if fmt == "parquet":
        buf = io.BytesIO()
        pl.DataFrame(records).write_parquet(buf)
        data = bytearray(buf.getvalue())
    else:
        case = {
            "fmt": fmt,
            "records": records,
            "quote_all": draw(st.booleans()),
            "blank_lines": [],
            "wrap": draw(st.sampled_from([None, "data"])),
            "ensure_ascii": True,
            "indent": draw(st.sampled_from([None, 1])),
            "truncate": None,
            "eol": draw(st.sampled_from(EOLS)),
            "trailing_eol": True,
        }
        data = bytearray(_file_text(case).encode())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        edit = draw(st.sampled_from(["set", "insert", "cut"]))
        byte = draw(
            st.sampled_from([0, 0x0A, 0x0D, 0x22, 0x2C, 0x5B, 0x7B, 0x7D, 0xC3, 0xFF])
            | st.integers(0, 255)
        )
        if edit == "set" and data:
            data[pos] = byte
        elif edit == "insert":
            data.insert(pos, byte)
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    return fmt, bytes(data)


@bounded(300)
@given(damaged=_damaged())
def test_damaged_or_random_bytes_load_or_raise_input_error(
    damaged: tuple[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    fmt, data = damaged
    path = tmp_path_factory.mktemp("d") / f"pool.{fmt}"
    path.write_bytes(data)
    try:
        items = load_items(path)
    except InputError as exc:
        _assert_clean_refusal(exc)
        event(f"{fmt} refused")
        return
    event(f"{fmt} loaded")
    # Whatever loaded is well-formed: one id, prompt, response and record per item.
    assert len(items) > 0
    assert all(isinstance(x, str) for x in items.ids + items.prompts + items.responses)
    assert all(p.strip() for p in items.prompts)
    assert len(set(items.ids)) == len(items.ids)


def test_field_flags_come_in_pairs(tmp_path: Path) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text('{"q": "a", "a": "b"}\n', encoding="utf-8")
    for one in ({"prompt_field": "q"}, {"response_field": "a"}):
        with pytest.raises(InputError, match="both --prompt-field and --response-field"):
            load_items(path, **one)
    items = load_items(path, prompt_field="q", response_field="a")
    assert (items.prompts, items.responses) == (["a"], ["b"])


@pytest.mark.parametrize("limit", [0, -1, -5])
def test_limit_below_one_is_refused(tmp_path: Path, limit: int) -> None:
    # Found by the property above: limit=-1 sliced records[:-1] and silently dropped the
    # last item (and gave builtin pools an empty result).
    path = tmp_path / "pool.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n')
    with pytest.raises(InputError, match="limit must be"):
        load_items(path, limit=limit)
    with pytest.raises(InputError, match="limit must be"):
        load_items("builtin:ifbench", limit=limit)
    assert len(load_items(path, limit=1)) == 1


def test_csv_with_bare_cr_line_endings_loads(tmp_path: Path) -> None:
    # Found by the property above: polars ends rows at LF only, so a CR-only csv (old Mac,
    # Excel's "CSV (Macintosh)") was refused as "no records". A CR inside quotes is kept.
    path = tmp_path / "pool.csv"
    path.write_bytes(b'"prompt","response"\r"two\rlines",b\rc,"d, e"\r')
    items = load_items(path)
    assert items.prompts == ["two\rlines", "c"]
    assert items.responses == ["b", "d, e"]


def test_malformed_csv_error_is_one_line_naming_the_row(tmp_path: Path) -> None:
    # Found by the property above: polars' message ran over many lines, quoted the data and
    # suggested polars options (infer_schema_length, ignore_errors) nncift does not expose.
    path = tmp_path / "pool.csv"
    path.write_text('instruction,output\ndo 0,"done 0\ndo 1,done 1\n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_items(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "malformed CSV" in msg and "line 2" in msg and "unclosed quote" in msg


def test_parquet_reader_panic_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the property above: on some damaged files polars panics, and pyo3's
    # PanicException is a BaseException that `except Exception` let through as a traceback.
    class PanicException(BaseException):
        pass

    def panics(*args: Any, **kwargs: Any) -> Any:
        raise PanicException("assertion `left == right` failed\n  left: 0\n right: 3")

    path = tmp_path / "pool.parquet"
    pl.DataFrame([{"prompt": "a", "response": "b"}]).write_parquet(path)
    monkeypatch.setattr(pl, "read_parquet", panics)
    with pytest.raises(InputError, match=r"not a readable parquet file \(assertion") as err:
        load_items(path)
    assert "\n" not in str(err.value)
