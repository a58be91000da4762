"""The blind test: the person, not their model, judges personalized against baseline.

For each (prompt, seed) the personalized image and the baseline from the same seed are shown
side by side in a random order, with nothing on the page that tells them apart: both come as
JPEG thumbnails (no provenance metadata) under random file names, and which side is which
lives only in this server's session state. The person picks 1, 2 or a tie; each choice joins
the history as a pair (or tie) judgment, and the win rate with its Wilson interval is computed
from those choices alone, per prompt and overall. Results are shown only when the round ends:
a running tally would tell the person which side they had just picked.

Pairs are made by a background thread, one or two ahead of the person, each step under the
app's compute lock, so the first pair shows as soon as it is ready and the rest are made while
the person looks. The server keeps each profile's latest round, so a reloaded page (or one that
switches back to the profile) picks the round up where it stands.
"""
import logging
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from prefstudio.errors import InvalidInput, PrefStudioError, served
from prefstudio.guidance.noise_optimization import GuidanceProgress
from prefstudio.store.image_files import thumbnail
from prefstudio.studio import SideBySide
from prefstudio.taste_summary import read_prompts
from prefstudio.ui.common import VIEW_SIZE, AppContext, prompt_table_widths, random_seed, user_errors
from prefstudio.ui.evaluate_tab import MAX_PROMPTS, choose_prompts, rate_interval
from prefstudio.validation import validate_seed, whole_number

log = logging.getLogger(__name__)

MAX_SEEDS_PER_PROMPT = 4
DEFAULT_ITERATIONS = 8  # short: the person waits for the first pair
LOOKAHEAD = 2  # pairs made but not yet judged, the one on screen included
IDLE_LIMIT_S = 1800  # a round nobody judges for this long stops making pairs
KEYS = ("**Keys** (when not typing in a box): <kbd>1</kbd> the first image is better · "
        "<kbd>2</kbd> the second is better · <kbd>T</kbd> tie")
# Rates in percent, as the summary line above the table gives them.
COLUMNS = ["prompt", "judged", "personalized preferred", "ties", "baseline preferred", "win rate %",
           "95% low %", "95% high %"]
OUTCOME = {"personalized": 1.0, "tie": 0.5, "baseline": 0.0}


@dataclass
class BlindPair:
    prompt: str
    seed: int
    personalized: str  # image ids
    baseline: str
    personalized_left: bool
    left_file: Path  # neutral copies the page receives
    right_file: Path
    choice: str | None = None  # "personalized", "baseline" or "tie", once the person chose


def same_pixels(first: Path, second: Path) -> bool:
    with Image.open(first) as a, Image.open(second) as b:
        return a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


@dataclass
class BlindRound:
    profile: str
    plan: list[tuple[str, int]]  # (prompt, seed), in the order shown
    iterations: int
    controls: tuple = ()  # prompts, K, seeds per prompt, iterations, first seed: as the page held them
    pairs: list[BlindPair] = field(default_factory=list)
    unchanged: list[tuple[str, int]] = field(default_factory=list)  # personalization returned the baseline
    on_screen: int | None = None  # index in pairs awaiting the person's choice
    making: str = ""  # what the worker is doing, for the status line
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # the worker has finished
    changed: threading.Condition = field(default_factory=threading.Condition)

    def judged(self) -> list[BlindPair]:
        return [p for p in self.pairs if p.choice is not None]

    def next_unjudged(self) -> int | None:
        return next((i for i, p in enumerate(self.pairs) if p.choice is None), None)

    def finished(self) -> bool:
        """Nothing more to show: every pair made is judged and none is coming."""
        return self.next_unjudged() is None and (self.done.is_set() or self.stop.is_set())

    def update(self, apply: Callable[[], None]) -> None:
        with self.changed:
            apply()
            self.changed.notify_all()


@dataclass
class BlindSession:
    round: BlindRound | None = None


def draw_sides() -> bool:
    """True: the personalized image goes on the left. Drawn fresh for every pair."""
    return secrets.randbelow(2) == 1


