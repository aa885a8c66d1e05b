"""csv:FILE[:LABEL_COLUMN] (issue 26 item 2): pandas reads it, numeric columns standardised and text columns
one-hot as the adult reader does, Parquet where pyarrow is present, and one line for every mistake."""

import numpy as np
import pytest

from edgeprune.data import DATASETS, load_dataset
from edgeprune.errors import DataError

pd = pytest.importorskip("pandas")


def table(n=120, seed=0):
    """make_classification's 6 features, a categorical column that carries the class, and a label column."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=6, n_informative=4, n_classes=3, random_state=seed)
    df = pd.DataFrame(x * 10 + 3, columns=[f"f{i}" for i in range(6)])
    df["colour"] = np.array(["red", "green", "blue"])[y]
    df["species"] = np.array(["ant", "bee", "cat"])[y]
    return df, y


def test_csv_default_label_column_one_hot_and_standardised(tmp_path):
    df, y = table()
    df = df.rename(columns={"species": "label"})
    df.to_csv(tmp_path / "t.csv", index=False)
    ds = load_dataset(f"csv:{tmp_path / 't.csv'}")
    assert len(ds) == 120 and ds.num_classes == 3 and ds.x.dtype == np.float32
    assert ds.preprocessing["classes"] == ["ant", "bee", "cat"]
    np.testing.assert_array_equal(ds.y, y)  # classes in sorted order: ant=0, bee=1, cat=2 as drawn
    names = ds.preprocessing["features"]
    assert names[:6] == [f"f{i}" for i in range(6)] and names[6:] == ["colour=blue", "colour=green", "colour=red"]
    f0 = ds.x[:, 0]
    assert abs(float(f0.mean())) < 1e-5 and abs(float(f0.std()) - 1) < 1e-3
    mean, std = ds.preprocessing["standardise"]["f0"]
    np.testing.assert_allclose(f0, (df["f0"] - mean) / std, rtol=1e-5, atol=1e-5)
    assert (ds.x[:, 6:].sum(1) == 1).all() and ds.preprocessing["categories"]["colour"] == ["blue", "green", "red"]


def test_csv_named_label_column_missing_values_and_tsv(tmp_path):
    df, y = table()
    df.loc[3, "f2"] = np.nan
    df.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    ds = load_dataset(f"csv:{tmp_path / 't.tsv'}:species")
    assert len(ds) == 119 and ds.preprocessing["dropped"] == "1 rows with a missing value"
    assert ds.preprocessing["label_column"] == "species" and ds.in_shape == (9,)
    np.testing.assert_array_equal(ds.y, np.delete(y, 3))


def test_parquet_with_pyarrow(tmp_path):
    pytest.importorskip("pyarrow")
    df, _ = table()
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    a, b = load_dataset(f"csv:{tmp_path / 't.csv'}:species"), load_dataset(f"csv:{tmp_path / 't.parquet'}:species")
    np.testing.assert_allclose(a.x, b.x, atol=1e-6)
    np.testing.assert_array_equal(a.y, b.y)


def test_csv_mistakes_are_one_line(tmp_path):
    df, _ = table()
    df.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    df[["colour"]].to_csv(tmp_path / "only_label.csv", index=False)
    for spec, msg in [
        ("csv", "needs a file"),
        (f"csv:{tmp_path / 'nope.csv'}", "no such file"),
        (f"csv:{tmp_path / 't.csv'}", r"no label column 'label' \(columns: f0, f1"),
        (f"csv:{tmp_path / 't.csv'}:kind", "no label column 'kind'"),
        (f"csv:{tmp_path / 'empty.csv'}", "cannot read table"),
        (f"csv:{tmp_path}", "is not a file"),
        (f"csv:{tmp_path / 'only_label.csv'}:colour", "no feature column"),
    ]:
        with pytest.raises(DataError, match=msg) as e:
            load_dataset(spec)
        assert "\n" not in str(e.value)


def test_csv_is_listed():
    assert "LABEL_COLUMN" in DATASETS.get("csv").__doc__


def test_a_text_column_of_identifiers_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("edgeprune.data.tabular.MAX_CATEGORIES", 50)
    df, _ = table()
    df["name"] = [f"person {i}" for i in range(len(df))]
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="text column 'name' has 120 distinct values"):
        load_dataset(f"csv:{tmp_path / 't.csv'}:species")
