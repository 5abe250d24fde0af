"""The vocabulary of common behaviours that discovered clusters are named from.

Each entry is a name and a one-line definition written as a description of
what is seen (the same kind of sentence a captioner writes), so that sentence
embeddings of captions can be matched against them. Extend or replace it with
``EmbeddingMerger(vocabulary=...)``.
"""

from __future__ import annotations

#: name -> one-line definition.
BEHAVIOUR_VOCABULARY: dict[str, str] = {
    "rest": "The animal stays still, not moving, resting in place.",
    "walk": "The animal walks forward at a walking pace, at moderate speed.",
    "run": "The animal runs forward fast, at a running pace.",
    "turn": "The animal turns its body around in place without moving forward.",
    "rear": "The animal stands upright on its hind legs with its head and front body raised high.",
    "groom": "The animal stays in place while its paws move over its head and body, grooming itself.",
    "sniff": "The animal stays nearly in place with small head movements, sniffing and exploring.",
    "approach": "The animal moves toward another animal, getting closer to it.",
    "follow": "The animal moves behind another moving animal in the same direction, following it.",
    "chase": "The animal runs fast right behind another animal, chasing it.",
    "contact": "The animal touches another animal with its nose, in close body contact.",
    "retreat": "The animal moves away from another animal.",
    "back up": "The animal moves backward.",
    "hunch": "The animal stays in place with its body shortened and hunched.",
}
