"""The game defined once: seeds, styles, observations, defender actions, payoffs, metrics. No solver imports."""
