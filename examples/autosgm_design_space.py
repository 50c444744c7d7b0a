"""AutoSGM's filter design space: heavy ball, Nesterov and a README zero, side by side.

AutoSGM smooths the gradient with a first-order lowpass filter with pole beta and
zero gamma. For one pole beta this script draws three classical designs, all with
the input gain eta = 1 of classical momentum (``optax.trace``), so they share the
DC gain 1 / (1 - beta):

* heavy ball, gamma = 0;
* Nesterov, gamma = beta / (1 + beta);
* the zero gamma = 1 - sqrt(2 (1 - beta)) used in the AutoSGM README.

Four panels: the magnitude and phase responses over [0, pi]
(``garo_optax.lowpass_response``), the pole-zero diagram, and the largest stable
``learning_rate * curvature`` of gradient descent on a quadratic as a function
of the zero (``garo_optax.max_stable_step``, the closed form
2 (1 + beta)(1 - gamma) / (eta (1 + gamma))). A larger zero lifts the filter's
high-frequency gain and so shrinks the stable step; gamma = beta cancels the
pole, which leaves plain gradient descent with step alpha / (1 - beta).

Pure NumPy and matplotlib (Agg backend, no display); it takes about a second.
The README zero needs beta >= 0.5. Usage::

    python examples/autosgm_design_space.py --out autosgm_design_space.png --beta 0.9
"""

import argparse
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import garo_optax  # noqa: E402


def designs(beta: float) -> dict[str, float]:
    """The zero of each named design for the pole ``beta``, by label."""
    if not 0.5 <= beta < 1.0:
        raise ValueError(f"beta must be in [0.5, 1) for the README zero, got {beta!r}")
    return {
        "heavy ball (γ = 0)": 0.0,
        "Nesterov (γ = β/(1+β))": beta / (1.0 + beta),
        "README (γ = 1 − √(2(1−β)))": 1.0 - math.sqrt(2.0 * (1.0 - beta)),
    }


def main(out: str = "autosgm_design_space.png", beta: float = 0.9) -> str:
    """Plots the design-space figure for the pole ``beta`` and saves it as a PNG.

    Args:
      out: path of the PNG to write.
      beta: the filter pole, in [0.5, 1).

    Returns:
      The path written, ``out``.
    """
    zeros = designs(beta)
    colors = dict(zip(zeros, ("tab:blue", "tab:orange", "tab:green")))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    (ax_mag, ax_phase), (ax_pz, ax_step) = axes

    for label, zero in zeros.items():
        response = garo_optax.lowpass_response(beta, zero, 1.0)
        omega = response.frequencies / np.pi
        ax_mag.plot(omega, 20 * np.log10(response.magnitude), color=colors[label],
                    label=label)  # fmt: skip
        ax_phase.plot(omega, np.degrees(response.phase), color=colors[label],
                      label=label)  # fmt: skip
    ax_mag.set(
        title=f"Magnitude response, β = {beta:g}, η = 1",
        xlabel="frequency ω / π",
        ylabel=r"$|H(e^{i\omega})|$ (dB)",
    )
    ax_phase.set(
        title="Phase response",
        xlabel="frequency ω / π",
        ylabel=r"$\arg H(e^{i\omega})$ (degrees)",
    )
    for ax in (ax_mag, ax_phase):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)

    circle = np.linspace(0.0, 2.0 * np.pi, 400)
    ax_pz.plot(np.cos(circle), np.sin(circle), color="0.6", lw=1)
    ax_pz.axhline(0.0, color="0.85", lw=0.8, zorder=0)
    ax_pz.axvline(0.0, color="0.85", lw=0.8, zorder=0)
    ax_pz.plot([beta], [0.0], "kx", ms=12, mew=2.5, label=f"pole β = {beta:g}")
    for label, zero in zeros.items():
        ax_pz.plot([zero], [0.0], "o", ms=11, mfc="none", mew=2.2,
                   color=colors[label], label=f"zero γ = {zero:.3f}")  # fmt: skip
    ax_pz.set(
        title="Pole-zero diagram (all three share the pole)",
        xlabel="Re z",
        ylabel="Im z",
        xlim=(-1.15, 1.15),
        ylim=(-1.15, 1.15),
        aspect="equal",
    )
    ax_pz.legend(fontsize=9, loc="lower left")

    gammas = np.linspace(0.0, 0.995, 400)
    bounds = [garo_optax.max_stable_step(beta, g, 1.0) for g in gammas]
    ax_step.semilogy(gammas, bounds, color="k", lw=1.5,
                     label="max stable αλ = 2(1+β)(1−γ)/(η(1+γ))")  # fmt: skip
    ax_step.fill_between(gammas, 1e-3, bounds, color="0.9")
    for label, zero in zeros.items():
        bound = garo_optax.max_stable_step(beta, zero, 1.0)
        ax_step.plot([zero], [bound], "o", ms=9, color=colors[label],
                     label=f"{label.split(' (')[0]}: {bound:.3f}")  # fmt: skip
    cancel = garo_optax.max_stable_step(beta, beta, 1.0)
    ax_step.plot([beta], [cancel], "s", ms=8, color="tab:red",
                 label=f"γ = β (no smoothing): {cancel:.3f}")  # fmt: skip
    ax_step.axhline(2.0, color="0.5", ls="--", lw=1, label="plain GD: 2")
    ax_step.set(
        title=f"Stability on a quadratic (η = 1, β = {beta:g}): 0 < αλ < max",
        xlabel="zero γ",
        ylabel="αλ",
        xlim=(-0.02, 1.0),
        ylim=(min(bounds) / 2, max(bounds) * 2),
    )
    ax_step.grid(alpha=0.3, which="both")
    ax_step.legend(fontsize=8.5, loc="lower left")

    fig.suptitle("AutoSGM smoothing filter H(z) = η/(1−γ) · (1 − γz⁻¹)/(1 − βz⁻¹)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="autosgm_design_space.png")
    parser.add_argument("--beta", type=float, default=0.9)
    args = parser.parse_args()
    print(main(out=args.out, beta=args.beta))
