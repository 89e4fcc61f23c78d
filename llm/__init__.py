"""The LLM game: role adapters on one frozen base model, judges, rollouts, trainer."""
