"""What both apps share: turning lab errors into messages in the browser, and launching safely.

Safe defaults: the server listens on 127.0.0.1 only (`--host 0.0.0.0` opens it to the network, with a warning when
there is no login), a public share link exists only with `--share`, and each event runs one call at a time
(`default_concurrency_limit=1`; each app has one event that generates text) so that a 2-core CPU is never asked to
generate for two requests at once; others wait in a bounded queue.
"""

from __future__ import annotations

import os
import sys
import time

import gradio as gr
from gradio.tunneling import CURRENT_TUNNELS
import httpx

from lab_utils import serving
from lab_utils.errors import LabError, cause

AUTH_ENV = "LAB_APP_AUTH"  # "user:pass" or "alice:pw1,bob:pw2"; safer than --auth, which `ps` shows
QUEUE_SIZE = 64  # requests waiting beyond this are turned away with "queue full"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_served_beyond_this_machine = False  # set by `launch`: --host other than the loopback, or --share


def browser_error(err: LabError) -> gr.Error:
    """A lab error as the page shows it. On this machine, all of it. On a page served beyond it (an arena for a
    class), the problem without the file it names and without the fix, which are the operator's to act on: the
    server's own log gets the whole error."""
    if not _served_beyond_this_machine:
        return gr.Error(str(err), print_exception=False)
    print(f"[lab] {err}", file=sys.stderr)
    if err.path:  # a file of the server's: a model that would not load, the vote store
        return gr.Error(f"{err.message} (the server's log has the details)", print_exception=False)
    return gr.Error(str(err), print_exception=False)  # the request's own problem, with the fix its sender applies


def checked_prompt(text: str) -> str:
    """`serving.check_prompt`, with the problem shown in the browser instead of a stack trace."""
    try:
        return serving.check_prompt(text)
    except LabError as err:
        raise browser_error(err) from None


def loaded(models: serving.Models, name: str) -> tuple:
    """`models.get(name)`, with a model folder that fails to load shown in the browser instead of a bare "Error"
    (Gradio hides the text of any exception but its own `gr.Error`)."""
    try:
        return models.get(name)
    except LabError as err:
        raise browser_error(err) from None


def started(jobs: list[tuple], **sampling) -> list[serving.Stream]:
    """`serving.start_streams`, with a prompt too long for a model shown in the browser."""
    try:
        return serving.start_streams(jobs, **sampling)
    except LabError as err:
        raise browser_error(err) from None


def unlocked_after(event, components: list, name: str) -> None:
    """Make `components` interactive again once `event` ends, however it ends: Gradio 6's page runs a `.then` step
    after success only, and a `.failure` step after an error or a Stop, so both are registered (api names
    `{name}_over` and `{name}_failed`, private)."""
    free = [gr.update(interactive=True)] * len(components)
    event.then(lambda: free, None, components, api_name=f"{name}_over", api_visibility="private", queue=False)
    event.failure(lambda: free, None, components, api_name=f"{name}_failed", api_visibility="private", queue=False)


def parse_auth(spec: str | None) -> list[tuple[str, str]] | None:
    """`--auth user:pass[,user2:pass2]` (or $LAB_APP_AUTH) as Gradio's list of (user, password). Spaces around
    names and passwords are dropped, and ',' separates users, so a password can neither start or end with a space
    nor hold a ','."""
    spec = spec or os.environ.get(AUTH_ENV)
    if not spec:
        return None
    pairs = [[part.strip() for part in item.split(":", 1)] for item in spec.split(",")]  # "a:1, b:2" is two users
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise LabError("--auth must look like user:password (several: alice:pw1,bob:pw2)",
                       where=f"--auth or ${AUTH_ENV}", fix="give a user name and a password separated by ':'")
    users = [user for user, _ in pairs]
    twice = sorted({u for u in users if users.count(u) > 1})
    if twice:  # Gradio would keep the last password of each and say nothing; the passwords are never shown
        raise LabError(f"user {', '.join(map(repr, twice))} is given more than once", where=f"--auth or ${AUTH_ENV}",
                       fix="give each user one password")
    return [(user, password) for user, password in pairs]


