"""`make serve`: the registered version behind an alias (default `champion`) as an OpenAI-compatible chat
endpoint on 127.0.0.1, with the guardrail prompt it was evaluated with as the default system message.

    python -m flows.serve [--alias challenger] [--port 8008]
    # then: make chat, or any OpenAI client with base_url=http://127.0.0.1:8008/v1
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import uvicorn

from flows.stage import fail
from tasks.core.config import ConfigError, load_params
from tasks.core.errors import SelfchatError
from tasks.core.paths import BASE_DIR
from tasks.models.student import load_tokenizer
from tasks.register.registry import load_by_alias, version_by_alias
from tasks.serve.app import Served, build_app
from tasks.serve.engine import ChatEngine
from tasks.services.local_server import port_free
from tasks.services.runtime import apply_runtime_defaults


def load_engine(model_name: str, alias: str, max_tokens: int, context_tokens: int) -> tuple[ChatEngine, Served]:
    """The version's adapter merged into its base (checked by content hash): one plain model to run."""
    version = version_by_alias(model_name, alias)
    if not BASE_DIR.is_dir():
        raise SelfchatError(f"{BASE_DIR} not found: run from the project root after `dvc pull {BASE_DIR}` "
                            "(or `make run`)")
    with tempfile.TemporaryDirectory() as tmp:
        _, model = load_by_alias(model_name, alias, BASE_DIR, Path(tmp))
        merged = model.merge_and_unload()
    served = Served(model_name, alias, str(version.version), version.tags.get("evaluate.guardrail_prompt") or None,
                    max_tokens, context_tokens)
    return ChatEngine(merged, load_tokenizer(BASE_DIR)), served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--alias", default=None, help="registry alias (default: serve.alias)")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: serve.port)")
    args = parser.parse_args()
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
        engine, served = load_engine(params.register_.model_name, alias, settings.max_tokens, settings.context_tokens)
    except SelfchatError as exc:
        fail(str(exc))
    print(f"serving {served.model_id} (version {served.version}) at http://127.0.0.1:{port}/v1 "
          "(OpenAI-compatible; `make chat` to talk to it)", flush=True)
    uvicorn.run(build_app(engine, served), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
