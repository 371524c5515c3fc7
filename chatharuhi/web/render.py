"""Text from cards, replies and visitors, made safe for the page: shown as text, with our own small markup.

Gradio renders a Chatbot bubble or a Markdown component as Markdown plus HTML, and its sanitiser keeps
``<img src=...>``, ``<form>`` and links; a toast renders HTML. So nothing a card, a reply or a visitor wrote
reaches the page as markup: ``literal`` turns every character that Markdown or HTML would read as structure
into a character reference (CommonMark never reads a reference as structure, and the browser shows it as the
character), and ``markup`` adds back only what we write ourselves: ``*action*`` and stage directions
``（…）``/``(…)`` in italics, ``**word**`` in bold. No image, link, form, code block or formula can result,
so the page fetches nothing a card names.
"""

from __future__ import annotations

import html
import re

# always structure somewhere: HTML, emphasis, code, links and images, tables, strikethrough, headings, maths
_ALWAYS = str.maketrans({c: f"&#{ord(c)};" for c in "&<>\\`*_[]|~#$@{}"})
_LINE_START = re.compile(r"^([ \t]*)([-+=]|\d{1,9}[.)])?")  # indented code; lists, setext underlines, rules
_AUTOLINK = re.compile(r"(?i)\b(https?|ftp|mailto|xmpp|file|data|javascript):|\bwww\.")  # GFM's bare links
_MARKUP = re.compile(r"\*\*([^*\n]{1,200}?)\*\*|\*([^*\n]{1,200}?)\*|(（[^（）\n]{1,80}）|\([^()\n]{1,80}\))")


def _ref(c: str) -> str:
    return f"&#{ord(c)};"


def _inline(text: str) -> str:
    text = text.translate(_ALWAYS)  # first: the references added next contain '&'
    return _AUTOLINK.sub(lambda m: m[0][:-1] + _ref(m[0][-1]), text)  # "http&#58;", "www&#46;" link nowhere


def _line_start(line: str) -> tuple[str, str]:
    """The start of a line made inert (leading blanks as no-break spaces, a list or rule marker as a reference),
    and the rest of the line."""
    m = _LINE_START.match(line)
    blanks, marker = m[1], m[2] or ""
    start = "&nbsp;" * len(blanks.expandtabs(4))
    if marker:
        start += marker[:-1] + _ref(marker[-1])
    return start, line[m.end():]


def literal(text: str) -> str:
    """``text`` as the page shows it, character for character: no Markdown, HTML, link or formula in it acts."""
    lines = []
    for line in str(text).split("\n"):
        start, rest = _line_start(line)
        lines.append(start + _inline(rest))
    return "\n".join(lines)


def markup(text: str) -> str:
    """``text`` shown literally except our small markup: ``*action*`` and ``（…）``/``(…)`` in italics,
    ``**word**`` in bold."""
    lines = []
    for line in str(text).split("\n"):
        start, rest = _line_start(line)
        out, pos = [start], 0
        for m in _MARKUP.finditer(rest):
            out.append(_inline(rest[pos:m.start()]))
            if m[1] is not None:
                out.append(f"<strong>{_inline(m[1])}</strong>")
            else:
                out.append(f"<em>{_inline(m[2] if m[2] is not None else m[3])}</em>")
            pos = m.end()
        out.append(_inline(rest[pos:]))
        lines.append("".join(out))
    return "\n".join(lines)


def bubble(name: str, text: str) -> str:
    """A chat bubble: the speaker's name in bold, then the text with our markup (stage directions in italics)."""
    shown = markup(text)
    return f"**{literal(name)}**\n{shown}" if name else shown


def toast(text: str) -> str:
    """A message for a Gradio toast (``gr.Warning``, ``gr.Error``), which renders HTML: shown as text."""
    return html.escape(str(text), quote=False)


_OUR_TAGS = re.compile(r"</?(?:em|strong)>")
_CUT_NOTE = re.compile(r" …\n\n<em>\(cut at the maximum reply length[^<]*\)</em>$")


def unbubble(content: str, name: str) -> str:
    """The text a bubble shows, back from its content after an edit in place: no name line, no markup of ours,
    character references read back (what the person typed stays exactly as typed)."""
    text = _CUT_NOTE.sub("", str(content))
    head = f"**{literal(name)}**\n"
    if name and text.startswith(head):
        text = text[len(head):]
    elif name and text.startswith(f"**{name}**\n"):
        text = text[len(name) + 5:]
    return html.unescape(_OUR_TAGS.sub("", text)).strip()
