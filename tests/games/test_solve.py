"""The solver front door, cross-checked: scipy LP vs OpenSpiel LP vs nashpy, and the optimal sets."""

import itertools

import nashpy
import numpy as np
import pytest

from redgame.games.exploitability import matrix_nash_conv
from redgame.games.optimal_sets import optimal_sets
from redgame.errors import UserError
from redgame.games.solve import METHODS, solve, solve_matrix
from redgame.theory import make_spec


@pytest.mark.parametrize("seed", range(24))
def test_zero_sum_values_agree_across_three_solvers(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=tuple(rng.integers(2, 5, size=2)))
    lp = solve_matrix(a, method="linprog").value
    os_lp = solve_matrix(a, method="openspiel-lp").equilibria[0].attacker_payoff
    # nashpy's support enumeration compares floats with == and misses equilibria of random
    # real-valued games, so nashpy is asked through vertex enumeration here.
    nash = solve_matrix(a, method="nashpy-vertex").equilibria
    assert nash, "nashpy found no equilibrium on a random (non-degenerate) game"
    for eq in nash:
        assert eq.attacker_payoff == pytest.approx(lp, abs=1e-8)
    assert os_lp == pytest.approx(lp, abs=1e-8)
    assert solve_matrix(a, method="enumerate").value == pytest.approx(lp, abs=1e-8)


@pytest.mark.parametrize("seed", range(10))
def test_lemke_howson_equilibria_are_in_the_vertex_enumeration_set(seed):
    rng = np.random.default_rng(100 + seed)
    shape = tuple(rng.integers(2, 5, size=2))
    a, b = rng.normal(size=shape), rng.normal(size=shape)
    vertex = solve_matrix(a, b, method="nashpy-vertex").equilibria
    lh = solve_matrix(a, b, method="lemke-howson").equilibria
    assert lh
    for eq in lh:
        assert eq.gap < 1e-8
        assert any(np.allclose(eq.attacker, v.attacker, atol=1e-7) and np.allclose(eq.defender, v.defender, atol=1e-7)
                   for v in vertex)


def _pure_optimal(a, value, axis):
    """Pure strategies that are optimal, found by brute force: an independent check of the sets."""
    if axis == 0:  # attacker rows guaranteeing the value
        return [i for i in range(a.shape[0]) if a[i].min() >= value - 1e-9]
    return [j for j in range(a.shape[1]) if a[:, j].max() <= value + 1e-9]


@pytest.mark.parametrize("seed", range(12))
def test_optimal_sets_on_degenerate_games(seed):
    # Integer payoffs in {0, 1} make the games degenerate, like the red-team games.
    rng = np.random.default_rng(200 + seed)
    a = rng.integers(0, 2, size=tuple(rng.integers(2, 5, size=2))).astype(float)
    value, xs, ys = optimal_sets(a)
    for x in xs:
        assert (x @ a).min() >= value - 1e-8 and abs(x.sum() - 1) < 1e-9 and (x >= -1e-12).all()
    for y in ys:
        assert (a @ y).max() <= value + 1e-8
    for i in _pure_optimal(a, value, 0):
        assert any(np.allclose(x, np.eye(a.shape[0])[i]) for x in xs)
    for j in _pure_optimal(a, value, 1):
        assert any(np.allclose(y, np.eye(a.shape[1])[j]) for y in ys)
    # Every equilibrium nashpy reports lies in X* x Y*; on degenerate games it may report fewer.
    for x, y in nashpy.Game(a, -a).support_enumeration():
        assert (x @ a).min() >= value - 1e-8 and (a @ y).max() <= value + 1e-8


def _brute_vertices(g, v):
    """Vertices of {x >= 0, sum x = 1, x^T G >= v}, every square subsystem solved: an independent reference."""
    m, n = g.shape
    rows, rhs = np.vstack([np.eye(m), g.T]), np.r_[np.zeros(m), np.full(n, v)]
    found = []
    for subset in itertools.combinations(range(m + n), m - 1):
        mat, b = np.vstack([np.ones(m), rows[list(subset)]]), np.r_[1.0, rhs[list(subset)]]
        if abs(np.linalg.det(mat)) < 1e-10:
            continue
        x = np.linalg.solve(mat, b)
        if (x >= -1e-9).all() and (x @ g >= v - 1e-9).all() and not any(np.allclose(x, y, atol=1e-6) for y in found):
            found.append(x)
    return found


