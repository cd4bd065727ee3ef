"""The built-in world: a seeded fictional universe standing in for the internet, the labelers and the human evaluation.

    from instructgpt.world import World
    w = World.generate(seed=0, size="default")
    w.save("runs/x/world"); w = World.load("runs/x/world")
    w.judge().score(w.prompts("eval")[0], "some response")

See docs/world.md for the files, schemas and every judge criterion.
"""

from .core import SIZES, World
from .judge import FLAGS, Judge, JudgeResult
from .labelers import SimLabeler

__all__ = ["World", "SIZES", "Judge", "JudgeResult", "FLAGS", "SimLabeler"]
