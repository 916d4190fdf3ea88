"""Unknown nouns read by their dictionary gloss, and left/right named by the compass or a ship's sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmvla.modules import gloss
from mmvla.modules.gloss import GlossClassifier
from mmvla.modules.lexicon import DIRECTION_WORDS, THING_LEXNAMES, LexicalGrounding
from mmvla.policy.reading import InstructionReader
from mmvla.sim.tabletop import wordings as W
from mmvla.sim.tabletop.tasks import SHAPE_DESCRIPTIONS


@pytest.mark.parametrize(
    ("word", "direction"),
    [
        ("west", "left"),
        ("westward", "left"),
        ("westwards", "left"),
        ("western", "left"),
        ("easterly", "right"),
        ("eastward", "right"),
        ("starboard", "right"),
        ("port", "left"),
        ("sinistrally", "left"),
        ("dextral", "right"),
    ],
)
def test_direction_words_name_left_or_right(vocabulary, word, direction):
    g = LexicalGrounding(vocabulary)
    assert g.ground(word) == direction
    assert g.rewrite(f"push the red cube to the {word}").split()[-1] == direction


def test_direction_words_need_the_direction_to_be_known():
    g = LexicalGrounding(["pick up the red cube"])  # no "left" or "right" in the vocabulary
    assert set(DIRECTION_WORDS.values()) == {"left", "right"}
    assert g.direction("west") is None and g.ground("starboard") != "right"


def test_compass_wordings_are_read_as_their_push(reader):
    for wording, task in [
        ("nudge the blue cube to the west", "push the blue cube to the left"),
        ("Shift a crimson tube eastward!", "push the red cylinder to the right"),
    ]:
        assert W.parse_wording(wording).instruction == task  # the simulator's ground truth
        assert reader.read(wording) == task


def _stub_embed(vectors: dict[str, np.ndarray]):
    calls = []

    def embed(texts):
        calls.append(list(texts))
        out = torch.tensor(np.stack([vectors[t] for t in texts]), dtype=torch.float32)
        return torch.nn.functional.normalize(out, dim=-1)

    return embed, calls


def test_gloss_classifier_names_the_class_of_the_nearest_description():
    rng = np.random.default_rng(0)
    descriptions = {"a": ["a1", "a2"], "b": ["b1"]}
    vectors = {k: rng.standard_normal(8) for k in ["a1", "a2", "b1", "x", "y"]}
    embed, calls = _stub_embed(vectors)
    clf = GlossClassifier(descriptions, embed)

    def cos(u, v):  # float64 reference
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    for text in ("x", "y"):
        ref = {
            "a": max(cos(vectors[text], vectors["a1"]), cos(vectors[text], vectors["a2"])),
            "b": cos(vectors[text], vectors["b1"]),
        }
        scores = clf.scores(text)
        assert scores == pytest.approx(ref, abs=1e-6)
        best, sim, margin = clf.classify(text)
        assert best == max(ref, key=ref.get) and sim == pytest.approx(max(ref.values()), abs=1e-6)
        assert margin == pytest.approx(abs(ref["a"] - ref["b"]), abs=1e-6)
    n = len(calls)
    clf.classify("x")  # remembered: no second embedding
    assert len(calls) == n


def test_gloss_classifier_memo_is_bounded(monkeypatch):
    rng = np.random.default_rng(1)
    vectors = {f"t{i}": rng.standard_normal(4) for i in range(10)} | {"d": rng.standard_normal(4)}
    embed, _ = _stub_embed(vectors)
    monkeypatch.setattr(gloss, "MEMO_SIZE", 3)
    clf = GlossClassifier({"only": ["d"]}, embed)
    for i in range(10):
        assert clf.classify(f"t{i}")[0] == "only"
        assert len(clf._memo) <= 3


def test_gloss_classifier_refuses_empty_classes():
    with pytest.raises(ValueError, match="at least one"):
        GlossClassifier({})
    with pytest.raises(ValueError, match="at least one"):
        GlossClassifier({"cube": []})


@pytest.mark.parametrize(("noun", "shape"), [("die", "cube"), ("bucket", "cylinder"), ("tablet", "slab")])
def test_minilm_reads_a_nouns_gloss_as_the_shape_it_describes(vocabulary, noun, shape):
    g = LexicalGrounding(vocabulary)
    text = g.noun_gloss(noun)
    assert text is not None and text.startswith(f"{noun}: ")
    assert GlossClassifier(SHAPE_DESCRIPTIONS).classify(text)[0] == shape


def test_noun_gloss_takes_the_first_sense_that_names_a_thing(vocabulary):
    g = LexicalGrounding(vocabulary)
    first = next(s for s in g._senses("board") if s.pos() == "n")
    assert first.lexname() == "noun.group"  # "a committee having supervisory powers"
    text = g.noun_gloss("board")
    thing = next(s for s in g._senses("board") if s.pos() == "n" and s.lexname() in THING_LEXNAMES)
    assert text == f"board: {thing.definition()}" and thing.definition() != first.definition()


def test_noun_gloss_follows_stems_and_has_none_for_words_without_a_noun_sense(vocabulary):
    g = LexicalGrounding(vocabulary)
    definition = g.noun_gloss("wafer").split(": ", 1)[1]
    assert g.noun_gloss("wafers").endswith(definition)  # a plural: the same noun sense
    assert g.noun_gloss("quickly") is None and g.noun_gloss("zorblax") is None


class _Fixed(GlossClassifier):
    """Reads each lemma as a fixed shape (no encoder)."""

    def __init__(self, table: dict[str, tuple[str, float, float]]) -> None:
        super().__init__({"cube": ["-"]})
        self.table = table
        self.asked: list[str] = []

    def classify(self, text: str) -> tuple[str, float, float]:
        lemma = text.split(":")[0]
        self.asked.append(lemma)
        return self.table.get(lemma, ("cube", 0.0, 0.0))


def test_an_unread_head_noun_is_read_as_the_shape_its_gloss_names(vocabulary):
    shapes = _Fixed({"wafer": ("slab", 0.3, 0.1), "end": ("cylinder", 0.4, 0.2)})
    r = InstructionReader("wordnet_task", vocabulary, shapes=shapes)
    assert r.grounding.ground("wafer", "noun") is None  # WordNet alone leaves it unread
    assert r.read("Plant the red wafer on the blue cube") == "put the red slab on the blue cube"
    # "end" follows a direction: part of it, never the object, though its gloss scores higher
    assert r.read("shunt the wafer painted red at the sinistral end") == "push the red slab to the left"
    assert "end" not in shapes.asked
    # a modifier ("the wafer tube") is not a head noun; with no head left the words stay grounded
    text = "shunt the blue wafer tube"
    assert r.read(text) == r.grounding.rewrite(text)


def test_gloss_readings_need_a_clear_margin_a_noun_phrase_and_no_verb(vocabulary):
    text = "plant the red wafer on the blue cube"
    unclear = InstructionReader("wordnet_task", vocabulary, shapes=_Fixed({"wafer": ("slab", 0.3, 0.01)}))
    assert unclear.read(text) == unclear.grounding.rewrite(text)  # margin below MIN_GLOSS_MARGIN
    # "plant" is grounded as the verb "place": never an object, however clear its gloss reading
    shapes = _Fixed({"wafer": ("slab", 0.3, 0.1), "plant": ("cylinder", 0.9, 0.5)})
    r = InstructionReader("wordnet_task", vocabulary, shapes=shapes)
    assert r.read(text) == "put the red slab on the blue cube"
    assert "plant" not in shapes.asked
    # a noun with no determiner before it is no object: "wafer red cube" names no task
    text = "grip wafer red"
    assert r.read(text) == r.grounding.rewrite(text)


def test_the_real_reader_reads_development_nouns(reader):
    assert reader.read("settle the carmine wafer onto the sage die") == "put the red slab on the green cube"
    assert reader.read("grip the honey wafer") == "pick up the yellow slab"
    # "a long thin implement": as near a slab as a cylinder, so no reading is taken
    assert reader.read("grip the honey rod") == reader.grounding.rewrite("grip the honey rod")
