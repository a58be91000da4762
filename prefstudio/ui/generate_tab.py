"""Generate: baseline and personalized from the same seed, side by side, with live progress.

Stop sets the session's threading.Event; the optimisation checks it before every
iteration and finishes with the best iterate so far. Both results can be judged here,
and those judgments join the history like any other.
"""
import inspect
import secrets
import threading
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from prefstudio.errors import InvalidInput
from prefstudio.guidance.noise_optimization import DEFAULT_ITERATIONS, GuidanceProgress
from prefstudio.rewards.user_preference import TasteReward
from prefstudio.studio import SideBySide
from prefstudio.taste_summary import read_prompts
from prefstudio.ui.common import (
    KIND_MARKS, VIEW_SIZE, AppContext, counts_line, random_seed, short, thumb, user_errors,
)
from prefstudio.validation import validate_prompt, validate_seed

RANDOM, FIXED = "Random seed", "Fixed seed"
MAX_UI_ITERATIONS = 100
TOTAL = "weighted total"


@dataclass
class GenerateSession:
    stop: threading.Event | None = None
    baseline: str | None = None  # image ids of the last side by side
    personalized: str | None = None


def reward_label(name: str) -> str:
    return "Your taste (user model)" if name == "user" else name.replace("_", " ").capitalize()


def scores_table(normalised: dict[str, float], weights: dict[str, float]) -> str:
    rows = [f"| {reward_label(n)} | {v:+.2f} | {weights.get(n, 0):.2f} |" for n, v in normalised.items()]
    total = sum(weights.get(n, 0) * v for n, v in normalised.items())
    return ("| reward | score | weight |\n|---|---:|---:|\n" + "\n".join(rows)
            + f"\n| **{TOTAL}** | **{total:+.2f}** | |")


