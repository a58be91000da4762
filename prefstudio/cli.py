"""`python -m prefstudio …`: the personalization loop for scripts.

    python -m prefstudio profile create alice
    python -m prefstudio profile rename alice alice-home
    python -m prefstudio profile delete alice-home --yes  # its judgments and models; images stay
    python -m prefstudio generate "a fox in the snow" -n 8 --out out/
    python -m prefstudio judge alice like 3fa2c1          # an image id (or a unique prefix)
    python -m prefstudio import-pairs alice pairs.jsonl   # {"user_id","prompt","liked","disliked"} per line
    python -m prefstudio fit alice
    python -m prefstudio personalize alice "a fox in the snow" --seed 7 --out out/
    python -m prefstudio export alice alice.prefstudio
    python -m prefstudio import alice.prefstudio --name alice-laptop
    python -m prefstudio evaluate pairs.jsonl --n-ref 8
"""
import argparse
import json
import sys
from pathlib import Path

from prefstudio.errors import InvalidInput, NotFound, PrefStudioError


def _weights(items: list[str]) -> dict[str, float] | None:
    if not items:
        return None
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--weight takes NAME=VALUE (e.g. user=0.75), got {item!r}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise InvalidInput(f"--weight {item!r}: {value!r} is not a number") from None
    return weights


def _resolve_image(studio, ref: str) -> str:
    """A full image id, or a unique prefix of one (at least 6 hex characters)."""
    return studio.store.resolve_image_id(ref)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prefstudio", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="history folder (default: ./data)")
    parser.add_argument("--model", default="auto",
                        help="generator: 'embedded', a known name (sd-turbo, sdxl-turbo, flux-schnell), "
                             "a Hugging Face id or a local diffusers folder; 'auto' = sd-turbo on CUDA, "
                             "else embedded")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--preference-model", default="user-embedding",
                        help="preference model: 'user-embedding' (a fitted user embedding, cold-started from the shipped "
                             "user bank), 'preference-tokens' (the shipped lite preference-token model, which reads your "
                             "judged pairs) or a folder holding a lite preference-token checkpoint (default user-embedding)")
    parser.add_argument("--allow-downloads", action="store_true",
                        help="let Hugging Face models download (off by default: nothing leaves this machine)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="create, list, rename or delete profiles")
    p.add_argument("action", choices=["create", "list", "rename", "delete"])
    p.add_argument("name", nargs="?")
    p.add_argument("new_name", nargs="?", help="rename: the new name")
    p.add_argument("--yes", action="store_true", help="delete: confirm removing the profile's judgments and models")

    p = sub.add_parser("generate", help="generate candidate images and store them")
    p.add_argument("prompt")
    p.add_argument("-n", type=int, default=8, help="number of candidates (default 8)")
    p.add_argument("--seeds", type=int, nargs="+", help="explicit seeds (overrides -n)")
    p.add_argument("--out", type=Path, help="also copy the PNGs here")

    p = sub.add_parser("judge", help="record a judgment: like/dislike A, pair A B (A better), tie A B, skip A")
    p.add_argument("profile")
    p.add_argument("kind", choices=["like", "dislike", "pair", "tie", "skip"])
    p.add_argument("image_a")
    p.add_argument("image_b", nargs="?")

    p = sub.add_parser("import-pairs", help="import judgments from a pair data set (JSON Lines)")
    p.add_argument("profile")
    p.add_argument("file", type=Path)
    p.add_argument("--user", help="only this user_id's lines")

    p = sub.add_parser("fit", help="fit the profile's preference model")
    p.add_argument("profile")
    p.add_argument("--base-loss-only", action="store_true", help="L_base alone (ablation of L_CP)")

    p = sub.add_parser("personalize", help="baseline and personalized image from the same seed")
    p.add_argument("profile")
    p.add_argument("prompt")
    p.add_argument("--seed", type=int)
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE",
                   help="reward weight, repeatable (default user=0.75 and 0.25 for the others)")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--method", choices=["guidance", "best_of_n"], default="guidance")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the images (default ./out)")

    p = sub.add_parser("export", help="export a profile to one file")
    p.add_argument("profile")
    p.add_argument("file", type=Path)

    p = sub.add_parser("import", help="import a profile file")
    p.add_argument("file", type=Path)
    p.add_argument("--name", help="profile name to import as (default: the name in the file)")

    p = sub.add_parser("evaluate", help="pairwise accuracy of the user embedding on a pair data set")
    p.add_argument("file", type=Path)
    p.add_argument("--n-ref", type=int, default=8, help="history pairs per user (default 8, as in 000)")
    p.add_argument("--base-loss-only", action="store_true")
    return parser


