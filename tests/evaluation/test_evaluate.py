import pytest

from mmvla.evaluation.evaluate import EpisodeResult, read_rephrase_file, summarise


def test_summarise_per_split_and_family():
    rs = [
        EpisodeResult("train", i, "pick" if i % 2 else "push", "x", "x", success=i < 3, length=10 + i)
        for i in range(6)
    ] + [EpisodeResult("unseen", 0, "pick", "y", "y", success=False, length=50)]
    m = summarise(rs)
    assert m["success"] == {"train": 0.5, "unseen": 0.0}
    assert m["episodes"] == {"train": 6, "unseen": 1}
    assert m["per_family"]["train"]["pick"]["success"] == pytest.approx(1 / 3)  # seeds 1, 3, 5 -> only 1
    assert m["per_family"]["train"]["push"]["success"] == pytest.approx(2 / 3)  # seeds 0, 2, 4 -> 0, 2
    assert m["length"]["train"]["mean_success"] == pytest.approx(11.0)  # lengths 10, 11, 12


def test_rephrase_file(tmp_path):
    p = tmp_path / "r.tsv"
    p.write_text("# comment\npick up the red cube\tgrab the red block\n\n")
    assert read_rephrase_file(p) == {"pick up the red cube": "grab the red block"}
    p.write_text("no tab here\n")
    with pytest.raises(ValueError, match=":1:"):
        read_rephrase_file(p)
