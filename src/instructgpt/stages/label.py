"""Step 3a, comparisons: sample K responses per comparison prompt and have labelers rank them.

The story of the stage: pick the comparison prompts from the world (a held-out slice of them is kept for measuring the
reward model, never trained on); for each prompt sample K responses from one or more models at chosen temperatures
(by default the SFT model at two temperatures and the pretrained model, so quality varies); shuffle them so position
says nothing about the model; and store prompt, responses and rankings in ``<run>/comparisons/comparisons.sqlite``.

``--labeler sim`` ranks with the world's simulated training labelers: one labeler per prompt, a share of prompts
(``--double-share``) ranked by a second one so inter-labeler agreement is measured, and every held-out prompt ranked by
one training and one held-out labeler. ``--labeler human`` only queues the tasks for the web interface (``igpt serve``).

Writes are idempotent (task key = prompt id, submission id = task key + labeler) and each chunk of prompts is written in
one transaction, so a killed run loses at most the chunk in flight and ``--resume`` continues exactly where it stopped.
Sampling seeds depend only on the seed and the chunk, and each ranking's random stream only on the seed, prompt and
labeler, so a resumed run stores the same comparisons as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import zlib
from pathlib import Path
from typing import Any, ClassVar

from ..config import StageConfig, field, save_config
from ..errors import UserError
from ..rundir import STORE_FILE, begin_output, finish_output, in_run, is_complete, own_output, partial_path

# The policy's own distribution, as InstructGPT's comparisons were of its models' outputs: of K = 9 responses (the default
# preset's), six SFT samples at temperature 1 (what PPO samples) and three at 0.7 (what the evaluation samples). A spec
# listed twice gets twice the slots.
DEFAULT_MODELS = ["sft@1.0", "sft@0.7", "sft@1.0"]


@dataclasses.dataclass
class LabelConfig(StageConfig):
    """Sample K responses per comparison prompt from one or more models and collect rankings (simulated or human)."""

    stage: ClassVar[str] = "label"
    presets: ClassVar[dict] = {
        "tiny": dict(n_prompts=44, heldout_prompts=16, k=4, max_new_tokens=24, chunk_prompts=16),
        "default": dict(n_prompts=0, heldout_prompts=128, k=9, max_new_tokens=48, chunk_prompts=64),
        "gpu": dict(n_prompts=2700, heldout_prompts=300, k=6, max_new_tokens=96, chunk_prompts=256, batch_size=256),
    }

    run: str = field("", "run directory; reads <run>/world and the models, writes <run>/comparisons")
    out: str = field("", "output folder (overrides <run>/comparisons)")
    world: str = field("", "world folder with the comparison prompts and labelers (default: <run>/world)")
    models: list[str] = field([], "MODEL@TEMPERATURE specs that share the K responses round-robin; MODEL is a folder name in "
                                  "the run (sft, pretrain) or a path; a spec listed twice gets twice the slots (default: sft@1.0,sft@0.7,sft@1.0)")
    k: int = field(4, "responses per prompt (InstructGPT: 4 to 9)", ge=2, le=64)
    n_prompts: int = field(640, "training comparison prompts (0 = all the world's rm prompts left after the held-out slice)", ge=0)
    heldout_prompts: int = field(128, "held-out comparison prompts, ranked by a training and a held-out labeler, never trained on", ge=0)
    double_share: float = field(0.2, "share of training prompts ranked by a second labeler (measures agreement)", ge=0.0, le=1.0)
    prompt_mix: str = field("families", "which comparison prompts are labelled: families (round robin over the task families, "
                                        "so that a rare one, such as harmful requests, is not left to chance) or natural (a random "
                                        "draw from the world's rm split, families as common as in use)", choices=("natural", "families"))
    labeler: str = field("sim", "sim (the world's simulated labelers rank) or human (only queue tasks for igpt serve)", choices=("sim", "human"))
    max_new_tokens: int = field(48, "longest sampled response, in tokens", ge=1)
    top_p: float = field(1.0, "nucleus sampling", ge=0.0, le=1.0)
    top_k: int = field(0, "top-k sampling (0 = off)", ge=0)
    batch_size: int = field(64, "sequences sampled at once", ge=1)
    chunk_prompts: int = field(64, "prompts sampled, ranked and written per transaction", ge=1)
    stop_after: int = field(0, "stop after this many chunks as if interrupted (0 = run to the end)", ge=0)
    resume: bool = field(False, "continue an interrupted (or finished, to add prompts) labelling run")
    overwrite: bool = field(False, "replace an existing comparisons folder")
    device: str = field("auto", "auto, cpu, cuda or cuda:N")
    seed: int = field(0, "random seed (prompt selection, sampling, labelers)", ge=0)
    progress: bool = field(True, "show a progress bar")


def _refuse_to_discard_people(out: Path) -> None:
    """--overwrite replaces the comparisons folder; never silently when people's rankings or arena votes are in it."""
    for folder in (out, partial_path(out)):
        db = folder / STORE_FILE
        if not db.exists():
            continue
        from ..store import ComparisonStore

        store = ComparisonStore(db)
        try:
            n = store.count_rankings(source="human") + store.count_rankings(source="arena")
        finally:
            store.close()
        if n:
            raise UserError(f"{db} holds {n} rankings or votes by people: --overwrite would delete them; move the folder away "
                            f"(or export them from the owner page) first")


