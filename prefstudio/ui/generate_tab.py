"""Generate: baseline and personalized from the same seed, side by side, with live progress.

A run is a server-side job (ui/jobs.py): a reloaded page re-attaches to its profile's run
or shows the profile's last finished side by side. Stop sets the job's event; the
optimisation checks it before every iteration and finishes with the best iterate so far.
One "strength" control bounds how far personalization moves from the baseline; the
per-reward weights sit under "Advanced". A result whose rewards did not rise is shown
as such, never called personalized. Both images can be judged here, and past side by
sides can be reused (prompt, seed, weights → the controls) or judged again. Other fitted
profiles (a friend's imported one too) join the blend with a slider each, a blend is saved
as a named preset of the profile, and a trade-off grid shows one seed across weight
combinations of two or three rewards, each image captioned with its scores.
"""
import inspect
import secrets

import gradio as gr
import pandas as pd
from PIL import Image

from prefstudio.blend import blended_profile, profile_reward, validate_reward_name
from prefstudio.errors import InvalidInput, NotFound, echo
from prefstudio.guidance.noise_optimization import DEFAULT_ITERATIONS, GuidanceProgress
from prefstudio.provenance import read_provenance, write_png_with_provenance
from prefstudio.rewards.user_preference import TasteReward
from prefstudio.store.history import ImageRecord
from prefstudio.guidance.methods import CHAIN_ITERATIONS
from prefstudio.studio import DEFAULT_STRENGTH, MAX_ADAPTER_SCALE, check_one_pass_weights, check_something_raised
from prefstudio.taste_summary import read_prompts
from prefstudio.trade_off import MAX_STEPS, draw_grid
from prefstudio.ui.access import login
from prefstudio.ui.common import (
    markdown_text,
    KIND_MARKS, PROMPT_LINES, AppContext, counts_line, empty_after, gallery_height, notes_text, pair_thumb,
    random_seed, short, user_errors,
)
from prefstudio.ui.jobs import GenerationJob, GenerationJobs
from prefstudio.validation import validate_prompt, validate_seed, whole_number

