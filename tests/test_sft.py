"""Step 2: rendering and the assistant-only loss mask, demonstration formats and their errors, SFT training and resume."""

from __future__ import annotations

import json

import pytest

from instructgpt.data.chat import load_demonstrations, read_demonstrations, render, render_prompt
from instructgpt.errors import UserError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from instructgpt.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


SYSTEM = {"role": "system", "content": "Be brief."}
TURNS = [
    {"role": "user", "content": "What is the capital of Alba?"},
    {"role": "assistant", "content": "Mira."},
    {"role": "user", "content": "And of Borin? Say Mira if unsure."},  # the first answer's text also appears in a user turn
    {"role": "assistant", "content": "The capital of Borin is Toln."},
]


def _masked_runs(tok, ids, mask) -> list[str]:
    runs, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


@pytest.mark.parametrize("messages,answers", [
    (TURNS[:2], ["Mira.<|end|>"]),
    ([SYSTEM, *TURNS[:2]], ["Mira.<|end|>"]),
    ([SYSTEM, *TURNS], ["Mira.<|end|>", "The capital of Borin is Toln.<|end|>"]),
    ([*TURNS[:1], {"role": "assistant", "content": ""}], ["<|end|>"]),
])
def test_loss_mask_covers_exactly_the_assistant_tokens(tok, messages, answers):
    ids, mask = render(tok, messages)
    assert len(ids) == len(mask) and set(mask) <= {0, 1}
    assert _masked_runs(tok, ids, mask) == answers
    assert mask[-1] == 1  # the closing <|end|> of the last reply (also of an empty one) is learned
    # everything outside the mask is the template and the user/system text
    outside = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "Toln" not in outside and outside.startswith("<|system|>Be brief." if messages[0] is SYSTEM else "<|user|>")


def test_chat_template_round_trip(tok):
    msgs = [SYSTEM, *TURNS]
    ids, _ = render(tok, msgs)
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|system|>Be brief.<|end|><|user|>What is the capital of Alba?<|end|><|assistant|>Mira.<|end|>" \
                   "<|user|>And of Borin? Say Mira if unsure.<|end|><|assistant|>The capital of Borin is Toln.<|end|>"
    assert ids == list(tok.apply_chat_template(msgs, tokenize=True, return_dict=False))
    assert tok.decode(ids) == text
    # what the sampler is given for a reply is exactly the training prefix before that reply
    prompt = render_prompt(tok, msgs[:-1])
    assert ids[: len(prompt)] == prompt and tok.decode(ids[len(prompt):]) == "The capital of Borin is Toln.<|end|>"


def test_mask_from_offsets_works_for_another_template(tok):
    """A ChatML-style template with newlines around the content: the mask still finds the contents and the closing token."""
    import copy

    chatml = copy.deepcopy(tok)
    chatml.chat_template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
                            "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
    ids, mask = render(chatml, [SYSTEM, *TURNS])
    assert _masked_runs(chatml, ids, mask) == ["Mira.<|end|>", "The capital of Borin is Toln.<|end|>"]