# ---------------------------------------------------------------------------------------------- the world
def load_world(path: str | Path) -> Any:
    """The built-in world (``instructgpt.world.World``) from its folder."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"world not found: {p} (run igpt world first, or pass --world)")
    try:
        from ..world import World  # type: ignore[attr-defined]
    except ImportError:
        raise UserError("the built-in world (instructgpt.world.World) is not available in this installation") from None
    return World.load(p)


def record_text(record: dict) -> tuple[str, dict]:
    """(prompt text for the store, extra prompt meta) of a world prompt record; chat-message prompts keep their messages."""
    p = record["prompt"]
    if isinstance(p, str):
        return p, {}
    last_user = next((m["content"] for m in reversed(p) if m.get("role") == "user"), "")
    return last_user, {"messages": p}


# ---------------------------------------------------------------------------------------------- models
@dataclasses.dataclass
class ModelSpec:
    name: str
    path: Path
    temperature: float


def parse_model_specs(specs: list[str], run: Path | None) -> list[ModelSpec]:
    """``sft@0.7`` -> the run's sft folder at temperature 0.7; ``path/to/model@1.0`` -> that folder."""
    out = []
    for spec in specs or DEFAULT_MODELS:
        name, sep, temp = spec.rpartition("@")
        if not sep:
            name, temp = spec, "1.0"
        try:
            t = float(temp)
        except ValueError:
            raise UserError(f"--models: '{spec}' must be MODEL@TEMPERATURE, e.g. sft@0.7") from None
        if not (0.0 <= t <= 5.0):
            raise UserError(f"--models: temperature in '{spec}' must be between 0 and 5")
        p = Path(name)
        if run is not None and not p.is_absolute() and (run / name).exists():
            p = run / name
        if not (p / "config.json").is_file():
            hint = f" (is igpt {name} done?)" if name in ("sft", "pretrain") else ""
            raise UserError(f"--models: no model folder for '{spec}': {p}{hint}")
        out.append(ModelSpec(name=p.name if p.name not in ("", ".") else name, path=p, temperature=t))
    return out


def _seed_of(*parts: Any) -> int:
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------- the plan
@dataclasses.dataclass
class PlannedPrompt:
    record: dict
    split: str  # "rm" (training) or HELDOUT_SPLIT
    labelers: list[tuple[str, str]]  # (name, pool) of the simulated labelers who rank it

    @property
    def key(self) -> str:
        return f"label:{self.record['id']}"