def _same_points(got, want):
    return len(got) == len(want) and all(any(np.allclose(x, y, atol=1e-6) for y in want) for x in got)


@pytest.mark.parametrize("seed", range(60))
def test_optimal_sets_are_the_brute_force_vertices(seed):
    # Generic games (one equilibrium) up to 6 x 6 and degenerate integer games: the vertex lists equal a
    # brute-force enumeration; the solver tolerance adds no sliver vertex beside an exact one.
    rng = np.random.default_rng(300 + seed)
    shape = tuple(rng.integers(1, 7, size=2)) if seed % 2 else tuple(rng.integers(1, 5, size=2))
    a = rng.normal(size=shape) if seed % 2 else rng.integers(-1, 2, size=shape).astype(float)
    a *= (1.0, 1e-5, 1e6)[seed % 3]  # the sets do not depend on the payoffs' units
    value, xs, ys = optimal_sets(a)
    unit, unit_value = a / (np.ptp(a) or 1.0), value / (np.ptp(a) or 1.0)  # the reference's tolerances are absolute
    assert _same_points(xs, _brute_vertices(unit, unit_value)) and _same_points(ys, _brute_vertices(-unit.T, -unit_value))
    if seed % 2:
        assert len(xs) == len(ys) == 1


@pytest.mark.parametrize("a, attacker, defender", [
    ([[0.0, -1e-3]], [[1.0]], [[0.0, 1.0]]),  # the second column is better by 1e-3: it alone is optimal
    ([[1.0, 0.0], [0.0, 1.0], [0.5, 0.4999]], [[0.5, 0.5, 0.0]], [[0.5, 0.5]]),  # a row short by 1e-4
])
def test_a_nearly_optimal_strategy_is_not_listed(a, attacker, defender):
    _, xs, ys = optimal_sets(np.array(a))
    assert np.allclose(xs, attacker, atol=1e-12) and np.allclose(ys, defender, atol=1e-12)


def test_nashpy_drops_equilibria_on_the_degenerate_prompt_map():
    spec = make_spec("prompt_map", lam=0.0)
    ours = solve(spec, method="enumerate")
    assert {"always_refuse", "oracle"} <= set(ours.defender_classes)
    # nashpy's vertex enumeration assumes a non-degenerate game and silently finds nothing here.
    vertex = solve(spec, method="nashpy-vertex")
    assert len(vertex.equilibria) < len(ours.equilibria)


def test_every_equilibrium_is_checked():
    for method in ("enumerate", "linprog", "openspiel-lp", "lemke-howson"):
        sol = solve(make_spec("hidden_intent", lam=0.3), method=method)
        assert sol.equilibria
        for eq in sol.equilibria:
            assert eq.gap < 1e-7
            x, y = eq.attacker, eq.defender
            assert eq.gap == pytest.approx(matrix_nash_conv(*_nf(sol.spec), x, y), abs=1e-12)


def _nf(spec):
    from redgame.theory import normal_form

    nf = normal_form(spec)
    return nf.attacker_payoffs, nf.defender_payoffs


def test_general_sum_spec_uses_a_general_sum_method():
    spec = make_spec("hidden_intent", payoff="nonzero_sum", benign_attack=0.0, lam=0.5)
    assert not spec.is_zero_sum
    sol = solve(spec)
    assert sol.equilibria and sol.max_gap < 1e-8 and sol.value is None
    with pytest.raises(ValueError, match="zero-sum"):
        solve(spec, method="linprog")


def test_replicator_reports_its_gap():
    sol = solve(np.array([[1.0, -1.0], [-1.0, 1.0]]), method="replicator")
    assert np.isfinite(sol.equilibria[0].gap)


def test_bad_method_and_matrix():
    with pytest.raises(ValueError, match="method"):
        solve("hidden_intent", method="magic")
    with pytest.raises(ValueError, match="payoff matrix"):
        solve_matrix(np.array([[np.nan]]))
    assert "sequence-form-lp" in METHODS


