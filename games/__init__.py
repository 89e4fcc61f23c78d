"""OpenSpiel games built from a theory spec, the solver front door, learning dynamics, meta-games.

Importing the package registers every preset as an OpenSpiel game, ``redgame_<preset>``
(OpenSpiel's own convention, as ``import open_spiel.python.games`` does), so that
``pyspiel.load_game("redgame_hidden_intent(lam=0.25)")`` works after ``import redgame.games``.
That costs the import of pyspiel, about 0.1 s on top of numpy.
"""

from redgame.games import openspiel_game as _openspiel_game  # noqa: F401  (registers redgame_*)
