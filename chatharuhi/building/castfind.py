"""Finding the cast when no ``--cast`` is given: names next to speech verbs, vocatives, subtitle and script
speaker tags; short forms merged into the full name (``Holmes`` -> ``Sherlock Holmes``, ``少平`` -> ``孙少平``),
each merge recorded so that the user can see and undo it."""

from __future__ import annotations

import re
from collections import Counter

from .cast import Cast, Member
from .names import NOT_NAMES, TITLES, ZH_SURNAMES, bare, title_gender
from .tags_en import SPEECH_VERBS

MIN_MENTIONS = 2
_NAME_EN = r"(?:(?:Mr|Mrs|Miss|Ms|Dr|Sir|Lady|Lord|Captain|Colonel|Monsieur|Madame|Mademoiselle|Inspector)\.?\s+)?" \
           r"[A-Z][a-z'’]+(?:\s+[A-Z][a-z'’]+){0,2}"
_VERBS = "|".join(sorted((v for v in SPEECH_VERBS if v.endswith("ed") or v in ("said", "cried", "asked")), key=len,
                         reverse=True))
_EN_AFTER = re.compile(rf"[,!?—-][\"”]\s+(?:{_VERBS})\s+(?P<name>{_NAME_EN})")
_EN_BEFORE = re.compile(rf"[\"”]\s+(?P<name>{_NAME_EN})\s+(?:{_VERBS})\b")
_EN_VOCATIVE = re.compile(rf"(?:,|\bmy dear|\bdear)\s+(?P<name>{_NAME_EN})[?!.,]")
_ZH_VERBS = "说|问|道|喊|叫|答|嚷"
_ZH = re.compile(rf"(?:^|[。！？；，：\n”」])(?P<name>[\u4e00-\u9fff]{{2,3}}?)(?:笑着|又|也|就|便|忙|急忙|赶忙|"
                 rf"对[\u4e00-\u9fff]{{1,4}}|向[\u4e00-\u9fff]{{1,4}})?(?:{_ZH_VERBS})")
_ZH_STOP = frozenset("他们 她们 我们 你们 大家 有人 别人 人家 老人 对方 两人 众人 自己 这时 于是 然后 "
                     "接着 后来 只是 但是 可是 因此 "
                     "所以 突然 忽然 立刻 马上 一边 同时 最后 终于 他又 她又 他就 她就 他也 她也".split())


def discover_cast(texts: list[str], language: str, tagged: Counter | None = None,
                  seeds: list[Member] | None = None) -> Cast:
    """A cast from the texts' speech tags (and subtitle/script speaker names in ``tagged``), seeded members first."""
    counts: Counter = Counter(tagged or {})
    for text in texts:
        if language == "zh":
            for m in _ZH.finditer(text):
                name = m["name"]
                if name not in _ZH_STOP and not name.startswith(("他", "她", "我", "你", "这", "那")):
                    counts[name] += 1
        else:
            for pattern in (_EN_AFTER, _EN_BEFORE, _EN_VOCATIVE):
                for m in pattern.finditer(text):
                    name = " ".join(m["name"].split())
                    if name in TITLES or name in NOT_NAMES:
                        continue
                    if name.split()[0] not in NOT_NAMES or name.split()[0] in TITLES:
                        counts[name] += 1
    seeds = list(seeds or [])
    names = [n for n, c in counts.most_common() if c >= MIN_MENTIONS or (tagged and n in tagged)]
    return merge_names(names, counts, language, seeds)


def merge_names(names: list[str], counts: Counter, language: str, seeds: list[Member]) -> Cast:
    """Fold short forms into the one longer name they belong to; conflicting genders are never merged."""
    members = list(seeds)
    taken = {n for m in seeds for n in m.names}
    merges: list[str] = []
    by_length = sorted((n for n in names if n not in taken), key=lambda n: (-len(_key(n, language)), -counts[n]))
    groups: list[list[str]] = []
    for name in by_length:
        home = _home(name, [m.names for m in members] + groups, language)
        if home is None and language != "zh":  # the user's character absorbs longer forms: "Hercule Poirot"
            home = next((i for i, m in enumerate(seeds) if _contains(name, m.name, language)), None)
        if home is None:
            groups.append([name])
        elif home is False:
            continue  # a short form several characters share stays out of the cast
        elif home < len(members):
            m = members[home]
            members[home] = Member(m.name, tuple(dict.fromkeys([*m.aliases, name])), m.gender)
            merges.append(f"{name} -> {m.name}")
        else:
            groups[home - len(members)].append(name)
    for g in groups:
        main = max(g, key=lambda n: (counts[n], len(n)))
        full = max(g, key=len)
        main = full if counts[full] * 3 >= counts[main] else main
        aliases = tuple(n for n in g if n != main)
        merges += [f"{a} -> {main}" for a in aliases]
        members.append(Member(main, aliases))
    return Cast(members, language, merges)


def _key(name: str, language: str) -> list[str]:
    return list(name) if language == "zh" else bare(name)


def _home(name: str, groups: list, language: str):
    """The index of the one group a short name belongs to; None for none; False when several could."""
    found = []
    for i, g in enumerate(groups):
        if any(_contains(big, name, language) for big in g):
            found.append(i)
    if len(found) == 1:
        return found[0]
    return None if not found else False


def _contains(big: str, small: str, language: str) -> bool:
    if big == small:
        return True
    if language == "zh":
        return len(big) == 3 and big[0] in ZH_SURNAMES and big[1:] == small
    gb, gs = title_gender(big), title_gender(small)
    if (gb and gs and gb != gs) or (gs == "f" and gb is None):  # "Mrs. Inglethorp" is not "Alfred Inglethorp"
        return False
    wb, ws = bare(big), bare(small)
    return bool(ws) and all(w in wb for w in ws)