def run(args: argparse.Namespace) -> dict:
    from prefstudio.studio import build_studio

    if args.command == "evaluate":
        from prefstudio.eval.pair_file import evaluate_pair_file
        return evaluate_pair_file(args.file, args.n_ref, build_studio(args.data, "embedded", None).encoder,
                                  contrastive=not args.base_loss_only)

    studio = build_studio(args.data, args.model, args.device, args.preference_model)
    store = studio.store
    if args.command == "profile":
        if args.new_name and args.action != "rename":
            raise InvalidInput(f"profile {args.action} takes one name; got {args.new_name!r} as well")
        if args.action == "create":
            if not args.name:
                raise InvalidInput("profile create needs a name")
            return {"created": store.create_profile(args.name).name}
        if args.action == "rename":
            if not (args.name and args.new_name):
                raise InvalidInput("profile rename needs the current name and the new one")
            return {"renamed": store.get_profile(args.name).name, "to": store.rename_profile(args.name, args.new_name).name}
        if args.action == "delete":
            if not args.name:
                raise InvalidInput("profile delete needs a name")
            if not args.yes:
                raise InvalidInput(f"deleting {args.name!r} removes its judgments and models for good: "
                                   "add --yes to confirm (export it first to keep a copy)")
            return {"deleted": store.delete_profile(args.name).name}
        return {"profiles": [p.name for p in store.list_profiles()]}
    if args.command == "generate":
        records = studio.generate_candidates(args.prompt, n=args.n, seeds=args.seeds)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for r in records:
                (args.out / f"{r.sha256[:12]}-seed{r.seed}.png").write_bytes(r.path.read_bytes())
        return {"images": [{"id": r.sha256, "seed": r.seed, "path": str(r.path)} for r in records]}
    if args.command == "judge":
        a = _resolve_image(studio, args.image_a)
        b = _resolve_image(studio, args.image_b) if args.image_b else None
        j = studio.judge(args.profile, args.kind, a, b)
        return {"judgment": j.id, "kind": j.kind, "image_a": j.image_a, "image_b": j.image_b}
    if args.command == "import-pairs":
        return {"imported": studio.import_pairs(args.profile, args.file, args.user)}
    if args.command == "fit":
        report = studio.fit(args.profile, contrastive=not args.base_loss_only)
        return {"summary": report.summary(), "mode": report.mode, "pairs": report.n_pairs,
                "loo_accuracy": report.loo_accuracy, "seconds": round(report.seconds, 3)}
    if args.command == "personalize":
        result = studio.personalize_once(args.profile, args.prompt, seed=args.seed,
                                         weights=_weights(args.weight), iterations=args.iterations,
                                         method=args.method)
        paths = save_side_by_side(result, args.out)
        return {"seed": result.seed, "weights": result.weights, "best_iteration": result.best_iteration,
                "baseline": {"id": result.baseline.record.sha256, "scores": result.baseline.normalised},
                "personalized": {"id": result.personalized.record.sha256,
                                 "scores": result.personalized.normalised},
                "files": {k: str(v) for k, v in paths.items()}}
    if args.command == "export":
        return {"exported": str(studio.export_profile(args.profile, args.file))}
    if args.command == "import":
        return {"imported": studio.import_profile(args.file, args.name).name}
    raise AssertionError(args.command)


def save_side_by_side(result, out: Path) -> dict[str, Path]:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    stem = f"seed{result.seed}"
    baseline = Image.open(result.baseline.record.path).convert("RGB")
    personalized = Image.open(result.personalized.record.path).convert("RGB")
    paths = {"baseline": out / f"{stem}-baseline.png", "personalized": out / f"{stem}-personalized.png",
             "side_by_side": out / f"{stem}-side-by-side.png"}
    baseline.save(paths["baseline"])
    personalized.save(paths["personalized"])
    sheet = Image.new("RGB", (baseline.width + personalized.width + 8, baseline.height), "white")
    sheet.paste(baseline, (0, 0))
    sheet.paste(personalized, (baseline.width + 8, 0))
    sheet.save(paths["side_by_side"])
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from prefstudio import privacy

    privacy.apply_defaults(allow_downloads=args.allow_downloads)
    import torch

    torch.set_num_threads(min(4, torch.get_num_threads()))
    try:
        print(json.dumps(run(args), indent=2, ensure_ascii=False))
        return 0
    except (PrefStudioError, InvalidInput, NotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
