import urllib.error

import pytest
import torch
import torchvision

from pipeline.errors import ModelUnavailableError
from pipeline.models import load_model, parse_spec


def test_offline_default_is_frozen_and_recognises_the_cat(classifier, chelsea):
    assert not classifier.module.training
    assert not any(p.requires_grad for p in classifier.module.parameters())
    probs = classifier(classifier.normalize(chelsea)).softmax(1)
    assert int(probs.argmax()) == 285 and float(probs.max()) > 0.7
    assert classifier.vocabulary.wnids[285] == "n02124075"


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("efficientnet_lite0", ("efficientnet_lite0", "efficientnet_lite0", None)),
        ("torchvision:vgg19", ("torchvision", "vgg19", None)),
        ("timm:resnet50.a1_in1k", ("timm", "resnet50.a1_in1k", None)),
    ],
)
def test_spec_grammar(spec, parsed):
    assert parse_spec(spec) == parsed


def test_state_dict_file_on_an_architecture(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = load_model(f"torchvision:resnet18@{path}")
    torch.testing.assert_close(model.module.fc.weight, reference.fc.weight)


def test_torchscript_file(tiny_model):
    model = load_model(tiny_model)
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)


def test_weights_that_cannot_be_downloaded_fail_with_one_sentence(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ModelUnavailableError, match="efficientnet_lite0"):
        load_model("torchvision:resnet18")


def test_unknown_architecture_names_the_fix():
    with pytest.raises(ModelUnavailableError, match="list_models"):
        load_model("torchvision:resnet5000")


def test_not_a_torchscript_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ModelUnavailableError, match="@"):
        load_model(str(path))


def test_compiled_classifier_keeps_what_a_store_records(classifier):
    # --compile wraps the network only: the spec (and so a store's run key) is the uncompiled one.
    from pipeline.config import preset
    from pipeline.jobs.run import RunConfig, store_config

    compiled = classifier.compiled()
    assert compiled.module is not classifier.module and compiled.device == classifier.device
    assert store_config(preset("paper"), RunConfig(), compiled) == store_config(preset("paper"), RunConfig(), classifier)


def test_timm_weights_without_the_hub_fail_at_once_naming_the_hugging_face_cache(monkeypatch, tmp_path):
    import pipeline.models

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(pipeline.models, "_reachable", lambda host, **kw: False)
    with pytest.raises(ModelUnavailableError) as error:
        load_model("timm:resnet18.a1_in1k")
    message = str(error.value)
    assert "Hugging Face cache" in message and "HF_HOME" in message and "torch hub's" in message
    assert "\n" not in message


def test_error_details_are_cut_at_a_word_not_mid_word():
    from pipeline.models import _first_line

    text = "please check your connection and try again " * 10 + "\nsecond line"
    cut = _first_line(text, limit=60)
    assert cut.endswith(" ...") and len(cut) <= 64
    assert cut[:-4] == text[: len(cut) - 4] and text[len(cut) - 4] == " "  # whole words only
    assert _first_line("short\nmore") == "short"
