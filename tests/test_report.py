"""lipkit summarize / plot read exactly what runs wrote."""
import json

import pytest

from lipkit.cli import main


def fake_run(folder, critic, w1s):
    folder.mkdir()
    rows = [{"step": 10 * (i + 1), "wall_seconds": 2.0 * (i + 1), "w1": w} for i, w in enumerate(w1s)]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = {"steps": 10 * len(w1s), "final": {"w1": w1s[-1], "modes_covered": 7.0}, "config": {"critic": critic}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return str(folder)


def test_summarize_and_plot(tmp_path, capsys):
    a = fake_run(tmp_path / "a", "sn", [0.5, 0.25])
    b = fake_run(tmp_path / "b", "gp", [0.4, 0.125])
    assert main(["summarize", a, b]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| run | steps | w1 | modes_covered | train s | s/step |"
    assert table[2] == "| sn (a) | 20 | 0.25 | 7 | 4 | 0.200 |"
    assert table[3].startswith("| gp (b) | 20 | 0.125 |")
    png = tmp_path / "w1.png"
    assert main(["plot", a, b, "--metric", "w1", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_name_the_problem(tmp_path, capsys):
    a = fake_run(tmp_path / "a", "sn", [0.5])
    assert main(["plot", a, "--metric", "fid", "--out", str(tmp_path / "x.png")]) == 1
    assert "'fid'" in capsys.readouterr().err
    assert main(["summarize", str(tmp_path)]) == 1
    assert "not a finished lipkit run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plot", a])  # --metric and --out are required
