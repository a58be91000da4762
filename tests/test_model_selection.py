"""Which generator and device a run gets, and what a person reads when weights are missing."""
import shutil
import time

import huggingface_hub.constants
import pytest
import torch

from prefstudio import hub
from prefstudio.devices import pick_device, pick_dtype
from prefstudio.encoders.clip import load_clip
from prefstudio.errors import InvalidInput, ModelUnavailable, NotFound
from prefstudio.generators import default_generator_spec, load_generator
from prefstudio.tools.make_tiny_pipeline import write_tiny_clip, write_tiny_pipeline


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline (as PrefStudio runs by default)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield cache
    # CLIP checkpoints load once per process, keyed by hub id: one found in this test's cache
    # must not be found by later tests whose caches do not hold it.
    load_clip.cache_clear()


def put_in_cache(cache, repo_id: str, folder) -> None:
    """Lay a folder out as `hf download` leaves it in the cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def fake_cuda(monkeypatch, available=True, bf16=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_device_and_dtype_follow_the_hardware(monkeypatch):
    fake_cuda(monkeypatch, available=False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu") and pick_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps") and pick_dtype(torch.device("mps")) == torch.float16
    fake_cuda(monkeypatch, bf16=True)
    assert pick_device() == torch.device("cuda") and pick_dtype(torch.device("cuda")) == torch.bfloat16
    fake_cuda(monkeypatch, bf16=False)
    assert pick_dtype(torch.device("cuda")) == torch.float16


def test_explicit_device_and_dtype_win(monkeypatch):
    fake_cuda(monkeypatch)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype(torch.device("cuda"), "fp32") == torch.float32
    assert pick_dtype(torch.device("cpu"), torch.bfloat16) == torch.bfloat16
    with pytest.raises(InvalidInput, match="unknown dtype"):
        pick_dtype(torch.device("cpu"), "float8")
    with pytest.raises(InvalidInput, match="unknown device"):
        pick_device("gpu0")


def test_default_generator_is_embedded_without_cuda(monkeypatch, hf_cache):
    fake_cuda(monkeypatch, available=False)
    assert default_generator_spec() == "embedded"
    from prefstudio.generators.embedded import EmbeddedGenerator

    assert isinstance(load_generator("auto"), EmbeddedGenerator)
    assert isinstance(load_generator("embedded"), EmbeddedGenerator)


def test_default_generator_is_sd_turbo_on_cuda_when_its_weights_are_here(monkeypatch, hf_cache, tmp_path):
    # Built before CUDA is faked: bitsandbytes, imported with diffusers, probes CUDA at import.
    folder = write_tiny_pipeline(tmp_path / "sd", "sd")
    fake_cuda(monkeypatch)
    assert default_generator_spec() == "embedded"  # offline, nothing cached: the app still starts
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert default_generator_spec() == "sd-turbo"  # downloads allowed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    put_in_cache(hf_cache, "stabilityai/sd-turbo", folder)
    assert default_generator_spec() == "sd-turbo"


def test_missing_weights_offline_say_what_to_download(hf_cache):
    start = time.perf_counter()
    with pytest.raises(ModelUnavailable) as caught:
        load_generator("sd-turbo", device="cpu")
    assert time.perf_counter() - start < 5  # no network wait
    message = str(caught.value)
    for part in ("stabilityai/sd-turbo", "about 5.2 GB", "hf download stabilityai/sd-turbo",
                 "huggingface-cli download", "--allow-downloads", "local folder"):
        assert part in message
    error = caught.value  # no chained huggingface_hub traceback behind it
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_missing_weights_of_any_hub_id_and_of_clip(hf_cache):
    with pytest.raises(ModelUnavailable, match="someone/some-turbo"):
        load_generator("someone/some-turbo", device="cpu")
    from prefstudio.encoders.clip import CLIPEncoder

    with pytest.raises(ModelUnavailable, match=r"openai/clip-vit-large-patch14 \(about 1.7 GB\)"):
        CLIPEncoder(device="cpu")


def test_sdxl_turbo_names_its_replacement_vae_when_only_that_is_missing(hf_cache, tmp_path):
    with pytest.raises(ModelUnavailable, match="sdxl-turbo.*Also:.*madebyollin/sdxl-vae-fp16-fix"):
        load_generator("sdxl-turbo", device="cpu")
    put_in_cache(hf_cache, "stabilityai/sdxl-turbo", write_tiny_pipeline(tmp_path / "xl", "sdxl"))
    with pytest.raises(ModelUnavailable, match="madebyollin/sdxl-vae-fp16-fix"):
        load_generator("sdxl-turbo", device="cpu")


def test_weights_in_the_local_cache_load_offline(hf_cache, tmp_path):
    put_in_cache(hf_cache, "stabilityai/sd-turbo", write_tiny_pipeline(tmp_path / "sd", "sd"))
    generator = load_generator("sd-turbo", device="cpu", resolution=64)
    assert generator.name == "sd-turbo" and generator.steps == 1
    image = generator.generate("a lighthouse", [4])[0]
    assert image.image.size == (64, 64) and image.generator == "sd-turbo"
    put_in_cache(hf_cache, "openai/clip-vit-large-patch14", write_tiny_clip(tmp_path / "clip"))
    from prefstudio.encoders.clip import CLIPEncoder

    assert CLIPEncoder(device="cpu").encode(torch.rand(1, 3, 64, 64)).shape == (1, 768)


def test_an_incomplete_cache_is_reported_as_missing_weights(hf_cache, tmp_path):
    folder = write_tiny_pipeline(tmp_path / "sd", "sd")
    shutil.rmtree(folder / "unet")
    put_in_cache(hf_cache, "stabilityai/sd-turbo", folder)
    with pytest.raises(ModelUnavailable, match="holds only part of it"):
        load_generator("sd-turbo", device="cpu")


def test_specs_that_are_neither_folders_nor_hub_ids(hf_cache):
    with pytest.raises(NotFound, match="no model folder"):
        load_generator("./no/such/folder")
    with pytest.raises(NotFound, match="org/name/file"):
        hub.hub_file("aesthetic.safetensors", "3.7 MB")
