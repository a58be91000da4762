"""PPD (seed 002): the user adapter, Diffusion-DPO with user conditioning, synthetic one-hot
users, the VLM profile and the VLM judge, on tiny random-init instances of the real classes."""
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from pair_data_fixture import write_pair_data
from prefstudio.errors import InvalidInput, NotFound
from prefstudio.generators.diffusers_onestep import DiffusersOneStepGenerator, load_diffusers_generator
from prefstudio.ppd.adapter import AdapterConfig, UserAdapter, load_adapter
from prefstudio.ppd.data import (
    histories_and_pairs, mix_users, one_hot_users, read_user_embeddings, synthetic_reward_pairs,
    write_user_embeddings,
)
from prefstudio.ppd.dpo import ConditionedDenoiser, dpo_loss
from prefstudio.ppd.judge import WinRate, consistent_verdict, judge_pair
from prefstudio.preference.pair_data import PairDataSet, read_judgments
from prefstudio.tools.make_tiny_pipeline import tiny_sd_pipeline, tiny_sdxl_pipeline, write_tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
LOG2 = math.log(2)


def _generator(build=tiny_sd_pipeline, resolution=32, steps=1):
    return DiffusersOneStepGenerator(build(), name="tiny", steps=steps, resolution=resolution, device="cpu",
                                     dtype="float32", gradient_checkpointing=False)


def _denoiser(generator, user_dim=3, tokens=2):
    adapter = UserAdapter(generator.denoiser, AdapterConfig(user_dim=user_dim, tokens=tokens))
    scheduler = DDPMScheduler.from_config(generator.pipeline.scheduler.config)
    return ConditionedDenoiser(generator.denoiser, adapter, scheduler), adapter


# -- the DPO loss -------------------------------------------------------------------------

@pytest.mark.parametrize("build", [tiny_sd_pipeline, tiny_sdxl_pipeline], ids=["sd-turbo", "sdxl-turbo"])
def test_dpo_loss_is_log2_with_accuracy_one_half_when_the_model_is_the_reference(build):
    from prefstudio.ppd.training import PromptCache

    generator = _generator(build, resolution=64)
    model, adapter = _denoiser(generator)
    torch.manual_seed(0)
    liked, disliked = torch.randn(4, *generator.noise_shape), torch.randn(4, *generator.noise_shape)
    text, added = PromptCache(generator).batch(["a red square", "a blue circle", "a red square", "a cat"])
    assert (added is None) == (build is tiny_sd_pipeline)  # SDXL's pooled text and size ids go along
    errors = model(liked, disliked, text, torch.randn(4, 3), added)
    assert torch.equal(errors[0], errors[2]) and torch.equal(errors[1], errors[3])  # untrained: policy == reference
    result = dpo_loss(*errors, beta_t=1000.0)
    assert result.loss.item() == pytest.approx(LOG2, abs=1e-7)
    assert result.implicit_accuracy.item() == 0.5
    # the same from plain numbers: equal model and reference errors on any pair
    err = torch.rand(5)
    same = dpo_loss(err, err.flip(0), err, err.flip(0), beta_t=2000.0)
    assert same.loss.item() == pytest.approx(LOG2) and same.implicit_accuracy.item() == 0.5


def test_dpo_loss_falls_on_a_toy_preference_and_accuracy_rises():
    generator = _generator(resolution=16)
    model, adapter = _denoiser(generator, user_dim=2)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=3e-3)
    rng = torch.Generator().manual_seed(0)
    text = generator.encode_prompt("a toy").embeds.expand(8, -1, -1)
    # Fixed pairs, noise and timesteps: the loss on this toy batch must fall as the adapter trains.
    liked = torch.randn(8, *generator.noise_shape, generator=rng) + 1
    disliked = torch.randn(8, *generator.noise_shape, generator=rng) - 1
    noise = torch.randn(8, *generator.noise_shape, generator=rng)
    t = torch.randint(0, 1000, (8,), generator=rng)
    user = torch.tensor([[1.0, 0.0]]).expand(8, -1)
    losses, accuracies = [], []
    for _ in range(25):
        result = dpo_loss(*model(liked, disliked, text, user, noise=noise, timesteps=t), beta_t=1000.0)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.loss.item())
        accuracies.append(result.implicit_accuracy.item())
    assert losses[0] == pytest.approx(LOG2, abs=1e-6)
    assert losses[-1] < 0.5 * LOG2, losses
    assert accuracies[-1] > 0.8


