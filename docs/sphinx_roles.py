"""A griffe extension for the API reference: the docstrings' Sphinx roles as Markdown code.

The docstrings cross-reference with reStructuredText roles (``:func:`~jaxlearn.nn.serial```,
``:mod:`jaxlearn.nn.dual```), which Markdown would show verbatim. Each becomes inline code of the name
(the last component when the target starts with ``~``, as Sphinx shows it). Loaded by mkdocs.yml.
"""

import re

import griffe

_ROLE = re.compile(r":(?:func|meth|class|mod|data|attr|obj|exc|const):`(~?)([^`<]+?)`")


def _plain(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
