"""Instant personalization: the preference adapter behind the generator interface, its
training, Premier's cold start, and the studio's "instant" methods."""
import dataclasses
import json
import math
from pathlib import Path

import pytest
from PIL import Image
import torch

from prefstudio.encoders.base import pil_to_tensor
from prefstudio.encoders.embedded import EmbeddedImageEncoder
from prefstudio.errors import InvalidInput, ModelUnavailable
from prefstudio.generators.diffusers_onestep import DiffusersOneStepGenerator
from prefstudio.generators.embedded import EmbeddedGenerator
from prefstudio.guidance.adapter import (
    BANK_FILE, CONFIG_FILE, AdapterShape, PreferenceAdapter, load_adapter, save_adapter,
)
from prefstudio.guidance.instant import instant_image
from prefstudio.preference.user_embedding import UserBank, bank_combination, fit_user_embedding
from prefstudio.rewards.base import Reward
from prefstudio.preference.models import DEFAULT_TOKEN_CHECKPOINT
from prefstudio.studio import DEFAULT_ADAPTER, DEFAULT_BANK, Studio
from prefstudio.tools.make_tiny_pipeline import tiny_sd_pipeline
from prefstudio_research.train.preference_adapter import (
    AdapterObjective, TrainSettings, evaluate, fixed_batch, new_adapter, train, training_prompts,
)

PROMPT = "a lighthouse on a cliff at dusk"


@pytest.fixture(scope="module")
def bank():
    return UserBank.load(DEFAULT_BANK)


def loud_adapter(user_dim: int, token_dim: int) -> PreferenceAdapter:
    """A random adapter whose offsets are large enough to change every image."""
    torch.manual_seed(0)
    adapter = PreferenceAdapter(AdapterShape(user_dim, token_dim, hidden=16, user_tokens=2))
    with torch.no_grad():
        adapter.out.weight.mul_(200.0)
    return adapter.eval()


def test_scale_zero_is_the_baseline_bit_for_bit_and_a_scale_changes_the_image(bank):
    generator = EmbeddedGenerator(resolution=64)
    tokens = generator.conditioning_tokens(generator.encode_prompt(PROMPT))
    adapter = loud_adapter(bank.user_embeddings.shape[1], tokens.shape[1])
    user = bank.user_embeddings[3]
    baseline = generator.generate(PROMPT, [11])[0].image
    still = instant_image(generator, adapter, PROMPT, 11, user, scale=0.0)
    assert still.image.tobytes() == baseline.tobytes() and still.best_iteration == 0
    moved = instant_image(generator, adapter, PROMPT, 11, user, scale=1.0)
    assert moved.image.tobytes() != baseline.tobytes() and moved.best_iteration == 1
    # No taste (a zero embedding) modulates nothing, whatever the scale.
    none = instant_image(generator, adapter, PROMPT, 11, torch.zeros_like(user), scale=1.0)
    assert none.image.tobytes() == baseline.tobytes()
    with pytest.raises(InvalidInput, match="scale"):
        instant_image(generator, adapter, PROMPT, 11, user, scale=-1.0)


def test_different_people_get_different_offsets_per_image_of_a_batch(bank):
    generator = EmbeddedGenerator(resolution=64)
    conditioning = generator.encode_prompt(PROMPT)
    adapter = loud_adapter(bank.user_embeddings.shape[1], generator.conditioning_tokens(conditioning).shape[1])
    users = bank.user_embeddings[:2]
    modulated = adapter.apply(generator, conditioning, users)
    assert modulated.mean.shape == (2, conditioning.mean.shape[0])
    pixels = generator.render(generator.initial_noise(5, batch=1).expand(2, -1), modulated)
    assert not torch.equal(pixels[0], pixels[1])
    # Each row of the batch is the image that person gets alone.
    alone = generator.render(generator.initial_noise(5), adapter.apply(generator, conditioning, users[1:]))
    torch.testing.assert_close(pixels[1:], alone, atol=1e-5, rtol=0)