def plan_round(prompts: list[str], per_prompt: int, first_seed: int) -> list[tuple[str, int]]:
    """Every prompt once, then every prompt again with the next seed…; pair i uses seed + i."""
    per_prompt = whole_number(per_prompt, "seeds per prompt")
    if not 1 <= per_prompt <= MAX_SEEDS_PER_PROMPT:
        raise InvalidInput(f"seeds per prompt must lie in [1, {MAX_SEEDS_PER_PROMPT}], got {per_prompt}")
    order = [prompt for _ in range(per_prompt) for prompt in prompts]
    return [(prompt, (first_seed + i) % 2**32) for i, prompt in enumerate(order)]


def results(pairs: list[BlindPair]) -> tuple[tuple[float, float, float] | None, pd.DataFrame]:
    """The overall win rate of personalized (a tie counts half) with its 95% Wilson interval,
    and one row per prompt, from the person's choices only."""
    judged = [p for p in pairs if p.choice is not None]
    rows = []
    for prompt in dict.fromkeys(p.prompt for p in judged):
        choices = [p.choice for p in judged if p.prompt == prompt]
        rate, low, high = rate_interval([OUTCOME[c] for c in choices])
        rows.append((prompt, len(choices), choices.count("personalized"), choices.count("tie"),
                     choices.count("baseline"), 100 * rate, 100 * low, 100 * high))
    overall = rate_interval([OUTCOME[p.choice] for p in judged]) if judged else None
    return overall, pd.DataFrame(rows, columns=COLUMNS).round(1)


def neutral_copy(image: Path) -> Path:
    """The image as the page gets it: a metadata-free JPEG under a random name in gradio's
    upload folder (served as it is, deleted by gradio's cache cleaning), so neither its URL
    nor its bytes say which side it is."""
    folder = Path(gr.utils.get_upload_folder()) / f"prefstudio-blind-{secrets.token_urlsafe(18)}"
    folder.mkdir(parents=True)
    copy = folder / "image.jpg"
    shutil.copyfile(thumbnail(image, VIEW_SIZE), copy)
    return copy


