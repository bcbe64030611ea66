"""One redactor for every text that leaves the engine: log lines, provider errors, recordings,
alert bodies, control-API answers and `run.py db --query` output.

`redact(text)` replaces with `***`:

1. every registered secret (`register_secrets`: the API keys, DATABASE_URL and its password, the
   control token, and the value of every environment variable a setting ending in `_env` names,
   e.g. a webhook's `url_env`), as written raw, inside a JSON string (UTF-8 or ASCII-escaped),
   inside a Python repr, as shown in a bytes repr and percent-encoded;
2. whatever is shaped like a credential, registered or not (`RULES`): a bearer token
   (`Bearer ***`), an API key with a known prefix (`sk-` with `sk-ant-`, `sk-proj-`, `sk-or-`
   ..., `gsk_`, `xai-`, `hf_`, `pplx-`, `r8_`, `fw_`, `nvapi-`, `ghp_` and the other GitHub token
   prefixes, `github_pat_`, `glpat-`, `xox?-` Slack tokens: each followed by at least 16 key
   characters), a Google API key (`AIza` + 35), an AWS access key id (`AKIA`/`ASIA` + 16), a
   Telegram bot token (`<digits>:<30+ key characters>`), the password of a URL
   (`scheme://user:***@host`), the value after `api_key=`, `x-api-key:`, `token=`, `secret=`,
   `password=` and the like (8 or more characters with a digit, or 16 or more: a word such as
   "invalid x-api-key: Incorrect ..." stays), and any run of 32 or more ASCII letters and
   digits that mixes lower case, upper case and digits (random keys without a prefix; hex
   digests, UUIDs and ids like `chatcmpl-...` or `req_...` stay readable).

Secrets shorter than 4 characters are not registered (they would blank common words).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import orjson

REDACTED = "***"
_secrets: list[str] = []  # every form a registered secret can take in a text, longest first
_KEY = r"[A-Za-z0-9_\-]"
_PREFIXES = (r"sk-|gsk_|xai-|hf_|pplx-|r8_|fw_|nvapi-|gh[pousr]_|github_pat_|glpat-"
             r"|xox[abeoprs]-")
# Cheap pre-checks, so a log line pays for a rule's regex only when the rule could match:
# an ASCII text mapped to one byte per character class.
_ALNUM = bytes(0x61 if chr(i).isascii() and chr(i).isalnum() else 0x20 for i in range(256))
_DIGITS = bytes(0x64 if 0x30 <= i <= 0x39 else 0x3A if i == 0x3A else 0x20 for i in range(256))
_ALNUM_RUN = b"a" * 32  # the generic rule: 32 letters and digits in a row
_BOT_ID = b"d" * 6 + b":"  # a Telegram bot token: 6+ digits, then a colon


@dataclass(frozen=True, slots=True)
class _Rule:
    """A credential shape; its regex runs only on texts whose lower-case form holds one of its
    `triggers`, or, for a rule with a `mapped` pre-check, whose character-class map holds
    `needle`."""

    pattern: re.Pattern[str]
    triggers: tuple[str, ...] = ()
    keep: bool = False  # keep the named group "keep" before `***`
    mapped: bytes | None = None  # translation table of the pre-check
    needle: bytes = b""


RULES = (
    _Rule(re.compile(r"(?P<keep>\b[Bb]earer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
          ("bearer",), keep=True),
    _Rule(re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]+:)[^\s@/]+(?=@)"),
          ("://",), keep=True),
    _Rule(re.compile(r"(?P<keep>\b(?i:api[_\-]?key|x-api-key|access[_\-]?token|auth[_\-]?token"
                     r"|token|client[_\-]?secret|secret|password|passwd)[\"']?\s*[:=]\s*[\"']?)"
                     r"(?:(?=[^\s\"',;&]*[0-9])[^\s\"',;&]{8,}|[^\s\"',;&]{16,})"),
          ("key", "token", "secret", "passw"), keep=True),
    _Rule(re.compile(rf"\b(?:{_PREFIXES}){_KEY}{{16,}}"),
          ("sk-", "gsk_", "xai-", "hf_", "pplx-", "r8_", "fw_", "nvapi-", "ghp_", "gho_",
           "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox")),
    _Rule(re.compile(r"\bAIza[A-Za-z0-9_\-]{35}"), ("aiza",)),
    _Rule(re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), ("akia", "asia")),
    _Rule(re.compile(r"(?<![0-9])[0-9]{6,12}:[A-Za-z0-9_\-]{30,}"), mapped=_DIGITS,
          needle=_BOT_ID),
    _Rule(re.compile(r"\b(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[0-9])"
                     r"[A-Za-z0-9]{32,}\b"), mapped=_ALNUM, needle=_ALNUM_RUN),
)


def _keep(match: re.Match[str]) -> str:
    return match.group("keep") + REDACTED


def redact_credentials(text: str) -> str:
    """Return `text` with every credential-shaped token (rule 2 above) replaced by `***`."""
    raw: bytes | None = None
    low = text.lower()
    for rule in RULES:
        if rule.mapped is not None:
            if raw is None:
                raw = text.encode("utf-8", "surrogateescape")
            if rule.needle not in raw.translate(rule.mapped):
                continue
        elif not any(t in low for t in rule.triggers):
            continue
        text = rule.pattern.sub(_keep if rule.keep else lambda _: REDACTED, text)
        raw = None  # the text changed
    return text


def _forms(secret: str) -> set[str]:
    """Return the secret raw, inside a JSON string (UTF-8 or ASCII-escaped), a Python repr, a
    bytes repr, and percent-encoded."""
    forms = {secret, orjson.dumps(secret).decode()[1:-1], json.dumps(secret)[1:-1],
             repr(secret)[1:-1], repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
             quote(secret, safe="")}
    return {f for f in forms if len(f) >= 4}


def register_secrets(values: Iterable[str]) -> None:
    """Add values that must never appear in any text the engine writes or sends."""
    for v in values:
        if v and len(v) >= 4:
            for form in _forms(v):
                if form not in _secrets:
                    _secrets.append(form)
    _secrets.sort(key=len, reverse=True)


class _Dumpable(Protocol):
    def model_dump(self) -> dict[str, Any]: ...


def named_env_values(settings: _Dumpable, env: Mapping[str, str]) -> list[str]:
    """Return the value of every environment variable a setting ending in `_env` names."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                    if env.get(value, "").strip():
                        found.append(env[value].strip())
                else:
                    walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(settings.model_dump())
    return found


