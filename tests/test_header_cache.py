"""The screening's results remembered between runs (artmove/data/header_cache.py)."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

from test_data_tools import painting_folder, spoil

from artmove.data import PaintingDataModule
from artmove.data import files as files_module
from artmove.data.header_cache import HeaderCache
from artmove.data.sources import ImageFolderSplits


def screened(root, cache):
    datamodule = PaintingDataModule(ImageFolderSplits, root=str(root), num_workers=0, prepared_dir=str(cache), max_bad_fraction=0.5)
    return datamodule.files, datamodule.file_checks


def test_a_second_run_reads_no_header_and_a_changed_file_is_read_again(tmp_path, monkeypatch):
    root, cache = painting_folder(tmp_path / "set"), tmp_path / "cache"
    spoil(root)
    first_files, first_checks = screened(root, cache)
    assert sum(1 for check in first_checks if check.error) == 2 and len(first_checks) == 15  # truncation needs a decode

    read = []
    real_check_file = files_module.check_file

    def no_header_reads(path, decode=False):
        read.append(path.name)
        raise AssertionError(f"header read again: {path}")

    monkeypatch.setattr(files_module, "check_file", no_header_reads)
    second_files, second_checks = screened(root, cache)
    assert read == [] and second_files == first_files and second_checks == first_checks  # bad files still dropped

    touched = root / "cubism" / "painter1_cubism1.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (root / "cubism" / "not_an_image.jpg").write_bytes(touched.read_bytes())  # repaired: new size and mtime
    monkeypatch.setattr(files_module, "check_file", lambda path, decode=False: read.append(path.name) or real_check_file(path))
    third_files, third_checks = screened(root, cache)
    assert sorted(read) == ["not_an_image.jpg", "painter1_cubism1.jpg"]
    assert sum(1 for check in third_checks if check.error) == 1
    assert sum(len(split) for split in third_files.values()) == sum(len(split) for split in first_files.values()) + 1


def test_a_corrupt_cache_file_means_reading_the_headers(tmp_path):
    root, cache = painting_folder(tmp_path / "set"), tmp_path / "cache"
    screened(root, cache)
    (saved,) = (cache / "headers").glob("*.json")
    saved.write_text("{not json")
    _, checks = screened(root, cache)
    assert len(checks) == 12 and not any(check.error for check in checks)
    assert saved.read_text().startswith('{"version": 1')


def test_processes_starting_together_screen_once(tmp_path):
    """Two screenings at once (DDP ranks, parallel sweep jobs; flock locks also separate threads): one
    reads the headers, the other waits on the lock and finds its results."""
    root = painting_folder(tmp_path / "set", per_class=20)
    paths = sorted(root.rglob("*.jpg"))
    read = []

    def slow_check(batch):
        time.sleep(0.5)  # the other screening starts meanwhile
        read.extend(batch)
        return files_module.check_files(batch)

    cache_file = tmp_path / "cache" / "headers" / "set.json"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: HeaderCache(cache_file).checks(paths, slow_check), range(2)))
    assert sorted(read) == paths and results[0] == results[1] and len(results[0]) == 40