def test_each_format_loads(tmp_path):
    f = tmp_path / "mixed.jsonl"
    rows = [
        {"messages": [SYSTEM, *TURNS]},
        {"prompt": "Hi", "response": "Hello."},
        {"prompt": "Hi", "completion": "Hey.", "system": "Be kind."},
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say yes.", "output": "Yes."},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    recs = read_demonstrations(f)
    assert [len(r["messages"]) for r in recs] == [5, 2, 3, 2, 2, 2]
    assert recs[1]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert recs[2]["messages"][0] == {"role": "system", "content": "Be kind."}
    assert recs[3]["messages"][0]["content"] == "Add the numbers.\n\n2 and 3" and recs[3]["messages"][1]["content"] == "5"
    assert recs[5]["messages"][1] == {"role": "assistant", "content": "Hello!"}
    assert recs[0]["source"].endswith("mixed.jsonl:1")
    # a fixed format, and a folder of files
    g = tmp_path / "alpaca.jsonl"
    g.write_text(json.dumps(rows[3]) + "\n")
    assert len(read_demonstrations(g, "alpaca")) == 1
    with pytest.raises(UserError, match=r"alpaca.jsonl:1: .*chat format needs a 'messages' list"):
        read_demonstrations(g, "chat")
    assert len(load_demonstrations(tmp_path)) == 7


BAD_LINES = {
    "{not json": "not valid JSON",
    '{"messages": []}': "empty conversation",
    '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}': "role 'robot'",
    '{"messages": [{"role": "user", "content": "x"}]}': "must end with an assistant message",
    '{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}': "message 2 is a user message where a assistant",
    '{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}': "needs a string 'content'",
    '{"messages": [{"role": "system", "content": "s"}]}': "system message alone",
    '{"prompt": "x"}': "unknown record format",
    '{"prompt": "x", "response": 5}': "string fields 'prompt' and 'response'",
    '{"instruction": "x", "output": null}': "string fields 'instruction' and 'output'",
    '["a list"]': "expected a JSON object",
}


@pytest.mark.parametrize("line,msg", list(BAD_LINES.items()))
def test_malformed_lines_give_one_line_error_with_file_and_line(tmp_path, line, msg):
    g = tmp_path / "bad.jsonl"
    g.write_text(json.dumps({"prompt": "ok", "response": "ok"}) + "\n\n" + line + "\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:3: ") as e:
        read_demonstrations(g)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_missing_or_empty_files_and_unknown_format(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_demonstrations(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no demonstrations"):
        read_demonstrations(tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="--format"):
        read_demonstrations(tmp_path / "empty.jsonl", "csv")


def test_length_grouped_batches_respect_the_token_budget_and_cover_every_example():
    from instructgpt.stages.sft import length_grouped_batches

    lengths = [5 + (i * 37) % 60 for i in range(300)]
    a = length_grouped_batches(lengths, 256, seed=0, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(300))
    assert all(max(lengths[i] for i in b) * len(b) <= 256 for b in a)
    assert a == length_grouped_batches(lengths, 256, seed=0, epoch=0) != length_grouped_batches(lengths, 256, seed=0, epoch=1)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in a)
    assert padded < 1.15 * sum(lengths)  # grouping keeps padding small


# ---------------------------------------------------------------------------------------------- training
def _demos(path, n=160, long=0):
    from conftest import CAPITALS, NAMES

    rows = [{"prompt": f"What is the capital of {NAMES[i % 8]}?", "response": f"The capital of {NAMES[i % 8]} is {CAPITALS[i % 8]}."}
            for i in range(n)]
    rows += [{"prompt": "long " * 200, "response": "x"}] * long
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model=None, data=None, out=None, **kw):
    from instructgpt.stages.sft import SFTConfig

    base = dict(model=str(model), data=str(data), out=str(out), epochs=2, batch_tokens=384, lr=3e-3, warmup_steps=2, val_fraction=0.15,
                dropout=0.1, samples=1, max_new_tokens=8, checkpoint_every=0, progress=False, tensorboard=False)
    return SFTConfig(**{**base, **kw})


def test_sft_lowers_validation_loss_and_writes_a_model_folder(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructgpt.stages.sft import run

    data = _demos(tmp_path / "d.jsonl", long=2)
    out = run(_cfg(tiny_model_dir, data, tmp_path / "sft"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(vals) == 2 and vals[-1] < rows[0]["initial_val_loss"] - 0.5
    assert rows[0]["dropped_overlong"] == 2 and "dropped 2 demonstrations longer than" in capsys.readouterr().err
    assert len((out / "dropped.jsonl").read_text().splitlines()) == 2
    info = json.loads((out / "igpt_complete.json").read_text())
    assert info["dropped_overlong"] == 2 and info["best_epoch"] in (1, 2) and info["val_loss"] == pytest.approx(min(vals), abs=1e-5)
    AutoModelForCausalLM.from_pretrained(str(out))
    assert AutoTokenizer.from_pretrained(str(out)).chat_template
    assert (out / "igpt_config.yaml").is_file() and (out / "samples.jsonl").is_file()
    assert not (out / "checkpoint").exists() and not (out / "best").exists()


def test_sft_with_pretraining_mix(tiny_model_dir, toy_corpus, tmp_path):
    from instructgpt.stages.sft import run

    data = _demos(tmp_path / "d.jsonl", n=60)
    out = run(_cfg(tiny_model_dir, data, tmp_path / "sft", epochs=1, ptx_fraction=0.2, ptx_corpus=str(toy_corpus), ptx_seq_len=32,
                   select_by="last", samples=0))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert steps and all(r["ptx_loss"] > 0 and 0.05 < r["ptx_token_share"] < 0.5 for r in steps[:: rows[0]["ptx_every"]])
    share = sum(r.get("ptx_token_share", 0) for r in steps) / len(steps)
    assert 0.1 < share < 0.3  # about the asked 0.2 of the loss tokens, on average


def test_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from instructgpt.stages.sft import run

    data = _demos(tmp_path / "d.jsonl", n=80)
    kw = dict(select_by="last", samples=0, epochs=2, batch_tokens=256)
    a = run(_cfg(tiny_model_dir, data, tmp_path / "a", **kw))
    part = run(_cfg(tiny_model_dir, data, tmp_path / "b", stop_after=3, **kw))
    assert part.name == "b.partial" and (part / "checkpoint").is_dir()
    with pytest.raises(UserError, match="--resume"):
        run(_cfg(tiny_model_dir, data, tmp_path / "b", **kw))
    b = run(_cfg(tiny_model_dir, data, tmp_path / "b", resume=True, **kw))
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    la = [json.loads(r) for r in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(r) for r in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("loss") for r in la] == [r.get("loss") for r in lb]


def test_select_by_reward_keeps_the_best_scoring_epoch(tiny_model_dir, tmp_path):
    """A stand-in reward model (a random 1-label sequence classifier with a reward_bias) scores sampled answers."""
    from transformers import AutoModelForSequenceClassification

    from instructgpt.stages.sft import run
    from instructgpt.tokenizer import load_tokenizer

    rm_dir = tmp_path / "rm"
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    rm.config.reward_bias = 0.5
    rm.save_pretrained(str(rm_dir))
    load_tokenizer(tiny_model_dir).save_pretrained(str(rm_dir))
    data = _demos(tmp_path / "d.jsonl", n=60)
    out = run(_cfg(tiny_model_dir, data, tmp_path / "sft", select_by="reward", reward_model=str(rm_dir), select_prompts=4, samples=0))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["val_reward"] for r in rows if "val_reward" in r]
    info = json.loads((out / "igpt_complete.json").read_text())
    assert len(rewards) == 2 and info["best_metric"] == pytest.approx(max(rewards), abs=1e-5) and info["best_epoch"] == 1 + rewards.index(max(rewards))


def test_bad_options_are_one_line_errors(tiny_model_dir, tmp_path):
    from instructgpt.stages.sft import run

    data = _demos(tmp_path / "d.jsonl", n=20)
    for kw, msg in [(dict(select_by="reward"), "--reward-model"), (dict(select_by="best"), "--select-by"),
                    (dict(format="csv"), "--format"), (dict(max_len=8), "no training demonstration fits --max-len 8"),
                    (dict(data=str(tmp_path / "missing.jsonl")), "not found"), (dict(epochs=0), "--epochs")]:
        with pytest.raises(UserError, match=msg):
            run(_cfg(tiny_model_dir, kw.pop("data", data), tmp_path / "x", **kw))
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(tiny_model_dir, toy_corpus, tmp_path):
    """2 processes x 1 micro-batch per step == 1 process x 2 accumulated micro-batches (token-mean loss over the step),
    with an odd number of micro-batches (a rank runs a zero-weight batch) and the pretraining mix."""
    import torch
    from safetensors.torch import load_file

    from conftest import run_torchrun
    from instructgpt.stages.sft import run

    data = _demos(tmp_path / "d.jsonl", n=52)  # 27 training examples in 7 micro-batches of <= 128 tokens: the last step has one
    kw = dict(model=str(tiny_model_dir), data=str(data), epochs=1, batch_tokens=128, lr=3e-3, warmup_steps=1, val_fraction=0.15,
              dropout=0.0, samples=0, checkpoint_every=0, progress=False, tensorboard=False, select_by="last", ptx_fraction=0.26,
              ptx_corpus=str(toy_corpus), ptx_seq_len=16, cache_dir=str(tmp_path / "cache"))
    single = run(_cfg(out=tmp_path / "single", grad_accum=2, **kw))
    script = tmp_path / "ddp_sft.py"
    script.write_text("import sys, json\nfrom instructgpt.stages.sft import SFTConfig, run\nrun(SFTConfig(**json.loads(sys.argv[1])))\n")
    run_torchrun(script, 29541, json.dumps({**kw, "out": str(tmp_path / "ddp")}))
    a, b = load_file(str(single / "model.safetensors")), load_file(str(tmp_path / "ddp" / "model.safetensors"))
    la = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert la[0]["ptx_rows"] == lb[0]["ptx_rows"] == 2 and la[0]["ptx_every"] == lb[0]["ptx_every"] == 1  # the same pretraining rows, one per process
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert [round(x["loss"], 4) for x in la if "loss" in x] == [round(x["loss"], 4) for x in lb if "loss" in x]
