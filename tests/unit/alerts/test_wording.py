"""What SMS and calls say: who, what, when, where; urgent for red; one SMS segment where possible."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from alerts.maps import wgs84_to_gcj02
from alerts.vocabulary import AlertType
from alerts.wording import (
    ALERT_NAMES,
    alert_name,
    alert_sms,
    call_text,
    follow_up_sms,
    no_input_goodbye,
    press_one_prompt,
    say_language,
    wording_language,
)

TZ = "Asia/Shanghai"
AT = int(datetime(2026, 11, 24, 9, 5, tzinfo=ZoneInfo(TZ)).timestamp() * 1000)   # 09:05 in Shanghai, 01:05 UTC
AMAP = "https://uri.amap.com/marker?position={lon},{lat}"
HERE = (31.2304, 121.4737)

# GSM 03.38 basic character set; the extension table's characters cost two.
GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXT = set("^{}\\[~]|€\f")


def gsm_length(text: str) -> int:
    assert all(c in GSM_BASIC or c in GSM_EXT for c in text), f"not GSM-7: {text!r}"
    return sum(2 if c in GSM_EXT else 1 for c in text)


def sms(language="zh-CN", name="王桂兰", alert_type="sos", severity="red", lat=None, lon=None, **kw) -> str:
    return alert_sms(name, alert_type, severity, AT, lat, lon, language=language, tz=TZ, map_url_template=AMAP, **kw)


def test_every_alert_type_has_words_in_every_language():
    assert set(ALERT_NAMES) == set(AlertType)
    assert all(set(words) == {"zh", "en"} for words in ALERT_NAMES.values())


def test_chinese_sms_names_who_what_and_local_time():
    assert sms() == "紧急：王桂兰 SOS求救 09:05"


def test_english_sms_names_who_what_and_local_time():
    assert sms("en-US", "Wang Guilan") == "URGENT: Wang Guilan: SOS pressed at 09:05."


def test_time_is_local_to_the_configured_zone():
    text = alert_sms("Li", "fall", "red", AT, None, None, language="en", tz="Europe/London", map_url_template=AMAP)
    assert text.endswith(" at 01:05.")


def test_only_red_alerts_say_urgent():
    assert sms("en", "Li", "sos", "red").startswith("URGENT: ")
    assert "URGENT" not in sms("en", "Li", "heart_rate", "orange")
    assert "紧急" not in sms("zh-CN", "王桂兰", "battery_low", "yellow")


def test_map_link_carries_the_position_in_gcj02_by_default():
    lat, lon = wgs84_to_gcj02(*HERE)
    assert sms(lat=HERE[0], lon=HERE[1]).endswith(f" https://uri.amap.com/marker?position={lon:.6f},{lat:.6f}")


def test_map_link_in_wgs84_when_the_map_expects_it():
    assert sms("en", "Li", lat=HERE[0], lon=HERE[1], map_datum="wgs84").endswith("Map: https://uri.amap.com/marker?position=121.473700,31.230400")


def test_no_map_link_without_a_position():
    assert "http" not in sms() and "http" not in sms("en", "Li", lat=HERE[0], lon=None)


def test_unknown_alert_type_is_shown_as_its_raw_string():
    assert alert_name("kettle_left_on", "en") == "kettle_left_on"
    assert "kettle_left_on" in sms(alert_type="kettle_left_on")


@pytest.mark.parametrize("alert_type", sorted(AlertType))
def test_english_sms_with_a_map_link_fits_one_gsm_segment(alert_type):
    text = sms("en-GB", "Wang Guilan", alert_type, alert_type.severity, *HERE)
    assert gsm_length(text) <= 160


@pytest.mark.parametrize("alert_type", sorted(AlertType))
def test_chinese_sms_with_a_short_name_fits_one_ucs2_segment(alert_type):
    assert len(sms("zh-CN", "王桂兰", alert_type, alert_type.severity)) <= 70


@pytest.mark.parametrize("alert_type", sorted(AlertType))
def test_chinese_sms_with_a_map_link_fits_two_ucs2_segments(alert_type):
    # The default AMap link alone is 57 characters, so a link always makes a Chinese SMS two segments (67 each).
    assert len(sms("zh-CN", "王桂兰", alert_type, alert_type.severity, *HERE)) <= 2 * 67


def test_follow_up_says_who_accepted_and_when():
    assert follow_up_sms("王桂兰", "fall", "accepted", "+15555550100", AT, language="zh-CN", tz=TZ) == \
        "更新：王桂兰 疑似跌倒 已由+15555550100受理 09:05"
    assert follow_up_sms("Li", "fall", "resolved", "operator Zhao", AT, language="en", tz=TZ) == \
        "Update: Li: possible fall, resolved by operator Zhao at 09:05."


def test_call_text_opens_with_the_grade():
    assert call_text("王桂兰", "sos", "red", language="zh-CN") == "紧急警报。王桂兰，SOS求救。"
    assert call_text("Li", "spo2_low", "orange", language="en-US") == "Alert. Li: low blood oxygen."


@pytest.mark.parametrize("tag, wording", [("zh-CN", "zh"), ("zh", "zh"), ("zh-TW", "zh"), ("en", "en"), ("en-US", "en"),
                                          ("EN-gb", "en"), ("fr-FR", "en"), ("", "en")])
def test_zh_tags_get_mandarin_and_every_other_tag_english(tag, wording):
    assert wording_language(tag) == wording


@pytest.mark.parametrize("tag, say", [("zh-CN", "zh-CN"), ("zh-HK", "zh-CN"), ("en", "en-US"), ("en-gb", "en-GB"),
                                      ("fr-FR", "en-US")])
def test_say_language_matches_the_wording_not_only_the_tag(tag, say):
    assert say_language(tag) == say


def test_keypad_prompt_and_goodbye_follow_the_language():
    assert "1" in press_one_prompt("zh-CN") and "按" in press_one_prompt("zh-CN")
    assert press_one_prompt("en-US") == "Press 1 to accept this alert."
    assert no_input_goodbye("en") != no_input_goodbye("zh-CN")
