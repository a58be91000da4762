"""Auto's stacking rows: read as data, validated, chosen by history length, and weighing the
members by how well each predicted the person's own held-out pairs."""
import json
import math

import pytest

from prefstudio.errors import InvalidInput
from prefstudio.preference.models import AutoPreference, StackingRow, read_auto_weights, stacking_weights

MEMBERS = ["user-embedding", "preference-tokens"]


def _write(tmp_path, data):
    path = tmp_path / "auto_weights.json"
    path.write_text(json.dumps(data))
    return path


def _file(rows):
    return {"format": "prefstudio-auto-weights", "version": 2, "by_history": rows}


def _row(min_pairs, ue, tokens, by_fit=(0.0, 0.0), calibration=(1.0, 1.0)):
    return {"min_pairs": min_pairs, "calibration": dict(zip(MEMBERS, calibration)),
            "weight": {"user-embedding": ue, "preference-tokens": tokens}, "by_fit": dict(zip(MEMBERS, by_fit))}


def test_rows_follow_the_history_length(tmp_path):
    rows = read_auto_weights(_write(tmp_path, _file([_row(8, 1.0, 3.0), _row(1, 0.8, 0.2)])), MEMBERS)
    assert [r.min_pairs for r in rows] == [1, 8]
    auto = AutoPreference([], rows)
    assert auto.row_for(5).weight == {"user-embedding": 0.8, "preference-tokens": 0.2}
    assert auto.row_for(32).weight == {"user-embedding": 1.0, "preference-tokens": 3.0}
    assert auto.row_for(0).min_pairs == 1  # shorter than every row: the first


def test_the_member_that_predicted_the_persons_own_pairs_weighs_more():
    row = StackingRow(8, {"user-embedding": 2.0, "preference-tokens": 0.5},
                      {"user-embedding": 1.0, "preference-tokens": 1.0}, {"user-embedding": 0.5, "preference-tokens": 0.5})
    # No held-out pair: the row's weights times the calibrations.
    assert stacking_weights(row, {}) == pytest.approx({"user-embedding": 2.0, "preference-tokens": 0.5})
    # The token model called every held-out pair right, the user embedding every one wrong.
    held_out = {"user-embedding": [-1.0, -2.0, -1.5], "preference-tokens": [3.0, 4.0, 2.0]}
    weights = stacking_weights(row, held_out)
    assert weights["preference-tokens"] / 0.5 > 1.0 > weights["user-embedding"] / 2.0
    # A large enough penalty clips a member to zero, never below.
    strict = StackingRow(8, row.calibration, row.weight, {"user-embedding": 50.0, "preference-tokens": 50.0})
    assert stacking_weights(strict, held_out)["user-embedding"] == 0.0


@pytest.mark.parametrize("row", [
    _row(1, -1.0, 1.0),
    {"min_pairs": 1, "calibration": {"user-embedding": 1.0}, "weight": {"user-embedding": 1.0},
     "by_fit": {"user-embedding": 0.0}},
    {**_row(1, 1.0, 1.0), "min_pairs": "1"},
    _row(1, 0.0, 0.0),
    _row(1, float("nan"), 1.0),
    _row(1, 1.0, 1.0, calibration=(0.0, 1.0)),
    _row(1, 1.0, 1.0, by_fit=(float("inf"), 0.0)),
    {k: v for k, v in _row(1, 1.0, 1.0).items() if k != "by_fit"},
])
def test_bad_rows_are_refused(tmp_path, row):
    with pytest.raises(InvalidInput, match="min_pairs"):
        read_auto_weights(_write(tmp_path, _file([row])), MEMBERS)


def test_not_a_weights_file_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="not a prefstudio-auto-weights file"):
        read_auto_weights(_write(tmp_path, {"format": "something else", "by_history": []}), MEMBERS)
    with pytest.raises(InvalidInput, match="version 2"):  # the version-1 rows had no calibration
        read_auto_weights(_write(tmp_path, {**_file([_row(1, 1.0, 1.0)]), "version": 1}), MEMBERS)
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(InvalidInput, match="not JSON"):
        read_auto_weights(path, MEMBERS)


# --- the studio's models behind the PreferenceModel interface, on small features ---------------

import torch  # noqa: E402

