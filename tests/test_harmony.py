"""Harmony rendering against OpenAI's openai-harmony, and parsing back."""

import os
from pathlib import Path

import pytest

# openai-harmony downloads o200k_base on first use; offline it reads TIKTOKEN_ENCODINGS_BASE instead
if "TIKTOKEN_ENCODINGS_BASE" not in os.environ:
    for folder in (Path(__file__).resolve().parents[1] / ".." / "shared" / "tiktoken_encodings",
                   Path("/work/shared/tiktoken_encodings")):
        if folder.is_dir():
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder.resolve())
            break

import openai_harmony as oh  # noqa: E402

from nanogptoss.data import harmony  # noqa: E402
from nanogptoss.data.harmony import Message, developer_message, system_message  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)


SYSTEMS = [("medium", None), ("high", "2025-08-05"), ("low", None)]
INSTRUCTIONS = ["Answer like a pirate.", "Use tools when needed."]


def reference_contents():
    """Our system and developer messages' text -> openai-harmony's own content objects for them."""
    out = {}
    for reasoning, date in SYSTEMS:
        content = oh.SystemContent.new().with_reasoning_effort(oh.ReasoningEffort(reasoning.capitalize()))
        out[system_message(reasoning, date=date).content] = (
            content.with_conversation_start_date(date) if date else content)
    for text in INSTRUCTIONS:
        out[developer_message(text).content] = oh.DeveloperContent.new().with_instructions(text)
    return out


def to_reference(m: Message) -> "oh.Message":
    """The same message built with openai-harmony's own types."""
    if m.role in ("system", "developer"):
        return oh.Message.from_role_and_content(oh.Role(m.role), reference_contents()[m.content])
    author = oh.Author.new(oh.Role.TOOL, m.name) if m.role == "tool" else oh.Author(role=oh.Role(m.role))
    msg = oh.Message.from_author_and_content(author, m.content)
    for field in ("channel", "recipient", "content_type"):
        if getattr(m, field):
            msg = getattr(msg, f"with_{field}")(getattr(m, field))
    return msg


def user(text):
    return Message("user", text)


def assistant(text, channel="final", **kw):
    return Message("assistant", text, channel=channel, **kw)


CONVERSATIONS = {
    "system + developer + user": [system_message(), developer_message("Answer like a pirate."), user("Hi there!")],
    "high reasoning, dated": [system_message("high", date="2025-08-05"), user("What is 2 + 2?")],
    "multi-turn with analysis": [
        system_message("low"), user("What is 2 + 2?"), assistant("Easy: add them.", "analysis"), assistant("4"),
        user("And times 3?"), assistant("4 x 3 = 12.", "analysis"), assistant("12."),
    ],
    "analysis in progress": [user("Name a prime."), assistant("Two is the smallest.", "analysis"), assistant("2"),
                             user("Another?"), assistant("Three works.", "analysis")],
    "a tool call and its result": [
        system_message(), developer_message("Use tools when needed."), user("Weather in Paris?"),
        assistant("I should call the tool.", "analysis"),
        assistant('{"city": "Paris"}', "commentary", recipient="functions.get_weather",
                  content_type="<|constrain|>json"),
        Message("tool", '{"temp_c": 21}', channel="commentary", recipient="assistant", name="functions.get_weather"),
        assistant("It is 21 °C in Paris. ☀️"),
    ],
    "unicode and newlines": [user("Übersetze:\n\n  «bonjour» — 你好\t🙂"), assistant("Hallo", "final")],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_token_ids_equal_openai_harmony(name, reference):
    messages = CONVERSATIONS[name]
    conversation = oh.Conversation.from_messages([to_reference(m) for m in messages])
    assert harmony.render_conversation(messages) == reference.render_conversation(conversation)
    assert harmony.render_prompt(messages) == reference.render_conversation_for_completion(
        conversation, oh.Role.ASSISTANT)
    assert harmony.render_for_training(messages) == reference.render_conversation_for_training(conversation)
    keep = oh.RenderConversationConfig(auto_drop_analysis=False)
    assert harmony.render_conversation(messages, drop_analysis=False) == reference.render_conversation(
        conversation, keep)
    assert harmony.render_prompt(messages, drop_analysis=False) == reference.render_conversation_for_completion(
        conversation, oh.Role.ASSISTANT, keep)


def test_each_message_equals_openai_harmony(reference):
    for messages in CONVERSATIONS.values():
        for m in messages:
            assert harmony.render_message(m) == reference.render(to_reference(m)), m


def test_render_then_parse_is_the_identity():
    for messages in CONVERSATIONS.values():
        assert harmony.parse_messages(harmony.render_conversation(messages, drop_analysis=False)) == messages
        kept = harmony.parse_messages(harmony.render_conversation(messages))
        assert kept == harmony.drop_old_analysis(messages) and all(m in messages for m in kept)


def test_a_completion_parses_like_openai_harmony(reference):
    enc = harmony.get_encoding()
    written = ("<|channel|>analysis<|message|>The user greets me.<|end|><|start|>assistant<|channel|>final"
               "<|message|>Hello! How can I help?<|return|>")
    tokens = enc.encode(written, allowed_special="all")
    ours = harmony.parse_completion(tokens)
    assert ours == [assistant("The user greets me.", "analysis"), assistant("Hello! How can I help?")]
    theirs = reference.parse_messages_from_completion_tokens(tokens, oh.Role.ASSISTANT)
    assert [(m.channel, m.content[0].text) for m in theirs] == [(m.channel, m.content) for m in ours]
    # what a model writes after its stop token is not part of its reply
    more = tokens + enc.encode("<|start|>assistant<|channel|>final<|message|>again", allowed_special="all")
    assert harmony.parse_completion(more) == ours
    # a tool call stops at <|call|>; the model puts the recipient after the channel
    call = enc.encode('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Oslo"}'
                      "<|call|>", allowed_special="all")
    (tool_call,) = harmony.parse_completion(call)
    assert tool_call == assistant('{"city": "Oslo"}', "commentary", recipient="functions.get_weather",
                                  content_type="<|constrain|>json")
    (theirs,) = reference.parse_messages_from_completion_tokens(call, oh.Role.ASSISTANT)
    assert (theirs.recipient, theirs.channel, theirs.content_type) == (tool_call.recipient, tool_call.channel,
                                                                        tool_call.content_type)
    # cut short (out of tokens): the last message holds what was written
    cut = enc.encode("<|channel|>final<|message|>Hello wor", allowed_special="all")
    assert harmony.parse_completion(cut) == [assistant("Hello wor")]
    assert sorted(harmony.stop_token_ids()) == sorted(reference.stop_tokens_for_assistant_actions())


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="special tokens"):
        harmony.render_message(user("hi <|end|> there"))
    with pytest.raises(ValueError, match="role must be one of"):
        harmony.render_message(Message("bot", "hi"))
    with pytest.raises(ValueError, match="reasoning must be"):
        system_message("extreme")
    with pytest.raises(harmony.HarmonyError, match="expected <|start|>"):
        harmony.parse_messages(harmony.get_encoding().encode("hello"))


