"""Data loading: every file format and schema, real built-in data, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from nncift.data import ANSWER_SEPARATOR, content_id, load_items, load_named
from nncift.errors import InputError

ROWS = [
    {"prompt": "What is 2+2?", "response": "4"},
    {"prompt": "Name a colour.", "response": "Blue."},
    {"prompt": "Say hi.", "response": "Hi!"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_file_format_gives_the_same_items(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, ROWS)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")
    elif suffix == ".csv":
        pl.DataFrame(ROWS).write_csv(path)
    else:
        pl.DataFrame(ROWS).write_parquet(path)
    items = load_items(path)
    assert len(items) == 3
    assert items.prompts == [r["prompt"] for r in ROWS]
    assert items.responses == [r["response"] for r in ROWS]
    assert items.ids == [content_id(r["prompt"], r["response"]) for r in ROWS]
    assert items.texts[0] == "What is 2+2?" + ANSWER_SEPARATOR + "4"
    assert items.schema == "prompt-response"


@pytest.mark.parametrize(
    ("record", "schema", "prompt", "response"),
    [
        (
            {"instruction": "Add.", "input": "2 and 2", "output": "4"},
            "alpaca",
            "Add.\n\n2 and 2",
            "4",
        ),
        (
            {"instruction": "Add 2 and 2.", "input": "", "output": "4"},
            "alpaca",
            "Add 2 and 2.",
            "4",
        ),
        ({"instruction": "Sum.", "context": "1, 2", "response": "3"}, "dolly", "Sum.\n\n1, 2", "3"),
        (
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi?"},
                    {"role": "assistant", "content": "Hello."},
                ]
            },
            "openai-chat",
            "Be brief.\n\nHi?",
            "Hello.",
        ),
        (
            {"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
            "sharegpt",
            "Q?",
            "A.",
        ),
    ],
)
def test_schemas(tmp_path: Path, record: dict, schema: str, prompt: str, response: str) -> None:
    items = load_items(write_jsonl(tmp_path / "d.jsonl", [record]))
    assert items.schema == schema
    assert items.prompts == [prompt]
    assert items.responses == [response]
    assert items.records == [record]


def test_field_overrides_and_id_field(tmp_path: Path) -> None:
    rows = [{"uid": 7, "q": "Why?", "a": "Because."}, {"uid": 8, "q": "How?", "a": "So."}]
    items = load_items(
        write_jsonl(tmp_path / "d.jsonl", rows),
        prompt_field="q",
        response_field="a",
        id_field="uid",
    )
    assert items.ids == ["7", "8"]
    assert items.prompts == ["Why?", "How?"]


def test_id_column_is_used_when_present(tmp_path: Path) -> None:
    rows = [dict(r, id=f"x{i}") for i, r in enumerate(ROWS)]
    assert load_items(write_jsonl(tmp_path / "d.jsonl", rows)).ids == ["x0", "x1", "x2"]


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "x", "response": \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl: line 2: malformed JSON"):
        load_items(path)


def test_unknown_schema_lists_fields_and_flags(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_items(write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}]))
    msg = str(err.value)
    assert "['answer', 'question']" in msg
    assert "--prompt-field" in msg and "--response-field" in msg


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"\n\n", "no records"),
        (b'{"prompt": "caf\xe9", "response": "x"}\n', "line 1: not valid UTF-8"),
    ],
)
def test_missing_empty_and_non_utf8(tmp_path: Path, content: bytes | None, pattern: str) -> None:
    path = tmp_path / "d.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=pattern):
        load_items(path)


def test_duplicates_fail_unless_deduped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], ROWS[1], ROWS[0]])
    with pytest.raises(InputError, match="record 3: duplicate id .* first seen at record 1"):
        load_items(path)
    assert len(load_items(path, dedupe=True)) == 2
    with pytest.raises(InputError, match="duplicate id 'a'"):
        load_items(
            write_jsonl(tmp_path / "e.jsonl", [dict(ROWS[0], id="a"), dict(ROWS[1], id="a")])
        )


def test_missing_field_in_a_later_record(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"record 2: missing field\(s\) \['response'\]"):
        load_items(write_jsonl(tmp_path / "d.jsonl", [ROWS[0], {"prompt": "only"}]))


def test_null_fields_are_named_as_null_not_missing(tmp_path: Path) -> None:
    # Present-but-null fields used to be reported as "missing" while the same message listed
    # them among the fields found.
    both = write_jsonl(tmp_path / "n.jsonl", [ROWS[0], {"prompt": None, "response": None}])
    with pytest.raises(InputError) as exc:
        load_items(both)
    assert "record 2: fields 'prompt', 'response' are null" in str(exc.value)
    assert "missing" not in str(exc.value)
    one = write_jsonl(tmp_path / "o.jsonl", [{"prompt": None, "response": "r"}])
    with pytest.raises(InputError, match=r"record 1: field 'prompt' is null$"):
        load_items(one)
    ids = write_jsonl(tmp_path / "i.jsonl", [dict(ROWS[0], id=None)])
    with pytest.raises(InputError, match=r"record 1: id field 'id' is null"):
        load_items(ids)


def test_builtin_datasets_are_real_instruction_data() -> None:
    ifb = load_items("builtin:ifbench")
    assert len(ifb) == 294
    assert all(p.strip() and r.strip() for p, r in zip(ifb.prompts, ifb.responses, strict=True))
    chat = load_named("chatterbot")
    assert len(chat) > 1000
    assert len(set(chat.ids)) == len(chat)
    with pytest.raises(InputError, match="unknown built-in data set"):
        load_named("alpaca")


def test_split_is_disjoint_and_seeded() -> None:
    items = load_named("ifbench")
    a, b = items.split([100, 50], seed=3)
    assert not set(a.ids) & set(b.ids)
    assert a.ids == items.split([100, 50], seed=3)[0].ids
    assert a.ids != items.split([100, 50], seed=4)[0].ids
