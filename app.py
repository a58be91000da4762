"""PrefStudio in the browser.

    python app.py                          # http://127.0.0.1:7860, history in ./data
    python app.py --port 7861 --data ~/prefstudio-data
    python app.py --model sd-turbo         # a GPU generator (weights must be on this machine,
                                           # or add --allow-downloads to fetch them once)
    python app.py --model sd-turbo --reward clip=/models/clip-vit-large-patch14   # CLIP rewards from a folder
    python app.py --preference-model preference-tokens   # one model instead of auto's combination
    python app.py --host 0.0.0.0 --auth-file logins.txt  # other computers, with logins (user:password lines)
"""
import argparse
import os
import sys
import time

from prefstudio.cli import add_model_arguments, studio_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: only this computer can open the page, "
                             "no login); any other address needs logins (--auth-file or PREFSTUDIO_AUTH)")
    parser.add_argument("--auth-file", default=None, metavar="FILE",
                        help="require a login: a file of user:password lines (also read: the PREFSTUDIO_AUTH "
                             "variable, same format); each login sees only the profiles it creates or imports")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--data", default="data", help="history folder: profiles, judgments, images (default ./data)")
    add_model_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    from prefstudio import privacy
    from prefstudio.errors import PrefStudioError

    privacy.apply_defaults(allow_downloads=args.allow_downloads)  # before gradio reads the environment
    try:  # before anything is built or bound
        credentials = privacy.read_credentials(args.auth_file, os.environ)
        exposure_warning = privacy.check_exposure(args.host, credentials)
    except PrefStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.umask(0o077)  # the history, images, uploads and exports this process writes: owner only
    import torch

    from prefstudio.studio import build_studio
    from prefstudio.ui.app import build_app, launch

    torch.set_num_threads(min(4, torch.get_num_threads()))
    try:
        studio = build_studio(args.data, **studio_options(args))
        demo = build_app(studio)
    except PrefStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        launch(demo, args.host, args.port, prevent_thread_lock=True, auth=credentials)
    except OSError as error:
        if "empty port" in str(error):  # gradio's words name its own environment variable, not --port
            error = f"port {args.port} on {args.host} is in use (another PrefStudio, or another program)"
        print(f"error: {error}: choose another with --port", file=sys.stderr)
        return 2
    if exposure_warning:
        print(exposure_warning, file=sys.stderr, flush=True)
    print(f"PrefStudio is ready at http://{args.host}:{args.port}/ "
          f"(started in {time.perf_counter() - started:.1f} s; Ctrl+C stops it)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
