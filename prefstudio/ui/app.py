"""The studio in the browser: one Blocks with a profile bar and four tabs.

    demo = build_app(studio)
    launch(demo, studio, host="127.0.0.1", port=7860)

Per browser session: the candidates on screen and the last side by side (gr.State).
Per browser: the chosen profile and the batch on screen (gr.BrowserState, so a refresh
keeps them). Everything judged is in the history store the moment the click returns.
"""
import os
import secrets
import threading

import gradio as gr

from prefstudio.store.image_files import write_atomically
from prefstudio.studio import Studio
from prefstudio.ui.common import AppContext, user_errors
from prefstudio.ui.evaluate_tab import EvaluateTab
from prefstudio.ui.generate_tab import GenerateTab
from prefstudio.ui.label_tab import LabelTab
from prefstudio.ui.profile_tab import ProfileTab, describe_fit
from prefstudio.validation import MAX_IMAGE_BYTES, MAX_PROFILE_FILE_BYTES

FIRST_PROFILE = "me"

# Keys act on whichever matching button is visible, so one key can mean "previous" while
# judging one at a time and "left is better" while comparing two. Typing in a text box
# never triggers them.
SHORTCUTS_JS = """
() => {
  const keys = {
    "l": ["ps-like"], "d": ["ps-dislike"], "s": ["ps-skip", "ps-pair-skip"],
    "u": ["ps-undo", "ps-pair-undo"], "t": ["ps-tie"],
    "1": ["ps-pick-left"], "2": ["ps-pick-right"],
    "arrowleft": ["ps-pick-left", "ps-prev"], "arrowright": ["ps-pick-right", "ps-next"],
  };
  const typing = (el) => el && (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT"
    || (el.tagName === "INPUT" && !["radio", "checkbox", "button"].includes(el.type)));
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || typing(event.target)) return;
    for (const id of keys[event.key.toLowerCase()] || []) {
      const el = document.getElementById(id);
      const button = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
      if (button && button.offsetParent !== null && !button.disabled) {
        event.preventDefault();
        button.click();
        return;
      }
    }
  });
}
"""

CSS = """
.gradio-container { max-width: 1240px !important; margin: 0 auto !important; }
#ps-header { align-items: flex-end; }
#ps-header h1 { margin: 0; font-size: 1.9em; }
#ps-models { font-size: 0.88em; opacity: 0.85; }
#ps-label-status, #ps-gen-progress { min-height: 2.2em; }
.ps-keys { font-size: 0.85em; opacity: 0.9; }
/* Captions carry the seed and the verdict: let them use the thumbnail's width. */
#ps-candidates .caption-label, #ps-history .caption-label, #ps-most .caption-label, #ps-least .caption-label {
  max-width: 94%; font-size: 0.8em; opacity: 0.92; }
#ps-export-file .empty.large { min-height: 64px; height: 64px; }
/* A refused input is explained in the toast; no "Error" badge is left on every output. */
[data-testid="status-tracker"]:has(> span.error) { display: none !important; }
kbd { border: 1px solid #c7c7cf; border-bottom-width: 2px; border-radius: 4px; padding: 0 5px;
      font-size: 0.85em; background: #f7f7fa; color: #333; }
"""

def describe_models(studio: Studio) -> str:
    """Says which generator, encoder and preference model run, and that they are the offline
    embedded ones when so."""
    from prefstudio.encoders.embedded import EmbeddedImageEncoder
    from prefstudio.generators.embedded import EmbeddedGenerator

    generator = studio.generator
    if isinstance(generator, EmbeddedGenerator):
        gen = (f"the **embedded offline generator** (procedural {generator.resolution}px images, built in: "
               "no download, runs on the CPU; start with `--model sd-turbo` on a GPU for photographic images)")
    else:
        gen = f"**{generator.name}** on {getattr(generator, 'device', 'cpu')}"
    encoder = studio.encoder
    if isinstance(encoder, EmbeddedImageEncoder):
        enc = "the **embedded offline image encoder** (EfficientNet-Lite0 features + colour/texture statistics)"
    else:
        enc = f"**{encoder.name}**"
    offline = ("Offline: nothing is downloaded and nothing leaves this machine."
               if os.environ.get("HF_HUB_OFFLINE") == "1" else "Model downloads are allowed (--allow-downloads).")
    taste = f"**{studio.preference.name}**, {studio.preference.description} (`--preference-model` chooses)"
    return f"Generator: {gen}. Image encoder: {enc}. Preference model: {taste}. {offline}"


def _browser_secret(ctx: AppContext) -> str:
    """The key that encrypts this app's localStorage entries, kept with the data so a
    restarted server still reads what browsers saved."""
    path = ctx.store.data_dir / "browser-secret"  # beside the database: never served
    if not path.exists():
        write_atomically(path, secrets.token_urlsafe(24).encode())
    return path.read_text().strip()


