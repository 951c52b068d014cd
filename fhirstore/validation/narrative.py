"""Narrative XHTML (Narrative.div) under the spec's rules txt-1 and txt-2.

txt-1: the narrative holds only the basic HTML formatting elements and attributes of HTML 4.0
chapters 7-11 and 15, `<a>` (name or href), images and inline `style` attributes: so no
`<script>`, `<form>`, `<iframe>`, `<object>`, event attributes (`onclick`...), and no
`javascript:` (or `vbscript:`, `data:` outside images) URLs. txt-2: it has some non-whitespace
content. The text is well-formed XML rooted at `div` in the XHTML namespace.

The XML is parsed with defusedxml, refusing any DTD: a hostile body cannot declare entities
(no "billion laughs") nor reach external ones. HTML entities such as `&nbsp;` are not XML and
are refused; send the character itself.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

XHTML = "{http://www.w3.org/1999/xhtml}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

_ELEMENT_NAMES = (
    "a abbr acronym address b bdo big blockquote br caption cite code col colgroup dd del dfn "
    "div dl dt em h1 h2 h3 h4 h5 h6 hr i img ins kbd li map area ol p pre q samp small span "
    "strong sub sup table tbody td tfoot th thead tr tt ul var"
)
_ATTRIBUTE_NAMES = (
    "abbr accesskey align alt axis bgcolor border cellhalign cellpadding cellspacing cellvalign "
    "char charoff charset cite class colspan compact coords datetime dir frame headers height "
    "href hreflang hspace id lang longdesc name nowrap rel rev rowspan rules scope shape span "
    "src start style summary tabindex title type valign value vspace width"
)
ELEMENTS = frozenset(_ELEMENT_NAMES.split())
ATTRIBUTES = frozenset(_ATTRIBUTE_NAMES.split())
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc"})
# What a browser ignores before a scheme: whitespace and control characters.
_IGNORED = re.compile(r"[\x00-\x20\x7f]+")
_SCRIPTING_SCHEMES = ("javascript:", "vbscript:", "data:")
_SCRIPTING_STYLE = re.compile(
    r"expression\s*\(|javascript:|vbscript:|behavior\s*:|-moz-binding", re.IGNORECASE
)


def problem(div: str) -> str | None:
    """What breaks the narrative rules in `div`, or None."""
    try:
        root = fromstring(div, forbid_dtd=True)
    except DefusedXmlException:
        return "must not declare a DTD or entities"
    except ParseError as exc:
        return f"is not well-formed XHTML ({exc}); HTML entities such as &nbsp; are not XML"
    if root.tag != f"{XHTML}div":
        return 'must be a <div xmlns="http://www.w3.org/1999/xhtml"> element (txt-1)'
    for element in root.iter():
        found = _element_problem(element)
        if found is not None:
            return found
    if not "".join(root.itertext()).strip() and root.find(f".//{XHTML}img") is None:
        return "must have some non-whitespace content (txt-2)"
    return None


def _element_problem(element: Element) -> str | None:
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith(XHTML) or tag[len(XHTML) :] not in ELEMENTS:
        name = tag.rsplit("}", 1)[-1] if isinstance(tag, str) else "?"
        return f"holds <{name}>, which a narrative may not (txt-1: basic HTML formatting only)"
    for attribute, value in element.attrib.items():
        if attribute != XML_LANG and attribute not in ATTRIBUTES:
            name = attribute.rsplit("}", 1)[-1]
            return f"holds the attribute {name}=, which a narrative may not (txt-1)"
        if attribute in _URL_ATTRIBUTES and _scripting_url(tag, attribute, value):
            return f"holds a scripting URL in {attribute}= (txt-1)"
        if attribute == "style" and _SCRIPTING_STYLE.search(value):
            return "holds a scripting style (txt-1)"
    return None


def _scripting_url(tag: str, attribute: str, value: str) -> bool:
    url = _IGNORED.sub("", value).lower()
    if tag == f"{XHTML}img" and attribute == "src" and url.startswith("data:image/"):
        return False  # an inline picture
    return url.startswith(_SCRIPTING_SCHEMES)