def test_nashpy_enumerations_refuse_games_they_would_take_hours_on():
    """Support enumeration tries (2^m - 1)(2^n - 1) support pairs: past the limit, one line at once."""
    from redgame.games.solve import NASHPY_SUPPORT_MAX_PAIRS, NASHPY_VERTEX_MAX_ENTRIES

    wide = np.zeros((4, 16))  # 15 * 65535 support pairs
    assert 15 * 65535 > NASHPY_SUPPORT_MAX_PAIRS
    with pytest.raises(UserError, match="nashpy-support would try 9.83e\\+05 support pairs"):
        solve_matrix(wide, method="nashpy-support")
    big = np.zeros((11, 10))
    assert big.size > NASHPY_VERTEX_MAX_ENTRIES
    with pytest.raises(UserError, match="nashpy-vertex on a 11×10 game"):
        solve_matrix(big, method="nashpy-vertex")
    (pennies,) = solve_matrix(np.array([[1.0, -1.0], [-1.0, 1.0]]), method="nashpy-support").equilibria  # small: runs
    np.testing.assert_allclose(pennies.attacker, [0.5, 0.5])


@pytest.mark.parametrize("method", ["lemke-howson", "nashpy-vertex", "nashpy-support"])
def test_a_player_with_one_strategy_meets_each_best_response(method):
    """nashpy's Lemke-Howson hangs or raises on a 1×n or m×1 game; the equilibria are the lone strategy
    against each of the other player's pure best responses."""
    row = solve_matrix(np.array([[0.2, 0.5, 0.1]]), np.array([[-0.1, -0.6, -0.1]]), method=method).equilibria
    assert sorted(tuple(e.defender) for e in row) == [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0)]  # the tie: both
    (col,) = solve_matrix(np.array([[0.2], [0.5]]), np.array([[-0.1], [-0.6]]), method=method).equilibria
    np.testing.assert_array_equal(col.attacker, [0.0, 1.0])
    assert col.gap == 0.0


def test_cfr_stops_at_its_exact_cap_and_says_it_did_not_converge():
    solution = solve(make_spec("hidden_intent"), "cfr", iterations=5, target=1e-12)
    assert solution.iterations == 5 and "not converged" in solution.note
    assert solve(make_spec("hidden_intent"), "cfr+", target=1e-2).note in (None, "")


def test_solve_json_is_strict_json_with_null_for_a_missing_gap(capsys):
    import json

    from redgame.cli import main

    assert main(["toy", "solve", "--game", "prompt_map", "--param", "lam=0", "--method", "nashpy-vertex",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and json.loads(out)["max_gap"] is None  # nashpy finds no equilibrium here (docs)


def test_cfr_target_must_be_a_finite_positive_number():
    """NaN passed `target <= 0` and ran to the cap with no note that it had not converged."""
    for target in (float("nan"), 0.0, float("inf")):
        with pytest.raises(UserError, match="target: must be a finite number > 0"):
            solve(make_spec("hidden_intent"), method="cfr", target=target)


def test_family_harmful_is_a_count_or_minus_one():
    assert sum(make_spec("family", n=4, harmful=-1).harmful_mask) == 2
    with pytest.raises(UserError, match="harmful: must lie in"):
        make_spec("family", n=4, harmful=-5)  # it meant n // 2, silently


@pytest.mark.parametrize("n", [8, 300])
def test_auto_on_a_general_sum_game_too_large_for_its_normal_form_says_so_once(n):
    spec = make_spec("family", n=n, k=4, payoff="nonzero_sum", safety=2)
    assert not spec.sums_to_zero
    with pytest.raises(UserError) as err:
        solve(spec, method="auto")
    message = str(err.value)
    assert message.count("too large") == 1 and "cfr+" in message and "sequence-form-linprog" not in message
    assert len(message) < 300  # strategy counts past a million as orders of magnitude, not 90-digit integers


def test_a_nonzero_sum_payoff_that_is_zero_sum_in_its_game_is_solved_as_one():
    # The preset's weights (benign_attack = helpfulness, attack_success = safety) and no unfaithful style in
    # hidden_intent: u_A + u_D = 0 on every outcome, whatever the payoff's type.
    spec = make_spec("hidden_intent", payoff="nonzero_sum")
    zero = make_spec("hidden_intent")
    assert spec.sums_to_zero and not spec.is_zero_sum
    assert not make_spec("hidden_intent", payoff="nonzero_sum", safety=2).sums_to_zero
    auto, listed = solve(spec, method="auto"), solve(spec, method="enumerate")
    assert auto.method == "enumerate" and len(auto.equilibria) == len(listed.equilibria) == 4
    assert auto.value == pytest.approx(solve(zero, method="auto").value, abs=1e-12)
    assert solve(spec, method="sequence-form-linprog").value == pytest.approx(auto.value, abs=1e-9)


def test_nashpy_support_missing_the_equilibrium_of_a_generic_game_does_not_blame_degeneracy():
    a = np.array([[-0.23493279640908496, -0.41376384324268234, 0.5544675350795898, 0.6138501359810715],
                  [0.3820300691786012, -1.0521268312007939, -0.3142268610437008, -1.6254592103256966],
                  [-1.5668897740611265, -0.6347933471206841, -1.1325814508998646, -0.4956102868976653]])
    b = np.array([[2.392772217170665, 0.4025426374596253, -0.980901437513614, -2.261459792935038],
                  [-0.9428343485501535, -1.5433629844530297, -2.311529977901388, 0.605044677013374],
                  [-0.602545854033424, 0.31645127035302306, 2.966238210900678, 0.14657582474666686]])
    missed = solve_matrix(a, b, method="nashpy-support")
    assert not missed.equilibria and "of this degenerate game" not in missed.note and "lemke-howson" in missed.note
    assert len(solve_matrix(a, b, method="lemke-howson").equilibria) == 1  # it has one


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e5, 1e6])
def test_the_optimal_sets_do_not_depend_on_the_payoffs_units(scale):
    # Two games where fixed tolerances went wrong at some scale: an ill-conditioned basis passed a
    # determinant cutoff at 1e5 (a sixth vertex), and a vertex was lost at 1e-3.
    whole = np.array([[1, -1, -1, -1], [-1, -1, 0, -1], [-1, -1, 1, -1], [1, 0, 1, -1], [0, 1, 1, -1]], float)
    _, xs, _ = optimal_sets(whole * scale)
    assert _same_points(xs, list(np.eye(5)))  # the last column pays -1 whatever the row: every row is optimal
    two = np.array([[0, 0, -1, 1, -1, 0], [-1, 1, 0, 1, -1, -1], [-1, 0, 1, 0, 1, 1], [0, 0, 1, 1, 1, 0],
                    [0, -1, 0, 1, -1, 1], [1, 1, 0, -1, 1, 0]], float)
    value, xs, _ = optimal_sets(two * scale)
    assert value == pytest.approx(2 / 9 * scale, rel=1e-9)
    assert _same_points(xs, [np.array([0, 0, 1, 4, 1, 3]) / 9, np.array([3, 0, 2, 5, 2, 6]) / 18])


