"""Tags: a desk's own words for its complaints, kept in one spelling.

People type the same tag in many ways (`VIP `, `ｖｉｐ`, `Vip`): a tag is stored normalised,
so that filters and trends count it once. Pure: no I/O, standard library only.
"""

from __future__ import annotations

import unicodedata

MAX_TAG_LENGTH = 50


def normalised_tag(text: str) -> str:
    """`text` as a tag: NFKC (full width to half width), case folded, surrounding spaces
    stripped and every inner run of spaces made one space. NFKC is applied again after
    folding (folding may leave a character NFKC would write otherwise), so normalising
    twice changes nothing."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())
