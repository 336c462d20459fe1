"""User-agent enrichment on real-looking user agents of the devices a shop sees most."""

from __future__ import annotations

import dataclasses

import pytest

from personalization.udfs.enrichment import (
    MAX_USER_AGENT_CHARS,
    UNKNOWN_DEVICE,
    Device,
    DeviceClass,
    _enrich_cached,
    enrich,
)

IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
ANDROID_CHROME_PHONE = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
                        "(KHTML, like Gecko) Chrome/125.0.6422.113 Mobile Safari/537.36")
ANDROID_CHROME_REDUCED = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 "
                          "(KHTML, like Gecko) Chrome/125.0.0.0 Mobile Safari/537.36")
ANDROID_TABLET = ("Mozilla/5.0 (Linux; Android 12; SM-T870) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")
IPAD = ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1")
WINDOWS_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36")
MACOS_SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                "(KHTML, like Gecko) Version/17.4.1 Safari/605.1.15")
LINUX_FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_SMARTPHONE = ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
                        "(KHTML, like Gecko) Chrome/125.0.6422.175 Mobile Safari/537.36 "
                        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
HEADLESS_CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "HeadlessChrome/125.0.0.0 Safari/537.36")
SMART_TV = ("Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
            "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36")


@pytest.mark.parametrize(("user_agent", "expected"), [
    (IPHONE_SAFARI, Device(DeviceClass.MOBILE, "Mobile Safari", "iOS")),
    (ANDROID_CHROME_PHONE, Device(DeviceClass.MOBILE, "Chrome Mobile", "Android")),
    (ANDROID_CHROME_REDUCED, Device(DeviceClass.MOBILE, "Chrome Mobile", "Android")),
    (ANDROID_TABLET, Device(DeviceClass.TABLET, "Chrome", "Android")),
    (IPAD, Device(DeviceClass.TABLET, "Mobile Safari", "iOS")),
    (WINDOWS_CHROME, Device(DeviceClass.DESKTOP, "Chrome", "Windows")),
    (MACOS_SAFARI, Device(DeviceClass.DESKTOP, "Safari", "Mac OS X")),
    (LINUX_FIREFOX, Device(DeviceClass.DESKTOP, "Firefox", "Ubuntu")),
    (GOOGLEBOT, Device(DeviceClass.BOT, "Googlebot", "Other")),
    (GOOGLEBOT_SMARTPHONE, Device(DeviceClass.BOT, "Googlebot", "Android")),
    (HEADLESS_CHROME, Device(DeviceClass.BOT, "HeadlessChrome", "Linux")),
    (SMART_TV, Device(DeviceClass.OTHER, "Samsung Internet", "Tizen")),
    ("curl/8.5.0", Device(DeviceClass.OTHER, "curl", "Other")),
], ids=["iphone-safari", "android-chrome-phone", "android-chrome-reduced-ua", "android-tablet", "ipad",
        "windows-chrome", "macos-safari", "linux-firefox", "googlebot", "googlebot-smartphone", "headless-chrome",
        "smart-tv", "curl"])
def test_known_devices(user_agent: str, expected: Device) -> None:
    assert enrich(user_agent) == expected


@pytest.mark.parametrize("user_agent", [None, "", "   ", "\x00\xff{}[] not a user agent", "Mozilla/5.0", "x" * 100])
def test_missing_or_garbage_is_unknown(user_agent: str | None) -> None:
    assert enrich(user_agent) == UNKNOWN_DEVICE == Device(DeviceClass.OTHER, "Other", "Other")


def test_the_contract_example_user_agent() -> None:
    """The sample event of docs/contract.md carries a truncated iPhone user agent; it still says iPhone."""
    assert enrich("Mozilla/5.0 (iPhone; ...)").device_class is DeviceClass.MOBILE


def test_device_is_frozen_and_serialises_as_strings() -> None:
    device = enrich(WINDOWS_CHROME)
    with pytest.raises(dataclasses.FrozenInstanceError):
        device.os = "Linux"  # type: ignore[misc]
    assert dataclasses.asdict(device) == {"device_class": "desktop", "browser": "Chrome", "os": "Windows"}


def test_repeated_user_agents_hit_the_cache() -> None:
    enrich(ANDROID_CHROME_PHONE)
    hits = _enrich_cached.cache_info().hits
    for _ in range(5):
        enrich(ANDROID_CHROME_PHONE)
    assert _enrich_cached.cache_info().hits == hits + 5


def test_huge_user_agents_are_cut_before_parsing_and_caching() -> None:
    """A hostile header cannot fill the cache with megabytes: only the first characters count."""
    padded = WINDOWS_CHROME + " " + "A" * 100_000
    assert enrich(padded) == enrich(WINDOWS_CHROME)
    assert enrich(padded) == enrich(padded[:MAX_USER_AGENT_CHARS])