def test_a_missing_tokenizer_names_the_variable(tmp_path, monkeypatch):
    import tiktoken.load

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache, and no network:
    monkeypatch.setattr(tiktoken.load, "read_file", lambda url: (_ for _ in ()).throw(ConnectionError(url)))
    monkeypatch.setattr(harmony, "_ENCODING", None)
    import tiktoken.registry

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # tiktoken keeps loaded encodings
    with pytest.raises(harmony.HarmonyError, match="TIKTOKEN_CACHE_DIR"):
        harmony.get_encoding()


# headers as a model may write them, well-formed or not: each must be read as openai-harmony reads it, or
# refused where it refuses (an empty channel, an unknown author, words left over)
HEADERS = ["assistant", "user", "assistant<|channel|>final", "assistant<|channel|>", "assistant<|channel|> ",
           "assistant<|channel|><|constrain|>json", "assistant<|constrain|>json", "assistant <|constrain|>json",
           "assistant to=functions.f<|constrain|>json", "assistant<|constrain|>json<|channel|>commentary",
           "assistant<|channel|>commentary<|constrain|>json", "assistant to=functions.f<|channel|>commentary json",
           "assistant<|channel|>commentary to=functions.f <|constrain|>json", "assistant<|channel|>final json",
           "functions.f to=assistant<|channel|>commentary", "functions.f", "bob<|channel|>final",
           "assistant a b c", "assistant assistant<|channel|>final", "tool to=assistant", "to=functions.f",
           "functions.f tool to=assistant", "tool tool",
           "  assistant  <|channel|>analysis  "]


def reference_fields(m: "oh.Message") -> dict:
    role = m.author.role.value
    fields = {"role": role, "name": m.author.name if role == "tool" else None, "channel": m.channel,
              "recipient": m.recipient, "content_type": m.content_type}
    return {k: v for k, v in fields.items() if v is not None}


@pytest.mark.parametrize("header", HEADERS)
def test_a_header_is_read_as_openai_harmony_reads_it(header, reference):
    tokens = harmony.get_encoding().encode(f"<|start|>{header}<|message|>hi<|end|>", allowed_special="all")
    try:
        (theirs,) = reference.parse_messages_from_completion_tokens(tokens, None)
    except Exception:  # openai-harmony refuses it: so must we, in one line
        with pytest.raises(harmony.HarmonyError) as refused:
            harmony.parse_messages(tokens)
        assert len(str(refused.value).splitlines()) == 1
        return
    (ours,) = harmony.parse_messages(tokens)
    fields = {k: v for k, v in vars(ours).items() if v is not None and k != "content"}
    assert fields == reference_fields(theirs) and ours.content == "hi"


def test_an_empty_channel_is_refused_not_dropped():
    for channel in ("", " ", "fin al", "final<|end|>"):
        with pytest.raises(ValueError, match="a channel is one word"):
            harmony.render_message(assistant("hi", channel))