from prefstudio.preference.model import JudgedPairs  # noqa: E402
from prefstudio.preference.user_embedding import UserBank  # noqa: E402
from prefstudio.preference.models import (  # noqa: E402
    AUTO, PREFERENCE_TOKENS, USER_EMBEDDING, CombinedTaste, PreferenceTokens, UserEmbeddingPreference,
    build_preference_model,
)

DIM = 6


def _judged(n_pairs: int, shared_liked: bool = False) -> JudgedPairs:
    """n pairs of distinct images (or all sharing one liked image) whose features prefer dimension 0."""
    g = torch.Generator().manual_seed(n_pairs)
    pairs = [("L0" if shared_liked else f"L{i}", f"D{i}") for i in range(n_pairs)]
    ids = list(dict.fromkeys(s for pair in pairs for s in pair))
    table = {sha: torch.randn(DIM, generator=g) + (1.5 if sha.startswith("L") else -1.5) * torch.eye(DIM)[0]
             for sha in ids}
    return JudgedPairs(pairs, lambda shas: torch.stack([table[s] for s in shas]),
                       lambda shas: [f"{'a sea' if s.startswith('L') else 'foggy hills'} for {s}" for s in shas])


@pytest.fixture(scope="module")
def token_folder(tmp_path_factory):
    """A small untrained lite token checkpoint reading DIM-d image features and no prompts."""
    from prefstudio.preference.tokens import LiteConfig, LiteTokenModel, save_token_model

    torch.manual_seed(0)
    model = LiteTokenModel(LiteConfig(image_dim=DIM, text_dim=0, image_encoder="enc", text_encoder=None,
                                      width=8, layers=1, heads=2, preference_tokens=2, max_history=3))
    return save_token_model(model, tmp_path_factory.mktemp("ckpt") / "tiny_tokens")


def test_the_user_embedding_model_fits_says_why_and_loads_only_its_own_features():
    judged = _judged(5)
    model = UserEmbeddingPreference("enc", None)
    taste, outcome = model.fit(judged)
    assert (outcome.mode, outcome.n_pairs) == ("free", 5)
    assert outcome.reason.startswith("no user bank reads enc features, so there is no cold start")
    assert set(outcome.held_out) <= set(range(5)) and len(outcome.held_out) == 5
    liked, disliked = judged.features(["L0"]), judged.features(["D0"])
    assert float(taste.log_odds(liked)) > float(taste.log_odds(disliked))
    again = model.load(*taste.state())
    assert torch.equal(again.log_odds(liked), taste.log_odds(liked))
    with pytest.raises(InvalidInput, match="fitted on 'enc' features; this studio runs 'other': fit again here"):
        UserEmbeddingPreference("other", None).load(*taste.state())
    with pytest.raises(InvalidInput, match="no like/dislike pair to learn from yet"):
        model.fit(_judged(0))