def test_ties_are_symmetric_leave_the_accuracy_and_pull_the_margin_to_zero():
    model_w, model_l = torch.tensor([0.30, 0.10], requires_grad=True), torch.tensor([0.20, 0.40])
    ref_w, ref_l = torch.tensor([0.25, 0.25]), torch.tensor([0.25, 0.25])
    tie = torch.tensor([True, False])
    result = dpo_loss(model_w, model_l, ref_w, ref_l, beta_t=10.0, tie=tie)
    swapped = dpo_loss(model_l, model_w, ref_l, ref_w, beta_t=10.0, tie=tie)
    # the tie's loss does not depend on which image is called liked
    tie_loss = -0.5 * (torch.nn.functional.logsigmoid(result.margin[0]) + torch.nn.functional.logsigmoid(-result.margin[0]))
    assert tie_loss.item() == pytest.approx(-0.5 * (torch.nn.functional.logsigmoid(swapped.margin[0])
                                                    + torch.nn.functional.logsigmoid(-swapped.margin[0])).item())
    assert result.decided == 1 and result.implicit_accuracy.item() == 1.0  # only the decided pair counts
    result.loss.backward()
    # margin of the tie is −10·(0.30−0.25−(0.20−0.25)) = −1 < 0: the gradient step raises it toward 0,
    # i.e. lowers the liked image's model error
    assert result.margin[0].item() == pytest.approx(-1.0)
    assert model_w.grad[0].item() > 0 and result.margin[0].item() < 0
    # a batch of ties only: the loss is minimal (log 2) at margin 0 and no accuracy is claimed
    zero = dpo_loss(ref_w, ref_l, ref_w, ref_l, beta_t=10.0, tie=torch.tensor([True, True]))
    assert zero.loss.item() == pytest.approx(LOG2) and zero.decided == 0 and math.isnan(zero.implicit_accuracy.item())


def test_contradicting_judgments_of_a_user_become_one_tie(tmp_path):
    root = write_pair_data(tmp_path / "data", n_train_users=2, judgments_per_user=6)
    train = read_judgments(root / "pairs" / "train.jsonl")
    first = train[0]
    flipped = type(first)(first.user_id, first.prompt, first.disliked, first.liked)
    duplicate = type(first)(first.user_id, first.prompt, first.liked, first.disliked)
    target = train[5]  # a target pair of user first.user_id (after its 4-pair history)
    assert target.user_id == first.user_id
    judgments = train + [type(first)(target.user_id, target.prompt, target.disliked, target.liked), target]
    histories, pairs, report = histories_and_pairs(judgments, history=4)
    assert len(histories[first.user_id]) == 4
    ties = [p for p in pairs if p.tie]
    assert len(ties) == 1 and {ties[0].liked, ties[0].disliked} == {target.liked, target.disliked}
    assert report.ties == 1 and report.duplicates == 1
    assert duplicate == first and flipped.liked == first.disliked
    # users with nothing beyond their history are left out, and counted
    _, _, short = histories_and_pairs(train, history=6)
    assert short.users == 0 and short.users_without_targets == 2


def test_synthetic_users_relabel_pairs_by_their_reward_and_equal_scores_are_ties(tmp_path):
    from prefstudio.ppd.training import image_loader
    from prefstudio.rewards.base import Reward

    class Channel(Reward):
        def __init__(self, name, channel):
            self.name, self.channel = name, channel

        def score(self, pixels, context=None):
            return pixels[:, self.channel].mean((1, 2))

    class Flat(Reward):
        name = "flat"

        def score(self, pixels, context=None):
            return torch.zeros(pixels.shape[0])

    root = write_pair_data(tmp_path / "data", n_train_users=4, judgments_per_user=10)
    train = read_judgments(root / "pairs" / "train.jsonl")
    load = image_loader(12)
    pairs, report = synthetic_reward_pairs(train, {"red": Channel("red", 0), "blue": Channel("blue", 2)}, load)
    assert {p.user for p in pairs} == {"red", "blue"} and report.ties == 0
    for p in pairs:
        channel = 0 if p.user == "red" else 2
        assert load(p.liked)[0, channel].mean() > load(p.disliked)[0, channel].mean()
    flat, flat_report = synthetic_reward_pairs(train, {"flat": Flat()}, load)
    assert all(p.tie for p in flat) and flat_report.ties == len(flat)
    assert torch.equal(mix_users({"red": 0.25, "blue": 0.75}, ["red", "blue"]), torch.tensor([0.25, 0.75]))
    with pytest.raises(InvalidInput, match="no synthetic user"):
        mix_users({"green": 1.0}, ["red", "blue"])


