"""Every preference model the studio serves satisfies one interface: it fits a history,
scores images, guides generation with a gradient, summarises the taste, and survives
export → import with identical scores."""
import re
from pathlib import Path

import pytest
import torch

from prefstudio.encoders.base import pil_to_tensor
from prefstudio.errors import InvalidInput
from prefstudio.eval.simulated_users import SimulatedUser
from prefstudio.preference.model import PreferenceModel
from prefstudio.preference.models import PREFERENCE_MODEL_NAMES
from prefstudio.studio import Studio
from prefstudio.taste_summary import taste_summary

PERSON = SimulatedUser("bright-warm", {"brightness": 1.0, "warmth": 1.0})


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """One shared folder of 16 judged candidates; each model's studio reads it."""
    data = tmp_path_factory.mktemp("shared")
    studio = Studio(data, preference_model="user-embedding")
    images = (studio.generate_candidates("a quiet landscape", seeds=list(range(8)))
              + studio.generate_candidates("a city street at dusk", seeds=list(range(8, 16))))
    utility = PERSON.utility(pil_to_tensor([studio.store.load_image(c.sha256) for c in images]))
    studio.store.create_profile("pat")
    for image, u in zip(images, utility):
        studio.judge("pat", "like" if u > utility.median() else "dislike", image.sha256)
    studio.store.close()
    return data, images, utility


@pytest.fixture(scope="module", params=PREFERENCE_MODEL_NAMES)
def fitted(request, candidates):
    data, images, utility = candidates
    studio = Studio(data, preference_model=request.param)
    report = studio.fit("pat")
    return studio, report, images, utility


def test_fit_names_the_model_and_ranks_the_hidden_taste(fitted):
    studio, report, images, utility = fitted
    assert isinstance(studio.preference, PreferenceModel)
    assert report.model == studio.preference.name and report.reason
    assert report.loo_accuracy is not None and report.loo_accuracy >= 0.7, report.summary()
    # Scores of the judged images go along with the hidden utility (not the opposite taste).
    scores = torch.tensor([s["user"] for s in studio.score_images("pat", [i.sha256 for i in images])])
    liked = utility > utility.median()
    assert scores[liked].mean() > scores[~liked].mean() + 0.5


def test_reward_has_a_gradient_in_the_pixels(fitted):
    studio, _, images, _ = fitted
    reward = studio.user_reward("pat")
    pixels = pil_to_tensor([studio.store.load_image(images[0].sha256)]).requires_grad_(True)
    reward.score(pixels, reward.prepare("a quiet landscape")).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_taste_summary_works_under_every_model(fitted):
    studio, *_ = fitted
    summary = taste_summary(studio, "pat")
    assert len(summary.ranked) == 24 and "Leans towards" in summary.text()
    # The person likes bright, warm images: a light or colour attribute is among the strongest leanings.
    assert {a for a, _ in summary.leanings[:3]} & {"brightness", "warmth", "tone", "colourfulness", "saturation"}


def test_export_then_import_scores_identically(fitted, tmp_path):
    studio, _, images, _ = fitted
    shas = [i.sha256 for i in images]
    before = studio.score_images("pat", shas)
    path = studio.export_profile("pat", tmp_path / "pat.prefstudio")
    elsewhere = Studio(tmp_path / "elsewhere", preference_model=studio.preference.name)
    elsewhere.import_profile(path)
    after = elsewhere.score_images("pat", shas)
    assert [s["user"] for s in after] == pytest.approx([s["user"] for s in before], abs=1e-5)


def test_a_taste_fitted_by_another_model_is_not_read_as_this_one(candidates):
    data, images, _ = candidates
    Studio(data, preference_model="user-embedding").fit("pat")
    tokens = Studio(data, preference_model="preference-tokens")
    tokens.store.create_profile("fresh")
    tokens.store.save_model("fresh", "preference-tokens", *tokens.store.load_model("pat", "user-embedding"))
    with pytest.raises(InvalidInput, match="fit again here"):
        tokens.user_reward("fresh")


def test_studio_and_ui_never_branch_on_the_model_name():
    root = Path(__file__).resolve().parent.parent / "prefstudio"
    sources = [root / "studio.py", root / "taste_summary.py", root / "cli.py", *(root / "ui").glob("*.py")]
    branching = re.compile(r"(model_name|preference\.name|preference_model)\s*[!=]=|isinstance\([^)]*(Preference|Taste)")
    offenders = [f"{p.name}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1)
                 if branching.search(line)]
    assert not offenders, offenders


def test_no_images_score_to_no_log_odds(fitted):
    """Found by a review: an empty batch crashed the token model and auto, where the user
    embedding gave an empty tensor."""
    studio, *_ = fitted
    taste = studio.user_reward("pat").taste
    features = torch.zeros(0, studio.encoder.dim)
    odds = taste.log_odds(features, taste.prompt_context(["a quiet landscape"]))
    assert odds.shape == (0,)
