"""Label: generate candidates, judge them one at a time (👍/👎) or the better of two.

Every click is one judgment in the history store, on disk when the click returns; the
session only remembers which candidates are on screen and which judgments it made (for
undo). What each candidate was judged is read back from the store, so it is never stale.
An image (and a pair) has one verdict: judging it again replaces it, the same verdict again
is a no-op. Each click reads only the candidates on screen, never the whole history.
"""
import random
import secrets
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import gradio as gr

from prefstudio.errors import InvalidInput, NoSuchJudgment, NotFound
from prefstudio.store.image_files import load_untrusted_image
from prefstudio.taste_summary import read_prompts
from prefstudio.ui.common import (
    markdown_text,
    KIND_MARKS, PROMPT_LINES, VIEW_SIZE, AppContext, counts_line, empty_after, gallery_height, notes_text, random_seed,
    short, thumb, user_errors,
)
from prefstudio.validation import validate_prompt, validate_seed, whole_number

MAX_CANDIDATES = 16
GALLERY_COLUMNS = 8
DEFAULT_CANDIDATES = 8
SINGLE, PAIRWISE = "👍/👎 one at a time", "Better of two"
SINGLE_KEYS = ("**Keys** (when not typing in a box): <kbd>L</kbd> like · <kbd>D</kbd> dislike · "
               "<kbd>S</kbd> skip · <kbd>←</kbd> <kbd>→</kbd> previous / next · <kbd>U</kbd> undo")
PAIR_KEYS = ("**Keys** (when not typing in a box): <kbd>1</kbd> or <kbd>←</kbd> left is better · "
             "<kbd>2</kbd> or <kbd>→</kbd> right is better · <kbd>T</kbd> tie · <kbd>S</kbd> skip · "
             "<kbd>U</kbd> undo")


@dataclass
class LabelSession:
    candidates: list[str] = field(default_factory=list)  # image ids in gallery order
    current: int = 0
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (left, right) indices
    pair_index: int = 0
    # (profile id, judgment id, image) for undo: the id, as a profile may be renamed meanwhile
    made: list[tuple[int, int, str]] = field(default_factory=list)
    answers: int = 0  # views rendered: the page's keys wait for the next one (ui/app.py)

    def show(self, candidates: list[str]) -> None:
        self.candidates, self.current, self.pair_index = candidates, 0, 0
        self.pairs = pair_schedule(len(candidates), seed="".join(candidates))


def pair_schedule(n: int, seed: str) -> list[tuple[int, int]]:
    """Every pair once: disjoint neighbours first (each image is seen early), then the rest
    shuffled; each pair's sides are drawn at random so position carries no preference."""
    rng = random.Random(seed)
    first = [(i, i + 1) for i in range(0, n - 1, 2)]
    rest = [p for p in combinations(range(n), 2) if p not in first]
    rng.shuffle(rest)
    return [(b, a) if rng.random() < 0.5 else (a, b) for a, b in first + rest]


def parse_seeds(text: str) -> list[int] | None:
    """'1, 2, 3' or '1 2 3' -> [1, 2, 3]; blank -> None (random seeds)."""
    items = (text or "").replace(",", " ").split()
    if not items:
        return None
    if len(items) > MAX_CANDIDATES:
        raise InvalidInput(f"{len(items)} seeds given; at most {MAX_CANDIDATES} candidates at a time")
    seeds = []
    for item in items:
        if not item.lstrip("-").isdigit():
            raise InvalidInput(f"seeds are whole numbers separated by commas or spaces; {item!r} is not one")
        seeds.append(validate_seed(item))
    repeated = next((seed for seed in seeds if seeds.count(seed) > 1), None)
    if repeated is not None:
        raise InvalidInput(f"seed {repeated} is given {seeds.count(repeated)} times: each seed makes one candidate")
    return seeds