# -- the adapter ----------------------------------------------------------------------------

@pytest.mark.parametrize("build", [tiny_sd_pipeline, tiny_sdxl_pipeline], ids=["sd-turbo", "sdxl-turbo"])
def test_adapter_scale_zero_is_the_baseline_bit_for_bit(build):
    generator = _generator(build, resolution=64)
    cond = generator.encode_prompt("a fox in the snow")
    noise = generator.initial_noise(7, batch=2)
    with torch.no_grad():
        baseline = generator.render(noise, cond)
    adapter = UserAdapter(generator.denoiser, AdapterConfig(user_dim=5))
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()  # a trained adapter: W'_v no longer zero
    adapter.install(generator.denoiser)
    cond.user_embedding = torch.randn(5)
    with torch.no_grad():
        adapter.set_scale(0.0)
        at_zero = generator.render(noise, cond)
        adapter.set_scale(1.0)
        at_one = generator.render(noise, cond)
    assert torch.equal(at_zero, baseline)
    assert (at_one - baseline).abs().max() > 1e-3  # the adapter does act at scale 1


def test_adapter_checkpoint_round_trip_and_refusals(tmp_path):
    generator = _generator()
    adapter = UserAdapter(generator.denoiser, AdapterConfig(user_dim=4, tokens=3, base_model="tiny"))
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    adapter.save(tmp_path / "a")
    other = _generator()
    loaded = load_adapter(tmp_path / "a", other.denoiser)
    for key, value in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    sdxl = _generator(tiny_sdxl_pipeline, resolution=64)
    with pytest.raises(InvalidInput, match="does not fit this UNet"):
        load_adapter(tmp_path / "a", sdxl.denoiser)
    with pytest.raises(NotFound):
        load_adapter(tmp_path / "missing", other.denoiser)
    config = json.loads((tmp_path / "a" / "adapter.json").read_text())
    (tmp_path / "a" / "adapter.json").write_text(json.dumps({**config, "user_dim": -1}))
    with pytest.raises(InvalidInput, match="user_dim"):
        load_adapter(tmp_path / "a", other.denoiser)
    with pytest.raises(InvalidInput, match="the adapter reads 4"):
        loaded.image_embeds(torch.zeros(2, 7))