def test_the_token_model_reads_the_latest_pairs_of_distinct_images_in_windows(token_folder):
    tokens = PreferenceTokens(token_folder, "enc", None)
    # Served frozen: guidance differentiates through it for the image only, never into its weights.
    assert not any(parameter.requires_grad for parameter in tokens.model.parameters())
    assert tokens.checkpoint.startswith("tiny_tokens:") and len(tokens.checkpoint) == len("tiny_tokens:") + 16
    judged = _judged(7)
    taste, outcome = tokens.fit(judged)
    assert (outcome.mode, outcome.n_pairs) == ("preference tokens", 7)
    assert outcome.reason == "reads your latest 7 pairs of distinct images"
    assert sorted(outcome.held_out) == list(range(7))
    assert len(taste.prefixes) == 3  # 7 pairs in windows of at most 3: three interleaved chunks
    tensors, config = taste.state()
    assert torch.equal(tensors["liked"], judged.features([f"L{i}" for i in range(7)]))
    assert config == {"type": PREFERENCE_TOKENS, "version": 1, "checkpoint": tokens.checkpoint, "encoder": "enc"}
    images = judged.features(["L0", "D3", "L6"])
    assert taste.prompt_context(["a"]) is None
    assert torch.equal(tokens.load(tensors, config).log_odds(images), taste.log_odds(images))
    # Each held-out margin is the taste of the other pairs on that pair.
    rest = tokens._taste(type(taste.history)(tensors["liked"][1:], tensors["disliked"][1:]))
    odds = rest.log_odds(judged.features(["L0", "D0"]))
    assert outcome.held_out[0] == pytest.approx(float(odds[0] - odds[1]), abs=1e-6)
    # Pairs sharing an image: only the latest of them is read.
    shared_taste, shared = tokens.fit(_judged(4, shared_liked=True))
    assert shared.n_pairs == 1 and shared_taste.state()[0]["disliked"].shape == (1, DIM)
    assert shared.held_out == {}
    empty_taste, empty = tokens.fit(_judged(0))
    assert (empty.mode, empty.n_pairs) == ("preference tokens, no history", 0)
    assert empty.reason == "no 👍/👎 pair judged yet: reads an empty history"
    with pytest.raises(InvalidInput, match="read by preference-token checkpoint 'other:1'"):
        tokens.load(tensors, {**config, "checkpoint": "other:1"})
    with pytest.raises(InvalidInput, match="read from 'clip' features; this studio runs 'enc'"):
        tokens.load(tensors, {**config, "encoder": "clip"})
    with pytest.raises(InvalidInput, match="reads 'enc' image features; this studio encodes images with 'clip'"):
        PreferenceTokens(token_folder, "clip", None)
    with pytest.raises(InvalidInput, match="or a folder holding a preference-token checkpoint"):
        PreferenceTokens(token_folder / "missing", "enc", None)
    assert isinstance(build_preference_model(str(token_folder), "enc", None, None), PreferenceTokens)
    assert build_preference_model(PREFERENCE_TOKENS, "enc", None, None, token_folder).checkpoint == tokens.checkpoint
    assert isinstance(build_preference_model(USER_EMBEDDING, "enc", None, None, token_folder), UserEmbeddingPreference)


def test_auto_combines_standardised_members_and_survives_its_state(token_folder, tmp_path):
    auto = build_preference_model(AUTO, "enc", None, None, token_folder)
    assert set(auto.members) == {USER_EMBEDDING, PREFERENCE_TOKENS} and auto.rows is None
    judged = _judged(6)
    taste, outcome = auto.fit(judged)
    assert isinstance(taste, CombinedTaste) and set(outcome.parts) == {USER_EMBEDDING, PREFERENCE_TOKENS}
    assert outcome.mode == "free + preference tokens" and outcome.n_pairs == 6
    assert outcome.reason.startswith("combined with equal weights (user-embedding ")
    images = judged.features(judged.images())
    # Each member's log-odds divided by their spread over the judged images, weighted.
    for name, member in taste.members.items():
        assert taste.scales[name] == pytest.approx(float(member.log_odds(images).std()))
    assert taste.weights == {USER_EMBEDDING: 0.5, PREFERENCE_TOKENS: 0.5}
    expected = sum(0.5 / taste.scales[n] * m.log_odds(images) for n, m in taste.members.items())
    assert torch.allclose(taste.log_odds(images, taste.prompt_context(["p"])), expected)
    common = sorted(set(outcome.parts[USER_EMBEDDING].held_out) & set(outcome.parts[PREFERENCE_TOKENS].held_out))
    assert sorted(outcome.held_out) == common and common
    i = common[0]
    assert outcome.held_out[i] == pytest.approx(sum(
        0.5 / taste.scales[n] * outcome.parts[n].held_out[i] for n in taste.members))
    tensors, config = taste.state()
    assert config["type"] == AUTO and set(config["members"]) == {USER_EMBEDDING, PREFERENCE_TOKENS}
    loaded = auto.load(tensors, config)
    assert torch.allclose(loaded.log_odds(images), taste.log_odds(images))
    assert "members" not in loaded.config and loaded.config["type"] == AUTO
    with pytest.raises(InvalidInput, match="not a combined"):
        auto.load(tensors, {"type": AUTO, "members": {}})
    alone = build_preference_model(AUTO, "clip", None, None, token_folder)  # the tokens read 'enc' only
    with pytest.raises(InvalidInput, match="combines 'preference-tokens', which this studio does not run"):
        alone.load(tensors, {**config, "members": {PREFERENCE_TOKENS: config["members"][PREFERENCE_TOKENS]}})
    # Nothing judged yet: no spread to standardise by, the user embedding (with a bank) serves alone.
    bank = UserBank("enc", torch.zeros(DIM), torch.ones(DIM), torch.eye(DIM)[:, :2],
                    torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2, 2), 1.0, "test")
    with_bank = build_preference_model(AUTO, "enc", None, bank, token_folder)
    first, none_yet = with_bank.fit(_judged(0))
    assert list(first.members) == [USER_EMBEDDING] and first.weights == {USER_EMBEDDING: 1.0}
    assert none_yet.reason == ("user-embedding alone (no 👍/👎 pair judged yet: the average user of the bank): "
                               "too few judged images to combine models")
    assert none_yet.mode == "bank average" and set(none_yet.parts) == {USER_EMBEDDING, PREFERENCE_TOKENS}
    only, why = alone.fit(judged)
    assert list(only.members) == [USER_EMBEDDING]
    assert why.reason.endswith("the only model that reads this image encoder's features")
    # Stacking rows learned elsewhere weigh the members by history length.
    _write(token_folder, _file([_row(1, 3.0, 1.0)]))
    try:
        weighted, said = build_preference_model(AUTO, "enc", None, None, token_folder).fit(judged)
    finally:
        (token_folder / "auto_weights.json").unlink()
    assert weighted.weights[USER_EMBEDDING] > weighted.weights[PREFERENCE_TOKENS] > 0
    assert said.reason.startswith("combined with weights learned on validation users for histories of 1+ pairs")


