"""Train a PPD user adapter with Diffusion-DPO (002 eq. 6), and make the users' VLM embeddings.

    # 1. per-user VLM embeddings from each training user's first 4 pairs (002 §4.2)
    python -m prefstudio_research.train.ppd embed-users --data data/pickapic --out runs/users.safetensors
    # 2. DPO on the remaining pairs, one GPU or several
    accelerate launch -m prefstudio_research.train.ppd train --model sd-turbo --data data/pickapic \
        --users embeddings:runs/users.safetensors --out runs/ppd
    # or the synthetic users of 002 §5.1
    accelerate launch -m prefstudio_research.train.ppd train --model sd-turbo --data data/pickapic \
        --users synthetic:clip,aesthetic,pickscore --aesthetic-head <file> --out runs/synthetic

Step by step, with what each flag means: docs/ppd.md.
"""
import argparse
import dataclasses
import json
import sys

from prefstudio.errors import InvalidInput, PrefStudioError


def _train_parser(sub):
    from prefstudio.ppd.training import TrainConfig

    p = sub.add_parser("train", help="Diffusion-DPO of the user adapter (base model frozen)")
    helps = {"model": "base model: sd-turbo, sdxl-turbo, a hub id or a diffusers folder",
             "data": "pair data set root (images.jsonl, pairs/train.jsonl, pairs/users.json)",
             "out": "output folder (log.jsonl, checkpoints, final/)",
             "users": "embeddings:<file> (from embed-users) or synthetic:clip,aesthetic,pickscore"}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.default is dataclasses.MISSING:
            p.add_argument(flag, required=True, dest=f.name, help=helps.get(f.name))
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, dest=f.name,
                           help=f"default {f.default!r}")


def _embed_parser(sub):
    p = sub.add_parser("embed-users", help="VLM profile and embedding of every training user (first N pairs)")
    p.add_argument("--data", required=True, help="pair data set root")
    p.add_argument("--out", required=True, help="user-embedding file to write (.safetensors)")
    p.add_argument("--source", default="vlm", choices=["vlm", "bank-posterior", "fitted"],
                   help="vlm: the VLM's last hidden state (002 §4.2); bank-posterior: weights over the user "
                        "bank's people; fitted: the user's fitted linear taste over image features (default vlm)")
    p.add_argument("--bank", default=None, help="user bank for bank-posterior/fitted (default: the shipped one)")
    p.add_argument("--vlm", default=None, help="VLM hub id or folder (default LLaVA-OneVision 7B)")
    p.add_argument("--history", type=int, default=4)
    p.add_argument("--image-size", type=int, default=384)
    p.add_argument("--max-new-tokens", type=int, default=768)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--device", default=None)
    p.add_argument("--max-users", type=int, default=0, help="0: every user")
    p.add_argument("--seed", type=int, default=0)


def embed_users(args) -> dict:
    from prefstudio.devices import pick_device
    from prefstudio.ppd.data import histories_and_pairs, write_user_embeddings
    from prefstudio.ppd.vlm_profile import DEFAULT_VLM, JudgedPair, VLMSettings, load_vlm_user_encoder
    from prefstudio.preference.pair_data import PairDataSet
    from prefstudio.store.image_files import load_untrusted_image

    data = PairDataSet.read(args.data, splits=())
    histories, _, report = histories_and_pairs(data.train, args.history)
    users = list(histories)[: args.max_users or None]
    if args.source != "vlm":
        return _embed_from_bank(args, histories, users, report)
    settings = VLMSettings(model=args.vlm or DEFAULT_VLM, image_size=args.image_size,
                           max_new_tokens=args.max_new_tokens, dtype=args.dtype)
    encoder = load_vlm_user_encoder(settings, pick_device(args.device))
    embeddings, profiles = {}, {}
    for user in users:
        history = [JudgedPair(j.prompt, load_untrusted_image(j.liked), load_untrusted_image(j.disliked))
                   for j in histories[user]]
        written = encoder.profile(history, seed=args.seed)
        embeddings[user], profiles[user] = written.embedding, written.text
    path = write_user_embeddings(args.out, embeddings, f"vlm:{settings.model}", profiles)
    return {"users": len(embeddings), "dim": encoder.hidden_size, "out": str(path), "data": report.as_dict()}


def _embed_from_bank(args, histories, users, report) -> dict:
    from prefstudio.encoders.embedded import EmbeddedImageEncoder
    from prefstudio.ppd.data import write_user_embeddings
    from prefstudio.ppd.user_vectors import bank_posterior, fitted_vector
    from prefstudio.preference.user_embedding import UserBank
    from prefstudio.store.image_files import load_untrusted_image
    from prefstudio.studio import DEFAULT_BANK

    if not users:
        raise InvalidInput(f"no user of {args.data} has more than {args.history} judgments")
    bank = UserBank.load(args.bank or DEFAULT_BANK)
    encoder = EmbeddedImageEncoder()
    if encoder.name != bank.encoder:
        raise InvalidInput(f"the bank reads {bank.encoder} features; this command encodes with {encoder.name}")
    embeddings = {}
    for user in users:
        liked = encoder.encode_images([load_untrusted_image(j.liked) for j in histories[user]]).float()
        disliked = encoder.encode_images([load_untrusted_image(j.disliked) for j in histories[user]]).float()
        embeddings[user] = (bank_posterior(bank, liked, disliked) if args.source == "bank-posterior"
                            else fitted_vector(bank, encoder.name, liked, disliked))
    path = write_user_embeddings(args.out, embeddings, f"{args.source}:{bank.source or bank.encoder}")
    return {"users": len(embeddings), "dim": int(next(iter(embeddings.values())).shape[0]), "out": str(path),
            "data": report.as_dict()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefstudio_research.train.ppd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _embed_parser(sub)
    args = parser.parse_args(argv)
    from prefstudio import privacy

    privacy.apply_defaults(allow_downloads=False)
    try:
        if args.command == "train":
            from prefstudio.ppd.training import TrainConfig, train

            fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
            result = train(TrainConfig(**fields))
        else:
            result = embed_users(args)
    except PrefStudioError as error:
        print(f"error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
