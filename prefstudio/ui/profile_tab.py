"""Profile: fit the taste model, see what it likes, browse and prune the history,
export the profile as one file and import one."""
import html
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import gradio as gr

from prefstudio.errors import InvalidInput
from prefstudio.preference.state_schema import other_models_fits
from prefstudio.store.history import KINDS
from prefstudio.studio import FEW_HELD_OUT, training_pairs
from prefstudio.taste_summary import taste_summary
from prefstudio.ui.access import login
from prefstudio.ui.common import (
    markdown_text,
    KIND_MARKS, AppContext, counts_line, empty_after, gallery_height, pair_thumb, short, thumb, user_errors,
)

HISTORY_SHOWN = 120  # newest judgments in the history gallery
SUMMARY_IMAGES = 4
SUMMARY_HEIGHT = gallery_height(SUMMARY_IMAGES, SUMMARY_IMAGES, width=580)
HISTORY_COLUMNS = 8
FILTERS = [("👍 liked", "like"), ("👎 disliked", "dislike"), ("A ≻ B pairs", "pair"), ("= ties", "tie"),
           ("⏭ skipped", "skip")]
FEATURE_CHUNK = 16


@dataclass
class HistorySession:
    shown: list[int] = field(default_factory=list)  # judgment ids in gallery order


def leave_one_out_line(accuracy: float | None, pairs: int, combined: bool = False) -> str:
    """`combined`: the accuracy of models combined (auto), over the pairs every member held out."""
    if accuracy is None:
        return "Too few pairs for a leave-one-out accuracy yet."
    over = (f"over the {pairs} pairs every model held out (each model's own figure is above; " if combined
            else f"over {pairs} held-out pairs (")
    line = (f"Leave-one-out accuracy{' of the combination' if combined else ''} **{accuracy:.0%}** {over}"
            "each pair predicted by a model that never saw its images; chance is 50%).")
    if pairs < FEW_HELD_OUT:  # 1 of 3 right is what a good model scores now and then
        line += (f" {pairs} pair{'s are' if pairs != 1 else ' is'} too few for this figure to say much yet: judge "
                 "more pairs, ideally a 👍 and a 👎 of the same prompt, and fit again.")
    elif accuracy <= 0.5:
        line += (" **That is no better than chance**: these judgments do not yet show one taste the model can "
                 "read (they may contradict each other, or hinge on what the images do not show). Judge more "
                 "pairs, ideally a 👍 and a 👎 of the same prompt, and fit again.")
    return line


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def describe_fit(ctx: AppContext, profile: str | None) -> str:
    if not profile:
        return "Choose or create a profile at the top of the page."
    status = ctx.studio.fit_status(profile)
    model = ctx.studio.preference
    if status is None:
        others = other_models_fits(ctx.store.model_names(profile), model.name)
        if others:
            return (f"**Not fitted by this studio's model yet.** This profile was fitted by **{' and '.join(others)}** "
                    f"(elsewhere, or under another preference model); this studio serves **{model.name}**: "
                    "press **Fit my taste** to fit it here.")
        return ("**Not fitted yet.** Judge at least one image 👍 and one 👎 (or pick the better of two), "
                "then press **Fit my taste**.")
    when = _when(status["fitted_at"])
    loo = status.get("loo_accuracy")
    n_pairs = status["n_pairs"]
    lines = [f"**Fitted** {when} on **{n_pairs} pair{'' if n_pairs == 1 else 's'}** by **{model.name}** ({model.description}): "
             f"{markdown_text(status.get('reason') or status['mode'])}."]
    if not status["n_pairs"]:
        judged = sum(ctx.store.counts(profile).values())
        if judged:
            lines.append(f"You have {judged} judgment{'s' if judged > 1 else ''} but no pair yet: a pair is one image "
                         "👍 and one 👎, or a better-of-two.")
    lines.append(leave_one_out_line(loo, status.get("loo_pairs", 0), combined=len(status.get("members") or {}) > 1))
    if status.get("imported_at"):
        imported = _when(status["imported_at"])
        lines.append(f"**Imported** with a profile file on {imported}: the pairs, the explanation and the accuracy "
                     "above are the file's own account of a fit made elsewhere, not checked here. Press "
                     "**Fit my taste** to measure them here.")
    fitted_at = status["fitted_at"]
    newer = sum(1 for j in ctx.store.judgments(profile)
                if datetime.fromisoformat(j.created).timestamp() > fitted_at)
    if newer:
        lines.append(f"{newer} judgment{'s' if newer > 1 else ''} since this fit: fit again to include them.")
    return "\n\n".join(lines)


