"""The PPD adapter in the studio (issue 18): the "PPD adapter" method with its adapter-scale
slider in the Generate tab, `personalize --method ppd --adapter-scale` in the CLI, with a tiny
SD pipeline and a tiny adapter of the real classes, offline on the CPU."""
import json
import numpy as np
import socket

import pytest
import torch
from gradio_client import Client
from PIL import Image

from prefstudio import cli
from prefstudio.errors import InvalidInput, ModelUnavailable, NotFound
from prefstudio.generators.diffusers_onestep import load_diffusers_generator
from prefstudio.ppd.adapter import AdapterConfig, UserAdapter
from prefstudio.preference.user_embedding import UserBank
from prefstudio.studio import DEFAULT_BANK, build_studio
from prefstudio.tools.make_tiny_pipeline import write_tiny_pipeline
from prefstudio.ui.app import build_app, launch

PROMPT = "a lighthouse on a cliff at dusk"


def _adapter(folder, model, user_dim, user_embedding):
    """A tiny adapter with random (non-zero) weights, so that its scale shows in the image."""
    generator = load_diffusers_generator(str(model), device="cpu", dtype="float32")
    torch.manual_seed(0)
    adapter = UserAdapter(generator.denoiser, AdapterConfig(user_dim=user_dim, base_model=str(model),
                                                            user_embedding=user_embedding))
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    return str(adapter.save(folder))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppd-models")
    model = write_tiny_pipeline(root / "tiny-sd", "sd")
    bank_users = UserBank.load(DEFAULT_BANK).n_users
    return {"sd": str(model),
            "bank": _adapter(root / "bank", model, bank_users, "embeddings from bank-posterior:shipped bank"),
            "vlm": _adapter(root / "vlm", model, 64, "embeddings from vlm:tiny-idefics3"),
            "synthetic": _adapter(root / "synthetic", model, 2, "synthetic one-hot: clip, aesthetic")}


def fitted_studio(data, models, adapter="bank"):
    studio = build_studio(data, models["sd"], "cpu", ppd_adapter=models[adapter])
    studio.store.create_profile("alice")
    shas = [r.sha256 for r in studio.generate_candidates(PROMPT, seeds=[1, 2, 3, 4])]
    for sha, kind in zip(shas, ("like", "like", "dislike", "dislike")):
        studio.judge("alice", kind, sha)
    studio.fit("alice")
    return studio


def pixels(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy())


def component(demo, elem_id):
    return next((c for c in demo.config["components"] if c["props"].get("elem_id") == elem_id), None)


def test_ppd_method_scale_zero_is_the_baseline_and_the_base_unet_is_left_as_it_was(models, tmp_path):
    studio = fitted_studio(tmp_path / "data", models)
    candidate_before = studio.generator.generate(PROMPT, [11])[0].image
    sides = {scale: studio.personalize_once("alice", PROMPT, seed=5, method="ppd", adapter_scale=scale)
             for scale in (0.0, 1.0)}
    for scale, side in sides.items():
        params = side.personalized.record.params
        assert params["method"] == "ppd" and params["adapter_scale"] == scale and params["iterations_run"] == 0
        assert "bank-posterior user embedding" in params["adapter"]
    base = pixels(studio.store.load_image(sides[0.0].baseline.record.sha256))
    same = [torch.equal(base, pixels(studio.store.load_image(s.personalized.record.sha256))) for s in sides.values()]
    assert same == [True, False]  # scale 0: the baseline bit for bit; scale 1: the adapter's image
    assert sides[0.0].baseline.record.sha256 == sides[1.0].baseline.record.sha256
    # The adapter is installed for its render only: candidates still come from the base UNet.
    assert torch.equal(pixels(candidate_before), pixels(studio.generator.generate(PROMPT, [11])[0].image))


