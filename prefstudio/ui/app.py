"""The studio in the browser: one Blocks with a profile bar and four tabs.

    demo = build_app(studio)
    launch(demo, host="127.0.0.1", port=7860)                 # this computer only
    launch(demo, host="0.0.0.0", auth=[("ann", "a long password")])  # the network, with logins

Per browser session: the candidates on screen and the last side by side (gr.State).
Per browser: the chosen profile and the batch on screen, kept on the server under a random
token the browser holds (gr.BrowserState), so a refresh keeps them. A session acts only on the
profiles it opened (prefstudio.ui.access). Everything judged is in the history store the
moment the click returns.
"""
import os
import secrets
import shutil
import threading

import gradio as gr

from prefstudio.store.profile_access import valid_token
from prefstudio.studio import Studio
from prefstudio.ui.access import guard_listeners, login
from prefstudio.ui.blind_evaluate import BlindEvaluation
from prefstudio.ui.common import AppContext, user_errors
from prefstudio.ui.evaluate_tab import EvaluateTab
from prefstudio.ui.generate_tab import GenerateTab
from prefstudio.ui.label_tab import LabelTab
from prefstudio.ui.profile_tab import ProfileTab
from prefstudio.validation import MAX_IMAGE_BYTES, MAX_PROFILE_FILE_BYTES

FIRST_PROFILE = "me"
PUBLIC_BROWSER_KEY = "prefstudio-browser-token"
# Every 10 minutes, gradio deletes the uploads and served copies it made over an hour ago.
DELETE_CACHE = (600, 3600)

# Keys act on whichever matching button is visible, so one key can mean "previous" while
# judging one at a time and "left is better" while comparing two. Typing in a text box
# never triggers them.
SHORTCUTS_JS = """
() => {
  const keys = {
    "l": ["ps-like"], "d": ["ps-dislike"], "s": ["ps-skip", "ps-pair-skip"],
    "u": ["ps-undo", "ps-pair-undo"], "t": ["ps-tie", "ps-blind-tie"],
    "1": ["ps-pick-left", "ps-blind-pick-left"], "2": ["ps-pick-right", "ps-blind-pick-right"],
    "arrowleft": ["ps-pick-left", "ps-prev"], "arrowright": ["ps-pick-right", "ps-next"],
  };
  const typing = (el) => el && (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT"
    || (el.tagName === "INPUT" && !["radio", "checkbox", "button"].includes(el.type)));
  // Judging one at a time, a key waits for the answer to the key before it: each press is its own
  // request, and one that overtook the one before would judge the wrong candidate (the studio
  // refuses it). An answer shows as a new value of the hidden #ps-shown-candidate box.
  const oneAtATime = new Set(["ps-like", "ps-dislike", "ps-skip", "ps-undo", "ps-prev", "ps-next"]);
  const waiting = [];
  let sent = null;  // {shown, at}: the box's value when the last queued press was sent
  const shownCandidate = () => {
    const box = document.querySelector("#ps-shown-candidate textarea, #ps-shown-candidate input");
    return box ? box.value : "";
  };
  const sendNext = () => {
    if (sent && shownCandidate() === sent.shown && Date.now() - sent.at < 5000) {
      setTimeout(sendNext, 25);  // no answer yet (a refusal gives none: 5 s, then the next goes)
      return;
    }
    sent = null;
    const button = waiting.shift();
    if (!button) return;
    sent = {shown: shownCandidate(), at: Date.now()};
    button.click();
    setTimeout(sendNext, 25);
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || typing(event.target)) return;
    for (const id of keys[event.key.toLowerCase()] || []) {
      const el = document.getElementById(id);
      const button = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
      if (button && button.offsetParent !== null && !button.disabled) {
        event.preventDefault();
        if (!oneAtATime.has(id)) {
          button.click();
        } else if (waiting.push(button) === 1 && !sent) {
          sendNext();
        }
        return;
      }
    }
  });
  // A number typed beyond a slider's range: gradio uses the nearest end of the range but left the
  // typed number in its box. Clamped before gradio reads it, the box shows the value used.
  const clamp = (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || box.type !== "number" || box.value === "") return;
    const value = parseFloat(box.value), low = parseFloat(box.min), high = parseFloat(box.max);
    if (Number.isNaN(value)) return;
    const used = Math.min(Number.isNaN(high) ? value : high, Math.max(Number.isNaN(low) ? value : low, value));
    if (used !== value) {
      box.value = String(used);
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
  };
  document.addEventListener("change", clamp, true);
  document.addEventListener("keydown", (event) => { if (event.key === "Enter") clamp(event); }, true);
}
"""

