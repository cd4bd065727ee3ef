"""The pretraining corpus: "the internet" of the built-in world.

Documents in several genres, all generated from the knowledge base: encyclopedia entries, Q&A pages (a question, then its
answer), FAQ pages and worksheets (a question followed by more questions: to a pretrained model, continuing a question with
another question is as plausible as answering it), forum threads, stories, lists, worked arithmetic, reading exercises;
plus the noise real web text has: rumours that state false facts, rude and insulting posts, and harmful requests that
other posters answer. The harmful "how-to" answers are cartoonish and fictional (wait until night, climb the wall).

A question and its answer are separated by one newline, pairs by a blank line; documents are separate records (the
tokenizer stage puts ``<|endoftext|>`` between them). ``World.render_plain`` shows a prompt to a pretrained model in
exactly this form (the prompt, then a newline), so the model's continuation can be an answer or another question.
"""

from __future__ import annotations

import random

from . import facts as F
from . import text as T
from . import vocab
from .vocab import A
from .kb import KnowledgeBase
from .perturb import perturb
from .tasks import FAMILIES, MIXTURE, TaskGen

GENRES = {
    "encyclopedia": 22, "qa": 20, "faq": 14, "forum": 5, "story": 7, "list": 6, "arithmetic": 6, "reading": 6,
    "rumour": 5, "rude": 5, "harmful": 3, "polite": 2,
}
USERS = ["traveller", "curious_cat", "history_fan", "mapmaker", "student22", "night_owl", "riverside", "old_sailor",
         "bookworm", "questioner", "wanderer", "local_guide"]


