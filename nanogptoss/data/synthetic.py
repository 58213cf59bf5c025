"""Synthetic children's stories whose entropy is known exactly.

A loss curve that goes down proves little: is 1.3 nats per token good? On real
text nobody knows the floor. These stories come from a small probabilistic
grammar written for this project, so the floor is known: the entropy of the
story distribution, computed exactly by summing over the grammar rather than
estimated by sampling. A test or a CPU demo can then assert that training gets
*close to the optimum*, not merely that the loss fell.

    Once upon a time, there was a curious dog named Max. He liked to read books.
    One day, he went to the beach. He found a red shell in the sand. Max felt very
    proud. In the end, Max was very happy. The end.

A story is: an opening (kind of character, its name and an adjective), an intro
sentence, N event sentences (N drawn from `n_events`, each event independent of
the others), a closing sentence, and "The end.". Each sentence picks a template
and fills its slots independently; the pronouns (She/He, her/his) and the
character's name are copied from the opening, which costs nothing to predict once
the opening has been read - a small model has to learn to look back for them.

The grammar is built to be *unambiguous*: every story text has exactly one
derivation (one sequence of choices). `StoryGrammar` checks this when it is
built - it enumerates every sentence each part of a story can produce and raises
if two derivations give the same text - so the probability of a text is the
probability of its one derivation, `log_prob(text)` is exact, and the entropy of
the texts equals the entropy of the choices, which adds up slot by slot.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import re
import string
from dataclasses import dataclass, field
from typing import Callable, Sequence

# Stands for the main character's name inside the enumerated sentence tables, so one table
# serves every name of a gender. Its validity relies on names being words no template or slot uses.
NAME_MARK = "\x00"
PRONOUNS = {
    "she": {"He": "She", "he": "she", "His": "Her", "his": "her", "him": "her"},
    "he": {"He": "He", "he": "he", "His": "His", "his": "his", "him": "him"},
}
STORY_FIELDS = {"name", *PRONOUNS["he"]}  # template fields filled from the opening, not chosen
THE_END = "The end."
# A sentence ends with "." or "!"; stories join sentences with one space, and no sentence has an
# end mark followed by a space inside it, so this split recovers the sentences of any story.
SENTENCE_SPLIT = re.compile(r"(?<=[.!]) ")


def _normalized(weights: dict, what: str) -> dict:
    if not weights:
        raise ValueError(f"{what} has no options; give it at least one")
    for option, w in weights.items():
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
            raise ValueError(f"{what}: option {option!r} has weight {w!r}; weights must be positive numbers")
    total = sum(weights.values())
    return {option: w / total for option, w in weights.items()}


def _as_weights(options, what: str) -> dict:
    """A list means equally likely options; a dict maps each option to its weight."""
    if isinstance(options, dict):
        return _normalized(options, what)
    options = list(options)
    if len(set(options)) != len(options):
        raise ValueError(f"{what} lists an option twice; each option must be distinct")
    return _normalized(dict.fromkeys(options, 1.0), what)


def _entropy(probs) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


class _Choice:
    """One random choice: options, their probabilities, and a fast sampler."""

    def __init__(self, probs: dict):
        self.options = list(probs)
        self.probs = probs
        self.log_probs = {o: math.log(p) for o, p in probs.items()}
        self.cum_weights = list(itertools.accumulate(probs.values()))

    def sample(self, rng: random.Random):
        option = rng.choices(self.options, cum_weights=self.cum_weights)[0]
        return option, self.log_probs[option]


@dataclass
class StoryGrammar:
    """A probabilistic grammar of short stories; see the module docstring for the shape of a story.

    Lists mean equally likely options; dicts map options to (unnormalized) weights. Templates are
    `str.format` strings whose fields are slots (keys of `slots`), `{name}`, or pronouns written in
    their masculine form (`{He} {he} {His} {his} {him}`), which the character's gender fills in.
    """

    kinds: dict  # the character: "girl", "dog", ... -> weight
    kind_gender: dict  # kinds with a fixed gender ("girl" -> "she"); the rest are "she" or "he" equally
    names: dict  # "she" / "he" -> the names for that gender (disjoint lists)
    adjectives: Sequence[str] | dict
    opening: str  # must contain {adj}, {kind} and {name}
    intros: Sequence[str] | dict
    events: Sequence[str] | dict
    closings: Sequence[str] | dict
    slots: dict  # slot name -> its options
    n_events: dict  # number of event sentences -> weight
    _choices: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        c = self._choices = {}
        c["kind"] = _Choice(_as_weights(self.kinds, "kinds"))
        for kind, gender in self.kind_gender.items():
            if kind not in self.kinds or gender not in PRONOUNS:
                raise ValueError(f"kind_gender[{kind!r}] = {gender!r}: keys must be kinds and values 'she' or 'he'")
        for gender in PRONOUNS:
            if not self.names.get(gender):
                raise ValueError(f"names[{gender!r}] is empty: every gender needs at least one name")
            c["name", gender] = _Choice(_as_weights(self.names[gender], f"names[{gender!r}]"))
        if set(self.names["she"]) & set(self.names["he"]):
            raise ValueError(f"names {sorted(set(self.names['she']) & set(self.names['he']))} are listed for both "
                             "genders; the name is what tells a reader the gender, so the lists must be disjoint")
        c["adj"] = _Choice(_as_weights(self.adjectives, "adjectives"))
        for role in ("intros", "events", "closings"):
            c[role] = _Choice(_as_weights(getattr(self, role), role))
        for slot, options in self.slots.items():
            if slot in STORY_FIELDS or slot in ("adj", "kind"):
                raise ValueError(f"slot name {slot!r} is reserved; rename the slot")
            c[slot] = _Choice(_as_weights(options, f"slots[{slot!r}]"))
        n = _as_weights(self.n_events, "n_events")
        if not all(isinstance(k, int) and k >= 0 for k in n):
            raise ValueError(f"n_events keys must be non-negative ints, got {sorted(n, key=str)}")
        c["n_events"] = _Choice(n)
        if set(_fields(self.opening)) != {"adj", "kind", "name"}:
            raise ValueError(f"opening must use exactly the fields {{adj}}, {{kind}} and {{name}}: {self.opening!r}")
        self._build_tables()

    # -- the exact tables -------------------------------------------------------------------
    def _build_tables(self) -> None:
        """Enumerate every sentence each part of a story can produce, with its probability.

        Building them is also the unambiguity check: a sentence reached by two derivations raises.
        """
        c = self._choices
        self._opening = {}  # text -> (log p, gender, name)
        for kind, p_kind in c["kind"].probs.items():
            genders = [self.kind_gender[kind]] if kind in self.kind_gender else list(PRONOUNS)
            for gender in genders:
                for name, p_name in c["name", gender].probs.items():
                    for adj, p_adj in c["adj"].probs.items():
                        text = self.opening.format(adj=adj, kind=kind, name=name)
                        p = p_kind / len(genders) * p_name * p_adj
                        if text in self._opening:
                            raise ValueError(f"ambiguous grammar: the opening {text!r} has two derivations")
                        self._opening[text] = (math.log(p), gender, name)
        self._gender_probs = {g: 0.0 for g in PRONOUNS}
        for log_p, gender, _ in self._opening.values():
            self._gender_probs[gender] += math.exp(log_p)

        self._slots_of = {}  # template -> the slots it chooses, in sampling order
        self._tables = {}  # (role, gender) -> {sentence with NAME_MARK for the name: log p}
        for role in ("intros", "events", "closings"):
            for gender in PRONOUNS:
                table = {}
                for template, p_template in c[role].probs.items():
                    slots = self._slots_of[template] = sorted(set(_fields(template)) - STORY_FIELDS)
                    unknown = [s for s in slots if s not in self.slots]
                    if unknown:
                        raise ValueError(f"{role} template {template!r} uses undefined slots {unknown}; "
                                         "add them to `slots`")
                    for values in itertools.product(*(c[s].options for s in slots)):
                        fill = dict(zip(slots, values))
                        text = template.format(name=NAME_MARK, **PRONOUNS[gender], **fill)
                        p = p_template * math.prod(c[s].probs[v] for s, v in fill.items())
                        if text in table:
                            raise ValueError(f"ambiguous grammar: the {role[:-1]} sentence "
                                             f"{text.replace(NAME_MARK, '{name}')!r} has two derivations")
                        table[text] = math.log(p)
                self._tables[role, gender] = table
        self._check_sentences()

    def _check_sentences(self) -> None:
        words_outside_names = set()
        for sentence in itertools.chain(self._opening, *self._tables.values()):
            shown = sentence.replace(NAME_MARK, "{name}")
            if not sentence.endswith((".", "!")) or SENTENCE_SPLIT.search(sentence) or "  " in sentence \
                    or sentence != sentence.strip():
                raise ValueError(f"sentence {shown!r} must end with '.' or '!', have no '. ' or '! ' inside, and "
                                 "no leading, trailing or double spaces, so a story splits back into its sentences")
            if sentence == THE_END:
                raise ValueError(f"{THE_END!r} may only end a story, so the end of a story is certain")
            if sentence not in self._opening:
                words_outside_names.update(re.findall(r"\w+", sentence))
        words_outside_names.update(re.findall(r"\w+", " ".join([self.opening, *self._choices["adj"].options,
                                                                *self._choices["kind"].options])))
        clash = words_outside_names & (set(self.names["she"]) | set(self.names["he"]))
        if clash:
            raise ValueError(f"names {sorted(clash)} also appear as ordinary words in templates or slots; "
                             "rename them, so a name in a sentence can only be the character's")

    # -- sampling ---------------------------------------------------------------------------
    def sample_story(self, rng: random.Random) -> tuple[str, float]:
        """One story and its log-probability (natural log), from walking the grammar choice by choice."""
        if not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random (e.g. random.Random(0)), got {type(rng).__name__}")
        c = self._choices
        kind, lp = c["kind"].sample(rng)
        if kind in self.kind_gender:
            gender = self.kind_gender[kind]
        else:
            gender = rng.choice(list(PRONOUNS))
            lp += math.log(1 / len(PRONOUNS))
        name, lp_name = c["name", gender].sample(rng)
        adj, lp_adj = c["adj"].sample(rng)
        lp += lp_name + lp_adj
        sentences = [self.opening.format(adj=adj, kind=kind, name=name)]
        n, lp_n = c["n_events"].sample(rng)
        lp += lp_n
        for role in ["intros"] + ["events"] * n + ["closings"]:
            template, lp_t = c[role].sample(rng)
            fill = {}
            for slot in self._slots_of[template]:  # a fixed order, so a seed gives the same story anywhere
                fill[slot], lp_slot = c[slot].sample(rng)
                lp_t += lp_slot
            lp += lp_t
            sentences.append(template.format(name=name, **PRONOUNS[gender], **fill))
        sentences.append(THE_END)
        return " ".join(sentences), lp

    def generate_stories(self, n: int, seed: int = 0) -> list[str]:
        """`n` stories, the same ones for the same seed on any machine (Python's own Mersenne Twister)."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = random.Random(seed)
        return [self.sample_story(rng)[0] for _ in range(n)]

    # -- parsing ----------------------------------------------------------------------------
    def log_prob(self, text: str) -> float:
        """The exact log-probability (nats) of a story text; ValueError if the grammar cannot produce it."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        sentences = SENTENCE_SPLIT.split(text)
        n = len(sentences) - 4  # opening, intro, closing and "The end." around the events
        if sentences[-1] != THE_END:
            raise ValueError(f"not a story of this grammar: it must end with {THE_END!r}, "
                             f"but ends with {sentences[-1][-40:]!r}")
        if n not in self._choices["n_events"].probs:
            raise ValueError(f"not a story of this grammar: {len(sentences)} sentences means {n} events, "
                             f"but the grammar has {sorted(self._choices['n_events'].probs)} events per story")
        if sentences[0] not in self._opening:
            raise ValueError(f"not a story of this grammar: no derivation of the opening {sentences[0]!r}")
        lp, gender, name = self._opening[sentences[0]]
        lp += self._choices["n_events"].log_probs[n]
        roles = ["intros"] + ["events"] * n + ["closings"]
        as_name = re.compile(rf"\b{re.escape(name)}\b")
        for i, (role, sentence) in enumerate(zip(roles, sentences[1:-1]), start=2):
            key = as_name.sub(NAME_MARK, sentence)
            if NAME_MARK in sentence or key not in self._tables[role, gender]:
                raise ValueError(f"not a story of this grammar: sentence {i} ({sentence!r}) is not one the "
                                 f"{role} can produce for a character named {name} ({gender})")
            lp += self._tables[role, gender][key]
        return lp

    # -- exact statistics -------------------------------------------------------------------
    def _mean_events(self) -> float:
        return sum(n * p for n, p in self._choices["n_events"].probs.items())

    def entropy_per_story(self) -> float:
        """H(story) in nats, exactly: a sum over the enumerated sentence tables, no sampling.

        By the chain rule, H = H(opening) + H(N) + E[N] H(event | gender) + H(intro | gender) + H(closing | gender):
        events are independent of each other given the character's gender, and the name inside them is a
        copy, so it adds nothing once the opening is known.
        """
        h = _entropy(math.exp(lp) for lp, _, _ in self._opening.values())
        h += _entropy(self._choices["n_events"].probs.values())
        weight = {"intros": 1.0, "events": self._mean_events(), "closings": 1.0}
        for (role, gender), table in self._tables.items():
            h += weight[role] * self._gender_probs[gender] * _entropy(math.exp(lp) for lp in table.values())
        return h

    def expected_bytes(self) -> float:
        """E[UTF-8 bytes per story], exactly (no end-of-text token)."""
        c = self._choices
        mean_name = {g: sum(p * len(nm.encode()) for nm, p in c["name", g].probs.items()) for g in PRONOUNS}
        total = sum(math.exp(lp) * len(text.encode()) for text, (lp, _, _) in self._opening.items())
        weight = {"intros": 1.0, "events": self._mean_events(), "closings": 1.0}
        for (role, gender), table in self._tables.items():
            mean_len = sum(math.exp(lp) * (len(s.encode()) + s.count(NAME_MARK) * (mean_name[gender] - 1))
                           for s, lp in table.items())
            total += weight[role] * self._gender_probs[gender] * mean_len
        n_sentences = 4 + self._mean_events()
        return total + len(THE_END) + (n_sentences - 1)  # the spaces between sentences

    def bits_per_byte(self) -> float:
        """The optimal bits per byte on these stories: H / ln 2 / E[bytes], exactly.

        The end-of-text token between stories costs 0 bits (every story ends with "The end.") and is no byte
        of text, so it changes neither the numerator nor the denominator.
        """
        return self.entropy_per_story() / math.log(2) / self.expected_bytes()

    def entropy_per_token(self, encode: Callable[[str], Sequence[int]], n: int = 10_000, seed: int = 0,
                          eot: bool = True) -> float:
        """The best achievable cross-entropy (nats per token) on these stories under a tokenizer.

        Picture the training stream  <eot> story <eot> story <eot> ...  where the model predicts every token,
        the end-of-text separators included. Per story (its tokens plus the <eot> after it):

        - the tokens are `encode(text)`, a deterministic function of the text that loses nothing (BPE is:
          decode(encode(t)) == t), so the token sequence has the same entropy as the text, H(story);
        - the <eot> is certain: "The end." closes every story and appears nowhere else, so predicting it
          costs 0 nats;
        - stories are independent, so the stories before teach a model nothing about this one.

        The true distribution therefore pays H(story) nats, on average, per len(encode(text)) + 1 tokens, and
        no model pays less on average (cross-entropy >= entropy). Over a long stream the per-token loss is the
        ratio of the two means: H / (E[len] + 1), or H / E[len] with `eot=False`. H is exact; E[len] is a
        mean over `n` stories from `seed` (its relative standard error is about 0.3% at n=10,000).

        This is the floor for a model that sees where each story begins: a window that starts in the middle
        of a story cannot know the character's name yet, so its first tokens cost more.
        """
        stories = self.generate_stories(n, seed)
        if not stories:
            raise ValueError("n must be at least 1 to estimate tokens per story")
        encoded = [tuple(encode(s)) for s in stories]
        if len(set(encoded)) != len(set(stories)):
            raise ValueError("encode maps two different stories to the same tokens, so tokens carry less "
                             "information than the text; use a lossless tokenizer (decode(encode(t)) == t)")
        mean_tokens = sum(map(len, encoded)) / len(encoded) + (1 if eot else 0)
        return self.entropy_per_story() / mean_tokens

    def vocabulary(self) -> set[str]:
        """Every word (and punctuation mark) a story can contain."""
        words = set(re.findall(r"\w+|[^\w\s]", " ".join(itertools.chain(self._opening, *self._tables.values(),
                                                                         [THE_END]))))
        return words - {NAME_MARK}


def default_grammar() -> StoryGrammar:
    """The project's story grammar: about 300 words, 5 to 8 sentences a story."""
    return _default()


@functools.lru_cache(maxsize=1)
def _default() -> StoryGrammar:
    return StoryGrammar(
        kinds={"girl": 3, "boy": 3, "dog": 1, "cat": 1, "bunny": 1, "bird": 1, "bear": 1, "fox": 1,
               "mouse": 1, "duck": 1},
        kind_gender={"girl": "she", "boy": "he"},
        names={"she": ["Lily", "Sue", "Mia", "Amy", "Lucy", "Anna", "Emma", "Sara", "Kate", "Zoe", "Ella", "Rose"],
               "he": ["Tim", "Ben", "Max", "Sam", "Tom", "Jack", "Leo", "Bob", "Joe", "Finn", "Dan", "Jake"]},
        adjectives=["little", "kind", "happy", "brave", "small", "curious", "shy", "funny", "good", "tiny"],
        opening="Once upon a time, there was a {adj} {kind} named {name}.",
        intros={
            "{He} liked to {activity}.": 3,
            "{He} lived in a {home} near the {nature}.": 2,
            "{He} loved {his} {toy} very much.": 2,
        },
        events={
            "One day, {he} went to the {place}.": 3,
            "{He} found a {color} {object} {where}.": 3,
            "{He} saw a {animal} {doing}.": 2,
            "{name} felt very {feeling}.": 2,
            "{He} played with {his} {family} all day.": 1,
            "{He} wanted to {wish}.": 1,
            "It started to {weather}, so {he} went home.": 1,
            "{He} helped {his} {family} {chore}.": 1,
            "{name} shared {his} {food} with a {animal}.": 1,
        },
        closings={
            "In the end, {name} was very {feeling}.": 2,
            "{name} went to bed with a big smile.": 1,
            "From that day on, {name} was never {fear} again.": 1,
            "{He} had the best day ever!": 1,
            "{name} learned to always {lesson}.": 1,
        },
        slots={
            "activity": ["play outside", "sing songs", "draw pictures", "read books", "run fast", "dance",
                         "swim", "climb trees"],
            "home": ["small house", "big house", "tree house", "cozy hut", "tall tower"],
            "nature": ["forest", "sea", "river", "hills", "farm", "park"],
            "toy": ["teddy bear", "red ball", "blue car", "doll", "kite", "drum"],
            "place": ["park", "beach", "forest", "garden", "farm", "lake", "zoo", "store", "hill", "river",
                      "playground", "library"],
            "color": ["red", "blue", "green", "yellow", "pink", "purple", "gold", "white", "black", "brown"],
            "object": ["ball", "box", "hat", "kite", "book", "rock", "leaf", "flower", "shell", "key", "toy car",
                       "balloon", "cup", "stick", "feather", "ring", "drum", "apple", "bell", "boat"],
            "where": ["under a tree", "near the door", "in the grass", "by the pond", "on the path",
                      "behind a rock", "in the sand", "next to a bench"],
            "animal": ["frog", "bee", "butterfly", "squirrel", "turtle", "puppy", "kitten", "horse", "cow",
                       "snail", "bunny", "bird"],
            "doing": ["jumping up and down", "sleeping in the sun", "eating a snack", "singing a song",
                      "running around", "hiding in a hole", "splashing in the water", "flying in the sky"],
            "feeling": ["happy", "sad", "excited", "scared", "proud", "surprised", "sleepy", "silly", "calm",
                        "tired"],
            "family": ["mom", "dad", "sister", "brother", "grandma", "grandpa", "friends"],
            "wish": ["fly like a bird", "climb a big tree", "build a sand castle", "bake a cake", "ride a bike",
                     "catch a fish", "find a treasure", "see the stars"],
            "weather": ["rain", "snow", "get dark", "get cold"],
            "chore": ["clean the house", "cook dinner", "water the plants", "fix the fence", "wash the car",
                      "feed the cat"],
            "food": ["cookie", "apple", "sandwich", "cake", "candy", "banana"],
            "fear": ["scared of the dark", "sad", "lonely", "afraid of dogs", "angry"],
            "lesson": ["be kind", "share with others", "tell the truth", "help friends", "say thank you"],
        },
        n_events={1: 2, 2: 3, 3: 3, 4: 2},
    )


# The default grammar's methods as plain functions, for scripts and tests.
def sample_story(rng: random.Random) -> tuple[str, float]:
    return _default().sample_story(rng)


def generate_stories(n: int, seed: int = 0) -> list[str]:
    return _default().generate_stories(n, seed)


def log_prob(text: str) -> float:
    return _default().log_prob(text)


def entropy_per_story() -> float:
    return _default().entropy_per_story()


def entropy_per_token(encode: Callable[[str], Sequence[int]], n: int = 10_000, seed: int = 0,
                      eot: bool = True) -> float:
    return _default().entropy_per_token(encode, n=n, seed=seed, eot=eot)


def bits_per_byte() -> float:
    return _default().bits_per_byte()


for _f in (sample_story, generate_stories, log_prob, entropy_per_story, entropy_per_token, bits_per_byte):
    _f.__doc__ = getattr(StoryGrammar, _f.__name__).__doc__
