"""The preference-token model (model B) as the studio's preference model: chosen by name or
checkpoint folder, reading the person's latest pairs, guiding generation, surviving export."""
import json
import shutil

import pytest
import torch

from prefstudio import cli
from prefstudio.encoders.embedded import EmbeddedImageEncoder
from prefstudio.errors import InvalidInput
from prefstudio.preference.tokens import load_checkpoint_bank, load_token_model, save_token_model
from prefstudio.preference.models import DEFAULT_TOKEN_CHECKPOINT as CHECKPOINT
from prefstudio.preference.models import PREFERENCE_TOKENS
from prefstudio.studio import Studio


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A token studio and a profile with 6 likes and 6 dislikes (36 like x dislike pairs)."""
    data = tmp_path_factory.mktemp("data")
    studio = Studio(data, preference_model=PREFERENCE_TOKENS)
    studio.store.create_profile("tess")
    images = studio.generate_candidates("a bowl of fruit", seeds=list(range(12)))
    for i, image in enumerate(images):
        studio.judge("tess", "like" if i % 2 else "dislike", image.sha256)
    return studio, images


def test_no_history_is_a_cold_start_on_the_preference_tokens():
    # The library's model reads an empty history (the studio's Fit asks for a pair first).
    from prefstudio.preference.model import JudgedPairs
    from prefstudio.preference.models import build_preference_model

    model = build_preference_model(PREFERENCE_TOKENS, EmbeddedImageEncoder.name, None, None, CHECKPOINT)
    taste, outcome = model.fit(JudgedPairs([], lambda shas: None, lambda shas: []))
    assert outcome.mode == "preference tokens, no history" and outcome.n_pairs == 0
    assert torch.isfinite(taste.log_odds(torch.randn(2, EmbeddedImageEncoder.dim), torch.randn(2, 384))).all()


def test_reads_the_latest_distinct_pairs_and_scores_as_the_model_does(judged):
    studio, images = judged
    report = studio.fit("tess")
    assert report.mode == "preference tokens" and report.n_pairs == 6  # 6 likes: 6 distinct-image pairs
    assert report.loo_accuracy is not None and report.loo_pairs == 6
    tensors, config = studio.store.load_model("tess", PREFERENCE_TOKENS)
    assert tensors["liked"].shape == (6, studio.encoder.dim) and tensors["prompts"].shape == (6, 384)
    assert config["checkpoint"].startswith(CHECKPOINT.name + ":")

    # The reward is the checkpoint's M⁺ − M⁻ for the image and its prompt, given the stored history.
    from prefstudio.encoders.base import pil_to_tensor
    from prefstudio.encoders.embedded import MiniLMTextEncoder
    from prefstudio.preference.tokens import PairFeatures, TargetFeatures

    model = load_token_model(CHECKPOINT)
    pixels = pil_to_tensor([studio.store.load_image(images[0].sha256)])
    with torch.no_grad():
        m_like, m_dislike = model.score(
            PairFeatures(tensors["liked"], tensors["disliked"], tensors["prompts"]),
            TargetFeatures(studio.encoder.encode(pixels), MiniLMTextEncoder().encode(["a bowl of fruit"])))
        reward = studio.user_reward("tess")
        raw = reward.score(pixels, reward.prepare("a bowl of fruit"))
    assert torch.allclose(raw, m_like - m_dislike, atol=1e-4)


def test_guides_generation_and_survives_export_and_import(judged, tmp_path):
    studio, images = judged
    studio.fit("tess")
    result = studio.personalize_once("tess", "a bowl of fruit", seed=9, iterations=4)
    assert result.baseline.record.seed == result.personalized.record.seed == 9
    assert result.personalized.normalised["user"] >= result.baseline.normalised["user"] - 0.05
    judged_images = [image.sha256 for image in images]  # they travel with the profile
    before = studio.score_images("tess", judged_images)
    path = studio.export_profile("tess", tmp_path / "tess.prefstudio")
    elsewhere = Studio(tmp_path / "other", preference_model=PREFERENCE_TOKENS)
    elsewhere.import_profile(path)
    assert elsewhere.fit_status("tess")["n_pairs"] == 6
    after = elsewhere.score_images("tess", judged_images)
    assert [s["user"] for s in after] == pytest.approx([s["user"] for s in before], abs=1e-5)


def test_unknown_model_and_another_checkpoint_are_refused(judged, tmp_path):
    studio, _ = judged
    with pytest.raises(InvalidInput, match="preference model must be one of auto, user-embedding, preference-tokens"):
        Studio(tmp_path / "x", preference_model="tokens-please")
    studio.fit("tess")
    # A checkpoint with other weights reads the stored history differently: fit again.
    other = tmp_path / "other_checkpoint"
    model = load_token_model(CHECKPOINT)
    with torch.no_grad():
        model.preference_tokens.add_(1.0)
    save_token_model(model, other, json.loads((CHECKPOINT / "config.json").read_text())["provenance"],
                     load_checkpoint_bank(CHECKPOINT))
    again = Studio(studio.store.data_dir, preference_model=str(other))
    with pytest.raises(InvalidInput, match="fit again here"):
        again.user_reward("tess")
    assert again.fit("tess").n_pairs == 6
    vlm = tmp_path / "copy"
    shutil.copytree(CHECKPOINT, vlm)
    config = json.loads((vlm / "config.json").read_text())
    config["model"]["backbone"] = "vlm"
    (vlm / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInput, match="not a lite preference-token checkpoint"):
        Studio(tmp_path / "y", preference_model=str(vlm))


def test_cli_flag_chooses_the_preference_model(tmp_path, capsys):
    data = str(tmp_path / "cli")
    base = ["--data", data, "--model", "embedded", "--preference-model", "preference-tokens"]
    assert cli.main(base + ["profile", "create", "cleo"]) == 0
    capsys.readouterr()
    assert cli.main(base + ["generate", "a fox", "--seeds", "1", "2"]) == 0
    first, second = (image["id"] for image in json.loads(capsys.readouterr().out)["images"])
    assert cli.main(base + ["judge", "cleo", "pair", first, second]) == 0
    assert cli.main(base + ["fit", "cleo"]) == 0
    assert '"mode": "preference tokens"' in capsys.readouterr().out
    assert cli.main(["--data", data, "--model", "embedded", "--preference-model", "nope", "fit", "cleo"]) == 2
    assert "preference model must be one of" in capsys.readouterr().err


def test_app_flag_refuses_an_unknown_model_before_serving(tmp_path, capsys):
    import app

    assert app.main(["--data", str(tmp_path), "--model", "embedded", "--preference-model", "nope"]) == 2
    assert "preference model must be one of" in capsys.readouterr().err
    studio = Studio(tmp_path, preference_model=PREFERENCE_TOKENS)
    from prefstudio.ui.app import describe_models

    assert "preference-token model" in describe_models(studio)


def test_the_shipped_checkpoint_carries_the_bank_of_its_training_users():
    from prefstudio.preference.user_embedding import fit_user_embedding

    bank = load_checkpoint_bank(CHECKPOINT)
    model = load_token_model(CHECKPOINT)
    assert bank.n_users == 1000 and bank.encoder == model.config.image_encoder == EmbeddedImageEncoder.name
    assert torch.equal(model.taste_projection, bank.projection)  # the taste space the model reads
    # Its user vectors serve the user-embedding model's cold start as the studio's own bank does.
    generator = torch.Generator().manual_seed(0)
    liked, disliked = (bank.mean + bank.std * torch.randn(3, bank.mean.shape[0], generator=generator) for _ in range(2))
    fit = fit_user_embedding(liked, disliked, bank, bank.encoder)
    assert fit.mode == "bank posterior" and fit.n_pairs == 3


def test_the_shipped_token_model_reads_a_studio_history(tmp_path):
    """Trained on PrefBench's clip-art, it still reads simulated people's tastes on the studio's
    own images: held out, each stored pair is predicted from the other seven."""
    from prefstudio.encoders.base import pil_to_tensor
    from prefstudio.eval.simulated_users import SimulatedUser

    studio = Studio(tmp_path, preference_model=PREFERENCE_TOKENS)
    candidates = (studio.generate_candidates("a quiet landscape", seeds=list(range(8)))
                  + studio.generate_candidates("a city street at dusk", seeds=list(range(8, 16))))
    pixels = pil_to_tensor([studio.store.load_image(c.sha256) for c in candidates])
    accuracies = []
    for person in (SimulatedUser("warm-dense", {"warmth": 1.0, "density": 1.0}),
                   SimulatedUser("bright-colourful", {"brightness": 1.0, "colourfulness": 1.0}),
                   SimulatedUser("dark-muted", {"brightness": -1.0, "saturation": -1.0})):
        studio.store.create_profile(person.user_id)
        utility = person.utility(pixels)
        for candidate, u in zip(candidates, utility):
            studio.judge(person.user_id, "like" if u > utility.median() else "dislike", candidate.sha256)
        report = studio.fit(person.user_id)
        assert report.n_pairs == 8 and report.loo_pairs == 8
        accuracies.append(report.loo_accuracy)
    assert sum(accuracies) / len(accuracies) >= 0.75, accuracies


def test_a_token_model_trained_on_long_histories_reads_up_to_32_pairs_as_one_history():
    """The shipped checkpoint, trained with histories of 1 to 32 pairs, reads the studio's latest
    32 pairs at once, each image with its own prompt (a 👍 of one prompt
    is paired with a 👎 of another): the taste is the model's score given all of them, and the
    oldest of 20 pairs still counts."""
    from prefstudio.encoders.embedded import MiniLMTextEncoder
    from prefstudio.preference.model import JudgedPairs
    from prefstudio.preference.models import PreferenceTokens
    from prefstudio.preference.tokens import PairFeatures, TargetFeatures

    model = load_token_model(CHECKPOINT)
    assert model.config.max_history >= 32
    text = MiniLMTextEncoder()
    tokens = PreferenceTokens(CHECKPOINT, EmbeddedImageEncoder.name, text)
    bank = load_checkpoint_bank(CHECKPOINT)
    generator = torch.Generator().manual_seed(0)
    features = bank.mean + bank.std * torch.randn(41, bank.mean.shape[0], generator=generator)
    row = {f"i{k}": features[k] for k in range(41)}
    prompt_of = {f"i{k}": "a fox" if k % 2 == 0 else "a city at night" for k in range(41)}

    def fit(pairs):
        judged = JudgedPairs(pairs, lambda ids: torch.stack([row[i] for i in ids]),
                             lambda ids: [prompt_of[i] for i in ids])
        return tokens.fit(judged)

    pairs = [(f"i{2 * k}", f"i{2 * k + 1}") for k in range(20)]
    taste, outcome = fit(pairs)
    assert outcome.n_pairs == 20 and len(taste.prefixes) == 1
    fox, city = text.encode(["a fox"]).float(), text.encode(["a city at night"]).float()
    target = features[40:41]
    with torch.no_grad():
        m_like, m_dislike = model.score(PairFeatures(features[0:40:2], features[1:40:2], fox.expand(20, -1),
                                                     city.expand(20, -1)), TargetFeatures(target, fox))
        assert torch.allclose(taste.log_odds(target, taste.prompt_context(["a fox"])), m_like - m_dislike, atol=1e-5)
        flipped, _ = fit([(pairs[0][1], pairs[0][0])] + pairs[1:])  # only the oldest pair differs
        assert not torch.allclose(flipped.log_odds(target, flipped.prompt_context(["a fox"])), m_like - m_dislike)
