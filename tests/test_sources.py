"""Every kind of data source a stage reads (JSONL, JSON, parquet, arrow, folders, saved datasets, dataset ids) through
one reader, the common shapes of the public preference and instruction sets, column mapping, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructgpt.data.sources import parse_columns, records, resolve
from instructgpt.errors import UserError

HH = Path(__file__).parent / "data" / "hh_sample.jsonl"

ROWS = [
    # TRL / UltraFeedback binarized: a prompt and chosen / rejected conversations (the prompt repeated in them)
    {"prompt": "What is the capital of Alba?",
     "chosen": [{"role": "user", "content": "What is the capital of Alba?"}, {"role": "assistant", "content": "Mira."}],
     "rejected": [{"role": "user", "content": "What is the capital of Alba?"}, {"role": "assistant", "content": "Toln."}],
     "score_chosen": 8.0, "score_rejected": 3.0},
    {"prompt": "Name the capital of Borin.",
     "chosen": [{"role": "user", "content": "Name the capital of Borin."}, {"role": "assistant", "content": "Toln."}],
     "rejected": [{"role": "user", "content": "Name the capital of Borin."}, {"role": "assistant", "content": "I do not know."}],
     "score_chosen": 7.0, "score_rejected": 2.0},
]


def _dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


def test_one_reader_for_every_local_kind_of_source(tmp_path):
    import datasets

    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(3)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 2, "data": rows}))
    (tmp_path / "columns.json").write_text(json.dumps({"prompt": [r["prompt"] for r in rows], "response": [r["response"] for r in rows]}))
    _dataset(rows).to_parquet(str(tmp_path / "a.parquet"))
    ds = _dataset(rows)
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": _dataset(rows[:1])}).save_to_disk(str(tmp_path / "saved_dict"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    for name in ("a.jsonl", "list.json", "wrapped.json", "columns.json", "a.parquet", arrow, "saved", "saved_dict"):
        got = [obj for _, obj in records(tmp_path / name)]
        assert got == rows, name
    assert [obj for _, obj in records(f"{tmp_path / 'saved_dict'}[test]")] == rows[:1]
    # a folder of files: each read in name order (the saved datasets are folders of their own, not read here)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "1.jsonl").write_text(json.dumps(rows[0]) + "\n")
    _dataset(rows[1:]).to_parquet(str(folder / "2.parquet"))
    assert [obj for _, obj in records(folder)] == rows
    wheres = [w for w, _ in records(folder)]
    assert wheres[0].endswith("1.jsonl:1") and wheres[1].endswith("2.parquet:row 0")


def test_column_mapping_and_its_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"question": "q", "answer": "a", "extra": 1}) + "\n")
    assert parse_columns("prompt=question, response=answer") == {"prompt": "question", "response": "answer"}
    assert [o for _, o in records(p, columns={"prompt": "question", "response": "answer"})] == [{"prompt": "q", "response": "a", "extra": 1}]
    with pytest.raises(UserError, match=r"a.jsonl:1: no column 'query' \(named in --columns\); it has question, answer, extra"):
        list(records(p, columns={"prompt": "query"}))
    with pytest.raises(UserError, match="--columns: 'prompt' is not NAME=COLUMN"):
        parse_columns("prompt")


def test_sources_that_cannot_be_read_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = {
        str(tmp_path / "missing.jsonl"): "missing.jsonl: data not found",
        "./nowhere/data": "nowhere/data: data not found",
    }
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    cases[str(bad)] = "bad.parquet: cannot read this parquet file as data"
    (tmp_path / "bad.json").write_text('{"a": 1')
    cases[str(tmp_path / "bad.json")] = "bad.json: not valid JSON"
    (tmp_path / "scalar.json").write_text("3")
    cases[str(tmp_path / "scalar.json")] = "must hold a list of records"
    (tmp_path / "empty").mkdir()
    cases[str(tmp_path / "empty")] = "the folder holds no .jsonl"
    cases["someone/not-a-cached-dataset[train]"] = "cannot load the dataset someone/not-a-cached-dataset\\[train\\] \\(offline mode"
    for source, message in cases.items():
        with pytest.raises(UserError, match=message) as e:
            list(records(source))
        assert "\n" not in str(e.value), source
    saved = tmp_path / "saved"
    _dataset(ROWS).save_to_disk(str(saved))
    with pytest.raises(UserError, match="has no splits"):
        list(records(f"{saved}[test]"))


def test_a_dataset_id_names_its_configuration_and_split():
    src = resolve("trl-lib/ultrafeedback_binarized[train]")
    assert (src.kind, src.path, src.config, src.split) == ("hub", "trl-lib/ultrafeedback_binarized", None, "train")
    src = resolve("openai/gsm8k:main[test]")
    assert (src.kind, src.path, src.config, src.split) == ("hub", "openai/gsm8k", "main", "test")
    assert resolve("Anthropic/hh-rlhf").split is None


def test_preference_shapes_from_parquet_and_saved_datasets(tmp_path):
    from instructgpt.data.preferences import read_comparisons

    _dataset(ROWS).to_parquet(str(tmp_path / "uf.parquet"))
    comps = read_comparisons(tmp_path / "uf.parquet")
    assert [(c.prompt, c.responses) for c in comps] == [("What is the capital of Alba?", ["Mira.", "Toln."]),
                                                      ("Name the capital of Borin.", ["Toln.", "I do not know."])]
    assert all(c.pairs == [(0, 1)] for c in comps) and comps[0].where.endswith("uf.parquet:row 0")
    # HH dialogues saved as a dataset, and pairwise lines under other column names
    hh = [json.loads(x) for x in HH.read_text().splitlines()[:20]]
    _dataset(hh).save_to_disk(str(tmp_path / "hh"))
    from_jsonl = [(c.prompt, c.responses) for c in read_comparisons(HH) if int(c.where.rsplit(":", 1)[1]) <= 20]
    assert [(c.prompt, c.responses) for c in read_comparisons(tmp_path / "hh")] == from_jsonl and len(from_jsonl) >= 8
    renamed = [{"question": r["prompt"], "good": r["chosen"][1]["content"], "bad": r["rejected"][1]["content"]} for r in ROWS]
    (tmp_path / "renamed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in renamed))
    comps = read_comparisons(tmp_path / "renamed.jsonl", columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert [c.responses for c in comps] == [["Mira.", "Toln."], ["Toln.", "I do not know."]]


def test_instruction_shapes_from_saved_datasets_and_parquet(tmp_path):
    from instructgpt.data.chat import load_demonstrations
    from instructgpt.data.chat import read_prompts

    share = [{"conversations": [{"from": "human", "value": f"Hi {i}"}, {"from": "gpt", "value": f"Hello {i}."}]} for i in range(3)]
    _dataset(share).save_to_disk(str(tmp_path / "sharegpt"))
    demos = load_demonstrations(tmp_path / "sharegpt")
    assert [d["messages"][-1]["content"] for d in demos] == ["Hello 0.", "Hello 1.", "Hello 2."]
    alpaca = [{"instruction": "Add", "input": "2 and 2", "output": "4"}]
    _dataset(alpaca).to_parquet(str(tmp_path / "alpaca.parquet"))
    assert load_demonstrations(tmp_path / "alpaca.parquet")[0]["messages"][0]["content"] == "Add\n\n2 and 2"
    _dataset([{"question": "Why?"}, {"question": "How?"}]).to_parquet(str(tmp_path / "prompts.parquet"))
    assert [r["prompt"] for r in read_prompts(str(tmp_path / "prompts.parquet"), {"prompt": "question"})] == ["Why?", "How?"]
    with pytest.raises(UserError, match=r"prompts.parquet:row 0: expected \{\"prompt\": text\}"):
        read_prompts(str(tmp_path / "prompts.parquet"))


def test_pretraining_text_from_any_source(tmp_path):
    from instructgpt.data.corpus import iter_documents

    docs = ["The capital of Alba is Mira.", "Toln is a city."]
    _dataset([{"text": d} for d in docs]).to_parquet(str(tmp_path / "c.parquet"))
    _dataset([{"text": d} for d in docs]).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "c.txt").write_text("\n\n".join(docs))
    for name in ("c.parquet", "saved", "c.txt"):
        assert list(iter_documents(tmp_path / name)) == docs, name
    _dataset([{"body": d} for d in docs]).to_parquet(str(tmp_path / "other.parquet"))
    with pytest.raises(UserError, match=r"other.parquet:row 0: expected an object with a string field 'text'"):
        list(iter_documents(tmp_path / "other.parquet"))
