"""The preference-token model (000 §3): lite and VLM backbones, two-stage training,
evaluation protocol, attention analysis and the Pick-a-Pic converter."""
import io
import json
import math
import pickle

import pytest
import torch
from pair_data_fixture import CharacterCountText, MeanColourEncoder, write_pair_data
from PIL import Image
from safetensors.torch import load_file

from prefstudio.errors import InvalidInput
from prefstudio_research.eval import attention as attention_cli
from prefstudio_research.eval.protocol import evaluate_model
from prefstudio.preference.losses import preference_loss
from prefstudio.preference.pair_data import PairDataSet
from prefstudio_research.preference.scorers import LiteScorer
from prefstudio.preference.tokens import (LiteConfig, LiteTokenModel, PairFeatures, TargetFeatures,
                                          load_checkpoint_bank, load_token_model, save_token_model)
from prefstudio_research.train.preference_tokens import StageConfig, train


def _lite(preference_tokens=0, seed=0, **kw):
    torch.manual_seed(seed)
    config = dict(image_dim=6, text_dim=4, image_encoder="img", text_encoder="txt", width=32, layers=2, heads=2)
    config.update(kw)
    return LiteTokenModel(LiteConfig(preference_tokens=preference_tokens, **config))


def _planted_batch(generator, batch=32, n_ref=4):
    """Everyone likes images along one hidden direction w (a taste shared by all users)."""
    w = torch.tensor([1.0, -1, 0, 0, 0, 0])

    def pairs(n):
        a, b = torch.randn(batch, n, 6, generator=generator), torch.randn(batch, n, 6, generator=generator)
        a_wins = ((a - b) @ w).unsqueeze(-1) > 0
        return torch.where(a_wins, a, b), torch.where(a_wins, b, a)

    liked, disliked = pairs(n_ref)
    history = PairFeatures(liked, disliked, torch.zeros(batch, n_ref, 4))
    target_liked, target_disliked = pairs(1)
    targets = TargetFeatures(torch.cat([target_liked, target_disliked], 1), torch.zeros(batch, 2, 4))
    return history, targets


