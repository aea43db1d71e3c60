"""golden.cli.write_outputs: a command's files, or one line of error instead of a traceback."""
from golden.cli import write_outputs


def test_writes_and_prints_the_line(tmp_path, capsys):
    target = tmp_path / "out.txt"
    assert write_outputs("prog", lambda: target.write_text("x") and f"wrote {target}") == 0
    assert target.read_text() == "x" and capsys.readouterr().out == f"wrote {target}\n"


def test_an_unwritable_path_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert write_outputs("prog", lambda: (blocker / "out.txt").write_text("x")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"prog: error: cannot write {blocker / 'out.txt'}: ")
