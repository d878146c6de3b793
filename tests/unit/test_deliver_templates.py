"""Email templates of `nurture deliver`: file layout, rendering and the shipped defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.agents.journeys.loader import load_journeys
from nurture.agents.rules import load_rules
from nurture.config.settings import DEFAULT_JOURNEYS_FILE, DEFAULT_RULES_FILE, DEFAULT_TEMPLATES_DIR
from nurture.streams.deliver_templates import (
    RenderError,
    TemplateBook,
    TemplateError,
    render_context,
    split_text_template,
)


def _book(tmp_path: Path, files: dict[str, str]) -> TemplateBook:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return TemplateBook.load(tmp_path)


def _default_email_templates() -> set[str]:
    names = set()
    for rule in load_rules(DEFAULT_RULES_FILE):
        if rule.channel == "email":
            names.update([rule.template] if rule.template else rule.sequence)
    for journey in load_journeys(DEFAULT_JOURNEYS_FILE).journeys:
        names.update(step.template for step in journey.steps if step.type == "send" and step.channel == "email")
    return names


def test_split_subject_and_body() -> None:
    subject, body = split_text_template("Subject: Hello {{ first_name }}\n\nLine one\nLine two\n", "t.txt")

    assert subject == "Hello {{ first_name }}"
    assert body == "Line one\nLine two\n"


def test_split_accepts_crlf_bom_and_letter_case() -> None:
    subject, body = split_text_template("\ufeffSUBJECT:  Hi \r\n\r\nBody\r\n", "t.txt")

    assert subject == "Hi"
    assert body == "Body\r\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hello\n\nBody\n", r"t.txt:1: the first line must be 'Subject: \.\.\.'"),
        ("", r"t.txt:1: the first line must be 'Subject: \.\.\.'"),
        ("Subject:   \n\nBody\n", r"t.txt:1: the subject is empty"),
        ("Subject: Hi\nBody\n", r"t.txt:2: the line after the subject must be blank"),
        ("Subject: Hi\n", r"t.txt:2: the line after the subject must be blank"),
        ("Subject: Hi\n\n  \n", r"t.txt:3: the body is empty"),
    ],
)
def test_split_rejects_other_layouts(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        split_text_template(source, "t.txt")


def test_render_fills_fields(tmp_path: Path) -> None:
    book = _book(tmp_path, {"hello.txt": "Subject: Hi {{ first_name }}\n\nDear {{ first_name }}, "
                                          "score {{ '%.0f' % score }}, step {{ step }}.\n"})
    command = {"command_id": "c1", "lead_id": "l1", "template": "hello", "score": 61.7, "reasons": [],
               "journey": "j", "step": "s1", "personalisation": {"email": "z@example.com", "first_name": "Zoë Łucja"}}

    mail = book.render("hello", render_context(command))

    assert mail.subject == "Hi Zoë Łucja"
    assert mail.text == "Dear Zoë Łucja, score 62, step s1.\n"
    assert mail.html is None


def test_render_missing_field_is_clear_error(tmp_path: Path) -> None:
    book = _book(tmp_path, {"hello.txt": "Subject: Hi\n\nDear {{ first_name }},\n"})

    with pytest.raises(RenderError) as caught:
        book.render("hello", render_context({"lead_id": "l1", "personalisation": {"email": "z@example.com"}}))

    assert str(caught.value) == "template 'hello': 'first_name' is undefined"


def test_render_missing_field_in_subject(tmp_path: Path) -> None:
    book = _book(tmp_path, {"hello.txt": "Subject: For {{ company }}\n\nHello\n"})

    with pytest.raises(RenderError, match="template 'hello': 'company' is undefined"):
        book.render("hello", {})


def test_render_unknown_or_no_template(tmp_path: Path) -> None:
    book = _book(tmp_path, {"hello.txt": "Subject: Hi\n\nHello\n"})

    with pytest.raises(RenderError, match="template 'goodbye' not found"):
        book.render("goodbye", {})
    with pytest.raises(RenderError, match="the command names no template"):
        book.render(None, {})


def test_subject_line_break_from_field_is_flattened(tmp_path: Path) -> None:
    book = _book(tmp_path, {"hello.txt": "Subject: Hi {{ first_name }}\n\nHello\n"})

    mail = book.render("hello", {"first_name": "Ann\r\nBcc: someone@example.com"})

    assert mail.subject == "Hi Ann Bcc: someone@example.com"


def test_html_alternative_is_escaped_text_is_not(tmp_path: Path) -> None:
    book = _book(tmp_path, {"hello.txt": "Subject: Hi\n\nHi {{ first_name }}\n",
                            "hello.html": "<p>Hi {{ first_name }}</p>\n"})

    mail = book.render("hello", {"first_name": "<Ann & Bob>"})

    assert mail.text == "Hi <Ann & Bob>\n"
    assert mail.html == "<p>Hi &lt;Ann &amp; Bob&gt;</p>\n"


def test_load_names_file_and_line_of_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.txt"
    path.write_text("Subject: Hi\n\nline 3\nline 4 {{ first_name \n")

    with pytest.raises(TemplateError, match=rf"{path}:4: invalid template"):
        TemplateBook.load(tmp_path)


def test_load_rejects_html_without_text(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("Subject: Hi\n\nHello\n")
    (tmp_path / "lonely.html").write_text("<p>Hi</p>\n")

    with pytest.raises(TemplateError, match="lonely.html: an HTML template needs lonely.txt"):
        TemplateBook.load(tmp_path)


def test_load_rejects_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not found; create it or set NURTURE_DELIVER_TEMPLATES_DIR"):
        TemplateBook.load(tmp_path / "absent")
    with pytest.raises(TemplateError, match="contains no NAME.txt template"):
        TemplateBook.load(tmp_path)


def test_defaults_cover_engine_email_templates() -> None:
    book = TemplateBook.load(DEFAULT_TEMPLATES_DIR)

    assert _default_email_templates() == {"welcome", "buying_guide", "customer_stories", "top_picks",
                                          "case_study", "case_study_reminder", "demo_invite"}
    assert _default_email_templates() <= set(book.names())


@pytest.mark.parametrize("name", sorted(_default_email_templates()))
def test_default_template_renders_with_and_without_name(name: str) -> None:
    book = TemplateBook.load(DEFAULT_TEMPLATES_DIR)
    command = {"command_id": "c1", "lead_id": "l1", "template": name, "score": 42.0, "reasons": [],
               "journey": None, "step": None}

    named = book.render(name, render_context({**command, "personalisation": {"email": "z@example.com",
                                                                              "first_name": "Zoë"}}))
    anonymous = book.render(name, render_context({**command, "personalisation": {"email": "z@example.com"}}))

    assert named.subject
    assert "Hi Zoë," in named.text
    assert "Hi there," in anonymous.text
    assert "None" not in anonymous.subject + anonymous.text
