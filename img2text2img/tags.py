"""Tags for an image: read from a dataset's `tags.tsv`, or derived from its captions.

A tag is a content word (noun, adjective, colour, verb) that at least `min_captions` of an image's captions use, so
one annotator's odd word choice does not become a label. There is no part-of-speech tagger offline, so "content
word" means: alphabetic, two letters or more, and not in the project's stop-word list below (function words,
numerals, generic verbs and the parts of prepositional phrases such as "front" in "in front of"). Plurals and third
person `-s` forms are folded onto their stem when the stem is itself a word of the corpus ("dogs" -> "dog", "runs"
-> "run"), except for words whose plural means something else ("glasses", "shorts").

The tag vocabulary is the shared `Vocabulary` built over tags, so ids are ranks by global frequency (number of
training images carrying the tag, ties alphabetical). Each image's tags are then ordered by that id, most frequent
first: the sequence target the RNN head learns to emit.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from img2text2img.errors import I2TError
from img2text2img.words import SPECIALS, tokenize

if TYPE_CHECKING:  # vocab.py imports torch; the runtime's open vocabulary reads this module without it
    from img2text2img.vocab import Vocabulary

DEFAULT_MAX_TAGS = 500
DEFAULT_MIN_CAPTIONS = 2

STOP_WORDS = frozenset("""
a an the this that these those there here it its it's itself he him his she her hers they them their theirs we us our
you your i me my one's someone something somebody anyone anything everyone everything nothing each other another
others some any all both either neither several many much more most few less least lot lots own same such only just
very too also even still almost quite really about above across after against along alongside among amongst around
as at before behind below beneath beside besides between beyond by down during except for from in inside into like
near nearby next of off on onto out outside over past since than through throughout to toward towards under
underneath until up upon via while with within without and or but nor so yet if then because though although whether
is are was were be been being am has have had having do does did doing done will would can could should may might
must shall get gets got getting go goes going went gone make makes made making take takes took taken taking let lets
seem seems appears appear appear try tries trying way ways thing things kind sort part front top side back middle
edge end left right one two three four five six seven eight nine ten eleven twelve dozen first second third half
who whom whose which what where when why how not no yes ok okay please un la el de
""".split())  # noqa: SIM905 - a word list reads best as text

# Plurals whose singular is a different word (or none): never folded.
KEEP_PLURAL = frozenset("""
glasses sunglasses shorts pants jeans trunks goggles clothes overalls stairs trousers tights leggings pajamas
scissors binoculars headphones earphones news series species
""".split())  # noqa: SIM905 - a word list reads best as text

IRREGULAR = {"men": "man", "women": "woman", "children": "child", "people": "person", "feet": "foot", "teeth": "tooth",
             "mice": "mouse", "geese": "goose", "puppies": "puppy", "ladies": "lady", "babies": "baby"}


COLOURS = frozenset("red blue green yellow orange pink purple white black brown grey gray tan silver gold".split())  # noqa: SIM905


def said_once(itos: Sequence[str]) -> list[bool]:
    """Per vocabulary word: whether a caption may say it only once (`CaptionSettings.say_once`). Content words are,
    colours aside ("a man in a red shirt on a red bike" is fine; "a man in a blue shirt is wearing a blue shirt"
    and "a woman and a woman" are the search looping: 67 of the 1,000 test captions before, 77 of val)."""
    return [is_content_word(w) and w not in COLOURS for w in itos]


def is_content_word(word: str) -> bool:
    """A word of two or more letters that is no stop word: what tags and the say-once rule are made of."""
    return word.isalpha() and len(word) >= 2 and word not in STOP_WORDS


def candidate_words(text: str) -> list[str]:
    """A caption -> its content-word candidates before plural folding (order kept, repeats kept)."""
    return [w for w in tokenize(text) if is_content_word(w)]


def plural_map(words: Iterable[str]) -> dict[str, str]:
    """word -> stem for the `-s` / `-es` forms whose stem is itself in `words` (plus the irregular plurals)."""
    known = set(words)
    out: dict[str, str] = {}
    for w in known:
        if w in IRREGULAR:
            out[w] = IRREGULAR[w]
            continue
        if w in KEEP_PLURAL or not w.endswith("s") or w.endswith(("ss", "us", "is")) or len(w) < 4:
            continue
        if w.endswith("es") and w[:-2] in known and w[:-2].endswith(("s", "sh", "ch", "x", "z")):
            out[w] = w[:-2]
        elif w[:-1] in known:
            out[w] = w[:-1]
    return out


def derive_tags(captions: Mapping[str, Sequence[str]], min_captions: int = DEFAULT_MIN_CAPTIONS) -> dict[str, list[str]]:
    """image -> content words used by at least `min_captions` of its captions (unordered; order comes from a vocab)."""
    if min_captions < 1:
        raise I2TError("min_captions must be at least 1")
    vocabulary = {w for caps in captions.values() for c in caps for w in candidate_words(c)}
    fold = plural_map(vocabulary)
    out: dict[str, list[str]] = {}
    for img, caps in captions.items():
        seen: Counter[str] = Counter()
        for c in caps:
            seen.update({fold.get(w, w) for w in candidate_words(c)})
        out[img] = sorted(w for w, n in seen.items() if n >= min_captions)
    return out


def build_tag_vocab(tags: Mapping[str, Sequence[str]], images: Iterable[str] | None = None,
                    max_tags: int = DEFAULT_MAX_TAGS, min_count: int = 1) -> Vocabulary:
    """The tag vocabulary: the `max_tags` tags carried by most `images` (default: all), id = frequency rank + 4."""
    imgs = list(images) if images is not None else list(tags)
    counter: Counter[str] = Counter()
    for img in imgs:
        counter.update(set(tags.get(img, ())))
    for s in SPECIALS:
        counter.pop(s, None)
    ranked = sorted((t for t, c in counter.items() if c >= min_count), key=lambda t: (-counter[t], t))[:max_tags]
    if not ranked:
        raise I2TError("no tags found: the dataset has no tags.tsv and its captions gave no content words")
    from img2text2img.vocab import Vocabulary

    return Vocabulary(list(SPECIALS) + ranked, [0] * len(SPECIALS) + [counter[t] for t in ranked])


def order_tags(tags: Iterable[str], vocab: Vocabulary) -> list[str]:
    """Keep the tags the vocabulary knows, once each, most frequent first (= ascending id)."""
    ids = sorted({vocab.stoi[t] for t in tags if t in vocab.stoi and vocab.stoi[t] >= len(SPECIALS)})
    return [vocab.itos[i] for i in ids]


def dataset_tags(dataset, source: str = "auto", min_captions: int = DEFAULT_MIN_CAPTIONS) -> dict[str, list[str]]:
    """A `CaptionDataset`'s tags: its `tags.tsv` when present (`source="auto"|"file"`), else derived from captions
    (`source="auto"|"captions"`)."""
    if source not in ("auto", "file", "captions"):
        raise I2TError(f"tag source must be auto, file or captions, not {source!r}")
    if source == "file" or (source == "auto" and dataset.tags):
        if not dataset.tags:
            raise I2TError(f"dataset {dataset.name} has no tags.tsv")
        return {k: list(v) for k, v in dataset.tags.items()}
    return derive_tags(dataset.captions, min_captions=min_captions)
