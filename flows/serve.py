"""`make serve`: the registered version behind an alias (default `champion`) as an OpenAI-compatible chat
endpoint on 127.0.0.1, with the guardrail prompt it was evaluated with as the default system message. Engine
gguf (serve.engine, the default): its export (`make export`, made first if missing) behind llama.cpp, served
only if it gives the evaluated answers (serve.min_identical); transformers: the merged model behind generate.

    python -m flows.serve [--alias challenger] [--port 8008] [--engine transformers]
    # then: make chat, or any OpenAI client with base_url=http://127.0.0.1:8008/v1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from flows.export import export_version
from flows.stage import fail
from tasks.core.config import ConfigError, Params, load_params
from tasks.core.errors import SelfchatError
from tasks.core.paths import BASE_DIR
from tasks.export.agreement import check_agreement
from tasks.models.gguf import GGUFGenerator
from tasks.models.student import load_tokenizer
from tasks.register.registry import load_merged_by_alias, version_by_alias
from tasks.serve.app import Served, build_app
from tasks.serve.engine import PARALLEL, ChatEngine, Engine, GGUFEngine
from tasks.services.local_server import port_free
from tasks.services.runtime import apply_runtime_defaults


def served_version(model_name: str, alias: str, max_tokens: int, context_tokens: int) -> Served:
    if not BASE_DIR.is_dir():
        raise SelfchatError(f"{BASE_DIR} not found: run from the project root after `dvc pull {BASE_DIR}` "
                            "(or `make run`)")
    version = version_by_alias(model_name, alias)
    return Served(model_name, alias, str(version.version), version.tags.get("evaluate.guardrail_prompt") or None,
                  max_tokens, context_tokens)


def load_transformers_engine(model_name: str, alias: str, max_tokens: int,
                             context_tokens: int) -> tuple[ChatEngine, Served]:
    """The version's adapter merged into its base (checked by content hash): one plain model to run."""
    served = served_version(model_name, alias, max_tokens, context_tokens)
    _, merged = load_merged_by_alias(model_name, alias, BASE_DIR)
    return ChatEngine(merged, load_tokenizer(BASE_DIR)), served


def load_gguf_engine(params: Params, alias: str, parallel: int = PARALLEL) -> tuple[GGUFEngine, Served]:
    """The version's export, checked to give the evaluated answers before anything is served."""
    settings = params.serve
    served = served_version(params.register_.model_name, alias, settings.max_tokens, settings.context_tokens)
    export, agreement = export_version(params, alias)
    check_agreement(agreement, settings.min_identical)
    print(f"{export.gguf}: {agreement}", flush=True)
    engine = GGUFEngine(GGUFGenerator(export.gguf, settings.context_tokens), load_tokenizer(BASE_DIR),
                        parallel=parallel, context_tokens=settings.context_tokens)
    return engine, served


def load_engine(params: Params, alias: str, engine: str, parallel: int = PARALLEL) -> tuple[Engine, Served]:
    if engine == "gguf":
        return load_gguf_engine(params, alias, parallel)
    settings = params.serve
    return load_transformers_engine(params.register_.model_name, alias, settings.max_tokens, settings.context_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--alias", default=None, help="registry alias (default: serve.alias)")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: serve.port)")
    parser.add_argument("--engine", choices=("gguf", "transformers"), default=None,
                        help="what runs the model (default: serve.engine)")
    parser.add_argument("--parallel", type=int, default=PARALLEL,
                        help=f"gguf: requests answered together in one batch; more wait (default: {PARALLEL})")
    args = parser.parse_args()
    if args.parallel < 1:
        parser.error(f"--parallel must be at least 1, not {args.parallel}")
    apply_runtime_defaults()
    try:
        params = load_params(Path(args.params))
    except ConfigError as exc:
        fail(str(exc), 2)
    settings = params.serve
    alias, port = args.alias or settings.alias, args.port or settings.port
    if not port_free(port):
        fail(f"port {port} on 127.0.0.1 is in use (another `make serve`?): pass --port or set serve.port")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        engine, served = load_engine(params, alias, args.engine or settings.engine, args.parallel)
    except SelfchatError as exc:
        fail(str(exc))
    print(f"serving {served.model_id} (version {served.version}) at http://127.0.0.1:{port}/v1 "
          "(OpenAI-compatible; `make chat` to talk to it)", flush=True)
    try:
        uvicorn.run(build_app(engine, served), host="127.0.0.1", port=port, log_level="warning")
    finally:
        engine.close()


if __name__ == "__main__":
    main()
