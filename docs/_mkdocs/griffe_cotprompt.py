"""griffe extensions for the API reference (mkdocs.yml, mkdocstrings `extensions:`).

- ``PydanticInit``: a pydantic model (a ``pydantic.BaseModel`` subclass, also through the
  project's own bases) gets the keyword-only ``__init__`` pydantic builds from its fields, as
  griffe's built-in extension does for dataclasses, so that the signature shows the options and
  their defaults and the ``Args:`` section of the class docstring is checked against them.
- ``SphinxRoles``: the docstrings are Google style with Sphinx roles
  (:class:`~cotprompt.tasks.VQADataset`, :func:`from_folder`, :meth:`CoTPipeline.fit`), which
  Markdown would show as literal text. Each role becomes an *optional* autorefs cross-reference
  (mkdocs-autorefs): a link where the target is documented in the site, code text where it is
  not (a private helper, a third-party object), never a warning. A name is resolved in the scope
  of the object whose docstring it is, as Sphinx and Python do (members, then imports, then the
  enclosing scopes).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

PYDANTIC_BASES = {"pydantic.BaseModel", "pydantic.main.BaseModel"}
PYDANTIC_FIELD = {"pydantic.Field", "pydantic.fields.Field"}
ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|attr|mod|data|exc|obj|const):`(?P<target>[^`]+)`")
EXPLICIT_TITLE = re.compile(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>")
# reST's `text::` + blank line + indented block: the block is code (Markdown's indented code
# block too); the marker reads `text:`, or nothing where it stands alone.
LITERAL_MARKER = re.compile(r"(?P<before>[^\n]*?)(?P<space>\s?)::\n(?=[ \t]*\n)")


def _identifier(obj: griffe.Object, name: str) -> str:
    """The full path of ``name`` as seen from ``obj``; ``name`` itself when it cannot be
    resolved (autorefs then finds it if it is already a full path)."""
    first, dot, rest = name.partition(".")
    try:
        path = obj.resolve(first) + dot + rest
    except Exception:  # griffe.NameResolutionError, or an alias that does not resolve
        # An inherited member (`resolve` only sees a class's own members).
        scope: griffe.Object | None = obj
        while scope is not None and not isinstance(scope, griffe.Class):
            scope = scope.parent
        try:
            return scope.all_members[first].canonical_path + dot + rest  # type: ignore[union-attr]
        except Exception:
            return name
    try:
        return obj.modules_collection[path].canonical_path
    except Exception:  # outside the loaded packages (torch, PIL, ...)
        return path


def _replace_roles(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match[str]) -> str:
        target = match["target"].strip()
        explicit = EXPLICIT_TITLE.fullmatch(target)
        title = None
        if explicit:
            title, target = explicit["title"], explicit["target"].strip()
        short = target.startswith("~")
        name = target.lstrip("~").lstrip(".")
        if title is None:
            title = name.rsplit(".", 1)[-1] if short else name
        identifier = html.escape(_identifier(obj, name), quote=True)
        return (f'<autoref identifier="{identifier}" optional>'
                f"<code>{html.escape(title)}</code></autoref>")

    def literal(match: re.Match[str]) -> str:
        before = match["before"]
        return f"{before}:\n" if before.strip() and not match["space"] else f"{before}\n"

    return LITERAL_MARKER.sub(literal, ROLE.sub(link, text))


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring of a loaded package (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = _replace_roles(obj, obj.docstring.value)
            stack.extend(member for member in obj.members.values()
                         if not member.is_alias and isinstance(member, griffe.Object))


def _base_classes(cls: griffe.Class) -> list[tuple[str, griffe.Class | None]]:
    """(canonical path, loaded class or None) of each base of ``cls``."""
    found: list[tuple[str, griffe.Class | None]] = []
    for base in cls.bases:
        path = base.canonical_path if isinstance(base, griffe.Expr) else str(base)
        try:
            target = cls.modules_collection[path]
            target = target.final_target if target.is_alias else target
        except Exception:  # not loaded: pydantic's, the standard library's
            target = None
        found.append((path, target if isinstance(target, griffe.Class) else None))
    return found


def _model_lineage(cls: griffe.Class) -> list[griffe.Class] | None:
    """The pydantic models from the oldest base to ``cls``; None if ``cls`` is not one."""
    for path, base in _base_classes(cls):
        if path in PYDANTIC_BASES:
            return [cls]
        if base is not None and (lineage := _model_lineage(base)) is not None:
            return [*lineage, cls]
    return None


def _field_parameter(attribute: griffe.Attribute) -> griffe.Parameter:
    value = attribute.value
    default: str | griffe.Expr | None = value
    if isinstance(value, griffe.ExprCall) and value.function.canonical_path in PYDANTIC_FIELD:
        default = None  # Field() without a default: required
        for i, argument in enumerate(value.arguments):
            if isinstance(argument, griffe.ExprKeyword):
                if argument.name == "default":
                    default = argument.value
                elif argument.name == "default_factory":
                    default = griffe.ExprCall(function=argument.value, arguments=[])
            elif i == 0 and str(argument) != "...":
                default = argument
    return griffe.Parameter(attribute.name, annotation=attribute.annotation,
                            kind=griffe.ParameterKind.keyword_only, default=default,
                            docstring=attribute.docstring)


def _set_model_init(cls: griffe.Class) -> None:
    lineage = _model_lineage(cls)
    if lineage is None or any("__init__" in model.members for model in lineage):
        return  # not a model, or one with its own __init__
    fields: dict[str, griffe.Parameter] = {}
    for model in lineage:
        for member in model.members.values():
            # Fields are annotated; ClassVar (a class attribute only) and private names are not.
            if (not isinstance(member, griffe.Attribute) or member.annotation is None
                    or member.name.startswith(("_", "model_"))
                    or "property" in member.labels
                    or "instance-attribute" not in member.labels):
                continue
            fields[member.name] = _field_parameter(member)
    self_param = griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)
    cls.set_member("__init__", griffe.Function(
        "__init__", lineno=0, endlineno=0, parent=cls, returns="None",
        parameters=griffe.Parameters(self_param, *fields.values())))


class PydanticInit(griffe.Extension):
    """Gives the pydantic models of a loaded package their ``__init__`` (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if isinstance(obj, griffe.Class):
                _set_model_init(obj)
            stack.extend(member for member in obj.members.values()
                         if not member.is_alias and (member.is_module or member.is_class))
