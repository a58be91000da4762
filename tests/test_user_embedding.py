"""Model A: fitting, cold start from a bank, leave-one-out, persistence."""
import json
import math

import pytest
import torch
# torch.optim imports torch._dynamo when the first optimiser is made (seconds). Importing it with
# this module pays that once when tests are collected: mutmut collects once and then forks a
# process per mutant, each of which would otherwise pay it again.
import torch._dynamo  # noqa: F401

from prefstudio.errors import InvalidInput
from prefstudio.preference.user_embedding import (
    COLD_START_PAIRS,
    LIKELIHOOD_POWERS,
    UserBank,
    UserEmbeddingModel,
    calibrate_likelihood_power,
    fit_user_embedding,
    principal_directions,
    train_user_bank,
)

D, LATENT = 64, 6
_g = torch.Generator().manual_seed(0)
MIX = torch.randn(LATENT, D, generator=_g)
ARCHETYPES = torch.randn(3, LATENT, generator=_g)


def user_pairs(user: int, n: int, draw: int = 0):
    """Pairs labelled without noise by a hidden taste over latent image factors."""
    g = torch.Generator().manual_seed(user * 1000 + draw)
    taste = ARCHETYPES[user % 3] + 0.2 * torch.randn(LATENT, generator=g)
    la, lb = torch.randn(n, LATENT, generator=g), torch.randn(n, LATENT, generator=g)
    a = la @ MIX + 0.3 * torch.randn(n, D, generator=g)
    b = lb @ MIX + 0.3 * torch.randn(n, D, generator=g)
    b_wins = (lb @ taste > la @ taste)[:, None]
    return torch.where(b_wins, b, a), torch.where(b_wins, a, b)


def heldout_accuracy(model, user):
    liked, disliked = user_pairs(user, 300, draw=99)
    return (model.log_odds(liked) > model.log_odds(disliked)).float().mean().item()


@pytest.fixture(scope="module")
def bank():
    return train_user_bank([user_pairs(10 + i, 30) for i in range(24)], "enc", "test", dim=8, epochs=200)


def test_fit_from_scratch_learns_the_taste():
    liked, disliked = user_pairs(1, 60)
    result = fit_user_embedding(liked, disliked, None, "enc")
    assert result.mode == "free" and result.n_pairs == 60
    assert result.loo_accuracy > 0.7
    assert heldout_accuracy(result.model, 1) > 0.75


def test_bank_helps_with_a_short_history(bank):
    with_bank, scratch = [], []
    for user in (1, 2, 3):
        liked, disliked = user_pairs(user, COLD_START_PAIRS - 2)
        fitted = fit_user_embedding(liked, disliked, bank, "enc")
        assert fitted.mode == "bank posterior"
        with_bank.append(heldout_accuracy(fitted.model, user))
        scratch.append(heldout_accuracy(fit_user_embedding(liked, disliked, None, "enc").model, user))
    assert sum(with_bank) / 3 > sum(scratch) / 3 + 0.05
    assert sum(with_bank) / 3 > 0.75


def test_no_history_cold_start_and_clear_error_without_bank(bank):
    empty = torch.zeros(0, D)
    assert fit_user_embedding(empty, empty, bank, "enc").mode == "bank average"
    with pytest.raises(InvalidInput, match="no judgments"):
        fit_user_embedding(empty, empty, None, "enc")


def test_bad_inputs_are_refused(bank):
    liked, disliked = user_pairs(1, 4)
    with pytest.raises(InvalidInput, match="encoder"):
        fit_user_embedding(liked, disliked, bank, "another-encoder")
    bad = liked.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InvalidInput, match="NaN"):
        fit_user_embedding(bad, disliked, None, "enc")
    with pytest.raises(InvalidInput, match=r"\[N, D\]"):
        fit_user_embedding(liked, disliked[:2], None, "enc")


def test_leave_one_out_never_trains_on_a_held_out_image():
    # Two pairs share the liked image; one judgment repeated cannot vouch for itself.
    liked, disliked = user_pairs(1, 3)
    liked[1] = liked[0]
    images = [("x", "n0"), ("x", "n1"), ("y", "n2")]
    result = fit_user_embedding(liked, disliked, None, "enc", pair_images=images)
    assert result.loo_pairs == 3  # every pair evaluable: pair 2 shares nothing
    # Every pair shares the liked image with every other: no held-out model has a pair to learn
    # from, so there is no leave-one-out estimate rather than one of untrained models.
    shared = fit_user_embedding(liked, disliked, None, "enc", pair_images=[("x", "n0"), ("x", "n1"), ("x", "n2")])
    assert (shared.loo_pairs, shared.loo_accuracy, shared.held_out) == (0, None, {})


