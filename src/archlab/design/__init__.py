"""Design help: a library of proven templates and rules of thumb that turn a data set into a
starting spec (``archlab suggest``, ``archlab templates``). The rules are in docs/design.md.

Example:
    >>> from archlab.design import suggest
    >>> suggestion = suggest("digits", budget_params=20_000)
    >>> suggestion.params <= 20_000
    True
"""

from ._suggest import DATA_CAP_PER_SAMPLE, DesignError, Suggestion, data_kind, suggest
from ._templates import TemplateInfo, get_template_info, list_templates, load_template, template_text

__all__ = ["DATA_CAP_PER_SAMPLE", "DesignError", "Suggestion", "TemplateInfo", "data_kind", "get_template_info",
           "list_templates", "load_template", "suggest", "template_text"]