def plan_prompts(records: list[dict], cfg: LabelConfig, train_labelers: list[Any], heldout_labelers: list[Any]) -> list[PlannedPrompt]:
    """Which prompts are labelled, which are held out, and who ranks each; a function of the seed only."""
    from ..data.preferences import HELDOUT_SPLIT

    records = sorted(records, key=lambda r: str(r["id"]))
    random.Random(_seed_of("prompts", cfg.seed)).shuffle(records)
    if cfg.prompt_mix == "families":
        records = interleave_families(records)
    n_held = min(cfg.heldout_prompts, len(records) // 5 if cfg.n_prompts == 0 else len(records))
    held, rest = records[:n_held], records[n_held:]
    train = rest if cfg.n_prompts == 0 else rest[: cfg.n_prompts]
    if cfg.n_prompts and len(train) < cfg.n_prompts:
        print(f"igpt label: the world has {len(records)} comparison prompts; using {len(train)} for training and {len(held)} held out")
    plan = []
    for rec in held:
        rng = random.Random(_seed_of("who", cfg.seed, rec["id"]))
        labs = []
        if train_labelers:
            labs.append((train_labelers[rng.randrange(len(train_labelers))].name, "train"))
        if heldout_labelers:
            labs.append((heldout_labelers[rng.randrange(len(heldout_labelers))].name, "heldout"))
        plan.append(PlannedPrompt(rec, HELDOUT_SPLIT, labs))
    for rec in train:
        rng = random.Random(_seed_of("who", cfg.seed, rec["id"]))
        labs = []
        if train_labelers:
            first = rng.randrange(len(train_labelers))
            labs.append((train_labelers[first].name, "train"))
            if len(train_labelers) > 1 and rng.random() < cfg.double_share:
                second = rng.randrange(len(train_labelers) - 1)
                second += second >= first
                labs.append((train_labelers[second].name, "train"))
        plan.append(PlannedPrompt(rec, "rm", labs))
    return plan


def interleave_families(records: list[dict]) -> list[dict]:
    """The records in rounds, one of each task family per round (families in order of first appearance, each family's
    records in their given order), so that every prefix covers the families evenly until a family runs out."""
    by_family: dict[str, list[dict]] = {}
    for r in records:
        by_family.setdefault(str(r.get("family", "")), []).append(r)
    out: list[dict] = []
    for i in range(max((len(v) for v in by_family.values()), default=0)):
        out += [v[i] for v in by_family.values() if i < len(v)]
    return out


# ---------------------------------------------------------------------------------------------- sampling
class ResponseSampler:
    """Samples the K responses of a chunk of prompts, spreading them round-robin over the model specs."""

    def __init__(self, specs: list[ModelSpec], cfg: LabelConfig, device: Any):
        self.specs, self.cfg, self.device = specs, cfg, device
        self._loaded: dict[Path, tuple[Any, Any]] = {}

    def _model(self, path: Path) -> tuple[Any, Any]:
        if path not in self._loaded:
            from ..sampling import load_model

            self._loaded[path] = load_model(str(path), self.device)
        return self._loaded[path]

    def sample(self, prompts: list[PlannedPrompt], chunk_index: int) -> list[list[dict]]:
        from ..sampling import SamplingParams, make_sampler, decode_responses, encode_prompt
        from ..tokenizer import stop_token_ids

        k = self.cfg.k
        per_spec = [[s for s in range(k) if s % len(self.specs) == j] for j in range(len(self.specs))]
        out: list[list[dict | None]] = [[None] * k for _ in prompts]
        for j, spec in enumerate(self.specs):
            slots = per_spec[j]
            if not slots:
                continue
            model, tok = self._model(spec.path)
            stops = stop_token_ids(tok, getattr(model, "generation_config", None))
            ids = []
            for p in prompts:
                text, extra = record_text(p.record)
                ids.append(encode_prompt(tok, extra.get("messages", text)))
            flat = [x for x in ids for _ in slots]
            params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=spec.temperature, top_k=self.cfg.top_k,
                                    top_p=self.cfg.top_p, seed=_seed_of("sample", self.cfg.seed, chunk_index, j), stop_token_ids=stops)
            roll = make_sampler(model, tok, batch_size=self.cfg.batch_size, device=self.device).generate(flat, params)
            texts = decode_responses(tok, roll, stops)
            n = 0
            for pi in range(len(prompts)):
                for slot in slots:
                    out[pi][slot] = {"text": texts[n].strip(), "model": spec.name, "temperature": spec.temperature,
                                     "meta": {"finished": bool(roll.finished[n]), "tokens": len(roll.response_ids[n])}}
                    n += 1
        for pi, p in enumerate(prompts):  # position must not reveal the model
            random.Random(_seed_of("order", self.cfg.seed, p.record["id"])).shuffle(out[pi])
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- the stage
def _paths(cfg: LabelConfig) -> dict[str, Any]:
    run = Path(cfg.run) if cfg.run else None
    out = Path(cfg.out) if cfg.out else (in_run(run, "label") if run else None)
    if out is None:
        raise UserError("--out: give an output folder (or --run)")
    world = Path(cfg.world) if cfg.world else (in_run(run, "world") if run else None)
    if world is None:
        raise UserError("--world: give the world folder (or --run)")
    return {"run": run, "out": out, "world": world}


def run(cfg: LabelConfig) -> Path:
    paths = _paths(cfg)
    with own_output(paths["out"]):  # a second igpt label on the same store stops here, before it can touch it
        return _label(cfg, paths)


