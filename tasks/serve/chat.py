"""`make chat`: a multi-turn terminal chat with the model `make serve` serves, through the OpenAI SDK.

    python -m tasks.serve.chat [--url http://127.0.0.1:8008/v1] [--system "..."]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import openai

from tasks.core.config import ConfigError, load_params


def chat(client: openai.OpenAI, model: str, system: str | None) -> None:
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system is not None else []
    while True:
        try:
            question = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not question or question in ("/quit", "/exit"):
            return
        if question == "/reset":
            history = history[:1] if system is not None else []
            print("(history cleared)")
            continue
        history.append({"role": "user", "content": question})
        print("ai> ", end="", flush=True)
        answer = []
        try:
            for chunk in client.chat.completions.create(model=model, messages=history, stream=True):
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    answer.append(piece)
                    print(piece, end="", flush=True)
        except openai.APIStatusError as exc:  # e.g. over the context: say so, keep the conversation
            history.pop()
            print(f"\n(refused: {exc.body.get('message') if isinstance(exc.body, dict) else exc})")
            continue
        except openai.APIConnectionError:
            history.pop()
            print("\n(the server went away: start it again with `make serve`)")
            continue
        except KeyboardInterrupt:  # stop this answer, keep chatting
            history.pop()
            print("\n(interrupted)")
            continue
        print()
        history.append({"role": "assistant", "content": "".join(answer)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--url", default=None, help="the server's /v1 URL (default: serve.port on 127.0.0.1)")
    parser.add_argument("--system", default=None, help="a system message instead of the served guardrail prompt")
    args = parser.parse_args()
    try:
        port = load_params(Path(args.params)).serve.port
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    url = args.url or f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)  # a local server needs no key
    try:
        served = client.models.list().data[0]
    except openai.APIConnectionError:
        print(f"error: no server answers at {url}: start one with `make serve`", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"talking to {served.id} (version {getattr(served, 'version', '?')}) at {url}; "
          "/reset starts over, an empty line ends")
    chat(client, served.id, args.system)


if __name__ == "__main__":
    main()
