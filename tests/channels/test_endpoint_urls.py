"""REST hook URLs that parsers could read differently are refused, as a hostile client writes
them: the guard reads a URL as aiohttp (yarl) does and accepts only the plain form on which
every parser agrees. Names resolve through a made-up table (no real DNS)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from channels.endpoint_url import endpoint_origin
from channels.endpoints import EndpointGuard, EndpointRefused, Recipients
from channels.mailto import mailto_recipients

PUBLIC = "93.184.216.34"

# url -> words the refusal must contain. Each would reach 127.0.0.1 or another host than the
# one a different parser sees, or relies on a parser dropping or mapping characters.
HOSTILE = {
    "https://127.0.0.1\\@hooks.example/": "backslash",
    "https://hooks.example\\@127.0.0.1/": "backslash",
    "https:\\\\127.0.0.1/hook": "backslash",
    "https://hooks.example/\\..\\admin": "backslash",
    "https://hooks.example@127.0.0.1/": "user information",
    "https://user:secret@hooks.example/": "user information",
    "https://hooks.example%40127.0.0.1/": "no plain host",
    "https://0x7f.1/": "usual form",
    "https://0x7f000001/": "usual form",
    "https://2130706433/": "usual form",
    "https://127.1/": "usual form",
    "https://0177.0.0.1/": "usual form",
    "https://127.0.0.01/": "usual form",
    "https://127.0.0.1./": "usual form",
    "https://1.2.3.4.5/": "usual form",
    "https://%31%32%37.0.0.1/": "no plain host",
    "https://hooks%2Eexample/": "no plain host",
    "https://[fe80::1%25eth0]/": "no plain host",
    "https://hooks.example:+443/": "no plain host",
    "https://hooks.example:0x1bb/": "no plain host",
    "https:///127.0.0.1/": "no plain host",
    "https:/hooks.example/": "must be an https:// URL",
    "https://hooks.example\t/": "U+0009",
    "https://hooks.example\n.evil/": "U+000A",
    "https://hooks.example\r\nX-Injected: 1/": "U+000D",
    " https://hooks.example/": "a space",
    "https://hooks.example /": "a space",
    "https://hooks.example\x00.evil/": "U+0000",
    "https://\uff48ooks.example/": "U+FF48",  # fullwidth h: NFKC-folded by yarl
    "https://ex\u0430mple.org/": "U+0430",  # Cyrillic a: a look-alike name
    "https://\u2474.example/": "U+2474",  # (1): folded to "(1)" by yarl
    "ftp://hooks.example/": "must be an https:// URL",
}


def guard() -> EndpointGuard:
    async def resolve(host: str) -> list[str]:
        if host.lower().rstrip(".") in ("hooks.example", "example.org"):
            return [PUBLIC]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    return EndpointGuard.parse("", resolve)


@pytest.mark.parametrize("url", list(HOSTILE))
async def test_urls_parsers_could_read_differently_are_refused(url: str) -> None:
    with pytest.raises(EndpointRefused) as refused:
        await guard().check(url)
    assert HOSTILE[url] in refused.value.reason
    with pytest.raises(EndpointRefused):  # and at delivery, before any connection
        guard().screen(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example/fhir/hook?tenant=1&x=%20y#part",
        "https://HOOKS.example:8443/hook",
        "https://hooks.example./hook",
        f"https://{PUBLIC}/hook",
        "https://[2606:4700:4700::1111]:8443/hook",
    ],
)
async def test_plain_public_urls_still_pass(url: str) -> None:
    if "hooks" in url:
        await guard().check(url)
    else:
        guard().screen(url)


_TRICKY = st.text(
    alphabet=st.sampled_from(
        [*"aZ09.-_:@[]%/\\?#+ \t\n\x00~!$&'()*,;=", "\uff41", "\u0430", "\u2474", "1"]
    ),
    max_size=24,
)


@settings(max_examples=400, deadline=None)
@given(authority=_TRICKY, rest=_TRICKY)
def test_whatever_the_guard_accepts_every_parser_reads_alike(authority: str, rest: str) -> None:
    url = f"https://{authority}/{rest}"
    try:
        scheme, host = endpoint_origin(url)
    except ValueError:
        return
    parsed, split = URL(url), urlsplit(url)
    assert scheme == parsed.scheme == split.scheme == "https"
    assert host == parsed.raw_host
    assert (split.hostname or "").lower() == host.lower()
    assert parsed.user is None and split.username is None
    assert parsed.explicit_port == split.port


@pytest.mark.parametrize(
    "endpoint",
    [
        "mailto:victim%25evil.test@example.org",  # the percent hack: relayed on to evil.test
        "mailto:evil.test!victim@example.org",  # a bang path
        'mailto:"x@evil.test"@example.org',  # a quoted local part holding another address
        "mailto:x@[192.0.2.1]",  # a domain literal
        "mailto:x@example.org%0D%0ARCPT%20TO:<y@evil.test>",  # a second command
        "mailto:\uff58@example.org",  # fullwidth x
        "mailto:x@ex\u0430mple.org",  # Cyrillic a
        "mailto:x@example.org%00.evil.test",
    ],
)
def test_mail_addresses_that_could_go_elsewhere_are_refused(endpoint: str) -> None:
    allowed = Recipients.parse("@example.org", required=True)
    assert allowed is not None
    assert mailto_recipients(endpoint) == []
    assert "names no address" in (allowed.problem(mailto_recipients(endpoint)) or "")


def test_plain_mail_addresses_still_pass() -> None:
    allowed = Recipients.parse("@example.org", required=True)
    assert allowed is not None
    recipients = mailto_recipients("mailto:Ops.Team+fhir@Example.org,o'neil@example.org")
    assert recipients == ["Ops.Team+fhir@Example.org", "o'neil@example.org"]
    assert allowed.problem(recipients) is None