class BlindEvaluation:
    """The blind test's section of the Evaluate tab."""

    def __init__(self, ctx: AppContext, profile: gr.Dropdown, opened: gr.State):
        self.ctx = ctx
        # Each profile's latest round, by (id, created): a profile deleted and made again under
        # its name is another profile and does not inherit the round.
        self.rounds: dict[tuple[int, str], BlindRound] = {}
        self.rounds_lock = threading.Lock()
        ctx.under_way.append(lambda name: "a blind round" if self._round_going(name) else None)
        self.all_prompts = read_prompts()
        self.session = gr.State(BlindSession())
        gr.Markdown("For each prompt, the personalized image and the baseline from the **same seed**, in a random "
                    "order and unlabelled. **You** pick the better one; the win rate comes from your choices "
                    "only (your taste model plays no part in it), and each choice joins your history as a pair.")
        with gr.Row():
            self.k = gr.Slider(1, MAX_PROMPTS, value=4, step=1, label="K prompts", elem_id="ps-blind-k")
            self.per_prompt = gr.Slider(1, MAX_SEEDS_PER_PROMPT, value=2, step=1, label="Seeds per prompt",
                                        elem_id="ps-blind-per-prompt")
            self.iterations = gr.Slider(0, 100, value=DEFAULT_ITERATIONS, step=1, label="Iterations per pair",
                                        elem_id="ps-blind-iterations")
            # Text, not a number box: a blank number box would send 0, the same images every round.
            self.seed = gr.Textbox(label="First seed", placeholder="blank: random", elem_id="ps-blind-seed")
        self.prompts = gr.Textbox(label="Prompts (optional, one per line)", lines=2, elem_id="ps-blind-prompts",
                                  placeholder="blank: K prompts drawn from the built-in list")
        with gr.Row():
            start = gr.Button("Start blind test", variant="primary", elem_id="ps-blind-start")
            stop = gr.Button("■ End round", variant="stop", elem_id="ps-blind-stop")
        self.status = gr.Markdown(elem_id="ps-blind-status")
        with gr.Row():
            self.left = gr.Image(label="1", type="filepath", interactive=False, height=360,
                                 buttons=["fullscreen"], elem_id="ps-blind-left")
            self.right = gr.Image(label="2", type="filepath", interactive=False, height=360,
                                  buttons=["fullscreen"], elem_id="ps-blind-right")
        with gr.Row():
            pick_left = gr.Button("◀ 1 is better (1)", variant="primary", elem_id="ps-blind-pick-left")
            tie = gr.Button("= Tie (T)", elem_id="ps-blind-tie")
            pick_right = gr.Button("2 is better (2) ▶", variant="primary", elem_id="ps-blind-pick-right")
        gr.Markdown(KEYS, elem_classes="ps-keys")
        self.result = gr.Markdown(elem_id="ps-blind-result")
        self.table = gr.Dataframe(headers=COLUMNS, interactive=False, label="Per prompt, from your choices",
                                  elem_id="ps-blind-table", wrap=True,
                                  column_widths=prompt_table_widths(len(COLUMNS)))
        # Which pair is on screen (its number only): a choice names the pair it was made on, so
        # a second key press that left before the next pair arrived is not taken for that pair.
        self.shown = gr.Number(value=0, precision=0, visible=False, elem_id="ps-blind-shown")
        views = [self.left, self.right, self.status, self.result, self.table, self.shown]
        start.click(user_errors(self.start), [self.session, profile, self.prompts, self.k, self.per_prompt,
                                              self.iterations, self.seed], views,
                    api_name="blind_start", concurrency_limit=None)
        for button, side, name in ((pick_left, "left", "blind_pick_1"), (pick_right, "right", "blind_pick_2"),
                                   (tie, "tie", "blind_tie")):
            # The person's click waits (for the next pair) without holding any model work up.
            button.click(user_errors(self.chooser(side)), [self.session, profile, self.shown], views,
                         api_name=name, concurrency_limit=None)
        stop.click(self.end, self.session, views, api_name="blind_stop", concurrency_limit=None)
        # `opened` is the profile this page last opened: set on page load and on every switch.
        opened.change(user_errors(self.attach), [self.session, opened], views, api_visibility="private",
                      concurrency_limit=None)
        opened.change(user_errors(self.round_controls), opened,
                      [self.prompts, self.k, self.per_prompt, self.iterations, self.seed], api_visibility="private")

    def _key(self, profile: str) -> tuple[int, str]:
        found = self.ctx.store.get_profile(profile)
        return found.id, found.created

    def _round_going(self, profile: str) -> bool:
        with self.rounds_lock:
            blind = self.rounds.get(self._key(profile))
        return blind is not None and not (blind.stop.is_set() or blind.finished())  # ended, or all judged

    def attach(self, session: BlindSession, profile):
        """On page load and profile switch: the profile's latest round where it stands (the pair
        awaiting a choice, the next one being made, or the results); nothing changes without one."""
        with self.rounds_lock:
            blind = self.rounds.get(self._key(profile)) if profile else None
        if blind is None:
            if session.round is None:
                yield (gr.skip(),) * 6
            else:  # another profile's round was on screen: it goes on for that profile, not here
                session.round = None
                yield None, None, "No blind round for this profile: press **Start blind test**.", "", None, 0
            return
        session.round = blind
        yield from self._show_next(blind)

    def round_controls(self, profile):
        """On page load and profile switch: the settings the profile's latest round was started
        with (its first seed too, when it was drawn), so the controls on screen are that round's."""
        with self.rounds_lock:
            blind = self.rounds.get(self._key(profile)) if profile else None
        return blind.controls if blind is not None else (gr.skip(),) * 5

    # -- the round's worker --------------------------------------------------------------
    def start(self, session: BlindSession, profile, prompts_text, k, per_prompt, iterations, seed):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        seed = str(seed or "").strip()
        first_seed = validate_seed(seed) if seed else random_seed()
        prompts = choose_prompts(self.all_prompts, prompts_text, k, first_seed)
        plan = plan_round(prompts, per_prompt, first_seed)
        if not 0 <= whole_number(iterations, "iterations") <= 100:
            raise InvalidInput(f"iterations must be a number in [0, 100], got {iterations!r}")
        self.ctx.run(self.ctx.studio.user_reward, profile)  # says "fit first" before any work is done
        blind = BlindRound(profile, plan, int(iterations), controls=(prompts_text, k, per_prompt, iterations,
                                                                     str(first_seed)))
        with self.rounds_lock:  # one round per profile, and one per page
            for earlier in (session.round, self.rounds.get(self._key(profile))):
                if earlier is not None:
                    earlier.update(earlier.stop.set)
            self.rounds[self._key(profile)] = session.round = blind
        threading.Thread(target=self._make_pairs, args=(blind,), daemon=True, name="blind-pairs").start()
        yield from self._show_next(blind)

    def _make_pairs(self, blind: BlindRound) -> None:
        studio = self.ctx.studio
        try:
            for i, (prompt, seed) in enumerate(blind.plan):
                with blind.changed:  # at most LOOKAHEAD pairs waiting for the person
                    if not blind.changed.wait_for(
                            lambda: blind.stop.is_set()
                            or len(blind.pairs) - len(blind.judged()) < LOOKAHEAD, timeout=IDLE_LIMIT_S):
                        blind.stop.set()  # nobody is judging: stop spending the CPU
                if blind.stop.is_set():
                    return
                blind.update(lambda: setattr(blind, "making", f"making pair {i + 1} of {len(blind.plan)}"))
                side = None
                for item in self.ctx.steps(studio.personalize(blind.profile, prompt, seed, None,
                                                              blind.iterations, stop=blind.stop, blind=True)):
                    if isinstance(item, GuidanceProgress):
                        blind.update(lambda: setattr(
                            blind, "making", f"making pair {i + 1} of {len(blind.plan)} "
                                             f"(iteration {item.iteration} of {blind.iterations})"))
                    elif isinstance(item, SideBySide):
                        side = item
                if blind.stop.is_set():
                    return  # cut short: not what the person asked to judge
                self._add(blind, side)
        except PrefStudioError as error:
            message = served(error)  # `error` is unbound once the except block ends
            blind.update(lambda: setattr(blind, "error", message))
        except Exception:  # a bug: logged whole, told to the page in one line
            log.exception("blind pair generation failed")
            blind.update(lambda: setattr(blind, "error", "making a pair failed with an internal error "
                                                         "(see the server log)"))
        finally:
            blind.update(blind.done.set)

    @staticmethod
    def _add(blind: BlindRound, side: SideBySide) -> None:
        personalized, baseline = side.personalized.record, side.baseline.record
        if same_pixels(personalized.path, baseline.path):
            # Nothing to compare: the same picture twice tells the person nothing either way.
            # (Pixels, not ids: the two PNGs' metadata differ, so their ids always do.)
            blind.update(lambda: blind.unchanged.append((side.prompt, side.seed)))
            return
        personalized_left = draw_sides()
        first, second = (personalized, baseline) if personalized_left else (baseline, personalized)
        pair = BlindPair(side.prompt, side.seed, personalized.sha256, baseline.sha256, personalized_left,
                         neutral_copy(first.path), neutral_copy(second.path))
        blind.update(lambda: blind.pairs.append(pair))

    # -- what the person sees and does ---------------------------------------------------
    def _show_next(self, blind: BlindRound):
        """Yields the page's views until the next pair is on screen, or the round's results."""
        told = None
        while True:
            with blind.changed:
                index = blind.next_unjudged()
                if index is None and not blind.finished():
                    blind.changed.wait(timeout=0.5)
                    index = blind.next_unjudged()
                if blind.stop.is_set():
                    index = None  # ended: a pair made but not yet shown is not judged
                blind.on_screen = index
                making, error, finished = blind.making, blind.error, blind.stop.is_set() or blind.finished()
            if index is not None:
                pair = blind.pairs[index]
                judged = len(blind.judged())
                yield (str(pair.left_file), str(pair.right_file),
                       f"Pair {judged + 1} of {len(blind.plan) - len(blind.unchanged)}: which do you prefer?",
                       "Results appear when the round ends (a running tally would tell you which side "
                       "you had picked).", None, index + 1)
                return
            if finished or error:
                yield self._final(blind, error)
                return
            if making != told:  # each change once, not a message every half second
                told = making
                yield None, None, f"Preparing the next pair: {making}…", gr.skip(), gr.skip(), 0

    def _final(self, blind: BlindRound, error: str | None = None):
        overall, table = results(blind.pairs)
        judged = blind.judged()
        unchanged = (f" {len(blind.unchanged)} seed{'s' if len(blind.unchanged) != 1 else ''} came back "
                     "unchanged by personalization and were not shown." if blind.unchanged else "")
        if overall is None:
            summary = "No choices were made in this round."
        else:
            rate, low, high = overall
            count = {c: sum(p.choice == c for p in judged) for c in OUTCOME}
            summary = (f"**You preferred the personalized image {rate:.0%} of the time** (95% interval "
                       f"{low:.0%}–{high:.0%}, ties count half) over {len(judged)} blind pair{'s' if len(judged) != 1 else ''}: "
                       f"personalized {count['personalized']}, tie {count['tie']}, baseline {count['baseline']}.")
        ended = "Round over." if error is None else f"Round ended: {error}."
        left_unjudged = len(blind.plan) - len(judged) - len(blind.unchanged)
        if left_unjudged > 0 and error is None:
            ended = f"Round ended early ({left_unjudged} pair{'s' if left_unjudged != 1 else ''} not judged)."
        return None, None, ended, summary + unchanged, table, 0

    def chooser(self, side: str):
        def choose(session: BlindSession, profile, shown):
            yield from self.choose(session, profile, shown, side)
        choose.__name__ = f"blind_{side}"
        return choose

    def choose(self, session: BlindSession, profile, shown, side: str):
        blind = session.round
        if blind is None:
            raise InvalidInput("no blind test is running: press Start blind test")
        if profile != blind.profile:
            raise InvalidInput(f"this blind round is for profile {blind.profile!r}: switch back to it, "
                               "or start a new round")
        with blind.changed:
            index = blind.on_screen
            if index is None or blind.pairs[index].choice is not None:
                if blind.stop.is_set() or blind.finished():  # ended early, or every pair judged
                    raise InvalidInput("this blind round is over: press Start blind test for another")
                raise InvalidInput("no pair is waiting for your choice yet")
            if shown != index + 1:
                raise InvalidInput(f"that choice was made on pair {shown}, not on the pair now on screen: "
                                   "choose again")
            pair = blind.pairs[index]
            if side == "tie":
                self.ctx.studio.judge(blind.profile, "tie", pair.personalized, pair.baseline)
                choice = "tie"
            else:
                personalized_won = pair.personalized_left == (side == "left")
                better, worse = ((pair.personalized, pair.baseline) if personalized_won
                                 else (pair.baseline, pair.personalized))
                self.ctx.studio.judge(blind.profile, "pair", better, worse)
                choice = "personalized" if personalized_won else "baseline"
            pair.choice = choice  # only once the judgment is stored
            blind.on_screen = None
            blind.changed.notify_all()
        yield from self._show_next(blind)

    def end(self, session: BlindSession):
        blind = session.round
        if blind is None:
            return None, None, "No blind test is running.", gr.skip(), gr.skip(), 0
        blind.update(blind.stop.set)
        with blind.changed:
            blind.on_screen = None
        return self._final(blind)
