"""`vqclip ui`: serve a local web page that generates the spaces side by side, live, and shows a gallery."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from ..errors import bad_arg, one_line
from .common import add_quiet_arg, command_parser, sigterm_as_interrupt
from .generate import add_model_args

PASSWORD_ENV = "VQCLIP_UI_PASSWORD"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def register(sub) -> None:
    p = command_parser(
        sub, "ui", help="local web page: compare the spaces live, side by side, and browse the outputs",
        description="Serve a web page (Gradio; pip install -e \".[ui]\") with a prompt box, the spaces to compare "
                    "(clip, learn, forget), seed, size, steps, method and model choices. Start generates the spaces "
                    "together and shows each image updating live with its loss curve; Stop keeps the current "
                    "images and run.json, like Ctrl-C. Runs are ordinary run folders under --outputs-root, so "
                    "`vqclip grid` and `vqclip score` work on them; the Gallery tab shows them (and batches) with "
                    "their settings and OCR scores. The page listens on 127.0.0.1 only; one generation runs at a "
                    "time, others wait in a queue. The model flags below are the page's defaults.",
        examples=["vqclip ui", "vqclip ui --port 8080 --outputs-root runs --device cuda"])
    add_model_args(p)
    g = p.add_argument_group("server")
    g.add_argument("--outputs-root", default="outputs", metavar="DIR",
                   help="where runs are written and what the gallery shows (default outputs)")
    g.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1: this machine only); another one needs "
                        "--allow-remote")
    g.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    g.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than this machine (anyone who reaches it can run generations "
                        "and see the outputs: set a password); the page's model fields are then fixed to the "
                        "command line's")
    g.add_argument("--user", default="vqclip", help="user name for the password (default vqclip)")
    g.add_argument("--password-file", default=None, metavar="FILE",
                   help=f"ask for this password (the file's first line) before showing the page; or set "
                        f"${PASSWORD_ENV} (default: no password)")
    add_quiet_arg(p, "no Gradio start-up lines")
    p.set_defaults(func=run_ui)


def check_host(host: str, allow_remote: bool) -> bool:
    """True for this machine only; refuse any other address unless `allow_remote`."""
    local = host in LOCAL_HOSTS
    if not local:
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
    if not local and not allow_remote:
        raise bad_arg("--host", "the page listens on this machine only unless --allow-remote is given", host,
                      "Add --allow-remote (and a --password-file), or drop --host.")
    return local


def read_password(args: argparse.Namespace) -> str | None:
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise bad_arg("--password-file", "could not read the file", args.password_file,
                          f"Give a text file whose first line is the password ({type(e).__name__}).") from None
        if not password:
            raise bad_arg("--password-file", "the first line is empty", args.password_file,
                          "Write the password on the first line.")
        return password
    return os.environ.get(PASSWORD_ENV) or None


def run_ui(args: argparse.Namespace) -> int:
    from ..ui import require_gradio

    if not 0 < args.port < 65536:
        raise bad_arg("--port", "must be a port number from 1 to 65535", args.port, "Try --port 7860.")
    local = check_host(args.host, args.allow_remote)
    password = read_password(args)
    if not args.user:
        raise bad_arg("--user", "must not be empty", args.user, "Try --user vqclip.")
    require_gradio()
    from ..io import check_writable
    from ..ui.app import Server, launch
    from ..ui.runner import ModelChoice

    root = Path(args.outputs_root)
    check_writable(root, "--outputs-root")
    if not local:
        print(f"vqclip ui: warning: listening on {args.host}:{args.port}: anyone who can reach this address can "
              "run generations on this machine and see every image under "
              f"{root}{'' if password else '; no password is set (--password-file)'}", file=sys.stderr)
    defaults = ModelChoice(args.clip, args.pretrained, args.vqgan, args.vqgan_config, args.vqgan_checkpoint,
                           args.device, args.precision, args.cache_dir, args.auto_train)
    server = Server(defaults, root, lock_models=not local)  # visitors from elsewhere cannot name files to load
    try:
        demo, url = launch(server, args.host, args.port, auth=(args.user, password) if password else None,
                           block=False)
    except OSError as e:  # Gradio: "Cannot find empty port ..."; or an address this machine does not have
        raise bad_arg("--port", f"could not listen on {args.host}:{args.port} ({one_line(e)})", args.port,
                      "Another program (or another vqclip ui) uses it: choose another --port.") from None
    print(url)
    if not args.quiet:
        print("vqclip ui: open the address above in a browser; Ctrl-C stops the server (a running job is stopped "
              "like Stop: its images and run.json are kept)", file=sys.stderr)
    stopped = False
    try:
        from ..ui.app import wait_forever

        with sigterm_as_interrupt():  # `kill` or a container stop ends a running job like Ctrl-C does
            wait_forever()
    except KeyboardInterrupt:
        job = server.job
        if job is not None and not job.done:
            job.request_stop()
            job.thread.join()
            stopped = True
    finally:
        code = 130 if stopped else 0
        if not close_within(demo, CLOSE_SECONDS):
            # Gradio's server did not stop in time (a client holding a connection open, an address whose
            # shutdown request goes unanswered): its threads would keep the process alive. The job's images and
            # run.json are written by now, so leave without waiting for them.
            print(f"vqclip ui: the web server did not stop within {CLOSE_SECONDS:g} s; exiting anyway",
                  file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


CLOSE_SECONDS = 3.0


def close_within(demo, seconds: float) -> bool:
    """`demo.close()` in a helper thread; False when it has not returned after `seconds`."""
    import threading

    closer = threading.Thread(target=demo.close, name="vqclip-ui-close", daemon=True)
    closer.start()
    closer.join(seconds)
    return not closer.is_alive()
