"""`igpt chat`: piped input gets one reply per line; /reset, /system, /quit; history kept and trimmed to the context."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


pytestmark = pytest.mark.usefixtures("one_thread")


def _chat(args, stdin: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model: one thread is fastest, and steady on a busy machine
    return subprocess.run([sys.executable, "-m", "instructgpt.cli", "chat", *args], input=stdin, capture_output=True, text=True,
                          timeout=180, env=env)


def test_chat_answers_piped_lines_and_handles_commands(tiny_model_dir):
    r = _chat(["--model", str(tiny_model_dir), "--max-new-tokens", "5", "--temperature", "0"],
              "Hello there.\n\n/system Be brief.\nHow are you?\n/reset\n/nope\n/help\nHello there.\n/quit\nnever answered\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")[:-1]
    assert lines[1] == "(system message set: Be brief.; conversation reset)"
    assert lines[3] == "(conversation reset)"
    assert lines[4].startswith("(unknown command /nope;") and lines[5].startswith("(commands: /reset")
    assert len(lines) == 7  # three replies (one line each, however empty) and four notices; nothing after /quit
    assert lines[0] == lines[6]  # greedy, and /reset forgot the conversation: the same first turn gives the same reply
    assert "you>" not in r.stdout  # no prompt when stdin is not a terminal


@pytest.mark.parametrize("errors", ["surrogateescape", "strict"])
def test_piped_input_that_is_not_utf8_is_one_line(tiny_model_dir, errors):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": f"utf-8:{errors}"}
    r = subprocess.run([sys.executable, "-m", "instructgpt.cli", "chat", "--model", str(tiny_model_dir), "--max-new-tokens",
                        "3"], input=b"Hello.\ncaf\xe9?\n", capture_output=True, timeout=180, env=env)
    assert r.returncode == 2
    err = r.stderr.decode().strip().splitlines()
    assert err == ["igpt chat: error: standard input line 2: not UTF-8 text (byte 4 of the line)"], err


def test_chat_ends_at_end_of_input_and_reports_bad_model(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import io

    from instructgpt.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n"))
    assert main(["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # one reply, then the end of input ends the chat
    assert main(["chat", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("igpt chat: error:") and len(err.strip().splitlines()) == 1
    assert main(["chat", "--run", str(tmp_path)]) == 2 and "holds no finished model" in capsys.readouterr().err


def test_history_is_kept_and_trimmed_to_the_context(tiny_tokenizer_dir):
    from instructgpt.sampling import encode_prompt
    from instructgpt.stages.chat import fit_context
    from instructgpt.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir)
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(6):
        msgs += [{"role": "user", "content": f"Question {i} about the capital of Alba?"}, {"role": "assistant", "content": f"Answer {i}."}]
    msgs.append({"role": "user", "content": "Last question?"})
    assert fit_context(tok, msgs, 10_000) == msgs
    budget = len(encode_prompt(tok, msgs)) // 2
    kept = fit_context(tok, msgs, budget)
    assert len(encode_prompt(tok, kept)) <= budget
    assert kept[0] == msgs[0] and kept[-1] == msgs[-1] and kept[1]["role"] == "user" and len(kept) < len(msgs)


def test_stream_chat_yields_the_reply_piece_by_piece(tiny_model_dir):
    from instructgpt.sampling import load_model, stream_chat

    model, tok = load_model(str(tiny_model_dir))
    pieces = list(stream_chat(model, tok, [{"role": "user", "content": "Hello"}], max_new_tokens=8, temperature=0.9, seed=3))
    again = list(stream_chat(model, tok, [{"role": "user", "content": "Hello"}], max_new_tokens=8, temperature=0.9, seed=3))
    assert pieces == again and all(isinstance(p, str) and p for p in pieces)
    assert "<|end|>" not in "".join(pieces)


@pytest.mark.parametrize("bad,msg", [(["--max-new-tokens", "0"], "--max-new-tokens"), (["--top-p", "2"], "--top-p")])
def test_bad_options(tiny_model_dir, bad, msg, capsys):
    from instructgpt.cli import main

    assert main(["chat", "--model", str(tiny_model_dir), *bad]) == 2 and msg in capsys.readouterr().err
