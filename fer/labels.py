"""Canonical expression labels and the spellings other datasets use for them."""

from __future__ import annotations

# The numeric order of ExpW and of FER2013's CSV: label i of those files is LABELS[i].
LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

_ALIASES = {
    "anger": "angry",
    "mad": "angry",
    "disgusted": "disgust",
    "contempt_disgust": "disgust",
    "afraid": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "unhappy": "sad",
    "surprised": "surprise",
    "calm": "neutral",
}


def canonical(name: str) -> str:
    """Spell a label the canonical way ("Happiness" -> "happy"); unknown names are kept, lower-cased."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def from_index(value: object) -> str | None:
    """Label of a numeric code (0-6) as ExpW and FER2013's CSV write it; None if it is not one."""
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if not number.is_integer() or not 0 <= number < len(LABELS):
        return None
    return LABELS[int(number)]


def ordered(names) -> list[str]:
    """Canonical labels first, in canonical order, then any others alphabetically."""
    present = set(names)
    return [n for n in LABELS if n in present] + sorted(present - set(LABELS))