def test_a_few_training_steps_on_cpu_raise_the_objective(bank):
    # Three training users and one prompt: few enough for twelve steps of two images to cover them.
    small = dataclasses.replace(bank, like_vectors=bank.like_vectors[:3], dislike_vectors=bank.dislike_vectors[:3])
    generator = EmbeddedGenerator(resolution=64)
    settings = TrainSettings(steps=12, people=2, lr=0.01, consistency=0.5, dispersion_people=4, hidden=16,
                             user_tokens=2, mix_users=2)
    objective = AdapterObjective(generator, EmbeddedImageEncoder(), small, training_prompts()[:1], settings)
    adapter = new_adapter(objective, settings)
    batch = fixed_batch(objective, 4, seed=5)  # other seeds than training draws
    before = evaluate(objective, adapter, batch)
    adapter, history = train(objective, settings, adapter=adapter, log=lambda *a: None)
    after = evaluate(objective, adapter, batch)
    assert len(history) == 12 and all("dispersion" in row for row in history)
    assert after > before + 0.1, (before, after, history)


def test_training_reads_people_as_the_studio_serves_them_without_themselves_in_the_bank(bank):
    """Training users reach the adapter as Instant's cold start reads a new person: the bank
    posterior of their judgments over the *other* training users, a blend that still leans to
    their own taste."""
    import random

    generator = EmbeddedGenerator(resolution=64)
    prompts = training_prompts()[:4]  # 16 reference images to judge
    objective = AdapterObjective(generator, EmbeddedImageEncoder(), bank, prompts, TrainSettings(served=1.0))
    read, taste = objective.people(40, random.Random(2))
    assert torch.allclose(read.sum(1), torch.ones(40)) and torch.allclose(taste.sum(1), torch.ones(40))
    assert float(read[taste > 0].abs().max()) == 0.0  # nobody is read by their own bank entry
    assert not torch.equal(read, taste)
    alignment = torch.nn.functional.cosine_similarity(read @ objective.users, taste @ objective.users)
    assert float(alignment.mean()) > 0.2, alignment
    own, _ = AdapterObjective(generator, EmbeddedImageEncoder(), bank, prompts[:1],
                              TrainSettings(served=0.0)).people(6, random.Random(2))
    assert set(own.count_nonzero(1).tolist()) <= {1, TrainSettings().mix_users}  # read by their own coefficients


def test_dispersion_loss_falls_as_people_move_apart():
    from prefstudio_research.train.preference_adapter import dispersion_loss

    close = torch.randn(6, 1, 8) * 0.01
    assert float(dispersion_loss(close * 100, 0.5)) < float(dispersion_loss(close, 0.5)) < 0.0 + 1e-6