def build_app(studio: Studio) -> gr.Blocks:
    ctx = AppContext(studio)
    store = studio.store
    if not store.list_profiles():
        store.create_profile(FIRST_PROFILE)
    names = [p.name for p in store.list_profiles()]
    secret = _browser_secret(ctx)

    with gr.Blocks(title="PrefStudio", analytics_enabled=False) as demo:
        demo.prefstudio = ctx  # for tests and benchmarks that drive the app in-process
        saved_profile = gr.BrowserState(None, storage_key="prefstudio-profile", secret=secret)
        saved_batch = gr.BrowserState(None, storage_key="prefstudio-batch", secret=secret)
        with gr.Row(elem_id="ps-header"):
            with gr.Column(scale=3):
                gr.Markdown("# PrefStudio\nLearns your visual taste from 👍/👎 and generates images for you.")
                gr.Markdown(describe_models(studio), elem_id="ps-models")
            with gr.Column(scale=2):
                with gr.Row():
                    profile = gr.Dropdown(names, value=names[0], label="Profile", allow_custom_value=True,
                                          scale=3, elem_id="ps-profile")
                    # No max_length: a cut name would be created silently; the store refuses long ones.
                    new_name = gr.Textbox(label="New profile", placeholder="name", scale=2,
                                          submit_btn="Create", elem_id="ps-new-profile")
        with gr.Tabs():
            with gr.Tab("Label", id="label"):
                label = LabelTab(ctx, profile)
            with gr.Tab("Profile", id="profile") as profile_page:
                profile_tab = ProfileTab(ctx, profile)
            with gr.Tab("Generate", id="generate"):
                generate = GenerateTab(ctx, profile)
            with gr.Tab("Evaluate", id="evaluate"):
                EvaluateTab(ctx, profile)

        def create_profile(name):
            created = store.create_profile(name)
            return gr.Dropdown(choices=[p.name for p in store.list_profiles()], value=created.name), ""

        def refresh_choices(current):
            return gr.Dropdown(choices=[p.name for p in store.list_profiles()], value=current)

        def restore_profile(saved):
            known = {p.name for p in store.list_profiles()}
            value = saved if saved in known else profile.value
            return gr.Dropdown(choices=sorted(known, key=str.casefold), value=value)

        def profile_chosen(name, label_session, history_session, filters):
            if name:
                store.get_profile(name)  # a typed name that does not exist says so, and nothing changes
            return (name, *profile_tab.render(name), *label.render(label_session, name),
                    *profile_tab.render_history(history_session, name, filters))

        new_name.submit(user_errors(create_profile), new_name, [profile, new_name], api_name="create_profile")
        profile.focus(refresh_choices, profile, profile, api_visibility="private")
        chosen_inputs = [profile, label.session, profile_tab.session, profile_tab.filters]
        chosen_outputs = [saved_profile, *profile_tab.profile_views, *label.views, *profile_tab.history_views]
        attach = (user_errors(generate.attach), [generate.session, profile], generate.views)
        profile.change(user_errors(profile_chosen), chosen_inputs, chosen_outputs, api_visibility="private").then(
            *attach, api_visibility="private")
        demo.load(restore_profile, saved_profile, profile, api_visibility="private").then(
            user_errors(profile_chosen), chosen_inputs, chosen_outputs, api_visibility="private").then(
            user_errors(label.restore), [label.session, profile, saved_batch], label.views, api_visibility="private"
        ).then(*attach, api_visibility="private")
        # Judgments made in the other tabs show up when the Profile tab opens.
        profile_page.select(user_errors(profile_chosen), chosen_inputs, chosen_outputs, api_visibility="private")
        # The batch on screen follows the session into localStorage, for a refresh.
        for event in (*label.generated, label.uploaded):
            event.success(lambda s: s.candidates, label.session, saved_batch, api_visibility="private")
    return demo


def launch_options() -> dict:
    theme = gr.themes.Soft(
        primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
        # System fonts: the default theme would fetch web fonts from Google.
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )
    return {"theme": theme, "css": CSS, "js": SHORTCUTS_JS}


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, prevent_thread_lock: bool = False):
    """Serve the app; model weights warm up in the background so the page is ready at once."""
    ctx: AppContext = demo.prefstudio
    threading.Thread(target=warm_up, args=(ctx,), daemon=True, name="prefstudio-warm-up").start()
    data = ctx.store.data_dir
    return demo.launch(
        server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock, quiet=True,
        show_error=True, ssr_mode=False, max_file_size=max(MAX_IMAGE_BYTES, MAX_PROFILE_FILE_BYTES),
        # Images, thumbnails and exports only: never the database beside them.
        allowed_paths=[str(data / "images"), str(ctx.ui_cache)],
        footer_links=["gradio", "settings"], **launch_options())


def warm_up(ctx: AppContext) -> None:
    """Load the prompt and image encoders before the first click needs them."""
    with ctx.compute:
        ctx.studio.generator.encode_prompt("warm up")
        getattr(ctx.studio.encoder, "network", None)  # the embedded encoder's weights load on first use
