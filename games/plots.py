"""PNG plots of a dynamics run (matplotlib, Agg backend, no display needed).

- ``asr.png``: self-play and best-response ASR over the steps (means over runs, each run
  faint), the mirror gap between them shaded;
- ``refusal_by_style.png``: for the run with the largest final mirror gap, the defender's
  refusal probability per (seed, style) cell at the start and at the end, with the final
  attacker's probability of each style;
- ``phase_<metric>.png``: a phase diagram (``games.phase``) as a heatmap per metric, each
  cell annotated with its mean and 95% interval over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from redgame.figures import save_figure
from redgame.games.dynamics import Trajectory
from redgame.theory.classify import refusal


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_asr(traj: Trajectory, path: Path) -> Path:
    plt = _pyplot()
    steps, sp, br = traj.steps, traj.metrics["selfplay_asr"], traj.metrics["best_response_asr"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(steps, sp, color="tab:blue", alpha=0.15, lw=0.8)
    ax.plot(steps, br, color="tab:red", alpha=0.15, lw=0.8)
    ax.fill_between(steps, sp.mean(axis=1), br.mean(axis=1), color="tab:red", alpha=0.15, label="mirror gap")
    ax.plot(steps, sp.mean(axis=1), color="tab:blue", lw=2, label="self-play ASR")
    ax.plot(steps, br.mean(axis=1), color="tab:red", lw=2, label="best-response ASR")
    c = traj.config
    ax.set_title(f"{c.regime} ({c.model}) on {traj.spec.name}: {c.runs} seeds, eta={c.lr:g}"
                 + (f", g={c.g:+g}" if c.regime in ("shared", "bipolicy") else ""), fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("attacker payoff")
    ax.set_ylim(-0.02, max(1.02, float(br.max()) + 0.02))
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_refusal_by_style(traj: Trajectory, path: Path, run: int = 0) -> Path:
    plt = _pyplot()
    spec = traj.spec
    final = refusal(spec, traj.rho[run])  # [S, K]
    fig, axes = plt.subplots(spec.n_seeds, 1, figsize=(6.4, 1.0 + 1.8 * spec.n_seeds), dpi=100, squeeze=False)
    x = np.arange(spec.n_styles)
    for s, ax in enumerate(axes[:, 0]):
        if traj.initial_refusal is not None:
            ax.bar(x - 0.2, traj.initial_refusal[run, s], width=0.4, color="lightgray", label="P(refuse), start")
        ax.bar(x + 0.2, final[s], width=0.4, color="tab:green", label="P(refuse), end")
        ax.plot(x, traj.sigma[run, s], "o", color="tab:blue", label="attacker P(style), end")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(spec.seeds[s].name, fontsize=8)
        ax.set_xticks(x, spec.styles, fontsize=7, rotation=30 if spec.n_styles > 6 else 0)
    gap = traj.metrics["mirror_gap"][-1, run]
    axes[0, 0].set_title(f"refusal by style: {traj.config.regime} on {spec.name}, run {run} (mirror gap {gap:.2f})",
                         fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


PHASE_TITLES = {
    "mirror_gap": "mirror gap (best-response - self-play ASR)",
    "best_response_asr": "best-response ASR",
    "selfplay_asr": "self-play ASR",
    "collapse_rate": "share of seeds that collapse",
}


def plot_phase(diagram, metric: str, path: Path) -> Path:
    """One heatmap of ``metric`` over a PhaseDiagram's one or two keys."""
    plt = _pyplot()
    values = diagram.grid(metric)
    ci = np.array([c[f"{metric}_ci"] for c in diagram.cells]).reshape(values.shape + (2,))
    if values.ndim == 1:
        values, ci = values[None, :], ci[None, :]
    x_key, x_values = diagram.keys[0], diagram.values[0]
    y_key, y_values = (diagram.keys[1], diagram.values[1]) if len(diagram.keys) > 1 else ("", [""])
    grid, bounds = values.T, ci.transpose(1, 0, 2)  # rows: the second key; columns: the first
    fig, ax = plt.subplots(figsize=(1.2 + 1.25 * len(x_values), 1.2 + 0.8 * len(y_values)), dpi=100)
    image = ax.imshow(grid, origin="lower", cmap="Reds", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        low, high = bounds[i, j]
        ax.text(j, i, f"{v:.2f}\n[{low:.2f}, {high:.2f}]", ha="center", va="center", fontsize=7,
                color="white" if v > 0.6 else "black")
    ax.set_xticks(range(len(x_values)), [f"{v:g}" if isinstance(v, float) else str(v) for v in x_values])
    ax.set_yticks(range(len(y_values)), [f"{v:g}" if isinstance(v, float) else str(v) for v in y_values])
    ax.set(xlabel=x_key, ylabel=y_key)
    ax.set_title(f"{PHASE_TITLES[metric]}: {diagram.regime}, {diagram.model}, {diagram.seeds} seeds",
                 fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    return save_figure(fig, path)


TRAJECTORY_PLOTS = ("asr.png", "refusal_by_style.png")  # what plot_trajectory writes


def plot_trajectory(traj: Trajectory, out_dir: Path) -> list[Path]:
    """Both plots (:data:`TRAJECTORY_PLOTS`) into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    widest = int(np.nanargmax(traj.metrics["mirror_gap"][-1]))
    asr, by_style = (out_dir / name for name in TRAJECTORY_PLOTS)
    return [plot_asr(traj, asr), plot_refusal_by_style(traj, by_style, run=widest)]
