"""redgame: red-team training of language models as an Attacker-Defender game.

Layers (one distribution, one namespace):

- ``redgame.theory``  the game defined once (seeds, styles, observations, payoffs);
- ``redgame.games``   OpenSpiel games built from a spec, the solver front door, dynamics;
- ``redgame.llm``     the LLM game: role adapters on one frozen base, judges, trainer;
- ``redgame.kernels`` fused Triton kernels with torch references and dispatch.
"""

__version__ = "0.1.0"
