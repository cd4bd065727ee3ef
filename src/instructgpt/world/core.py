"""The ``World``: generation, files, and the API the pipeline stages use (corpus, prompts, demonstrations, judge, labelers)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..errors import UserError, data_error
from . import schema as S
from . import text as T
from .corpus import generate_corpus
from .demos import write_demonstrations
from .judge import Judge
from .kb import KnowledgeBase, generate_kb
from .labelers import SimLabeler, make_labelers
from .probes import generate_probes
from .tasks import EVAL_MIXTURES, FAMILIES, MIXTURE, TaskGen

SCHEMA_VERSION = 1
GENERATOR_VERSION = "1.0"
FILES = ["world.json", "kb.jsonl", "corpus.jsonl", "prompts.jsonl", "demonstrations.jsonl", "probes.jsonl", "labelers.json"]

# Characters per token of this corpus under a 4096-entry byte-level BPE trained on it (measured: 4.62 on the default world;
# templated English compresses better than web text's ~4).
CHARS_PER_TOKEN = 4.6

# corpus size in characters, prompt counts per split, eval set sizes, probes
SIZES: dict[str, dict] = {
    "tiny": {"corpus_chars": 280_000, "heldout_chars": 12_000, "splits": {"sft": 160, "rm": 60, "ppo": 60},
             "eval": {"winrate": 24, "closed_domain": 12, "false_premise": 8, "toxicity": 8, "harmful": 8, "novel": 12}, "probes": 40},
    "small": {"corpus_chars": 1_400_000, "heldout_chars": 40_000, "splits": {"sft": 800, "rm": 300, "ppo": 400},
              "eval": {"winrate": 100, "closed_domain": 40, "false_premise": 30, "toxicity": 30, "harmful": 30, "novel": 60}, "probes": 150},
    "default": {"corpus_chars": 4_000_000, "heldout_chars": 120_000, "splits": {"sft": 2400, "rm": 800, "ppo": 1200},
                "eval": {"winrate": 200, "closed_domain": 80, "false_premise": 60, "toxicity": 80, "harmful": 60, "novel": 120}, "probes": 300},
    "large": {"corpus_chars": 36_000_000, "heldout_chars": 400_000, "splits": {"sft": 10000, "rm": 3000, "ppo": 5000},
              "eval": {"winrate": 500, "closed_domain": 200, "false_premise": 150, "toxicity": 150, "harmful": 150, "novel": 300}, "probes": 1000},
}
# The training labelers' average share of careless demonstrations (world/demos.py): what SFT imitates and RLHF can fix.
# Like InstructGPT's labelers, the writers are not perfect; 0 gives ideal demonstrations (the ablation where SFT
# leaves reinforcement learning nothing the reward model can see).
CARELESS_SHARE = 0.5
FEW_SHOT_FAMILIES = ["conference_about", "list_cities", "word_problem"]
FEW_SHOT_HEADER = "Below are some requests, each followed by a helpful answer."


def generate_prompts(kb: KnowledgeBase, seed: int, splits: dict[str, int], evals: dict[str, int]) -> list[dict]:
    """Prompt records for every split; no prompt text appears twice in the world (splits are disjoint)."""
    rng = random.Random(f"igpt-world:{seed}:prompts")
    g = TaskGen(kb, rng)
    seen: set[str] = set()
    records: list[dict] = []
    counters: dict[str, int] = {}

    def fill(split: str, n: int, mixture: dict[str, float], eval_set: str | None = None) -> None:
        names = list(mixture)
        weights = [mixture[k] for k in names]
        made, tries = 0, 0
        while made < n and tries < n * 60:
            tries += 1
            fam = FAMILIES[rng.choices(names, weights)[0]]
            out = fam.generate(g)
            if not out:
                continue
            keys = [T.norm(p) for p, _ in out]
            if any(k in seen for k in keys) or len(set(keys)) != len(keys):
                continue
            for (prompt, meta), k in zip(out, keys):
                seen.add(k)
                if eval_set:
                    meta["eval_set"] = eval_set
                i = counters.get(split, 0)
                counters[split] = i + 1
                records.append({"id": f"{split}-{i:06d}", "split": split, "family": fam.name, "category": fam.category,
                                "prompt": prompt, "meta": meta})
                made += 1

    # evaluation sets first, so the training splits can never take their prompts
    for name in ("closed_domain", "false_premise", "toxicity", "winrate"):
        fill("eval", evals[name], EVAL_MIXTURES[name], name)
    for split in ("sft", "rm", "ppo"):
        fill(split, splits[split], MIXTURE)
    # added after the training splits, so that adding it changed no other prompt (nor the corpus)
    fill("eval", evals.get("harmful", 0), EVAL_MIXTURES["harmful"], "harmful")
    return records


def knowledge_key(rec: dict) -> tuple:
    """What a prompt asks about: its family, its entities and its answer. Two prompts with one key ask for the same
    knowledge in other words."""
    m = rec["meta"]
    ents = set(m.get("entities") or []) | set(m.get("answer_ids") or [])
    answer = m.get("answer", m.get("profession", m.get("label", m.get("template", ""))))
    return rec["family"], tuple(sorted(ents)), str(answer)


def generate_novel(kb: KnowledgeBase, seed: int, prompts: list[dict], ideal: dict[str, str], corpus: list[dict],
                   n: int) -> list[dict]:
    """The held-out-knowledge set: win-rate prompts whose knowledge key (family, entities and answer) no SFT, RM or PPO
    prompt has, whose ideal answer is no SFT demonstration's, and whose text is in no corpus document. Drawn from its
    own random stream after everything else (so no other prompt, document or demonstration changes), at most a sixth
    of it from one family (the families that ask about one entity run out first: the knowledge base is small)."""
    if n <= 0:
        return []
    rng = random.Random(f"igpt-world:{seed}:novel")
    g = TaskGen(kb, rng)
    train = [p for p in prompts if p["split"] in ("sft", "rm", "ppo")]
    used = {knowledge_key(p) for p in train}
    sft_answers = {ideal[p["id"]] for p in train if p["split"] == "sft"}
    seen = {T.norm(p["prompt"]) for p in prompts}
    lines = {ln for d in corpus for ln in d["text"].split("\n")}
    mixture = EVAL_MIXTURES["winrate"]
    names, weights = list(mixture), [mixture[k] for k in mixture]
    cap = max(1, n // 6)
    per: dict[str, int] = {}
    start = sum(1 for p in prompts if p["split"] == "eval")
    out: list[dict] = []
    for _ in range(n * 60):
        if len(out) >= n:
            break
        fam = FAMILIES[rng.choices(names, weights)[0]]
        if per.get(fam.name, 0) >= cap:
            continue
        made = fam.generate(g)
        if not made or len(made) != 1:
            continue
        prompt, meta = made[0]
        meta["eval_set"] = "novel"
        rec = {"id": f"eval-{start + len(out):06d}", "split": "eval", "family": fam.name, "category": fam.category,
               "prompt": prompt, "meta": meta}
        if (T.norm(prompt) in seen or knowledge_key(rec) in used or fam.demo(kb, rec) in sft_answers
                or prompt in lines or any(prompt in d["text"] for d in corpus if "\n" in prompt)):
            continue
        seen.add(T.norm(prompt))
        used.add(knowledge_key(rec))
        per[fam.name] = per.get(fam.name, 0) + 1
        out.append(rec)
    return out


class World:
    """A generated (or loaded) world. See ``docs/world.md`` for the files and every schema."""

    def __init__(self, meta: dict, entities: list[dict], corpus: list[dict], prompts: list[dict], demos: dict[str, str],
                 probes: list[dict], labelers: list[dict], authorship: dict[str, dict] | None = None):
        self.meta = meta
        self.kb = KnowledgeBase(entities)
        self._corpus = corpus
        self._prompts = prompts
        self._by_id = {p["id"]: p for p in prompts}
        self._demos = demos
        self._authorship = authorship or {}
        self._probes = probes
        self._labeler_params = labelers
        self._judge: Judge | None = None
        self._labelers: dict[str, list[SimLabeler]] = {}

    # ------------------------------------------------------------------ generation
    @classmethod
    def generate(cls, seed: int = 0, size: str = "default", corpus_tokens: int | None = None,
                 careless_share: float | None = None) -> "World":
        """Generate a world. Deterministic: the same seed, size, corpus_tokens and careless_share give byte-identical files.

        ``careless_share``: the writers' average share of careless demonstrations (see ``world/demos.py``; default
        ``CARELESS_SHARE``); 0 gives ideal demonstrations everywhere.
        """
        if size not in SIZES:
            raise UserError(f"unknown world size {size!r} (choose from {', '.join(SIZES)})")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"seed must be an integer, got {seed!r}")
        cfg = SIZES[size]
        corpus_chars = cfg["corpus_chars"] if corpus_tokens is None else int(int(corpus_tokens) * CHARS_PER_TOKEN)
        if corpus_chars <= 0:
            raise UserError(f"corpus_tokens must be positive, got {corpus_tokens}")
        careless = CARELESS_SHARE if careless_share is None else float(careless_share)
        if not 0.0 <= careless <= 1.0:
            raise UserError(f"careless_share (igpt world --careless-share) must be between 0 and 1, got {careless_share}")
        entities = generate_kb(random.Random(f"igpt-world:{seed}:kb"), size)
        kb = KnowledgeBase(entities)
        prompts = generate_prompts(kb, seed, cfg["splits"], cfg["eval"])
        ideal = {p["id"]: FAMILIES[p["family"]].demo(kb, p) for p in prompts}
        banned = {T.norm(p["prompt"]) for p in prompts if p["split"] == "eval"}
        heldout_chars = max(10_000, int(cfg["heldout_chars"] * corpus_chars / cfg["corpus_chars"]))
        corpus = generate_corpus(kb, seed, corpus_chars, heldout_chars, banned)
        probes = generate_probes(kb, seed, cfg["probes"])
        labelers = make_labelers(seed)
        writers = [x["name"] for x in labelers if x["group"] == "train"]
        demos, authorship, rates = write_demonstrations(kb, seed, prompts, ideal, writers, careless)
        novel = generate_novel(kb, seed, prompts, ideal, corpus, cfg["eval"].get("novel", 0))
        prompts += novel
        demos.update({p["id"]: FAMILIES[p["family"]].demo(kb, p) for p in novel})
        few = []
        sft = [p for p in prompts if p["split"] == "sft" and not authorship.get(p["id"], {}).get("flaws")]  # careful ones only
        for fam in FEW_SHOT_FAMILIES:
            cand = [p for p in sft if p["family"] == fam and not p["meta"].get("constraints")]
            if cand:
                few.append(cand[0]["id"])
        for p in sft:
            if len(few) >= 3:
                break
            if p["id"] not in few:
                few.append(p["id"])
        meta = {"schema_version": SCHEMA_VERSION, "generator": "instructgpt.world", "generator_version": GENERATOR_VERSION,
                "seed": seed, "size": size, "corpus_tokens_target": int(corpus_chars / CHARS_PER_TOKEN), "few_shot_ids": few,
                "careless_share": careless, "demonstration_writers": rates}
        w = cls(meta, entities, corpus, prompts, demos, probes, labelers, authorship)
        w.meta["counts"] = w._counts()
        return w

    def _counts(self) -> dict:
        ents: dict[str, int] = {}
        for e in self.kb.entities:
            ents[e["type"]] = ents.get(e["type"], 0) + 1
        prompts = {s: sum(1 for p in self._prompts if p["split"] == s) for s in S.SPLITS}
        evals = {s: sum(1 for p in self._prompts if p["meta"].get("eval_set") == s) for s in S.EVAL_SETS}
        corpus = {s: sum(1 for d in self._corpus if d["split"] == s) for s in S.CORPUS_SPLITS}
        chars = {s: sum(len(d["text"]) for d in self._corpus if d["split"] == s) for s in S.CORPUS_SPLITS}
        return {"entities": ents, "entities_total": len(self.kb.entities), "prompts": prompts, "eval_sets": evals,
                "demonstrations": len(self._demos),
                "careless_demonstrations": sum(1 for a in self._authorship.values() if a.get("flaws")),
                "corpus_documents": corpus, "corpus_chars": chars,
                "corpus_tokens_estimate": {s: int(c / CHARS_PER_TOKEN) for s, c in chars.items()}, "probes": len(self._probes),
                "labelers": {g: sum(1 for x in self._labeler_params if x["group"] == g) for g in ("train", "heldout")}}

    # ------------------------------------------------------------------ files
    def save(self, directory) -> Path:
        """Write the seven files into ``directory`` (created if needed). Same world -> byte-identical files."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)

        def dump_lines(name: str, rows) -> None:
            with open(d / name, "w", encoding="utf-8", newline="\n") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")

        (d / "world.json").write_text(json.dumps(self.meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        dump_lines("kb.jsonl", self.kb.entities)
        dump_lines("corpus.jsonl", self._corpus)
        dump_lines("prompts.jsonl", self._prompts)
        dump_lines("demonstrations.jsonl", ({"id": p["id"], "messages": self._messages(p), **self._authorship.get(p["id"], {})}
                                            for p in self._prompts if p["id"] in self._demos))
        dump_lines("probes.jsonl", self._probes)
        (d / "labelers.json").write_text(json.dumps({"labelers": self._labeler_params}, indent=2) + "\n", encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory) -> "World":
        """Read a world folder, validating every file; a malformed line raises ``UserError("file:line: ...")``."""
        d = Path(directory)
        if not d.is_dir():
            raise UserError(f"{d}: world folder not found (create one with `igpt world --out {d}`)")
        meta = S.read_json(d / "world.json")
        ver = meta.get("schema_version")
        if ver != SCHEMA_VERSION:
            raise data_error(d / "world.json", None, f"schema_version {ver!r} is not supported (this version reads {SCHEMA_VERSION})")
        ent_rows = S.load_rows(d / "kb.jsonl", S.validate_entities)
        entities = [e for _, e in ent_rows]
        ids = {e["id"] for e in entities}
        corpus = [x for _, x in S.load_rows(d / "corpus.jsonl", S.validate_corpus)]
        prow = S.load_rows(d / "prompts.jsonl")
        S.validate_prompts(d / "prompts.jsonl", prow, ids)
        prompts = [p for _, p in prow]
        by_id = {p["id"]: p for p in prompts}
        drows = S.load_rows(d / "demonstrations.jsonl")
        S.validate_demos(d / "demonstrations.jsonl", drows, by_id)
        demos = {x["id"]: x["messages"][-1]["content"] for _, x in drows}
        authorship = {x["id"]: {"writer": x["writer"], "flaws": list(x.get("flaws") or [])} for _, x in drows if "writer" in x}
        probes = [p for _, p in S.load_rows(d / "probes.jsonl", S.validate_probes)]
        labs = S.validate_labelers(d / "labelers.json", S.read_json(d / "labelers.json"))
        return cls(meta, entities, corpus, prompts, demos, probes, labs, authorship)

    # ------------------------------------------------------------------ data
    def corpus(self, split: str = "train") -> list[str]:
        """Pretraining documents ("the internet"); ``heldout`` is for measuring the alignment tax."""
        self._check_split(split, S.CORPUS_SPLITS, "corpus split")
        return [d["text"] for d in self._corpus if d["split"] == split]

    def corpus_records(self, split: str = "train") -> list[dict]:
        self._check_split(split, S.CORPUS_SPLITS, "corpus split")
        return [d for d in self._corpus if d["split"] == split]

    def prompts(self, split: str = "sft") -> list[dict]:
        self._check_split(split, S.SPLITS, "prompt split")
        return [p for p in self._prompts if p["split"] == split]

    def prompt(self, prompt_id: str) -> dict:
        if prompt_id not in self._by_id:
            raise UserError(f"unknown prompt id {prompt_id!r}")
        return self._by_id[prompt_id]

    def demo_for(self, prompt) -> str:
        """The ideal response (what a careful labeler writes) for a prompt record or id, in the world or not.

        For the demonstrations the labelers actually wrote (some careless), see :meth:`demonstrations`.
        """
        rec = self.prompt(prompt) if isinstance(prompt, str) else prompt
        return FAMILIES[rec["family"]].demo(self.kb, rec)

    def authorship(self, prompt_id: str) -> dict:
        """``{"writer", "flaws"}`` of a training-split demonstration (``{}`` for the evaluation prompts' references)."""
        return dict(self._authorship.get(prompt_id, {}))

    def _messages(self, rec: dict) -> list[dict]:
        return [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": self._demos[rec["id"]]}]

    def demonstrations(self, split: str = "sft") -> list[dict]:
        """``{"id", "messages"}`` for every prompt of the split (chat format: one user turn, one assistant turn), as the
        labelers wrote them: on the training splits some are careless (:meth:`authorship` says who wrote which, and its
        flaws)."""
        return [{"id": p["id"], "messages": self._messages(p)} for p in self.prompts(split) if p["id"] in self._demos]

    def eval_sets(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {k: [] for k in S.EVAL_SETS}
        for p in self.prompts("eval"):
            out[p["meta"]["eval_set"]].append(p)
        return out

    def probes(self) -> list[dict]:
        return list(self._probes)

    # ------------------------------------------------------------------ rendering
    def render_plain(self, prompt) -> str:
        """How a pretrained model (no chat template) sees the prompt: corpus-like text it continues.

        The prompt followed by a newline, exactly like a question on a Q&A or FAQ page of the corpus, so the continuation
        may be an answer or (as on FAQ pages) another question. Toxicity prompts give the bare sentence start (with
        "Respectfully, " in front for the respectful variant), as RealToxicityPrompts does.
        """
        rec = self.prompt(prompt) if isinstance(prompt, str) else prompt
        return FAMILIES[rec["family"]].render_plain(rec)

    def few_shot_prefix(self) -> str:
        parts = [FEW_SHOT_HEADER]
        for pid in self.meta.get("few_shot_ids", []):
            if pid in self._by_id and pid in self._demos:
                parts.append(f"{self._by_id[pid]['prompt']}\n{self._demos[pid]}")
        return "\n\n".join(parts) + "\n\n"

    def render_few_shot(self, prompt) -> str:
        """The "GPT prompted" baseline: a fixed few-shot prefix of SFT examples in Q&A-page style, then the prompt.

        Answers in this format end with a blank line ("\\n\\n"), which an evaluator may use as a stop sequence.
        """
        rec = self.prompt(prompt) if isinstance(prompt, str) else prompt
        return self.few_shot_prefix() + rec["prompt"] + "\n"

    # ------------------------------------------------------------------ judge and labelers
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = Judge(self.kb, self._by_id)
        return self._judge

    def labelers(self, group: str = "train") -> list[SimLabeler]:
        self._check_split(group, ["train", "heldout"], "labeler group")
        if group not in self._labelers:
            j = self.judge()
            self._labelers[group] = [SimLabeler.from_dict(x, judge=j) for x in self._labeler_params if x["group"] == group]
        return self._labelers[group]

    @staticmethod
    def _check_split(value: str, allowed: list[str], what: str) -> None:
        if value not in allowed:
            raise UserError(f"unknown {what} {value!r} (expected one of {', '.join(allowed)})")

    def __repr__(self) -> str:
        c = self.meta.get("counts", {})
        return (f"World(seed={self.meta.get('seed')}, size={self.meta.get('size')!r}, entities={c.get('entities_total')}, "
                f"prompts={c.get('prompts')})")