# In the page's head: gradio scopes its `css` inside the app, and these margins are outside it.
PHONE_MARGINS = ("<style>@media (max-width: 480px) { .gradio-container .main.fillable "
                 "{ padding-left: 12px !important; padding-right: 12px !important; } }</style>")

CSS = """
/* width 100 %: gradio's own made the page 400 px wide on a 390 px phone, so every tab scrolled sideways.
   On a phone, narrower margins (PHONE_MARGINS) and tab labels keep all four tabs in the bar, not behind "…". */
.gradio-container { max-width: 1240px !important; width: 100% !important; min-width: 0 !important;
                    margin: 0 auto !important; }
@media (max-width: 480px) { [role=tab] { padding-left: 10px !important; padding-right: 10px !important; } }
#ps-header { align-items: flex-end; }
#ps-header h1 { margin: 0; font-size: 1.9em; }
#ps-models { font-size: 0.88em; opacity: 0.85; }
#ps-label-status, #ps-gen-progress { min-height: 2.2em; }
.ps-keys { font-size: 0.85em; opacity: 0.9; }
/* Captions carry the seed and the verdict: let them use the thumbnail's width. */
#ps-candidates .caption-label, #ps-history .caption-label, #ps-most .caption-label, #ps-least .caption-label {
  max-width: 94%; font-size: 0.8em; opacity: 0.92; }
/* gradio lays out a gallery with fewer items than columns as that many full-width columns
   (one history item became one huge cropped image): keep every gallery's columns. */
#ps-history .grid-container { grid-template-columns: repeat(8, minmax(0, 1fr)) !important; }
#ps-past .grid-container { grid-template-columns: repeat(6, minmax(0, 1fr)) !important; }
#ps-most .grid-container, #ps-least .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
#ps-candidates .grid-container { grid-template-columns: repeat(8, minmax(0, 1fr)) !important; }
#ps-export-file .empty.large { min-height: 64px; height: 64px; }
/* A result's heading names the seed it picked: it wraps clear of the image's buttons. */
#ps-baseline [data-testid="block-label"], #ps-personalized [data-testid="block-label"] {
  max-width: calc(100% - 84px); white-space: normal; height: auto; }
/* A refused input is explained in the toast; no "Error" badge is left on every output. */
[data-testid="status-tracker"]:has(> span.error) { display: none !important; }
.ps-hidden { display: none !important; }
/* Narrow windows broke the scores tables mid-word ("scor e", "+1.5 9"): whole words only. */
#ps-baseline-scores :is(th, td), #ps-personalized-scores :is(th, td) { word-break: normal; overflow-wrap: normal; }
/* The per-prompt tables are wider than a phone: they scroll inside the page, not widen it. */
#ps-blind-table, #ps-opt-table { max-width: calc(100vw - 56px); overflow-x: auto; }
/* A prompt of long words wraps within its column rather than pushing the numbers out of view. */
#ps-blind-table td:first-child, #ps-opt-table td:first-child { overflow-wrap: anywhere; }
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
    rewards = ""
    if studio.reward_states:
        from prefstudio.ui.generate_tab import reward_label

        ready = [reward_label(n) for n, s in studio.reward_states.items() if s.ready]
        missing = [reward_label(n) for n, s in studio.reward_states.items() if not s.ready]
        rewards = (f" Rewards: {', '.join(ready) or 'none'} on the sliders"
                   + (f"; missing: {', '.join(missing)} (Generate › Advanced says how to get them)." if missing else "."))
    return f"Generator: {gen}. Image encoder: {enc}. Preference model: {taste}.{rewards} {offline}"


def build_app(studio: Studio) -> gr.Blocks:
    ctx = AppContext(studio)
    store = studio.store
    access = ctx.access
    profiles = access.profiles
    if not store.list_profiles():
        store.create_profile(FIRST_PROFILE)  # the person at this computer's (no owner row)
    # Left by older versions: exports at a fixed, guessable path in a served folder, and the
    # BrowserState key, which gradio sends to every browser in /config.
    shutil.rmtree(ctx.ui_cache / "exports", ignore_errors=True)
    (store.data_dir / "browser-secret").unlink(missing_ok=True)

    with gr.Blocks(title="PrefStudio", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        demo.prefstudio = ctx  # for tests and benchmarks that drive the app in-process
        # gradio sends a BrowserState's key to every browser (it is in /config), so it is no
        # secret and nothing relies on it: the browser keeps only a random token, and what the
        # token chose (profile, batch on screen) stays on this server.
        browser = gr.BrowserState(None, storage_key="prefstudio-browser", secret=PUBLIC_BROWSER_KEY)
        with gr.Row(elem_id="ps-header"):
            with gr.Column(scale=3):
                gr.Markdown("# PrefStudio\nLearns your visual taste from 👍/👎 and generates images for you.")
                gr.Markdown(describe_models(studio), elem_id="ps-models")
            with gr.Column(scale=2):
                with gr.Row():
                    # No names here: /config is the same for everyone; each page fills its own list.
                    profile = gr.Dropdown([], value=None, label="Profile", allow_custom_value=True,
                                          scale=3, elem_id="ps-profile")
                    # No max_length: a cut name would be created silently; the store refuses long ones.
                    new_name = gr.Textbox(label="New profile", placeholder="name", scale=2,
                                          submit_btn="Create", elem_id="ps-new-profile")
        # The profile this session last opened (server-side, so the Generate tab and the blind
        # test never race a menu change that is still being opened).
        opened = gr.State(None)
        with gr.Tabs():
            with gr.Tab("Label", id="label") as label_page:
                label = LabelTab(ctx, profile)
            with gr.Tab("Profile", id="profile") as profile_page:
                profile_tab = ProfileTab(ctx, profile)
            with gr.Tab("Generate", id="generate") as generate_page:
                generate = GenerateTab(ctx, profile)
            with gr.Tab("Evaluate", id="evaluate"):
                gr.Markdown("### Blind test: you judge")
                BlindEvaluation(ctx, profile, opened)
                gr.Markdown("### Optimiser check: your taste model judges")
                EvaluateTab(ctx, profile, opened)

        def create_profile(name, request: gr.Request):
            created = profiles.create(name, login(request))
            access.open(request, created.name)
            return gr.Dropdown(choices=profiles.visible(login(request)), value=created.name), ""

        def open_profile(name: str, request: gr.Request) -> str:
            """Open a profile in this session (the API's profile menu): later calls may then name it."""
            return access.open(request, name)

        def refresh_choices(request: gr.Request):
            # The list only: the value the menu held when it was opened may be stale by the time
            # this answers (the person picked another), and setting it would switch back.
            return gr.update(choices=profiles.visible(login(request)))

        def restore_profile(token, request: gr.Request):
            user = login(request)
            token = token if valid_token(token) else secrets.token_urlsafe(32)
            visible = profiles.visible(user)
            # A profile chosen or created on this page before its load got here stays chosen.
            value = (access.latest(request) or profiles.chosen_profile(token, user)
                     or (visible[0] if visible else None))
            return gr.Dropdown(choices=visible, value=value), token

        def profile_chosen(name, token, label_session, history_session, filters, request: gr.Request):
            if name:  # a typed name that does not exist (or is not this login's) says so; nothing changes
                name = access.open(request, name)
                if valid_token(token):
                    profiles.remember(token, login(request), profile=name)
            return (name, *profile_tab.render(name), *label.render(label_session, name),
                    *profile_tab.render_history(history_session, name, filters))

        def restore_batch(label_session, name, token, request: gr.Request):
            """The batch on screen before a refresh, with the prompt it was made from."""
            views = label.restore(label_session, name, profiles.saved_batch(token, login(request)))
            shown = label_session.candidates
            return (*views, studio.store.image_record(shown[0]).prompt if shown else gr.skip())

        def remember_batch(label_session, token, request: gr.Request):
            if valid_token(token):
                profiles.remember(token, login(request), batch=label_session.candidates)

        new_name.submit(user_errors(create_profile), new_name, [profile, new_name], api_name="create_profile")
        gr.api(user_errors(open_profile), api_name="open_profile")
        chooser = user_errors(profile_chosen)
        profile.focus(refresh_choices, None, profile, api_visibility="private")
        chosen_inputs = [profile, browser, label.session, profile_tab.session, profile_tab.filters]
        chosen_outputs = [opened, *profile_tab.profile_views, *label.views, *profile_tab.history_views]
        # The Generate tab follows the profile: its running job, or its last side by side.
        attach = (user_errors(generate.attach), [generate.session, opened], generate.views)
        running = (user_errors(generate.running_settings), [generate.session, opened, *generate.blend_sliders],
                   generate.running_outputs)
        # Following a run after a reload is this event's own stream: a later switch must start
        # while it streams (gradio's default lets one submission of an event run at a time, in
        # one queue slot shared by every page), and the older stream then sees the switch and ends.
        follow = {"api_visibility": "private", "trigger_mode": "multiple", "concurrency_limit": None}
        chosen = profile.change(chooser, chosen_inputs, chosen_outputs, api_visibility="private")
        chosen.then(*running, api_visibility="private").then(*attach, **follow)
        # A refused name (none such, or another login's) leaves the menu on the profile shown.
        chosen.failure(lambda shown: shown, opened, profile, api_visibility="private")
        demo.load(restore_profile, browser, [profile, browser], api_visibility="private").then(
            chooser, chosen_inputs, chosen_outputs, api_visibility="private").then(
            user_errors(restore_batch), [label.session, profile, browser], [*label.views, label.prompt],
            api_visibility="private"
        ).then(*running, api_visibility="private").then(*attach, **follow)
        # Judgments made in the other tabs show up when the Profile tab opens; a fit made there,
        # when the Generate tab opens; judgments removed there, when the Label tab opens.
        profile_page.select(chooser, chosen_inputs, chosen_outputs, api_visibility="private")
        generate_page.select(user_errors(generate.refresh_idle), [generate.session, opened], generate.views,
                             api_visibility="private")
        label_page.select(user_errors(label.render), [label.session, opened], label.views, api_visibility="private")
        # The batch on screen is kept for this browser, for a refresh.
        for event in (*label.generated, label.uploaded):
            event.success(remember_batch, [label.session, browser], None, api_visibility="private")
        guard_listeners(demo, profile, access, openers=(chooser,))
    return demo


def launch_options() -> dict:
    theme = gr.themes.Soft(
        primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
        # System fonts: the default theme would fetch web fonts from Google.
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )
    # Images and media from this server only: text from a file that slipped past escaping
    # still could not make the page fetch an outside address.
    policy = "img-src 'self' data: blob:; media-src 'self' data: blob:"
    return {"theme": theme, "css": CSS, "js": SHORTCUTS_JS,
            "head": f'<meta http-equiv="Content-Security-Policy" content="{policy}">{PHONE_MARGINS}'}


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, prevent_thread_lock: bool = False,
           auth: list[tuple[str, str]] | None = None):
    """Serve the app; model weights warm up in the background so the page is ready at once.
    With `auth` (user, password) pairs every page and API call needs a login, and each login
    sees only its own profiles."""
    ctx: AppContext = demo.prefstudio
    data = ctx.store.data_dir
    served = demo.launch(
        server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
        auth=auth or None, show_error=True, ssr_mode=False,
        max_file_size=max(MAX_IMAGE_BYTES, MAX_PROFILE_FILE_BYTES),
        # Images and thumbnails only (by content hash): never the database beside them.
        allowed_paths=[str(data / "images"), str(ctx.ui_cache)],
        footer_links=["gradio", "settings"], **launch_options())
    # Only once the port is bound: a process that exits (the port was taken) under a warm-up
    # still running in torch aborts instead of returning its error.
    threading.Thread(target=warm_up, args=(ctx,), daemon=True, name="prefstudio-warm-up").start()
    if not prevent_thread_lock:
        demo.block_thread()
    return served


def warm_up(ctx: AppContext) -> None:
    """Load the prompt and image encoders before the first click needs them."""
    with ctx.compute:
        ctx.studio.generator.encode_prompt("warm up")
        getattr(ctx.studio.encoder, "network", None)  # the embedded encoder's weights load on first use
