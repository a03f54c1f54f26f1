"""EN-ResNet50: 53 EN layers at every width, torchvision's parameter count, forward order."""

import pytest
import torch
import torchvision

from en_analysis.core.errors import UserError
from en_analysis.nn import ExemplarNorm2d, en_layers, en_resnet50


@pytest.mark.parametrize("width", [1, 4, 16])
@pytest.mark.parametrize("stem", ["small", "imagenet"])
def test_exactly_53_en_layers_at_every_width(width, stem):
    model = en_resnet50(10, in_channels=1, width=width, stem=stem)
    assert len(en_layers(model)) == 53
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_bn_resnet50_is_torchvision_resnet50():
    ours = en_resnet50(norm="bn")
    theirs = torchvision.models.resnet50()
    assert sum(p.numel() for p in ours.parameters()) == 25_557_032
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(ours.state_dict()[k].shape == v.shape for k, v in theirs.state_dict().items())


def test_layer_names_are_module_paths_in_forward_order():
    model = en_resnet50(4, in_channels=1, width=4, stem="small")
    called = []
    for name, layer in en_layers(model):
        layer.register_forward_hook(lambda m, i, o, name=name: called.append(name))
    model(torch.randn(2, 1, 16, 16))
    assert called == [name for name, _ in en_layers(model)]
    assert (
        called[0] == "bn1" and called[4] == "layer1.0.downsample.1" and called[-1] == "layer4.2.bn3"
    )


def test_small_stem_shapes_and_features():
    model = en_resnet50(7, in_channels=1, width=4, stem="small").eval()
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 7)
    assert model.features(x).shape == (3, 4 * 8 * 4)


def test_en_model_trains_a_step():
    model = en_resnet50(3, in_channels=1, width=4, stem="small")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "ratio_fc1" not in n)
    opt.step()


def test_bad_model_arguments():
    with pytest.raises(UserError, match="norm"):
        en_resnet50(norm="gn")
    with pytest.raises(UserError, match="stem"):
        en_resnet50(stem="tiny")
    assert isinstance(en_layers(en_resnet50(width=2))[0][1], ExemplarNorm2d)


@pytest.mark.parametrize("zero", [True, False])
def test_zero_init_residual_zeroes_each_blocks_last_norm(zero):
    from torchvision.models.resnet import Bottleneck

    model = en_resnet50(10, in_channels=1, width=4, stem="small", zero_init_residual=zero)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    expected = 0.0 if zero else 1.0
    for block in blocks:
        assert torch.equal(block.bn3.weight, torch.full_like(block.bn3.weight, expected))
        assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))  # only the last