class _Letters:
    """A text encoder for the tests: counts of a few letters of each prompt."""

    name, dim = "test-letters", 4

    def encode(self, prompts):
        return torch.tensor([[p.count(c) + 0.5 for c in "aeio"] for p in prompts], dtype=torch.float32)


@pytest.fixture(scope="module")
def prompted_folder(tmp_path_factory):
    """A small untrained lite token checkpoint that reads prompts too."""
    from prefstudio.preference.tokens import LiteConfig, LiteTokenModel, save_token_model

    torch.manual_seed(1)
    model = LiteTokenModel(LiteConfig(image_dim=DIM, text_dim=4, image_encoder="enc", text_encoder="test-letters",
                                      width=8, layers=1, heads=2, preference_tokens=2, max_history=3))
    return save_token_model(model, tmp_path_factory.mktemp("ckpt") / "tiny_prompted")


def test_auto_reads_each_members_prompt_context_and_says_how_it_combined(prompted_folder):
    from prefstudio.preference.models import AutoPreference, StackingRow, stacking_weights

    tokens = PreferenceTokens(prompted_folder, "enc", _Letters())
    auto = AutoPreference([UserEmbeddingPreference("enc", None), tokens])
    judged = _judged(6)
    taste, outcome = auto.fit(judged)
    assert taste.config == {"type": AUTO, "version": 1}
    images = judged.images()
    features, prompts = judged.features(images), judged.prompts(images)
    member = taste.members[PREFERENCE_TOKENS]
    assert member.state()[0]["prompts"].shape == (6, 4) and member.state()[0]["disliked_prompts"].shape == (6, 4)
    assert taste.scales[PREFERENCE_TOKENS] == pytest.approx(
        float(member.log_odds(features, member.prompt_context(prompts)).std()))
    context = taste.prompt_context(["a picture of a sea"])
    assert set(context) == {USER_EMBEDDING, PREFERENCE_TOKENS} and context[USER_EMBEDDING] is None
    assert torch.equal(context[PREFERENCE_TOKENS], _Letters().encode(["a picture of a sea"]))
    expected = sum(taste.weights[n] / taste.scales[n] * m.log_odds(features, context[n]) for n, m in taste.members.items())
    assert torch.allclose(taste.log_odds(features, context), expected)
    assert not torch.allclose(member.log_odds(features, context[PREFERENCE_TOKENS]),
                              member.log_odds(features, _Letters().encode(["ooooo"])))
    # The history it read keeps each pair's prompts: rebuilt from its state, it scores alike.
    again = auto.load(*taste.state())
    assert torch.allclose(again.log_odds(features, again.prompt_context(["a picture of a sea"])),
                          taste.log_odds(features, context))
    loo = {n: f"{outcome.parts[n].loo_accuracy:.0%} over {len(outcome.parts[n].held_out)} pairs" for n in outcome.parts}
    # Each member's accuracy says over how many pairs: auto's own counts only the pairs both held out.
    assert outcome.reason == (
        "combined with equal weights (user-embedding 50%, preference-tokens 50%) — "
        f"user-embedding: {outcome.parts[USER_EMBEDDING].reason}, leave-one-out {loo[USER_EMBEDDING]}; "
        f"preference-tokens: {outcome.parts[PREFERENCE_TOKENS].reason}, leave-one-out {loo[PREFERENCE_TOKENS]}")
    # Rows that weigh by fit: the held-out margins are divided by each member's spread first.
    row = StackingRow(1, {USER_EMBEDDING: 1.0, PREFERENCE_TOKENS: 1.0}, {USER_EMBEDDING: 0.3, PREFERENCE_TOKENS: 0.2},
                      {USER_EMBEDDING: 1.0, PREFERENCE_TOKENS: 1.0})
    weighted, said = AutoPreference(list(auto.members.values()), [row]).fit(judged)
    common = sorted(outcome.held_out)
    held = {n: [outcome.parts[n].held_out[i] / taste.scales[n] for i in common] for n in taste.members}
    assert weighted.weights == pytest.approx(stacking_weights(row, held))
    assert weighted.weights != pytest.approx({USER_EMBEDDING: 0.3, PREFERENCE_TOKENS: 0.2})
    total = sum(weighted.weights.values())
    assert said.reason.startswith(
        f"combined with weights learned on validation users for histories of 1+ pairs, adjusted by how well each "
        f"model predicted your {len(common)} held-out pairs (user-embedding {weighted.weights[USER_EMBEDDING] / total:.0%}, "
        f"preference-tokens {weighted.weights[PREFERENCE_TOKENS] / total:.0%})")


