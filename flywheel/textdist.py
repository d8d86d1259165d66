"""Edit cost: the flywheel's business metric.

The character-level Levenshtein distance between the model's reply and the text the user finally kept, divided
by the longer of the two lengths: 0 when the reply was used as is, 1 when nothing of it survived. The simulator,
the gate's generation check and the production monitor all use this one definition.
"""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein

# A turn that ended without any text the user kept (abandoned, rephrased away, regenerated until the user gave up)
# cost the user a full rewrite.
NO_FINAL_ANSWER_COST = 1.0


def edit_cost(model_text: str, final_text: str | None) -> float:
    if final_text is None:
        return NO_FINAL_ANSWER_COST
    if not model_text and not final_text:
        return 0.0
    return float(Levenshtein.normalized_distance(model_text, final_text))
