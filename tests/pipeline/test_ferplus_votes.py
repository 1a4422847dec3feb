"""FER+'s votes joined onto the real FER2013 files by path, as the ``ferplus`` and ``served``
stages join them: a known face gets its votes, and the counts the docs quote hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferops.data import CLASSES
from ferops.fer2013 import load_paths
from ferops.ferplus import NO_LABEL, join_votes, majority_labels, read_votes, vote_targets
from tests.paths import RAW_FERPLUS


def _joined(fer_root: Path, split: str) -> tuple[list[str], np.ndarray]:
    paths, _ = load_paths(fer_root, split)
    names = [p.relative_to(fer_root).as_posix() for p in paths]
    return names, join_votes(read_votes(RAW_FERPLUS / "votes.csv"), names, len(names))


def test_a_known_face_gets_its_votes_at_its_place(fer_root: Path) -> None:
    names, votes = _joined(fer_root, "train")
    row = names.index("train/Angry/Training_10118481.jpg")
    # neutral 2, sadness 1, anger 7 (votes.csv row of fer0011724.png)
    assert votes[row].tolist() == [2, 0, 0, 1, 7, 0, 0, 0, 0, 0]
    assert majority_labels(votes[row : row + 1])[0] == CLASSES.index("Angry")
    targets, learns = vote_targets(votes[row : row + 1])
    assert learns[0] and targets[0][CLASSES.index("Angry")] == np.float32(0.7)


def test_counts_of_the_join_and_the_rules(fer_root: Path) -> None:
    _, train = _joined(fer_root, "train")
    _, public = _joined(fer_root, "publictest")
    assert len(train) == 28709 and int((train.sum(1) > 0).sum()) == 28560
    assert len(public) == 3589 and int((public.sum(1) > 0).sum()) == 3579
    assert int((majority_labels(public) != NO_LABEL).sum()) == 3370  # 159 ties, 50 other
    assert int(vote_targets(train)[1].sum()) == 28406
