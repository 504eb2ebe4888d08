"""Every shipped example timeline is valid and speaks the world's grammar."""

import glob
import os

import pytest

from videossm.models.text_encoder import word_level_tokenizer
from videossm.timeline import Timeline
from videossm.world.grammar import vocabulary

EXAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples", "*.json")))


def test_there_are_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_is_valid(path):
    timeline = Timeline.load(path)
    known = set(vocabulary())
    for prompt in timeline.prompts():
        assert set(prompt.split()) <= known, prompt
        assert word_level_tokenizer(vocabulary())(prompt)["input_ids"][-1] == 1  # ends with </s>
