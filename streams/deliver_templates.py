"""Email templates of the delivery worker, rendered with Jinja2.

A template NAME is the file ``NAME.txt`` in the templates directory: its first
line is ``Subject: ...``, the second line is blank and the rest is the plain-text
body. An optional ``NAME.html`` contains an HTML alternative of the body. Subject
and bodies are rendered with StrictUndefined, so a field that the command lacks
is an error instead of an empty string.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from nurture.config.errors import NurtureError

SUBJECT_PREFIX = "subject:"


class TemplateError(NurtureError):
    """A template file that cannot be used: a wrong layout or invalid Jinja2."""


class RenderError(Exception):
    """A template that cannot be rendered for a command. The message is the feedback detail."""


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str | None


@dataclass(frozen=True)
class MailTemplate:
    name: str
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template | None


def split_text_template(source: str, path: str | os.PathLike[str]) -> tuple[str, str]:
    """Split a text template into its subject and its body.

    Raises TemplateError naming the file and the line when the layout differs
    from a ``Subject: ...`` line, a blank line and a non-empty body.
    """
    lines = source.removeprefix("\ufeff").splitlines(keepends=True)
    first = lines[0].strip() if lines else ""
    if not first.lower().startswith(SUBJECT_PREFIX):
        raise TemplateError(f"{path}:1: the first line must be 'Subject: ...', got {first[:60]!r}")
    subject = first[len(SUBJECT_PREFIX):].strip()
    if not subject:
        raise TemplateError(f"{path}:1: the subject is empty")
    if len(lines) < 2 or lines[1].strip():
        raise TemplateError(f"{path}:2: the line after the subject must be blank")
    body = "".join(lines[2:])
    if not body.strip():
        raise TemplateError(f"{path}:3: the body is empty")

    return subject, body


def render_context(command: dict[str, Any]) -> dict[str, Any]:
    """Return the fields a template may use: the personalisation and some of the command's fields."""
    context: dict[str, Any] = dict(command.get("personalisation") or {})
    for name in ("command_id", "lead_id", "template", "rule", "score", "reasons", "journey", "step", "stage"):
        context[name] = command.get(name)

    return context


class TemplateBook:
    """All templates of one directory, read and compiled once at start."""

    def __init__(self, directory: Path, templates: dict[str, MailTemplate]) -> None:
        self.directory = directory
        self._templates = templates

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TemplateBook:
        """Read and compile every ``*.txt`` template of ``directory`` and its ``.html`` alternative."""
        folder = Path(directory)
        if not folder.is_dir():
            raise TemplateError(
                f"templates directory {folder} not found; create it or set NURTURE_DELIVER_TEMPLATES_DIR")
        text_env = _environment(autoescape=False)
        html_env = _environment(autoescape=True)
        templates: dict[str, MailTemplate] = {}
        for path in sorted(folder.glob("*.txt")):
            templates[path.stem] = _compile(path, text_env, html_env)
        for path in sorted(folder.glob("*.html")):
            if path.stem not in templates:
                raise TemplateError(f"{path}: an HTML template needs {path.with_suffix('.txt').name} beside it")
        if not templates:
            raise TemplateError(f"templates directory {folder} contains no NAME.txt template")

        return cls(folder, templates)

    def names(self) -> list[str]:
        return sorted(self._templates)

    def render(self, name: str | None, context: dict[str, Any]) -> RenderedMail:
        """Render template ``name``, or raise RenderError with a short reason."""
        if not name:
            raise RenderError("the command names no template")
        template = self._templates.get(name)
        if template is None:
            raise RenderError(f"template {name!r} not found")
        try:
            subject = template.subject.render(context)
            text = template.text.render(context)
            html = template.html.render(context) if template.html is not None else None
        except jinja2.UndefinedError as exc:
            raise RenderError(f"template {name!r}: {exc.message}") from exc
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(f"template {name!r}: {type(exc).__name__}: {exc}") from exc

        # A field value with a line break must not break the Subject header.
        return RenderedMail(subject=" ".join(subject.split()), text=text, html=html)


def _environment(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=autoescape,
                              keep_trailing_newline=True)


def _compile(path: Path, text_env: jinja2.Environment, html_env: jinja2.Environment) -> MailTemplate:
    subject_source, body_source = split_text_template(_read(path), path)
    subject = _from_string(text_env, subject_source, path, first_line=1)
    text = _from_string(text_env, body_source, path, first_line=3)
    html = None
    html_path = path.with_suffix(".html")
    if html_path.is_file():
        html = _from_string(html_env, _read(html_path), html_path, first_line=1)

    return MailTemplate(name=path.stem, subject=subject, text=text, html=html)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read the template: {exc}") from exc


def _from_string(env: jinja2.Environment, source: str, path: Path, first_line: int) -> jinja2.Template:
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        line = (exc.lineno or 1) + first_line - 1
        raise TemplateError(f"{path}:{line}: invalid template: {exc.message}") from exc
