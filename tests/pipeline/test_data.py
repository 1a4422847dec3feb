"""SFEW file names, scanning and label conflicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferops.data import CLASSES, label_conflicts, parse_frame_name, scan_frames


def test_clip_is_movie_plus_timestamp_even_with_underscores_in_the_movie() -> None:
    movie, clip, frame = parse_frame_name("HarryPotter_Deathly_Hallows_1_001610960_00000028")
    assert (movie, clip, frame) == (
        "HarryPotter_Deathly_Hallows_1",
        "HarryPotter_Deathly_Hallows_1_001610960",
        "00000028",
    )


def test_odd_name_is_its_own_clip() -> None:
    assert parse_frame_name("weird") == ("weird", "weird", "0")


def test_real_sfew_has_675_frames_in_7_classes(sfew_root: Path) -> None:
    frames = scan_frames(sfew_root)
    assert len(frames) == 675
    assert {f.label for f in frames} == set(CLASSES)
    assert len({f.image_id for f in frames}) == 675


def test_real_sfew_has_exactly_the_documented_label_conflict(sfew_root: Path) -> None:
    conflicts = label_conflicts(scan_frames(sfew_root))
    stem = "HarryPotter_Deathly_Hallows_1_001610960_00000028"
    assert sorted(conflicts) == [f"Fear/{stem}", f"Surprise/{stem}"]


def test_unknown_class_folder_is_an_error_naming_the_classes(tmp_path: Path) -> None:
    (tmp_path / "Contempt").mkdir()
    (tmp_path / "Contempt" / "a_1_2.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="Angry"):
        scan_frames(tmp_path)


def test_missing_folder_says_to_pull(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dvc pull"):
        scan_frames(tmp_path / "nothing")
