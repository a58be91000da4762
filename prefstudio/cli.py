"""`python -m prefstudio …`: the personalization loop for scripts.

    python -m prefstudio profile create alice
    python -m prefstudio profile rename alice alice-home
    python -m prefstudio profile delete alice-home --yes  # its judgments and models; images stay
    python -m prefstudio generate "a fox in the snow" -n 8 --out out/
    python -m prefstudio judge alice like 3fa2c1 77b0e4   # image ids (or unique prefixes)
    python -m prefstudio profile show alice               # counts, fitted models, current judgments
    python -m prefstudio import-pairs alice pairs.jsonl   # {"user_id","prompt","liked","disliked"} per line
    python -m prefstudio fit alice
    python -m prefstudio suggest alice --prompt "a fox in the snow"   # which pair to judge next
    python -m prefstudio personalize alice "a fox in the snow" --seed 7 --out out/
    python -m prefstudio personalize alice "a fox" --weight user=0.5 --weight profile:bob=0.5   # blend bob's taste
    python -m prefstudio preset save alice mix --weight user=0.5 --weight profile:bob=0.5 --weight prompt_consistency=0.5
    python -m prefstudio personalize alice "a fox" --preset mix --weight profile:bob=0.8   # a preset, one weight changed
    python -m prefstudio grid alice "a fox" --axis user --axis profile:bob --seed 7 --out fox-grid.png
    python -m prefstudio export alice alice.prefstudio
    python -m prefstudio import alice.prefstudio --name alice-laptop
    python -m prefstudio evaluate pairs.jsonl --n-ref 8
    python -m prefstudio --model sd-turbo rewards                     # which rewards --weight can name here
    python -m prefstudio --model sd-turbo calibrate --prompts 24 --seeds 4   # measure the rewards' scales
    python -m prefstudio --model sd-turbo personalize alice "a fox" --weight clip=0.5 --weight aesthetic=0.5
    python -m prefstudio --model sd-turbo --reward clip=/models/clip-l14 --image-encoder clip bank --images ~/Pictures
    python -m prefstudio ppd profile alice                # PPD: VLM profile, adapter, win rates (docs/ppd.md)
"""
import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from prefstudio.errors import InvalidInput, PrefStudioError, disk_full, echo
from prefstudio.guidance.methods import CHAIN_ITERATIONS, DEFAULT_ITERATIONS, METHODS
from prefstudio.validation import (
    validate_device_name, validate_output_file, validate_output_folder, validate_prompt,
)


def validate_png_output(path: Path) -> Path:
    from prefstudio.store.image_files import written_by_prefstudio

    return validate_output_file(path, written_by_prefstudio, "an image PrefStudio wrote")


DEFAULT_DATA = "data"
DEFAULT_PREFERENCE_MODEL = "auto"

# Commands that read or write only the history store: they never import torch or the models,
# so they start in well under a second.
STORE_COMMANDS = ("profile", "judge", "remove-judgment", "export", "import", "preset")  # preset save checks with the studio


def _weights(items: list[str]) -> dict[str, float] | None:
    if not items:
        return None
    weights = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep:
            raise InvalidInput(f"--weight takes NAME=VALUE (e.g. user=0.75 or profile:bob=0.5), got {echo(item)}")
        name = name.strip()
        if name in weights:
            raise InvalidInput(f"--weight {echo(name)} is given twice")
        try:
            if "_" in value:  # float() reads 1_0 as 10: a typo, not a number anyone writes
                raise ValueError
            weights[name] = float(value)
        except ValueError:
            raise InvalidInput(f"--weight {echo(name)}: {echo(value)} is not a number") from None
    return weights