class GenerateTab:
    def __init__(self, ctx: AppContext, profile: gr.Dropdown):
        self.ctx = ctx
        studio = ctx.studio
        self.prompts = read_prompts()
        self.reward_names = list(studio.default_weights())  # the user model first
        descriptions = {"user": TasteReward.description} | {
            n: r.description for n, r in studio.base_rewards.items()}
        self.session = gr.State(GenerateSession())
        with gr.Row(equal_height=True):
            self.prompt = gr.Textbox(label="Prompt", placeholder="what should the image show?", scale=5,
                                     max_length=1000, elem_id="ps-gen-prompt")
            surprise = gr.Button("🎲 Surprise me", scale=1)
        with gr.Row():
            self.seed_mode = gr.Radio([RANDOM, FIXED], value=RANDOM, label="Seed",
                                      info="Random picks a new seed and shows it here; fixed reuses it.")
            self.seed = gr.Number(label="Seed used", precision=0, minimum=0, maximum=2**32 - 1,
                                  elem_id="ps-seed")
            self.iterations = gr.Slider(0, MAX_UI_ITERATIONS, value=DEFAULT_ITERATIONS, step=1,
                                        label="Iterations", info="Optimisation steps on the seed's noise.",
                                        elem_id="ps-iterations")
        with gr.Accordion("Reward weights — one normalised scale: a weight of 1 is one typical spread "
                          "of that reward", open=True):
            with gr.Row():
                self.sliders = [gr.Slider(0, 2, value=w, step=0.05, label=reward_label(n), info=descriptions[n])
                                for n, w in studio.default_weights().items()]
        with gr.Row():
            run = gr.Button("Generate baseline and personalized", variant="primary", elem_id="ps-personalize")
            stop = gr.Button("■ Stop (keeps the best so far)", variant="stop", elem_id="ps-stop")
        self.progress = gr.Markdown("Fit your taste in the Profile tab first, then generate.",
                                    elem_id="ps-gen-progress")
        with gr.Row(equal_height=True):
            with gr.Column():
                self.baseline = gr.Image(label="Baseline (same seed, no personalization)", type="filepath",
                                         interactive=False, height=360, buttons=["download", "fullscreen"],
                                         elem_id="ps-baseline")
                self.baseline_scores = gr.Markdown()
                with gr.Row():
                    like_base = gr.Button("👍 Baseline", size="sm")
                    dislike_base = gr.Button("👎 Baseline", size="sm")
            with gr.Column():
                self.personalized = gr.Image(label="Personalized (live preview while optimising)", type="filepath",
                                             interactive=False, height=360, buttons=["download", "fullscreen"],
                                             elem_id="ps-personalized")
                self.personalized_scores = gr.Markdown()
                with gr.Row():
                    like_pers = gr.Button("👍 Personalized", size="sm")
                    dislike_pers = gr.Button("👎 Personalized", size="sm")
        with gr.Row():
            prefer_base = gr.Button("◀ Baseline is better")
            prefer_pers = gr.Button("Personalized is better ▶")
        self.status = gr.Markdown()
        self.trace = gr.LinePlot(x="iteration", y="score", color="series", title="Scores during optimisation",
                                 y_title="normalised score", height=260)

        outputs = [self.progress, self.seed, self.baseline, self.personalized, self.baseline_scores,
                   self.personalized_scores, self.trace]
        surprise.click(lambda: secrets.choice(self.prompts), None, self.prompt, api_visibility="private")
        run.click(self._with_weight_names(user_errors(self.generate)),
                  [self.session, profile, self.prompt, self.seed_mode, self.seed, self.iterations, *self.sliders],
                  outputs, api_name="personalize")
        stop.click(self.stop, self.session, self.status, api_name="stop", concurrency_limit=None)
        judged = [self.status]
        for button, kind, which, api in ((like_base, "like", "baseline", "like_baseline"),
                                         (dislike_base, "dislike", "baseline", "dislike_baseline"),
                                         (like_pers, "like", "personalized", "like_personalized"),
                                         (dislike_pers, "dislike", "personalized", "dislike_personalized"),
                                         (prefer_base, "pair", "baseline", "prefer_baseline"),
                                         (prefer_pers, "pair", "personalized", "prefer_personalized")):
            button.click(user_errors(self._judge_handler(kind, which)), [self.session, profile], judged, api_name=api)

    def generate(self, session: GenerateSession, profile, prompt, seed_mode, seed, iterations, *weights):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        prompt = validate_prompt(prompt)
        if seed_mode == FIXED:
            if seed is None:
                raise InvalidInput("type a seed, or choose “Random seed”")
            seed = validate_seed(seed)
        else:
            seed = random_seed()
        weights = dict(zip(self.reward_names, (float(w) for w in weights)))
        iterations = int(iterations)
        session.stop = stop = threading.Event()
        session.baseline = session.personalized = None
        steps = self.ctx.studio.personalize(profile, prompt, seed, weights, iterations, stop=stop)
        rows, baseline_preview, preview = [], None, None
        for item in self.ctx.steps(steps):
            if isinstance(item, GuidanceProgress):
                rows += [(item.iteration, item.total, TOTAL)] + [
                    (item.iteration, v, reward_label(n)) for n, v in item.normalised.items()]
                if item.preview is not None:
                    preview = item.preview
                    baseline_preview = baseline_preview or item.preview  # iteration 0 is the baseline
                done = item.iteration / max(iterations, 1)
                bar = "█" * round(20 * done) + "░" * (20 - round(20 * done))
                text = (f"Optimising `{bar}` iteration {item.iteration}/{iterations} · weighted total "
                        f"{item.total:+.2f} · best so far {item.best_total:+.2f} (iteration {item.best_iteration})")
                yield (text, seed, baseline_preview, preview, "", "", _trace(rows))
            else:
                side: SideBySide = item
        session.baseline = side.baseline.record.sha256
        session.personalized = side.personalized.record.sha256
        how = (f"Stopped after {side.iterations_run} iterations; kept the best so far" if side.stopped
               else f"Done: {side.iterations_run} iterations")
        text = (f"{how} (iteration {side.best_iteration}). Seed **{side.seed}** — both images are stored "
                "with their prompt, seed and weights; judge them below.")
        yield (text, side.seed, thumb(side.baseline.record.path, VIEW_SIZE),
               thumb(side.personalized.record.path, VIEW_SIZE),
               scores_table(side.baseline.normalised, side.weights),
               scores_table(side.personalized.normalised, side.weights), _trace(rows))

    def _with_weight_names(self, fn):
        """One named API parameter per slider (weight_user, weight_prompt_consistency, ...)."""
        fixed = ["session", "profile", "prompt", "seed_mode", "seed", "iterations"]
        names = fixed + [f"weight_{n}" for n in self.reward_names]
        fn.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
        return fn

    def stop(self, session: GenerateSession):
        if session.stop is None or session.stop.is_set():
            return "Nothing is running."
        session.stop.set()
        return "Stopping after this iteration; the best image so far is kept."

    def _judge_handler(self, kind: str, which: str):
        def judge(session: GenerateSession, profile):
            if session.personalized is None:
                raise InvalidInput("nothing to judge yet: generate a side by side first")
            if not profile:
                raise InvalidInput("choose or create a profile first (top of the page)")
            chosen = session.baseline if which == "baseline" else session.personalized
            other = session.personalized if which == "baseline" else session.baseline
            if kind == "pair":
                self.ctx.studio.judge(profile, "pair", chosen, other)
                said = f"{which} ≻ the other ({short(chosen)} ≻ {short(other)})"
            else:
                self.ctx.studio.judge(profile, kind, chosen)
                said = f"{KIND_MARKS[kind]} for the {which} image ({short(chosen)})"
            return f"Recorded {said}. " + counts_line(self.ctx, profile)
        return judge


def _trace(rows: list[tuple[int, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["iteration", "score", "series"])
