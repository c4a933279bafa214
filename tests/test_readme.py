"""The README's Python examples run as written (they are documentation people copy)."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path):
    from lipkit.data import data_names, unregister_data
    from lipkit.methods import method_names, unregister_method

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python examples"
    methods, data = set(method_names()), set(data_names())
    namespace: dict = {}
    try:
        for block in blocks:  # later blocks may use names from earlier ones, as a reader would
            exec(compile(block, str(README), "exec"), namespace)
        from lipkit.cli import main  # the README's registered method and data set train as it says

        assert main(["train-gan", "--data", "noise-8x8", "--critic", "sn-soft", "--steps", "1", "--width", "4",
                     "--batch-size", "8", "--eval-samples", "16", "--no-image-metrics", "--no-progress",
                     "--lower-bound-steps", "1", "--out", str(tmp_path / "sn-soft")]) == 0
    finally:  # registry entries the README added must not leak into other tests
        for name in set(method_names()) - methods:
            unregister_method(name)
        for name in set(data_names()) - data:
            unregister_data(name)
