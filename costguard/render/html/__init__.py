"""The HTML report (`costguard report --html`): the page (`page`), its sections (`sections`,
`routing`) and value formatting (`format`). `render_html` and `write_html` are the entry points.
"""

from costguard.render.html.format import money, ms, num, verdict_value
from costguard.render.html.page import TEMPLATE_DIR, render_html, write_html

__all__ = ["TEMPLATE_DIR", "money", "ms", "num", "render_html", "verdict_value", "write_html"]
