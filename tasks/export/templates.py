"""The training format (Baize) as the chat templates of the engines that run the exported file: Jinja in the
GGUF (llama.cpp's server with --jinja, LM Studio) and a Go template in Ollama's Modelfile. Both render what
tasks/serve/conversation.py renders: "{system}\\n" + header + " {turn}\\n[|AI|]" / " {turn}\\n[|Human|]"."""

from __future__ import annotations

import json

from tasks.core.dialogue import BAIZE_HEADER
from tasks.models.generation import STOP

JINJA = (
    "{%- for m in messages if m['role'] == 'system' %}{{ m['content'] }}\n{% endfor -%}"
    + BAIZE_HEADER
    + "\n[|Human|]"
    "{%- for m in messages if m['role'] != 'system' %} {{ m['content'] | trim }}\n"
    "{% if m['role'] == 'user' %}[|AI|]{% else %}[|Human|]{% endif %}{%- endfor -%}"
)

GO_TEMPLATE = (
    "{{ if .System }}{{ .System }}\n{{ end }}" + BAIZE_HEADER + "\n[|Human|]"
    "{{ range .Messages }}{{ if eq .Role \"user\" }} {{ .Content }}\n[|AI|]"
    "{{ else if eq .Role \"assistant\" }} {{ .Content }}\n[|Human|]{{ end }}{{ end }}"
)


def modelfile(gguf_name: str, system: str | None, context_tokens: int) -> str:
    """An Ollama Modelfile next to the GGUF: greedy, as evaluated, stopping where the next human turn opens."""
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {json.dumps(GO_TEMPLATE)}"]
    if system:
        lines.append(f"SYSTEM {json.dumps(system)}")
    lines += [f"PARAMETER stop {json.dumps(STOP)}", "PARAMETER temperature 0", f"PARAMETER num_ctx {context_tokens}"]
    return "\n".join(lines) + "\n"