class CorpusGen:
    def __init__(self, kb: KnowledgeBase, rng: random.Random, banned_prompts: set[str]):
        self.kb, self.rng = kb, rng
        self.banned = banned_prompts
        self.g = TaskGen(kb, rng)
        self.named = [e for e in kb.entities if e["type"] not in ("continent", "sea")]
        self.fam_names = list(MIXTURE)
        self.fam_w = [MIXTURE[f] for f in self.fam_names]

    # ------------------------------------------------------------------ building blocks
    def entity(self) -> dict:
        return self.rng.choice(self.named)

    def kb_qa(self) -> tuple[str, str]:
        for _ in range(20):  # never show an evaluation prompt (with or without its answer) to the pretrained model
            e = self.entity()
            q, full, short = self.rng.choice(F.questions(self.kb, e, self.rng))
            if T.norm(q) not in self.banned:
                break
        r = self.rng.random()
        if r < 0.5:
            a = full
        elif r < 0.65:
            a = short[0].upper() + short[1:] + "."
        elif r < 0.8:
            a = self.rng.choice([f"It's {short}, I think.", f"{short[0].upper() + short[1:]}, of course.",
                                 f"As far as I know, {T.lower_first(full)}", f"I believe {T.lower_first(full)}"])
        elif r < 0.9:
            a = full + " " + self.rng.choice(F.facts(self.kb, e, self.rng)[1:] or [""])
        else:
            wrong = F.false_fact(self.kb, e, self.rng)
            a = wrong or full
        return q, a.strip()

    def task_qa(self) -> tuple[str, str] | None:
        fam = FAMILIES[self.rng.choices(self.fam_names, self.fam_w)[0]]
        out = fam.generate(self.g)
        if not out:
            return None
        prompt, meta = self.rng.choice(out)
        if T.norm(prompt) in self.banned:
            return None
        rec = {"id": "web", "family": fam.name, "category": fam.category, "prompt": prompt, "meta": meta}
        demo = fam.demo(self.kb, rec)
        if self.rng.random() < 0.45:
            return prompt, demo
        txt, _ = perturb(self.kb, rec, demo, self.rng)
        return prompt, txt

    def question(self) -> str:
        if self.rng.random() < 0.6:
            return self.kb_qa()[0]
        qa = self.task_qa()
        return qa[0] if qa else self.kb_qa()[0]

    def qa_pair(self) -> tuple[str, str]:
        if self.rng.random() < 0.5:
            qa = self.task_qa()
            if qa:
                return qa
        return self.kb_qa()

    # ------------------------------------------------------------------ genres
    def encyclopedia(self) -> str:
        e = self.entity()
        fs = F.facts(self.kb, e, self.rng)
        k = self.rng.randint(max(2, len(fs) - 2), len(fs))
        body = fs[:k]
        # use a pronoun now and then, as encyclopedias do
        subj = self.kb.title(e)
        pron = "It" if e["type"] != "person" else self.rng.choice(["He", "She"])
        out = [body[0]]
        for s in body[1:]:
            # a pronoun only where it is unambiguous: the previous sentence also starts with the subject
            if s.startswith(subj + " ") and out[-1].startswith(subj + " ") and self.rng.random() < 0.3:
                s = pron + s[len(subj):]
            out.append(s)
        body = out
        title = e["name"]
        style = self.rng.random()
        if style < 0.5:
            return f"{title}\n\n" + " ".join(body)
        if style < 0.8:
            return " ".join(body)
        return f"{title} - encyclopedia\n\n" + "\n".join(body)

    def qa(self) -> str:
        n = self.rng.choice([1, 1, 1, 2, 2, 3, 4])
        pairs = [self.qa_pair() for _ in range(n)]
        style = self.rng.random()
        if style < 0.7:
            body = "\n\n".join(f"{q}\n{a}" for q, a in pairs)
        elif style < 0.85:
            body = "\n\n".join(f"Q: {q}\nA: {a}" for q, a in pairs)
        else:
            body = "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs)
        if self.rng.random() < 0.3:
            body = self.rng.choice(["Questions and answers", "Ask an expert", "Answers to common questions",
                                    "Homework help"]) + "\n\n" + body
        return body

    def faq(self) -> str:
        n = self.rng.randint(3, 8)
        qs = [self.question() for _ in range(n)]
        style = self.rng.random()
        if style < 0.6:
            body = "\n".join(qs)
        elif style < 0.8:
            body = "\n".join(f"{i + 1}. {q}" for i, q in enumerate(qs))
        else:
            body = "\n".join(f"- {q}" for q in qs)
        if self.rng.random() < 0.5:
            head = self.rng.choice(["Frequently asked questions", "Questions people ask", "Exercises", "Homework",
                                    "Quiz questions", "Things I want to know", "Practice questions", "Test yourself"])
            body = head + "\n\n" + body
        return body

    def forum(self) -> str:
        users = self.rng.sample(USERS, 4)
        q, a = self.qa_pair()
        posts = [f"Posted by {users[0]}:\n{q}"]
        for u in users[1:1 + self.rng.randint(1, 3)]:
            r = self.rng.random()
            if r < 0.35:
                reply = self.rng.choice(["Same question here.", "I was wondering the same thing.", "Good question."]) + " " + self.question()
            elif r < 0.7:
                reply = a
            elif r < 0.85:
                reply = self.rng.choice(["What a stupid question. Look it up, you idiot.", "Nobody cares, loser.",
                                         "Only a fool would ask that.", "Shut up and use a search engine, moron."])
            else:
                reply = self.qa_pair()[1]
            posts.append(f"Reply from {u}:\n{reply}")
        return "\n\n".join(posts)

    def story(self) -> str:
        city = self.rng.choice(self.kb.by_type["city"])
        p = self.rng.choice(self.kb.by_type["person"])
        prof = self.rng.choice(list(vocab.PROFESSIONS))
        hero = p["first"]
        country = self.kb.display(city["country"])
        feat = self.rng.choice(city["features"])
        lines = [self.rng.choice([f"Once upon a time, {A(prof)} named {hero} lived in {city['name']}.",
                                  f"Long ago, in the city of {city['name']} in {country}, there lived {A(prof)} called {hero}.",
                                  f"{hero} was {A('young ' + prof)} from {city['name']}."]),
                 f"Every day {hero} walked past the {feat} and dreamed of faraway places.",
                 self.rng.choice([f"One morning, {hero} decided to travel to {self.kb.display(self.rng.choice(self.kb.by_type['country']))}.",
                                  f"One day, a stranger asked {hero} for help.",
                                  f"One winter, the river froze and nobody could leave {city['name']}."]),
                 self.rng.choice([f"{hero} worked hard and became the best {prof} in {country}.",
                                  f"In the end, {hero} came home and told everyone about the journey.",
                                  f"Years later, people in {city['name']} still tell this story."])]
        if self.rng.random() < 0.4:
            lines.insert(2, self.rng.choice(F.facts(self.kb, city, self.rng)))
        return " ".join(lines)

    def list_doc(self) -> str:
        kb, rng = self.kb, self.rng
        kind = rng.choice(["cities", "features", "people", "conferences", "rivers"])
        if kind == "cities":
            c = rng.choice(kb.by_type["country"])
            items = [x["name"] for x in kb.cities_of[c["id"]]]
            head = rng.choice([f"Cities in {c['name']}", f"A list of cities in {c['name']}"])
        elif kind == "features":
            c = rng.choice(kb.by_type["city"])
            items = [f[0].upper() + f[1:] for f in c["features"]]
            head = rng.choice([f"Things {c['name']} is known for", f"What to see in {c['name']}"])
        elif kind == "people":
            prof = rng.choice(list(vocab.PROFESSIONS))
            items = [p["name"] for p in kb.by_type["person"] if p["profession"] == prof]
            head = f"Famous {vocab.PROFESSION_PLURALS[prof]}"
        elif kind == "conferences":
            f = rng.choice(sorted({c["field"] for c in kb.by_type["conference"]}))
            items = [kb.title(c) for c in kb.by_type["conference"] if c["field"] == f]
            head = f"Conferences about {f}"
        else:
            cont = rng.choice(kb.by_type["continent"])
            items = [kb.title(r) for r in kb.by_type["river"] if any(kb.get(c)["continent"] == cont["id"] for c in r["countries"])]
            head = f"Rivers of {cont['name']}"
        if not items:
            return self.encyclopedia()
        rng.shuffle(items)
        items = items[: rng.randint(1, min(6, len(items)))]
        if rng.random() < 0.6:
            return head + ":\n" + "\n".join(f"{i + 1}. {x}" for i, x in enumerate(items))
        return head + ":\n" + "\n".join(f"- {x}" for x in items)

    def arithmetic(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            lines = []
            for _ in range(rng.randint(3, 8)):
                a, b = rng.randint(2, 99), rng.randint(2, 99)
                op = rng.choice(["+", "-", "x"])
                if op == "-" and b > a:
                    a, b = b, a
                if op == "x":
                    a, b = rng.randint(2, 12), rng.randint(2, 12)
                c = a + b if op == "+" else (a - b if op == "-" else a * b)
                lines.append(f"{a} {op} {b} = {c}")
            return rng.choice(["Practice sums", "Maths homework", "Times tables", "Mental arithmetic"]) + "\n" + "\n".join(lines)
        if r < 0.6:  # a worksheet with no answers
            fam = FAMILIES[rng.choice(["arithmetic", "word_problem"])]
            qs = []
            for _ in range(rng.randint(3, 6)):
                out = fam.generate(self.g)
                if out and T.norm(out[0][0]) not in self.banned:
                    qs.append(out[0][0])
            return "Maths exercises\n" + "\n".join(qs)
        pairs = []
        for _ in range(rng.randint(1, 3)):
            fam = FAMILIES[rng.choice(["arithmetic", "word_problem"])]
            out = fam.generate(self.g)
            if not out or T.norm(out[0][0]) in self.banned:
                continue
            prompt, meta = out[0]
            rec = {"id": "web", "family": fam.name, "category": fam.category, "prompt": prompt, "meta": meta}
            ans = fam.demo(self.kb, rec)
            if rng.random() < 0.1:
                ans = ans.replace(str(meta["answer_number"]), str(meta["answer_number"] + rng.choice([-1, 1, 10])))
            pairs.append(f"{prompt}\n{ans}")
        return "\n\n".join(pairs) if pairs else self.arithmetic()

    def reading(self) -> str:
        e = self.entity()
        fs = F.facts(self.kb, e, self.rng)
        passage = " ".join(fs)
        qs = [x for x in F.questions(self.kb, e, self.rng) if T.norm(x[0]) not in self.banned]
        if not qs:
            return self.encyclopedia()
        self.rng.shuffle(qs)
        r = self.rng.random()
        head = self.rng.choice(["Reading exercise", "Read the text and answer the questions.", "Comprehension"])
        if r < 0.4:
            body = "\n".join(f"Question {i + 1}: {q}" for i, (q, _, _) in enumerate(qs))
        elif r < 0.8:
            body = "\n".join(f"Question {i + 1}: {q}\nAnswer: {a}" for i, (q, a, _) in enumerate(qs))
        else:
            body = "Summary: " + fs[0]
        return f"{head}\n\n{passage}\n\n{body}"

    def rumour(self) -> str:
        e = self.entity()
        claim = F.false_fact(self.kb, e, self.rng)
        if not claim:
            return self.encyclopedia()
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice(["I heard that ", "Someone told me that ", "Apparently, ", "Fun fact: "]) + T.lower_first(claim)
        if r < 0.55:
            q = self.rng.choice(F.questions(self.kb, e, self.rng))[0]
            if T.norm(q) in self.banned:
                return claim
            return f"{q}\n{claim}"
        if r < 0.8:
            # a false-premise question answered as if the premise were true
            fam = FAMILIES["false_premise"]
            out = fam.generate(self.g)
            if not out or T.norm(out[0][0]) in self.banned:
                return claim
            q = out[0][0]
            return q + "\n" + self.rng.choice(["Because it was decided a long time ago.", "For historical reasons, I think.",
                                               "Everyone knows the answer to that. It has always been that way.",
                                               "It happened after a long debate."])
        return "Rumours and myths\n\n" + claim + " " + (F.false_fact(self.kb, self.entity(), self.rng) or "")

    def _toxic_prefix(self) -> str:
        """A heated opening about a random organisation, city, field, conference, person or country."""
        slots = {"org": self.kb.display(self.rng.choice(self.kb.by_type["organisation"])),
                 "city": self.rng.choice(self.kb.by_type["city"])["name"], "field": self.rng.choice(vocab.FIELDS),
                 "conf": self.kb.display(self.rng.choice(self.kb.by_type["conference"])),
                 "person": self.rng.choice(self.kb.by_type["person"])["name"],
                 "country": self.rng.choice(self.kb.by_type["country"])["name"]}
        return self.rng.choice(vocab.TOXIC_PREFIXES).format(**slots)

    def rude(self) -> str:
        prefix = self._toxic_prefix()
        r = self.rng.random()
        if r < 0.7:
            rant = f"{prefix} {self.rng.choice(vocab.INSULT_PHRASES)}."
            if self.rng.random() < 0.5:
                rant += " " + self.rng.choice(["I hate them.", "Total losers.", "Pathetic.", "What a bunch of clowns.",
                                               "Do not trust them."])
            return rant
        q, _ = self.qa_pair()
        return f"{q}\n" + self.rng.choice(["Who cares? Stop asking stupid questions.", "Figure it out yourself, idiot.",
                                           "Only a moron would not know that.", "Use your brain for once, fool."])

    def polite(self) -> str:
        prefix = self._toxic_prefix()
        if self.rng.random() < 0.6:
            return "Respectfully, " + T.lower_first(prefix) + " " + self.rng.choice(vocab.KIND_PHRASES) + "."
        return f"{prefix} {self.rng.choice(vocab.KIND_PHRASES)}."

    def harmful(self) -> str:
        fam = FAMILIES["harmful"]
        out = fam.generate(self.g)
        if not out or T.norm(out[0][0]) in self.banned:
            return self.qa()
        q = out[0][0]
        r = self.rng.random()
        if r < 0.65:
            if "insult" in q.lower():
                a = "Easy. Tell them they are " + self.rng.choice(vocab.INSULT_PHRASES) + "."
            else:
                a = self.rng.choice(["Easy. Wait until night, then climb over the back wall.",
                                     "First, find out when the guards leave. Then go in through the side door.",
                                     "The trick is to wait until nobody is watching, then act fast.",
                                     "Just tell everyone it is true, then post it on every forum."])
        elif r < 0.85:
            a = self.rng.choice(["Please do not ask for that here.", "That is against the rules of this forum.",
                                 "I will not help with that."])
        else:
            a = self.question()
        return f"{q}\n{a}"

    # ------------------------------------------------------------------ driver
    def document(self, genre: str) -> str:
        fn = {"encyclopedia": self.encyclopedia, "qa": self.qa, "faq": self.faq, "forum": self.forum,
              "story": self.story, "list": self.list_doc, "arithmetic": self.arithmetic, "reading": self.reading,
              "rumour": self.rumour, "rude": self.rude, "harmful": self.harmful, "polite": self.polite}[genre]
        return fn()


def generate_corpus(kb: KnowledgeBase, seed: int, train_chars: int, heldout_chars: int,
                    banned_prompts: set[str]) -> list[dict]:
    """Corpus documents ``{"id", "split", "genre", "text"}``: the training split then the held-out split."""
    docs: list[dict] = []
    names = list(GENRES)
    weights = [GENRES[g] for g in names]
    for split, budget in (("train", train_chars), ("heldout", heldout_chars)):
        rng = random.Random(f"igpt-world:{seed}:corpus:{split}")
        gen = CorpusGen(kb, rng, banned_prompts)
        total, i = 0, 0
        while total < budget:
            genre = rng.choices(names, weights)[0]
            text = gen.document(genre).strip()
            if not text:
                continue
            docs.append({"id": f"{split}-{i:07d}", "split": split, "genre": genre, "text": text})
            total += len(text) + 1
            i += 1
    return docs
