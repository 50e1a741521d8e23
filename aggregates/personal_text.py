"""Personal data in free text: found, and masked for read models and exports (issue 13).

Titles, descriptions, notes and contact summaries may carry phone numbers, e-mail
addresses and resident identity card numbers. The write side keeps the original
encrypted and a masked copy (`mask_personal`) in plain text. Pure: no I/O, nothing of ours.

What is found (docs/privacy.md, "Personal data in free text", says the same):

Numbers. Full-width digits (０-９) are read as ASCII 0-9, and a full-width Ｘ/ｘ as
X/x (the masked copy is written with ASCII digits). A separator (`SEP`) is one space (ASCII or
the ideographic U+3000) or one hyphen (ASCII or full-width －); parentheses may be ASCII
or full-width. No number is found that touches another digit on either side (digit runs
are never split: 12 or 19 digits in a row are not a mobile number plus extra digits), nor
one right after or right before three asterisks `***` (the hidden part of a mask).
Letters and Chinese characters around a number do not matter (`请拨打13812345678联系我`).

- `resident_id`: 18 characters, 17 digits and a check character (digit, `X` or `x`),
  without separators: the first digit 1-9, a birth date YYYYMMDD at positions 7-14 that
  is a real calendar date from 1900-01-01 to 2100-12-31, and a check character valid by
  ISO 7064 MOD 11-2 (weights 7,9,10,5,8,4,2,1,6,3,7,9,10,5,8,4,2; sum mod 11 indexes
  "10X98765432"). An 18-character run that fails the date or the checksum is not an ID
  number and is left alone entirely (no other rule can take a piece of it). The old
  15-digit IDs are not detected.
- `mobile`: 11 digits `1[3-9]d d{4} d{4}`, optionally a SEP after the 3rd and after the
  7th digit (`138 1234 5678`, `138-1234-5678`), optionally preceded by `+86`, `0086` or
  `86` and an optional SEP (`+86 138 1234 5678`, `8613812345678`).
- `landline`: an area code, optionally in parentheses, then an optional SEP, then a
  local number of 7 or 8 digits not starting with 0, with an optional SEP before its last 4
  (`010-12345678`, `(0755) 8765 4321`, `021 6123 4567`, `0571-876-5432`). Area codes are
  the real mainland plan: `010` and `020`-`029` (3 digits), else `0` + [3-9] + 2 digits.
  A local number without an area code (`87654321`) is not detected.
- `international_phone`: `+` (or ＋), a country code (first digit 1-9), then more digits,
  7 to 15 digits in all (E.164), a separator allowed before each digit: one of space,
  `.`, `-`, or parentheses (`+44 20 7946 0958`, `+1 (415) 555-2671`, `+33 1 23 45 67 89`).
  The longest such run that does not end next to a digit is taken, so a short group
  after a number joined by one separator may be taken with it (over-masking, never
  under-masking). `+86` mobile numbers are `mobile`, other `+86` numbers are
  international.
- `email`: local part of ASCII letters, digits and `_ % + -`, in dot-separated pieces
  (no leading, trailing or double dot), `@` (or ＠), then dot-separated labels of letters,
  digits and inner hyphens ending in a top-level domain of 2-63 letters. The local part
  does not start right after a local-part character, an `@`, a dot that follows a
  local-part character, or `***`; the domain is not followed by a letter or hyphen (a
  digit may follow: `a@b.com2024` finds `a@b.com`). Internationalised (non-ASCII)
  addresses and quoted local parts are not detected. E-mail addresses are found first; a number
  that overlaps one is part of it (`13812345678@163.com` is one e-mail address).

Findings are non-overlapping, ordered by position; among numbers the leftmost wins, and
at one position the first rule in the order above.

Masks (a number's mask hides at least 4 digits, an address's all of its local part but
the first character; no mask is found again, so masking is idempotent):
- `mobile`: the text up to the 3rd digit of the number as written (a `+86 ` prefix is
  kept), `****`, the last 4 digits: `+86 138-1234-5678` -> `+86 138****5678`.
- `landline`: the area code as written with its parentheses and separator, `****`, the
  last 4 digits (8-digit local number) or last 3 (7-digit): `010-12345678` ->
  `010-****5678`, `(0755) 8765 4321` -> `(0755) ****4321`, `0571-876-5432` -> `0571-****432`.
- `international_phone`: `+`, the country code, a space, `****`, and the last 4 digits,
  or fewer so that at least 4 digits after the country code stay hidden:
  `+44 20 7946 0958` -> `+44 ****0958`. The country code's length (1-3 digits) follows
  the ITU assignment (1 and 7; the two-digit codes listed below; all others three).
- `resident_id`: the first 6 characters (region), 8 asterisks in place of the birth date,
  the last 4 (sequence and check character): `11010519491231002X` -> `110105********002X`.
- `email`: the first character of the local part (none when the local part is a single
  character), `***@` and the domain as written: `john.doe@example.com` -> `j***@example.com`.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Kind = Literal["mobile", "landline", "international_phone", "email", "resident_id"]


@dataclass(frozen=True)
class Finding:
    """A piece of personal data in a text: its kind and its span `text[start:end]`."""

    kind: Kind
    start: int
    end: int


_FULLWIDTH = re.compile("[０-９Ｘｘ]")
_TO_ASCII = str.maketrans("０１２３４５６７８９Ｘｘ", "0123456789Xx")
_DIGIT = re.compile("[0-9]")

_SEP = r"[ \-\u3000－]"
_MOBILE = rf"[3-9][0-9]{_SEP}?[0-9]{{4}}{_SEP}?[0-9]{{4}}"  # after its leading 1
_AREA = r"(?:10|2[0-9]|[3-9][0-9]{2})"  # after its leading 0
# Every number starts with one of [0-9+(]. The pattern reads that character first, so
# the scan skips to candidates at C speed (a leading lookbehind would be tried at every
# position: 80 us for 500 characters instead of a few); the lookbehinds after it check
# the character before the number (no digit) and that no mask's `***` precedes it.
# Each kind then goes on from what that first character was (`(?<=...)`).
_NUMBER = re.compile(
    r"[0-9+＋(（](?<![0-9].)(?<!\*\*\*.)"
    r"(?:"
    r"(?<=[1-9])(?P<resident_id>[0-9]{5}(?:19|20|21)[0-9]{2}(?:0[1-9]|1[0-2])"
    r"(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx])"
    rf"|(?P<mobile>(?:(?<=[+＋])86|(?<=0)086|(?<=8)6){_SEP}?1{_MOBILE}|(?<=1){_MOBILE})"
    rf"|(?P<landline>(?:(?<=[(（])0{_AREA}[)）]|(?<=0){_AREA})"
    rf"{_SEP}?[1-9][0-9]{{2,3}}{_SEP}?[0-9]{{4}})"
    r"|(?<=[+＋])(?P<international_phone>[1-9](?:(?:[ .\-]|[ .\-]?[(（]|[)）][ .\-]?)?[0-9]){6,14})"
    r")"
    r"(?![0-9])(?!\*\*\*)",  # nothing of a digit or a mask's `***` after it
    re.ASCII,
)
_LOCAL_CHARS = r"A-Za-z0-9_%+\-"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z\-])"
_EMAIL = re.compile(  # read first, then look behind, as for numbers
    rf"[{_LOCAL_CHARS}]"
    rf"(?<![{_LOCAL_CHARS}@＠].)(?<![{_LOCAL_CHARS}]\..)(?<!\*\*\*.)"
    rf"[{_LOCAL_CHARS}]*(?:\.[{_LOCAL_CHARS}]+)*[@＠]{_DOMAIN}",
    re.ASCII,
)
# The `@domain` of a masked address: not a finding, but no number is looked for in it
# either (its `***` stays visible to the number scan, which stops at it).
_MASKED_DOMAIN = re.compile(rf"[@＠](?<=\*\*\*.){_DOMAIN}", re.ASCII)

# ITU-T E.164 country codes of two digits; 1 and 7 are one digit, all others three.
_TWO_DIGIT_CODES = frozenset(
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "
    "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split()
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _valid_resident_id(number: str) -> bool:
    year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
    if not 1900 <= year <= 2100 or day > calendar.monthrange(year, month)[1]:
        return False
    total = sum(int(c) * w for c, w in zip(number, _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == number[17].upper()


def _email_spans(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The addresses in `text`, and the spans hidden from the number scan."""
    if "@" not in text and "＠" not in text:
        return [], []
    emails = [m.span() for m in _EMAIL.finditer(text)]
    if "***" not in text:
        return emails, emails
    masked = [m.span() for m in _MASKED_DOMAIN.finditer(text)]
    return emails, sorted(emails + masked)


