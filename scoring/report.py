"""The model report: the card's figures beside the points baseline, and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIGURES = (
    ("roc_auc", "ROC AUC", "higher is better"),
    ("pr_auc", "PR AUC", "higher is better"),
    ("log_loss", "log loss", "lower is better"),
    ("top_decile_lift", "top-decile lift", "higher is better"),
    ("calibration_error", "calibration error", "lower is better"),
)


def format_comparison(card: dict[str, Any]) -> str:
    """Return a table of the model's and the baseline's figures on the evaluation slice."""
    lines = [f"    {'figure':<20}{'model':>10}{'points':>10}"]
    for key, label, direction in FIGURES:
        lines.append(f"    {label:<20}{card['eval'][key]:>10.4f}{card['baseline'][key]:>10.4f}  ({direction})")
    return "\n".join(lines)


CALIBRATION_WARNING = 0.05
FEATURE_LEGEND = (
    "<signal>_24h and <signal>_168h: time-weighted counts (an action counts half after a day "
    "or a week); <signal>_last_24h and <signal>_last_7d: exact counts in clock hours and days"
)


def _rate(part: dict[str, Any]) -> str:
    return f"{part['positives'] / part['rows']:.1%}" if part["rows"] else "n/a"


def format_card(card: dict[str, Any]) -> str:
    """Return the model card as text for a terminal."""
    evaluation = card["eval"]
    lines = [
        f"model {card['version']}  (LightGBM {card['lightgbm_version']}, trained {card['trained_at']})",
        f"data: {card['source']['file'] or '?'}, {card['source']['events']} events, "
        f"{card['data_range']['from']} to {card['data_range']['to']}",
        f"label: a conversion within {card['horizon_days']:g} days of the scoring time",
        f"training rows: {card['train']['rows']} ({_rate(card['train'])} convert), "
        f"{card['train']['from']} to {card['train']['to']}",
        f"calibration rows: {card['calibration']['rows']} ({_rate(card['calibration'])} convert), "
        f"{card['calibration']['from']} to {card['calibration']['to']}; Platt scaling, slope "
        f"{card['calibration']['slope']:.3f}, intercept {card['calibration']['intercept']:.3f}",
        f"evaluation rows: {evaluation['rows']} ({_rate(evaluation)} convert), "
        f"{evaluation['from']} to {evaluation['to']}",
        "",
        "evaluation figures, model against hand-set points (config/points.toml):",
        format_comparison(card),
    ]
    if evaluation["calibration_error"] > CALIBRATION_WARNING:
        lines += [
            "",
            f"warning: calibration error {evaluation['calibration_error']:.3f} is above "
            f"{CALIBRATION_WARNING}: read scores as a ranking, not as probabilities. The "
            f"calibration slice converts at {_rate(card['calibration'])} and the evaluation "
            f"slice at {_rate(evaluation)}; a longer or more recent history usually helps.",
        ]
    lines += [
        "",
        f"features ({len(card['features'])}): {', '.join(card['features'])}",
        FEATURE_LEGEND,
    ]
    return "\n".join(lines)


def write_plots(card: dict[str, Any], path: str | Path) -> Path:
    """Write a PNG with the calibration curve and the lift per decile of model and baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, (calibration, lift) = plt.subplots(1, 2, figsize=(11, 4.5))
    calibration.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, key, colour in (("model", "eval", "tab:blue"), ("points", "baseline", "tab:orange")):
        bins = card[key]["calibration_bins"]
        calibration.plot([b["predicted"] for b in bins], [b["observed"] for b in bins],
                         marker="o", color=colour, label=name)
        for item in bins:  # label each point with its row count, because small bins are noise
            calibration.annotate(f"{item['rows']}", (item["predicted"], item["observed"]),
                                 textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
        deciles = range(1, len(card[key]["lift_by_decile"]) + 1)
        lift.bar([d + (-0.2 if key == "eval" else 0.2) for d in deciles], card[key]["lift_by_decile"],
                 width=0.4, color=colour, label=name)
    calibration.set(title="Calibration on the evaluation slice (labels: rows)", xlabel="predicted probability",
                    ylabel="observed conversion rate", xlim=(0, 1), ylim=(0, 1))
    calibration.legend()
    lift.axhline(1.0, color="grey", linestyle=":")
    lift.set(title="Lift by score decile (1 = top tenth)", xlabel="decile", ylabel="lift",
             xticks=list(range(1, 11)))
    lift.legend()
    figure.suptitle(f"model {card['version']}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)

    return path