def describe_vlm_profile(ctx: AppContext, profile: str | None) -> str:
    """What a VLM wrote about the person (`python -m prefstudio ppd profile`), if it has;
    escaped: the text comes from a model or an imported file."""
    from prefstudio.ppd.profile_store import read_vlm_profile

    stored = read_vlm_profile(ctx.store, profile) if profile else None
    if stored is None:
        return ""
    when = _when(stored.made_at)
    quoted = "\n".join(f"> {html.escape(line)}" if line.strip() else ">" for line in stored.text.splitlines())
    made = f"Written {when} by {html.escape(stored.vlm)} from your {len(stored.pairs)} most recent pairs."
    if stored.imported_at:
        imported = _when(stored.imported_at)
        made = (f"Imported with a profile file on {imported}: written elsewhere ({when}, "
                f"{html.escape(stored.vlm)}); the text and the pairs it names are the file's account.")
    return f"#### What the studio thinks you like\n{quoted}\n\n{made}"


class ProfileTab:
    def __init__(self, ctx: AppContext, profile: gr.Dropdown):
        self.ctx = ctx
        self.session = gr.State(HistorySession())
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("### Your taste model")
                fit = gr.Button("Fit my taste", variant="primary", elem_id="ps-fit")
                self.fit_status = gr.Markdown(elem_id="ps-fit-status")
            with gr.Column(scale=3):
                gr.Markdown("### What the model likes")
                summarise = gr.Button("Summarise my taste", elem_id="ps-summarise")
                self.taste_text = gr.Markdown(
                    "The model scores a fixed reference pool of images; the summary shows the ones it "
                    "likes most and least.", elem_id="ps-taste-text")
                self.vlm_profile = gr.Markdown(elem_id="ps-vlm-profile")
        with gr.Row():
            self.most = gr.Gallery(label="Likes most", columns=SUMMARY_IMAGES, height=SUMMARY_HEIGHT,
                                   allow_preview=False, buttons=[], elem_id="ps-most")
            self.least = gr.Gallery(label="Likes least", columns=SUMMARY_IMAGES, height=SUMMARY_HEIGHT,
                                    allow_preview=False, buttons=[], elem_id="ps-least")
        gr.Markdown("### History")
        with gr.Row(equal_height=True):
            self.filters = gr.CheckboxGroup(FILTERS, value=[v for _, v in FILTERS], label="Show", scale=3)
            # No precision: the box would round 1.5 to 2 before the store could refuse it.
            self.selected = gr.Number(label="Selected judgment #", minimum=1, scale=1,
                                      elem_id="ps-selected-judgment")
            remove = gr.Button("🗑 Remove judgment", variant="stop", scale=1)
        self.history = gr.Gallery(label="Judgments, newest first (click one to select it)",
                                  columns=HISTORY_COLUMNS, height=gallery_height(0, HISTORY_COLUMNS),
                                  allow_preview=False, buttons=[], elem_id="ps-history")
        self.history_info = gr.Markdown()
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Export\nThe whole profile (judgments, their images, the fitted model) "
                            "as one `.prefstudio` file.")
                export = gr.Button("Export profile")
                self.export_file = gr.File(label="Profile file", interactive=False, height=90, elem_id="ps-export-file")
            with gr.Column():
                gr.Markdown("### Import\nAdd a profile from a `.prefstudio` file (it is checked in full "
                            "before anything is added).")
                self.import_file = gr.File(label="Profile file", file_types=[".prefstudio"], height=120,
                                           elem_id="ps-import-file")
                self.import_name = gr.Textbox(label="Import as (optional)",
                                              placeholder="the name stored in the file")
                do_import = gr.Button("Import profile")
                self.import_status = gr.Markdown()
        gr.Markdown("### Rename or delete this profile")
        with gr.Row(equal_height=True):
            self.rename_to = gr.Textbox(label="New name", placeholder="the profile's new name", scale=3,
                                        elem_id="ps-rename-to")
            rename = gr.Button("Rename", scale=1, elem_id="ps-rename")
            delete = gr.Button("🗑 Delete this profile…", variant="stop", scale=1, elem_id="ps-delete")
        with gr.Group(visible=False, elem_id="ps-delete-confirm-box") as self.confirm_box:
            self.confirm_text = gr.Markdown()
            with gr.Row():
                export_first = gr.Button("Export it first", elem_id="ps-delete-export")
                confirm = gr.Button("Yes, delete it for good", variant="stop", elem_id="ps-delete-confirm")
                cancel = gr.Button("Cancel", elem_id="ps-delete-cancel")
        self.manage_status = gr.Markdown(elem_id="ps-manage-status")

        self.profile = profile
        self.history_views = [self.history, self.history_info, self.selected]
        summary = [self.taste_text, self.most, self.least]
        # Everything this tab shows of a profile, rendered from the store on switch and load.
        self.profile_views = [self.fit_status, *summary, self.export_file, self.vlm_profile]
        summarise.click(user_errors(self.summarise), profile, summary, api_name="taste_summary")
        # A new fit changes what the model likes: show it straight away.
        fit.click(user_errors(self.fit), profile, self.fit_status, api_name="fit").success(
            user_errors(self.summarise), profile, summary, api_visibility="private")
        self.filters.change(user_errors(self.render_history), [self.session, profile, self.filters],
                            self.history_views, api_name="history")
        self.history.select(self.select, self.session, self.selected, api_visibility="private")
        remove.click(user_errors(self.remove), [self.session, profile, self.filters, self.selected],
                     self.history_views, api_name="remove_judgment")
        export.click(user_errors(self.export), profile, self.export_file, api_name="export_profile")
        imported = do_import.click(user_errors(self.import_profile), [self.import_file, self.import_name],
                                   [self.import_status, profile], api_name="import_profile")
        empty_after(imported, self.import_file)
        # The emptied box is not a lost file: say why, and what to do (a review tried Import again).
        imported.failure(lambda: "Nothing was imported. An upload is deleted once read: choose the file again "
                         "(and a new name, if the toast asked for one).", None, self.import_status,
                         api_visibility="private")
        # The line under the buttons speaks of the last attempt only: a refusal is a toast, not this line.
        rename.click(lambda: "", None, self.manage_status, api_visibility="private", queue=False)
        rename.click(user_errors(self.rename), [profile, self.rename_to], [self.manage_status, profile, self.rename_to],
                     api_name="rename_profile")
        # Deleting asks first, and offers an export before anything is lost.
        delete.click(user_errors(self.ask_delete), profile, [self.confirm_box, self.confirm_text],
                     api_visibility="private")
        export_first.click(user_errors(self.export), profile, self.export_file, api_visibility="private")
        cancel.click(lambda: (gr.Group(visible=False), "Nothing was deleted."), None,
                     [self.confirm_box, self.manage_status], api_visibility="private")
        confirm.click(user_errors(self.delete), profile, [self.confirm_box, self.manage_status, profile],
                      api_name="delete_profile")

    # -- fit and summary ----------------------------------------------------------------
    def fit(self, profile, progress=gr.Progress()):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        started = time.perf_counter()
        studio = self.ctx.studio
        pairs = training_pairs(studio.store.judgments(profile))
        shas = list(dict.fromkeys(s for pair in pairs for s in pair))
        # Features first, in chunks, so the bar moves; the fit then reads them from the cache.
        for start in range(0, len(shas), FEATURE_CHUNK):
            progress((start, len(shas)), desc="Reading the judged images", unit="images")
            self.ctx.run(studio.features, shas[start:start + FEATURE_CHUNK])
        progress(None, desc=f"Fitting on {len(pairs)} pairs")
        self.ctx.run(studio.fit, profile)
        # The whole wait, reading the judged images included (the fit alone is a fraction of it).
        return f"Done in {time.perf_counter() - started:.1f} s. " + describe_fit(self.ctx, profile)

    def summarise(self, profile):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        summary = self.ctx.run(taste_summary, self.ctx.studio, profile)

        def items(scored):
            return [(thumb(r.path), f"{score:+z.2f} · {r.prompt}") for r, score in scored]
        return summary.text(), items(summary.most_liked(SUMMARY_IMAGES)), items(summary.least_liked(SUMMARY_IMAGES))

    def render(self, profile):
        """Fit status, taste summary and an empty export box, all of this profile."""
        if profile and self.ctx.studio.fit_status(profile) is not None:
            text, most, least = self.summarise(profile)
        else:
            text, most, least = "No fitted taste to summarise yet.", None, None
        return describe_fit(self.ctx, profile), text, most, least, None, describe_vlm_profile(self.ctx, profile)

    # -- history --------------------------------------------------------------------------
    def render_history(self, session: HistorySession, profile, kinds, message: str = ""):
        if not profile:
            session.shown = []
            return gr.Gallery(None), "Choose or create a profile at the top of the page.", None
        kinds = [k for k in (kinds or []) if k in KINDS]
        judgments = self.ctx.store.judgments(profile, kinds)[::-1] if kinds else []
        shown = judgments[:HISTORY_SHOWN]
        items = []
        for j in shown:
            record = self.ctx.store.image_record(j.image_a)
            image = pair_thumb(self.ctx, j.image_a, j.image_b) if j.image_b else thumb(record.path)
            items.append((image, f"#{j.id} {KIND_MARKS[j.kind]} · {record.prompt[:40]}"))
        session.shown = [j.id for j in shown]
        more = f" (the newest {HISTORY_SHOWN} shown)" if len(judgments) > HISTORY_SHOWN else ""
        info = (message + "\n\n" if message else "") + counts_line(self.ctx, profile) + more
        rows_shown = min(len(items), 3 * HISTORY_COLUMNS)  # up to three rows, then it scrolls
        gallery = gr.Gallery(items or None, height=gallery_height(rows_shown, HISTORY_COLUMNS))
        return gallery, info, None

    def select(self, session: HistorySession, event: gr.SelectData):
        if 0 <= event.index < len(session.shown):
            return session.shown[event.index]
        return None

    def remove(self, session, profile, kinds, judgment_id):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        if judgment_id is None:
            raise InvalidInput("select a judgment in the history (or type its number) to remove it")
        store = self.ctx.store
        removed = store.remove_judgment(profile, judgment_id)
        what = f"{KIND_MARKS[removed.kind]} on {short(removed.image_a)}"
        # Removing a verdict that replaced another makes that one current again: say so.
        if removed.image_b is None:
            back, subject = store.verdicts(profile, [removed.image_a]).get(removed.image_a), "this image's"
        else:
            back = next(iter(store.pair_verdicts(profile, [removed.image_a, removed.image_b]).values()), None)
            back, subject = back and back.kind, "this pair's"
        again = f" The {KIND_MARKS[back]} it had replaced is {subject} verdict again." if back else ""
        return self.render_history(session, profile, kinds, f"Removed judgment #{removed.id} ({what}).{again}")

    # -- export and import ------------------------------------------------------------------
    def export(self, profile):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        stored = self.ctx.store.get_profile(profile)
        # A stored name is letters of any script, digits, spaces, '-' and '_' (validate_profile_name):
        # safe as a file name once its spaces are dashes.
        path = self.ctx.export_path(stored.id, f"{stored.name.replace(' ', '-')}.prefstudio")
        return str(self.ctx.run(self.ctx.studio.export_profile, stored.name, path))

    # -- rename and delete ----------------------------------------------------------------
    def rename(self, profile, new_name, request: gr.Request):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        old = self.ctx.store.get_profile(profile).name
        self.ctx.check_nothing_under_way(old)
        if (new_name or "").strip() == old:
            raise InvalidInput(f"{old} already has that name")
        renamed = self.ctx.store.rename_profile(old, (new_name or "").strip(),
                                                visible=self.ctx.access.profiles.shown_to(login(request)))
        choices = self.ctx.access.profiles.visible(login(request))
        return f"Renamed **{old}** to **{renamed.name}**.", gr.Dropdown(choices=choices, value=renamed.name), ""

    def ask_delete(self, profile):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        name = self.ctx.store.get_profile(profile).name
        self.ctx.check_nothing_under_way(name)
        judged = sum(self.ctx.store.counts(name).values())
        fitted = " and its fitted taste" if self.ctx.studio.fit_status(name) else ""
        return gr.Group(visible=True), (
            f"**Delete {name}?** Its {judged} judgment{'s' if judged != 1 else ''}{fitted} go for good (the images "
            "stay: other profiles may have judged them). **Export it first** to keep a copy you can import later.")

    def delete(self, profile, request: gr.Request):
        if not profile:
            raise InvalidInput("choose or create a profile first (top of the page)")
        self.ctx.check_nothing_under_way(self.ctx.store.get_profile(profile).name)
        deleted = self.ctx.store.delete_profile(profile)
        choices = self.ctx.access.profiles.visible(login(request))
        return (gr.Group(visible=False), f"Deleted **{deleted.name}**.",
                gr.Dropdown(choices=choices, value=choices[0] if choices else None))

    def import_profile(self, file, new_name, request: gr.Request):
        if file is None:
            raise InvalidInput("choose a .prefstudio profile file to import")
        path = Path(getattr(file, "name", file))
        name = (new_name or "").strip() or None
        imported = self.ctx.run(self.ctx.studio.import_profile, path, name,
                                self.ctx.access.profiles.shown_to(login(request)))
        self.ctx.access.adopt(request, imported.name)  # this login owns it; this session has it open
        message = (f"Imported profile **{imported.name}** with {imported.judgments_kept} judgments"
                   + (" and its fitted model." if self.ctx.studio.fit_status(imported.name) else "."))
        if imported.repeated_or_replaced:
            message += (f" {imported.repeated_or_replaced:,} of the file's {imported.judgments_in_file:,} judgments "
                        "repeated or replaced an earlier one of the same image or pair: the latest of each is kept, "
                        "as when you judge again here.")
        choices = self.ctx.access.profiles.visible(login(request))
        return message, gr.Dropdown(choices=choices, value=imported.name)