def _scan(text: str) -> tuple[str, list[Finding]]:
    """The text with ASCII digits, and the findings in it."""
    if _FULLWIDTH.search(text):
        text = text.translate(_TO_ASCII)  # one character for one: the spans stay
    emails, hidden = _email_spans(text)
    numbers_in = text
    if hidden:
        # Numbers are looked for around the e-mail addresses, not inside them.
        parts, at = [], 0
        for start, end in hidden:
            parts += [text[at:start], "\0" * (end - start)]
            at = end
        parts.append(text[at:])
        numbers_in = "".join(parts)
    found: list[Finding] = []
    if _DIGIT.search(numbers_in):
        for m in _NUMBER.finditer(numbers_in):
            kind = m.lastgroup  # the group names are the kinds
            if kind == "resident_id" and not _valid_resident_id(m.group()):
                continue
            found.append(Finding(kind, m.start(), m.end()))  # type: ignore[arg-type]
    if emails:
        found += [Finding("email", s, e) for s, e in emails]
        found.sort(key=lambda f: f.start)
    return text, found


def find_personal(text: str) -> list[Finding]:
    """The personal data in `text`: non-overlapping findings in order of position."""
    return _scan(text)[1]


def contains_personal(text: str) -> bool:
    """Whether `text` has any personal data (`find_personal` is not empty)."""
    return bool(_scan(text)[1])