def _label(cfg: LabelConfig, paths: dict[str, Any]) -> Path:
    from ..models import resolve_device
    from ..store import ComparisonStore
    from ..train import progress

    out: Path = paths["out"]
    specs = parse_model_specs(cfg.models, paths["run"])
    world = load_world(paths["world"])
    train_labs = list(world.labelers("train"))
    held_labs = list(world.labelers("heldout"))
    if cfg.labeler == "sim" and not train_labs:
        raise UserError(f"{paths['world']}: the world has no training labelers")
    labelers = {lab.name: lab for lab in train_labs + held_labs}
    plan = plan_prompts(list(world.prompts("rm")), cfg, train_labs, held_labs)
    if not plan:
        raise UserError(f"{paths['world']}: no comparison prompts (split 'rm')")

    if cfg.overwrite:
        _refuse_to_discard_people(out)
    # Where to write: a finished folder is extended in place with --resume; otherwise <out>.partial until done.
    if is_complete(out) and cfg.resume and not cfg.overwrite:
        work = out
    else:
        work = partial_path(out)
        if (work / STORE_FILE).exists() and not cfg.resume and not cfg.overwrite:
            raise UserError(f"{work} holds an interrupted labelling run: pass --resume to continue it, or --overwrite to start over")
        begin_output(out, overwrite=cfg.overwrite, resume=cfg.resume)
    store = ComparisonStore(work / STORE_FILE)
    try:
        sampler = ResponseSampler(specs, cfg, resolve_device(cfg.device))
        judge = world.judge() if hasattr(world, "judge") else None
        t0 = time.time()
        done_keys = store.tasks_with_keys()
        task_ids = store.task_ids_by_key() if done_keys else {}
        chunks = [plan[i : i + cfg.chunk_prompts] for i in range(0, len(plan), cfg.chunk_prompts)]
        bar = progress(len(plan), "label", enabled=cfg.progress, unit="prompt")
        counts = {"sampled": 0, "ranked": 0}
        for ci, chunk in enumerate(chunks):
            if cfg.stop_after and ci >= cfg.stop_after:
                bar.close()
                store.close()
                return work
            missing = [p for p in chunk if p.key not in done_keys]
            responses = sampler.sample(missing, ci) if missing else []
            with store.batch():  # the chunk's tasks and rankings: all written, or none
                for p, resp in zip(missing, responses):
                    text, extra = record_text(p.record)
                    meta = {"family": p.record.get("family"), "category": p.record.get("category"), **extra}
                    store.add_prompt(str(p.record["id"]), text, meta=meta, split=p.split)
                    task_ids[p.key] = store.add_task(str(p.record["id"]), resp, task_key=p.key,
                                                     want_labels=max(1, len(p.labelers)))
                    done_keys.add(p.key)
                counts["sampled"] += len(missing)
                if cfg.labeler == "sim":
                    counts["ranked"] += _rank_chunk(store, chunk, task_ids, labelers, cfg.seed, judge)
            bar.update(len(chunk))
        bar.close()
        summary = summarise(store, world, labelers, time.time() - t0, counts)
        _export(store, work)
        (work / "label_summary.json").write_text(json.dumps(summary, indent=1))
        if work != out:
            save_config(cfg, work)
        store.close()
        _print_summary(summary, cfg)
        if work != out:
            finish_output(work, out, {"tasks": summary["tasks"], "rankings": summary["rankings"]})
        return out
    finally:
        store.close()


def _rank_chunk(store: Any, chunk: list[PlannedPrompt], task_ids: dict[str, int], labelers: dict[str, Any], seed: int,
                judge: Any = None) -> int:
    """Planned simulated rankings that are not in the store yet (all of them, except when resuming).

    Flags: the labeler pool, and per response the problems the gold judge found, in the web page's form
    ``{"<index>": ["hallucination", ...]}`` (InstructGPT's labelers recorded such metadata with each ranking)."""
    n = 0
    for p in chunk:
        task = store.task(task_ids[p.key])
        texts = [r["text"] for r in task["responses"]]
        missing = [(name, pool) for name, pool in p.labelers if name not in task["labelers"]]
        if not missing:
            continue
        problems: dict[str, list[str]] = {}
        if judge is not None:
            for i, text in enumerate(texts):
                found = sorted(f for f, on in (getattr(judge.score(p.record, text), "flags", None) or {}).items() if on)
                if found:
                    problems[str(i)] = found
        for name, pool in missing:
            rng = random.Random(_seed_of("rank", seed, p.record["id"], name))
            order = labelers[name].rank(p.record, texts, rng)
            store.submit_ranking(task["task_id"], name, list(order), flags={"pool": pool, **problems},
                                 submission_id=f"{p.key}|{name}", source="sim")
            n += 1
    return n


