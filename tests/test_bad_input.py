"""Bad input gets one clear line naming the file or option, a non-zero exit, no traceback and nothing left behind.

One row per case; a new command or format adds rows: every option with a range or a set of choices gets its rows from
the command's config (``field(ge=..., choices=...)``), every input format from FILE_ROWS below.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from instructgpt.cli import main


def _broken_model(tmp_path: Path, tiny_model_dir: Path, how: str) -> Path:
    m = tmp_path / f"model-{how}"
    shutil.copytree(tiny_model_dir, m)
    w = m / "model.safetensors"
    if how == "truncated":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    elif how == "garbage":
        w.write_bytes(b"\x00\x01not a safetensors file" * 10)
    elif how == "empty":
        w.write_bytes(b"")
    elif how == "bad-config":
        (m / "config.json").write_text("{ not json")
    return m


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


BROKEN = ["truncated", "garbage", "empty", "bad-config"]


@pytest.mark.parametrize("how", BROKEN)
@pytest.mark.parametrize("command", ["sft", "rm", "generate"])
def test_a_broken_model_folder_is_one_line(tmp_path, tiny_model_dir, capsys, command, how):
    model = _broken_model(tmp_path, tiny_model_dir, how)
    data = tmp_path / "data.jsonl"
    if command == "sft":
        data.write_text('{"prompt": "What is the capital of Aland?", "response": "Aldor."}\n' * 8)
        argv = ["sft", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out")]
    elif command == "rm":
        data.write_text('{"prompt": "Capital of Aland?", "chosen": "Aldor.", "rejected": "no"}\n' * 8)
        argv = ["rm", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out")]
    else:
        argv = ["generate", "--model", str(model), "--prompt", "Hello"]
    before = _files(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "cannot load" in err[0] and str(model) in err[0], err
    if how in ("truncated", "garbage", "empty"):
        assert "model.safetensors is not a valid safetensors file" in err[0], err
    assert _files(tmp_path) == before  # nothing written, no *.partial or lock left


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "m", "--prompt", "x", "--temperature", "-1"], "--temperature: must be >= 0.0, got -1.0"),
    (["chat", "--model", "m", "--temperature", "-0.5"], "--temperature: must be >= 0.0, got -0.5"),
    (["eval", "--run", "r", "--temperature", "-2"], "--temperature: must be >= 0.0, got -2.0"),
    (["ppo", "--eval-temperature", "-1"], "--eval-temperature: must be >= 0.0, got -1.0"),
    (["run", "--seeds", "0"], "--seeds: expected a count"),
    (["run", "--seeds", "1,1"], "--seeds: expected distinct seeds"),
    (["label", "--prompt-mix", "uniform", "--run", "r"], "--prompt-mix: must be natural or families"),
])
def test_options_out_of_range_are_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_misspelled_stage_table_in_a_pipeline_config_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "p.toml"
    cfg.write_text('preset = "tiny"\n[pretrian]\nmax_steps = 3\n')
    assert main(["run", "--config", str(cfg), "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["igpt run: error: config: unknown stage table [pretrian] (did you mean [pretrain]?)"]
    assert not (tmp_path / "r").exists()


def test_run_into_a_file_or_with_an_unknown_preset_writes_nothing(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["run", "--preset", "tiny", "--run", str(f)]) == 2
    assert capsys.readouterr().err.strip() == f"igpt run: error: --run: {f} is a file, not a folder"
    assert main(["run", "--preset", "huge", "--run", str(tmp_path / "p")]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    # and a later run with a real preset in that folder is not refused
    assert main(["run", "--preset", "tiny", "--run", str(tmp_path / "p"), "--stop-after", "world"]) == 0


NOT_UTF8 = b'{"prompt": "caf\xe9", "response": "ok"}\n'


@pytest.mark.parametrize("command", ["sft", "rm", "generate", "pretrain", "tokenizer", "judge"])
def test_a_file_that_is_not_utf8_is_one_line_naming_line_and_byte(tmp_path, tiny_model_dir, tiny_world, capsys, command):
    from instructgpt.world import World

    pid = World.load(tiny_world).prompts("eval")[0]["id"].encode()
    bad = tmp_path / ("corpus.txt" if command in ("pretrain", "tokenizer") else "data.jsonl")
    first = b'{"prompt": "fine", "response": "fine", "chosen": "a", "rejected": "b", "id": "' + pid + b'"}\n'
    bad.write_bytes(first + NOT_UTF8
                    if command not in ("pretrain", "tokenizer") else b"A good first document.\n\nA second one, caf\xe9.\n")
    out = tmp_path / "out"
    argv = {
        "sft": ["sft", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(out)],
        "rm": ["rm", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(out)],
        "generate": ["generate", "--model", str(tiny_model_dir), "--prompts", str(bad)],
        "pretrain": ["pretrain", "--corpus", str(bad), "--tokenizer", str(tiny_model_dir), "--out", str(out), "--preset", "tiny"],
        "tokenizer": ["tokenizer", "--corpus", str(bad), "--out", str(out)],
        "judge": ["judge", "--world", str(tiny_world), "--in", str(bad), "--out", str(tmp_path / "scores.jsonl")],
    }[command]
    before = _files(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = 3 if command in ("pretrain", "tokenizer") else 2
    offset = len(b"A good first document.\n\nA second one, caf") if line == 3 else len(first + b'{"prompt": "caf')
    assert len(err) == 1 and f"{bad}:{line}: not UTF-8 text (byte offset {offset}" in err[0], err
    assert _files(tmp_path) == before


def test_judge_into_a_folder_leaves_nothing(tmp_path, tiny_world, capsys):
    from instructgpt.world import World

    rec = World.load(tiny_world).prompts("eval")[0]
    src = tmp_path / "in.jsonl"
    src.write_text(f'{{"id": "{rec["id"]}", "response": "An answer."}}\n')
    (tmp_path / "outdir").mkdir()
    before = _files(tmp_path)
    assert main(["judge", "--world", str(tiny_world), "--in", str(src), "--out", str(tmp_path / "outdir")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "outdir: cannot write" in err[0], err
    assert _files(tmp_path) == before


def test_pretraining_with_a_tokenizer_without_eos_is_one_line(tmp_path, tiny_tokenizer_dir, toy_corpus, capsys):
    import json

    tok = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, tok)
    cfg = json.loads((tok / "tokenizer_config.json").read_text())
    cfg["eos_token"] = None
    (tok / "tokenizer_config.json").write_text(json.dumps(cfg))
    before = _files(tmp_path)
    assert main(["pretrain", "--corpus", str(toy_corpus), "--tokenizer", str(tok), "--out", str(tmp_path / "out"), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no end-of-sequence token" in err[0], err
    assert _files(tmp_path) == before


def test_tokenizer_with_too_small_a_vocabulary_leaves_nothing(tmp_path, toy_corpus, capsys):
    before = _files(tmp_path)
    assert main(["tokenizer", "--corpus", str(toy_corpus), "--vocab-size", "5", "--out", str(tmp_path / "tok")]) == 2
    assert "--vocab-size: must be at least" in capsys.readouterr().err
    assert _files(tmp_path) == before


@pytest.mark.parametrize("spec", ["x=missing", "x=sub/missing"])
def test_eval_with_a_missing_model_leaves_nothing(tmp_path, tiny_world, tiny_model_dir, capsys, spec):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(tiny_world, run / "world")
    shutil.copytree(tiny_model_dir, run / "sft")
    (run / "sft" / "igpt_complete.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    before = _files(tmp_path)
    monkey = spec.replace("sub/", f"{tmp_path}/sub/")
    assert main(["eval", "--run", str(run), "--models", monkey]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("not found" in err[0] or "no such folder" in err[0]), err
    assert _files(tmp_path) == before


def test_a_missing_local_model_path_is_refused_at_once(tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    t0 = time.time()
    for ref in ("d/nope", "./nope", str(tmp_path / "nope")):
        assert main(["generate", "--model", ref, "--prompt", "hi"]) == 2
        assert f"cannot load tokenizer from {ref}: no such folder" in capsys.readouterr().err
    assert time.time() - t0 < 30  # not a hub lookup waiting for the network


def test_a_comparison_prompt_with_an_unknown_role_is_one_line(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": [{"role": "robot", "content": "hi"}], "chosen": "a", "rejected": "b"}\n')
    assert main(["rm", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"igpt rm: error: {data}:1: 'prompt' message 1 has role 'robot' (expected system, user or assistant)"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()



# ---------------------------------------------------------------------------------------------- every option
def _refused(argv, capsys, folder: Path, fragment: str) -> str:
    """Exit 2, one line 'igpt CMD: error: ...' holding ``fragment``, no traceback, nothing new in ``folder``."""
    before = _files(folder)
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"igpt {argv[0]}: error: ") and "Traceback" not in err[0], err
    assert fragment in err[0], (fragment, err)
    assert _files(folder) == before, argv
    return err[0]


def _option_rows():
    import dataclasses

    from instructgpt.cli import COMMANDS, _flag, _load
    from instructgpt.config import _base_type, field_types

    rows = []
    for command in COMMANDS:
        _, cls = _load(command)
        types_ = field_types(cls)
        for f in dataclasses.fields(cls):
            tp, _ = _base_type(types_[f.name])
            meta, flag = f.metadata, _flag(f.name)
            if "choices" in meta:
                rows.append((command, flag, "no-such-choice", f"{flag}: must be "))
            if tp not in (int, float):
                continue
            step = 1 if tp is int else 0.5
            for key, bad in (("ge", lambda b: b - step), ("gt", lambda b: b), ("le", lambda b: b + step), ("lt", lambda b: b)):
                if key in meta:
                    value = bad(meta[key])
                    rows.append((command, flag, str(int(value) if tp is int else float(value)), f"{flag}: must be "))
            rows.append((command, flag, "abc", f"{flag} must be {tp.__name__}, got 'abc'"))
            if tp is int:
                rows.append((command, flag, "2.5", f"{flag} must be int, got '2.5'"))
            else:
                rows.append((command, flag, "nan", f"{flag}: must be "))
    return rows


OPTION_ROWS = _option_rows()


@pytest.mark.parametrize("command, flag, value, message", OPTION_ROWS,
                         ids=[f"{c}{f}={v}" for c, f, v, _ in OPTION_ROWS])
def test_every_option_out_of_its_range_is_one_line(tmp_path, capsys, monkeypatch, command, flag, value, message):
    monkeypatch.chdir(tmp_path)
    line = _refused([command, flag, value], capsys, tmp_path, message)
    assert f"got {value!r}" in line or f"got {value}" in line or value == "nan"


def test_every_numeric_option_declares_its_range():
    """So that a new option gets its rows above: an int or float option with no range is an error in itself."""
    import dataclasses

    from instructgpt.cli import COMMANDS, _load
    from instructgpt.config import _base_type, field_types

    loose = []
    for command in COMMANDS:
        _, cls = _load(command)
        for f in dataclasses.fields(cls):
            if _base_type(field_types(cls)[f.name])[0] in (int, float) and not {"ge", "gt", "le", "lt"} & set(f.metadata):
                loose.append(f"{command} --{f.name}")
    assert loose == []


@pytest.mark.parametrize("command, body, message", [
    ("sft", "lr = -1.0\n", "'lr': must be > 0.0, got -1.0"),
    ("rm", "[rm]\nval_fraction = 0.9\n", "'val_fraction': must be >= 0.0 and <= 0.5, got 0.9"),
    ("label", "k = 100\n", "'k': must be >= 2 and <= 64, got 100"),
    ("ppo", "[ppo]\nkl_estimator = 'k9'\n", "'kl_estimator': must be k1, k2 or k3, got 'k9'"),
    ("pretrain", "precision = 'fp8'\n", "'precision': must be auto, fp32, bf16 or fp16, got 'fp8'"),
])
def test_a_config_file_value_out_of_range_names_the_file_and_key(tmp_path, capsys, monkeypatch, command, body, message):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    line = _refused([command, "--config", str(cfg)], capsys, tmp_path, message)
    assert str(cfg) in line


def test_a_pipeline_stage_table_value_out_of_range_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "p.toml"
    cfg.write_text('preset = "tiny"\n[ppo]\nkl_coef = -1\n')
    _refused(["run", "--config", str(cfg), "--run", str(tmp_path / "r")], capsys, tmp_path,
             "config [ppo]: 'kl_coef': must be >= 0.0, got -1.0")
    _refused(["run", "--preset", "tiny", "--run", str(tmp_path / "r"), "--stage-options", '{"sft": {"epochs": 0}}'], capsys,
             tmp_path, "config [sft]: 'epochs': must be >= 1, got 0")


def test_a_config_made_in_code_is_checked_too():
    from instructgpt.errors import UserError
    from instructgpt.stages.ppo import PPOConfig

    with pytest.raises(UserError, match=r"^--clip-range: must be > 0.0 and <= 10.0, got 0.0$"):
        PPOConfig(clip_range=0.0)


# ---------------------------------------------------------------------------------------------- every input format
_GZ = __import__("gzip").compress(b'{"prompt": "x", "response": "y"}\n' * 100)[:30]
_OK_SFT = '{"prompt": "x", "response": "y"}\n' * 4

# (id, command, input file name, its bytes, what the one line must say after "<file>:<line>: " or "<file>")
FILE_ROWS = [
    ("sft-not-json", "sft", "d.jsonl", b"not json\n", ":1: not valid JSON (Expecting value at column 1)"),
    ("sft-array", "sft", "d.jsonl", b"[1, 2]\n", ":1: expected a JSON object, got list"),
    ("sft-no-response", "sft", "d.jsonl", b'{"prompt": "x"}\n', ":1: unknown record format (keys: prompt)"),
    ("sft-prompt-int", "sft", "d.jsonl", b'{"prompt": 5, "response": "a"}\n', ":1: prompt/response format needs string fields"),
    ("sft-response-list", "sft", "d.jsonl", b'{"prompt": "x", "response": ["a"]}\n', ":1: prompt/response format needs string"),
    ("sft-nan", "sft", "d.jsonl", b'{"prompt": NaN, "response": "y"}\n', ":1: prompt/response format needs string fields"),
    ("sft-messages-str", "sft", "d.jsonl", b'{"messages": "hi"}\n', ":1: 'messages' must be a list"),
    ("sft-messages-empty", "sft", "d.jsonl", b'{"messages": []}\n', ":1: 'messages' is an empty conversation"),
    ("sft-role-robot", "sft", "d.jsonl",
     b'{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}\n',
     ":1: message 1 has role 'robot' (expected system, user or assistant)"),
    ("sft-no-assistant", "sft", "d.jsonl", b'{"messages": [{"role": "user", "content": "x"}]}\n',
     ":1: the conversation must end with an assistant message"),
    ("sft-two-users", "sft", "d.jsonl",
     b'{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}\n',
     ":1: message 2 is a user message where a assistant message belongs"),
    ("sft-system-alone", "sft", "d.jsonl", b'{"messages": [{"role": "system", "content": "x"}]}\n',
     ":1: a system message alone is not a conversation"),
    ("sft-no-content", "sft", "d.jsonl", b'{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}\n',
     ":1: message 1 (user) needs a string 'content'"),
    ("sft-content-int", "sft", "d.jsonl",
     b'{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}\n',
     ":1: message 1 (user) needs a string 'content'"),
    ("sft-message-not-object", "sft", "d.jsonl", b'{"messages": ["hi", "there"]}\n', ":1: message 1 is not an object"),
    ("sft-alpaca-int", "sft", "d.jsonl", b'{"instruction": 3, "output": "x"}\n', ":1: Alpaca format needs string fields"),
    ("sft-unknown-format", "sft", "d.jsonl", b'{"question": "x", "answer": "y"}\n', ":1: unknown record format"),
    ("sft-empty-file", "sft", "d.jsonl", b"", ": holds no demonstrations"),
    ("sft-blank-lines", "sft", "d.jsonl", b"\n\n  \n", ": holds no demonstrations"),
    ("sft-second-line-bad", "sft", "d.jsonl", b'{"prompt": "x", "response": "y"}\n{"prompt": "x", "response": "y"\n',
     ":2: not valid JSON"),
    ("sft-gz-truncated", "sft", "d.jsonl.gz", _GZ, ": cannot read: Compressed file ended"),
    ("sft-nested-deep", "sft", "d.jsonl", b'{"prompt": ' + b"[" * 100000 + b"]" * 100000 + b"}\n",
     ":1: not valid JSON (nested too deeply)"),
    ("sft-bom-bad-json", "sft", "d.jsonl", b'\xef\xbb\xbf{"prompt": "x", "response": }\n', ":1: not valid JSON"),
    ("sft-latin1", "sft", "d.jsonl", b'{"prompt": "caf\xe9", "response": "y"}\n', ":1: not UTF-8 text (byte offset 15"),
    ("rm-not-json", "rm", "d.jsonl", b'{"prompt": "x", "chosen": "a", "rejected": \n', ":1: not valid JSON"),
    ("rm-neither-shape", "rm", "d.jsonl", b'{"prompt": "x", "answer": "a"}\n', ":1: expected 'responses' and 'ranking'"),
    ("rm-no-rejected", "rm", "d.jsonl", b'{"prompt": "x", "chosen": "a"}\n', ":1: missing 'rejected'"),
    ("rm-no-prompt-ranked", "rm", "d.jsonl", b'{"responses": ["a", "b"], "ranking": [0, 1]}\n', ":1: missing 'prompt'"),
    ("rm-chosen-int", "rm", "d.jsonl", b'{"prompt": "x", "chosen": 1, "rejected": "b"}\n',
     ":1: 'chosen' must be a string or a non-empty list of chat messages"),
    ("rm-chosen-messages-user", "rm", "d.jsonl",
     b'{"prompt": "x", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}\n',
     ":1: 'chosen' messages must end with an assistant turn"),
    ("rm-responses-str", "rm", "d.jsonl", b'{"prompt": "x", "responses": "ab", "ranking": [0, 1]}\n',
     ":1: 'responses' must be a list of strings"),
    ("rm-responses-int", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", 2], "ranking": [0, 1]}\n',
     ":1: 'responses' must be a list of strings"),
    ("rm-k1", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a"], "ranking": [0]}\n', ":1: a ranking needs K >= 2"),
    ("rm-no-ranking", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", "b"]}\n', ":1: missing 'ranking'"),
    ("rm-ranking-dup", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", "b", "c"], "ranking": [0, 0, 1]}\n',
     ":1: ranking [[0], [0], [1]] is not a permutation of the 3 response indices"),
    ("rm-ranking-range", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", "b"], "ranking": [0, 5]}\n',
     ":1: ranking [[0], [5]] is not a permutation"),
    ("rm-ranking-negative", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", "b"], "ranking": [-1, 0]}\n',
     ":1: ranking"),
    ("rm-ranking-str", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", "b"], "ranking": "01"}\n',
     ":1: ranking must be a non-empty list of tiers"),
    ("rm-ranking-short", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", "b", "c"], "ranking": [0, 1]}\n',
     ":1: ranking [[0], [1]] is not a permutation"),
    ("rm-hh-no-assistant", "rm", "d.jsonl", b'{"chosen": "Human: hi", "rejected": "Human: yo"}\n',
     ":1: no 'prompt' field and no"),
    ("rm-hh-int", "rm", "d.jsonl", b'{"chosen": 1, "rejected": 2}\n',
     ":1: without 'prompt', 'chosen' and 'rejected' must be full dialogue strings"),
    ("rm-prompt-int", "rm", "d.jsonl", b'{"prompt": 3, "chosen": "a", "rejected": "b"}\n',
     ":1: 'prompt' must be a string or a non-empty list of chat messages"),
    ("rm-prompt-ends-with-assistant", "rm", "d.jsonl",
     b'{"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}\n',
     ":1: 'prompt' message 1 is a assistant message where a user message belongs"),
    ("rm-prompt-answered", "rm", "d.jsonl",
     b'{"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "chosen": "a", '
     b'"rejected": "b"}\n', ":1: 'prompt' must end with a user message"),
    ("rm-labeler-int", "rm", "d.jsonl", b'{"prompt": "x", "chosen": "a", "rejected": "b", "labeler": 5}\n',
     ":1: 'labeler' must be a string"),
    ("rm-all-identical", "rm", "d.jsonl", b'{"prompt": "x", "chosen": "a", "rejected": "a"}\n' * 3,
     " (3 x chosen identical to rejected"),
    ("rm-all-identical-ranked", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", "a"], "ranking": [0, 1]}\n',
     " (1 x all responses tied or identical (no strict pair)"),
    ("rm-all-tied", "rm", "d.jsonl", b'{"prompt": "x", "responses": ["a", "b"], "ranking": [[0, 1]]}\n',
     " (1 x all responses tied or identical"),
    ("rm-empty-file", "rm", "d.jsonl", b"", " (nothing skipped)"),
    ("rm-sqlite-garbage", "rm", "d.sqlite", b"this is not a database" * 20,
     ": cannot open the comparison store: file is not a database"),
    ("rm-latin1", "rm", "d.jsonl", b'{"prompt": "x", "chosen": "\xe9", "rejected": "b"}\n', ":1: not UTF-8 text"),
    ("gen-not-json", "generate", "p.jsonl", b'{"prompt": \n', ":1: not valid JSON"),
    ("gen-no-prompt", "generate", "p.jsonl", b'{"text": "x"}\n', ':1: expected {"prompt": text} or {"messages": [...]}'),
    ("gen-prompt-int", "generate", "p.jsonl", b'{"prompt": 1}\n', ':1: expected {"prompt": text}'),
    ("gen-message-no-content", "generate", "p.jsonl", b'{"messages": [{"role": "user"}]}\n',
     ":1: message 1 (user) needs a string 'content'"),
    ("gen-messages-answered-twice", "generate", "p.jsonl",  # a demonstration's prompt is what comes before its answer
     b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "assistant", "content": "z"}]}\n',
     ":1: 'messages' must end with a user message"),
    ("gen-empty", "generate", "p.jsonl", b"", ": holds no prompts"),
    ("gen-latin1", "generate", "p.jsonl", b'{"prompt": "\xe9"}\n', ":1: not UTF-8 text"),
    ("ppo-prompts-bad", "ppo", "p.jsonl", b'{"prompt": \n', ":1: not valid JSON"),
    ("ppo-prompts-no-prompt", "ppo", "p.jsonl", b'{"x": 1}\n', ':1: expected {"prompt": text}'),
    ("ppo-prompts-empty", "ppo", "p.jsonl", b"\n", ": holds no prompts"),
    ("pre-empty-corpus", "pretrain", "c.txt", b"", " holds no documents"),
    ("pre-jsonl-no-text", "pretrain", "c.jsonl", b'{"body": "x"}\n', ":1: expected an object with a string field 'text'"),
    ("pre-jsonl-text-int", "pretrain", "c.jsonl", b'{"text": 5}\n', ":1: expected an object with a string field 'text'"),
    ("pre-jsonl-bad", "pretrain", "c.jsonl", b'{"text": "a"}\n{oops}\n', ":2: not valid JSON"),
    ("tok-empty-corpus", "tokenizer", "c.txt", b"", " holds no documents"),
    ("tok-jsonl-bad", "tokenizer", "c.jsonl", b'{"text": \n', ":1: not valid JSON"),
    ("judge-not-json", "judge", "in.jsonl", b'{"id": \n', ":1: not valid JSON"),
    ("judge-no-id", "judge", "in.jsonl", b'{"response": "x"}\n', ":1: missing field 'id'"),
    ("judge-unknown-id", "judge", "in.jsonl", b'{"id": "no-such-prompt", "response": "x"}\n',
     ":1: unknown prompt id 'no-such-prompt'"),
    ("judge-response-int", "judge", "in.jsonl", b'{"id": "ID", "response": 3}\n', ":1: field 'response' must be a string"),
    ("judge-empty", "judge", "in.jsonl", b"", ": no lines to score"),
    ("cfg-toml-syntax", "sft", "c.toml", b"lr = = 1\n", ": cannot parse config: Invalid value (at line 1, column 6)"),
    ("cfg-yaml-syntax", "sft", "c.yaml", b"lr: [1\n", ": cannot parse config"),
    ("cfg-json-syntax", "sft", "c.json", b'{"lr": }\n', ": cannot parse config"),
    ("cfg-unknown-key", "sft", "c.toml", b"lrr = 1\n", ": unknown key 'lrr' for stage 'sft' (did you mean 'lr'?)"),
    ("cfg-wrong-type", "sft", "c.toml", b'lr = "fast"\n', ": 'lr' must be float, got 'fast'"),
    ("cfg-list-for-int", "sft", "c.toml", b"epochs = [1, 2]\n", ": 'epochs' must be int"),
    ("cfg-not-table", "sft", "c.yaml", b"- 1\n- 2\n", ": a config file must hold a table of keys"),
    ("cfg-bad-suffix", "sft", "c.ini", b"lr=1\n", ": config files must end in .toml, .yaml, .yml or .json"),
    ("cfg-latin1", "sft", "c.toml", b"lr = 1 # caf\xe9\n", ":1: not UTF-8 text"),
    ("cfg-run-unknown-table", "run", "c.toml", b"[pretrian]\nmax_steps = 3\n", "unknown stage table [pretrian]"),
    ("cfg-run-table-unknown-key", "run", "c.toml", b"[ppo]\nkl_cof = 1\n", "unknown key 'kl_cof' for stage 'ppo'"),
    ("serve-tokens-bad-json", "serve", "t.json", b'{"tokens": [\n', ":2: tokens file is not valid JSON"),
    ("serve-tokens-short", "serve", "t.json", b'{"tokens": [{"name": "a", "role": "labeler", "token": "x"}]}\n',
     ": access token for 'a' must be a string of at least 16 characters"),
    ("serve-tokens-role", "serve", "t.json",
     b'{"tokens": [{"name": "a", "role": "god", "token": "0123456789abcdef0123"}]}\n', ": access token for 'a': role must be"),
]


@pytest.mark.parametrize("case, command, name, content, message", FILE_ROWS, ids=[r[0] for r in FILE_ROWS])
def test_every_input_format_gets_one_line(tmp_path, tiny_model_dir, tiny_world, capsys, case, command, name, content, message):
    from instructgpt.world import World

    if b'"ID"' in content:
        content = content.replace(b'"ID"', ('"' + World.load(tiny_world).prompts("eval")[0]["id"] + '"').encode())
    f = tmp_path / name
    f.write_bytes(content)
    model, out = str(tiny_model_dir), str(tmp_path / "out")
    ok = tmp_path / "ok.jsonl"
    ok.write_text(_OK_SFT)
    if case.startswith("cfg-") and command == "sft":
        argv = ["sft", "--config", str(f), "--model", model, "--data", str(ok), "--out", out]
    else:
        argv = {
            "sft": ["sft", "--model", model, "--data", str(f), "--out", out],
            "rm": ["rm", "--model", model, "--data", str(f), "--out", out],
            "generate": ["generate", "--model", model, "--prompts", str(f)],
            "ppo": ["ppo", "--policy", model, "--reward-model", model, "--world", str(tiny_world), "--prompts", str(f),
                    "--out", out, "--preset", "tiny"],
            "pretrain": ["pretrain", "--corpus", str(f), "--tokenizer", model, "--out", out, "--preset", "tiny"],
            "tokenizer": ["tokenizer", "--corpus", str(f), "--out", out],
            "judge": ["judge", "--world", str(tiny_world), "--in", str(f), "--out", str(tmp_path / "scores.jsonl")],
            "run": ["run", "--config", str(f), "--run", str(tmp_path / "r")],
            "serve": ["serve", "--run", str(tmp_path), "--tokens-file", str(f), "--port", "1"],
        }[command]
    if command == "serve":
        from instructgpt.store import ComparisonStore

        (tmp_path / "comparisons").mkdir()
        ComparisonStore(tmp_path / "comparisons" / "comparisons.sqlite").close()
    line = _refused(argv, capsys, tmp_path, message)
    assert str(f) in line or (command == "run" and "[p" in line)  # the file is named (a pipeline file: the table)


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs a folder nobody may write, even root: /sys")
@pytest.mark.parametrize("command", ["sft", "rm", "pretrain", "label", "tokenizer", "world", "eval", "judge"])
def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, tiny_model_dir, tiny_world, toy_corpus, capsys,
                                                             command):
    out = f"/sys/igpt-test-{command}"
    model = str(tiny_model_dir)
    data = tmp_path / "d.jsonl"
    run = tmp_path / "run"
    if command == "sft":
        data.write_text(_OK_SFT)
    elif command == "rm":
        data.write_text('{"prompt": "x", "chosen": "a", "rejected": "b"}\n' * 4)
    elif command == "judge":
        from instructgpt.world import World

        data.write_text(f'{{"id": "{World.load(tiny_world).prompts("eval")[0]["id"]}", "response": "An answer."}}\n')
    elif command in ("label", "eval"):
        run.mkdir()
        shutil.copytree(tiny_world, run / "world")
        shutil.copytree(tiny_model_dir, run / "sft")
        (run / "sft" / "igpt_complete.json").write_text("{}")
    argv = {
        "sft": ["sft", "--model", model, "--data", str(data), "--out", out],
        "rm": ["rm", "--model", model, "--data", str(data), "--out", out],
        "pretrain": ["pretrain", "--corpus", str(toy_corpus), "--tokenizer", model, "--out", out, "--preset", "tiny"],
        "label": ["label", "--run", str(run), "--out", out, "--models", "sft@1.0,sft@0.7"],
        "tokenizer": ["tokenizer", "--corpus", str(toy_corpus), "--out", out],
        "world": ["world", "--out", out, "--size", "tiny"],
        "eval": ["eval", "--run", str(run), "--out", out],
        "judge": ["judge", "--world", str(tiny_world), "--in", str(data), "--out", out + ".jsonl"],
    }[command]
    line = _refused(argv, capsys, tmp_path, "/sys/igpt-test-")
    assert not any(p.name.startswith("igpt-test-") for p in Path("/sys").iterdir())
    assert "Operation not permitted" in line or "Permission denied" in line or "cannot" in line, line
