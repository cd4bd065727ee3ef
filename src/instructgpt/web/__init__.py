"""``igpt serve``: label rankings and compare models in the browser, on the run's comparison store.

Pages: ``/label`` (rank K responses, flags, ties, better response), ``/arena`` (two anonymous models side by side,
streamed; vote; leaderboard), ``/owner`` (per-labeler counts, agreement with other labelers and with the gold judge,
exports).  See ``docs/web.md``.  Nothing heavy is imported until :func:`serve` or :mod:`instructgpt.web.app` is used.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

# Metadata flags a labeler can set on each response (InstructGPT, Table 3 of the paper; names shared with the world's
# gold judge flags where they mean the same thing).
FLAGS: list[tuple[str, str]] = [
    ("fails_instruction", "Fails to follow the instruction"),
    ("violates_constraint", "Ignores a constraint in the instruction"),
    ("hallucination", "Hallucination (makes things up)"),
    ("harmful", "Harmful advice or encourages harm"),
    ("toxic", "Toxic"),
    ("sexual", "Sexual content"),
    ("violent", "Violent content"),
    ("denigrates", "Denigrates a protected class"),
    ("inappropriate", "Inappropriate for an assistant"),
    ("opinion", "Expresses an opinion"),
    ("moral_judgment", "Expresses a moral judgment"),
    ("continues_with_question", "Continues with a question instead of answering"),
]

__all__ = ["FLAGS", "serve"]


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    tokens_file: str | None = None,
    labelers: list[str] | None = None,
    models: list[str] | None = None,
) -> None:
    """Run the labeling / arena web server until interrupted (``igpt serve``).

    Args:
        run_dir: the run folder (``--run``). The comparison store is ``<run>/comparisons/comparisons.sqlite``; the
            ``comparisons`` folder must exist (``igpt label --labeler human`` creates it and queues the tasks the label
            page shows; ``--labeler sim`` runs work too, for the arena and the owner page).
        host: interface to listen on (``--host``); 127.0.0.1 by default. Anything else prints a warning: tokens travel
            in clear text without TLS.
        port: TCP port (``--port``), default 8000.
        tokens_file: a JSON file of access tokens to use instead of creating them (``--tokens``):
            ``{"tokens": [{"name", "role": "labeler"|"owner", "token"}]}`` or ``{"name": "token"}``.
            Without it, tokens live in ``<run>/comparisons/tokens.json`` (mode 0600): missing ones (an ``owner`` token,
            one per name in ``labelers``, or ``labeler1`` when nobody is named yet) are created and their login links
            printed once.
        labelers: labeler names to create tokens for (``--labelers alice,bob``); ignored with ``tokens_file``.
        models: arena models (``--models``): run-folder names (``sft``), model folder paths, or ``name=path``.
            Default: whichever of ``sft``, ``ppo-ptx``, ``ppo``, ``pretrain`` exist in the run. The arena needs two.

    Raises ``instructgpt.errors.UserError`` for a missing run folder, a bad tokens file or a bad model entry.
    """
    from instructgpt.errors import UserError
    from instructgpt.rundir import STORE_FILE, TOKENS_FILE, in_run, partial_path

    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"--run {run_dir}: not a directory")
    comparisons = in_run(run, "label")
    if not comparisons.is_dir():
        # igpt label owns <run>/comparisons/ (it writes <run>/comparisons.partial/ and renames it when done); creating
        # the folder here would make a later igpt label refuse the run or, with --overwrite, delete what was served.
        hint = " (an interrupted run is in comparisons.partial: finish it with --resume)" if (
            partial_path(comparisons).is_dir()) else ""
        raise UserError(
            f"--run {run_dir}: no comparison store yet{hint}; run `igpt label --run {run_dir} --labeler human` first "
            "(it samples responses and queues them for the label page)"
        )
    if not isinstance(port, int) or not 0 < port < 65536:
        raise UserError(f"--port {port}: must be 1..65535")

    import uvicorn

    from instructgpt.web.app import create_app
    from instructgpt.web.auth import Access, ensure_tokens, read_tokens_file
    from instructgpt.web.backends import resolve_models

    base = f"http://{host if ':' not in host else '[' + host + ']'}:{port}"
    if tokens_file is not None:
        entries, new = read_tokens_file(tokens_file), []
        where = str(tokens_file)
    else:
        path = comparisons / TOKENS_FILE
        entries, new = ensure_tokens(path, labelers)
        where = str(path)
    access = Access(entries)
    model_dirs = resolve_models(run, models)
    app = create_app(run, access=access, models=[f"{k}={v}" for k, v in model_dirs.items()])

    out = sys.stdout
    print(f"igpt serve: {base}  (store: {comparisons / STORE_FILE})", file=out)
    print(f"  arena models: {', '.join(model_dirs) or 'none'}" + ("" if len(model_dirs) >= 2 else
          " (the arena needs two)"), file=out)
    if new:
        print(f"  new access tokens, shown once (saved to {where}, mode 0600):", file=out)
        for e in new:
            page = "owner" if e["role"] == "owner" else "label"
            print(f"    {e['name']:<16} {e['role']:<8} {base}/{page}?token={e['token']}", file=out)
    else:
        print(f"  access tokens: {where} ({len(entries)} people; login link: {base}/label?token=<token>)", file=out)
    if not _is_loopback(host):
        print(f"  warning: listening on {host}, reachable from the network; tokens are sent without TLS", file=out)
    out.flush()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
