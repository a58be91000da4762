"""CLIP features and the CLIP, aesthetic and PickScore rewards on a tiny random CLIPModel
(real classes, CLIP's real tokenizer), offline on the CPU."""
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from prefstudio.encoders.clip import CLIPEncoder, clip_preprocess
from prefstudio.errors import InvalidInput
from prefstudio.rewards.aesthetic import AestheticHead, AestheticReward
from prefstudio.rewards.clip_alignment import CLIPAlignmentReward
from prefstudio.rewards.pickscore import PickScoreReward
from prefstudio.tools.convert_aesthetic_head import convert
from prefstudio.tools.make_tiny_pipeline import tiny_sd_pipeline, write_tiny_clip
from prefstudio.generators.diffusers_onestep import DiffusersOneStepGenerator

LONG_PROMPT = "an oil painting of a quiet harbour with fishing boats at sunset, " * 10


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(clip_dir):
    return CLIPEncoder(str(clip_dir), device="cpu")


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("head") / "aesthetic.safetensors"
    save_file(AestheticHead().state_dict(), path)
    return path


def test_image_features_are_unit_vectors_and_batch_consistently(clip):
    pixels = torch.rand(3, 3, 48, 40)
    features = clip.encode(pixels)
    assert features.shape == (3, 768) and clip.dim == 768
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(clip.encode(pixels[1:2]), features[1:2], atol=1e-5, rtol=0)
    assert clip.name == f"clip:{clip.model_id}"


def test_preprocessing_matches_the_clip_image_processor(clip_dir):
    """The torch resize/crop/normalise agrees with transformers' own processor on a photo-like image."""
    from transformers import CLIPImageProcessor

    y, x = np.mgrid[0:90, 0:120]
    array = np.stack([np.sin(x / 9.0), np.cos(y / 7.0), np.sin((x + y) / 13.0)], -1) * 0.5 + 0.5
    image = Image.fromarray((array * 255).astype(np.uint8))
    expected = CLIPImageProcessor.from_pretrained(clip_dir)(images=image, return_tensors="pt")["pixel_values"]
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    ours = clip_preprocess(pixels, 32, mean, std)
    assert ours.shape == expected.shape == (1, 3, 32, 32)
    # PIL rounds to 8 bits after resizing, torch does not: under one grey level
    # (1/255 / std ≈ 0.015 in these normalised units) per pixel.
    difference = (ours - expected).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.03


def test_text_side_reports_truncation(clip):
    text = clip.text_encoder()
    features = text.encode(["a cat", LONG_PROMPT])
    assert features.shape == (2, 768)
    assert text.last_truncated == [False, True]
    context = CLIPAlignmentReward(clip).prepare(LONG_PROMPT)
    assert "reads 77" in context.truncation and "harbour" in context.truncation
    assert CLIPAlignmentReward(clip).prepare("a cat").truncation is None


def test_the_checkpoint_loads_once_for_every_user(clip_dir, clip):
    assert CLIPEncoder(str(clip_dir), device="cpu").model is clip.model


@pytest.mark.parametrize("reward_name", ["clip", "aesthetic", "pickscore"])
def test_gradients_flow_from_each_reward_to_the_initial_noise(reward_name, clip, clip_dir, head_file):
    reward = {
        "clip": lambda: CLIPAlignmentReward(clip),
        "aesthetic": lambda: AestheticReward(head_file, clip),
        "pickscore": lambda: PickScoreReward(CLIPEncoder(str(clip_dir), processor_id=str(clip_dir), device="cpu")),
    }[reward_name]()
    gen = DiffusersOneStepGenerator(tiny_sd_pipeline(), name="tiny", steps=1, resolution=64, device="cpu")
    cond = gen.encode_prompt("a harbour at sunset")
    context = reward.prepare("a harbour at sunset")
    noise = gen.initial_noise(1, batch=2).requires_grad_(True)
    raw = reward.score(gen.render(noise, cond), context)
    assert raw.shape == (2,) and torch.isfinite(raw).all()
    reward.normalise(raw, context).sum().backward()
    assert torch.isfinite(noise.grad).all() and noise.grad[0].abs().sum() > 0
    assert noise.grad[1].abs().sum() > 0


def test_rewards_state_their_reference_scale():
    for reward in (CLIPAlignmentReward, AestheticReward, PickScoreReward):
        assert reward.scale > 0 and reward.description
    assert CLIPAlignmentReward.normalise(CLIPAlignmentReward.__new__(CLIPAlignmentReward),
                                         torch.tensor([0.33])).item() == pytest.approx(1.0)


def test_pickscore_is_the_scaled_cosine(clip):
    reward = PickScoreReward(clip)
    pixels = torch.rand(1, 3, 32, 32)
    context = reward.prepare("a boat")
    cosine = (clip.encode(pixels) * context.features).sum(-1)
    torch.testing.assert_close(reward.score(pixels, context), clip.model.logit_scale.exp() * cosine)


def test_aesthetic_head_files_are_checked(clip, tmp_path, head_file):
    wrong = tmp_path / "wrong.safetensors"
    save_file({"layers.0.weight": torch.zeros(4, 4)}, wrong)
    with pytest.raises(InvalidInput, match="LAION aesthetic head"):
        AestheticReward(wrong, clip)
    pth = tmp_path / "head.pth"
    torch.save(AestheticHead().state_dict(), pth)
    with pytest.raises(InvalidInput, match="must be a .safetensors file"):
        AestheticReward(pth, clip)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(InvalidInput, match="not a readable safetensors"):
        AestheticReward(garbage, clip)
    reward = AestheticReward(head_file, clip)
    assert not any(p.requires_grad for p in reward.head.parameters())


def test_the_laion_pth_converts_to_the_same_head(tmp_path, clip):
    torch.manual_seed(1)
    head = AestheticHead()
    torch.save(head.state_dict(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    convert(tmp_path / "sac+logos+ava1-l14-linearMSE.pth", tmp_path / "head.safetensors")
    reward = AestheticReward(tmp_path / "head.safetensors", clip)
    pixels = torch.rand(2, 3, 32, 32)
    expected = head.eval()(clip.encode(pixels)).squeeze(-1)
    torch.testing.assert_close(reward.score(pixels), expected)


def test_aesthetic_needs_vit_l14_features(tmp_path, head_file):
    from transformers import CLIPConfig, CLIPModel

    from prefstudio.tools.make_tiny_pipeline import clip_tokenizer

    small = tmp_path / "clip-512"
    CLIPModel(CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37,
                                          num_hidden_layers=1, num_attention_heads=4),
                         vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                            num_attention_heads=4, image_size=32, patch_size=8),
                         projection_dim=512)).save_pretrained(small)
    clip_tokenizer().save_pretrained(small)
    with pytest.raises(InvalidInput, match="768-d"):
        AestheticReward(head_file, CLIPEncoder(str(small), device="cpu"))
