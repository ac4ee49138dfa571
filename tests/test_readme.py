"""The README's Python examples run as written."""

import re

from tests.helpers import REPO


def python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["bash scripts/quickstart.sh", "bash scripts/run_tests.sh"]
    assert (REPO / ".ci" / "run").read_text().count("bash scripts/run_tests.sh") == 1


def test_readme_python_examples_run():
    blocks = python_blocks()
    assert blocks, "the README shows the module API"
    namespace: dict = {}
    for block in blocks:  # later blocks build on earlier ones, like a reader would
        exec(compile(block, "README.md", "exec"), namespace)


def test_readme_has_the_marker_lines_compare_sh_writes_its_table_between():
    from tools.compare_models import README_BEGIN, README_END, replace_marked_block

    text = (REPO / "README.md").read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1
    assert replace_marked_block(text, "| table |", "README.md").count("| table |") == 1
