import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_regular_install_ships_the_configs(tmp_path):
    """`pip install .` (not editable) puts conf/ inside the package as artmove.conf."""
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "artmove" / "conf" / "train.yaml").is_file()
    source_modules = {p.relative_to(REPO / "artmove") for p in (REPO / "artmove").rglob("*.py")}
    installed = {p.relative_to(target / "artmove") for p in (target / "artmove").rglob("*.py")}
    assert source_modules <= installed, f"not shipped (pyproject packages): {sorted(source_modules - installed)}"
    config_files = {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}
    assert config_files <= {p.relative_to(target / "artmove" / "conf") for p in (target / "artmove" / "conf").rglob("*.yaml")}
    assert (target / "artmove" / "conf" / "data" / "rasta.yaml").is_file()
    probe = (
        "import artmove, hydra\n"
        "from hydra import compose, initialize_config_module\n"
        "with initialize_config_module('artmove.conf', version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['experiment=demo'])\n"
        "print(artmove.__file__, cfg.backbone)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    installed_file, backbone = done.stdout.split()
    assert installed_file.startswith(str(target)) and backbone == "tf_efficientnet_lite0"
