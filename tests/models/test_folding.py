"""BatchNorm folding: the same function with fewer passes, or the original when it would not be."""

import pytest
import torch
from torch import nn

from pipeline.folding import fold_batchnorm


def test_folded_lite0_computes_the_same_logits_without_batchnorm(classifier, eight_images):
    folded, count = fold_batchnorm(classifier.module, classifier.input_size)
    assert count == 49 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = classifier.normalize(eight_images[:4])
    with torch.no_grad():
        expected, got = classifier.module(x), folded(x)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-4)
    assert all(not p.requires_grad for p in folded.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in classifier.module.modules())  # the original is untouched


class _ConvUsedTwice(nn.Module):
    """conv -> bn, but the convolution's output is also added back: folding would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 10)
        with torch.no_grad():  # statistics far from the identity, so a wrong fold shows
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.2, 3)

    def forward(self, x):
        y = self.conv(x)
        return self.head((self.bn(y) + y).mean((2, 3)))


def test_folding_that_would_change_the_output_keeps_the_original():
    model = _ConvUsedTwice().eval()
    with pytest.warns(UserWarning, match="unfolded"):
        folded, count = fold_batchnorm(model, (16, 16))
    assert folded is model and count == 0


def test_pre_activation_batchnorm_is_left_alone():
    # BatchNorm before a convolution (DenseNet style) has nothing to fold into.
    model = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    folded, count = fold_batchnorm(model, (16, 16))
    assert count == 1 and isinstance(folded[0], nn.BatchNorm2d) and not isinstance(folded[3], nn.BatchNorm2d)


class _ReducedPrecisionConv(nn.Conv2d):
    """A convolution that, like cuDNN's default TF32 on a GPU, rounds its float32 operands to a short
    mantissa (bf16 here) but computes float64 exactly."""

    def forward(self, x):
        if x.dtype != torch.float32:
            return super().forward(x)
        rounded = self.weight.bfloat16().float()
        return self._conv_forward(x.bfloat16().float(), rounded, self.bias)


def test_fold_is_checked_in_float64_so_reduced_precision_convolutions_still_fold():
    model = nn.Sequential(_ReducedPrecisionConv(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
        model[1].running_var.uniform_(0.01, 0.1, generator=torch.Generator().manual_seed(2))
    model.eval()
    folded, count = fold_batchnorm(model, (16, 16))
    assert count == 1 and not isinstance(folded[1], nn.BatchNorm2d)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # in float32 the rounded weights differ (W vs W s / sigma): beyond 1e-4 of the range
        ref, out = model(x), folded(x)
        assert (out - ref).abs().max() > 1e-4 * (ref.max() - ref.min())
        torch.testing.assert_close(folded.double()(x.double()), model.double()(x.double()))
