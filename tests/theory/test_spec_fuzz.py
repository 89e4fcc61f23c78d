"""Fuzzed game-spec parameters: a valid spec or a ValueError naming the field, nothing else."""

from hypothesis import example, given, settings
from hypothesis import strategies as st

from redgame.theory import make_spec, preset_params
from redgame.theory.presets import PRESETS

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e10, 1e300, 2.0**63, -1e10]),  # integer-valued floats: sizes that must be refused
    st.integers(-5, 12),
    st.booleans(),
    st.text(max_size=8),
    st.none(),
)
keys = st.one_of(st.sampled_from(sorted({k for name in PRESETS for k in preset_params(name)})), st.text(max_size=6))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(PRESETS)), params=st.dictionaries(keys, values, max_size=4))
@example(name="family", params={"name": None})  # a parameter called "name": an unknown parameter, not a TypeError
def test_make_spec_never_raises_anything_but_a_named_value_error(name, params):
    try:
        spec = make_spec(name, **params)
    except ValueError as exc:
        message = str(exc)
        assert message and "\n" not in message
        named = [k for k in params if message.startswith((f"{k}:", f"{k!r}:"))]
        assert named or message.split(":")[0] in ("prior", "payoff", "game", "faithful", "n", "k", "harmful", "benign"), message
    else:
        assert spec.n_seeds >= 1 and spec.obs_probs.shape[:2] == (spec.n_seeds, spec.n_styles)
