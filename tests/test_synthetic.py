"""The synthetic stories: exact probabilities and entropies, checked by enumeration, closed forms and sampling."""

import hashlib
import itertools
import math
import os
import random
import statistics
import string
import subprocess
import sys

import pytest

from nanogptoss.data import synthetic
from nanogptoss.data.synthetic import StoryGrammar

PRONOUNS = {"she": dict(He="She", he="she", His="Her", his="her", him="her"),
            "he": dict(He="He", he="he", His="His", his="his", him="him")}


def tiny_grammar(**overrides):
    settings = dict(
        kinds={"girl": 1, "dog": 1}, kind_gender={"girl": "she"},
        names={"she": ["Ann", "Eve"], "he": ["Bo"]},
        adjectives={"little": 2, "big": 1},
        opening="Once there was a {adj} {kind} named {name}.",
        intros=["{He} ran."],
        events={"{He} saw a {thing}.": 2, "{name} was {mood}.": 1},
        closings=["{He} slept.", "{name} smiled!"],
        slots={"thing": ["cat", "cow"], "mood": {"glad": 1, "sad": 3}},
        n_events={0: 1, 1: 1, 2: 2},
    )
    settings.update(overrides)
    return StoryGrammar(**settings)


def normalized(options):
    weights = options if isinstance(options, dict) else dict.fromkeys(options, 1.0)
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def slots_of(template):
    return sorted({f for _, f, _, _ in string.Formatter().parse(template) if f} - {"name", *PRONOUNS["he"]})


def all_sentences(grammar, role_options, gender, name):
    """Every (text, probability) of one sentence role, by brute force over its templates and slots."""
    for template, p_t in normalized(role_options).items():
        slots = slots_of(template)
        for values in itertools.product(*(normalized(grammar.slots[s]).items() for s in slots)):
            fill = {s: v for s, (v, _) in zip(slots, values)}
            yield template.format(name=name, **PRONOUNS[gender], **fill), p_t * math.prod(p for _, p in values)


def all_stories(grammar):
    """Every story of a (small) grammar with its probability, enumerated independently of the module."""
    for kind, p_kind in normalized(grammar.kinds).items():
        genders = [grammar.kind_gender[kind]] if kind in grammar.kind_gender else ["she", "he"]
        for gender in genders:
            for name, p_name in normalized(grammar.names[gender]).items():
                for adj, p_adj in normalized(grammar.adjectives).items():
                    opening = grammar.opening.format(adj=adj, kind=kind, name=name)
                    p_open = p_kind / len(genders) * p_name * p_adj
                    intros = list(all_sentences(grammar, grammar.intros, gender, name))
                    events = list(all_sentences(grammar, grammar.events, gender, name))
                    closings = list(all_sentences(grammar, grammar.closings, gender, name))
                    for n, p_n in normalized(grammar.n_events).items():
                        for parts in itertools.product(intros, *[events] * n, closings):
                            text = " ".join([opening, *(s for s, _ in parts), "The end."])
                            yield text, p_open * p_n * math.prod(p for _, p in parts)


def test_tiny_grammar_probabilities_sum_to_one_and_entropy_is_exact():
    grammar = tiny_grammar()
    stories = list(all_stories(grammar))
    texts = [t for t, _ in stories]
    assert len(set(texts)) == len(texts) == 10 * (1 + 4 + 16) * 2  # unambiguous: one derivation per text
    assert math.fsum(p for _, p in stories) == pytest.approx(1.0, abs=1e-12)
    assert math.fsum(math.exp(grammar.log_prob(t)) for t in texts) == pytest.approx(1.0, abs=1e-12)
    for text, p in stories:
        assert grammar.log_prob(text) == pytest.approx(math.log(p), abs=1e-12)
    assert grammar.entropy_per_story() == pytest.approx(-math.fsum(p * math.log(p) for _, p in stories), abs=1e-12)
    assert grammar.expected_bytes() == pytest.approx(math.fsum(p * len(t.encode()) for t, p in stories), abs=1e-9)


def test_default_entropy_equals_the_sum_of_slot_entropies():
    """The closed form: independent choices add their entropies; copied names and pronouns add none."""
    g = synthetic.default_grammar()

    def H(options):
        return -sum(p * math.log(p) for p in normalized(options).values())

    def H_role(options):
        return H(options) + sum(p * sum(H(g.slots[s]) for s in slots_of(t)) for t, p in normalized(options).items())

    kinds = normalized(g.kinds)
    p_free = sum(p for k, p in kinds.items() if k not in g.kind_gender)
    p_she = p_free / 2 + sum(p for k, p in kinds.items() if g.kind_gender.get(k) == "she")
    n_events = normalized(g.n_events)
    expected = (H(g.kinds) + p_free * math.log(2) + p_she * H(g.names["she"]) + (1 - p_she) * H(g.names["he"])
                + H(g.adjectives) + H(g.n_events) + H_role(g.intros) + H_role(g.closings)
                + sum(n * p for n, p in n_events.items()) * H_role(g.events))
    assert synthetic.entropy_per_story() == pytest.approx(expected, rel=1e-12)


def test_exact_entropy_and_length_match_the_sample_means():
    rng = random.Random(1)
    samples = [synthetic.sample_story(rng) for _ in range(4000)]
    surprisal = [-lp for _, lp in samples]
    se = statistics.stdev(surprisal) / math.sqrt(len(samples))
    assert abs(statistics.fmean(surprisal) - synthetic.entropy_per_story()) < 4 * se
    n_bytes = [len(t.encode()) for t, _ in samples]
    se = statistics.stdev(n_bytes) / math.sqrt(len(samples))
    assert abs(statistics.fmean(n_bytes) - synthetic.default_grammar().expected_bytes()) < 4 * se


