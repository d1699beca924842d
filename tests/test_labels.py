"""The Labels CSV contract shared by tune/eval/calibration."""

from __future__ import annotations

from pathlib import Path

import pytest

from convert.labels import LabelsError, read_labels


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_rows_relative_to_the_csv(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path, "path,label,location,sequence,extra\na/1.jpg,blank,site1,s1,x\na/2.jpg,Animal,site1,s1,y\n"
    )
    frames = read_labels(csv_path)
    assert [f.path for f in frames] == [tmp_path / "a/1.jpg", tmp_path / "a/2.jpg"]
    assert [f.nonblank for f in frames] == [False, True]
    assert frames[1].label == "animal" and frames[1].sequence == "s1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("file,label\nx.jpg,blank\n", "header lacks path"),
        ("path,label\nx.jpg,empty\n", ":2: label 'empty'"),
        ("path,label\n,blank\n", ":2: empty path"),
        ("path,label\n", "no rows"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(LabelsError) as err:
        read_labels(write(tmp_path, text))
    assert str(tmp_path / "labels.csv") in str(err.value)
    assert needle in str(err.value)
