"""Evaluate, the optimiser check: over K prompts, how often the personalized image beats the
baseline from the same seed under the person's own model, and the two score distributions.

This measures the optimisation against the model it optimises (a sanity check that the
sliders do what they say), not the person's real satisfaction: that is what the blind test
(prefstudio.ui.blind_evaluate), above it in the tab, is for.
"""
import math
import random
import threading
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from prefstudio.errors import InvalidInput
from prefstudio.taste_summary import read_prompts
from prefstudio.ui.common import AppContext, markdown_text, prompt_table_widths, user_errors
from prefstudio.validation import validate_prompt, validate_seed, whole_number

MAX_PROMPTS = 12
COLUMNS = ["prompt", "seed", "baseline", "personalized", "gain", "winner"]


@dataclass
class EvaluateSession:
    stop: threading.Event | None = None
    showing: str | None = None  # the profile the page shows; None for an API client, which shows none


def win_rate(rows: list[tuple]) -> tuple[float, float, float]:
    """Share of prompts where personalized scores higher (a tie counts half), with its 95%
    Wilson interval."""
    return rate_interval([1.0 if p > b else 0.5 if p == b else 0.0 for _, _, b, p, *_ in rows])


def check_summary(rows: list[tuple], stopped: bool) -> str:
    """The optimiser check's result line: win rate, its interval, wins and ties."""
    rate, low, high = win_rate(rows)
    wins = sum(r[5] == "personalized" for r in rows)
    ties = sum(r[5] == "tie" for r in rows)
    tied = f" and tied on {ties} (a tie counts half)" if ties else ""
    return (f"**Win rate {rate:.0%}** (95% interval {low:.0%}–{high:.0%}): personalized beat the baseline "
            f"on {wins} of {len(rows)} prompts under your model{tied}{' (stopped early)' if stopped else ''}.")


def rate_interval(outcomes: list[float]) -> tuple[float, float, float]:
    """The mean of win (1), tie (0.5) and loss (0) outcomes with its 95% Wilson interval
    (unlike rate ± standard error it stays honest at 0 or K wins of K)."""
    n = len(outcomes)
    if n == 0:
        raise InvalidInput("no outcomes to compute a win rate from")
    rate = sum(outcomes) / n
    z = 1.96
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return rate, max(0.0, centre - half), min(1.0, centre + half)


def choose_prompts(pool: list[str], text: str, k: int, seed: int) -> list[str]:
    """The prompts typed (one per line), or K drawn from `pool` by the seed."""
    typed = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if typed:
        if len(typed) > MAX_PROMPTS:
            raise InvalidInput(f"{len(typed)} prompts given; the limit is {MAX_PROMPTS}")
        return [validate_prompt(p) for p in typed]
    return random.Random(seed).sample(pool, min(whole_number(k, "the number of prompts"), len(pool)))


def distribution_plot(rows: list[tuple]):
    from matplotlib.figure import Figure  # on first use: half a second off the app's start

    baseline = [r[2] for r in rows]
    personalized = [r[3] for r in rows]
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    paired, spread = figure.subplots(1, 2)
    for b, p in zip(baseline, personalized):
        paired.plot([0, 1], [b, p], color="#16a34a" if p > b else "#dc2626", alpha=0.6, marker="o")
    paired.set_xticks([0, 1], ["baseline", "personalized"])
    paired.set_xlim(-0.3, 1.3)
    paired.set_ylabel("user-model score (normalised)")
    paired.set_title("Same seed, per prompt")
    spread.boxplot([baseline, personalized], tick_labels=["baseline", "personalized"], widths=0.5)
    spread.set_title("Score distributions")
    for axis in (paired, spread):
        axis.grid(axis="y", alpha=0.3)
    return figure


