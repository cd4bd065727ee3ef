"""instructgpt: the InstructGPT recipe (pretrain -> SFT -> reward model -> PPO-ptx -> evaluation) as installable software."""

__version__ = "0.1.0"
