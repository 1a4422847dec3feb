"""``MODEL_CARD.md`` rendered from the pipeline's metrics files: the card's figures are never
typed, so a registered version's card states that run's figures.

The template (``docs/model_card.template.md``) holds ``{{name}}`` placeholders; :func:`figures`
computes every name from ``metrics/*.json``; :func:`render` refuses a placeholder it has no
figure for.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % with the default ``z``)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f} %"


def _accuracy_with_ci(accuracy: float, n: int) -> str:
    k = round(accuracy * n)
    lo, hi = wilson(k, n)
    return f"{_pct(accuracy)} ({k} / {n}; 95 % CI {100 * lo:.1f}–{100 * hi:.1f} %)"


def figures(metrics: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every placeholder's text from the metrics files (keys: the stage names ``prepare``,
    ``split``, ``evaluate``, ``crossval``, ``explain``, ``served``)."""
    evaluate, served, split = metrics["evaluate"], metrics["served"], metrics["split"]["splits"]
    prepare, crossval, explain = metrics["prepare"], metrics["crossval"], metrics["explain"]
    recall = evaluate["recall"]
    rows = []
    for name in sorted(recall):
        n = int(evaluate["support"][name])
        lo, hi = wilson(round(recall[name] * n), n)
        rows.append(
            f"| {name} | {n} | {_pct(evaluate['precision'][name])} | {_pct(recall[name])} "
            f"({100 * lo:.0f}–{100 * hi:.0f} %) | {evaluate['f1'][name]:.3f} |"
        )
    best, worst = max(recall, key=recall.get), min(recall, key=recall.get)
    fer = served["fer2013_publictest_crop"]
    return {
        "test_faces": str(evaluate["n"]),
        "test_accuracy": _accuracy_with_ci(evaluate["accuracy"], int(evaluate["n"])),
        "macro_f1": f"{evaluate['macro_f1']:.3f}",
        "crossval": f"{_pct(crossval['accuracy_mean'])[:-2]} ± {_pct(crossval['accuracy_std'])}",
        "crossval_folds": str(crossval["k"]),
        "served_accuracy": _pct(served["accuracy"]),
        "served_faces": f"{served['faces_found']} / {served['n']}",
        "served_tight_crops": _pct(served["sfew_test_tight_crops"]["accuracy"]),
        "fer2013_crop_accuracy": _pct(served["fer2013_publictest_crop_accuracy"]),
        "fer2013_faces": f"{fer['faces_found']} / {fer['n']}",
        "ferplus_crop_accuracy": _pct(served["ferplus_publictest_crop_accuracy"]),
        "ferplus_faces": str(served["ferplus_publictest_crop"]["n"]),
        "crossval_ferplus": _pct(crossval["ferplus_publictest_accuracy_mean"]),
        "detection_rate": _pct(prepare["detection_rate"], 2),
        "frames_found": f"{prepare['faces_found']} / {prepare['frames']}",
        "frames": str(prepare["frames"]),
        "faces_used": str(sum(s["images"] for s in split.values())),
        "train_faces": str(split["train"]["images"]),
        "val_faces": str(split["val"]["images"]),
        "disgust_train_faces": str(split["train"]["per_class"].get("Disgust", 0)),
        "class_table": "\n".join(rows),
        "best_class": f"{best} ({_pct(recall[best], 0)} recall)",
        "worst_class": f"{worst} ({_pct(recall[worst], 0)} recall)",
        "fidelity": _pct(explain["fidelity_test_mean"]),
        "tree_depth": str(explain["max_depth"]),
    }


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with every ``{{name}}`` replaced; a name without a value is an error. A
    leading HTML comment (the template's note to editors) is dropped."""
    template = re.sub(r"\A<!--.*?-->\n", "", template, flags=re.S)
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"the model card template needs figures it has no value for: {missing}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def load_metrics(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``stage name → its metrics file's JSON``."""
    return {
        name: json.loads(Path(path).read_text(encoding="utf-8")) for name, path in paths.items()
    }