def test_ppd_refusals_name_what_is_missing(models, tmp_path):
    studio = fitted_studio(tmp_path / "vlm-data", models, adapter="vlm")
    with pytest.raises(NotFound, match="alice has no VLM profile yet: run `python -m prefstudio ppd profile alice`"):
        studio.personalize_once("alice", PROMPT, seed=5, method="ppd")
    bank_studio = fitted_studio(tmp_path / "data", models)
    for scale in (-0.1, 2.5, "lots"):
        with pytest.raises(InvalidInput, match="adapter scale must"):
            bank_studio.personalize_once("alice", PROMPT, seed=5, method="ppd", adapter_scale=scale)
    with pytest.raises(InvalidInput, match="synthetic reward users"):
        build_studio(tmp_path / "s", models["sd"], "cpu", ppd_adapter=models["synthetic"])
    with pytest.raises(InvalidInput, match="has none: start with --model sd-turbo"):
        build_studio(tmp_path / "e", "embedded", ppd_adapter=models["bank"])
    with pytest.raises(NotFound, match="is not a PPD adapter"):
        build_studio(tmp_path / "n", models["sd"], "cpu", ppd_adapter=str(tmp_path))
    plain = build_studio(tmp_path / "p", "embedded")
    plain.store.create_profile("bob")
    with pytest.raises(ModelUnavailable, match="start the studio with --ppd-adapter FOLDER"):
        plain.ppd_embedding("bob")


def test_generate_tab_offers_the_ppd_method_and_its_adapter_scale_slider(models, tmp_path):
    studio = fitted_studio(tmp_path / "data", models)
    demo = build_app(studio)
    assert "PPD adapter" in [c[0] for c in component(demo, "ps-method")["props"]["choices"]]
    slider = component(demo, "ps-adapter-scale")["props"]
    assert slider["visible"] is not False and slider["minimum"] == 0 and slider["maximum"] == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        c.predict("alice", api_name="/open_profile")
        status = {}
        for scale in (0.0, 1.5):
            progress, *_ = c.predict(profile="alice", prompt=PROMPT, seed_mode="Fixed seed", seed=9, strength=0.5,
                                     iterations=0, weight_user=0.75, weight_prompt_consistency=0.5,
                                     method="PPD adapter", adapter_scale=scale, api_name="/personalize")
            status[scale] = progress
    finally:
        demo.close()
    made = {p.params["adapter_scale"]: p for p in studio.store.personalized_images("alice", 2)}
    assert set(made) == {0.0, 1.5} and {p.params["method"] for p in made.values()} == {"ppd"}
    assert "one pass of the PPD adapter" in status[1.5]
    baseline = pixels(studio.store.load_image(made[0.0].params["baseline"]))
    assert torch.equal(baseline, pixels(studio.store.load_image(made[0.0].sha256)))
    assert not torch.equal(baseline, pixels(studio.store.load_image(made[1.5].sha256)))


def test_without_an_adapter_the_page_has_no_ppd_method(tmp_path):
    demo = build_app(build_studio(tmp_path / "data", "embedded"))
    assert "PPD adapter" not in [c[0] for c in component(demo, "ps-method")["props"]["choices"]]
    assert component(demo, "ps-adapter-scale")["props"]["visible"] is False


def test_cli_personalize_with_the_ppd_method_and_adapter_scale(models, tmp_path, capsys):
    fitted_studio(tmp_path / "data", models).store.close()
    base = ["--data", str(tmp_path / "data"), "--model", models["sd"], "--device", "cpu",
            "--ppd-adapter", models["bank"], "personalize", "alice", PROMPT, "--seed", "3", "--method", "ppd",
            "--out", str(tmp_path / "out")]
    files = {}
    for scale in ("0", "1"):
        assert cli.main(base + ["--adapter-scale", scale, "--out", str(tmp_path / f"out{scale}")]) == 0  # last wins
        files[scale] = {k: Image.open(v) for k, v in json.loads(capsys.readouterr().out)["files"].items()
                        if k in ("baseline", "personalized")}
    same = [torch.equal(pixels(files["0"]["baseline"]), pixels(files[s]["personalized"])) for s in ("0", "1")]
    assert same == [True, False]
    assert cli.main(base + ["--adapter-scale", "3"]) == 2
    assert "adapter scale must lie in [0, 2], got 3.0" in capsys.readouterr().err
    assert cli.main(base[:6] + base[8:]) == 2  # no --ppd-adapter
    assert "start the studio with --ppd-adapter FOLDER" in capsys.readouterr().err
