"""Line positions of keys and tables in a journey file, for error messages.

tomllib returns values without positions, so :class:`Layout` scans the text once
and records every table header and every ``key = value`` line.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from dataclasses import dataclass, field

# The position of a table or key in the document: the keys from the top of the file,
# with the index of each array element, such as ("journeys", 0, "steps", 2, "send").
KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class _Section:
    """The lines from one table header to the next, or the lines before the first header."""

    line: int | None  # of the header; None for the lines before the first header
    key_path: KeyPath  # of the header's table; () before the first header
    keys: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)  # (line, dotted key) per key/value pair

    def key_line(self, key_path: KeyPath) -> int | None:
        """Return the line of the key/value pair that writes ``key_path``, or None if no pair does.

        The pair whose dotted key shares the most leading keys with ``key_path`` wins,
        so ``send.template`` is found at ``send = { ... }`` and at ``send.template = ...``.
        """
        best_line, best_length = None, 0
        for line, key in self.keys:
            length = 0
            while length < min(len(key), len(key_path)) and key[length] == key_path[length]:
                length += 1
            if length > best_length:
                best_line, best_length = line, length
        return best_line


class Layout:
    """Lines of the table headers and key/value pairs of a TOML text.

    tomllib returns no positions, so this scans the text again. The scan relies on
    tomllib having accepted the text, and it skips strings, arrays and inline tables
    as values, so a multi-line value adds no keys or headers of its own.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
        self.sections = [_Section(None, ())]
        # Line at which the scan met text that it cannot read, or None if it read the whole text.
        # Text that tomllib accepts should never stop it. Keys after this line get no line of their own.
        self.unread_line: int | None = None
        self._scan()

    def line(self, key_path: KeyPath) -> int | None:
        """Return the line where the table or key at ``key_path`` is written, or None if none is found.

        That is the line of its key/value pair in the nearest section that contains
        one, else the header of its table or of the nearest table around it. A table
        defined only by headers of its sub-tables, such as ``policy`` by
        ``[policy.caps]``, gets the first of those headers.
        """
        if not key_path:
            return None
        enclosing = sorted((section for section in self.sections
                            if key_path[:len(section.key_path)] == section.key_path),
                           key=lambda section: len(section.key_path), reverse=True)
        for section in enclosing:
            rest = key_path[len(section.key_path):]
            line = section.line if not rest else section.key_line(rest)
            if line is not None:
                return line
        for section in enclosing:
            if section.line is not None:
                return section.line
        for section in self.sections:
            if section.key_path[:len(key_path)] == key_path:
                return section.line
        return None

    def header_line(self, key_path: KeyPath) -> int | None:
        """Return the line of the header of the table at ``key_path``, or None if it has no header."""
        for section in self.sections:
            if section.key_path == key_path:
                return section.line
        return None

    def _scan(self) -> None:
        text = self._text
        section = self.sections[0]
        array_sizes: dict[KeyPath, int] = {}  # key path of each array of tables -> elements so far
        position = self._skip_blank(0)
        while position < len(text):
            line = bisect.bisect_right(self._line_starts, position)
            is_array = text.startswith("[[", position)
            is_header = is_array or text.startswith("[", position)
            if is_array:
                read = self._read_key(position + 2)
            elif is_header:
                read = self._read_key(position + 1)
            else:
                read = self._read_key(position)
            if read is None:
                self.unread_line = line
                return
            key, position = read
            if is_header:
                section = _Section(line, _header_key_path(key, is_array, array_sizes))
                self.sections.append(section)
                position = self._skip_line(position)  # the rest is "]" or "]]" and an optional comment
            else:
                section.keys.append((line, key))
                position = self._skip_value(position)
                if position < 0:
                    self.unread_line = line
                    return
            position = self._skip_blank(position)

    def _skip_blank(self, position: int) -> int:
        """Skip whitespace, line breaks and comments."""
        text = self._text
        while position < len(text):
            if text[position] in " \t\r\n":
                position += 1
            elif text[position] == "#":
                position = self._skip_line(position)
            else:
                break
        return position

    def _skip_line(self, position: int) -> int:
        end = self._text.find("\n", position)
        return len(self._text) if end < 0 else end

    def _read_key(self, position: int) -> tuple[tuple[str, ...], int] | None:
        """Read a dotted key such as ``policy.caps`` or ``"a b".c``, and return its parts and the position after it.

        Returns None if no key starts at ``position``.
        """
        text = self._text
        parts = []
        while True:
            while position < len(text) and text[position] in " \t":
                position += 1
            if text.startswith(('"', "'"), position):
                end = self._skip_string(position)
                if end < 0:
                    return None
                quoted = text[position:end]
                # tomllib decodes the escapes of a basic string, such as \u00e9.
                parts.append(quoted[1:-1] if quoted[0] == "'" else tomllib.loads(f"key = {quoted}")["key"])
                position = end
            else:
                match = _BARE_KEY.match(text, position)
                if match is None:
                    return None
                parts.append(match.group())
                position = match.end()
            while position < len(text) and text[position] in " \t":
                position += 1
            if not text.startswith(".", position):
                return tuple(parts), position
            position += 1

    def _skip_value(self, position: int) -> int:
        """Return the position after the value that follows a key's `=`, or -1 if a string in it never closes."""
        text = self._text
        position = text.find("=", position) + 1
        depth = 0  # of arrays and inline tables, which may span lines
        while position < len(text):
            char = text[position]
            if char in "\"'":
                position = self._skip_string(position)
                if position < 0:
                    return -1
                continue
            if char == "#":
                position = self._skip_line(position)
                continue
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            elif char == "\n" and depth == 0:
                break
            position += 1
        return position

    def _skip_string(self, position: int) -> int:
        """Return the position after the string that starts at ``position``, or -1 if it never closes."""
        text = self._text
        quote = text[position]
        if text.startswith(quote * 3, position):
            end = position + 3
            while True:
                end = text.find(quote * 3, end)
                if end < 0:
                    return -1
                if quote == "'" or not _escaped(text, end):
                    break
                end += 1
            end += 3
            # A string may end in up to two quotes of its own: """a"""" is the text a".
            for _ in range(2):
                if text.startswith(quote, end):
                    end += 1
            return end
        end = position + 1
        while end < len(text) and text[end] != "\n":
            if quote == '"' and text[end] == "\\":
                end += 2
            elif text[end] == quote:
                return end + 1
            else:
                end += 1
        return -1


def _escaped(text: str, position: int) -> bool:
    """Tell whether the character at ``position`` follows an odd number of backslashes."""
    count = 0
    while position - count - 1 >= 0 and text[position - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _header_key_path(key: tuple[str, ...], is_array: bool, array_sizes: dict[KeyPath, int]) -> KeyPath:
    """Return the key path of the table that a header opens, counting the elements of arrays of tables.

    ``[[journeys.steps]]`` opens a new element of the steps array of the last
    ``[[journeys]]`` element, so its key path is ("journeys", last, "steps", new).
    """
    key_path: KeyPath = ()
    for index, part in enumerate(key):
        key_path += (part,)
        if is_array and index == len(key) - 1:
            size = array_sizes.get(key_path, 0)
            array_sizes[key_path] = size + 1
            key_path += (size,)
        elif key_path in array_sizes:
            key_path += (array_sizes[key_path] - 1,)
    return key_path
