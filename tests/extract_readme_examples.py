#!/usr/bin/env python3
"""Writes the README's C++ examples to files, so that CTest compiles and runs the README's text.

    extract_readme_examples.py README.md OUT_DIR NAME...

Every fenced ```cpp block directly preceded by a line `<!-- example: NAME -->` becomes
OUT_DIR/NAME.cpp. The marked names must be exactly the NAMEs given (the build's list), each once:
a block added to the README without a test, or a test whose block was removed, is an error.
A file is rewritten only when its text changes, so an unchanged README rebuilds nothing.
"""
import pathlib
import re
import sys

MARKER = re.compile(r"^<!-- example: ([A-Za-z0-9_]+) -->\s*$")


def extract(readme: str) -> dict:
    lines = readme.splitlines()
    blocks = {}
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if not m:
            i += 1
            continue
        name = m.group(1)
        if i + 1 >= len(lines) or lines[i + 1].strip() != "```cpp":
            sys.exit(f"README: the marker for '{name}' (line {i + 1}) must be followed by ```cpp")
        end = i + 2
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            sys.exit(f"README: the ```cpp block of '{name}' is not closed")
        if name in blocks:
            sys.exit(f"README: example '{name}' is marked twice")
        blocks[name] = "\n".join(lines[i + 2:end]) + "\n"
        i = end + 1
    return blocks


def main() -> None:
    readme, out_dir, names = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
    blocks = extract(readme.read_text(encoding="utf-8"))
    if sorted(blocks) != sorted(names):
        sys.exit(f"README examples {sorted(blocks)} differ from the build's list {sorted(names)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in blocks.items():
        path = out_dir / f"{name}.cpp"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
