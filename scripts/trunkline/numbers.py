"""E.164 phone numbers, shared by telephony-as-code and the CXML endpoint."""

from __future__ import annotations

import phonenumbers


def normalize_e164(value: object) -> str:
    """Return ``value`` as E.164 (``+`` country code, digits) or raise ValueError
    saying why. Separators (spaces, dashes, dots, parentheses) are accepted; a
    number without a leading ``+`` is refused, since its country is unknown."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a phone number")
    text = value.strip()
    if not text.startswith("+"):
        raise ValueError(f"{value!r} is not E.164: it must start with + and the country code")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{value!r} is not a valid number in its country's numbering plan")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
