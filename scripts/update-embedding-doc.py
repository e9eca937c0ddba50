#!/usr/bin/env python3
"""Puts examples/minimal-echo/main.cpp, whole, and its diff from plain-echo.cpp
into docs/embedding.md (the first ```diff and ```cpp blocks). Run it after
changing either file; examples_test checks that the doc shows main.cpp as it is."""
import pathlib
import subprocess

root = pathlib.Path(__file__).resolve().parent.parent
example = root / "examples" / "minimal-echo"
doc_path = root / "docs" / "embedding.md"
diff = subprocess.run(["diff", "-u", "--label", "plain-echo.cpp", "--label", "main.cpp", "plain-echo.cpp", "main.cpp"],
                      cwd=example, capture_output=True, text=True).stdout
main = (example / "main.cpp").read_text()
doc = doc_path.read_text()
for fence, text in (("```diff\n", diff), ("```cpp\n", main)):
    start = doc.index(fence) + len(fence)
    end = doc.index("```\n", start)
    doc = doc[:start] + text + doc[end:]
doc_path.write_text(doc)
print(f"update-embedding-doc: {doc_path.relative_to(root)} shows main.cpp ({main.count(chr(10))} lines) and the diff")