def _no_proxy_for(host: str) -> None:
    """After it binds, Gradio asks its own address whether it is up, through httpx, which follows $http_proxy: a
    proxy set for the web (common at universities and companies) would get that request and fail the launch. The
    loopback and the app's own host go direct."""
    direct = dict.fromkeys(["127.0.0.1", "localhost", "::1", host.strip("[]")])
    for name in ("NO_PROXY", "no_proxy"):
        given = [h for h in os.environ.get(name, "").split(",") if h.strip()]
        os.environ[name] = ",".join(given + [h for h in direct if h not in given])


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, auth: str | None = None,
           share: bool = False, block: bool = True, queue_size: int = QUEUE_SIZE, takes_votes: bool = False) -> tuple:
    """Queue and serve `demo`; returns Gradio's (app, local_url, share_url). `block=False` returns at once
    (tests, notebooks): call `demo.close()` when done. Blocking, it serves until Ctrl-C. `takes_votes`: the
    arena's, which train the next reward model (said when it is served beyond this machine without a login)."""
    global _served_beyond_this_machine
    _served_beyond_this_machine = share or host not in LOOPBACK
    if ":" in host and not host.startswith("["):  # an IPv6 address: Gradio writes its own URL with it unbracketed
        host = f"[{host}]"
    _no_proxy_for(host)
    demo.queue(default_concurrency_limit=1, max_size=queue_size, api_open=False)  # no direct POST around the queue
    logins = parse_auth(auth)
    demo.delete_cache = (3600, 3600)  # Gradio's temporary files older than an hour go, hourly
    try:  # max_file_size=0: neither app takes a file, and Gradio's upload route would otherwise keep any size
        served = demo.launch(server_name=host, server_port=port, auth=logins, share=share, max_file_size=0,
                             prevent_thread_lock=True, quiet=True, enable_monitoring=False, theme=gr.themes.Soft())
    except OSError as err:  # gradio cannot bind: the port is taken, or the address is not this machine's
        where = f"{host}:{port}" if port else f"{host}, ports 7860 and up"
        raise LabError(f"cannot listen on {where} ({err.__class__.__name__}: {str(err).split('. ')[0]})",
                       fix="pass a free --port (or stop the app that holds it), and a --host of this machine") \
            from None
    except (httpx.HTTPError, httpx.InvalidURL) as err:  # bound, but Gradio's request to its own address failed
        demo.close()
        raise LabError(f"the app started on {host} but could not reach itself there ({cause(err)})",
                       fix="pass a --host of this machine, and leave it out of any proxy: "
                           "NO_PROXY=localhost,127.0.0.1") from None
    if _served_beyond_this_machine and not logins:
        print(f"[lab] warning: {demo.title} is open to {'anyone with the link' if share else 'the network'} with no "
              f"login{', and votes there train the next reward model' if takes_votes else ''}: pass --auth "
              "user:pass (or set $LAB_APP_AUTH)", file=sys.stderr)
    if block:  # Gradio's own banner would advise `share=True` in code; the lab's switch is --share
        print(f"[lab] {demo.title} on {served[1]}" + (f" and {served[2]}" if served[2] else "") +
              ("" if auth or os.environ.get(AUTH_ENV) else " (no login: --auth user:pass)") + "; Ctrl-C stops it")
        try:  # not demo.block_thread(), which ends on Ctrl-C with Gradio's own line and no error: `lab` exited 0
            while demo.is_running:
                time.sleep(0.1)
        except KeyboardInterrupt:  # what block_thread does then, and the CLI's one line and exit status 130
            demo.close(verbose=False)
            for tunnel in CURRENT_TUNNELS:  # --share's
                tunnel.kill()
            raise
    return served