WEIGHT_HELP = ("reward weight, repeatable: user (this profile's taste), prompt_consistency (a guard: it only keeps "
               "the image from becoming less typical of the prompt than the baseline), profile:NAME (another fitted "
               "profile's taste, blended in), each in [0, 10]")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the models, shared by the CLI and app.py."""
    parser.add_argument("--model", default="auto",
                        help="generator: 'embedded', a known name (sd-turbo, sdxl-turbo, flux-schnell), a Hugging "
                             "Face id or a local diffusers folder; 'auto' = sd-turbo on CUDA if its weights are "
                             "here, else the embedded offline generator (default auto)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
    parser.add_argument("--preference-model", default=DEFAULT_PREFERENCE_MODEL,
                        help="preference model: 'auto' (the default: the user embedding and the preference-token "
                             "model combined for each person), 'user-embedding' (a fitted user embedding, cold-started "
                             "from the shipped user bank), 'preference-tokens' (the shipped lite preference-token model, "
                             "which reads your judged pairs) or a folder holding a lite preference-token checkpoint")
    parser.add_argument("--allow-downloads", action="store_true",
                        help="let Hugging Face models download (off by default: nothing leaves this machine)")
    parser.add_argument("--reward", action="append", default=[], metavar="NAME=FOLDER",
                        help="where a reward's weights are, repeatable: clip=FOLDER (a CLIP ViT-L/14 folder; also the "
                             "aesthetic head's features and --image-encoder clip), aesthetic=FILE (the converted LAION "
                             "head), pickscore=FOLDER. Without it, a real generator offers every reward whose weights "
                             "are in the local Hugging Face cache")
    parser.add_argument("--image-encoder", choices=["embedded", "clip"], default="embedded",
                        help="the image features your taste model reads: 'embedded' (built in, the default) or 'clip' "
                             "(CLIP ViT-L/14, when its weights are here; fit again after switching)")
    parser.add_argument("--ppd-adapter", metavar="FOLDER",
                        help="a trained PPD adapter (docs/ppd.md) for an SD/SDXL --model: adds the 'ppd' method and "
                             "its adapter-scale slider")


def _reward_folders(items: list[str]) -> dict[str, str]:
    folders = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise InvalidInput(f"--reward takes NAME=FOLDER (e.g. clip=/models/clip-vit-large-patch14), "
                               f"got {echo(item)}")
        if name.strip() in folders:
            raise InvalidInput(f"--reward {echo(name.strip())} is given twice")
        folders[name.strip()] = folder.strip()
    return folders


def studio_options(args: argparse.Namespace) -> dict:
    """build_studio's keyword arguments from the flags of `add_model_arguments` (CLI and app.py)."""
    return {"model": args.model, "device": args.device, "preference_model": args.preference_model,
            "reward_folders": _reward_folders(args.reward), "image_encoder": args.image_encoder,
            "ppd_adapter": args.ppd_adapter}


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments are one `error: …` line, as every other refusal; the usage is in --help.
    (Sub-commands' parsers are of the same class.)"""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        # A command's options may stand between its words (`suggest alice --top 2 ID ID`):
        # plain argparse gives a list of words (nargs="*") nothing once an option has come.
        # Intermixed parsing cannot hold sub-commands, and calls this method itself.
        if self._subparsers is not None or getattr(self, "_intermixing", False):
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="python -m prefstudio", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="history folder (default: ./data)")
    add_model_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="create, list, show (judgments), rename or delete profiles")
    p.add_argument("action", choices=["create", "list", "show", "rename", "delete"])
    p.add_argument("name", nargs="?")
    p.add_argument("new_name", nargs="?", help="rename: the new name")
    p.add_argument("--yes", action="store_true", help="delete: confirm removing the profile's judgments and models")

    p = sub.add_parser("generate", help="generate candidate images and store them")
    p.add_argument("prompt")
    p.add_argument("-n", type=int, default=8, help="number of candidates (default 8)")
    p.add_argument("--seeds", type=int, nargs="+", help="explicit seeds (overrides -n)")
    p.add_argument("--out", type=Path, help="also write the PNGs here, with their settings in them")

    p = sub.add_parser("judge", help="record judgments: like/dislike/skip ID…, pair A B (A better), tie A B")
    p.add_argument("profile")
    p.add_argument("kind", choices=["like", "dislike", "pair", "tie", "skip"],
                   help="like, dislike or skip each image; pair A B: A is the better of the two; tie A B: "
                        "neither is better")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image ids or unique prefixes of them")

    p = sub.add_parser("remove-judgment", help="take judgments back by their numbers (judge and profile show print "
                                                "them); a verdict a removed one replaced counts again")
    p.add_argument("profile")
    p.add_argument("ids", type=int, nargs="+", metavar="N", help="judgment numbers")

    p = sub.add_parser("import-pairs", help="import judgments from a pair data set (JSON Lines)")
    p.add_argument("profile")
    p.add_argument("file", type=Path, metavar="PAIRS_JSONL",
                   help="one judgment a line, images relative to the file (assets/sample_pairs/README.md)")
    p.add_argument("--user", help="whose judgments to import (their user_id): needed when the file holds several people's")

    p = sub.add_parser("fit", help="fit the profile's preference model (--preference-model) on its judgments")
    p.add_argument("profile")

    p = sub.add_parser("suggest", help="which pair of candidates to judge next (most informative first)")
    p.add_argument("profile")
    p.add_argument("ids", nargs="*", metavar="ID", help="stored candidate image ids (or unique prefixes)")
    p.add_argument("--prompt", help="instead of ids: generate new candidates for this prompt and suggest among them")
    p.add_argument("-n", type=int, default=8, help="candidates to generate with --prompt (default 8)")
    p.add_argument("--top", type=int, default=3, help="how many pairs to list (default 3)")

    p = sub.add_parser("personalize", help="baseline and personalized image from the same seed")
    p.add_argument("profile")
    p.add_argument("prompt")
    p.add_argument("--seed", type=int)
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE",
                   help=WEIGHT_HELP + "; rewards not named keep their defaults (user=0.75, prompt_consistency=0.5, "
                                      "0.25 on others such as clip, aesthetic, pickscore; 0 turns one off), or with "
                                      "--preset the preset's")
    p.add_argument("--preset", help="use this saved blend of the profile (see `preset`)")
    p.add_argument("--strength", type=float, default=0.5,
                   help="how far personalization may move away from the baseline, 0-1 (default 0.5)")
    p.add_argument("--iterations", type=int,
                   help=f"guidance iterations (default {DEFAULT_ITERATIONS}; {CHAIN_ITERATIONS} after instant; "
                        "instant itself runs none)")
    p.add_argument("--method", choices=METHODS, default="guidance",
                   help="guidance: optimise the seed's noise; best_of_n: the best of 8 seeds; instant: one pass of "
                        "the preference adapter; instant+guidance: instant, then a short guidance from its image; "
                        "ppd: one pass of the PPD adapter (--ppd-adapter)")
    p.add_argument("--adapter-scale", type=float,
                   help="ppd: the adapter's scale, 0-2 (0 = the baseline exactly; default 1)")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the images (default ./out)")

    sub.add_parser("rewards", help="the rewards --weight can name here, and how to get the missing ones")

    p = sub.add_parser("calibrate", help="measure each reward's offset and spread on this generator's images")
    p.add_argument("--prompts", type=int, default=24, help="prompts from assets/prompts.txt (default 24)")
    p.add_argument("--seeds", type=int, default=4, help="unguided images per prompt (default 4)")

    p = sub.add_parser("bank", help="build a cold-start user bank for --image-encoder from a folder of images")
    p.add_argument("--images", type=Path, required=True, help="a folder of images (8 to 1000; any pictures)")
    p.add_argument("--users", type=int, default=96, help="simulated users (default 96)")
    p.add_argument("--pairs-per-user", type=int, default=48, help="pairs each one judges (default 48)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("preset", help="save, list or delete a profile's named blends of reward weights")
    p.add_argument("action", choices=["save", "list", "delete"])
    p.add_argument("profile")
    p.add_argument("name", nargs="?", help="save, delete: the preset's name")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE",
                   help=WEIGHT_HELP + " (save: the whole blend)")

    p = sub.add_parser("grid", help="one labelled PNG: one seed across weight combinations of two or three rewards")
    p.add_argument("profile")
    p.add_argument("prompt")
    p.add_argument("--axis", action="append", default=[], metavar="NAME", required=True,
                   help="a reward to weigh against the others: user, prompt_consistency, profile:NAME or another "
                        "reward on offer; give two or three")
    p.add_argument("--steps", type=int, help="equal shares of the weight (default 4 for two rewards: 5 images; "
                                             "2 for three: 6 images)")
    p.add_argument("--total", type=float, default=1.0, help="the weight the rewards share (default 1)")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE",
                   help="weights of the other rewards (default: prompt_consistency=0.5, guarding)")
    p.add_argument("--preset", help="take the other rewards' weights from this preset")
    p.add_argument("--seed", type=int)
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("trade-off.png"), help="the PNG to write (default trade-off.png)")

    p = sub.add_parser("export", help="export a profile (judgments, images, fitted models, presets) to one file")
    p.add_argument("profile")
    p.add_argument("file", type=Path, metavar="FILE",
                   help="the file to write, e.g. alice.prefstudio; an existing file is replaced only if it is a "
                        "profile file")

    p = sub.add_parser("import", help="import a profile file (as a new profile; the file is checked first)")
    p.add_argument("file", type=Path, metavar="FILE", help="a .prefstudio file written by export")
    p.add_argument("--name", help="profile name to import as (default: the name in the file)")

    p = sub.add_parser("evaluate", help="pairwise accuracy of the studio's preference model on a pair data set")
    p.add_argument("file", type=Path, metavar="PAIRS_JSONL",
                   help="one judgment a line, images relative to the file (assets/sample_pairs/README.md)")
    p.add_argument("--n-ref", type=int, default=8, help="history pairs per user (default 8, as in 000)")

    from prefstudio.ppd.cli import add_ppd_parser
    add_ppd_parser(sub)
    _describe_commands(parser)
    return parser


