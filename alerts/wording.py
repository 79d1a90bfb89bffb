"""What notifications say, in Mandarin (zh-CN, the default) and English.

A language tag picks the wording by its primary subtag: "zh*" gets Simplified
Mandarin, "en*" English, and any other tag English too, the same choice the
webhooks' keypad prompts make, so one call never mixes two languages.

SMS are kept to one segment where the content allows: 160 GSM-7 characters
in English, 70 UCS-2 characters in Chinese (a map link of about 57 characters
pushes a Chinese SMS into two segments; phones join them).
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from alerts.maps import Datum, map_link
from alerts.vocabulary import AlertType, Severity

ZH, EN = "zh", "en"

# Keyed by str (AlertType and Severity are StrEnums): lookups come with raw strings from stored alerts.
ALERT_NAMES: dict[str, dict[str, str]] = {
    AlertType.SOS: {ZH: "SOS求救", EN: "SOS pressed"},
    AlertType.FALL: {ZH: "疑似跌倒", EN: "possible fall"},
    AlertType.GEOFENCE_EXIT: {ZH: "离开安全区域", EN: "left the safe area"},
    AlertType.HEART_RATE: {ZH: "心率异常", EN: "abnormal heart rate"},
    AlertType.SPO2_LOW: {ZH: "血氧偏低", EN: "low blood oxygen"},
    AlertType.OVEREXERTION: {ZH: "运动过量", EN: "overexertion on fitness equipment"},
    AlertType.WATCH_SILENT: {ZH: "手表失联", EN: "watch not responding"},
    AlertType.SERVICE_CALL: {ZH: "呼叫服务", EN: "service call"},
    AlertType.BATTERY_LOW: {ZH: "手表电量低", EN: "watch battery low"},
    AlertType.WATCH_NOT_WORN: {ZH: "未佩戴手表", EN: "watch not worn"},
    AlertType.EQUIPMENT_SILENT: {ZH: "健身器材无信号", EN: "fitness equipment silent"},
    AlertType.EQUIPMENT_FAULT: {ZH: "健身器材故障", EN: "fitness equipment fault"},
    AlertType.DEVICE_CLOCK_WRONG: {ZH: "设备时钟错误", EN: "device clock wrong"},
}

# Red alerts say they are urgent; the grade words follow the red/orange/yellow scale service centres use.
_SMS_PREFIX: dict[str, dict[str, str]] = {ZH: {Severity.RED: "紧急：", Severity.ORANGE: "警报：", Severity.YELLOW: "提醒："},
               EN: {Severity.RED: "URGENT: ", Severity.ORANGE: "Alert: ", Severity.YELLOW: "Notice: "}}
_CALL_OPENING: dict[str, dict[str, str]] = {
    ZH: {Severity.RED: "紧急警报。", Severity.ORANGE: "警报。", Severity.YELLOW: "提醒。"},
    EN: {Severity.RED: "Urgent alert.", Severity.ORANGE: "Alert.", Severity.YELLOW: "Notice."}}
_OUTCOME = {ZH: {"accepted": "受理", "resolved": "处理完毕"}, EN: {"accepted": "accepted", "resolved": "resolved"}}
_PRESS_ONE = {ZH: "请按1接受此警报。", EN: "Press 1 to accept this alert."}
_NO_INPUT = {ZH: "没有收到按键，再见。", EN: "No key was pressed. Goodbye."}
_THANKS = {ZH: "谢谢，您已接受此警报。", EN: "Thank you. You have accepted this alert."}


def wording_language(language: str) -> str:
    """"zh" or "en": which wording a BCP-47 tag gets (anything neither Chinese nor English gets English)."""
    primary = language.split("-")[0].lower()
    return ZH if primary == "zh" else EN


def say_language(language: str) -> str:
    """The tag for <Say language=...>: it must match the wording's language, not only the contact's tag."""
    if wording_language(language) == ZH:
        return "zh-CN"
    parts = language.split("-")
    return f"en-{parts[1].upper()}" if parts[0].lower() == "en" and len(parts) > 1 and len(parts[1]) == 2 else "en-US"


def alert_name(alert_type: str, language: str) -> str:
    """The alert type in words; an unknown type is shown as its raw string."""
    return ALERT_NAMES.get(alert_type, {}).get(wording_language(language), alert_type)


def _hhmm(at_ms: int, tz: str) -> str:
    return datetime.fromtimestamp(at_ms / 1000, ZoneInfo(tz)).strftime("%H:%M")


def alert_sms(resident_name: str, alert_type: str, severity: str, at_ms: int, lat: float | None, lon: float | None,
              *, language: str, tz: str, map_url_template: str, map_datum: Datum = "gcj02") -> str:
    """Who, what, when (local HH:MM) and, when the position is known, a map link."""
    lang = wording_language(language)
    prefix = _SMS_PREFIX[lang].get(severity, "")
    what, when = alert_name(alert_type, language), _hhmm(at_ms, tz)
    text = f"{prefix}{resident_name} {what} {when}" if lang == ZH else f"{prefix}{resident_name}: {what} at {when}."
    if lat is not None and lon is not None:
        link = map_link(map_url_template, lat, lon, map_datum)
        text += f" {link}" if lang == ZH else f" Map: {link}"
    return text


def follow_up_sms(resident_name: str, alert_type: str, outcome: str, by: str, at_ms: int, *, language: str, tz: str) -> str:
    """Tells those already texted that the alert was accepted or resolved, by whom and when."""
    lang = wording_language(language)
    what, when = alert_name(alert_type, language), _hhmm(at_ms, tz)
    done = _OUTCOME[lang].get(outcome, outcome)
    if lang == ZH:
        return f"更新：{resident_name} {what} 已由{by}{done} {when}"
    return f"Update: {resident_name}: {what}, {done} by {by} at {when}."


def call_text(resident_name: str, alert_type: str, severity: str, *, language: str) -> str:
    """What a call says before the keypad prompt."""
    lang = wording_language(language)
    opening, what = _CALL_OPENING[lang].get(severity, ""), alert_name(alert_type, language)
    return f"{opening}{resident_name}，{what}。" if lang == ZH else f"{opening} {resident_name}: {what}.".lstrip()


def press_one_prompt(language: str) -> str:
    return _PRESS_ONE[wording_language(language)]


def no_input_goodbye(language: str) -> str:
    return _NO_INPUT[wording_language(language)]


def accepted_thanks(language: str) -> str:
    return _THANKS[wording_language(language)]
