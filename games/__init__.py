"""OpenSpiel games built from a theory spec, the solver front door, learning dynamics, meta-games."""