def _describe_commands(parser: argparse.ArgumentParser) -> None:
    """Each command's `--help` opens with the line the command list shows for it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for listed in action._choices_actions:
                command = action.choices[listed.dest]
                command.description = command.description or listed.help
                _describe_commands(command)


# --- store-only commands (no torch) -------------------------------------------------------


def cmd_profile(args, store) -> dict:
    if args.new_name and args.action != "rename":
        raise InvalidInput(f"profile {args.action} takes one name; got {echo(args.new_name)} as well")
    if args.action == "create":
        if not args.name:
            raise InvalidInput("profile create needs a name")
        return {"created": store.create_profile(args.name).name}
    if args.action == "rename":
        if not (args.name and args.new_name):
            raise InvalidInput("profile rename needs the current name and the new one")
        old = store.get_profile(args.name).name
        return {"renamed": old, "to": store.rename_profile(args.name, args.new_name).name}
    if args.action == "delete":
        if not args.name:
            raise InvalidInput("profile delete needs a name")
        name = store.get_profile(args.name).name  # one that does not exist needs no confirming
        if not args.yes:
            raise InvalidInput(f"deleting {echo(name)} removes its judgments and models for good: "
                               "add --yes to confirm (export it first to keep a copy)")
        return {"deleted": store.delete_profile(args.name).name}
    if args.action == "show":
        if not args.name:
            raise InvalidInput("profile show needs a name")
        name = store.get_profile(args.name).name
        return {"profile": name, "counts": store.counts(name), "models": store.model_names(name),
                "judgments": [{"id": j.id, "kind": j.kind, "image_a": j.image_a, "image_b": j.image_b,
                               "created": j.created} for j in store.judgments(name)]}
    return {"profiles": [p.name for p in store.list_profiles()]}


def cmd_judge(args, store) -> dict:
    """One judgment per id (like, dislike, skip), or one of two ids (pair, tie). Every id is
    resolved and checked before anything is recorded, and they are recorded together."""
    ids = [store.resolve_image_id(ref) for ref in args.images]
    for ref, sha in zip(args.images, ids):
        if ids.count(sha) > 1:
            raise InvalidInput(f"image {echo(ref)} is given more than once")
    if args.kind in ("pair", "tie"):
        if len(ids) != 2:
            raise InvalidInput(f"a {args.kind} judgment compares exactly two images; got {len(ids)}")
        items = [(ids[0], ids[1])]
    else:
        items = [(sha, None) for sha in ids]
    recorded = store.record_judgments(store.get_profile(args.profile).name, args.kind, items)
    return {"judgments": [{"id": j.id, "kind": j.kind, "image_a": j.image_a, "image_b": j.image_b}
                          for j in recorded]}


def cmd_remove_judgment(args, store) -> dict:
    removed = store.remove_judgments(store.get_profile(args.profile).name, args.ids)
    return {"removed": [{"id": j.id, "kind": j.kind, "image_a": j.image_a, "image_b": j.image_b}
                        for j in removed]}


def cmd_preset(args, store) -> dict:
    """list and delete read the store only; save runs in the studio (cmd_preset_save)."""
    if args.action != "list" and not args.name:
        raise InvalidInput(f"preset {args.action} needs the preset's name")
    if args.weight and args.action != "save":
        raise InvalidInput(f"preset {args.action} takes no --weight")
    if args.action == "delete":
        return {"deleted": store.delete_preset(args.profile, args.name).name}
    if args.name:
        raise InvalidInput(f"preset list takes a profile only; got {echo(args.name)} as well")
    return {"presets": [{"name": p.name, "weights": p.weights} for p in store.presets(args.profile)]}


def cmd_export(args, store) -> dict:
    from prefstudio.store.profile_file import export_profile

    return {"exported": str(export_profile(store, args.profile, args.file))}


def same_history_command(args, *words: str) -> str:
    """A command to paste that works on the same history with the same model as this one."""
    given = {"--data": (str(args.data), DEFAULT_DATA),
             "--preference-model": (args.preference_model, DEFAULT_PREFERENCE_MODEL)}
    options = [part for flag, (value, default) in given.items() if value != default for part in (flag, value)]
    return shlex.join(["python", "-m", "prefstudio", *options, *words])


def cmd_import(args, store) -> dict:
    from prefstudio.store.profile_file import import_profile

    if args.name is not None and not args.name.strip():
        raise InvalidInput("--name is empty: leave it out to import under the file's name")
    from prefstudio.preference.state_schema import other_models_fits

    imported = import_profile(store, args.file, args.name)
    out = {"imported": imported.name, "judgments": imported.judgments_kept,
           "repeated_or_replaced": imported.repeated_or_replaced}
    fits = store.model_names(imported.name)
    others = other_models_fits(fits, args.preference_model)
    if others and args.preference_model not in fits:
        out["fit"] = (f"the file's fit is by {' and '.join(others)}; {args.preference_model} serves here: run "
                      f"`{same_history_command(args, 'fit', imported.name)}` to fit it with {args.preference_model}")
    return out


# --- model commands -----------------------------------------------------------------------


def cmd_generate(args, studio) -> dict:
    from prefstudio.provenance import write_png_with_provenance

    records = studio.generate_candidates(args.prompt, n=args.n, seeds=args.seeds)
    if args.out:
        targets = new_or_ours(args.out, {r.sha256: f"{r.sha256[:12]}-seed{r.seed}.png" for r in records})
        _make_out_folder(args.out)
        for r in records:
            info = {"prompt": r.prompt, "seed": r.seed, "generator": r.generator, "params": r.params,
                    "role": "candidate"}
            write_png_with_provenance(studio.store.load_image(r.sha256), targets[r.sha256], info)
    return {"images": [{"id": r.sha256, "seed": r.seed, "path": str(r.path)} for r in records]} | prompt_notes(studio, args)


def prompt_notes(studio, args) -> dict:
    """What of the prompt the generator does not read, when something is not."""
    notes = studio.prompt_notes(args.prompt)
    return {"prompt_notes": notes} if notes else {}


def cmd_import_pairs(args, studio) -> dict:
    return studio.import_pairs(args.profile, args.file, args.user)


def cmd_fit(args, studio) -> dict:
    report = studio.fit(args.profile)
    return {"summary": report.summary(), "model": report.model, "mode": report.mode, "why": report.reason,
            "pairs": report.n_pairs, "loo_accuracy": report.loo_accuracy, "loo_pairs": report.loo_pairs,
            "seconds": round(report.seconds, 3)}


def cmd_preset_save(args, studio) -> dict:
    if not args.name:
        raise InvalidInput("preset save needs the preset's name")
    if not args.weight:
        raise InvalidInput("preset save needs the blend: --weight NAME=VALUE, repeated")
    preset = studio.save_preset(args.profile, args.name, _weights(args.weight))
    replaced = {} if preset.replaced is None else {"replaced": {"name": preset.replaced.name,
                                                                "weights": preset.replaced.weights}}
    return {"saved": preset.name, "profile": studio.store.get_profile(args.profile).name,
            "weights": preset.weights} | replaced


def cmd_grid(args, studio) -> dict:
    from prefstudio.provenance import write_png_with_provenance
    from prefstudio.trade_off import draw_grid

    grid = None
    for item in studio.trade_off(args.profile, args.prompt, args.axis, seed=args.seed, steps=args.steps,
                                 weights=studio.blend_weights(args.profile, _weights(args.weight), args.preset),
                                 total=args.total, strength=args.strength, iterations=args.iterations):
        if isinstance(item, str):
            print(item, file=sys.stderr, flush=True)
        else:
            grid = item
    cells = grid.cells()
    path = write_png_with_provenance(
        draw_grid(grid, studio.store.load_image), args.out,
        {"prompt": grid.prompt, "seed": grid.seed, "generator": studio.generator.name, "role": "trade-off-grid",
         "params": {"personalized_for": grid.profile, "axes": grid.axes, "steps": grid.steps,
                    "strength": grid.strength, "iterations": args.iterations,
                    "cells": [{"weights": c.weights, "image": c.side.personalized.record.sha256,
                               "scores": c.side.personalized.normalised} for c in cells]}})
    repeats = grid.repeats(studio.store.load_image)
    return {"grid": str(path), "seed": grid.seed, "axes": grid.axes,
            "cells": [{"weights": c.weights, "id": c.side.personalized.record.sha256, "improved": c.side.improved,
                       "scores": {n: round(v, 4) for n, v in c.side.personalized.normalised.items()}}
                      | ({"same_image_as": same} if same else {}) for c, same in zip(cells, repeats)]}


def cmd_personalize(args, studio) -> dict:
    if args.adapter_scale is not None and args.method != "ppd":
        raise InvalidInput(f"--adapter-scale is read by --method ppd only, not {args.method}")
    if args.seed is not None:  # before minutes of guidance, where the names are known
        side_by_side_paths(args.out, args.seed)
    weights = studio.blend_weights(args.profile, _weights(args.weight), args.preset)
    result = studio.personalize_once(args.profile, args.prompt, seed=args.seed,
                                     weights=weights, iterations=args.iterations,
                                     method=args.method, strength=args.strength,
                                     **({} if args.adapter_scale is None else {"adapter_scale": args.adapter_scale}))
    paths = save_side_by_side(result, args.out, fit=studio.fit_status(args.profile),
                              model=studio.preference.name)
    return {"seed": result.seed, "method": args.method, "weights": result.weights, "strength": result.strength,
            "improved": result.improved, "gain": round(result.gain, 4), "best_iteration": result.best_iteration,
            "baseline": {"id": result.baseline.record.sha256, "scores": result.baseline.normalised},
            "personalized": {"id": result.personalized.record.sha256,
                             "scores": result.personalized.normalised},
            "files": {k: str(v) for k, v in paths.items()}} | prompt_notes(studio, args)


STORE_HANDLERS = {"profile": cmd_profile, "judge": cmd_judge, "remove-judgment": cmd_remove_judgment,
                  "export": cmd_export, "import": cmd_import, "preset": cmd_preset}


def cmd_suggest(args, studio) -> dict:
    from prefstudio.studio import MAX_CANDIDATES

    if (args.prompt is not None) == bool(args.ids):
        raise InvalidInput("suggest takes either --prompt P or candidate image ids, not both and not neither")
    if args.prompt is not None:
        validate_prompt(args.prompt)
    if not 1 <= args.top <= 100:
        raise InvalidInput(f"--top must lie in [1, 100], got {args.top}")
    if args.prompt and not 2 <= args.n <= MAX_CANDIDATES:  # checked before any image is made and stored
        raise InvalidInput(f"-n must lie in [2, {MAX_CANDIDATES}] with --prompt (a pair needs two candidates), "
                           f"got {args.n}")
    studio.store.get_profile(args.profile)  # an unknown profile fails before anything is generated
    shas = ([r.sha256 for r in studio.generate_candidates(args.prompt, n=args.n)] if args.prompt
            else [studio.store.resolve_image_id(ref) for ref in args.ids])
    records = [studio.store.image_record(sha) for sha in shas]
    return {"candidates": shas,
            "images": {r.sha256: {"seed": r.seed, "prompt": r.prompt, "path": str(r.path)} for r in records},
            "suggestions": [{"judge": [s.first, s.second], "information": round(s.information, 4),
                             "why": s.reason} for s in studio.suggest(args.profile, shas, args.top)]}


def cmd_rewards(args, studio) -> dict:
    """Every reward on offer with its default weight, then the catalogued ones that are missing."""
    from prefstudio.rewards.user_preference import TasteReward

    offered = {"user": {"default_weight": studio.default_weights()["user"], "description": TasteReward.description,
                        "needs": "a fitted profile"}}
    for name, reward in studio.base_rewards.items():
        offered[name] = {"default_weight": studio.default_weights()[name], "description": reward.description,
                         "guard": reward.guard, "normalisation": reward.normalisation_source}
        if name in studio.reward_states:
            offered[name]["reads"] = studio.reward_states[name].source
    missing = {n: s.detail for n, s in studio.reward_states.items() if not s.ready}
    return {"rewards": offered, "missing": missing}


def cmd_calibrate(args, studio) -> dict:
    from prefstudio.rewards.calibration import CALIBRATION_FILE, MAX_SEEDS, measure, write_calibrations
    from prefstudio.taste_summary import read_prompts

    if not studio.reward_states:
        raise InvalidInput("calibrate measures the rewards a real generator offers (CLIP, aesthetic, PickScore): "
                           "run it with --model sd-turbo, a hub id or a diffusers folder")
    prompts = read_prompts()
    if not 1 <= args.prompts <= len(prompts):
        raise InvalidInput(f"--prompts must lie in [1, {len(prompts)}] (the prompts in assets/prompts.txt)")
    if not 1 <= args.seeds <= MAX_SEEDS:
        raise InvalidInput(f"--seeds must lie in [1, {MAX_SEEDS}]")
    seeds = list(range(20_000, 20_000 + args.seeds))
    rewards = {n: r for n, r in studio.base_rewards.items() if n in studio.reward_states}
    sources = {n: state.source for n, state in studio.reward_states.items()}
    named = "".join(f" --reward {name}={folder}" for name, folder in studio_options(args)["reward_folders"].items())
    command = (f"python -m prefstudio --model {args.model}{named} calibrate --prompts {args.prompts} "
               f"--seeds {args.seeds}")
    measured = measure(studio.generator, rewards, sources, prompts[:args.prompts], seeds, command)
    path = studio.store.data_dir / CALIBRATION_FILE
    write_calibrations(path, measured)
    missing = {n: s.detail for n, s in studio.reward_states.items() if not s.ready}
    return {"wrote": str(path), "generator": studio.generator.name, "resolution": studio.generator.resolution,
            "calibrated": {c.reward: {"offset": round(c.offset, 6), "spread": round(c.spread, 6), "images": c.images,
                                      "weights": c.weights} for c in measured},
            "not_calibrated": missing}


def cmd_bank(args, options: dict, data: str) -> dict:
    """Needs the image encoder only: no generator is loaded."""
    from prefstudio.rewards.catalog import image_encoder
    from prefstudio.studio import user_bank_path
    from prefstudio.preference.bank_from_images import build_bank_from_images

    encoder = image_encoder(options["image_encoder"], options["reward_folders"], args.device)
    named = "".join(f" --reward {name}={folder}" for name, folder in options["reward_folders"].items())
    command = (f"python -m prefstudio{named} --image-encoder {options['image_encoder']} bank --images {args.images} "
               f"--users {args.users} --pairs-per-user {args.pairs_per_user} --seed {args.seed}")
    bank = build_bank_from_images(args.images, encoder, args.users, args.pairs_per_user, args.seed, command)
    path = user_bank_path(data, encoder.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    bank.save(partial)
    partial.replace(path)  # a studio starting meanwhile reads the old bank or the whole new one
    return {"wrote": str(path), "encoder": encoder.name, "users": bank.n_users, "source": bank.source}


STUDIO_HANDLERS = {"generate": cmd_generate, "import-pairs": cmd_import_pairs, "fit": cmd_fit,
                   "suggest": cmd_suggest, "personalize": cmd_personalize, "calibrate": cmd_calibrate,
                   "rewards": cmd_rewards, "preset": cmd_preset_save, "grid": cmd_grid}


# Commands that work on profiles already in the history: a --data folder that does not exist
# is a typo for them, not a new history to start.
NEEDS_HISTORY = {"judge", "remove-judgment", "import-pairs", "fit", "suggest", "personalize", "preset", "grid", "export"}


def run(args: argparse.Namespace) -> dict:
    if args.device is not None:
        validate_device_name(args.device)
    if not str(args.data):  # Path("") is the current folder: an unset shell variable, not a choice
        raise InvalidInput("--data is empty: name the history folder (default ./data)")
    if (args.command in NEEDS_HISTORY or args.command == "profile" and args.action != "create") \
            and not Path(args.data).exists():
        raise InvalidInput(f"--data {echo(str(args.data))} does not exist, so it holds no profiles: check the path "
                           "(`profile create NAME` starts a new history there)")
    if args.command in STORE_HANDLERS and not (args.command == "preset" and args.action == "save"):
        from prefstudio.store.history import HistoryStore

        with HistoryStore(args.data) as store:
            return STORE_HANDLERS[args.command](args, store)
    if args.command == "ppd":
        from prefstudio.ppd.cli import run_ppd
        return run_ppd(args)
    if args.command in ("generate", "personalize", "grid"):
        validate_prompt(args.prompt)  # before minutes of model loading
    if args.command in ("personalize", "grid") and args.iterations is not None:
        from prefstudio.guidance.noise_optimization import validate_iterations

        validate_iterations(args.iterations)
    if args.command == "grid":
        from prefstudio.trade_off import check_axes

        check_axes(args.axis, args.steps)
        on_axis = sorted(set(_weights(args.weight) or {}) & set(args.axis))
        if on_axis:
            raise InvalidInput(f"--weight {', '.join(on_axis)}: an axis of the grid, whose weight the grid sets; "
                               "give weights only for the other rewards (--total sets what the axes share)")
        validate_png_output(args.out)  # a file, where the other commands write into a folder
        if args.out.suffix.lower() != ".png":
            raise InvalidInput(f"--out must name a .png file, got {echo(str(args.out))}")
    elif getattr(args, "out", None) is not None:
        validate_output_folder(args.out)

    import torch

    from prefstudio.devices import pick_device
    from prefstudio.studio import build_studio

    torch.set_num_threads(min(4, torch.get_num_threads()))
    if args.device is not None:
        pick_device(args.device)  # refuses a device this machine does not have
    options = studio_options(args)
    if args.command == "evaluate":
        from prefstudio.eval.pair_file import evaluate_pair_file
        studio = build_studio(args.data, "embedded", None, args.preference_model)
        return evaluate_pair_file(args.file, args.n_ref, studio.encoder, studio.preference)
    if args.command == "bank":
        return cmd_bank(args, options, args.data)
    studio = build_studio(args.data, **options)
    try:
        return STUDIO_HANDLERS[args.command](args, studio)
    finally:
        studio.store.close()


# --- output files -------------------------------------------------------------------------


def _make_out_folder(out: Path) -> None:
    validate_output_folder(out).mkdir(exist_ok=True)


def _caption(sheet, x: int, y: int, width: int, lines: list[str]) -> None:
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(sheet)
    size = max(10, min(16, width // 22))
    font = ImageFont.load_default(size=size)
    for i, line in enumerate(lines):
        draw.text((x + 4, y + 4 + i * (size + 4)), line, fill="black", font=font)


def side_by_side_paths(out: Path, seed: int) -> dict[str, Path]:
    """The three files a personalize run writes into `out`, each checked to be new or one
    PrefStudio wrote, so that a file of the person's is never written over."""
    return new_or_ours(out, {key: f"seed{seed}-{name}.png" for key, name in
                             (("baseline", "baseline"), ("personalized", "personalized"),
                              ("side_by_side", "side-by-side"))})


