"""One model answering chat prompts, whole or streamed: the exported GGUF behind llama.cpp (GGUFEngine, the
default), which answers concurrent requests together in one batch, or the merged model behind transformers'
generate (ChatEngine), one request at a time (see bench/serve.py)."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from tasks.models.gguf import Detokenizer, GGUFGenerator, GGUFSequences
from tasks.serve.conversation import STOP

# the GGUF engine's batch: on 2 cores 4 answers per step give 1.4x the tokens/s of one and the first token
# without queueing (bench/serve.py); more requests wait
PARALLEL = 4


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0  # 0: greedy, the answer the evaluation saw
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Answer:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "length"


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found."""
    cuts = [text.index(stop) for stop in stops if stop in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters could be the start of a stop string (not streamed until known)."""
    return max((n for stop in stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)


class StopFilter:
    """What of the generated text may be shown so far: never a stop string or what may open one, no leading
    or trailing whitespace (trailing whitespace waits for what follows it)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.text, self.sent, self.stopped = "", 0, False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""  # what generate had made when the stop string appeared
        self.text = (self.text + piece).lstrip()  # the answer starts after the marker's space
        visible, self.stopped = cut_at_stop(self.text, self.stops)
        held = 0 if self.stopped else held_back(visible, self.stops)
        end = len(visible[:len(visible) - held].rstrip())
        new, self.sent = visible[self.sent:end] if end > self.sent else "", max(end, self.sent)
        return new

    def finish(self) -> str:
        """The rest once generation ended without a stop string (a held-back start that never completed)."""
        rest = "" if self.stopped else self.text.rstrip()[self.sent:]
        self.sent += len(rest)
        return rest

    @property
    def answer(self) -> str:
        return cut_at_stop(self.text, self.stops)[0].rstrip()


class Engine(Protocol):
    """What the app needs of an engine: the tokenizer that fits prompts to the context, and answers."""

    tokenizer: PreTrainedTokenizerBase
    parallel: int  # requests answered at once; the app lets no more than these in

    def stream(self, prompt: str, sampling: Sampling, answer: Answer) -> Iterator[str]: ...

    def answer(self, prompt: str, sampling: Sampling) -> Answer: ...

    def close(self) -> None: ...


def whole_answer(engine: Engine, prompt: str, sampling: Sampling) -> Answer:
    answer = Answer()
    for _ in engine.stream(prompt, sampling, answer):
        pass
    return answer


class _Cancelled(StoppingCriteria):
    """Ends generation when the reader of the stream has gone."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> bool:
        return self.cancel.is_set()


class ChatEngine:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.parallel = 1  # one generate at a time: it uses both cores already
        self._lock = threading.Lock()

    def _generate_kwargs(self, prompt: str, sampling: Sampling) -> tuple[dict[str, Any], int]:
        batch = self.tokenizer(prompt, return_tensors="pt").to(next(self.model.parameters()).device)
        kwargs = dict(**batch, max_new_tokens=sampling.max_tokens, stop_strings=[STOP, *sampling.stop],
                      tokenizer=self.tokenizer, pad_token_id=self.tokenizer.pad_token_id)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        return kwargs, batch["input_ids"].shape[1]

    def stream(self, prompt: str, sampling: Sampling, answer: Answer) -> Iterator[str]:
        """The answer's text as it is generated, never past a stop string; `answer` holds the totals at the end.
        Closing the iterator early (a client that went away) ends the generation before the lock is released."""
        stops = (STOP, *sampling.stop)
        with self._lock:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            kwargs, answer.prompt_tokens = self._generate_kwargs(prompt, sampling)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            cancel = threading.Event()
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Cancelled(cancel)])
            output: dict[str, Any] = {}

            def generate() -> None:
                try:
                    output["ids"] = self.model.generate(**kwargs, streamer=streamer)
                except BaseException as exc:  # re-raised below; the streamer must still end, or we wait forever
                    output["error"] = exc
                    streamer.end()

            worker = threading.Thread(target=generate, name="selfchat-generate", daemon=True)
            worker.start()  # generate runs without gradients in its own thread
            shown = StopFilter(stops)
            try:
                for piece in streamer:
                    if new := shown.feed(piece):
                        yield new
            finally:
                cancel.set()
                worker.join()
            if "error" in output:
                raise output["error"]
            if rest := shown.finish():
                yield rest
            ids = output["ids"]
            answer.completion_tokens = int(ids.shape[1] - answer.prompt_tokens)
            answer.text = shown.answer
            # stop: a stop string or the end-of-text token; length: max_tokens reached mid-answer
            ended = answer.completion_tokens < sampling.max_tokens or int(ids[0, -1]) == self.tokenizer.eos_token_id
            answer.finish_reason = "stop" if shown.stopped or ended else "length"

    def answer(self, prompt: str, sampling: Sampling) -> Answer:
        return whole_answer(self, prompt, sampling)

    def close(self) -> None:
        """Nothing to free: the model is Python's."""


@dataclass
class _Request:
    tokens: list[int]
    sampling: Sampling
    # token ids as they are made, then why it ended ("stop" or "length") or the error that ended it
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    gone: threading.Event = field(default_factory=threading.Event)  # the reader has stopped reading
    made: int = 0


class GGUFEngine:
    """The exported file behind llama.cpp in this process, answering up to `parallel` requests together in one
    batch (GGUFSequences, stepped by one thread); more wait their turn in order. `tokenizer` (the base's, the
    same vocabulary as the file's) fits prompts to the context; the file counts the tokens it reads and makes."""

    def __init__(self, generator: GGUFGenerator, tokenizer: PreTrainedTokenizerBase, parallel: int = 1,
                 context_tokens: int | None = None) -> None:
        self.generator = generator
        self.tokenizer = tokenizer
        self.parallel = parallel
        self.sequences = GGUFSequences(generator, context_tokens or generator.llm.n_ctx(), parallel)
        self._waiting: deque[_Request] = deque()
        self._active: dict[int, _Request] = {}
        self._wake = threading.Condition()
        self._closed = False
        self._readers = 0  # streams still turning tokens into text with the file's vocabulary
        self._stepper = threading.Thread(target=self._run, name="selfchat-gguf", daemon=True)
        self._stepper.start()

    @property
    def busy(self) -> int:
        """Requests being answered or waiting."""
        with self._wake:
            return len(self._active) + len(self._waiting)

    def _end(self, seq: int, reason: str | BaseException) -> None:
        self.sequences.close(seq)
        self._active.pop(seq).out.put(reason)

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.parallel:
            request = self._waiting.popleft()
            if request.gone.is_set():
                request.out.put("stop")
                continue
            s = request.sampling
            try:
                self._active[self.sequences.open(request.tokens, s.temperature, s.top_p, s.seed)] = request
            except Exception as exc:  # this request's reader hears of it; the stepper goes on
                request.out.put(exc)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._waiting or self._active):
                    self._wake.wait()
                if self._closed:
                    break
                for seq in [seq for seq, request in self._active.items() if request.gone.is_set()]:
                    self._end(seq, "stop")  # before admitting: a reader who left frees the slot now
                self._admit()
            try:
                tokens = self.sequences.step()
                with self._wake:
                    self._hand_out(tokens)
            except Exception as exc:  # every reader hears of it; the engine goes on with the next requests
                with self._wake:
                    for seq in list(self._active):
                        self._end(seq, exc)
        with self._wake:
            closed = RuntimeError("the engine was closed before the answer was finished")
            for seq in list(self._active):
                self._end(seq, closed)
            while self._waiting:
                self._waiting.popleft().out.put(closed)

    def _hand_out(self, tokens: dict[int, int]) -> None:
        for seq, token in tokens.items():
            request = self._active[seq]
            if token == self.generator.eos:
                self._end(seq, "stop")
                continue
            request.out.put(token)
            request.made += 1
            full = self.sequences.length(seq) >= self.sequences.sequence_tokens
            if request.made >= request.sampling.max_tokens or full:
                self._end(seq, "length")

    def stream(self, prompt: str, sampling: Sampling, answer: Answer) -> Iterator[str]:
        """As ChatEngine.stream: never past a stop string; closing the iterator ends the generation."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        request = _Request(self.generator.tokenize(prompt), sampling)
        answer.prompt_tokens = len(request.tokens)
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._waiting.append(request)
            self._readers += 1
            self._wake.notify()
        shown, text = StopFilter((STOP, *sampling.stop)), Detokenizer(self.generator, request.tokens)
        made, reason = 0, "stop"
        try:
            while isinstance(item := request.out.get(), int):
                made += 1
                if new := shown.feed(text.piece(item)):
                    yield new
                if shown.stopped:
                    break
            else:
                if isinstance(item, BaseException):  # one error may end several readers: each gets its own
                    raise RuntimeError(f"the answer was not finished: {item}") from item
                reason = item
        finally:
            request.gone.set()
            with self._wake:
                self._readers -= 1
                self._wake.notify_all()
        if rest := shown.finish():
            yield rest
        answer.completion_tokens = made
        answer.text = shown.answer
        answer.finish_reason = "stop" if shown.stopped else reason

    def answer(self, prompt: str, sampling: Sampling) -> Answer:
        return whole_answer(self, prompt, sampling)

    def close(self) -> None:
        """Ends what is being answered, then frees the batch's context and the file's model."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._stepper.join()
        with self._wake:  # readers have heard; let them finish detokenizing before the model is freed
            self._wake.wait_for(lambda: not self._readers, timeout=30)
        self.sequences.close_all()
        self.generator.close()