def test_auto_serves_the_user_embedding_alone_when_it_must_whatever_the_order(token_folder):
    from prefstudio.preference.models import AutoPreference

    tokens = PreferenceTokens(token_folder, "enc", None)
    bank = UserBank("enc", torch.zeros(DIM), torch.ones(DIM), torch.eye(DIM)[:, :2],
                    torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2, 2), 1.0, "test")
    reversed_auto = AutoPreference([tokens, UserEmbeddingPreference("enc", bank)])
    first, outcome = reversed_auto.fit(_judged(0))
    assert list(first.members) == [USER_EMBEDDING] and first.scales == {USER_EMBEDDING: 1.0}
    assert first.config == {"type": AUTO, "version": 1}
    assert (outcome.n_pairs, outcome.held_out) == (0, {})
    only_tokens, said = AutoPreference([tokens]).fit(_judged(3))
    assert list(only_tokens.members) == [PREFERENCE_TOKENS] and said.n_pairs == 3
    assert said.held_out == said.parts[PREFERENCE_TOKENS].held_out and len(said.held_out) == 3
    # One pair is two images: enough to combine; no member has a leave-one-out to report.
    combined, said_one = reversed_auto.fit(_judged(1))
    assert set(combined.members) == {USER_EMBEDDING, PREFERENCE_TOKENS}
    assert said_one.reason.endswith("; ".join(f"{n}: {o.reason}" for n, o in said_one.parts.items()))
    # A member whose log-odds do not vary over the judged images is scaled by 1.
    from prefstudio.preference.model import FitOutcome, PreferenceModel, Taste

    class Flat(Taste):
        def prompt_context(self, prompts):
            return None

        def log_odds(self, features, context=None):
            return torch.zeros(features.shape[0])

        def state(self):
            return {}, {"type": "flat"}

    class FlatModel(PreferenceModel):
        name, description = "flat", "the same score for every image"

        def fit(self, judged):
            return Flat(), FitOutcome("flat", len(judged.pairs), "flat", {})

        def load(self, tensors, config):
            return Flat()

    flat, _ = AutoPreference([UserEmbeddingPreference("enc", None), FlatModel()]).fit(_judged(4))
    assert flat.scales["flat"] == 1.0