def test_log_prob_of_a_text_equals_the_log_prob_of_its_sampling():
    rng = random.Random(2)
    for _ in range(2000):
        text, lp = synthetic.sample_story(rng)
        assert synthetic.log_prob(text) == pytest.approx(lp, abs=1e-9)


def test_stories_have_the_promised_shape():
    stories = synthetic.generate_stories(500, seed=4)
    for story in stories:
        sentences = synthetic.SENTENCE_SPLIT.split(story)
        assert sentences[0].startswith("Once upon a time, there was a ") and sentences[-1] == "The end."
        assert 5 <= len(sentences) <= 8
        assert story.count("The end.") == 1  # so the end of a story is certain
    assert 200 <= len(synthetic.default_grammar().vocabulary()) <= 500  # a few hundred words


def test_generate_stories_is_deterministic_for_a_seed():
    a = synthetic.generate_stories(200, seed=7)
    assert a == synthetic.generate_stories(200, seed=7)
    assert a != synthetic.generate_stories(200, seed=8)
    assert synthetic.generate_stories(0) == []
    # the same in fresh interpreters with other string hashes (set order must never steer sampling)
    digest = hashlib.sha256("\n".join(a).encode()).hexdigest()
    code = ("import hashlib, importlib.util, sys; spec = importlib.util.spec_from_file_location('s', sys.argv[1]); "
            "m = sys.modules['s'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(hashlib.sha256('\\n'.join(m.generate_stories(200, seed=7)).encode()).hexdigest())")
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, synthetic.__file__], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert out.stdout.strip() == digest


STORY = ("Once upon a time, there was a curious dog named Max. He liked to read books. One day, he went to the "
         "beach. He found a red shell in the sand. Max felt very proud. In the end, Max was very happy. The end.")


@pytest.mark.parametrize("text, message", [
    (STORY.replace(" The end.", ""), "must end with 'The end.'"),
    (STORY + "\n", "must end with 'The end.'"),
    ("", "must end with 'The end.'"),
    (STORY.replace("He liked", "She liked"), "sentence 2"),  # a pronoun that does not match Max
    (STORY.replace("Max felt", "Tim felt"), "sentence 5"),  # another character's name
    (STORY.replace("red shell", "red spaceship"), "sentence 4"),  # a word the grammar does not have
    (STORY.replace("beach. He", "beach.  He"), "sentence 4"),
    (STORY.replace("named Max", "named Maxi"), "opening"),
    (STORY.replace("One day, he went to the beach.", "One day, he went to the beach. " * 4), "events"),
])
def test_text_the_grammar_cannot_produce_raises(text, message):
    assert synthetic.log_prob(STORY) < 0
    with pytest.raises(ValueError, match=message):
        synthetic.log_prob(text)


def test_entropy_per_token_divides_by_tokens_plus_the_separator():
    def encode(text):
        return list(text.encode())

    h = synthetic.entropy_per_story()
    stories = synthetic.generate_stories(3000, seed=5)
    mean_len = statistics.fmean(len(s.encode()) for s in stories)
    assert synthetic.entropy_per_token(encode, n=3000, seed=5) == pytest.approx(h / (mean_len + 1), rel=1e-12)
    assert synthetic.entropy_per_token(encode, n=3000, seed=5, eot=False) == pytest.approx(h / mean_len, rel=1e-12)
    exact_bytes = synthetic.default_grammar().expected_bytes()
    assert synthetic.entropy_per_token(encode, n=3000, seed=5) == pytest.approx(h / (exact_bytes + 1), rel=0.01)
    assert synthetic.bits_per_byte() == pytest.approx(h / math.log(2) / exact_bytes, rel=1e-12)
    with pytest.raises(ValueError, match="lossless tokenizer"):
        synthetic.entropy_per_token(lambda text: [len(text)], n=200)


@pytest.mark.parametrize("overrides, message", [
    (dict(events={"{He} saw a {thing}.": 1, "{He} saw a cat.": 1}), "ambiguous grammar"),
    (dict(slots={"thing": ["cat", "cat"], "mood": ["glad"]}), "lists an option twice"),
    (dict(slots={"thing": ["cat", "Eve"], "mood": ["glad"]}), "also appear as ordinary words"),
    (dict(names={"she": ["Ann"], "he": ["Ann"]}), "listed for both genders"),
    (dict(names={"she": ["Ann"], "he": []}), "names\\['he'\\] is empty"),
    (dict(closings=["The end."]), "may only end a story"),
    (dict(closings=["{He} slept. Then {he} woke."]), "splits back into its sentences"),
    (dict(closings=["{He} slept"]), "must end with '.' or '!'"),
    (dict(events=["{He} saw a {unicorn}."]), "undefined slots \\['unicorn'\\]"),
    (dict(n_events={0: 1, 1: -1}), "weights must be positive"),
    (dict(n_events={0.5: 1}), "non-negative ints"),
    (dict(kind_gender={"girl": "it"}), "values 'she' or 'he'"),
    (dict(opening="Once there was a {kind}."), "exactly the fields"),
])
def test_bad_grammars_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_grammar(**overrides)


def test_sample_story_wants_a_random_generator():
    with pytest.raises(TypeError, match="random.Random"):
        synthetic.sample_story(0)