def test_a_tiny_diffusers_pipeline_takes_the_same_adapter_path_forward_and_backward(bank):
    generator = DiffusersOneStepGenerator(tiny_sd_pipeline(), name="tiny-sd", steps=1, resolution=64, device="cpu")
    conditioning = generator.encode_prompt(PROMPT)
    tokens = generator.conditioning_tokens(conditioning)
    assert tokens.shape == conditioning.embeds.shape[1:]
    adapter = PreferenceAdapter(AdapterShape(bank.user_embeddings.shape[1], tokens.shape[1], hidden=16)).train()
    # Scale 0: the baseline, bit for bit.
    baseline = generator.generate(PROMPT, [4])[0].image
    assert instant_image(generator, adapter, PROMPT, 4, bank.user_embeddings[0], scale=0.0).image.tobytes() \
        == baseline.tobytes()
    # Forward for two people at once, backward into the adapter's weights.
    users = bank.user_embeddings[:2]
    modulated = adapter.apply(generator, conditioning, users)
    assert modulated.embeds.shape == (2, *tokens.shape)
    pixels = generator.render(generator.initial_noise(4).expand(2, -1, -1, -1), modulated)
    (pixels[0, 0].mean() - pixels[1, 2].mean()).backward()
    grads = [p.grad for p in adapter.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert adapter.out.weight.grad.abs().sum() > 0 and adapter.user_in.weight.grad.abs().sum() > 0
    # And the training objective runs through it unchanged (one step moves the weights).
    settings = TrainSettings(steps=1, people=2, dispersion_people=4, hidden=16, user_tokens=2)
    objective = AdapterObjective(generator, EmbeddedImageEncoder(), bank, [PROMPT], settings)
    fresh = new_adapter(objective, settings)
    start = {k: v.clone() for k, v in fresh.state_dict().items()}
    trained, _ = train(objective, settings, adapter=fresh, log=lambda *a: None)
    assert any(not torch.equal(start[k], v) for k, v in trained.state_dict().items())


def test_cold_start_is_the_bank_posterior_of_a_short_history(bank):
    """Premier's linear combination of trained user embeddings is the bank posterior the user
    embedding starts every person from: on a short history they are the same vector."""
    torch.manual_seed(1)
    liked, disliked = torch.randn(6, bank.mean.shape[0]), torch.randn(6, bank.mean.shape[0])
    coefficients = bank_combination(bank, liked, disliked)
    assert coefficients.shape == (bank.n_users,) and abs(float(coefficients.sum()) - 1) < 1e-5
    fitted = fit_user_embedding(liked, disliked, bank, bank.encoder).model
    assert fitted.like_vector.shape == bank.like_vectors.shape[1:]
    torch.testing.assert_close(fitted.like_vector - fitted.dislike_vector, coefficients @ bank.user_embeddings)
    uniform = bank_combination(bank, liked[:0], disliked[:0])
    torch.testing.assert_close(uniform, torch.full((bank.n_users,), 1 / bank.n_users))
    with pytest.raises(InvalidInput, match="features"):
        bank_combination(bank, liked[:, :5], disliked[:, :5])


def tiny_bank(path: Path, dim: int, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    UserBank("tiny-encoder", torch.zeros(5), torch.ones(5), torch.randn(5, dim, generator=g),
             torch.randn(3, dim, generator=g), torch.randn(3, dim, generator=g), 1.0, f"test bank {seed}").save(path)
    return path


def test_adapter_files_round_trip_with_their_bank_and_bad_files_are_refused(tmp_path):
    adapter = loud_adapter(4, 6)
    folder = save_adapter(adapter, tmp_path / "a", {"generator": "embedded"}, tiny_bank(tmp_path / "b.st", 4, 0))
    loaded, config, bank = load_adapter(folder)
    assert config["generator"] == "embedded" and bank.source == "test bank 0"
    for key, value in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    # The embeddings it reads only mean something in the bank it was trained with.
    tiny_bank(folder / BANK_FILE, 4, 1)
    with pytest.raises(InvalidInput, match=BANK_FILE):
        load_adapter(folder)
    (folder / BANK_FILE).unlink()
    with pytest.raises(InvalidInput, match=BANK_FILE):
        load_adapter(folder)
    wide = save_adapter(adapter, tmp_path / "w", {"generator": "embedded"}, tiny_bank(tmp_path / "w.st", 5, 0))
    with pytest.raises(InvalidInput, match="5-d user embeddings"):
        load_adapter(wide)
    config_path = folder / CONFIG_FILE
    good = json.loads(config_path.read_text())
    for broken in ({**good, "format": "pickle"}, {**good, "shape": {"user_dim": 4}},
                   {**good, "shape": {**good["shape"], "hidden": 8}}, {**good, "generator": 3}):
        config_path.write_text(json.dumps(broken))
        with pytest.raises(InvalidInput):
            load_adapter(folder)
    config_path.write_text("not json")
    with pytest.raises(InvalidInput, match="not JSON"):
        load_adapter(folder)


@pytest.fixture(scope="module")
def fitted_studio(tmp_path_factory):
    assert (DEFAULT_ADAPTER / "adapter.safetensors").is_file(), \
        "the shipped adapter is missing: see checkpoints/README.md"
    studio = Studio(tmp_path_factory.mktemp("data"), preference_model="user-embedding")
    assert studio.adapter is not None, studio.adapter_problem
    candidates = studio.generate_candidates("a quiet landscape", seeds=list(range(8)))
    pixels = pil_to_tensor([studio.store.load_image(c.sha256) for c in candidates])
    warmth = (pixels[:, 0] - pixels[:, 2]).mean((1, 2))
    studio.store.create_profile("alice")
    for candidate, value in zip(candidates, warmth):
        studio.judge("alice", "like" if value > warmth.median() else "dislike", candidate.sha256)
    studio.fit("alice")
    return studio


def test_studio_instant_at_strength_zero_is_the_baseline_and_otherwise_personalizes(fitted_studio):
    studio = fitted_studio
    def pixels(record):
        return studio.store.load_image(record.sha256).tobytes()

    still = studio.personalize_once("alice", PROMPT, seed=21, method="instant", strength=0.0)
    assert pixels(still.personalized.record) == pixels(still.baseline.record) and not still.improved
    side = studio.personalize_once("alice", PROMPT, seed=21, method="instant")
    assert pixels(side.personalized.record) != pixels(side.baseline.record)
    assert side.iterations_run == 0 and side.seconds > 0
    params = studio.store.image_record(side.personalized.record.sha256).params
    assert params["method"] == "instant" and params["adapter"].startswith("preference_adapter_embedded:")
    chained = studio.personalize_once("alice", PROMPT, seed=21, method="instant+guidance", iterations=2)
    assert chained.iterations_run == 2
    # Iteration 0 of the chain is Instant's image: the chain keeps the better of the two.
    assert chained.personalized.normalised["user"] >= side.personalized.normalised["user"] - 0.05
    with pytest.raises(InvalidInput, match="method must be one of"):
        studio.personalize_once("alice", PROMPT, seed=21, method="instantly")


def test_instant_without_an_adapter_says_how_to_get_one(tmp_path, fitted_studio):
    studio = Studio(tmp_path / "d", generator=fitted_studio.generator, image_encoder=fitted_studio.encoder,
                    preference_model="user-embedding", adapter_path=tmp_path / "none")
    assert studio.adapter is None
    studio.store.create_profile("bob")
    with pytest.raises(ModelUnavailable, match="python -m prefstudio_research.train.preference_adapter"):
        studio.instant_embedding("bob")


def test_cli_personalizes_with_method_instant(tmp_path, capsys):
    from prefstudio import cli

    base = ["--data", str(tmp_path / "data"), "--model", "embedded", "--preference-model", "user-embedding"]
    pairs = DEFAULT_ADAPTER.parent.parent / "assets" / "sample_pairs" / "pairs.jsonl"
    for command in (["profile", "create", "alice"], ["import-pairs", "alice", str(pairs), "--user", "ana"],
                    ["fit", "alice"]):
        assert cli.main(base + command) == 0
    capsys.readouterr()
    assert cli.main(base + ["personalize", "alice", "a lighthouse at dusk", "--seed", "7", "--method", "instant",
                            "--out", str(tmp_path / "out")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seed"] == 7 and out["personalized"]["id"] != out["baseline"]["id"]
    assert out["method"] == "instant"
    assert all(Path(path).is_file() for path in out["files"].values())
    with Image.open(out["files"]["personalized"]) as image:  # other tools read the method too
        assert "Method: instant," in image.info["parameters"]
    with pytest.raises(SystemExit):  # argparse names the methods on offer
        cli.main(base + ["personalize", "alice", "a fox", "--method", "instantly"])
    assert "invalid choice: 'instantly'" in capsys.readouterr().err


def test_a_corrupt_adapter_leaves_the_studio_running_and_instant_says_why(tmp_path, fitted_studio):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(json.dumps({"format": "prefstudio-preference-adapter", "version": 99}))
    studio = Studio(tmp_path / "d", generator=fitted_studio.generator, image_encoder=fitted_studio.encoder,
                    preference_model="user-embedding", adapter_path=folder)
    assert studio.adapter is None
    studio.store.create_profile("bob")
    with pytest.raises(ModelUnavailable, match="not a PrefStudio preference adapter"):
        studio.instant_embedding("bob")


class _Brightness(Reward):
    name = "brightness"
    description = "mean pixel value"

    def score(self, pixels, context):
        return pixels.mean((1, 2, 3))


class _OneBadGradient(EmbeddedGenerator):
    """Renders like the embedded generator, but the gradient of its first noise entry is NaN
    (0 · ∞, as a distance field's 0/0 gives at a sharp edge)."""

    def render(self, noise, conditioning):
        kink = torch.sqrt(noise[:, :1] - noise[:, :1].detach())[:, :, None, None]
        return super().render(noise, conditioning) + 0.0 * kink


def test_guidance_drops_non_finite_gradient_entries_instead_of_spreading_nan():
    from prefstudio.guidance.noise_optimization import GuidanceSettings, run_guidance

    generator = _OneBadGradient(resolution=64)
    result = run_guidance(generator, PROMPT, 3, {"brightness": _Brightness()}, {"brightness": 1.0},
                          GuidanceSettings(iterations=4, preview_every=0))
    assert torch.isfinite(result.noise).all() and all(math.isfinite(p.total) for p in result.trace)
    assert result.best_iteration > 0 and result.total > result.trace[0].total  # it still climbs


def test_instant_reads_the_people_of_the_adapters_own_bank_whatever_the_studios_bank(tmp_path, fitted_studio):
    # The studio's bank serves the user embedding; Instant's embedding lives in the adapter's bank.
    other_bank = DEFAULT_TOKEN_CHECKPOINT / "user_bank.safetensors"  # same encoder, other people
    studio = Studio(tmp_path / "d", generator=fitted_studio.generator, image_encoder=fitted_studio.encoder,
                    preference_model="user-embedding", bank_path=other_bank)
    assert studio.adapter is not None, studio.adapter_problem
    assert studio.bank.n_users != studio.adapter_bank.n_users
    candidates = studio.generate_candidates("a quiet landscape", seeds=list(range(4)))
    studio.store.create_profile("dana")
    studio.judge("dana", "pair", candidates[0].sha256, candidates[1].sha256)
    studio.judge("dana", "pair", candidates[3].sha256, candidates[2].sha256)
    pairs = studio.judged_pairs("dana").pairs
    features = studio.features([s for pair in pairs for s in pair]).view(len(pairs), 2, -1)
    expected = bank_combination(studio.adapter_bank, features[:, 0], features[:, 1], pair_images=pairs)
    torch.testing.assert_close(studio.instant_embedding("dana"), expected @ studio.adapter_bank.user_embeddings)


def test_instant_is_not_judged_by_a_blend_or_a_zero_taste_weight_it_cannot_follow(fitted_studio):
    """Found by a review: Instant makes one pass for the profile's own taste and ignores the
    sliders, yet `--weight user=0 --weight profile:bob=1` went through and the result was judged
    by bob's taste. A one-pass method is refused weights it cannot follow, before any work."""
    studio = fitted_studio
    if "bob" not in [p.name for p in studio.store.list_profiles()]:
        studio.store.create_profile("bob")
        for record in studio.store.judgments("alice"):
            studio.judge("bob", "dislike" if record.kind == "like" else "like", record.image_a)
        studio.fit("bob")
    images = len(studio.store.personalized_images("alice", 1000))
    for weights, message in (({"user": 0.75, "profile:bob": 1.0}, "cannot follow the taste of bob"),
                             ({"user": 0.0, "prompt_consistency": 0.5}, "your taste's weight is 0")):
        with pytest.raises(InvalidInput, match=message):
            studio.personalize_once("alice", "a quiet landscape", seed=3, weights=weights, method="instant")
    assert len(studio.store.personalized_images("alice", 1000)) == images
    # Guided follows both.
    studio.personalize_once("alice", "a quiet landscape", seed=3, iterations=1, method="guidance",
                            weights={"user": 0.75, "profile:bob": 1.0})