def test_rows_are_chosen_inclusively_and_a_taste_that_is_not_auto_is_refused(token_folder):
    from prefstudio.preference.models import AutoPreference, member_fit

    rows = [StackingRow(1, {}, {}, {}), StackingRow(8, {}, {}, {})]
    auto = AutoPreference([], rows)
    assert [auto.row_for(n).min_pairs for n in (0, 1, 7, 8, 9)] == [1, 1, 1, 8, 8]
    assert AutoPreference([UserEmbeddingPreference("enc", None)]).row_for(5).min_pairs == 0
    with_tokens = build_preference_model(AUTO, "enc", None, None, token_folder)
    taste, _ = with_tokens.fit(_judged(3))
    tensors, config = taste.state()
    for wrong in ({**config, "type": USER_EMBEDDING}, {**config, "members": []}):
        with pytest.raises(InvalidInput, match="^not a combined \\(auto\\) taste$"):
            with_tokens.load(tensors, wrong)
    # δ: each member's mean held-out log-likelihood of its calibrated margins, minus their average.
    fit = member_fit({"a": [1.0, 2.0], "b": [-1.0]}, {"a": 2.0, "b": 1.0})
    la = (math.log(1 / (1 + math.exp(-2.0))) + math.log(1 / (1 + math.exp(-4.0)))) / 2
    lb = math.log(1 / (1 + math.exp(1.0)))
    assert fit == pytest.approx({"a": la - (la + lb) / 2, "b": lb - (la + lb) / 2}, abs=1e-12)


def test_weight_files_are_bounded_and_their_rows_checked_to_the_edge(tmp_path):
    ok = _row(0, 0.0, 1.0, calibration=(0.5, 1.0))  # min_pairs 0, a weight of 0 and a calibration under 1 are fine
    [row] = read_auto_weights(_write(tmp_path, _file([ok])), MEMBERS)
    assert (row.min_pairs, row.weight["user-embedding"], row.calibration["user-embedding"]) == (0, 0.0, 0.5)
    assert len(read_auto_weights(_write(tmp_path, _file([_row(i, 1.0, 1.0) for i in range(64)])), MEMBERS)) == 64
    for data in ([_row(1, 1.0, 1.0)], {"format": "prefstudio-auto-weights", "version": 2, "by_history": []},
                 _file([_row(i, 1.0, 1.0) for i in range(65)]), _file({"rows": 1})):
        with pytest.raises(InvalidInput, match="is not a prefstudio-auto-weights file \\(version 2\\)$"):
            read_auto_weights(_write(tmp_path, data), MEMBERS)
    for row in (_row(-1, 1.0, 1.0), ["not", "a", "row"]):
        with pytest.raises(InvalidInput) as caught:
            read_auto_weights(_write(tmp_path, _file([row])), MEMBERS)
        assert str(caught.value).endswith("a by_fit number for each of user-embedding, preference-tokens")
    padded = _file([_row(1, 1.0, 1.0)])
    text = json.dumps(padded)
    path = tmp_path / "edge.json"
    path.write_text(text + " " * (1_000_000 - len(text)))
    assert read_auto_weights(path, MEMBERS)[0].min_pairs == 1  # exactly 1,000,000 bytes: read
    path.write_text(text + " " * (1_000_001 - len(text)))
    with pytest.raises(InvalidInput, match=f"^{path} is too large to be a weights file$"):
        read_auto_weights(path, MEMBERS)


def test_the_token_taste_is_the_checkpoints_reading_of_the_history_in_interleaved_windows(prompted_folder):
    from prefstudio.preference.tokens import PairFeatures, TargetFeatures

    tokens = PreferenceTokens(prompted_folder, "enc", _Letters())
    images = _judged(2).features(["L0", "D0", "L1"])
    context = _Letters().encode(["a quiet sea"])
    targets = TargetFeatures(images, context.expand(3, -1))

    def read(history, rows):
        m_like, m_dislike = tokens.model.score(PairFeatures(*(t[rows] for t in (
            history.liked, history.disliked, history.prompts, history.disliked_prompts))), targets)
        return m_like - m_dislike

    short, _ = tokens.fit(_judged(3))  # within the checkpoint's window of 3: one reading of all of it
    assert len(short.prefixes) == 1
    assert torch.allclose(short.log_odds(images, context), read(short.history, [0, 1, 2]), atol=1e-5)
    long, _ = tokens.fit(_judged(7))  # 7 pairs: three interleaved windows, their log-odds averaged
    expected = sum(read(long.history, rows) for rows in ([0, 3, 6], [1, 4], [2, 5])) / 3
    assert torch.allclose(long.log_odds(images, context), expected, atol=1e-5)