def new_or_ours(out: Path, names: dict) -> dict:
    """`names`' paths in the folder `out` (which may be new), once each is checked to be new
    or a PNG PrefStudio wrote."""
    out = validate_output_folder(out)
    paths = {key: out / name for key, name in names.items()}
    if out.is_dir():
        for path in paths.values():
            validate_png_output(path)
    return paths


def save_side_by_side(result, out: str | Path, fit: dict | None = None, model: str = "auto") -> dict[str, Path]:
    """Write the baseline, the personalized image and a labelled side-by-side sheet into `out`
    (created if its parent exists), each a PNG carrying prompt, seed, generator, reward weights
    and the fit (`Studio.fit_status(profile)`) it was made with."""
    from PIL import Image

    from prefstudio.provenance import fit_summary, write_png_with_provenance

    out = Path(out)
    targets = side_by_side_paths(out, result.seed)
    _make_out_folder(out)
    profile = result.personalized.record.params.get("personalized_for")
    images = {"baseline": result.baseline, "personalized": result.personalized}
    pictures = {side: Image.open(scored.record.path).convert("RGB") for side, scored in images.items()}
    shared = {"prompt": result.prompt, "seed": result.seed, "weights": result.weights,
              "fit": fit_summary(profile, model, fit) if profile else None}
    paths = {}
    for side, scored in images.items():
        paths[side] = write_png_with_provenance(
            pictures[side], targets[side],
            shared | {"generator": scored.record.generator, "params": scored.record.params, "role": side,
                      "scores": scored.normalised})

    gap, band = 8, 64
    left, right = pictures["baseline"], pictures["personalized"]
    sheet = Image.new("RGB", (left.width + right.width + gap, max(left.height, right.height) + band), "white")
    verdict = {"baseline": "no personalization",
               "personalized": f"raised the weighted rewards {result.gain:+z.2f}" if result.improved
               else "no improvement on the baseline"}
    for x, side, picture in ((0, "baseline", left), (left.width + gap, "personalized", right)):
        sheet.paste(picture, (x, 0))
        scores = images[side].normalised
        score_text = "  ".join(f"{name} {scores[name]:+z.2f}" for name in result.weights if name in scores)
        label = side if side == "baseline" or result.improved else "not personalized"
        _caption(sheet, x, picture.height, picture.width,
                 [f"{label} · seed {result.seed} · strength {result.strength:g}", score_text, verdict[side]])
    paths["side_by_side"] = write_png_with_provenance(
        sheet, targets["side_by_side"],
        shared | {"generator": result.personalized.record.generator, "role": "side-by-side",
                  "scores": {f"{side}.{name}": value for side, scored in images.items()
                             for name, value in scored.normalised.items()}})
    return paths


# --- entry point --------------------------------------------------------------------------


def user_message(error: BaseException) -> str | None:
    """The one line to print for an error a person can act on, or None for a bug."""
    full = disk_full(error)
    if full is not None:
        return str(full)
    if isinstance(error, PrefStudioError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        # A file the person named cannot be read or written (permissions, a folder, /proc…).
        return f"{error.strerror or error.__class__.__name__}: {echo(str(error.filename))}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from prefstudio import privacy

    privacy.apply_defaults(allow_downloads=args.allow_downloads)
    if not args.allow_downloads:  # stderr is for errors: no "Loading weights" bars from local files
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        result = run(args)
    except Exception as error:
        message = user_message(error)
        if message is None:
            raise
        print(f"error: {' '.join(message.splitlines())}", file=sys.stderr)
        return 2
    # Paths from the command line may hold undecodable bytes: print them escaped, never crash.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        print(json.dumps(result, indent=2, ensure_ascii=False), flush=True)
    except BrokenPipeError:  # `… | head`: the reader left; the work is done, say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
