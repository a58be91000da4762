"""Real rewards on the sliders, measured calibration and CLIP taste features, with tiny random
models of the real classes (a tiny SD-Turbo-like pipeline, a tiny CLIP ViT-L/14-shaped folder,
a random LAION-shaped aesthetic head), offline, on the CPU, with an empty Hugging Face cache."""
import json
import math
import shutil
import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from gradio_client import Client
from safetensors.torch import save_file

from prefstudio import cli
from prefstudio.encoders.clip import load_clip
from prefstudio.errors import InvalidInput, ModelUnavailable, NotFound
from prefstudio.rewards.aesthetic import AestheticHead
from prefstudio.rewards.calibration import CALIBRATION_FILE, read_calibrations
from prefstudio.studio import build_studio, user_bank_path
from prefstudio.tools.make_tiny_pipeline import write_tiny_clip, write_tiny_pipeline
from prefstudio.ui.app import build_app, launch

PROMPT = "a lighthouse on a cliff at dusk"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_file(AestheticHead().state_dict(), root / "aesthetic_head.safetensors")
    return {"sd": str(write_tiny_pipeline(root / "tiny-sd", "sd")), "clip": str(write_tiny_clip(root / "tiny-clip")),
            "head": str(root / "aesthetic_head.safetensors")}


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    """Offline with an empty Hugging Face cache: only what a test names is on this machine."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_clip.cache_clear()  # a CLIP an earlier test found in its own cache is not in this one
    yield cache
    # A download leaves blobs (and .locks) in the cache; a test's own copies have none.
    assert not any(cache.rglob("blobs")) and not any(cache.rglob(".locks")), "something was downloaded"


def folders(models) -> dict[str, str]:
    return {"clip": models["clip"], "aesthetic": models["head"]}


def fitted_studio(data, models, **options):
    studio = build_studio(data, models["sd"], "cpu", **options)
    studio.store.create_profile("alice")
    shas = [r.sha256 for r in studio.generate_candidates(PROMPT, seeds=[1, 2, 3, 4])]
    for sha, kind in zip(shas, ("like", "like", "dislike", "dislike")):
        studio.judge("alice", kind, sha)
    return studio, studio.fit("alice")


def component(demo, elem_id):
    return next((c for c in demo.config["components"] if c["props"].get("elem_id") == elem_id), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the app ---------------------------------------------------------------------------------


def test_the_app_offers_and_uses_the_clip_and_aesthetic_sliders(models, tmp_path):
    studio, _ = fitted_studio(tmp_path / "data", models, reward_folders=folders(models))
    assert list(studio.default_weights()) == ["user", "prompt_consistency", "clip", "aesthetic"]
    demo = build_app(studio)
    assert component(demo, "ps-weight-clip")["props"]["label"] == "CLIP text alignment"
    assert component(demo, "ps-weight-aesthetic")["props"]["label"] == "LAION aesthetic"
    assert component(demo, "ps-weight-pickscore") is None
    states = component(demo, "ps-reward-states")["props"]["value"]
    assert f"reads {models['clip']}" in states and "estimate" in states
    assert ("Rewards: CLIP text alignment, LAION aesthetic on the sliders; missing: PickScore"
            in component(demo, "ps-models")["props"]["value"])
    # PickScore is not here: the page says what is missing, its size and the command that gets it.
    assert "PickScore**: missing" in states and "about 3.9 GB" in states
    assert "`hf download yuvalkirstain/PickScore_v1`" in states and "--reward pickscore=PATH" in states

    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        c.predict("alice", api_name="/open_profile")
        *_, base_scores, pers_scores, _, _ = c.predict(
            "alice", PROMPT, "Fixed seed", 9, 0.5, 2, 0.0, 0.5, 1.0, 0.0,
            api_name="/personalize")  # user 0, prompt consistency 0.5, clip 1, aesthetic 0
    finally:
        demo.close()
    made = studio.store.personalized_images("alice", 1)[0].params
    assert made["weights"] == {"user": 0.0, "prompt_consistency": 0.5, "clip": 1.0, "aesthetic": 0.0}
    assert set(made["scores"]["personalized"]) == {"user", "prompt_consistency", "clip", "aesthetic"}
    # The clip slider steered the run: its weighted score is the objective, and guidance raised it.
    trace = made["trace"]
    assert trace[0][1] == pytest.approx(trace[0][2]["clip"], abs=1e-3)
    assert max(total for _, total, _ in trace[1:]) > trace[0][1]
    assert "CLIP text alignment" in pers_scores and "LAION aesthetic" in base_scores


def test_without_the_folders_the_page_names_what_is_missing_and_how_to_get_it(models, tmp_path):
    studio, _ = fitted_studio(tmp_path / "data", models)
    assert list(studio.default_weights()) == ["user", "prompt_consistency"]
    demo = build_app(studio)
    assert component(demo, "ps-weight-clip") is None and component(demo, "ps-weight-aesthetic") is None
    states = component(demo, "ps-reward-states")["props"]["value"]
    for name in ("CLIP text alignment**: missing", "LAION aesthetic**: missing", "PickScore**: missing"):
        assert name in states
    assert "openai/clip-vit-large-patch14 (about 1.7 GB)" in states
    assert "`hf download openai/clip-vit-large-patch14`" in states and "--allow-downloads" in states
    head = tmp_path / "data" / "models" / "aesthetic_head.safetensors"
    assert f"`python -m prefstudio.tools.convert_aesthetic_head sac+logos+ava1-l14-linearMSE.pth {head}`" in states
    # A weight on a missing reward says the same, and nothing is generated.
    with pytest.raises(ModelUnavailable, match="hf download openai/clip-vit-large-patch14"):
        studio.personalize_once("alice", PROMPT, seed=3, weights={"user": 1.0, "clip": 0.5}, iterations=1)
    assert studio.store.personalized_images("alice", 1) == []


def test_clip_weights_in_the_local_cache_are_found_without_a_folder(models, tmp_path, empty_cache):
    snapshot = empty_cache / "models--openai--clip-vit-large-patch14" / "snapshots" / ("0" * 40)
    shutil.copytree(models["clip"], snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    try:
        studio = build_studio(tmp_path / "data", models["sd"], "cpu")
    finally:  # a checkpoint loads once per process: the next tests' caches do not hold it
        load_clip.cache_clear()
    assert studio.reward_states["clip"].ready and studio.reward_states["clip"].source == "openai/clip-vit-large-patch14"
    assert "clip" in studio.default_weights() and not studio.reward_states["aesthetic"].ready


def test_each_reward_is_found_on_its_own(models, tmp_path):
    """PickScore from a folder, without CLIP: each catalogued reward stands alone."""
    from prefstudio.rewards.catalog import discover_rewards

    found = discover_rewards(tmp_path, {"pickscore": models["clip"]}, "cpu")
    assert list(found.rewards) == ["pickscore"] and found.clip is None
    assert found.states["pickscore"].source == models["clip"] and not found.states["clip"].ready
    # Without CLIP the aesthetic head is named first (it is the part not on the Hub), and CLIP with it.
    assert "convert_aesthetic_head" in found.states["aesthetic"].detail
    assert "CLIP must be here too" in found.states["aesthetic"].detail
    reward = found.rewards["pickscore"]
    score = reward.score(torch.rand(1, 3, 64, 64), reward.prepare(PROMPT))
    assert score.shape == (1,) and torch.isfinite(score).all()


def test_prompt_consistency_on_a_real_generator_is_clip_text_alignment_as_a_guard(models, tmp_path):
    studio = build_studio(tmp_path / "data", models["sd"], "cpu", reward_folders=folders(models))
    consistency, clip = studio.base_rewards["prompt_consistency"], studio.base_rewards["clip"]
    assert consistency.guard and not clip.guard
    pixels = torch.rand(2, 3, 64, 64)
    context = consistency.prepare(PROMPT)
    torch.testing.assert_close(consistency.score(pixels, context), clip.score(pixels, clip.prepare(PROMPT)))
    # Text alignment: the image of one prompt scores its own prompt above an unrelated one.
    expected = (clip.clip.encode(pixels) * clip.clip.prompt_features(PROMPT).features).sum(-1)
    torch.testing.assert_close(consistency.score(pixels, context), expected)


# -- the CLI ---------------------------------------------------------------------------------


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_the_cli_uses_the_clip_and_aesthetic_weights(models, tmp_path, capsys):
    data = tmp_path / "data"
    fitted_studio(data, models, reward_folders=folders(models))[0].store.close()
    flags = ["--data", str(data), "--model", models["sd"], "--device", "cpu",
             "--reward", f"clip={models['clip']}", "--reward", f"aesthetic={models['head']}"]
    code, result, err = run_cli(capsys, *flags, "rewards")
    assert code == 0, err
    assert list(result["rewards"]) == ["user", "prompt_consistency", "clip", "aesthetic"]
    assert result["rewards"]["clip"]["reads"] == models["clip"] and result["rewards"]["prompt_consistency"]["guard"]
    assert "hf download yuvalkirstain/PickScore_v1" in result["missing"]["pickscore"]
    code, result, err = run_cli(capsys, *flags, "personalize", "alice", PROMPT, "--seed", "4", "--iterations", "2",
                                "--weight", "clip=0.5", "--weight", "aesthetic=0.75", "--out", str(tmp_path / "out"))
    assert code == 0, err
    # Named weights join the defaults.
    assert result["weights"] == {"user": 0.75, "prompt_consistency": 0.5, "clip": 0.5, "aesthetic": 0.75}
    assert {"clip", "aesthetic"} <= set(result["personalized"]["scores"])

    code, _, err = run_cli(capsys, "--data", str(data), "--model", models["sd"], "--device", "cpu",
                           "personalize", "alice", PROMPT, "--weight", "clip=0.5")
    assert code == 2 and "the clip reward is not available here" in err and "hf download" in err


@pytest.mark.parametrize("flag, message", [
    ("clip", "--reward takes NAME=FOLDER"),
    ("hps=/tmp", "no such reward; folders can be given for clip, aesthetic, pickscore"),
    ("clip=/no/such/folder", "does not exist"),
])
def test_bad_reward_flags_are_refused_with_one_line(flag, message, tmp_path, capsys, models):
    code, _, err = run_cli(capsys, "--data", str(tmp_path / "d"), "--model", models["sd"], "--device", "cpu",
                           "--reward", flag, "calibrate")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_named_folder_that_does_not_load_is_an_error_not_a_missing_reward(models, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        build_studio(tmp_path / "data", models["sd"], "cpu", reward_folders={"clip": str(tmp_path / "empty")})
    with pytest.raises(NotFound, match="no aesthetic head"):
        build_studio(tmp_path / "data", models["sd"], "cpu",
                     reward_folders={"clip": models["clip"], "aesthetic": str(tmp_path / "empty")})
    with pytest.raises(InvalidInput, match="serve a real generator"):
        build_studio(tmp_path / "data", "embedded", reward_folders={"aesthetic": models["head"]})


# -- calibration -----------------------------------------------------------------------------


def test_calibrate_measures_and_the_studio_uses_the_constants(models, tmp_path, capsys):
    data = tmp_path / "data"
    flags = ["--data", str(data), "--model", models["sd"], "--device", "cpu",
             "--reward", f"clip={models['clip']}", "--reward", f"aesthetic={models['head']}"]
    code, result, err = run_cli(capsys, *flags, "calibrate", "--prompts", "3", "--seeds", "2")
    assert code == 0, err
    assert set(result["calibrated"]) == {"clip", "aesthetic"} and "pickscore" in result["not_calibrated"]
    entries = {e.reward: e for e in read_calibrations(data / CALIBRATION_FILE)}
    assert entries["clip"].images == 6 and entries["clip"].generator == "tiny-sd"

    studio = build_studio(data, models["sd"], "cpu", reward_folders=folders(models))
    # The constants are what the generator's own unguided images score.
    from prefstudio.generators.base import to_pil
    from prefstudio.encoders.base import pil_to_tensor
    from prefstudio.taste_summary import read_prompts

    clip = studio.base_rewards["clip"]
    scores = []
    for prompt in read_prompts()[:3]:
        pixels = pil_to_tensor(to_pil(studio.generator.render(
            torch.cat([studio.generator.initial_noise(s) for s in (20_000, 20_001)]),
            studio.generator.encode_prompt(prompt))))
        scores.append(clip.score(pixels, clip.prepare(prompt)))
    scores = torch.cat(scores)
    assert clip.offset == pytest.approx(float(scores.mean()), abs=1e-5)
    assert clip.scale == pytest.approx(float(scores.std()), rel=1e-4)
    assert studio.reward_states["clip"].normalisation.startswith("measured on 6 unguided images of tiny-sd")
    # Prompt consistency reads the same calibration; another generator or weights keeps the estimate.
    assert studio.base_rewards["prompt_consistency"].normalise(torch.tensor([clip.offset])).item() == pytest.approx(0)
    other = build_studio(tmp_path / "other", models["sd"], "cpu", reward_folders=folders(models))
    assert other.base_rewards["clip"].offset == 0.30 and "estimate" in other.reward_states["clip"].normalisation


def test_calibrate_needs_a_real_generator(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--data", str(tmp_path / "d"), "--model", "embedded", "calibrate")
    assert code == 2 and "calibrate measures the rewards a real generator offers" in err
    assert not (tmp_path / "d" / CALIBRATION_FILE).exists()


def good_entry(**change):
    entry = {"generator": "tiny-sd", "resolution": 64, "reward": "clip", "weights": "/m/clip", "offset": 0.1,
             "spread": 0.02, "images": 6, "prompts": 3, "seeds": 2, "measured_at": 1.0, "command": "calibrate"}
    return entry | change


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not JSON"),
    (json.dumps({"format": "other", "version": 1, "entries": []}), "is not a prefstudio-reward-calibration"),
    (json.dumps({"format": "prefstudio-reward-calibration", "version": 1, "entries": [good_entry(spread=-1)]}),
     "spread must be positive"),
    ('{"format": "prefstudio-reward-calibration", "version": 1, "entries": [%s]}'
     % json.dumps(good_entry()).replace('"offset": 0.1', '"offset": NaN'), "offset must be a finite number"),
    (json.dumps({"format": "prefstudio-reward-calibration", "version": 1, "entries": [good_entry(images=True)]}),
     "images must be a whole number"),
    (json.dumps({"format": "prefstudio-reward-calibration", "version": 1, "entries": [good_entry(extra=1)]}),
     "exactly the fields"),
    (json.dumps({"format": "prefstudio-reward-calibration", "version": 1, "entries": [good_entry(images=2)]}),
     "no measurement"),
    (json.dumps({"format": "prefstudio-reward-calibration", "version": 1, "entries": [good_entry()] * 2}),
     "twice"),
    ("[" * 100 + "0" + "]" * 100 + " " * (1 << 20), "at most"),
])
def test_calibration_files_are_checked(content, message, tmp_path):
    path = tmp_path / CALIBRATION_FILE
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        read_calibrations(path)


def test_a_broken_calibration_file_stops_the_studio_with_its_reason(models, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    text = json.dumps({"format": "prefstudio-reward-calibration", "version": 1,
                       "entries": [good_entry(spread=math.inf)]})
    (data / CALIBRATION_FILE).write_text(text.replace("Infinity", "1e999"))  # what JSON can say of infinity
    with pytest.raises(InvalidInput, match="spread must be a finite number"):
        build_studio(data, models["sd"], "cpu", reward_folders=folders(models))


# -- taste in CLIP space ---------------------------------------------------------------------


def test_clip_features_for_the_taste_model_cold_start_from_a_bank_built_from_a_folder(models, tmp_path, capsys):
    data = tmp_path / "data"
    studio, report = fitted_studio(data, models, reward_folders={"clip": models["clip"]}, image_encoder="clip")
    assert studio.encoder is studio.base_rewards["clip"].clip and studio.encoder.name.startswith("clip:")
    assert studio.bank is None and report.mode == "free"
    assert "no user bank reads clip:" in report.reason and "python -m prefstudio bank --images FOLDER" in report.reason
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for record in studio.generate_candidates("a bowl of fruit", seeds=list(range(20, 30))):
        shutil.copy(record.path, pictures / f"{record.seed}.png")
    studio.store.close()

    flags = ["--data", str(data), "--model", models["sd"], "--device", "cpu",
             "--reward", f"clip={models['clip']}", "--image-encoder", "clip"]
    code, result, err = run_cli(capsys, *flags, "bank", "--images", str(pictures), "--users", "6",
                                "--pairs-per-user", "8")
    assert code == 0, err
    assert Path(result["wrote"]) == user_bank_path(data, studio.encoder.name) and result["users"] == 6
    code, result, err = run_cli(capsys, *flags, "fit", "alice")
    assert code == 0, err
    assert result["mode"] == "bank posterior" and "no user bank" not in result["why"]

    (pictures / "broken.png").write_bytes(b"not an image at all")
    code, _, err = run_cli(capsys, *flags, "bank", "--images", str(pictures))
    assert code == 2 and "broken.png" in err


def test_clip_features_with_the_embedded_generator(models, tmp_path):
    studio = build_studio(tmp_path / "data", "embedded", image_encoder="clip", reward_folders={"clip": models["clip"]})
    assert studio.encoder.name == f"clip:{models['clip']}" and studio.encoder.dim == 768
    assert list(studio.base_rewards) == ["prompt_consistency"] and studio.bank is None
    # The shipped token checkpoint reads embedded features: auto serves the user embedding alone.
    assert list(studio.preference.members) == ["user-embedding"]
    with pytest.raises(ModelUnavailable, match="openai/clip-vit-large-patch14"):
        build_studio(tmp_path / "data", "embedded", image_encoder="clip")


def test_a_bank_needs_enough_images(models, tmp_path, capsys):
    (tmp_path / "few").mkdir()
    code, _, err = run_cli(capsys, "--data", str(tmp_path / "d"), "--reward", f"clip={models['clip']}",
                           "--image-encoder", "clip", "bank", "--images", str(tmp_path / "few"))
    assert code == 2 and "needs at least 8" in err