def test_interpolating_between_two_one_hot_users_moves_a_toy_reward_monotonically():
    """002 §5.1 / Fig. 4 in miniature. The toy data are latents with a flat random colour per
    channel; the tiny random UNet is first taught to denoise them (a reference that is a
    denoiser, as a real base model is), then frozen. Synthetic user "r0" prefers a higher
    channel 0 − channel 1 mean, user "r1" the opposite. After Diffusion-DPO of the adapter,
    images generated (4 steps, same noise) for (1−a)·e_r0 + a·e_r1 have a reward r0 that
    falls steadily as a goes from 0 to 1."""
    torch.manual_seed(0)
    generator = _generator(resolution=16, steps=4)
    unet, shape = generator.denoiser, generator.noise_shape
    scheduler = DDPMScheduler.from_config(generator.pipeline.scheduler.config)
    text = generator.encode_prompt("a toy").embeds
    rng = torch.Generator().manual_seed(0)

    def flat(batch):
        return torch.randn(batch, shape[0], 1, 1, generator=rng).expand(batch, *shape).clone()

    unet.requires_grad_(True)
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-3)
    for _ in range(120):
        x0, noise = flat(16), torch.randn(16, *shape, generator=rng)
        t = torch.randint(0, 1000, (16,), generator=rng)
        prediction = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=text.expand(16, -1, -1)).sample
        loss = ((prediction - noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unet.requires_grad_(False)

    def r0(latents):
        return (latents[:, 0] - latents[:, 1]).mean((1, 2))

    names = ["r0", "r1"]
    users = one_hot_users(names)
    model, adapter = _denoiser(generator, user_dim=2)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-3)
    for _ in range(100):
        a, b = flat(8), flat(8)
        who = torch.randint(0, 2, (8,), generator=rng)
        sign = 1 - 2 * who.float()  # r1 = −r0
        a_wins = (sign * (r0(a) - r0(b)) > 0).view(8, 1, 1, 1)
        liked, disliked = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
        user = torch.stack([users[names[i]] for i in who])
        result = dpo_loss(*model(liked, disliked, text.expand(8, -1, -1), user), beta_t=1000.0)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()

    cond = generator.encode_prompt("a toy")
    noise = generator.initial_noise(0, batch=8)
    rewards = []
    for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
        cond.user_embedding = mix_users({"r0": 1 - weight, "r1": weight}, names)
        with torch.no_grad():
            rewards.append(r0(generator._denoise_unet(noise.clone(), cond)).mean().item())
    assert all(x > y for x, y in zip(rewards, rewards[1:])), rewards
    adapter.set_scale(0.0)
    with torch.no_grad():
        base = r0(generator._denoise_unet(noise.clone(), cond)).mean().item()
    assert rewards[0] > base > rewards[-1], (rewards, base)


# -- training through accelerate -----------------------------------------------------------

def test_user_embedding_file_round_trip_and_refusals(tmp_path):
    path = write_user_embeddings(tmp_path / "u.safetensors", {"u0": torch.ones(3), "u1": torch.zeros(3)},
                                 "test", {"u0": "likes red"})
    embeddings, source = read_user_embeddings(path)
    assert source == "test" and torch.equal(embeddings["u0"], torch.ones(3))
    from safetensors.torch import save_file

    save_file({"embeddings": torch.full((2, 3), float("nan"))}, str(tmp_path / "bad.safetensors"),
              metadata={"format": "prefstudio-ppd-user-embeddings", "version": "1", "users": '["a", "b"]'})
    with pytest.raises(InvalidInput, match="finite"):
        read_user_embeddings(tmp_path / "bad.safetensors")
    save_file({"embeddings": torch.zeros(2, 3)}, str(tmp_path / "dup.safetensors"),
              metadata={"format": "prefstudio-ppd-user-embeddings", "version": "1", "users": '["a", "a"]'})
    with pytest.raises(InvalidInput, match="distinct"):
        read_user_embeddings(tmp_path / "dup.safetensors")


def test_training_steps_run_through_accelerate_launch_on_two_cpu_processes(tmp_path):
    model = write_tiny_pipeline(tmp_path / "tiny-sd", "sd")
    data = write_pair_data(tmp_path / "data", n_train_users=4, judgments_per_user=8)
    users = sorted(PairDataSet.read(data, splits=()).users["train"])
    embeddings = write_user_embeddings(tmp_path / "users.safetensors",
                                       {u: torch.randn(6, generator=torch.Generator().manual_seed(i))
                                        for i, u in enumerate(users)}, "test")
    out = tmp_path / "run"
    # Two processes on the CPU (gloo): what `accelerate launch --multi_gpu` does on GPUs.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "ACCELERATE_USE_CPU": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "prefstudio_research.train.ppd", "train", "--model", str(model), "--data", str(data),
               "--users", f"embeddings:{embeddings}", "--out", str(out), "--resolution", "32",
               "--batch-size", "2", "--max-steps", "2", "--log-every", "1", "--save-every", "1",
               "--user-dropout", "0.5"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in log] == [1, 2]
    assert all(line["pairs"] == 2 * 2 for line in log)  # both processes' batches are counted
    # the first step's policy is the reference (W'_v starts at zero): loss log 2, accuracy ½
    assert log[0]["loss"] == pytest.approx(LOG2, abs=1e-5) and log[0]["implicit_accuracy"] == 0.5
    assert log[1]["loss"] != pytest.approx(LOG2, abs=1e-9)  # the step changed the adapter
    data_report = json.loads((out / "data.json").read_text())
    assert data_report["user_embedding"].startswith("embeddings") and data_report["pairs"] == 4 * 4
    generator = load_diffusers_generator(str(model), device="cpu", dtype="float32", resolution=32)
    adapter = load_adapter(out / "final", generator.denoiser)
    assert adapter.config.user_dim == 6 and adapter.config.provenance["train"]["beta"] == 1.0
    assert (out / "checkpoint-1" / "adapter.safetensors").is_file()
    assert adapter.layers[next(iter(adapter.layers))].to_v_ip[0].weight.abs().sum() > 0