@pytest.mark.parametrize("params", [dict(q=0.9999999), dict(q=0.5, lam=1e-7)])
def test_optimal_sets_below_the_enumerations_precision_fall_back_to_the_lp(params):
    """A payoff gap below EQUALITY_TOL of the range emptied the enumerated polytope: an internal RuntimeError
    from the default method, on valid parameters."""
    spec = make_spec("hidden_intent", **params)
    lam = params.get("lam", 0.5)  # the presets' default lam
    solution = solve(spec)
    closed_form = (1 - params["q"]) * min(lam, 1.0) / 2  # hidden_intent's value
    assert solution.value == pytest.approx(closed_form, abs=1e-12)
    assert "cannot be enumerated at this precision" in solution.note
    with pytest.raises(UserError, match="cannot be enumerated at this precision"):
        solve(spec, method="enumerate")


@pytest.mark.parametrize("game, lam", [("prompt_map", 1e-6), ("prompt_map", 1e-8), ("prompt_map", 1e-9),
                                       ("hidden_intent", 1e-7)])
def test_a_payoff_within_the_precision_of_the_value_is_refused_not_enumerated_wrong(game, lam):
    """The sets came out, but wrong, without a word: prompt_map listed 2 of its 4 optimal attacks at lam 1e-6 to 1e-8
    and 28 pairs (21 of them no equilibrium) at 1e-9; hidden_intent one of its two optimal defences at 1e-7."""
    spec = make_spec(game, lam=lam)
    solution = solve(spec)
    assert solution.method == "sequence-form-linprog" and "cannot be enumerated at this precision" in solution.note
    with pytest.raises(UserError, match="cannot be enumerated at this precision"):
        solve(spec, method="enumerate")


def test_a_matrix_the_enumeration_refuses_falls_back_to_the_lp_under_auto():
    """The third row, never played, lies 1e-7 from the value: enumerate refuses it (a false alarm the docs own), and
    auto on a matrix raised that error where auto on a spec falls back."""
    a = np.array([[1.0, 0.0], [0.0, 1.0], [0.5 + 1e-7, -1.0]])
    solution = solve(a)
    assert solution.method == "linprog" and solution.value == pytest.approx(0.5)
    assert "cannot be enumerated at this precision; this is the LP's value" in solution.note