def test_lite_model_trains_on_cpu_and_its_loss_falls():
    model = _lite()
    optimizer = torch.optim.AdamW(model.stage_parameters(1), lr=3e-3)
    held_out = _planted_batch(torch.Generator().manual_seed(1), batch=512)

    def loss_on(history, targets):
        m_like, m_dislike = model(history, targets)
        return preference_loss(m_like[:, 0], m_dislike[:, 0], m_like[:, 1], m_dislike[:, 1]).total

    with torch.no_grad():
        before = loss_on(*held_out).item()
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = loss_on(*_planted_batch(generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_on(*held_out).item()
        m_like, m_dislike = model(*held_out)
    assert after < 0.7 * before
    assert ((m_like - m_dislike)[:, 0] > (m_like - m_dislike)[:, 1]).float().mean() > 0.8


def test_scores_of_many_targets_against_one_history_equal_one_at_a_time():
    model = _lite(preference_tokens=3).eval()
    history = PairFeatures(torch.randn(5, 6), torch.randn(5, 6), torch.randn(5, 4))
    targets = TargetFeatures(torch.randn(7, 6), torch.randn(7, 4))
    m_like, m_dislike = model.score(history, targets)
    assert m_like.shape == m_dislike.shape == (7,)
    for i in range(7):
        one_like, one_dislike = model.score(history, TargetFeatures(targets.images[i:i + 1], targets.prompts[i:i + 1]))
        assert torch.allclose(one_like[0], m_like[i], atol=1e-5)
        assert torch.allclose(one_dislike[0], m_dislike[i], atol=1e-5)
    # Q is differentiable in the target's features (guidance needs it).
    images = targets.images.clone().requires_grad_(True)
    model.like_probability(history, TargetFeatures(images, targets.prompts)).sum().backward()
    assert images.grad.abs().sum() > 0


def test_history_is_a_set_that_the_preference_tokens_read():
    model = _lite(preference_tokens=3).eval()
    history = PairFeatures(torch.randn(5, 6), torch.randn(5, 6), torch.randn(5, 4))
    targets = TargetFeatures(torch.randn(7, 6), torch.randn(7, 4))
    with torch.no_grad():
        m_like, _ = model.score(history, targets)
        # The same judgments in another order give the same scores ...
        order = torch.tensor([3, 0, 4, 1, 2])
        shuffled = PairFeatures(history.liked[order], history.disliked[order], history.prompts[order])
        assert torch.allclose(model.score(shuffled, targets)[0], m_like, atol=1e-5)
        # ... other judgments give other scores, and P_v's keys past the first layer depend on whose
        # history it is: the tokens summarise the person rather than being a constant prefix.
        other = PairFeatures(history.disliked, history.liked, history.prompts)
        assert not torch.allclose(model.score(other, targets)[0], m_like, atol=1e-3)
        n_pv = 3
        mine, theirs = model.encode_history(history), model.encode_history(other)
        assert torch.equal(mine.keys[0][..., :n_pv, :], theirs.keys[0][..., :n_pv, :])
        assert not torch.allclose(mine.keys[1][..., :n_pv, :], theirs.keys[1][..., :n_pv, :], atol=1e-4)


def test_an_antisymmetric_model_flips_with_the_persons_judgments_and_has_no_opinion_without_them():
    """What an antisymmetric model says of an image is what the person's history says: judging
    every pair the other way round flips every log-odds, and an empty history gives none."""
    model = _lite(preference_tokens=3, antisymmetric=True).eval()
    with torch.no_grad():
        model.label_embedding.mul_(50)  # labels that matter, as after training
    history = PairFeatures(torch.randn(5, 6), torch.randn(5, 6), torch.randn(5, 4), torch.randn(5, 4))
    mirrored = PairFeatures(history.disliked, history.liked, history.disliked_prompts, history.prompts)
    targets = TargetFeatures(torch.randn(7, 6), torch.randn(7, 4))
    with torch.no_grad():
        m_like, m_dislike = model.score(history, targets)
        mirror_like, mirror_dislike = model.score(mirrored, targets)
        nothing = model.score(PairFeatures(*(torch.zeros(0, d) for d in (6, 6, 4, 4))), targets)
        batched = model.score(PairFeatures(*(torch.stack([t, t]) for t in (history.liked, history.disliked,
                                                                              history.prompts,
                                                                              history.disliked_prompts))),
                              TargetFeatures(torch.stack([targets.images] * 2), torch.stack([targets.prompts] * 2)))
    assert (m_like - m_dislike).abs().max() > 0.01
    assert torch.allclose(m_like - m_dislike, mirror_dislike - mirror_like, atol=1e-5)
    assert torch.allclose(nothing[0], nothing[1], atol=1e-6)
    assert torch.allclose(batched[0][1], m_like, atol=1e-5)
    plain = _lite(preference_tokens=3).eval()  # the same weights read without the mirror
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        plain_odds = torch.sub(*plain.score(history, targets)) + torch.sub(*plain.score(mirrored, targets))
    assert plain_odds.abs().max() > 1e-3


def test_lite_checkpoint_round_trip_and_clear_errors(tmp_path):
    model = _lite(preference_tokens=4).eval()
    save_token_model(model, tmp_path / "ckpt", {"command": "test"})
    loaded = load_token_model(tmp_path / "ckpt")
    history = PairFeatures(torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 4))
    targets = TargetFeatures(torch.randn(2, 6), torch.randn(2, 4))
    assert torch.equal(loaded.score(history, targets)[0], model.score(history, targets)[0])
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model"]["preference_tokens"] == 4
    with pytest.raises(InvalidInput, match="already has preference tokens"):
        loaded.add_preference_tokens(5)
    with pytest.raises(InvalidInput, match="stage 2 needs preference tokens"):
        _lite().stage_parameters(2)
    # Stage 1 trains P_v with everything else when the model has them; stage 2 trains P_v alone.
    assert any(p is loaded.preference_tokens for p in loaded.stage_parameters(1))
    assert loaded.stage_parameters(2) == [loaded.preference_tokens]
    assert all(p.requires_grad == (p is loaded.preference_tokens) for p in loaded.parameters())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(InvalidInput, match="not a PrefStudio preference-token checkpoint"):
        load_token_model(tmp_path / "bad")
    with pytest.raises(InvalidInput, match="save the bank with it"):
        save_token_model(_lite(taste_dim=2), tmp_path / "no_bank")
    assert not (tmp_path / "no_bank").exists()


def test_two_stage_training_validation_protocol_and_attention(tmp_path):
    root = write_pair_data(tmp_path / "data")
    encoders = (MeanColourEncoder(), CharacterCountText())
    config = {"backbone": "lite",
              "model": {"width": 32, "layers": 1, "heads": 2, "image_encoder": encoders[0].name,
                        "text_encoder": encoders[1].name, "taste_dim": 2},
              "stage1": StageConfig(steps=30, batch_size=16, lr=3e-3, eval_every=10, targets_per_history=3,
                                    preference_tokens=4),
              "stage2": StageConfig(steps=10, batch_size=16, lr=1e-2, eval_every=5)}
    messages = []
    train(config, root, 1, tmp_path / "s1", encoders=encoders, log=messages.append)
    train(config, root, 2, tmp_path / "s2", resume=tmp_path / "s1", encoders=encoders, log=messages.append)

    # Logs: loss and validation accuracy on the validation users (4 users × 6 targets).
    log = [json.loads(line) for line in (tmp_path / "s1" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 10, 20, 30] and all(r["val_n"] == 24 for r in log)
    assert all(0 <= r["val_top1"] <= 1 for r in log)
    # P_v trains with the backbone in stage 1; stage 2 changed nothing but P_v (checked on the
    # files: safetensors + JSON config).
    stage1, stage2 = load_file(str(tmp_path / "s1" / "model.safetensors")), load_file(
        str(tmp_path / "s2" / "model.safetensors"))
    assert set(stage2) == set(stage1) and stage2["preference_tokens"].shape == (4, 32)
    assert {k for k in stage1 if not torch.equal(stage1[k], stage2[k])} <= {"preference_tokens"}
    assert any("stage 2: tuning the model's 4 preference tokens" in m for m in messages)
    provenance = json.loads((tmp_path / "s2" / "config.json").read_text())["provenance"]
    assert provenance["stage"] == 2 and provenance["resumed_from"] == str(tmp_path / "s1")
    # The model reads the taste space of a user bank of the training users, saved beside it.
    bank = load_checkpoint_bank(tmp_path / "s2")
    assert bank.n_users == len(PairDataSet.read(root).users["train"]) and bank.encoder == encoders[0].name
    assert torch.equal(stage1["taste_projection"], bank.projection)
    assert torch.equal(load_checkpoint_bank(tmp_path / "s1").like_vectors, bank.like_vectors)

    data = PairDataSet.read(root, splits=("test",))
    model = load_token_model(tmp_path / "s2")
    rows = evaluate_model("full", LiteScorer.for_data(model, data, *encoders), data)
    by_key = {(r["protocol"], r["metric"], r["users"], r["n_ref"]): r for r in rows}
    assert by_key[("table1", "top1", "all", 8)]["n"] == 8 * 6
    assert [by_key[("table2", f"top{k}", "all", 8)]["n"] for k in (1, 2, 3)] == [16, 16, 16]
    top = [by_key[("table2", f"top{k}", "all", 8)]["value"] for k in (1, 2, 3)]
    assert top[0] <= top[1] <= top[2]
    seen, unseen = by_key[("table3", "top1", "seen", 8)], by_key[("table3", "top1", "unseen", 8)]
    assert by_key[("table3", "gap", "seen-unseen", 8)]["value"] == pytest.approx(abs(seen["value"] - unseen["value"]))
    assert {n for (p, _, _, n) in by_key if p == "fig6"} == {1, 2, 4, 8}
    # A test set of unseen users only (a person's own data, a fresh-user check) has no seen rows
    # and no gap, rather than NaNs in the JSON.
    data.users = {**data.users, "test_seen": []}
    rows = evaluate_model("full", LiteScorer.for_data(model, data, *encoders), data)
    assert rows and all(math.isfinite(r["value"]) for r in rows)
    assert {r["users"] for r in rows} == {"all", "unseen"} and "table3" not in {r["protocol"] for r in rows}

    maps = attention_cli.attention_maps(model, LiteScorer.for_data(model, data, *encoders), data,
                                        ["u0", "test_unseen0"], data.targets_1v1["test"][0].liked, "a flat colour",
                                        shuffles=3, layer=-1, head=None)
    assert maps["u0"].shape == (3, 4)  # 3 shuffles × 1 target token, 4 preference tokens
    assert torch.all(maps["u0"] >= 0) and torch.all(maps["u0"].sum(1) <= 1 + 1e-6)
    similarity, pairs = attention_cli.similar_users(maps)
    assert similarity.shape == (2, 2) and pairs[0]["users"] == ["u0", "test_unseen0"]
    attention_cli.plot(maps, {"u0"}, 3, "test", tmp_path / "attention.png")
    assert Image.open(tmp_path / "attention.png").size[0] > 100


# ---- VLM backbone: a tiny random-init Idefics3 in 4-bit with LoRA -------------------------------
@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    pytest.importorskip("bitsandbytes")
    from prefstudio_research.preference.offline_vlm import tiny_idefics3
    from prefstudio.preference.vlm import VLMConfig, load_vlm

    folder = tiny_idefics3(tmp_path_factory.mktemp("idefics3"))
    torch.manual_seed(0)
    return load_vlm(VLMConfig(model=str(folder), compute_dtype="float32", image_size=32, lora_rank=4), "cpu")


def _images(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(24, 24, 3, generator=generator) * 255).byte().numpy()) for _ in range(n)]


