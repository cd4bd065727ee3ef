"""Property-based fuzzing of the readers users feed files to: whatever the input, a reader returns what it read or
raises one ``UserError`` line; never another exception. Examples are derandomised, so CI sees the same ones each run
(a new failure is a new bug, not a flaky test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instructgpt.errors import UserError

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# the keys the readers look for, so that generated objects often come close to a valid record
KEYS = ["prompt", "response", "completion", "chosen", "rejected", "responses", "ranking", "messages", "role", "content",
        "instruction", "input", "output", "labeler", "labeler_pool", "id", "text", "split", "task_id", "tokens", "name",
        "token", "lr", "epochs", "seed", "preset", "ppo", "sft", "x"]
ROLES = st.sampled_from(["user", "assistant", "system", "robot", "", "USER"])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), ROLES)
messages = st.lists(st.fixed_dictionaries({"role": ROLES}, optional={"content": st.one_of(st.text(max_size=8), st.integers())}),
                    max_size=4)
values = st.recursive(st.one_of(scalars, messages), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=12)
texts = st.text(max_size=10)
conversations = st.lists(st.tuples(texts, texts), min_size=1, max_size=3).map(
    lambda turns: [m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})])
prompt_messages = conversations.map(lambda c: c[:-1])
prompts = st.one_of(texts, prompt_messages)
tiers = st.integers(2, 5).flatmap(lambda k: st.tuples(st.just(k), st.one_of(
    st.permutations(range(k)).map(list),
    st.permutations(range(k)).map(lambda o: [[o[0]], list(o[1:])]))))
# valid records of every shape each reader accepts; fuzzed below by changing one thing in them (``_mutate``)
valid_comparisons = st.one_of(
    st.fixed_dictionaries({"prompt": prompts, "chosen": texts, "rejected": texts}, optional={"labeler": texts}),
    tiers.flatmap(lambda kt: st.fixed_dictionaries({"prompt": prompts, "responses": st.lists(texts, min_size=kt[0],
                                                                                              max_size=kt[0]),
                                                    "ranking": st.just(kt[1])})),
    st.fixed_dictionaries({"chosen": st.tuples(texts, texts, texts).map(lambda t: f"\n\nHuman: {t[0]}\n\nAssistant: {t[1]}"),
                           "rejected": texts.map(lambda t: f"\n\nHuman: q\n\nAssistant: {t}")}),
)
valid_demonstrations = st.one_of(
    st.fixed_dictionaries({"prompt": texts, "response": texts}),
    st.fixed_dictionaries({"messages": conversations}),
    st.fixed_dictionaries({"instruction": texts, "output": texts}, optional={"input": texts}),
)
valid_prompts = st.one_of(st.fixed_dictionaries({"prompt": texts}), st.fixed_dictionaries({"messages": prompt_messages}))


def _mutate(t):
    """A valid record as it is (0), with a key set to anything (1), removed (2), or one list item replaced (3)."""
    rec, key, value, how, at = t
    rec = json.loads(json.dumps(rec))
    if how == 1:
        rec[key] = value
    elif how == 2:
        rec.pop(key, None)
    elif how == 3:
        lists = [v for v in rec.values() if isinstance(v, list) and v]
        if lists:
            target = lists[at % len(lists)]
            item = target[at % len(target)]
            if isinstance(item, dict) and at % 2:  # inside a message: its role or content
                item["role" if at % 4 == 1 else "content"] = value
            else:
                target[at % len(target)] = value
    return rec


def lines_of(valid):
    """JSONL lines: mutated valid records mostly, with arbitrary JSON values and bytes that are not UTF-8 among them."""
    mutated = st.tuples(valid, st.sampled_from(KEYS), values, st.integers(0, 3), st.integers(0, 7)).map(_mutate)
    return st.lists(st.one_of(mutated.map(json.dumps), mutated.map(json.dumps), values.map(json.dumps),
                              st.binary(max_size=30).map(lambda b: b.decode("latin-1"))), min_size=0, max_size=5)


lines = lines_of(st.one_of(valid_comparisons, valid_demonstrations, valid_prompts))


def _write(folder: Path, name: str, rows: list[str]) -> Path:
    f = folder / name
    f.write_bytes("\n".join(rows).encode("utf-8", "surrogatepass") + b"\n")
    return f


def _one_line_or_nothing(call):
    try:
        return call()
    except UserError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return None


@FUZZ
@given(rows=lines_of(valid_comparisons))
def test_comparison_files(tmp_path, rows):
    from instructgpt.data.preferences import SkipReport, group_pairwise, read_comparisons

    f = _write(tmp_path, "c.jsonl", rows)
    comps = _one_line_or_nothing(lambda: read_comparisons(f, skips=SkipReport()))
    for c in comps or []:
        assert all(0 <= i < c.k and 0 <= j < c.k and c.responses[i] != c.responses[j] for i, j in c.pairs)
    if comps:
        group_pairwise(comps)


@FUZZ
@given(rows=lines_of(valid_demonstrations), fmt=st.sampled_from(["auto", "chat", "prompt_response", "alpaca"]))
def test_demonstration_files(tmp_path, rows, fmt):
    from instructgpt.data.chat import read_demonstrations

    f = _write(tmp_path, "d.jsonl", rows)
    for r in _one_line_or_nothing(lambda: read_demonstrations(f, fmt)) or []:
        assert r["messages"][-1]["role"] == "assistant"


@FUZZ
@given(rows=lines_of(valid_prompts))
def test_prompt_files(tmp_path, rows):
    from instructgpt.data.chat import read_prompts

    f = _write(tmp_path, "p.jsonl", rows)
    _one_line_or_nothing(lambda: read_prompts(str(f)))


@FUZZ
@given(value=values)
def test_chat_messages(value):
    from instructgpt.data.chat import check_messages

    for end in ("assistant", "user", None):
        out = _one_line_or_nothing(lambda: check_messages(value, "where", end=end))
        if out is not None and end is not None:
            assert out[-1]["role"] == end


@FUZZ
@given(table=st.dictionaries(st.sampled_from(["lr", "epochs", "seed", "dropout", "format", "select_by", "max_len",
                                              "val_fraction", "preset", "sft", "lrr"]), values, max_size=4),
       suffix=st.sampled_from([".json", ".yaml", ".toml"]))
def test_config_files(tmp_path, table, suffix):
    from instructgpt.config import build_config, read_config_file, stage_section
    from instructgpt.stages.sft import SFTConfig

    f = tmp_path / f"c{suffix}"
    if suffix == ".toml":  # TOML cannot say null: a table written as TOML where it can be, garbage where not
        body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items() if isinstance(v, (int, float, str, bool)))
    else:
        body = json.dumps(table, allow_nan=True)
    f.write_text(body)

    def load():
        data = read_config_file(f)
        names = {x for x in SFTConfig.__dataclass_fields__}
        values = stage_section(data, "sft", names, str(f))
        values.pop("preset", None)
        return build_config(SFTConfig, file_values=values, file_source=str(f))

    _one_line_or_nothing(load)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_in_every_reader(tmp_path, raw):
    from instructgpt.data.chat import read_demonstrations
    from instructgpt.data.preferences import read_comparisons
    from instructgpt.data.chat import read_prompts
    from instructgpt.web.auth import read_tokens_file

    f = tmp_path / "x.jsonl"
    f.write_bytes(raw)
    for call in (lambda: read_comparisons(f), lambda: read_demonstrations(f), lambda: read_prompts(str(f)),
                 lambda: read_tokens_file(f)):
        _one_line_or_nothing(call)


@pytest.mark.parametrize("reader", ["comparisons", "demonstrations", "prompts"])
def test_the_generators_reach_records_that_read(tmp_path, reader):
    """The fuzzing is not only noise: its generators find lines each reader accepts (so the accepting paths, and what
    follows them, are fuzzed too)."""
    from hypothesis import find

    from instructgpt.data.chat import read_demonstrations
    from instructgpt.data.preferences import read_comparisons
    from instructgpt.data.chat import read_prompts

    read = {"comparisons": read_comparisons, "demonstrations": read_demonstrations,
            "prompts": lambda f: read_prompts(str(f))}[reader]

    def reads(rows):
        try:
            return bool(read(_write(tmp_path, "f.jsonl", rows)))
        except UserError:
            return False

    find(lines, reads, settings=settings(max_examples=5000, derandomize=True, deadline=None, database=None))
