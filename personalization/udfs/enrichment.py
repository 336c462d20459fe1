"""Device class, browser and OS family from a user-agent string.

The parsing is ua-parser 1.x, the Python implementation of uap-core, the community-maintained
user-agent regex database; the regexes ship separately (``ua-parser-builtins``, released about
monthly), so new devices need no code change. (``user-agents`` has phone/tablet flags but wraps
the pre-1.0 ua-parser API and has had no release since 2020.) ua-parser names device, browser and OS families but has no
phone/tablet/desktop class, so :func:`classify` derives one from its result with the conventions
browsers follow (Android tablets omit the ``Mobile`` token) and uap-core's own (crawlers are the
``Spider`` device family). Headless browsers count as bots: they would otherwise pass for
desktop visitors. Known limits: iPadOS Safari presents itself as a Mac by default and counts
as desktop; Android TVs whose user agent looks like a tablet's count as tablets.

One parse costs about a millisecond (hundreds of regexes tried in order) while a site sees
few distinct user agents, so results are memoised in an LRU cache. User agents are cut to
:data:`MAX_USER_AGENT_CHARS` first: a hostile multi-kilobyte header could otherwise fill the
cache and feed the regexes huge inputs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache, lru_cache

from ua_parser import BasicResolver, Parser, Result, load_builtins

MAX_USER_AGENT_CHARS = 512  # real user agents stay well below this (typically 100-300 characters)
CACHE_SIZE = 10_000
UNKNOWN = "Other"  # ua-parser's family when nothing matched; kept so families compare with its vocabulary

# Tablets whose user agent may say "Mobile" (iPad Safari does) or that ua-parser names as such.
_TABLET_FAMILIES = ("iPad", "Kindle")
_HEADLESS_BROWSERS = frozenset({"HeadlessChrome", "PhantomJS"})
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Firefox OS",
                        "HarmonyOS"})
_DESKTOP_OS = frozenset({"Windows", "Mac OS X", "Linux", "Ubuntu", "Debian", "Fedora", "Red Hat", "SUSE",
                         "Mint", "Arch Linux", "Gentoo", "Chrome OS", "FreeBSD", "OpenBSD", "NetBSD", "Solaris"})


class DeviceClass(str, enum.Enum):
    MOBILE = "mobile"
    TABLET = "tablet"
    DESKTOP = "desktop"
    BOT = "bot"
    OTHER = "other"  # consoles, TVs, HTTP libraries, missing or unrecognised user agents


@dataclass(frozen=True, slots=True)
class Device:
    device_class: DeviceClass
    browser: str  # ua-parser family, e.g. "Chrome Mobile", "Mobile Safari", "Googlebot"; "Other" if unknown
    os: str       # e.g. "iOS", "Android", "Windows", "Mac OS X"; "Other" if unknown


UNKNOWN_DEVICE = Device(DeviceClass.OTHER, UNKNOWN, UNKNOWN)


@cache
def _parser() -> Parser:
    """Built on first use, not at import: loading the regexes takes a quarter of a second, and
    Flink imports this module on the client too, where nothing is parsed."""
    return Parser(BasicResolver(load_builtins()))


def enrich(user_agent: str | None) -> Device:
    """The device behind a user agent; missing or unrecognisable ones are :data:`UNKNOWN_DEVICE`."""
    if not user_agent or not user_agent.strip():
        return UNKNOWN_DEVICE
    return _enrich_cached(user_agent[:MAX_USER_AGENT_CHARS])


@lru_cache(maxsize=CACHE_SIZE)
def _enrich_cached(user_agent: str) -> Device:
    result = _parser().parse(user_agent)
    return Device(classify(result), result.user_agent.family if result.user_agent else UNKNOWN,
                  result.os.family if result.os else UNKNOWN)


def classify(result: Result) -> DeviceClass:
    """The device class from a parse; the order matters (a Googlebot smartphone is a bot, an iPad
    also says ``Mobile``)."""
    device = result.device.family if result.device else ""
    brand = result.device.brand if result.device else None
    os = result.os.family if result.os else ""
    if device == "Spider" or (result.user_agent and result.user_agent.family in _HEADLESS_BROWSERS):
        return DeviceClass.BOT
    if device.startswith(_TABLET_FAMILIES) or brand == "Generic_Android_Tablet":
        return DeviceClass.TABLET
    if os == "Android" and "Mobile" not in result.string:
        return DeviceClass.TABLET
    if os in _MOBILE_OS or "Mobile" in result.string:
        return DeviceClass.MOBILE
    if os in _DESKTOP_OS:
        return DeviceClass.DESKTOP
    return DeviceClass.OTHER