def test_prompt_map_at_a_small_lam_the_enumeration_holds_lists_all_four_optimal_attacks():
    """Every payoff of prompt_map is at least 0, its value, for lam > 0: every pure attack is optimal."""
    solution = solve(make_spec("prompt_map", lam=3e-6), method="enumerate")
    assert solution.value == 0 and len(solution.attacker_optimal) == 4


def test_optimal_sets_too_large_to_list_are_still_called_too_large():
    """The precision fallback caught TooLargeToEnumerate too (a UserError is a ValueError) and renamed it."""
    from redgame.theory.strategies import EnumerationFailed, TooLargeToEnumerate

    with pytest.raises(TooLargeToEnumerate, match="too large to enumerate") as raised:
        solve(make_spec("family", n=3), method="enumerate")
    assert not isinstance(raised.value, EnumerationFailed)


def test_mismatched_payoff_shapes_are_one_line_under_auto():
    with pytest.raises(UserError, match="defender payoffs: expected the attacker payoffs' shape \\(2, 2\\), got \\(2, 3\\)"):
        solve((np.ones((2, 2)), np.ones((2, 3))))  # auto: numpy's broadcast error before


@pytest.mark.parametrize("payoffs, says", [
    ([[0.5, float("nan")], [0.2, 0.8]], "entry \\[0, 1\\] is nan; payoffs must be finite"),  # 4 repeats, 321 chars
    ([[1.0, 2.0], [3.0]], "expected a matrix of numbers"),  # numpy's ValueError
    ([["a", "b"], ["c", "d"]], "expected a matrix of numbers, got <U1 entries"),
    ([[1j, 0], [0, 1]], "expected a matrix of numbers, got complex128 entries"),  # a TypeError
    ([[True, False], [False, True]], "expected a matrix of numbers, got bool entries"),  # taken as 1 and 0
])
def test_a_meta_game_that_is_no_matrix_of_finite_numbers_is_one_line(payoffs, says):
    from redgame.games.metagame import solve_metagame

    with pytest.raises(UserError, match=f"^payoffs: {says}"):
        solve_metagame(payoffs, defender_payoffs=[[0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(UserError, match=f"^payoff matrix: {says}"):
        solve(payoffs)


def test_payoffs_near_1e_minus_8_keep_only_the_equilibria_of_the_same_game_at_scale_1():
    """The gap tolerance had a floor of 1: every cell of battle of the sexes at 1e-8 passed as a pure equilibrium."""
    a, b = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 2.0]])
    cells = [(int(e.attacker.argmax()), int(e.defender.argmax())) for e in solve((a, b), method="pure").equilibria]
    assert cells == [(0, 0), (1, 1)]
    tiny = [(int(e.attacker.argmax()), int(e.defender.argmax()))
            for e in solve((a * 1e-8, b * 1e-8), method="pure").equilibria]
    assert tiny == cells


def test_openspiel_lp_keeps_no_pair_that_is_no_equilibrium_and_a_failed_solve_is_one_line():
    """ECOS's absolute tolerance: at payoffs near 1e-8 its pair was 20% of the payoff range off equilibrium and was
    kept; at 1e8 cvxpy failed and the caller got an internal TypeError."""
    pytest.importorskip("cvxpy")
    rng = np.random.default_rng(3)
    small = rng.standard_normal((3, 4)) * 1e-8
    solution = solve(small, method="openspiel-lp")
    assert all(e.gap <= 1e-6 * np.abs(small).max() for e in solution.equilibria)
    assert solution.equilibria or "absolute tolerance, which these payoffs fall below; use linprog" in solution.note
    large = np.array([[1.827, -3.078, 0.958, 0.07], [1.318, 0.386, 1.827, 0.032], [-0.516, 0.58, 0.432, -0.357]]) * 1e8
    try:  # cvxpy 1.9's ECOS fails on it; another version may solve it, and then its pair is checked as above
        solution = solve(large, method="openspiel-lp")
    except UserError as exc:
        assert "openspiel-lp: OpenSpiel's LP (cvxpy) failed on this game" in str(exc)
    else:
        assert all(e.gap <= 1e-6 * np.abs(large).max() for e in solution.equilibria)