def test_vlm_loads_in_4bit_with_lora_on_the_language_model_only(tiny_vlm):
    import bitsandbytes as bnb

    base = tiny_vlm.model.get_base_model()
    text_4bit = [n for n, m in base.model.text_model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert text_4bit, "the language model's linear layers are 4-bit"
    lora = [n for n, _ in tiny_vlm.model.named_parameters() if "lora_" in n]
    assert lora and all("text_model" in n and ("q_proj" in n or "v_proj" in n) for n in lora)
    tokens = tiny_vlm.processor.tokenizer.convert_ids_to_tokens([tiny_vlm.like_id, tiny_vlm.dislike_id])
    assert [t.lstrip("Ġ▁ ") for t in tokens] == ["like", "dislike"]


def test_vlm_stage1_step_then_stage2_step_changes_only_the_preference_tokens(tiny_vlm):
    from prefstudio.preference.vlm import ImagePair

    images = _images(6, seed=1)
    history = [ImagePair(images[0], images[1], "a cat"), ImagePair(images[2], images[3], "a dog")]
    tiny_vlm.train()

    def step(params):
        before = {n: p.detach().clone() for n, p in tiny_vlm.named_parameters()}
        optimizer = torch.optim.AdamW(params, lr=1e-2)
        logits = tiny_vlm.pair_logits(history, images[4], images[5], "a bird")
        loss = preference_loss(*logits).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        assert torch.isfinite(loss)
        return {n for n, p in tiny_vlm.named_parameters() if not torch.equal(p.detach(), before[n])}

    changed = step(tiny_vlm.stage_parameters(1))
    assert changed and all("lora_" in n for n in changed)
    tiny_vlm.add_preference_tokens(3)
    assert step(tiny_vlm.stage_parameters(2)) == {"preference_tokens"}

    tiny_vlm.eval()
    with torch.no_grad():
        m_like, m_dislike = tiny_vlm.score(history, images[4:6], ["a bird", "a bird"])
        attention = tiny_vlm.preference_token_attention(history, images[4], "a bird")
        # Encoding the shared history images once gives the same logits as once per sequence.
        batch = tiny_vlm.encode([tiny_vlm.sequence(history, image, "a bird") for image in images[4:6]])
        once, per_sequence = tiny_vlm(batch, shared_history=True), tiny_vlm(batch, shared_history=False)
    assert torch.allclose(once[0], per_sequence[0], atol=1e-5)
    assert torch.allclose(once[1], per_sequence[1], atol=1e-5)
    assert torch.allclose(once[0], m_like, atol=1e-5)
    assert m_like.shape == m_dislike.shape == (2,)
    layers = tiny_vlm.model.get_base_model().config.text_config.num_hidden_layers
    assert attention.shape[0] == layers and attention.shape[-1] == 3 and torch.all(attention >= 0)


# ---- Pick-a-Pic converter -------------------------------------------------------------------
def _png(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (20, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _record(user, colours, target, label0):
    return {"user_id": user, "reference_list": [_png(c) for c, _ in colours],
            "reference_list_bad": [_png(c) for _, c in colours],
            "reference_prompt_list": [f"prompt {i}" for i in range(len(colours))],
            "image0": _png(target[0]), "image1": _png(target[1]), "prompt": "a square", "label0": label0}


def test_pickapic_converter_reads_plain_pickles_and_writes_the_pair_layout(tmp_path):
    from prefstudio_research.preference.pickapic_convert import convert

    refs = [((200, 0, 0), (0, 0, 200)), ((180, 20, 0), (0, 20, 180))]
    train_records = [_record(7, refs, ((250, 0, 0), (0, 0, 250)), 1.0),
                     _record(7, refs, ((0, 0, 240), (240, 0, 0)), 0.0),
                     _record(8, refs, ((1, 2, 3), (4, 5, 6)), 0.5)]
    files = {}
    for name, records, protocol in (("train", train_records, 2),  # protocol 2: bytes via _codecs.encode
                                    ("val", [_record(9, refs, ((9, 9, 9), (8, 8, 8)), 1.0)], 5),
                                    ("test", [_record(7, refs, ((7, 7, 7), (6, 6, 6)), 1.0),
                                              _record(10, refs, ((5, 5, 5), (4, 4, 4)), 0.0)], 4)):
        files[name] = tmp_path / f"{name}.pkl"
        columns = {k: [r[k] for r in records] for k in records[0]} if name == "val" else records
        files[name].write_bytes(pickle.dumps(columns, protocol=protocol))
    counts = convert(files["train"], files["val"], files["test"], tmp_path / "out")
    assert counts["ties skipped"] == 1
    data = PairDataSet.read(tmp_path / "out")
    assert data.users["test_seen"] == ["7"] and data.users["test_unseen"] == ["10"]
    assert len(data.train) == 2 + 2 + 2  # user 7's references once and two targets; user 8's references
    assert [len(h) for h in data.references["test"].values()] == [2, 2]
    liked = data.targets_1v1["test"][1]
    assert Image.open(liked.liked).getpixel((0, 0)) == (4, 4, 4)  # label0 = 0: image1 is the liked one
    # Each distinct image once: 4 reference images, 4 train targets (the tie's are not written), 2 val, 4 test.
    assert len(data.image_paths()) == len(set(data.image_paths())) == 14


def test_pickapic_converter_refuses_a_pickle_that_would_run_code(tmp_path):
    from prefstudio_research.preference.pickapic_convert import UnsafePickle, convert, load_plain_pickle

    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([{"user_id": RunsCode()}]))
    with pytest.raises(UnsafePickle, match=r"needs (io|builtins)\.open"):
        load_plain_pickle(evil)
    assert not marker.exists()
    with pytest.raises(UnsafePickle):
        convert(evil, evil, evil, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not marker.exists()
    # A guarded stand-in refuses misuse too: bytearray(10**12) would allocate a terabyte.
    bomb = tmp_path / "bomb.pkl"
    bomb.write_bytes(b"\x80\x02cbuiltins\nbytearray\nJ\x00\x10\xa5\xd4\x85R.")
    with pytest.raises(UnsafePickle, match="bytearray from int"):
        load_plain_pickle(bomb)


def _judged(pool, generator, n, taste):
    """n pairs of `pool`'s images judged by a linear `taste` (a user of a feature pool, no prompts)."""
    pick = torch.stack([torch.randperm(len(pool), generator=generator)[:2] for _ in range(n)])
    a, b = pool[pick[:, 0]], pool[pick[:, 1]]
    a_wins = ((a - b) @ taste > 0).unsqueeze(1)
    return PairFeatures(torch.where(a_wins, a, b), torch.where(a_wins, b, a))


def test_training_from_features_without_prompts_as_the_benchmark_harness_calls_it():
    from prefstudio_research.train.preference_tokens import train_lite_on_features

    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(60, 6, generator=generator)  # images recur across users, as in a real pool
    w = torch.tensor([1.0, -1, 0, 0, 0, 0])

    def history(n):
        return _judged(pool, generator, n, w)

    train_users = [history(12) for _ in range(10)]
    validation = [(history(4), *(lambda h: (h.liked, h.disliked))(history(5))) for _ in range(3)]
    result = train_lite_on_features(
        train_users, validation, {"width": 16, "layers": 1, "heads": 2},
        StageConfig(steps=20, batch_size=8, lr=3e-3, n_ref=4, eval_every=10),
        StageConfig(steps=5, batch_size=8, lr=1e-2, n_ref=4, eval_every=5, preference_tokens=3),
        image_encoder="test-features", log=lambda message: None)
    first, second = result["stage1"], result["stage2"]
    assert first.config.text_dim == 0 and first.preference_tokens is None and result["bank"] is None
    assert second.preference_tokens.shape == (3, 16)
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    assert [r["stage"] for r in result["log"]] == [1, 2] and result["log"][0]["val_n"] == 15
    m_like, m_dislike = second.score(PairFeatures(pool[:4], pool[4:8]), TargetFeatures(pool[10:20]))
    assert m_like.shape == (10,)


def test_shipped_training_configs_parse():
    from pathlib import Path

    from prefstudio.preference.vlm import VLMConfig
    from prefstudio_research.train.preference_tokens import read_run_config

    configs = sorted((Path(__file__).parents[1] / "assets" / "preference_tokens").glob("*.json"))
    assert {c.stem for c in configs} >= {"lite", "idefics2-8b"}
    for path in configs:
        config = read_run_config(path)
        if config["backbone"] == "vlm":
            assert VLMConfig(**config["model"]).quantization == "nf4"
        else:
            LiteConfig(image_dim=1, text_dim=1, **config["model"])
        assert config["stage2"].preference_tokens == 10  # L_p = 10 by default (000 §3.3)


def test_training_from_features_with_prompts_needs_the_validation_targets_prompts():
    from prefstudio_research.train.preference_tokens import LiteTask

    def h(n):
        return PairFeatures(torch.randn(n, 6), torch.randn(n, 6), torch.randn(n, 4))

    with pytest.raises(InvalidInput, match="target prompts"):
        LiteTask.from_features([h(10)], [(h(4), torch.randn(3, 6), torch.randn(3, 6))], n_ref=4)
    val_history, liked, disliked, prompts = h(4), torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 4)
    task = LiteTask.from_features([h(10), h(10)], [(val_history, liked, disliked, prompts)], n_ref=4)
    assert task.prompts.shape == (20 + 4 + 3, 4) and task.images.shape == (40 + 8 + 6, 6)
    history, targets = task.validation[0]
    assert torch.equal(task.images[history[:, 0]], val_history.liked)
    assert torch.equal(task.prompts[history[:, 2]], val_history.prompts)
    assert torch.equal(task.images[targets[:, 1]], disliked) and torch.equal(task.prompts[targets[:, 2]], prompts)


def test_a_history_of_pairs_across_prompts_is_read_with_each_images_prompt_and_tasks_join():
    """The studio pairs a 👍 of one prompt with a 👎 of another: training rows carry both prompts,
    and a task of such people joins a task of same-prompt pairs (the studio people next to PrefBench)."""
    from prefstudio_research.train.preference_tokens import LiteTask

    def h(n, across):
        return PairFeatures(torch.randn(n, 6), torch.randn(n, 6), torch.randn(n, 4),
                            torch.randn(n, 4) if across else None)

    studio = LiteTask.from_features([h(10, True), h(10, True)], [(h(4, True), torch.randn(3, 6), torch.randn(3, 6),
                                                                   torch.randn(3, 4))], n_ref=4)
    first = studio.rows[:10]
    assert not torch.equal(first[:, 2], first[:, 3])  # each image's own prompt
    clipart = LiteTask.from_features([h(10, False)], [(h(4, False), torch.randn(3, 6), torch.randn(3, 6),
                                                        torch.randn(3, 4))], n_ref=4)
    assert torch.equal(clipart.rows[:, 2], clipart.rows[:, 3])  # a same-prompt pair: one prompt
    joined = clipart.join(studio, n_ref=4)
    assert joined.rows.shape == (30, 4) and len(joined.validation) == 2 and len(set(joined.users)) == 3
    for task, offset in ((clipart, 0), (studio, 10)):  # every row reads the same features as before joining
        for column, table in ((0, "images"), (1, "images"), (2, "prompts"), (3, "prompts")):
            assert torch.equal(getattr(joined, table)[joined.rows[offset:offset + task.rows.shape[0], column]],
                               getattr(task, table)[task.rows[:, column]])
    history, targets = joined.validation[1]
    assert torch.equal(joined.images[targets[:, 0]], studio.images[studio.validation[0][1][:, 0]])
    assert torch.equal(joined.prompts[history[:, 3]], studio.prompts[studio.validation[0][0][:, 3]])
    examples = joined.batch(2, torch.Generator().manual_seed(0), targets=2)
    model = LiteTokenModel(LiteConfig(image_dim=6, text_dim=4, image_encoder="x", text_encoder="y", width=16,
                                      layers=1, heads=2))
    assert all(t.shape == (4,) for t in joined.logits(model, examples))


def test_training_on_several_history_lengths_reads_them_all():
    """history_lengths: each step draws one of them, validation averages over them, and the model
    records the longest as the history it reads at once."""
    from prefstudio_research.train.preference_tokens import train_lite_on_features

    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(60, 6, generator=generator)
    w = torch.tensor([1.0, -1, 0, 0, 0, 0])

    def history(n):
        return _judged(pool, generator, n, w)

    train_users = [history(12) for _ in range(10)]
    validation = [(history(6), *(lambda h: (h.liked, h.disliked))(history(5))) for _ in range(3)]
    result = train_lite_on_features(
        train_users, validation, {"width": 16, "layers": 1, "heads": 2},
        StageConfig(steps=6, batch_size=8, lr=3e-3, n_ref=2, history_lengths=[2, 6], eval_every=3),
        None, image_encoder="test-features", log=lambda message: None)
    assert result["stage1"].config.max_history == 6
    assert result["log"][0]["val_n"] == 2 * 15  # 3 users x 5 targets, read with 2 and with 6 pairs
    with pytest.raises(InvalidInput, match="N_ref = 12"):  # 12 judgments each: none can serve 12 + a target
        train_lite_on_features(train_users, validation, {"width": 16, "layers": 1, "heads": 2},
                               StageConfig(steps=2, batch_size=8, lr=3e-3, n_ref=2, history_lengths=[2, 12]),
                               None, image_encoder="test-features", log=lambda message: None)


def test_a_model_without_preference_tokens_refuses_an_empty_history_in_one_line():
    """A checkpoint trained without preference tokens reads nothing but the person's pairs:
    with none judged it has nothing to attend to (it raised a reshape error)."""
    from prefstudio.preference.models import TokenTaste

    empty = PairFeatures(torch.zeros(0, 6), torch.zeros(0, 6), torch.zeros(0, 4), torch.zeros(0, 4))
    with pytest.raises(InvalidInput) as refused:
        TokenTaste(_lite(preference_tokens=0), None, empty, 8, {})
    assert str(refused.value) == ("this preference-token checkpoint has no preference tokens: it reads only "
                                  "your judged pairs, and none is judged yet; judge a 👍/👎 pair first")
    with_tokens = TokenTaste(_lite(preference_tokens=2), None, empty, 8, {})  # its tokens stand in
    assert torch.isfinite(with_tokens.log_odds(torch.randn(3, 6), torch.zeros(1, 4))).all()


def test_an_antisymmetric_model_reads_a_person_against_its_training_populations_taste():
    """Training users who all share one taste teach a plain model that taste as a prior, and a
    person of the opposite taste is then read by it whatever they judged. An antisymmetric model
    trained on the same users follows the person's own history."""
    from prefstudio_research.train.preference_tokens import train_lite_on_features

    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(80, 6, generator=generator)
    w = torch.tensor([1.0, -1, 0, 0, 0, 0])

    def history(n, taste):
        return _judged(pool, generator, n, taste)

    train_users = [history(16, w) for _ in range(16)]
    validation = [(history(4, w), *(lambda h: (h.liked, h.disliked))(history(8, w))) for _ in range(3)]
    opposite, targets = history(4, -w), history(40, -w)

    def accuracy_on_the_opposite_person(antisymmetric, steps):
        model = train_lite_on_features(
            train_users, validation, {"width": 16, "layers": 1, "heads": 2, "antisymmetric": antisymmetric},
            StageConfig(steps=steps, batch_size=16, lr=3e-3, n_ref=4, eval_every=steps),
            None, image_encoder="test-features", log=lambda message: None)["stage1"]
        with torch.no_grad():
            m_like, m_dislike = model.score(opposite, TargetFeatures(torch.cat([targets.liked, targets.disliked])))
        odds = m_like - m_dislike
        return float((odds[:40] > odds[40:]).float().mean())

    assert accuracy_on_the_opposite_person(False, steps=100) < 0.3
    assert accuracy_on_the_opposite_person(True, steps=100) > 0.8