@lru_cache(maxsize=4096)
def mask_personal(text: str) -> str:
    """`text` with each finding replaced by its mask; a string equal to `text` when nothing
    is found (compare with ==: a remembered result may be another object).

    Remembered for the last few thousand texts: storing a command's event and taking its
    fingerprint mask the same text."""
    normal, found = _scan(text)
    if not found:
        return text
    parts, at = [], 0
    for f in found:
        parts += [text[at : f.start], _mask(f.kind, normal[f.start : f.end])]
        at = f.end
    parts.append(text[at:])
    return "".join(parts)


def _digit_positions(s: str) -> list[int]:
    return [i for i, c in enumerate(s) if "0" <= c <= "9"]


def _mask(kind: Kind, s: str) -> str:
    if kind == "email":
        local, _, domain = s.replace("＠", "@").rpartition("@")
        return (local[0] if len(local) > 1 else "") + "***@" + domain
    if kind == "resident_id":
        return s[:6] + "********" + s[14:]
    digits = _digit_positions(s)
    if kind == "mobile":
        # The national number is the last 11 digits; keep everything up to its 3rd.
        return s[: digits[-9] + 1] + "****" + "".join(s[i] for i in digits[-4:])
    if kind == "landline":
        area = 3 if s[digits[1]] in "12" else 4
        keep = digits[area - 1] + 1
        if keep < len(s) and s[keep] in ")）":
            keep += 1
        if keep < len(s) and not "0" <= s[keep] <= "9":
            keep += 1
        local = len(digits) - area
        return s[:keep] + "****" + "".join(s[i] for i in digits[-(local - 4) :])
    # international_phone
    number = "".join(s[i] for i in digits)
    code = 1 if number[0] in "17" else 2 if number[:2] in _TWO_DIGIT_CODES else 3
    tail = min(4, len(number) - code - 4)
    return "+" + number[:code] + " ****" + (number[-tail:] if tail > 0 else "")
