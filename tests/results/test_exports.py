"""Tables written by --output/--predictions and the results store keep every number as computed."""
import numpy as np
import pandas as pd

from cliplab.results.exports import write_table


def test_jsonl_tables_keep_every_float_and_numpy_values(tmp_path):
    """Regression: JSONL tables kept 10 significant digits (DataFrame.to_json), so a --predictions .jsonl did not
    hold the scores a .parquet one holds (the results store had the fix on its own writer only)."""
    df = pd.DataFrame({"id": ["a", "b"], "score": [0.12345678901234567, float("nan")],
                       "correct": np.array([True, False]), "k": np.array([3, 4], dtype=np.int64)})
    for suffix in (".jsonl", ".parquet"):
        write_table(tmp_path / f"t{suffix}", df)
    back = pd.read_json(tmp_path / "t.jsonl", lines=True, precise_float=True)
    assert back["score"][0] == df["score"][0] and np.isnan(back["score"][1])  # exact; NaN as null
    assert back["correct"].tolist() == [True, False] and back["k"].tolist() == [3, 4]
    pd.testing.assert_frame_equal(back, pd.read_parquet(tmp_path / "t.parquet"), check_dtype=False)
