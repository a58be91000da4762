"""The browser studio (Gradio): `build_app(studio)` and `launch(demo, ...)` in ui/app.py,
one module per tab on top of the public `prefstudio.studio.Studio` API."""
