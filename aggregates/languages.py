"""The languages a reader asks for, in order: an HTTP `Accept-Language` header read by its
q-values (RFC 9110 §12.5.4), ties in the order given, `q=0` meaning "not this one"."""

from __future__ import annotations


def by_preference(accept_language: str | None) -> list[str]:
    """The language tags of the header, most wanted first."""
    ranked: list[tuple[float, int, str]] = []
    for order, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag.strip() and quality > 0:
            ranked.append((-quality, order, tag.strip()))
    return [tag for *_, tag in sorted(ranked)]
