"""Turns mode (UltraChat-style self-chat): a user-simulator call and an assistant call per round.

The assistant sees a real chat history (its own earlier answers as assistant messages); the simulator
sees the same chat from the human's side and writes the human's next message, or the end marker. Small teachers
often write the other side's turn too ("Human: ... AI: ..."): each reply is cut at the first label of
the other role, and a leading label of its own role is dropped. How many were cut is kept on the record.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tasks.core.config import TurnsParams
from tasks.core.dialogue import AI, HUMAN, ROLE_TAG, Turn
from tasks.engine.chat import Chat, Rejected, Reply

# v1.2: replies cut off by max_tokens end the dialogue at the last whole turn
TEMPLATE_VERSION = "turns_v1.2"


def template_version(params: TurnsParams) -> str:
    """Part of every dialogue id: another assistant prompt is another corpus (the default one is v1.2's)."""
    if params.assistant_prompt == TurnsParams.model_fields["assistant_prompt"].default:
        return TEMPLATE_VERSION
    return f"{TEMPLATE_VERSION}+{hashlib.sha256(params.assistant_prompt.encode()).hexdigest()[:8]}"


def _simulator_system(topic: str, end_marker: str) -> str:
    return ("You are a curious person talking to an AI assistant. After each answer, ask one short follow-up "
            f"question about it. Never answer questions yourself. When you have nothing more to ask, reply with "
            f"{end_marker} only. You started by asking: {topic}")


# Shown as an earlier exchange: at 135M parameters the simulator needs the role demonstrated. A transcript
# with [Human]/[AI] labels made it continue as [AI]; this flipped chat gave label-free follow-ups.
_SIMULATOR_EXAMPLE = [
    ("Give it at least six hours of bright light a day, water when the top of the soil is dry, and pinch off "
     "flower buds so it keeps growing leaves.", "Why does it wilt even when I water it?"),
    ("Wilting with wet soil usually means the roots sit in water. Use a pot with drainage holes and let the soil "
     "dry a little between waterings.", "Should I use a special soil mix for that?"),
]


def _label_role(label: str) -> str:
    word = label.strip("[]|: \t\n").lower()
    return HUMAN if word.startswith(("human", "user")) else AI


def keep_own_turn(text: str, role: str) -> tuple[str, int]:
    """Cut `text` at the first label of the other role; drop labels of its own. Returns (text, labels removed)."""
    removed = 0
    for match in ROLE_TAG.finditer(text):
        removed += 1
        if _label_role(match.group(0)) != role:
            text = text[:match.start()]
            break
    cleaned = ROLE_TAG.sub("", text).strip()
    return cleaned, removed


def ends_inside_turn(reply: Reply, role: str) -> bool:
    """max_tokens stopped the reply inside `role`'s turn (not after it, in a turn of the other role that is
    cut away anyway)."""
    return reply.cut_off and not any(_label_role(m.group(0)) != role for m in ROLE_TAG.finditer(reply.text))


def assistant_messages(history: list[Turn], system: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system},
            *({"role": "user" if t.role == HUMAN else "assistant", "content": t.text} for t in history)]


def simulator_messages(history: list[Turn], end_marker: str) -> list[dict[str, str]]:
    """The chat seen from the human's side: the assistant's answers arrive as user messages."""
    messages = [{"role": "system", "content": _simulator_system(history[0].text, end_marker)}]
    for answer, follow_up in _SIMULATOR_EXAMPLE:
        messages += [{"role": "user", "content": answer}, {"role": "assistant", "content": follow_up}]
    messages += [{"role": "user" if t.role == AI else "assistant", "content": t.text} for t in history[1:]]
    return messages


async def turns_dialogue(chat: Chat, seed_text: str, params: TurnsParams) -> dict[str, Any]:
    """Returns the record's dialogue fields; the seed question is the human's first turn.

    A reply cut off by max_tokens is not a whole turn: a cut answer ends the dialogue at the answer before
    it (with the question it answered), a cut question ends it at the last answer."""
    history = [Turn(HUMAN, seed_text.strip())]
    raw: list[str] = []
    labels_removed = 0
    finish_reason = None
    cut_off = 0

    def fields() -> dict[str, Any]:
        return {"raw": raw, "finish_reason": finish_reason, "turns": [t.as_dict() for t in history],
                "rounds": sum(t.role == AI for t in history), "role_labels_removed": labels_removed,
                "turns_cut_off": cut_off}

    for round_number in range(params.max_rounds):
        reply = await chat(assistant_messages(history, params.assistant_prompt))
        raw.append(reply.text)
        finish_reason = reply.finish_reason
        answer, removed = keep_own_turn(reply.text, AI)
        labels_removed += removed
        if ends_inside_turn(reply, AI):
            cut_off += 1
            if round_number == 0:
                raise Rejected("cut off by max_tokens: no whole AI turn", fields())
            history.pop()  # the question whose answer was cut off
            break
        if not answer:
            raise Rejected(f"empty assistant turn in round {round_number + 1} after removing role labels", fields())
        history.append(Turn(AI, answer))
        if round_number + 1 == params.max_rounds:
            break
        reply = await chat(simulator_messages(history, params.end_marker))
        raw.append(reply.text)
        question, removed = keep_own_turn(reply.text.split(params.end_marker)[0], HUMAN)
        labels_removed += removed
        if params.end_marker in reply.text or not question:
            break  # the simulator ended the dialogue (or had nothing to ask); it ends on the AI's answer
        if ends_inside_turn(reply, HUMAN):
            cut_off += 1
            break
        history.append(Turn(HUMAN, question))
    return fields()
