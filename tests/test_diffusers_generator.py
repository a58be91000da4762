"""The diffusers generator on tiny random-weight models of the real classes (SD-Turbo,
SDXL-Turbo and FLUX.1-schnell layouts), on the CPU, offline."""
import json

import pytest
import torch

from prefstudio.errors import InvalidInput, NotFound
from prefstudio.generators import load_generator
from prefstudio.generators.diffusers_onestep import DiffusersOneStepGenerator
from prefstudio.tools.make_tiny_pipeline import BUILDERS, tiny_flux_pipeline, write_tiny_pipeline

# family -> (resolution, steps): small enough for a second or less per render on one thread
SETTINGS = {"sd": (64, 1), "sdxl": (64, 1), "flux": (32, 2)}
LONG_PROMPT = "a watercolour fox in a misty birch forest at dawn, " * 12


def make(family: str, **kwargs) -> DiffusersOneStepGenerator:
    resolution, steps = SETTINGS[family]
    return DiffusersOneStepGenerator(BUILDERS[family](), name=f"tiny-{family}", steps=steps,
                                     resolution=resolution, device="cpu", **kwargs)


@pytest.fixture(scope="module", params=list(SETTINGS))
def generator(request):
    return make(request.param)


def test_fixed_noise_gives_the_identical_image(generator):
    cond = generator.encode_prompt("a red bicycle")
    first = generator.render(generator.initial_noise(7), cond)
    again = generator.render(generator.initial_noise(7), cond)
    other = generator.render(generator.initial_noise(8), cond)
    assert first.shape == (1, 3, generator.resolution, generator.resolution)
    assert 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_gradients_flow_from_pixels_to_the_noise(generator):
    cond = generator.encode_prompt("a red bicycle")
    noise = generator.initial_noise(3, batch=2).requires_grad_(True)
    pixels = generator.render(noise, cond)
    (pixels[:, 0].mean() - pixels[:, 2].mean()).backward()
    assert noise.grad is not None and torch.isfinite(noise.grad).all()
    assert noise.grad[0].abs().sum() > 0 and noise.grad[1].abs().sum() > 0
    assert all(not p.requires_grad for p in generator.denoiser.parameters())


def test_gradient_checkpointing_is_on_and_does_not_change_the_gradient():
    cond_noise = []
    for checkpointing in (True, False):
        gen = make("sd", gradient_checkpointing=checkpointing)
        assert gen.denoiser.is_gradient_checkpointing == checkpointing
        assert gen.pipeline.vae.is_gradient_checkpointing == checkpointing
        noise = gen.initial_noise(5).requires_grad_(True)
        gen.render(noise, gen.encode_prompt("a lighthouse")).mean().backward()
        cond_noise.append(noise.grad)
    torch.testing.assert_close(cond_noise[0], cond_noise[1])


def test_generate_returns_images_with_their_parameters(generator):
    images = generator.generate("a red bicycle", [1, 2])
    assert [g.seed for g in images] == [1, 2]
    assert images[0].image.size == (generator.resolution, generator.resolution)
    assert images[0].params == {"generator": generator.name, "resolution": generator.resolution,
                                "steps": generator.steps, "dtype": "float32"}


def test_long_prompts_are_reported_not_silently_cut(generator):
    assert generator.encode_prompt("a red bicycle").truncation == []
    notes = generator.encode_prompt(LONG_PROMPT).truncation
    assert notes and "reads 77" in notes[0] and "ignored" in notes[0]
    assert "birch" in notes[0]  # says what was dropped


def test_the_ancestral_sampler_is_replaced_by_its_deterministic_counterpart():
    assert type(make("sdxl").pipeline.scheduler).__name__ == "EulerDiscreteScheduler"


def test_noise_of_the_wrong_shape_is_refused(generator):
    with pytest.raises(InvalidInput, match="noise must have shape"):
        generator.render(torch.zeros(1, 3, 8, 8), generator.encode_prompt("a cat"))


def test_resolution_must_fit_the_latent_grid():
    with pytest.raises(InvalidInput, match="multiple of 4"):
        DiffusersOneStepGenerator(tiny_flux_pipeline(), name="f", steps=1, resolution=30, device="cpu")


@pytest.mark.parametrize("family", list(SETTINGS))
def test_save_and_load_from_a_folder_reproduces_the_images(family, tmp_path):
    resolution, steps = SETTINGS[family]
    folder = write_tiny_pipeline(tmp_path / family, family)
    loaded = load_generator(str(folder), device="cpu", resolution=resolution, steps=steps)
    assert isinstance(loaded, DiffusersOneStepGenerator) and loaded.family == family
    assert loaded.name == family and loaded.dtype == torch.float32
    built = make(family)
    for name, module in built.pipeline.components.items():
        if isinstance(module, torch.nn.Module):
            saved, read = module.state_dict(), getattr(loaded.pipeline, name).state_dict()
            assert saved.keys() == read.keys()
            assert all(torch.equal(saved[k], read[k]) for k in saved), name
    images = [gen.render(gen.initial_noise(11), gen.encode_prompt("a teapot")) for gen in (loaded, built)]
    # Same weights, same image up to float rounding: memory-mapped weights sit at other
    # alignments, which changes the CPU kernels' summation order in the last bit.
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=1e-5)


def test_a_folder_loads_with_its_native_resolution_and_one_step(tmp_path):
    gen = load_generator(str(write_tiny_pipeline(tmp_path / "sd", "sd")), device="cpu")
    assert (gen.resolution, gen.steps) == (64, 1)  # unet sample_size 32 × VAE factor 2


def test_folders_that_are_not_one_step_pipelines_are_refused(tmp_path):
    with pytest.raises(NotFound, match="no model folder"):
        load_generator(str(tmp_path / "missing" / "folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no model_index.json"):
        load_generator(str(tmp_path / "empty"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableCascadeCombinedPipeline"}))
    with pytest.raises(InvalidInput, match="StableCascadeCombinedPipeline.*StableDiffusionPipeline"):
        load_generator(str(other))


def test_guidance_distilled_flux_is_refused():
    pipe = tiny_flux_pipeline()
    pipe.transformer.register_to_config(guidance_embeds=True)
    with pytest.raises(InvalidInput, match="FLUX.1-schnell"):
        DiffusersOneStepGenerator(pipe, name="flux-dev-like", steps=4, resolution=32, device="cpu")
