"""Redraw a learning-curve plot from the ``method@Ts`` rows of several ``accuracy.py --curve`` runs.

``accuracy.py --curve`` plots the methods of one run. Runs made on different days (e.g. ε-Seg+ retrained with a
newer preset, next to a U-Net curve measured earlier on the same clicks and machine type) go in one figure with
this script; each file's methods are labelled with the text given after ``=``. Files given the same label are
averaged point by point (seeds): the plot shows their mean and, as error bars, their range.

Usage (from the repository root)::

    python benchmarks/learning_curve.py --dataset vnc:sparse_0.05pct \\
        --results "runs/acc/curve_new/results.json=ε-Seg+ (2026-12-07)" "runs/acc/curve_old/results.json=" \\
        [--methods epsseg_calibrated unet_sparse] --output bundle/docs/figures/learning_curve_vnc.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import CURVE_LABELS, learning_curve_plot  # noqa: E402


def merge_curve_rows(
    sources: list[tuple[Path, str]], dataset: str, methods: list[str] | None = None
) -> tuple[dict[str, dict], dict[str, str]]:
    """The ``method@Ts`` rows of ``dataset`` from each ``(results.json, label)``, one curve per method and label.

    Files with the same label are runs of the same methods (e.g. two seeds, or a seed's short budgets in one run and
    its long one in another): a point that several of them hold becomes their mean, with ``dice_min``,
    ``dice_max`` and ``runs`` (the count) in its row so that the plot draws the spread. Different labels stay
    apart, as ``method[i]@Ts`` with ``i`` the label's index in order of appearance. The legend text of each is
    ``label`` + the method's name, or the method's name alone when ``label`` is empty, with the number of runs
    averaged where more than one. A label whose files hold one method (after ``methods``) is that curve's whole
    legend text.

    Raises:
        FileNotFoundError: a results file is missing.
        ValueError: a file has no curve rows for ``dataset`` (names the file and the datasets it has).
    """
    groups: dict[str, int] = {}
    values: dict[str, list[float]] = {}
    labels: dict[str, str] = {}
    for path, label in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: give the results.json that accuracy.py --curve wrote.")
        results = json.loads(path.read_text())
        if dataset not in results:
            raise ValueError(f"{path} has no rows for {dataset}; it has {sorted(results)}.")
        index = groups.setdefault(label, len(groups))
        found = 0
        for key, row in results[dataset]["methods"].items():
            if "@" not in key:
                continue
            method, point = key.split("@")
            if methods and method not in methods:
                continue
            name = f"{method}[{index}]"
            values.setdefault(f"{name}@{point}", []).append(float(row["mean_dice"]))
            base = CURVE_LABELS.get(method, method)
            labels[name] = f"{label}: {base}" if label else base
            found += 1
        if not found:
            raise ValueError(f"{path} has no learning-curve rows (method@Ts) for {dataset} and methods {methods}.")
    for label, index in groups.items():  # a label given to one method alone is its whole legend text
        names = [name for name in labels if name.endswith(f"[{index}]")]
        if label and len(names) == 1:
            labels[names[0]] = label
    rows: dict[str, dict] = {}
    runs: dict[str, int] = {}
    for key, dice in values.items():
        rows[key] = {
            "mean_dice": sum(dice) / len(dice),
            "dice_min": min(dice),
            "dice_max": max(dice),
            "runs": len(dice),
        }
        name = key.split("@")[0]
        runs[name] = max(runs.get(name, 1), len(dice))
    for name, count in runs.items():
        if count > 1:
            labels[name] += f" (mean of {count} runs)"
    return rows, labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="the results.json entry, e.g. vnc:sparse_0.05pct")
    parser.add_argument("--results", nargs="+", required=True, help="FILE=LABEL (LABEL may be empty)")
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (default: all curve rows)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    sources = [(Path(item.partition("=")[0]), item.partition("=")[2]) for item in args.results]
    rows, labels = merge_curve_rows(sources, args.dataset, args.methods)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not learning_curve_plot(rows, args.title or args.dataset.replace(":", " "), args.output, labels):
        raise SystemExit("no plot written (matplotlib missing?)")
    print(f"learning curve: {args.output}")


if __name__ == "__main__":
    main()
