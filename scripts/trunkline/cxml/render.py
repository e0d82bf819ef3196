"""Verbs -> CXML bytes, built as an element tree and serialized by the XML library.

Caller-controlled values are only ever element text or attribute values, so the
serializer escapes them; characters XML 1.0 cannot carry at all (most control
characters, lone surrogates) are dropped here, since escaping cannot save them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from trunkline.cxml.routing import (
    Dial,
    Hangup,
    NumberTarget,
    Play,
    Reject,
    Say,
    ServiceTarget,
    SipTarget,
    Verb,
)

CONTENT_TYPE = "application/xml; charset=utf-8"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """``value`` without the characters no XML 1.0 document may contain.
    (Printable strings hold none of them: the common case skips the regex.)"""
    return value if value.isprintable() else _NOT_XML.sub("", value)


def _child(parent: ET.Element, tag: str, text: str = "", **attrs: str | int) -> ET.Element:
    """Append ``<tag attrs>text</tag>``; empty attributes are left out."""
    element = ET.SubElement(
        parent, tag, {k: xml_text(str(v)) for k, v in attrs.items() if v not in ("", 0)}
    )
    if text:
        element.text = xml_text(text)
    return element


def _verb(root: ET.Element, verb: Verb) -> None:
    match verb:
        case Say():
            _child(root, "Say", verb.text, voice=verb.voice, language=verb.language)
        case Play():
            _child(root, "Play", verb.url)
        case Hangup():
            _child(root, "Hangup")
        case Reject():
            _child(root, "Reject", reason=verb.reason)
        case Dial():
            _dial(root, verb)


def _dial(root: ET.Element, verb: Dial) -> None:
    dial = _child(root, "Dial", action=verb.action, timeout=verb.timeout, callerId=verb.caller_id)
    match verb.target:
        case ServiceTarget(provider=provider, number=number):
            _child(dial, "Service", number, provider=provider)
        case SipTarget(uri=uri, username=username, password=password):
            _child(dial, "Sip", uri, username=username, password=password)
        case NumberTarget(number=number):
            _child(dial, "Number", number)
    for name, value in verb.headers:
        _child(dial, "Header", name=name, value=value)


def render(verbs: Iterable[Verb]) -> bytes:
    """A complete CXML document (UTF-8, with an XML declaration). Serialized to
    text and encoded once: a third faster than ElementTree's byte writer."""
    root = ET.Element("Response")
    for verb in verbs:
        _verb(root, verb)
    return _DECLARATION + ET.tostring(root, encoding="unicode").encode()
