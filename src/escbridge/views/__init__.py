"""The matrix as people read it: a terminal table, Markdown, JSON, an HTML chart, Mermaid.

``tables`` (text and Markdown), ``data`` (JSON), ``chart`` (routes and the HTML page),
``mermaid``. Every form reads the compiled ``Matrix``; the chart's routes come from
``Matrix.resolve``, the rule the engine decides with.
"""

from escbridge.views.chart import Route, html_environment, matrix_html, routes
from escbridge.views.data import matrix_json
from escbridge.views.mermaid import matrix_mermaid, mermaid_text
from escbridge.views.tables import matrix_markdown, matrix_table, text_table

__all__ = [
    "Route",
    "html_environment",
    "matrix_html",
    "matrix_json",
    "matrix_markdown",
    "matrix_mermaid",
    "matrix_table",
    "mermaid_text",
    "routes",
    "text_table",
]
