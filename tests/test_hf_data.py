"""data=hf: a Hugging Face dataset in huggan/wikiart's schema, written here (parquet with an Image struct and
ClassLabel names in the `huggingface` metadata, as `datasets` writes it; images from artmove's own generator),
trained on through the command line with an artist-disjoint split. Never downloads."""

import io
import json
from pathlib import Path

import pytest

from conftest import LEAN, compose_config, run_cli

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

STYLES = ["Abstract_Expressionism", "Baroque", "Cubism", "Impressionism"]  # ClassLabel names; Baroque has no painting
PAINTED = ["Abstract_Expressionism", "Cubism", "Impressionism"]
ARTIST_SIZES = [6, 4, 2, 2, 1, 1]  # paintings per artist, for each painted style: small artists let val/test fill by artist
TINY = ["backbone=test_resnet", "pretrained=false", "debug=limit", "image_size=32", "data.batch_size=4", "logger=csv", *LEAN]


def wikiart_rows(styles=STYLES, painted=PAINTED):
    """(jpeg bytes, file name, artist index, genre, style index) rows, and the artist names: each artist paints one style."""
    from artmove.data.sources.synthetic import render_painting

    rows, artists = [], []
    for style in painted:
        for size in ARTIST_SIZES:
            artist = len(artists)
            artists.append(f"painter-{artist:02d}")
            for _ in range(size):
                image, _ = render_painting(7, "train", len(rows), 40)
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=85)
                rows.append((buffer.getvalue(), f"{artists[artist]}_painting-{len(rows)}.jpg", artist, len(rows) % 2, styles.index(style)))
    return rows, artists


def features(artists: list[str], styles: list[str]) -> dict:
    label = lambda names: {"names": names, "_type": "ClassLabel"}  # noqa: E731
    return {"image": {"_type": "Image"}, "artist": label(artists), "genre": label(["landscape", "portrait"]), "style": label(styles)}


def write_wikiart_parquet(folder: Path, shards: int = 2, styles=STYLES, painted=PAINTED) -> tuple[list, list[str]]:
    """The Hub's layout of huggan/wikiart: data/train-0000k-of-0000n.parquet, one unlabelled row included."""
    rows, artists = wikiart_rows(styles, painted)
    metadata = {"huggingface": json.dumps({"info": {"features": features(artists, styles)}})}
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows_with_gap = [*rows, (rows[0][0], "nobody_untitled.jpg", 0, 0, None)]  # no style: left out
    (folder / "data").mkdir(parents=True)
    for shard in range(shards):
        part = rows_with_gap[shard::shards]
        table = pa.table(
            {
                "image": pa.array([{"bytes": r[0], "path": r[1]} for r in part], image_type),
                "artist": pa.array([r[2] for r in part], pa.int64()),
                "genre": pa.array([r[3] for r in part], pa.int64()),
                "style": pa.array([r[4] for r in part], pa.int64()),
            }
        ).replace_schema_metadata(metadata)
        pq.write_table(table, folder / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet")
    return rows, artists


def test_train_on_a_parquet_dataset_in_huggan_wikiarts_schema_with_artist_disjoint_splits(tmp_path):
    rows, artists = write_wikiart_parquet(tmp_path / "wikiart")
    run = tmp_path / "run"
    cache = tmp_path / "cache"
    done = run_cli(
        "artmove.train", "data=hf", f"data.root={tmp_path / 'wikiart'}", f"data.prepared_dir={cache}", *TINY, f"hydra.run.dir={run}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["classes"] == PAINTED  # ClassLabel names of the styles present, in the dataset's order
    overlap = results["artist_overlap"]
    assert overlap["val"]["artists_in_train"] == 0 and overlap["test"]["artists_in_train"] == 0
    assert overlap["val"]["images"] > 0 and overlap["test"]["images"] > 0

    from hydra.utils import instantiate

    from artmove.data.splits import shared_groups

    cfg = compose_config("train", "data=hf", f"data.root={tmp_path / 'wikiart'}", f"data.prepared_dir={cache}")
    datamodule = instantiate(cfg.data)
    files = datamodule.files  # the splits training used: the images are already written, nothing is extracted again
    assert sum(len(split) for split in files.values()) == len(rows)
    assert shared_groups(files, datamodule.source.artist) == set()  # no artist in two of train/val/test
    assert {datamodule.source.artist(path) for split in files.values() for path, _ in split} == set(artists)
    for path, label in files["train"][:3]:  # the dataset's own bytes, read through artmove's image path
        assert any(path.read_bytes() == row[0] and PAINTED[label] == STYLES[row[4]] for row in rows)


def test_a_missing_column_is_one_line_naming_the_columns(tmp_path):
    write_wikiart_parquet(tmp_path / "wikiart", shards=1)
    done = run_cli(
        "artmove.data.inspect",
        "data=hf",
        f"data.root={tmp_path / 'wikiart'}",
        "data.source.label_column=movement",
        f"data.prepared_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert "no column 'movement'" in error and "image, artist, genre, style" in error and "label_column" in error
    assert not (tmp_path / "cache" / "hf").exists() or not any((tmp_path / "cache" / "hf").iterdir())  # nothing written first


def test_without_pyarrow_the_error_names_the_extra(monkeypatch):
    import sys

    from artmove.data.sources.hf import pyarrow_modules
    from artmove.errors import DataSetupError

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` meets when it is not installed
    with pytest.raises(DataSetupError, match=r"pip install 'artmove\[hf\]'"):
        pyarrow_modules()


@pytest.mark.slow
def test_train_on_a_save_to_disk_folder_keeps_its_published_test_split(tmp_path):
    """A DatasetDict written by `datasets` itself (Arrow files, dataset_dict.json): its test split is kept as it is."""
    datasets = pytest.importorskip("datasets")
    rows, artists = wikiart_rows()
    columns = {
        "image": [{"bytes": r[0], "path": r[1]} for r in rows],
        "artist": [r[2] for r in rows],
        "genre": [r[3] for r in rows],
        "style": [r[4] for r in rows],
    }
    feats = datasets.Features(
        {
            "image": datasets.Image(),
            "artist": datasets.ClassLabel(names=artists),
            "genre": datasets.ClassLabel(names=["landscape", "portrait"]),
            "style": datasets.ClassLabel(names=STYLES),
        }
    )
    full = datasets.Dataset.from_dict(columns, features=feats)
    test_rows = [i for i, r in enumerate(rows) if r[2] % 6 == 5]  # each style's last artist
    train_rows = [i for i in range(len(rows)) if i not in test_rows]
    datasets.DatasetDict({"train": full.select(train_rows), "test": full.select(test_rows)}).save_to_disk(str(tmp_path / "saved"))
    run = tmp_path / "run"
    done = run_cli(
        "artmove.train",
        "data=hf",
        f"data.root={tmp_path / 'saved'}",
        f"data.prepared_dir={tmp_path / 'cache'}",
        *TINY,
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["classes"] == PAINTED
    assert results["artist_overlap"]["test"]["images"] == len(test_rows)  # the published split, kept
    assert results["artist_overlap"]["val"]["artists_in_train"] == 0  # val carved from train by artist