class LabelTab:
    def __init__(self, ctx: AppContext, profile: gr.Dropdown):
        self.ctx = ctx
        self.prompts = read_prompts()
        self.session = gr.State(LabelSession())
        with gr.Row(equal_height=True):
            self.prompt = gr.Textbox(label="Prompt", placeholder="what should the images show?",  # as Generate's
                                     scale=5, max_lines=PROMPT_LINES, elem_id="ps-label-prompt")
            surprise = gr.Button("🎲 Surprise me", scale=1)
            generate = gr.Button("Generate candidates", variant="primary", scale=1, elem_id="ps-generate")
        with gr.Row():
            self.n = gr.Slider(1, MAX_CANDIDATES, value=DEFAULT_CANDIDATES, step=1, label="Candidates")
            self.seeds = gr.Textbox(label="Seeds (optional)", placeholder="e.g. 7, 42, 1234 — blank: random",
                                    info="Given seeds replace the count; each candidate shows its seed.",
                                    elem_id="ps-label-seeds")
            self.mode = gr.Radio([SINGLE, PAIRWISE], value=SINGLE, label="How to judge")
        with gr.Column(visible=True) as single:
            with gr.Row():
                self.view = gr.Image(label="Candidate", type="filepath", interactive=False, height=360,
                                     buttons=["fullscreen"], elem_id="ps-view")
                with gr.Column(scale=1, min_width=240):
                    self.view_info = gr.Markdown("Type a prompt and press **Generate candidates** "
                                                 "(or 🎲 Surprise me).", elem_id="ps-view-info")
                    with gr.Row():
                        like = gr.Button("👍 Like (L)", variant="primary", elem_id="ps-like")
                        dislike = gr.Button("👎 Dislike (D)", variant="stop", elem_id="ps-dislike")
                    with gr.Row():
                        previous = gr.Button("← Previous", size="sm", elem_id="ps-prev")
                        skip = gr.Button("⏭ Skip (S)", size="sm", elem_id="ps-skip")
                        following = gr.Button("Next →", size="sm", elem_id="ps-next")
                    undo = gr.Button("↶ Undo (U)", size="sm", elem_id="ps-undo")
                    self.status = gr.Markdown(elem_id="ps-label-status")
                    gr.Markdown(SINGLE_KEYS, elem_classes="ps-keys")
        with gr.Column(visible=False) as pairwise:
            self.pair_info = gr.Markdown("Generate at least two candidates to compare.", elem_id="ps-pair-info")
            with gr.Row():
                self.left = gr.Image(label="Left (1 / ←)", type="filepath", interactive=False, height=320,
                                     buttons=["fullscreen"], elem_id="ps-left")
                self.right = gr.Image(label="Right (2 / →)", type="filepath", interactive=False, height=320,
                                      buttons=["fullscreen"], elem_id="ps-right")
            with gr.Row():
                pick_left = gr.Button("◀ Left is better (1)", variant="primary", elem_id="ps-pick-left")
                tie = gr.Button("= Tie (T)", elem_id="ps-tie")
                pair_skip = gr.Button("⏭ Skip (S)", elem_id="ps-pair-skip")
                pick_right = gr.Button("Right is better (2) ▶", variant="primary", elem_id="ps-pick-right")
            with gr.Row():
                with gr.Column(scale=1, min_width=160):
                    pair_undo = gr.Button("↶ Undo (U)", size="sm", elem_id="ps-pair-undo")
                    suggest = gr.Button("💡 Suggest what to judge", size="sm", elem_id="ps-suggest")
                with gr.Column(scale=3):
                    self.pair_status = gr.Markdown(elem_id="ps-pair-status")
            gr.Markdown(PAIR_KEYS, elem_classes="ps-keys")
        self.gallery = gr.Gallery(label="Candidates (click one to judge it)", columns=GALLERY_COLUMNS,
                                  height=gallery_height(0, GALLERY_COLUMNS),
                                  allow_preview=False, object_fit="cover", elem_id="ps-candidates",
                                  buttons=[])
        with gr.Accordion("Judge your own images", open=False):
            with gr.Row():
                self.uploads = gr.File(label="Images (PNG, JPEG, WebP, GIF, BMP; up to 64 MB and 40 MP each)",
                                       file_count="multiple", file_types=["image"], scale=2,
                                       elem_id="ps-label-uploads")
                with gr.Column(scale=1):
                    self.upload_prompt = gr.Textbox(label="What do they show?", placeholder="a short description")
                    add = gr.Button("Add as candidates", elem_id="ps-label-add")

        # The pair on screen, sent with each pick: one made before the next pair showed is refused.
        self.shown_pair = gr.Textbox(visible=False, elem_id="ps-shown-pair")
        # The candidate on screen (with the number of the answer that showed it), sent with each
        # verdict: one meant for another candidate is refused. In the page but never shown, so
        # that the keys can see an answer come (SHORTCUTS_JS).
        self.shown_candidate = gr.Textbox(elem_id="ps-shown-candidate", elem_classes="ps-hidden",
                                          show_label=False, container=False)
        views = [self.gallery, self.view, self.view_info, self.left, self.right, self.pair_info, self.status,
                 self.pair_status, self.shown_pair, self.shown_candidate]
        self.views = views
        s, p = self.session, profile
        inputs = [s, p, self.prompt, self.n, self.seeds]
        self.generated = [
            generate.click(user_errors(self.generate), inputs, views, api_name="generate_candidates"),
            self.prompt.submit(user_errors(self.generate), inputs, views, api_visibility="private"),
            # 🎲 does what its hint says: a prompt, then its candidates.
            surprise.click(self.surprise, None, self.prompt, api_name="surprise").then(
                user_errors(self.generate), inputs, views, api_visibility="private"),
        ]
        # Keys come faster than answers: the page holds each one-at-a-time key until the answer to
        # the one before it shows (SHORTCUTS_JS), so each judges the candidate the one before moved
        # to; a verdict that still arrives for another candidate (a double click) is refused. Every
        # click is queued (gradio drops a click while the same button's last one is pending) and
        # runs one at a time. A pair's next pair is not on screen until the answer comes: a pick
        # sent before then is refused, not spent on it.
        in_order = {"trigger_mode": "multiple", "concurrency_id": "label-verdicts", "concurrency_limit": 1}
        shown = [s, p, self.shown_candidate]
        like.click(user_errors(self.like), shown, views, api_name="like", **in_order)
        dislike.click(user_errors(self.dislike), shown, views, api_name="dislike", **in_order)
        skip.click(user_errors(self.skip), shown, views, api_name="skip", **in_order)
        previous.click(self.previous, [s, p], views, api_name="previous", **in_order)
        following.click(self.next, [s, p], views, api_name="next", **in_order)
        pick_left.click(user_errors(self.pick_left), [s, p, self.shown_pair], views, api_name="pick_left", **in_order)
        pick_right.click(user_errors(self.pick_right), [s, p, self.shown_pair], views, api_name="pick_right", **in_order)
        tie.click(user_errors(self.tie), [s, p, self.shown_pair], views, api_name="tie", **in_order)
        pair_skip.click(user_errors(self.pair_skip), [s, p, self.shown_pair], views, api_name="skip_pair", **in_order)
        undo.click(user_errors(self.undo), [s, p], views, api_name="undo", **in_order)
        pair_undo.click(user_errors(self.undo), [s, p], views, api_visibility="private", **in_order)
        suggest.click(user_errors(self.suggest), [s, p], views, api_name="suggest")
        self.gallery.select(self.select, [s, p], views, api_visibility="private")
        self.mode.change(lambda mode: (gr.Column(visible=mode == SINGLE), gr.Column(visible=mode == PAIRWISE)),
                         self.mode, [single, pairwise], api_visibility="private")
        self.uploaded = add.click(user_errors(self.add_uploads), [s, p, self.uploads, self.upload_prompt],
                                  views, api_name="add_images")
        empty_after(self.uploaded, self.uploads)
        # A refusal (said in a toast) leaves no earlier success on the status line.
        for event in (*self.generated, self.uploaded):
            event.failure(self.status_without_message, p, self.status, api_visibility="private")

    # -- actions --------------------------------------------------------------------------
    def status_without_message(self, profile) -> str:
        try:
            return counts_line(self.ctx, profile)
        except NotFound:  # a name typed into the menu that is no profile: that refusal says so
            return ""

    def surprise(self) -> str:
        return secrets.choice(self.prompts)

    def generate(self, session: LabelSession, profile, prompt, n, seeds_text):
        prompt = validate_prompt(prompt)
        n = whole_number(n, "number of candidates")
        if not 1 <= n <= MAX_CANDIDATES:
            raise InvalidInput(f"number of candidates must lie in [1, {MAX_CANDIDATES}], got {n}")
        seeds = parse_seeds(seeds_text) or [random_seed() for _ in range(int(n))]
        records = self.ctx.run(self.ctx.studio.generate_candidates, prompt, int(n), seeds)
        session.show([r.sha256 for r in records])
        self._first_unjudged(session, profile)  # seeds given again bring back images judged before
        notes = notes_text(self.ctx.studio.prompt_notes(prompt))
        return self.render(session, profile,
                           f"{len(records)} candidate{'s' if len(records) != 1 else ''} for “{markdown_text(prompt)}”.{notes}")

    def add_uploads(self, session: LabelSession, profile, files, prompt):
        if not files:
            raise InvalidInput("choose one or more image files to add")
        prompt = validate_prompt(prompt)
        if len(files) > MAX_CANDIDATES:
            raise InvalidInput(f"{len(files)} files chosen; at most {MAX_CANDIDATES} can be added at a time")
        paths = [getattr(f, "name", f) for f in files]
        for path in paths:  # every file is checked before any is stored
            try:
                load_untrusted_image(path)
            except InvalidInput as error:
                raise InvalidInput(f"{_file_name(path)}: {error}; no image was added") from None
        records = [self.ctx.store.import_image(path, prompt) for path in paths]
        session.show([r.sha256 for r in records])
        self._first_unjudged(session, profile)
        return self.render(session, profile, f"Added {len(records)} of your images as candidates.")

    def _judge(self, session, profile, kind, a, b=None):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        judgment = self.ctx.studio.judge(profile, kind, a, b)
        made = (self.ctx.store.get_profile(judgment.profile).id, judgment.id, a)
        if made not in session.made:  # the same verdict again is the existing judgment: nothing to undo
            session.made.append(made)
        return judgment

    def _judge_current(self, session, profile, kind, shown_candidate=None):
        """`shown_candidate`: the candidate the page showed when the verdict was given
        (`_candidate_on_screen`); a double click, or a key press whose request overtook the one
        before it, would otherwise judge another image. An API client may leave it out."""
        if not session.candidates:
            raise InvalidInput("nothing to judge yet: generate candidates first")
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        sha = session.candidates[session.current]
        if shown_candidate and shown_candidate.split("@")[0] != sha:
            raise InvalidInput("the candidate on screen changed before this verdict reached the studio: nothing "
                               "was recorded; look at the candidate on screen, then judge it")
        before = self.ctx.store.verdicts(profile, [sha]).get(sha)
        if before == kind:  # a repeated key press or click: one verdict per image, already given
            return self.render(session, profile, f"Already {KIND_MARKS[kind]} for {short(sha)}: nothing changed.")
        self._judge(session, profile, kind, sha)
        verdicts = self._verdicts(session, profile)
        n = len(session.candidates)
        after = [(session.current + k) % n for k in range(1, n + 1)]
        pending = [i for i in after if session.candidates[i] not in verdicts]
        session.current = pending[0] if pending else session.current
        done = "" if pending else " All candidates judged: generate more, or compare them in “Better of two”."
        replaced = f" (replaces {KIND_MARKS[before]})" if before else ""
        return self.render(session, profile, f"{KIND_MARKS[kind]} recorded for {short(sha)}{replaced}.{done}",
                           pair_view=False)

    def like(self, session, profile, shown_candidate=None):
        return self._judge_current(session, profile, "like", shown_candidate)

    def dislike(self, session, profile, shown_candidate=None):
        return self._judge_current(session, profile, "dislike", shown_candidate)

    def skip(self, session, profile, shown_candidate=None):
        return self._judge_current(session, profile, "skip", shown_candidate)

    def _move(self, session, profile, step):
        if session.candidates:
            session.current = (session.current + step) % len(session.candidates)
        return self.render(session, profile)

    def previous(self, session, profile):
        return self._move(session, profile, -1)

    def next(self, session, profile):
        return self._move(session, profile, +1)

    def select(self, session, profile, event: gr.SelectData):
        if session.candidates and 0 <= event.index < len(session.candidates):
            session.current = event.index
        return self.render(session, profile)

    def _pick(self, session, profile, outcome, shown_pair=None):
        """`shown_pair`: the pair the page showed when the key was pressed (`_pair_on_screen`);
        a pick sent before the answer to the last one came is for a pair no longer current.
        An API client may leave it out."""
        on_screen = self._pair_on_screen(session)
        if shown_pair and shown_pair != on_screen:
            raise InvalidInput("the pair on screen changed before this choice reached the studio: nothing was "
                               + ("recorded; look at the pair on screen, then choose" if on_screen else
                                  "recorded, and every pair of this batch is compared now"))
        if session.pair_index >= len(session.pairs):
            raise InvalidInput("every pair of this batch is compared: generate new candidates" if session.pairs
                               else "no pair to compare: generate at least two candidates")
        left, right = (session.candidates[i] for i in session.pairs[session.pair_index])
        if outcome == "left":
            self._judge(session, profile, "pair", left, right)
        elif outcome == "right":
            self._judge(session, profile, "pair", right, left)
        else:
            self._judge(session, profile, outcome, left, right)
        session.pair_index += 1
        said = {"left": f"{short(left)} ≻ {short(right)}", "right": f"{short(right)} ≻ {short(left)}",
                "tie": f"{short(left)} = {short(right)}", "skip": "pair skipped"}[outcome]
        return self.render(session, profile, f"Recorded {said}.")

    def pick_left(self, session, profile, shown_pair=None):
        return self._pick(session, profile, "left", shown_pair)

    def pick_right(self, session, profile, shown_pair=None):
        return self._pick(session, profile, "right", shown_pair)

    def tie(self, session, profile, shown_pair=None):
        return self._pick(session, profile, "tie", shown_pair)

    def pair_skip(self, session, profile, shown_pair=None):
        return self._pick(session, profile, "skip", shown_pair)

    def suggest(self, session: LabelSession, profile):
        """Puts the pairs most informative about this person's taste next (Studio.suggest)."""
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        if len(session.candidates) < 2:
            raise InvalidInput("generate at least two candidates first")
        ranked = self.ctx.run(self.ctx.studio.suggest, profile, session.candidates, len(session.pairs))
        index = {sha: i for i, sha in enumerate(session.candidates)}
        sides = {frozenset(pair): pair for pair in session.pairs[session.pair_index:]}  # as scheduled
        ahead = [q for q in ranked if frozenset((index[q.first], index[q.second])) in sides]
        if not ahead:
            raise InvalidInput("every pair of these candidates is judged already: generate new ones")
        session.pairs[session.pair_index:] = [sides[frozenset((index[q.first], index[q.second]))] for q in ahead]
        left, right = (self.ctx.store.image_record(session.candidates[i]) for i in session.pairs[session.pair_index])
        gone = len(sides) - len(ahead)  # judged since the batch was made (another page, the CLI)
        left_queue = (f" {gone} pair{'s' if gone != 1 else ''} of this batch {'were' if gone != 1 else 'was'} judged "
                      f"already: {'they' if gone != 1 else 'it'} left the queue." if gone else "")
        return self.render(session, profile, f"💡 Next, on screen now: {_seed(left)} (left) vs {_seed(right)} "
                                             f"(right) — {ahead[0].reason}.{left_queue}")

    def undo(self, session: LabelSession, profile):
        if not session.made:
            raise InvalidInput("nothing to undo in this browser session; older judgments can be "
                               "removed in the Profile tab's history")
        owner_id, judgment_id, image = session.made[-1]
        shown = self.ctx.store.get_profile(profile) if profile else None
        if shown is None or shown.id != owner_id:  # never another profile than the one shown
            owner = next((p.name for p in self.ctx.store.list_profiles() if p.id == owner_id), None)
            if owner is None:  # deleted, with its judgments: nothing of it is left to undo
                session.made = [m for m in session.made if m[0] != owner_id]
                raise NotFound("your last judgment here was for a profile deleted since; press Undo again "
                               "for the one before it")
            raise InvalidInput(f"your last judgment here was for {owner}: switch back to {owner} to undo it")
        owner = shown.name
        try:
            removed = self.ctx.store.remove_judgment(owner, judgment_id)
        except NoSuchJudgment:  # removed elsewhere (the history, another page): nothing left to undo
            session.made.pop()
            raise NotFound(f"your last judgment here (#{judgment_id}) was already removed elsewhere; "
                           "press Undo again for the one before it") from None
        session.made.pop()  # only once removed: an undo refused for now is still there to undo
        if removed.image_b is not None:  # back to that pair, wherever it is in the schedule
            undone = {removed.image_a, removed.image_b}
            session.pair_index = next(
                (k for k, (a, b) in enumerate(session.pairs)
                 if {session.candidates[a], session.candidates[b]} == undone),
                max(0, session.pair_index - 1))
            back = self.ctx.store.pair_verdicts(owner, [removed.image_a, removed.image_b])
            back = next(iter(back.values()), None)
            back = back and back.kind
        else:
            back = self.ctx.store.verdicts(owner, [image]).get(image)
            if image in session.candidates:
                session.current = session.candidates.index(image)
        again = f" ({KIND_MARKS[back]} again, as before)" if back else ""
        on = short(image) if removed.image_b is None else f"{short(removed.image_a)} and {short(removed.image_b)}"
        return self.render(session, profile, f"Undone: {KIND_MARKS[removed.kind]} on {on}{again}.")

    def restore(self, session: LabelSession, profile, saved):
        """After a page refresh: the batch that was on screen (ids kept in the browser)."""
        if isinstance(saved, list) and not session.candidates:
            known = [s for s in saved if isinstance(s, str) and self._exists(s)]
            if known:
                session.show(known[:MAX_CANDIDATES])
                self._first_unjudged(session, profile)
        return self.render(session, profile)

    def _first_unjudged(self, session: LabelSession, profile) -> None:
        """Land on the first candidate, and the first pair, this profile has not judged yet."""
        if not profile:
            return
        verdicts = self._verdicts(session, profile)
        session.current = next((i for i, sha in enumerate(session.candidates) if sha not in verdicts), 0)
        compared = self.ctx.store.pair_verdicts(profile, session.candidates)
        session.pair_index = next(
            (k for k, (a, b) in enumerate(session.pairs)
             if frozenset((session.candidates[a], session.candidates[b])) not in compared),
            len(session.pairs))

    def _exists(self, sha: str) -> bool:
        try:
            self.ctx.store.image_record(sha)
            return True
        except NotFound:
            return False

    # -- view -----------------------------------------------------------------------------
    def _verdicts(self, session, profile) -> dict[str, str]:
        """The current single-image verdict of each candidate on screen, in this profile."""
        if not profile or not session.candidates:
            return {}
        return self.ctx.store.verdicts(profile, session.candidates)

    def render(self, session: LabelSession, profile, message: str = "", pair_view: bool = True):
        """Every view of the tab; `pair_view=False` when a single verdict leaves the pair
        view as it is (its images are then not re-sent)."""
        store = self.ctx.store
        records = [store.image_record(s) for s in session.candidates]
        verdicts = self._verdicts(session, profile)
        items = []
        for r in records:
            mark = f"{KIND_MARKS[verdicts[r.sha256]]} " if r.sha256 in verdicts else ""
            items.append((thumb(r.path), mark + _seed(r)))
        # An update, not a new Gallery: constructing one would copy-check every thumbnail into
        # gradio's cache a second time on each click (see bench/judgment_latency.py).
        gallery = gr.update(value=items or None, selected_index=session.current if items else None,
                            height=gallery_height(len(items), GALLERY_COLUMNS))
        if records:
            r = records[session.current]
            verdict = verdicts.get(r.sha256)
            view = thumb(r.path, VIEW_SIZE)
            info = (f"**Candidate {session.current + 1} of {len(records)}** · {_seed(r)} · id `{short(r.sha256)}`"
                    f"\n\n“{markdown_text(r.prompt)}”\n\n"
                    + (f"Judged: {KIND_MARKS[verdict]}" if verdict else "Not judged yet."))
        else:
            view, info = None, "Type a prompt and press **Generate candidates** (or 🎲 Surprise me)."
        if not pair_view:
            left = right = pair_info = gr.skip()
        elif session.pair_index < len(session.pairs):
            a, b = session.pairs[session.pair_index]
            left, right = thumb(records[a].path, VIEW_SIZE), thumb(records[b].path, VIEW_SIZE)
            pair_info = (f"**Pair {session.pair_index + 1} of {len(session.pairs)}** · which one do you "
                         f"prefer? ({_seed(records[a])} and {_seed(records[b])})")
        else:
            left = right = None
            pair_info = ("All pairs of this batch compared: generate new candidates." if session.pairs
                         else "Generate at least two candidates to compare.")
        status = (message + "\n\n" if message else "") + counts_line(self.ctx, profile)
        shown_pair = self._pair_on_screen(session) if pair_view else gr.skip()
        session.answers += 1
        return (gallery, view, info, left, right, pair_info, status, status, shown_pair,
                self._candidate_on_screen(session))

    @staticmethod
    def _candidate_on_screen(session: LabelSession) -> str:
        """The current candidate's id and the answer's number, as the page keeps them."""
        current = session.candidates[session.current] if session.candidates else ""
        return f"{current}@{session.answers}"

    @staticmethod
    def _pair_on_screen(session: LabelSession) -> str:
        """The current pair's two image ids, as the page keeps them to send with a pick."""
        if session.pair_index >= len(session.pairs):
            return ""
        return ",".join(session.candidates[i] for i in session.pairs[session.pair_index])


def _seed(record) -> str:
    return "uploaded" if record.seed is None else f"seed {record.seed}"


def _file_name(path) -> str:
    return Path(str(path)).name
