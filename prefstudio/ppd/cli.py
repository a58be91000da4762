"""`python -m prefstudio ppd …`: VLM profiles, adapter generation and VLM-judged win rates.

    python -m prefstudio ppd profile alice --vlm llava-hf/llava-onevision-qwen2-7b-ov-hf
    python -m prefstudio ppd generate alice "a fox in the snow" --adapter runs/ppd/final --seed 7 --out out/
    python -m prefstudio ppd generate - "a fox" --adapter runs/synthetic/final --mix clip=0.5,aesthetic=0.5
    python -m prefstudio ppd winrate alice --adapter runs/ppd/final --prompts prompts.txt --judge <vlm>
"""
import argparse
from pathlib import Path

from prefstudio.errors import InvalidInput, NotFound, echo

SYNTHETIC_PREFIX = "synthetic:"


def add_ppd_parser(sub) -> None:
    ppd = sub.add_parser("ppd", help="PPD: VLM profile, user-conditioned adapter, VLM-judged win rates (see docs/ppd.md)")
    commands = ppd.add_subparsers(dest="ppd_command", required=True)

    def vlm_flags(p, flag="--vlm"):
        p.add_argument(flag, default=None, help="VLM hub id or folder (default llava-hf/llava-onevision-qwen2-7b-ov-hf; "
                                                "HuggingFaceTB/SmolVLM-Instruct is smaller)")
        p.add_argument("--vlm-image-size", type=int, default=384)
        p.add_argument("--vlm-max-new-tokens", type=int, default=768)
        p.add_argument("--vlm-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])

    p = commands.add_parser("profile", help="a VLM reads 4 of the profile's pairs, writes its profile and user embedding")
    p.add_argument("profile")
    p.add_argument("--seed", type=int, default=0)
    vlm_flags(p)

    def generation_flags(p):
        p.add_argument("--adapter", type=Path, required=True, help="a trained adapter folder (adapter.json + adapter.safetensors)")
        p.add_argument("--scale", type=float, default=1.0, help="adapter scale (0 = the baseline exactly; default 1)")
        p.add_argument("--mix", help="for an adapter trained on synthetic users: weights like clip=0.5,aesthetic=0.5")
        p.add_argument("--user-source", default="vlm", choices=["vlm", "bank-posterior", "fitted"],
                       help="the profile's embedding: its stored VLM profile (default), or, for an adapter trained "
                            "on `embed-users --source bank-posterior|fitted`, the same vector from its judged pairs")
        p.add_argument("--user-embedding", type=Path, help="a user-embedding file (ppd embed-users) and --user ID")
        p.add_argument("--user", help="the user id in --user-embedding")

    p = commands.add_parser("generate", help="baseline and adapter image from the same seed")
    p.add_argument("profile", help="the profile whose VLM embedding conditions the adapter ('-' with --mix or --user-embedding)")
    p.add_argument("prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out"))
    generation_flags(p)

    p = commands.add_parser("winrate", help="VLM-as-judge win rate of the adapter over the baseline (both orders)")
    p.add_argument("profile", help="the profile whose history the judge reads (and whose VLM embedding is used)")
    p.add_argument("--prompts", type=Path, required=True, help="a text file, one prompt a line")
    p.add_argument("--seeds", type=int, default=1, help="seeds per prompt (default 1)")
    generation_flags(p)
    vlm_flags(p, "--judge")


def _vlm_settings(model, args):
    from prefstudio.ppd.vlm_profile import DEFAULT_VLM, VLMSettings

    return VLMSettings(model=model or DEFAULT_VLM, image_size=args.vlm_image_size,
                       max_new_tokens=args.vlm_max_new_tokens, dtype=args.vlm_dtype)


def _user_embedding(args, store, adapter_config):
    """The adapter's input for this command: a mix of synthetic users, a row of an embedding
    file, or the profile's stored VLM embedding."""
    from prefstudio.ppd.data import mix_users, read_user_embeddings
    from prefstudio.ppd.user_vectors import SYNTHETIC, profile_vector

    if args.mix:
        if not adapter_config.user_embedding.startswith(SYNTHETIC):
            raise InvalidInput("--mix needs an adapter trained on synthetic users (ppd train --users synthetic:…)")
        names = adapter_config.user_embedding.removeprefix(SYNTHETIC).split(", ")
        weights = {}
        for item in args.mix.split(","):
            name, sep, value = item.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise InvalidInput(f"--mix takes NAME=WEIGHT pairs, got {echo(item)}") from None
            if not sep:
                raise InvalidInput(f"--mix takes NAME=WEIGHT pairs, got {echo(item)}")
        return mix_users(weights, names), f"mix {args.mix}"
    if args.user_embedding:
        if not args.user:
            raise InvalidInput("--user-embedding needs --user ID")
        embeddings, _ = read_user_embeddings(args.user_embedding)
        if args.user not in embeddings:
            raise NotFound(f"no user {echo(args.user)} in {args.user_embedding}")
        return embeddings[args.user], f"user {args.user}"
    if args.profile == "-":
        raise InvalidInput("give a profile with a VLM profile, or --mix, or --user-embedding")
    name = store.get_profile(args.profile).name
    label = "VLM profile" if args.user_source == "vlm" else args.user_source
    return profile_vector(store, name, args.user_source), f"{label} of {args.profile}"