def register_configured(secrets: Iterable[str], settings: _Dumpable,
                        env: Mapping[str, str]) -> None:
    """Register the engine's secrets and every secret a setting names by its variable."""
    register_secrets([*secrets, *named_env_values(settings, env)])


def clear_secrets() -> None:
    """Forget every registered secret (tests)."""
    _secrets.clear()


def redact(text: str) -> str:
    """Return `text` without any registered secret or credential-shaped token (see above)."""
    for s in _secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return redact_credentials(text)


def redact_bytes(data: bytes) -> bytes:
    """Return UTF-8 `data` redacted like `redact` (undecodable bytes kept as they were)."""
    return redact(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def redact_value(value: Any) -> Any:
    """Return `value` with every string inside it (dict values, list and tuple items) redacted;
    keys and other types are kept as they are. When nothing in it needs redacting, `value`
    itself is returned.

    Its short strings are first redacted together, one text joined by blank lines: a secret or a
    credential in one string is one in that text too, at a word boundary there too, so an
    unchanged text means none of them needs redacting (a match that only the joined text has,
    across two strings, where a rule allows whitespace inside, sends every string through on its
    own). Long strings are checked each on its own, so a rule that a short one triggers (a URL's
    `://`) never runs its regex over them. A provider exchange holds a hundred strings or more,
    most of them short, and two long ones (the prompt): a few passes instead of one per string.
    """
    texts: list[str] = []
    _strings(value, texts)
    if not texts:
        return value
    joined = _JOIN.join(t for t in texts if len(t) < _ALONE)
    if redact(joined) == joined and all(redact(t) == t for t in texts if len(t) >= _ALONE):
        return value
    return _redact_each(value)


_JOIN = "\n\n"
_ALONE = 512  # a string this long is checked on its own


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list) or type(value) is tuple:
        for v in value:
            _strings(v, out)


def _redact_each(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_each(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_each(v) for v in value]
    if type(value) is tuple:
        return tuple(_redact_each(v) for v in value)
    return value