def test_model_and_bank_round_trip(tmp_path, bank, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be read from or written to a relative path by mistake
    liked, disliked = user_pairs(2, 20)
    model = fit_user_embedding(liked, disliked, bank, "enc").model
    tensors, config = model.state()
    again = UserEmbeddingModel.from_state(tensors, config)
    assert torch.equal(again.log_odds(liked), model.log_odds(liked)) and again.encoder == "enc"
    bank.save(tmp_path / "bank.safetensors")
    loaded = UserBank.load(tmp_path / "bank.safetensors")
    assert torch.equal(loaded.projection, bank.projection) and loaded.encoder == "enc"
    (tmp_path / "bad.safetensors").write_bytes(b"not a bank")
    with pytest.raises(InvalidInput) as refused:
        UserBank.load(tmp_path / "bad.safetensors")
    message = str(refused.value)  # what to do about it, not only what is wrong
    assert message.startswith(f"{tmp_path / 'bad.safetensors'} is not a readable PrefStudio user bank (safetensors: ")
    assert message.endswith("); delete it or rebuild it with python -m prefstudio bank")


def test_bank_posterior_follows_the_evidence(bank):
    # A new person of archetype 0: the posterior puts its weight on the bank users of that
    # archetype (bank user i is user 10 + i), a third of the bank.
    liked, disliked = user_pairs(3, 12)
    weights = bank.posterior(bank.pair_log_likelihoods(liked, disliked).sum(0))
    same_kind = torch.tensor([(10 + i) % 3 == 0 for i in range(bank.n_users)])
    assert torch.isclose(weights.sum(), torch.tensor(1.0))
    assert weights[same_kind].sum() > 0.8
    assert bank.likelihood_power in LIKELIHOOD_POWERS


def test_bank_combination_weighs_the_bank_users_by_the_independent_evidence(bank):
    from prefstudio.preference.user_embedding import bank_combination

    empty = torch.zeros(0, D)
    assert torch.equal(bank_combination(bank, empty, empty), torch.full((bank.n_users,), 1 / bank.n_users))
    liked, disliked = user_pairs(3, 8)
    coefficients = bank_combination(bank, liked, disliked)
    assert coefficients.shape == (bank.n_users,) and torch.isclose(coefficients.sum(), torch.tensor(1.0))
    assert torch.allclose(coefficients, bank.posterior(bank.pair_log_likelihoods(liked, disliked).sum(0)))
    # Every like paired with every dislike: 4 x 4 = 16 pairs of 8 images say no more than 4 pairs.
    l4, d4 = user_pairs(3, 4)
    grid_liked, grid_disliked = l4.repeat_interleave(4, 0), d4.repeat(4, 1)
    ids = [(f"l{i}", f"d{j}") for i in range(4) for j in range(4)]
    grid = bank_combination(bank, grid_liked, grid_disliked, pair_images=ids)
    scaled = bank.pair_log_likelihoods(grid_liked, grid_disliked).sum(0) * 4 / 16
    assert torch.allclose(grid, bank.posterior(scaled))
    assert not torch.allclose(grid, bank_combination(bank, grid_liked, grid_disliked))
    with pytest.raises(InvalidInput, match=rf"must both be \[N, {D}\]; got \(8, {D}\) and \(7, {D}\)"):
        bank_combination(bank, liked, disliked[:7])
    with pytest.raises(InvalidInput, match=rf"\[N, {D}\]"):
        bank_combination(bank, liked[:, :5], disliked[:, :5])
    bad = liked.clone()
    bad[2, 1] = float("inf")
    with pytest.raises(InvalidInput, match="^image features contain NaN or infinite values$"):
        bank_combination(bank, bad, disliked)
    # A single pair already moves the weights off the average user.
    one = bank_combination(bank, liked[:1], disliked[:1])
    assert torch.allclose(one, bank.posterior(bank.pair_log_likelihoods(liked[:1], disliked[:1]).sum(0)))
    assert not torch.allclose(one, torch.full((bank.n_users,), 1 / bank.n_users))


def test_the_bank_projects_standardised_features_into_its_taste_space():
    bank = UserBank("enc", torch.tensor([1.0, -2.0]), torch.tensor([2.0, 4.0]), torch.tensor([[1.0], [10.0]]),
                    torch.ones(2, 1), torch.zeros(2, 1), 1.0, "test")
    assert torch.equal(bank.project(torch.tensor([[3.0, 2.0]])), torch.tensor([[1.0 + 10.0]]))


def test_a_fitted_taste_of_another_type_or_version_is_refused(bank):
    tensors, config = fit_user_embedding(*user_pairs(2, 4), bank, "enc").model.state()
    for wrong in ({**config, "version": 2}, {**config, "type": "preference-tokens"}, {"version": 1}):
        with pytest.raises(InvalidInput, match="^not a user-embedding model config: "):
            UserEmbeddingModel.from_state(tensors, wrong)
    # The message shows the config it was given, cut at 200 characters.
    long = {**config, "version": 3, "note": "n" * 300}
    with pytest.raises(InvalidInput) as refused:
        UserEmbeddingModel.from_state(tensors, long)
    assert str(refused.value) == "not a user-embedding model config: " + json.dumps(long)[:200]


def test_a_taste_scores_standardised_projected_features():
    model = UserEmbeddingModel("enc", torch.tensor([1.0, -2.0]), torch.tensor([2.0, 4.0]), torch.tensor([[1.0], [10.0]]),
                               torch.tensor([3.0]), torch.tensor([1.0]), 0.5, -0.5)
    # ((3, 2) - (1, -2)) / (2, 4) = (1, 1), projected: 11; like 33.5, dislike 10.5.
    like, dislike = model.logits(torch.tensor([[3.0, 2.0]]))
    assert torch.equal(like, torch.tensor([33.5])) and torch.equal(dislike, torch.tensor([10.5]))


def test_a_long_history_moves_the_person_off_the_bank_and_the_held_out_sample_does_not_change_it(bank):
    from prefstudio.preference.user_embedding import MAX_LOO_MODELS, bank_combination

    liked, disliked = user_pairs(3, MAX_LOO_MODELS + 16)
    fit = fit_user_embedding(liked, disliked, bank, "enc", steps=40)
    assert fit.mode == "bank posterior + personal"
    # Its personal offset is fitted: the vectors leave the bank users' mix.
    prior = bank_combination(bank, liked, disliked)
    assert not torch.allclose(fit.model.like_vector, prior @ bank.like_vectors, atol=1e-3)
    assert not torch.allclose(fit.model.dislike_vector, prior @ bank.dislike_vectors, atol=1e-3)
    # ... and restrained: the person stays nearer their mix of bank users than the mix is to zero.
    for vector, mixed in ((fit.model.like_vector, prior @ bank.like_vectors),
                          (fit.model.dislike_vector, prior @ bank.dislike_vectors)):
        assert (vector - mixed).norm() < mixed.norm()
    # The leave-one-out evaluates 64 pairs spread evenly from the first judged to the last.
    n = MAX_LOO_MODELS + 16
    assert sorted(fit.held_out) == [round(i * (n - 1) / (MAX_LOO_MODELS - 1)) for i in range(MAX_LOO_MODELS)]
    assert fit.loo_pairs == MAX_LOO_MODELS


def test_like_probability_is_the_sigmoid_of_the_log_odds():
    model = UserEmbeddingModel("enc", torch.zeros(2), torch.ones(2), torch.eye(2), torch.tensor([2.0, 0.0]),
                               torch.tensor([0.0, 1.0]), 0.5, -0.5)
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(model.log_odds(features), torch.tensor([3.0, 0.0, 1.0]))
    assert torch.allclose(model.like_probability(features), torch.sigmoid(torch.tensor([3.0, 0.0, 1.0])))


def test_a_saved_bank_reads_back_whole_and_another_file_is_refused_in_one_line(tmp_path, bank, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be read from or written to a relative path by mistake
    from safetensors.torch import load_file, save_file

    path = tmp_path / "bank.safetensors"
    bank.save(path)
    loaded = UserBank.load(path)
    for name in ("mean", "std", "projection", "like_vectors", "dislike_vectors"):
        assert torch.equal(getattr(loaded, name), getattr(bank, name)), name
    assert (loaded.encoder, loaded.likelihood_power, loaded.source) == ("enc", bank.likelihood_power, "test")
    tensors = load_file(str(path))
    for meta in ({"format": "prefstudio-user-bank", "version": "1", "encoder": "enc", "likelihood_power": "1.0"},
                 {"format": "something-else", "version": "2", "encoder": "enc", "likelihood_power": "1.0"}):
        save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
        with pytest.raises(InvalidInput, match=r"^\S+old.safetensors is not a PrefStudio user bank \(version 2\); "
                                               r"rebuild it with python -m prefstudio_research.train.user_bank$"):
            UserBank.load(tmp_path / "old.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"), metadata={
        "format": "prefstudio-user-bank", "version": "2", "encoder": "enc", "likelihood_power": "0.5"})
    plain = UserBank.load(tmp_path / "plain.safetensors")
    assert plain.source == "" and plain.likelihood_power == 0.5  # a bank that does not say how it was made


def test_a_bank_needs_two_users_and_two_are_enough():
    with pytest.raises(InvalidInput, match="^a user bank needs at least two users$"):
        train_user_bank([user_pairs(1, 6)], "enc", "test", dim=4, epochs=5)
    two = train_user_bank([user_pairs(1, 6), user_pairs(2, 6)], "enc", "test", dim=4, epochs=5)
    assert two.n_users == 2 and two.projection.shape == (D, 4)


# --- the bank's training recipe ---------------------------------------------------------
# A small population (6 users of 10 pairs, two of each archetype) and short trainings: these
# tests pin what the recipe must do, not how well a bank serves real people (the benchmarks).
POPULATION = [user_pairs(10 + i, 10) for i in range(6)]


def own_pair_probabilities(bank: UserBank, users) -> torch.Tensor:
    """P(liked ≻ disliked) of every training pair under its own user's vectors in the bank."""
    gaps = bank.project(torch.cat([u[0] for u in users])) - bank.project(torch.cat([u[1] for u in users]))
    owner = torch.cat([torch.full((len(u[0]),), i) for i, u in enumerate(users)])
    return torch.sigmoid((gaps * bank.user_embeddings[owner]).sum(-1))


def test_the_studio_builds_its_bank_with_the_documented_recipe():
    # `python -m prefstudio bank` calls train_user_bank with its defaults.
    default = train_user_bank(POPULATION[:2], "enc", "test")
    recipe = train_user_bank(POPULATION[:2], "enc", "test", dim=32, epochs=300, lr=0.02, weight_decay=0.1,
                             contrastive=True, seed=0)
    assert default.projection.shape == (D, 32) and default.like_vectors.shape == (2, 32)
    for name in ("projection", "like_vectors", "dislike_vectors"):
        assert torch.equal(getattr(default, name), getattr(recipe, name)), name


def test_each_bank_user_explains_their_own_judgments():
    bank = train_user_bank(POPULATION, "enc", "test", dim=8, epochs=60)
    probabilities = own_pair_probabilities(bank, POPULATION)
    assert (probabilities > 0.5).float().mean() > 0.9 and probabilities.mean() > 0.85


def test_a_bank_does_not_depend_on_where_or_at_what_scale_the_features_lie():
    # An encoder whose features are shifted and scaled gives the same taste space and users.
    shift, scale = torch.linspace(-20.0, 20.0, D), 3.0
    bank = train_user_bank(POPULATION, "enc", "test", dim=8, epochs=30)
    moved = train_user_bank([(liked * scale + shift, disliked * scale + shift) for liked, disliked in POPULATION],
                            "enc", "test", dim=8, epochs=30)
    images = torch.randn(5, D, generator=torch.Generator().manual_seed(5)) @ torch.eye(D)
    assert torch.allclose(moved.project(images * scale + shift), bank.project(images), atol=1e-4)
    assert torch.allclose(moved.like_vectors, bank.like_vectors, atol=1e-4)
    assert torch.allclose(moved.dislike_vectors, bank.dislike_vectors, atol=1e-4)


def test_a_bank_is_the_same_whatever_its_random_start(bank):
    """The bank is a function of its users' judgments, not of the seed: the same users trained
    from another random start score every pair of images alike and calibrate the same β (the
    users' vectors start small, so training, not the draw, decides where they end)."""
    again = train_user_bank([user_pairs(10 + i, 30) for i in range(24)], "enc", "test", dim=8, epochs=200, seed=1)
    assert not torch.equal(again.projection, bank.projection)  # another start, another basis
    images = torch.randn(200, D, generator=torch.Generator().manual_seed(7))
    gaps = [(b.project(images[:100]) - b.project(images[100:])) @ b.user_embeddings.T for b in (bank, again)]
    assert torch.corrcoef(torch.stack([g.flatten() for g in gaps]))[0, 1] > 0.99999
    assert again.likelihood_power == bank.likelihood_power


def test_the_weight_decay_shrinks_the_taste_space_and_every_users_vectors():
    norms = []
    for weight_decay in (0.0, 0.1, 1.0):
        bank = train_user_bank(POPULATION, "enc", "test", dim=8, epochs=30, weight_decay=weight_decay)
        norms.append([bank.projection.norm(), bank.like_vectors.norm(dim=1).max(), bank.dislike_vectors.norm(dim=1).max()])
    for weaker, stronger in zip(norms, norms[1:]):
        assert all(b < a for a, b in zip(weaker, stronger)), norms


def test_the_contrastive_switch_reaches_the_bank_loss():
    with_terms = train_user_bank(POPULATION[:2], "enc", "test", dim=8, epochs=10)
    base_only = train_user_bank(POPULATION[:2], "enc", "test", dim=8, epochs=10, contrastive=False)
    assert not torch.allclose(with_terms.like_vectors, base_only.like_vectors)


def test_a_bank_keeps_its_source_and_the_power_that_predicts_its_own_users_best():
    # The bank's β is calibrated on its own training pairs (projected liked − disliked) and
    # each user's like − dislike vector; the source it was trained from is kept as given.
    population = [user_pairs(10 + i, 10) for i in range(12)]
    bank = train_user_bank(population, "enc", "twelve archetype users", dim=8, epochs=30)
    assert bank.source == "twelve archetype users"
    gaps = bank.project(torch.cat([u[0] for u in population])) - bank.project(torch.cat([u[1] for u in population]))
    owner = torch.cat([torch.full((len(u[0]),), i) for i, u in enumerate(population)])
    directions = bank.like_vectors - bank.dislike_vectors
    assert bank.likelihood_power == calibrate_likelihood_power(gaps, owner, directions) == 0.5


# --- calibrating β: a hand-made bank whose right β is known -------------------------------
# Users 0 (taste along the first axis) and 1 (the second) have no pairs of their own; users 2
# and 3 have no taste (zero vectors: they only dilute a mix) and two pairs each: the first is
# the history, the second is held out. Both histories favour user 0 over user 1 by the same
# log-likelihood, 0.5 (logσ(x) − logσ(−x) = x), so a mix gives user 0 e^(β/2) times user 1's weight.
# User 2's held-out pair (2, −3) is predicted once that ratio passes 3/2 (β > 0.81), user 3's
# (−1, 2) while it stays below 2 (β < 1.39): only β = 1 predicts both.
CALIBRATION_DIRECTIONS = torch.tensor([[0.5, 0.0], [0.0, 0.5], [0.0, 0.0], [0.0, 0.0]])
CALIBRATION_GAPS = torch.tensor([[1.0, -1.0], [2.0, -3.0], [1.0, -1.0], [-1.0, 2.0]])
CALIBRATION_USERS = torch.tensor([2, 2, 3, 3])


def test_the_calibrated_power_is_the_grid_value_that_predicts_every_held_out_pair():
    power = calibrate_likelihood_power(CALIBRATION_GAPS, CALIBRATION_USERS, CALIBRATION_DIRECTIONS)
    assert power == 1.0 and power in LIKELIHOOD_POWERS
    # The users' pairs may come in any order: each user's first pair is their history.
    assert calibrate_likelihood_power(CALIBRATION_GAPS[[2, 3, 0, 1]], torch.tensor([3, 3, 2, 2]),
                                      CALIBRATION_DIRECTIONS) == 1.0
    # When user 3's held-out pair (1, −2) also needs user 0 to outweigh user 1 twice over
    # (β > 1.39), the smallest β that predicts both pairs is 2.
    confident = CALIBRATION_GAPS.clone()
    confident[3] = torch.tensor([1.0, -2.0])
    assert calibrate_likelihood_power(confident, CALIBRATION_USERS, CALIBRATION_DIRECTIONS) == 2.0


def test_the_power_is_calibrated_on_each_users_first_eight_pairs():
    # As above, with users of 18 pairs: eight of (1/8, −1/8) favour user 0 by 0.5 in all, as the
    # single pair did, so β = 1 again; the 9th, (1, −1), is held out with the rest. Read as
    # history too, it would double the evidence, and only β = 0.5 would predict both users.
    def user(held_out):
        return torch.tensor([[0.125, -0.125]] * 8 + [[1.0, -1.0]] + [held_out] * 9)

    gaps = torch.cat([user([2.0, -3.0]), user([-1.0, 2.0])])
    owners = torch.tensor([2] * 18 + [3] * 18)
    assert calibrate_likelihood_power(gaps, owners, CALIBRATION_DIRECTIONS) == 1.0
    assert calibrate_likelihood_power(gaps, owners, CALIBRATION_DIRECTIONS, n_history=9) == 0.5


def test_a_held_out_pair_the_mix_has_no_opinion_on_is_not_a_correct_prediction():
    # Users 0, 3 and 4 have no taste; 1 and 2 have one along each axis. User 3's history makes
    # users 1 and 2 about 150 nats less likely than the tasteless ones: from β = 1 on their weight
    # is exactly 0 (float32), the mix gives user 3's two held-out pairs a log-odds of exactly 0,
    # and those are misses; below it they are (barely) predicted. User 4's held-out pair needs
    # β > 0.81 as above. Two pairs outweigh one: β = 1/8, the first grid value that predicts them.
    directions = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    gaps = torch.tensor([[-150.0, -150.0], [1.0, 0.0], [1.0, 0.0], [0.5, -0.5], [2.0, -3.0]])
    assert calibrate_likelihood_power(gaps, torch.tensor([3, 3, 3, 4, 4]), directions) == 0.125


def test_calibration_needs_a_user_with_two_pairs_and_skips_the_others():
    one_each = torch.tensor([0, 1, 2, 3])
    with pytest.raises(InvalidInput, match="^calibrating a user bank needs users with at least two pairs$"):
        calibrate_likelihood_power(CALIBRATION_GAPS, one_each, CALIBRATION_DIRECTIONS)
    # A user with a single pair (user 0 here) is passed over, not the end of the calibration.
    with_a_single_pair = torch.cat([CALIBRATION_GAPS, torch.tensor([[-1.0, 1.0]])])
    users = torch.tensor([2, 2, 3, 3, 0])
    assert calibrate_likelihood_power(with_a_single_pair, users, CALIBRATION_DIRECTIONS) == 1.0


def test_a_fitted_taste_likes_what_the_person_liked_and_not_what_they_disliked(bank):
    # Not only the order: the probability of a like is above one half for the liked images and
    # below it for the disliked ones (the logit biases are fitted the way they are used).
    liked, disliked = user_pairs(1, 24)
    for fitted in (fit_user_embedding(liked, disliked, None, "enc"), fit_user_embedding(liked, disliked, bank, "enc")):
        assert (fitted.model.like_probability(liked) > 0.5).float().mean() > 0.65, fitted.mode
        assert (fitted.model.like_probability(disliked) < 0.5).float().mean() > 0.65, fitted.mode


def test_the_fitting_rate_reaches_the_optimiser():
    liked, disliked = user_pairs(1, 6)
    slow, fast = (fit_user_embedding(liked, disliked, None, "enc", steps=5, lr=lr).model for lr in (0.01, 0.1))
    assert not torch.allclose(slow.like_vector, fast.like_vector)


def test_a_fit_uses_the_documented_recipe_and_its_contrastive_switch():
    liked, disliked = user_pairs(1, 6)
    default = fit_user_embedding(liked, disliked, None, "enc").model
    recipe = fit_user_embedding(liked, disliked, None, "enc", contrastive=True, steps=150, lr=0.05).model
    base_only = fit_user_embedding(liked, disliked, None, "enc", contrastive=False).model
    assert torch.equal(default.like_vector, recipe.like_vector) and torch.equal(default.like_bias, recipe.like_bias)
    assert not torch.allclose(default.like_vector, base_only.like_vector)


def test_a_history_the_bank_cannot_explain_is_fitted_from_scratch_once_it_is_long_enough():
    # A bank whose one taste direction no latent image factor reaches: its mix explains nothing.
    unreached = torch.linalg.svd(MIX, full_matrices=True).Vh[LATENT:LATENT + 1].T
    blind = UserBank("enc", torch.zeros(D), torch.ones(D), unreached, torch.ones(2, 1), torch.zeros(2, 1), 1.0, "test")
    liked, disliked = user_pairs(1, COLD_START_PAIRS)
    fitted = fit_user_embedding(liked, disliked, blind, "enc", steps=60)
    assert fitted.mode == "free" and fitted.model.encoder == "enc"
    # The fit from scratch gets the caller's settings: fewer steps, another model.
    fewer = fit_user_embedding(liked, disliked, blind, "enc", steps=30)
    assert fewer.mode == "free" and not torch.allclose(fitted.model.like_vector, fewer.model.like_vector)
    # One pair short of COLD_START_PAIRS, the bank's mix serves with no fit from scratch to compete.
    assert fit_user_embedding(liked[:-1], disliked[:-1], blind, "enc", steps=30).mode == "bank posterior"
    # More pairs that reuse their liked images are worth fewer than COLD_START_PAIRS (20 pairs of 30
    # images count as 15): the same.
    liked, disliked = user_pairs(1, 20)
    liked[10:] = liked[:10]
    reused = [(f"l{i % 10}", f"d{i}") for i in range(20)]
    assert fit_user_embedding(liked, disliked, blind, "enc", pair_images=reused, steps=30).mode == "bank posterior"


def test_when_the_fit_from_scratch_is_no_better_the_bank_fit_is_served(bank):
    # Both read every one of these 32 held-out pairs right: the bank's fit, which generalises
    # from many people, is kept on a tie.
    from prefstudio.preference.user_embedding import _fit

    liked, disliked = user_pairs(3, 32)
    recipe = dict(pair_images=None, contrastive=True, steps=150, lr=0.05)
    assert _fit(liked, disliked, bank, "enc", **recipe).loo_accuracy == 1.0
    assert _fit(liked, disliked, None, "enc", **recipe).loo_accuracy == 1.0
    assert fit_user_embedding(liked, disliked, bank, "enc").mode == "bank posterior + personal"


@pytest.mark.parametrize("user, draw", [(11, 1), (14, 1), (26, 0)])
def test_a_fit_from_scratch_that_reads_one_more_held_out_pair_does_not_replace_the_bank_fit(bank, user, draw):
    # 16 pairs of a person the bank explains: the fit from scratch happens to read one more of the
    # 16 held-out pairs than the bank's fit, which is chance, and it reads fresh pairs of this
    # person worse. The bank's fit serves.
    from prefstudio.preference.user_embedding import _fit

    liked, disliked = user_pairs(user, COLD_START_PAIRS, draw=draw)
    recipe = dict(pair_images=None, contrastive=True, steps=150, lr=0.05)
    with_bank, scratch = _fit(liked, disliked, bank, "enc", **recipe), _fit(liked, disliked, None, "enc", **recipe)
    assert round(COLD_START_PAIRS * (scratch.loo_accuracy - with_bank.loo_accuracy)) == 1
    assert heldout_accuracy(with_bank.model, user) > heldout_accuracy(scratch.model, user) + 0.05
    served = fit_user_embedding(liked, disliked, bank, "enc")
    assert served.mode == "bank posterior + personal"
    assert heldout_accuracy(served.model, user) == heldout_accuracy(with_bank.model, user)


def test_a_history_the_bank_gets_entirely_wrong_is_fitted_from_scratch():
    # A bank whose one taste direction scores every liked image exactly one above its disliked
    # one, and whose users all hold it the wrong way round: its fit predicts none of the held-out
    # pairs (accuracy 0, not "no accuracy"), and the fit from scratch, which predicts some, serves.
    liked, disliked = user_pairs(1, COLD_START_PAIRS)
    direction = torch.linalg.pinv(liked - disliked) @ torch.ones(COLD_START_PAIRS)
    backwards = UserBank("enc", torch.zeros(D), torch.ones(D), direction[:, None], -5 * torch.ones(2, 1),
                         5 * torch.ones(2, 1), 1.0, "test")
    fitted = fit_user_embedding(liked, disliked, backwards, "enc", steps=30)
    assert fitted.mode == "free" and fitted.loo_accuracy > 0.5


def test_with_nothing_judged_the_taste_is_the_average_bank_user(bank):
    empty = torch.zeros(0, D)
    result = fit_user_embedding(empty, empty, bank, "enc")
    assert (result.mode, result.n_pairs, result.loo_accuracy, result.loo_pairs) == ("bank average", 0, None, 0)
    assert math.isnan(result.final_loss) and result.held_out == {}
    model = result.model
    average = UserEmbeddingModel("enc", bank.mean, bank.std, bank.projection, bank.like_vectors.mean(0),
                                 bank.dislike_vectors.mean(0), 0.0, 0.0)
    images = torch.randn(5, D, generator=torch.Generator().manual_seed(3))
    assert model.encoder == "enc" and torch.equal(model.log_odds(images), average.log_odds(images))
    assert torch.equal(model.logits(images)[0], average.logits(images)[0])
    assert torch.equal(model.logits(images)[1], average.logits(images)[1])


def test_refusals_of_a_fit_say_exactly_what_is_wrong():
    empty = torch.zeros(0, D)
    with pytest.raises(InvalidInput) as nothing:
        fit_user_embedding(empty, empty, None, "enc")
    assert str(nothing.value) == ("no judgments to learn from yet and no user bank for a cold start: "
                                  "like or dislike a few images (or pick the better of two) first")
    liked, disliked = user_pairs(1, 4)
    liked[2, 5] = float("inf")
    with pytest.raises(InvalidInput) as bad:
        fit_user_embedding(liked, disliked, None, "enc")
    assert str(bad.value) == "image features contain NaN or infinite values"


@pytest.mark.parametrize("contrastive", [True, False])
def test_a_held_out_pair_of_two_identical_images_is_not_a_correct_prediction(contrastive):
    # Its two log-odds are equal, so the model did not prefer the liked one; every other held-out
    # pair counts as right exactly when its liked − disliked log-odds is above zero. Without the
    # contrastive loss the like and dislike biases are fitted too, and still cancel in a pair.
    liked, disliked = user_pairs(1, 12)
    disliked[4] = liked[4]
    result = fit_user_embedding(liked, disliked, None, "enc", contrastive=contrastive)
    assert math.isfinite(result.final_loss)
    assert result.held_out[4] == 0.0 and len(result.held_out) == result.loo_pairs == 12
    assert result.loo_accuracy == sum(v > 0 for v in result.held_out.values()) / 12
    assert result.loo_accuracy < 1.0


def test_a_taste_fitted_from_scratch_does_not_depend_on_where_or_at_what_scale_the_features_lie():
    # A shift of every feature dimension by its own amount, and one scale for all of them (an
    # encoder's offset and units), change neither the held-out predictions nor how new images rank.
    liked, disliked = user_pairs(2, 24)
    images = user_pairs(2, 50, draw=7)[0]
    shift = 3 * torch.randn(D, generator=torch.Generator().manual_seed(4))
    plain = fit_user_embedding(liked, disliked, None, "enc")
    for scale in (0.05, 30.0):
        moved = fit_user_embedding(liked * scale + shift, disliked * scale + shift, None, "enc")
        assert moved.loo_accuracy == plain.loo_accuracy
        assert moved.held_out == pytest.approx(plain.held_out, rel=1e-3, abs=1e-3)
        assert torch.allclose(moved.model.log_odds(images * scale + shift), plain.model.log_odds(images),
                              rtol=1e-3, atol=1e-3)


def test_a_model_stores_its_tensors_in_single_precision_whatever_it_is_given(bank):
    model = UserEmbeddingModel("enc", bank.mean.double(), bank.std.double(), bank.projection.double(),
                               bank.like_vectors[0].double(), bank.dislike_vectors[0].double(),
                               torch.tensor(0.5, dtype=torch.float64), 0.25)
    tensors, _ = model.state()
    assert {t.dtype for t in tensors.values()} == {torch.float32}


def test_a_taste_space_keeps_the_directions_the_images_span_up_to_the_size_asked():
    # n images centred span at most n − 1 directions, and there are only d to span.
    g = torch.Generator().manual_seed(5)
    for n, d, k, kept in [(2, 64, 32, 1), (11, 64, 32, 10), (100, 8, 32, 8), (100, 64, 32, 32)]:
        features = torch.randn(n, d, generator=g)
        assert principal_directions(features - features.mean(0), k).shape == (d, kept)


@pytest.mark.parametrize("spread", [0.01, 1.0, 50.0])
def test_features_projected_on_a_taste_space_have_unit_variance_on_average(spread):
    g = torch.Generator().manual_seed(6)
    for n in (2, 5, 40):
        features = spread * torch.randn(n, 16, generator=g) @ torch.randn(16, 16, generator=g)
        centred = features - features.mean(0)
        projected = centred @ principal_directions(centred, 4)
        assert projected.var(0).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_one_judgment_is_enough_for_a_fit_from_scratch():
    liked, disliked = user_pairs(1, 1)
    result = fit_user_embedding(liked, disliked, None, "enc")
    assert (result.mode, result.n_pairs, result.loo_accuracy, result.loo_pairs) == ("free", 1, None, 0)
    assert result.model.log_odds(liked) > result.model.log_odds(disliked)


def test_two_judgments_already_have_a_leave_one_out_estimate():
    liked, disliked = user_pairs(1, 2)
    result = fit_user_embedding(liked, disliked, None, "enc")
    assert result.loo_pairs == 2 and set(result.held_out) == {0, 1} and result.loo_accuracy in (0.0, 0.5, 1.0)


def test_the_bank_and_a_personal_offset_serve_from_exactly_the_cold_start_length(bank):
    liked, disliked = user_pairs(2, COLD_START_PAIRS)
    assert fit_user_embedding(liked[:-1], disliked[:-1], bank, "enc").mode == "bank posterior"
    assert fit_user_embedding(liked, disliked, bank, "enc").mode == "bank posterior + personal"


@pytest.mark.parametrize("settings", [{"steps": 0}, {"steps": -3}, {"lr": 0.0}, {"lr": float("nan")}])
def test_a_fit_without_optimisation_steps_or_rate_is_refused_in_one_line(settings):
    liked, disliked = user_pairs(1, 6)
    with pytest.raises(InvalidInput, match="steps|rate"):
        fit_user_embedding(liked, disliked, None, "enc", **settings)