RANDOM, FIXED = "Random seed", "Fixed seed"
MAX_SLIDER_WEIGHT = 2.0
MAX_UI_ITERATIONS = 100
TOTAL = "objective"
SERIES_COLOURS = ["#2563eb", "#ea580c", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777"]
PAST = 12  # past side by sides listed
PAST_COLUMNS = 6
MAX_BLENDED = 4  # other profiles' tastes on the sliders at once
BLEND_WEIGHT = 0.5  # a profile's weight when it joins the blend
PERSONALIZED = "Personalized (live preview while optimising)"
# The method choice: label -> (Studio.personalize method, the iterations it starts with).
METHODS = {"Guided": ("guidance", DEFAULT_ITERATIONS), "Best of N": ("best_of_n", DEFAULT_ITERATIONS),
           "Instant": ("instant", 0), "Instant → short guidance": ("instant+guidance", CHAIN_ITERATIONS)}
GUIDED = "Guided"
PPD = "PPD adapter"  # a method only when the studio runs one (--ppd-adapter)
ONE_PASS = {"instant": "the preference adapter", "ppd": "the PPD adapter"}
# What may still help a run that did not improve on the baseline: what each method reads.
RETRY = {"guidance": "another seed, a higher strength or more iterations", "best_of_n": "another seed",
         "instant": "another seed or a higher strength", "ppd": "another seed or a higher PPD adapter scale"}
RETRY["instant+guidance"] = RETRY["guidance"]
METHOD_NAMES = {name: label for label, (name, _) in METHODS.items()} | {"ppd": PPD}


def method_name(params: dict) -> str:
    """How a stored side by side was personalized, as the Method choice names it."""
    return METHOD_NAMES.get(params.get("method", "guidance"), str(params.get("method")))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unreadable_run(params: dict) -> str | None:
    """What keeps a stored side by side's params from being shown, or None. They are plain JSON
    of any shape when they came with an imported profile file."""
    def numbers(mapping) -> bool:
        return isinstance(mapping, dict) and all(isinstance(k, str) and _number(v) for k, v in mapping.items())

    def reward_names(mapping) -> bool:  # they become table rows and chart series: no markup, no quotes
        try:
            return all(validate_reward_name(name) for name in mapping)
        except InvalidInput:
            return False

    weights = params.get("weights", {})
    if not numbers(weights):
        return "its weights are not numbers"
    scores = params.get("scores", {})
    if not isinstance(scores, dict) or not all(numbers(side) for side in scores.values()):
        return "its scores are not numbers"
    for key in ("gain", "strength", "iterations", "iterations_run", "picked_seed"):
        if key in params and not _number(params[key]):
            return f"its {key.replace('_', ' ')} is not a number"
    trace = params.get("trace", [])
    if not isinstance(trace, list) or not all(
            isinstance(t, list) and len(t) == 3 and _number(t[0]) and _number(t[1]) and numbers(t[2]) for t in trace):
        return "its trace is not a list of scored iterations"
    for what, mappings in (("weights name", [weights]), ("scores name", scores.values()),
                           ("trace names", [t[2] for t in trace])):
        if not all(reward_names(mapping) for mapping in mappings):
            return f"its {what} a reward that is not one"
    return None


def record_how(params: dict, seed: int, baseline_seed: int) -> str:
    """How a stored side by side was made, for reading it back (a reload, the past list)."""
    ran = params.get("iterations_run", params.get("iterations"))
    if "picked_seed" in params:
        return f"Best of N: the best of {ran} seeds (seed **{seed}**; the baseline's **{baseline_seed}**)"
    how = f"{markdown_text(method_name(params))}, seed **{seed}**, strength {params.get('strength', '?')}"
    if params.get("method") in ONE_PASS:
        return how
    if params.get("stopped"):
        return f"{how}, stopped after {ran} of {params.get('iterations', '?')} iterations"
    return f"{how}, {ran} iterations"


def whose_taste(weights: dict[str, float] | None) -> str:
    """The tastes a run raised: "your taste", or a blend with other profiles' (`profile:NAME`)."""
    weights = weights or {}
    others = [f"{blended_profile(n)}'s" for n, w in weights.items() if blended_profile(n) is not None and w > 0]
    if not others:
        return "your taste"
    if weights.get("user", 0) > 0:
        return "a blend of your taste and " + " and ".join(others)
    return " and ".join(others) + (" taste" if len(others) == 1 else " tastes")


def result_label(params: dict, improved: bool) -> str:
    """The personalized image's heading: what it is, for the method that made it."""
    method = params.get("method", "guidance")
    if not improved:
        kept = " (best iterate shown)" if method in ("guidance", "instant+guidance") else ""
        return f"Not personalized: no improvement on the baseline{kept}"
    aim = whose_taste(params.get("weights"))
    if method == "best_of_n":  # not the baseline's seed, unless that one scored best
        return f"Personalized (the best of several seeds for {aim}: seed {params.get('picked_seed')})"
    if method in ONE_PASS:
        return f"Personalized (same seed, one pass of {ONE_PASS[method]})"
    if method == "instant+guidance":
        return "Personalized (same seed: Instant, then guidance)"
    return f"Personalized (same seed, optimised for {aim})"


class GenerateSession:
    """What this page shows: the side by side its judge buttons act on, and the past list."""

    def __init__(self):
        self.baseline: str | None = None
        self.personalized: str | None = None
        self.past: list[str] = []  # personalized image ids in gallery order
        self.blended: list[str] = []  # profiles whose tastes are on the blend sliders, in slot order
        self.blends: dict[str, dict[str, float]] = {}  # each profile's blend on this page, kept across switches
        # The profile this page shows (its name): a run's stream stops updating the page once
        # it shows another profile, and the run goes on for its own profile in the background.
        self.showing: str | None = None


REWARD_LABELS = {"user": "Your taste (user model)", "clip": "CLIP text alignment", "aesthetic": "LAION aesthetic",
                 "pickscore": "PickScore"}


def reward_label(name: str) -> str:
    other = blended_profile(name)
    if other is not None:
        return f"Taste of {other}"  # no apostrophe: the score chart's series names go into Vega expressions
    return REWARD_LABELS.get(name) or name.replace("_", " ").capitalize()


def _in_sentence(label: str) -> str:
    return label[0].lower() + label[1:] if label[1:2].islower() else label


def gain_text(weights: dict[str, float], gain: float, guards: set[str], deltas: dict[str, float] | None) -> str:
    """What a personalization's gain sums (the weighted rewards it raises; guards are held, not
    raised, so they are not in it) and, when known, how far each guard moved."""
    # Names are shown as text: a blended profile's name may come from an imported file.
    raised = [markdown_text(_in_sentence(reward_label(n))) for n, w in weights.items() if w > 0 and n not in guards]
    # One reward may fall while the sum rises: the sentence names the sum, not each reward.
    summed = raised[0] if len(raised) == 1 else "the weighted sum of " + " and ".join(raised)
    text = f"raised {summed} by **{gain:+z.2f}**{' (weighted)' if len(raised) == 1 else ''} over the baseline"
    guarded = [n for n, w in weights.items() if w > 0 and n in guards and deltas and n in deltas]
    for n in guarded:
        name, moved = markdown_text(_in_sentence(reward_label(n))), round(deltas[n], 2)
        text += (f"; {name} held ({moved:+z.2f}; a guard, not raised)" if moved >= 0
                 else f"; {name} fell {-moved:.2f} below the baseline (a guard, not raised)")
    return text


def reward_states_text(studio) -> str:
    """Which catalogued rewards are on the sliders, and for the missing ones what is missing,
    its size and the command that gets it."""
    if not studio.reward_states:
        return ("**More rewards:** CLIP text alignment, LAION aesthetic and PickScore join the sliders with a real "
                "generator (`--model sd-turbo`, a hub id or a diffusers folder) when their weights are on this "
                "machine.")
    lines = ["**Rewards on this machine**"]
    for name, state in studio.reward_states.items():
        if state.ready:
            lines.append(f"- ✅ **{reward_label(name)}**: ready ({state.detail}); "
                         f"normalisation: {state.normalisation}.")
        else:
            lines.append(f"- ⛔ **{reward_label(name)}**: missing. {state.detail}")
    return "\n".join(lines)


def scores_table(normalised: dict[str, float], weights: dict[str, float]) -> str:
    order = sorted(normalised, key=lambda n: (n != "user", n))  # the person's taste first
    rows = [f"| {markdown_text(reward_label(n))} | {normalised[n]:+z.2f} | {weights.get(n, 0):.2f} |" for n in order]
    return "| reward | score | weight |\n|---|---:|---:|\n" + "\n".join(rows)


class GenerateTab:
    def __init__(self, ctx: AppContext, profile: gr.Dropdown):
        self.ctx = ctx
        studio = ctx.studio
        self.jobs = GenerationJobs(ctx.steps)
        ctx.under_way.append(lambda name: "a Generate run" if self.jobs.running(name.casefold()) else None)
        self.prompts = read_prompts()
        self.reward_names = list(studio.default_weights())  # the user model first
        self.methods = METHODS | ({PPD: ("ppd", 0)} if studio.ppd_adapter is not None else {})
        self.guards = {n for n, r in studio.base_rewards.items() if r.guard}
        descriptions = {"user": TasteReward.description} | {
            n: r.description for n, r in studio.base_rewards.items()}
        self.session = gr.State(GenerateSession())
        with gr.Row(equal_height=True):
            # No max_length: the browser would cut a pasted prompt without a word; the studio
            # refuses a long one, saying so. A few lines at most keep the buttons in reach.
            self.prompt = gr.Textbox(label="Prompt", placeholder="what should the image show?", scale=5,
                                     max_lines=PROMPT_LINES, elem_id="ps-gen-prompt")
            surprise = gr.Button("🎲 Surprise me", scale=1, elem_id="ps-gen-surprise")
        with gr.Row():
            self.seed_mode = gr.Radio([RANDOM, FIXED], value=RANDOM, label="Seed",
                                      info="Random picks a new seed and shows it here; fixed reuses it.")
            # No precision: gradio would round a typed 1.5 to 2 unseen; validate_seed refuses it.
            self.seed = gr.Number(label="Seed used", minimum=0, maximum=2**32 - 1,
                                  elem_id="ps-seed")
            self.strength = gr.Slider(0, 1, value=DEFAULT_STRENGTH, step=0.05, label="Strength",
                                      info="How far personalization may move away from the baseline (0: not at all).",
                                      elem_id="ps-strength")
        ppd_info = (f" {PPD}: one pass of the PPD adapter, conditioned on your {studio.ppd_source} user embedding."
                    if studio.ppd_adapter is not None else "")
        self.method = gr.Radio(list(self.methods), value=GUIDED, label="Method", elem_id="ps-method",
                               info="Guided: optimises the seed's noise for your taste (30 steps). Best of N: the "
                                    "best of 8 seeds. Instant: one pass of the preference adapter, about one image's "
                                    f"time. Instant → short guidance: Instant's image, then {CHAIN_ITERATIONS} steps."
                                    + ppd_info)
        self.adapter_scale = gr.Slider(0, MAX_ADAPTER_SCALE, value=1.0, step=0.05, label="PPD adapter scale",
                                       info="How strongly the PPD adapter steers (0: the baseline exactly; 1: as "
                                            "trained; above 1 exaggerates).",
                                       visible=studio.ppd_adapter is not None, elem_id="ps-adapter-scale")
        with gr.Accordion("Advanced: iterations and reward weights (one normalised scale: a weight of 1 is one "
                          "typical spread of that reward)", open=False, elem_id="ps-advanced"):
            self.iterations = gr.Slider(0, MAX_UI_ITERATIONS, value=DEFAULT_ITERATIONS, step=1,
                                        label="Iterations", info="Optimisation steps on the seed's noise.",
                                        elem_id="ps-iterations")
            with gr.Row():
                self.sliders = [gr.Slider(0, MAX_SLIDER_WEIGHT, value=w, step=0.05, label=reward_label(n), info=descriptions[n],
                                          elem_id=f"ps-weight-{n}")
                                for n, w in studio.default_weights().items()]
            self.reward_states = gr.Markdown(reward_states_text(studio), elem_id="ps-reward-states")
            gr.Markdown("**Blend in other tastes.** Any fitted profile — another of yours, or a friend's you "
                        "imported — joins with its own weight.")
            with gr.Row(equal_height=True):
                # Choices are filled when the menu is focused; an API client names a profile or a preset
                # without focusing anything, so any value reaches the handler, which checks it.
                self.blend_choice = gr.Dropdown([], value=None, label="Fitted profile", scale=3,
                                                allow_custom_value=True, elem_id="ps-blend-choice")
                add_blend = gr.Button("+ Add to the blend", scale=1, elem_id="ps-blend-add")
                clear_blend = gr.Button("Clear the blend", scale=1, elem_id="ps-blend-clear")
            with gr.Row():
                self.blend_sliders = [gr.Slider(0, MAX_SLIDER_WEIGHT, value=BLEND_WEIGHT, step=0.05, label=f"Blend slot {i + 1}",
                                                visible=False, elem_id=f"ps-blend-{i}") for i in range(MAX_BLENDED)]
            with gr.Row(equal_height=True):
                self.preset_name = gr.Textbox(label="Save these weights as a preset", placeholder="preset name",
                                              submit_btn="Save", scale=2, elem_id="ps-preset-name")
                self.preset_choice = gr.Dropdown([], value=None, label="Presets of this profile", scale=2,
                                                 allow_custom_value=True, elem_id="ps-preset-choice")
                load_preset = gr.Button("Load preset", scale=1, elem_id="ps-preset-load")
            self.blend_status = gr.Markdown(elem_id="ps-blend-status")
        with gr.Row():
            run = gr.Button("Generate baseline and personalized", variant="primary", elem_id="ps-personalize")
            stop = gr.Button("■ Stop (keeps the best so far)", variant="stop", elem_id="ps-stop")
        self.progress = gr.Markdown(elem_id="ps-gen-progress")
        with gr.Row(equal_height=True):
            with gr.Column():
                self.baseline = gr.Image(label="Baseline (your seed, no personalization)", type="filepath",
                                         interactive=False, height=360, buttons=["download", "fullscreen"],
                                         elem_id="ps-baseline")
                self.baseline_scores = gr.Markdown(elem_id="ps-baseline-scores")
                with gr.Row():
                    like_base = gr.Button("👍 Baseline", size="sm")
                    dislike_base = gr.Button("👎 Baseline", size="sm")
            with gr.Column():
                self.personalized = gr.Image(label=PERSONALIZED, type="filepath",
                                             interactive=False, height=360, buttons=["download", "fullscreen"],
                                             elem_id="ps-personalized")
                self.personalized_scores = gr.Markdown(elem_id="ps-personalized-scores")
                with gr.Row():
                    like_pers = gr.Button("👍 Personalized", size="sm")
                    dislike_pers = gr.Button("👎 Personalized", size="sm")
        with gr.Row():
            prefer_base = gr.Button("◀ Baseline is better")
            prefer_pers = gr.Button("Personalized is better ▶")
        self.status = gr.Markdown()
        self.trace = gr.LinePlot(x="iteration", y="score", color="series", title="Scores during optimisation",
                                 y_title="normalised score", height=260, elem_id="ps-trace")
        gr.Markdown("### Your past side by sides\nSelect one to show it again, judge it, or reuse its prompt, "
                    "seed and weights.")
        self.past = gr.Gallery(label=f"Past side by sides (baseline | personalized), the newest {PAST}", columns=PAST_COLUMNS, height=gallery_height(1, PAST_COLUMNS), allow_preview=False,
                               object_fit="contain", elem_id="ps-past")
        with gr.Accordion("See the trade-off: one seed across weight combinations of two or three rewards",
                          open=False, elem_id="ps-tradeoff"):
            with gr.Row():
                self.grid_axes = gr.CheckboxGroup(self._axis_choices([]), label="Rewards to weigh against each other "
                                                  "(two or three; the others keep their weights above)",
                                                  scale=3, elem_id="ps-grid-axes")
                self.grid_steps = gr.Slider(1, MAX_STEPS[2], value=4, step=1, label="Steps",
                                            info="Equal shares of one unit of weight (at most 4 for three rewards).",
                                            scale=1, elem_id="ps-grid-steps")
            grid_run = gr.Button("Show the trade-off grid", elem_id="ps-grid-run")
            self.grid_status = gr.Markdown(elem_id="ps-grid-status")
            # The grid's PNG draws its own title; a shown label would cover it.
            self.grid_image = gr.Image(label="Trade-off grid (same prompt and seed; scores under each image)",
                                       show_label=False, type="filepath", interactive=False,
                                       buttons=["download", "fullscreen"], elem_id="ps-grid")
        with gr.Row(equal_height=True):
            reuse = gr.Button("↺ Reuse the selected one's settings", size="sm", elem_id="ps-reuse")
            dropped = gr.File(label="…or drop a PrefStudio PNG", file_types=[".png"],
                              height=170, elem_id="ps-reuse-png")

        # What speaks of the profile shown: emptied when another one is shown (`running_settings`).
        self.per_profile_views = [self.blend_status, self.status, self.grid_status, self.grid_image]
        # What `running_settings` restores: the controls a run was started with (and empties those views).
        self.running_outputs = [self.prompt, self.seed_mode, self.strength, self.iterations, self.method,
                                *self.sliders, *self.blend_sliders, self.grid_axes, *self.per_profile_views]
        self.views = [self.progress, self.seed, self.baseline, self.personalized, self.baseline_scores,
                      self.personalized_scores, self.trace, self.past]
        surprise.click(lambda: secrets.choice(self.prompts), None, self.prompt, api_visibility="private").then(
            self._with_weight_names(user_errors(self.generate)), self.generate_inputs(profile), self.views,
            api_visibility="private")
        run.click(self._with_weight_names(user_errors(self.generate)), self.generate_inputs(profile), self.views,
                  api_name="personalize")
        stop.click(user_errors(self.stop), profile, self.status, api_name="stop", concurrency_limit=None)
        self.past.select(user_errors(self.show_past), [self.session, profile], self.views,
                         api_visibility="private")
        # .input, not .change: only a method the person picks sets its iterations, never a re-render.
        self.method.input(lambda label: self.methods[label][1], self.method, self.iterations,
                          api_visibility="private")
        settings = [self.prompt, self.seed_mode, self.seed, self.strength, self.iterations, *self.sliders]
        blend_views = [*self.blend_sliders, self.grid_axes]
        reuse.click(user_errors(self.reuse), self.session, [*settings, *blend_views, self.method],
                    api_name="reuse_settings")
        empty_after(dropped.upload(user_errors(self.reuse_png), dropped, [*settings, self.status],
                                   api_name="reuse_png"), dropped)
        self.blend_choice.focus(user_errors(self.blend_choices), profile, self.blend_choice, api_visibility="private")
        add_blend.click(user_errors(self.add_to_blend), [self.session, profile, self.blend_choice],
                        [*blend_views, self.blend_choice, self.blend_status], api_name="add_to_blend")
        clear_blend.click(user_errors(self.clear_blend), self.session, [*blend_views, self.blend_status],
                          api_name="clear_blend")
        self.preset_choice.focus(user_errors(self.preset_choices), profile, self.preset_choice,
                                 api_visibility="private")
        saved = self.preset_name.submit(user_errors(self.save_preset),
                                        [self.session, profile, self.preset_name, *self.sliders, *self.blend_sliders],
                                        [self.preset_choice, self.blend_status], api_name="save_preset")
        loaded = load_preset.click(user_errors(self.load_preset), [self.session, profile, self.preset_choice],
                                   [*self.sliders, *blend_views, self.blend_status], api_name="load_preset")
        for event in (saved, loaded):  # a refusal's toast says why; the line must not still claim the last success
            event.failure(lambda: "", None, self.blend_status, api_visibility="private")
        grid_run.click(user_errors(self.trade_off),
                       [self.session, profile, self.prompt, self.seed_mode, self.seed, self.strength, self.iterations,
                        self.grid_axes, self.grid_steps, *self.sliders, *self.blend_sliders],
                       [self.grid_status, self.seed, self.grid_image], api_name="trade_off_grid")
        judged = [self.status]
        for button, kind, which, api in ((like_base, "like", "baseline", "like_baseline"),
                                         (dislike_base, "dislike", "baseline", "dislike_baseline"),
                                         (like_pers, "like", "personalized", "like_personalized"),
                                         (dislike_pers, "dislike", "personalized", "dislike_personalized"),
                                         (prefer_base, "pair", "baseline", "prefer_baseline"),
                                         (prefer_pers, "pair", "personalized", "prefer_personalized")):
            button.click(user_errors(self._judge_handler(kind, which)), [self.session, profile], judged, api_name=api)

    def generate_inputs(self, profile):
        return [self.session, profile, self.prompt, self.seed_mode, self.seed, self.strength, self.iterations,
                *self.sliders, *self.blend_sliders, self.method, self.adapter_scale]

    # -- runs ------------------------------------------------------------------------------
    def _run_settings(self, session: GenerateSession, profile, prompt, seed_mode, seed, values):
        """The profile's name, prompt, seed and weights of a run, each checked, from the controls."""
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        prompt = validate_prompt(prompt)
        if seed_mode == FIXED:
            if seed is None:
                raise InvalidInput("type a seed, or choose “Random seed”")
            seed = validate_seed(seed)
        else:
            seed = random_seed()
        return self.ctx.store.get_profile(profile).name, prompt, seed, self._weights(session, values)

    def generate(self, session: GenerateSession, profile, prompt, seed_mode, seed, strength, iterations,
                 *weights_and_method):
        # The method and the adapter scale come last, so that calls naming the weights by
        # position keep working.
        *weights, method, adapter_scale = weights_and_method
        if method not in self.methods:
            raise InvalidInput(f"method must be one of {', '.join(self.methods)}, got {method!r}")
        iterations = whole_number(iterations, "iterations")  # NaN from an API client is refused in words
        controls = {"seed_mode": FIXED if seed_mode == FIXED else RANDOM, "strength": strength,
                    "iterations": iterations, "method": method, "weights": list(weights[:len(self.reward_names)])}
        method = self.methods[method][0]
        name, prompt, seed, weights = self._run_settings(session, profile, prompt, seed_mode, seed, weights)
        controls["blend"] = {n: w for n, w in weights.items() if blended_profile(n) is not None}
        self.ctx.studio.user_reward(name)  # "fit first" before a job starts
        # Every blended taste is here and fitted, and something is raised, before a job starts.
        check_something_raised(weights, self.ctx.studio.rewards(name, weights), method)
        if method in ONE_PASS:
            check_one_pass_weights(weights, method)
        # "no adapter" or "no VLM profile yet" before a job starts
        if method.startswith("instant"):
            self.ctx.studio.instant_embedding(name)
        elif method == "ppd":
            self.ctx.studio.ppd_embedding(name)
        job = GenerationJob(name, prompt, seed, iterations, controls, self.ctx.studio.prompt_notes(prompt))
        run = self.ctx.studio.personalize(name, prompt, seed, weights, iterations, strength=strength,
                                          stop=job.stop, method=method, adapter_scale=adapter_scale)
        self.jobs.start(name.casefold(), job, run)
        session.showing = name
        yield from self._follow(session, job)

    def running_settings(self, session: GenerateSession, profile, *slots, request: gr.Request = None):
        """On page load and profile switch, before `attach` follows a running job: that job's
        prompt, seed mode as it was started (the seed box shows its seed), strength, iterations, method, reward
        weights and blend, so the settings on screen are the ones it runs with. Without a running
        job only the blend changes: each profile gets back the blend it had on this page. The
        status lines and the trade-off grid speak of the profile shown until now: a switch empties them."""
        if session.showing is not None:  # the blend on screen is the profile shown until now's
            session.blends[session.showing.casefold()] = {profile_reward(n): w
                                                          for n, w in zip(session.blended, slots)}
        name = self.ctx.store.get_profile(profile).name if profile else None
        switched = (session.showing or "").casefold() != (name or "").casefold()
        lines = ("", "", "", None) if switched else (gr.skip(),) * len(self.per_profile_views)
        job = self.jobs.running(name.casefold()) if profile else None
        last = self._last_shown_run(name) if job is None and name and session.showing is None else None
        if last is not None:
            # A page just opened shows the profile's last side by side (`attach`): its controls
            # are the ones that made it, as after a reload mid-run. The seed mode is the page's.
            prompt, _, strength, iterations, weights, blend, method = self._record_controls(session, last, request)
            return (prompt, gr.skip(), strength, iterations, method, *weights, *blend, *lines)
        if job is None:
            blend = session.blends.get(name.casefold(), {}) if name else {}
            if [blended_profile(n) for n in blend] == session.blended:
                return (*(gr.skip(),) * (len(self.running_outputs) - len(lines)), *lines)
            self._set_blend(session, blend, request)
            views = self._blend_views(session, blend)  # blend slots and grid axes, before the lines
            return (*(gr.skip(),) * (len(self.running_outputs) - len(views) - len(lines)), *views, *lines)
        c = job.controls
        self._set_blend(session, c["blend"], request)
        return (job.prompt, c["seed_mode"], c["strength"], c["iterations"], c["method"], *c["weights"],
                *self._blend_views(session, c["blend"]), *lines)

    def attach(self, session: GenerateSession, profile):
        """On page load and profile switch: follow the profile's running job, or show its
        last finished side by side, or say what to do first."""
        session.showing = None
        if not profile:
            yield self._empty(session, "Choose or create a profile at the top of the page.")
            return
        name = self.ctx.store.get_profile(profile).name
        session.showing = name
        job = self.jobs.running(name.casefold())
        if job is not None:
            views = self._follow(session, job)
            # A reloaded page starts with an empty past list, which the run's views leave alone.
            first = next(views, None)
            if first is not None:
                yield (*first[:-1], self._past_gallery(session, name))
            yield from views
            return
        yield self._idle_view(session, name)

    def refresh_idle(self, session: GenerateSession, profile):
        """When the tab opens: a status line that may be stale (a fit made on the Profile tab since)
        is brought up to date. A side by side on screen, or a run being followed, stays."""
        name = self.ctx.store.get_profile(profile).name if profile else None
        if (name is None or (session.showing or "").casefold() != name.casefold() or session.baseline is not None
                or self.jobs.running(name.casefold()) is not None):
            return (gr.skip(),) * len(self.views)
        return self._idle_view(session, name)

    def _last_shown_run(self, name: str) -> ImageRecord | None:
        """The profile's last side by side, when the page can show it."""
        past = self.ctx.store.personalized_images(name, 1)
        if not past or unreadable_run(past[0].params) is not None or self._baseline_seed(past[0].params) is None:
            return None
        return past[0]

    def _idle_view(self, session: GenerateSession, name: str):
        """A profile with no run going: its last side by side, or what to do first."""
        past = self.ctx.store.personalized_images(name, 1)
        if past:
            return self._show_record(session, name, past[0], "Your last side by side")
        if self.ctx.studio.fit_status(name) is None:
            message = f"**{name}** has no fitted taste yet: judge some images and press **Fit my taste** in the Profile tab."
        else:
            message = f"**{name}** is fitted and ready: type a prompt and press **Generate**."
        return self._empty(session, message)

    def _left(self, session: GenerateSession):
        """The last views of a run's stream once the page shows another profile: that profile's
        (idle) view. Sent after any progress view of this stream that may still be on its way,
        so the page ends on the profile it shows whatever the order the two events' views arrive in."""
        return self._idle_view(session, session.showing) if session.showing else (gr.skip(),) * len(self.views)

    def _follow(self, session: GenerateSession, job: GenerationJob):
        key = job.profile.casefold()
        seen = -1
        session.baseline = session.personalized = None
        while True:
            version = job.wait_for_change(seen)
            if (session.showing or "").casefold() != key:
                # The page switched profile: the run is stored for its own, not shown here.
                yield self._left(session)
                return
            if version != seen:
                seen = version
                if job.done.is_set():
                    break
                yield self._progress_view(job)
        if (session.showing or "").casefold() != key:
            yield self._left(session)
            return
        if job.error is not None:
            raise InvalidInput(job.error)
        yield self._finished_view(session, job)

    def _progress_view(self, job: GenerationJob):
        if not job.progress:
            return (f"Starting: seed **{job.seed}** …{notes_text(job.prompt_notes)}", job.seed, None, None, "", "",
                    self._trace([], job.iterations), gr.skip())
        item = job.progress[-1]
        first = next((p.preview for p in job.progress if p.preview is not None), None)
        latest = next((p.preview for p in reversed(job.progress) if p.preview is not None), None)
        baseline, preview = (None if picture is None else self.ctx.picture_file(picture) for picture in (first, latest))
        done = item.iteration / max(job.iterations, 1)
        bar = "█" * round(20 * done) + "░" * (20 - round(20 * done))
        text = (f"Optimising `{bar}` iteration {item.iteration}/{job.iterations} · objective {item.total:+z.2f} · "
                f"best so far {item.best_total:+z.2f} (iteration {item.best_iteration}){notes_text(job.prompt_notes)}")
        return (text, job.seed, baseline, gr.Image(preview, label=PERSONALIZED), "", "",
                self._trace(job.progress, job.iterations), gr.skip())

    def _finished_view(self, session: GenerateSession, job: GenerationJob):
        side = job.result
        session.baseline = side.baseline.record.sha256
        session.personalized = side.personalized.record.sha256
        one_pass = ONE_PASS.get(side.personalized.record.params.get("method"))
        picked = side.personalized.record.params.get("picked_seed")
        how = (f"Stopped after {side.iterations_run} of {job.iterations} iterations" if side.stopped
               else f"Done in one pass of {one_pass} ({side.seconds:.2f} s)" if one_pass
               else f"Done: of {side.iterations_run} seeds, seed **{picked}** scored best" if picked is not None
               else f"Done: {side.iterations_run} iterations")
        if side.improved:
            best = "" if one_pass or picked is not None else f"; the best was iteration {side.best_iteration}"
            deltas = {n: side.personalized.normalised[n] - side.baseline.normalised[n]
                      for n in side.weights if n in side.baseline.normalised and n in side.personalized.normalised}
            verdict = f"{how}{best}, which {gain_text(side.weights, side.gain, self.guards, deltas)}."
        else:
            retry = RETRY.get(side.personalized.record.params.get("method"), RETRY["guidance"])
            verdict = (f"{how}. **No improvement on the baseline** at these settings: the image on the right is "
                       f"not personalized — try {retry}.")
        seeds = (f"Baseline seed **{side.seed}**, personalized seed **{picked}**" if picked not in (None, side.seed)
                 else f"Seed **{side.seed}**")
        text = f"{verdict} {seeds} — both images are stored with their prompt, seed and weights.{notes_text(job.prompt_notes)}"
        return (text, side.seed, self._provenance_png(side.baseline.record, "baseline"),
                self._result_image(side.personalized.record, side.improved),
                scores_table(side.baseline.normalised, side.weights),
                scores_table(side.personalized.normalised, side.weights),
                self._trace(job.progress, job.iterations, side.iterations_run),
                self._past_gallery(session, job.profile))

    def _show_record(self, session: GenerateSession, profile: str, record: ImageRecord, title: str):
        params = record.params
        try:
            baseline = self.ctx.store.image_record(params["baseline"])
        except (KeyError, NotFound):
            return self._empty(session, "That side by side's baseline is no longer in the history.")
        problem = unreadable_run(params)
        if problem is not None:
            return self._empty(session, f"That side by side cannot be shown: {problem}.")
        session.baseline, session.personalized = baseline.sha256, record.sha256
        weights = params.get("weights", {})
        scores = params.get("scores", {})
        before, after = scores.get("baseline", {}), scores.get("personalized", {})
        deltas = {n: after[n] - before[n] for n in weights if n in before and n in after}
        verdict = ("personalized: " + gain_text(weights, params.get("gain", 0), self.guards, deltas)
                   if params.get("improved") else "**no improvement on the baseline**")
        ran = params.get("iterations_run", params.get("iterations"))
        text = f"{title}: “{markdown_text(record.prompt)}”, {record_how(params, record.seed, baseline.seed)}, {verdict}."
        trace = [GuidanceProgress(i, total, scores, {}, 0, total) for i, total, scores in params.get("trace", [])]
        return (text, record.seed, self._provenance_png(baseline, "baseline"),
                self._result_image(record, bool(params.get("improved"))),
                scores_table(scores.get("baseline", {}), weights), scores_table(scores.get("personalized", {}), weights),
                self._trace(trace, params.get("iterations", 1), ran), self._past_gallery(session, profile))

    def _result_image(self, record: ImageRecord, improved: bool):
        return gr.Image(self._provenance_png(record, "personalized"), label=result_label(record.params, improved))

    def _provenance_png(self, record: ImageRecord, role: str) -> str:
        """The image as a PNG that carries how it was made (prompt, seed, generator, weights,
        the fit): what the download button gives. Written once per image."""
        path = self.ctx.ui_cache / "provenance" / f"{record.sha256[:32]}-{role}.png"
        if not path.exists():
            params = record.params
            info = {"prompt": record.prompt, "seed": record.seed, "generator": record.generator,
                    "params": params, "role": role, "weights": params.get("weights"),
                    "scores": (params.get("scores") or {}).get("personalized") if role == "personalized" else None,
                    "fit": params.get("fit") and {k: v for k, v in params["fit"].items() if v is not None}}
            with Image.open(record.path) as image:
                write_png_with_provenance(image.convert("RGB"), path, info)
        return str(path)

    def _empty(self, session: GenerateSession, message: str):
        session.baseline = session.personalized = None
        # The heading too: a result's ("optimised for a blend of your taste and bob's") is not this page's.
        return (message, None, None, gr.Image(None, label=PERSONALIZED), "", "", self._trace([], 1),
                self._past_gallery(session, None))

    def _past_gallery(self, session: GenerateSession, profile: str | None):
        records = self.ctx.store.personalized_images(profile, PAST) if profile else []
        items, session.past = [], []
        for record in records:
            base = record.params.get("baseline")
            try:
                self.ctx.store.image_record(base)
            except NotFound:
                continue
            mark = "✓" if record.params.get("improved") else "·"
            items.append((pair_thumb(self.ctx, base, record.sha256),
                          f"{mark} {method_name(record.params)} · seed {record.seed} · {record.prompt[:40]}"))
            session.past.append(record.sha256)
        rows = max(1, -(-len(items) // PAST_COLUMNS))
        return gr.Gallery(items or None, columns=PAST_COLUMNS, height=gallery_height(rows, PAST_COLUMNS))

    @staticmethod
    def _trace(progress, planned: int, last: int | None = None):
        """The scores by iteration; the axis runs to `planned` while the run goes, and to `last`
        (the iterations it ran) once it ended."""
        rows = []
        for item in progress:
            rows += [(item.iteration, item.total, TOTAL)] + [
                (item.iteration, v, reward_label(n)) for n, v in item.normalised.items()]
        frame = pd.DataFrame(rows, columns=["iteration", "score", "series"])
        # One colour per reward, the same in every run: the plot would colour series in the order
        # they come (a live run and the same run read back differ), and a blended profile's taste
        # must not shift the person's own. Built-in rewards first, blended tastes after.
        rewards = sorted({n for item in progress for n in item.normalised},
                         key=lambda n: (n.startswith("profile:"), n != "user", n))
        names = [TOTAL] + [reward_label(n) for n in rewards]
        colours = {name: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, name in enumerate(names)}
        end = planned if last is None else last
        # Hidden until there is a line to draw: Instant runs no iterations, and an empty chart
        # reads as a failed one.
        return gr.LinePlot(frame, x_lim=[0, max(end, 1)], color_map=colours, visible=len(progress) > 1)

    def show_past(self, session: GenerateSession, profile, event: gr.SelectData):
        if not profile or event.index is None or event.index >= len(session.past):
            raise InvalidInput("that side by side is no longer listed: choose another")
        record = self.ctx.store.image_record(session.past[event.index])
        return self._show_record(session, profile, record, "Past side by side")

    def reuse(self, session: GenerateSession, request: gr.Request = None):
        if session.personalized is None:
            raise InvalidInput("nothing to reuse yet: generate or select a side by side first")
        prompt, seed, strength, iterations, weights, blend, method = self._record_controls(
            session, self.ctx.store.image_record(session.personalized), request)
        return (prompt, FIXED, seed, strength, iterations, *weights, *blend, method)

    def _record_controls(self, session: GenerateSession, record: ImageRecord, request) -> tuple:
        """The controls that made a side by side: prompt, seed, strength, iterations, the reward
        sliders' weights, the blend's views and the method (the blend is set on the session)."""
        params = record.params
        weights = params.get("weights", {})
        self._set_blend(session, weights, request)
        seed = self._baseline_seed(params)
        seed = record.seed if seed is None else seed
        method = next((label for label, (name, _) in self.methods.items() if name == params.get("method")), GUIDED)
        return (record.prompt, seed, params.get("strength", DEFAULT_STRENGTH), params.get("iterations", DEFAULT_ITERATIONS),
                [weights.get(n, 0.0) for n in self.reward_names], self._blend_views(session, weights), method)

    def _baseline_seed(self, params: dict) -> int | None:
        """The seed a run asked for (its baseline's; Best of N's image may be another seed's), or
        None when its baseline is not in this history."""
        try:
            return self.ctx.store.image_record(str(params["baseline"])).seed
        except (KeyError, NotFound):
            return None

    def reuse_png(self, file):
        """Prompt, seed, strength, iterations and weights from a PNG's provenance (a dropped
        file is data: only its text chunks are read and checked)."""
        if file is None:
            raise InvalidInput("drop a PNG made by PrefStudio (or another tool that writes its settings)")
        info = read_provenance(getattr(file, "name", file))
        params = info.get("params") or {}
        weights = info.get("weights") or params.get("weights") or {}
        known = {n: w for n, w in weights.items() if n in self.reward_names}
        seed = info.get("seed")
        # Best of N's image is the seed it picked; its run asked for the baseline's, when that is here.
        asked = self._baseline_seed(params) if "picked_seed" in params else None
        picked = "picked_seed" in params and asked is None
        seed = seed if asked is None else asked
        blended = sorted(n for n in weights if blended_profile(n) is not None)
        # Another tool's (or a hand-edited) record may hold anything under these names: only
        # what the sliders can hold is loaded, and the rest is said.
        settings = {"strength": (params.get("strength"), lambda v: 0 <= v <= 1),
                    "iterations": (params.get("iterations"), lambda v: v == int(v) and 0 <= v <= MAX_UI_ITERATIONS)}
        settings |= {f"{n} weight": (w, lambda v: 0 <= v <= MAX_SLIDER_WEIGHT) for n, w in known.items()}
        loaded, refused = {}, []
        for name, (value, fits) in settings.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and fits(value):
                loaded[name] = int(value) if name == "iterations" else float(value)
            elif value is not None:
                refused.append(f"its {name} {markdown_text(echo(value, 40))} is not one this studio's slider holds, "
                               "not loaded")
        values = ([loaded.get(f"{n} weight", gr.skip() if n in known else 0.0) for n in self.reward_names]
                  if known else [gr.skip()] * len(self.reward_names))
        if params.get("method", "guidance") != "guidance":
            refused.append(f"it was made by {markdown_text(method_name(params))}: choose that under Method to make it "
                           "the same way")
        # The file's text is shown as text: Markdown in it would be rendered (links, images fetched).
        note = (f"Settings of “{markdown_text(info['prompt'][:80])}” loaded" + (f", seed {seed}" if seed is not None else "")
                + (" (the seed Best of N picked; the one its run started from is not in this history)" if picked else "")
                + ("" if known or not weights else "; its rewards are not on this studio's sliders, weights kept")
                + (f"; it blended {markdown_text(', '.join(blended))}: add them to the blend to use them again"
                   if blended else "")
                + "".join(f"; {text}" for text in refused))
        return (info["prompt"], FIXED if seed is not None else RANDOM, seed,
                loaded.get("strength", gr.skip()), loaded.get("iterations", gr.skip()), *values, note + ".")

    def _with_weight_names(self, fn):
        """One named API parameter per slider (weight_user, weight_prompt_consistency, ...)."""
        fixed = ["session", "profile", "prompt", "seed_mode", "seed", "strength", "iterations"]
        names = fixed + [f"weight_{n}" for n in self.reward_names]
        blend = [inspect.Parameter(f"blend_{i + 1}", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=BLEND_WEIGHT)
                 for i in range(MAX_BLENDED)]  # the weights of the profiles added to the blend, in order
        fn.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names] + blend
            + [inspect.Parameter("method", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=GUIDED),
               inspect.Parameter("adapter_scale", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=1.0)])
        return fn

    # -- the blend -------------------------------------------------------------------------
    def _weights(self, session: GenerateSession, values) -> dict[str, float]:
        """The reward sliders' weights, then each blended profile's (empty blend slots are not used)."""
        values = [float(v) for v in values]
        weights = dict(zip(self.reward_names, values[:len(self.reward_names)]))
        slots = values[len(self.reward_names):]
        weights.update((profile_reward(name), value) for name, value in zip(session.blended, slots))
        return weights

    def _axis_choices(self, blended: list[str]) -> list[tuple[str, str]]:
        return [(reward_label(n), n) for n in self.reward_names] + [
            (reward_label(profile_reward(name)), profile_reward(name)) for name in blended]

    def _set_blend(self, session: GenerateSession, weights: dict, request) -> None:
        """The blend of `weights` (a preset's, a past run's) on the slots: the profiles it names
        that this login may use."""
        named = [blended_profile(n) for n in weights if blended_profile(n) is not None]
        session.blended = [n for n in named if self.ctx.access.profiles.may_use(n, login(request))][:MAX_BLENDED]

    def _blend_views(self, session: GenerateSession, weights: dict[str, float] | None = None) -> list:
        """The blend slots (label and weight of each blended profile; empty ones hidden) and the grid's
        choice of rewards, after `session.blended` changed. `weights` sets the slots' weights."""
        weights = weights or {}
        views = []
        for i in range(MAX_BLENDED):
            if i < len(session.blended):
                name = session.blended[i]
                # No weight given: the slot keeps its value (gr.skip() as a value became the value).
                value = {"value": weights[profile_reward(name)]} if profile_reward(name) in weights else {}
                views.append(gr.Slider(label=reward_label(profile_reward(name)), visible=True,
                                       info=f"The fitted taste of {name}, blended in", **value))
            else:
                views.append(gr.Slider(visible=False, value=BLEND_WEIGHT))
        return [*views, gr.CheckboxGroup(choices=self._axis_choices(session.blended))]

    def blend_choices(self, profile, request: gr.Request = None):
        """Fitted profiles this login may use, other than the one being personalized."""
        visible = set(self.ctx.access.profiles.visible(login(request)))
        current = self.ctx.store.get_profile(profile).name if profile else None
        return gr.Dropdown(choices=[n for n in self.ctx.studio.blendable_profiles(current) if n in visible])

    def add_to_blend(self, session: GenerateSession, profile, other, request: gr.Request = None):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        if not other:
            raise InvalidInput("choose a fitted profile to add to the blend")
        other = self.ctx.access.profiles.lookup(other, login(request)).name  # one this login may see
        current = self.ctx.store.get_profile(profile).name
        self.ctx.studio.blended_reward(current, other)  # fitted, and not the profile itself
        if other in session.blended:
            raise InvalidInput(f"the taste of {other} is already in the blend")
        if len(session.blended) >= MAX_BLENDED:
            raise InvalidInput(f"the blend holds at most {MAX_BLENDED} other profiles: clear it first")
        session.blended.append(other)
        return (*self._blend_views(session, {profile_reward(other): BLEND_WEIGHT}), gr.Dropdown(value=None),
                f"Added the taste of **{other}** to the blend at weight {BLEND_WEIGHT:g}: move its slider, then Generate.")

    def clear_blend(self, session: GenerateSession):
        session.blended = []
        return (*self._blend_views(session), "The blend holds your own rewards only.")

    def preset_choices(self, profile):
        return gr.Dropdown(choices=[p.name for p in self.ctx.store.presets(profile)] if profile else [])

    def save_preset(self, session: GenerateSession, profile, name, *values):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        current = self.ctx.store.get_profile(profile).name
        preset = self.ctx.studio.save_preset(current, name, self._weights(session, values))
        shown = ", ".join(f"{markdown_text(reward_label(n))} {w:g}" for n, w in preset.weights.items())
        replaced = "" if preset.replaced is None else (
            f" It replaces **{markdown_text(preset.replaced.name)}** (names ignore case), which was "
            + ", ".join(f"{markdown_text(reward_label(n))} {w:g}" for n, w in preset.replaced.weights.items()) + ".")
        return (gr.Dropdown(choices=[p.name for p in self.ctx.store.presets(current)], value=preset.name),
                f"Saved preset **{markdown_text(preset.name)}** of {current}: {shown}.{replaced} "
                "It is exported with the profile.")

    def load_preset(self, session: GenerateSession, profile, name, request: gr.Request = None):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        if not name:
            raise InvalidInput("choose a preset to load")
        current = self.ctx.store.get_profile(profile).name
        preset = self.ctx.store.get_preset(current, name)
        others = [blended_profile(n) for n in preset.weights if blended_profile(n) is not None]
        if len(others) > MAX_BLENDED:
            raise InvalidInput(f"preset {preset.name!r} blends {len(others)} profiles; the page holds {MAX_BLENDED}")
        for other in others:  # another login's profile reads as missing, and no other names are listed
            if not self.ctx.access.profiles.may_use(other, login(request)):
                raise NotFound(f"preset {preset.name!r} blends profile {other!r}, which is not a profile here: "
                               "import that profile's file, or save the preset without it")
        weights = self.ctx.studio.blend_weights(current, None, preset.name)
        self._set_blend(session, weights, request)
        return (*[weights.get(n, 0.0) for n in self.reward_names], *self._blend_views(session, weights),
                f"Loaded preset **{markdown_text(preset.name)}**.")

    # -- the trade-off grid ------------------------------------------------------------------
    def trade_off(self, session: GenerateSession, profile, prompt, seed_mode, seed, strength, iterations, axes,
                  steps, *values):
        name, prompt, seed, weights = self._run_settings(session, profile, prompt, seed_mode, seed, values)
        steps, iterations = whole_number(steps, "grid steps"), whole_number(iterations, "iterations")
        run = self.ctx.studio.trade_off(name, prompt, list(axes or []), seed=seed, steps=steps, weights=weights,
                                        strength=float(strength), iterations=iterations)
        shown = session.showing  # None for an API client, which never shows a profile
        with self.ctx.streaming(name, "a trade-off grid"):
            for item in self.ctx.steps(run):
                if session.showing != shown:  # the page shows another profile now: the grid is its old one's
                    run.close()
                    yield gr.skip(), gr.skip(), gr.skip()
                    return
                if isinstance(item, str):
                    yield f"{item} · seed **{seed}** …", seed, gr.skip()
                    continue
                yield (*self._grid_views(item, name, seed, iterations),)

    def _grid_views(self, grid, name: str, seed: int, iterations) -> tuple:
        """The finished grid as a PNG with its provenance, and the line that says what it is."""
        path = self.ctx.ui_cache / "grids" / f"{name.casefold()}-{seed}-{secrets.token_hex(4)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cells = grid.cells()
        write_png_with_provenance(draw_grid(grid, self.ctx.store.load_image), path, {
            "prompt": grid.prompt, "seed": grid.seed, "generator": self.ctx.studio.generator.name,
            "role": "trade-off-grid",
            "params": {"personalized_for": name, "axes": grid.axes, "steps": grid.steps,
                       "strength": grid.strength, "iterations": int(iterations),
                       "cells": [{"weights": c.weights, "image": c.side.personalized.record.sha256,
                                  "scores": c.side.personalized.normalised} for c in cells]}})
        return (f"Trade-off grid of {len(cells)} images, seed **{seed}**: "
                + " · ".join(markdown_text(reward_label(a)) for a in grid.axes) + ".", seed, str(path))

    def stop(self, profile):
        job = self.jobs.running(self.ctx.store.get_profile(profile).name.casefold()) if profile else None
        if job is None or job.stop.is_set():
            return "Nothing is running."
        job.stop.set()
        method = job.controls.get("method", GUIDED)
        if self.methods.get(method, METHODS[GUIDED])[0] not in ("guidance", "instant+guidance"):
            return f"{method} makes its image in one step and cannot stop midway: it ends in a moment."
        return "Stop asked: the run ends after its current iteration and keeps the best image so far."

    def _judge_handler(self, kind: str, which: str):
        def judge(session: GenerateSession, profile):
            if not profile:
                raise InvalidInput("choose or create a profile first (top of the page)")
            if session.personalized is None:
                if self.jobs.running(self.ctx.store.get_profile(profile).name.casefold()) is not None:
                    raise InvalidInput("the run is still going: judge its side by side when it ends "
                                       "(or press Stop to end it with the best image so far)")
                raise InvalidInput("nothing to judge yet: generate a side by side first")
            chosen = session.baseline if which == "baseline" else session.personalized
            other = session.personalized if which == "baseline" else session.baseline
            store = self.ctx.store
            if kind == "pair":
                before = store.pair_verdicts(profile, [chosen, other]).get(frozenset((chosen, other)))
                if before is not None and (before.kind, before.image_a) == ("pair", chosen):
                    return f"Already recorded: {which} ≻ the other; nothing changed. " + counts_line(self.ctx, profile)
            elif store.verdicts(profile, [chosen]).get(chosen) == kind:
                return (f"Already {KIND_MARKS[kind]} for the {which} image; nothing changed. "
                        + counts_line(self.ctx, profile))
            if kind == "pair":
                self.ctx.studio.judge(profile, "pair", chosen, other)
                said = f"{which} ≻ the other ({short(chosen)} ≻ {short(other)})"
            else:
                self.ctx.studio.judge(profile, kind, chosen)
                said = f"{KIND_MARKS[kind]} for the {which} image ({short(chosen)})"
            return f"Recorded {said}. " + counts_line(self.ctx, profile)
        return judge