class EvaluateTab:
    def __init__(self, ctx: AppContext, profile: gr.Dropdown, opened: gr.State):
        self.ctx = ctx
        self.all_prompts = read_prompts()
        self.session = gr.State(EvaluateSession())
        gr.Markdown("A check of the optimiser against **your taste model**, not of your taste: for K prompts, "
                    "the baseline and the personalized image from the same seed, both scored by your model (at "
                    "the weights of the Generate tab's defaults). The win rate is how often personalization "
                    "raised that score. The blind test above is the one you judge.")
        with gr.Row():
            self.k = gr.Slider(1, MAX_PROMPTS, value=4, step=1, label="K prompts")
            self.iterations = gr.Slider(0, 100, value=15, step=1, label="Iterations per prompt")
            self.seed = gr.Number(value=0, minimum=0, label="First seed (prompt i uses seed + i)")  # as Generate's
        self.prompts = gr.Textbox(label="Prompts (optional, one per line)", lines=3,
                                  placeholder="blank: K prompts drawn from the built-in list")
        with gr.Row():
            run = gr.Button("Run evaluation", variant="primary", elem_id="ps-evaluate")
            stop = gr.Button("■ Stop", variant="stop")
        self.result = gr.Markdown()
        self.plot = gr.Plot(label="Scores under your model")
        self.table = gr.Dataframe(headers=COLUMNS, interactive=False, label="Per prompt", elem_id="ps-opt-table",
                                  wrap=True, column_widths=prompt_table_widths(len(COLUMNS)))
        run.click(user_errors(self.evaluate), [self.session, profile, self.prompts, self.k, self.iterations, self.seed],
                  [self.result, self.plot, self.table], api_name="evaluate")
        stop.click(self.stop, self.session, self.result, api_name="stop_evaluation", concurrency_limit=None)
        # `opened` is the profile this page last opened: set on page load and on every switch.
        opened.change(self.show, [self.session, opened], [self.result, self.plot, self.table],
                      api_visibility="private", concurrency_limit=None)

    def show(self, session: EvaluateSession, profile):
        """On page load and profile switch: another profile's check leaves the screen (a run of it ends)."""
        if session.showing == profile:
            return (gr.skip(),) * 3
        session.showing = profile
        if session.stop is not None:
            session.stop.set()
        return "", None, _table([])

    def choose_prompts(self, text: str, k: int, seed: int) -> list[str]:
        return choose_prompts(self.all_prompts, text, k, seed)

    def evaluate(self, session: EvaluateSession, profile, prompts_text, k, iterations, seed):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        seed = validate_seed(0 if seed is None else seed)
        prompts = self.choose_prompts(prompts_text, k, seed)
        iterations = whole_number(iterations, "iterations")
        studio = self.ctx.studio
        studio.user_reward(profile)  # says "fit first" before any work is done
        session.stop = stop = threading.Event()
        shown = session.showing
        rows = []
        with self.ctx.streaming(profile, "an optimiser check"):
            for i, prompt in enumerate(prompts):
                if stop.is_set():
                    break
                yield f"Prompt {i + 1} of {len(prompts)}: “{markdown_text(prompt)}”…", None, _table(rows)
                # listed=False: a check's runs stay out of the Generate tab's side by sides
                steps = studio.personalize(profile, prompt, (seed + i) % 2**32, None, int(iterations), stop=stop,
                                           listed=False)
                *_, side = self.ctx.steps(steps)  # progress items, then the SideBySide
                if session.showing != shown:  # the page shows another profile now: this check is not its
                    # The stream's last view is the page's: an empty one, not this check's progress line.
                    yield "", None, _table([])
                    return
                b, p = side.baseline.normalised["user"], side.personalized.normalised["user"]
                rows.append((prompt, side.seed, b, p, p - b,
                             "personalized" if p > b else "tie" if p == b else "baseline"))
        if not rows:
            yield "Stopped before the first prompt finished.", None, _table(rows)
            return
        yield check_summary(rows, stop.is_set()), distribution_plot(rows), _table(rows)

    def stop(self, session: EvaluateSession):
        if session.stop is None or session.stop.is_set():
            return "Nothing is running."
        session.stop.set()
        return "Stopping: the prompt in progress finishes with its best so far."


def _table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS).round(3)
