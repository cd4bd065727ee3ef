"""Reward model: the ranking loss, K-way vs pairwise inputs, preference-file parsing (HH included), bad input, the saved
folder loading through AutoModelForSequenceClassification, bias normalisation, exact resume."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest

from instructgpt.data.preferences import (
    Comparison, SkipReport, group_pairwise, parse_hh_dialogue, read_comparisons, shuffle_into_pairs, split_hh_pair,
)
from instructgpt.errors import UserError

DATA = Path(__file__).parent / "data"
HH_FULL = Path("/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz")


pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- the loss
def test_loss_equals_hand_computed_value():
    import torch

    from instructgpt.reward_model import ranking_loss

    # comparison A: K=3 ranked 0 > 1 > 2, rewards 1.0, 0.5, -0.2; comparison B: K=2, response 1 better, rewards 0.3, -0.1
    rewards = torch.tensor([1.0, 0.5, -0.2, 0.3, -0.1])
    pairs = torch.tensor([[0, 1], [0, 2], [1, 2], [4, 3]])
    group = torch.tensor([0, 0, 0, 1])
    loss, st = ranking_loss(rewards, pairs, group, 2)
    # -log sigmoid(d) = log(1 + e^-d):  A: d = 0.5, 1.2, 0.7 -> 0.474077, 0.263282, 0.403186, mean 0.380182
    #                                   B: d = -0.4 -> 0.913015;  loss = (0.380182 + 0.913015) / 2 = 0.646598
    assert float(loss) == pytest.approx(0.646598, abs=1e-5)
    a = sum(math.log1p(math.exp(-d)) for d in (0.5, 1.2, 0.7)) / 3
    assert float(loss) == pytest.approx((a + math.log1p(math.exp(0.4))) / 2, abs=1e-6)
    assert st["acc"] == pytest.approx(3 / 4) and st["pairs"] == 4


def test_ties_give_no_pairs():
    c = Comparison("p", ["a", "b", "c"], [[0, 1], [2]])
    assert sorted(c.pairs) == [(0, 2), (1, 2)]
    assert Comparison("p", ["a", "b", "c"], [[2], [0], [1]]).pairs == [(2, 0), (2, 1), (0, 1)]


def _loss_of(comparisons, model_dir):
    """The training loss of a list of comparisons under a fixed (untrained) reward model."""
    import torch

    from instructgpt.reward_model import collate, ranking_loss, raw_rewards
    from instructgpt.stages.reward import Encoder, build_reward_model
    from instructgpt.tokenizer import load_tokenizer

    tok = load_tokenizer(model_dir)
    model = build_reward_model(str(model_dir), tok, seed=0).eval()
    enc = Encoder(tok, 0)
    batch = collate([enc.comparison(c) for c in comparisons], tok.pad_token_id)
    with torch.no_grad():
        r = raw_rewards(model, batch.input_ids, batch.attention_mask)
        loss, _ = ranking_loss(r, batch.pairs, batch.pair_group, batch.n_groups)
    return float(loss), batch.input_ids.shape[0]


def test_kway_and_pairwise_inputs_agree(tmp_path, tiny_model_dir):
    from instructgpt.store import ComparisonStore

    store = ComparisonStore(tmp_path / "c.sqlite")
    store.add_prompt("p1", "What is the capital of Alba?")
    tid = store.add_task("p1", ["Mira.", "The capital of Alba is Mira.", "Toln", "I do not know."], task_key="t1")
    store.submit_ranking(tid, "alice", [[1], [0], [3], [2]])
    store.export_ranked(tmp_path / "ranked.jsonl")
    store.export_pairwise(tmp_path / "pairs.jsonl")
    store.close()

    ranked = read_comparisons(tmp_path / "ranked.jsonl")
    pairs = read_comparisons(tmp_path / "pairs.jsonl")
    assert len(ranked) == 1 and ranked[0].k == 4 and len(ranked[0].pairs) == 6
    assert len(pairs) == 6 and all(c.k == 2 for c in pairs)
    grouped = group_pairwise(pairs)
    assert len(grouped) == 1 and grouped[0].k == 4
    as_text = lambda c: sorted((c.responses[i], c.responses[j]) for i, j in c.pairs)  # noqa: E731
    assert as_text(grouped[0]) == as_text(ranked[0])
    assert grouped[0].ranking == [[grouped[0].responses.index(ranked[0].responses[i])] for (i,) in ranked[0].ranking]

    k_loss, k_rows = _loss_of(ranked, tiny_model_dir)
    g_loss, g_rows = _loss_of(grouped, tiny_model_dir)
    p_loss, p_rows = _loss_of(pairs, tiny_model_dir)  # six separate elements: the mean over pairs is the same number
    assert k_loss == pytest.approx(g_loss, abs=1e-6) and k_loss == pytest.approx(p_loss, abs=1e-6)
    assert (k_rows, g_rows, p_rows) == (4, 4, 12)  # one forward pass per response vs two per pair
    shuffled = shuffle_into_pairs(ranked)
    assert len(shuffled) == 6 and _loss_of(shuffled, tiny_model_dir)[0] == pytest.approx(k_loss, abs=1e-6)


# ---------------------------------------------------------------------------------------------- formats
def test_hh_format_parses_the_shared_sample():
    skips = SkipReport()
    comps = read_comparisons(DATA / "hh_sample.jsonl", skips=skips)
    assert len(comps) == 10
    assert skips.counts == {"empty response": 1, "HH dialogues differ before the last assistant turn": 1}
    assert skips.first["empty response"].endswith("hh_sample.jsonl:11")
    for c in comps:
        assert c.pairs == [(0, 1)] and all(r.strip() for r in c.responses)
        assert isinstance(c.prompt, list) and c.prompt[0]["role"] == "user" and c.prompt[-1]["role"] == "user"
        assert all("Human:" not in m["content"] and "Assistant:" not in m["content"] for m in c.prompt)
        assert not any("\n\nHuman:" in r or "\n\nAssistant:" in r for r in c.responses)
    multi = comps[9]
    assert [m["role"] for m in multi.prompt] == ["user", "assistant", "user"]
    assert comps[1].prompt == [{"role": "user", "content": "Is it possible to download a car?"}]
    assert comps[1].responses == ["I’m not sure what you mean. Can you clarify?", "I’m sorry, I don’t understand."]


@pytest.mark.skipif(not HH_FULL.is_file(), reason="shared HH file not present")
def test_hh_full_file_reads_with_reported_skips():
    skips = SkipReport()
    comps = read_comparisons(HH_FULL, skips=skips)
    assert len(comps) + skips.total == 2312
    assert skips.total < 20


def test_hh_helpers():
    msgs = parse_hh_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nAssistant: again\n\nHuman: bye")
    assert msgs == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello\n\nagain"},
                    {"role": "user", "content": "bye"}]
    p, a, b = split_hh_pair("\n\nHuman: q\n\nAssistant: yes", "\n\nHuman: q\n\nAssistant: no")
    assert p == [{"role": "user", "content": "q"}] and (a, b) == ("yes", "no")
    # the texts may diverge right after the marker (an empty-looking prefix of the answer)
    p, a, b = split_hh_pair("\n\nHuman: q\n\nAssistant: A", "\n\nHuman: q\n\nAssistant:B")
    assert (a, b) == ("A", "B")


def test_other_pairwise_shapes(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
        {"prompt": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}],
         "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "no"}]},
        {"prompt": "x", "responses": ["a", "b", "c"], "ranking": [2, 0, 1], "labeler": "bob", "task_id": 0,
         "split": "rm-heldout", "flags": {"pool": "heldout"}},
        "",
    ])
    comps = read_comparisons(f)
    assert [c.k for c in comps] == [2, 2, 3]
    assert comps[1].prompt[0]["role"] == "system" and comps[1].responses == ["hello", "no"]
    assert comps[2].pairs == [(2, 0), (2, 1), (0, 1)] and comps[2].labeler == "bob"
    assert (comps[2].task, comps[2].heldout, comps[2].pool) == ("0", True, "heldout") and not comps[0].heldout


BAD_LINES = [
    ('{"prompt": "x", "responses": ["a", "b"]', "not valid JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"prompt": "x", "responses": ["a", "b"]}', "missing 'ranking'"),
    ('{"prompt": "x", "responses": ["a"], "ranking": [0]}', "K >= 2"),
    ('{"prompt": "x", "responses": ["a", "b"], "ranking": [0, 0]}', "not a permutation"),
    ('{"prompt": "x", "responses": ["a", "b"], "ranking": [0, 2]}', "not a permutation"),
    ('{"prompt": "x", "responses": "ab", "ranking": [0, 1]}', "list of strings"),
    ('{"responses": ["a", "b"], "ranking": [0, 1]}', "missing 'prompt'"),
    ('{"prompt": 3, "chosen": "a", "rejected": "b"}', "'prompt' must be"),
    ('{"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}', "'prompt' message 1 (user) needs a string 'content'"),
    ('{"prompt": "x", "chosen": "a"}', "missing 'rejected'"),
    ('{"chosen": "a", "rejected": "b"}', "HH format"),
    ('{"chosen": 1, "rejected": 2}', "HH format"),
    ('{"prompt": "x", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}', "end with an assistant turn"),
    ('{"text": "hello"}', "expected 'responses'"),
    ('{"prompt": "x", "responses": ["a", "b"], "ranking": [0, 1], "labeler": 5}', "'labeler' must be"),
]


@pytest.mark.parametrize("line,message", BAD_LINES)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"}, line])
    with pytest.raises(UserError) as e:
        read_comparisons(f)
    msg = str(e.value)
    assert f"{f}:2:" in msg and message in msg and "\n" not in msg


def test_unusable_but_wellformed_data_is_skipped_and_reported(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "x", "chosen": "same", "rejected": "same"},
        {"prompt": "x", "chosen": "", "rejected": "b"},
        {"prompt": "x", "responses": ["a", "b", "c"], "ranking": [[0, 1, 2]]},
        {"prompt": "x", "responses": ["a", "", "c"], "ranking": [1, 0, 2]},
        {"prompt": "x", "chosen": "good", "rejected": "bad"},
    ])
    skips = SkipReport()
    comps = read_comparisons(f, skips=skips)
    assert len(comps) == 2 and comps[0].responses == ["a", "c"] and comps[0].pairs == [(0, 1)]
    assert skips.counts == {"chosen identical to rejected": 1, "empty response": 1, "all responses tied or identical (no strict pair)": 1,
                            "empty response dropped from its ranking": 1}
    assert f"{f}:3" in skips.summary()
    kept = read_comparisons(f, empty="keep")
    assert [c.k for c in kept] == [2, 3, 2]
    with pytest.raises(UserError, match=r"d\.jsonl:2: response 0 is empty"):
        read_comparisons(f, empty="error")


def test_identical_responses_ranked_apart_give_no_pair(tmp_path):
    """Equal texts carry no preference, however a labeler ordered them: such pairs are left out and counted; a line
    with nothing else is skipped, as the same two texts given as chosen and rejected are."""
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "x", "responses": ["same", "same", "same"], "ranking": [0, 1, 2]},
        {"prompt": "x", "responses": ["a", "b", "a"], "ranking": [[0], [1], [2]]},
        {"prompt": "x", "responses": ["a", "b", "a"], "ranking": [[0, 2], [1]]},
    ])
    skips = SkipReport()
    comps = read_comparisons(f, skips=skips)
    assert [c.pairs for c in comps] == [[(0, 1), (1, 2)], [(0, 1), (2, 1)]]
    assert skips.counts == {"all responses tied or identical (no strict pair)": 1,
                            "identical responses ranked apart (those pairs left out)": 1}
    assert skips.first["identical responses ranked apart (those pairs left out)"] == f"{f}:2"


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_comparisons(tmp_path / "nope.jsonl")
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"prompt": "x", "chosen": "a", "rejected": "b"}\n' * 50)[:40])
    with pytest.raises(UserError, match="x.jsonl.gz"):
        read_comparisons(gz)


def test_cli_bad_input_is_one_line(tmp_path, tiny_model_dir, capsys):
    from instructgpt.cli import main

    empty = write_jsonl(tmp_path / "empty.jsonl", [""])
    assert main(["rm", "--data", str(empty), "--model", str(tiny_model_dir), "--out", str(tmp_path / "rm")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("igpt rm: error: no training comparisons") and "\n" not in err
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": "x", "responses": ["a"], "ranking": [0]}'])
    assert main(["rm", "--data", str(bad), "--model", str(tiny_model_dir), "--out", str(tmp_path / "rm")]) == 2
    assert f"{bad}:1: a ranking needs K >= 2" in capsys.readouterr().err
    assert main(["rm", "--data", str(bad), "--model", str(tiny_model_dir), "--out", str(tmp_path / "rm"),
                 "--empty-responses", "sometimes"]) == 2
    assert "--empty-responses" in capsys.readouterr().err
    assert main(["rm", "--run", str(tmp_path / "norun")]) == 2
    assert "sft is missing" in capsys.readouterr().err
    assert not (tmp_path / "rm").exists() and not (tmp_path / "rm.partial").exists()


# ---------------------------------------------------------------------------------------------- training end to end
def _training_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    import random

    rng = random.Random(0)
    names = ["Alba", "Borin", "Cetra", "Dovel", "Eskar", "Fanwe", "Gorim", "Helta"]
    caps = ["Mira", "Toln", "Vessa", "Quor", "Lirr", "Pand", "Seft", "Uron"]
    rows, demos = [], []
    for i in range(24):
        j = i % 8
        good, ok, bad = f"The capital of {names[j]} is {caps[j]}.", caps[j], f"What is the capital of {names[rng.randrange(8)]}?"
        resp = [bad, good, ok, ""] if i % 3 else [good, bad, ok, "no"]
        order = sorted(range(4), key=lambda k: [good, ok, bad, "no", ""].index(resp[k]))
        rows.append({"prompt": f"What is the capital of {names[j]}?", "responses": resp, "ranking": order, "labeler": f"l{i % 3}"})
        demos.append({"messages": [{"role": "user", "content": f"Name the capital of {names[j]}."},
                                   {"role": "assistant", "content": good}]})
    held = [{"prompt": r["prompt"] + " Please.", "responses": r["responses"], "ranking": r["ranking"]} for r in rows[:6]]
    return (write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "held.jsonl", held),
            write_jsonl(tmp_path / "demos.jsonl", demos))


def _rm_cfg(tmp_path, model_dir, out, **kw):
    from instructgpt.stages.reward import RewardConfig

    train, held, demos = _training_files(tmp_path)
    base = dict(data=[str(train)], eval_data=[str(held)], model=str(model_dir), out=str(out), demonstrations=str(demos),
                batch_size=4, lr=3e-3, warmup_steps=1, eval_every=3, checkpoint_every=100, empty_responses="keep",
                progress=False, tensorboard=False)
    base.update(kw)
    return RewardConfig(**base)


def test_train_save_load_and_bias(tmp_path, tiny_model_dir, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification

    from instructgpt.data.preferences import read_demonstrations
    from instructgpt.reward_model import load_reward_model
    from instructgpt.sampling import left_pad
    from instructgpt.stages import reward

    out = reward.run(_rm_cfg(tmp_path, tiny_model_dir, tmp_path / "rm"))
    printed = capsys.readouterr().out
    assert "held-out accuracy, training labelers" in printed and "reward bias" in printed
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    final = rows[-1]
    assert final["final"] and final["train_comparisons"] == 24 and final["train_pairs"] == 24 * 6
    assert final["accuracy_all"] is not None and final["pairs_train_labelers"] == 36
    assert rows[1]["loss"] > rows[-2]["loss"]  # it learns: the loss goes down over 6 steps
    stats = json.loads((out / "reward_stats.json").read_text())

    # loads with no code of ours; its scores equal ours up to the documented reward_bias
    hf = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert hf.config.num_labels == 1 and hf.config.pad_token_id is not None
    assert hf.config.reward_bias == pytest.approx(stats["reward_bias"]) and hf.config.reward_std == pytest.approx(stats["reward_std"])
    rm = load_reward_model(out, torch.device("cpu"))
    prompts = ["What is the capital of Alba?", [{"role": "user", "content": "Name the capital of Cetra."}], "hi"]
    answers = ["The capital of Alba is Mira.", "Vessa", "What is the capital of Dovel? And of Eskar? And of Fanwe?"]
    seqs = [rm.encode(p, a) for p, a in zip(prompts, answers)]
    width = max(map(len, seqs))
    right = torch.full((3, width), rm.tok.pad_token_id)
    rmask = torch.zeros((3, width), dtype=torch.long)
    for i, s in enumerate(seqs):
        right[i, : len(s)] = torch.tensor(s)
        rmask[i, : len(s)] = 1
    with torch.no_grad():
        hf_scores = hf(input_ids=right, attention_mask=rmask).logits.squeeze(-1) + hf.config.reward_bias
    ours_right = rm.score(right, rmask)
    lids, lmask = left_pad(seqs, rm.tok.pad_token_id)
    ours_left = rm.score(lids, lmask)
    one_by_one = torch.tensor([float(rm.score(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0]) for s in seqs])
    assert torch.allclose(hf_scores, ours_right, atol=1e-5)
    assert torch.allclose(ours_left, ours_right, atol=1e-5) and torch.allclose(one_by_one, ours_right, atol=1e-5)
    assert rm.score_texts(prompts, answers) == pytest.approx(ours_right.tolist(), abs=1e-5)
    # PPO's use: per-token values from model.base_model hidden states + model.score, the last token's is the reward
    with torch.no_grad():
        h = hf.base_model(input_ids=right, attention_mask=rmask).last_hidden_state
        per_token = hf.score(h).squeeze(-1)
    last = rmask.sum(-1) - 1
    assert torch.allclose(per_token[torch.arange(3), last] + hf.config.reward_bias, ours_right, atol=1e-5)

    # bias normalisation: the demonstrations average 0, their std is stored
    demos = read_demonstrations(tmp_path / "demos.jsonl")
    vals = rm.score_texts([p for p, _ in demos], [r for _, r in demos])
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    assert abs(mean) < 1e-4 and std == pytest.approx(stats["reward_std"], rel=1e-3)
    assert stats["demonstrations"] == 24

    # the finished folder is protected; a second run needs --overwrite
    with pytest.raises(UserError, match="output exists"):
        reward.run(_rm_cfg(tmp_path, tiny_model_dir, tmp_path / "rm"))


def test_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from instructgpt.stages import reward

    full = reward.run(_rm_cfg(tmp_path, tiny_model_dir, tmp_path / "a", dropout=0.1, eval_every=0))
    partial = reward.run(_rm_cfg(tmp_path, tiny_model_dir, tmp_path / "b", dropout=0.1, eval_every=0, stop_after=2))
    assert partial.name == "b.partial" and not (tmp_path / "b").exists()
    with pytest.raises(UserError, match="--resume"):
        reward.run(_rm_cfg(tmp_path, tiny_model_dir, tmp_path / "b", dropout=0.1, eval_every=0))
    resumed = reward.run(_rm_cfg(tmp_path, tiny_model_dir, tmp_path / "b", dropout=0.1, eval_every=0, resume=True))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    steps = [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(x)["step"] for x in (full / "metrics.jsonl").read_text().splitlines()]


def test_shuffle_pairs_ablation_trains_on_pairs(tmp_path, tiny_model_dir):
    from instructgpt.stages import reward

    out = reward.run(_rm_cfg(tmp_path, tiny_model_dir, tmp_path / "rm", shuffle_pairs=True, batch_size=24, eval_every=0,
                             max_comparisons=12))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first, final = rows[0], rows[-1]
    assert first["train_comparisons"] == 12 * 6 and first["train_responses"] == 12 * 6 * 2 and final["shuffle_pairs"]
    shutil.rmtree(out)