def test_when_every_stacked_weight_is_clipped_auto_falls_back_on_the_rows_own(token_folder):
    from prefstudio.preference.models import AutoPreference, member_fit

    members = [UserEmbeddingPreference("enc", None), PreferenceTokens(token_folder, "enc", None)]
    judged = _judged(6)
    taste, outcome = AutoPreference(members).fit(judged)
    common = sorted(outcome.held_out)
    calibration = {USER_EMBEDDING: 2.0, PREFERENCE_TOKENS: 2.0}
    delta = member_fit({n: [outcome.parts[n].held_out[i] / taste.scales[n] for i in common] for n in taste.members},
                       calibration)
    better = max(delta, key=delta.get)  # the member that predicted the held-out pairs better (δ > 0)
    other = next(n for n in delta if n != better)
    row = StackingRow(1, calibration, {better: 1.0, other: 0.0}, {better: -2.0 / delta[better], other: 0.0})
    clipped, said = AutoPreference(members, [row]).fit(judged)
    assert clipped.weights == {better: 2.0, other: 0.0}  # the row's weight times its calibration
    assert f"{better} 100%" in said.reason
    # Small weights that are not all clipped are kept as stacked, however small their sum.
    small = StackingRow(1, calibration, {better: 0.1, other: 0.1}, {better: 0.1 / delta[better], other: 0.0})
    kept, _ = AutoPreference(members, [small]).fit(judged)
    assert kept.weights == pytest.approx({better: 0.4, other: 0.2})


def test_each_built_model_gets_the_studios_encoders_and_bank(token_folder):
    bank = UserBank("enc", torch.zeros(DIM), torch.ones(DIM), torch.eye(DIM)[:, :2], torch.ones(2, 2),
                    torch.zeros(2, 2), 1.0, "test")
    prompts = object()  # the studio's text encoder (this checkpoint reads no prompts, so it is only kept)
    alone = build_preference_model(USER_EMBEDDING, "enc", prompts, bank, token_folder)
    assert (alone.encoder, alone.bank) == ("enc", bank)
    for name in (PREFERENCE_TOKENS, str(token_folder)):
        tokens = build_preference_model(name, "enc", prompts, bank, token_folder)
        assert (tokens.image_encoder, tokens.text_encoder) == ("enc", prompts)
    auto = build_preference_model(AUTO, "enc", prompts, bank, token_folder)
    assert (auto.members[USER_EMBEDDING].encoder, auto.members[USER_EMBEDDING].bank) == ("enc", bank)
    assert auto.members[PREFERENCE_TOKENS].text_encoder is prompts


def test_the_token_model_reads_at_most_32_pairs_each_image_in_one_and_an_empty_history_as_empty(
        token_folder, prompted_folder):
    tokens = PreferenceTokens(token_folder, "enc", None)
    judged = _judged(40)
    taste, outcome = tokens.fit(judged)
    assert outcome.n_pairs == 32 == PreferenceTokens.max_pairs
    assert torch.equal(taste.state()[0]["liked"], judged.features([f"L{i}" for i in range(8, 40)]))  # the latest
    # An image judged again in a later pair: only the latest pair with it is read, however far back.
    g = torch.Generator().manual_seed(3)
    table = {sha: torch.randn(DIM, generator=g) for sha in ("L0", "L1", "D0", "D1", "D2")}
    shared = JudgedPairs([("L0", "D0"), ("L1", "D1"), ("L0", "D2")], lambda shas: torch.stack([table[s] for s in shas]),
                         lambda shas: ["a sea"] * len(shas))
    taste, outcome = tokens.fit(shared)
    assert outcome.n_pairs == 2 and torch.equal(taste.state()[0]["disliked"], shared.features(["D1", "D2"]))
    # No pair judged: an empty history, with empty prompt features where the checkpoint reads prompts.
    empty, _ = tokens.fit(_judged(0))
    assert empty.state()[0]["liked"].shape[0] == 0
    prompted, _ = PreferenceTokens(prompted_folder, "enc", _Letters()).fit(_judged(0))
    tensors = prompted.state()[0]
    assert tensors["liked"].shape[0] == 0
    assert tensors["prompts"].shape == tensors["disliked_prompts"].shape == (0, 4)


FREE_REASON = ("fitted from your judgments alone: they predict your held-out pairs clearly better than the bank's "
               "users do")


