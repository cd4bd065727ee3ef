"""Bad input gets one clear line naming the file or option, a non-zero exit, no traceback and nothing left behind.

One row per case; a new command or format adds rows.
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
    (["generate", "--model", "m", "--prompt", "x", "--temperature", "-1"], "--temperature must be >= 0.0, got -1.0"),
    (["chat", "--model", "m", "--temperature", "-0.5"], "--temperature must be >= 0.0, got -0.5"),
    (["eval", "--run", "r", "--temperature", "-2"], "--temperature must be >= 0.0, got -2.0"),
    (["ppo", "--eval-temperature", "-1"], "--eval-temperature must be >= 0.0, got -1.0"),
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
    assert err == [f"igpt rm: error: {data}:1: 'prompt' message 1 has role 'robot' (expected system, user, assistant)"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