def _adapted_generator(args):
    from prefstudio.generators.diffusers_onestep import load_diffusers_generator
    from prefstudio.ppd.adapter import read_config
    from prefstudio.ppd.generate import AdaptedGenerator

    config = read_config(args.adapter)  # a wrong folder fails before the base model loads
    model = args.model if args.model not in ("auto", "embedded") else (config.base_model or "sd-turbo")
    return AdaptedGenerator(load_diffusers_generator(model, device=args.device), args.adapter), config


def run_ppd(args: argparse.Namespace) -> dict:
    from prefstudio.store.history import HistoryStore

    with HistoryStore(args.data) as store:
        if args.ppd_command == "profile":
            from prefstudio.ppd.profile_store import write_vlm_profile
            from prefstudio.ppd.vlm_profile import load_vlm_user_encoder
            from prefstudio.devices import pick_device

            name = store.get_profile(args.profile).name
            encoder = load_vlm_user_encoder(_vlm_settings(args.vlm, args), pick_device(args.device))
            stored = write_vlm_profile(store, name, encoder, seed=args.seed)
            return {"profile": name, "vlm": stored.vlm, "text": stored.text,
                    "embedding_size": int(stored.embedding.shape[0]), "pairs": stored.pairs}
        if args.ppd_command == "generate":
            return _generate(args, store)
        return _winrate(args, store)


def _generate(args, store) -> dict:
    from prefstudio.provenance import write_png_with_provenance
    from prefstudio.validation import validate_output_folder, validate_prompt

    prompt = validate_prompt(args.prompt)
    validate_output_folder(args.out)
    adapted, config = _adapted_generator(args)
    user, source = _user_embedding(args, store, config)
    pair = adapted.pair(prompt, user, args.seed, args.scale)
    args.out.mkdir(exist_ok=True)
    files = {}
    for side in ("baseline", "personalized"):
        pixels = getattr(pair, side)
        image = _to_image(pixels)
        info = {"prompt": prompt, "seed": args.seed, "generator": adapted.generator.name, "role": side,
                "ppd": {"adapter": str(args.adapter), "scale": 0.0 if side == "baseline" else args.scale,
                        "user": source}}
        files[side] = str(write_png_with_provenance(image, args.out / f"seed{args.seed}-ppd-{side}.png", info))
    return {"seed": args.seed, "scale": args.scale, "user": source, "files": files}


def _to_image(pixels):
    from PIL import Image

    return Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def _winrate(args, store) -> dict:
    from prefstudio.devices import pick_device
    from prefstudio.ppd.judge import WinRate, judge_pair
    from prefstudio.ppd.profile_store import history_pairs
    from prefstudio.ppd.vlm_profile import JudgedPair, load_vlm_user_encoder
    from prefstudio.validation import validate_prompt

    name = store.get_profile(args.profile).name
    if not args.prompts.is_file():
        raise NotFound(f"no prompt file at {args.prompts}")
    prompts = [validate_prompt(line) for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts or not 1 <= args.seeds <= 100:
        raise InvalidInput("winrate needs at least one prompt and 1-100 seeds per prompt")
    history = [JudgedPair(store.image_record(liked).prompt, store.load_image(liked), store.load_image(disliked))
               for liked, disliked in history_pairs(store, name)]
    adapted, config = _adapted_generator(args)
    user, source = _user_embedding(args, store, config)
    judge = load_vlm_user_encoder(_vlm_settings(args.judge, args), pick_device(args.device))
    tally = WinRate()
    for i, prompt in enumerate(prompts):
        for seed in range(args.seeds):
            pair = adapted.pair(prompt, user, seed, args.scale)
            tally.add(judge_pair(judge, history, prompt, _to_image(pair.personalized), _to_image(pair.baseline),
                                 seed=2 * (i * args.seeds + seed)))
    return {"profile": name, "user": source, "judge": judge.settings.model, "scale": args.scale, **tally.as_dict()}
