"""Harmony, the chat format gpt-oss was trained on, over the `o200k_harmony` tokenizer.

A conversation is a list of messages, each rendered as

    <|start|>{author}[ to={recipient}][<|channel|>{channel}[ {content_type}]]<|message|>{content}<|end|>

where the author is a role (system, developer, user, assistant) or a tool's name. The
assistant writes on channels: `analysis` (its chain of thought, not for the user),
`commentary` (tool calls) and `final` (the answer). It ends its turn with `<|return|>`
instead of `<|end|>`, and a tool call (a message with a recipient) with `<|call|>`:
those two are the tokens generation stops at.

To ask for a reply, render the conversation and append `<|start|>assistant`; the model
writes the rest. `parse_completion` turns what it wrote back into messages.

The reference implementation is OpenAI's `openai-harmony` package; `tests/test_harmony.py`
holds our token ids equal to its. Tool definitions (the developer message's TypeScript-like
function list) are not rendered here; tool calls and results are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ROLES = ("system", "developer", "user", "assistant")
CHANNELS = ("analysis", "commentary", "final")
STOP_TOKENS = ("<|return|>", "<|call|>")  # where the assistant's turn ends (a reply / a tool call)
SPECIAL_TOKENS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>")


class HarmonyError(ValueError):
    """Tokens that do not form harmony messages."""


@dataclass
class Message:
    role: str  # one of ROLES, or "tool" for a tool's reply
    content: str
    channel: str | None = None  # the assistant's: analysis, commentary or final
    recipient: str | None = None  # "functions.get_weather" for a tool call; "assistant" for a tool's reply
    content_type: str | None = None  # e.g. "<|constrain|>json" on a tool call
    name: str | None = None  # a tool's name: its messages are authored by it, not by a role

    @property
    def author(self) -> str:
        return self.name if self.role == "tool" else self.role


# -- the system and developer messages ----------------------------------------------------

def system_message(reasoning: str = "medium", date: str | None = None, knowledge_cutoff: str = "2024-06",
                   identity: str = "You are ChatGPT, a large language model trained by OpenAI.") -> Message:
    """The system message gpt-oss expects: who it is, its knowledge cutoff, today's date,
    how hard to think (`reasoning`: low, medium or high) and the channels it may write on."""
    if reasoning not in ("low", "medium", "high"):
        raise ValueError(f"reasoning must be 'low', 'medium' or 'high', got {reasoning!r}")
    lines = [identity, f"Knowledge cutoff: {knowledge_cutoff}"]
    if date:
        lines.append(f"Current date: {date}")
    text = "\n".join(lines) + f"\n\nReasoning: {reasoning}\n\n"
    text += f"# Valid channels: {', '.join(CHANNELS)}. Channel must be included for every message."
    return Message("system", text)


def developer_message(instructions: str) -> Message:
    """What the system prompt is elsewhere: the developer's instructions to the model."""
    return Message("developer", f"# Instructions\n\n{instructions}")


# -- the tokenizer -----------------------------------------------------------------------

_ENCODING = None


def get_encoding():
    """tiktoken's `o200k_harmony`: o200k_base's 200k BPE tokens plus harmony's special tokens."""
    global _ENCODING
    if _ENCODING is None:
        import tiktoken

        try:
            _ENCODING = tiktoken.get_encoding("o200k_harmony")
        except Exception as err:  # offline without the cached file: a requests/urllib error
            cache = os.environ.get("TIKTOKEN_CACHE_DIR")
            where = f"TIKTOKEN_CACHE_DIR={cache} does not hold it" if cache else "TIKTOKEN_CACHE_DIR is not set"
            raise HarmonyError(
                "could not load tiktoken's 'o200k_harmony' encoding: it needs o200k_base's file, downloaded on "
                f"first use, and {where}; set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached "
                f"o200k_base file, or go online ({type(err).__name__})") from None
    return _ENCODING


def special(token: str) -> int:
    return get_encoding().encode_single_token(token)


def stop_token_ids() -> list[int]:
    return [special(t) for t in STOP_TOKENS]


# -- rendering ---------------------------------------------------------------------------

def render_header(message: Message) -> str:
    header = message.author
    if message.recipient:
        header += f" to={message.recipient}"
    if message.channel:
        header += f"<|channel|>{message.channel}"
        if message.content_type:
            header += f" {message.content_type}"
    elif message.content_type:
        header += f" {message.content_type}"
    return header


def render_message(message: Message, last_of_training: bool = False) -> list[int]:
    """One message's tokens. The content is ordinary text: special tokens in it are refused."""
    if message.role not in ROLES + ("tool",):
        raise ValueError(f"role must be one of {ROLES + ('tool',)}, got {message.role!r}")
    if message.role == "tool" and not message.name:
        raise ValueError("a tool's message needs the tool's name (name='functions.get_weather')")
    if message.channel is not None and (not message.channel or any(c.isspace() or c == "<" for c in message.channel)):
        raise ValueError(f"a channel is one word, e.g. 'final' (or None for none), got {message.channel!r}; "
                         "harmony reads nothing else back")
    enc = get_encoding()
    if message.role == "assistant" and message.recipient:
        end = "<|call|>"  # a tool call: the model stops here and waits for the result
    elif last_of_training and message.role == "assistant" and message.channel == "final":
        end = "<|return|>"
    else:
        end = "<|end|>"
    try:
        content = enc.encode(message.content, disallowed_special="all")
    except ValueError as err:
        raise ValueError(f"a message's content may not contain harmony's special tokens ({err})") from None
    header = enc.encode(render_header(message), allowed_special=set(SPECIAL_TOKENS))
    return [special("<|start|>"), *header, special("<|message|>"), *content, special(end)]


