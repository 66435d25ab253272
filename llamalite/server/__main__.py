"""`python -m llamalite.server` (and `llamalite serve`): load the models,
then serve them with uvicorn until SIGINT/SIGTERM."""
from __future__ import annotations

import logging
import sys
from typing import List, Optional

PROG = "python -m llamalite.server"


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    try:
        import uvicorn
        from pydantic import ValidationError
    except ImportError as e:
        return _fail(prog, f"the server needs the `server` extra ({e.name} is missing): "
                     "pip install 'llamalite[server]'")
    from ..errors import LlamaliteError
    from .app import create_app, load_models
    from .settings import Settings, validation_summary

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        server, model_settings = Settings(_cli_parse_args=argv, _cli_prog_name=prog).served()
    except ValidationError as e:
        return _fail(prog, validation_summary(e, flags=True))
    except LlamaliteError as e:
        return _fail(prog, str(e))
    _log_to_stderr()
    try:
        workers = load_models(model_settings)
    except (LlamaliteError, OSError, ValueError) as e:
        return _fail(prog, str(e))
    for alias, w in workers.items():
        logging.getLogger("llamalite.server").info(
            "serving %s (%s, n_ctx %d) as `%s`", w.llama.model_path.rsplit("/", 1)[-1],
            w.llama.chat_format, w.llama.n_ctx(), alias)
    app = create_app(server, workers)
    # uvicorn waits for open requests on SIGTERM; streams are closed for it
    # (their jobs cancelled), so a shutdown takes at most one token plus the
    # longest non-streamed answer in flight.
    uvicorn.run(app, host=server.host, port=server.port, log_level="info")
    return 0


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    log = logging.getLogger("llamalite.server")
    log.addHandler(handler)
    log.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
