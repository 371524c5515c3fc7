"""ChatHaruhi's built-in role names: every name and alias of its 32 packaged roles.

``role_name=`` in ChatHaruhi 2.0 looks the name up in this table and loads the role's JSONL from
the Hugging Face dataset ``silk-road/ChatHaruhi-RolePlaying`` (here: ``interop.pull``, cached under
the chatharuhi home). An unknown name is an error with close matches, never a silent default.
"""

from __future__ import annotations

import difflib

from ..interop.pull import DEFAULT_ROLE_REPO

# file name in the dataset -> the names ChatHaruhi accepts for it (besides the file name itself)
BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "tangshiye": ("汤师爷", "Tangshiye"),
    "murongfu": ("慕容复", "Murongfu"),
    "liyunlong": ("李云龙", "Liyunlong"),
    "Luna": (),
    "wangduoyu": ("王多鱼", "Wangduoyu"),
    "Ron": (),
    "jiumozhi": ("鸠摩智", "Jiumozhi"),
    "Snape": (),
    "haruhi": ("凉宫春日", "Haruhi"),
    "Malfoy": (),
    "xuzhu": ("虚竹", "Xuzhu"),
    "xiaofeng": ("萧峰", "Xiaofeng"),
    "duanyu": ("段誉", "Duanyu"),
    "Hermione": (),
    "Dumbledore": ("Professor Dumbledore",),
    "wangyuyan": ("王语嫣", "Wangyuyan"),
    "Harry": (),
    "McGonagall": ("Professor McGonagall",),
    "baizhantang": ("白展堂", "Baizhantang"),
    "tongxiangyu": ("佟湘玉", "Tongxiangyu"),
    "guofurong": ("郭芙蓉", "Guofurong"),
    "wanderer": ("流浪者", "Wanderer"),
    "zhongli": ("钟离", "Zhongli"),
    "hutao": ("胡桃", "Hutao"),
    "Sheldon": (),
    "Raj": (),
    "Penny": (),
    "weixiaobao": ("韦小宝", "Weixiaobao"),
    "qiaofeng": ("乔峰", "Qiaofeng"),
    "ayaka": ("神里绫华", "Ayaka"),
    "raidenShogun": ("雷电将军", "RaidenShogun"),
    "yuqian": ("于谦", "Yuqian"),
}

ROLE_NAMES: dict[str, str] = {alias: file for file, aliases in BUILTIN_ROLES.items() for alias in (file, *aliases)}


def builtin_role_file(name: str) -> str | None:
    """The dataset file (without ``.jsonl``) of a ChatHaruhi role name or alias, else None."""
    return ROLE_NAMES.get(name.strip())


def builtin_role_spec(name: str) -> str | None:
    """``silk-road/ChatHaruhi-RolePlaying/<file>`` for a ChatHaruhi role name or alias, else None."""
    file = builtin_role_file(name)
    return f"{DEFAULT_ROLE_REPO}/{file}" if file else None


def close_role_names(name: str, n: int = 3) -> list[str]:
    """ChatHaruhi role names that look like ``name`` (case-insensitive), best first."""
    lowered = {k.lower(): k for k in sorted(ROLE_NAMES, key=lambda k: k == ROLE_NAMES[k])}  # file names win
    return [lowered[m] for m in difflib.get_close_matches(name.strip().lower(), list(lowered), n=n, cutoff=0.6)]
