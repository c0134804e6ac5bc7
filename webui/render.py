"""Small renderers shared by the tabs: Markdown messages and the coloured YAML diff (all user text escaped)."""

from __future__ import annotations

import html
import re
from typing import Any


def md_code(text: Any) -> str:
    """Inline code in Markdown that user text cannot break out of."""
    value = str(text).replace("`", "'")
    return f"`{value}`"


def md_text(text: Any) -> str:
    """User text shown in Markdown as it is: no HTML, no emphasis or links made of its characters."""
    escaped = html.escape(str(text), quote=False)
    return re.sub(r"([\\`*_\[\]#|~])", r"\\\1", escaped)


def error_md(title: str, problems: list[str]) -> str:
    lines = [f"**{title}:**"] + [f"- {md_text(p)}" for p in problems]
    return "\n".join(lines)


def diff_html(diff: str, empty: str = "no difference from main") -> str:
    """A unified diff as HTML lines coloured by kind; `empty` says what no difference means."""
    if not diff.strip():
        return f"<div class='lfops-diff'><em>{html.escape(empty)}</em></div>"
    rows = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "diff ", "index ", "new file", "deleted file")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        rows.append(f"<div class='lfops-diff-{kind}'>{html.escape(line) or '&nbsp;'}</div>")
    return "<div class='lfops-diff'>" + "".join(rows) + "</div>"


def value_text(value: Any) -> str:
    return "" if value is None else str(value)


CSS = """
.lfops-diff { font-family: ui-monospace, monospace; font-size: 13px; white-space: pre; overflow-x: auto;
              border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px 0; }
.lfops-diff > div { padding: 0 10px; }
.lfops-diff-add { background: #e6ffec; color: #116329; }
.lfops-diff-del { background: #ffebe9; color: #82071e; }
.lfops-diff-hunk { color: #6639ba; background: #f6f0ff; }
.lfops-diff-meta { color: #57606a; font-weight: 600; }
#lfops-whoami { text-align: right; }
/* Notices (LlamaBoard's "non-instruct model" among them) at the bottom left: not over the tabs and the sign-out link
   at the top, nor over Save, Launch and the other buttons at the right end of their rows (the page's end cannot be
   scrolled up, away from the bottom of the window). */
.toast-wrap { top: auto !important; bottom: 16px !important; right: auto !important; left: 16px !important;
              align-items: start !important; }
/* In the page (a page's own script clicks it: webui.live) but never shown; Gradio leaves invisible ones out. */
#lfops-runs-wake { display: none !important; }
"""