def test_training_with_synthetic_one_hot_users_from_a_clip_reward(tmp_path):
    model = write_tiny_pipeline(tmp_path / "tiny-sd", "sd")
    clip = write_tiny_pipeline(tmp_path / "tiny-clip", "clip")
    data = write_pair_data(tmp_path / "data", n_train_users=2, judgments_per_user=4)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "prefstudio_research.train.ppd", "train", "--model", str(model),
                           "--data", str(data), "--users", "synthetic:clip", "--clip", str(clip), "--out", str(out),
                           "--resolution", "32", "--batch-size", "4", "--max-steps", "1", "--beta", "0.5"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "data.json").read_text())
    assert report["user_embedding"] == "synthetic one-hot: clip" and report["pairs"] == 8
    config = json.loads((out / "final" / "adapter.json").read_text())
    assert config["user_dim"] == 1 and config["user_embedding"] == "synthetic one-hot: clip"
    assert config["provenance"]["train"]["beta"] == 0.5
    bad = subprocess.run([sys.executable, "-m", "prefstudio_research.train.ppd", "train", "--model", str(model),
                          "--data", str(data), "--users", "synthetic:hps", "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "synthetic users are some of clip, aesthetic, pickscore" in bad.stderr


def test_training_refuses_bad_settings_with_one_line(tmp_path):
    from prefstudio.ppd.training import TrainConfig

    with pytest.raises(InvalidInput, match="users must be"):
        TrainConfig(model="m", data="d", out="o", users="everyone")
    with pytest.raises(InvalidInput, match="user dropout"):
        TrainConfig(model="m", data="d", out="o", users="synthetic:clip", user_dropout=1.0)
    with pytest.raises(InvalidInput, match="learning rate"):
        TrainConfig(model="m", data="d", out="o", users="synthetic:clip", learning_rate=0.0)
    with pytest.raises(InvalidInput, match="max steps"):
        TrainConfig(model="m", data="d", out="o", users="synthetic:clip", max_steps=-1)
    with pytest.raises(InvalidInput, match="β"):
        TrainConfig(model="m", data="d", out="o", users="synthetic:clip", beta=float("nan"))


# -- the VLM profile and judge ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from prefstudio.ppd.vlm_profile import VLMSettings, load_vlm_user_encoder
    from prefstudio_research.preference.offline_vlm import tiny_idefics3

    folder = tiny_idefics3(tmp_path_factory.mktemp("vlm") / "tiny-idefics3")
    settings = VLMSettings(model=str(folder), image_size=32, max_new_tokens=12, dtype="float32")
    return load_vlm_user_encoder(settings, "cpu")


def _colour_pairs(count, offset=0):
    from prefstudio.ppd.vlm_profile import JudgedPair

    def square(i):
        return Image.new("RGB", (40, 40), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256))
    return [JudgedPair(f"a square number {i}", square(2 * i + offset), square(2 * i + 1 + offset))
            for i in range(count)]


def test_tiny_vlm_writes_a_profile_and_an_embedding_of_its_hidden_size_from_four_pairs(tiny_vlm):
    history = _colour_pairs(4)
    profile = tiny_vlm.profile(history, seed=3)
    assert isinstance(profile.text, str) and profile.text
    assert profile.embedding.shape == (tiny_vlm.model.config.text_config.hidden_size,) == (64,)
    assert profile.embedding.dtype == torch.float32 and torch.isfinite(profile.embedding).all()
    again = tiny_vlm.profile(history, seed=3)
    assert torch.equal(again.embedding, profile.embedding) and again.text == profile.text
    other = tiny_vlm.profile(_colour_pairs(4, offset=50), seed=3)
    assert not torch.equal(other.embedding, profile.embedding)  # it reads the images
    # the prompt is the chain of thought of 002 Table 2: 4 labelled pairs, 8 images, then the steps
    messages, images = tiny_vlm.messages(history)
    text = " ".join(c["text"] for c in messages[1]["content"] if c["type"] == "text")
    assert len(images) == 8 and text.count("Prediction of user preference:") == 4 and "User Profile:" in text


def test_vlm_profile_is_stored_with_the_profile_shown_and_checked_on_import(tmp_path, tiny_vlm):
    from prefstudio.ppd.profile_store import read_vlm_profile, write_vlm_profile
    from prefstudio.store.history import HistoryStore
    from prefstudio.store.profile_file import export_profile, import_profile

    store = HistoryStore(tmp_path / "store")
    store.create_profile("alice")
    def png(image):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    shas = [store.import_image(png(pair_image), f"prompt {i}").sha256
            for i, pair_image in enumerate(img for p in _colour_pairs(5) for img in (p.liked, p.disliked))]
    with pytest.raises(InvalidInput, match="judge 4 more"):
        write_vlm_profile(store, "alice", tiny_vlm)
    store.record_judgments("alice", "pair", [(shas[2 * i], shas[2 * i + 1]) for i in range(5)])
    stored = write_vlm_profile(store, "alice", tiny_vlm, seed=1)
    assert stored.text and stored.embedding.shape == (64,) and len(stored.pairs) == 4
    assert stored.pairs[0] == [shas[8], shas[9]]  # the most recent pair first
    assert read_vlm_profile(store, "alice").text == stored.text
    from types import SimpleNamespace

    from prefstudio.ui.profile_tab import describe_vlm_profile

    shown = describe_vlm_profile(SimpleNamespace(store=store), "alice")
    assert shown.startswith("#### What the studio thinks you like") and "4 most recent pairs" in shown
    store.create_profile("bob")
    assert describe_vlm_profile(SimpleNamespace(store=store), "bob") == ""
    export_profile(store, "alice", tmp_path / "alice.prefstudio")
    imported = import_profile(store, tmp_path / "alice.prefstudio", "alice-2")
    again = read_vlm_profile(store, imported.name)
    assert again.text == stored.text and torch.equal(again.embedding, stored.embedding)
    # What a VLM wrote elsewhere, and from which pairs, is the file's account: the page says so.
    assert stored.imported_at is None and again.imported_at is not None
    shown = describe_vlm_profile(SimpleNamespace(store=store), imported.name)
    assert "Imported with a profile file" in shown and "the file's account" in shown

    from prefstudio.preference.state_schema import check_state

    good_config = store.load_model("alice", "vlm-profile")[1]
    embedding = stored.embedding.numpy()
    for change, message in (({"text": "x" * 5000}, "text"), ({"text": "a\x1b[2Jb"}, "text"),
                            ({"pairs": [["nothex", "nothex"]]}, "pairs"), ({"made_at": 1e300}, "made_at"),
                            ({"extra": 1}, "unexpected")):
        with pytest.raises(InvalidInput, match=message):
            check_state("vlm-profile", {"embedding": embedding}, {**good_config, **change})
    with pytest.raises(InvalidInput, match="NaN"):
        check_state("vlm-profile", {"embedding": embedding * float("nan")}, good_config)
    store.close()


def test_judge_counts_only_verdicts_that_agree_in_both_orders(tiny_vlm):
    assert consistent_verdict(1, 2) == "candidate" and consistent_verdict(2, 1) == "baseline"
    assert consistent_verdict(1, 1) is None and consistent_verdict(2, 2) is None and consistent_verdict(None, 2) is None
    tally = WinRate()
    for verdict in ("candidate", "candidate", "baseline", None):
        tally.add(verdict)
    assert tally.as_dict() == {"win_rate": 2 / 3, "wins": 2, "losses": 1, "dropped": 1, "judged": 4}
    from prefstudio.ppd.vlm_profile import read_prediction

    assert read_prediction("Pair 1: ... User Profile: bold colours.\nPrediction of user preference: 2") == 2
    assert read_prediction("prediction of user preference: [1]") == 1
    assert read_prediction("Prediction of user preference: 1 ... on reflection Prediction of user preference: 2") == 2
    assert read_prediction("I cannot tell") is None and read_prediction("Prediction of user preference: 3") is None
    # end to end with the tiny random VLM: its 12 random tokens name no image, so the verdict is
    # dropped rather than guessed
    history = _colour_pairs(4)
    assert judge_pair(tiny_vlm, history, "a square", history[0].liked, history[0].disliked) is None
    messages, images = tiny_vlm.messages(history, ("a square", history[0].liked, history[0].disliked))
    assert len(images) == 10 and "Prediction of user preference: [1 or 2]" in messages[1]["content"][-4]["text"]


def test_embed_users_from_the_user_bank_posterior_and_fitted_taste(tmp_path, capsys):
    from prefstudio.preference.user_embedding import UserBank
    from prefstudio.studio import DEFAULT_BANK
    from prefstudio_research.train.ppd import main

    data = write_pair_data(tmp_path / "data", n_train_users=2, judgments_per_user=6)
    bank = UserBank.load(DEFAULT_BANK)
    assert main(["embed-users", "--data", str(data), "--out", str(tmp_path / "post.safetensors"),
                 "--source", "bank-posterior"]) == 0
    posterior, source = read_user_embeddings(tmp_path / "post.safetensors")
    assert source.startswith("bank-posterior") and set(posterior) == {"u0", "u1"}
    for weights in posterior.values():
        assert weights.shape == (bank.n_users,) and weights.min() >= 0 and weights.sum().item() == pytest.approx(1, abs=1e-5)
    assert main(["embed-users", "--data", str(data), "--out", str(tmp_path / "fit.safetensors"),
                 "--source", "fitted"]) == 0
    fitted, _ = read_user_embeddings(tmp_path / "fit.safetensors")
    assert fitted["u0"].shape == (bank.mean.shape[0],) and not torch.equal(fitted["u0"], fitted["u1"])
    assert main(["embed-users", "--data", str(data), "--out", str(tmp_path / "x.safetensors"),
                 "--source", "fitted", "--history", "9"]) == 2
    assert "more than 9 judgments" in capsys.readouterr().err


def test_cli_ppd_generate_writes_baseline_and_adapter_images_from_one_seed(tmp_path, capsys):
    from prefstudio.cli import main

    model = write_tiny_pipeline(tmp_path / "tiny-sd", "sd")
    generator = load_diffusers_generator(str(model), device="cpu", dtype="float32")
    adapter = UserAdapter(generator.denoiser, AdapterConfig(user_dim=2, base_model=str(model),
                                                            user_embedding="synthetic one-hot: r0, r1"))
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    adapter.save(tmp_path / "adapter")
    base = ["--data", str(tmp_path / "store"), "--model", str(model), "--device", "cpu", "ppd", "generate", "-",
            "a fox in the snow", "--adapter", str(tmp_path / "adapter"), "--mix", "r0=0.3,r1=0.7", "--seed", "5"]
    files = {}
    for scale in ("0", "1"):
        assert main(base + ["--scale", scale, "--out", str(tmp_path / f"out{scale}")]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["user"] == "mix r0=0.3,r1=0.7"
        files[scale] = {side: Image.open(path) for side, path in result["files"].items()}
    same = [torch.equal(torch.tensor(list(files["0"]["baseline"].getdata())),
                        torch.tensor(list(files[s]["personalized"].getdata()))) for s in ("0", "1")]
    assert same == [True, False]  # scale 0 is the baseline; scale 1 is not
    assert main(base[:-4] + ["--mix", "green=1", "--out", str(tmp_path / "o")]) == 2
    assert "no synthetic user green" in capsys.readouterr().err
    assert main(base[:6] + ["ppd", "generate", "nobody", "a fox", "--adapter", str(tmp_path / "adapter"),
                            "--out", str(tmp_path / "o")]) == 2
    assert "nobody" in capsys.readouterr().err


def test_gpu_ppd_bench_smoke_runs_the_dpo_step_and_the_vlm_embedding_on_cpu(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_ppd", REPO / "bench" / "gpu_ppd.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "benchmarks_gpu.md"
    out.write_text("## Another section\n\nkept\n")
    result = bench.main(["--smoke", "--out", str(out)])
    assert result["dpo"][0]["step_s"] > 0 and result["dpo"][0]["loss"] == pytest.approx(LOG2, abs=1e-5)
    assert result["vlm"][0]["dim"] == 64 and result["vlm"][0]["embed_s"] > 0
    text = out.read_text()
    assert "kept" in text and "## PPD on a GPU (bench/gpu_ppd.py)" in text and "--smoke" in text


def test_cli_ppd_profile_then_generate_with_it_then_winrate(tmp_path, capsys):
    """The person's path end to end with tiny models: the VLM reads 4 pairs of the profile, the
    adapter is conditioned on the stored embedding, and the judge's verdicts are tallied."""
    from prefstudio.cli import main
    from prefstudio_research.preference.offline_vlm import tiny_idefics3
    from prefstudio.store.history import HistoryStore

    vlm = tiny_idefics3(tmp_path / "tiny-vlm")
    model = write_tiny_pipeline(tmp_path / "tiny-sd", "sd")
    with HistoryStore(tmp_path / "store") as store:
        store.create_profile("alice")
        shas = []
        for i, pair in enumerate(_colour_pairs(4)):
            for image in (pair.liked, pair.disliked):
                buffer = io.BytesIO()
                image.save(buffer, "PNG")
                shas.append(store.import_image(buffer.getvalue(), f"prompt {i}").sha256)
        store.record_judgments("alice", "pair", [(shas[2 * i], shas[2 * i + 1]) for i in range(4)])
    flags = ["--vlm-image-size", "32", "--vlm-max-new-tokens", "6", "--vlm-dtype", "float32"]
    common = ["--data", str(tmp_path / "store"), "--device", "cpu", "--model", str(model), "ppd"]
    assert main(common + ["profile", "alice", "--vlm", str(vlm)] + flags) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["embedding_size"] == 64 and made["text"] and len(made["pairs"]) == 4

    generator = load_diffusers_generator(str(model), device="cpu", dtype="float32")
    adapter = UserAdapter(generator.denoiser, AdapterConfig(user_dim=64, base_model=str(model)))
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    adapter.save(tmp_path / "adapter")
    assert main(common + ["generate", "alice", "a fox", "--adapter", str(tmp_path / "adapter"),
                          "--out", str(tmp_path / "out")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["user"] == "VLM profile of alice" and Path(result["files"]["personalized"]).is_file()

    # an adapter trained on bank posteriors reads the same vector made from the profile's pairs
    from prefstudio.preference.user_embedding import UserBank
    from prefstudio.studio import DEFAULT_BANK

    bank_adapter = UserAdapter(generator.denoiser, AdapterConfig(user_dim=UserBank.load(DEFAULT_BANK).n_users))
    bank_adapter.save(tmp_path / "bank-adapter")
    assert main(common + ["generate", "alice", "a fox", "--adapter", str(tmp_path / "bank-adapter"),
                          "--user-source", "bank-posterior", "--out", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["user"] == "bank-posterior of alice"
    assert main(common + ["generate", "alice", "a fox", "--adapter", str(tmp_path / "bank-adapter"),
                          "--out", str(tmp_path / "out")]) == 2  # the VLM embedding has 64 values, not K
    assert "the adapter reads" in capsys.readouterr().err

    (tmp_path / "prompts.txt").write_text("a fox\na lighthouse\n")
    assert main(common + ["winrate", "alice", "--adapter", str(tmp_path / "adapter"), "--prompts",
                          str(tmp_path / "prompts.txt"), "--judge", str(vlm)] + flags) == 0
    tally = json.loads(capsys.readouterr().out)
    # the tiny random judge never writes a readable verdict: every comparison is dropped, none guessed
    assert tally["judged"] == 2 and tally["dropped"] == 2 and tally["win_rate"] is None
