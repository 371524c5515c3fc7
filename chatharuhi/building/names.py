"""Name forms: titles and their genders, short forms of a full name, and the words that are never names."""

from __future__ import annotations

import re

MALE_TITLES = ("Mr", "Mister", "Sir", "Lord", "Monsieur", "M", "Master", "Captain", "Colonel", "Father", "Uncle",
               "Signor", "Herr", "Count", "Prince", "King", "Brother", "Squire")
FEMALE_TITLES = ("Mrs", "Miss", "Ms", "Lady", "Madame", "Mme", "Mademoiselle", "Mlle", "Mistress", "Dame",
                 "Aunt", "Sister", "Queen", "Princess", "Duchess", "Countess", "Signora", "Frau")
OTHER_TITLES = ("Dr", "Doctor", "Professor", "Prof", "Inspector", "Sergeant", "Rev", "Reverend", "Judge", "Coroner",
                "Superintendent", "Admiral", "General", "Major", "Mr", "Mrs")
TITLES = frozenset(MALE_TITLES + FEMALE_TITLES + OTHER_TITLES)
_TITLE_GENDER = {**{t: "m" for t in MALE_TITLES}, **{t: "f" for t in FEMALE_TITLES}}
# Capitalised words that start sentences or name no one; a short form is never one of them.
NOT_NAMES = frozenset("""
I A An The He She It We You They His Her Its Our Your Their My Me Him Us Them This That These Those There Here
What Who Whom Whose Which When Where Why How Yes No Not Oh Ah Well Now Then But And Or If So As At By For From In
Into Of On To With Without Upon After Before Yet Still Just Only Even Very Do Does Did Is Are Was Were Be Been Have
Has Had Will Would Shall Should Can Could May Might Must Let Good Dear God Lord Heaven Heavens Sir Madam Ma'am
Mamma Papa Mama Mother Father Miss Mr Mrs Monsieur Madame Mademoiselle Chapter Book Volume Part End Project
Gutenberg Christmas Sunday Monday Tuesday Wednesday Thursday Friday Saturday January February March April June July
August September October November December London England English French Paris Street Square Road Hall House
Mon Dieu Eh Hm Hum Ha Hush Come Look See Say Tell Pray Thank Thanks Please Hallo Hello Why Quite Indeed Nothing
Something Everything Anything Nobody Somebody Everybody Anybody One Two Three Four Five Six Seven Eight Nine Ten
Perhaps Certainly Surely Sure Really Exactly Never Always Oui Non Mais Voila Bien Bon Capital Splendid Nonsense
""".split())

# Common Chinese surnames (single characters), for the short forms 孙少平 -> 少平.
ZH_SURNAMES = frozenset(
    "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜戚谢邹喻柏水窦章"
    "云苏潘葛奚范彭郎鲁韦昌马苗凤花方俞任袁柳酆鲍史唐费廉岑薛雷贺倪汤滕殷罗毕郝邬安常"
    "乐于时傅皮卞齐康伍余元卜顾孟平黄和穆萧尹姚邵湛汪祁毛禹狄米贝明臧计伏成戴谈宋茅庞"
    "熊纪舒屈项祝董梁杜阮蓝闵席季麻强贾路娄危江童颜郭梅盛林刁钟徐邱骆高夏蔡田樊胡凌霍"
    "虞万支柯昝管卢莫经房裘缪干解应宗丁宣邓郁单杭洪包诸左石崔吉龚程嵇邢滑裴陆荣翁荀羊"
    "惠甄曲家封芮羿储靳汲邴糜松井段富巫乌焦巴弓牧隗山谷车侯宓蓬全郗班仰秋仲伊宫宁仇栾"
    "暴甘厉戎祖武符刘景詹束龙叶幸司韶郜黎蓟薄印宿白怀蒲邰从鄂索咸籍赖卓蔺屠蒙池乔阴胥"
    "能苍双闻莘党翟谭贡劳逄姬申扶堵冉宰郦雍桑桂濮牛寿通边扈燕冀浦尚农温别庄晏柴瞿阎充"
    "慕连茹习宦艾鱼容向古易慎戈廖庾终暨居衡步都耿满弘匡国文寇广禄阙东欧沃利蔚越夔隆师"
    "巩厍聂晁勾敖融冷訾辛阚那简饶空曾毋沙乜养鞠须丰巢关蒯相查后荆红游竺权逯盖益桓公"
)
ZH_MALE_SUFFIXES = ("哥", "叔", "伯", "爷", "爸", "公", "兄", "弟", "先生", "老汉", "书记", "主任", "老头")
ZH_FEMALE_SUFFIXES = ("姐", "妹", "嫂", "婶", "妈", "娘", "姑", "婆", "奶", "女士", "小姐", "太太", "夫人", "媳妇")

_DOT = re.compile(r"\.(?=\s|$)")


def tokens(name: str) -> list[str]:
    """The words of a name, titles' full stops dropped: ``Mr. Frank Churchill`` -> ``Mr Frank Churchill``."""
    return _DOT.sub("", name).split()


def title_gender(name: str) -> str | None:
    """``m`` or ``f`` from an English title (Mr, Mrs, Miss, Lady...) or a Chinese kinship suffix, else None."""
    words = tokens(name)
    if words and words[0] in _TITLE_GENDER:
        return _TITLE_GENDER[words[0]]
    if name.endswith(ZH_FEMALE_SUFFIXES):
        return "f"
    if name.endswith(ZH_MALE_SUFFIXES):
        return "m"
    return None


def bare(name: str) -> list[str]:
    """The words of a name without its leading titles."""
    words = tokens(name)
    while words and words[0] in TITLES:
        words = words[1:]
    return words


def short_forms(name: str, language: str) -> list[str]:
    """Shorter names a book uses for the same person: ``Hercule Poirot`` -> ``Poirot``, ``Hercule``;
    ``孙少平`` -> ``少平``. The caller keeps only those no other character shares."""
    if language == "zh":
        if len(name) == 3 and name[0] in ZH_SURNAMES:
            return [name[1:]]
        if len(name) == 4 and name[:2] in ("欧阳", "司马", "诸葛", "上官", "东方", "慕容"):
            return [name[2:]]
        return []
    words = tokens(name)
    forms = []
    if words != name.split():  # "Mrs Cavendish" for "Mrs. Cavendish"
        forms.append(" ".join(words))
    rest = bare(name)
    if len(rest) >= 2:
        forms += [rest[-1], rest[0], " ".join(rest)]
        if words and words[0] in TITLES and words[0] != rest[0]:
            forms.append(f"{words[0]} {rest[-1]}")
            forms.append(f"{words[0]}. {rest[-1]}")
    elif len(rest) == 1 and rest != words:
        forms.append(rest[0])
    return [f for f in forms if f and f not in NOT_NAMES and f[0].isupper() and f != name]