def _export(store: Any, folder: Path) -> dict[str, int]:
    """ranked.jsonl / pairwise.jsonl (training comparisons) and ranked-heldout.jsonl / pairwise-heldout.jsonl."""
    from ..data.preferences import HELDOUT_SPLIT

    split_of = {r["ranking_id"]: r["split"] for r in store.rankings()}
    counts = {}
    for kind, export in (("ranked", store.export_ranked), ("pairwise", store.export_pairwise)):
        tmp = folder / f".{kind}.all.jsonl"
        export(tmp)
        train_lines, held_lines = [], []
        for line in tmp.read_text(encoding="utf-8").splitlines():
            rid = json.loads(line)["ranking_id"]
            (held_lines if split_of.get(rid) == HELDOUT_SPLIT else train_lines).append(line)
        tmp.unlink()
        for name, lines in ((f"{kind}.jsonl", train_lines), (f"{kind}-heldout.jsonl", held_lines)):
            part = folder / (name + ".tmp")
            part.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
            part.replace(folder / name)
            counts[name] = len(lines)
    return counts


def summarise(store: Any, world: Any, labelers: dict[str, Any], seconds: float, counts: dict) -> dict:
    """Counts, inter-labeler agreement (training pool, and training vs held-out pool) and agreement with the gold judge."""
    from ..data.preferences import HELDOUT_SPLIT

    rows = store.rankings()
    pools = {r["labeler"]: (r["flags"] or {}).get("pool", "train") for r in rows}
    train_names = [n for n, p in pools.items() if p == "train"]
    agree_train = store.agreement(labelers=train_names)["overall"]
    per_pair = store.agreement()["per_pair"]
    cross = {"agree": 0, "pairs": 0, "tasks": 0}
    for key, slot in per_pair.items():
        a, _, b = key.partition("|")
        if {pools.get(a, "train"), pools.get(b, "train")} == {"train", "heldout"}:
            for f in cross:
                cross[f] += slot[f]
    summary: dict[str, Any] = {
        "tasks": len(store.tasks_with_keys()),
        "rankings": len(rows),
        "heldout_tasks": len({r["task_id"] for r in rows if r["split"] == HELDOUT_SPLIT}),
        "sampled_this_run": counts["sampled"],
        "ranked_this_run": counts["ranked"],
        "seconds": round(seconds, 1),
        "agreement_train_labelers": agree_train["rate"],
        "agreement_train_pairs": agree_train["pairs"],
        "agreement_train_vs_heldout": cross["agree"] / cross["pairs"] if cross["pairs"] else None,
        "agreement_train_vs_heldout_pairs": cross["pairs"],
    }
    judge = world.judge() if hasattr(world, "judge") else None
    if judge is not None and rows:
        records = {str(r["id"]): r for r in world.prompts("rm")}
        cache: dict[tuple[int, int], float] = {}
        by_model: dict[str, list[float]] = {}
        for r in rows:
            rec = records.get(r["prompt_id"])
            if rec is None:
                continue
            for i, text in enumerate(r["responses"]):
                if (r["task_id"], i) not in cache:
                    cache[(r["task_id"], i)] = float(judge.score(rec, text).score)
                    label = f"{r['models'][i]}@{r['temperatures'][i]:g}" if r["temperatures"][i] is not None else str(r["models"][i])
                    by_model.setdefault(label, []).append(cache[(r["task_id"], i)])

        def gold(row: dict, text: str) -> float:
            i = row["responses"].index(text)
            return cache.get((row["task_id"], i), 0.0)

        summary["agreement_with_gold"] = store.agreement_with(gold)["overall"]["rate"]
        summary["gold_score_by_model"] = {m: round(sum(v) / len(v), 4) for m, v in sorted(by_model.items())}
    return summary


def _print_summary(s: dict, cfg: LabelConfig) -> None:
    def pct(x: Any) -> str:
        return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"

    print(f"igpt label: {s['tasks']} tasks, {s['rankings']} rankings ({s['heldout_tasks']} held-out tasks) in {s['seconds']}s")
    if cfg.labeler == "human":
        print("igpt label: tasks are queued for human labelers: igpt serve --run ... (rankings go to the same store)")
        return
    print(f"  labeler agreement: training labelers {pct(s['agreement_train_labelers'])} ({s['agreement_train_pairs']} pairs), "
          f"training vs held-out labelers {pct(s['agreement_train_vs_heldout'])} ({s['agreement_train_vs_heldout_pairs']} pairs); "
          f"InstructGPT: 72.6 +- 1.5%")
    if "agreement_with_gold" in s:
        print(f"  labelers agree with the gold judge on {pct(s['agreement_with_gold'])} of pairs")
        print("  mean gold score by model: " + ", ".join(f"{m} {v:.3f}" for m, v in s["gold_score_by_model"].items()))
