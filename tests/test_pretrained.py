import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from artmove.data.transforms import build_transforms
from artmove.errors import PretrainedWeightsError
from artmove.models.pretrained import PACKAGED_WEIGHTS, create_backbone, load_weights_file, packaged_weights_file

skimage_data = pytest.importorskip("skimage.data")

IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_ESPRESSO = 967


@pytest.mark.parametrize(
    ("backbone", "input_size"),
    [("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite2", 260)],
)
def test_packaged_weights_are_real_imagenet_weights(backbone, input_size):
    model, source = create_backbone(backbone, pretrained=True)
    assert source == f"package {PACKAGED_WEIGHTS[backbone][0]}"
    model.eval()
    # Each backbone has its own resolution (and crop): the transform comes from timm's config.
    _, transform = build_transforms(timm.data.resolve_model_data_config(model))
    images = torch.stack([transform(Image.fromarray(im)) for im in (skimage_data.chelsea(), skimage_data.coffee())])
    assert images.shape[-1] == input_size
    # The backbone came from the package, without a classifier: the package's ImageNet classifier
    # on its pooled features reads ImageNet classes.
    state = torch.load(packaged_weights_file(backbone), map_location="cpu", weights_only=True)
    with torch.no_grad():
        logits = torch.nn.functional.linear(model(images), state["_fc.weight"], state["_fc.bias"])
        cat, coffee = logits.topk(5).indices.tolist()
    assert IMAGENET_CATS & set(cat), cat
    assert IMAGENET_ESPRESSO in coffee, coffee


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".ckpt"])
def test_weights_file_loads_backbone_and_drops_old_classifier(tmp_path, suffix):
    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / f"weights{suffix}"
    state = source.state_dict()
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif suffix == ".ckpt":  # a Lightning checkpoint of artmove's module
        torch.save({"state_dict": {f"network.backbone.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    else:
        torch.save(state, path)
    model, note = create_backbone("resnet18", weights=str(path))
    assert note == f"file {path}"
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert not list(model.get_classifier().parameters())  # the file's classifier is left out


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        load_weights_file(timm.create_model("resnet18", num_classes=0), path)


def test_weights_file_of_a_model_with_an_auxiliary_head(tmp_path):
    """VOLO's aux_head is a classifier like its head: both are left out when ImageNet weights load."""
    path = tmp_path / "volo.pth"
    imagenet = timm.create_model("volo_d1_224", num_classes=1000)
    torch.save(imagenet.state_dict(), path)
    model = timm.create_model("volo_d1_224", num_classes=0)
    load_weights_file(model, path)
    assert torch.equal(model.patch_embed.conv[0].weight, imagenet.patch_embed.conv[0].weight)


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="weights file not found"):
        create_backbone("resnet18", weights=str(tmp_path / "nope.pth"))


def test_no_weights_offline_fails_fast_with_the_options(monkeypatch, tmp_path):
    # An empty hub cache and an unreachable hub: nothing can provide resnet18's weights.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("artmove.models.pretrained.HUB_HOST", "hub.invalid")
    started = time.time()
    with pytest.raises(PretrainedWeightsError) as error:
        create_backbone("resnet18", pretrained=True)
    assert time.time() - started < 20
    message = str(error.value)
    assert "weights=PATH" in message and "pretrained=false" in message and "network" in message


def test_random_init_needs_no_weights():
    model, note = create_backbone("resnet18", pretrained=False)
    assert note == "random init" and model.num_features == 512
    model.eval()
    assert np.isfinite(model(torch.randn(1, 3, 32, 32)).detach().numpy()).all()