def test_the_user_embedding_and_token_models_say_exactly_why(token_folder):
    from prefstudio.errors import echo

    with pytest.raises(InvalidInput) as nothing:
        UserEmbeddingPreference("enc", None).fit(_judged(0))
    assert str(nothing.value) == ("no like/dislike pair to learn from yet: judge at least one image 👍 and one 👎 "
                                  "(or pick the better of two), then fit again")
    _, alone = UserEmbeddingPreference("enc", None).fit(_judged(3))
    assert alone.reason == ("no user bank reads enc features, so there is no cold start: fitted from your judgments "
                            "alone (`python -m prefstudio bank --images FOLDER` builds one for this encoder)")
    bank = UserBank("enc", torch.zeros(DIM), torch.ones(DIM), torch.eye(DIM)[:, :2], torch.eye(2), torch.zeros(2, 2),
                    1.0, "test")
    _, short = UserEmbeddingPreference("enc", bank).fit(_judged(3))
    assert (short.mode, short.reason) == (
        "bank posterior", "few judged images yet: a mix of the bank's users who explain your judgments")
    _, long = UserEmbeddingPreference("enc", bank).fit(_judged(20))
    assert (long.mode, long.reason) in {("bank posterior + personal", "the bank's users who explain you plus a personal offset"),
                                        ("free", FREE_REASON)}
    # A bank whose users see only dimensions 1 and 2, where this person's taste (dimension 0) is
    # not: once the fit from scratch reads clearly more of the held-out pairs (24 pairs here), the
    # judgments alone serve, and it says so. At 20 pairs its lead (5 pairs to 1) could be chance.
    blind = UserBank("enc", torch.zeros(DIM), torch.ones(DIM), torch.eye(DIM)[:, 1:3], -torch.eye(2),
                     torch.zeros(2, 2), 1.0, "test")
    assert UserEmbeddingPreference("enc", blind).fit(_judged(20))[1].mode == "bank posterior + personal"
    _, alone_wins = UserEmbeddingPreference("enc", blind).fit(_judged(24))
    assert (alone_wins.mode, alone_wins.reason) == ("free", FREE_REASON)
    # Pairs sharing their liked image are one image's worth of evidence each: no pair can be held out.
    _, shared = UserEmbeddingPreference("enc", None).fit(_judged(4, shared_liked=True))
    assert shared.held_out == {}
    missing = token_folder.parent / "missing"
    with pytest.raises(InvalidInput) as neither:
        PreferenceTokens(missing, "enc", None)
    assert str(neither.value) == ("preference model must be one of auto, user-embedding, preference-tokens or a folder "
                                  f"holding a preference-token checkpoint; {echo(str(missing))} is neither")
    from prefstudio.preference.token_checkpoint import CHECKPOINT_CONFIG

    vlm = token_folder.parent / "vlm_tokens"
    vlm.mkdir(exist_ok=True)
    config = json.loads((token_folder / CHECKPOINT_CONFIG).read_text())
    (vlm / CHECKPOINT_CONFIG).write_text(json.dumps({**config, "model": {**config["model"], "backbone": "vlm"}}))
    with pytest.raises(InvalidInput) as not_lite:
        PreferenceTokens(vlm, "enc", None)
    assert str(not_lite.value) == (f"{vlm} is not a lite preference-token checkpoint; the studio guides generation "
                                   "with lite ones (a VLM checkpoint scores through prefstudio.preference.vlm)")


def test_a_checkpoint_reading_other_prompt_features_than_the_studio_encodes_is_refused(prompted_folder):
    # Without the checkpoint's own text encoder the studio's embedded one (MiniLM) is tried; this
    # checkpoint reads another encoder's prompt features, so it is refused, naming both.
    for studio_text in (None, type("OtherText", (), {"name": "other-text", "dim": 4})()):
        with pytest.raises(InvalidInput) as refused:
            PreferenceTokens(prompted_folder, "enc", studio_text)
        assert str(refused.value) == ("the preference-token checkpoint reads 'test-letters' prompt features; "
                                      "this studio encodes prompts with 'minilm-l6-v2-mean'")


def test_one_pair_of_distinct_images_is_said_in_the_singular(token_folder):
    """Found by a hostile review: "reads your latest 1 pairs of distinct images"."""
    _, outcome = PreferenceTokens(token_folder, "enc", None).fit(_judged(1))
    assert outcome.reason == "reads your latest pair of distinct images"
