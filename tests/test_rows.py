"""Rows of a split: stage 1 and stage 3 draw the same random rows for the same seed (rows.py)."""
import pandas as pd
import pytest

from neurosymbolic_llm.pipeline import rows
from neurosymbolic_llm.pipeline.configs import FineTuneConfig, TrainEncodersConfig
from neurosymbolic_llm.pipeline.errors import DataError
from neurosymbolic_llm.pipeline.fine_tune_inputs import load_rows
from neurosymbolic_llm.stages.gather import load_split_problems

KEY = ["problem_type", "x", "y", "question", "solution"]


def stage1(seed=7, **kw):
    return TrainEncodersConfig(seed=seed, train_data_rounds=900, val_data_rounds=50, testing_data_rounds=600, **kw)


def stage3(seed=7, **kw):
    # 25 steps x 16 samples = 400 training rows, 30 validation rows, 12 test rows of each type
    return FineTuneConfig(seed=seed, num_steps=25, n_samples=8, inference_to_backprop_ratio=2, validation_rows=30,
                          testing_num_steps=6, testing_n_samples=2, **kw)


def test_stage_1_and_stage_3_draw_the_same_random_rows():
    s1 = {split: load_split_problems(stage1(), split)[0] for split in rows.SPLITS}
    train3, from_csv = load_rows(stage3(), "train")
    assert not from_csv and len(train3) == 400
    pd.testing.assert_frame_equal(train3[KEY], s1["train"][KEY].iloc[:400])
    pd.testing.assert_frame_equal(load_rows(stage3(), "val")[0][KEY], s1["val"][KEY].iloc[:30])
    # test: stage 3 takes the first 12 rows of each evaluated type of the same stream
    test3 = load_rows(stage3(), "test")[0]
    assert test3["problem_type"].value_counts().to_dict() == {t: 12 for t in stage3().testing_problems}
    for t, part in test3.groupby("problem_type"):
        first = s1["test"][s1["test"]["problem_type"] == t].iloc[:12]
        assert part[["x", "y"]].values.tolist() == first[["x", "y"]].values.tolist(), t
    # another seed, other rows; splits never share a stream
    other = load_rows(stage3(seed=8), "train")[0]
    assert len(set(zip(other.x, other.y)) & set(zip(train3.x, train3.y))) < 40
    assert not train3[["x", "y"]].head(50).equals(s1["val"][["x", "y"]].head(50))


def test_random_stream_is_prefix_stable_across_blocks():
    cfg = stage1()
    long = rows.draw_rows(cfg, "train", 3 * rows.BLOCK)
    short = rows.draw_rows(cfg, "train", rows.BLOCK + 100)
    pd.testing.assert_frame_equal(short, long.iloc[:rows.BLOCK + 100].reset_index(drop=True))
    assert not long.duplicated(["problem_type", "x", "y"]).any()
    assert set(long["problem_type"]) == set(cfg.problem_type) and (long["x"] > long["y"]).all()
    with pytest.raises(DataError, match="cannot draw 50 distinct problems"):
        rows.draw_rows(stage1(complexity=0, problem_type=["gcd"]), "train", 50)  # 9 * 8 / 2 = 36 exist


def test_csv_rows_are_used_as_they_are(tmp_path):
    path = tmp_path / "val.csv"
    csv = rows.draw_rows(stage1(seed=3), "val", 40)
    csv.to_csv(path, index=False)
    got, source = load_split_problems(stage1(val_data_df_path=str(path)), "val")
    pd.testing.assert_frame_equal(got[KEY], csv[KEY], check_dtype=False)
    assert source["csv"] == str(path.resolve())
    got3, from_csv = load_rows(stage3(val_data_df_path=str(path)), "val")
    assert from_csv and got3[KEY].equals(got[KEY].iloc[:30])  # capped by --validation_rows
