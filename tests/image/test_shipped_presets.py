"""Every preset shipped inside genloom-image loads through the zoo and samples what it sampled when trained.

The reference numbers (per-image means of seeded samples, judge logits on a fixed ramp) were recorded with
the loader that predates the zoo port (`save_model_folder` / `load_model_folder`) for the digits presets of ar / var / maskgit, and
when the others were shipped; the zoo must reproduce them, and the samples must still be recognised as the
requested classes by the shipped judge. The ar presets' guided means were re-recorded when top-k sampling
started drawing its Gumbel noise over the whole vocabulary (same distribution, other draws for a seed), and
ar-shapes' when it was retrained (session 3: 0.98 class accuracy), var-shapes' when it was retrained (session 4:
0.98).
"""

from __future__ import annotations

import json

import pytest
import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.core.zoo import from_pretrained
from genloom.core.zoo.pretrained import component_dir
from genloom.image.models import MaskedAutoregressive, MaskGIT, NextScaleAR, RasterAR
from genloom.image.pipeline import ImagePipeline
from genloom.image.presets import PRESETS_DIR, load_judge, shipped_generator_names, shipped_preset_dir
from genloom.image.tokenizers import KLAutoencoder, MultiScaleVQAutoencoder, VQAutoencoder

# preset -> (generator class, tokenizer class, data set, classes sampled with guidance, least judge accuracy
# of those samples, per-image means of the first 4 at cfg 2 / seed 0, per-image means at cfg 1 / seed 1).
# An untrained generator scores about 1 / num_classes (0.08-0.10): every threshold fails it.
GENERATORS = {
    "ar-digits": (
        RasterAR, VQAutoencoder, "digits", 4, 0.75,
        [-0.3697, -0.4443, -0.3085, -0.3603], [-0.4738, -0.3641, -0.3398, -0.3842],
    ),
    "var-digits": (
        NextScaleAR, MultiScaleVQAutoencoder, "digits", 4, 0.75,
        [-0.3131, -0.3360, -0.3263, -0.3146], [-0.3292, -0.3098, -0.3365, -0.3443],
    ),
    "maskgit-digits": (
        MaskGIT, VQAutoencoder, "digits", 4, 0.75,
        [-0.3061, -0.3612, -0.3662, -0.3757], [-0.4018, -0.4842, -0.2603, -0.4709],
    ),
    "mar-digits": (
        MaskedAutoregressive, KLAutoencoder, "digits", 10, 0.8,
        [-0.3841, -0.4854, -0.4104, -0.4582], [-0.3919, -0.4818, -0.3452, -0.4839],
    ),
    "ar-shapes": (
        RasterAR, VQAutoencoder, "shapes", 12, 0.9,
        [-0.7816, -0.6573, -0.6668, -0.6291], [-0.6030, -0.7957, -0.7332, -0.7858],
    ),
    "var-shapes": (
        NextScaleAR, MultiScaleVQAutoencoder, "shapes", 12, 0.9,
        [-0.6686, -0.6684, -0.6893, -0.6587], [-0.7470, -0.7692, -0.5224, -0.6313],
    ),
    "mar-shapes": (
        MaskedAutoregressive, KLAutoencoder, "shapes", 12, 0.8,
        [-0.6610, -0.7250, -0.5880, -0.6237], [-0.7299, -0.7344, -0.6539, -0.6251],
    ),
    "maskgit-shapes": (
        MaskGIT, VQAutoencoder, "shapes", 12, 0.8,
        [-0.6418, -0.7061, -0.5780, -0.6343], [-0.7489, -0.6425, -0.7138, -0.6609],
    ),
}  # fmt: skip
# judge -> (channels, logits of the first ramp image, first 4 classes)
JUDGES = {
    "digits": (1, [-1.3419, 2.4244, 1.6948, -0.7040]),
    "shapes": (3, [-0.7901, -0.1474, -0.6146, -0.1245]),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_shipped_generator_preset_loads_through_the_zoo_and_samples_as_recorded(name: str) -> None:
    generator_cls, tokenizer_cls, dataset, n_classes, min_accuracy, guided_means, plain_means = GENERATORS[
        name
    ]
    folder = shipped_preset_dir(name)
    # the zoo alone (family registry) builds both parts
    assert isinstance(from_pretrained(folder, component="model"), generator_cls)
    assert isinstance(from_pretrained(folder, component="tokenizer"), tokenizer_cls)
    pipeline = ImagePipeline.load(folder)
    assert not pipeline.generator.training and next(pipeline.generator.parameters()).dtype == torch.float32
    labels = torch.arange(n_classes)
    extra = {"sampling": SamplingParams(top_k=64)} if name.startswith("ar") else {}
    guided = pipeline.sample(labels, cfg_scale=2.0, seed=0, **extra)
    plain = pipeline.sample(labels[:4], cfg_scale=1.0, seed=1)
    assert guided.shape == (n_classes, 3 if dataset == "shapes" else 1, 32, 32)
    torch.testing.assert_close(guided[:4].flatten(1).mean(1), torch.tensor(guided_means), atol=2e-3, rtol=0)
    torch.testing.assert_close(plain.flatten(1).mean(1), torch.tensor(plain_means), atol=2e-3, rtol=0)
    assert (load_judge(dataset).predict(guided) == labels).float().mean() >= min_accuracy


@pytest.mark.parametrize("dataset", sorted(JUDGES))
def test_shipped_judge_loads_through_the_zoo_with_recorded_logits(dataset: str) -> None:
    channels, first_logits = JUDGES[dataset]
    judge = load_judge(dataset)
    ramp = torch.linspace(-1, 1, 4 * channels * 32 * 32).view(4, channels, 32, 32)
    with torch.no_grad():
        logits = judge.features_and_logits(ramp)[1]
    torch.testing.assert_close(logits[0, :4], torch.tensor(first_logits), atol=1e-3, rtol=0)
    classifier = from_pretrained(shipped_preset_dir(f"judge-{dataset}"), component="model")
    with torch.no_grad():
        torch.testing.assert_close(classifier(ramp), logits, atol=0, rtol=0)


def test_every_shipped_generator_preset_is_tested_and_small() -> None:
    assert shipped_generator_names() == sorted(GENERATORS)
    for name in GENERATORS:
        for part in ("model", "tokenizer"):
            weights = component_dir(PRESETS_DIR / name, part) / "model.safetensors"
            assert weights.stat().st_size < 5_000_000, (name, part)


def test_presets_trained_together_store_their_tokenizer_once() -> None:
    # maskgit-digits was trained on ar-digits' tokenizer: it names that preset instead of holding a copy
    # (ar-shapes was retrained alone with a larger tokenizer; its maskgit partner keeps the earlier one)
    shared = PRESETS_DIR / "maskgit-digits"
    assert not (shared / "tokenizer").exists()
    assert json.loads((shared / "preset.json").read_text())["tokenizer_from"] == "ar-digits"
    assert component_dir(shared, "tokenizer") == PRESETS_DIR / "ar-digits" / "tokenizer"
    tokenizers = list(PRESETS_DIR.glob("*/tokenizer/model.safetensors"))
    contents = [path.read_bytes() for path in tokenizers]
    for i, path in enumerate(tokenizers):  # no two stored tokenizer files are the same bytes
        assert contents[i] not in contents[i + 1 :], path
    pipeline = ImagePipeline.load(shared)  # the user-facing loaders resolve the reference
    source = ImagePipeline.load(PRESETS_DIR / "ar-digits").tokenizer
    for (key, a), (_, b) in zip(
        pipeline.tokenizer.state_dict().items(), source.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key
    assert isinstance(from_pretrained("maskgit-digits", component="tokenizer"), VQAutoencoder)
    assert isinstance(from_pretrained(shared, component="tokenizer"), VQAutoencoder)


def test_resaving_a_shipped_preset_is_lossless(tmp_path) -> None:
    pipeline = ImagePipeline.load(shipped_preset_dir("var-digits"))
    pipeline.save(tmp_path / "copy")
    again = ImagePipeline.load(tmp_path / "copy")
    for original, copy in ((pipeline.generator, again.generator), (pipeline.tokenizer, again.tokenizer)):
        for (key, a), (_, b) in zip(original.state_dict().items(), copy.state_dict().items(), strict=True):
            assert torch.equal(a, b), key
    labels = torch.tensor([3, 7])
    torch.testing.assert_close(pipeline.sample(labels, seed=5), again.sample(labels, seed=5), atol=0, rtol=0)