def drop_old_analysis(messages: list[Message]) -> list[Message]:
    """The chain of thought of earlier turns is not shown to the model again.

    As openai-harmony does it: when the assistant's last message is a final answer, the
    analysis messages before the conversation's first final answer are dropped.
    """
    assistant = [m for m in messages if m.role == "assistant"]
    if not assistant or assistant[-1].channel != "final":
        return list(messages)
    first_final = next(i for i, m in enumerate(messages) if m.channel == "final")
    return [m for i, m in enumerate(messages) if not (i < first_final and m.channel == "analysis")]


def render_conversation(messages: list[Message], drop_analysis: bool = True) -> list[int]:
    """Every message, as it stands (but for old analysis, see `drop_old_analysis`)."""
    kept = drop_old_analysis(messages) if drop_analysis else messages
    return [t for m in kept for t in render_message(m)]


def render_prompt(messages: list[Message], drop_analysis: bool = True) -> list[int]:
    """The conversation followed by `<|start|>assistant`: what the model continues to reply."""
    tokens = render_conversation(messages, drop_analysis)
    return tokens + get_encoding().encode("<|start|>assistant", allowed_special={"<|start|>"})


def render_for_training(messages: list[Message], drop_analysis: bool = True) -> list[int]:
    """The conversation as a training example: a closing final answer ends in `<|return|>`."""
    kept = drop_old_analysis(messages) if drop_analysis else messages
    return [t for i, m in enumerate(kept) for t in render_message(m, last_of_training=i == len(kept) - 1)]


# -- parsing -----------------------------------------------------------------------------

def parse_header(text: str) -> dict:
    """'assistant to=functions.f<|channel|>commentary <|constrain|>json' -> the message's fields,
    read as openai-harmony reads them: the channel is the word after <|channel|> wherever it
    stands (an empty one is refused), <|constrain|> begins a word of its own, the first word is
    the author, and of the words left a last 'to=...' is the recipient, a single word is the
    recipient too, and two are the recipient and the content type."""
    fields = {}
    if "<|channel|>" in text:
        before, after = text.split("<|channel|>", 1)
        end = next((i for i, c in enumerate(after) if c.isspace() or c == "<"), len(after))
        if end == 0:
            raise HarmonyError(f"the header {text!r} has <|channel|> but no channel name after it")
        fields["channel"], text = after[:end], before + after[end:]
    words = text.replace("<|constrain|>", " <|constrain|>").split()
    if not words:
        raise HarmonyError(f"a message header names no author: {text!r}")
    author = words.pop(0)
    if author not in ROLES + ("tool",) and not words and not author.startswith("to="):
        raise HarmonyError(f"the header {text!r} names no role or tool: {author!r} is not one of {ROLES}, and a "
                           "tool's header names a recipient")
    if author in ROLES:
        fields["role"] = author
    else:
        fields["role"], fields["name"] = "tool", author
        if author != "tool" and words[:1] == ["tool"]:  # "functions.f tool ...": openai-harmony drops the role
            words.pop(0)
    if words:
        last = words.pop()
        if last.startswith("to=") or not words:
            fields["recipient"] = last.removeprefix("to=")
        else:
            fields["content_type"] = last
            fields["recipient"] = words.pop().removeprefix("to=")
    if words:
        raise HarmonyError(f"unexpected words {words} in the message header {text!r}")
    return fields


def parse_messages(tokens: list[int]) -> list[Message]:
    """Rendered tokens (`<|start|>...<|end|>` messages) back into messages.

    The last message may be cut short, without its `<|end|>`, `<|return|>` or `<|call|>`
    (a completion that ran out of tokens): its content is what was written.
    """
    enc = get_encoding()
    start, message_tok = special("<|start|>"), special("<|message|>")
    ends = {special("<|end|>"), *stop_token_ids()}
    messages, i = [], 0
    while i < len(tokens):
        if tokens[i] != start:
            raise HarmonyError(f"expected <|start|> at token {i}, got {enc.decode([tokens[i]])!r}")
        try:
            body = tokens.index(message_tok, i + 1)
        except ValueError:
            raise HarmonyError(f"the header that starts at token {i} never reaches <|message|>") from None
        end = next((j for j in range(body + 1, len(tokens)) if tokens[j] in ends), len(tokens))
        fields = parse_header(enc.decode(tokens[i + 1:body]))
        messages.append(Message(content=enc.decode(tokens[body + 1:end]), **fields))
        i = end + 1
    return messages


def parse_completion(tokens: list[int], role: str = "assistant") -> list[Message]:
    """What the model wrote after `<|start|>assistant`, up to and including its stop token
    (anything after a stop token is not the reply and is ignored), as messages."""
    stops = set(stop_token_ids())
    cut = next((j + 1 for j, t in enumerate(tokens) if t in stops), len(tokens))
    head = get_encoding().encode(f"<|start|>{role}", allowed_special={"<|start|>"})
    return parse_messages(head + list(tokens[:cut]))
